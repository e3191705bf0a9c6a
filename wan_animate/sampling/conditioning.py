"""Conditioning of the Animate DiT: per-video constants and per-clip tensors.

Ported from Wan2.2 wan/animate.py::WanAnimate.generate (the batch assembly). Work the official
code repeats is done once: the reference latent, CLIP features, text contexts (and their DiT
embeddings) and the black-face motion tokens are per video; the motion tokens of the face
crops are per clip (the official code recomputes them at every step).

Alphabet: T pixel frames of a clip, H/W pixel size, h/w latent size (/8), lat_t = T//4 + 1,
F = lat_t + 1 latent frames with the reference slot first.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch

from wan_animate.models.bundle import ModelBundle
from wan_animate.preprocess.clip_plan import Clip, ClipPlan, i2v_mask
from wan_animate.preprocess.frames import padding_resize
from wan_animate.sampling.options import AnimateInputs, Overrides, SampleOptions


def to_pixels(frames: np.ndarray, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """uint8 [T, H, W, 3] -> [1, 3, T, H, W] in [-1, 1] (float64 /127.5 - 1, then ``dtype``)."""
    t = torch.from_numpy(np.ascontiguousarray(frames)).to(torch.float64) / 127.5 - 1
    return t.permute(3, 0, 1, 2)[None].to(device=device, dtype=dtype)


@dataclass
class VideoConditioning:
    """Per-video constants.

    clip_fea [1, 257, Ci]; context/context_null [1, 257 + text_len, C] DiT-embedded contexts;
    y_ref [1, 20, 1, h, w] = ones mask | reference latent; motion_null [1, F, K, C] black faces.
    """

    clip_fea: torch.Tensor
    context: torch.Tensor
    context_null: torch.Tensor | None
    y_ref: torch.Tensor
    motion_null: torch.Tensor | None


@dataclass
class ClipConditioning:
    """What one clip's denoising loop needs besides the noise.

    y [1, 20, F, h, w]; pose_latents [1, 16, lat_t, h, w]; motion [1, F, K, C].
    """

    y: torch.Tensor
    pose_latents: torch.Tensor
    motion: torch.Tensor


def _trace(ov: Overrides | None, name: str, t: torch.Tensor) -> None:
    if ov is not None and ov.trace is not None:
        ov.trace.append((name, t.detach().float().cpu()))


def encode_prompt(m: ModelBundle, text: str, ids: tuple[torch.Tensor, torch.Tensor] | None
                  ) -> torch.Tensor:
    """Prompt -> T5 context [L, text_dim] trimmed to the real token count (EOS included)."""
    if ids is None:
        if m.tokenizer is None:
            raise ValueError("no tokenizer loaded and no prompt token ids given")
        ids = m.tokenizer([text])
    key = ("t5", tuple(int(v) for v in ids[0].reshape(-1)), tuple(int(v) for v in ids[1].reshape(-1)))

    def encode() -> torch.Tensor:
        with m.using("t5") as t5:
            t5_device = next(t5.parameters()).device          # the CPU with t5_cpu
            tok, mask = (t.reshape(1, -1).to(t5_device) for t in ids)
            return t5.encode(tok, mask)[0].to(m.device)

    return m.remember(key, encode)


@torch.no_grad()
def video_conditioning(m: ModelBundle, inputs: AnimateInputs, opts: SampleOptions,
                       ov: Overrides | None = None) -> VideoConditioning:
    """Reference latent, CLIP features and text contexts, computed once per video."""
    h, w = inputs.size
    ref = padding_resize(inputs.reference, h, w)                     # [H, W, 3] letterboxed
    ref_px = to_pixels(ref[None], m.dtype, m.device)                 # [1, 3, 1, H, W]
    ref_latent = m.vae.encode(ref_px)                                # [1, 16, 1, h, w]
    _trace(ov, "vae_encode.ref", ref_latent[0])
    lat_h, lat_w = h // 8, w // 8
    mask_ref = i2v_mask(1, lat_h, lat_w, 1).to(m.device)            # [4, 1, h, w]
    y_ref = torch.cat([mask_ref, ref_latent[0].to(mask_ref.dtype)])[None].to(m.dtype)
    def encode_reference() -> torch.Tensor:
        with m.using("clip") as clip:
            return clip(ref_px[:, :, 0].to(next(clip.parameters()).dtype)).to(m.dtype)

    digest = hashlib.sha1(np.ascontiguousarray(ref).tobytes()).hexdigest()
    clip_fea = m.remember(("clip", digest, ref.shape), encode_reference)   # [1, 257, Ci]
    _trace(ov, "clip_visual.out", clip_fea)
    ctx = encode_prompt(m, opts.prompt, ov.prompt_ids if ov else None)
    context = m.dit.embed_context([ctx.to(m.dtype)], clip_fea)
    context_null = motion_null = None
    if opts.guide_scale > 1:
        ctx_n = encode_prompt(m, opts.negative_prompt, ov.negative_ids if ov else None)
        context_null = m.dit.embed_context([ctx_n.to(m.dtype)], clip_fea)
        t = opts.frame_num
        black = torch.full((1, 3, t, 512, 512), -1.0, dtype=m.dtype, device=m.device)
        motion_null = m.dit.encode_motion(black)
    return VideoConditioning(clip_fea, context, context_null, y_ref, motion_null)


@torch.no_grad()
def clip_conditioning(m: ModelBundle, inputs: AnimateInputs, opts: SampleOptions,
                      plan: ClipPlan, clip: Clip, video: VideoConditioning,
                      prev_tail: torch.Tensor | None, ov: Overrides | None = None
                      ) -> ClipConditioning:
    """Pose latents, the 4-channel mask + conditioning latent ``y`` and motion tokens of a clip.

    ``prev_tail``: the previous clip's last ``refert_num`` decoded frames [1, 3, r, H, W] in
    [-1, 1] (None for the first clip).
    """
    h, w = inputs.size
    t = opts.frame_num
    lat_t, lat_h, lat_w = t // 4 + 1, h // 8, w // 8
    idx = list(range(clip.start, clip.end))
    pose = to_pixels(inputs.pose[[plan.pose_indices[i] for i in idx]], m.dtype, m.device)
    face = to_pixels(inputs.face[[plan.face_indices[i] for i in idx]], m.dtype, m.device)
    pose_latents = m.vae.encode(pose)                                # [1, 16, lat_t, h, w]
    _trace(ov, "vae_encode.pose", pose_latents[0])
    r = clip.reuse
    if opts.mode == "replace":
        assert inputs.background is not None
        bg = to_pixels(inputs.background[[plan.pose_indices[i] for i in idx]], m.dtype, m.device)
        cond_px = torch.cat([prev_tail.to(bg.dtype), bg[:, :, r:]], dim=2) if r else bg
        mask = torch.from_numpy(inputs.mask_values()[[plan.pose_indices[i] for i in idx]])
        keep = (1 - mask.to(m.dtype))[:, None]                       # [T, 1, H, W] 1 = keep
        keep = torch.nn.functional.interpolate(keep, size=(lat_h, lat_w), mode="nearest")
        msk = i2v_mask(lat_t, lat_h, lat_w, r, keep[:, 0][None])     # [4, lat_t, h, w]
    else:
        zeros = torch.zeros(1, 3, t - r, h, w, dtype=m.dtype, device=m.device)
        cond_px = torch.cat([prev_tail.to(m.dtype), zeros], dim=2) if r else zeros
        msk = i2v_mask(lat_t, lat_h, lat_w, r)
    y_reft = m.vae.encode(cond_px)                                   # [1, 16, lat_t, h, w]
    _trace(ov, "vae_encode.cond", y_reft[0])
    y_clip = torch.cat([msk.to(m.device, y_reft.dtype), y_reft[0]])[None].to(m.dtype)
    y = torch.cat([video.y_ref, y_clip], dim=2)                      # [1, 20, F, h, w]
    motion = m.dit.encode_motion(face)                               # [1, F, K, C]
    return ClipConditioning(y=y, pose_latents=pose_latents.to(m.dtype), motion=motion)
