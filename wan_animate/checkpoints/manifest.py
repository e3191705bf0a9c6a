"""Manifests (size + sha256 per file), offline verification and the folder status report.

Every folder written by ``wan-animate setup download`` or ``make-tiny-checkpoint`` carries
``wan_animate_manifest.json``::

    {"format": "wan-animate-manifest", "version": 1, "created_by": "download",
     "repo_id": "Wan-AI/Wan2.2-Animate-14B", "revision": "main", "commit": "<sha>",
     "files": {"Wan2.1_VAE.pth": {"size": 507609880, "sha256": "<hex>", "origin": "hub-lfs"}, ...}}

``origin`` says where the sha256 came from: ``hub-lfs`` (the hub's LFS metadata),
``hub-git`` (computed locally after the git blob id matched the hub's), ``url`` (computed
locally from a plain download) or ``local`` (hashed from files already on disk).

:func:`verify` re-hashes every listed file offline and names each missing or corrupt one;
:func:`status_report` is the fast check (existence and sizes only) with the features each
missing component disables (for ``setup status`` and the ComfyUI status node).
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from wan_animate.checkpoints import layout
from wan_animate.errors import CheckpointError

FORMAT = "wan-animate-manifest"
VERSION = 1
_CHUNK = 8 << 20
SKIP_DIRS = (".cache", ".wan_animate_partial")
"""Folders inside a checkpoint folder that hold download state, never checkpoint files."""


@dataclass(frozen=True)
class FileEntry:
    size: int
    sha256: str
    origin: str = "local"
    source: str = ""


@dataclass
class Manifest:
    """The manifest of one folder; ``files`` maps a folder-relative posix path to its entry."""

    files: dict[str, FileEntry] = field(default_factory=dict)
    created_by: str = "download"
    repo_id: str = ""
    revision: str = ""
    commit: str = ""
    created: str = ""

    def to_json(self) -> str:
        body = {"format": FORMAT, "version": VERSION, "created_by": self.created_by,
                "repo_id": self.repo_id, "revision": self.revision, "commit": self.commit,
                "created": self.created or _now(),
                "files": {k: asdict(v) for k, v in sorted(self.files.items())}}
        return json.dumps(body, indent=1) + "\n"

    @classmethod
    def load(cls, folder: str | Path) -> Manifest | None:
        """The folder's manifest, or None when it has none. A damaged one raises CheckpointError."""
        path = Path(folder) / layout.MANIFEST_NAME
        if not path.is_file():
            return None
        try:
            body = json.loads(path.read_text())
            if body.get("format") != FORMAT:
                raise ValueError(f"format is {body.get('format')!r}, not {FORMAT!r}")
            files = {k: FileEntry(int(v["size"]), str(v["sha256"]), v.get("origin", "local"),
                                  v.get("source", "")) for k, v in body["files"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise CheckpointError(f"{path}: unreadable manifest ({e}); delete it and re-create it with "
                                  f"`wan-animate setup download --local_dir {Path(folder)}`") from e
        return cls(files, body.get("created_by", ""), body.get("repo_id", ""),
                   body.get("revision", ""), body.get("commit", ""), body.get("created", ""))

    def save(self, folder: str | Path) -> Path:
        """Write atomically (temp file + rename) so an interrupted write never leaves half a manifest."""
        path = Path(folder) / layout.MANIFEST_NAME
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(self.to_json())
        os.replace(tmp, path)
        return path


def where_flag(folder: Path) -> str:
    """``--cache_dir ROOT`` for a Hugging Face cache snapshot, else ``--local_dir FOLDER`` (CLI hints)."""
    folder = Path(folder)
    if folder.parent.name == "snapshots" and folder.parent.parent.name.startswith("models--"):
        return f"--cache_dir {folder.parents[2]}"
    return f"--local_dir {folder}"


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def sha256_file(path: str | Path, on_bytes: Callable[[int], None] | None = None) -> str:
    """Hex sha256 of a file, read in 8 MiB chunks; ``on_bytes(n)`` is called per chunk."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            if on_bytes is not None:
                on_bytes(len(chunk))
    return h.hexdigest()


def git_blob_sha1(path: str | Path) -> str:
    """The git object id of a file (``sha1(b"blob <size>\\0" + content)``), as the hub lists it."""
    h = hashlib.sha1()
    h.update(b"blob %d\0" % Path(path).stat().st_size)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def list_files(folder: str | Path) -> list[str]:
    """Every checkpoint file under ``folder`` (posix relative paths), skipping download state."""
    folder = Path(folder)
    out = []
    for root, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
        for name in files:
            rel = (Path(root) / name).relative_to(folder).as_posix()
            if rel != layout.MANIFEST_NAME and not rel.endswith((".json.tmp", ".incomplete")):
                out.append(rel)
    return sorted(out)


def write_manifest(folder: str | Path, created_by: str = "make-tiny-checkpoint",
                   files: Iterable[str] | None = None, repo_id: str = "", revision: str = "",
                   commit: str = "") -> Manifest:
    """Hash ``files`` (default: every file of the folder) and write/update the folder's manifest.

    Entries of files not hashed now are kept. Used by ``make-tiny-checkpoint`` and for folders
    copied in by hand.
    """
    folder = Path(folder)
    man = Manifest.load(folder) or Manifest(created_by=created_by, repo_id=repo_id,
                                            revision=revision, commit=commit)
    for rel in (list_files(folder) if files is None else list(files)):
        p = folder / rel
        if not p.is_file():
            raise CheckpointError(f"cannot add {p} to the manifest: no such file")
        man.files[rel] = FileEntry(p.stat().st_size, sha256_file(p), "local")
    man.save(folder)
    return man


# ---- verification ------------------------------------------------------------------------------
@dataclass(frozen=True)
class FileCheck:
    """``state``: ok | missing | corrupt (size or sha256 differs) | unverified (not in the manifest)."""

    path: str
    state: str
    detail: str = ""


@dataclass(frozen=True)
class VerifyReport:
    folder: Path
    checks: tuple[FileCheck, ...]
    hashed: bool

    @property
    def ok(self) -> bool:
        return all(c.state in ("ok", "unverified") for c in self.checks)

    @property
    def problems(self) -> tuple[FileCheck, ...]:
        return tuple(c for c in self.checks if c.state in ("missing", "corrupt"))

    def format(self) -> str:
        bad = self.problems
        how = "sha256" if self.hashed else "sizes only"
        lines = [f"verified {len(self.checks)} files in {self.folder} ({how}): "
                 + ("all good" if not bad else f"{len(bad)} problem(s)")]
        lines += [f"  {c.state.upper():8s} {c.path}  {c.detail}" for c in bad]
        extra = [c for c in self.checks if c.state == "unverified"]
        if extra:
            lines.append(f"  {len(extra)} file(s) not in the manifest were not checked, e.g. {extra[0].path}")
        if bad:
            files = " ".join(f"--file {c.path}" for c in bad[:6])
            groups = sorted({comp.group for c in bad if (comp := layout.component_of(c.path))})
            with_ = f" --with {','.join(groups)}" if groups else ""
            lines.append(f"fix: wan-animate setup download --force-redownload{with_} "
                         f"{where_flag(self.folder)} {files}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"folder": str(self.folder), "ok": self.ok, "hashed": self.hashed,
                "files": [asdict(c) for c in self.checks]}


def verify(folder: str | Path, sizes_only: bool = False,
           on_bytes: Callable[[int], None] | None = None) -> VerifyReport:
    """Check every file of the folder's manifest offline: present, right size and (unless
    ``sizes_only``) right sha256. Raises CheckpointError when the folder has no manifest."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint folder {folder} does not exist; download it with "
                              f"`wan-animate setup download --local_dir {folder}`")
    man = Manifest.load(folder)
    if man is None:
        raise CheckpointError(
            f"{folder} has no {layout.MANIFEST_NAME}, so it cannot be verified offline. Create one "
            f"against the hub with `wan-animate setup download --local_dir {folder}` (files already "
            f"there are hashed and kept when they match, not downloaded again).")
    checks = []
    for rel, entry in sorted(man.files.items()):
        p = folder / rel
        if not p.is_file():
            checks.append(FileCheck(rel, "missing", f"expected {entry.size} bytes"))
            continue
        size = p.stat().st_size
        if size != entry.size:
            checks.append(FileCheck(rel, "corrupt", f"size {size} bytes, expected {entry.size}"))
            continue
        if not sizes_only:
            digest = sha256_file(p, on_bytes)
            if digest != entry.sha256:
                checks.append(FileCheck(rel, "corrupt", f"sha256 {digest[:12]}..., expected "
                                                        f"{entry.sha256[:12]}..."))
                continue
        checks.append(FileCheck(rel, "ok"))
    for rel in list_files(folder):
        if rel not in man.files:
            checks.append(FileCheck(rel, "unverified", "not in the manifest"))
    return VerifyReport(folder, tuple(checks), not sizes_only)


