"""The preprocessed folder ``generate`` reads (``src_root_path``) and the video it writes."""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from wan_animate.errors import InputError
from wan_animate.preprocess.video_io import read_image, read_video, write_video
from wan_animate.sampling.options import AnimateInputs

POSE, FACE, REF, BG, MASK = "src_pose.mp4", "src_face.mp4", "src_ref.png", "src_bg.mp4", "src_mask.mp4"
PREPROCESS_HINT = ("make it with `wan-animate preprocess --ckpt_path CKPT --video_path VIDEO "
                   "--refer_path IMAGE --save_path {folder}{replace}`")


def read_preprocessed(folder: str | Path, replace: bool) -> AnimateInputs:
    """Read src_pose.mp4, src_face.mp4, src_ref.png (+ src_bg.mp4, src_mask.mp4 in replace mode).

    Raises :class:`InputError` naming every missing or unreadable file and the command that
    makes them, before any model work.
    """
    folder = Path(folder)
    need = [POSE, FACE, REF] + ([BG, MASK] if replace else [])
    if not folder.is_dir():
        raise InputError(f"src_root_path {folder} does not exist; "
                         + PREPROCESS_HINT.format(folder=folder, replace=" --replace_flag" if replace else ""))
    missing = [n for n in need if not (folder / n).is_file()]
    if missing:
        raise InputError(f"{folder} lacks {', '.join(missing)}"
                         + (" (replace mode needs the background and mask videos)" if replace else "")
                         + "; " + PREPROCESS_HINT.format(folder=folder,
                                                         replace=" --replace_flag" if replace else ""))
    pose, fps = read_video(folder / POSE)
    face, _ = read_video(folder / FACE)
    ref = read_image(folder / REF)
    bg = mask = None
    if replace:
        bg, _ = read_video(folder / BG)
        mask, _ = read_video(folder / MASK)
    inputs = AnimateInputs(pose=pose, face=face, reference=ref, background=bg, mask=mask, fps=fps)
    inputs.validate("replace" if replace else "animate")
    return inputs


def to_uint8(video: torch.Tensor) -> np.ndarray:
    """[3, N, H, W] in [-1, 1] -> uint8 [N, H, W, 3], the official (x+1)/2*255 truncation."""
    x = ((video.clamp(-1, 1) + 1) / 2 * 255).to(torch.uint8)
    return x.permute(1, 2, 3, 0).contiguous().numpy()


def save_output(video: torch.Tensor, path: str | Path, fps: float) -> Path:
    """Write [3, N, H, W] in [-1, 1] as a browser-playable H.264 mp4 at ``fps``."""
    return write_video(path, to_uint8(video), fps)


def save_output_keeping(video: torch.Tensor, path: str | Path, fps: float, flag: str) -> Path:
    """:func:`save_output`, and when the destination fails anyway (the disk filled up while
    the video was generated, the folder was removed), the finished video is written to the
    system's temp folder instead and the error says where it is."""
    path = Path(path)
    try:
        return save_output(video, path, fps)
    except (OSError, InputError, av_error()) as first:
        rescue = Path(tempfile.gettempdir()) / path.name
        try:
            save_output(video, rescue, fps)
        except (OSError, InputError, av_error()) as second:
            raise InputError(f"{flag} {path}: writing the video failed ({first}); saving it to "
                             f"{rescue} failed too ({second}); free disk space and run again") from first
        raise InputError(f"{flag} {path}: writing the video failed ({first}); the finished video "
                         f"was saved to {rescue} instead: move it where you want it") from first


def av_error() -> type[Exception]:
    """PyAV's exception base (its errors are not all OSErrors)."""
    import av

    return av.error.FFmpegError
