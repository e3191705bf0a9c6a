"""Where a 720p step goes: torch.profiler over one compiled forward of the full-size DiT.

python3 bench/profile_step.py [--size 1280x720] [--no-compile]
Prints the top CUDA kernels by total time and their share of the step.
"""
from __future__ import annotations

import argparse
import math
import time

import torch

from wan_animate.models.attention import LocalAttention, NoSequenceParallel
from wan_animate.models.config import DiTConfig
from wan_animate.models.dit import AnimateDiT


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="1280x720")
    ap.add_argument("--no-compile", action="store_true")
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    dev, dt = torch.device("cuda"), torch.bfloat16
    cfg = DiTConfig()
    with torch.device("meta"):
        model = AnimateDiT(cfg).to(dt)
    model.to_empty(device=dev)
    for name, p in model.named_parameters():
        if p.dim() >= 2:
            p.normal_(0, 1 / math.sqrt(math.prod(p.shape[1:])))
        else:
            p.normal_(1.0 if "norm" in name else 0.0, 0.05)
    for name, b in model.named_buffers():
        b.copy_(torch.tensor([[1, 3, 3, 1]], dtype=torch.float32).T @ torch.tensor([[1, 3, 3, 1.]]) / 64)
    model.set_parallel(NoSequenceParallel(LocalAttention(backend="cudnn")))
    if not args.no_compile:
        from wan_animate.models.optimize import compile_blocks
        compile_blocks(model)
    lh, lw = h // 8, w // 8
    x = torch.randn(1, 16, 21, lh, lw, device=dev)
    y = torch.randn(1, 20, 21, lh, lw, device=dev, dtype=dt)
    pose = torch.randn(1, 16, 20, lh, lw, device=dev, dtype=dt)
    faces = torch.rand(1, 3, 77, 512, 512, device=dev, dtype=dt) * 2 - 1
    motion = model.encode_motion(faces)
    clip = torch.randn(1, 257, 1280, device=dev, dtype=dt)
    ctx = model.embed_context([torch.randn(100, 4096, device=dev, dtype=dt)], clip)
    t = torch.tensor([900], device=dev)

    def step() -> torch.Tensor:
        return model(x, t=t, clip_fea=clip, context=None, y=y, pose_latents=pose,
                     motion_vec=motion, context_emb=ctx)

    t0 = time.time()
    step()
    torch.cuda.synchronize()
    print(f"first forward (incl. compile) {time.time() - t0:.1f} s")
    step()
    torch.cuda.synchronize()
    t0 = time.time()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        step()
        torch.cuda.synchronize()
    wall = time.time() - t0
    print(f"profiled forward {wall:.2f} s")
    rows = {}
    for e in prof.key_averages():
        if e.device_type == torch.autograd.DeviceType.CUDA or getattr(e, "device_time_total", 0) > 0:
            rows[e.key] = (getattr(e, "device_time_total", 0) / 1e6, e.count)
    total = sum(v[0] for v in rows.values())
    print(f"sum of kernel time {total:.2f} s")
    for k, (s, n) in sorted(rows.items(), key=lambda kv: -kv[1][0])[:25]:
        print(f"{s:8.3f} s {100 * s / total:5.1f}% x{n:<5d} {k[:110]}")


if __name__ == "__main__":
    main()
