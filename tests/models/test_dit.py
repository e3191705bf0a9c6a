"""The Animate DiT against the official fixtures; layout of the full-size model."""
from __future__ import annotations

import json

import pytest
import torch

from wan_animate.errors import CheckpointError, ParallelConfigError
from wan_animate.checkpoints.load import load_into, read_safetensors
from wan_animate.models.config import DiTConfig
from wan_animate.models.dit import AnimateDiT
from wan_animate.parity import dit_animate


def test_parity_dit_animate(official_fixtures):
    results = dit_animate.run(official_fixtures / "dit_animate")
    names = {r.name for r in results}
    assert {"out_0", "out_1", "inter_t0.block00_after_face_adapter", "inter_t0.head_out"} <= names
    failed = [r.line() for r in results if not r.passed]
    assert not failed, "\n".join(failed)


def test_full_size_keys_and_shapes(official_fixtures):
    ref = json.loads((official_fixtures / "dit_animate" / "full_size_key_shapes.json").read_text())
    cfg = DiTConfig.from_dict(ref["constructor"], ref["hardcoded"])
    assert cfg == DiTConfig()  # the official config is our default
    with torch.device("meta"):
        model = AnimateDiT(cfg)
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    want = {k: v["shape"] for k, v in ref["keys"].items()}
    assert ours == want
    assert sum(p.numel() for p in model.parameters()) == 17_274_816_884


def test_strict_load_names_the_key(official_fixtures):
    folder = official_fixtures / "dit_animate"
    cfg = json.loads((folder / "config.json").read_text())
    state = read_safetensors(folder / "weights.safetensors")
    state["blocks.0.self_attn.q.weight_renamed"] = state.pop("blocks.0.self_attn.q.weight")
    with torch.device("meta"):
        model = AnimateDiT(DiTConfig.from_dict(cfg["constructor"], cfg["hardcoded_overrides"]))
    with pytest.raises(CheckpointError, match=r"blocks\.0\.self_attn\.q\.weight"):
        load_into(model, state, "weights.safetensors")


def test_config_roundtrip_with_overrides(official_fixtures):
    cfg = json.loads((official_fixtures / "dit_animate" / "config.json").read_text())
    dcfg = DiTConfig.from_dict(cfg["constructor"], cfg["hardcoded_overrides"])
    assert DiTConfig.from_dict(dcfg.to_dict()) == dcfg


def test_sp_size_must_divide_heads():
    cfg = DiTConfig()
    cfg.check_sp_size(8)
    with pytest.raises(ParallelConfigError, match=r"divides 40: \[1, 2, 4, 5, 8, 10, 20, 40\]"):
        cfg.check_sp_size(3)


def test_motion_vec_cached_equals_face_pixels(official_fixtures):
    model, _ = dit_animate.build_dit(official_fixtures / "dit_animate")
    io = read_safetensors(official_fixtures / "dit_animate" / "io.safetensors")
    inputs = dit_animate.dit_inputs(io)
    with torch.no_grad():
        direct = model(t=io["t_0"], **inputs)
        motion = model.encode_motion(inputs.pop("face_pixels"))
        cached = model(t=io["t_0"], motion_vec=motion, **inputs)
    assert torch.equal(direct, cached)


def test_frame_mismatch_is_a_clear_error(official_fixtures):
    model, _ = dit_animate.build_dit(official_fixtures / "dit_animate")
    io = read_safetensors(official_fixtures / "dit_animate" / "io.safetensors")
    inputs = dit_animate.dit_inputs(io)
    inputs["pose_latents"] = inputs["pose_latents"][:, :, :1]
    with pytest.raises(ValueError, match="pose_latents"):
        model(t=io["t_0"], **inputs)
