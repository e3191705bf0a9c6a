"""Sigma schedules of the official flow-matching samplers, built exactly as Wan2.2 builds them.

A schedule of N steps holds the N integer model timesteps and the N + 1 float32 sigmas the solver
walks through (the last one is 0, the clean sample). σ = 1 is pure noise; the flow-matching
interpolation is x_σ = (1 − σ)·x0 + σ·noise.

The arithmetic follows the official code bit for bit: the schedule is built in float64 with numpy
(``numpy.linspace`` rounds differently from ``torch.linspace``), the model timesteps are
``int64(σ·1000)`` *truncated* from the float64 sigmas, and the solver sigmas are the float32 rounding
of the same values. A one-ulp difference can move a truncated timestep (e.g. 625 vs 624).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

NUM_TRAIN_TIMESTEPS = 1000


@dataclass(frozen=True)
class Schedule:
    """``timesteps``: int64 [N], fed to the model; ``sigmas``: float32 [N + 1], descending, last = 0."""

    timesteps: torch.Tensor
    sigmas: torch.Tensor

    @property
    def num_steps(self) -> int:
        return int(self.timesteps.numel())


def shift_sigmas(sigmas: np.ndarray, shift: float) -> np.ndarray:
    """Time shift σ' = shift·σ / (1 + (shift − 1)·σ) in float64; ``shift`` > 1 spends more steps at high noise."""
    # Ported from Wan2.2 wan/utils/fm_solvers.py::get_sampling_sigmas (the shift formula)
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def dpmpp_sampling_sigmas(steps: int, shift: float) -> np.ndarray:
    """The float64 sigmas [steps] that ``sample_solver='dpm++'`` passes as a custom schedule.

    s = linspace(1, 0, steps + 1)[:steps], then shifted; starts at exactly 1.0.
    """
    # Ported from Wan2.2 wan/utils/fm_solvers.py::get_sampling_sigmas
    return shift_sigmas(np.linspace(1, 0, steps + 1)[:steps], shift)


def unipc_sampling_sigmas(steps: int, shift: float,
                          num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> np.ndarray:
    """The float64 sigmas [steps] of ``sample_solver='unipc'``.

    s = linspace(σ_max, σ_min, steps + 1)[:-1] with σ_max / σ_min the ends of the scheduler's float32
    training table (σ_max = float32(1 − 1/num_train_timesteps) = 0.999…, σ_min = 0), then shifted;
    so the first sigma is 0.9998 for shift 5, not 1.
    """
    # Ported from Wan2.2 wan/utils/fm_solvers_unipc.py::FlowUniPCMultistepScheduler.__init__ / set_timesteps
    alphas = np.linspace(1, 1 / num_train_timesteps, num_train_timesteps)[::-1]
    table = (1.0 - alphas).astype(np.float32)  # training sigmas, 0.999 .. 0 (shift 1 in the constructor)
    sigma_max, sigma_min = float(table[0]), float(table[-1])
    return shift_sigmas(np.linspace(sigma_max, sigma_min, steps + 1)[:-1], shift)


def schedule_from_sigmas(sigmas: np.ndarray,
                         num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> Schedule:
    """float64 sigmas [N] -> int64 timesteps trunc(σ·num_train_timesteps) [N] and float32 sigmas + final 0 [N + 1]."""
    # Ported from Wan2.2 wan/utils/fm_solvers.py::FlowDPMSolverMultistepScheduler.set_timesteps
    # (final_sigmas_type='zero'; the scheduler's own shift is 1, an exact identity in float64)
    sigmas = np.asarray(sigmas, dtype=np.float64)
    timesteps = torch.from_numpy(sigmas * num_train_timesteps).to(torch.int64)  # truncation toward 0
    solver_sigmas = torch.from_numpy(np.concatenate([sigmas, [0.0]]).astype(np.float32))
    return Schedule(timesteps=timesteps, sigmas=solver_sigmas)


def dpmpp_schedule(steps: int, shift: float,
                   num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> Schedule:
    """Schedule of ``sample_solver='dpm++'``: for 20 steps, shift 5 the timesteps are 1000, 989, …, 357, 208."""
    return schedule_from_sigmas(dpmpp_sampling_sigmas(steps, shift), num_train_timesteps)


def unipc_schedule(steps: int, shift: float,
                   num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> Schedule:
    """Schedule of ``sample_solver='unipc'``: for 20 steps, shift 5 the timesteps are 999, 989, …, 356, 208."""
    return schedule_from_sigmas(unipc_sampling_sigmas(steps, shift, num_train_timesteps),
                                num_train_timesteps)
