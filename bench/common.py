"""Shared helpers of the DiT benchmark (bench_dit.py): sizes, the deadline budget, logging, timing,
peak memory, SDPA backend contexts, seeded in-place weight init and the measurement loop.

Imported by its bare name: ``bench/`` is the script directory of ``python3 bench/bench_dit.py``.
The deadline counts from ``T_START``; bench_dit.py calls ``start_clock()`` after its imports.
"""
from __future__ import annotations

import contextlib
import gc
import json
import math
import statistics
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from wan_animate.models.attention import LocalAttention
from wan_animate.models.motion import blur_kernel

REPO = Path(__file__).resolve().parent.parent
T_START = time.perf_counter()
"""The deadline counts from here; reset by ``start_clock()`` once every import is done."""

GIB = 1024 ** 3
BACKENDS = ("cudnn", "flash", "efficient", "math", "fa3", "fa3_fp8")
"""SDPA kernels and FlashAttention-3 (bf16 / fp8, when the package is installed)."""
FA3_BACKENDS = ("fa3", "fa3_fp8")


def start_clock() -> None:
    """Restart the deadline clock (``T_START``): bench_dit.py calls it after the imports."""
    global T_START
    T_START = time.perf_counter()


# ---- small helpers ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Size:
    """A video size in pixels (width x height, as the issue writes 1280x720)."""

    width: int
    height: int

    @classmethod
    def parse(cls, text: str) -> Size:
        w, h = (int(v) for v in text.lower().split("x"))
        if w % 16 or h % 16:
            raise SystemExit(f"size {text}: width and height must be multiples of 16")
        return cls(w, h)

    @property
    def name(self) -> str:
        return f"{self.width}x{self.height}"

    def latent(self) -> tuple[int, int]:
        return self.height // 8, self.width // 8

    def tokens(self, latent_frames: int) -> int:
        h, w = self.latent()
        return latent_frames * (h // 2) * (w // 2)


class Budget:
    """Seconds left before ``--deadline`` (counted from T_START, after the imports)."""

    def __init__(self, deadline_s: float) -> None:
        self.deadline_s = deadline_s
        self.skipped: list[str] = []

    def elapsed(self) -> float:
        return time.perf_counter() - T_START

    def left(self) -> float:
        return self.deadline_s - self.elapsed()

    def fits(self, seconds: float) -> bool:
        return seconds <= self.left()

    def skip(self, what: str) -> None:
        msg = f"{what} (deadline: {self.left():.0f} s left at {self.elapsed():.0f} s)"
        self.skipped.append(msg)
        log(f"SKIPPED {msg}")


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T_START:7.1f}s] {msg}", flush=True)


def errmsg(e: BaseException) -> str:
    """``Type: first line of the message`` (short, for tables and JSON)."""
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0][:250] if lines else ''}"


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    """(seconds, result) of ``fn()``: CUDA events on GPU, perf_counter on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        out = fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000.0, out
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def peak_reset(device: torch.device) -> float:
    """Reset the peak counter; return the memory now allocated (GiB)."""
    if device.type != "cuda":
        return float("nan")
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    return torch.cuda.memory_allocated(device) / GIB


def peak_gib(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / GIB if device.type == "cuda" else float("nan")


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b|| in float64."""
    a, b = a.double().flatten(), b.double().flatten()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def sdpa_context(backend: str | None, device: torch.device) -> contextlib.AbstractContextManager:
    """Outer SDPA kernel choice for a whole forward: ``backend`` first, then the others that can
    run any shape (cuDNN is left out unless asked, so "flash" means no cuDNN anywhere)."""
    if backend is None or device.type != "cuda":
        return contextlib.nullcontext()
    if backend in FA3_BACKENDS:    # FA3 is the self-attention; cross-attention etc. on cuDNN
        backend = "cudnn"
    from torch.nn.attention import SDPBackend, sdpa_kernel

    table = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION,
             "efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH}
    order = [table[backend]] + [table[b] for b in ("flash", "efficient", "math") if b != backend]
    try:
        return sdpa_kernel(order, set_priority=True)
    except TypeError:  # torch without set_priority: plain enable set
        return sdpa_kernel(order)


def strict_sdpa_context(backend: str) -> contextlib.AbstractContextManager:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    table = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION,
             "efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH}
    return sdpa_kernel([table[backend]])


