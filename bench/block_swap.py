"""Block swap on one GPU capped at a small card's memory (issue 8, build item 4).

python3 bench/block_swap.py [--size 1280x720] [--cap-gib 24] [--swap-exact 26] [--swap-fast 18]
    [--out block_swap.json]
Full-size DiT with random weights, compiled blocks, FA3 when installed. First the whole DiT on
the GPU (the reference time and output), then the last N blocks streamed from pinned host memory
(``wan_animate.models.offload.BlockSwap``) with ``torch.cuda.set_per_process_memory_fraction``
holding the process to ``--cap-gib``: exact mode (bf16) and fast mode (fp8). Prints per step:
median seconds, peak GiB (weights included), rel_l2 vs the resident run.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))   # the repository root
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import GIB, Size, first_blocks, local_attention, materialize, rel_l2, timed  # noqa: E402
from dit_step import make_inputs, make_shared  # noqa: E402
from wan_animate.models.attention import NoSequenceParallel  # noqa: E402
from wan_animate.models.config import DiTConfig  # noqa: E402
from wan_animate.models.dit import AnimateDiT  # noqa: E402
from wan_animate.models.fp8 import quantize_dit  # noqa: E402
from wan_animate.models.offload import BlockSwap  # noqa: E402
from wan_animate.models.optimize import compile_blocks  # noqa: E402


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="1280x720")
    ap.add_argument("--frames", type=int, default=77)
    ap.add_argument("--cap-gib", type=float, default=24.0)
    ap.add_argument("--swap-exact", type=int, default=26)
    ap.add_argument("--swap-fast", type=int, default=18)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--attention", default="fa3")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    dev = torch.device("cuda", torch.cuda.current_device())
    total = torch.cuda.get_device_properties(dev).total_memory
    cfg = DiTConfig()
    model = materialize(lambda: AnimateDiT(cfg), dev, torch.bfloat16, 0)
    compile_blocks(model)
    shared = make_shared(cfg, args.frames, 100, dev, torch.bfloat16, 1)
    inp = make_inputs(Size.parse(args.size), args.frames, 900, dev, torch.bfloat16, 2)
    motion = model.encode_motion(shared.faces)
    ctx = model.embed_context([shared.context], shared.clip_fea)
    rows: list[dict] = []

    def run() -> torch.Tensor:
        return model(inp.x, t=inp.t, clip_fea=shared.clip_fea, context=None, y=inp.y,
                     pose_latents=inp.pose, motion_vec=motion, context_emb=ctx)

    def step(label: str, attention: str, swap: int, cap: bool, ref: torch.Tensor | None) -> torch.Tensor | None:
        attn, _ = local_attention(attention)
        model.set_parallel(NoSequenceParallel(attn))
        runner = BlockSwap(model.blocks, swap, dev) if swap else None
        model.set_block_runner(runner)
        torch.cuda.empty_cache()
        if cap:
            torch.cuda.set_per_process_memory_fraction(args.cap_gib * GIB / total, dev)
        torch.cuda.reset_peak_memory_stats(dev)
        row = {"run": label, "swap_blocks": swap, "cap_gib": args.cap_gib if cap else None,
               "resident_gib": round(torch.cuda.memory_allocated(dev) / GIB, 2),
               "host_gib": round(runner.host_bytes() / GIB, 2) if runner else 0.0}
        out = None
        try:
            with first_blocks(model, 5):
                run()                                   # compile / warm-up on 5 blocks
            runs = [timed(run, dev) for _ in range(args.repeats)]
            ts, out = [round(t, 3) for t, _ in runs], runs[-1][1]
            row.update(times_s=ts, median_s=statistics.median(ts),
                       peak_gib=round(torch.cuda.max_memory_allocated(dev) / GIB, 2))
            if ref is not None:
                row["rel_l2_vs_resident"] = rel_l2(out.float(), ref.float())
        except Exception as e:  # noqa: BLE001 - OOM under the cap etc.: record it
            row["error"] = f"{type(e).__name__}: {str(e)[:300]}"
        torch.cuda.set_per_process_memory_fraction(1.0, dev)
        model.set_block_runner(None)
        if runner is not None:
            runner.restore()
        torch.cuda.empty_cache()
        rows.append(row)
        print(json.dumps(row), flush=True)
        return out

    ref = step("exact resident", args.attention, 0, False, None)
    step(f"exact swap {args.swap_exact}", args.attention, args.swap_exact, True, ref)
    quantize_dit(model)
    torch.cuda.empty_cache()
    fast_attn = "fa3_fp8" if args.attention == "fa3" else args.attention
    fref = step("fast resident", fast_attn, 0, False, None)
    step(f"fast swap {args.swap_fast}", fast_attn, args.swap_fast, True, fref)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
