"""Download the official checkpoint and optional preprocessing models, resumably, with huggingface_hub.

Two steps, so that nothing is written before the free-disk check:

1. :func:`plan_download` asks the hub for the file list with sizes and sha256
   (``HfApi.model_info(files_metadata=True)``; plain URLs get a HEAD), looks at what is already
   on disk (complete files are kept when size + hash match; partial files are resumed) and
   measures the free space. It writes nothing.
2. :func:`execute` fetches each file with ``huggingface_hub.file_download.http_get`` into a
   partial file that survives interruptions (a re-run resumes it with an HTTP Range request),
   checks its size and hash against the hub, moves it into place and records it in the
   folder's manifest.

Destinations: ``local_dir`` (files at ``<local_dir>/<path>``), or the Hugging Face cache
(``<cache>/models--Wan-AI--Wan2.2-Animate-14B/{blobs,snapshots/<commit>,refs}``, the layout
``huggingface_hub`` itself reads). Files of other sources (SAM2 mirror, FLUX, MediaPipe) land
as plain files inside the same checkpoint folder.

Every network call waits at most :func:`hub_timeout` (connect / per read) for the server, so
a hub, mirror or proxy that never answers fails with advice instead of hanging.
"""
from __future__ import annotations

import hashlib
import inspect
import math
import os
import shutil
import threading
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlparse

from wan_animate.checkpoints import layout
from wan_animate.checkpoints.manifest import FileEntry, Manifest, git_blob_sha1, sha256_file
from wan_animate.errors import CheckpointError

PARTIAL_DIR = ".wan_animate_partial"
DEFAULT_RESERVE = 256 << 20
"""Bytes kept free beyond what the files need."""
GB = 1e9
HUB_TIMEOUT_ENV = "WAN_ANIMATE_HUB_TIMEOUT"
DEFAULT_HUB_TIMEOUT = 20.0
"""Seconds: connect timeout and per-socket-read timeout of every network call of setup."""
TRANSFER_RETRIES = 1
"""Resume attempts of a file transfer that stalls before any byte arrives (huggingface_hub's
default is 5): a silent server costs (1 + TRANSFER_RETRIES) * (timeout + 1 s), 42 s by default."""


class DiskSpaceError(CheckpointError):
    """Not enough free disk space for the planned download (raised before any byte is written)."""


class HubAccessError(CheckpointError):
    """The hub cannot be reached, is disabled (offline mode) or refuses access (gated/401)."""


class CorruptDownloadError(CheckpointError):
    """A downloaded file does not match the size or hash the hub lists."""


@dataclass(frozen=True)
class PlannedFile:
    """One file of the plan. ``action``: keep (already complete) | fetch | resume."""

    path: str
    group: str
    size: int | None
    sha256: str | None
    blob_id: str | None
    repo_id: str | None
    remote: str
    official: bool
    action: str = "fetch"
    partial_bytes: int = 0
    gated: bool = False
    version: str = ""

    @property
    def key(self) -> str:
        """Name of the partial file: the content id, so a changed remote never resumes a stale part."""
        ident = self.sha256 or self.blob_id or hashlib.sha1(
            f"{self.remote}|{self.size}|{self.version}".encode()).hexdigest()
        return f"{ident}.incomplete"


@dataclass(frozen=True)
class DownloadPlan:
    folder: Path
    mode: str
    root: Path
    repo_id: str
    revision: str
    commit: str
    endpoint: str | None
    groups: tuple[str, ...]
    files: tuple[PlannedFile, ...]
    free_bytes: int
    reserve_bytes: int
    known_hashes: Mapping[str, str] = field(default_factory=dict)

    @property
    def to_fetch(self) -> tuple[PlannedFile, ...]:
        return tuple(f for f in self.files if f.action != "keep")

    @property
    def bytes_needed(self) -> int:
        return sum(max((f.size or 0) - f.partial_bytes, 0) for f in self.to_fetch)

    @property
    def total_bytes(self) -> int:
        return sum(f.size or 0 for f in self.files)

    def format(self) -> str:
        lines = [f"{self.repo_id}@{self.revision} ({self.commit[:10]}) -> {self.folder}",
                 f"groups: {', '.join(self.groups)}; {len(self.files)} files, "
                 f"{self.total_bytes / GB:.2f} GB in all"]
        for f in self.files:
            extra = f" (resume at {f.partial_bytes / GB:.2f} GB)" if f.action == "resume" else ""
            size = f"{f.size / GB:8.3f} GB" if f.size is not None else "    ? GB"
            lines.append(f"  {f.action:6s} {size}  {f.path}{extra}")
        lines.append(f"to download: {self.bytes_needed / GB:.2f} GB; free: {self.free_bytes / GB:.2f} GB "
                     f"in {self.root}")
        return "\n".join(lines)


