"""Output destinations: refused before the work, foreign files kept, earlier results survive."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from wan_animate.errors import InputError
from wan_animate.outputs import (RECORD, check_file_destination, check_folder_destination,
                                 write_file_set)


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _foreign(folder: Path) -> dict[str, bytes]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "important.txt").write_bytes(b"keep me\n")
    (folder / "sub").mkdir()
    (folder / "sub" / "notes.md").write_bytes(os.urandom(3000))
    (folder / "src_pose.mp4.txt").write_bytes(b"looks like ours, is not\n")
    return _tree(folder)


def _writer(data: bytes):
    return lambda path: path.write_bytes(data)


def test_foreign_files_are_kept_byte_for_byte(tmp_path: Path) -> None:
    before = _foreign(tmp_path / "job")
    write_file_set(tmp_path / "job", {"src_pose.mp4": _writer(b"pose"), "src_ref.png": _writer(b"r")})
    after = _tree(tmp_path / "job")
    assert {k: after[k] for k in before} == before
    assert after["src_pose.mp4"] == b"pose" and after["src_ref.png"] == b"r"
    assert not [p for p in (tmp_path / "job").iterdir() if p.name.startswith(".wan-animate-staging")]


def test_only_files_it_wrote_before_are_removed(tmp_path: Path) -> None:
    job = tmp_path / "job"
    write_file_set(job, {"src_pose.mp4": _writer(b"1"), "src_bg.mp4": _writer(b"bg")})
    (job / "src_mask.mp4").write_bytes(b"the user's own file of that name")
    write_file_set(job, {"src_pose.mp4": _writer(b"2")})          # an animate run after replace
    names = sorted(p.name for p in job.iterdir())
    assert names == [RECORD, "src_mask.mp4", "src_pose.mp4"]      # stale src_bg.mp4 was ours
    assert (job / "src_pose.mp4").read_bytes() == b"2"


def test_a_failing_run_leaves_the_earlier_result(tmp_path: Path) -> None:
    job = tmp_path / "job"
    write_file_set(job, {"a.mp4": _writer(b"old a"), "b.mp4": _writer(b"old b")})
    before = _tree(job)

    def crash(path: Path) -> None:
        path.write_bytes(b"half")
        raise RuntimeError("killed mid-run")

    with pytest.raises(RuntimeError):
        write_file_set(job, {"a.mp4": _writer(b"new a"), "b.mp4": crash})
    assert _tree(job) == before


def test_an_existing_folder_is_refused_as_a_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="is an existing folder.*file name"):
        check_file_destination(tmp_path, "--save_file")
    (tmp_path / "f").write_text("x")
    with pytest.raises(InputError, match="--save_path .* is a file"):
        check_folder_destination(tmp_path / "f", "--save_path")
    with pytest.raises(InputError, match="is a file, so no folder"):
        check_file_destination(tmp_path / "f" / "out.mp4", "--save_file")


def test_new_nested_destinations_are_accepted(tmp_path: Path) -> None:
    assert check_file_destination(tmp_path / "a" / "b" / "out.mp4", "--save_file").name == "out.mp4"
    check_folder_destination(tmp_path / "x" / "y", "--save_path")
    assert sorted(p.name for p in tmp_path.iterdir()) == []        # the check creates nothing


def test_read_only_destination(read_only_dir: Path) -> None:
    with pytest.raises(InputError, match=f"--save_file {read_only_dir}/out.mp4: .*(read-only|permission)"):
        check_file_destination(read_only_dir / "out.mp4", "--save_file")
    with pytest.raises(InputError, match="(read-only|permission)"):
        check_folder_destination(read_only_dir / "job", "--save_path")


def test_full_disk_destination(full_disk: Path) -> None:
    with pytest.raises(InputError, match="full.*free some space"):
        check_file_destination(full_disk / "out.mp4", "--save_file")
    with pytest.raises(InputError, match="full.*free some space"):
        check_folder_destination(full_disk / "job", "--save_path")


def test_too_little_space_for_the_estimate(tmp_path: Path) -> None:
    import shutil
    free = shutil.disk_usage(tmp_path).free
    with pytest.raises(InputError, match="MiB free but the output needs about"):
        check_file_destination(tmp_path / "out.mp4", "--save_file", need_bytes=free * 4)


def test_a_recorded_file_the_user_replaced_is_kept(tmp_path: Path) -> None:
    job = tmp_path / "job"
    write_file_set(job, {"src_pose.mp4": _writer(b"1"), "src_bg.mp4": _writer(b"ours")})
    (job / "src_bg.mp4").write_bytes(b"the user's own background, put here since")
    write_file_set(job, {"src_pose.mp4": _writer(b"2")})
    assert (job / "src_bg.mp4").read_bytes() == b"the user's own background, put here since"
