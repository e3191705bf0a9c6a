"""Video and image files in and out (PyAV / FFmpeg, OpenCV for stills).

Frames cross the engine as uint8 numpy arrays [T, H, W, 3] in RGB order.
"""
from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import numpy as np

from wan_animate.errors import InputError


def read_video(path: str | Path) -> tuple[np.ndarray, float]:
    """Decode every frame of a video file.

    Returns:
        frames: uint8 [T, H, W, 3] RGB.
        fps: the stream's average frame rate (frames per second).
    """
    import av

    path = Path(path)
    if not path.is_file():
        raise InputError(f"video file not found: {path}")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise InputError(f"{path}: no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            rate = stream.average_rate or stream.guessed_rate or Fraction(30)
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    except InputError:
        raise
    except Exception as e:  # av.error.* for unreadable containers
        raise InputError(f"cannot decode video {path}: {e}") from e
    if not frames:
        raise InputError(f"{path}: the video has no frames")
    return np.stack(frames), float(rate)


def write_video(path: str | Path, frames: np.ndarray, fps: float, lossless: bool = False,
                crf: int = 17) -> Path:
    """Encode uint8 [T, H, W, 3] RGB frames as H.264 mp4.

    ``lossless=False`` writes yuv420p (plays in every browser; needs even H and W, odd sizes
    are padded by one black row/column); ``lossless=True`` writes RGB with libx264rgb -qp 0
    (exact pixels, for intermediate files such as masks and pose videos).
    The file is written to a temporary name and renamed, so no half-written file is left.
    """
    import av

    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise InputError(f"write_video expects uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.partial{path.suffix}")
    if not lossless and (frames.shape[1] % 2 or frames.shape[2] % 2):
        ph, pw = frames.shape[1] % 2, frames.shape[2] % 2
        frames = np.pad(frames, ((0, 0), (0, ph), (0, pw), (0, 0)))
    rate = Fraction(fps).limit_denominator(1001)
    try:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            if lossless:
                stream = container.add_stream("libx264rgb", rate=rate)
                stream.pix_fmt = "rgb24"
                stream.options = {"qp": "0", "preset": "veryfast"}
            else:
                stream = container.add_stream("libx264", rate=rate)
                stream.pix_fmt = "yuv420p"
                stream.options = {"crf": str(crf), "preset": "medium", "movflags": "+faststart"}
            stream.height, stream.width = frames.shape[1], frames.shape[2]
            for frame in frames:
                vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
                for packet in stream.encode(vf):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file (png/jpg/webp...) as uint8 [H, W, 3] RGB (alpha dropped)."""
    import cv2

    path = Path(path)
    if not path.is_file():
        raise InputError(f"image file not found: {path}")
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise InputError(f"cannot read image {path}")
    return np.ascontiguousarray(img[..., ::-1])


def write_image(path: str | Path, image: np.ndarray) -> Path:
    """Write uint8 [H, W, 3] RGB as an image file (format from the suffix)."""
    import cv2

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), np.ascontiguousarray(image[..., ::-1])):
        raise InputError(f"cannot write image {path}")
    return path