@dataclass(frozen=True)
class DownloadEvent:
    """Progress for the caller (the CLI prints these). ``kind``: keep | start | resume | done."""

    kind: str
    path: str
    size: int | None = None
    offset: int = 0


@dataclass(frozen=True)
class DownloadResult:
    folder: Path
    downloaded: tuple[str, ...]
    kept: tuple[str, ...]
    manifest: Path


# ---- helpers ------------------------------------------------------------------------------------
def _hub():
    """huggingface_hub pieces, imported only when downloading (heavy import)."""
    import huggingface_hub
    from huggingface_hub import constants
    from huggingface_hub.file_download import get_hf_file_metadata, hf_hub_url, http_get
    from huggingface_hub.utils import build_hf_headers

    return huggingface_hub, constants, get_hf_file_metadata, hf_hub_url, http_get, build_hf_headers


def hub_timeout() -> float:
    """Connect / per-read timeout (s) of every setup network call: WAN_ANIMATE_HUB_TIMEOUT, else 20.

    It limits each wait for the server (connecting, or the next bytes), not a whole transfer: it
    stops a server that never answers without cutting a slow download that keeps sending.
    """
    raw = os.environ.get(HUB_TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_HUB_TIMEOUT
    try:
        value = float(raw)
    except ValueError:  # reported below, with the variable and the fix
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise CheckpointError(f"{HUB_TIMEOUT_ENV}={raw!r} is not a positive number of seconds; set it "
                              f"to e.g. {DEFAULT_HUB_TIMEOUT:g} (60 on a slow link) or unset it.")
    return value


def endpoint_url(endpoint: str | None) -> str:
    """The hub URL the calls go to: ``endpoint``, else HF_ENDPOINT as huggingface_hub read it."""
    from huggingface_hub import constants

    return (endpoint or getattr(constants, "ENDPOINT", "") or "https://huggingface.co").rstrip("/")


_transfer_lock = threading.Lock()
_transfer_users: list = [0, None]  # [runs in progress, HF_HUB_DOWNLOAD_TIMEOUT before the first]


@contextmanager
def _transfer_timeout(seconds: float) -> Iterator[None]:
    """Apply ``seconds`` to ``http_get``, which has no timeout argument: each of its attempts reads
    ``constants.HF_HUB_DOWNLOAD_TIMEOUT``. Restored when the last overlapping run ends."""
    from huggingface_hub import constants

    with _transfer_lock:
        if _transfer_users[0] == 0:
            _transfer_users[1] = constants.HF_HUB_DOWNLOAD_TIMEOUT
        _transfer_users[0] += 1
        constants.HF_HUB_DOWNLOAD_TIMEOUT = seconds
    try:
        yield
    finally:
        with _transfer_lock:
            _transfer_users[0] -= 1
            if _transfer_users[0] == 0:
                constants.HF_HUB_DOWNLOAD_TIMEOUT = _transfer_users[1]


def offline_mode() -> bool:
    """True when HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is set, at import time or now."""
    from huggingface_hub import constants

    env = (os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or "").upper()
    return bool(getattr(constants, "HF_HUB_OFFLINE", False)) or env in {"1", "ON", "YES", "TRUE"}


def disk_free(path: Path) -> int:
    """Free bytes on the filesystem that holds ``path`` (its nearest existing ancestor)."""
    p = Path(path).resolve()
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free


def storage_folder(cache_dir: str | Path | None, repo_id: str = layout.REPO_ID) -> Path:
    from huggingface_hub import constants

    return Path(cache_dir or constants.HF_HUB_CACHE).expanduser() / ("models--" + repo_id.replace("/", "--"))


def _offline_advice() -> str:
    """How to work without the network (appended to every network and offline error)."""
    return ("To work offline, with HF_HUB_OFFLINE=1, use files already present (check them with "
            "`wan-animate setup verify --local_dir DIR`). To set up a machine without internet: on a "
            "connected machine run `wan-animate setup download --local_dir DIR`, copy DIR over, run "
            "`wan-animate setup verify --local_dir DIR` and point the loader at DIR.")


def _network_advice(hub: bool) -> str:
    """What to do when a server cannot be reached or stalls (``hub``: it is the hub or a mirror)."""
    mirror = "set HF_ENDPOINT to a reachable mirror (or pass --endpoint URL), " if hub else ""
    return (f"Check the network and the proxy (HTTPS_PROXY, NO_PROXY), or {mirror}or raise "
            f"{HUB_TIMEOUT_ENV} (seconds) on a slow link, then run the same command again: partial "
            f"files are kept and resumed. {_offline_advice()}")


def _as_checkpoint_error(e: Exception, what: str, endpoint: str | None, repo_id: str | None,
                         *, hub: bool = True) -> Exception:
    """Turn huggingface_hub / transport errors into errors that say what to do (else ``e`` itself).

    ``endpoint``: the hub URL (None: HF_ENDPOINT), or with ``hub=False`` the plain URL contacted.
    Classes are matched by name along the MRO, so this works across huggingface_hub versions
    (requests- or httpx-based) without importing their transport libraries.
    """
    names = {c.__name__ for c in type(e).__mro__}
    host = endpoint_url(endpoint) if hub else str(endpoint)
    page = f"{host}/{repo_id}" if repo_id else host
    token_advice = ("accept the model's licence on " + page + " with your account, then log in with "
                    "`hf auth login` (or set HF_TOKEN, or pass --token)")
    if "OfflineModeIsEnabled" in names:
        return HubAccessError(f"{what}: HF_HUB_OFFLINE is set, so downloads are disabled. Unset it to "
                              f"download. {_offline_advice()}")
    if "GatedRepoError" in names:
        return HubAccessError(f"{what}: {repo_id} is gated and this account has no access (401/403): "
                              f"{token_advice}.")
    if "RevisionNotFoundError" in names:
        return HubAccessError(f"{what}: revision not found in {repo_id}; check --revision.")
    if "RepositoryNotFoundError" in names:
        return HubAccessError(f"{what}: repository {repo_id} not found at {host}, or it is private/gated "
                              f"and no valid token was sent: check the name, and {token_advice}.")
    if "EntryNotFoundError" in names:
        return HubAccessError(f"{what}: the file is no longer in {repo_id} at this revision; re-run to "
                              f"re-plan against the current file list.")
    if "HfHubHTTPError" in names:
        status = getattr(getattr(e, "response", None), "status_code", None)
        if status in (401, 403):
            return HubAccessError(f"{what}: access refused ({status}): {token_advice}.")
        return HubAccessError(f"{what}: the hub answered HTTP {status}. Run the same command again "
                              f"later: partial files are kept and resumed. "
                              f"({str(e).strip().splitlines()[0]})")
    if isinstance(e, CheckpointError):
        return e
    name = type(e).__name__
    if "Timeout" in name or isinstance(e, TimeoutError) or \
            isinstance(getattr(e, "reason", None), TimeoutError):      # urllib wraps connect timeouts
        return HubAccessError(
            f"{what}: no answer from {host} within {hub_timeout():g} s ({name}: {e}); the server, a "
            f"proxy or the network is stalling. {_network_advice(hub)}")
    transport = any(s in name for s in ("Connect", "Protocol", "Network", "ReadError",
                                        "URLError", "RemoteDisconnected"))
    if transport or isinstance(e, ConnectionError) or \
            (isinstance(e, OSError) and "Consistency check failed" in str(e)):
        return HubAccessError(
            f"{what}: cannot reach {host} or the transfer broke ({name}: {e}). {_network_advice(hub)}")
    return e


def _relpath_in_dest(src_path: str, source: layout.Source) -> str:
    rel = src_path[len(source.strip_prefix):] if source.strip_prefix and \
        src_path.startswith(source.strip_prefix) else src_path
    return source.dest_prefix + rel


def _head_url(url: str) -> tuple[int | None, str]:
    """(Content-Length, ETag) of a plain URL; no hub token is ever sent there. Network errors and
    timeouts (:func:`hub_timeout`) become :class:`HubAccessError` naming ``url``."""
    req = urllib.request.Request(url, method="HEAD")
    try:
        with urllib.request.urlopen(req, timeout=hub_timeout()) as r:
            length = r.headers.get("Content-Length")
            return (int(length) if length is not None else None), r.headers.get("ETag", "")
    except OSError as e:  # URLError, timeouts, resets: classified; HTTP errors pass unchanged
        err = _as_checkpoint_error(e, f"HEAD {url}", url, None, hub=False)
        if err is e:
            raise
        raise err from e


# ---- planning -----------------------------------------------------------------------------------
def _list_sources(group: layout.Group, api, official_repo: str, revision: str,
                  infos: dict[str, object], timeout: float) -> list[PlannedFile]:
    """Files of the first source of ``group`` that has any (hub calls wait ``timeout`` s per read)."""
    tried = []
    for src in group.sources:
        if src.urls:
            out = []
            for u in src.urls:
                size, etag = _head_url(u.url)
                out.append(PlannedFile(u.path, group.name, size, None, None, None, u.url, False,
                                       version=etag))
            return out
        repo = src.repo_id or official_repo
        if repo not in infos:
            rev = revision if repo == official_repo else None
            infos[repo] = api.model_info(repo, revision=rev, files_metadata=True, timeout=timeout)
        info = infos[repo]
        out = []
        for s in info.siblings or []:
            if layout.matches(s.rfilename, src.include, src.exclude):
                lfs = s.lfs
                out.append(PlannedFile(_relpath_in_dest(s.rfilename, src), group.name,
                                       lfs.size if lfs else s.size, lfs.sha256 if lfs else None,
                                       None if lfs else s.blob_id, repo, s.rfilename,
                                       repo == official_repo and not src.dest_prefix, gated=src.gated))
        if out:
            return out
        tried.append(f"{repo} ({', '.join(src.include)})")
    raise CheckpointError(f"download group {group.name!r}: no matching files in {'; '.join(tried)}. "
                          f"The repository layout may have changed; download the files by hand and "
                          f"run `wan-animate setup verify`.")


def _existing_ok(f: PlannedFile, dest: Path, man: Manifest | None, hashes: dict[str, str]) -> bool:
    """Whether an existing file is the wanted one (hashing it only when the manifest cannot tell)."""
    if not dest.is_file() or (f.size is not None and dest.stat().st_size != f.size):
        return False
    entry = man.files.get(f.path) if man else None
    if entry is not None and entry.size == dest.stat().st_size and \
            (f.sha256 is None or entry.sha256 == f.sha256):
        hashes[f.path] = entry.sha256
        return True
    if f.sha256 is not None:
        digest = sha256_file(dest)
        hashes[f.path] = digest
        return digest == f.sha256
    if f.blob_id is not None:
        if git_blob_sha1(dest) != f.blob_id:
            return False
    hashes[f.path] = sha256_file(dest)
    return True


def plan_download(groups: Sequence[str] = layout.DEFAULT_GROUPS, *, local_dir: str | Path | None = None,
                  cache_dir: str | Path | None = None, revision: str = layout.DEFAULT_REVISION,
                  repo_id: str = layout.REPO_ID, token: str | bool | None = None,
                  endpoint: str | None = None, force_redownload: bool = False,
                  only_files: Sequence[str] | None = None,
                  group_defs: Mapping[str, layout.Group] | None = None,
                  free_bytes: Callable[[Path], int] = disk_free,
                  reserve_bytes: int = DEFAULT_RESERVE) -> DownloadPlan:
    """Resolve what to download and what is already there. Network reads only; writes nothing.

    Args:
        groups: names from :data:`layout.GROUPS` (``group_defs`` replaces that table, for tests).
        local_dir: destination folder; None = the Hugging Face cache (``cache_dir`` or HF_HUB_CACHE).
        only_files: restrict to these checkpoint-relative paths (e.g. the ones verify flagged).
        free_bytes: ``f(path) -> free bytes`` (a hook, so tests can simulate a small disk).
    A stalled (:func:`hub_timeout`) or unreachable endpoint raises :class:`HubAccessError`.
    """
    timeout = hub_timeout()
    if offline_mode():
        raise HubAccessError(f"HF_HUB_OFFLINE is set, so nothing can be downloaded. Unset it to "
                             f"download. {_offline_advice()}")
    hub, _, *_ = _hub()
    defs = dict(group_defs or layout.GROUPS)
    unknown = [g for g in groups if g not in defs]
    if unknown:
        raise CheckpointError(f"unknown download group(s) {unknown}; choose from {', '.join(defs)}")
    api = hub.HfApi(endpoint=endpoint, token=token)
    infos: dict[str, object] = {}
    try:
        infos[repo_id] = api.model_info(repo_id, revision=revision, files_metadata=True, timeout=timeout)
        listed: list[PlannedFile] = []
        for g in groups:
            listed += _list_sources(defs[g], api, repo_id, revision, infos, timeout)
    except Exception as e:  # classified into errors with advice; unknown errors pass unchanged
        err = _as_checkpoint_error(e, f"listing {repo_id}", endpoint, repo_id)
        if err is e:
            raise
        raise err from e
    commit = infos[repo_id].sha or revision
    if only_files:
        wanted = set(only_files)
        listed = [f for f in listed if f.path in wanted]
        missing = sorted(wanted - {f.path for f in listed})
        if missing:
            raise CheckpointError(f"--file {missing[0]} is not part of groups {', '.join(groups)}")
    if local_dir is not None:
        folder = root = Path(local_dir).expanduser().resolve()
        mode = "local_dir"
    else:
        root = storage_folder(cache_dir, repo_id).resolve()
        folder = root / "snapshots" / commit
        mode = "cache"
    man = None
    if folder.is_dir():
        try:
            man = Manifest.load(folder)
        except CheckpointError:
            man = None
    hashes: dict[str, str] = {}
    files = []
    for f in listed:
        dest = folder / f.path
        if not force_redownload and _existing_ok(f, dest, man, hashes):
            files.append(replace(f, action="keep"))
            continue
        part = root / PARTIAL_DIR / f.key
        have = part.stat().st_size if part.is_file() and not force_redownload else 0
        if f.size is not None and have > f.size:
            have = 0
        files.append(replace(f, action="resume" if have else "fetch", partial_bytes=have))
    return DownloadPlan(folder, mode, root, repo_id, revision, commit, endpoint, tuple(groups),
                        tuple(files), int(free_bytes(root)), reserve_bytes, hashes)


def check_disk_space(plan: DownloadPlan) -> None:
    """Raise :class:`DiskSpaceError` (with the numbers and what to do) when the plan does not fit."""
    need = plan.bytes_needed
    if need and need + plan.reserve_bytes > plan.free_bytes:
        raise DiskSpaceError(
            f"not enough free disk space in {plan.root}: {len(plan.to_fetch)} file(s) need "
            f"{need / GB:.2f} GB (+{plan.reserve_bytes / GB:.2f} GB reserve), only "
            f"{plan.free_bytes / GB:.2f} GB is free. Nothing was written. Free up "
            f"{(need + plan.reserve_bytes - plan.free_bytes) / GB:.2f} GB, or download to a bigger "
            f"disk with --local_dir DIR (or move the Hugging Face cache with HF_HUB_CACHE=DIR), or "
            f"download fewer groups with --with.")


# ---- execution ----------------------------------------------------------------------------------
def _fetch(plan: DownloadPlan, f: PlannedFile, token: str | bool | None,
           on_event: Callable[[DownloadEvent], None]) -> tuple[Path, str, str]:
    """Download one file into its partial file (locked against a parallel run of the same file);
    returns (partial path, sha256, etag)."""
    from filelock import FileLock, Timeout

    part = plan.root / PARTIAL_DIR / f.key
    part.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(part) + ".lock")
    try:
        lock.acquire(timeout=0)
    except Timeout as e:
        raise CheckpointError(f"{f.path}: another download of this file is running (lock "
                              f"{lock.lock_file}); wait for it to finish") from e
    try:
        return _fetch_locked(plan, f, token, on_event, part)
    finally:
        lock.release()


