"""``make-tiny-checkpoint``: a complete official-layout folder with tiny random networks.

Every later test and the demo use it; it is loaded by exactly the code that loads the real
checkpoint (:mod:`wan_animate.checkpoints.official`), with sizes read from
``wan_animate_sizes.json`` (the official folder has none: its sizes are the defaults).
Random weights give noise videos; they exist to run the whole path offline.
"""
from __future__ import annotations

import json
import math
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from wan_animate.checkpoints import layout
from wan_animate.checkpoints.load import save_safetensors_sharded
from wan_animate.checkpoints.official import SIZES_FILE
from wan_animate.models.clip import CLIPVisionConfig, CLIPVisionEncoder
from wan_animate.models.config import DiTConfig, FaceEncoderConfig, MotionEncoderConfig
from wan_animate.models.dit import AnimateDiT
from wan_animate.models.lora import relighting_targets
from wan_animate.models.motion import blur_kernel
from wan_animate.models.t5 import T5Config, T5Encoder
from wan_animate.models.tokenizer import write_tiny_tokenizer
from wan_animate.models.vae import VAEConfig, WanVAE

TINY_MOTION_CHANNELS = {512: 4, 256: 8, 128: 8, 64: 16, 32: 16, 16: 16, 8: 16, 4: 16}


def tiny_dit_config(num_heads: int = 2, head_dim: int = 16, num_layers: int = 5) -> DiTConfig:
    """A DiT of the official architecture at a few hundred thousand parameters."""
    dim = num_heads * head_dim
    return DiTConfig(dim=dim, ffn_dim=2 * dim, text_dim=32, num_heads=num_heads,
                     num_layers=num_layers, motion_encoder_dim=32, img_emb_in_dim=32,
                     motion=MotionEncoderConfig(style_dim=32, direction_rows=32,
                                                channels=tuple(sorted(TINY_MOTION_CHANNELS.items()))),
                     face=FaceEncoderConfig(width=16, num_heads=4))


TINY_T5 = T5Config(vocab_size=512, dim=32, dim_attn=32, dim_ffn=64, num_heads=2, num_layers=2)
TINY_CLIP = CLIPVisionConfig(dim=32, num_heads=2, num_layers=3, out_dim=16)
TINY_VAE = VAEConfig(dim=8)


@torch.no_grad()
def init_random(model: nn.Module, seed: int) -> nn.Module:
    """Deterministic random init that keeps activations O(1) at any size.

    Matrices ~ N(0, 1/fan_in); norm scales ~ 1 + N(0, 0.1); other vectors ~ N(0, 0.05).
    """
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if p.dim() >= 2 and not name.endswith(("modulation", "padding_tokens", "embedding")):
            fan_in = math.prod(p.shape[1:])
            p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(fan_in))
        elif "norm" in name or name.endswith("gamma"):
            p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
        else:
            p.copy_(0.05 * torch.randn(p.shape, generator=g))
    for name, b in model.named_buffers():
        if name.endswith(".kernel"):
            b.copy_(blur_kernel())
    return model


def _state(model: nn.Module, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    return {k: v.detach().to(dtype).contiguous() for k, v in model.state_dict().items()}


def write_tiny_checkpoint(folder: str | Path, seed: int = 0, dit_heads: int = 2,
                          num_shards: int = 2, dtype: torch.dtype = torch.bfloat16) -> Path:
    """Write config.json, sharded DiT + index, T5 .pth + tokenizer, CLIP .pth, VAE .pth and
    relighting_lora.ckpt into ``folder`` (created; written in a temp dir, then renamed)."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        dcfg = tiny_dit_config(num_heads=dit_heads)
        dit = init_random(AnimateDiT(dcfg), seed)
        (tmp / layout.DIT_CONFIG).write_text(json.dumps(dcfg.to_dict(), indent=2))
        save_safetensors_sharded(_state(dit, dtype), tmp, layout.DIT_INDEX,
                                 "diffusion_pytorch_model-{i:05d}-of-{n:05d}.safetensors", num_shards)
        torch.save(_state(init_random(T5Encoder(TINY_T5), seed + 1), dtype), tmp / layout.T5_FILE)
        write_tiny_tokenizer(tmp / layout.T5_TOKENIZER_DIR, TINY_T5.vocab_size)
        torch.save(_state(init_random(CLIPVisionEncoder(TINY_CLIP), seed + 2), torch.float32),
                   tmp / layout.CLIP_FILE)
        torch.save(_state(init_random(WanVAE(TINY_VAE), seed + 3), torch.float32),
                   tmp / layout.VAE_FILE)
        torch.save({layout.RELIGHT_LORA_WRAPPER_KEY: _tiny_lora(dit, seed + 4, dtype)},
                   tmp / layout.RELIGHT_LORA_FILE)
        sizes = {"t5": asdict(TINY_T5), "clip": asdict(TINY_CLIP), "vae": asdict(TINY_VAE)}
        (tmp / SIZES_FILE).write_text(json.dumps(sizes, indent=2))
        _write_manifest(tmp)
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return folder


def _tiny_lora(dit: nn.Module, seed: int, dtype: torch.dtype, rank: int = 4) -> dict[str, torch.Tensor]:
    """A PEFT-keyed LoRA on the official 12 Linears per block (``<module>.lora_A.weight``...)."""
    g = torch.Generator().manual_seed(seed)
    modules = dict(dit.named_modules())
    out = {}
    for name in relighting_targets(dit):
        lin = modules[name]
        out[f"{name}.lora_A.weight"] = (torch.randn(rank, lin.in_features, generator=g)
                                        / math.sqrt(lin.in_features)).to(dtype)
        out[f"{name}.lora_B.weight"] = (0.1 * torch.randn(lin.out_features, rank, generator=g)
                                        / math.sqrt(rank)).to(dtype)
    return out


def _write_manifest(folder: Path) -> None:
    from wan_animate.checkpoints.manifest import write_manifest

    write_manifest(folder)


