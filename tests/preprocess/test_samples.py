"""Acceptance on the real sample videos with the MediaPipe backend on CPU (subsampled fps)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from wan_animate.preprocess.pipeline import PreprocessOptions, PreprocessResult, preprocess
from wan_animate.preprocess.video_io import read_image, read_video

pytest.importorskip("mediapipe")


def _run(samples: Path, mode: str, fps: float, area: tuple[int, int]) -> PreprocessResult:
    frames, src_fps = read_video(samples / mode / "video.mp4")
    ref = read_image(samples / mode / "image.jpeg")
    res = preprocess(frames, src_fps, ref, PreprocessOptions(mode=mode, fps=fps, resolution_area=area))
    print(f"\n{mode}: {len(res.pose)} frames, {res.seconds_per_frame:.3f} s/frame (MediaPipe, CPU)")
    return res


def _faces_found(crops: np.ndarray) -> float:
    from mediapipe.python.solutions import face_detection
    with face_detection.FaceDetection(model_selection=0, min_detection_confidence=0.5) as fd:
        return float(np.mean([fd.process(c).detections is not None for c in crops]))


@pytest.fixture(scope="module")
def animate(samples: Path) -> PreprocessResult:
    return _run(samples, "animate", 6, (1280, 720))


@pytest.fixture(scope="module")
def replace(samples: Path) -> PreprocessResult:
    return _run(samples, "replace", 5, (832, 480))


@pytest.mark.parametrize("mode", ["animate", "replace"])
def test_body_and_face_found(mode: str, request: pytest.FixtureRequest) -> None:
    res: PreprocessResult = request.getfixturevalue(mode)
    t = len(res.pose)
    assert t >= 15
    assert res.frames_without_person <= 0.05 * t, f"no body in {res.frames_without_person}/{t} frames"
    assert res.face.shape == (t, 512, 512, 3)
    found = _faces_found(res.face)
    print(f"{mode}: body in {t - res.frames_without_person}/{t} frames, face in {found:.0%} of the crops")
    assert found >= 0.9, f"a face was found in only {found:.0%} of the crops"
    assert (res.pose.reshape(t, -1).max(axis=1) > 0).all()          # every frame has a skeleton


def test_animate_sizes(animate: PreprocessResult) -> None:
    assert animate.pose.shape[1:] == (720, 1280, 3) and animate.background is None


def test_replace_mask_covers_the_body(replace: PreprocessResult) -> None:
    t, h, w = replace.mask.shape[:3]
    assert replace.background.shape == replace.mask.shape == replace.pose.shape
    covered = []
    for meta, mask in zip(replace.metas, replace.mask[..., 0] > 127):
        pts = meta.body[(meta.body[:, 2] >= 0.5)][:, :2] * (w, h)
        pts = pts[(pts[:, 0] >= 0) & (pts[:, 0] < w) & (pts[:, 1] >= 0) & (pts[:, 1] < h)].astype(int)
        covered.append(bool(mask[pts[:, 1], pts[:, 0]].all()) and len(pts) > 0)
    print(f"replace: mask covers the body keypoints in {np.mean(covered):.0%} of {t} frames")
    assert np.mean(covered) >= 0.95, f"mask covers the body keypoints in {np.mean(covered):.0%} of frames"
    inside = replace.mask[..., 0] > 127
    assert (replace.background[inside] == 0).all()
