"""Face crops for the face encoder: the official box recipe and a 512x512 resize."""
from __future__ import annotations

import cv2
import numpy as np

from wan_animate.errors import InputError

FACE_SIZE = 512
FACE_SCALE = 1.3


def face_box(face_xy: np.ndarray, image_hw: tuple[int, int],
             scale: float = FACE_SCALE) -> tuple[int, int, int, int]:
    """The official face box ``(x1, x2, y1, y2)`` (note the order) in pixels.

    ``face_xy`` [69, 2] normalised (row 0, a foot point, is ignored). The landmark box
    (w0, h0) is grown to area x ``scale`` at the same aspect: by (w - w0)/2 left and right,
    3/4 of (h - h0) above and 1/4 below, clamped to the image and truncated with ``int()``.
    Raises :class:`InputError` when the landmarks span no area (the official code fails
    converting NaN).
    """
    # Ported from Wan2.2 .../preprocess/utils.py::get_face_bboxes (the second definition)
    h, w = image_hw
    pts = np.asarray(face_xy, dtype=np.float64)[1:, :2] * (w, h)
    min_x, min_y = np.min(pts, axis=0)
    max_x, max_y = np.max(pts, axis=0)
    w0 = max_x - min_x
    h0 = max_y - min_y
    if not (w0 > 0 and h0 > 0):
        raise InputError(f"face landmarks span no area ({w0:.3g} x {h0:.3g} px): no face box")
    area = w0 * h0 * scale
    new_w = np.sqrt(area * (w0 / h0))
    new_h = np.sqrt(area * (h0 / w0))
    dw = (new_w - w0) / 2
    dh = (new_h - h0) / 4
    x1 = max(min_x - dw, 0)
    x2 = min(max_x + dw, w)
    y1 = max(min_y - 3 * dh, 0)
    y2 = min(max_y + dh, h)
    return int(x1), int(x2), int(y1), int(y2)


def crop_face(frame: np.ndarray, box: tuple[int, int, int, int],
              size: int = FACE_SIZE) -> np.ndarray:
    """Rows y1..y2-1, columns x1..x2-1 of ``frame`` [H, W, 3] resized (INTER_LINEAR, aspect
    not kept) to [size, size, 3]. Raises :class:`InputError` for an empty box."""
    x1, x2, y1, y2 = box
    crop = frame[y1:y2, x1:x2]
    if crop.size == 0:
        raise InputError(f"face box x[{x1}:{x2}] y[{y1}:{y2}] is outside the "
                         f"{frame.shape[0]}x{frame.shape[1]} frame")
    return cv2.resize(crop, (size, size))
