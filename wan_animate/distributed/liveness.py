"""What the parent can tell of its worker processes without asking them: exit codes and
stopped (not dead) processes."""
from __future__ import annotations

import signal
import time
from collections.abc import Sequence
from multiprocessing.process import BaseProcess

from wan_animate.distributed.protocol import WorkerDied
from wan_animate.distributed.worker import EXIT_BROKEN, EXIT_ORPHANED


def exit_text(code: int | None) -> str:
    """``-9`` -> ``"-9 (SIGKILL)"``; names the orphan/broken exit codes of workers."""
    if code is None:
        return "unknown"
    if code < 0:
        try:
            return f"{code} ({signal.Signals(-code).name})"
        except ValueError:
            return str(code)
    names = {EXIT_ORPHANED: "parent gone", EXIT_BROKEN: "control group failed"}
    return f"{code} ({names[code]})" if code in names else str(code)


def process_state(pid: int) -> str | None:
    """The kernel's one-letter state of ``pid`` (``R``, ``S``, ``T`` = stopped, ...), or None
    where ``/proc`` does not tell."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[0]  # the name in (...) may hold spaces


class StoppedRanks:
    """Ranks whose process stays stopped (SIGSTOP, Ctrl-Z, a debugger): alive, so no sentinel
    fires, but every other rank waits for them in the next collective."""

    def __init__(self, procs: Sequence[BaseProcess], grace_s: float) -> None:
        self.procs = procs
        self.grace_s = grace_s
        self.since: dict[int, float] = {}

    def check(self) -> WorkerDied | None:
        """The first rank stopped for ``grace_s`` or longer, as an error naming it; else None."""
        now = time.monotonic()
        for rank, proc in enumerate(self.procs):
            if process_state(proc.pid) in ("T", "t"):
                first = self.since.setdefault(rank, now)
                if now - first >= self.grace_s:
                    return WorkerDied(f"rank {rank} (pid {proc.pid}) has been stopped for "
                                      f"{now - first:.0f} s (SIGSTOP, Ctrl-Z or a debugger; the "
                                      f"other ranks wait for it in every collective)", rank, None)
            else:
                self.since.pop(rank, None)
        return None
