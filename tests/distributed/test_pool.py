"""WorkerPool on 2 real gloo CPU ranks: progress, cancel, failures, worker death, reuse, close."""
from __future__ import annotations

import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from wan_animate.distributed.pool import WorkerPool
from wan_animate.distributed.protocol import Job, PoolClosed, PoolSpec, WorkerDied, WorkerError
from wan_animate.errors import Cancelled

FACTORY_CALLS = 0  # per worker process

# --- run inside the workers ---------------------------------------------------------------


def count_factory(env, config):
    """State factory: counts how often it ran in this process."""
    global FACTORY_CALLS
    FACTORY_CALLS += 1
    return {"calls": FACTORY_CALLS, "tag": config}


def denoise(state, payload, ctx):
    """A fake denoising loop: one all-reduce on the model group per step, then ctx.step."""
    steps = payload["steps"]
    total = torch.zeros(1, device=ctx.device)
    for i in range(1, steps + 1):
        if payload.get("fail_before_collective") == (ctx.rank, i):
            raise RuntimeError(f"early failure on rank {ctx.rank}")
        t = torch.tensor([float(ctx.rank + 1)], device=ctx.device)
        dist.all_reduce(t)
        total += t
        if payload.get("fail") == (ctx.rank, i):
            raise ValueError(f"boom on rank {ctx.rank} at step {i}")
        time.sleep(payload.get("sleep", 0.0))
        ctx.step(0, i, steps)
    pids = [None] * ctx.world_size
    dist.all_gather_object(pids, os.getpid())
    return {"total": float(total), "calls": state["calls"], "pids": pids, "tag": state["tag"]}


def bad_factory(env, config):
    raise OSError(f"cannot read weights on rank {env.rank}")


def stuck_factory(env, config):
    if env.rank == 1:
        time.sleep(120)
    return None


# --- tests ----------------------------------------------------------------------------------

class Interrupt(Exception):
    """Stands in for ComfyUI's InterruptProcessingException."""


def _spec(**kw) -> PoolSpec:
    base = dict(factory=f"{__name__}:count_factory", handlers={"denoise": f"{__name__}:denoise"},
                config="A", world_size=2, device_type="cpu", start_timeout_s=120,
                abort_grace_s=3.0, cancel_timeout_s=30.0, shutdown_timeout_s=5.0)
    return PoolSpec(**{**base, **kw})


@pytest.fixture(scope="module")
def pool():
    p = WorkerPool.get(_spec())
    yield p
    WorkerPool.release()