# ---- status ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ComponentStatus:
    """``state``: present | missing | corrupt (a size differs from the manifest) | partial."""

    name: str
    description: str
    state: str
    required: bool
    paths: tuple[str, ...]
    problems: tuple[str, ...]
    disables: tuple[str, ...]


@dataclass(frozen=True)
class StatusReport:
    folder: Path | None
    has_manifest: bool
    components: tuple[ComponentStatus, ...]

    @property
    def found(self) -> bool:
        return self.folder is not None and self.folder.is_dir()

    @property
    def disabled_features(self) -> tuple[str, ...]:
        lost = {f for c in self.components for f in c.disables}
        return tuple(f for f in layout.FEATURES if f in lost)

    @property
    def available_features(self) -> tuple[str, ...]:
        return tuple(f for f in layout.FEATURES if f not in self.disabled_features)

    @property
    def can_generate(self) -> bool:
        return all(c.state == "present" for c in self.components if c.required)

    def format(self) -> str:
        if not self.found:
            return ("no checkpoint folder found"
                    + (f" at {self.folder}" if self.folder else " (no --local_dir, no "
                       "WAN_ANIMATE_CKPT_DIR, nothing in the Hugging Face cache)")
                    + "\nget one with: wan-animate setup quick")
        lines = [f"checkpoint folder: {self.folder}"
                 + ("" if self.has_manifest else "  (no manifest: sizes not checked)")]
        for c in self.components:
            mark = {"present": "ok", "missing": "MISSING", "corrupt": "CORRUPT",
                    "partial": "PARTIAL"}[c.state]
            line = f"  {mark:8s} {c.name:16s} {c.description}"
            if c.state != "present":
                line += f"\n           {'; '.join(c.problems[:3])}"
                if c.disables:
                    line += f"\n           disables: {', '.join(c.disables)}"
                group = layout.component(c.name).group
                force = " --force-redownload" if c.state == "corrupt" else ""
                line += (f"\n           fix: wan-animate setup download --with {group}{force} "
                         f"{where_flag(self.folder)}")
            lines.append(line)
        lines.append("can generate: " + ("yes" if self.can_generate else
                                         "NO (run: wan-animate setup download)"))
        if self.disabled_features:
            lines.append("unavailable:")
            lines += [f"  {f}: {layout.FEATURES[f]}" for f in self.disabled_features]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"folder": str(self.folder) if self.folder else None, "found": self.found,
                "has_manifest": self.has_manifest, "can_generate": self.can_generate,
                "available_features": list(self.available_features),
                "disabled_features": list(self.disabled_features),
                "components": [asdict(c) for c in self.components]}


