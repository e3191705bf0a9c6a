"""Wan Animate Sampler on the tiny checkpoint with preprocessed sample videos."""
from __future__ import annotations

import pytest

from wan_animate.errors import Cancelled, InputError

from nodes_testkit import run_node, sampler_settings


def test_animate_latent(animate_latent, animate_pre) -> None:
    pose, _, fps = animate_pre
    assert animate_latent.num_frames == pose.shape[0] and animate_latent.fps == fps
    assert animate_latent.clips == 2                             # 8 frames in 5-frame clips


def test_progress_per_step_and_clip_then_interrupt(nodes, loaded_model, animate_pre, animate_media,
                                                   fake_comfy) -> None:
    pose, face, fps = animate_pre
    args = dict(model=loaded_model, reference=animate_media["reference"], pose_video=pose[:5],
                face_video=face[:5], fps=fps, **sampler_settings(steps=3))
    run_node(nodes.WanAnimateSampler, **args)
    assert [(v, t) for v, t, _ in fake_comfy.events] == [(1, 3), (2, 3), (3, 3)]
    fake_comfy.events.clear()
    fake_comfy.interrupt_at = 1
    with pytest.raises(fake_comfy.mm.InterruptProcessingException) as info:
        nodes.WanAnimateSampler.execute(**args)
    assert isinstance(info.value.__cause__, Cancelled)
    assert "step 1/3" in str(info.value.__cause__)               # stopped after step 1
    fake_comfy.events.clear()
    run_node(nodes.WanAnimateSampler, **args)                    # the model still works
    assert len(fake_comfy.events) == 3


def test_replace_mode(nodes, loaded_model, replace_pre, replace_media) -> None:
    pose, face, background, mask, fps = replace_pre
    args = dict(model=loaded_model, reference=replace_media["reference"], pose_video=pose,
                face_video=face, fps=fps, **sampler_settings(mode="replace"))
    with pytest.raises(InputError, match="needs the background and character_mask"):
        nodes.WanAnimateSampler.execute(**args)
    (latent,) = run_node(nodes.WanAnimateSampler, **args, background=background, character_mask=mask)
    (images, out_fps) = run_node(nodes.WanAnimateDecode, model=loaded_model, latent=latent)
    assert images.shape == pose.shape and out_fps == fps


def test_validate_inputs_messages(nodes) -> None:
    v = nodes.WanAnimateSampler.validate_inputs
    assert v(frame_num=77, refert_num=5) is True
    assert "4n+1" in v(frame_num=75, refert_num=1)
    assert "refert_num must be 1 or 5" in v(frame_num=77, refert_num=3)
    assert "too short for refert_num 5" in v(frame_num=9, refert_num=5)
    assert "outside 5..257" in v(frame_num=261, refert_num=1)
    assert v(frame_num=None, refert_num=1) is True              # linked: checked at run time
