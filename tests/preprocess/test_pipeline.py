"""Engine entry: clear errors, atomic output folder, pure retargeting, gap filling."""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

from wan_animate.errors import CheckpointError, InputError
from wan_animate.preprocess.detection import Detections, fill_missing, nearest_valid, smooth_keypoints
from wan_animate.preprocess.keypoints import PoseMeta
from wan_animate.preprocess.pipeline import (PreprocessOptions, PreprocessResult, preprocess,
                                             save_preprocessed)
from wan_animate.preprocess.retarget import retarget_sequence


def _result(t: int = 3, replace: bool = False) -> PreprocessResult:
    rng = np.random.default_rng(0)
    img = lambda *s: rng.integers(0, 255, s, dtype=np.uint8)  # noqa: E731
    return PreprocessResult(pose=img(t, 32, 48, 3), face=img(t, 512, 512, 3), reference=img(40, 30, 3),
                            fps=30.0, background=img(t, 32, 48, 3) if replace else None,
                            mask=img(t, 32, 48, 3) if replace else None)


def test_save_writes_the_generate_folder(tmp_path: Path) -> None:
    from wan_animate.preprocess.video_io import read_image, read_video
    out = save_preprocessed(_result(replace=True), tmp_path / "job", lossless=True)
    names = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert names == ["src_bg.mp4", "src_face.mp4", "src_mask.mp4", "src_pose.mp4", "src_ref.png"]
    pose, fps = read_video(out / "src_pose.mp4")
    assert pose.shape == (3, 32, 48, 3) and fps == 30.0
    assert np.array_equal(pose, _result().pose)                       # lossless round trip
    assert np.array_equal(read_image(out / "src_ref.png"), _result().reference)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job"]      # no temp folder left


def test_failed_save_leaves_no_partial_folder(tmp_path: Path) -> None:
    bad = _result()
    bad.face = bad.face.astype(np.float32)          # write_video refuses it after pose was written
    (tmp_path / "job").mkdir()
    (tmp_path / "job" / "keep.txt").write_text("old run")
    with pytest.raises(InputError):
        save_preprocessed(bad, tmp_path / "job")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job"]
    assert (tmp_path / "job" / "keep.txt").read_text() == "old run"   # old result untouched


def test_input_errors_are_clear() -> None:
    ref = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(InputError, match="uint8"):
        preprocess(np.zeros((2, 64, 64, 3), np.float32), 30, ref, PreprocessOptions())
    with pytest.raises(InputError, match="use_flux"):
        PreprocessOptions(use_flux=True)
    with pytest.raises(InputError, match="animate mode"):
        PreprocessOptions(mode="replace", retarget=True)
    with pytest.raises(CheckpointError, match="ckpt_path"):
        preprocess(np.zeros((2, 64, 64, 3), np.uint8), 30, ref, PreprocessOptions(backend="vitpose"))


def test_video_without_a_person() -> None:
    pytest.importorskip("mediapipe")
    frames = np.zeros((3, 96, 128, 3), np.uint8)
    with pytest.raises(InputError, match="no person"):
        preprocess(frames, 30, np.zeros((96, 96, 3), np.uint8), PreprocessOptions(fps=-1))


def test_fill_missing_and_smoothing() -> None:
    kps = np.random.default_rng(0).uniform(0, 100, (5, 133, 3))
    person = np.array([False, True, False, False, True])
    face = np.array([False, True, False, False, False])
    filled, no_person, no_face = fill_missing(Detections(kps, person, face))
    assert (no_person, no_face) == (3, 4)
    assert np.array_equal(filled.keypoints[0], kps[1])
    assert np.array_equal(filled.keypoints[3, :23], kps[4, :23])       # body from frame 4
    assert np.array_equal(filled.keypoints[3, 91:], kps[4, 91:])       # hands from frame 4
    assert nearest_valid(np.array([True, False, False, True])).tolist() == [0, 0, 3, 3]
    # the face of frame 4 follows frame 1's face, moved with the nose
    shift = kps[4, 0, :2] - kps[1, 0, :2]
    assert np.allclose(filled.keypoints[4, 23:91, :2], kps[1, 23:91, :2] + shift)
    jitter = np.zeros((9, 2, 3))
    jitter[..., 2] = 1
    jitter[::2, :, 0] = 2.0
    sm = smooth_keypoints(jitter, 1)
    assert np.abs(sm[2:-2, :, 0] - 1).max() < 0.5 and np.array_equal(smooth_keypoints(jitter, 0), jitter)


def test_retarget_does_not_modify_its_inputs() -> None:
    rng = np.random.default_rng(0)

    def meta(w: int, h: int) -> PoseMeta:
        body = np.c_[rng.uniform(0.2, 0.8, (20, 2)), np.full(20, 0.9)]
        hand = lambda: np.c_[rng.uniform(0.2, 0.8, (21, 2)), np.full(21, 0.9)]  # noqa: E731
        return PoseMeta(w, h, body, hand(), hand(), np.c_[rng.uniform(0, 1, (69, 2)), np.ones(69)])

    src = [meta(640, 360) for _ in range(3)]
    ref = meta(300, 400)
    before = copy.deepcopy((src, ref))
    out = retarget_sequence(src[0], ref, src)
    assert len(out) == 3 and (out[0].width, out[0].height) == (300, 400)
    for a, b in zip(src + [ref], before[0] + [before[1]]):
        assert a.width == b.width and a.height == b.height
        for f in ("body", "left_hand", "right_hand", "face"):
            assert np.array_equal(getattr(a, f), getattr(b, f))


def _no_person_reference() -> np.ndarray:
    """A flat cartoon-like drawing (a blob with eyes) in which no detector finds a person."""
    import cv2
    img = np.full((320, 256, 3), (250, 220, 120), np.uint8)
    cv2.circle(img, (128, 150), 90, (60, 160, 230), -1)
    for x in (95, 160):
        cv2.circle(img, (x, 130), 14, (255, 255, 255), -1)
        cv2.circle(img, (x, 132), 6, (20, 20, 20), -1)
    return img


def test_stylized_reference_without_a_person_animates(samples: Path) -> None:
    """The reference's skeleton only serves --retarget_flag: without it, a reference in which
    no person is found still animates; with it, the error names the reference and the fix."""
    pytest.importorskip("mediapipe")
    from wan_animate.preprocess.video_io import read_video
    frames, fps = read_video(samples / "animate" / "video.mp4")
    frames = frames[::40][:3]
    ref = _no_person_reference()
    opts = PreprocessOptions(resolution_area=(256, 320), fps=-1, backend="mediapipe")
    res = preprocess(frames, fps / 40, ref, opts)
    assert res.pose.shape[0] == 3 and res.pose.shape[1:3] == (320, 256)
    with pytest.raises(InputError, match="reference image: .*no person.*drop --retarget_flag"):
        preprocess(frames, fps / 40, ref, PreprocessOptions(resolution_area=(256, 320), fps=-1,
                                                            backend="mediapipe", retarget=True))
