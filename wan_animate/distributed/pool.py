"""The parent side: a persistent pool of worker processes, one per device.

Lifecycle::

    pool = WorkerPool.get(spec)      # spawn + READY handshake, or reuse while spec is unchanged
    result = pool.submit(Job("generate", payload), on_step=bar.update, cancelled=lambda: flag)
    WorkerPool.release()             # or pool.close(): idempotent, no child process left

- Processes come from the ``spawn`` context; rank 0 hosts the rendezvous TCP store on a free
  loopback port; NCCL on CUDA, gloo on CPU (see :mod:`.worker`); every socket of the pool is
  on loopback (:mod:`.endpoints`).
- The control channel is one duplex pipe per worker; an idle pool blocks on pipes, so nothing
  can time out while idle. Each worker also holds a *death pipe* whose other end only the
  parent holds: a worker exits by itself when the parent dies.
- A monitor thread waits on every process sentinel: the first rank that dies is recorded with
  its exit code and the other ranks are terminated. A running ``submit`` raises
  :class:`~.protocol.WorkerDied` at once; the next ``submit`` (or ``WorkerPool.get``) starts a
  fresh set of workers (state factory again).
- ``submit`` raises :class:`~.protocol.WorkerError` with the failing rank's traceback when a
  handler raises (the pool stays up when the other ranks return within
  ``spec.abort_grace_s``), :class:`~wan_animate.errors.Cancelled` when ``cancelled()`` turned
  True (all ranks stop after the same step), and re-raises an exception of ``on_step`` /
  ``cancelled`` or a ``KeyboardInterrupt`` after cancelling the job.
"""
from __future__ import annotations

import atexit
import itertools
import logging
import signal
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection, wait
from typing import Any, ClassVar

from wan_animate.distributed.endpoints import free_port
from wan_animate.distributed.liveness import StoppedRanks, exit_text, process_state
from wan_animate.distributed.protocol import (Cancel, Done, Failed, Job, PoolClosed, PoolSpec,
                                              Ready, Shutdown, Status, StepEvent, WorkerDied,
                                              WorkerError)
from wan_animate.distributed.worker import worker_main
from wan_animate.errors import Cancelled, ParallelConfigError

log = logging.getLogger("wan_animate.distributed")

_POLL_S = 0.05  # how often a waiting submit checks ``cancelled()`` and its deadlines
_START_ATTEMPTS = 3  # a free port can be taken between choosing it and binding it
_STATE_POLL_S = 1.0  # how often the monitor looks for stopped ranks
_CANCEL_NOTE_S = 10.0  # how often a waiting cancel says whom it waits for


@contextmanager
def _main_hidden(hide: bool) -> Iterator[None]:
    """Keep spawn from re-running the parent's ``__main__`` script in the child."""
    main = sys.modules.get("__main__")
    if not hide or main is None:
        yield
        return
    saved = {k: getattr(main, k) for k in ("__spec__", "__file__") if hasattr(main, k)}
    main.__spec__ = None
    if "__file__" in saved:
        del main.__file__
    try:
        yield
    finally:
        for k, v in saved.items():
            setattr(main, k, v)


@dataclass
class _JobState:
    job: Job
    pending: set[int]
    done: dict[int, Done] = field(default_factory=dict)
    failed: dict[int, Failed] = field(default_factory=dict)
    last: StepEvent | None = None
    cancel_sent: bool = False
    interrupt: BaseException | None = None
    deadline: float | None = None
    deadline_why: str = ""
    noted: float = 0.0  # when the last "still waiting" note of a cancel was logged

    def progress(self) -> str:
        if self.last is None:
            return "no step finished yet"
        return f"last progress clip {self.last.clip} step {self.last.step}/{self.last.total}"


