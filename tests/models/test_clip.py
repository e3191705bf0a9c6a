"""CLIP ViT-H/14 visual tower: parity with the official fixture, key layout, text-tower filter."""
from __future__ import annotations

import json

import pytest
import torch

from wan_animate.checkpoints.load import load_into, read_safetensors
from wan_animate.errors import CheckpointError
from wan_animate.models.clip import CLIPVisionConfig, CLIPVisionEncoder, visual_keys
from wan_animate.parity import clip_visual as clip_parity


@pytest.fixture(scope="module")
def fixture_dir(official_fixtures):
    return official_fixtures / "clip_visual"


def _build(fixture_dir) -> CLIPVisionEncoder:
    cfg = json.loads((fixture_dir / "config.json").read_text())
    with torch.device("meta"):
        return CLIPVisionEncoder(CLIPVisionConfig.from_constructor(cfg["constructor"]))


def _load(fixture_dir, dtype=torch.float32) -> CLIPVisionEncoder:
    model = _build(fixture_dir)
    state = visual_keys(read_safetensors(fixture_dir / "weights.safetensors"))
    return load_into(model, state, "weights", dtype=dtype).eval()


def test_parity_runner_passes(fixture_dir):
    results = clip_parity.run(fixture_dir)
    names = {c.name for c in results}
    assert {"preprocessed_pixels", "features", "inter.block00_out"} <= names
    failed = [c.line() for c in results if not c.passed]
    assert not failed, failed


def test_full_size_visual_keys_and_shapes(fixture_dir):
    spec = json.loads((fixture_dir / "full_size_key_shapes.json").read_text())
    assert CLIPVisionConfig.from_constructor(spec["constructor"]) == CLIPVisionConfig()
    with torch.device("meta"):
        model = CLIPVisionEncoder()
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    full = {k: v["shape"] for k, v in spec["keys"].items()}
    assert ours == {k: s for k, s in full.items() if k.startswith("visual.")}
    assert ours["visual.pos_embedding"] == [1, 257, 1280]
    # The full checkpoint also holds the XLM-R text tower and log_scale: skipped on purpose.
    fake = {k: torch.empty(s, device="meta") for k, s in full.items()}
    kept = visual_keys(fake)
    assert set(kept) == set(ours) and len(full) > len(kept)
    assert "log_scale" in full and any(k.startswith("textual.") for k in full)


def test_strict_load_rejects_renamed_and_foreign_keys(fixture_dir):
    state = visual_keys(read_safetensors(fixture_dir / "weights.safetensors"))
    renamed = dict(state)
    renamed["visual.transformer.0.mlp.1.weight"] = renamed.pop("visual.transformer.0.mlp.0.weight")
    with pytest.raises(CheckpointError, match=r"visual\.transformer\.0\.mlp"):
        load_into(_build(fixture_dir), renamed, "renamed.pth")
    foreign = visual_keys({**state, "textual.norm.weight": torch.zeros(2), "proj": torch.zeros(2)})
    assert "textual.norm.weight" not in foreign and "proj" in foreign
    with pytest.raises(CheckpointError, match="proj"):
        load_into(_build(fixture_dir), foreign, "foreign.pth")


def test_last_block_is_not_run_and_output_shape(fixture_dir):
    model = _load(fixture_dir)
    cfg = model.cfg
    img = torch.rand(2, 3, 40, 72) * 2 - 1
    with torch.no_grad():
        out = model(img)
        one = model(img[1:])
        for p in model.visual.transformer[-1].parameters():
            p.add_(1.0)  # the last block must not matter (use_31_block)
        again = model(img)
        model.visual.transformer[-2].mlp[2].bias.add_(1.0)
        moved = model(img)
    assert out.shape == (2, cfg.num_tokens, cfg.dim)
    torch.testing.assert_close(one[0], out[1], rtol=1e-5, atol=1e-5)
    assert torch.equal(again, out)
    assert not torch.allclose(moved, out)


def test_preprocess_range_and_validation(fixture_dir):
    model = _build(fixture_dir)
    size = model.cfg.image_size
    white = model.preprocess(torch.ones(1, 3, 30, 50))
    assert white.shape == (1, 3, size, size)
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073])
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711])
    torch.testing.assert_close(white[0, :, 0, 0], (1 - mean) / std)
    with pytest.raises(ValueError):
        model.preprocess(torch.zeros(1, 4, 8, 8))
    with pytest.raises(ValueError):
        model.encode_pixels(torch.zeros(1, 3, 8, 8))


def test_fp16_weights_close_to_fp32(fixture_dir):
    ref = _load(fixture_dir)
    half = _load(fixture_dir, torch.float16)
    io = read_safetensors(fixture_dir / "io.safetensors")
    img = io["raw_image"][None]
    with torch.no_grad():
        want = ref(img)
        got = half(img)
    assert got.dtype == torch.float16
    rel = (got.float() - want).norm() / want.norm()
    assert 0 < rel < 1e-2
