"""umT5-XXL text encoder (encoder only), with the official key names and numerics.

The official checkpoint ``models_t5_umt5-xxl-enc-bf16.pth`` loads strictly into
:class:`T5Encoder`; its keys are ``token_embedding.weight``, ``blocks.N.{norm1,norm2}.weight``,
``blocks.N.attn.{q,k,v,o}.weight``, ``blocks.N.ffn.{gate.0,fc1,fc2}.weight``,
``blocks.N.pos_embedding.embedding.weight`` and ``norm.weight`` (no biases).

Numerics (facts §4, §13), all kept so that fp32 runs match the official code bit for bit and
bf16 runs follow the same casts:

- RMS norm: variance in fp32, result cast to the weight dtype when that is fp16/bf16.
- Attention: **no** ``1/sqrt(D)`` scale; a per-layer relative position bias (umT5: no sharing
  across layers) plus an additive ``finfo(dtype).min`` on padded keys; softmax in fp32, cast back.
- FFN: ``fc2(fc1(x) * gelu_tanh(gate(x)))``.
- fp16 only: residual sums are clamped to the finite range (as the official ``fp16_clamp``).

Shapes: B batch, L tokens, C model dim, N heads, D head dim.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class T5Config:
    """umT5 encoder hyper-parameters; defaults are the real umT5-XXL encoder.

    Attributes:
        vocab_size: token embedding rows (256384; the tokenizer uses fewer ids).
        dim: model width C.
        dim_attn: q/k/v width (``num_heads * head_dim``).
        dim_ffn: gated FFN hidden width.
        num_heads: attention heads N.
        num_layers: encoder blocks.
        num_buckets: relative-position buckets (half per direction, bidirectional).
        max_distance: distance mapped to the last bucket (hard-coded 128 officially).
        eps: RMS norm epsilon.
    """

    vocab_size: int = 256384
    dim: int = 4096
    dim_attn: int = 4096
    dim_ffn: int = 10240
    num_heads: int = 64
    num_layers: int = 24
    num_buckets: int = 32
    max_distance: int = 128
    eps: float = 1e-6

    def __post_init__(self) -> None:
        if self.dim_attn % self.num_heads:
            raise ValueError(f"T5Config: dim_attn {self.dim_attn} is not divisible by "
                             f"num_heads {self.num_heads}")
        if self.num_buckets < 4 or self.num_buckets % 2:
            raise ValueError(f"T5Config: num_buckets must be even and >= 4, got {self.num_buckets}")
        if self.max_distance <= self.num_buckets // 4:
            raise ValueError(f"T5Config: max_distance {self.max_distance} must exceed the exact "
                             f"range num_buckets/4 = {self.num_buckets // 4}")

    @property
    def head_dim(self) -> int:
        return self.dim_attn // self.num_heads

    @classmethod
    def from_constructor(cls, kwargs: Mapping[str, Any]) -> T5Config:
        """Build from the official ``umt5_xxl(encoder_only=True, **kwargs)`` overrides.

        Keys: vocab_size, dim, dim_attn, dim_ffn, num_heads, encoder_layers, num_buckets,
        shared_pos (must be False: the umT5 layout), dropout (ignored: inference only),
        decoder_layers (ignored). Missing keys keep the umT5-XXL values.
        """
        known = {"vocab_size", "dim", "dim_attn", "dim_ffn", "num_heads", "encoder_layers",
                 "num_buckets", "shared_pos", "dropout", "decoder_layers"}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise ValueError(f"T5Config.from_constructor: unknown keys {unknown}")
        if kwargs.get("shared_pos", False):
            raise ValueError("T5Config: shared_pos=True (one bias table for all layers) is the T5 "
                             "layout; only the umT5 layout (a table per layer) is implemented")
        fields = {"vocab_size": "vocab_size", "dim": "dim", "dim_attn": "dim_attn",
                  "dim_ffn": "dim_ffn", "num_heads": "num_heads", "encoder_layers": "num_layers",
                  "num_buckets": "num_buckets"}
        return cls(**{ours: int(kwargs[theirs]) for theirs, ours in fields.items()
                      if theirs in kwargs})


def _fp16_clamp(x: torch.Tensor) -> torch.Tensor:
    """Clamp fp16 activations that overflowed back into the finite range (no-op otherwise)."""
    # Ported from Wan2.2 wan/modules/t5.py::fp16_clamp
    if x.dtype == torch.float16 and torch.isinf(x).any():
        limit = torch.finfo(torch.float16).max - 1000
        x = x.clamp(-limit, limit)
    return x


def _gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """GELU, tanh approximation, written out as the official module (same op order)."""
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


class T5LayerNorm(nn.Module):
    """RMS norm without mean or bias: ``w * x / sqrt(mean(x^2) + eps)`` with fp32 variance."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, L, C] -> [B, L, C] in the weight dtype (fp16/bf16) or promoted (fp32)."""
        # Ported from Wan2.2 wan/modules/t5.py::T5LayerNorm.forward
        x = x * torch.rsqrt(x.float().pow(2).mean(dim=-1, keepdim=True) + self.eps)
        if self.weight.dtype in (torch.float16, torch.bfloat16):
            x = x.type_as(self.weight)
        return self.weight * x


