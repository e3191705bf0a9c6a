from __future__ import annotations

import numpy as np
import pytest

from wan_animate.errors import InputError
from wan_animate.preprocess.mask import (MaskOptions, background, block_mask, mask_frame,
                                         postprocess_mask)


def _blob() -> np.ndarray:
    m = np.zeros((60, 80), np.uint8)
    m[10:40, 20:30] = 1
    m[35:50, 20:60] = 1
    return m


def test_block_mask_does_not_modify_input_and_fills_box_minus_last_row_col() -> None:
    m = _blob()
    before = m.copy()
    out = block_mask(m, 1, 1)
    assert np.array_equal(m, before)
    assert out[10:49, 20:59].all() and out.sum() > m.sum()
    assert out[49, 20:59].sum() == m[49, 20:59].sum()             # last row untouched


def test_errors_are_clear() -> None:
    with pytest.raises(InputError, match="empty"):
        block_mask(np.zeros((5, 5), np.uint8), 1, 1)
    with pytest.raises(InputError, match="cell size 0"):
        block_mask(_blob(), 100, 1)
    with pytest.raises(InputError):
        MaskOptions(k=0)


def test_postprocess_empty_and_iterations_zero() -> None:
    assert postprocess_mask(np.zeros((8, 8), np.uint8), MaskOptions()).sum() == 0
    m = _blob()
    assert np.array_equal(postprocess_mask(m, MaskOptions(iterations=0)), m)


def test_background_and_mask_frame() -> None:
    frame = np.full((60, 80, 3), 77, np.uint8)
    aug = postprocess_mask(_blob(), MaskOptions())
    bg = background(frame, aug)
    assert bg.dtype == np.uint8 and (bg[aug == 1] == 0).all() and (bg[aug == 0] == 77).all()
    mf = mask_frame(aug)
    assert mf.shape == (60, 80, 3) and set(np.unique(mf)) == {0, 255}
