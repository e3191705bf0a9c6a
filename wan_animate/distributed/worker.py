"""The worker side: one loop per rank that builds its state once and runs jobs.

Plugging in a model (the seam used by the sampler; see :class:`~.protocol.PoolSpec`)::

    # wan_animate/sampling/pool_jobs.py  (any importable module; top-level functions)
    def load_dit(env: WorkerEnv, spec: DiTSpec) -> DiTState:       # the state factory, once
        pcfg = spec.parallel                                        # a ParallelConfig
        mesh = build_mesh(env.device.type, cfg=pcfg.cfg_size)
        with torch.device("meta"):
            model = AnimateDiT(spec.config)
        parallelize_dit(model, mesh, pcfg)
        model.to_empty(device=env.device)
        load_local_shards(model, SafetensorsSource.from_index(spec.folder, spec.index), spec.folder)
        return DiTState(model, mesh)

    def generate(state: DiTState, job: GenerateJob, ctx: JobContext) -> torch.Tensor:
        for clip in range(clips):
            for step, t in enumerate(timesteps, 1):
                ...one denoising step (the DiT's collectives inside)...
                ctx.step(clip, step, len(timesteps), clips)   # progress + agreed cancel
        return latents                                        # rank 0's result, moved to CPU

    spec = PoolSpec(factory="wan_animate.sampling.pool_jobs:load_dit",
                    handlers={"generate": "wan_animate.sampling.pool_jobs:generate"},
                    config=DiTSpec(...), world_size=4, device_type="cuda")
    latents = WorkerPool.get(spec).submit(Job("generate", GenerateJob(...)),
                                          on_step=..., cancelled=...)

Every rank must call ``ctx.step`` the same number of times (it is a collective). A handler
that never calls it can only be cancelled when it returns. Payloads and results should carry
big data as torch tensors (they cross processes through shared memory; other objects are
pickled by value).

Per job, ranks agree through one tiny all-reduce on a separate gloo *control group* at every
``ctx.step`` and once at the end of the job; each rank contributes a flag (continue, cancel,
error). So a cancel seen by any rank stops all ranks after the same step, and a rank whose
handler raised joins the next agreement with "error" so the others stop too (unless they are
blocked in a model collective with it: then the pool tears the workers down, see
``PoolSpec.abort_grace_s``). An exception never ends the worker loop.

``worker_main`` is the pool's process entry. :class:`InlineExecutor` runs the same factory and
handlers in the current process on every rank of a ``torchrun`` launch (multi-node CLI).
"""
from __future__ import annotations

import dataclasses

import itertools
import logging
import os
import signal
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from multiprocessing.connection import Connection
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch.distributed import ProcessGroup

from wan_animate.distributed.endpoints import pin_to_loopback, rendezvous_store
from wan_animate.distributed.mesh import backend_for, device_for
from wan_animate.distributed.protocol import (Cancel, Done, Failed, Job, PoolSpec, Ready,
                                              Shutdown, Status, StepEvent, WorkerError, resolve)
from wan_animate.errors import Cancelled, ParallelConfigError

log = logging.getLogger("wan_animate.distributed")

_CONTINUE, _CANCEL, _ERROR = 0, 1, 2
EXIT_ORPHANED = 3
"""Exit code of a worker whose parent process went away."""
EXIT_BROKEN = 4
"""Exit code of a worker whose control-group agreement failed (its groups are unusable)."""


@dataclass(frozen=True)
class WorkerEnv:
    """What a state factory and a handler know about their rank.

    Attributes:
        rank / world_size: in the default process group (the pool).
        device: this rank's compute device (``cuda:<i>`` or ``cpu``).
        backend: ``"nccl"`` or ``"gloo"`` (the default group, used by the model).
        control_group: a gloo group used only for cancel / error agreement (None for the
            in-process pool of one, which has no peer to agree with).
    """

    rank: int
    world_size: int
    device: torch.device
    backend: str
    control_group: ProcessGroup | None


class _PeerAborted(Exception):
    """Another rank's handler failed; this rank stops at the agreement point."""

    def __init__(self, ranks: list[int]) -> None:
        super().__init__(f"ranks {ranks} failed")
        self.ranks = ranks


