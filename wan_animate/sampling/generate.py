"""``generate(...)``: the one engine entry for animate and replace, used by the CLI and the nodes.

Clips of ``frame_num`` (4n+1) frames are chained with ``refert_num`` frames of temporal
guidance from the previous clip's decoded tail (the official ping-pong padding and trimming,
see :mod:`wan_animate.preprocess.clip_plan`); the output has exactly the input's frame count.
Initial noise: one CPU ``torch.Generator`` seeded with ``seed`` draws [16, F, h, w] per clip in
order (device independent, so 1 and N GPUs give the same noise); ``Overrides.noise`` replaces it.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from wan_animate.models.bundle import ModelBundle
from wan_animate.preprocess.clip_plan import plan_clips
from wan_animate.sampling.conditioning import clip_conditioning, video_conditioning
from wan_animate.sampling.denoise import denoise_clip
from wan_animate.sampling.options import AnimateInputs, Overrides, SampleOptions, StepEvent
from wan_animate.sampling.solvers import make_solver

DenoiseFn = Callable[..., torch.Tensor]


def color_match(frames: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Match per-channel mean/std of ``frames`` [1, 3, T, H, W] to ``reference`` [1, 3, T', H, W]."""
    dims = (2, 3, 4)
    mu, sd = frames.mean(dims, keepdim=True), frames.std(dims, keepdim=True).clamp_min(1e-5)
    mu_r, sd_r = reference.mean(dims, keepdim=True), reference.std(dims, keepdim=True)
    return ((frames - mu) / sd * sd_r + mu_r).clamp(-1, 1)


def initial_noise(seed: int, shapes: list[tuple[int, ...]]) -> list[torch.Tensor]:
    """Per-clip noise drawn in order from one CPU generator seeded with ``seed``."""
    g = torch.Generator("cpu").manual_seed(seed)
    return [torch.randn(*s, generator=g, dtype=torch.float32) for s in shapes]


@dataclass
class AnimateLatent:
    """Sampler output: clips already decoded for chaining + the last clip's clean latent.

    decoded: per clip [1, 3, T', H, W] in [-1, 1] (later clips already without their first
    refert_num frames); pending: the last clip's latent [1, 16, lat_t, h, w] (reference slot
    dropped) still to decode, or None; pending_skip: frames to drop from its decode;
    num_frames: the output length N; fps: the source frame rate.
    """

    decoded: list[torch.Tensor]
    pending: torch.Tensor | None
    pending_skip: int
    num_frames: int
    fps: float
    color_reference: torch.Tensor | None = None

    @property
    def clips(self) -> int:
        return len(self.decoded) + (self.pending is not None)


@torch.no_grad()
def decode_latent(vae: torch.nn.Module, latent: AnimateLatent) -> torch.Tensor:
    """Finish an :class:`AnimateLatent`: decode the pending clip and assemble [3, N, H, W]."""
    parts = list(latent.decoded)
    if latent.pending is not None:
        frames = vae.decode(latent.pending)
        if latent.color_reference is not None:
            frames = color_match(frames, latent.color_reference.to(frames.device))
        parts.append(frames[:, :, latent.pending_skip:].cpu())
    return torch.cat([p.cpu() for p in parts], dim=2)[0, :, :latent.num_frames]


@torch.no_grad()
def generate(models: ModelBundle, inputs: AnimateInputs, options: SampleOptions,
             on_step: Callable[[StepEvent], None] | None = None,
             cancelled: Callable[[], bool] | None = None,
             overrides: Overrides | None = None,
             denoise: DenoiseFn | None = None) -> torch.Tensor:
    """Generate the video: :func:`generate_latent` then :func:`decode_latent`.

    Returns:
        video [3, N, H, W] float32 in [-1, 1], N = number of pose frames.
    """
    latent = generate_latent(models, inputs, options, on_step, cancelled, overrides, denoise)
    if overrides is not None and overrides.trace is not None and latent.pending is not None:
        overrides.trace.append(("vae_decode.in", latent.pending[0].float().cpu()))
    return decode_latent(models.vae, latent)


@torch.no_grad()
def generate_latent(models: ModelBundle, inputs: AnimateInputs, options: SampleOptions,
                    on_step: Callable[[StepEvent], None] | None = None,
                    cancelled: Callable[[], bool] | None = None,
                    overrides: Overrides | None = None,
                    denoise: DenoiseFn | None = None) -> AnimateLatent:
    """Sample every clip; clips followed by another are decoded (their tail conditions the next).

    Args:
        models: loaded networks (:class:`ModelBundle`).
        inputs: preprocessed pose/face/reference (+ bg/mask for replace) as uint8 arrays.
        options: sampling options (validated first, before any heavy work).
        on_step: progress callback, one :class:`StepEvent` per denoising step.
        cancelled: polled before every step; True stops with :class:`Cancelled`.
        overrides: parity seams (noise per clip, token ids, trace).
        denoise: replaces :func:`denoise_clip` (the worker pool passes its sharded version).
    """
    options.validate()
    inputs.validate(options.mode)
    ov = overrides or Overrides()
    trace = ov.trace
    plan = plan_clips(inputs.num_frames, options.frame_num, options.refert_num,
                      num_face_frames=int(inputs.face.shape[0]))
    h, w = inputs.size
    f = options.frame_num // 4 + 2
    shape = (1, 16, f, h // 8, w // 8)
    noise = ov.noise or initial_noise(options.seed, [shape] * len(plan.clips))
    video = video_conditioning(models, inputs, options, ov)
    solver = make_solver(options.solver, options.steps, options.shift)
    run = denoise or denoise_clip
    decoded: list[torch.Tensor] = []
    first: torch.Tensor | None = None
    prev_tail = None
    for clip in plan.clips:
        cond = clip_conditioning(models, inputs, options, plan, clip, video, prev_tail, ov)
        if trace is not None:
            trace += [("y", cond.y[0].float().cpu()), ("pose_latents", cond.pose_latents.float().cpu())]

        def step_cb(step: int, steps: int, _c: int = clip.index) -> None:
            if on_step is not None:
                on_step(StepEvent(_c + 1, len(plan.clips), step, steps))

        x0 = run(models.dit, solver, noise[clip.index].reshape(shape).to(models.device), video,
                 cond, options.guide_scale, on_step=step_cb, cancelled=cancelled, trace=trace)
        skip = 0 if clip.index == 0 else options.refert_num
        if clip.index == len(plan.clips) - 1:
            ref = first if options.color_match and clip.index > 0 else None
            return AnimateLatent(decoded, x0[:, :, 1:], skip, inputs.num_frames, inputs.fps, ref)
        if trace is not None:
            trace.append(("vae_decode.in", x0[0, :, 1:].float().cpu()))
        frames = models.vae.decode(x0[:, :, 1:])                    # [1, 3, T, H, W] in [-1, 1]
        if options.color_match:
            first = frames if first is None else first
            frames = frames if clip.index == 0 else color_match(frames, first)
        prev_tail = frames[:, :, -options.refert_num:]
        decoded.append(frames[:, :, skip:].cpu())
    raise AssertionError("a clip plan has at least one clip")
