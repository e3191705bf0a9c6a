"""umT5 encoder: parity with the official fixture, official key layout, numerics details."""
from __future__ import annotations

import json

import pytest
import torch

from wan_animate.checkpoints.load import load_into, read_safetensors
from wan_animate.errors import CheckpointError
from wan_animate.models.t5 import T5Config, T5Encoder, T5RelativeBias
from wan_animate.models.tokenizer import UMT5Tokenizer, write_tiny_tokenizer
from wan_animate.parity import t5 as t5_parity


@pytest.fixture(scope="module")
def fixture_dir(official_fixtures):
    return official_fixtures / "t5"


def _load(fixture_dir, dtype=torch.float32) -> T5Encoder:
    cfg = json.loads((fixture_dir / "config.json").read_text())
    with torch.device("meta"):
        model = T5Encoder(T5Config.from_constructor(cfg["constructor"]))
    load_into(model, read_safetensors(fixture_dir / "weights.safetensors"), "weights", dtype=dtype)
    return model.eval()


def test_parity_runner_passes(fixture_dir):
    results = t5_parity.run(fixture_dir)
    names = {c.name for c in results}
    assert {"hidden_states", "context_0", "context_1"} <= names
    failed = [c.line() for c in results if not c.passed]
    assert not failed, failed


def test_full_size_keys_and_shapes(fixture_dir):
    spec = json.loads((fixture_dir / "full_size_key_shapes.json").read_text())
    assert T5Config.from_constructor(spec["constructor"]) == T5Config()
    with torch.device("meta"):
        model = T5Encoder()
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert ours == {k: v["shape"] for k, v in spec["keys"].items()}
    assert len(ours) == 242


def test_constructor_rejects_shared_pos_and_unknown_keys():
    with pytest.raises(ValueError, match="shared_pos"):
        T5Config.from_constructor({"shared_pos": True})
    with pytest.raises(ValueError, match="unknown"):
        T5Config.from_constructor({"vocab": 10})
    with pytest.raises(ValueError, match="divisible"):
        T5Config(dim_attn=100, num_heads=64)


def test_relative_buckets_match_official_boundaries():
    # First distance of each log-spaced bucket for 32 buckets / max distance 128, as produced by
    # the official T5RelativeEmbedding._relative_position_bucket (distances 0..7 map exactly).
    starts = {8: 8, 12: 9, 16: 10, 23: 11, 32: 12, 46: 13, 64: 14, 91: 15}
    expected = []
    bucket = 0
    for d in range(300):
        bucket = d if d < 8 else starts.get(d, bucket)
        expected.append(bucket)
    table = T5RelativeBias(32, 4, 128).buckets(300, torch.device("cpu"))
    assert table[0].tolist() == [0] + [16 + b for b in expected[1:]]   # keys after the query
    assert table[:, 0].tolist() == expected                              # keys before the query
    assert table.max() == 31 and table.min() == 0


def test_encode_trims_rows_and_padding_is_masked(fixture_dir):
    model = _load(fixture_dir)
    io = read_safetensors(fixture_dir / "io.safetensors")
    ids, mask = io["ids"], io["mask"]
    with torch.no_grad():
        hidden = model(ids, mask)
        ctx = model.encode(ids, mask)
        # Padded ids are masked as keys: changing them must not move the valid rows.
        ids2 = ids.clone()
        ids2[mask == 0] = 5
        ctx2 = model.encode(ids2, mask)
    assert [c.shape[0] for c in ctx] == mask.sum(1).tolist()
    for b, c in enumerate(ctx):
        assert torch.equal(c, hidden[b, : c.shape[0]])
        torch.testing.assert_close(ctx2[b], c, rtol=0, atol=1e-6)
    assert int(mask.sum(1).min()) < ids.shape[1]  # the fixture really has padding


def test_bf16_weights_run_in_bf16(fixture_dir):
    ref = _load(fixture_dir)
    model = _load(fixture_dir, torch.bfloat16)
    io = read_safetensors(fixture_dir / "io.safetensors")
    with torch.no_grad():
        out = model(io["ids"], io["mask"])
        want = ref(io["ids"], io["mask"])
    assert out.dtype == torch.bfloat16 and model.blocks[0].attn.q.weight.dtype == torch.bfloat16
    rel = (out.float() - want).norm() / want.norm()
    assert 0 < rel < 3e-2


def test_strict_load_rejects_renamed_key(fixture_dir):
    state = read_safetensors(fixture_dir / "weights.safetensors")
    state["blocks.0.ffn.gate.weight"] = state.pop("blocks.0.ffn.gate.0.weight")
    cfg = json.loads((fixture_dir / "config.json").read_text())
    with torch.device("meta"):
        model = T5Encoder(T5Config.from_constructor(cfg["constructor"]))
    with pytest.raises(CheckpointError, match=r"blocks\.0\.ffn\.gate"):
        load_into(model, state, "renamed.safetensors")


def test_tiny_tokenizer_feeds_the_encoder(fixture_dir, tmp_path):
    model = _load(fixture_dir)
    tok = UMT5Tokenizer(write_tiny_tokenizer(tmp_path / "tok", model.cfg.vocab_size), max_length=32)
    ids, mask = tok(["视频中的人在做动作", "a person is dancing"])
    with torch.no_grad():
        ctx = model.encode(ids, mask)
    assert [c.shape for c in ctx] == [(int(n), model.cfg.dim) for n in mask.sum(1)]
    assert all(torch.isfinite(c).all() for c in ctx)
