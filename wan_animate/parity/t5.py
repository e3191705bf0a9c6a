"""Parity runner for the ``t5`` fixture: :class:`~wan_animate.models.t5.T5Encoder`.

Builds the encoder on meta from ``config.json['constructor']``, loads ``weights.safetensors``
strictly, runs it on the stored ``ids``/``mask`` and compares ``hidden_states`` (all rows,
padded ones included) and every trimmed ``context_<b>``.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch

from wan_animate.checkpoints.load import load_into, read_safetensors
from wan_animate.models.t5 import T5Config, T5Encoder
from wan_animate.parity.common import Comparison, compare, read_config, tolerance

_CONTEXT = re.compile(r"context_(\d+)$")


def _dtype(name: str) -> torch.dtype:
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"config.json: unknown dtype {name!r}")
    return dtype


def run(folder: Path) -> list[Comparison]:
    """Compare our umT5 encoder with the official outputs stored in ``folder``."""
    folder = Path(folder)
    cfg = read_config(folder)
    name = cfg.get("fixture", folder.name)
    with torch.device("meta"):
        model = T5Encoder(T5Config.from_constructor(cfg["constructor"]))
    weights = folder / "weights.safetensors"
    load_into(model, read_safetensors(weights), str(weights), device="cpu",
              dtype=_dtype(cfg.get("dtype", "float32")))
    model.eval()
    io = read_safetensors(folder / "io.safetensors")
    with torch.no_grad():
        hidden = model(io["ids"], io["mask"])
        contexts = model.encode(io["ids"], io["mask"])

    out = [compare(name, "hidden_states", hidden, io["hidden_states"],
                   *tolerance(cfg, "hidden_states"))]
    keys = sorted((k for k in io if _CONTEXT.match(k)), key=lambda k: int(_CONTEXT.match(k)[1]))
    for key in keys:
        b = int(_CONTEXT.match(key)[1])
        ours = contexts[b] if b < len(contexts) else torch.empty(0)
        out.append(compare(name, key, ours, io[key], *tolerance(cfg, key)))
    return out