def _fetch_locked(plan: DownloadPlan, f: PlannedFile, token: str | bool | None,
                  on_event: Callable[[DownloadEvent], None], part: Path) -> tuple[Path, str, str]:
    _, _, get_meta, hub_url, http_get, build_headers = _hub()
    if f.repo_id is not None:
        url = hub_url(f.repo_id, f.remote, revision=plan.commit if f.official else None,
                      endpoint=plan.endpoint)
        meta = get_meta(url, token=token, timeout=hub_timeout())
        location, size, etag = meta.location, meta.size if meta.size is not None else f.size, meta.etag
        same_host = urlparse(location).netloc == urlparse(url).netloc
        headers = build_headers(token=token) if same_host else {}
    else:
        location, size, etag, headers = f.remote, f.size, "", {}
    with open(part, "ab" if f.action == "resume" else "wb") as fh:     # "fetch" starts afresh
        offset = fh.tell()
        if size is not None and offset > size:
            fh.truncate(0)
            offset = 0
        on_event(DownloadEvent("resume" if offset else "start", f.path, size, offset))
        if size is None or offset < size:   # bounded resume attempts (private argument, if present)
            retries = {"_nb_retries": TRANSFER_RETRIES} \
                if "_nb_retries" in inspect.signature(http_get).parameters else {}
            http_get(location, fh, resume_size=offset, headers=headers, expected_size=size,
                     displayed_filename=f.path, **retries)
    got = part.stat().st_size
    if size is not None and got != size:
        raise CorruptDownloadError(f"{f.path}: downloaded {got} bytes, the hub lists {size}; "
                                   f"run the same command again to resume")
    digest = sha256_file(part)
    bad = (f.sha256 is not None and digest != f.sha256) or \
        (f.sha256 is None and f.blob_id is not None and git_blob_sha1(part) != f.blob_id)
    if bad:
        part.unlink(missing_ok=True)
        raise CorruptDownloadError(
            f"{f.path}: the downloaded file does not match the hub's hash (got sha256 {digest[:12]}...); "
            f"the partial file was deleted. Run again with --force-redownload --file {f.path}.")
    return part, digest, (etag or f.sha256 or f.blob_id or digest)


