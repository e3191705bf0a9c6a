"""MediaPipe Tasks keypoint backend: ``.task`` models from ``process_checkpoint/mediapipe/``.

mediapipe >= 0.10.30 no longer ships the legacy Holistic solution (nor its models); its
Tasks API loads downloaded model bundles instead (``wan-animate setup download --with
mediapipe``). This backend runs the pose, face and hand landmarkers frame by frame (IMAGE
mode, like the legacy backend's default) and maps them onto the same 133-point layout
through :func:`~wan_animate.preprocess.mediapipe_pose.holistic_to_wholebody`.

As Holistic does, the face and the hands are looked for in crops around the head and the
wrists that the pose model found: on a whole 720p frame a person's face and hands are too
small for the face / palm detectors.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from wan_animate.checkpoints.layout import MEDIAPIPE_DIR, PROCESS_DIR
from wan_animate.errors import Cancelled, CheckpointError
from wan_animate.preprocess.detection import Detections, Progress
from wan_animate.preprocess.mediapipe_pose import (MP_L_WRIST, MP_R_WRIST, holistic_to_wholebody)

TASKS_DIR = Path(MEDIAPIPE_DIR).relative_to(PROCESS_DIR).as_posix()   # inside --ckpt_path
POSE_FILES = ("pose_landmarker_heavy.task", "pose_landmarker_full.task", "pose_landmarker_lite.task")
HAND_FILE = "hand_landmarker.task"
FACE_FILE = "face_landmarker.task"
DOWNLOAD_HINT = "wan-animate setup download --with mediapipe"

HEAD_POINTS = tuple(range(11))     # nose, eyes, ears, mouth corners (MediaPipe pose indices)
HEAD_CROP_SCALE = 2.4              # crop side / larger extent of the head points
HAND_POINTS = {"left": (MP_L_WRIST, 17, 19), "right": (MP_R_WRIST, 18, 20)}   # wrist, pinky, index
HAND_CROP_SCALE = 6.0              # crop side / wrist-to-knuckles distance
MIN_CROP = 32                      # smallest crop side in pixels
MIN_ROI_VISIBILITY = 0.3           # pose landmarks needed to look for a face / hand


@dataclass(frozen=True)
class TaskModels:
    """Paths of the three ``.task`` bundles."""

    pose: Path
    hand: Path
    face: Path


def find_task_models(ckpt_path: str | Path | None) -> TaskModels:
    """The ``.task`` files under ``ckpt_path/mediapipe`` (heaviest pose model first).

    Raises CheckpointError naming what is missing and how to get it.
    """
    if ckpt_path is None:
        raise CheckpointError(
            "this mediapipe has no bundled Holistic models (mediapipe >= 0.10.30): install "
            "`mediapipe==0.10.21`, or pass --ckpt_path with the MediaPipe Tasks models in "
            f"mediapipe/ ({DOWNLOAD_HINT}), or the official YOLO/ViTPose models")
    folder = Path(ckpt_path) / TASKS_DIR
    pose = next((folder / f for f in POSE_FILES if (folder / f).is_file()), None)
    if pose is None:
        pose = next(iter(sorted(folder.glob("pose_landmarker*.task"))), None)
    missing = [n for n, p in (("pose_landmarker_heavy.task", pose), (HAND_FILE, folder / HAND_FILE),
                              (FACE_FILE, folder / FACE_FILE)) if p is None or not p.is_file()]
    if missing:
        raise CheckpointError(
            f"this mediapipe has no bundled Holistic models and {folder} lacks {', '.join(missing)}: "
            f"run `{DOWNLOAD_HINT}` (or install `mediapipe==0.10.21`)")
    return TaskModels(pose=pose, hand=folder / HAND_FILE, face=folder / FACE_FILE)  # type: ignore[arg-type]


@dataclass(frozen=True)
class _Point:
    """A landmark in whole-image normalised coordinates (what Holistic returns)."""

    x: float
    y: float
    visibility: float = 0.0


@dataclass(frozen=True)
class _Landmarks:
    landmark: list[_Point]


@dataclass(frozen=True)
class _HolisticLike:
    pose_landmarks: _Landmarks | None
    face_landmarks: _Landmarks | None
    left_hand_landmarks: _Landmarks | None
    right_hand_landmarks: _Landmarks | None


Box = tuple[int, int, int, int]    # x0, y0, x1, y1 in pixels (exclusive end)


def square_box(cx: float, cy: float, side: float, w: int, h: int) -> Box | None:
    """A square of ``side`` pixels centred at (cx, cy), clipped to the image; None when
    less than MIN_CROP pixels of it remain on either axis."""
    half = max(side, MIN_CROP) / 2
    x0, y0 = max(int(round(cx - half)), 0), max(int(round(cy - half)), 0)
    x1, y1 = min(int(round(cx + half)), w), min(int(round(cy + half)), h)
    if x1 - x0 < MIN_CROP or y1 - y0 < MIN_CROP:
        return None
    return x0, y0, x1, y1


def head_box(pose_px: np.ndarray, vis: np.ndarray, w: int, h: int) -> Box | None:
    """Crop for the face landmarker from pose landmarks ``pose_px`` [33, 2] pixels."""
    idx = [i for i in HEAD_POINTS if vis[i] >= MIN_ROI_VISIBILITY]
    if len(idx) < 3:
        return None
    pts = pose_px[idx]
    extent = float(np.ptp(pts, axis=0).max())
    cx, cy = pts.mean(axis=0)
    return square_box(cx, cy, HEAD_CROP_SCALE * extent, w, h)


def hand_box(pose_px: np.ndarray, vis: np.ndarray, side: str, w: int, h: int) -> Box | None:
    """Crop for the hand landmarker around one wrist: centred on the knuckles (mean of
    the pose model's pinky and index points), HAND_CROP_SCALE x the wrist-knuckle distance."""
    wrist, pinky, index = HAND_POINTS[side]
    if vis[wrist] < MIN_ROI_VISIBILITY:
        return None
    knuckles = (pose_px[pinky] + pose_px[index]) / 2
    reach = float(np.linalg.norm(knuckles - pose_px[wrist]))
    return square_box(knuckles[0], knuckles[1], HAND_CROP_SCALE * reach, w, h)


def to_image_coords(landmarks: Sequence[Any], box: Box, w: int, h: int) -> list[_Point]:
    """Landmarks normalised to a crop ``box`` -> normalised to the whole ``w`` x ``h`` image."""
    x0, y0, x1, y1 = box
    return [_Point((x0 + p.x * (x1 - x0)) / w, (y0 + p.y * (y1 - y0)) / h, float(p.visibility or 0.0))
            for p in landmarks]


def tasks_to_wholebody(pose: Sequence[Any] | None, face: Sequence[Any] | None,
                       hands: Sequence[Sequence[Any]], w: int, h: int) -> tuple[np.ndarray, bool, bool]:
    """Tasks landmarks (whole-image normalised: 33 pose with visibility, 468/478 face,
    up to two 21-point hands in any order) -> ([133, 3] pixel keypoints, person found,
    face found), exactly the legacy backend's layout."""
    def wrap(points: Sequence[Any] | None) -> _Landmarks | None:
        if points is None:
            return None
        return _Landmarks([_Point(float(p.x), float(p.y), float(p.visibility or 0.0)) for p in points])
    hand_sets = [wrap(hd) for hd in hands[:2]] + [None, None]
    res = _HolisticLike(wrap(pose), wrap(face), hand_sets[0], hand_sets[1])
    return holistic_to_wholebody(res, w, h)


def _nearest(candidates: Sequence[Sequence[_Point]], target: np.ndarray, w: int, h: int
             ) -> tuple[list[_Point] | None, float]:
    best, dist = None, float("inf")
    for cand in candidates:
        d = float(np.hypot(cand[0].x * w - target[0], cand[0].y * h - target[1]))
        if d < dist:
            best, dist = list(cand), d
    return best, dist


def import_tasks() -> tuple[Any, Any, Any]:
    """(mediapipe, BaseOptions, vision) or CheckpointError with the install hint."""
    try:
        import mediapipe as mp
        from mediapipe.tasks.python import BaseOptions, vision
    except ImportError as e:
        raise CheckpointError(f"the MediaPipe Tasks backend needs `pip install mediapipe` ({e})") from e
    return mp, BaseOptions, vision


class MediaPipeTasksBackend:
    """Pose / face / hand landmarkers from ``.task`` files, on CPU, one frame at a time."""

    name = "mediapipe-tasks"

    def __init__(self, models: TaskModels, min_confidence: float = 0.5) -> None:
        self.models = models
        self.min_confidence = min_confidence

    def _open(self, stack: contextlib.ExitStack, segment: bool) -> tuple[Any, Any, Any, Any]:
        mp, base, vision = import_tasks()
        conf = self.min_confidence
        specs = (
            (vision.PoseLandmarker, self.models.pose, lambda o: vision.PoseLandmarkerOptions(
                base_options=o, num_poses=1, min_pose_detection_confidence=conf,
                min_pose_presence_confidence=conf, output_segmentation_masks=segment)),
            (vision.FaceLandmarker, self.models.face, lambda o: vision.FaceLandmarkerOptions(
                base_options=o, num_faces=1, min_face_detection_confidence=conf,
                min_face_presence_confidence=conf)),
            (vision.HandLandmarker, self.models.hand, lambda o: vision.HandLandmarkerOptions(
                base_options=o, num_hands=2, min_hand_detection_confidence=conf,
                min_hand_presence_confidence=conf)))
        out = []
        for cls, path, options in specs:
            try:
                model = cls.create_from_options(options(base(model_asset_path=str(path))))
            except (RuntimeError, ValueError) as e:   # mediapipe reports bad bundles as RuntimeError
                raise CheckpointError(f"cannot load MediaPipe Tasks model {path}: {e}") from e
            out.append(stack.enter_context(model))
        return mp, out[0], out[1], out[2]

    def detect(self, frames: np.ndarray, video: bool = True, segment: bool = False,
               on_progress: Progress | None = None,
               cancelled: Callable[[], bool] | None = None) -> Detections:
        t_len, h, w = frames.shape[:3]
        kps = np.zeros((t_len, 133, 3))
        person = np.zeros(t_len, bool)
        face = np.zeros(t_len, bool)
        seg = np.zeros((t_len, h, w), np.float32) if segment else None
        with contextlib.ExitStack() as stack:
            mp, pose_model, face_model, hand_model = self._open(stack, segment)

            def image(arr: np.ndarray) -> Any:
                return mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(arr))

            for t in range(t_len):
                if cancelled is not None and cancelled():
                    raise Cancelled("preprocessing cancelled")
                frame = frames[t]
                res = pose_model.detect(image(frame))
                pose = res.pose_landmarks[0] if res.pose_landmarks else None
                face_pts, hands = None, []
                if pose is not None:
                    face_pts, hands = self._face_and_hands(frame, pose, face_model, hand_model, image)
                    if seg is not None and res.segmentation_masks:
                        seg[t] = np.asarray(res.segmentation_masks[0].numpy_view(), np.float32).reshape(h, w)
                kps[t], person[t], face[t] = tasks_to_wholebody(pose, face_pts, hands, w, h)
                if on_progress is not None:
                    on_progress(t + 1, t_len)
        return Detections(kps, person, face, seg)

    @staticmethod
    def _face_and_hands(frame: np.ndarray, pose: Sequence[Any], face_model: Any, hand_model: Any,
                        image: Callable[[np.ndarray], Any]
                        ) -> tuple[list[_Point] | None, list[list[_Point]]]:
        h, w = frame.shape[:2]
        px = np.array([[p.x * w, p.y * h] for p in pose])
        vis = np.array([float(p.visibility or 0.0) for p in pose])
        face_pts = None
        box = head_box(px, vis, w, h)
        if box is not None:
            found = face_model.detect(image(frame[box[1]:box[3], box[0]:box[2]])).face_landmarks
            if found:
                face_pts = to_image_coords(found[0], box, w, h)
        chosen: dict[str, tuple[list[_Point], float]] = {}
        for side in ("left", "right"):
            box = hand_box(px, vis, side, w, h)
            if box is None:
                continue
            found = hand_model.detect(image(frame[box[1]:box[3], box[0]:box[2]])).hand_landmarks
            cands = [to_image_coords(hd, box, w, h) for hd in found]
            hand, dist = _nearest(cands, px[HAND_POINTS[side][0]], w, h)
            if hand is not None and dist <= max(box[2] - box[0], box[3] - box[1]) / 2:
                chosen[side] = (hand, dist)
        if len(chosen) == 2:     # both crops found the same hand: keep it for the closer wrist
            (a, da), (b, db) = chosen["left"], chosen["right"]
            size = np.hypot((a[9].x - a[0].x) * w, (a[9].y - a[0].y) * h)     # wrist -> middle knuckle
            if np.hypot((a[0].x - b[0].x) * w, (a[0].y - b[0].y) * h) < 0.5 * size:
                chosen.pop("left" if da > db else "right")
        return face_pts, [hand for hand, _ in chosen.values()]
