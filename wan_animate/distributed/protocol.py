"""The whole worker protocol: a pool spec, the messages on the control channel, the errors.

The control channel is one duplex ``multiprocessing`` pipe per worker (never the NCCL group),
so an idle pool waits on pipes and no collective can time out. Every message is a frozen
dataclass. Parent -> worker: :class:`Job`, :class:`Cancel`, :class:`Shutdown`.
Worker -> parent: :class:`Status` (startup phases), :class:`Ready`, :class:`StepEvent` (rank 0
only), and exactly one terminal message per job and rank, :class:`Done` or :class:`Failed`.

A job's handler and the pool's state factory are named by ``"package.module:function"`` strings
so that spawned processes import them (nothing is pickled but plain data).
"""
from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from wan_animate.distributed.endpoints import check_loopback
from wan_animate.errors import WanAnimateError

DeviceType = Literal["cuda", "cpu"]


def resolve(path: str) -> Any:
    """Import ``"package.module:qualname"`` and return the object it names."""
    module_name, sep, qualname = path.partition(":")
    if not sep or not module_name or not qualname:
        raise ValueError(f"expected 'package.module:function', got {path!r}")
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


@dataclass(frozen=True)
class PoolSpec:
    """What a pool runs; two equal specs can share one pool (``WorkerPool.get``).

    Attributes:
        factory: ``"module:function"``; ``function(env: WorkerEnv, config) -> state`` runs once
            per worker at startup (load the model shard) and its result is kept for every job.
        handlers: job kind -> ``"module:function"``; ``function(state, payload, ctx: JobContext)
            -> result`` runs on every rank; rank 0's result is returned to the caller.
        config: passed to the factory; picklable and comparable with ``==`` (a frozen dataclass).
        world_size: ranks (processes), one per device.
        device_type: ``"cuda"`` (NCCL) or ``"cpu"`` (gloo).
        device_ids: CUDA device index of each rank; default ``0..world_size-1``.
        start_timeout_s: the READY handshake (process start, rendezvous, state factory).
        rendezvous_timeout_s: all ranks joining the TCP store on ``host``.
        collective_timeout_s: the process groups' timeout (a stalled collective raises).
        abort_grace_s: after one rank fails, how long the others have to return before the
            pool is torn down (they may be blocked in a collective with the failed rank).
        cancel_timeout_s: after an interrupt of the caller, how long to wait for the ranks to
            agree and return before the pool is torn down.
        shutdown_timeout_s: how long ``close()`` waits for a clean exit before terminating.
        stopped_grace_s: a rank whose process stays stopped (SIGSTOP, Ctrl-Z, a debugger) this
            long is reported by rank and the pool is shut down (the others would wait for it
            until ``collective_timeout_s``).
        host: rendezvous address (loopback for a single-node pool).
        import_main: re-import the parent's ``__main__`` script in each worker (spawn's default).
            False keeps e.g. ComfyUI's ``main.py`` from running again in every worker; the
            factory, handlers and config must then live in importable modules.
        log_level: worker logging level.
    """

    factory: str
    handlers: Mapping[str, str] = field(default_factory=dict)
    config: Any = None
    world_size: int = 1
    device_type: DeviceType = "cuda"
    device_ids: tuple[int, ...] | None = None
    start_timeout_s: float = 1800.0
    rendezvous_timeout_s: float = 120.0
    collective_timeout_s: float = 900.0
    abort_grace_s: float = 15.0
    cancel_timeout_s: float = 600.0
    shutdown_timeout_s: float = 15.0
    stopped_grace_s: float = 20.0
    host: str = "127.0.0.1"
    import_main: bool = False
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        # A plain sorted tuple: hashable, comparable and picklable.
        object.__setattr__(self, "handlers", tuple(sorted(dict(self.handlers).items())))
        for path in (self.factory, *(p for _, p in self.handlers)):
            if ":" not in path:
                raise ValueError(f"PoolSpec: expected 'package.module:function', got {path!r}")
        if self.world_size < 1:
            raise ValueError(f"PoolSpec.world_size must be >= 1, got {self.world_size}")
        check_loopback(self.host)
        if self.device_type not in ("cuda", "cpu"):
            raise ValueError(f"PoolSpec.device_type must be 'cuda' or 'cpu', got {self.device_type!r}")
        if self.device_ids is not None:
            ids = tuple(self.device_ids)
            if len(ids) != self.world_size or len(set(ids)) != len(ids):
                raise ValueError(f"PoolSpec.device_ids {ids} must name {self.world_size} distinct "
                                 f"devices")
            object.__setattr__(self, "device_ids", ids)
        for name in ("start_timeout_s", "rendezvous_timeout_s", "collective_timeout_s",
                     "abort_grace_s", "cancel_timeout_s", "shutdown_timeout_s", "stopped_grace_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"PoolSpec.{name} must be > 0, got {getattr(self, name)}")

    def handler_path(self, kind: str) -> str:
        """The ``"module:function"`` of a job kind; ``KeyError`` naming the known kinds."""
        for k, path in self.handlers:
            if k == kind:
                return path
        raise KeyError(f"no handler for job kind {kind!r}; this pool knows "
                       f"{[k for k, _ in self.handlers]}")

    def device_index(self, rank: int) -> int:
        return self.device_ids[rank] if self.device_ids is not None else rank


# --- parent -> worker ---------------------------------------------------------------------

@dataclass(frozen=True)
class Job:
    """One unit of work run by every rank: ``handlers[kind](state, payload, ctx)``.

    ``payload`` is plain data (CPU tensors, dataclasses); the pool stamps ``job_id``.
    """

    kind: str
    payload: Any = None
    job_id: int = 0


@dataclass(frozen=True)
class Cancel:
    """Stop job ``job_id`` at its next step boundary (all ranks agree first)."""

    job_id: int


@dataclass(frozen=True)
class Shutdown:
    """Leave the worker loop, destroy the process groups and exit."""


# --- worker -> parent ---------------------------------------------------------------------

@dataclass(frozen=True)
class Status:
    """A startup phase a worker entered (named in errors when startup stalls)."""

    rank: int
    phase: str


@dataclass(frozen=True)
class Ready:
    """The worker's state is built; it waits for jobs."""

    rank: int
    pid: int
    device: str


@dataclass(frozen=True)
class StepEvent:
    """Progress of a job, sent by rank 0 after each step: ``step`` of ``total`` in clip ``clip``
    (0-based) of ``clips``; ``step`` counts from 1."""

    job_id: int
    clip: int
    step: int
    total: int
    clips: int = 1


@dataclass(frozen=True)
class Done:
    """A rank finished a job. ``status``: ``"ok"`` (``result`` is set on rank 0 only),
    ``"cancelled"`` (all ranks agreed to cancel) or ``"aborted"`` (another rank failed)."""

    job_id: int
    rank: int
    result: Any = None
    status: Literal["ok", "cancelled", "aborted"] = "ok"


@dataclass(frozen=True)
class Failed:
    """A rank raised. ``job_id`` is None for a startup failure. ``fatal``: the rank's process
    groups may be unusable (a control collective failed), so the pool must be restarted."""

    rank: int
    traceback: str
    job_id: int | None = None
    error: str = ""
    fatal: bool = False


# --- errors raised to the caller ----------------------------------------------------------

class WorkerError(WanAnimateError):
    """A rank of the pool failed; the message carries its traceback.

    Attributes: ``rank``, ``worker_traceback`` (may be empty), ``error`` ("Type: message").
    """

    def __init__(self, message: str, rank: int | None = None, worker_traceback: str = "",
                 error: str = "") -> None:
        super().__init__(message)
        self.rank = rank
        self.worker_traceback = worker_traceback
        self.error = error


class WorkerDied(WorkerError):
    """A worker process exited unexpectedly (killed, OOM, segfault); the pool was shut down.

    Attributes: ``rank``, ``exitcode`` (negative: killed by that signal number).
    """

    def __init__(self, message: str, rank: int, exitcode: int | None) -> None:
        super().__init__(message, rank=rank)
        self.exitcode = exitcode


class PoolClosed(WanAnimateError):
    """``submit`` on a pool after ``close()``."""
