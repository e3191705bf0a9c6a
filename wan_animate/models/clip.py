"""CLIP ViT-H/14 visual tower (open-clip XLM-R CLIP, visual half) as Wan2.2-Animate uses it.

Animate feeds the reference image through the visual tower only and keeps the tokens after
all blocks but the last (``use_31_block``): [B, 257, 1280], no post_norm, no head (facts §5).

Checkpoint: ``models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth`` holds both towers.
:class:`CLIPVisionEncoder` has the visual tower under ``visual`` so its keys are the file's
``visual.*`` keys exactly; :func:`visual_keys` drops the XLM-R text tower (``textual.*``) and
``log_scale`` *deliberately* (Animate never calls them: 561 M parameters we do not load), and
keeps every other key so that strict loading still flags anything unexpected.
``visual.post_norm.*`` and ``visual.head`` are loaded (strict) but unused.

Shapes: B batch, L tokens (1 cls + (image_size/patch_size)^2 patches), C width, N heads, D head dim.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from wan_animate.models.attention import AttentionBackend, LocalAttention

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP normalization
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
VISUAL_PREFIX = "visual."
TEXT_TOWER_PREFIXES = ("textual.",)
TEXT_TOWER_KEYS = ("log_scale",)


@dataclass(frozen=True)
class CLIPVisionConfig:
    """ViT hyper-parameters; defaults are the real ViT-H/14 of the official CLIP checkpoint.

    Attributes:
        image_size: square input side after resizing (224).
        patch_size: conv patch and stride (14) -> (224/14)^2 = 256 patches + 1 cls token.
        dim: width C.
        mlp_ratio: MLP hidden width = int(dim * mlp_ratio).
        num_heads: attention heads N.
        num_layers: transformer blocks (the last one is not run by Animate).
        out_dim: columns of the (unused) ``visual.head`` projection (the CLIP embed_dim).
        eps: LayerNorm epsilon.
        pre_norm: LayerNorm after the embeddings (and a bias-free patch conv); True for ViT-H.
        post_norm: blocks add ``norm(f(x))`` instead of ``f(norm(x))`` (the official
            ``vision_post_norm``); False for ViT-H. Unrelated to the ``visual.post_norm`` key,
            which always exists and is unused here.
        activation: MLP activation, "gelu" (exact erf, ViT-H) or "quick_gelu".
    """

    image_size: int = 224
    patch_size: int = 14
    dim: int = 1280
    mlp_ratio: float = 4
    num_heads: int = 16
    num_layers: int = 32
    out_dim: int = 1024
    eps: float = 1e-5
    pre_norm: bool = True
    post_norm: bool = False
    activation: str = "gelu"

    def __post_init__(self) -> None:
        if self.dim % self.num_heads:
            raise ValueError(f"CLIPVisionConfig: dim {self.dim} is not divisible by num_heads "
                             f"{self.num_heads}")
        if self.image_size < self.patch_size:
            raise ValueError(f"CLIPVisionConfig: image_size {self.image_size} is smaller than "
                             f"patch_size {self.patch_size}")
        if self.num_layers < 2:
            raise ValueError(f"CLIPVisionConfig: Animate uses all blocks but the last, so "
                             f"num_layers must be >= 2, got {self.num_layers}")
        if self.activation not in ("gelu", "quick_gelu"):
            raise ValueError(f"CLIPVisionConfig: activation {self.activation!r} is not supported "
                             f"(gelu, quick_gelu)")

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_tokens(self) -> int:
        """cls + patches (257 for ViT-H/14 at 224)."""
        return self.grid * self.grid + 1

    @property
    def mlp_dim(self) -> int:
        return int(self.dim * self.mlp_ratio)

    @classmethod
    def from_constructor(cls, kwargs: Mapping[str, Any]) -> CLIPVisionConfig:
        """Build from the official ``clip_xlm_roberta_vit_h_14(**kwargs)`` overrides.

        Reads image_size, patch_size, vision_dim, vision_mlp_ratio, vision_heads, vision_layers,
        embed_dim, norm_eps, vision_pre_norm, vision_post_norm, activation, vision_pool (must be
        "token"); missing keys keep the ViT-H/14 values. Text-tower and dropout keys are ignored.
        """
        pool = kwargs.get("vision_pool", "token")
        if pool != "token":
            raise ValueError(f"CLIPVisionConfig: vision_pool {pool!r} is not supported (token)")
        fields = {"image_size": "image_size", "patch_size": "patch_size", "vision_dim": "dim",
                  "vision_mlp_ratio": "mlp_ratio", "vision_heads": "num_heads",
                  "vision_layers": "num_layers", "embed_dim": "out_dim", "norm_eps": "eps",
                  "vision_pre_norm": "pre_norm", "vision_post_norm": "post_norm",
                  "activation": "activation"}
        return cls(**{ours: kwargs[theirs] for theirs, ours in fields.items() if theirs in kwargs})


def visual_keys(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The part of a full CLIP state dict that :class:`CLIPVisionEncoder` loads.

    Drops the text tower (``textual.*``) and ``log_scale`` on purpose (Animate never runs them);
    keeps ``visual.*`` and any other key, so a strict load reports foreign keys.
    """
    return {k: v for k, v in state.items()
            if not (k.startswith(TEXT_TOWER_PREFIXES) or k in TEXT_TOWER_KEYS)}


