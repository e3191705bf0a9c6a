"""Replace-mode character mask post-processing and the background frames.

Masks are uint8 {0, 1} arrays [H, W]; frames uint8 [H, W, 3].
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from wan_animate.errors import InputError


@dataclass(frozen=True)
class MaskOptions:
    """The official ``--k`` (dilation kernel), ``--iterations`` (0 = no dilation, no blocks),
    ``--w_len`` / ``--h_len`` (block grid over the dilated mask's box; 1 x 1 = the box)."""

    k: int = 7
    iterations: int = 3
    w_len: int = 1
    h_len: int = 1

    def __post_init__(self) -> None:
        if self.k < 1 or self.iterations < 0 or self.w_len < 1 or self.h_len < 1:
            raise InputError(f"mask options need k >= 1, iterations >= 0, w_len >= 1, h_len >= 1; "
                             f"got k={self.k} iterations={self.iterations} "
                             f"w_len={self.w_len} h_len={self.h_len}")


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Inclusive ``(x_min, y_min, x_max, y_max)`` of the non-zero pixels of ``mask`` [H, W]."""
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        raise InputError("the character mask is empty: no box to fill")
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


def dilate(mask: np.ndarray, k: int, iterations: int) -> np.ndarray:
    """Dilate ``mask`` [H, W] uint8 with a k x k ones kernel ``iterations`` times."""
    # Ported from Wan2.2 .../preprocess/utils.py::get_mask_body_img (its mask output)
    return cv2.dilate(mask, np.ones((k, k), np.uint8), iterations=iterations)


def block_mask(mask: np.ndarray, w_len: int, h_len: int) -> np.ndarray:
    """Fill every cell of a ``w_len`` x ``h_len`` grid over the mask's box that touches it.

    Returns a new array (the input is not modified). Cells have integer size
    ``int(box_w / w_len)`` x ``int(box_h / h_len)`` where box_w = x_max - x_min (so the grid
    ends *before* the last row / column of the box, as in the official code). A zero
    cell size raises :class:`InputError`.
    """
    # Ported from Wan2.2 .../preprocess/utils.py::get_aug_mask
    x0, y0, x1, y1 = mask_box(mask)
    cw, ch = int(np.int32((x1 - x0) / w_len)), int(np.int32((y1 - y0) / h_len))
    if cw == 0 or ch == 0:
        raise InputError(f"mask box {x1 - x0}x{y1 - y0} px is too small for a "
                         f"{w_len}x{h_len} block grid (cell size 0)")
    out = mask.copy()
    for xs in range(x0, x1, cw):
        xe = min(xs + cw, x1)
        for ys in range(y0, y1, ch):
            ye = min(ys + ch, y1)
            if out[ys:ye, xs:xe].sum() > 0:
                out[ys:ye, xs:xe] = 1
    return out


def postprocess_mask(mask: np.ndarray, opts: MaskOptions) -> np.ndarray:
    """Raw {0,1} mask [H, W] -> the official augmented mask [H, W] uint8 {0,1}.

    ``iterations == 0`` returns the mask unchanged; an empty mask stays empty.
    """
    mask = np.asarray(mask, dtype=np.uint8)
    if opts.iterations == 0:
        return mask.copy()
    dil = dilate(mask, opts.k, opts.iterations)
    if not dil.any():
        return dil
    return block_mask(dil, opts.w_len, opts.h_len)


def background(frame: np.ndarray, aug_mask: np.ndarray) -> np.ndarray:
    """``frame * (1 - mask)`` on every channel: the character region becomes black."""
    return (frame * (1 - aug_mask[:, :, None])).astype(np.uint8)


def mask_frame(aug_mask: np.ndarray) -> np.ndarray:
    """The mask video frame: ``mask * 255`` on 3 channels, uint8 [H, W, 3]."""
    m = (aug_mask * 255).astype(np.uint8)
    return np.stack([m, m, m], axis=2)
