"""``wan-animate preprocess``: official flags, the output folder, clear errors."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest

from wan_animate.cli import preprocess as cli
from wan_animate.errors import InputError


def _parse(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    cli.add_arguments(p)
    return p.parse_args(list(argv))


def test_official_flags_and_defaults() -> None:
    a = _parse("--video_path", "v.mp4", "--refer_path", "r.png", "--save_path", "out")
    assert a.resolution_area == [1280, 720] and a.fps == 30 and not a.replace_flag
    assert (a.iterations, a.k, a.w_len, a.h_len) == (3, 7, 1, 1)
    a = _parse("--video_path", "v", "--refer_path", "r", "--save_path", "o", "--replace_flag",
               "--retarget_flag", "--use_flux", "--resolution_area", "832", "480", "--fps", "-1",
               "--ckpt_path", "ck", "--iterations", "0", "--k", "5", "--w_len", "4", "--h_len", "8")
    assert a.replace_flag and a.retarget_flag and a.use_flux and a.resolution_area == [832, 480]
    assert cli.NAME == "preprocess" and cli.HELP


def test_unreadable_inputs_give_clear_errors(tmp_path: Path) -> None:
    bad_video = tmp_path / "v.mp4"
    bad_video.write_bytes(b"not a video")
    ref = tmp_path / "r.png"
    ref.write_bytes(b"not an image")
    with pytest.raises(InputError, match="cannot read image"):
        cli.run(_parse("--video_path", str(bad_video), "--refer_path", str(ref), "--save_path",
                       str(tmp_path / "out"), "--quiet"))
    from wan_animate.preprocess.video_io import write_image
    write_image(ref, np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(InputError, match="cannot decode video"):
        cli.run(_parse("--video_path", str(bad_video), "--refer_path", str(ref), "--save_path",
                       str(tmp_path / "out"), "--quiet"))
    with pytest.raises(InputError, match="not found"):
        cli.run(_parse("--video_path", str(tmp_path / "missing.mp4"), "--refer_path", str(ref),
                       "--save_path", str(tmp_path / "out"), "--quiet"))
    assert not (tmp_path / "out").exists()


def test_cli_writes_the_folder_on_a_real_clip(samples: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("mediapipe")
    from wan_animate.preprocess.video_io import read_video, write_video
    frames, fps = read_video(samples / "replace" / "video.mp4")
    clip = tmp_path / "clip.mp4"
    write_video(clip, frames[::20][:6], fps / 20)          # 6 frames, keeps the test fast
    out = tmp_path / "job"                                 # an existing folder with the user's files
    (out / "sub").mkdir(parents=True)
    (out / "important.txt").write_bytes(b"do not lose me")
    (out / "sub" / "notes.md").write_bytes(b"# notes")
    rc = cli.run(_parse("--video_path", str(clip), "--refer_path", str(samples / "replace" / "image.jpeg"),
                        "--save_path", str(out), "--replace_flag", "--resolution_area", "512", "288",
                        "--fps", "-1", "--quiet"))
    assert rc == 0
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "important.txt", "src_bg.mp4", "src_face.mp4", "src_mask.mp4", "src_pose.mp4", "src_ref.png",
        "sub"]
    assert (out / "important.txt").read_bytes() == b"do not lose me"
    assert (out / "sub" / "notes.md").read_bytes() == b"# notes"
    pose, _ = read_video(out / "src_pose.mp4")
    assert pose.shape == (6, 288, 512, 3)
    assert "s/frame" in capsys.readouterr().out


@pytest.mark.parametrize("where", ["file", "read_only", "full"])
def test_bad_save_path_fails_before_any_work(where: str, tmp_path: Path,
                                              request: pytest.FixtureRequest) -> None:
    """Checked before the inputs are even read: the (missing) video is never reached."""
    if where == "file":
        save = tmp_path / "taken"
        save.write_text("a file, not a folder")
    else:
        save = request.getfixturevalue("read_only_dir" if where == "read_only" else "full_disk") / "job"
    with pytest.raises(InputError, match=f"--save_path {save}"):
        cli.run(_parse("--video_path", str(tmp_path / "missing.mp4"), "--refer_path",
                       str(tmp_path / "missing.png"), "--save_path", str(save), "--quiet"))
