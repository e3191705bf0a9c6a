"""Video and image files in and out (PyAV / FFmpeg, OpenCV for stills).

Frames cross the engine as uint8 numpy arrays [T, H, W, 3] in RGB order.
"""
from __future__ import annotations

import math
import os
from fractions import Fraction
from pathlib import Path

import numpy as np

from wan_animate.errors import InputError


def read_video(path: str | Path, fps: float | None = None) -> tuple[np.ndarray, float]:
    """Decode a video file, converting only the frames the ``--fps`` option keeps.

    Args:
        path: any container FFmpeg reads (first video stream).
        fps: ``None`` keeps every decoded frame (returns the source rate); ``-1`` or a
            positive rate applies the official ``--fps`` subsampling of
            :func:`~wan_animate.preprocess.frames.resample_plan` (``-1`` = source rate).
    Returns:
        frames: uint8 [T', H, W, 3] RGB, values 0..255, exactly ``full[idx]`` where ``full``
            is every decoded frame and ``(eff, T', idx) = resample_plan(len(full), src_fps, fps)``
            (indices repeat when ``fps`` exceeds the source rate).
        fps: the effective frame rate (frames per second): the source's average rate for
            ``None`` / ``-1``, else ``fps``.

    Memory is the output array (allocated once, never stacked) plus about two frames (the
    RGB conversion of the current frame, the last decoded YUV frame): frames not in ``idx``
    are decoded but never converted to RGB. The frame count is taken up front (container
    metadata, or a demux-only packet count when the metadata is missing or disagrees with
    the duration); the decode always runs to the end of the stream so the plan is checked
    against the real decoded count (broken metadata: fixed in place, or one more pass).

    Raises:
        InputError: missing / unreadable file, no video stream, no frames, an invalid ``fps``,
            or a video too short for ``fps`` (fewer than one output frame).
    """
    import av

    path = Path(path)
    if not path.is_file():
        raise InputError(f"video file not found: {path}")
    if fps is not None and fps != -1 and not (math.isfinite(fps) and fps > 0):
        raise InputError(f"{path}: --fps must be a positive frame rate or -1 (keep the source "
                         f"rate), got {fps}")
    try:
        src_fps, n_up = _probe(path)
        eff, idx = _plan(n_up, src_fps, fps)
        out, n_real, last = _decode_kept(path, idx)
        if n_real == 0:
            raise InputError(f"{path}: the video has no frames")
        if n_real != n_up:                          # metadata / packet count was off
            eff, new_idx = _plan(n_real, src_fps, fps)
            if not _fix_in_place(out, idx, new_idx, n_real, last, path):
                del out                             # free before decoding again
                out, n_again, _ = _decode_kept(path, new_idx)
                if n_again != n_real:
                    raise InputError(f"{path}: decoding gave {n_real} frames, then {n_again}: the "
                                     "file is damaged; re-encode it (ffmpeg -i IN -c:v libx264 OUT.mp4)")
            idx = new_idx
    except InputError:
        raise
    except Exception as e:  # av.error.* for unreadable containers
        raise InputError(f"cannot decode video {path}: {e}; the file is damaged, incomplete or "
                         f"in a codec this FFmpeg cannot read: re-encode it "
                         f"(ffmpeg -i IN -c:v libx264 -pix_fmt yuv420p OUT.mp4)") from e
    if len(idx) < 1:
        raise InputError(f"the video is too short for --fps {fps}: {n_real} frames at {src_fps:g} fps "
                         f"({path}; a higher --fps, or -1 for the source rate, keeps a frame)")
    assert out is not None                          # n_real > 0 allocated it
    return out, float(eff)


def _probe(path: Path) -> tuple[float, int]:
    """``(source fps, frame count)`` before decoding: ``stream.frames`` when the container
    has it and it agrees with ``duration * rate`` within 10 %, else the count of non-empty,
    non-discarded video packets (demuxed, not decoded)."""
    import av

    with av.open(str(path)) as container:
        if not container.streams.video:
            raise InputError(f"{path}: no video stream")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or Fraction(30)
        n = int(stream.frames or 0)
        if n > 0 and stream.duration and stream.time_base:
            expected = float(stream.duration * stream.time_base * rate)
            if abs(n - expected) > 0.1 * max(n, expected) + 1:
                n = 0                               # inconsistent metadata: count packets
        if n <= 0:
            n = sum(1 for p in container.demux(stream) if p.size > 0 and not p.is_discard)
    return float(rate), n


