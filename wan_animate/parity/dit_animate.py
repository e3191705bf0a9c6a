"""Parity of the Animate DiT against ``fixtures/official/dit_animate``."""
from __future__ import annotations

from pathlib import Path

import torch

from wan_animate.checkpoints.load import load_into, read_safetensors
from wan_animate.models.config import DiTConfig
from wan_animate.models.dit import AnimateDiT
from wan_animate.parity.common import Comparison, compare, read_config, tolerance


def build_dit(folder: Path) -> tuple[AnimateDiT, dict]:
    """The fixture's DiT, built on meta from config.json and loaded strictly in float32."""
    cfg = read_config(folder)
    dcfg = DiTConfig.from_dict(cfg["constructor"], cfg.get("hardcoded_overrides", {}))
    with torch.device("meta"):
        model = AnimateDiT(dcfg)
    load_into(model, read_safetensors(folder / "weights.safetensors"),
              str(folder / "weights.safetensors"), dtype=torch.float32)
    return model.eval(), cfg


def dit_inputs(io: dict[str, torch.Tensor]) -> dict:
    """The documented call's inputs as batch-1 tensors."""
    face = (io["face_pixel_values_u8"].double() / 127.5 - 1).float()
    return dict(x=io["x"][None], clip_fea=io["clip_fea"], context=[io["context_0"]], y=io["y"][None],
                pose_latents=io["pose_latents"], face_pixels=face)


def timestep_keys(io: dict[str, torch.Tensor]) -> list[str]:
    return sorted(k for k in io if k.startswith("t_") and k[2:].isdigit())


@torch.no_grad()
def run(folder: Path) -> list[Comparison]:
    model, cfg = build_dit(folder)
    io = read_safetensors(folder / "io.safetensors")
    name = cfg["fixture"]
    tol_o = tolerance(cfg, "outputs")
    tol_i = tolerance(cfg, "intermediates")
    inputs = dit_inputs(io)
    results = []
    record: dict[str, torch.Tensor] = {}
    for tk in timestep_keys(io):
        i = tk[2:]
        out = model(t=io[tk], record=record if i == "0" else None, **inputs)[0]
        results.append(compare(name, f"out_{i}", out, io[f"out_{i}"], *tol_o))
    # intermediates of the t_0 call
    faces = inputs["face_pixels"]
    b, _, t = faces.shape[:3]
    motion = model.motion_encoder(faces.transpose(1, 2).flatten(0, 1))
    record["motion_encoder_out"] = motion
    record["face_encoder_out"] = model.face_encoder(motion.unflatten(0, (b, t)))
    for key in sorted(k for k in io if k.startswith("inter_t0.")):
        short = key[len("inter_t0."):]
        if short not in record:
            results.append(compare(name, key, torch.zeros(0), io[key], *tol_i))
            continue
        ours = record[short]
        ref = io[key]
        if ours.shape != ref.shape and ours.numel() == ref.numel():
            ours = ours.reshape(ref.shape)
        results.append(compare(name, key, ours, ref, *tol_i))
    return results
