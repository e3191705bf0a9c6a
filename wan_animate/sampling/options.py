"""What a generation job is made of: options, inputs, progress events (plain dataclasses)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from wan_animate.errors import InputError

DEFAULT_PROMPT = "视频中的人在做动作"
"""The official ``animate_14B.prompt`` ("the person in the video is doing actions")."""

DEFAULT_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，"
    "JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，"
    "手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走")
"""The official shared ``sample_neg_prompt``."""

Mode = Literal["animate", "replace"]


@dataclass(frozen=True)
class SampleOptions:
    """Sampling settings; defaults are the official CLI's (unipc, 20 steps, shift 5, guide 1)."""

    mode: Mode = "animate"
    prompt: str = DEFAULT_PROMPT
    negative_prompt: str = DEFAULT_NEGATIVE_PROMPT
    frame_num: int = 77
    refert_num: int = 1
    steps: int = 20
    shift: float = 5.0
    guide_scale: float = 1.0
    solver: str = "unipc"
    seed: int = 42
    color_match: bool = False
    """Match each later clip's per-channel colour statistics to the first clip (off = official)."""

    def validate(self) -> None:
        """Raise :class:`InputError` naming the bad option and the fix."""
        if self.mode not in ("animate", "replace"):
            raise InputError(f"mode must be 'animate' or 'replace', got {self.mode!r}")
        if self.frame_num < 5 or (self.frame_num - 1) % 4:
            near = max(5, (self.frame_num - 1) // 4 * 4 + 1)
            raise InputError(f"frame_num must be 4n+1 (e.g. 77 or 81), got {self.frame_num}; "
                             f"use {near} or {near + 4}")
        if self.refert_num not in (1, 5):
            raise InputError(f"refert_num must be 1 or 5 (temporal guidance frames), got "
                             f"{self.refert_num}")
        if self.frame_num - self.refert_num < self.refert_num:
            raise InputError(f"frame_num {self.frame_num} is too short for refert_num "
                             f"{self.refert_num}: each clip must add at least refert_num new frames "
                             f"(frame_num >= {2 * self.refert_num + 1}); the official chaining breaks "
                             f"from the third clip on")
        if self.steps < 1:
            raise InputError(f"steps must be >= 1, got {self.steps}")
        if self.shift <= 0:
            raise InputError(f"shift must be > 0, got {self.shift}")
        if self.guide_scale < 1:
            raise InputError(f"guide_scale must be >= 1 (1 = no guidance), got {self.guide_scale}")


def _check_uint8_rgb(name: str, a: np.ndarray | None) -> None:
    """Frames cross the engine as uint8 0..255; float 0..1 frames would turn black silently."""
    if a is None:
        return
    a = np.asarray(a)
    if a.dtype != np.uint8:
        hint = (" (float frames in 0..1, such as a ComfyUI IMAGE: multiply by 255, round and "
                "cast to uint8)" if a.dtype.kind == "f" else " (cast to uint8 after clipping to 0..255)")
        raise InputError(f"{name} must be uint8 RGB in 0..255, got {a.dtype}{hint}")


def _check_mask(m: np.ndarray) -> None:
    """mask: float [N, H, W] in [0, 1] or uint8 (0..255, [N, H, W] or [N, H, W, 3])."""
    m = np.asarray(m)
    if m.dtype == np.uint8:
        return
    if m.dtype.kind != "f":
        raise InputError(f"mask must be float in [0, 1] or uint8 0..255, got {m.dtype} "
                         f"(divide by 255 into a float mask, or cast 0..255 values to uint8)")
    if not m.size:
        return
    if np.isnan(m).any():
        raise InputError("the mask holds NaN values; a float mask must lie in [0, 1] (1 = character)")
    lo, hi = float(m.min()), float(m.max())
    if lo < 0.0 or hi > 1.0:
        raise InputError(f"a float mask must lie in [0, 1] (1 = character), got values in "
                         f"[{lo:g}, {hi:g}]: clip it to [0, 1] (or divide a 0..255 mask by 255)")


@dataclass
class AnimateInputs:
    """Preprocessed inputs (what ``src_root_path`` holds), as uint8 RGB arrays.

    pose: [N, H, W, 3] rendered skeleton video; H, W multiples of 16 (the output size).
    face: [Nf, 512, 512, 3] face crops (Nf may differ from N: ping-pong padded / truncated).
    reference: [h, w, 3] the character image (letterboxed to H x W inside).
    background: [N, H, W, 3] replace mode only.
    mask: [N, H, W] float in [0, 1] or uint8 [N, H, W, 3] (channel 0 / 255); replace mode only.
    fps: frames per second of the pose video (the output keeps it).
    """

    pose: np.ndarray
    face: np.ndarray
    reference: np.ndarray
    background: np.ndarray | None = None
    mask: np.ndarray | None = None
    fps: float = 30.0

    @property
    def num_frames(self) -> int:
        return int(self.pose.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        return int(self.pose.shape[1]), int(self.pose.shape[2])

    def mask_values(self) -> np.ndarray:
        """[N, H, W] float in [0, 1] (1 = character)."""
        assert self.mask is not None
        m = np.asarray(self.mask)
        if m.ndim == 4:
            return m[..., 0].astype(np.float64) / 255.0
        return m.astype(np.float64) if m.dtype != np.uint8 else m.astype(np.float64) / 255.0

    def validate(self, mode: str) -> None:
        """Check dtypes, ranges and shapes before any heavy work; errors name the input and the fix."""
        for name in ("pose", "face", "reference"):
            a = getattr(self, name)
            if a is None or np.asarray(a).size == 0:
                raise InputError(f"{name} is empty")
        for name in ("pose", "face", "reference", "background"):
            _check_uint8_rgb(name, getattr(self, name))
        if mode == "replace" and self.mask is not None:
            _check_mask(self.mask)
        if np.asarray(self.reference).ndim != 3 or np.asarray(self.reference).shape[-1] != 3:
            raise InputError(f"reference must be one [h, w, 3] RGB image, got {np.asarray(self.reference).shape}")
        if self.pose.ndim != 4 or self.pose.shape[-1] != 3:
            raise InputError(f"pose video must be [N, H, W, 3], got {self.pose.shape}")
        h, w = self.size
        if h % 16 or w % 16:
            raise InputError(f"pose video is {w}x{h}; width and height must be multiples of 16 "
                             f"(re-run preprocessing with --resolution_area, which rounds to 16)")
        if self.face.ndim != 4 or self.face.shape[1:] != (512, 512, 3):
            raise InputError(f"face video must be [N, 512, 512, 3] crops, got {self.face.shape}")
        if mode == "replace":
            if self.background is None or self.mask is None:
                missing = [n for n in ("background", "mask") if getattr(self, n) is None]
                raise InputError(f"replace mode needs src_bg.mp4 and src_mask.mp4 (missing: "
                                 f"{', '.join(missing)}); run preprocessing with --replace_flag")
            for name in ("background", "mask"):
                a = np.asarray(getattr(self, name))
                if a.shape[0] != self.num_frames or a.shape[1:3] != (h, w):
                    raise InputError(f"{name} video is {a.shape[:3]} but the pose video is "
                                     f"{(self.num_frames, h, w)}: they must have the same frame "
                                     f"count and size (re-run preprocessing)")


@dataclass(frozen=True)
class StepEvent:
    """Progress: step ``step`` (1-based) of ``steps`` in clip ``clip`` (1-based) of ``clips``."""

    clip: int
    clips: int
    step: int
    steps: int

    @property
    def done(self) -> int:
        return (self.clip - 1) * self.steps + self.step

    @property
    def total(self) -> int:
        return self.clips * self.steps


@dataclass
class Overrides:
    """Parity seams (also useful to users): per-clip initial noise and prompt token ids."""

    noise: list[torch.Tensor] | None = None
    prompt_ids: tuple[torch.Tensor, torch.Tensor] | None = None
    negative_ids: tuple[torch.Tensor, torch.Tensor] | None = None
    trace: list[tuple[str, torch.Tensor]] | None = field(default=None)
    """When a list, the pipeline appends (name, tensor) intermediates in call order."""
