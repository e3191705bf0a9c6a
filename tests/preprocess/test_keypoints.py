from __future__ import annotations

import numpy as np
import pytest

from wan_animate.errors import InputError
from wan_animate.preprocess.keypoints import metas_from_wholebody, split_wholebody


def _seq(t: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    kps = rng.uniform(10, 100, (t, 133, 3))
    kps[..., 2] = 0.9
    return kps


def test_split_averages_the_documented_rows() -> None:
    kp = np.arange(133 * 3, dtype=np.float64).reshape(133, 3)
    body, lh, rh, face = split_wholebody(kp)
    assert np.array_equal(body[1], (kp[5] + kp[6]) / 2)           # neck
    assert np.array_equal(body[18], (kp[17] + kp[18]) / 2)        # left toe
    assert np.array_equal(lh, kp[91:112]) and np.array_equal(rh, kp[112:133])
    assert np.array_equal(face, kp[22:91])
    with pytest.raises(InputError):
        split_wholebody(kp[:100])


def test_missing_body_reuses_previous_frame() -> None:
    kps = _seq(3)
    kps[1, :, 0] = -5.0
    metas = metas_from_wholebody(kps, 200, 100)
    assert np.array_equal(metas[1].body, metas[0].body)
    assert not np.array_equal(metas[1].left_hand, metas[0].left_hand)


def test_missing_body_on_first_frame() -> None:
    kps = _seq(3)
    kps[0, :, 1] = -5.0
    with pytest.raises(InputError, match="frame 0"):
        metas_from_wholebody(kps, 200, 100)
    metas = metas_from_wholebody(kps, 200, 100, fallback_first=True)
    assert np.array_equal(metas[0].body, metas[1].body)


def test_float32_input_stays_float32() -> None:
    metas = metas_from_wholebody(_seq(1).astype(np.float32), 200, 100)
    assert metas[0].body.dtype == np.float32