def _place(plan: DownloadPlan, f: PlannedFile, part: Path, etag: str) -> None:
    """Move a verified file into the checkpoint folder (cache mode: blob + relative symlink)."""
    dest = plan.folder / f.path
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_symlink() or dest.exists():
        dest.unlink()
    if plan.mode == "cache" and f.official:
        blob = plan.root / "blobs" / etag
        blob.parent.mkdir(parents=True, exist_ok=True)
        os.replace(part, blob)
        try:
            os.symlink(os.path.relpath(blob, dest.parent), dest)
        except OSError:  # no symlinks (e.g. Windows without developer mode): keep a copy
            shutil.copyfile(blob, dest)
    else:
        os.replace(part, dest)


def _write_ref(plan: DownloadPlan) -> None:
    if plan.mode == "cache" and plan.revision != plan.commit:
        ref = plan.root / "refs" / plan.revision
        ref.parent.mkdir(parents=True, exist_ok=True)
        ref.write_text(plan.commit)


def execute(plan: DownloadPlan, *, token: str | bool | None = None, max_workers: int = 4,
            on_event: Callable[[DownloadEvent], None] | None = None) -> DownloadResult:
    """Run a plan: fetch (or resume) each file, verify it, place it, record it in the manifest.

    The free-disk check must have passed (:func:`check_disk_space`; :func:`download` does it).
    On failure the files finished so far are in place and recorded, partial files are kept
    for the next run, and the first error is raised (with advice). Requests wait at most
    :func:`hub_timeout` per read; a stalled transfer is retried :data:`TRANSFER_RETRIES` times.
    """
    emit = on_event or (lambda e: None)
    plan.folder.mkdir(parents=True, exist_ok=True)
    _write_ref(plan)
    lock = threading.Lock()
    try:
        man = Manifest.load(plan.folder) or Manifest(created_by="download")
    except CheckpointError:  # a damaged manifest is rebuilt from the plan and the new downloads
        man = Manifest(created_by="download")
    man.repo_id, man.revision, man.commit = plan.repo_id, plan.revision, plan.commit
    for f in plan.files:
        if f.action == "keep":
            if f.path not in man.files or man.files[f.path].sha256 != plan.known_hashes.get(f.path):
                digest = plan.known_hashes.get(f.path) or sha256_file(plan.folder / f.path)
                man.files[f.path] = _entry(f, (plan.folder / f.path).stat().st_size, digest)
            emit(DownloadEvent("keep", f.path, f.size))
    man.save(plan.folder)

    def one(f: PlannedFile) -> str:
        part, digest, etag = _fetch(plan, f, token, emit)
        _place(plan, f, part, etag)
        Path(str(part) + ".lock").unlink(missing_ok=True)
        with lock:
            man.files[f.path] = _entry(f, (plan.folder / f.path).stat().st_size, digest)
            man.save(plan.folder)
        emit(DownloadEvent("done", f.path, f.size))
        return f.path

    errors: list[tuple[PlannedFile, Exception]] = []
    done: list[str] = []
    with _transfer_timeout(hub_timeout()), ThreadPoolExecutor(max_workers=max(1, max_workers)) as pool:
        futures = {pool.submit(one, f): f for f in plan.to_fetch}
        for fut, f in futures.items():
            try:
                done.append(fut.result())
            except Exception as e:  # collected; the first is re-raised with advice below
                errors.append((f, e))
    if errors:
        f, e = errors[0]
        more = f" ({len(errors) - 1} more file(s) failed too)" if len(errors) > 1 else ""
        hub = f.repo_id is not None
        err = _as_checkpoint_error(e, f"downloading {f.path}", plan.endpoint if hub else f.remote,
                                   f.repo_id, hub=hub)
        if err is e:
            raise e
        raise type(err)(f"{err}{more}") from e
    partial_dir = plan.root / PARTIAL_DIR
    if partial_dir.is_dir() and not any(partial_dir.iterdir()):
        partial_dir.rmdir()
    kept = tuple(f.path for f in plan.files if f.action == "keep")
    return DownloadResult(plan.folder, tuple(done), kept, plan.folder / layout.MANIFEST_NAME)


def _entry(f: PlannedFile, size: int, digest: str) -> FileEntry:
    origin = "hub-lfs" if f.sha256 else ("hub-git" if f.blob_id else "url")
    source = f"{f.repo_id}:{f.remote}" if f.repo_id else f.remote
    return FileEntry(size, digest, origin, source)


def download(groups: Sequence[str] = layout.DEFAULT_GROUPS, *, token: str | bool | None = None,
             max_workers: int = 4, on_event: Callable[[DownloadEvent], None] | None = None,
             **plan_kwargs) -> DownloadResult:
    """:func:`plan_download` + :func:`check_disk_space` + :func:`execute` (see them for arguments)."""
    plan = plan_download(groups, token=token, **plan_kwargs)
    check_disk_space(plan)
    return execute(plan, token=token, max_workers=max_workers, on_event=on_event)
