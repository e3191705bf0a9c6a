"""Comparison records and fixture reading shared by all parity runners."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch


@dataclass(frozen=True)
class Comparison:
    """One compared output. ``max_abs``/``rel_l2`` are computed in float64 over the whole tensor."""

    fixture: str
    name: str
    max_abs: float
    rel_l2: float
    tol_max_abs: float | None
    tol_rel_l2: float | None
    passed: bool
    detail: str = ""

    def line(self) -> str:
        tol = []
        if self.tol_max_abs is not None:
            tol.append(f"max_abs<={self.tol_max_abs:g}")
        if self.tol_rel_l2 is not None:
            tol.append(f"rel_l2<={self.tol_rel_l2:g}")
        tol_s = ",".join(tol) or "exact"
        status = "PASS" if self.passed else "FAIL"
        extra = f"  {self.detail}" if self.detail else ""
        return (f"{self.fixture:18s} {self.name:44s} max_abs={self.max_abs:.3e} "
                f"rel_l2={self.rel_l2:.3e} tol[{tol_s}] {status}{extra}")


def compare(fixture: str, name: str, ours: torch.Tensor, ref: torch.Tensor,
            max_abs: float | None, rel_l2: float | None = None) -> Comparison:
    """Compare ``ours`` with ``ref`` (shapes must match exactly) within the tolerances."""
    if tuple(ours.shape) != tuple(ref.shape):
        return Comparison(fixture, name, float("inf"), float("inf"), max_abs, rel_l2, False,
                          f"shape {tuple(ours.shape)} != reference {tuple(ref.shape)}")
    a = ours.detach().to(torch.float64).cpu()
    b = ref.detach().to(torch.float64).cpu()
    diff = a - b
    mx = float(diff.abs().max()) if diff.numel() else 0.0
    denom = float(b.norm())
    rl = float(diff.norm()) / denom if denom > 0 else (0.0 if float(diff.norm()) == 0 else float("inf"))
    ok = (max_abs is None or mx <= max_abs) and (rel_l2 is None or rl <= rel_l2)
    if max_abs is None and rel_l2 is None:
        ok = mx == 0.0
    return Comparison(fixture, name, mx, rl, max_abs, rel_l2, ok)


def exact(fixture: str, name: str, ours: Any, ref: Any) -> Comparison:
    """Exact equality (integer tensors, lists, strings)."""
    if isinstance(ours, torch.Tensor) or isinstance(ref, torch.Tensor):
        ours_t, ref_t = torch.as_tensor(ours), torch.as_tensor(ref)
        same = tuple(ours_t.shape) == tuple(ref_t.shape) and bool(torch.equal(ours_t.cpu(), ref_t.cpu()))
        mx = 0.0 if same else (float((ours_t.double() - ref_t.double()).abs().max())
                               if ours_t.shape == ref_t.shape else float("inf"))
    else:
        same = ours == ref
        mx = 0.0 if same else float("inf")
    return Comparison(fixture, name, mx, 0.0 if same else float("inf"), None, None, same,
                      "" if same else f"ours={_short(ours)} ref={_short(ref)}")


def error(fixture: str, name: str, message: str) -> Comparison:
    """A runner that could not produce an output reports it as a failed comparison."""
    return Comparison(fixture, name, float("nan"), float("nan"), None, None, False, message)


def _short(v: Any) -> str:
    s = repr(v.tolist() if isinstance(v, torch.Tensor) else v)
    return s if len(s) < 120 else s[:117] + "..."


def read_config(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "config.json").read_text())


def tolerance(cfg: dict[str, Any], *path: str) -> tuple[float | None, float | None]:
    """Read ``(max_abs, rel_l2)`` from ``cfg['recommended_tolerance']`` following ``path``.

    Falls back to the ``outputs`` entry when ``path`` is not present.
    """
    tol: Any = cfg["recommended_tolerance"]
    node = tol
    for p in path:
        if isinstance(node, dict) and p in node:
            node = node[p]
        else:
            node = tol.get("outputs", tol)
            break
    return node.get("max_abs"), node.get("rel_l2")
