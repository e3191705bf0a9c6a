"""MediaPipe Tasks backend: model lookup, keypoint mapping, backend selection, and a real run
through the Tasks API on ``.task`` bundles built from the models mediapipe 0.10.21 ships."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from wan_animate.errors import CheckpointError
from wan_animate.preprocess import mediapipe_pose, mediapipe_tasks
from wan_animate.preprocess.mediapipe_pose import (FACEMESH_TO_IBUG, FOUND_SCORE, POSE_TO_COCO,
                                                   holistic_to_wholebody, make_mediapipe_backend)
from wan_animate.preprocess.mediapipe_tasks import (MediaPipeTasksBackend, TaskModels, find_task_models,
                                                    hand_box, head_box, square_box, tasks_to_wholebody,
                                                    to_image_coords)


@dataclass
class Lm:
    """A Tasks ``NormalizedLandmark`` stand-in (x, y normalised; visibility may be None)."""

    x: float
    y: float
    visibility: float | None = None


def _task_dir(root: Path, *names: str) -> Path:
    folder = root / "mediapipe"
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        (folder / n).write_bytes(b"x")
    return root


def test_find_task_models(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="mediapipe==0.10.21"):
        find_task_models(None)
    with pytest.raises(CheckpointError, match="setup download --with mediapipe") as e:
        find_task_models(_task_dir(tmp_path, "hand_landmarker.task"))
    assert "face_landmarker.task" in str(e.value) and "pose_landmarker" in str(e.value)
    _task_dir(tmp_path, "face_landmarker.task", "pose_landmarker_lite.task")
    assert find_task_models(tmp_path).pose.name == "pose_landmarker_lite.task"
    _task_dir(tmp_path, "pose_landmarker_heavy.task")
    models = find_task_models(tmp_path)                       # the heaviest pose model wins
    assert (models.pose.name, models.hand.name, models.face.name) == (
        "pose_landmarker_heavy.task", "hand_landmarker.task", "face_landmarker.task")


def _holistic(pose: list[Lm], face: list[Lm] | None, lh: list[Lm] | None, rh: list[Lm] | None) -> object:
    class L:
        def __init__(self, pts: list[Lm]) -> None:
            self.landmark = pts
    wrap = lambda p: None if p is None else L(p)  # noqa: E731
    return type("R", (), {"pose_landmarks": wrap(pose), "face_landmarks": wrap(face),
                          "left_hand_landmarks": wrap(lh), "right_hand_landmarks": wrap(rh)})()


def test_tasks_landmarks_map_like_holistic() -> None:
    rng = np.random.default_rng(0)
    w, h = 320, 240
    pose = [Lm(*rng.uniform(0.2, 0.8, 2), float(v)) for v in rng.uniform(0.2, 1.0, 33)]
    face = [Lm(*rng.uniform(0.3, 0.5, 2)) for _ in range(478)]          # v2 model: 468 + 10 iris
    lw, rw = np.array([pose[15].x, pose[15].y]), np.array([pose[16].x, pose[16].y])
    left = [Lm(*(lw + rng.normal(0, 0.01, 2))) for _ in range(21)]
    right = [Lm(*(rw + rng.normal(0, 0.01, 2))) for _ in range(21)]
    kps, person, found_face = tasks_to_wholebody(pose, face, [right, left], w, h)   # order must not matter
    assert person and found_face and kps.shape == (133, 3)
    ref, _, _ = holistic_to_wholebody(_holistic(pose, face[:468], left, right), w, h)
    assert np.array_equal(kps, ref)
    assert np.allclose(kps[:17, :2], [[pose[i].x * w, pose[i].y * h] for i in POSE_TO_COCO])
    assert np.allclose(kps[23:91, :2], [[face[i].x * w, face[i].y * h] for i in FACEMESH_TO_IBUG])
    assert np.allclose(kps[91:112, :2], [[p.x * w, p.y * h] for p in left])         # left hand slot
    assert np.allclose(kps[112:133, :2], [[p.x * w, p.y * h] for p in right])
    assert (kps[91:, 2] == FOUND_SCORE).all()
    # no face: a pseudo face around the head; one hand: the other slot sits at its wrist, score 0
    kps, _, found_face = tasks_to_wholebody(pose, None, [right], w, h)
    assert not found_face and (kps[23:91, 2] < FOUND_SCORE).all()
    assert np.allclose(kps[91:112, :2], lw * (w, h)) and (kps[91:112, 2] == 0).all()
    kps, person, _ = tasks_to_wholebody(None, None, [], w, h)
    assert not person and (kps[:, 2] == 0).all()


def test_crops_and_crop_coordinates() -> None:
    assert square_box(50, 50, 40, 100, 100) == (30, 30, 70, 70)
    assert square_box(0, 0, 40, 100, 100) is None                      # 20 px left after clipping
    assert square_box(98, 50, 200, 100, 100) == (0, 0, 100, 100)
    pts = to_image_coords([Lm(0.0, 0.0, None), Lm(1.0, 0.5, 0.7)], (10, 20, 50, 100), 200, 100)
    assert (pts[0].x, pts[0].y, pts[0].visibility) == (10 / 200, 20 / 100, 0.0)
    assert (pts[1].x, pts[1].y, pts[1].visibility) == (50 / 200, 60 / 100, 0.7)
    px = np.zeros((33, 2))
    vis = np.ones(33)
    px[:11] = [[100 + 4 * i, 80 + 2 * (i % 3)] for i in range(11)]     # head points span 40 x 4 px
    box = head_box(px, vis, 640, 480)
    assert box is not None and box[2] - box[0] == round(mediapipe_tasks.HEAD_CROP_SCALE * 40)
    px[15], px[17], px[19] = (300, 300), (310, 320), (290, 320)          # left wrist, pinky, index
    box = hand_box(px, vis, "left", 640, 480)
    side = mediapipe_tasks.HAND_CROP_SCALE * 20
    assert box == (round(300 - side / 2), round(320 - side / 2), round(300 + side / 2), round(320 + side / 2))
    vis[15] = 0.1
    assert hand_box(px, vis, "left", 640, 480) is None and head_box(px, np.zeros(33), 640, 480) is None


def test_backend_selection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("mediapipe")
    ck = _task_dir(tmp_path, "pose_landmarker_full.task", "hand_landmarker.task", "face_landmarker.task")
    assert isinstance(make_mediapipe_backend(ck), mediapipe_pose.MediaPipeBackend)   # legacy preferred

    def no_legacy() -> None:
        raise CheckpointError("no holistic here")
    monkeypatch.setattr(mediapipe_pose, "_import_mediapipe", no_legacy)
    backend = make_mediapipe_backend(ck)
    assert isinstance(backend, MediaPipeTasksBackend) and backend.models.pose.parent == ck / "mediapipe"
    with pytest.raises(CheckpointError, match="setup download --with mediapipe"):
        make_mediapipe_backend(tmp_path / "elsewhere")

    def no_mediapipe() -> None:
        raise CheckpointError("no mediapipe")
    monkeypatch.setattr(mediapipe_tasks, "import_tasks", no_mediapipe)
    with pytest.raises(CheckpointError, match="no holistic here"):
        make_mediapipe_backend(ck)


# ---- the real Tasks API ------------------------------------------------------------------------
def _bundle_tasks(folder: Path) -> TaskModels:
    """.task bundles from the TFLite models bundled with mediapipe 0.10.21 (the pose landmark
    model gets the normalisation metadata the Tasks graph needs)."""
    mp = pytest.importorskip("mediapipe")
    from mediapipe.tasks.python.metadata.metadata_writers import metadata_info, metadata_writer
    from mediapipe.tasks.python.metadata.metadata_writers.model_asset_bundle_utils import (
        create_model_asset_bundle)
    mods = Path(mp.__file__).parent / "modules"
    need = ["pose_detection/pose_detection.tflite", "pose_landmark/pose_landmark_full.tflite",
            "palm_detection/palm_detection_full.tflite", "hand_landmark/hand_landmark_full.tflite",
            "face_detection/face_detection_short_range.tflite", "face_landmark/face_landmark.tflite"]
    if not all((mods / n).is_file() for n in need):
        pytest.skip("this mediapipe ships no legacy TFLite models to bundle")
    read = lambda n: (mods / n).read_bytes()  # noqa: E731
    writer = metadata_writer.MetadataWriter.create(bytearray(read(need[1]))).add_general_info("pose", "")
    writer.add_image_input(norm_mean=[0.0], norm_std=[255.0],
                           color_space_type=metadata_info._metadata_fb.ColorSpaceType.RGB)
    for i in range(5):
        writer.add_feature_output(name=f"output_{i}")
    pose_model, _ = writer.populate()
    models = TaskModels(folder / "pose_landmarker_full.task", folder / "hand_landmarker.task",
                        folder / "face_landmarker.task")
    create_model_asset_bundle({"pose_detector.tflite": read(need[0]),
                               "pose_landmarks_detector.tflite": bytes(pose_model)}, str(models.pose))
    create_model_asset_bundle({"hand_detector.tflite": read(need[2]),
                               "hand_landmarks_detector.tflite": read(need[3])}, str(models.hand))
    create_model_asset_bundle({"face_detector.tflite": read(need[4]),
                               "face_landmarks_detector.tflite": read(need[5])}, str(models.face))
    return models


def _frames(video: Path, idx: tuple[int, ...]) -> np.ndarray:
    import av
    out = []
    with av.open(str(video)) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i in idx:
                out.append(f.to_ndarray(format="rgb24"))
            if i >= max(idx):
                break
    return np.stack(out)


def test_tasks_backend_matches_legacy_on_a_real_clip(tmp_path: Path, samples: Path) -> None:
    models = _bundle_tasks(tmp_path)
    frames = _frames(samples / "animate" / "video.mp4", (0, 25, 75))
    h, w = frames.shape[1:3]
    steps: list[int] = []
    ours = MediaPipeTasksBackend(models).detect(frames, segment=True,
                                                on_progress=lambda d, n: steps.append(d))
    ref = mediapipe_pose.MediaPipeBackend().detect(frames, segment=True)
    assert steps == [1, 2, 3] and ours.person.all() and ref.person.all() and ours.face.all()
    diag = float(np.hypot(h, w))
    assert np.abs(ours.keypoints[:, :17, :2] - ref.keypoints[:, :17, :2]).max() < 0.02 * diag
    both = (ours.keypoints[:, [91, 112], 2] > 0) & (ref.keypoints[:, [91, 112], 2] > 0)   # [T, 2]
    assert both.sum() >= 4, f"hands found by both backends: {both.sum()} of 6"
    for t, s in zip(*np.nonzero(both)):
        sl = slice(91 + 21 * s, 112 + 21 * s)
        assert np.abs(ours.keypoints[t, sl, :2] - ref.keypoints[t, sl, :2]).mean() < 0.02 * diag
    inter = ((ours.segmentation > 0.5) & (ref.segmentation > 0.5)).sum()
    union = ((ours.segmentation > 0.5) | (ref.segmentation > 0.5)).sum()
    assert inter / union > 0.9
    # NOTE: face *positions* are not compared: the Tasks face graph expects the v2 (478-point)
    # landmark model of face_landmarker.task, which cannot be bundled from mediapipe 0.10.21.
    bad = TaskModels(models.hand, models.hand, models.face)
    with pytest.raises(CheckpointError, match="cannot load MediaPipe Tasks model"):
        MediaPipeTasksBackend(bad).detect(frames[:1])
