"""Exact mode (bf16 weights, compiled blocks, cuDNN SDPA) vs a float32 reference of the same weights.

python3 bench/exact_vs_fp32.py [--size 256x256] [--frames 13]
Full-size DiT, random weights; prints rel_l2 of one velocity prediction (issue 8: <= 1e-2).
"""
from __future__ import annotations

import argparse
import math

import torch

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
    for label, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        model = build(dtype, seed=0)
        attn = LocalAttention(backend="math" if dtype == torch.float32 else "cudnn")
        model.set_parallel(NoSequenceParallel(attn))
        if dtype == torch.bfloat16:
            compile_blocks(model)
        outs[label] = model(x, t=t, clip_fea=clip.to(dtype), context=[text.to(dtype)],
                            y=y.to(dtype), pose_latents=pose.to(dtype),
                            face_pixels=faces.to(dtype)).float()
        del model
        torch.cuda.empty_cache()
    a, b = outs["bf16"].double(), outs["fp32"].double()
    print(f"size {args.size} frames {args.frames}: rel_l2(exact bf16 vs fp32) = "
          f"{float((a - b).norm() / b.norm()):.3e}, max_abs {float((a - b).abs().max()):.3e}, "
          f"|v| std {float(b.std()):.3f}")


if __name__ == "__main__":
    main()
