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

This file is the entry point (flags, order of the parts, JSON written after each measurement).
The work lives beside it, imported by bare name (``bench/`` is the script directory):
``common.py`` (sizes, budget, log, timing, SDPA contexts, seeded init, measurement loop, JSON
writer), ``ceilings.py`` (``attn``), ``dit_step.py`` (``ours``, ``official``), ``vae_load.py``
(``vae``, ``load``), ``report.py`` (ratios, parity, markdown, machine block).
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import common  # noqa: E402
from ceilings import attention_accuracy, bench_attention  # noqa: E402
from common import BACKENDS, FA3_BACKENDS, Budget, Size, free, log, write_json  # noqa: E402
from dit_step import bench_official, bench_ours, dit_flops, make_inputs, make_shared, tiny_config  # noqa: E402
from report import machine, markdown, summarize  # noqa: E402
from vae_load import bench_load, bench_vae  # noqa: E402
from wan_animate.models.config import DiTConfig  # noqa: E402

common.start_clock()  # the deadline counts from here (after the imports)


# ---- main --------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default=None, help="WxH list (default 1280x720,832x480; tiny: 64x32)")
    p.add_argument("--frames", type=int, default=None, help="pixel frames per clip, 4k+1 (default 77; tiny 5)")
    p.add_argument("--official", type=Path, default=None, help="Wan2.2 checkout (or .bench_carry/wan22)")
    p.add_argument("--out", type=Path, default=None, help="write results JSON here")
    p.add_argument("--parts", default="attn,ours,official,vae,load")
    p.add_argument("--backends", default="cudnn,flash", help=f"SDPA backends from {BACKENDS}, or 'default'")
    p.add_argument("--official-backends", default=None,
                   help="SDPA backends for the official code (default: --backends without fa3*)")
    p.add_argument("--fast", default="",
                   help="after the exact runs, quantize our DiT to fp8 (fast mode) and time these "
                        "attention backends, e.g. fa3_fp8,fa3")
    p.add_argument("--accuracy-tokens", type=int, default=8192,
                   help="token count of the attention accuracy check (attn part)")
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
    if args.official_backends is None:
        args.official_backends = [b for b in args.backends if b not in FA3_BACKENDS]
    else:
        args.official_backends = [None if b == "default" else b for b in args.official_backends.split(",")]
    args.fast = [b for b in args.fast.split(",") if b]
    bad = [b for b in (*args.backends, *args.official_backends, *args.fast)
           if b is not None and b not in BACKENDS]
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
            kernels = [b for b in args.backends if b] + [b for b in args.fast if b not in args.backends]
            results["attention"] = bench_attention(cfg, args.sizes, args.frames, kernels,
                                                   args.repeats, device, dtype, budget)
            if device.type == "cuda":
                results["attention_accuracy"] = attention_accuracy(cfg, kernels, args.accuracy_tokens,
                                                                   device)
            write_json(args.out, results)
        if "ours" in args.parts:
            results["ours"] = bench_ours(cfg, args.sizes, args.frames, args.backends, args, shared,
                                         inputs, device, dtype, budget, outputs, saver("ours"))
            write_json(args.out, results)
        if off is not None:
            if budget.fits(60 if not args.tiny else 1):
                results["official"] = bench_official(off, cfg, args.sizes, args.official_backends, args, shared,
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