class JobContext:
    """Given to a handler: who am I, plus the step boundary ``step(clip, step, total)``."""

    def __init__(self, env: WorkerEnv, job_id: int, emit: Callable[[StepEvent], None] | None,
                 poll_cancel: Callable[[], bool]) -> None:
        self.env = env
        self.job_id = job_id
        self._emit = emit
        self._poll_cancel = poll_cancel
        self.outcome: Literal["cancelled", "aborted"] | None = None
        self.terminal = False  # the job's last agreement is done
        self.broken = False  # an agreement raised: the control group is unusable

    @property
    def rank(self) -> int:
        return self.env.rank

    @property
    def world_size(self) -> int:
        return self.env.world_size

    @property
    def device(self) -> torch.device:
        return self.env.device

    def _agree(self, flag: int) -> list[int]:
        """All ranks' flags (one all-reduce of ``world_size`` int32 on the control group)."""
        if self.env.world_size == 1:
            return [flag]
        flags = torch.zeros(self.env.world_size, dtype=torch.int32)
        flags[self.env.rank] = flag
        try:
            dist.all_reduce(flags, group=self.env.control_group)
        except Exception:  # timeout or a dead peer: no further agreement is possible
            self.terminal = self.broken = True
            raise
        return flags.tolist()

    def step(self, clip: int, step: int, total: int, clips: int = 1) -> None:
        """Call on every rank after each denoising step (``step`` counts from 1).

        Rank 0 reports :class:`StepEvent`; then all ranks agree. Returns normally to continue;
        raises :class:`~wan_animate.errors.Cancelled` on every rank when any rank saw a cancel,
        and stops every rank when another rank's handler failed.
        """
        if self.terminal:
            raise RuntimeError("JobContext.step() called after the job was cancelled or aborted")
        if self._emit is not None and self.env.rank == 0:
            self._emit(StepEvent(self.job_id, clip, step, total, clips))
        flags = self._agree(_CANCEL if self._poll_cancel() else _CONTINUE)
        if _ERROR in flags:
            self.terminal, self.outcome = True, "aborted"
            raise _PeerAborted([r for r, f in enumerate(flags) if f == _ERROR])
        if _CANCEL in flags:
            self.terminal, self.outcome = True, "cancelled"
            raise Cancelled(f"job {self.job_id} cancelled after clip {clip} step {step}/{total}")

    def cancel_before_step(self) -> bool:
        """On a pool of one (no peer to agree with), a cancel seen before a step ends the job
        there, as the in-process sampler always did; larger pools stop at ``step`` together."""
        if self.env.world_size == 1 and not self.terminal and self._poll_cancel():
            self.terminal, self.outcome = True, "cancelled"
            return True
        return False

    def finish(self, failed: bool) -> list[int]:
        """The job's last agreement (run by the executor, not by handlers)."""
        self.terminal = True
        return self._agree(_ERROR if failed else _CONTINUE)


@dataclass(frozen=True)
class Outcome:
    """How a job ended on one rank."""

    status: Literal["ok", "cancelled", "aborted", "failed"]
    result: Any = None
    traceback: str = ""
    error: str = ""
    fatal: bool = False
    failed_ranks: tuple[int, ...] = ()


