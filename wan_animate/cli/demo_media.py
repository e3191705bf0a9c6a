"""Synthetic media the demo and the tests can make offline: a dancing stick figure.

Writes a preprocessed folder (src_pose.mp4, src_face.mp4, src_ref.png [, src_bg.mp4,
src_mask.mp4]) and a driving video + reference image for the preprocessing path.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from wan_animate.preprocess.video_io import write_image, write_video

_LIMB_COLORS = [(255, 0, 0), (255, 170, 0), (170, 255, 0), (0, 255, 85), (0, 170, 255), (170, 0, 255)]


def _skeleton(t: float, h: int, w: int) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    cx, cy, s = w / 2 + 0.1 * w * math.sin(t), h * 0.45, min(h, w) * 0.35
    neck, hip = (cx, cy - 0.5 * s), (cx, cy + 0.3 * s)
    arm = 0.6 * s
    la = (cx - arm * math.cos(0.8 * math.sin(2 * t)), neck[1] + arm * math.sin(0.8 * math.sin(2 * t)))
    ra = (cx + arm * math.cos(0.8 * math.cos(2 * t)), neck[1] + arm * math.sin(0.8 * math.cos(2 * t)))
    ll = (cx - 0.3 * s, hip[1] + 0.6 * s)
    rl = (cx + 0.3 * s, hip[1] + 0.6 * s)
    head = (cx, neck[1] - 0.25 * s)
    pts = [(neck, hip), (neck, la), (neck, ra), (hip, ll), (hip, rl), (neck, head)]
    return [((int(a[0]), int(a[1])), (int(b[0]), int(b[1]))) for a, b in pts]


def pose_frames(n: int, h: int, w: int) -> np.ndarray:
    """uint8 [n, h, w, 3]: coloured limbs on black, moving over time."""
    import cv2

    out = np.zeros((n, h, w, 3), np.uint8)
    for i in range(n):
        for (a, b), c in zip(_skeleton(i / 4, h, w), _LIMB_COLORS):
            cv2.line(out[i], a, b, c, max(1, min(h, w) // 100))
    return out


def face_frames(n: int, size: int = 512) -> np.ndarray:
    """uint8 [n, size, size, 3]: a cartoon face whose mouth opens and closes."""
    import cv2

    out = np.full((n, size, size, 3), 40, np.uint8)
    c = size // 2
    for i in range(n):
        f = out[i]
        cv2.ellipse(f, (c, c), (int(size * 0.3), int(size * 0.4)), 0, 0, 360, (230, 190, 160), -1)
        for dx in (-1, 1):
            cv2.circle(f, (c + dx * size // 8, c - size // 10), size // 24, (30, 30, 30), -1)
        mouth = int(size * 0.02 + size * 0.05 * (1 + math.sin(i / 2)) / 2)
        cv2.ellipse(f, (c, c + size // 6), (size // 8, mouth), 0, 0, 360, (120, 20, 20), -1)
    return out


def reference_image(h: int, w: int) -> np.ndarray:
    """uint8 [h, w, 3]: a character on a plain background."""
    import cv2

    img = np.full((h, w, 3), (90, 120, 160), np.uint8)
    for (a, b), c in zip(_skeleton(0.0, h, w), _LIMB_COLORS):
        cv2.line(img, a, b, c, max(2, min(h, w) // 40))
    return img


def write_preprocessed(folder: str | Path, frames: int, height: int, width: int,
                       fps: float = 16.0, replace: bool = False) -> Path:
    """A complete preprocessed folder of ``frames`` frames at ``height`` x ``width``."""
    import cv2

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_video(folder / "src_pose.mp4", pose_frames(frames, height, width), fps, lossless=True)
    write_video(folder / "src_face.mp4", face_frames(frames), fps, lossless=True)
    write_image(folder / "src_ref.png", reference_image(height * 5 // 4, width))
    if replace:
        bg = np.zeros((frames, height, width, 3), np.uint8)
        bg[..., 0] = np.linspace(0, 255, width, dtype=np.uint8)[None, None]
        mask = np.zeros((frames, height, width, 3), np.uint8)
        for i in range(frames):
            cx = int(width / 2 + 0.1 * width * math.sin(i / 4))
            cv2.ellipse(mask[i], (cx, height // 2), (width // 6, height // 3), 0, 0, 360,
                        (255, 255, 255), -1)
        bg[mask > 0] = 0
        write_video(folder / "src_bg.mp4", bg, fps, lossless=True)
        write_video(folder / "src_mask.mp4", mask, fps, lossless=True)
    return folder