class T5RelativeBias(nn.Module):
    """Bidirectional bucketed relative position bias of one layer (key ``embedding.weight``).

    The bucket table depends only on the sequence length and is rebuilt lazily (cached per
    length and device), so the module holds nothing but the learned [num_buckets, N] table.
    """

    def __init__(self, num_buckets: int, num_heads: int, max_distance: int = 128) -> None:
        super().__init__()
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        self.embedding = nn.Embedding(num_buckets, num_heads)
        self._buckets: dict[tuple[int, str], torch.Tensor] = {}

    def buckets(self, length: int, device: torch.device) -> torch.Tensor:
        """Bucket index of every (query i, key j) pair: long [L, L]."""
        key = (length, str(device))
        table = self._buckets.get(key)
        if table is None:
            table = self._bucketize(length, device)
            self._buckets = {key: table}  # keep only the latest length
        return table

    def _bucketize(self, length: int, device: torch.device) -> torch.Tensor:
        # Ported from Wan2.2 wan/modules/t5.py::T5RelativeEmbedding._relative_position_bucket
        pos = torch.arange(length, device=device)
        rel = pos[None, :] - pos[:, None]              # key - query, [L, L]
        half = self.num_buckets // 2                   # buckets per direction
        upper = (rel > 0).long() * half                # keys after the query: upper half
        dist = rel.abs()
        exact = half // 2                              # |rel| < exact maps one to one
        # NOTE: same float32 op order as the official code so boundary distances land in the
        # same bucket; clamp(min=1) only avoids log(0) on entries the where() discards.
        far = exact + (torch.log(dist.clamp(min=1).float() / exact)
                       / math.log(self.max_distance / exact) * (half - exact)).long()
        far = far.clamp(max=half - 1)
        return upper + torch.where(dist < exact, dist, far)

    def forward(self, length: int) -> torch.Tensor:
        """Bias [1, N, L, L] in the table's dtype."""
        bias = self.embedding(self.buckets(length, self.embedding.weight.device))  # [L, L, N]
        return bias.permute(2, 0, 1).unsqueeze(0).contiguous()  # [L, L, N] -> [1, N, L, L]


