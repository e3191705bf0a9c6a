"""Time one denoising step of the full-size Wan2.2-Animate DiT, ours and (optionally) the official one.

    python3 bench/bench_dit.py --sizes 1280x720,832x480 --frames 77 \
        [--official .bench_carry/wan22] [--out $OUT/results.json]

Everything runs in one process on one GPU, with random weights of the real size (bf16), so the
ratio ours/official comes from one run on one machine. Parts, in order (``--parts``):

- ``attn``: the self-attention kernel alone at each size's token count, one SDPA backend at a time.
- ``ours``: our ``AnimateDiT(DiTConfig())`` built on meta, materialized on the GPU, filled in place
  with a seeded random init; motion tokens (``encode_motion``, per clip) and the context embedding
  (``embed_context``, per video) computed once and timed separately; then one forward per step.
- ``official``: the official ``WanAnimateModel`` (``--official`` checkout, see official_shim.py)
  with the *same* weights (the init is seeded per parameter name, and the key names match), run
  under ``torch.autocast(bf16)`` as ``wan/animate.py`` runs it (motion encoder inside every forward).
- ``vae``: our WanVAE encode (77 frames) and decode (20 latent frames) in fp32 and bf16.
- ``load``: a safetensors shard of a few full-size DiT blocks written to local disk, read back
  through our loader (``LazyTensors`` + ``load_into``) cold (page cache dropped for that file) and
  warm; extrapolated linearly in bytes to the whole DiT.

Timing: CUDA events around the call, median of ``--repeats`` after a warm-up. The warm-up runs
the same forward with the first ``--warmup-blocks`` blocks only (every kernel shape of the full
forward, so cuDNN plans and allocator growth happen there, at a fraction of the cost). A
``--deadline`` (seconds after the imports) skips or shortens what would not fit; skipped items are listed.

``--tiny`` builds small models (same classes, official hard-coded widths kept) for a CPU smoke test.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import json
import math
import os
import platform
import statistics
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from wan_animate.models.attention import LocalAttention, NoSequenceParallel  # noqa: E402
from wan_animate.models.config import DiTConfig  # noqa: E402
from wan_animate.models.dit import AnimateDiT  # noqa: E402
from wan_animate.models.dit_blocks import AttentionBlock  # noqa: E402
from wan_animate.models.motion import blur_kernel  # noqa: E402

T_START = time.perf_counter()
"""The deadline counts from here (after the imports)."""

GIB = 1024 ** 3
BACKENDS = ("cudnn", "flash", "efficient", "math")


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
        return LocalAttention(backend=backend), f"LocalAttention(backend={backend!r})"
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


def tiny_config() -> DiTConfig:
    """Small DiT whose hard-coded official widths (CLIP 1280, LIA, face 1024) stay official, so
    the official constructor builds the same key shapes."""
    return DiTConfig(dim=64, ffn_dim=128, text_dim=64, num_heads=2, num_layers=5)


def official_constructor(cfg: DiTConfig) -> dict[str, Any]:
    d = cfg.to_dict()
    if "_wan_animate_overrides" in d:
        raise SystemExit("the official constructor cannot build this config (non-official widths)")
    return {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if not k.startswith("_")}


def dit_flops(cfg: DiTConfig, n: int) -> dict[str, float]:
    """FLOPs of one forward at ``n`` tokens (wan-animate-facts.md §11; 2 FLOPs per MAC)."""
    d, layers, ctx = cfg.dim, cfg.num_layers, cfg.clip_tokens + cfg.text_len
    linear = 2 * (4 * d * d + 2 * d * d + 2 * d * cfg.ffn_dim) * n * layers
    self_attn = 4 * n * n * d * layers
    cross = 4 * n * ctx * d * layers + 4 * ctx * d * d * layers
    face = 2 * n * 2 * d * d * cfg.num_face_adapters
    return {"linear": linear, "self_attention": self_attn, "cross_attention": cross,
            "face_adapter": face, "total": linear + self_attn + cross + face}


# ---- inputs --------------------------------------------------------------------------------------

@dataclass
class Inputs:
    """One step's DiT inputs at one size (batch 1), as the generate loops pass them."""

    x: torch.Tensor            # [1, 16, F, h, w] fp32 noisy latent
    y: torch.Tensor            # [1, 20, F, h, w] 4 mask channels | 16 conditioning latents
    pose: torch.Tensor         # [1, 16, F-1, h, w]
    t: torch.Tensor            # [1] int64