class _Workers:
    """One started set of worker processes (a pool restarts by replacing it)."""

    def __init__(self, spec: PoolSpec) -> None:
        import torch.multiprocessing as tmp  # registers shared-memory pickling of tensors

        self.spec = spec
        ctx = tmp.get_context("spawn")
        self.port = free_port(spec.host)
        self.conns: list[Connection] = []
        self._deaths: list[Connection] = []
        self.procs = []
        self.failure: WorkerDied | None = None
        self.died = threading.Event()
        self.closing = False
        self._shut = False
        self._lock = threading.Lock()
        self._stop_r, self._stop_w = ctx.Pipe(duplex=False)
        self._monitor: threading.Thread | None = None
        try:
            for rank in range(spec.world_size):
                parent_end, child_end = ctx.Pipe(duplex=True)
                death_r, death_w = ctx.Pipe(duplex=False)
                proc = ctx.Process(target=worker_main, name=f"wan-animate-rank{rank}",
                                   args=(rank, spec, self.port, child_end, death_r))
                with _main_hidden(not spec.import_main):
                    proc.start()
                child_end.close()
                death_r.close()
                self.conns.append(parent_end)
                self._deaths.append(death_w)
                self.procs.append(proc)
            self.ready = self._handshake()
        except BaseException:
            self.shutdown(graceful=False)
            raise
        self._monitor = threading.Thread(target=self._watch, name="wan-animate-pool-monitor",
                                         daemon=True)
        self._monitor.start()

    @property
    def pids(self) -> tuple[int, ...]:
        return tuple(p.pid for p in self.procs)

    def healthy(self) -> bool:
        return not self._shut and self.failure is None and all(p.is_alive() for p in self.procs)

    def _handshake(self) -> list[Ready]:
        spec = self.spec
        deadline = time.monotonic() + spec.start_timeout_s
        phase = {r: "process start (importing torch)" for r in range(spec.world_size)}
        ready: dict[int, Ready] = {}
        by_conn = {c: r for r, c in enumerate(self.conns)}
        by_sentinel = {p.sentinel: r for r, p in enumerate(self.procs)}
        stopped = StoppedRanks(self.procs, spec.stopped_grace_s)
        while len(ready) < spec.world_size:
            hung = stopped.check()
            if hung is not None:
                raise WorkerDied(f"{hung} during startup ({phase[hung.rank]})", hung.rank, None)
            left = deadline - time.monotonic()
            if left <= 0:
                stalled = "; ".join(f"rank {r}: {phase[r]}" for r in sorted(phase) if r not in ready)
                raise WorkerError(f"pool startup stalled: {spec.world_size - len(ready)} of "
                                  f"{spec.world_size} ranks not ready after "
                                  f"{spec.start_timeout_s:.0f} s (stuck in: {stalled})")
            for obj in wait([c for c, r in by_conn.items() if r not in ready] + list(by_sentinel),
                            timeout=min(left, _STATE_POLL_S)):
                if obj in by_sentinel:
                    rank = by_sentinel[obj]
                    self.procs[rank].join(1)
                    # A Failed message may still be in the pipe; prefer its traceback.
                    if self.conns[rank] in by_conn and self.conns[rank].poll():
                        continue
                    code = self.procs[rank].exitcode
                    raise WorkerDied(f"rank {rank} (pid {self.procs[rank].pid}) died during "
                                     f"startup ({phase[rank]}) with exit code {exit_text(code)}",
                                     rank, code)
                rank = by_conn[obj]
                try:
                    msg = obj.recv()
                except (EOFError, OSError):  # closed or reset: its sentinel tells the rest
                    by_conn.pop(obj)
                    continue
                if isinstance(msg, Status):
                    phase[rank] = msg.phase
                elif isinstance(msg, Ready):
                    ready[rank] = msg
                elif isinstance(msg, Failed):
                    raise WorkerError(f"rank {rank} failed during startup ({phase[rank]}): "
                                      f"{msg.error}\n--- traceback of rank {rank} ---\n"
                                      f"{msg.traceback}", rank, msg.traceback, msg.error)
        log.info("pool of %d ready (pids %s)", spec.world_size, list(self.pids))
        return [ready[r] for r in range(spec.world_size)]

    def _watch(self) -> None:
        """Monitor thread: record the first dead or stopped rank, then stop the others."""
        by_sentinel = {p.sentinel: r for r, p in enumerate(self.procs)}
        stopped = StoppedRanks(self.procs, self.spec.stopped_grace_s)
        while True:
            ready = wait([*by_sentinel, self._stop_r], timeout=_STATE_POLL_S)
            if self.closing or self._stop_r in ready:
                return
            if ready:
                rank = min(by_sentinel[s] for s in ready if s in by_sentinel)
                proc = self.procs[rank]
                proc.join(1)
                code = proc.exitcode
                hint = " (killed: out of memory?)" if code == -signal.SIGKILL else ""
                self._fail(WorkerDied(f"rank {rank} (pid {proc.pid}) died with exit code "
                                      f"{exit_text(code)}{hint}", rank, code))
                return
            hung = stopped.check()
            if hung is not None:
                self._fail(hung)
                return

    def _fail(self, failure: WorkerDied) -> None:
        self.failure = WorkerDied(f"{failure}; the pool was shut down and the next job starts a "
                                  f"fresh one", failure.rank, failure.exitcode)
        log.error("%s", self.failure)
        self.died.set()
        self._stop_processes(grace_s=2.0)

    def _stop_processes(self, grace_s: float) -> None:
        for p in self.procs:
            if p.is_alive():
                p.terminate()
        end = time.monotonic() + grace_s
        for p in self.procs:
            p.join(max(0.0, end - time.monotonic()))
        for p in self.procs:
            if p.is_alive():
                log.warning("rank process %d did not terminate; killing it", p.pid)
                p.kill()
                p.join(5)

    def send_all(self, msg: object) -> None:
        for conn in self.conns:
            conn.send(msg)

    def shutdown(self, graceful: bool = True) -> None:
        """Idempotent: Shutdown -> join(timeout) -> terminate -> kill; closes every pipe."""
        with self._lock:
            if self._shut:
                return
            self._shut = self.closing = True
        self._stop_w.close()  # wakes the monitor, which sees ``closing``
        if graceful:
            for conn, proc in zip(self.conns, self.procs):
                if proc.is_alive():
                    try:
                        conn.send(Shutdown())
                    except OSError as e:  # the worker is already gone
                        log.debug("shutdown message not delivered to pid %d: %s", proc.pid, e)
            end = time.monotonic() + self.spec.shutdown_timeout_s
            for p in self.procs:
                p.join(max(0.0, end - time.monotonic()))
        self._stop_processes(grace_s=3.0)
        if self._monitor is not None and self._monitor is not threading.current_thread():
            self._monitor.join(5)
        for conn in (*self.conns, *self._deaths, self._stop_r):
            conn.close()
        for p in self.procs:
            if not p.is_alive():
                p.close()

    # --- one job -----------------------------------------------------------------------------

    def run(self, job: Job, on_step: Callable[[StepEvent], None] | None,
            cancelled: Callable[[], bool] | None) -> Any:
        st = _JobState(job, pending=set(range(self.spec.world_size)))
        try:
            self.send_all(job)
        except OSError:
            self._raise_death(st)
        while st.pending:
            try:
                self._pump(st, on_step, cancelled)
            except KeyboardInterrupt as e:
                if st.interrupt is not None:  # a second Ctrl-C: stop waiting
                    self.shutdown(graceful=False)
                    raise
                self._interrupt(st, e)
        return self._result(st)

    def _interrupt(self, st: _JobState, e: BaseException) -> None:
        log.warning("job %d interrupted (%s); cancelling it after the current step (Ctrl-C "
                    "again stops the pool at once)", st.job.job_id, type(e).__name__)
        st.interrupt = e
        self._cancel(st)

    def _note_cancel_wait(self, st: _JobState) -> None:
        """While a cancel waits for the ranks, say every ``_CANCEL_NOTE_S`` whom it waits for."""
        now = time.monotonic()
        if now - st.noted < _CANCEL_NOTE_S:
            return
        st.noted = now
        stopped = [r for r in sorted(st.pending) if process_state(self.procs[r].pid) in ("T", "t")]
        log.warning("cancelling job %d: still waiting for ranks %s to finish their step (%s%s); "
                    "Ctrl-C again stops the pool at once", st.job.job_id, sorted(st.pending),
                    st.progress(), f"; stopped: ranks {stopped}" if stopped else "")

    def _cancel(self, st: _JobState) -> None:
        if st.cancel_sent:
            return
        st.cancel_sent = True
        st.noted = time.monotonic()
        if st.deadline is None:
            st.deadline = time.monotonic() + self.spec.cancel_timeout_s
            st.deadline_why = (f"cancel: not every rank reached a step boundary within "
                               f"{self.spec.cancel_timeout_s:.0f} s")
        try:
            self.send_all(Cancel(st.job.job_id))
        except OSError:
            self._raise_death(st)

    def _pump(self, st: _JobState, on_step: Callable[[StepEvent], None] | None,
              cancelled: Callable[[], bool] | None) -> None:
        """Wait up to ``_POLL_S`` and handle what arrived, deaths and deadlines."""
        sentinels = [p.sentinel for p in self.procs]
        try:
            ready = wait([self.conns[r] for r in st.pending] + sentinels, timeout=_POLL_S)
        except (OSError, ValueError):  # pipes closed under us by close() in another thread
            self._raise_death(st)
        ready.sort(key=lambda obj: obj in sentinels)  # read a dying rank's last message first
        for obj in ready:
            if obj in sentinels:
                self._raise_death(st)
            rank = self.conns.index(obj)
            try:
                msg = obj.recv()
            except (EOFError, OSError):  # the rank's end closed, or reset as the monitor killed it
                self._raise_death(st)
            if getattr(msg, "job_id", st.job.job_id) != st.job.job_id:
                log.debug("dropping stale %r", msg)
            elif isinstance(msg, StepEvent):
                st.last = msg
                if on_step is not None and st.interrupt is None:
                    try:
                        on_step(msg)
                    except Exception as e:  # e.g. ComfyUI's interrupt: cancel, then re-raise
                        self._interrupt(st, e)
            elif isinstance(msg, (Done, Failed)):
                st.pending.discard(rank)
                if isinstance(msg, Done):
                    st.done[rank] = msg
                else:
                    st.failed[rank] = msg
                    if st.deadline is None or st.deadline_why.startswith("cancel"):
                        st.deadline = time.monotonic() + self.spec.abort_grace_s
                        st.deadline_why = (f"ranks {{pending}} did not stop within "
                                           f"{self.spec.abort_grace_s:.0f} s after rank {rank} "
                                           f"failed (blocked in a collective with it)")
            else:
                log.warning("unexpected message during job %d: %r", st.job.job_id, msg)
        if cancelled is not None and st.interrupt is None and not st.cancel_sent and st.pending:
            try:
                stop = cancelled()
            except Exception as e:
                self._interrupt(st, e)
            else:
                if stop:
                    self._cancel(st)
        if st.cancel_sent and st.pending:
            self._note_cancel_wait(st)
        if st.pending and st.deadline is not None and time.monotonic() > st.deadline:
            why = st.deadline_why.replace("{pending}", str(sorted(st.pending)))
            self.shutdown(graceful=False)
            self._raise_outcome(st, f"{why}; the pool was shut down and the next job starts "
                                    f"a fresh one")

    def _raise_death(self, st: _JobState) -> None:
        if self.closing:
            raise PoolClosed(f"the pool was closed while job {st.job.job_id} ({st.job.kind}) ran")
        if not self.died.wait(10.0):  # the monitor records the first dead rank
            raise WorkerError(f"a worker's control channel closed during job {st.job.job_id} "
                              f"but no process exit was seen within 10 s")
        assert self.failure is not None
        raise WorkerDied(f"{self.failure} (job {st.job.job_id} '{st.job.kind}', "
                         f"{st.progress()})", self.failure.rank, self.failure.exitcode)

    def _raise_outcome(self, st: _JobState, note: str = "") -> None:
        if st.interrupt is not None:
            raise st.interrupt
        if st.failed:
            rank = min(st.failed)
            f = st.failed[rank]
            others = sorted(set(st.failed) - {rank})
            also = f" (ranks {others} failed too)" if others else ""
            raise WorkerError(f"rank {rank} failed in job {st.job.job_id} ({st.job.kind}): "
                              f"{f.error}{also}{'; ' + note if note else ''}\n"
                              f"--- traceback of rank {rank} ---\n{f.traceback}",
                              rank, f.traceback, f.error)
        if st.cancel_sent or any(d.status == "cancelled" for d in st.done.values()):
            raise Cancelled(f"job {st.job.job_id} ({st.job.kind}) cancelled, {st.progress()}"
                            f"{'; ' + note if note else ''}")
        raise WorkerError(f"job {st.job.job_id} ({st.job.kind}) ended without a result "
                          f"({ {r: d.status for r, d in st.done.items()} }){note}")

    def _result(self, st: _JobState) -> Any:
        if (st.interrupt is None and not st.failed
                and all(d.status == "ok" for d in st.done.values())):
            return st.done[0].result
        self._raise_outcome(st)


