"""AnimateInputs: float or int frames and out-of-range masks are refused, not turned black."""
from __future__ import annotations

import numpy as np
import pytest

from wan_animate.errors import InputError
from wan_animate.sampling.options import AnimateInputs


def _inputs(**override: np.ndarray) -> AnimateInputs:
    n, h, w = 5, 32, 48
    u8 = lambda *s: np.full(s, 128, np.uint8)  # noqa: E731
    kw = dict(pose=u8(n, h, w, 3), face=u8(n, 512, 512, 3), reference=u8(40, 30, 3),
              background=u8(n, h, w, 3), mask=np.full((n, h, w), 0.5, np.float32))
    kw.update(override)
    return AnimateInputs(**kw)


def test_uint8_inputs_and_both_mask_kinds_pass() -> None:
    _inputs().validate("replace")
    _inputs(mask=np.full((5, 32, 48, 3), 255, np.uint8)).validate("replace")
    _inputs(mask=np.zeros((5, 32, 48), np.float64)).validate("replace")


@pytest.mark.parametrize("name,shape", [("pose", (5, 32, 48, 3)), ("face", (5, 512, 512, 3)),
                                        ("reference", (40, 30, 3)), ("background", (5, 32, 48, 3))])
@pytest.mark.parametrize("dtype,hint", [(np.float32, "multiply by 255"), (np.int64, "cast to uint8")])
def test_non_uint8_frames_are_refused_by_name(name, shape, dtype, hint) -> None:
    bad = _inputs(**{name: np.full(shape, 0.5 if dtype == np.float32 else 128, dtype)})
    with pytest.raises(InputError, match=f"{name} must be uint8 RGB in 0..255, got .*{hint}"):
        bad.validate("replace")


@pytest.mark.parametrize("mask,match", [
    (np.full((5, 32, 48), 255.0, np.float32), r"\[0, 1\].*\[255, 255\].*divide a 0..255 mask"),
    (np.full((5, 32, 48), -0.5, np.float32), r"\[-0.5, -0.5\]"),
    (np.full((5, 32, 48), np.nan, np.float32), "NaN"),
    (np.full((5, 32, 48), 255, np.int64), "mask must be float in"),
])
def test_out_of_range_masks_are_refused(mask, match) -> None:
    with pytest.raises(InputError, match=match):
        _inputs(mask=mask).validate("replace")