class CLIPLayerNorm(nn.LayerNorm):
    """LayerNorm computed in fp32 (weights upcast), result in the input dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The official LayerNorm runs on x.float() under autocast, which upcasts the weights.
        w = self.weight.float() if self.weight is not None else None
        b = self.bias.float() if self.bias is not None else None
        return F.layer_norm(x.float(), self.normalized_shape, w, b, self.eps).type_as(x)


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class CLIPSelfAttention(nn.Module):
    """Fused-qkv multi-head self-attention (keys ``to_qkv``, ``proj``); softmax scale 1/sqrt(D)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.to_qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.backend: AttentionBackend = LocalAttention()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, L, C] -> [B, L, C]."""
        b, s, c = x.shape
        # [B, L, 3C] -> [B, L, 3, N, D] -> 3 x [B, L, N, D]
        q, k, v = self.to_qkv(x).view(b, s, 3, self.num_heads, self.head_dim).unbind(2)
        out = self.backend(q, k, v)  # [B, L, N, D]
        return self.proj(out.reshape(b, s, c))  # [B, L, N, D] -> [B, L, C]


class CLIPBlock(nn.Module):
    """Transformer block (keys ``norm1``, ``attn``, ``norm2``, ``mlp.0``, ``mlp.2``)."""

    def __init__(self, cfg: CLIPVisionConfig) -> None:
        super().__init__()
        self.post_norm = cfg.post_norm
        self.norm1 = CLIPLayerNorm(cfg.dim, eps=cfg.eps)
        self.attn = CLIPSelfAttention(cfg.dim, cfg.num_heads)
        self.norm2 = CLIPLayerNorm(cfg.dim, eps=cfg.eps)
        act = nn.GELU() if cfg.activation == "gelu" else QuickGELU()
        self.mlp = nn.Sequential(nn.Linear(cfg.dim, cfg.mlp_dim), act, nn.Linear(cfg.mlp_dim, cfg.dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, L, C] -> [B, L, C]."""
        # Ported from Wan2.2 wan/modules/animate/clip.py::AttentionBlock.forward
        if self.post_norm:
            x = x + self.norm1(self.attn(x))
            return x + self.norm2(self.mlp(x))
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class CLIPVisionTransformer(nn.Module):
    """The ``visual`` tower: patch conv -> [cls | patches] + pos -> pre_norm -> blocks."""

    def __init__(self, cfg: CLIPVisionConfig) -> None:
        super().__init__()
        self.cfg = cfg
        gain = cfg.dim ** -0.5
        self.patch_embedding = nn.Conv2d(3, cfg.dim, kernel_size=cfg.patch_size,
                                         stride=cfg.patch_size, bias=not cfg.pre_norm)
        self.cls_embedding = nn.Parameter(gain * torch.randn(1, 1, cfg.dim))
        self.pos_embedding = nn.Parameter(gain * torch.randn(1, cfg.num_tokens, cfg.dim))
        self.pre_norm = CLIPLayerNorm(cfg.dim, eps=cfg.eps) if cfg.pre_norm else None
        self.transformer = nn.ModuleList(CLIPBlock(cfg) for _ in range(cfg.num_layers))
        self.post_norm = CLIPLayerNorm(cfg.dim, eps=cfg.eps)  # in the checkpoint; unused
        self.head = nn.Parameter(gain * torch.randn(cfg.dim, cfg.out_dim))  # unused

    def forward(self, pixels: torch.Tensor, num_blocks: int,
                intermediates: list[torch.Tensor] | None = None) -> torch.Tensor:
        """pixels [B, 3, S, S] normalized -> tokens [B, L, C] after the first ``num_blocks`` blocks.

        Each block output is appended to ``intermediates`` when a list is given.
        """
        # Ported from Wan2.2 wan/modules/animate/clip.py::VisionTransformer.forward
        b = pixels.shape[0]
        x = self.patch_embedding(pixels.to(self.patch_embedding.weight.dtype))  # [B, C, g, g]
        x = x.flatten(2).permute(0, 2, 1)  # [B, C, g, g] -> [B, g*g, C]
        x = torch.cat([self.cls_embedding.expand(b, -1, -1), x], dim=1)  # [B, L, C]
        x = x + self.pos_embedding
        if self.pre_norm is not None:
            x = self.pre_norm(x)
        for block in self.transformer[:num_blocks]:
            x = block(x)
            if intermediates is not None:
                intermediates.append(x)
        return x


