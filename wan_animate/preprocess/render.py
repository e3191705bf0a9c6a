"""The pose conditioning image, drawn pixel-exactly in the official style.

Black canvas, RGB colours (the first listed colour is red), OpenCV LINE_8 drawing, no
antialiasing: 19 limbs as filled ellipse polygons at 0.6 x colour, 20 joint circles, then
the left and right hand (20 coloured lines + blue joints each). Threshold 0.5 everywhere.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from wan_animate.preprocess.keypoints import PixelPose

# 1-indexed pairs over the 20 body points; limb k uses COLORS[k].
LIMBS = ((2, 3), (2, 6), (3, 4), (4, 5), (6, 7), (7, 8), (2, 9), (9, 10), (10, 11), (2, 12),
         (12, 13), (13, 14), (2, 1), (1, 15), (15, 17), (1, 16), (16, 18), (14, 19), (11, 20))
COLORS = ((255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
          (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
          (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
          (200, 200, 0), (100, 100, 0))
HAND_EDGES = ((0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (0, 9), (9, 10),
              (10, 11), (11, 12), (0, 13), (13, 14), (14, 15), (15, 16), (0, 17), (17, 18),
              (18, 19), (19, 20))
HAND_JOINT_COLOR = (0, 0, 255)
THRESHOLD = 0.5


def body_stickwidth(height: int, width: int) -> int:
    """Body limb half-width / joint radius ('v2'): 2 at 720, 1 at 464/480, 4 at 1080."""
    return max(int(min(height, width) / 200) - 1, 1)


def hand_stickwidth(height: int, width: int) -> int:
    """Hand line width / joint radius ('v2')."""
    return max(body_stickwidth(height, width) // 2, 1)


def _hsv_full(h: float) -> tuple[float, float, float]:
    """HSV(h, 1, 1) -> RGB floats in [0, 1], with the sector arithmetic of
    ``matplotlib.colors.hsv_to_rgb`` (the colours must match it to the last bit)."""
    i = int(h * 6.0)
    f = (h * 6.0) - i
    p = 1.0 * (1.0 - 1.0)
    q = 1.0 * (1.0 - 1.0 * f)
    t = 1.0 * (1.0 - 1.0 * (1.0 - f))
    sector = i % 6
    return ((1.0, t, p), (q, 1.0, p), (p, 1.0, t), (p, q, 1.0), (t, p, 1.0), (1.0, p, q))[sector]


HAND_EDGE_COLORS = tuple(tuple(c * 255 for c in _hsv_full(e / float(len(HAND_EDGES))))
                         for e in range(len(HAND_EDGES)))


def draw_body(img: np.ndarray, body: np.ndarray, body_p: np.ndarray,
              threshold: float = THRESHOLD) -> None:
    """Draw 19 limbs then 20 joints of ``body`` [20, 2] px on ``img`` [H, W, 3] uint8 in place."""
    # Ported from Wan2.2 .../preprocess/human_visualization.py::draw_aapose_new
    h, w = img.shape[:2]
    sw = body_stickwidth(h, w)
    for (a, b), color in zip(LIMBS, COLORS):
        if body_p[a - 1] < threshold or body_p[b - 1] < threshold:
            continue
        xa, ya = float(body[a - 1, 0]), float(body[a - 1, 1])
        xb, yb = float(body[b - 1, 0]), float(body[b - 1, 1])
        cx, cy = (xa + xb) / 2, (ya + yb) / 2
        length = ((ya - yb) ** 2 + (xa - xb) ** 2) ** 0.5
        angle = math.degrees(math.atan2(ya - yb, xa - xb))
        poly = cv2.ellipse2Poly((int(cx), int(cy)), (int(length / 2), sw), int(angle), 0, 360, 1)
        cv2.fillConvexPoly(img, poly, [int(float(c) * 0.6) for c in color])
    for i, color in enumerate(COLORS):
        if body_p[i] < threshold:
            continue
        cv2.circle(img, (int(body[i, 0]), int(body[i, 1])), sw, color, thickness=-1)


def draw_hand(img: np.ndarray, pts: np.ndarray, scores: np.ndarray,
              threshold: float = THRESHOLD) -> None:
    """Draw one hand (``pts`` [21, 2] px, NaN = absent) on ``img`` in place.

    A point is used when its score >= threshold and both int()-truncated coordinates
    are > 0.01 (i.e. >= 1 px).
    """
    # Ported from Wan2.2 .../preprocess/human_visualization.py::draw_handpose_new
    h, w = img.shape[:2]
    sw = hand_stickwidth(h, w)

    def usable(k: int) -> tuple[int, int] | None:
        if not scores[k] >= threshold or not np.isfinite(pts[k]).all():
            return None
        x, y = int(pts[k, 0]), int(pts[k, 1])
        return (x, y) if x > 0.01 and y > 0.01 else None

    for (a, b), color in zip(HAND_EDGES, HAND_EDGE_COLORS):
        if scores[a] < threshold or scores[b] < threshold:
            continue
        pa, pb = usable(a), usable(b)
        if pa is not None and pb is not None:
            cv2.line(img, pa, pb, color, thickness=sw)
    for k in range(len(pts)):
        p = usable(k)
        if p is not None:
            cv2.circle(img, p, sw, HAND_JOINT_COLOR, thickness=-1)


def draw_pose(pose: PixelPose, canvas: np.ndarray | None = None,
              threshold: float = THRESHOLD) -> np.ndarray:
    """The official conditioning image of one frame: uint8 [H, W, 3] RGB.

    ``canvas`` (drawn on in place) defaults to black ``pose.height`` x ``pose.width``.
    """
    img = np.zeros((pose.height, pose.width, 3), np.uint8) if canvas is None else canvas
    draw_body(img, pose.body, pose.body_p, threshold)
    draw_hand(img, pose.lhand, pose.lhand_p, threshold)
    draw_hand(img, pose.rhand, pose.rhand_p, threshold)
    return img
