"""What each rank of a P-rank pool holds and computes, simulated on one GPU (issue 13).

python3 bench/pool_memory.py --out $OUT/pool_memory.json \
    [--pools 1 2 4 8] [--sizes 1280x720] [--frames 77] [--steps 2] [--encoders parked gpu] \
    [--cap-gib 22] [--compile on] [--swap-blocks N | --plan auto] [--attention fa3]
    [--collectives fill|noop] [--profile] [--tiny]

Every case (pool size P, video size, rank role 0 or 1, encoder placement) runs in a fresh
process that joins torch's *fake* process group as rank r of P (``FakeStore``): collectives are
no-ops, allocations and kernels are real, so the process holds and computes what that rank of a
real pool would. The job path is the project's own: the pool's placement
(:func:`wan_animate.distributed.animate.place_dit`; the worker state of
:mod:`wan_animate.sampling.jobs` with rank 0's parked or resident encoders), ``generate_handler``
(conditioning, the broadcast clip message, denoising
steps through ``JobContext``) and ``decode_handler``; rank 1 denoises the clip message rank 0
broadcast (saved by the rank-0 case of the same size). Weights are random (seeded); the
numbers of a real checkpoint are the same, the video is noise.

Per case: resident GiB after loading, peak GiB of conditioning + first step, of one later
denoising step (the "denoise peak", every rank role), of the decode (rank 0), seconds of that
step, and the bytes a rank sends per step (Ulysses all-to-all of q/k/v/out, FSDP2 all-gathers
of the blocks) with the step time they imply at NVLink and PCIe bandwidths.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
GIB = 1024 ** 3
NVLINK_GBPS = 450.0   # H100/H200 NVLink 4, per direction
PCIE_GBPS = 50.0      # PCIe 5.0 x16, per direction


class RandomRows:
    """A :class:`~wan_animate.distributed.loading.TensorSource` of seeded random rows made on
    the GPU (matrices ~ N(0, 1/fan_in), norm scales ~ 1, other vectors ~ N(0, 0.05))."""

    def __init__(self, shapes: dict[str, tuple[int, ...]], device: Any, seed: int) -> None:
        self.shapes, self.device, self.seed = shapes, device, seed

    def keys(self):  # noqa: ANN201 - Iterable[str]
        return self.shapes.keys()

    def shape(self, key: str) -> tuple[int, ...]:
        return self.shapes[key]

    def read(self, key: str, start: int | None = None, stop: int | None = None):  # noqa: ANN201
        import torch
        from wan_animate.models.motion import blur_kernel

        shape = self.shapes[key]
        if key.endswith(".kernel"):
            return blur_kernel()
        rows = shape if start is None else (stop - start, *shape[1:])
        g = torch.Generator(device=self.device).manual_seed(self.seed + zlib.crc32(key.encode()) + (start or 0))
        x = torch.randn(rows, generator=g, device=self.device)
        if len(shape) >= 2 and not key.endswith(("modulation", "padding_tokens", "embedding")):
            return x / math.sqrt(math.prod(shape[1:]))
        return 1 + 0.1 * x if "norm" in key else 0.05 * x


def _gib(n: float) -> float:
    return round(n / GIB, 2)


def comm_per_step(p: int, tokens: int, dim: int, block_param_bytes: int, forwards: int) -> dict:
    """Bytes one rank sends per denoising step and the seconds they take at NVLink / PCIe."""
    sp = p
    local = math.ceil(tokens / sp) * dim * 2                          # [L/sp, C] bf16
    ulysses = 4 * local * (sp - 1) / sp * 40 * forwards if sp > 1 else 0   # q, k, v, out x 40 blocks
    gather = block_param_bytes * (p - 1) / p / p * forwards if p > 1 else 0  # my shard to p-1 peers
    total = ulysses + gather
    return {"ulysses_gib": _gib(ulysses), "fsdp_allgather_gib": _gib(gather), "total_gib": _gib(total),
            "nvlink_s": round(total / (NVLINK_GBPS * 1e9), 3), "pcie_s": round(total / (PCIE_GBPS * 1e9), 3)}


def stand_in_collectives(every_call: bool) -> set[tuple[int, int]]:
    """Fill the fake group's collective outputs, which it leaves as the allocator found them:
    an all-gather repeats this rank's shard, an all-to-all returns its input.

    ``every_call`` (``--collectives fill``): at every call, so the math is a fixed function of
    this rank's inputs and two runs that differ only in where memory lives (swap, caps) must give
    the same bits. Otherwise (``noop``): only the first time an output buffer is seen. Fresh
    buffers are zeros, and kernels run faster on zeros than on real data (less switching, less
    power); the caching allocator hands the same buffers out at every step, so after the first
    step a buffer holds real values of its kind and the timed steps run no stand-in kernels.
    Returns the (pointer, size) of the buffers filled (``buffers_filled_in_last_step`` counts
    the new ones of the last step)."""
    import torch.distributed as dist

    seen: set[tuple[int, int]] = set()

    def fill(t) -> bool:  # noqa: ANN001
        key = (t.data_ptr(), t.numel())
        new = key not in seen
        seen.add(key)
        return every_call or (new and t.is_floating_point())

    a2a = dist.all_to_all_single

    def repeating(gather):  # noqa: ANN001, ANN202
        def all_gather(output, input, *args, **kwargs):  # noqa: ANN001, ANN202, A002
            work = gather(output, input, *args, **kwargs)
            if fill(output):
                rows = output.view(-1, input.numel())       # FSDP2's input is one of these rows
                rows.copy_(input.reshape(1, -1).clone().expand_as(rows))
            return work
        return all_gather

    def all_to_all_single(output, input, *args, **kwargs):  # noqa: ANN001, ANN202, A002
        work = a2a(output, input, *args, **kwargs)
        if output.data_ptr() != input.data_ptr() and fill(output):
            output.copy_(input)
        return work

    for name in ("all_gather_into_tensor", "all_gather_single"):   # torch >= 2.13 has both
        if hasattr(dist, name):
            setattr(dist, name, repeating(getattr(dist, name)))
    dist.all_to_all_single = all_to_all_single
    return seen


def kernel_table(prof: Any, top: int = 40) -> dict:
    """The GPU time of one profiled step by kernel: total ms and the ``top`` kernels (ms, calls)
    (on the CPU: the operators' self time)."""
    def own(e: Any) -> float:
        return e.self_device_time_total or e.self_cpu_time_total

    rows = [(e.key, own(e) / 1e3, e.count) for e in prof.key_averages() if own(e) > 0]
    rows.sort(key=lambda r: -r[1])
    return {"gpu_ms": round(sum(r[1] for r in rows), 2),
            "kernels": [[k[:120], round(ms, 2), n] for k, ms, n in rows[:top]]}


def run_case(case: dict) -> dict:
    """One (pool, size, role, encoders) case in this process (see the module docstring)."""
    import torch
    import torch.distributed as dist
    from torch.testing._internal.distributed.fake_pg import FakeStore

    from wan_animate.checkpoints.layout import T5_TOKENIZER_DIR
    from wan_animate.checkpoints.official import SIZES_FILE
    from wan_animate.checkpoints.tiny import write_tiny_checkpoint
    from wan_animate.distributed import animate
    from wan_animate.sampling import jobs
    from wan_animate.distributed.loading import load_local_shards
    from wan_animate.distributed.worker import JobContext, WorkerEnv
    from wan_animate.models.bundle import ModelBundle
    from wan_animate.models.clip import CLIPVisionConfig, CLIPVisionEncoder
    from wan_animate.models.config import DiTConfig
    from wan_animate.models.dit import AnimateDiT
    from wan_animate.models.t5 import T5Config, T5Encoder
    from wan_animate.models.tokenizer import UMT5Tokenizer
    from wan_animate.models.vae import VAEConfig, WanVAE
    from wan_animate.placement import Placement, park_encoders, precision
    from wan_animate.sampling.options import AnimateInputs, SampleOptions

    sys.path.insert(0, str(REPO / "bench"))
    from common import materialize

    p, role, tiny = case["pool"], case["role"], case["tiny"]
    w, h = (int(v) for v in case["size"].split("x"))
    dev = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if case.get("cap_gib") and dev.type == "cuda":
        total = torch.cuda.get_device_properties(dev).total_memory
        torch.cuda.set_per_process_memory_fraction(case["cap_gib"] * GIB / total, dev)
    dist.init_process_group("fake", store=FakeStore(), rank=role, world_size=p)
    touched = stand_in_collectives(every_call=case.get("collectives", "fill") == "fill")
    env = WorkerEnv(role, p, dev, "fake", dist.new_group())
    pl = Placement.resolve(device_type=dev.type, gpus=p, pooled=True, encoders=case["encoders"],
                           compile=case["compile"], mode=case["mode"],
                           attention=case.get("attention", "auto"),
                           swap_blocks=case.get("swap_blocks", 0), vae=case.get("vae", "auto"))
    prec = precision(pl)
    planned = {}
    if case["plan"] == "auto" and dev.type == "cuda":
        import dataclasses

        from wan_animate.memory_plan import GIB as G, UMT5_XXL_BYTES, plan_memory
        free = case["cap_gib"] * G if case.get("cap_gib") else torch.cuda.mem_get_info(dev)[0]
        cfg0 = DiTConfig()
        plan = plan_memory(cfg0, pl, [int(free)] * p, target=(w, h, case["frames"]),
                           t5_bytes=UMT5_XXL_BYTES if pl.t5 == "parked" else 0)
        pl = dataclasses.replace(pl, swap_blocks=plan.swap_blocks)
        planned["plan_text"] = plan.describe()
    mem = (lambda: torch.cuda.memory_allocated(dev)) if dev.type == "cuda" else (lambda: 0)
    peak = (lambda: torch.cuda.max_memory_allocated(dev)) if dev.type == "cuda" else (lambda: 0)
    reset = (lambda: torch.cuda.reset_peak_memory_stats(dev)) if dev.type == "cuda" else (lambda: None)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    out: dict[str, Any] = {**case, **planned, "placement": pl.describe()}

    tiny_dir = write_tiny_checkpoint(Path(tempfile.mkdtemp()) / "tiny")    # its tokenizer; --tiny: its sizes
    sizes = json.loads((tiny_dir / SIZES_FILE).read_text()) if tiny else {}
    cfg = DiTConfig.from_json(tiny_dir / "config.json") if tiny else DiTConfig()
    bundle = None
    if role == 0:                       # encoders first (then parked), as a rank-0 load leaves them
        tcfg = T5Config(**sizes.get("t5", {}))
        ccfg = CLIPVisionConfig(**sizes.get("clip", {}))
        vcfg = VAEConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in sizes.get("vae", {}).items()})
        tok = UMT5Tokenizer(tiny_dir / T5_TOKENIZER_DIR)
        bundle = ModelBundle(dit=None, vae=materialize(lambda: WanVAE(vcfg), dev, prec.vae, 1),  # type: ignore[arg-type]
                             t5=materialize(lambda: T5Encoder(tcfg), dev, prec.t5, 2),
                             clip=materialize(lambda: CLIPVisionEncoder(ccfg), dev, prec.clip, 3),
                             tokenizer=tok, device=dev, dtype=prec.batch)
        park_encoders(bundle, pl)
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in AnimateDiT(cfg).state_dict().items()}
    dit = animate.place_dit(env, cfg, pl)
    load_local_shards(dit, RandomRows(shapes, dev, 7),
                      "random DiT")
    dit.eval().requires_grad_(False)
    animate.finish_dit(dit, pl, env)
    if bundle is not None:
        bundle.dit = dit
    split = pl.vae == "split" and p > 1       # rank 0's encodes / decodes run split over the pool
    if split and bundle is not None:
        bundle.vae = jobs.PoolVAE(bundle.vae, env)
    state = jobs.WorkerState(env, bundle, dit, bundle.vae.vae if split and bundle else None, split)
    sync()
    out["resident_gib"] = _gib(mem())
    block_bytes = sum(math.prod(v) * 2 for k, v in shapes.items() if k.startswith(("blocks.", "face_adapter.")))
    tokens = (case["frames"] // 4 + 2) * (h // 16) * (w // 16)
    out["comm_per_step"] = comm_per_step(p, tokens, cfg.dim, block_bytes, forwards=1)

    steps: list[tuple[float, float]] = []      # (time, peak) at each step boundary
    fills: list[int] = []                       # noop: buffers filled so far, at each boundary
    profiler: list[Any] = []                    # --profile: the last step's torch profiler

    class TimedContext(JobContext):
        """The job context of the pool, timing every step boundary on any rank."""

        def step(self, clip: int, step: int, total: int, clips: int = 1) -> None:
            sync()
            steps.append((time.perf_counter(), peak()))
            fills.append(len(touched))
            if profiler and step == total:          # the last step was profiled
                profiler[0].__exit__(None, None, None)
                out["profile_last_step"] = kernel_table(profiler.pop())
            reset()
            if case.get("profile") and step == total - 1 and total > 1:
                from torch.profiler import ProfilerActivity, profile
                act = ProfilerActivity.CUDA if dev.type == "cuda" else ProfilerActivity.CPU
                profiler.append(profile(activities=[act]))
                profiler[0].__enter__()
            super().step(clip, step, total, clips)

    msg_file = Path(case["msg_dir"]) / f"msg_p{p}_{case['size']}.pt"
    reset()
    t0 = time.perf_counter()
    if role == 0:
        captured: list[Any] = []
        real = jobs._broadcast
        jobs._broadcast = lambda obj, e: (captured.append(obj), real(obj, e))[1]
        n = case["frames"]
        gen = torch.Generator().manual_seed(0)                # the same video in every case
        u8 = lambda *s: torch.randint(0, 255, s, dtype=torch.uint8, generator=gen).numpy()  # noqa: E731
        inputs = AnimateInputs(pose=u8(n, h, w, 3), face=u8(n, 512, 512, 3), reference=u8(h, w, 3), fps=30)
        opts = SampleOptions(frame_num=n, steps=case["steps"], seed=0)
        ctx = TimedContext(env, 1, None, lambda: False)
        latent = jobs.generate_handler(state, (inputs, opts), ctx)
        first = next(m for m in captured if isinstance(m, jobs.ClipJob))
        torch.save(first, msg_file)
        x = latent.pending if hasattr(latent, "pending") else None
        if isinstance(x, torch.Tensor):
            out["latent_crc32"] = zlib.crc32(x.detach().float().cpu().numpy().tobytes())
            out["latent_finite"] = bool(torch.isfinite(x).all())
        reset()
        jobs.decode_handler(state, latent, ctx)
        sync()
        out["decode_peak_gib"] = _gib(peak())
    else:
        job = torch.load(msg_file, weights_only=False)                  # a ClipJob
        ctx = TimedContext(env, 1, None, lambda: False)
        jobs._denoise_everywhere(state, ctx, job)
    out["first_step_peak_gib"] = _gib(steps[0][1])                 # conditioning + step 1
    out["denoise_peak_gib"] = _gib(max(s[1] for s in steps[1:])) if len(steps) > 1 else None
    out["step_s"] = round(steps[-1][0] - steps[-2][0], 3) if len(steps) > 1 else None
    out["first_step_s"] = round(steps[0][0] - t0, 3)
    if case.get("collectives") == "noop" and len(fills) > 1:
        out["buffers_filled_in_last_step"] = fills[-1] - fills[-2]
    if role == 1 and len(steps) > 1:
        out["step_times_s"] = [round(b[0] - a[0], 3) for a, b in zip(steps, steps[1:])]
    if bundle is not None:
        out["encoders_gpu_gib_while_denoising"] = _gib(sum(
            t.numel() * t.element_size() for m in (bundle.t5, bundle.clip)
            for t in [*m.parameters(), *m.buffers()] if t.device.type == "cuda"))
    dist.destroy_process_group()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pools", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--sizes", nargs="+", default=["1280x720"])
    ap.add_argument("--frames", type=int, default=77)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--encoders", nargs="+", default=["parked"], choices=("parked", "gpu"))
    ap.add_argument("--roles", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--cap-gib", type=float, default=None, help="per-process cap (24 GB card: 22)")
    ap.add_argument("--compile", default="off", choices=("auto", "on", "off"))
    ap.add_argument("--mode", default="exact", choices=("exact", "fast"))
    ap.add_argument("--vae", default="auto", choices=("auto", "whole", "split"),
                    help="VAE placement (auto: split by rows over a pool of P > 1; rank 0's halos and "
                         "gathers are the fake group's unfilled buffers, so use whole for latent CRCs)")
    ap.add_argument("--plan", default="off", choices=("auto", "off"),
                    help="auto: the loader's memory plan for the cap (or the free memory)")
    ap.add_argument("--swap-blocks", type=int, default=0)
    ap.add_argument("--attention", default="auto", help="the placement's attention kernel (auto, fa3, cudnn, ...)")
    ap.add_argument("--collectives", default="fill", choices=("fill", "noop"),
                    help="fill: deterministic stand-ins fill the fake collectives' outputs (latents "
                         "comparable by CRC; their copies add GPU time a real NCCL collective does "
                         "itself); noop: the fake group's no-ops, for step compute (a buffer seen "
                         "the first time is filled: no stand-in kernels in later steps)")
    ap.add_argument("--profile", action="store_true",
                    help="GPU time of the last step by kernel (torch.profiler) in the JSON")
    ap.add_argument("--tiny", action="store_true", help="tiny configs (a CPU check of the script)")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--case", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.case:
        print("RESULT " + json.dumps(run_case(json.loads(args.case))), flush=True)
        return
    msg_dir = tempfile.mkdtemp()
    rows = []
    for size in args.sizes:
        for enc in args.encoders:
            for p in args.pools:
                for role in args.roles:
                    if role >= p:
                        continue
                    case = {"pool": p, "size": size, "role": role, "encoders": enc, "frames": args.frames,
                            "vae": args.vae,
                            "steps": args.steps, "cap_gib": args.cap_gib, "tiny": args.tiny, "msg_dir": msg_dir,
                            "compile": args.compile, "mode": args.mode, "plan": args.plan,
                            "swap_blocks": args.swap_blocks, "profile": args.profile,
                            "attention": args.attention, "collectives": args.collectives}
                    r = subprocess.run([sys.executable, __file__, "--case", json.dumps(case)],
                                       capture_output=True, text=True, cwd=REPO,
                                       env={**os.environ, "PYTHONPATH": os.pathsep.join(
                                           [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])})
                    lines = [l for l in r.stdout.splitlines() if l.startswith("RESULT ")]
                    row = json.loads(lines[-1][7:]) if lines else {**case, "error": r.stderr[-1500:]}
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    print("\n| pool | size | rank | encoders | resident GiB | conditioning+step 1 peak | denoise peak | "
          "decode peak | step s | sent/step GiB | at NVLink / PCIe s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['pool']} | {r['size']} | {r['role']} | {r['encoders']} | error: "
                  f"{r['error'].strip().splitlines()[-1][:80]} |")
            continue
        c = r["comm_per_step"]
        print(f"| {r['pool']} | {r['size']} | {r['role']} | {r['encoders']} | {r['resident_gib']} | "
              f"{r['first_step_peak_gib']} | {r['denoise_peak_gib']} | {r.get('decode_peak_gib', '-')} | "
              f"{r['step_s']} | {c['total_gib']} | {c['nvlink_s']} / {c['pcie_s']} |")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
