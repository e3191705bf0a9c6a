from __future__ import annotations

import pytest
import torch

from wan_animate.errors import InputError
from wan_animate.preprocess.clip_plan import (i2v_mask, pingpong_indices, plan_clips,
                                              replace_keep_mask, valid_length)


def test_official_example_two_clips() -> None:
    plan = plan_clips(100, 77, 1)
    assert plan.target_len == 153 and [(c.start, c.end, c.reuse) for c in plan.clips] == [
        (0, 77, 0), (76, 153, 1)]
    om = plan.output_map()
    assert len(om) == 100 and om[76] == (0, 76) and om[77] == (1, 1)


@pytest.mark.parametrize("n,r", [(1, 1), (1, 5), (3, 5), (5, 5)])
def test_short_videos_still_get_a_clip(n: int, r: int) -> None:
    plan = plan_clips(n, 77, r)
    assert len(plan.clips) == 1 and len(plan.output_map()) == n
    assert all(0 <= i < n for i in plan.pose_indices)


def test_pingpong_and_valid_length() -> None:
    assert pingpong_indices(4, 9) == [0, 1, 2, 3, 2, 1, 0, 1, 2]
    assert valid_length(10, 5, 1) == 13
    with pytest.raises(InputError):
        plan_clips(10, 6, 1)


def test_i2v_mask_layout_and_replace_mask() -> None:
    m = i2v_mask(3, 2, 2, 1)
    assert m.shape == (4, 3, 2, 2) and m[:, 0].eq(1).all() and m[:, 1:].eq(0).all()
    keep = replace_keep_mask(torch.ones(9, 16, 16), 2, 2)
    assert keep.dtype == torch.bfloat16 and keep.shape == (1, 9, 2, 2) and keep.eq(0).all()
    m = i2v_mask(3, 2, 2, 5, keep)
    assert m[:, :2].eq(1).all() and m[:, 2].eq(0).all()
