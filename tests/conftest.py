"""Shared test fixtures: where ../shared lives, and small helpers."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("WAN_ANIMATE_SHARED", ROOT.parent / "shared")).resolve()
OFFICIAL = SHARED / "fixtures" / "official"
PREPROCESS = SHARED / "fixtures" / "preprocess"
SAMPLES = SHARED / "samples"


@pytest.fixture(scope="session")
def official_fixtures() -> Path:
    """``../shared/fixtures/official``: tensors produced by the official implementation."""
    assert OFFICIAL.is_dir(), f"missing {OFFICIAL}: clone the project beside ../shared"
    return OFFICIAL


@pytest.fixture(scope="session")
def preprocess_fixtures() -> Path:
    assert PREPROCESS.is_dir(), f"missing {PREPROCESS}"
    return PREPROCESS


@pytest.fixture(scope="session")
def samples() -> Path:
    assert SAMPLES.is_dir(), f"missing {SAMPLES}"
    return SAMPLES


@pytest.fixture(autouse=True)
def _torch_threads() -> None:
    torch.set_num_threads(min(2, os.cpu_count() or 1))


def _mount_tmpfs(target: Path, options: str) -> bool:
    import subprocess
    target.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)],
                       capture_output=True)
    return r.returncode == 0


def _umount(target: Path) -> None:
    import subprocess
    subprocess.run(["umount", "-l", str(target)], capture_output=True)


def _fill(path: Path) -> None:
    """Write ``path`` until the file system refuses (ENOSPC)."""
    with open(path, "wb", buffering=0) as f:
        while True:
            try:
                f.write(b"\0" * 4096)
            except OSError:
                return


@pytest.fixture
def full_disk(tmp_path: Path):
    """A folder on a real file system with no space left (a 256 KiB tmpfs, filled up)."""
    target = tmp_path / "full"
    if not _mount_tmpfs(target, "size=256k"):
        pytest.skip("mounting a tmpfs needs root (CAP_SYS_ADMIN)")
    try:
        _fill(target / "filler")
        yield target
    finally:
        _umount(target)


@pytest.fixture
def read_only_dir(tmp_path: Path):
    """A folder on a read-only file system (a tmpfs mounted ro; root bypasses chmod)."""
    target = tmp_path / "ro"
    if not _mount_tmpfs(target, "ro,size=64k"):
        if os.geteuid() == 0:
            pytest.skip("mounting a tmpfs failed and root ignores chmod")
        target.chmod(0o555)
    try:
        yield target
    finally:
        _umount(target)
        target.chmod(0o755)