@dataclass
class Shared:
    """Inputs constant over sizes: face crops, text and CLIP features."""

    faces: torch.Tensor        # [1, 3, T, S, S] in [-1, 1]
    context: torch.Tensor      # [Lt, text_dim] (trimmed T5 output)
    clip_fea: torch.Tensor     # [1, 257, clip width]


def make_shared(cfg: DiTConfig, frames: int, text_tokens: int, device: torch.device,
                dtype: torch.dtype, seed: int) -> Shared:
    g = torch.Generator(device=device).manual_seed(seed)
    s = cfg.motion.size
    faces = torch.rand(1, 3, frames, s, s, generator=g, device=device) * 2 - 1
    context = torch.randn(text_tokens, cfg.text_dim, generator=g, device=device) * 0.2
    clip_fea = torch.randn(1, cfg.clip_tokens, cfg.img_emb_in_dim, generator=g, device=device)
    return Shared(faces.to(dtype), context.to(dtype), clip_fea.to(dtype))


def make_inputs(size: Size, frames: int, timestep: int, device: torch.device, dtype: torch.dtype,
                seed: int) -> Inputs:
    g = torch.Generator(device=device).manual_seed(seed)
    h, w = size.latent()
    f = 1 + (frames - 1) // 4 + 1                       # reference frame + latent frames
    x = torch.randn(1, 16, f, h, w, generator=g, device=device)
    mask = torch.zeros(1, 4, f, h, w, device=device)
    mask[:, :, :2] = 1                                  # reference + first guidance frame known
    y = torch.cat([mask, torch.randn(1, 16, f, h, w, generator=g, device=device)], dim=1)
    pose = torch.randn(1, 16, f - 1, h, w, generator=g, device=device)
    return Inputs(x, y.to(dtype), pose.to(dtype), torch.tensor([timestep], device=device))


# ---- measurements ------------------------------------------------------------------------------

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