def local_attention(backend: str | None) -> tuple[LocalAttention, str]:
    """Our self-attention backend pinned to ``backend`` when LocalAttention supports it."""
    if backend is None:
        return LocalAttention(), "LocalAttention() (device default)"
    try:
        from wan_animate.models import flash3

        device = "cuda" if torch.cuda.is_available() else None
        if backend in FA3_BACKENDS and not flash3.fa3_supported("cuda" if device else "cpu"):
            device = None   # FA3 missing: the first call raises, and the row records the error
        return (LocalAttention(backend=backend, device=device, head_dim=128),
                f"LocalAttention(backend={backend!r})")
    except TypeError:  # older LocalAttention without the option: the outer context decides
        return LocalAttention(), "LocalAttention() under the outer sdpa_kernel context"


@contextlib.contextmanager
def first_blocks(model: nn.Module, k: int) -> Iterator[None]:
    """Temporarily keep only ``model.blocks[:k]`` (k = 0: all) for a cheap warm-up forward."""
    full = model.blocks
    if 0 < k < len(full):
        model.blocks = nn.ModuleList(list(full)[:k])
    try:
        yield
    finally:
        model.blocks = full


# ---- weights -----------------------------------------------------------------------------------

@torch.no_grad()
def init_weights(model: nn.Module, seed: int) -> nn.Module:
    """Fill a materialized model in place on its device, seeded per parameter *name*.

    Same distribution as wan_animate/checkpoints/tiny.py::init_random (activations stay O(1) at
    any size): matrices ~ N(0, 1/fan_in); norm scales ~ 1 + N(0, 0.1); other vectors ~ N(0, 0.05);
    blur kernels exact. Two models with the same key names and shapes get identical weights.
    """
    dev = next(model.parameters()).device
    g = torch.Generator(device=dev)
    for name, p in model.named_parameters():
        g.manual_seed(seed + zlib.crc32(name.encode()))
        if p.dim() >= 2 and not name.endswith(("modulation", "padding_tokens", "embedding")):
            p.normal_(0.0, 1.0 / math.sqrt(math.prod(p.shape[1:])), generator=g)
        elif "norm" in name or name.endswith("gamma"):
            p.normal_(1.0, 0.1, generator=g)
        else:
            p.normal_(0.0, 0.05, generator=g)
    for name, b in model.named_buffers():
        if name.endswith(".kernel"):
            b.copy_(blur_kernel())
        elif b.is_floating_point():
            raise RuntimeError(f"init_weights: no rule for buffer {name}")
    return model


def materialize(build: Callable[[], nn.Module], device: torch.device, dtype: torch.dtype,
                seed: int) -> nn.Module:
    """Build on meta, allocate in ``dtype`` on ``device`` (no host copy), init in place."""
    with torch.device("meta"):
        model = build()
    model = model.to(dtype).to_empty(device=device).eval().requires_grad_(False)
    return init_weights(model, seed)


# ---- measurement loop ----------------------------------------------------------------------------

def measure(name: str, full: Callable[[], Any], warm: Callable[[], Any], warm_scale: float,
            repeats: int, device: torch.device, budget: Budget) -> dict[str, Any]:
    """Warm up with ``warm`` (costing ~1/warm_scale of ``full``), then time ``full`` up to
    ``repeats`` times within the budget. Returns times, median, peak memory and the first output."""
    rec: dict[str, Any] = {"times_s": [], "median_s": None, "peak_gib": None, "_out": None}
    if budget.left() <= 0:
        budget.skip(name)
        rec["skipped"] = True
        return rec
    tw, _ = timed(warm, device)
    rec["warmup_s"] = round(tw, 3)
    est = tw * warm_scale
    base = peak_reset(device)
    rec["resident_gib"] = round(base, 2)
    out = None
    for r in range(repeats):
        if not budget.fits(est):
            budget.skip(f"{name}: repeat {r + 1}/{repeats} (estimate {est:.1f} s)")
            break
        dt, res = timed(full, device)
        rec["times_s"].append(round(dt, 4))
        est = dt
        if out is None:
            out = res
    if rec["times_s"]:
        rec["median_s"] = round(statistics.median(rec["times_s"]), 4)
        rec["peak_gib"] = round(peak_gib(device), 2)
    rec["_out"] = out
    return rec


# ---- results file ------------------------------------------------------------------------------

def write_json(path: Path | None, results: dict[str, Any]) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(results, indent=1, default=str))
    tmp.replace(path)
