"""Load the networks from the official Wan-AI/Wan2.2-Animate-14B folder layout.

Layout (facts §1): ``config.json`` + ``diffusion_pytorch_model.safetensors.index.json`` + shards
(DiT), ``models_t5_umt5-xxl-enc-bf16.pth`` + ``google/umt5-xxl/`` (text), the CLIP ``.pth``
(both towers; only ``visual.*`` is used), ``Wan2.1_VAE.pth`` and ``relighting_lora.ckpt``.
Every network is built on the meta device and materialized tensor by tensor in its target
dtype on its target device (no float32 copy of the 17 B DiT ever exists in host memory).

The official folder carries no config for T5/CLIP/VAE (their sizes are hard-coded there); a
folder written by ``wan-animate make-tiny-checkpoint`` adds ``wan_animate_sizes.json`` with
smaller sizes, read by the same code.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from wan_animate.checkpoints import layout
from wan_animate.checkpoints.load import LazyTensors, load_into, read_pth
from wan_animate.errors import CheckpointError
from wan_animate.models.bundle import ModelBundle
from wan_animate.models.clip import CLIPVisionConfig, CLIPVisionEncoder, visual_keys
from wan_animate.models.config import DiTConfig
from wan_animate.models.dit import AnimateDiT
from wan_animate.models.lora import apply_lora, normalize_lora_state
from wan_animate.models.t5 import T5Config, T5Encoder
from wan_animate.models.tokenizer import UMT5Tokenizer
from wan_animate.models.vae import VAEConfig, WanVAE

SIZES_FILE = "wan_animate_sizes.json"


@dataclass(frozen=True)
class Precision:
    """Weight dtypes per network. ``gpu()`` is the official mix, ``cpu()`` all float32."""

    dit: torch.dtype = torch.bfloat16
    t5: torch.dtype = torch.bfloat16
    clip: torch.dtype = torch.float16
    vae: torch.dtype = torch.float32
    batch: torch.dtype = torch.bfloat16

    @classmethod
    def gpu(cls) -> Precision:
        return cls()

    @classmethod
    def cpu(cls) -> Precision:
        f = torch.float32
        return cls(f, f, f, f, f)

    @classmethod
    def for_device(cls, device: torch.device | str) -> Precision:
        return cls.gpu() if torch.device(device).type == "cuda" else cls.cpu()


def _sizes(folder: Path) -> dict[str, Any]:
    f = folder / SIZES_FILE
    return json.loads(f.read_text()) if f.is_file() else {}


def _require(folder: Path) -> None:
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint folder not found: {folder}; download it with "
                              f"`wan-animate setup download --local_dir {folder}`")


def load_dit(folder: str | Path, device: torch.device | str = "cpu",
             dtype: torch.dtype = torch.bfloat16) -> AnimateDiT:
    """The DiT from ``config.json`` + the sharded safetensors (strict, official keys)."""
    folder = Path(folder)
    _require(folder)
    cfg = DiTConfig.from_json(folder / layout.DIT_CONFIG)
    with torch.device("meta"):
        model = AnimateDiT(cfg)
    state = LazyTensors.from_index(folder, layout.DIT_INDEX, device=device)
    # the LIA blur kernels are constants some converters drop: rebuild them when absent
    load_into(model, state, str(folder / layout.DIT_INDEX), device=device, dtype=dtype,
              ignore_missing=layout.is_rebuildable_dit_key)
    return model.eval()


def _load_pth_network(model: torch.nn.Module, path: Path, device: torch.device | str,
                      dtype: torch.dtype,
                      select: Callable[[dict], dict] | None = None) -> torch.nn.Module:
    """Strictly load a ``.pth`` state dict (optionally filtered by ``select``) into a meta-built model."""
    state = read_pth(path)
    load_into(model, select(state) if select else state, str(path), device=device, dtype=dtype)
    return model.eval()


def load_t5(folder: str | Path, device: torch.device | str = "cpu",
            dtype: torch.dtype = torch.bfloat16) -> T5Encoder:
    folder = Path(folder)
    cfg = T5Config(**_sizes(folder).get("t5", {}))
    with torch.device("meta"):
        model = T5Encoder(cfg)
    return _load_pth_network(model, folder / layout.T5_FILE, device, dtype)


def load_clip(folder: str | Path, device: torch.device | str = "cpu",
              dtype: torch.dtype = torch.float16) -> CLIPVisionEncoder:
    folder = Path(folder)
    cfg = CLIPVisionConfig(**_sizes(folder).get("clip", {}))
    with torch.device("meta"):
        model = CLIPVisionEncoder(cfg)
    # the file holds both towers; Animate uses only visual.* (the text tower is skipped)
    return _load_pth_network(model, folder / layout.CLIP_FILE, device, dtype, select=visual_keys)


def load_vae(folder: str | Path, device: torch.device | str = "cpu",
             dtype: torch.dtype = torch.float32) -> WanVAE:
    folder = Path(folder)
    sizes = _sizes(folder).get("vae", {})
    cfg = VAEConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in sizes.items()})
    with torch.device("meta"):
        model = WanVAE(cfg)
    return _load_pth_network(model, folder / layout.VAE_FILE, device, dtype)


def load_relighting_lora(model: AnimateDiT, folder: str | Path, merge: bool = True) -> int:
    """Apply ``relighting_lora.ckpt`` (alpha = rank: scale 1.0); returns modules touched (480)."""
    path = Path(folder) / layout.RELIGHT_LORA_FILE
    state = read_pth(path, wrapper_keys=(layout.RELIGHT_LORA_WRAPPER_KEY,))
    pairs = normalize_lora_state(state, str(path))
    return apply_lora(model, pairs, str(path), merge=merge)


@torch.no_grad()
def apply_loras(model: AnimateDiT, loras: tuple[tuple[str, float], ...]) -> list[str]:
    """Merge user LoRAs (ComfyUI / kohya / diffusers / PEFT files, each with a strength) into the
    DiT weights in place; returns one line per LoRA (format, modules touched)."""
    from wan_animate.checkpoints.lora_formats import merge_loras, read_lora

    if not loras:
        return []
    state = model.state_dict()
    files = [(read_lora(path, state.keys()), float(strength)) for path, strength in loras]
    merged = merge_loras(state, files)
    for key, value in merged.items():
        if value is not state[key]:
            state[key].copy_(value)
    return [f"{lf.source}: {lf.format}, {len(lf.modules)} modules x {s:g}" for lf, s in files]


def load_bundle(folder: str | Path, device: torch.device | str = "cpu",
                precision: Precision | None = None, use_relighting_lora: bool = False,
                with_dit: bool = True, loras: tuple[tuple[str, float], ...] = (),
                dit_device: torch.device | str | None = None,
                t5_device: torch.device | str | None = None,
                clip_device: torch.device | str | None = None) -> ModelBundle:
    """Every network of an official-layout folder, ready for :func:`generate`.

    ``with_dit=False`` leaves the DiT on meta (the worker pool loads its own shards).
    ``dit_device`` / ``t5_device`` / ``clip_device``: where those load instead of ``device``
    (block swap loads the DiT on the CPU first; parked encoders and ``t5_cpu`` load there).
    """
    folder = Path(folder)
    _require(folder)
    device = torch.device(device)
    p = precision or Precision.for_device(device)
    if with_dit:
        dit = load_dit(folder, dit_device or device, p.dit)
        if use_relighting_lora:
            load_relighting_lora(dit, folder)
        apply_loras(dit, loras)
    else:
        with torch.device("meta"):
            dit = AnimateDiT(DiTConfig.from_json(folder / layout.DIT_CONFIG))
    tok_dir = folder / layout.T5_TOKENIZER_DIR
    return ModelBundle(dit=dit, vae=load_vae(folder, device, p.vae),
                       t5=load_t5(folder, t5_device or device, p.t5),
                       clip=load_clip(folder, clip_device or device, p.clip),
                       tokenizer=UMT5Tokenizer(tok_dir), device=device, dtype=p.batch)
