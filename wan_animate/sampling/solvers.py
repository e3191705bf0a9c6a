"""Deterministic multistep flow-matching solvers of the official sampler: UniPC (bh2) and DPM++ (2M).

The model predicts the flow velocity v at (x, σ). Both solvers work on the data prediction
x0 = x − σ·v and on the log-SNR λ(σ) = log(1 − σ) − log σ (α = 1 − σ is the signal scale).

Usage, one instance per sampling run (``reset()`` before reusing it for the next clip)::

    solver = make_solver("unipc", steps=20, shift=5.0)
    for i, t in enumerate(solver.timesteps):
        v = model(x, t)                 # t: int64 model timestep
        x = solver.step(v, x, i)

The arithmetic follows the official schedulers (diffusers-derived, Wan2.2 ``wan/utils/fm_solvers*.py``)
step for step, with every coefficient computed as a float32 scalar tensor in the same order, so
trajectories are bit-identical to the official ones (checked on CPU, and on CUDA with and without
``official_autocast``). Nothing here draws random numbers.
"""
from __future__ import annotations

import math
import numbers
from abc import ABC, abstractmethod

import torch

from wan_animate.errors import InputError
from wan_animate.sampling.schedule import Schedule, dpmpp_schedule, unipc_schedule

SOLVER_NAMES = ("unipc", "dpm++")
_ALIASES = {"unipc": "unipc", "dpm++": "dpm++", "dpmpp": "dpm++"}

Tensor = torch.Tensor


def _log_snr(sigma: Tensor) -> Tensor:
    """λ = log α − log σ with α = 1 − σ (float32 scalar; +inf at σ = 0, −inf at σ = 1)."""
    return torch.log(1 - sigma) - torch.log(sigma)


class Solver(ABC):
    """A multistep solver over a fixed schedule.

    Attributes:
        name: "unipc" or "dpm++".
        timesteps: int64 [N], the model timesteps, one per step.
        sigmas: float32 [N + 1], the noise levels; step i moves the sample from sigmas[i] to sigmas[i + 1].

    ``step`` must be called with index 0, 1, …, N − 1 in order; the solver keeps the last data
    predictions between calls. ``reset()`` clears that history.
    """

    name: str = ""

    def __init__(self, schedule: Schedule) -> None:
        self.timesteps: Tensor = schedule.timesteps
        self.sigmas: Tensor = schedule.sigmas
        self.reset()

    @property
    def num_steps(self) -> int:
        return int(self.timesteps.numel())

    def __len__(self) -> int:
        return self.num_steps

    def reset(self) -> None:
        """Forget the history so the next call is ``step(..., index=0)`` of a fresh run."""
        self._next_index = 0
        self._x0_history: list[Tensor] = []  # data predictions, newest last (at most 2 kept)

    def step(self, model_output: Tensor, sample: Tensor, index: int) -> Tensor:
        """One solver step from ``sigmas[index]`` to ``sigmas[index + 1]``.

        Args:
            model_output: the velocity v predicted at (sample, timesteps[index]), any shape, e.g. [C, F, H, W].
            sample: the current latent x, same shape.
            index: the step number, 0 ≤ index < N, in order.
        Returns:
            The next latent, same shape, float32 in practice: the math runs in float32 (the official
            DPM++ step upcasts the sample too) and the result is cast back to the promoted dtype of
            ``sample`` and ``model_output`` (the dtype of the official data prediction, which the
            official DPM++ step casts back to), so fp32 latents never drop to a bf16 model output's dtype.
        """
        if index != self._next_index:
            raise ValueError(f"{self.name} solver: step index {index} out of order, expected "
                             f"{self._next_index} (of {self.num_steps}); call reset() to start a new run")
        if model_output.shape != sample.shape:
            raise ValueError(f"{self.name} solver: model_output {tuple(model_output.shape)} and "
                             f"sample {tuple(sample.shape)} differ in shape")
        out_dtype = torch.promote_types(sample.dtype, model_output.dtype)
        # data prediction in the inputs' own dtypes (as the official convert_model_output), then fp32
        x0 = (sample - self.sigmas[index] * model_output).float()
        x = sample.float()
        x_next = self._update(x0, x, index)
        self._x0_history = (self._x0_history + [x0])[-2:]
        self._next_index += 1
        return x_next.to(out_dtype)

    @abstractmethod
    def _update(self, x0: Tensor, x: Tensor, index: int) -> Tensor:
        """The next sample (float32) from the new data prediction ``x0`` (history not yet updated)."""