class CLIPVisionEncoder(nn.Module):
    """Reference-image encoder of Animate; ``state_dict()`` keys are the official ``visual.*``.

    Build on ``torch.device("meta")`` and load ``visual_keys(read_pth(path))`` with
    :func:`wan_animate.checkpoints.load.load_into`. The official pipeline builds it in fp16 and
    casts the output to bf16; the weights' dtype is the compute dtype here (no autocast needed).
    """

    def __init__(self, cfg: CLIPVisionConfig = CLIPVisionConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        self.visual = CLIPVisionTransformer(cfg)

    @property
    def feature_blocks(self) -> int:
        """Blocks that run: all but the last (the official ``use_31_block``)."""
        return self.cfg.num_layers - 1

    def set_attention(self, backend: AttentionBackend) -> None:
        """Use ``backend`` (q, k, v [B, L, N, D] -> [B, L, N, D]) in every block."""
        for block in self.visual.transformer:
            block.attn.backend = backend

    def preprocess(self, img: torch.Tensor) -> torch.Tensor:
        """Resize and normalize images as the official ``CLIPModel.visual`` does.

        Args:
            img: float [B, 3, H, W] in [-1, 1], any H, W (squashed, no aspect preservation).

        Returns:
            [B, 3, S, S] (S = image_size), same dtype: bicubic (A = -0.75, align_corners=False,
            no antialias, no clamp), then ``*0.5 + 0.5``, then ``(x - mean) / std`` (OpenAI CLIP).
        """
        if img.ndim != 4 or img.shape[1] != 3 or not img.is_floating_point():
            raise ValueError(f"CLIPVisionEncoder.preprocess: expected float [B, 3, H, W], got "
                             f"{img.dtype} {tuple(img.shape)}")
        size = (self.cfg.image_size, self.cfg.image_size)
        x = F.interpolate(img, size=size, mode="bicubic", align_corners=False)
        x = x * 0.5 + 0.5  # [-1, 1] -> [0, 1]
        mean = torch.tensor(CLIP_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(CLIP_STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    def encode_pixels(self, pixels: torch.Tensor, return_intermediates: bool = False
                      ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Features of preprocessed pixels [B, 3, S, S] -> [B, L, C] in the weight dtype.

        With ``return_intermediates`` also returns every run block's output (the last equals
        the features).
        """
        size = self.cfg.image_size
        if pixels.ndim != 4 or tuple(pixels.shape[1:]) != (3, size, size):
            raise ValueError(f"CLIPVisionEncoder: expected pixels [B, 3, {size}, {size}], got "
                             f"{tuple(pixels.shape)}; call preprocess() first")
        inter: list[torch.Tensor] | None = [] if return_intermediates else None
        out = self.visual(pixels, self.feature_blocks, inter)
        return (out, inter) if inter is not None else out

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        """img [B, 3, H, W] in [-1, 1] -> CLIP context [B, L, C] (L = 257, C = 1280 at full size)."""
        return self.encode_pixels(self.preprocess(img))
