"""fp8 detection (plain, legacy scaled, comfy_quant), dequantization and the bf16 keep-list."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from wan_animate.checkpoints import fp8
from wan_animate.checkpoints.load import load_into
from wan_animate.errors import CheckpointError

E4M3 = torch.float8_e4m3fn


def _w(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _conf(fmt: str) -> torch.Tensor:
    return torch.tensor(list(json.dumps({"format": fmt}).encode()), dtype=torch.uint8)


def test_quantize_dequantize_error_and_exactness():
    w = _w(64, 48)
    q, s = fp8.quantize(w)
    assert q.dtype == E4M3 and s.shape == () and s.dtype == torch.float32
    d = fp8.dequantize(q, s, torch.float32)
    assert torch.equal(d, q.float() * s)                                     # exactly q * scale
    rel = ((d - w).norm() / w.norm()).item()
    assert 0 < rel < 0.04                                                    # 3 mantissa bits
    assert (d - w).abs().max() <= w.abs().max() * 2 ** -4 + 1e-6
    # rows of very different magnitude: per-channel scales are far better
    w2 = w * torch.logspace(-5, 0, 64)[:, None]
    qt, st = fp8.quantize(w2)
    qc, sc = fp8.quantize(w2, per_channel=True)
    assert sc.shape == (64,)
    small = slice(0, 16)                                  # rows below fp8's normal range per-tensor
    err_t = (fp8.dequantize(qt, st, torch.float32) - w2)[small].norm() / w2[small].norm()
    err_c = (fp8.dequantize(qc, sc, torch.float32) - w2)[small].norm() / w2[small].norm()
    assert err_c < 0.04 < err_t


@pytest.mark.parametrize("scale_shape", [(), (1,), (8,), (8, 1)])
def test_scale_shapes(scale_shape):
    w = _w(8, 4)
    q = w.to(E4M3)
    s = torch.full(scale_shape, 0.5) if scale_shape not in ((8,), (8, 1)) else \
        torch.arange(1, 9, dtype=torch.float32).reshape(scale_shape)
    ref = q.float() * s.reshape(-1, 1) if s.numel() == 8 else q.float() * 0.5
    assert torch.equal(fp8.dequantize(q, s, torch.float32), ref)
    assert fp8.dequantize(q, s, torch.bfloat16).dtype == torch.bfloat16


def test_bad_scale_shape_names_the_key():
    with pytest.raises(CheckpointError, match="blocks.0.ffn.0.weight"):
        fp8.dequantize(_w(8, 4).to(E4M3), torch.ones(3), torch.float32, "blocks.0.ffn.0.weight")


def test_detect_plain_scaled_and_comfy_quant():
    w = _w(8, 4)
    q, s = fp8.quantize(w)
    plain = {"a.weight": q, "a.bias": torch.zeros(8)}
    lay = fp8.detect({k: v.dtype for k, v in plain.items()}, "f")
    assert lay.kind == "plain" and lay.fp8_keys == {"a.weight"} and not lay.scales
    legacy = {"a.weight": q, "a.scale_weight": s, "a.scale_input": torch.tensor(1.0),
              "scaled_fp8": torch.empty(0, dtype=E4M3), "b.weight": torch.ones(2, 2)}
    lay = fp8.detect({k: v.dtype for k, v in legacy.items()}, "f")
    assert lay.kind == "scaled" and dict(lay.scales) == {"a.weight": "a.scale_weight"}
    assert lay.aux == {"a.scale_weight", "a.scale_input", "scaled_fp8"}
    quant = {"a.weight": q, "a.weight_scale": s, "a.input_scale": torch.tensor(2.0),
             "a.comfy_quant": _conf("float8_e4m3fn")}
    lay = fp8.detect({k: v.dtype for k, v in quant.items()}, "f", quant.__getitem__)
    assert lay.kind == "comfy_quant" and dict(lay.formats) == {"a": "float8_e4m3fn"}
    assert lay.aux == {"a.weight_scale", "a.input_scale", "a.comfy_quant"}
    # the same config given as safetensors metadata
    meta = {fp8.QUANT_METADATA_KEY: json.dumps({"layers": {"a": {"format": "float8_e4m3fn"}}})}
    lay = fp8.detect({"a.weight": E4M3, "a.weight_scale": torch.float32}, "f", metadata=meta)
    assert lay.kind == "comfy_quant" and dict(lay.scales) == {"a.weight": "a.weight_scale"}


def test_unsupported_quant_format_and_orphan_scale():
    state = {"blocks.3.ffn.0.weight": torch.zeros(4, 4, dtype=torch.uint8),
             "blocks.3.ffn.0.weight_scale": torch.ones(4),
             "blocks.3.ffn.0.comfy_quant": _conf("nvfp4")}
    with pytest.raises(CheckpointError, match=r"blocks\.3\.ffn\.0.*nvfp4"):
        fp8.detect({k: v.dtype for k, v in state.items()}, "f.safetensors", state.__getitem__)
    with pytest.raises(CheckpointError, match="x.scale_weight"):
        fp8.detect({"x.scale_weight": torch.float32, "y.weight": E4M3}, "f")


def test_dequantize_state_keeps_face_and_motion_in_bf16():
    w = _w(8, 8)
    q, s = fp8.quantize(w)
    state = {"blocks.0.self_attn.q.weight": q, "blocks.0.self_attn.q.scale_weight": s,
             "face_adapter.fuser_blocks.0.linear2.weight": q,
             "face_adapter.fuser_blocks.0.linear2.scale_weight": s,
             "motion_encoder.enc.fc.0.weight": w.to(torch.float8_e5m2),
             "blocks.0.self_attn.q.bias": torch.zeros(8, dtype=torch.bfloat16),
             "scaled_fp8": torch.empty(0, dtype=E4M3)}
    out, rep = fp8.dequantize_state(state, torch.float16, "f")
    assert set(out) == {"blocks.0.self_attn.q.weight", "face_adapter.fuser_blocks.0.linear2.weight",
                        "motion_encoder.enc.fc.0.weight", "blocks.0.self_attn.q.bias"}
    assert out["blocks.0.self_attn.q.weight"].dtype == torch.float16
    assert out["face_adapter.fuser_blocks.0.linear2.weight"].dtype == torch.bfloat16
    assert out["motion_encoder.enc.fc.0.weight"].dtype == torch.bfloat16
    assert out["blocks.0.self_attn.q.bias"].dtype == torch.bfloat16           # not fp8: untouched
    assert torch.equal(out["face_adapter.fuser_blocks.0.linear2.weight"], (q.float() * s).bfloat16())
    assert rep.kind == "scaled" and rep.dequantized == 3
    assert rep.protected_fp8 == ("face_adapter.fuser_blocks.0.linear2.weight",
                                 "motion_encoder.enc.fc.0.weight")
    assert "Faces may degrade" in rep.warnings()[0]
    out32, _ = fp8.dequantize_state(state, torch.float32)
    assert out32["face_adapter.fuser_blocks.0.linear2.weight"].dtype == torch.float32
    with pytest.raises(ValueError):
        fp8.dequantize_state(state, E4M3)


def test_storage_dtype_and_load_rule():
    assert fp8.storage_dtype("face_encoder.out_proj.weight", E4M3) == torch.bfloat16
    assert fp8.storage_dtype("face_encoder.out_proj.weight", torch.float16) == torch.bfloat16
    assert fp8.storage_dtype("face_encoder.out_proj.weight", torch.float32) == torch.float32
    assert fp8.storage_dtype("blocks.1.ffn.2.weight", E4M3) == E4M3
    assert not fp8.is_protected("blocks.0.face_adapter_like.weight")

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList([nn.Linear(4, 4)])
            self.face_adapter = nn.Linear(4, 4)
            self.register_buffer("steps", torch.zeros(2, dtype=torch.int64))

    with torch.device("meta"):
        m = Tiny()
    state = {k: torch.ones(v.shape, dtype=v.dtype) for k, v in Tiny().state_dict().items()}
    load_into(m, state, "tiny", dtype=fp8.dtype_rule(torch.float16))
    assert m.blocks[0].weight.dtype == torch.float16 and m.face_adapter.weight.dtype == torch.bfloat16
    assert m.steps.dtype == torch.int64
