"""Setup nodes: what the checkpoint folder holds (Model Status) and freeing GPUs (Unload)."""
from __future__ import annotations

import torch

from wan_animate.checkpoints.manifest import status_report
from wan_animate.engine import WanAnimateModel, unload_all
from wan_animate.errors import CheckpointError

from .loader import checkpoint_inputs, resolve_checkpoint
from .types import ModelType, io


class WanAnimateModelStatus(io.ComfyNode):
    DISPLAY_NAME = "Wan Animate Model Status"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="WanAnimateModelStatus", display_name=cls.DISPLAY_NAME, category="WanAnimate/setup",
            description="Check a checkpoint folder without loading it: every component present, "
                        "missing or corrupt, and the features a missing one disables. With a "
                        "model connected, also where its networks live and its memory plan "
                        "(per rank: resident GiB, expected peak).",
            inputs=[*checkpoint_inputs(),
                    ModelType.Input("model", optional=True,
                                    tooltip="A loaded model: adds its placement and memory plan.")],
            outputs=[io.String.Output(display_name="report"),
                     io.Boolean.Output(display_name="can_generate")],
            is_output_node=True,
            not_idempotent=True,
        )

    @classmethod
    def fingerprint_inputs(cls, **_: object) -> float:
        return float("nan")                 # never cached: files may have changed on disk

    @classmethod
    def execute(cls, checkpoint: str, ckpt_path: str,
                model: WanAnimateModel | None = None) -> io.NodeOutput:
        plan = "" if model is None else "\n\nplacement: " + model.describe()
        try:
            folder = resolve_checkpoint(checkpoint, ckpt_path)
        except CheckpointError as e:
            text = f"{e}\nget one with: wan-animate setup quick{plan}"
            return io.NodeOutput(text, False, ui={"text": [text]})
        report = status_report(folder)
        text = report.format() + plan
        return io.NodeOutput(text, bool(report.can_generate), ui={"text": [text]})


class WanAnimateUnload(io.ComfyNode):
    DISPLAY_NAME = "Wan Animate Unload"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="WanAnimateUnload", display_name=cls.DISPLAY_NAME, category="WanAnimate/setup",
            description="Free every loaded Wan Animate model: stops the worker pool and returns its "
                        "GPU memory. The next run loads again.",
            inputs=[io.Image.Input("images", optional=True,
                                   tooltip="Optional pass-through: connect the decoded frames so the "
                                           "unload happens after decoding."),
                    ModelType.Input("model", optional=True,
                                    tooltip="Optional: also close this model handle.")],
            outputs=[io.Image.Output(display_name="images")],
            is_output_node=True,
            not_idempotent=True,
        )

    @classmethod
    def fingerprint_inputs(cls, **_: object) -> float:
        return float("nan")                 # always runs: unloading is a side effect

    @classmethod
    def execute(cls, images: torch.Tensor | None = None,
                model: WanAnimateModel | None = None) -> io.NodeOutput:
        closed = unload_all()
        if model is not None:
            model.close()
        text = f"unloaded {closed} Wan Animate model(s)"
        return io.NodeOutput(images, ui={"text": [text]})
