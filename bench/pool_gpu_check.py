"""GPU check of the worker pool (issue 4): a pool of 1 (NCCL) vs the in-process path, tiny weights.

python3 bench/pool_gpu_check.py --out results.json
Prints whether the pooled video equals the in-process one, the cold start (spawn + load) and a
warm second job, and a cancel followed by a successful job.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from wan_animate.checkpoints.tiny import write_tiny_checkpoint
from wan_animate.cli.demo_media import face_frames, pose_frames, reference_image
from wan_animate.engine import ModelSpec, load_model, unload_all
from wan_animate.errors import Cancelled
from wan_animate.sampling.options import AnimateInputs, SampleOptions


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    res: dict = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}
    ck = write_tiny_checkpoint(Path(tempfile.mkdtemp()) / "tiny")
    n, h, w = 9, 64, 96
    inputs = AnimateInputs(pose=pose_frames(n, h, w), face=face_frames(n),
                           reference=reference_image(80, 96), fps=16)
    opts = SampleOptions(frame_num=5, steps=3, seed=2)
    local = load_model(ModelSpec(str(ck), device="cuda"))
    ref = local.decode(local.sample(inputs, opts))
    local.close()
    t0 = time.time()
    pooled = load_model(ModelSpec(str(ck), device="cuda", use_pool=True))
    events = []
    out = pooled.decode(pooled.sample(inputs, opts, on_step=events.append))
    res["cold_job_s"] = time.time() - t0
    t1 = time.time()
    out2 = pooled.decode(pooled.sample(inputs, opts))
    res["warm_job_s"] = time.time() - t1
    res["max_abs_pool_vs_local"] = float((out - ref).abs().max())
    res["warm_equals_cold"] = bool(torch.equal(out, out2))
    res["step_events"] = len(events)
    seen = []
    try:
        pooled.sample(inputs, SampleOptions(frame_num=5, steps=6, seed=2), on_step=seen.append,
                      cancelled=lambda: len(seen) >= 2)
        res["cancel"] = "not cancelled"
    except Cancelled:
        res["cancel"] = f"cancelled after {len(seen)} steps"
    res["after_cancel_equal"] = bool(torch.equal(pooled.decode(pooled.sample(inputs, opts)), out))
    unload_all()
    print(json.dumps(res, indent=2))
    if args.out:
        args.out.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
