"""The preprocessing parity fixtures (official outputs) all pass through our runner."""
from __future__ import annotations

from pathlib import Path

import pytest

from wan_animate.parity.preprocess import RUNNERS, run

KINDS = sorted(RUNNERS)


@pytest.mark.parametrize("kind", KINDS)
def test_fixture_folder_passes(preprocess_fixtures: Path, kind: str) -> None:
    folder = preprocess_fixtures / kind
    if not (folder / "cases.json").is_file():
        pytest.skip(f"no {kind} fixture here")
    results = run(folder)
    assert results, "no comparisons ran"
    failed = [c.line() for c in results if not c.passed]
    assert not failed, "\n".join(failed)


def test_unknown_kind_is_reported(tmp_path: Path) -> None:
    (tmp_path / "cases.json").write_text("[]")
    res = run(tmp_path)
    assert len(res) == 1 and not res[0].passed and "unknown" in res[0].detail