def _children() -> set[int]:
    """Live (non-zombie) processes whose parent is this process, except multiprocessing's
    process-wide resource tracker (started by the spawn context, exits with this process)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:  # the process exited while we looked
            continue
        if (int(fields[1]) == os.getpid() and fields[0] != "Z"
                and b"multiprocessing.resource_tracker" not in cmdline):
            found.add(int(stat.parent.name))
    return found


def test_progress_and_result(pool):
    events = []
    out = pool.submit(Job("denoise", {"steps": 4}), on_step=events.append)
    assert out["total"] == 4 * 3.0  # (1 + 2) per step
    assert [(e.clip, e.step, e.total) for e in events] == [(0, s, 4) for s in range(1, 5)]
    assert out["pids"] == list(pool.pids)


def test_three_jobs_build_state_once(pool):
    starts, pids = pool.starts, pool.pids
    for _ in range(3):
        assert pool.submit(Job("denoise", {"steps": 1}))["calls"] == 1
    assert pool.starts == starts and pool.pids == pids
    assert WorkerPool.get(_spec()) is pool  # same spec: same pool


def test_cancel_within_one_step(pool):
    events = []
    t0 = time.monotonic()
    with pytest.raises(Cancelled, match=r"cancelled, last progress clip 0 step [23]/50"):
        pool.submit(Job("denoise", {"steps": 50, "sleep": 0.3}), on_step=events.append,
                    cancelled=lambda: len(events) >= 2)
    # The cancel is seen at the boundary after step 2 or, at the latest, step 3.
    assert events[-1].step <= 3
    assert time.monotonic() - t0 < 5
    pids = pool.pids
    assert pool.submit(Job("denoise", {"steps": 2}))["total"] == 6.0
    assert pool.pids == pids


def test_callback_exception_cancels_then_reraises(pool):
    events = []

    def on_step(event):
        events.append(event)
        if event.step == 2:
            raise Interrupt("user pressed cancel")

    with pytest.raises(Interrupt):
        pool.submit(Job("denoise", {"steps": 50, "sleep": 0.1}), on_step=on_step)
    assert events[-1].step == 2  # no callbacks after the interrupt
    assert pool.submit(Job("denoise", {"steps": 1}))["total"] == 3.0


def test_exception_on_rank1_keeps_pool(pool):
    pids = pool.pids
    with pytest.raises(WorkerError, match="boom on rank 1 at step 2") as info:
        pool.submit(Job("denoise", {"steps": 5, "fail": (1, 2)}))
    assert info.value.rank == 1
    assert "Traceback" in info.value.worker_traceback and "in denoise" in info.value.worker_traceback
    assert "ValueError: boom on rank 1" in str(info.value)
    assert pool.submit(Job("denoise", {"steps": 2}))["total"] == 6.0
    assert pool.pids == pids


def test_failure_while_peer_blocked_restarts(pool):
    """Rank 0 waits in the model all-reduce for rank 1, which failed: bounded, then fresh pool."""
    starts = pool.starts
    t0 = time.monotonic()
    with pytest.raises(WorkerError, match=r"(?s)early failure on rank 1.*did not stop within") as info:
        pool.submit(Job("denoise", {"steps": 3, "fail_before_collective": (1, 2)}))
    assert time.monotonic() - t0 < 3.0 + 8
    assert "Traceback" in info.value.worker_traceback
    assert pool.submit(Job("denoise", {"steps": 1}))["calls"] == 1  # new workers, factory once
    assert pool.starts == starts + 1


def _signal_at_step_2(pid: int, sig: int, then=None):
    """An on_step callback that sends ``sig`` to ``pid`` after step 2 (then calls ``then()``)."""
    def on_step(event):
        if event.step == 2:
            os.kill(pid, sig)
            if then is not None:
                then()
    return on_step


def test_sigkill_mid_job(pool):
    starts, old = pool.starts, pool.pids
    kill_rank1 = _signal_at_step_2(old[1], signal.SIGKILL)
    t0 = time.monotonic()
    with pytest.raises(WorkerDied, match=r"rank 1 .*exit code -9 \(SIGKILL\)") as info:
        pool.submit(Job("denoise", {"steps": 20, "sleep": 0.2}), on_step=kill_rank1)
    assert time.monotonic() - t0 < 10
    assert info.value.rank == 1 and info.value.exitcode == -signal.SIGKILL
    assert not _children() & set(old)  # the surviving rank was stopped too
    out = pool.submit(Job("denoise", {"steps": 2}))  # next submit: a fresh pool
    assert out["total"] == 6.0 and out["calls"] == 1
    assert pool.starts == starts + 1 and not set(pool.pids) & set(old)


def test_stopped_rank_is_reported_by_rank(caplog):
    """A rank stopped (SIGSTOP), not dead: reported within the grace, naming the rank, and a
    Ctrl-C-style cancel that waits for it says whom it waits for."""
    pool = WorkerPool(_spec(stopped_grace_s=2.0))
    try:
        pool.start()
        old = pool.pids
        stop_rank1 = _signal_at_step_2(old[1], signal.SIGSTOP)
        t0 = time.monotonic()
        with pytest.raises(WorkerDied, match=r"rank 1 \(pid \d+\) has been stopped for \d+ s") as info:
            pool.submit(Job("denoise", {"steps": 50, "sleep": 0.2}), on_step=stop_rank1)
        assert time.monotonic() - t0 < 20
        assert info.value.rank == 1
        assert not _children() & set(old)                  # the stopped rank was killed too
        assert pool.submit(Job("denoise", {"steps": 2}))["total"] == 6.0   # a fresh pool

        caplog.set_level("WARNING", logger="wan_animate.distributed")
        pool2 = WorkerPool(_spec(stopped_grace_s=12.0))    # long enough to see the waiting note
        pool.close()
        pool2.start()
        flag = {"cancel": False}
        stop_then_cancel = _signal_at_step_2(pool2.pids[1], signal.SIGSTOP,
                                             then=lambda: flag.__setitem__("cancel", True))
        with pytest.raises(WorkerDied, match="rank 1 .*stopped"):
            pool2.submit(Job("denoise", {"steps": 50, "sleep": 0.2}), on_step=stop_then_cancel,
                         cancelled=lambda: flag["cancel"])
        notes = [r.getMessage() for r in caplog.records if "still waiting for ranks" in r.getMessage()]
        assert notes and "stopped: ranks [1]" in notes[0], notes
        pool2.close()
    finally:
        pool.close()


def test_unknown_kind_and_startup_failures():
    before = _children()
    with pytest.raises(ValueError, match="no handler for job kind 'nope'"):
        WorkerPool(_spec()).submit(Job("nope"))
    broken = WorkerPool(_spec(factory=f"{__name__}:bad_factory"))
    with pytest.raises(WorkerError, match=r"(?s)failed during startup \(state factory .*"
                                          r"OSError: cannot read weights on rank"):
        broken.start()
    broken.close()
    stuck = WorkerPool(_spec(factory=f"{__name__}:stuck_factory", start_timeout_s=4))
    # Rank 1 hangs in its factory; on a slow machine rank 0 may still be importing torch.
    with pytest.raises(WorkerError, match=r"startup stalled: [12] of 2 ranks not ready after 4 s "
                                          r"\(stuck in: .*rank 1: [a-z]") as info:
        stuck.start()
    assert "state factory" in str(info.value) or "process start" in str(info.value)
    stuck.close()
    assert _children() <= before  # the half-started workers were stopped


def test_new_spec_replaces_pool_and_close_leaves_no_children(pool):
    old = pool.pids
    other = WorkerPool.get(_spec(config="B"))  # a changed spec closes the old pool
    assert pool.closed and other is not pool
    assert not _children() & set(old)
    assert other.submit(Job("denoise", {"steps": 1}))["tag"] == "B"
    other.close()
    other.close()  # idempotent
    with pytest.raises(PoolClosed):
        other.submit(Job("denoise", {"steps": 1}))
    assert not _children()
    assert not multiprocessing.active_children()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_nccl_pool():
    """Progress, cancel and a failure on GPUs (NCCL model group; 2 GPUs if present)."""
    world = min(2, torch.cuda.device_count())
    p = WorkerPool(_spec(device_type="cuda", world_size=world, start_timeout_s=300))
    try:
        events = []
        out = p.submit(Job("denoise", {"steps": 3}), on_step=events.append)
        assert out["total"] == 3 * world * (world + 1) / 2 and len(events) == 3
        with pytest.raises(Cancelled):
            p.submit(Job("denoise", {"steps": 50, "sleep": 0.2}), cancelled=lambda: True)
        with pytest.raises(WorkerError, match=f"boom on rank {world - 1}"):
            p.submit(Job("denoise", {"steps": 3, "fail": (world - 1, 2)}))
        assert p.submit(Job("denoise", {"steps": 1}))["calls"] == 1 and p.starts == 1
    finally:
        p.close()
    assert not _children()


ORPHAN_SCRIPT = """
import os, signal, sys
sys.path[:0] = {paths!r}
with open({marker!r}, "a") as f:  # top level: must not run again in the workers
    f.write("main\\n")
