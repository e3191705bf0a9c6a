"""Parity of the relighting LoRA (merged and unmerged) against ``fixtures/official/relighting_lora``."""
from __future__ import annotations

from pathlib import Path

import torch

from wan_animate.checkpoints.load import read_safetensors
from wan_animate.models.lora import apply_lora, normalize_lora_state
from wan_animate.parity.common import Comparison, compare, exact, read_config, tolerance
from wan_animate.parity.dit_animate import build_dit, dit_inputs, timestep_keys


@torch.no_grad()
def run(folder: Path) -> list[Comparison]:
    cfg = read_config(folder)
    name = cfg["fixture"]
    # "base_model_fixture" reads like "../dit_animate (same set): ..."; its first word is the path
    base = (folder / str(cfg.get("base_model_fixture", "../dit_animate")).split()[0]).resolve()
    io_base = read_safetensors(base / "io.safetensors")
    io = read_safetensors(folder / "io.safetensors")
    state = read_safetensors(folder / "weights.safetensors")
    alpha = float(cfg.get("alpha", 0)) or None
    tol = tolerance(cfg, "outputs")
    results = []
    for merge in (True, False):
        model, _ = build_dit(base)
        pairs = normalize_lora_state(state, str(folder / "weights.safetensors"), alpha=alpha)
        touched = apply_lora(model, pairs, str(folder), merge=merge)
        tag = "merged" if merge else "unmerged"
        if "target_modules" in cfg:
            results.append(exact(name, f"{tag}.modules_touched", touched, len(cfg["target_modules"])))
        inputs = dit_inputs(io_base)
        for tk in timestep_keys(io_base):
            i = tk[2:]
            if f"out_lora_{i}" not in io:
                continue
            out = model(t=io_base[tk], **inputs)[0]
            results.append(compare(name, f"{tag}.out_lora_{i}", out, io[f"out_lora_{i}"], *tol))
    return results