class DPMppSolver(Solver):
    """DPM-Solver++ 2M (data prediction, midpoint), first order at the first and the last step.

    First order (DDIM):   x_t = (σ_t/σ_s)·x − α_t·(e^(−h) − 1)·D0
    Second order:         x_t = (σ_t/σ_s)·x − α_t·(e^(−h) − 1)·D0 − ½·α_t·(e^(−h) − 1)·D1
    with h = λ_t − λ_s, D0 = x0 now, D1 = (x0 now − x0 before)/r, r = (λ_s − λ_prev)/h.
    The last step (σ_t = 0) returns D0.
    """

    name = "dpm++"

    def _update(self, x0: Tensor, x: Tensor, index: int) -> Tensor:
        # Ported from Wan2.2 wan/utils/fm_solvers.py::FlowDPMSolverMultistepScheduler.step
        # (dpm_solver_first_order_update, multistep_dpm_solver_second_order_update)
        sigma_t, sigma_s = self.sigmas[index + 1], self.sigmas[index]
        h = _log_snr(sigma_t) - _log_snr(sigma_s)
        coef = (1 - sigma_t) * (torch.exp(-h) - 1.0)  # α_t·(e^(−h) − 1)
        x_next = (sigma_t / sigma_s) * x - coef * x0
        first_order = index == 0 or index == self.num_steps - 1
        if not first_order:
            r = (_log_snr(sigma_s) - _log_snr(self.sigmas[index - 1])) / h
            d1 = (1.0 / r) * (x0 - self._x0_history[-1])
            x_next = x_next - (0.5 * coef) * d1
        return x_next


