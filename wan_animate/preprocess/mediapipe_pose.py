"""MediaPipe Holistic keypoint backend (CPU, offline: the models ship inside mediapipe <= 0.10.21).

Maps Holistic's 33 pose + 468 face-mesh + 2x21 hand landmarks onto the 133-point
COCO-WholeBody layout the official pipeline uses (ViTPose's layout), and returns the
Holistic person segmentation for replace mode. :func:`make_mediapipe_backend` falls back
to the Tasks API backend (``mediapipe_tasks.py``, downloaded ``.task`` models) when this
mediapipe has no bundled Holistic (>= 0.10.30).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from wan_animate.errors import CheckpointError, Cancelled
from wan_animate.preprocess.detection import Detections, KeypointBackend, Progress

# COCO-WholeBody body 0..16 <- MediaPipe pose landmarks.
POSE_TO_COCO = (0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28)
# 68 iBUG face points <- 468-point FaceMesh indices.
FACEMESH_TO_IBUG = (162, 234, 93, 58, 172, 136, 149, 148, 152, 377, 378, 365, 397, 288, 323, 454,
                    389, 71, 63, 105, 66, 107, 336, 296, 334, 293, 301, 168, 197, 5, 4, 75, 97, 2,
                    326, 305, 33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380, 61, 39,
                    37, 0, 267, 269, 291, 405, 314, 17, 84, 181, 78, 82, 13, 312, 308, 317, 14, 87)
FOUND_SCORE = 0.9          # score given to face / hand landmarks MediaPipe found
PSEUDO_FACE_SCORE = 0.3    # face box built from pose landmarks when the face mesh is missing
MP_L_WRIST, MP_R_WRIST = 15, 16
MP_L_HEEL, MP_R_HEEL, MP_L_FOOT, MP_R_FOOT = 29, 30, 31, 32


def _import_mediapipe() -> Any:
    try:
        from mediapipe.python.solutions import holistic
    except ImportError as e:
        raise CheckpointError(
            "the MediaPipe backend needs `pip install mediapipe==0.10.21` (the last release that "
            "bundles the Holistic models; it needs numpy<2, protobuf<5) or a process_checkpoint "
            f"folder for the official YOLO/ViTPose backend ({e})") from e
    return holistic


def _xy(landmarks: Any, w: int, h: int) -> np.ndarray:
    return np.array([[p.x * w, p.y * h] for p in landmarks.landmark], dtype=np.float64)


def _pseudo_face(body: np.ndarray) -> np.ndarray:
    """68 points on an ellipse around the head from pose landmarks (nose, eyes, ears)."""
    nose = body[0, :2]
    ears = body[3:5, :2]
    eyes = body[1:3, :2]
    width = max(np.linalg.norm(ears[0] - ears[1]), 2.2 * np.linalg.norm(eyes[0] - eyes[1]), 4.0)
    ang = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    cx, cy = nose[0], nose[1] + 0.1 * width
    pts = np.stack([cx + 0.5 * width * np.cos(ang), cy + 0.65 * width * np.sin(ang)], 1)
    return np.concatenate([pts, np.full((68, 1), PSEUDO_FACE_SCORE)], 1)


def holistic_to_wholebody(res: Any, w: int, h: int) -> tuple[np.ndarray, bool, bool]:
    """One Holistic result -> ([133, 3] pixel keypoints, person found, face found)."""
    kps = np.full((133, 3), -1.0)
    kps[:, 2] = 0.0
    if res.pose_landmarks is None:
        return kps, False, False
    pose = _xy(res.pose_landmarks, w, h)
    vis = np.clip([p.visibility for p in res.pose_landmarks.landmark], 0.01, 0.99)
    kps[:17, :2] = pose[list(POSE_TO_COCO)]
    kps[:17, 2] = vis[list(POSE_TO_COCO)]
    for base, foot, heel, ankle in ((17, MP_L_FOOT, MP_L_HEEL, 15), (20, MP_R_FOOT, MP_R_HEEL, 16)):
        toe, hl = pose[foot], pose[heel]
        side = np.array([-(toe - hl)[1], (toe - hl)[0]]) * 0.25
        kps[base, :2], kps[base + 1, :2], kps[base + 2, :2] = toe, toe + side, hl
        for j, src in zip(range(3), (foot, foot, heel)):
            kps[base + j, 2] = min(kps[ankle, 2], vis[src])
    face_found = res.face_landmarks is not None
    if face_found:
        kps[23:91, :2] = _xy(res.face_landmarks, w, h)[list(FACEMESH_TO_IBUG)]
        kps[23:91, 2] = FOUND_SCORE
    else:
        kps[23:91] = _pseudo_face(kps[:17])
    wrists = {"left": pose[MP_L_WRIST], "right": pose[MP_R_WRIST]}
    hands = [_xy(hl, w, h) for hl in (res.left_hand_landmarks, res.right_hand_landmarks) if hl is not None]
    slots = {"left": 91, "right": 112}
    taken: set[str] = set()
    for hand in hands:   # assign each hand to the side whose pose wrist is closer
        order = sorted(slots, key=lambda s: np.linalg.norm(hand[0] - wrists[s]))
        side = next(s for s in order if s not in taken)
        taken.add(side)
        kps[slots[side]:slots[side] + 21, :2] = hand
        kps[slots[side]:slots[side] + 21, 2] = FOUND_SCORE
    for side in set(slots) - taken:  # missing hand: at its wrist, score 0 (never drawn)
        kps[slots[side]:slots[side] + 21, :2] = wrists[side]
    return kps, True, face_found


class MediaPipeBackend:
    """MediaPipe Holistic (model_complexity 1) on CPU.

    ``tracking=False`` (default) detects every frame from scratch: Holistic's tracker lags
    behind fast camera moves (zooms) on resampled videos, a fresh detection does not.
    """

    name = "mediapipe"

    def __init__(self, model_complexity: int = 1, min_confidence: float = 0.5,
                 tracking: bool = False) -> None:
        self.model_complexity = model_complexity
        self.min_confidence = min_confidence
        self.tracking = tracking

    def detect(self, frames: np.ndarray, video: bool = True, segment: bool = False,
               on_progress: Progress | None = None,
               cancelled: Callable[[], bool] | None = None) -> Detections:
        holistic = _import_mediapipe()
        t_len, h, w = frames.shape[:3]
        kps = np.zeros((t_len, 133, 3))
        person = np.zeros(t_len, bool)
        face = np.zeros(t_len, bool)
        seg = np.zeros((t_len, h, w), np.float32) if segment else None
        track = video and self.tracking
        with holistic.Holistic(static_image_mode=not track, model_complexity=self.model_complexity,
                               enable_segmentation=segment, smooth_segmentation=track,
                               min_detection_confidence=self.min_confidence,
                               min_tracking_confidence=self.min_confidence) as model:
            for t in range(t_len):
                if cancelled is not None and cancelled():
                    raise Cancelled("preprocessing cancelled")
                res = model.process(np.ascontiguousarray(frames[t]))
                kps[t], person[t], face[t] = holistic_to_wholebody(res, w, h)
                if seg is not None and res.segmentation_mask is not None and person[t]:
                    seg[t] = res.segmentation_mask
                if on_progress is not None:
                    on_progress(t + 1, t_len)
        return Detections(kps, person, face, seg)


def make_mediapipe_backend(ckpt_path: str | Path | None = None) -> KeypointBackend:
    """The legacy Holistic backend when this mediapipe bundles it (preferred), else the
    Tasks backend with the ``.task`` models in ``ckpt_path/mediapipe/`` (CheckpointError
    naming the missing files / package otherwise)."""
    try:
        _import_mediapipe()
    except CheckpointError as legacy:
        from wan_animate.preprocess.mediapipe_tasks import (MediaPipeTasksBackend, find_task_models,
                                                            import_tasks)
        try:
            import_tasks()
        except CheckpointError:
            raise legacy from None       # no mediapipe at all: the install hint
        return MediaPipeTasksBackend(find_task_models(ckpt_path))
    return MediaPipeBackend()
