"""Where results go: destinations checked before the work, files written so nothing is lost.

Every command that writes a result uses this module:

- :func:`check_file_destination` / :func:`check_folder_destination` run *before* any model
  loads or any frame is processed: a destination that is a folder where a file is expected
  (or the reverse), that cannot be created, is read-only, or sits on a full disk is refused with
  an :class:`~wan_animate.errors.InputError` naming the flag, the path and the fix.
- :func:`write_file_set` puts a set of files into a folder that may already hold other files:
  the files are first written in a private staging folder inside it, then each is moved over
  its name (``os.replace``). Files this module did not write are never touched; files it wrote
  in an earlier run, that the new set lacks (say ``src_bg.mp4`` of a replace run before an
  animate run) and that are unchanged since (size and mtime, as recorded in the folder's
  :data:`RECORD` file) are removed. A run that fails
  or is killed before the moves leaves the earlier result as it was.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from wan_animate.errors import InputError

RECORD = ".wan_animate_outputs.json"
"""The file, inside an output folder, that lists the files this pack wrote there."""
STAGING_PREFIX = ".wan-animate-staging-"
_PROBE_BYTES = 1 << 20     # a write of this size must succeed in the destination's folder
_MiB = 1 << 20


def _nearest_existing(path: Path, flag: str) -> Path:
    """The deepest existing ancestor folder of ``path`` (``path`` itself when it exists)."""
    p = path
    while not p.exists():
        if p.parent == p:
            break
        p = p.parent
    if not p.is_dir():
        raise InputError(f"{flag} {path}: {p} is a file, so no folder can be created under it; "
                         f"choose a path under an existing folder")
    return p


def _probe_write(folder: Path, flag: str, path: Path) -> None:
    """Create, fill (``_PROBE_BYTES``), sync and delete a file in ``folder``."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".wan-animate-probe-", dir=folder)
    except OSError as e:
        raise InputError(_write_error(flag, path, folder, e)) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(b"\0" * _PROBE_BYTES)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise InputError(_write_error(flag, path, folder, e)) from None
    finally:
        Path(probe).unlink(missing_ok=True)


def _write_error(flag: str, path: Path, folder: Path, e: OSError) -> str:
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return (f"{flag} {path}: the disk holding {folder} is full ({e.strerror}); free some "
                f"space or choose a destination on another disk")
    if e.errno == errno.EROFS:
        return (f"{flag} {path}: {folder} is on a read-only file system; choose a writable "
                f"destination")
    if e.errno in (errno.EACCES, errno.EPERM):
        return (f"{flag} {path}: no permission to write in {folder}; choose a folder you can "
                f"write to (or fix its permissions)")
    return f"{flag} {path}: cannot write in {folder} ({e.strerror or e}); choose another destination"


def _check_free(folder: Path, flag: str, path: Path, need_bytes: int) -> None:
    free = shutil.disk_usage(folder).free
    if free < need_bytes:
        raise InputError(f"{flag} {path}: the disk holding {folder} has {free / _MiB:.0f} MiB free "
                         f"but the output needs about {need_bytes / _MiB:.0f} MiB; free some space "
                         f"or choose a destination on another disk")


def check_file_destination(path: str | Path, flag: str, need_bytes: int = 0) -> Path:
    """Refuse a file destination that cannot take the result, before the work starts.

    Args:
        path: the file to be written (need not exist; missing parent folders are allowed).
        flag: how the user gave it (``--save_file``), for the message.
        need_bytes: about how many bytes the result takes (0: only the 1 MiB write probe).
    Returns:
        ``path`` as a :class:`Path`.
    Raises:
        InputError: ``path`` is a folder, its parent is a file, the folder is not writable or
        read-only, or the disk is full / has less than ``need_bytes`` free.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{flag} {path} is an existing folder; give a file name such as "
                         f"{path / 'output.mp4'}")
    if path.exists() and not path.is_file():
        raise InputError(f"{flag} {path} exists and is not a regular file; choose another name")
    folder = _nearest_existing(path.parent, flag)
    _probe_write(folder, flag, path)
    _check_free(folder, flag, path, need_bytes)
    return path


def check_folder_destination(path: str | Path, flag: str, need_bytes: int = 0) -> Path:
    """Like :func:`check_file_destination` for an output folder (existing or to be created)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{flag} {path} is a file; give a folder (existing or new) for the outputs")
    folder = _nearest_existing(path, flag)
    _probe_write(folder, flag, path)
    _check_free(folder, flag, path, need_bytes)
    return path


def _signature(path: Path) -> list[int] | None:
    """(size, mtime in ns) of a file, or None when it is not a regular file."""
    try:
        st = path.stat()
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns] if path.is_file() else None


def _recorded(folder: Path) -> set[str]:
    """Names this module wrote in ``folder`` last time and that are still exactly as written
    (same size and mtime): a file the user replaced since is no longer ours to remove."""
    try:
        files = json.loads((folder / RECORD).read_text())["files"]
        entries = dict(files.items()) if isinstance(files, dict) else {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return set()
    return {n for n, sig in entries.items()
            if isinstance(n, str) and "/" not in n and n not in ("", ".", "..")
            and sig is not None and _signature(folder / n) == sig}


def write_file_set(folder: str | Path, writers: dict[str, Callable[[Path], object]],
                   flag: str = "output folder") -> Path:
    """Write the files ``writers`` names into ``folder``, keeping every other file there.

    Args:
        folder: existing or new folder; files in it that are not in ``writers`` are kept byte
            for byte (except the ones an earlier call of this function wrote, see above).
        writers: file name -> a function that writes that file at the path it is given.
        flag: how the user named the folder, for messages.
    Returns:
        ``folder`` as a :class:`Path`.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{flag} {folder} is a file; give a folder for the outputs")
    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=folder))
    try:
        for name, write in writers.items():
            write(staging / name)
        stale = _recorded(folder) - set(writers)
        for name in writers:
            os.replace(staging / name, folder / name)
        for name in sorted(stale):
            (folder / name).unlink(missing_ok=True)
        _write_record(folder, staging, sorted(writers))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def _write_record(folder: Path, staging: Path, names: Sequence[str]) -> None:
    tmp = staging / RECORD
    files = {n: _signature(folder / n) for n in names}
    tmp.write_text(json.dumps({"files": files}, indent=1) + "\n")
    os.replace(tmp, folder / RECORD)


__all__ = ["RECORD", "check_file_destination", "check_folder_destination", "write_file_set"]
