"""Wan Animate Decode: latent -> IMAGE frames + fps (what Create Video takes)."""
from __future__ import annotations

import pytest

from nodes_testkit import run_node


def test_decode_gives_every_frame_at_the_source_rate(nodes, loaded_model, animate_latent, animate_pre) -> None:
    pose, _, fps = animate_pre
    images, out_fps = run_node(nodes.WanAnimateDecode, model=loaded_model, latent=animate_latent)
    assert images.shape == pose.shape and out_fps == fps
    assert images.std() > 0.01                                   # not a constant frame


def test_decode_honours_a_pending_interrupt(nodes, loaded_model, animate_latent, fake_comfy) -> None:
    fake_comfy.flag = True
    with pytest.raises(fake_comfy.mm.InterruptProcessingException):
        nodes.WanAnimateDecode.execute(model=loaded_model, latent=animate_latent)
