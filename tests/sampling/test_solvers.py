"""Flow-matching schedules and solvers: parity with the official schedulers, schedules, reuse, errors."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from wan_animate.errors import InputError
from wan_animate.parity import solver as solver_parity
from wan_animate.sampling.schedule import dpmpp_schedule, unipc_schedule
from wan_animate.sampling.solvers import DPMppSolver, Solver, UniPCSolver, make_solver

# wan-animate-facts.md §7 (unipc list completed from the solver fixture's README)
DPMPP_20_SHIFT5 = [1000, 989, 978, 965, 952, 937, 921, 902, 882, 859,
                   833, 803, 769, 729, 681, 625, 555, 468, 357, 208]
UNIPC_20_SHIFT5 = [999, 989, 978, 965, 952, 937, 920, 902, 882, 859,
                   833, 803, 768, 728, 681, 624, 555, 468, 356, 208]


def _model(x: torch.Tensor, t: int) -> torch.Tensor:
    return torch.sin(3 * x) * (t / 1000) - 0.25 * x


def _trajectory(solver: Solver, x: torch.Tensor) -> torch.Tensor:
    out = [x]
    for i, t in enumerate(solver.timesteps.tolist()):
        x = solver.step(_model(x, t), x, i)
        out.append(x)
    return torch.stack(out)


def test_parity_with_official_fixture(official_fixtures: Path) -> None:
    results = solver_parity.run(official_fixtures / "solver")
    failed = [c.line() for c in results if not c.passed]
    assert results and not failed, "\n".join(failed)
    names = {c.name for c in results}
    assert any(n.endswith(".latents") for n in names) and any(n.endswith(".timesteps") for n in names)


@pytest.mark.parametrize("name, expected", [("dpm++", DPMPP_20_SHIFT5), ("dpmpp", DPMPP_20_SHIFT5),
                                            ("unipc", UNIPC_20_SHIFT5)])
def test_timesteps_20_steps_shift5(name: str, expected: list[int]) -> None:
    s = make_solver(name, 20, 5.0)
    assert s.timesteps.dtype == torch.int64 and s.timesteps.tolist() == expected
    assert s.sigmas.dtype == torch.float32 and s.sigmas.shape == (21,)
    assert s.sigmas[-1].item() == 0.0 and bool((s.sigmas[:-1] > s.sigmas[1:]).all())


def test_schedule_starts() -> None:
    assert dpmpp_schedule(4, 5.0).sigmas[0].item() == 1.0  # dpm++ starts at pure noise
    assert abs(unipc_schedule(4, 5.0).sigmas[0].item() - 0.9998) < 1e-4  # unipc at 0.9998, not 1
    # shift 1 is the plain linear schedule: timesteps truncate sigma * 1000
    assert dpmpp_schedule(4, 1.0).timesteps.tolist() == [1000, 750, 500, 250]


@pytest.mark.parametrize("name", ["unipc", "dpm++"])
def test_reset_reuses_instance(name: str) -> None:
    x = torch.randn(16, 2, 4, 6, generator=torch.Generator().manual_seed(3))
    s = make_solver(name, 6, 5.0)
    first = _trajectory(s, x)
    with pytest.raises(ValueError, match="out of order"):
        s.step(_model(x, 1), x, 0)  # a finished run cannot silently restart
    s.reset()
    again = _trajectory(s, x)
    assert torch.equal(first, again)
    assert isinstance(s, UniPCSolver if name == "unipc" else DPMppSolver)


@pytest.mark.parametrize("name", ["unipc", "dpm++"])
def test_exact_data_prediction_lands_on_it(name: str) -> None:
    """A model whose data prediction x − σ·v is always x0 must end exactly near x0 (any solver order)."""
    g = torch.Generator().manual_seed(0)
    x0, x = torch.randn(3, 5, generator=g), torch.randn(3, 5, generator=g)
    s = make_solver(name, 7, 5.0)
    for i in range(s.num_steps):
        sigma = s.sigmas[i]
        x = s.step((x - x0) / sigma, x, i)
    assert torch.allclose(x, x0, atol=1e-5)


def test_solvers_differ_and_order_matters() -> None:
    x = torch.randn(16, 2, 4, 6, generator=torch.Generator().manual_seed(5))
    a, b = _trajectory(make_solver("unipc", 8, 5.0), x)[-1], _trajectory(make_solver("dpm++", 8, 5.0), x)[-1]
    assert not torch.equal(a, b)


def test_dtypes() -> None:
    s = make_solver("dpm++", 3, 5.0)
    x = torch.randn(2, 3)
    y = s.step(_model(x, 1000).bfloat16(), x, 0)
    assert y.dtype == torch.float32  # fp32 latents stay fp32 with a bf16 model output
    s.reset()
    y = s.step(_model(x, 1000).bfloat16(), x.bfloat16(), 0)
    assert y.dtype == torch.bfloat16


def test_official_autocast_only_rounds_unipc_corrections() -> None:
    x = torch.randn(16, 2, 4, 6, generator=torch.Generator().manual_seed(7))
    exact = _trajectory(make_solver("unipc", 10, 5.0), x)[-1]
    rounded = _trajectory(make_solver("unipc", 10, 5.0, official_autocast=True), x)[-1]
    diff = (exact - rounded).abs().max().item()
    assert 0 < diff < 1e-3
    dpm = [_trajectory(make_solver("dpm++", 10, 5.0, official_autocast=f), x)[-1] for f in (False, True)]
    assert torch.equal(dpm[0], dpm[1])


@pytest.mark.parametrize("name, steps, shift", [("euler", 20, 5.0), ("", 20, 5.0), (None, 20, 5.0),
                                                ("unipc", 0, 5.0), ("dpm++", -3, 5.0), ("unipc", 2.5, 5.0),
                                                ("unipc", True, 5.0), ("dpm++", 20, 0.0),
                                                ("dpm++", 20, float("nan")), ("unipc", 20, -1.0)])
def test_bad_arguments(name: object, steps: object, shift: object) -> None:
    with pytest.raises(InputError):
        make_solver(name, steps, shift)  # type: ignore[arg-type]


def test_name_is_case_insensitive() -> None:
    assert make_solver(" UniPC ", 4, 5.0).name == "unipc"
    assert make_solver("DPM++", 4, 5.0).name == "dpm++"


def test_shape_mismatch() -> None:
    s = make_solver("unipc", 4, 5.0)
    with pytest.raises(ValueError, match="shape"):
        s.step(torch.zeros(2, 3), torch.zeros(3, 2), 0)
