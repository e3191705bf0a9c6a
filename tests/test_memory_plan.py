"""The ``auto`` memory plan: the fewest swapped blocks that fit, more as memory shrinks."""
from __future__ import annotations

import pytest

from wan_animate.memory_plan import GIB, UMT5_XXL_BYTES, estimate, plan_memory
from wan_animate.models.config import DiTConfig
from wan_animate.placement import Placement

T5 = UMT5_XXL_BYTES


def plan(p: int, free_gib: float, **kw):  # noqa: ANN201
    pl = Placement.resolve(device_type="cuda", gpus=p, pooled=p > 1, **kw)
    return plan_memory(DiTConfig(), pl, [int(free_gib * GIB)] * p, t5_bytes=T5)


def test_a_large_gpu_swaps_nothing_and_a_small_one_swaps_until_it_fits() -> None:
    assert plan(1, 140).swap_blocks == 0 and plan(2, 80).swap_blocks == 0
    small = plan(2, 22)
    assert 0 < small.swap_blocks < 40 and small.fits
    assert max(small.peak_gib.values()) <= small.budget_gib
    # one block fewer would not fit: the plan takes the fewest
    pl = Placement.resolve(device_type="cuda", gpus=2, pooled=True)
    _, peak, _ = estimate(DiTConfig(), pl, small.swap_blocks - 1, t5_bytes=T5)
    assert max(peak.values()) / GIB > small.budget_gib


@pytest.mark.parametrize("p", [1, 2, 4, 8])
def test_less_memory_never_swaps_fewer_blocks(p: int) -> None:
    swaps = [plan(p, g).swap_blocks for g in (80, 48, 32, 22, 16)]
    assert swaps == sorted(swaps)


def test_more_gpus_need_fewer_swapped_blocks_and_the_plan_is_printed() -> None:
    swaps = [plan(p, 22).swap_blocks for p in (1, 2, 4, 8)]
    assert swaps == sorted(swaps, reverse=True) and swaps[-1] < swaps[0]
    text = plan(2, 22).describe()
    assert "swap_blocks" in text and "rank 0: resident" in text and "other ranks" in text
    assert "VAE decode" in text


def test_a_plan_that_cannot_fit_says_what_to_change() -> None:
    tiny = plan(1, 8)
    assert not tiny.fits and tiny.swap_blocks == 40 and "use more GPUs" in tiny.describe()


def test_no_plan_on_the_cpu_or_with_explicit_settings(tmp_path) -> None:
    from wan_animate.checkpoints.tiny import write_tiny_checkpoint
    from wan_animate.engine import ModelSpec, WanAnimateModel

    ckpt = write_tiny_checkpoint(tmp_path / "tiny")
    assert WanAnimateModel(ModelSpec(str(ckpt), device="cpu")).memory_plan() is None
    with pytest.raises(Exception, match="memory must be auto or off"):
        ModelSpec(str(ckpt), device="cpu", memory="some").validate()


def test_one_gpu_short_of_memory_decodes_in_bands_and_a_pool_splits() -> None:
    """vae "auto": a 24 GB card decodes 720p in bands (whole: ~19 GiB of activations), a large
    one whole; on a pool each rank decodes its rows (about 1/P of the whole decode)."""
    cfg = DiTConfig()
    one = Placement.resolve(device_type="cuda", gpus=1, pooled=False)
    small = plan_memory(cfg, one, [int(22 * GIB)], vae_auto=True, t5_bytes=T5)
    large = plan_memory(cfg, one, [int(140 * GIB)], vae_auto=True, t5_bytes=T5)
    fixed = plan_memory(cfg, one, [int(22 * GIB)], vae_auto=False, t5_bytes=T5)
    assert small.vae_bands == 8 and large.vae_bands == 1 and fixed.vae_bands == 1
    assert small.decode_gib < fixed.decode_gib - 10 and "in 8 bands" in small.describe()
    whole = Placement.resolve(device_type="cuda", gpus=8, pooled=True, vae="whole")
    split = Placement.resolve(device_type="cuda", gpus=8, pooled=True)
    assert split.vae == "split" and whole.vae == "whole"
    d_whole, d_split = (estimate(cfg, pl, 0)[2] for pl in (whole, split))
    assert d_whole - d_split > 15 * GIB
