"""The two ceilings of a DiT step (bench_dit.py part ``attn``): the self-attention kernel alone at
each size's token count with one backend strictly (an SDPA kernel, FA3 bf16 or FA3 fp8), and the
FFN up-projection GEMM alone (bf16, and fp8 e4m3 with row-wise scales as the fast mode runs it).
``attention_accuracy`` checks each kernel against an fp32 reference on fresh inputs.
"""
from __future__ import annotations

import statistics
from typing import Any

import torch

from common import FA3_BACKENDS, Budget, Size, errmsg, free, log, rel_l2, strict_sdpa_context, timed
from wan_animate.models.config import DiTConfig


def bench_attention(cfg: DiTConfig, sizes: list[Size], frames: int, backends: list[str],
                    repeats: int, device: torch.device, dtype: torch.dtype,
                    budget: Budget) -> list[dict[str, Any]]:
    """Self-attention alone: q/k/v [1, N, L, D] views of [1, L, N, D], one backend strictly."""
    import torch.nn.functional as F

    rows = []
    n_heads, d = cfg.num_heads, cfg.head_dim
    for size in sizes:
        n = size.tokens(2 + (frames - 1) // 4)
        g = torch.Generator(device=device).manual_seed(1)
        q, k, v = (torch.randn(1, n, n_heads, d, generator=g, device=device, dtype=dtype).transpose(1, 2)
                   for _ in range(3))
        flops = 4 * n * n * d * n_heads
        for b in backends:
            row: dict[str, Any] = {"size": size.name, "tokens": n, "backend": b}
            if device.type != "cuda":
                row["error"] = "CPU: kernel choice not applicable"
                rows.append(row)
                continue
            if not budget.fits(10):
                budget.skip(f"attention {size.name} {b}")
                continue
            try:
                ts = _time_kernel(b, q, k, v, repeats, device)
                med = statistics.median(ts)
                row.update(median_ms=round(med * 1e3, 2), tflops=round(flops / med / 1e12, 1),
                           per_forward_s=round(med * cfg.num_layers, 2))
            except Exception as e:  # noqa: BLE001 - no kernel / no FA3: record and go on
                row["error"] = errmsg(e)
            log(f"attention {size.name} N={n} {b}: {row.get('median_ms', row.get('error'))} ms "
                f"{row.get('tflops', '')} TFLOP/s")
            rows.append(row)
        q = k = v = None  # free before the next size
        if device.type == "cuda" and budget.fits(10):
            rows.append(_gemm_row(cfg, size, n, repeats, device, dtype))
            rows += _fp8_gemm_rows(cfg, size, n, repeats, device)
        free(device)
    return rows


def _time_kernel(backend: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, repeats: int,
                 device: torch.device) -> list[float]:
    """Times of one self-attention call; q/k/v are [1, N, L, D] views of [1, L, N, D] tensors.

    FA3 takes the [1, L, N, D] layout itself (no copy); its fp8 time includes the per-head
    quantization of q, k and v, as the fast mode runs it.
    """
    import torch.nn.functional as F

    if backend in FA3_BACKENDS:
        from wan_animate.models import flash3

        flash3.require_fa3(device)
        fn = flash3.fa3_attention if backend == "fa3" else flash3.fa3_attention_fp8
        ql, kl, vl = (t.transpose(1, 2) for t in (q, k, v))
        timed(lambda: fn(ql, kl, vl), device)
        return [timed(lambda: fn(ql, kl, vl), device)[0] for _ in range(repeats)]
    with strict_sdpa_context(backend):
        timed(lambda: F.scaled_dot_product_attention(q, k, v), device)
        return [timed(lambda: F.scaled_dot_product_attention(q, k, v), device)[0]
                for _ in range(repeats)]


def attention_accuracy(cfg: DiTConfig, backends: list[str], tokens: int, device: torch.device,
                       seed: int = 5) -> list[dict[str, Any]]:
    """rel_l2 of each kernel vs fp32 SDPA on fresh q/k/v [1, tokens, N, D] (bf16-rounded, RMS 1
    per row like the DiT's RMS-normed q/k); the fp8 kernel also vs its torch emulation."""
    from wan_animate.models import flash3

    g = torch.Generator(device=device).manual_seed(seed)
    q, k, v = (torch.randn(1, tokens, cfg.num_heads, cfg.head_dim, generator=g, device=device)
               .to(torch.bfloat16) for _ in range(3))
    ref = flash3.sdpa_reference(q, k, v)
    rows = []
    for b in backends:
        row: dict[str, Any] = {"backend": b, "tokens": tokens}
        try:
            if b == "fa3":
                out = flash3.fa3_attention(q, k, v)
            elif b == "fa3_fp8":
                out = flash3.fa3_attention_fp8(q, k, v)
                row["rel_l2_vs_emulation"] = rel_l2(out, flash3.fp8_attention_reference(q, k, v))
            else:
                with strict_sdpa_context(b):
                    out = torch.nn.functional.scaled_dot_product_attention(
                        *(t.transpose(1, 2) for t in (q, k, v))).transpose(1, 2)
            row["finite"] = bool(torch.isfinite(out).all())
            row["rel_l2_vs_fp32"] = rel_l2(out, ref)
        except Exception as e:  # noqa: BLE001 - record and go on
            row["error"] = errmsg(e)
        log(f"attention accuracy {b} at {tokens} tokens: {row}")
        rows.append(row)
    return rows


def _fp8_gemm_rows(cfg: DiTConfig, size: Size, n: int, repeats: int,
                   device: torch.device) -> list[dict[str, Any]]:
    """The FFN up-projection through ``Fp8Linear``: the GEMM alone (input already e4m3) and the
    whole layer (per-token quantization of a bf16 input + GEMM), with its error vs bf16."""
    from wan_animate.models.fp8 import Fp8Linear, quantize_rows

    rows = []
    try:
        g = torch.Generator(device=device).manual_seed(3)
        x = torch.randn(n, cfg.dim, generator=g, device=device, dtype=torch.bfloat16)
        lin = torch.nn.Linear(cfg.dim, cfg.ffn_dim, device=device, dtype=torch.bfloat16)
        torch.nn.init.normal_(lin.weight, std=cfg.dim ** -0.5)
        q = Fp8Linear.from_linear(lin)
        x8, sx = quantize_rows(x)
        ws = q.weight_scale[None, :]

        def gemm() -> torch.Tensor:
            return torch._scaled_mm(x8, q.weight.t(), scale_a=sx, scale_b=ws, out_dtype=torch.bfloat16)

        flops = 2 * n * cfg.dim * cfg.ffn_dim
        for what, fn in (("fp8 GEMM (rowwise scales)", gemm), ("Fp8Linear incl. quantize", lambda: q(x))):
            timed(fn, device)
            med = statistics.median(timed(fn, device)[0] for _ in range(repeats))
            rows.append({"size": size.name, "tokens": n, "backend": f"{what} {n}x{cfg.dim}x{cfg.ffn_dim}",
                         "median_ms": round(med * 1e3, 2), "tflops": round(flops / med / 1e12, 1)})
            log(f"{what} {size.name}: {rows[-1]['median_ms']} ms {rows[-1]['tflops']} TFLOP/s")
        rows[-1]["rel_l2_vs_bf16"] = rel_l2(q(x), lin(x))
    except Exception as e:  # noqa: BLE001 - record and go on
        rows.append({"size": size.name, "backend": "fp8 GEMM", "error": errmsg(e)})
    return rows


def _gemm_row(cfg: DiTConfig, size: Size, n: int, repeats: int, device: torch.device,
              dtype: torch.dtype) -> dict[str, Any]:
    """The FFN up-projection [N, C] x [C, ffn] alone: the linear-layer ceiling at this size."""
    import torch.nn.functional as F

    g = torch.Generator(device=device).manual_seed(2)
    x = torch.randn(n, cfg.dim, generator=g, device=device, dtype=dtype)
    w = torch.randn(cfg.ffn_dim, cfg.dim, generator=g, device=device, dtype=dtype) / cfg.dim ** 0.5
    timed(lambda: F.linear(x, w), device)
    med = statistics.median(timed(lambda: F.linear(x, w), device)[0] for _ in range(repeats))
    flops = 2 * n * cfg.dim * cfg.ffn_dim
    row = {"size": size.name, "tokens": n, "backend": f"GEMM {n}x{cfg.dim}x{cfg.ffn_dim}",
           "median_ms": round(med * 1e3, 2), "tflops": round(flops / med / 1e12, 1)}
    log(f"gemm {size.name}: {row['median_ms']} ms {row['tflops']} TFLOP/s")
    return row
