"""Shared test fixtures: where ../shared lives, and small helpers."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("WAN_ANIMATE_SHARED", ROOT.parent / "shared")).resolve()
OFFICIAL = SHARED / "fixtures" / "official"
PREPROCESS = SHARED / "fixtures" / "preprocess"
SAMPLES = SHARED / "samples"


@pytest.fixture(scope="session")
def official_fixtures() -> Path:
    """``../shared/fixtures/official``: tensors produced by the official implementation."""
    assert OFFICIAL.is_dir(), f"missing {OFFICIAL}: clone the project beside ../shared"
    return OFFICIAL


@pytest.fixture(scope="session")
def preprocess_fixtures() -> Path:
    assert PREPROCESS.is_dir(), f"missing {PREPROCESS}"
    return PREPROCESS


@pytest.fixture(scope="session")
def samples() -> Path:
    assert SAMPLES.is_dir(), f"missing {SAMPLES}"
    return SAMPLES


@pytest.fixture(autouse=True)
def _torch_threads() -> None:
    torch.set_num_threads(min(2, os.cpu_count() or 1))