_live_pools: weakref.WeakSet[WorkerPool] = weakref.WeakSet()
_atexit_registered = False


def _close_live_pools() -> None:
    for pool in list(_live_pools):
        pool.close()


class WorkerPool:
    """A persistent pool of ``spec.world_size`` worker processes (see the module docstring).

    Use :meth:`get` to share one pool per process while the spec is unchanged.
    """

    _current: ClassVar[WorkerPool | None] = None
    _registry_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, spec: PoolSpec) -> None:
        self.spec = spec
        self.starts = 0  # how many times workers were started (state factory runs)
        self._workers: _Workers | None = None
        self._finalizer: weakref.finalize | None = None
        self._closed = False
        self._lock = threading.RLock()  # one job at a time; start/restart
        self._ids = itertools.count(1)

    # --- registry ----------------------------------------------------------------------------

    @classmethod
    def get(cls, spec: PoolSpec) -> WorkerPool:
        """The process-wide pool for ``spec``: reused while the spec is equal (restarted if its
        workers died); a different spec closes the previous pool first."""
        with cls._registry_lock:
            pool = cls._current
            if pool is None or pool.closed or pool.spec != spec:
                if pool is not None:
                    pool.close()
                pool = cls._current = cls(spec)
            pool.start()
            return pool

    @classmethod
    def release(cls) -> None:
        """Close the process-wide pool, if any (e.g. an unload node)."""
        with cls._registry_lock:
            pool, cls._current = cls._current, None
        if pool is not None:
            pool.close()

    # --- state -------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def alive(self) -> bool:
        """Workers are started and none has died."""
        w = self._workers
        return w is not None and w.healthy()

    @property
    def pids(self) -> tuple[int, ...]:
        """Process ids of the current workers, by rank (empty when not started)."""
        w = self._workers
        return w.pids if w is not None else ()

    def _check_devices(self) -> None:
        if self.spec.device_type != "cuda":
            return
        import torch

        need = max(self.spec.device_index(r) for r in range(self.spec.world_size)) + 1
        have = torch.cuda.device_count()
        if have < need:
            raise ParallelConfigError(f"the pool needs CUDA devices up to index {need - 1} "
                                      f"({self.spec.world_size} ranks) but {have} are visible")

    def start(self) -> None:
        """Start the workers unless they are running and healthy (restart after a death)."""
        global _atexit_registered
        with self._lock:
            if self._closed:
                raise PoolClosed("this WorkerPool was closed; use WorkerPool.get(spec) for a new one")
            if self._workers is not None and self._workers.healthy():
                return
            self._stop_workers()
            self._check_devices()
            if not _atexit_registered:  # after multiprocessing's own exit hook: runs before it
                atexit.register(_close_live_pools)
                _atexit_registered = True
            for attempt in range(1, _START_ATTEMPTS + 1):
                try:
                    workers = _Workers(self.spec)
                    break
                except WorkerError as e:
                    if attempt == _START_ATTEMPTS or "address already in use" not in str(e).lower():
                        raise
                    log.warning("rendezvous port taken; retrying (%s)", e.error)
            self._workers = workers
            self._finalizer = weakref.finalize(self, workers.shutdown)
            _live_pools.add(self)
            self.starts += 1

    def _stop_workers(self, graceful: bool = True) -> None:
        workers, self._workers = self._workers, None
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if workers is not None:
            workers.shutdown(graceful=graceful and workers.healthy())

    # --- jobs --------------------------------------------------------------------------------

    def submit(self, job: Job, on_step: Callable[[StepEvent], None] | None = None,
               cancelled: Callable[[], bool] | None = None) -> Any:
        """Run ``job`` on every rank and return rank 0's result.

        Args:
            job: ``Job(kind, payload)``; ``kind`` must be in ``spec.handlers``.
            on_step: called in this thread with each :class:`StepEvent` of rank 0.
            cancelled: polled about every 50 ms; True cancels the job at its next step.

        Raises:
            Cancelled: the job was cancelled (the pool stays usable).
            WorkerError: a rank raised; carries its rank and traceback.
            WorkerDied: a rank's process died; the next submit starts fresh workers.
            PoolClosed: the pool was closed.
        """
        try:  # unknown kinds fail here, before any rank runs
            self.spec.handler_path(job.kind)
        except KeyError as e:
            raise ValueError(e.args[0]) from None
        with self._lock:
            self.start()
            workers = self._workers
            assert workers is not None
            job = replace(job, job_id=next(self._ids))
            try:
                return workers.run(job, on_step, cancelled)
            finally:
                if not workers.healthy():
                    self._stop_workers(graceful=False)

    def close(self) -> None:
        """Shut the workers down (idempotent); no child process remains afterwards."""
        self._closed = True
        workers = self._workers
        if workers is not None:  # unblocks a submit running in another thread
            workers.shutdown(graceful=workers.healthy())
        with self._lock:
            self._stop_workers()
        _live_pools.discard(self)
        if WorkerPool._current is self:
            WorkerPool._current = None

    def __enter__(self) -> WorkerPool:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
