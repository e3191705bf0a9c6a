"""Wan Animate Decode: latent -> IMAGE frames + fps, ready for Create Video / Save Video."""
from __future__ import annotations

from wan_animate.engine import WanAnimateModel
from wan_animate.errors import Cancelled
from wan_animate.sampling.generate import AnimateLatent

from .bridge import ComfyProgress
from .types import LatentType, ModelType, io, video_to_image


class WanAnimateDecode(io.ComfyNode):
    DISPLAY_NAME = "Wan Animate Decode"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="WanAnimateDecode", display_name=cls.DISPLAY_NAME, category="WanAnimate/sampling",
            description="Decode the sampler's latent with the Wan 2.1 VAE: every frame of the input "
                        "video, at its frame rate.",
            inputs=[ModelType.Input("model", tooltip="The model that sampled the latent."),
                    LatentType.Input("latent", tooltip="From Wan Animate Sampler.")],
            outputs=[io.Image.Output(display_name="images"),
                     io.Float.Output(display_name="fps",
                                     tooltip="Frame rate of the frames (connect Create Video's fps).")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, model: WanAnimateModel, latent: AnimateLatent) -> io.NodeOutput:
        progress = ComfyProgress(cls)
        with progress.interrupts():
            progress.update(0, 1)           # shows the node busy; an interrupt point before decoding
            if progress.cancelled():
                raise Cancelled("decode cancelled")
            video = model.decode(latent)    # [3, N, H, W] in [-1, 1]
            progress.update(1, 1)
        return io.NodeOutput(video_to_image(video), float(latent.fps))
