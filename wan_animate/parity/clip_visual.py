"""Parity runner for the ``clip_visual`` fixture: :class:`~wan_animate.models.clip.CLIPVisionEncoder`.

Builds the visual tower on meta from ``config.json['constructor']``, loads the ``visual.*``
weights strictly, preprocesses the stored ``raw_image`` ([3, H, W] in [-1, 1]) and compares
``preprocessed_pixels`` (its own tolerance), ``features`` (computed from *our* preprocessing,
end to end) and every ``inter.blockNN_out``.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch

from wan_animate.checkpoints.load import load_into, read_safetensors
from wan_animate.models.clip import CLIPVisionConfig, CLIPVisionEncoder, visual_keys
from wan_animate.parity.common import Comparison, compare, read_config, tolerance

_BLOCK = re.compile(r"inter\.block(\d+)_out$")


def run(folder: Path) -> list[Comparison]:
    """Compare our CLIP visual tower with the official outputs stored in ``folder``."""
    folder = Path(folder)
    cfg = read_config(folder)
    name = cfg.get("fixture", folder.name)
    dtype = getattr(torch, cfg.get("dtype", "float32"), None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"{folder / 'config.json'}: unknown dtype {cfg.get('dtype')!r}")
    with torch.device("meta"):
        model = CLIPVisionEncoder(CLIPVisionConfig.from_constructor(cfg["constructor"]))
    weights = folder / "weights.safetensors"
    load_into(model, visual_keys(read_safetensors(weights)), str(weights), device="cpu", dtype=dtype)
    model.eval()
    io = read_safetensors(folder / "io.safetensors")
    with torch.no_grad():
        pixels = model.preprocess(io["raw_image"].to(dtype)[None])  # [3, H, W] -> [1, 3, H, W]
        features, inter = model.encode_pixels(pixels, return_intermediates=True)

    out = [compare(name, "preprocessed_pixels", pixels, io["preprocessed_pixels"],
                   *tolerance(cfg, "preprocessed_pixels")),
           compare(name, "features", features, io["features"], *tolerance(cfg, "features"))]
    blocks = sorted((k for k in io if _BLOCK.match(k)), key=lambda k: int(_BLOCK.match(k)[1]))
    for key in blocks:
        i = int(_BLOCK.match(key)[1])
        ours = inter[i] if i < len(inter) else torch.empty(0)
        out.append(compare(name, key, ours, io[key], *tolerance(cfg, key)))
    return out