if __name__ == "__main__":
    from wan_animate.distributed.pool import WorkerPool
    from test_pool import _spec
    import threading, time
    from wan_animate.distributed.protocol import Job
    pool = WorkerPool.get(_spec())
    print(" ".join(map(str, pool.pids)), flush=True)
    job = Job("denoise", {{"steps": 1, "sleep": 60}})  # workers busy: only the death pipe can stop them
    threading.Thread(target=pool.submit, args=(job,), daemon=True).start()
    time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGKILL)  # no atexit, no close()
"""


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


def test_workers_exit_when_parent_dies(tmp_path):
    import subprocess
    import sys

    marker = tmp_path / "marker"
    script = tmp_path / "parent.py"
    paths = [str(Path(__file__).parent), str(Path(__file__).parents[2])]
    script.write_text(ORPHAN_SCRIPT.format(paths=paths, marker=str(marker)))
    out, err = tmp_path / "out", tmp_path / "err"
    with out.open("w") as fo, err.open("w") as fe:  # files: the workers inherit them, no pipe EOF to wait for
        parent = subprocess.Popen([sys.executable, str(script)], stdout=fo, stderr=fe)
        assert parent.wait(timeout=120) == -signal.SIGKILL, err.read_text()
    pids = [int(p) for p in out.read_text().split()]
    assert len(pids) == 2
    deadline = time.monotonic() + 10
    while not all(map(_gone, pids)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(map(_gone, pids)), "workers outlived their parent"
    assert marker.read_text() == "main\n"  # spawn did not re-run the parent's script
