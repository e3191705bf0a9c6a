"""Attention kernels: FA3 glue (fp8 quantization math, reference), backend choice and errors."""
from __future__ import annotations

import pytest
import torch

from wan_animate.models import flash3
from wan_animate.models.attention import BACKENDS, LocalAttention


def _qkv(seed: int, b: int = 1, lq: int = 40, lk: int = 56, n: int = 3, d: int = 16):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, lq, n, d, generator=g), torch.randn(b, lk, n, d, generator=g),
            torch.randn(b, lk, n, d, generator=g))


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def test_quantize_heads_scales_per_batch_and_head():
    x = torch.randn(2, 9, 4, 8)
    x[1, :, 2] *= 1000
    x[0, :, 3] = 0
    x8, s = flash3.quantize_heads(x)
    assert x8.dtype == flash3.E4M3 and x8.shape == x.shape and s.shape == (2, 4)
    assert float(s[0, 3]) == 1.0 and not x8[0, :, 3].float().any()
    assert torch.allclose(s * flash3.E4M3_MAX, x.abs().amax(dim=(1, 3)).where(s != 1, s * 448))
    back = x8.float() * s[:, None, :, None]
    assert _rel(back, x) < 0.05


def test_fp8_reference_is_near_exact_but_not_equal():
    q, k, v = _qkv(0)
    ref = flash3.sdpa_reference(q, k, v)
    fp8 = flash3.fp8_attention_reference(q, k, v)
    assert fp8.shape == ref.shape == (1, 40, 3, 16)
    assert 1e-3 < _rel(fp8, ref) < 0.1


def test_backend_choice_off_hopper_falls_back_to_sdpa():
    q, k, v = _qkv(1)
    cpu = torch.device("cpu")
    assert LocalAttention(backend="auto").choose(cpu, torch.bfloat16) == "sdpa"
    assert LocalAttention(backend="fa3_fp8").choose(cpu, torch.bfloat16) == "sdpa"
    assert LocalAttention(backend="cudnn").choose(cpu, torch.float32) == "cudnn"
    assert LocalAttention(backend="auto", device="cpu", head_dim=128).kernel == "sdpa"  # chosen once
    # "auto" never sends a head dim the pack's FA3 build lacks to FA3, even on a Hopper GPU
    assert LocalAttention(backend="auto").choose(torch.device("cuda"), torch.bfloat16, 16) == "sdpa"
    ref = flash3.sdpa_reference(q, k, v)
    for b in ("auto", "sdpa", "fa3_fp8", "math"):
        torch.testing.assert_close(LocalAttention(backend=b)(q, k, v), ref, atol=1e-5, rtol=1e-5)
    # padded keys at the end are dropped
    out = LocalAttention()(q, torch.cat([k, k[:, :4]], 1), torch.cat([v, v[:, :4]], 1), k_len=56)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_fa3_asked_for_where_it_cannot_run_is_a_clear_error():
    with pytest.raises(ValueError, match="must be one of"):
        LocalAttention(backend="fa4")
    assert "fa3" in BACKENDS and "fa3_fp8" in BACKENDS
    if flash3.fa3_supported("cuda"):
        pytest.skip("FA3 runs here")
    with pytest.raises(RuntimeError, match="Faster attention|Hopper"):
        LocalAttention(backend="fa3", device="cpu")
    q, k, v = _qkv(2)
    with pytest.raises(RuntimeError, match="fa3"):
        LocalAttention(backend="fa3")(q, k, v)


@pytest.mark.skipif(not flash3.fa3_supported("cuda"), reason="needs FA3 on a Hopper GPU")
def test_fa3_kernels_match_references_on_gpu():
    q, k, v = (t.cuda().to(torch.bfloat16) for t in _qkv(3, lq=1024, lk=1024, n=4, d=128))
    ref = flash3.sdpa_reference(q, k, v)
    assert _rel(flash3.fa3_attention(q, k, v), ref) < 1e-2
    fp8 = flash3.fa3_attention_fp8(q, k, v)
    assert _rel(fp8, flash3.fp8_attention_reference(q, k, v)) < 5e-2 and _rel(fp8, ref) < 0.1