def bench_ours(cfg: DiTConfig, sizes: list[Size], frames: int, backends: list[str | None],
               args: argparse.Namespace, shared: Shared, inputs: dict[str, Inputs],
               device: torch.device, dtype: torch.dtype, budget: Budget,
               outputs: dict[tuple[str, str, str], torch.Tensor],
               save: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    log("ours: building AnimateDiT(DiTConfig) on meta, materializing on the device")
    t_build, model = timed(lambda: materialize(lambda: AnimateDiT(cfg), device, dtype, args.seed), device)
    res: dict[str, Any] = {"build_init_s": round(t_build, 2),
                           "weights_gib": round(sum(p.numel() * p.element_size()
                                                    for p in model.parameters()) / GIB, 2),
                           "params": sum(p.numel() for p in model.parameters()), "steps": []}
    if args.compile:
        from wan_animate.models.optimize import compile_blocks

        compile_blocks(model)
        res["compiled"] = True
    save(res)
    log(f"ours: {res['params'] / 1e9:.2f} B params, {res['weights_gib']} GiB, built in {t_build:.1f} s")
    with torch.no_grad():
        rec = measure("ours encode_motion", lambda: model.encode_motion(shared.faces),
                      lambda: model.encode_motion(shared.faces), 1.0, args.repeats, device, budget)
        motion = rec.pop("_out")
        if motion is None:
            motion = model.encode_motion(shared.faces)
        res["encode_motion"] = rec
        log(f"ours: encode_motion {frames} frames: median {rec['median_s']} s")
        t_ctx, ctx = timed(lambda: model.embed_context([shared.context], shared.clip_fea), device)
        res["embed_context_s"] = round(t_ctx, 4)
        for size in sizes:
            inp = inputs[size.name]
            for b in backends:
                label = b or "default"
                attn, how = local_attention(b)
                model.set_parallel(NoSequenceParallel(attn))
                name = f"ours {size.name} {label}"
                row: dict[str, Any] = {"impl": "ours", "size": size.name, "backend": label,
                                       "attention": how, "tokens": size.tokens(inp.x.shape[2])}

                def run() -> torch.Tensor:
                    with sdpa_context(b, device):
                        return model(inp.x, t=inp.t, clip_fea=shared.clip_fea, context=None, y=inp.y,
                                     pose_latents=inp.pose, motion_vec=motion, context_emb=ctx)

                row.update(_step(name, model, run, args, device, budget))
                _keep(outputs, ("ours", size.name, label), row)
                res["steps"].append(row)
                save(res)
    model.set_parallel(NoSequenceParallel())
    model = None  # free the weights (closures above hold the name only)
    free(device)
    return res


def bench_official(off: Any, cfg: DiTConfig, sizes: list[Size], backends: list[str | None],
                   args: argparse.Namespace, shared: Shared, inputs: dict[str, Inputs],
                   device: torch.device, dtype: torch.dtype, budget: Budget,
                   outputs: dict[tuple[str, str, str], torch.Tensor],
                   save: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    import official_shim

    autocast = dtype if dtype != torch.float32 else None
    log("official: building WanAnimateModel on meta, materializing on the device")
    kwargs = official_constructor(cfg)
    t_build, model = timed(lambda: init_weights(
        official_shim.build_official(off, device, dtype, **kwargs), args.seed), device)
    res: dict[str, Any] = {"build_init_s": round(t_build, 2), "diffusers": off.diffusers,
                           "params": sum(p.numel() for p in model.parameters()),
                           "autocast": str(autocast), "steps": []}
    save(res)
    log(f"official: {res['params'] / 1e9:.2f} B params, built in {t_build:.1f} s "
        f"(diffusers: {off.diffusers})")
    first = inputs[sizes[0].name]
    h, w = first.x.shape[3] // 2, first.x.shape[4] // 2
    embedded = torch.zeros(1, cfg.dim, first.x.shape[2], h, w, device=device, dtype=dtype)
    try:
        rec = measure("official motion path",
                      lambda: official_shim.official_motion_path(model, embedded, first.pose,
                                                                 shared.faces, autocast),
                      lambda: official_shim.official_motion_path(model, embedded, first.pose,
                                                                 shared.faces, autocast),
                      1.0, args.repeats, device, budget)
        rec.pop("_out")
    except Exception as e:  # noqa: BLE001 - report it; the forwards below are timed anyway
        rec = {"error": errmsg(e), "median_s": None}
    res["motion_path_per_forward"] = rec
    log(f"official: motion path (pose add + LIA on {args.frames} faces + face encoder) per forward: "
        f"median {rec['median_s']} s")
    embedded = None
    for size in sizes:
        inp = inputs[size.name]
        for b in backends:
            label = b or "default"
            name = f"official {size.name} {label}"
            row: dict[str, Any] = {"impl": "official", "size": size.name, "backend": label,
                                   "tokens": size.tokens(inp.x.shape[2])}

            def run() -> torch.Tensor:
                with sdpa_context(b, device):
                    return official_shim.official_forward(model, inp.x, inp.t, shared.clip_fea,
                                                          shared.context, inp.y, inp.pose,
                                                          shared.faces, autocast)

            row.update(_step(name, model, run, args, device, budget))
            _keep(outputs, ("official", size.name, label), row)
            res["steps"].append(row)
            save(res)
    model = None  # free the weights before anything else is built
    free(device)
    return res


def _step(name: str, model: nn.Module, run: Callable[[], torch.Tensor], args: argparse.Namespace,
          device: torch.device, budget: Budget) -> dict[str, Any]:
    """Warm up on the first blocks, time full forwards; errors are recorded, not raised."""
    layers = len(model.blocks)
    k = min(args.warmup_blocks, layers) if args.warmup_blocks > 0 else layers

    def warm() -> torch.Tensor:
        with first_blocks(model, k):
            return run()

    if not budget.fits(args.min_step_s):
        budget.skip(name)
        return {"skipped": True}
    try:
        with torch.no_grad():
            rec = measure(name, run, warm, layers / k, args.repeats, device, budget)
    except Exception as e:  # noqa: BLE001 - no kernel, OOM, assert: report it and go on
        free(device)
        log(f"{name}: ERROR {errmsg(e)}")
        return {"error": errmsg(e)}
    log(f"{name}: median {rec['median_s']} s of {rec['times_s']} (warm-up {rec['warmup_s']} s on "
        f"{k} blocks), peak {rec['peak_gib']} GiB")
    return rec


def _keep(outputs: dict, key: tuple[str, str, str], row: dict[str, Any]) -> None:
    out = row.pop("_out", None)
    if out is not None:
        row["out_finite"] = bool(torch.isfinite(out).all())
        row["out_std"] = round(float(out.float().std()), 4)
        outputs[key] = out.float().cpu()


def bench_vae(sizes: list[Size], frames: int, dtypes: list[torch.dtype], repeats: int, tiny: bool,
              device: torch.device, seed: int, budget: Budget) -> list[dict[str, Any]]:
    from wan_animate.models.vae import VAEConfig, WanVAE

    cfg = VAEConfig(dim=8) if tiny else VAEConfig()
    rows = []
    for dt in dtypes:
        vae = materialize(lambda: WanVAE(cfg), device, dt, seed)
        for size in sizes:
            g = torch.Generator(device=device).manual_seed(seed)
            video = torch.rand(1, 3, frames, size.height, size.width, generator=g, device=device) * 2 - 1
            lat = cfg.latent_frames(frames)
            z = torch.randn(1, cfg.z_dim, lat, *size.latent(), generator=g, device=device)
            for op, full, warm, scale in (
                    ("encode", lambda: vae.encode(video), lambda: vae.encode(video[:, :, :5]), frames / 5),
                    ("decode", lambda: vae.decode(z), lambda: vae.decode(z[:, :, :2]), lat / 2)):
                name = f"vae {op} {size.name} {frames} frames {str(dt).split('.')[-1]}"
                row: dict[str, Any] = {"op": op, "size": size.name, "frames": frames,
                                       "dtype": str(dt).split(".")[-1]}
                if not budget.fits(3):
                    budget.skip(name)
                    continue
                try:
                    rec = measure(name, full, warm, scale, repeats, device, budget)
                except Exception as e:  # noqa: BLE001 - OOM or a failing kernel: report, go on
                    free(device)
                    row["error"] = errmsg(e)
                    rows.append(row)
                    continue
                out = rec.pop("_out")
                rec["out_finite"] = bool(torch.isfinite(out).all()) if out is not None else None
                rec["activation_peak_gib"] = (round(rec["peak_gib"] - rec["resident_gib"], 2)
                                              if rec["peak_gib"] is not None else None)
                row.update(rec)
                rows.append(row)
                log(f"{name}: median {rec['median_s']} s of {rec['times_s']}, activations peak "
                    f"{rec['activation_peak_gib']} GiB")
                del out
            video = z = None
            free(device)
        vae = None
        free(device)
    return rows


class _Blocks(nn.Module):
    """``blocks.{i}.*`` keys of the DiT, for the loader test."""

    def __init__(self, cfg: DiTConfig, n: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([
            AttentionBlock(cfg.dim, cfg.ffn_dim, cfg.num_heads, cfg.eps, cfg.clip_tokens,
                           cfg.cross_attn_norm) for _ in range(n)])


def bench_load(cfg: DiTConfig, n_blocks: int, folder: Path, device: torch.device, dtype: torch.dtype,
               seed: int, budget: Budget) -> dict[str, Any]:
    """Write ``n_blocks`` DiT blocks as one safetensors file; time our loader reading it back."""
    from safetensors.torch import save_file

    from wan_animate.checkpoints.load import LazyTensors, load_into

    if not budget.fits(20):
        budget.skip("load")
        return {"skipped": True}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "bench_blocks.safetensors"
    blocks = materialize(lambda: _Blocks(cfg, n_blocks), device, dtype, seed)
    t0 = time.perf_counter()
    state = {k: v.detach().contiguous().cpu() for k, v in blocks.state_dict().items()}
    t_d2h = time.perf_counter() - t0
    del blocks
    free(device)
    t0 = time.perf_counter()
    save_file(state, str(path), metadata={"format": "pt"})
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        t_write = time.perf_counter() - t0
        dropped = "posix_fadvise(DONTNEED) after fsync"
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        except (AttributeError, OSError) as e:
            dropped = f"page cache NOT dropped ({e})"
    finally:
        os.close(fd)
    nbytes = path.stat().st_size
    del state

    def load() -> nn.Module:
        with torch.device("meta"):
            target = _Blocks(cfg, n_blocks)
        lazy = LazyTensors.from_file(path, device=device)
        return load_into(target, lazy, str(path), device=device, dtype=dtype)

    t_cold, m = timed(load, device)
    del m
    free(device)
    t_warm, m = timed(load, device)
    del m
    free(device)
    with torch.device("meta"):
        full_bytes = sum(p.numel() for p in AnimateDiT(cfg).parameters()) * torch.finfo(dtype).bits // 8
    res = {"blocks": n_blocks, "file_gib": round(nbytes / GIB, 3), "device_to_host_s": round(t_d2h, 2),
           "write_s": round(t_write, 2), "write_gib_per_s": round(nbytes / GIB / t_write, 2),
           "cold": dropped, "load_cold_s": round(t_cold, 3),
           "load_cold_gib_per_s": round(nbytes / GIB / t_cold, 2), "load_warm_s": round(t_warm, 3),
           "load_warm_gib_per_s": round(nbytes / GIB / t_warm, 2),
           "full_dit_gib": round(full_bytes / GIB, 2),
           "full_dit_estimate_cold_s": round(t_cold * full_bytes / nbytes, 1),
           "full_dit_estimate_warm_s": round(t_warm * full_bytes / nbytes, 1),
           "extrapolation": "linear in bytes: full-DiT bf16 bytes / shard bytes x shard time; same "
                            "disk, one process reading shards one after another"}
    path.unlink()
    log(f"load: {res['file_gib']} GiB in {t_cold:.2f} s cold ({res['load_cold_gib_per_s']} GiB/s), "
        f"{t_warm:.2f} s warm -> full DiT ~{res['full_dit_estimate_cold_s']} s cold")
    return res


# ---- report --------------------------------------------------------------------------------------

def summarize(results: dict[str, Any], cfg: DiTConfig, outputs: dict) -> None:
    """Add ratios and parity numbers to ``results`` (ours/official per size and backend)."""
    steps = {(s["impl"], s["size"], s["backend"]): s for part in ("ours", "official")
             for s in results.get(part, {}).get("steps", [])}
    ratios, parity = [], []
    for s in steps.values():
        fl = dit_flops(cfg, s["tokens"])["total"]
        s["flop"] = fl
        if s.get("median_s"):
            s["tflops"] = round(fl / s["median_s"] / 1e12, 1)
    for (impl, size, backend), s in steps.items():
        if impl != "ours":
            continue
        o = steps.get(("official", size, backend))
        if o is not None and s.get("median_s") and o.get("median_s"):
            ratios.append({"size": size, "backend": backend, "ours_s": s["median_s"],
                           "official_s": o["median_s"],
                           "ratio_ours_over_official": round(s["median_s"] / o["median_s"], 3)})
        a, b = outputs.get(("ours", size, backend)), outputs.get(("official", size, backend))
        if a is not None and b is not None:
            parity.append({"size": size, "backend": backend, "rel_l2_ours_vs_official": rel_l2(a, b)})
    by_size: dict[str, list] = {}
    for (impl, size, backend), out in outputs.items():
        by_size.setdefault(f"{impl} {size}", []).append((backend, out))
    for key, outs in by_size.items():
        for (b1, o1), (b2, o2) in zip(outs, outs[1:]):
            parity.append({"what": key, "backends": f"{b2} vs {b1}", "rel_l2": rel_l2(o2, o1)})
    results["ratios"], results["parity"] = ratios, parity


def markdown(results: dict[str, Any]) -> str:
    lines = ["", "## DiT, one denoising forward (guide 1.0), batch 1", "",
             "| impl | size | tokens | SDPA | median s | runs s | TFLOP/s | peak GiB |",
             "|---|---|---|---|---|---|---|---|"]
    for part in ("ours", "official"):
        for s in results.get(part, {}).get("steps", []):
            lines.append(f"| {s['impl']} | {s['size']} | {s['tokens']:,} | {s['backend']} | "
                         f"{s.get('median_s', s.get('error', 'skipped'))} | {s.get('times_s', '')} | "
                         f"{s.get('tflops', '')} | {s.get('peak_gib', '')} |")
    if results.get("ratios"):
        lines += ["", "| size | SDPA | ours s | official s | ours / official |", "|---|---|---|---|---|"]
        lines += [f"| {r['size']} | {r['backend']} | {r['ours_s']} | {r['official_s']} | "
                  f"{r['ratio_ours_over_official']} |" for r in results["ratios"]]
    for p in results.get("parity", []):
        lines.append(f"- parity {json.dumps(p)}")
    ours, off = results.get("ours", {}), results.get("official", {})
    if ours.get("encode_motion"):
        lines.append(f"- ours encode_motion (once per clip): {ours['encode_motion']['median_s']} s; "
                     f"embed_context (once per video): {ours.get('embed_context_s')} s")
    if off.get("motion_path_per_forward"):
        lines.append(f"- official motion path inside every forward: "
                     f"{off['motion_path_per_forward']['median_s']} s")
    if results.get("attention"):
        lines += ["", "## Self-attention kernel alone (one layer, all heads)", "",
                  "| size | tokens | SDPA | ms | TFLOP/s | x layers s |", "|---|---|---|---|---|---|"]
        lines += [f"| {a['size']} | {a['tokens']:,} | {a['backend']} | "
                  f"{a.get('median_ms', a.get('error', ''))} | {a.get('tflops', '')} | "
                  f"{a.get('per_forward_s', '')} |" for a in results["attention"]]
    if results.get("vae"):
        lines += ["", "## VAE (ours)", "", "| op | size | frames | dtype | median s | peak act GiB |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {v['op']} | {v['size']} | {v['frames']} | {v['dtype']} | "
                  f"{v.get('median_s', v.get('error', 'skipped'))} | {v.get('activation_peak_gib', '')} |"
                  for v in results["vae"]]
    ld = results.get("load")
    if ld and not ld.get("skipped"):
        lines += ["", f"## Weight load: {ld['blocks']} blocks, {ld['file_gib']} GiB: cold "
                      f"{ld['load_cold_s']} s ({ld['load_cold_gib_per_s']} GiB/s), warm "
                      f"{ld['load_warm_s']} s; full DiT ({ld['full_dit_gib']} GiB) ~"
                      f"{ld['full_dit_estimate_cold_s']} s cold / {ld['full_dit_estimate_warm_s']} s "
                      f"warm ({ld['extrapolation']})"]
    if results.get("skipped"):
        lines += ["", "Skipped: " + "; ".join(results["skipped"])]
    return "\n".join(lines)


def write_json(path: Path | None, results: dict[str, Any]) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(results, indent=1, default=str))
    tmp.replace(path)


def machine(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(), "torch": torch.__version__, "device": str(device),
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32}
    import importlib.util

    import torch.nn.attention as tna

    if hasattr(tna, "list_flash_attention_impls"):  # FA3/FA4 providers registered with SDPA
        info["sdpa_flash_impls"] = list(tna.list_flash_attention_impls())
    info["packages"] = {n: importlib.util.find_spec(n) is not None for n in (
        "flash_attn", "flash_attn_interface", "flash_attn_3", "sageattention", "cudnn", "diffusers")}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / GIB, 1), sms=p.multi_processor_count,
                    cuda=torch.version.cuda)
    try:
        import subprocess

        info["commit"] = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                                        capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        info["commit"] = None
    return info


