"""Parity of the sampling schedules and solvers with the official schedulers (fixture ``solver``).

For every run of ``config.json`` (solver, steps, shift): the model timesteps must match exactly, the
solver sigmas to 1e-7 (exact in practice), and for every deterministic stand-in model function of
``config.json["model_functions"]`` the whole trajectory (latents and model outputs at every step)
within the fixture's tolerance, checked step by step.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file

from wan_animate.parity.common import Comparison, compare, error, exact, read_config, tolerance
from wan_animate.sampling.schedule import dpmpp_sampling_sigmas
from wan_animate.sampling.solvers import Solver, make_solver

FIXTURE = "solver"
SIGMA_MAX_ABS = 1e-7

ModelFn = Callable[[torch.Tensor, int], torch.Tensor]


def _lin(x: torch.Tensor, t: int) -> torch.Tensor:
    """v = 0.5·x + c, c = float32(0.1·t/1000) computed in float64 and rounded once."""
    c = torch.tensor(0.1 * t / 1000, dtype=torch.float64).to(torch.float32)
    return 0.5 * x + c


def _sin(x: torch.Tensor, t: int) -> torch.Tensor:
    """v = sin(3·x)·s − 0.25·x, s = float32(t/1000) computed in float64 and rounded once."""
    s = torch.tensor(t / 1000, dtype=torch.float64).to(torch.float32)
    return torch.sin(3 * x) * s - 0.25 * x


MODEL_FUNCTIONS: dict[str, ModelFn] = {"lin": _lin, "sin": _sin}


def trajectory(solver: Solver, model: ModelFn, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the solver from ``noise`` [C, F, H, W]; returns latents [N + 1, C, F, H, W] (0 = noise)
    and model outputs [N, C, F, H, W]."""
    solver.reset()
    x = noise.clone()
    latents, outputs = [x], []
    for i, t in enumerate(solver.timesteps.tolist()):
        v = model(x, t)
        x = solver.step(v, x, i)
        outputs.append(v)
        latents.append(x)
    return torch.stack(latents), torch.stack(outputs)


def _per_step(name: str, ours: torch.Tensor, ref: torch.Tensor,
              max_abs: float | None, rel_l2: float | None) -> Comparison:
    """One line for a stacked trajectory [S, ...]: the tolerance must hold at every step s."""
    if tuple(ours.shape) != tuple(ref.shape):
        return compare(FIXTURE, name, ours, ref, max_abs, rel_l2)
    steps = [compare(FIXTURE, name, ours[s], ref[s], max_abs, rel_l2) for s in range(ref.shape[0])]
    worst = max(range(len(steps)), key=lambda s: (not steps[s].passed, steps[s].max_abs))
    return Comparison(FIXTURE, name, max(c.max_abs for c in steps), max(c.rel_l2 for c in steps),
                      max_abs, rel_l2, all(c.passed for c in steps),
                      f"{len(steps)} steps, worst at {worst}")


def _run_one(run: dict, functions: list[str], io: dict[str, torch.Tensor],
             tol: dict[str, tuple[float | None, float | None]]) -> list[Comparison]:
    tag = run["tag"]
    solver = make_solver(run["solver"], int(run["sampling_steps"]), float(run["shift"]))
    out = [exact(FIXTURE, f"{tag}.timesteps", solver.timesteps, io[f"{tag}.timesteps"]),
           compare(FIXTURE, f"{tag}.sigmas", solver.sigmas, io[f"{tag}.sigmas"], SIGMA_MAX_ABS)]
    if f"{tag}.sampling_sigmas_f64" in io:
        ours = torch.from_numpy(dpmpp_sampling_sigmas(int(run["sampling_steps"]), float(run["shift"])))
        out.append(exact(FIXTURE, f"{tag}.sampling_sigmas_f64", ours, io[f"{tag}.sampling_sigmas_f64"]))
    for fn in functions:
        if fn not in MODEL_FUNCTIONS:
            out.append(error(FIXTURE, f"{tag}.{fn}", f"model function {fn!r} is not implemented"))
            continue
        latents, outputs = trajectory(solver, MODEL_FUNCTIONS[fn], io["noise"])
        out.append(_per_step(f"{tag}.{fn}.model_outputs", outputs, io[f"{tag}.{fn}.model_outputs"],
                             *tol["model_outputs"]))
        out.append(_per_step(f"{tag}.{fn}.latents", latents, io[f"{tag}.{fn}.latents"], *tol["latents"]))
    return out


def run(folder: Path) -> list[Comparison]:
    """Check every run × model function of the fixture in ``folder``."""
    cfg = read_config(folder)
    io = load_file(str(folder / "io.safetensors"))
    latents_tol = tolerance(cfg, "latents")
    outputs_key = "model_outputs" if "model_outputs" in cfg["recommended_tolerance"] else "latents"
    tol = {"latents": latents_tol, "model_outputs": tolerance(cfg, outputs_key)}
    functions = list(cfg["model_functions"])
    results: list[Comparison] = []
    for run_cfg in cfg["runs"]:
        results.extend(_run_one(run_cfg, functions, io, tol))
    return results
