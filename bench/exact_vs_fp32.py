"""Exact and fast mode vs a float32 reference of the same weights.

python3 bench/exact_vs_fp32.py [--size 256x256] [--frames 13] [--exact cudnn,fa3] [--fast fa3_fp8]
    [--out results.json]
Full-size DiT, random weights; prints rel_l2 of one velocity prediction for exact mode (bf16
weights, compiled blocks) with each attention kernel (issue 8: <= 1e-2) and for the fast mode
(fp8 linears + each fast attention kernel), against fp32 and against exact bf16.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))   # the repository root

from wan_animate.models.attention import LocalAttention, NoSequenceParallel
from wan_animate.models.config import DiTConfig
from wan_animate.models.dit import AnimateDiT
from wan_animate.models.motion import blur_kernel
from wan_animate.models.optimize import compile_blocks


@torch.no_grad()
def build(dtype: torch.dtype, seed: int) -> AnimateDiT:
    with torch.device("meta"):
        model = AnimateDiT(DiTConfig()).to(dtype)
    model.to_empty(device="cuda")
    for i, (name, p) in enumerate(model.named_parameters()):
        g = torch.Generator("cuda").manual_seed(seed + i)
        if p.dim() >= 2:
            p.copy_(torch.randn(p.shape, generator=g, device="cuda") / math.sqrt(math.prod(p.shape[1:])))
        elif "norm" in name:
            p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g, device="cuda"))
        else:
            p.copy_(0.05 * torch.randn(p.shape, generator=g, device="cuda"))
    for _, b in model.named_buffers():
        b.copy_(blur_kernel())
    return model.eval()


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="256x256")
    ap.add_argument("--frames", type=int, default=13)
    ap.add_argument("--exact", default="cudnn,fa3", help="attention kernels of the exact runs")
    ap.add_argument("--fast", default="fa3_fp8", help="attention kernels of the fast runs ('' = none)")
    ap.add_argument("--out", default=None, help="write the numbers as JSON here")
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    f = args.frames // 4 + 2
    g = torch.Generator("cuda").manual_seed(1)
    x = torch.randn(1, 16, f, h // 8, w // 8, device="cuda", generator=g)
    y = torch.randn(1, 20, f, h // 8, w // 8, device="cuda", generator=g)
    pose = torch.randn(1, 16, f - 1, h // 8, w // 8, device="cuda", generator=g)
    faces = torch.rand(1, 3, args.frames, 512, 512, device="cuda", generator=g) * 2 - 1
    clip = torch.randn(1, 257, 1280, device="cuda", generator=g)
    text = torch.randn(100, 4096, device="cuda", generator=g)
    t = torch.tensor([900], device="cuda")
    outs = {}

    def run(model: AnimateDiT, dtype: torch.dtype) -> torch.Tensor:
        return model(x, t=t, clip_fea=clip.to(dtype), context=[text.to(dtype)], y=y.to(dtype),
                     pose_latents=pose.to(dtype), face_pixels=faces.to(dtype)).float().cpu()

    model = build(torch.float32, seed=0)
    model.set_parallel(NoSequenceParallel(LocalAttention(backend="math")))
    ref = run(model, torch.float32)
    del model
    torch.cuda.empty_cache()
    model = build(torch.bfloat16, seed=0)
    compile_blocks(model)
    rows = []

    def record(label: str, backend: str) -> None:
        try:
            model.set_parallel(NoSequenceParallel(LocalAttention(backend=backend, device="cuda", head_dim=128)))
            outs[label] = run(model, torch.bfloat16)
        except Exception as e:  # noqa: BLE001 - e.g. FA3 not installed: report and go on
            rows.append({"run": label, "error": f"{type(e).__name__}: {e}"})
            print(f"{label}: ERROR {e}")
            return
        row = {"run": label, "rel_l2_vs_fp32": rel(outs[label], ref),
               "max_abs_vs_fp32": float((outs[label] - ref).abs().max())}
        first = next(iter(outs))
        if first != label:
            row[f"rel_l2_vs_{first}"] = rel(outs[label], outs[first])
        rows.append(row)
        print(f"size {args.size} frames {args.frames}: {json.dumps(row)}")

    for b in filter(None, args.exact.split(",")):
        record(f"exact-{b}", b)
    fast = [b for b in args.fast.split(",") if b]
    if fast:
        from wan_animate.models.fp8 import quantize_dit

        quantize_dit(model)
        torch.cuda.empty_cache()
        for b in fast:
            record(f"fast-{b}", b)
    print(f"|v| std (fp32) {float(ref.std()):.3f}")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump({"size": args.size, "frames": args.frames, "rows": rows}, fh, indent=1)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm())


if __name__ == "__main__":
    main()