def default_checkpoint_dir(cache_dir: str | Path | None = None,
                           revision: str = layout.DEFAULT_REVISION) -> Path | None:
    """``$WAN_ANIMATE_CKPT_DIR``, else the official repo's snapshot in the Hugging Face cache."""
    env = os.environ.get("WAN_ANIMATE_CKPT_DIR")
    if env:
        return Path(env).expanduser()
    from huggingface_hub import constants

    storage = Path(cache_dir or constants.HF_HUB_CACHE) / ("models--" + layout.REPO_ID.replace("/", "--"))
    ref = storage / "refs" / revision
    commit = ref.read_text().strip() if ref.is_file() else revision
    snap = storage / "snapshots" / commit
    return snap if snap.is_dir() else None


def _check_path(folder: Path, rel: str, man: Manifest | None) -> str | None:
    """None when fine, else a short problem text."""
    p = folder / rel.rstrip("/")
    if rel.endswith("/"):
        if not p.is_dir() or not any(p.iterdir()):
            return f"{rel} missing or empty"
        if man is not None:
            for k, e in man.files.items():
                if k.startswith(rel):
                    q = folder / k
                    if not q.is_file():
                        return f"{k} missing"
                    if q.stat().st_size != e.size:
                        return f"{k} corrupt (size {q.stat().st_size}, expected {e.size})"
        return None
    if not p.is_file():
        return f"{rel} missing"
    if man is not None and rel in man.files and p.stat().st_size != man.files[rel].size:
        return f"{rel} corrupt (size {p.stat().st_size}, expected {man.files[rel].size})"
    return None


def status_report(folder: str | Path | None = None, cache_dir: str | Path | None = None) -> StatusReport:
    """Present / missing / corrupt per component, and the features each missing one disables.

    Fast (no hashing): checks existence and, with a manifest, sizes. ``folder=None`` looks in
    ``$WAN_ANIMATE_CKPT_DIR`` then the Hugging Face cache. Never raises for a missing folder.
    """
    path = Path(folder).expanduser() if folder is not None else default_checkpoint_dir(cache_dir)
    if path is None or not path.is_dir():
        comps = tuple(ComponentStatus(c.name, c.description, "missing", c.required, c.paths,
                                      ("folder not found",), tuple(layout.disabled_features([c.name])))
                      for c in layout.COMPONENTS)
        return StatusReport(path, False, comps)
    try:
        man = Manifest.load(path)
    except CheckpointError:
        man = None
    comps = []
    for c in layout.COMPONENTS:
        paths = layout.component_files(c, path)
        problems = [p for p in (_check_path(path, rel, man) for rel in paths) if p]
        if not problems:
            state = "present"
        elif any("corrupt" in p for p in problems):
            state = "corrupt"
        elif len(problems) < len(paths):
            state = "partial"
        else:
            state = "missing"
        disables = () if state == "present" else tuple(layout.disabled_features([c.name]))
        comps.append(ComponentStatus(c.name, c.description, state, c.required, tuple(paths),
                                     tuple(problems), disables))
    return StatusReport(path, man is not None, tuple(comps))
