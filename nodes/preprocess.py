"""Preprocessing nodes: the official ``preprocess_data.py`` on ComfyUI IMAGE batches.

- Wan Animate Preprocess (animate): driving video + reference -> pose video, face crops.
- Wan Animate Replace Mask/Background (replace): video -> pose video, face crops, background
  (character removed) and character mask, all at the resized frame size, from one detection
  pass.

Backends (``wan_animate.preprocess``): MediaPipe (offline, in the wheel) or the official
ViTPose-H + YOLOv10 (onnxruntime) and SAM2, read from ``<checkpoint>/process_checkpoint/`` of
the model connected to the optional ``model`` input.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from wan_animate.checkpoints import layout
from wan_animate.engine import WanAnimateModel
from wan_animate.errors import CheckpointError, InputError
from wan_animate.preprocess.mask import MaskOptions
from wan_animate.preprocess.pipeline import PreprocessOptions, PreprocessResult, preprocess

from .bridge import ComfyProgress
from .types import (ModelType, check_ranges, engine_mask_to_mask, first_image, image_to_uint8, io,
                    uint8_to_image)

log = logging.getLogger(__name__)
BACKENDS = ("auto", "mediapipe", "vitpose")
SEGMENTERS = ("auto", "mediapipe", "sam2")


def _video_inputs() -> list:
    return [
        io.Image.Input("video", tooltip="Driving video frames (e.g. Get Video Components' images)."),
        io.Float.Input("fps", default=30.0, min=1.0, max=240.0, step=0.01,
                       tooltip="Frame rate of video (connect Get Video Components' fps)."),
    ]


def _size_inputs() -> list:
    return [
        io.Int.Input("width", default=1280, min=64, max=4096, step=16,
                     tooltip="Resolution area width (official --resolution_area): output frames have "
                             "about width x height pixels, sides rounded to multiples of 16."),
        io.Int.Input("height", default=720, min=64, max=4096, step=16,
                     tooltip="Resolution area height (official --resolution_area)."),
        io.Int.Input("target_fps", default=30, min=-1, max=120, step=1,
                     tooltip="Resample the video to this frame rate (official --fps); -1 keeps the "
                             "source rate."),
    ]


def _backend_input():  # noqa: ANN202 - io.Combo.Input of ComfyUI or the shim
    return io.Combo.Input("backend", options=list(BACKENDS), default="auto",
                          tooltip="Keypoints: vitpose = official ViTPose-H + YOLOv10 (needs the model "
                                  "input with process_checkpoint/), mediapipe = offline MediaPipe "
                                  "Holistic; auto = vitpose when its files are there, else mediapipe.")


def _model_input():  # noqa: ANN202 - a WANANIMATE_MODEL input
    return ModelType.Input("model", optional=True,
                           tooltip="Optional: the loaded model, whose process_checkpoint/ folder "
                                   "provides the ViTPose/YOLO and SAM2 files.")


def _options(model: WanAnimateModel | None, **kw: object) -> PreprocessOptions:
    """PreprocessOptions with the process_checkpoint folder of ``model`` (if any)."""
    ckpt = None if model is None else str(Path(model.spec.ckpt_dir) / layout.PROCESS_DIR)
    if kw.get("backend") == "vitpose" and ckpt is None:
        raise CheckpointError("backend vitpose needs the model input (its process_checkpoint/ folder)")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return PreprocessOptions(ckpt_path=ckpt, device=device, **kw)      # type: ignore[arg-type]


def _check_fps(cls: type, target_fps: int | None) -> bool | str:
    if target_fps is None:
        return True
    try:
        check_ranges(cls, target_fps=target_fps)
    except InputError as e:
        return str(e)
    return "target_fps must be -1 (keep) or a rate >= 1" if target_fps == 0 else True


def _summary(r: PreprocessResult) -> None:
    log.info("WanAnimate preprocess: %d frames at %.3g fps, %s backend%s; filled frames: %d without "
             "person, %d without face, %d without mask", len(r.pose), r.fps, r.backend,
             f" + {r.segmenter}" if r.segmenter else "", r.frames_without_person,
             r.frames_without_face, r.frames_without_mask)


class WanAnimatePreprocess(io.ComfyNode):
    DISPLAY_NAME = "Wan Animate Preprocess (pose + face)"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="WanAnimatePreprocess", display_name=cls.DISPLAY_NAME,
            category="WanAnimate/preprocess",
            description="Animate mode: pose video (sized like the reference, by area) and 512x512 "
                        "face crops from a driving video.",
            inputs=[
                *_video_inputs(),
                io.Image.Input("reference", tooltip="Reference character image (the first image of "
                                                    "the batch is used)."),
                *_size_inputs(),
                io.Boolean.Input("retarget", default=False,
                                 tooltip="Retarget the driving pose to the reference's body proportions "
                                         "(official --retarget_flag)."),
                _backend_input(),
                _model_input(),
            ],
            outputs=[io.Image.Output(display_name="pose_video"),
                     io.Image.Output(display_name="face_video"),
                     io.Float.Output(display_name="fps")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def validate_inputs(cls, target_fps: int | None = None) -> bool | str:
        return _check_fps(cls, target_fps)

    @classmethod
    def execute(cls, video: torch.Tensor, fps: float, reference: torch.Tensor, width: int, height: int,
                target_fps: int, retarget: bool, backend: str, model: WanAnimateModel | None = None
                ) -> io.NodeOutput:
        opts = _options(model, mode="animate", resolution_area=(width, height), fps=target_fps,
                        retarget=retarget, backend=backend)
        progress = ComfyProgress(cls)
        with progress.interrupts():
            r = preprocess(image_to_uint8(video, "video"), fps, first_image(reference, "reference"),
                           opts, on_progress=progress.on_stage, cancelled=progress.cancelled)
        _summary(r)
        return io.NodeOutput(uint8_to_image(r.pose), uint8_to_image(r.face), float(r.fps))


class WanAnimateReplacePreprocess(io.ComfyNode):
    DISPLAY_NAME = "Wan Animate Replace Mask/Background"

    @classmethod
    def define_schema(cls) -> io.Schema:
        mask = MaskOptions()
        return io.Schema(
            node_id="WanAnimateReplacePreprocess", display_name=cls.DISPLAY_NAME,
            category="WanAnimate/preprocess",
            description="Replace mode: character mask, background without the character, pose video "
                        "and face crops, all at the resized frame size, from one detection pass.",
            inputs=[
                *_video_inputs(),
                *_size_inputs(),
                _backend_input(),
                io.Combo.Input("segmenter", options=list(SEGMENTERS), default="auto",
                               tooltip="Character mask: sam2 = official SAM2 (needs the model input with "
                                       "process_checkpoint/sam2/), mediapipe = MediaPipe segmentation; "
                                       "auto = sam2 when its file is there."),
                io.Int.Input("mask_kernel", default=mask.k, min=1, max=63, step=1,
                             tooltip="Mask dilation kernel size in pixels (official --k)."),
                io.Int.Input("mask_iterations", default=mask.iterations, min=0, max=20, step=1,
                             tooltip="Mask dilation iterations (official --iterations); 0 = the raw mask."),
                io.Int.Input("mask_w_len", default=mask.w_len, min=1, max=64, step=1,
                             tooltip="Blocks across the mask's box (official --w_len); 1 = one box."),
                io.Int.Input("mask_h_len", default=mask.h_len, min=1, max=64, step=1,
                             tooltip="Blocks down the mask's box (official --h_len); 1 = one box."),
                _model_input(),
            ],
            outputs=[io.Image.Output(display_name="pose_video"),
                     io.Image.Output(display_name="face_video"),
                     io.Image.Output(display_name="background"),
                     io.Mask.Output(display_name="character_mask"),
                     io.Float.Output(display_name="fps")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def validate_inputs(cls, target_fps: int | None = None) -> bool | str:
        return _check_fps(cls, target_fps)

    @classmethod
    def execute(cls, video: torch.Tensor, fps: float, width: int, height: int, target_fps: int,
                backend: str, segmenter: str, mask_kernel: int, mask_iterations: int, mask_w_len: int,
                mask_h_len: int, model: WanAnimateModel | None = None) -> io.NodeOutput:
        mask = MaskOptions(k=mask_kernel, iterations=mask_iterations, w_len=mask_w_len, h_len=mask_h_len)
        if segmenter == "sam2" and model is None:
            raise CheckpointError("segmenter sam2 needs the model input (process_checkpoint/sam2/)")
        opts = _options(model, mode="replace", resolution_area=(width, height), fps=target_fps,
                        backend=backend, segmenter=segmenter, mask=mask)
        frames = image_to_uint8(video, "video")
        progress = ComfyProgress(cls)
        with progress.interrupts():
            # Replace mode never looks at the reference (the sampler letterboxes it later); the
            # engine only passes it through, so the first frame stands in for it here.
            r = preprocess(frames, fps, frames[0], opts, on_progress=progress.on_stage,
                           cancelled=progress.cancelled)
        _summary(r)
        assert r.background is not None and r.mask is not None
        return io.NodeOutput(uint8_to_image(r.pose), uint8_to_image(r.face), uint8_to_image(r.background),
                             engine_mask_to_mask(r.mask), float(r.fps))
