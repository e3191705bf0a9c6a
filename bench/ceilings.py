"""The two ceilings of a DiT step (bench_dit.py part ``attn``): the self-attention kernel alone at
each size's token count with one SDPA backend strictly, and the FFN up-projection GEMM alone.
"""
from __future__ import annotations

import statistics
from typing import Any

import torch

from common import Budget, Size, errmsg, free, log, strict_sdpa_context, timed
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
                with strict_sdpa_context(b):
                    timed(lambda: F.scaled_dot_product_attention(q, k, v), device)
                    ts = [timed(lambda: F.scaled_dot_product_attention(q, k, v), device)[0]
                          for _ in range(repeats)]
                med = statistics.median(ts)
                row.update(median_ms=round(med * 1e3, 2), tflops=round(flops / med / 1e12, 1),
                           per_forward_s=round(med * cfg.num_layers, 2))
            except RuntimeError as e:
                row["error"] = errmsg(e)
            log(f"attention {size.name} N={n} {b}: {row.get('median_ms', row.get('error'))} ms "
                f"{row.get('tflops', '')} TFLOP/s")
            rows.append(row)
        q = k = v = None  # free before the next size
        if device.type == "cuda" and budget.fits(10):
            rows.append(_gemm_row(cfg, size, n, repeats, device, dtype))
        free(device)
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
