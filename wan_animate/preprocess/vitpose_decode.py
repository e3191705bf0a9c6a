"""ViTPose crop / normalisation and heatmap decoding (argmax + DARK), numpy + OpenCV.

Numerics follow the official top-down pipeline bit for bit with numpy 1.26 / OpenCV 4.11:
the crop goes through a float32 ``cv2.resize``; the DARK refinement runs in float32.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

INPUT_HW = (256, 192)         # (rows, cols) of the ViTPose input
BOX_RESCALE = 1.25
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406])
IMAGENET_STD = np.array([0.229, 0.224, 0.225])
DARK_KERNEL = 11


@dataclass(frozen=True)
class CropInfo:
    """Bookkeeping of one crop: padded crop shape [h, w, C], source ranges
    ((x0, x1), (y0, y1)) and destination ranges in the padded crop."""

    new_shape: list[int]
    old_xy: tuple[tuple[int, int], tuple[int, int]]
    new_xy: tuple[tuple[int, int], tuple[int, int]]


def box_center_scale(box: np.ndarray, input_hw: tuple[int, int] = INPUT_HW,
                     rescale: float = BOX_RESCALE) -> tuple[np.ndarray, np.ndarray]:
    """``(center [2] px, scale [2] in units of 200 px)`` of an xyxy box at the crop aspect."""
    # Ported from Wan2.2 .../preprocess/pose2d_utils.py::bbox_from_detector
    aspect = input_hw[0] / float(input_hw[1])
    center = np.array([(box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0])
    bw, bh = box[2] - box[0], box[3] - box[1]
    size = max(bw * aspect, bh)
    scale = np.array([size / aspect, size]) / 200.0
    scale *= rescale
    return center, scale


def _crop_transform(center: np.ndarray, scale: float, res: tuple[int, int]) -> np.ndarray:
    """3x3 affine from image pixels to crop pixels (no rotation)."""
    aspect = res[0] / float(res[1])
    h = 200 * scale
    w = h / aspect
    t = np.zeros((3, 3))
    t[0, 0] = float(res[1]) / w
    t[1, 1] = float(res[0]) / h
    t[0, 2] = res[1] * (-float(center[0]) / w + .5)
    t[1, 2] = res[0] * (-float(center[1]) / h + .5)
    t[2, 2] = 1
    return t


def _crop_to_image(pt: tuple[float, float], center: np.ndarray, scale: float,
                   res: tuple[int, int]) -> np.ndarray:
    """1-based crop pixel -> 1-based image pixel (rounded half to even)."""
    t = np.linalg.inv(_crop_transform(center, scale, res))
    p = np.dot(t, np.array([pt[0] - 1, pt[1] - 1, 1.]).T)
    return np.array([round(p[0]), round(p[1])], dtype=int) + 1


def crop_image(img: np.ndarray, center: np.ndarray, scale: np.ndarray,
               res: tuple[int, int] = INPUT_HW) -> tuple[np.ndarray, CropInfo]:
    """Crop ``img`` [H, W, C] around ``center`` (zero padding outside) and resize to ``res``.

    Returns the float32 crop [res[0], res[1], C] and its bookkeeping.
    """
    # Ported from Wan2.2 .../preprocess/pose2d_utils.py::crop
    s = max(scale)
    ul = _crop_to_image((1, 1), center, s, res) - 1
    br = _crop_to_image((res[1] + 1, res[0] + 1), center, s, res) - 1
    new_shape = [int(br[1] - ul[1]), int(br[0] - ul[0])] + ([img.shape[2]] if img.ndim > 2 else [])
    canvas = np.zeros(new_shape, dtype=np.float32)
    h, w = img.shape[:2]
    new_x = (int(max(0, -ul[0])), int(min(br[0], w) - ul[0]))
    new_y = (int(max(0, -ul[1])), int(min(br[1], h) - ul[1]))
    old_x = (int(max(0, ul[0])), int(min(w, br[0])))
    old_y = (int(max(0, ul[1])), int(min(h, br[1])))
    dst = canvas[new_y[0]:new_y[1], new_x[0]:new_x[1]]
    src = img[old_y[0]:old_y[1], old_x[0]:old_x[1]]
    if dst.shape == src.shape:   # a box entirely outside the image leaves a black crop
        canvas[new_y[0]:new_y[1], new_x[0]:new_x[1]] = src
    out = cv2.resize(canvas, (res[1], res[0]))
    return out, CropInfo(new_shape, (old_x, old_y), (new_x, new_y))


def vitpose_input(img: np.ndarray, box: np.ndarray | None,
                  input_hw: tuple[int, int] = INPUT_HW, rescale: float = BOX_RESCALE,
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, CropInfo]:
    """ViTPose network input of one image.

    Args:
        img: uint8 [H, W, 3] in the channel order the network was trained on (the official
            pipeline hands it the RGB frame channel-swapped, i.e. BGR).
        box: ``[x1, y1, x2, y2, score]`` or None; a missing box, score <= 0 or a side < 10 px
            means the whole image.
    Returns:
        (img_norm float32 [3, 256, 192], center [2], scale [2] (x200 px), crop float32
        [256, 192, 3], crop bookkeeping).
    """
    # Ported from Wan2.2 .../preprocess/pose2d.py::ViTPose.preprocess
    if box is None or box[-1] <= 0 or (box[2] - box[0]) < 10 or (box[3] - box[1]) < 10:
        box = np.array([0, 0, img.shape[1], img.shape[0]])
    center, scale = box_center_scale(box, input_hw, rescale)
    crop, info = crop_image(img, center, scale, input_hw)
    norm = (crop / 255. - IMAGENET_MEAN) / IMAGENET_STD
    return norm.transpose(2, 0, 1).astype(np.float32), center, scale, crop, info


def argmax_points(heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[N, K, H, W] -> (preds [N, K, 2] float32 (x, y) of the first maximum, -1 where the
    maximum is <= 0; maxvals [N, K, 1])."""
    n, k, _, w = heatmaps.shape
    flat = heatmaps.reshape((n, k, -1))
    idx = np.argmax(flat, 2).reshape((n, k, 1))
    maxvals = np.amax(flat, 2).reshape((n, k, 1))
    preds = np.tile(idx, (1, 1, 2)).astype(np.float32)
    preds[:, :, 0] = preds[:, :, 0] % w
    preds[:, :, 1] = preds[:, :, 1] // w
    preds = np.where(np.tile(maxvals, (1, 1, 2)) > 0.0, preds, -1)
    return preds, maxvals