class T5Attention(nn.Module):
    """Bias-free q/k/v/o self-attention without the 1/sqrt(D) scale (T5 convention)."""

    def __init__(self, dim: int, dim_attn: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim_attn // num_heads
        self.q = nn.Linear(dim, dim_attn, bias=False)
        self.k = nn.Linear(dim, dim_attn, bias=False)
        self.v = nn.Linear(dim, dim_attn, bias=False)
        self.o = nn.Linear(dim_attn, dim, bias=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None,
                pos_bias: torch.Tensor) -> torch.Tensor:
        """x [B, L, C] · mask [B, L] (0 = padded key) or None · pos_bias [1, N, L, L] -> [B, L, C]."""
        # Ported from Wan2.2 wan/modules/t5.py::T5Attention.forward
        b, n, d = x.shape[0], self.num_heads, self.head_dim
        q = self.q(x).view(b, -1, n, d).transpose(1, 2)  # [B, L, N*D] -> [B, N, L, D]
        k = self.k(x).view(b, -1, n, d).transpose(1, 2)
        v = self.v(x).view(b, -1, n, d).transpose(1, 2)
        bias = x.new_zeros(b, n, q.shape[2], k.shape[2])  # [B, N, L, L] in the activation dtype
        bias += pos_bias
        if mask is not None:
            bias.masked_fill_(mask.view(b, 1, 1, -1) == 0, torch.finfo(x.dtype).min)
        logits = torch.matmul(q, k.transpose(-1, -2)) + bias  # no scaling, [B, N, L, L]
        attn = torch.softmax(logits.float(), dim=-1).type_as(logits)
        out = torch.matmul(attn, v)  # [B, N, L, D]
        return self.o(out.transpose(1, 2).reshape(b, -1, n * d))  # [B, N, L, D] -> [B, L, N*D]


class T5FeedForward(nn.Module):
    """Gated-GELU FFN: ``fc2(fc1(x) * gelu_tanh(gate(x)))`` (``gate`` is a Sequential: key ``gate.0``)."""

    def __init__(self, dim: int, dim_ffn: int) -> None:
        super().__init__()
        self.gate = nn.Sequential(nn.Linear(dim, dim_ffn, bias=False))
        self.fc1 = nn.Linear(dim, dim_ffn, bias=False)
        self.fc2 = nn.Linear(dim_ffn, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, L, C] -> [B, L, C]."""
        return self.fc2(self.fc1(x) * _gelu_tanh(self.gate(x)))


class T5Block(nn.Module):
    """Pre-norm encoder block with its own relative position bias: x += attn; x += ffn."""

    def __init__(self, cfg: T5Config) -> None:
        super().__init__()
        self.norm1 = T5LayerNorm(cfg.dim, cfg.eps)
        self.attn = T5Attention(cfg.dim, cfg.dim_attn, cfg.num_heads)
        self.norm2 = T5LayerNorm(cfg.dim, cfg.eps)
        self.ffn = T5FeedForward(cfg.dim, cfg.dim_ffn)
        self.pos_embedding = T5RelativeBias(cfg.num_buckets, cfg.num_heads, cfg.max_distance)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """x [B, L, C] · mask [B, L] or None -> [B, L, C]."""
        bias = self.pos_embedding(x.shape[1])
        x = _fp16_clamp(x + self.attn(self.norm1(x), mask, bias))
        return _fp16_clamp(x + self.ffn(self.norm2(x)))


class T5Encoder(nn.Module):
    """umT5 encoder: token embedding -> blocks -> final RMS norm (no embedding scaling).

    ``state_dict()`` keys equal the official ``models_t5_umt5-xxl-enc-bf16.pth`` keys. Build it
    on ``torch.device("meta")`` and load with :func:`wan_animate.checkpoints.load.load_into`;
    the weights' dtype is the compute dtype (the official run uses bf16, no autocast).
    """

    def __init__(self, cfg: T5Config = T5Config()) -> None:
        super().__init__()
        self.cfg = cfg
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.blocks = nn.ModuleList(T5Block(cfg) for _ in range(cfg.num_layers))
        self.norm = T5LayerNorm(cfg.dim, cfg.eps)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Encode token ids.

        Args:
            ids: int64 [B, L] token ids (< vocab_size).
            mask: [B, L] (1 = real token, 0 = padding) or None (all real). Padded positions are
                masked as keys only; their own rows are computed too (and are unused).

        Returns:
            [B, L, C] hidden states in the weight dtype.
        """
        if mask is not None and tuple(mask.shape) != tuple(ids.shape):
            raise ValueError(f"T5Encoder: mask {tuple(mask.shape)} does not match ids {tuple(ids.shape)}")
        x = self.token_embedding(ids)  # [B, L] -> [B, L, C]
        for block in self.blocks:
            x = block(x, mask)
        return self.norm(x)

    @torch.no_grad()
    def encode(self, ids: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
        """The DiT's text context: ``forward`` trimmed per row to its real length.

        ids, mask: [B, L] as from :class:`~wan_animate.models.tokenizer.UMT5Tokenizer`.
        Returns B tensors [L_i, C] with ``L_i = mask[i].sum()``.
        """
        hidden = self(ids, mask)
        lengths = mask.gt(0).sum(dim=1).tolist()
        return [h[:n] for h, n in zip(hidden, lengths)]
