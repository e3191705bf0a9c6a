"""How a preprocessed video is cut into generation clips, and the clips' conditioning masks.

Official behaviour (``wan/animate.py``): the N pose frames are extended to a valid length by
ping-pong padding, clips of T frames start every T - r frames (r = refert_num), later clips
reuse the previous clip's last r output frames and drop them from their output, and the
result is trimmed to N. Unlike the official code, N <= r still gives one clip.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from wan_animate.errors import InputError


def valid_length(real_len: int, clip_len: int, overlap: int) -> int:
    """Smallest length >= ``real_len`` that the clip chain covers exactly (may be < clip_len
    when real_len <= overlap, as officially)."""
    # Ported from Wan2.2 wan/animate.py::WanAnimate.get_valid_len
    step = clip_len - overlap
    rem = (real_len - overlap) % step
    return real_len + (0 if rem == 0 else step - rem)


def pingpong_indices(n: int, target_len: int) -> list[int]:
    """0, 1, ..., n-1, n-2, ..., 0, 1, ... (end frames not repeated), ``target_len`` long.

    A single frame is repeated (the official code raises IndexError there).
    """
    # Ported from Wan2.2 wan/animate.py::WanAnimate.inputs_padding
    if n <= 0:
        raise InputError("cannot pad an empty frame list")
    if n == 1:
        return [0] * target_len
    period = 2 * (n - 1)
    return [i % period if i % period < n else period - i % period for i in range(target_len)]


@dataclass(frozen=True)
class Clip:
    """One generation clip: frames [start, end) of the padded sequence; ``reuse`` = number of
    previous-output frames placed first in its conditioning video (0 for the first clip)."""

    index: int
    start: int
    end: int
    reuse: int


@dataclass(frozen=True)
class ClipPlan:
    """The clip chain of an N-frame video."""

    num_frames: int
    clip_len: int
    refert_num: int
    target_len: int
    pose_indices: list[int]      # padded position -> source pose frame
    face_indices: list[int]      # padded position -> source face frame
    clips: list[Clip]

    def output_map(self) -> list[tuple[int, int]]:
        """For each of the N output frames: (clip index, frame within that clip's T frames)."""
        out: list[tuple[int, int]] = []
        for c in self.clips:
            first = 0 if c.index == 0 else self.refert_num
            out.extend((c.index, t) for t in range(first, self.clip_len))
        return out[:self.num_frames]


def plan_clips(num_frames: int, clip_len: int, refert_num: int,
               num_face_frames: int | None = None) -> ClipPlan:
    """The official clip chain; a video of N <= refert_num frames gets one padded clip."""
    if clip_len < 1 or (clip_len - 1) % 4:
        raise InputError(f"clip_len must be 4n+1, got {clip_len}")
    if not 0 < refert_num < clip_len:
        raise InputError(f"refert_num must be in [1, clip_len), got {refert_num}")
    if num_frames < 1:
        raise InputError("no pose frames to generate from")
    target = valid_length(num_frames, clip_len, refert_num)
    if target <= refert_num:        # the official loop would run no clip at all
        target = clip_len
    pose = pingpong_indices(num_frames, target)
    face = pingpong_indices(num_face_frames or num_frames, target)
    clips, start = [], 0
    while start + refert_num < target:
        clips.append(Clip(len(clips), start, start + clip_len, 0 if start == 0 else refert_num))
        start += clip_len - refert_num
    return ClipPlan(num_frames, clip_len, refert_num, target, pose, face, clips)


def i2v_mask(lat_t: int, lat_h: int, lat_w: int, mask_len: int,
             mask_pixel_values: torch.Tensor | None = None) -> torch.Tensor:
    """Latent-frame conditioning mask [4, lat_t, lat_h, lat_w] (1 = known / keep).

    ``mask_pixel_values`` [1, (lat_t-1)*4+1, lat_h, lat_w] per pixel frame (its dtype is kept;
    float32 zeros when None). The first ``mask_len`` pixel frames are set to 1; pixel frame
    0 fills all 4 channels of latent frame 0, latent k >= 1 holds pixel frames 4k-3 .. 4k.
    """
    # Ported from Wan2.2 wan/animate.py::WanAnimate.get_i2v_mask
    if mask_pixel_values is None:
        msk = torch.zeros(1, (lat_t - 1) * 4 + 1, lat_h, lat_w)
    else:
        msk = mask_pixel_values.clone()
    msk[:, :mask_len] = 1
    msk = torch.cat([msk[:, 0:1].repeat_interleave(4, dim=1), msk[:, 1:]], dim=1)
    msk = msk.view(1, msk.shape[1] // 4, 4, lat_h, lat_w)   # [1, T+3, h, w] -> [1, lat_t, 4, h, w]
    return msk.transpose(1, 2)[0]                             # -> [4, lat_t, h, w]


def replace_keep_mask(mask_frames: np.ndarray | torch.Tensor, lat_h: int, lat_w: int) -> torch.Tensor:
    """Replace-mode per-pixel-frame "keep" values at latent size.

    ``mask_frames`` [T, H, W] in [0, 1] (mask video channel 0 / 255, 1 = character) ->
    bf16 [1, T, lat_h, lat_w] = nearest-resized (floor index) ``1 - mask`` computed in bf16.
    """
    m = torch.as_tensor(np.asarray(mask_frames) if not isinstance(mask_frames, torch.Tensor)
                        else mask_frames).to(torch.bfloat16)
    keep = (1 - m)[:, None]                                   # [T, H, W] -> [T, 1, H, W]
    keep = F.interpolate(keep, size=(lat_h, lat_w), mode="nearest")
    return keep[:, 0][None]                                   # -> [1, T, h, w]
