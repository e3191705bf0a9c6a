"""The official keypoint layout: 133 COCO-WholeBody points -> 20 body + 2x21 hands + 69 face.

A :class:`PoseMeta` holds one frame in *normalised* coordinates (x / W, y / H; points may
lie outside [0, 1]) with a score column, exactly like the official ``meta`` dicts.
A :class:`PixelPose` holds what the renderer draws (pixel coordinates + scores).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wan_animate.errors import InputError

NUM_WHOLEBODY = 133

# The 20 body points, each the mean of two COCO-WholeBody rows (a + b) / 2:
# Nose, Neck, RShoulder, RElbow, RWrist, LShoulder, LElbow, LWrist, RHip, RKnee, RAnkle,
# LHip, LKnee, LAnkle, REye, LEye, REar, LEar, LToe, RToe.
BODY_ROWS_A = (0, 6, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3, 17, 20)
BODY_ROWS_B = (0, 5, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3, 18, 21)
LEFT_HAND = slice(91, 112)
RIGHT_HAND = slice(112, 133)
FACE = slice(22, 91)   # 69 rows: row 0 is a foot point (index 22), rows 1..68 the 68 face landmarks

BODY_NAMES = ("Nose", "Neck", "RShoulder", "RElbow", "RWrist", "LShoulder", "LElbow", "LWrist",
              "RHip", "RKnee", "RAnkle", "LHip", "LKnee", "LAnkle", "REye", "LEye", "REar", "LEar",
              "LToe", "RToe")


@dataclass(frozen=True)
class PoseMeta:
    """One frame's keypoints, normalised by (width, height).

    body [20, 3], left_hand [21, 3], right_hand [21, 3], face [69, 3] float64: (x/W, y/H, score).
    """

    width: int
    height: int
    body: np.ndarray
    left_hand: np.ndarray
    right_hand: np.ndarray
    face: np.ndarray

    def to_pixels(self) -> "PixelPose":
        """Pixel coordinates as the official ``AAPoseMeta.from_humanapi_meta`` computes them."""
        wh = (self.width, self.height)
        return PixelPose(
            width=self.width, height=self.height,
            body=self.body[:, :2] * wh, body_p=self.body[:, 2].copy(),
            lhand=self.left_hand[:, :2] * wh, lhand_p=self.left_hand[:, 2].copy(),
            rhand=self.right_hand[:, :2] * wh, rhand_p=self.right_hand[:, 2].copy())


@dataclass(frozen=True)
class PixelPose:
    """What the renderer draws: body [20, 2], hands [21, 2] in pixels (float64; NaN = absent),
    scores [20] / [21]; the canvas is ``height`` x ``width``."""

    width: int
    height: int
    body: np.ndarray
    body_p: np.ndarray
    lhand: np.ndarray
    lhand_p: np.ndarray
    rhand: np.ndarray
    rhand_p: np.ndarray


def split_wholebody(kp2ds: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """[133, C] -> body [20, C], left hand [21, C], right hand [21, C], face [69, C] (copies)."""
    # Ported from Wan2.2 .../preprocess/pose2d_utils.py::split_kp2ds_for_aa
    kp2ds = np.asarray(kp2ds)
    if kp2ds.ndim != 2 or kp2ds.shape[0] != NUM_WHOLEBODY:
        raise InputError(f"expected [133, C] whole-body keypoints, got {kp2ds.shape}")
    body = (kp2ds[list(BODY_ROWS_A)] + kp2ds[list(BODY_ROWS_B)]) / 2
    return body, kp2ds[LEFT_HAND].copy(), kp2ds[RIGHT_HAND].copy(), kp2ds[FACE].copy()


def body_all_negative(body: np.ndarray) -> bool:
    """The official "no body" test: every body point has at least one negative coordinate."""
    return bool(body[:, :2].min(axis=1).max() < 0)


def metas_from_wholebody(kp2ds_seq: np.ndarray, width: int, height: int,
                         fallback_first: bool = False) -> list[PoseMeta]:
    """[T, 133, 3] pixel keypoints -> T normalised metas (float dtype kept).

    A frame whose body is "all negative" (see :func:`body_all_negative`) takes the previous
    frame's body. The official code fails when this happens on frame 0; we raise
    :class:`InputError`, or with ``fallback_first=True`` take the first later frame that
    has a body (frames with no body at all keep their own points).
    """
    # Ported from Wan2.2 .../preprocess/pose2d_utils.py::load_pose_metas_from_kp2ds_seq
    seq = np.asarray(kp2ds_seq)
    if not np.issubdtype(seq.dtype, np.floating):
        seq = seq.astype(np.float64)   # float32 decoder output stays float32, as officially
    bodies, rest = [], []
    for kps in seq:
        kps = kps.copy()
        kps[:, 0] /= width
        kps[:, 1] /= height
        body, lh, rh, face = split_wholebody(kps)
        bodies.append(body)
        rest.append((lh, rh, face))
    last: np.ndarray | None = None
    if bodies and body_all_negative(bodies[0]):
        if not fallback_first:
            raise InputError("frame 0 has no body keypoints (every point negative); "
                             "the previous-frame fallback has nothing to reuse")
        last = next((b for b in bodies if not body_all_negative(b)), None)
    metas = []
    for body, (lh, rh, face) in zip(bodies, rest):
        if body_all_negative(body) and last is not None:
            body = last
        last = body
        metas.append(PoseMeta(width, height, body, lh, rh, face))
    return metas
