"""C-index sign conventions and values against a brute-force pair count; Uno; time-dependent AUC."""

from __future__ import annotations

import numpy as np
import pytest

from tmln.survival import concordance as cc


def brute_harrell(t, e, risk):
    num = den = 0.0
    for i in range(len(t)):
        if not e[i]:
            continue
        for j in range(len(t)):
            # comparable: j outlived i, or j was censored at the time i died
            if t[j] > t[i] or (t[j] == t[i] and not e[j]):
                den += 1
                num += 1.0 if risk[i] > risk[j] else 0.5 if risk[i] == risk[j] else 0.0
    return num / den


def test_sign_convention_perfect_risk():
    rng = np.random.default_rng(0)
    t = rng.exponential(10, 50)
    e = rng.random(50) < 0.7
    assert cc.harrell_c(t, e, -t) == pytest.approx(1.0)  # higher risk = shorter survival
    assert cc.harrell_c(t, e, t) == pytest.approx(0.0)
    assert cc.uno_c(t, e, -t) == pytest.approx(1.0)
    assert cc.harrell_c(t, e, np.zeros(50)) == pytest.approx(0.5)


def test_harrell_brute_force():
    rng = np.random.default_rng(1)
    t = np.round(rng.exponential(10, 60), 1)
    e = rng.random(60) < 0.6
    risk = np.round(rng.normal(size=60) - 0.05 * t, 1)  # ties in risk and in time
    assert cc.harrell_c(t, e, risk) == pytest.approx(brute_harrell(t, e, risk), rel=1e-12)


def test_uno_equals_harrell_without_censoring():
    rng = np.random.default_rng(2)
    t = rng.exponential(10, 80)
    risk = rng.normal(size=80) - 0.1 * t
    e = np.ones(80, dtype=bool)
    assert cc.uno_c(t, e, risk, tau=t.max() + 1) == pytest.approx(cc.harrell_c(t, e, risk), rel=1e-10)


def test_discrimination_bootstrap_seeded(gbsg2):
    t, e, x = gbsg2["time"], gbsg2["cens"], gbsg2["pnodes"]
    a = cc.discrimination(t, e, x, horizons=(365, 1825, 99999), bootstrap=15, seed=3)
    b = cc.discrimination(t, e, x, horizons=(365, 1825, 99999), bootstrap=15, seed=3)
    assert a == b
    assert a["harrell_ci"][0] < a["harrell"] < a["harrell_ci"][1]
    assert a["uno_ci"][0] < a["uno"] < a["uno_ci"][1]
    assert 0.6 < a["harrell"] < 0.7  # more positive nodes, shorter survival
    tda = a["time_dependent_auc"]
    assert tda["horizons"] == [365.0, 1825.0] and tda["skipped_horizons"] == [99999.0]
    assert all(0.5 < v < 0.9 for v in tda["auc"])


def test_default_tau_keeps_ten_percent_at_risk():
    t = np.arange(1, 101, dtype=float)
    tau = cc.default_tau(t)
    assert np.mean(t >= tau) == pytest.approx(0.10)


def test_bootstrap_ci_skips_failures():
    calls = iter(range(100))

    def stat(idx):
        if next(calls) % 2:
            raise ValueError("no comparable pairs")
        return float(idx.mean())

    lo, hi, used = cc.bootstrap_ci(stat, 10, 20, seed=0)
    assert used == 10 and lo <= hi
