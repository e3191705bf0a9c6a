from __future__ import annotations

import numpy as np
import pytest

from wan_animate.errors import InputError
from wan_animate.preprocess.frames import (area_size, effective_frame_count, padding_resize,
                                           resample_plan, resize_by_area, sample_frame_indices)


@pytest.mark.parametrize("hw,area,expected", [
    ((1080, 1920), 1280 * 720, (720, 1280)), ((1920, 1080), 1280 * 720, (1280, 720)),
    ((500, 500), 1280 * 720, (960, 960)), ((1080, 1920), 832 * 480, (464, 832)),
    ((1920, 1080), 832 * 480, (832, 464)), ((500, 500), 832 * 480, (624, 624))])
def test_area_size_matches_fact_sheet(hw, area, expected) -> None:
    assert area_size(*hw, area) == expected


def test_resize_by_area_letterboxes_with_black() -> None:
    img = np.full((100, 300, 3), 200, np.uint8)      # 3:1 -> 1088x352 (3.09:1): side bars
    out = resize_by_area(img, 832 * 480)
    assert out.shape == (352, 1088, 3)
    assert out[:, 0].max() == 0 and out[:, -1].max() == 0 and out[:, 544].min() == 200


def test_padding_resize_centres_and_keeps_dtype() -> None:
    img = np.full((10, 10, 3), 255, np.uint8)
    out = padding_resize(img, 20, 40)
    assert out.dtype == np.uint8 and out.shape == (20, 40, 3)
    assert out[:, :10].max() == 0 and out[:, 10:30].min() == 255 and out[:, 30:].max() == 0


def test_resample_plan_half_rate_and_keep() -> None:
    eff, n, idx = resample_plan(100, 60.0, 30)
    assert (eff, n) == (30, 50) and idx[:4] == [0, 2, 4, 6]
    eff, n, idx = resample_plan(7, 24.0, -1)
    assert eff == 24.0 and idx == list(range(7))
    assert sample_frame_indices(10, 25.0, 12, 10.0)[-1] == 9      # clipped
    with pytest.raises(InputError):
        resample_plan(10, 0.0, 30)


def test_frame_count_rule() -> None:
    assert effective_frame_count(106, 30.0, 3.5333) == 106
    assert effective_frame_count(200, 30.0, 3.5333) == 106      # > 10 % off: duration wins
