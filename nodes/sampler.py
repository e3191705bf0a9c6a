"""Wan Animate Sampler: reference + pose/face videos (+ background/mask) -> latent.

Runs :meth:`wan_animate.engine.WanAnimateModel.sample` (on the worker pool when the model
uses several GPUs), long videos clip by clip with the official temporal guidance, with one
ComfyUI progress bar over all steps of all clips and ComfyUI's cancel honoured at the next
step. The widget ids are the fields of :class:`~wan_animate.sampling.options.SampleOptions`.
"""
from __future__ import annotations

import torch

from wan_animate.engine import WanAnimateModel
from wan_animate.errors import InputError
from wan_animate.sampling.options import AnimateInputs, SampleOptions
from wan_animate.sampling.solvers import SOLVER_NAMES

from .bridge import ComfyProgress
from .types import (LatentType, ModelType, check_ranges, face_crops, first_image, image_to_uint8, io,
                    mask_to_float)

MAX_FRAME_NUM = 257
MAX_SEED = 0xFFFF_FFFF_FFFF_FFFF


class WanAnimateSampler(io.ComfyNode):
    DISPLAY_NAME = "Wan Animate Sampler"

    @classmethod
    def define_schema(cls) -> io.Schema:
        d = SampleOptions()
        return io.Schema(
            node_id="WanAnimateSampler", display_name=cls.DISPLAY_NAME, category="WanAnimate/sampling",
            description="Generate the animation latent, clip by clip, on the model's GPUs.",
            inputs=[
                ModelType.Input("model", tooltip="From Load Wan Animate Model."),
                io.Image.Input("reference", tooltip="The character image (first of the batch); "
                                                    "letterboxed to the pose video size."),
                io.Image.Input("pose_video", tooltip="Rendered pose frames; width and height must be "
                                                     "multiples of 16 (the output size)."),
                io.Image.Input("face_video", tooltip="512x512 face crops, one per frame (other sizes "
                                                     "are resized to 512x512)."),
                io.Float.Input("fps", default=30.0, min=1.0, max=240.0, step=0.01,
                               tooltip="Frame rate of the pose video; the output keeps it."),
                io.Combo.Input("mode", options=["animate", "replace"], default=d.mode,
                               tooltip="animate: the character performs the motion on the reference's "
                                       "background. replace: the character replaces the person in the "
                                       "video (needs background and character_mask)."),
                io.String.Input("prompt", default=d.prompt, multiline=True,
                                tooltip="Text prompt (the official default describes a person acting)."),
                io.String.Input("negative_prompt", default=d.negative_prompt, multiline=True,
                                tooltip="Negative prompt; used only when guide_scale > 1."),
                io.Int.Input("frame_num", default=d.frame_num, min=5, max=MAX_FRAME_NUM, step=4,
                             tooltip="Frames per clip (4n+1, official 77); longer videos are made of "
                                     "several clips chained by temporal guidance."),
                io.Int.Input("refert_num", default=d.refert_num, min=1, max=5, step=4,
                             tooltip="Frames of the previous clip that guide the next one: 1 or 5."),
                io.Int.Input("steps", default=d.steps, min=1, max=200, step=1,
                             tooltip="Denoising steps per clip (official 20)."),
                io.Float.Input("shift", default=d.shift, min=0.1, max=50.0, step=0.1,
                               tooltip="Flow-matching time shift (official 5.0)."),
                io.Float.Input("guide_scale", default=d.guide_scale, min=1.0,
                               max=20.0, step=0.1,
                               tooltip="Classifier-free guidance; 1.0 (official) = no negative pass, "
                                       "about twice as fast."),
                io.Int.Input("seed", default=d.seed, min=0, max=MAX_SEED, step=1,
                             control_after_generate=True, tooltip="Seed of the initial noise."),
                io.Combo.Input("solver", options=list(SOLVER_NAMES), default=d.solver,
                               tooltip="Sampling solver: unipc (official) or dpm++."),
                io.Boolean.Input("color_match", default=d.color_match,
                                 tooltip="Match each later clip's colour statistics to the first clip "
                                         "(against drift in long videos; off = official)."),
                io.Image.Input("background", optional=True,
                               tooltip="Replace mode: the video without the character (same size and "
                                       "frame count as pose_video)."),
                io.Mask.Input("character_mask", optional=True,
                              tooltip="Replace mode: where the character goes (1 = character)."),
            ],
            outputs=[LatentType.Output(display_name="latent")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def validate_inputs(cls, frame_num: int | None = None, refert_num: int | None = None) -> bool | str:
        if frame_num is None or refert_num is None:
            return True                     # linked values are checked when the node runs
        try:
            check_ranges(cls, frame_num=frame_num, refert_num=refert_num)
            SampleOptions(frame_num=frame_num, refert_num=refert_num).validate()
        except InputError as e:
            return str(e)
        return True

    @classmethod
    def execute(cls, model: WanAnimateModel, reference: torch.Tensor, pose_video: torch.Tensor,
                face_video: torch.Tensor, fps: float, background: torch.Tensor | None = None,
                character_mask: torch.Tensor | None = None, **settings: object) -> io.NodeOutput:
        """``settings``: the SampleOptions widgets (mode, prompt, ..., color_match)."""
        options = SampleOptions(**settings)                                 # type: ignore[arg-type]
        replace = options.mode == "replace"
        if replace and (background is None or character_mask is None):
            raise InputError("replace mode needs the background and character_mask inputs: connect "
                             "them from Wan Animate Replace Mask/Background")
        inputs = AnimateInputs(
            pose=image_to_uint8(pose_video, "pose_video"), face=face_crops(face_video),
            reference=first_image(reference, "reference"),
            background=image_to_uint8(background, "background") if replace else None,
            mask=mask_to_float(character_mask) if replace else None, fps=float(fps))
        progress = ComfyProgress(cls)
        with progress.interrupts():
            latent = model.sample(inputs, options, on_step=progress.on_step, cancelled=progress.cancelled)
        return io.NodeOutput(latent)
