"""ComfyUI IMAGE/MASK <-> engine arrays, and the schema range check."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from wan_animate.errors import InputError


@pytest.fixture(scope="module")
def t(nodes):  # noqa: ANN001, ANN201
    import sys
    return sys.modules[f"{nodes.__name__}.types"]


def test_image_round_trip_is_exact(t) -> None:
    frames = np.random.default_rng(0).integers(0, 256, (5, 7, 9, 3), dtype=np.uint8)
    image = t.uint8_to_image(frames)
    assert image.dtype == torch.float32 and image.shape == (5, 7, 9, 3)
    assert 0 <= image.min() and image.max() <= 1
    np.testing.assert_array_equal(t.image_to_uint8(image, "x"), frames)


def test_alpha_dropped_grey_expanded_and_long_videos_chunked(t) -> None:
    rgba = torch.rand(40, 4, 6, 4)                               # more frames than one chunk
    out = t.image_to_uint8(rgba, "x")
    assert out.shape == (40, 4, 6, 3)
    np.testing.assert_array_equal(out, (rgba[..., :3] * 255).round().to(torch.uint8).numpy())
    grey = t.image_to_uint8(torch.full((1, 2, 2, 1), 0.5), "x")
    assert grey.shape == (1, 2, 2, 3) and (grey == 128).all()


@pytest.mark.parametrize("bad", [torch.zeros(4, 4, 3), torch.zeros(1, 4, 4, 2), torch.zeros(0, 4, 4, 3),
                                 np.zeros((1, 4, 4, 3))])
def test_bad_images_name_the_input(t, bad) -> None:
    with pytest.raises(InputError, match="pose_video"):
        t.image_to_uint8(bad, "pose_video")


def test_first_image_and_face_crops(t) -> None:
    batch = torch.rand(3, 20, 30, 3)
    np.testing.assert_array_equal(t.first_image(batch, "r"), t.image_to_uint8(batch[:1], "r")[0])
    crops = t.face_crops(torch.rand(2, 100, 80, 3))
    assert crops.shape == (2, 512, 512, 3) and crops.dtype == np.uint8
    same = torch.rand(2, 512, 512, 3)
    np.testing.assert_array_equal(t.face_crops(same), t.image_to_uint8(same, "f"))


def test_masks(t) -> None:
    m = t.mask_to_float(torch.tensor([[[0.0, 0.5], [1.0, 2.0]]]))
    assert m.dtype == np.float32 and m.shape == (1, 2, 2) and m.max() == 1.0
    assert t.mask_to_float(torch.zeros(3, 4)).shape == (1, 3, 4)             # [H, W] -> [1, H, W]
    with pytest.raises(InputError, match="character_mask"):
        t.mask_to_float(torch.zeros(1, 2, 3, 4))
    engine = np.zeros((2, 3, 4, 3), np.uint8)
    engine[0, 1, 2] = 255
    mask = t.engine_mask_to_mask(engine)
    assert mask.shape == (2, 3, 4) and mask.sum() == 1 and mask[0, 1, 2] == 1


def test_video_to_image_maps_minus_one_one_to_zero_one(t) -> None:
    video = torch.stack([torch.full((2, 4, 5), v) for v in (-1.0, 0.0, 1.0)])  # [3, N, H, W]
    image = t.video_to_image(video)
    assert image.shape == (2, 4, 5, 3)
    assert torch.allclose(image[0, 0, 0], torch.tensor([0.0, 0.5, 1.0]))
    with pytest.raises(InputError):
        t.video_to_image(torch.zeros(4, 2, 4, 5))


def test_custom_socket_types(t) -> None:
    assert str(t.ModelType.io_type) == "WANANIMATE_MODEL"
    assert str(t.LatentType.io_type) == "WANANIMATE_LATENT"
    assert t.USING_COMFY_API is False                                         # no ComfyUI in CI


def test_check_ranges(t, nodes) -> None:
    t.check_ranges(nodes.WanAnimateSampler, frame_num=77, steps=1)
    with pytest.raises(InputError, match="steps = 0 is outside 1..200"):
        t.check_ranges(nodes.WanAnimateSampler, steps=0)