class UniPCSolver(Solver):
    """UniPC with B(h) = e^(−h) − 1 (bh2), order 2, on data predictions, with the UniC corrector.

    Each step i ≥ 1 first *corrects* the incoming sample with the new data prediction (UniC, same
    order as the previous predictor), then *predicts* the next one (UniP). The order of step i is
    min(2, i + 1, N − i): first order at the first and the last step (lower_order_final).

    With hh = −h, φ1 = e^hh − 1, B = e^hh − 1 and base = (σ_t/σ_s)·x − α_t·φ1·m0:
      UniP order 2:  x_t = base − α_t·B·½·D1,           D1 = (m1 − m0)/r
      UniC order 1:  x_c = base − α_t·B·½·(x0_t − m0)
      UniC order 2:  x_c = base − α_t·B·(ρ0·D1 + ρ1·(x0_t − m0)), [[1, 1], [r, 1]]·ρ = b
    where m0 is the newest data prediction before the update, m1 the one before it, r the log-SNR
    step ratio of m1, and b_k = k!·φ_(k+1)(hh)/B (the φ-function series of UniPC).

    ``official_autocast``: reproduce the official CUDA run, where ``generate()`` calls the scheduler
    inside ``torch.autocast(bfloat16)``; there its two ``einsum`` contractions (½·D1 in UniP, ρ0·D1 in
    UniC, both with order 2) run as a bf16 bmm, so those terms are rounded to bf16 (and UniP's
    α_t·B·(½·D1) too). Off (default): pure float32, as the official code computes on CPU / without
    autocast (the ``solver`` fixture). DPM++ has no such op and is unaffected.
    """

    name = "unipc"

    def __init__(self, schedule: Schedule, official_autocast: bool = False) -> None:
        self.official_autocast = official_autocast
        super().__init__(schedule)

    def reset(self) -> None:
        super().reset()
        self._last_sample: Tensor | None = None  # the (corrected) sample the last predictor started from
        self._last_order = 0

    def _order(self, index: int) -> int:
        return min(2, index + 1, self.num_steps - index)

    def _update(self, x0: Tensor, x: Tensor, index: int) -> Tensor:
        # Ported from Wan2.2 wan/utils/fm_solvers_unipc.py::FlowUniPCMultistepScheduler.step
        if index > 0 and self._last_sample is not None:
            x = self._correct(x0, x, index)
        history = (self._x0_history + [x0])[-2:]
        order = self._order(index)
        self._last_sample, self._last_order = x, order
        return self._predict(history, x, index, order)

    def _coefficients(self, t: int, s0: int, s1: int | None) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        """For the move sigmas[s0] -> sigmas[t]: (σ_t/σ_s0, α_t·φ1, α_t·B, r of sigmas[s1] or None)."""
        sigma_t, sigma_s0 = self.sigmas[t], self.sigmas[s0]
        lambda_s0 = _log_snr(sigma_s0)
        h = _log_snr(sigma_t) - lambda_s0
        hh = -h  # predict_x0
        h_phi_1 = torch.expm1(hh)
        b_h = torch.expm1(hh)  # bh2
        alpha_t = 1 - sigma_t
        r = None if s1 is None else (_log_snr(self.sigmas[s1]) - lambda_s0) / h
        return sigma_t / sigma_s0, alpha_t * h_phi_1, alpha_t * b_h, r

    def _predict(self, history: list[Tensor], x: Tensor, index: int, order: int) -> Tensor:
        # Ported from Wan2.2 wan/utils/fm_solvers_unipc.py::FlowUniPCMultistepScheduler.multistep_uni_p_bh_update
        m0 = history[-1]
        ratio, a_phi, a_b, r = self._coefficients(index + 1, index, index - 1 if order == 2 else None)
        x_next = ratio * x - a_phi * m0
        if order == 2:
            d1 = (history[-2] - m0) / r
            pred_res = 0.5 * d1  # ρ_p = ½ at order 2
            if self.official_autocast:
                pred_res = pred_res.to(torch.bfloat16)  # then α_t·B·pred_res is bf16 too (type promotion)
            x_next = x_next - a_b * pred_res
        return x_next

    def _correct(self, x0_t: Tensor, x_t: Tensor, index: int) -> Tensor:
        # Ported from Wan2.2 wan/utils/fm_solvers_unipc.py::FlowUniPCMultistepScheduler.multistep_uni_c_bh_update
        order = self._last_order
        m0 = self._x0_history[-1]
        x = self._last_sample
        ratio, a_phi, a_b, r = self._coefficients(index, index - 1, index - 2 if order == 2 else None)
        base = ratio * x - a_phi * m0
        d1_t = x0_t - m0
        if order == 1:
            return base - a_b * (0.5 * d1_t)
        rho = self._corrector_weights(index, r, x_t.device)
        d1 = (self._x0_history[-2] - m0) / r
        if self.official_autocast:
            corr_res = rho[0].to(torch.bfloat16) * d1.to(torch.bfloat16)  # bf16 einsum of the official run
        else:
            corr_res = rho[0] * d1
        return base - a_b * (corr_res + rho[1] * d1_t)

    def _corrector_weights(self, index: int, r: Tensor, device: torch.device) -> Tensor:
        """Order-2 UniC weights ρ [2] solving [[1, 1], [r, 1]]·ρ = b (float32, on ``device``).

        Solved on the latents' device like the official code: CUDA and CPU solvers can differ in the
        last bit, and solving where the official run solves keeps GPU trajectories bit-identical.
        """
        h = _log_snr(self.sigmas[index]) - _log_snr(self.sigmas[index - 1])
        hh = -h
        b_h = torch.expm1(hh)
        h_phi_k = torch.expm1(hh) / hh - 1  # first term of the φ_k series, then the recurrence
        b = []
        factorial = 1
        for k in range(1, 3):
            b.append(h_phi_k * factorial / b_h)
            factorial *= k + 1
            h_phi_k = h_phi_k / hh - 1 / factorial
        rows = torch.tensor([[1.0, 1.0], [float(r), 1.0]], dtype=torch.float32, device=device)
        return torch.linalg.solve(rows, torch.stack(b).to(device=device, dtype=torch.float32))


def make_solver(name: str, steps: int, shift: float, *, official_autocast: bool = False) -> Solver:
    """Build the solver ``name`` ("unipc", "dpm++" or its alias "dpmpp") over ``steps`` steps with time ``shift``.

    ``official_autocast`` (UniPC only, see :class:`UniPCSolver`) reproduces the bf16 rounding of the
    official CUDA run; the default is exact float32 math.
    Raises InputError for an unknown name, steps < 1 or a shift that is not a positive finite number.
    """
    key = _ALIASES.get(name.strip().lower()) if isinstance(name, str) else None
    if key is None:
        raise InputError(f"unknown sampling solver {name!r}; choose one of {', '.join(SOLVER_NAMES)} "
                         f"('dpmpp' is accepted for 'dpm++')")
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 1:
        raise InputError(f"sampling steps must be an integer >= 1, got {steps!r}")
    if isinstance(shift, bool) or not isinstance(shift, numbers.Real) or not math.isfinite(shift) or shift <= 0:
        raise InputError(f"sampling shift must be a positive finite number, got {shift!r}")
    if key == "unipc":
        return UniPCSolver(unipc_schedule(int(steps), float(shift)), official_autocast=official_autocast)
    return DPMppSolver(dpmpp_schedule(int(steps), float(shift)))
