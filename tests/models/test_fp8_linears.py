"""fp8 (e4m3) linears of the fast mode: quantization math, the swap, and the DiT in fast mode."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from wan_animate.checkpoints.load import read_safetensors
from wan_animate.models.fp8 import E4M3, FP8_LINEARS, Fp8Linear, quantize_dit, quantize_rows
from wan_animate.models.norms import linear
from wan_animate.parity.dit_animate import build_dit, dit_inputs, timestep_keys


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def test_quantize_rows_roundtrip_and_range():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(37, 64, generator=g) * torch.logspace(-3, 3, 37)[:, None]   # rows of any scale
    x[5] = 0
    x8, s = quantize_rows(x)
    assert x8.dtype == E4M3 and s.shape == (37, 1)
    assert float(x8.float().abs().amax(1)[6:].min()) == 448.0      # each row uses the full range
    assert float(s[5]) == 1.0 and not x8[5].float().any()          # an all-zero row stays zero
    back = x8.float() * s
    err = ((back - x).abs() / x.abs().amax(1, keepdim=True).clamp_min(1e-30)).max()
    assert float(err) <= 2 ** -4 + 1e-6     # e4m3: 3 mantissa bits -> half-ulp 1/16 of the row max


@pytest.mark.parametrize("bias", [True, False])
def test_fp8_linear_equals_its_emulation_and_is_close_to_bf16(bias):
    g = torch.Generator().manual_seed(1)
    lin = nn.Linear(96, 48, bias=bias)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(48, 96, generator=g) / 96 ** 0.5)
        if bias:
            lin.bias.copy_(torch.randn(48, generator=g))
    x = torch.randn(2, 7, 96, generator=g)
    q = Fp8Linear.from_linear(lin)
    assert q.weight.dtype == E4M3 and q.weight_scale.shape == (48,)
    y = q(x)
    assert y.shape == (2, 7, 48) and y.dtype == torch.float32       # the replaced layer's dtype
    # the same function by hand: dequantized operands, fp32 product
    x8, sx = quantize_rows(x.reshape(-1, 96))
    ref = (x8.float() * sx) @ (q.weight.float() * q.weight_scale[:, None]).t()
    if bias:
        ref = ref + lin.bias
    torch.testing.assert_close(y.reshape(-1, 48), ref, atol=1e-5, rtol=1e-5)
    assert 1e-3 < _rel(y, lin(x).detach()) < 6e-2                      # fp8 noise, not garbage
    assert linear(q, x) is not None and linear(q, x).dtype == torch.float32


def test_dims_fp8_gemms_cannot_take_stay_unquantized():
    from wan_animate.models.fp8 import fp8_shape_ok

    assert fp8_shape_ok(nn.Linear(5120, 13824)) and not fp8_shape_ok(nn.Linear(40, 24))
    blocks = nn.Module()
    blocks.blocks = nn.ModuleList([nn.Module()])
    b = blocks.blocks[0]
    b.self_attn = nn.Module()
    for k in ("q", "k", "v", "o"):
        setattr(b.self_attn, k, nn.Linear(32, 32 if k != "o" else 32))
    b.cross_attn = nn.Module()
    b.cross_attn.q, b.cross_attn.o = nn.Linear(32, 32), nn.Linear(32, 32)
    b.ffn = nn.Sequential(nn.Linear(32, 40), nn.GELU(), nn.Linear(40, 32))   # 40: not a multiple of 16
    assert quantize_dit(blocks) == 6
    assert isinstance(b.ffn[0], nn.Linear) and not isinstance(b.ffn[0], Fp8Linear)


def test_quantize_dit_swaps_the_block_linears_only(official_fixtures):
    model, _ = build_dit(official_fixtures / "dit_animate")
    before = {n: type(m) for n, m in model.named_modules()}
    n = quantize_dit(model)
    assert n == len(FP8_LINEARS) * len(model.blocks)
    swapped = {name for name, m in model.named_modules() if isinstance(m, Fp8Linear)}
    assert swapped == {f"blocks.{i}.{k}" for i in range(len(model.blocks)) for k in FP8_LINEARS}
    assert all(before[name] is nn.Linear for name in swapped)
    # face adapter, motion encoder, cross-attention k/v and the head keep their precision
    for name, m in model.named_modules():
        if name.startswith(("face_adapter", "face_encoder", "motion_encoder", "head")) or \
                name.endswith(("cross_attn.k", "cross_attn.v", "cross_attn.k_img", "cross_attn.v_img")):
            assert not isinstance(m, Fp8Linear), name
    assert quantize_dit(model) == 0                                   # idempotent


def test_fast_mode_dit_is_close_to_exact(official_fixtures):
    folder = official_fixtures / "dit_animate"
    model, _ = build_dit(folder)
    io = read_safetensors(folder / "io.safetensors")
    inputs, t = dit_inputs(io), io[timestep_keys(io)[0]]
    with torch.no_grad():
        exact = model(t=t, **inputs)
        quantize_dit(model)
        fast = model(t=t, **inputs)
    assert torch.isfinite(fast).all() and fast.shape == exact.shape
    assert 1e-4 < _rel(fast, exact) < 0.1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (fp8 tensor cores)")
def test_scaled_mm_on_gpu_equals_the_cpu_product():
    g = torch.Generator().manual_seed(7)
    lin = nn.Linear(256, 512).to(torch.bfloat16)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(512, 256, generator=g) / 16)
    x = torch.randn(3, 40, 256, generator=g).to(torch.bfloat16)
    cpu = Fp8Linear.from_linear(lin)
    gpu = Fp8Linear.from_linear(lin.cuda())
    # GPU and CPU fp32 division may round a value near a code boundary the other way
    differ = (gpu.weight.cpu().float() != cpu.weight.float()).float().mean()
    assert float(differ) < 1e-2              # measured on an H200: 1.0e-3
    a, b = gpu(x.cuda()).float().cpu(), cpu(x).float()
    assert a.dtype == b.dtype and _rel(a, b) < 1e-2          # bf16 output rounding only
