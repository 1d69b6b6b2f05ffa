"""Fixtures for viewer tests: a small annotated run (three tiny slides) and a server over it."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ (for cohort.helpers)

from cohort.helpers import write_small_cohort  # noqa: E402


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """A run of the small cohort (S1, S2 of P1; S3 of P2), made once per module; returns RUN."""
    from tmln.cohort.run import run_cohort

    tmp = tmp_path_factory.mktemp("viewrun")
    csv, ann = write_small_cohort(tmp)
    out = tmp / "run"
    summary = run_cohort(csv, out, node_annotations=ann, tumour_annotations=ann, quiet=True)
    assert summary.exit_code == 0
    return out


@pytest.fixture
def run_copy(small_run, tmp_path):
    """A private copy of the small run (its slides stay where the table says) for tests that change it."""
    dst = tmp_path / "run"
    shutil.copytree(small_run, dst)
    return dst
