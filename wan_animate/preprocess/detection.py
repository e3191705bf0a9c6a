"""The keypoint-backend interface and the gap filling shared by all backends.

A backend turns RGB frames into 133 COCO-WholeBody keypoints per frame (pixels, score
column) plus, optionally, a person segmentation. Frames where a backend finds no person
are filled from the nearest frame that has one, and counted.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np

from wan_animate.errors import InputError

Progress = Callable[[int, int], None]      # (done, total)


@dataclass
class Detections:
    """Backend output for T frames of size H x W.

    keypoints: float [T, 133, 3] pixel (x, y, score); person / face: bool [T] (found);
    segmentation: float32 [T, H, W] in [0, 1] (1 = person) or None.
    """

    keypoints: np.ndarray
    person: np.ndarray
    face: np.ndarray
    segmentation: np.ndarray | None = None
    misses: int = 0            # frames where a detector found no person box (whole image used)


class KeypointBackend(Protocol):
    """Anything that detects whole-body keypoints in RGB frames."""

    name: str

    def detect(self, frames: np.ndarray, video: bool = True, segment: bool = False,
               on_progress: Progress | None = None,
               cancelled: Callable[[], bool] | None = None) -> Detections:
        """``frames`` uint8 [T, H, W, 3] RGB; ``video`` = consecutive frames of one clip
        (trackers may be used), else independent images."""
        ...


def nearest_valid(valid: np.ndarray) -> np.ndarray:
    """For each index, the nearest index with ``valid`` True (earlier wins ties).

    Raises InputError when nothing is valid.
    """
    idx = np.flatnonzero(valid)
    if idx.size == 0:
        raise InputError("no person was detected in any frame")
    t = np.arange(valid.shape[0])
    pos = np.searchsorted(idx, t)
    before = idx[np.clip(pos - 1, 0, idx.size - 1)]
    after = idx[np.clip(pos, 0, idx.size - 1)]
    return np.where(np.abs(t - before) <= np.abs(after - t), before, after)


def fill_missing(det: Detections) -> tuple[Detections, int, int]:
    """Fill frames without a person (all keypoints) and without a face (face rows, moved
    with the nose) from their nearest valid frame. Returns (filled, no_person, no_face)."""
    kps = det.keypoints.copy()
    person, face = det.person.copy(), det.face & det.person
    no_person = int((~person).sum())
    src = nearest_valid(person)
    kps[~person] = kps[src[~person]]
    no_face = int((~face).sum())
    if face.any() and no_face:
        fsrc = nearest_valid(face)
        for t in np.flatnonzero(~face):
            s = fsrc[t]
            shift = kps[t, 0, :2] - kps[s, 0, :2]          # move with the nose
            kps[t, 23:91, :2] = kps[s, 23:91, :2] + shift
            kps[t, 23:91, 2] = kps[s, 23:91, 2]
    filled = Detections(kps, np.ones_like(person), face | face.any(), det.segmentation, det.misses)
    return filled, no_person, no_face


def smooth_keypoints(kps: np.ndarray, radius: int) -> np.ndarray:
    """Score-weighted moving average of the coordinates over ``2 * radius + 1`` frames.

    ``kps`` [T, K, 3]; scores are kept. ``radius = 0`` returns a copy (official: no smoothing).
    """
    out = kps.copy()
    if radius <= 0 or kps.shape[0] < 2:
        return out
    w = np.clip(kps[..., 2:3], 1e-3, None)                   # [T, K, 1]
    num = np.zeros_like(kps[..., :2])
    den = np.zeros_like(w)
    t_len = kps.shape[0]
    for d in range(-radius, radius + 1):
        lo, hi = max(0, -d), min(t_len, t_len - d)
        num[lo:hi] += kps[lo + d:hi + d, :, :2] * w[lo + d:hi + d]
        den[lo:hi] += w[lo + d:hi + d]
    out[..., :2] = num / den
    return out