def _describe(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


def execute(state: Any, spec: PoolSpec, job: Job, ctx: JobContext,
            on_failure: Callable[[str, str], None] | None = None) -> Outcome:
    """Run one job on this rank, always ending with exactly one agreement per rank.

    ``on_failure(traceback, error)`` is called as soon as the handler raises, before the
    rank joins the final agreement (so the parent learns of it even if that blocks).
    """
    try:
        handler = resolve(spec.handler_path(job.kind))
        result = handler(state, job.payload, ctx)
    except _PeerAborted as e:
        return Outcome("aborted", failed_ranks=tuple(e.ranks))
    except Exception as e:
        if ctx.terminal and isinstance(e, Cancelled) and ctx.outcome == "cancelled":
            return Outcome("cancelled", error=str(e))
        tb, err = traceback.format_exc(), _describe(e)
        log.error("job %d (%s) failed:\n%s", job.job_id, job.kind, tb)
        if on_failure is not None:
            on_failure(tb, err)
        if ctx.terminal:  # raised after the agreed end (e.g. while cleaning up a cancel)
            return Outcome("failed", traceback=tb, error=err, fatal=ctx.broken)
        try:
            ctx.finish(failed=True)
        except Exception as agree_error:  # the control group is unusable: restart the pool
            return Outcome("failed", traceback=tb, error=f"{err}; then {_describe(agree_error)}",
                           fatal=True)
        return Outcome("failed", traceback=tb, error=err)
    if ctx.terminal:  # the handler swallowed Cancelled / a peer abort and returned
        return Outcome(ctx.outcome or "aborted")
    try:
        flags = ctx.finish(failed=False)
    except Exception as e:
        return Outcome("failed", traceback=traceback.format_exc(), error=_describe(e), fatal=True)
    if _ERROR in flags:
        return Outcome("aborted", failed_ranks=tuple(r for r, f in enumerate(flags) if f == _ERROR))
    return Outcome("ok", result=result)


def to_cpu(obj: Any) -> Any:
    """Tensors inside (nested) dicts, lists and tuples moved to CPU (results cross processes)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)) and not hasattr(obj, "_fields"):
        return type(obj)(to_cpu(v) for v in obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.replace(obj, **{f.name: to_cpu(getattr(obj, f.name))
                                           for f in dataclasses.fields(obj) if f.init})
    return obj


# --- process groups -----------------------------------------------------------------------

def _init_groups(rank: int, world: int, device: torch.device, spec: PoolSpec,
                 store: dist.Store | None) -> WorkerEnv:
    backend = backend_for(device.type)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    timeout = timedelta(seconds=spec.collective_timeout_s)
    kwargs: dict[str, Any] = {"device_id": device} if device.type == "cuda" else {}
    if store is None:
        dist.init_process_group(backend, init_method="env://", rank=rank, world_size=world,
                                timeout=timeout, **kwargs)
    else:
        dist.init_process_group(backend, store=store, rank=rank, world_size=world,
                                timeout=timeout, **kwargs)
    control = dist.new_group(backend="gloo", timeout=timeout)
    return WorkerEnv(rank, world, device, backend, control)


def init_pool_rank(rank: int, spec: PoolSpec, port: int) -> WorkerEnv:
    """Rendezvous on ``spec.host:port`` (rank 0 hosts the TCP store) and create the groups;
    every socket on loopback (:mod:`.endpoints`)."""
    device = device_for(spec.device_type, spec.device_index(rank))
    pin_to_loopback()
    try:
        store = rendezvous_store(spec.host, port, spec.world_size, rank,
                                 timedelta(seconds=spec.rendezvous_timeout_s))
    except Exception as e:  # RuntimeError / DistNetworkError / DistStoreError by version
        raise RuntimeError(
            f"rendezvous stalled: rank {rank} could not meet the other {spec.world_size - 1} "
            f"ranks at the TCP store {spec.host}:{port} within {spec.rendezvous_timeout_s:.0f} s "
            f"({_describe(e)})") from e
    return _init_groups(rank, spec.world_size, device, spec, store)


def init_from_env(spec: PoolSpec) -> WorkerEnv:
    """Join a ``torchrun`` launch (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR/PORT``)."""
    try:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local_rank = int(os.environ.get("LOCAL_RANK", rank))
    except KeyError as e:
        raise ParallelConfigError(f"not launched by torchrun: environment variable {e} is not set") from e
    if world != spec.world_size:
        raise ParallelConfigError(f"torchrun started {world} ranks but the spec asks for "
                                  f"{spec.world_size}")
    return _init_groups(rank, world, device_for(spec.device_type, local_rank), spec, None)


# --- the pool worker process --------------------------------------------------------------

def _watch_parent(death: Connection) -> None:
    """Exit at once when the parent process is gone (its end of ``death`` closes)."""

    def watch() -> None:
        try:
            death.recv()
        except (EOFError, OSError):
            log.error("parent process is gone; exiting")
        os._exit(EXIT_ORPHANED)

    threading.Thread(target=watch, name="wan-animate-death-pipe", daemon=True).start()


class _Channel:
    """The worker end of the control pipe while a job runs: polls for Cancel / Shutdown."""

    def __init__(self, conn: Connection, job_id: int) -> None:
        self.conn = conn
        self.job_id = job_id
        self.cancel = False
        self.shutdown = False

    def poll_cancel(self) -> bool:
        while self.conn.poll():
            msg = self.conn.recv()
            if isinstance(msg, Cancel):
                self.cancel |= msg.job_id == self.job_id
            elif isinstance(msg, Shutdown):
                self.cancel = self.shutdown = True
            else:
                log.warning("ignoring %s received while job %d runs", type(msg).__name__, self.job_id)
        return self.cancel


def _run_pool_job(env: WorkerEnv, spec: PoolSpec, state: Any, job: Job, conn: Connection) -> bool:
    """Run one job and send its terminal message; True when a Shutdown arrived meanwhile."""
    channel = _Channel(conn, job.job_id)
    ctx = JobContext(env, job.job_id, conn.send, channel.poll_cancel)

    reported = []

    def report(tb: str, err: str) -> None:  # the terminal message of a failed rank
        conn.send(Failed(env.rank, tb, job.job_id, err))
        reported.append(True)

    outcome = execute(state, spec, job, ctx, report)
    if outcome.fatal:  # the control group failed: this rank cannot agree on anything any more
        log.critical("control-group agreement failed (%s); exiting so the pool restarts",
                     outcome.error)
        if not reported:
            conn.send(Failed(env.rank, outcome.traceback, job.job_id, outcome.error, fatal=True))
        os._exit(EXIT_BROKEN)
    if outcome.status == "failed":
        return channel.shutdown
    result = to_cpu(outcome.result) if env.rank == 0 else None
    try:
        conn.send(Done(job.job_id, env.rank, result, outcome.status))
    except Exception as e:  # e.g. an unpicklable result
        conn.send(Failed(env.rank, traceback.format_exc(), job.job_id,
                         f"cannot send the result back: {_describe(e)}"))
    return channel.shutdown


def worker_main(rank: int, spec: PoolSpec, port: int, conn: Connection, death: Connection) -> None:
    """Entry of a pool worker process: rendezvous, build state once, serve jobs until Shutdown."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to turn into a cancel
    logging.basicConfig(level=spec.log_level,
                        format=f"[rank {rank} pid {os.getpid()}] %(levelname)s %(name)s: %(message)s")
    _watch_parent(death)
    try:
        try:
            conn.send(Status(rank, f"rendezvous at {spec.host}:{port} "
                                   f"({backend_for(spec.device_type)}, {spec.world_size} ranks)"))
            env = init_pool_rank(rank, spec, port)
            conn.send(Status(rank, f"state factory {spec.factory}"))
            state = resolve(spec.factory)(env, spec.config)
            conn.send(Ready(rank, os.getpid(), str(env.device)))
        except Exception as e:
            log.exception("startup failed")
            conn.send(Failed(rank, traceback.format_exc(), None, _describe(e), fatal=True))
            return
        log.info("ready on %s", env.device)
        _serve(env, spec, state, conn)
        del state
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
        log.info("shut down")


def _serve(env: WorkerEnv, spec: PoolSpec, state: Any, conn: Connection) -> None:
    """The worker loop: one job at a time until Shutdown; an exception never ends it."""
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            log.error("control channel closed by the parent; exiting")
            return
        if isinstance(msg, Shutdown):
            return
        if isinstance(msg, Job):
            if _run_pool_job(env, spec, state, msg, conn):
                return
        elif not isinstance(msg, Cancel):  # a Cancel for a finished job is stale: ignore
            log.warning("ignoring unexpected message %r", msg)


# --- torchrun ------------------------------------------------------------------------------

class InlineExecutor:
    """The pool's job interface inside the current process: every rank of a ``torchrun``
    launch, or (:meth:`in_process`) the pool of one that is the one-GPU path.

    Every rank constructs it with the same spec (the factory runs once here) and calls
    ``submit`` with the same jobs. Rank 0 returns the result, other ranks None.
    """

    def __init__(self, spec: PoolSpec, env: WorkerEnv | None = None) -> None:
        self.spec = spec
        self.env = env if env is not None else init_from_env(spec)
        self.state = resolve(spec.factory)(self.env, spec.config)
        self._ids = itertools.count(1)

    @classmethod
    def in_process(cls, spec: PoolSpec, device: torch.device) -> InlineExecutor:
        """A pool of one in this process on ``device``: the same factory and handlers as a
        spawned pool, no process group (nothing to agree with)."""
        if spec.world_size != 1:
            raise ParallelConfigError(f"an in-process executor is a pool of one; the spec asks "
                                      f"for {spec.world_size} ranks")
        return cls(spec, WorkerEnv(0, 1, torch.device(device), "none", None))

    def submit(self, job: Job, on_step: Callable[[StepEvent], None] | None = None,
               cancelled: Callable[[], bool] | None = None) -> Any:
        job_id = next(self._ids)
        job = Job(job.kind, job.payload, job_id)
        ctx = JobContext(self.env, job_id, on_step, cancelled or (lambda: False))
        outcome = execute(self.state, self.spec, job, ctx)
        if outcome.status == "ok":
            return outcome.result if self.env.rank == 0 else None
        if outcome.status == "cancelled":
            raise Cancelled(outcome.error or f"job {job_id} ({job.kind}) cancelled")
        if outcome.status == "aborted":
            raise WorkerError(f"job {job_id} ({job.kind}) stopped: rank(s) "
                              f"{list(outcome.failed_ranks)} failed (see their log)",
                              rank=outcome.failed_ranks[0] if outcome.failed_ranks else None)
        raise WorkerError(f"rank {self.env.rank} failed in job {job_id} ({job.kind}): "
                          f"{outcome.error}\n{outcome.traceback}", rank=self.env.rank,
                          worker_traceback=outcome.traceback, error=outcome.error)

    def close(self) -> None:
        self.state = None
        if self.env.control_group is not None and dist.is_initialized():
            dist.destroy_process_group()
