"""generate() end to end on a tiny checkpoint: frame counts, modes, chaining, errors."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from wan_animate.checkpoints.official import load_bundle
from wan_animate.checkpoints.tiny import write_tiny_checkpoint
from wan_animate.cli.demo_media import write_preprocessed
from wan_animate.errors import Cancelled, InputError
from wan_animate.parity import pipeline
from wan_animate.sampling.folder import read_preprocessed
from wan_animate.sampling.generate import generate
from wan_animate.sampling.options import SampleOptions


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny")


@pytest.fixture(scope="module")
def bundle(tiny_ckpt):
    return load_bundle(tiny_ckpt, "cpu", use_relighting_lora=True)


def test_pipeline_fixture_parity(official_fixtures):
    results = pipeline.run(official_fixtures / "pipeline")
    assert len(results) > 50
    failed = [r.line() for r in results if not r.passed]
    assert not failed, "\n".join(failed)


@pytest.mark.parametrize("mode", ["animate", "replace"])
@pytest.mark.parametrize("frame_num,refert,frames", [(5, 1, 5), (5, 1, 9), (5, 1, 7), (5, 1, 1),
                                                     (13, 5, 13), (13, 5, 21), (13, 5, 3)])
def test_output_has_input_length(bundle, tmp_path, mode, frame_num, refert, frames):
    src = write_preprocessed(tmp_path / "src", frames, 32, 48, replace=mode == "replace")
    inputs = read_preprocessed(src, mode == "replace")
    events = []
    opts = SampleOptions(mode=mode, frame_num=frame_num, refert_num=refert, steps=2, seed=1)
    video = generate(bundle, inputs, opts, on_step=events.append)
    assert video.shape == (3, frames, 32, 48)
    assert video.abs().max() <= 1 and torch.isfinite(video).all()
    assert events[-1].done == events[-1].total and events[-1].step == 2


def test_seed_reproducible_and_color_match_changes_later_clips(bundle, tmp_path):
    inputs = read_preprocessed(write_preprocessed(tmp_path / "s", 9, 32, 48), False)
    opts = SampleOptions(frame_num=5, steps=2, seed=3)
    a, b = generate(bundle, inputs, opts), generate(bundle, inputs, opts)
    assert torch.equal(a, b)
    c = generate(bundle, inputs, SampleOptions(frame_num=5, steps=2, seed=3, color_match=True))
    assert torch.equal(a[:, :5], c[:, :5]) and not torch.equal(a[:, 5:], c[:, 5:])


def test_cancel_stops_within_a_step(bundle, tmp_path):
    inputs = read_preprocessed(write_preprocessed(tmp_path / "c", 5, 32, 48), False)
    seen = []
    with pytest.raises(Cancelled):
        generate(bundle, inputs, SampleOptions(frame_num=5, steps=5), on_step=seen.append,
                 cancelled=lambda: len(seen) >= 2)
    assert len(seen) == 2


@pytest.mark.parametrize("kw,match", [
    (dict(frame_num=6), "4n\\+1"), (dict(refert_num=3), "1 or 5"),
    (dict(frame_num=9, refert_num=5), "too short"), (dict(solver="euler"), "unknown sampling solver")])
def test_bad_options(bundle, tmp_path, kw, match):
    inputs = read_preprocessed(write_preprocessed(tmp_path / "b", 5, 32, 48), False)
    with pytest.raises(InputError, match=match):
        generate(bundle, inputs, SampleOptions(steps=1, **kw))


def test_bad_folders(tmp_path):
    src = write_preprocessed(tmp_path / "a", 5, 32, 48)
    with pytest.raises(InputError, match="src_bg.mp4, src_mask.mp4.*--replace_flag"):
        read_preprocessed(src, True)
    (src / "src_face.mp4").unlink()
    with pytest.raises(InputError, match="src_face.mp4.*wan-animate preprocess"):
        read_preprocessed(src, False)
    odd = write_preprocessed(tmp_path / "odd", 5, 40, 48)
    with pytest.raises(InputError, match="multiples of 16"):
        read_preprocessed(odd, False)
    r = write_preprocessed(tmp_path / "r", 5, 32, 48, replace=True)
    from wan_animate.preprocess.video_io import read_video, write_video
    bg, fps = read_video(r / "src_bg.mp4")
    write_video(r / "src_bg.mp4", bg[:3], fps, lossless=True)
    with pytest.raises(InputError, match="same frame count"):
        read_preprocessed(r, True)
    (r / "src_ref.png").write_bytes(b"not an image")
    with pytest.raises(InputError, match="src_ref.png"):
        read_preprocessed(r, True)
