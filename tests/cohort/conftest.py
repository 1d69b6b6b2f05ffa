"""Fixtures for cohort tests: a small synthetic cohort and a phantom cohort."""

from __future__ import annotations

import pytest

from .helpers import write_small_cohort


@pytest.fixture
def small_cohort(tmp_path):
    return write_small_cohort(tmp_path)


@pytest.fixture(scope="session")
def phantom_cohort(tmp_path_factory):
    """A phantom cohort (3 patients x 1 slide of 4 x 3 mm at 0.5 µm/px) with truth tables; ~8 s once."""
    from tmln.phantom import make_cohort

    out = tmp_path_factory.mktemp("phantom")
    return make_cohort(out, patients=3, slides_per_patient=1, seed=1, size_mm=(4.0, 3.0))
