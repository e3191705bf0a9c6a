"""Engine model specs: exact and fast mode, attention choice, their errors."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from wan_animate.checkpoints.tiny import write_tiny_checkpoint
from wan_animate.cli.demo_media import write_preprocessed
from wan_animate.engine import ATTENTION, MODES, ModelSpec, load_model, unload_all
from wan_animate.errors import InputError
from wan_animate.models.fp8 import Fp8Linear
from wan_animate.sampling.folder import read_preprocessed
from wan_animate.sampling.options import SampleOptions


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("c") / "tiny")


def test_bad_mode_and_attention_name_the_input(ckpt):
    with pytest.raises(InputError, match="mode must be one of exact, fast"):
        ModelSpec(str(ckpt), device="cpu", mode="turbo").validate()
    with pytest.raises(InputError, match="attention must be one of"):
        ModelSpec(str(ckpt), device="cpu", attention="fa4").validate()
    with pytest.raises(InputError, match="one GPU"):
        ModelSpec(str(ckpt), device="cpu", gpus=2, mode="fast").validate()
    with pytest.raises(InputError, match="needs fsdp on"):
        ModelSpec(str(ckpt), device="cpu", gpus=2, swap_blocks=1, fsdp=False).validate()
    with pytest.raises(InputError, match="the DiT has 5 blocks"):      # the tiny DiT
        ModelSpec(str(ckpt), device="cpu", gpus=2, swap_blocks=6).validate()
    with pytest.raises(InputError, match="between 0 and 40"):
        ModelSpec(str(ckpt), device="cpu", swap_blocks=41).validate()
    assert MODES == ("exact", "fast") and "fa3" in ATTENTION


def test_cli_choices_are_the_engine_ones():
    import argparse

    from wan_animate.cli import generate

    p = argparse.ArgumentParser()
    generate.add_arguments(p)
    acts = {a.dest: a for a in p._actions}
    assert tuple(acts["attention"].choices) == ATTENTION and tuple(acts["mode"].choices) == MODES


def test_fast_mode_generates_close_to_exact(ckpt, tmp_path):
    inputs = read_preprocessed(write_preprocessed(tmp_path / "g", 5, 48, 48), False)
    opts = SampleOptions(frame_num=5, steps=2, seed=3)
    try:
        exact = load_model(ModelSpec(str(ckpt), device="cpu", dtype="fp32"))
        ref = exact.decode(exact.sample(inputs, opts))
        fast = load_model(ModelSpec(str(ckpt), device="cpu", dtype="fp32", mode="fast"))
        out = fast.decode(fast.sample(inputs, opts))
        dit = fast._models().dit
        assert sum(isinstance(m, Fp8Linear) for m in dit.modules()) == 8 * len(dit.blocks)
    finally:
        unload_all()
    assert out.shape == ref.shape and torch.isfinite(out).all()
    err = float((out - ref).abs().mean())
    assert 0 < err < 0.1, err          # video in [-1, 1]: fp8 noise, not a different video


def test_swap_blocks_and_t5_cpu_give_the_same_video(ckpt, tmp_path):
    inputs = read_preprocessed(write_preprocessed(tmp_path / "s", 5, 48, 48), False)
    opts = SampleOptions(frame_num=5, steps=2, seed=4)
    try:
        plain = load_model(ModelSpec(str(ckpt), device="cpu", dtype="fp32"))
        ref = plain.decode(plain.sample(inputs, opts))
        swapped = load_model(ModelSpec(str(ckpt), device="cpu", dtype="fp32", swap_blocks=1,
                                       t5_cpu=True))
        out = swapped.decode(swapped.sample(inputs, opts))
        assert swapped._models().dit.block_runner is not None
    finally:
        unload_all()
    torch.testing.assert_close(out, ref, atol=0, rtol=0)