def _modulate(heatmaps: np.ndarray, kernel: int) -> np.ndarray:
    """Gaussian-blur each map (zero border of kernel//2) keeping its maximum; in place."""
    border = (kernel - 1) // 2
    n, k, h, w = heatmaps.shape
    with np.errstate(divide="ignore", invalid="ignore"):
        for i in range(n):
            for j in range(k):
                peak = np.max(heatmaps[i, j])
                pad = np.zeros((h + 2 * border, w + 2 * border), dtype=np.float32)
                pad[border:-border, border:-border] = heatmaps[i, j].copy()
                pad = cv2.GaussianBlur(pad, (kernel, kernel), 0)
                heatmaps[i, j] = pad[border:-border, border:-border].copy()
                heatmaps[i, j] *= peak / np.max(heatmaps[i, j])
    return heatmaps


def _dark_step(hm: np.ndarray, coord: np.ndarray) -> None:
    """One Newton step on the log-heatmap ``hm`` [H, W] at ``coord`` [2] (updated in place)."""
    h, w = hm.shape[:2]
    px, py = int(coord[0]), int(coord[1])
    if not (1 < px < w - 2 and 1 < py < h - 2):
        return
    dx = 0.5 * (hm[py][px + 1] - hm[py][px - 1])
    dy = 0.5 * (hm[py + 1][px] - hm[py - 1][px])
    dxx = 0.25 * (hm[py][px + 2] - 2 * hm[py][px] + hm[py][px - 2])
    dxy = 0.25 * (hm[py + 1][px + 1] - hm[py - 1][px + 1] - hm[py + 1][px - 1] + hm[py - 1][px - 1])
    dyy = 0.25 * (hm[py + 2][px] - 2 * hm[py][px] + hm[py - 2][px])
    if dxx * dyy - dxy ** 2 != 0:
        hess = np.array([[dxx, dxy], [dxy, dyy]])
        grad = np.array([[dx], [dy]])
        offset = -np.linalg.inv(hess) @ grad
        coord += np.squeeze(np.array(offset.T), axis=0)


def decode_heatmaps(heatmaps: np.ndarray, center: np.ndarray, scale: np.ndarray,
                    kernel: int = DARK_KERNEL) -> tuple[np.ndarray, np.ndarray]:
    """Heatmaps [N, K, h, w] -> (image keypoints [N, K, 2] float32, scores [N, K, 1]).

    ``center`` [N, 2] px and ``scale`` [N, 2] in **pixels** (box size, i.e. 200 x the crop
    scale). Argmax, then DARK (log of the blurred map, one Newton step), then the crop
    transform back to the image (no UDP).
    """
    # Ported from Wan2.2 .../preprocess/pose2d_utils.py::keypoints_from_heatmaps (unbiased path)
    hms = np.array(heatmaps, copy=True)
    n, k, h, w = hms.shape
    preds, maxvals = argmax_points(hms)
    logs = np.log(np.maximum(_modulate(hms, kernel), 1e-10))
    for i in range(n):
        for j in range(k):
            _dark_step(logs[i][j], preds[i][j])
    for i in range(n):
        sx, sy = scale[i][0] / w, scale[i][1] / h
        out = np.ones_like(preds[i])
        out[:, 0] = preds[i][:, 0] * sx + center[i][0] - scale[i][0] * 0.5
        out[:, 1] = preds[i][:, 1] * sy + center[i][1] - scale[i][1] * 0.5
        preds[i] = out
    return preds, maxvals
