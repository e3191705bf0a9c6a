"""``generate(...)``: the one engine entry for animate and replace, used by the CLI and the nodes.

Clips of ``frame_num`` (4n+1) frames are chained with ``refert_num`` frames of temporal
guidance from the previous clip's decoded tail (the official ping-pong padding and trimming,
see :mod:`wan_animate.preprocess.clip_plan`); the output has exactly the input's frame count.
Initial noise: one CPU ``torch.Generator`` seeded with ``seed`` draws [16, F, h, w] per clip in
order (device independent, so 1 and N GPUs give the same noise); ``Overrides.noise`` replaces it.
"""
from __future__ import annotations

from collections.abc import Callable

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


@torch.no_grad()
def generate(models: ModelBundle, inputs: AnimateInputs, options: SampleOptions,
             on_step: Callable[[StepEvent], None] | None = None,
             cancelled: Callable[[], bool] | None = None,
             overrides: Overrides | None = None,
             denoise: DenoiseFn | None = None) -> torch.Tensor:
    """Generate the video.

    Args:
        models: loaded networks (:class:`ModelBundle`).
        inputs: preprocessed pose/face/reference (+ bg/mask for replace) as uint8 arrays.
        options: sampling options (validated first, before any heavy work).
        on_step: progress callback, one :class:`StepEvent` per denoising step.
        cancelled: polled before every step; True stops with :class:`Cancelled`.
        overrides: parity seams (noise per clip, token ids, trace).
        denoise: replaces :func:`denoise_clip` (the worker pool passes its sharded version).
    Returns:
        video [3, N, H, W] float32 in [-1, 1], N = number of pose frames.
    """
    options.validate()
    inputs.validate(options.mode)
    ov = overrides or Overrides()
    trace = ov.trace
    plan = plan_clips(inputs.num_frames, options.frame_num, options.refert_num,
                      num_face_frames=int(inputs.face.shape[0]))
    h, w = inputs.size
    f = options.frame_num // 4 + 2
    noise = ov.noise or initial_noise(options.seed, [(1, 16, f, h // 8, w // 8)] * len(plan.clips))
    video = video_conditioning(models, inputs, options, ov)
    solver = make_solver(options.solver, options.steps, options.shift)
    run = denoise or denoise_clip
    outputs: list[torch.Tensor] = []
    first: torch.Tensor | None = None
    prev_tail = None
    for clip in plan.clips:
        cond = clip_conditioning(models, inputs, options, plan, clip, video, prev_tail, ov)
        if trace is not None:
            trace += [("y", cond.y[0].float().cpu()), ("pose_latents", cond.pose_latents.float().cpu())]

        def step_cb(step: int, steps: int, _c: int = clip.index) -> None:
            if on_step is not None:
                on_step(StepEvent(_c + 1, len(plan.clips), step, steps))

        x0 = run(models.dit, solver, noise[clip.index].reshape(1, 16, f, h // 8, w // 8)
                 .to(models.device), video, cond, options.guide_scale, on_step=step_cb,
                 cancelled=cancelled, trace=trace)
        if trace is not None:
            trace.append(("vae_decode.in", x0[0, :, 1:].float().cpu()))
        frames = models.vae.decode(x0[:, :, 1:])                    # [1, 3, T, H, W] in [-1, 1]
        if options.color_match:
            first = frames if first is None else first
            frames = frames if clip.index == 0 else color_match(frames, first)
        prev_tail = frames[:, :, -options.refert_num:]
        outputs.append((frames if clip.index == 0 else frames[:, :, options.refert_num:]).cpu())
    return torch.cat(outputs, dim=2)[0, :, :inputs.num_frames]
