"""Socket types of the pack and conversions between ComfyUI tensors and engine arrays.

ComfyUI: IMAGE = float32 [N, H, W, C] in 0..1 (C = 3, or 4 with alpha); MASK = float32
[N, H, W] in 0..1. Engine (``wan_animate``): uint8 RGB [N, H, W, 3] videos, uint8 [H, W, 3]
images, masks float [N, H, W] in [0, 1] (or uint8 0/255 on 3 channels from preprocessing),
generated video float [3, N, H, W] in [-1, 1].

``io`` is ComfyUI's ``comfy_api.latest.io`` when ComfyUI is installed, else the small stand-in
:mod:`nodes.io_shim` (CI and plain Python have no ComfyUI).
"""
from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np
import torch

from wan_animate.errors import InputError

_CHUNK = 16
"""Frames converted at a time, so a long float video never gets a second full-size copy."""


def comfy_io() -> ModuleType:
    """ComfyUI's V3 ``io`` module when ``comfy_api`` exists, else :mod:`nodes.io_shim`.

    Only a missing ``comfy_api`` selects the stand-in; any other import error propagates.
    """
    try:
        from comfy_api.latest import io
    except ModuleNotFoundError as e:
        if e.name not in ("comfy_api", "comfy_api.latest"):
            raise
        from . import io_shim as io
    return io


io = comfy_io()
USING_COMFY_API = not io.__name__.endswith(".io_shim")

ModelType = io.Custom("WANANIMATE_MODEL")
"""Carries a :class:`wan_animate.engine.WanAnimateModel` handle."""
LatentType = io.Custom("WANANIMATE_LATENT")
"""Carries a :class:`wan_animate.sampling.generate.AnimateLatent`."""


def image_to_uint8(images: torch.Tensor, name: str) -> np.ndarray:
    """IMAGE [N, H, W, C] float 0..1 -> uint8 RGB [N, H, W, 3] (rounded; alpha dropped)."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
        shape = list(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise InputError(f"{name} must be a ComfyUI IMAGE [N, H, W, 3], got {shape}")
    if images.shape[0] == 0:
        raise InputError(f"{name} has no frames")
    n, h, w, _ = images.shape
    out = np.empty((n, h, w, 3), np.uint8)
    for i in range(0, n, _CHUNK):
        x = images[i:i + _CHUNK, ..., :3].float()
        x = x.expand(-1, -1, -1, 3) if x.shape[-1] == 1 else x                # grey -> RGB
        out[i:i + _CHUNK] = (x * 255).round_().clamp_(0, 255).to(torch.uint8).cpu().numpy()
    return out


def first_image(images: torch.Tensor, name: str) -> np.ndarray:
    """IMAGE [N, H, W, C] -> uint8 RGB [H, W, 3] of the first image."""
    return image_to_uint8(images[:1] if isinstance(images, torch.Tensor) else images, name)[0]


def uint8_to_image(frames: np.ndarray) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> IMAGE float32 [N, H, W, 3] in 0..1."""
    return torch.from_numpy(np.ascontiguousarray(frames)).float().div_(255.0)


def face_crops(images: torch.Tensor, size: int = 512) -> np.ndarray:
    """IMAGE [N, h, w, C] face crops -> uint8 [N, size, size, 3] (resized when not size x size)."""
    frames = image_to_uint8(images, "face_video")
    if frames.shape[1:3] == (size, size):
        return frames
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()                  # [N, 3, h, w]
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True,
                                        align_corners=False)
    return x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def mask_to_float(mask: torch.Tensor) -> np.ndarray:
    """MASK [N, H, W] (or [H, W]) float 0..1 -> float32 [N, H, W] in [0, 1]."""
    if not isinstance(mask, torch.Tensor) or mask.ndim not in (2, 3):
        shape = list(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise InputError(f"character_mask must be a ComfyUI MASK [N, H, W], got {shape}")
    m = mask[None] if mask.ndim == 2 else mask
    return m.float().clamp(0, 1).cpu().numpy()


def engine_mask_to_mask(mask: np.ndarray) -> torch.Tensor:
    """Engine mask uint8 [N, H, W, 3] 0/255 (or [N, H, W]) -> MASK float32 [N, H, W] in 0..1."""
    m = np.asarray(mask)
    m = m[..., 0] if m.ndim == 4 else m
    t = torch.from_numpy(np.ascontiguousarray(m)).float()
    return t.div_(255.0) if m.dtype == np.uint8 else t.clamp_(0, 1)


def video_to_image(video: torch.Tensor) -> torch.Tensor:
    """Engine video [3, N, H, W] in [-1, 1] -> IMAGE float32 [N, H, W, 3] in 0..1."""
    if video.ndim != 4 or video.shape[0] != 3:
        raise InputError(f"decoded video must be [3, N, H, W], got {list(video.shape)}")
    return ((video.float().clamp(-1, 1) + 1) / 2).permute(1, 2, 3, 0).contiguous().cpu()


def check_ranges(node: Any, **values: Any) -> None:
    """Raise :class:`InputError` when a widget value lies outside its schema's min/max.

    ComfyUI skips its own range check for every input that ``validate_inputs`` names, so a
    ``validate_inputs`` calls this for the inputs it takes.
    """
    spec = {i.id: i for i in node.define_schema().inputs}
    for name, value in values.items():
        lo, hi = getattr(spec[name], "min", None), getattr(spec[name], "max", None)
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise InputError(f"{name} = {value} is outside {lo}..{hi}")
