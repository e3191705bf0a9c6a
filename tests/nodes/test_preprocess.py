"""Preprocess nodes on the real sample videos (MediaPipe backend, small sizes, CPU)."""
from __future__ import annotations

import pytest
import torch

from wan_animate.errors import CheckpointError

from nodes_testkit import SMALL, run_node

pytest.importorskip("mediapipe")


def test_animate_pose_and_faces(animate_pre, animate_media) -> None:
    pose, face, fps = animate_pre
    n = round(animate_media["video"].shape[0] / animate_media["fps"] * SMALL["target_fps"])
    assert fps == SMALL["target_fps"] and pose.shape[0] == face.shape[0] == n
    h, w = pose.shape[1:3]
    assert h % 16 == 0 and w % 16 == 0 and abs(h * w - 128 * 72) < 0.5 * 128 * 72
    assert face.shape[1:] == (512, 512, 3)
    assert (pose > 0.2).float().mean() > 0.002                   # a skeleton was drawn
    assert face.std() > 0.05                                     # real crops, not a blank


def test_replace_mask_and_background(replace_pre) -> None:
    pose, face, background, mask, fps = replace_pre
    n, h, w = pose.shape[:3]
    assert background.shape == pose.shape and mask.shape == (n, h, w) and face.shape[0] == n
    assert set(torch.unique(mask).tolist()) <= {0.0, 1.0}
    assert 0.01 < mask.mean() < 0.9                              # a character, not the frame
    inside = background[mask.bool()]
    assert inside.std() < background.std()                       # the character is blanked out


def test_progress_and_interrupt(nodes, animate_media, fake_comfy) -> None:
    few = dict(animate_media, video=animate_media["video"][:6])
    args = dict(few, **SMALL, retarget=False, backend="mediapipe")
    run_node(nodes.WanAnimatePreprocess, **args)
    stages = [(v, t) for v, t, _ in fake_comfy.events]
    assert stages == [(1, 2), (2, 2)]       # 2 pose frames (the reference is detected only to retarget)
    fake_comfy.events.clear()
    run_node(nodes.WanAnimatePreprocess, **dict(args, retarget=True))
    stages = [(v, t) for v, t, _ in fake_comfy.events]
    assert (1, 1) in stages and stages[-1] == (2, 2)             # reference, then 2 pose frames
    fake_comfy.events.clear()
    fake_comfy.interrupt_at = 1
    with pytest.raises(fake_comfy.mm.InterruptProcessingException):
        nodes.WanAnimatePreprocess.execute(**args)


def test_checks(nodes, animate_media) -> None:
    assert "target_fps must be -1" in nodes.WanAnimatePreprocess.validate_inputs(target_fps=0)
    assert "outside" in nodes.WanAnimateReplacePreprocess.validate_inputs(target_fps=-2)
    assert nodes.WanAnimatePreprocess.validate_inputs(target_fps=-1) is True
    with pytest.raises(CheckpointError, match="vitpose needs the model input"):
        nodes.WanAnimatePreprocess.execute(**animate_media, **SMALL, retarget=False, backend="vitpose")
    media = {k: v for k, v in animate_media.items() if k != "reference"}
    with pytest.raises(CheckpointError, match="sam2 needs the model input"):
        nodes.WanAnimateReplacePreprocess.execute(**media, **SMALL, backend="auto", segmenter="sam2",
                                                  mask_kernel=7, mask_iterations=3, mask_w_len=1,
                                                  mask_h_len=1)
