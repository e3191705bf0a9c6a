"""Frame sampling to a target fps and the official sizing rules (letterbox, area resize).

All images are uint8 numpy arrays [H, W, C] (C = 3 for RGB frames, any C works).
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from wan_animate.errors import InputError


def sample_frame_indices(frame_num: int, video_fps: float, clip_length: int,
                         train_fps: float) -> list[int]:
    """Source frame index for each of ``clip_length`` output frames at ``train_fps``.

    Nearest-frame resampling: output frame i shows source frame
    ``round(i / train_fps * video_fps)`` (numpy round-half-to-even), clipped to
    ``frame_num - 1``.
    """
    # Ported from Wan2.2 wan/modules/animate/preprocess/utils.py::get_frame_indices
    times = np.arange(0, clip_length) / train_fps
    idx = np.round(times * video_fps).astype(int)
    return np.clip(idx, 0, frame_num - 1).tolist()


def effective_frame_count(decoded_frames: int, avg_fps: float, last_frame_end_s: float) -> int:
    """The frame count the official pipeline trusts for a decoded video.

    When the decoder's count differs from ``duration * fps`` by more than 10 %, the
    duration-based count is used (``duration`` = end timestamp of the last frame).
    """
    # Ported from Wan2.2 .../preprocess/process_pipepline.py::ProcessPipeline.__call__ (frame count)
    expected = int(last_frame_end_s * avg_fps + 0.5)
    if decoded_frames > 0 and abs((decoded_frames - expected) / decoded_frames) > 0.1:
        return expected
    return decoded_frames


def resample_plan(frame_num: int, video_fps: float, fps: float) -> tuple[float, int, list[int]]:
    """``(effective_fps, target_num, indices)`` for the official ``--fps`` option.

    ``fps == -1`` keeps the source rate; otherwise ``target_num = int(frame_num /
    video_fps * fps)`` frames are taken by :func:`sample_frame_indices`.
    """
    if video_fps <= 0:
        raise InputError(f"video fps must be positive, got {video_fps}")
    eff = video_fps if fps == -1 else fps
    if eff <= 0:
        raise InputError(f"--fps must be positive or -1, got {fps}")
    target = int(frame_num / video_fps * eff)
    return eff, target, sample_frame_indices(frame_num, video_fps, target, eff)


def area_size(height: int, width: int, target_area: int, divisor: int = 16) -> tuple[int, int]:
    """``(new_h, new_w)`` of the official ``resize_by_area``: same aspect, area about
    ``target_area``, each side floored to a multiple of ``divisor``."""
    # Ported from Wan2.2 .../preprocess/utils.py::resize_by_area (the fallback path that always runs)
    aspect = width / height
    new_h = math.sqrt(target_area / aspect)
    new_w = target_area / new_h
    return int((new_h // divisor) * divisor), int((new_w // divisor) * divisor)


def padding_resize(img: np.ndarray, height: int, width: int,
                   interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    """Letterbox ``img`` [h, w, C] uint8 into a black [height, width, C] canvas.

    The image is scaled to touch the canvas on the tighter side (new size truncated
    with ``int()``), centred with ``int((free) / 2)`` black pixels before it.
    """
    # Ported from Wan2.2 .../preprocess/utils.py::padding_resize
    src_h, src_w = img.shape[:2]
    channels = img.shape[2] if img.ndim == 3 else 1
    out = np.zeros((height, width, channels), dtype=np.uint8)
    if (src_h / src_w) > (height / width):
        new_w = int(height / src_h * src_w)
        if new_w <= 0:
            raise InputError(f"padding_resize: {src_h}x{src_w} does not fit {height}x{width}")
        resized = cv2.resize(img, (new_w, height), interpolation=interpolation)
        pad = int((width - new_w) / 2)
        out[:, pad:pad + new_w] = resized.reshape(height, new_w, channels)
    else:
        new_h = int(width / src_w * src_h)
        if new_h <= 0:
            raise InputError(f"padding_resize: {src_h}x{src_w} does not fit {height}x{width}")
        resized = cv2.resize(img, (width, new_h), interpolation=interpolation)
        pad = int((height - new_h) / 2)
        out[pad:pad + new_h] = resized.reshape(new_h, width, channels)
    return out if img.ndim == 3 else out[..., 0]


def resize_by_area(img: np.ndarray, target_area: int, divisor: int = 16) -> np.ndarray:
    """Letterbox ``img`` to the official ``--resolution_area`` size (multiples of ``divisor``).

    INTER_AREA when the output has fewer pixels than the input, INTER_LINEAR otherwise.
    """
    h, w = img.shape[:2]
    new_h, new_w = area_size(h, w, target_area, divisor)
    if new_h <= 0 or new_w <= 0:
        raise InputError(f"resolution area {target_area} is too small for a {h}x{w} image")
    interp = cv2.INTER_AREA if new_w * new_h < w * h else cv2.INTER_LINEAR
    return padding_resize(img, new_h, new_w, interpolation=interp)
