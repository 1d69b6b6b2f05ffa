"""Fixtures for the survival tests: the GBSG2 cohort (lifelines) and small simulated cohorts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

STAGES = ["N0", "N1", "N2", "N3a", "N3b"]


@pytest.fixture(scope="session")
def gbsg2() -> pd.DataFrame:
    """German Breast Cancer Study Group 2 (686 patients; time in days, cens = 1 event, pnodes)."""
    from lifelines.datasets import load_gbsg2

    return load_gbsg2()


def simulate_cohort(n: int = 120, seed: int = 0, log_hr: float = 0.7, censor_max: float = 120.0) -> pd.DataFrame:
    """Exponential survival in months: hazard ∝ exp(log_hr · z(t_mln) + 0.3 · stage index)."""
    rng = np.random.default_rng(seed)
    stage = rng.choice(STAGES, n)
    x = rng.gamma(2.0, 0.1, n)
    lp = log_hr * (x - x.mean()) / x.std() + 0.3 * np.array([STAGES.index(s) for s in stage])
    t = rng.exponential(60 * np.exp(-lp))
    c = rng.uniform(20, censor_max, n)
    return pd.DataFrame({
        "patient_id": [f"P{i:03d}" for i in range(n)],
        "os_months": np.round(np.minimum(t, c), 2),
        "death": (t <= c).astype(int),
        "t_mln": np.round(x, 5),
        "n_stage": stage,
        "age": np.round(rng.normal(62, 9, n)),
    })


@pytest.fixture()
def sim_table() -> pd.DataFrame:
    return simulate_cohort()


@pytest.fixture()
def simulate():
    """The simulator itself, for tests that need several cohorts."""
    return simulate_cohort


@pytest.fixture()
def sim_csv(tmp_path, sim_table):
    path = tmp_path / "patients.csv"
    sim_table.to_csv(path, index=False)
    return path
