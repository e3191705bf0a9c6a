"""One clip's denoising as a typed message: what rank 0 sends every rank of the pool per clip.

Rank 0 plans the clips and conditions each one (VAE, encoders live there); every rank then runs
the same denoising loop on its part of the tokens. The message replaces a string-keyed dict, so
a field missing or misspelt fails where it is built, not on the other ranks mid-video.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from wan_animate.sampling.conditioning import ClipConditioning, VideoConditioning


@dataclass(frozen=True)
class ClipJob:
    """Clip ``index`` of ``clips`` (0-based), with the solver settings and its tensors.

    noise [1, 16, F, h, w] fp32 (F = frame_num // 4 + 1 latent frames, h = H / 8, w = W / 8);
    video: the per-video constants (:class:`VideoConditioning`); clip: this clip's
    :class:`ClipConditioning`. ``guide`` is the classifier-free guidance scale (1: one pass).
    """

    index: int
    clips: int
    solver: str
    steps: int
    shift: float
    guide: float
    noise: torch.Tensor
    video: VideoConditioning
    clip: ClipConditioning

    def __post_init__(self) -> None:
        if self.index < 0 or self.clips < 1:
            raise ValueError(f"clip index {self.index} of {self.clips} clips")
        if self.noise.dim() != 5:
            raise ValueError(f"noise must be [1, 16, F, h, w]; got {tuple(self.noise.shape)}")

    def to(self, device: torch.device | str) -> ClipJob:
        """The same job with every tensor on ``device`` (a copy; this one is unchanged)."""
        return _moved(self, device)


def _moved(obj: object, device: torch.device | str) -> object:
    """``obj`` with its tensors on ``device``: dataclasses copied field by field, others as is."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.replace(obj, **{f.name: _moved(getattr(obj, f.name), device)
                                           for f in dataclasses.fields(obj) if f.init})
    return obj