# ---- main --------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default=None, help="WxH list (default 1280x720,832x480; tiny: 64x32)")
    p.add_argument("--frames", type=int, default=None, help="pixel frames per clip, 4k+1 (default 77; tiny 5)")
    p.add_argument("--official", type=Path, default=None, help="Wan2.2 checkout (or .bench_carry/wan22)")
    p.add_argument("--out", type=Path, default=None, help="write results JSON here")
    p.add_argument("--parts", default="attn,ours,official,vae,load")
    p.add_argument("--backends", default="cudnn,flash", help=f"SDPA backends from {BACKENDS}, or 'default'")
    p.add_argument("--repeats", type=int, default=3, help="timed forwards per size and backend")
    p.add_argument("--warmup-blocks", type=int, default=5, help="blocks in the warm-up forward (0: all)")
    p.add_argument("--vae-dtypes", default="float32,bfloat16")
    p.add_argument("--vae-repeats", type=int, default=1)
    p.add_argument("--load-blocks", type=int, default=4)
    p.add_argument("--load-dir", type=Path, default=Path("/tmp/wan_bench_load"))
    p.add_argument("--deadline", type=float, default=540.0, help="seconds after the imports; later work is skipped")
    p.add_argument("--min-step-s", type=float, default=5.0, help="time a DiT entry needs at least to start")
    p.add_argument("--text-tokens", type=int, default=100, help="trimmed T5 length (padded to 512)")
    p.add_argument("--timestep", type=int, default=900)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", default=None, help="bfloat16 (default on CUDA) or float32 (default on CPU)")
    p.add_argument("--tiny", action="store_true", help="small models (CPU smoke test of the control flow)")
    p.add_argument("--compile", action="store_true", help="torch.compile our DiT blocks")
    p.add_argument("--stub-diffusers", action="store_true", help="never import the real diffusers")
    args = p.parse_args(argv)
    args.sizes = [Size.parse(s) for s in (args.sizes or ("64x32" if args.tiny else "1280x720,832x480")).split(",")]
    args.frames = args.frames or (5 if args.tiny else 77)
    if (args.frames - 1) % 4:
        raise SystemExit(f"--frames {args.frames}: must be 4k+1")
    args.parts = set(args.parts.split(","))
    args.backends = [None if b == "default" else b for b in args.backends.split(",")]
    bad = [b for b in args.backends if b is not None and b not in BACKENDS]
    if bad:
        raise SystemExit(f"unknown backends {bad}; use {BACKENDS} or 'default'")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = getattr(torch, args.dtype or ("bfloat16" if device.type == "cuda" else "float32"))
    budget = Budget(args.deadline)
    cfg = tiny_config() if args.tiny else DiTConfig()
    latent_frames = 2 + (args.frames - 1) // 4
    results: dict[str, Any] = {
        "machine": machine(device),
        "args": {k: (sorted(v) if isinstance(v, set) else v) for k, v in vars(args).items()},
        "dtype": str(dtype), "latent_frames": latent_frames,
        "flops": {s.name: dit_flops(cfg, s.tokens(latent_frames)) for s in args.sizes}}
    log(f"{results['machine']}")
    for s in args.sizes:
        f = results["flops"][s.name]
        log(f"{s.name}: {s.tokens(latent_frames):,} tokens, {f['total'] / 1e15:.3f} PFLOP/forward "
            f"(self-attention {100 * f['self_attention'] / f['total']:.0f} %)")
    off = None
    if "official" in args.parts and args.official is not None:
        import official_shim

        off = official_shim.load_official(args.official, use_real_diffusers=not args.stub_diffusers)
        log(f"official code from {off.root} (diffusers: {off.diffusers})")
    shared = make_shared(cfg, args.frames, args.text_tokens, device, dtype, args.seed + 1)
    inputs = {s.name: make_inputs(s, args.frames, args.timestep, device, dtype, args.seed + 2)
              for s in args.sizes}
    outputs: dict[tuple[str, str, str], torch.Tensor] = {}

    def saver(part: str) -> Callable[[dict[str, Any]], None]:
        def save(res: dict[str, Any]) -> None:
            results[part] = res
            results["skipped"] = budget.skipped
            write_json(args.out, results)
        return save

    try:
        if "attn" in args.parts:
            results["attention"] = bench_attention(cfg, args.sizes, args.frames,
                                                   [b for b in args.backends if b], args.repeats,
                                                   device, dtype, budget)
            write_json(args.out, results)
        if "ours" in args.parts:
            results["ours"] = bench_ours(cfg, args.sizes, args.frames, args.backends, args, shared,
                                         inputs, device, dtype, budget, outputs, saver("ours"))
            write_json(args.out, results)
        if off is not None:
            if budget.fits(60 if not args.tiny else 1):
                results["official"] = bench_official(off, cfg, args.sizes, args.backends, args, shared,
                                                     inputs, device, dtype, budget, outputs,
                                                     saver("official"))
            else:
                budget.skip("official")
            summarize(results, cfg, outputs)
            write_json(args.out, results)
        del inputs, shared
        free(device)
        if "vae" in args.parts:
            dts = [getattr(torch, d) for d in args.vae_dtypes.split(",")]
            results["vae"] = bench_vae(args.sizes, args.frames, dts, args.vae_repeats, args.tiny,
                                       device, args.seed, budget)
            write_json(args.out, results)
        if "load" in args.parts:
            results["load"] = bench_load(cfg, args.load_blocks, args.load_dir, device, dtype,
                                         args.seed, budget)
    finally:
        summarize(results, cfg, outputs)
        results["skipped"] = budget.skipped
        results["total_s"] = round(budget.elapsed(), 1)
        write_json(args.out, results)
        print(markdown(results), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
