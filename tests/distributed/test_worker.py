"""The worker side without a pool: InlineExecutor under a real torchrun launch, and helpers."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from wan_animate.distributed.protocol import PoolSpec, resolve
from wan_animate.distributed.worker import to_cpu


def make_state(env, config):
    return {"scale": config}


def reduce_steps(state, payload, ctx):
    total = torch.zeros(1, device=ctx.device)
    for i in range(1, payload["steps"] + 1):
        t = torch.tensor([float(ctx.rank + 1)], device=ctx.device)
        dist.all_reduce(t)
        total += t * state["scale"]
        ctx.step(0, i, payload["steps"])
    if payload.get("fail_rank") == ctx.rank:
        raise ValueError(f"inline failure on rank {ctx.rank}")
    return total


TORCHRUN_SCRIPT = """
import sys
sys.path[:0] = {paths!r}
import torch.distributed as dist
from test_worker import spec
from wan_animate.distributed.protocol import Job, WorkerError
from wan_animate.distributed.worker import InlineExecutor
from wan_animate.errors import Cancelled

ex = InlineExecutor(spec())
rank = dist.get_rank()
log = open(f"{outdir}/rank{{rank}}.txt", "w")
events = []
out = ex.submit(Job("steps", {{"steps": 3}}), on_step=events.append)
print(f"rank{{rank}} result={{None if out is None else float(out)}} events={{len(events)}}", file=log)
try:
    ex.submit(Job("steps", {{"steps": 5}}), cancelled=lambda: rank == 1)  # one rank sees it
except Cancelled:
    print(f"rank{{rank}} cancelled", file=log)
try:
    ex.submit(Job("steps", {{"steps": 1, "fail_rank": 1}}))
except WorkerError as e:
    print(f"rank{{rank}} error rank={{e.rank}}", file=log)
log.close()
ex.close()
"""


def spec() -> PoolSpec:
    return PoolSpec(factory=f"{__name__}:make_state", handlers={"steps": f"{__name__}:reduce_steps"},
                    config=2.0, world_size=2, device_type="cpu")


def test_inline_executor_under_torchrun(tmp_path):
    script = tmp_path / "job.py"
    paths = [str(Path(__file__).parent), str(Path(__file__).parents[2])]
    script.write_text(TORCHRUN_SCRIPT.format(paths=paths, outdir=str(tmp_path)))
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          "--nproc_per_node", "2", str(script)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    lines = set()
    for rank in (0, 1):
        lines |= set((tmp_path / f"rank{rank}.txt").read_text().splitlines())
    assert "rank0 result=18.0 events=3" in lines  # 3 steps x (1 + 2) x scale 2, rank 0 reports
    assert "rank1 result=None events=0" in lines
    assert {"rank0 cancelled", "rank1 cancelled"} <= lines  # agreed although only rank 1 saw it
    assert {"rank0 error rank=1", "rank1 error rank=1"} <= lines


def test_to_cpu_and_resolve():
    out = to_cpu({"a": [torch.ones(1)], "b": (torch.zeros(2), 3)})
    assert isinstance(out["b"], tuple) and out["b"][1] == 3
    assert resolve("wan_animate.distributed.worker:to_cpu") is to_cpu
    with pytest.raises(ValueError, match="package.module:function"):
        resolve("wan_animate.distributed.worker.to_cpu")
    with pytest.raises(ValueError, match="package.module:function"):
        PoolSpec(factory="no_colon")
