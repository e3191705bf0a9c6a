"""The denoising loop of one clip — the part the worker pool runs on every rank.

Ported from Wan2.2 wan/animate.py::WanAnimate.generate (the sampling loop): classifier-free
guidance v = v_u + g (v_c - v_u) where the unconditional pass swaps the text for the negative
prompt and the face crops for black ones; timesteps are the solver's int64 values.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch

from wan_animate.errors import Cancelled
from wan_animate.models.dit import AnimateDiT
from wan_animate.sampling.conditioning import ClipConditioning, VideoConditioning
from wan_animate.sampling.solvers import Solver

class CfgParallel(Protocol):
    """Conditional / unconditional passes on two halves of a pool.

    ``rank`` is 0 on the conditional half, 1 on the unconditional half; ``exchange(v)`` gives
    every rank ``(v_cond, v_uncond)`` from the two halves' predictions.
    """

    rank: int

    def exchange(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...


StepCallback = Callable[[int, int], None]
"""Called after each step with (step 1-based, total steps); may raise :class:`Cancelled`."""


@torch.no_grad()
def denoise_clip(dit: AnimateDiT, solver: Solver, noise: torch.Tensor, video: VideoConditioning,
                 clip: ClipConditioning, guide_scale: float,
                 on_step: StepCallback | None = None,
                 cancelled: Callable[[], bool] | None = None,
                 trace: list | None = None, cfg_parallel: CfgParallel | None = None
                 ) -> torch.Tensor:
    """Run the solver from ``noise`` [1, 16, F, h, w] to the clean latent [1, 16, F, h, w] fp32.

    With ``cfg_parallel`` and guidance, each half of the pool runs one of the two passes.
    """
    solver.reset()
    x = noise.float()
    steps = solver.num_steps
    for i in range(steps):
        if cancelled is not None and cancelled():
            raise Cancelled(f"cancelled before step {i + 1}/{steps}")
        t = solver.timesteps[i].reshape(1).to(x.device)
        common = dict(t=t, clip_fea=video.clip_fea, context=None, y=clip.y,
                      pose_latents=clip.pose_latents)
        if guide_scale > 1 and cfg_parallel is not None:
            uncond = cfg_parallel.rank == 1
            v_part = dit(x, motion_vec=video.motion_null if uncond else clip.motion,
                         context_emb=video.context_null if uncond else video.context, **common)
            v, v_u = cfg_parallel.exchange(v_part)
            x = solver.step(v_u + guide_scale * (v - v_u), x, i)
            if on_step is not None:
                on_step(i + 1, steps)
            continue
        v = dit(x, motion_vec=clip.motion, context_emb=video.context, **common)
        if trace is not None:
            trace.append(("dit.x", x[0].detach().cpu()))
            trace.append(("dit.t", t.detach().cpu()))
            trace.append(("dit.out", v[0].detach().cpu()))
        if guide_scale > 1:
            assert video.context_null is not None and video.motion_null is not None
            v_u = dit(x, motion_vec=video.motion_null, context_emb=video.context_null, **common)
            if trace is not None:
                trace.append(("dit.out_uncond", v_u[0].detach().cpu()))
            v = v_u + guide_scale * (v - v_u)
        x = solver.step(v, x, i)
        if on_step is not None:
            on_step(i + 1, steps)
    return x
