"""video_io: frame-indexed decoding for --fps (exact and memory-bounded) and fast-start mp4."""
from __future__ import annotations

import struct
import tracemalloc
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from wan_animate.errors import InputError
from wan_animate.preprocess import video_io
from wan_animate.preprocess.frames import resample_plan
from wan_animate.preprocess.pipeline import _resample
from wan_animate.preprocess.video_io import read_video, write_video


def _full_decode(path: Path) -> tuple[np.ndarray, float]:
    """Every decoded frame, uint8 [T, H, W, 3] RGB, and the average rate: the reference that
    ``read_video`` must index into (the decode loop read_video used before --fps)."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate or Fraction(30)
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    return np.stack(frames), float(rate)


def _top_level_boxes(path: Path) -> list[str]:
    """Types of the top-level ISO-BMFF boxes of ``path`` in file order."""
    data = path.read_bytes()
    types, pos = [], 0
    while pos + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if size == 1:                                   # 64-bit largesize follows the type
            size = struct.unpack(">Q", data[pos + 8:pos + 16])[0]
        elif size == 0:                                 # box runs to the end of the file
            size = len(data) - pos
        assert size >= 8, f"bad box size {size} at {pos} in {path}"
        types.append(kind.decode("latin-1"))
        pos += size
    assert pos == len(data), f"{path}: boxes end at {pos}, file has {len(data)} bytes"
    return types


def _assert_frames_equal(got: np.ndarray, expected: np.ndarray) -> None:
    """Exact equality of uint8 [T, H, W, 3] stacks (np.array_equal: fast on 100s of MB)."""
    assert got.shape == expected.shape, (got.shape, expected.shape)
    if not np.array_equal(got, expected):
        bad = [t for t in range(len(got)) if not np.array_equal(got[t], expected[t])]
        raise AssertionError(f"{len(bad)} of {len(got)} frames differ, first {bad[:5]}")


def _numbered_frames(n: int, h: int = 48, w: int = 64) -> np.ndarray:
    """uint8 [n, h, w, 3]: frame t is a flat colour that encodes t (distinct after lossless coding)."""
    t = np.arange(n)
    colours = np.stack([t % 256, (t * 7) % 256, (t // 256) * 40 % 256], axis=1).astype(np.uint8)
    return np.ascontiguousarray(np.broadcast_to(colours[:, None, None, :], (n, h, w, 3)))


@pytest.fixture(scope="module")
def talking(samples: Path) -> tuple[Path, np.ndarray, float]:
    """578x578 29.97 fps real clip whose metadata says 142 frames but 141 decode (edit list)."""
    path = samples / "extra" / "talkinghead_videos_3.mp4"
    full, fps = _full_decode(path)
    return path, full, fps


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, float]:
    """A lossless 30 fps clip of 61 numbered frames."""
    path = tmp_path_factory.mktemp("video") / "numbered.mp4"
    write_video(path, _numbered_frames(61), 30, lossless=True)
    full, fps = _full_decode(path)
    return path, full, fps


@pytest.mark.parametrize("lossless", [False, True], ids=["yuv420p", "lossless"])
def test_mp4_moov_before_mdat(tmp_path: Path, lossless: bool) -> None:
    frames = np.random.default_rng(0).integers(0, 256, (6, 32, 48, 3), dtype=np.uint8)
    out = write_video(tmp_path / "clip.mp4", frames, 24, lossless=lossless)
    boxes = _top_level_boxes(out)
    assert "moov" in boxes and "mdat" in boxes, boxes
    assert boxes.index("moov") < boxes.index("mdat"), f"moov after mdat (no +faststart): {boxes}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]     # no temp file left
    back, fps = read_video(out)
    assert back.shape == frames.shape and fps == 24
    if lossless:
        _assert_frames_equal(back, frames)


@pytest.mark.parametrize("fps", [None, -1, 2, 7.5, 16, 30, 45, 60],
                         ids=["none", "source", "2", "7.5", "16", "30", "45-repeat", "60-repeat"])
@pytest.mark.parametrize("clip", ["talking", "synthetic"])
def test_read_video_fps_is_full_decode_indexed(clip: str, fps: float | None,
                                               request: pytest.FixtureRequest) -> None:
    path, full, src_fps = request.getfixturevalue(clip)
    frames, eff = read_video(path, fps=fps)
    if fps is None:
        expected, expected_fps = full, src_fps
    else:
        expected_fps, target, idx = resample_plan(len(full), src_fps, fps)
        expected = full[idx]
        assert len(idx) == target
    assert frames.dtype == np.uint8 and frames.flags.c_contiguous
    assert frames.shape == expected.shape
    _assert_frames_equal(frames, expected)
    assert eff == pytest.approx(expected_fps, abs=0)
    if fps is not None and fps > 1.4 * src_fps:
        assert len(np.unique(idx)) < len(idx)          # the repeat case really repeats


def test_metadata_count_off_by_one_is_fixed_in_one_pass(talking: tuple[Path, np.ndarray, float],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    path, full, src_fps = talking
    assert video_io._probe(path)[1] == len(full) + 1       # the container's count is wrong
    passes: list[int] = []
    decode = video_io._decode_kept
    monkeypatch.setattr(video_io, "_decode_kept", lambda p, idx: passes.append(len(idx)) or decode(p, idx))
    frames, _ = read_video(path, fps=-1)
    _assert_frames_equal(frames, full[resample_plan(len(full), src_fps, -1)[2]])
    assert len(passes) == 1


@pytest.mark.parametrize("delta", [-20, -3, -1, 1, 2, 9, 40])
@pytest.mark.parametrize("fps", [None, -1, 4, 45])
def test_wrong_upfront_count_still_exact(synthetic: tuple[Path, np.ndarray, float], delta: int,
                                         fps: float | None, monkeypatch: pytest.MonkeyPatch) -> None:
    path, full, src_fps = synthetic
    monkeypatch.setattr(video_io, "_probe", lambda p: (src_fps, len(full) + delta))
    frames, eff = read_video(path, fps=fps)
    idx = list(range(len(full))) if fps is None else resample_plan(len(full), src_fps, fps)[2]
    _assert_frames_equal(frames, full[idx])


def test_too_short_for_fps_raises_the_pipeline_message(tmp_path: Path) -> None:
    path = write_video(tmp_path / "short.mp4", _numbered_frames(3), 30, lossless=True)
    full, src_fps = _full_decode(path)
    with pytest.raises(InputError) as official:
        _resample(full, src_fps, 2.0)
    with pytest.raises(InputError) as ours:
        read_video(path, fps=2.0)
    assert str(ours.value).startswith(str(official.value)), (str(ours.value), str(official.value))
    assert str(path) in str(ours.value)


@pytest.mark.parametrize("fps", [0, -2, float("nan"), float("inf")])
def test_invalid_fps_names_the_file(synthetic: tuple[Path, np.ndarray, float], fps: float) -> None:
    path = synthetic[0]
    with pytest.raises(InputError, match="positive frame rate or -1") as err:
        read_video(path, fps=fps)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("fps", [2, 16, 6])
def test_resampled_frames_pass_the_pipeline_resample_unchanged(
        talking: tuple[Path, np.ndarray, float], fps: float) -> None:
    """What the CLI will do: read with --fps, then preprocess's ``_resample`` at the effective fps."""
    path, full, src_fps = talking
    frames, eff = read_video(path, fps=fps)
    again, eff2 = _resample(frames, eff, fps)
    official, official_fps = _resample(full, src_fps, fps)
    assert eff2 == official_fps
    _assert_frames_equal(again, official)


def _peak_bytes(fn) -> int:  # noqa: ANN001 - a no-argument callable
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        result = fn()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    del result
    return peak


def test_subsampled_read_holds_only_the_kept_frames(samples: Path, tmp_path: Path) -> None:
    """Peak traced memory of read_video(1080p, fps=2) ~ reading a clip of just the kept frames."""
    video = samples / "animate" / "video.mp4"               # 1920x1080, 30 fps, 106 frames
    kept, eff = read_video(video, fps=2)
    trimmed = write_video(tmp_path / "kept.mp4", kept, eff, lossless=True)
    frame_bytes = kept[0].nbytes
    del kept
    sub_peak = _peak_bytes(lambda: read_video(video, fps=2))
    trim_peak = _peak_bytes(lambda: read_video(trimmed, fps=-1))
    print(f"\ntracemalloc peak: read_video(1080p 106 frames, fps=2) {sub_peak / 2**20:.1f} MiB, "
          f"trimmed 7-frame clip {trim_peak / 2**20:.1f} MiB ({frame_bytes / 2**20:.1f} MiB/frame)")
    assert trim_peak >= 7 * frame_bytes
    assert sub_peak <= 1.25 * trim_peak, (sub_peak, trim_peak)