def _plan(n: int, src_fps: float, fps: float | None) -> tuple[float, list[int]]:
    """``(effective fps, source index of each output frame)`` for ``n`` decoded frames."""
    from wan_animate.preprocess.frames import resample_plan

    if fps is None:
        return src_fps, list(range(n))
    eff, _, idx = resample_plan(n, src_fps, fps)
    return float(eff), idx


def _decode_kept(path: Path, idx: list[int]) -> tuple[np.ndarray | None, int, object | None]:
    """Decode the whole first video stream once; row ``i`` of the returned uint8
    [len(idx), H, W, 3] RGB array is decoded frame ``idx[i]`` (rows whose index is past the
    end stay uninitialised). Returns ``(rows, decoded count, last decoded av.VideoFrame)``;
    ``rows`` is None when the stream has no frames."""
    import av

    rows_of: dict[int, list[int]] = {}
    for row, k in enumerate(idx):
        rows_of.setdefault(k, []).append(row)
    out: np.ndarray | None = None
    n = 0
    last = None
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            if out is None:
                out = np.empty((len(idx), frame.height, frame.width, 3), np.uint8)
            rows = rows_of.get(n)
            if rows is not None:
                _put(out, rows, frame, path, n)
            last = frame                            # one YUV frame, for a shortened plan
            n += 1
    return out, n, last


def _put(out: np.ndarray, rows: list[int], frame: object, path: Path, n: int) -> None:
    """Convert ``frame`` to RGB once and write it into ``out[rows]``."""
    rgb = frame.to_ndarray(format="rgb24")  # type: ignore[attr-defined]
    if rgb.shape != out.shape[1:]:
        raise InputError(f"{path}: frame {n} is {rgb.shape[1]}x{rgb.shape[0]} but the video started at "
                         f"{out.shape[2]}x{out.shape[1]}; re-encode it at one size "
                         "(ffmpeg -i IN -vf scale=W:H OUT.mp4)")
    if len(rows) == 1:
        out[rows[0]] = rgb
    else:
        out[rows] = rgb


def _fix_in_place(out: np.ndarray | None, idx: list[int], new_idx: list[int], n_real: int,
                  last: object | None, path: Path) -> bool:
    """Turn the rows decoded for ``idx`` into those of ``new_idx`` without decoding again.

    Possible when the stream had fewer frames than counted: every row of the new plan is then
    a row already decoded (same index, below ``n_real``) or the last frame (the plan clips to
    ``n_real - 1``). Shrinks ``out`` in place. False when a frame that was not kept is needed.
    """
    if out is None or last is None or len(new_idx) > len(idx):
        return False
    stale = []
    for row, k in enumerate(new_idx):
        if idx[row] == k and k < n_real:
            continue
        if k != n_real - 1:
            return False
        stale.append(row)
    if stale:
        _put(out, stale, last, path, n_real - 1)
    if len(new_idx) < len(idx):
        # ``out`` is this function's caller's only reference (no views): shrink the buffer.
        out.resize((len(new_idx),) + out.shape[1:], refcheck=False)
    return True


def write_video(path: str | Path, frames: np.ndarray, fps: float, lossless: bool = False,
                crf: int = 17) -> Path:
    """Encode uint8 [T, H, W, 3] RGB frames as H.264 mp4.

    ``lossless=False`` writes yuv420p (plays in every browser; needs even H and W, odd sizes
    are padded by one black row/column); ``lossless=True`` writes RGB with libx264rgb -qp 0
    (exact pixels, for intermediate files such as masks and pose videos).
    The file is written to a temporary name and renamed, so no half-written file is left;
    the mp4 is "fast start" (``moov`` index before the ``mdat`` data).
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
        # +faststart is a muxer (container) option: at close the mov muxer rewrites the file
        # (re-opened by its name, the temporary one) with the moov index before mdat, so a
        # browser can start playing before the whole file has arrived.
        with av.open(str(tmp), mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
            if lossless:
                stream = container.add_stream("libx264rgb", rate=rate)
                stream.pix_fmt = "rgb24"
                stream.options = {"qp": "0", "preset": "veryfast"}
            else:
                stream = container.add_stream("libx264", rate=rate)
                stream.pix_fmt = "yuv420p"
                stream.options = {"crf": str(crf), "preset": "medium"}
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
