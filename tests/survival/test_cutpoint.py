"""Cut-point search checked against an independent log-rank computation on GBSG2, and the corrections."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from tmln.survival import cutpoint as cp


def direct_logrank_z(time, event, high):
    """Textbook two-sample log-rank Z (high group), one event time at a time."""
    o = e = v = 0.0
    for t in np.unique(time[event == 1]):
        at_risk = time >= t
        n = at_risk.sum()
        n1 = (at_risk & high).sum()
        d = ((time == t) & (event == 1)).sum()
        d1 = ((time == t) & (event == 1) & high).sum()
        o += d1
        e += d * n1 / n
        if n > 1:
            v += d * (n1 / n) * (1 - n1 / n) * (n - d) / (n - 1)
    return (o - e) / math.sqrt(v)


def test_gbsg2_scan_equals_independent_logrank(gbsg2):
    from sksurv.compare import compare_survival
    from sksurv.util import Surv

    t = gbsg2["time"].to_numpy(float)
    e = gbsg2["cens"].to_numpy(int)
    x = gbsg2["pnodes"].to_numpy(float)
    res = cp.maxstat(t, e, x)
    # candidate cuts: distinct values with 10-90 % of patients at or below, written out directly
    expected_cuts = [c for c in np.unique(x)[:-1] if 0.1 <= np.mean(x <= c) <= 0.9]
    assert list(res.scan["cut"]) == expected_cuts
    y = Surv.from_arrays(event=e.astype(bool), time=t)
    direct = []
    for c, z in zip(res.scan["cut"], res.scan["z"]):
        zd = direct_logrank_z(t, e, x > c)
        chi2, _ = compare_survival(y, (x > c).astype(int))
        assert z == pytest.approx(zd, rel=1e-10)
        assert z ** 2 == pytest.approx(chi2, rel=1e-8)
        direct.append(abs(zd))
    best = int(np.argmax(direct))
    assert res.value == expected_cuts[best]
    assert res.statistic == pytest.approx(direct[best], rel=1e-10)
    assert res.n_high == int((x > res.value).sum())
    assert res.p_value_unadjusted == pytest.approx(2 * stats.norm.sf(direct[best]))
    # GBSG2: the cut lies in the 3-10 positive-node region and the association is strong
    assert 3 <= res.value <= 10 and res.p_value_adjusted < 1e-8


def test_lausen_schumacher_1992_known_value():
    # b = 3, eps = 0.1/0.9: phi(3) (3 - 1/3) log(81) + 4 phi(3) / 3
    phi3 = 0.0044318484119380075
    expected = phi3 * (3 - 1 / 3) * math.log(81) + 4 * phi3 / 3
    assert expected == pytest.approx(0.057844, abs=1e-6)
    assert cp.lausen_schumacher_1992(3.0, 0.1, 0.9) == pytest.approx(expected, rel=1e-12)
    # narrower range -> fewer looks -> smaller correction
    assert cp.lausen_schumacher_1992(3.0, 0.2, 0.8) < expected
    assert cp.lausen_schumacher_1992(0.5) == 1.0  # below the valid range: no evidence
    ps = [cp.lausen_schumacher_1992(b) for b in np.linspace(0.2, 6, 60)]
    assert all(a >= b for a, b in zip(ps, ps[1:]))  # monotone in the statistic
    b = cp.critical_value(0.05)
    assert cp.lausen_schumacher_1992(b) == pytest.approx(0.05, rel=1e-8)
    assert 2.9 < b < 3.2  # well above the naive 1.96


def test_lausen_1994_formula():
    n, m = 100, np.array([20, 40, 60])
    b = 2.5
    t = np.sqrt(1 - m[:-1] * (n - m[1:]) / ((n - m[:-1]) * m[1:]))
    d = np.sum(np.exp(-b * b / 2) / np.pi * (t - (b * b / 4 - 1) * t ** 3 / 6))
    expected = 1 - (stats.norm.cdf(b) - stats.norm.cdf(-b)) + d
    assert cp.lausen_schumacher_1994(b, n, m) == pytest.approx(expected, rel=1e-12)
    # one cut: no selection, the plain two-sided p
    assert cp.lausen_schumacher_1994(b, n, [50]) == pytest.approx(2 * stats.norm.sf(b))


def test_corrected_p_larger_than_naive(gbsg2):
    rng = np.random.default_rng(3)
    noise = rng.normal(size=len(gbsg2))
    res = cp.maxstat(gbsg2["time"], gbsg2["cens"], noise)
    assert res.n_candidates > 400
    assert res.p_value_adjusted > res.p_value_unadjusted
    assert res.p_value_lausen94 > res.p_value_unadjusted


def test_permutation_p_seeded_and_bounded(gbsg2):
    t, e = gbsg2["time"].to_numpy(), gbsg2["cens"].to_numpy()
    strong = cp.maxstat(t, e, gbsg2["pnodes"], permutations=19, seed=1)
    assert strong.p_value_permutation == pytest.approx(1 / 20)  # nothing beats the real statistic
    noise = np.random.default_rng(11).normal(size=len(t))
    a = cp.maxstat(t, e, noise, permutations=30, seed=5)
    assert a.p_value_adjusted > 0.05
    b = cp.maxstat(t, e, noise, permutations=30, seed=5)
    assert a.p_value_permutation == b.p_value_permutation
    assert a.p_value_permutation > 0.05  # noise is not significant


def test_too_few_patients():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="too few patients"):
        cp.maxstat(rng.exponential(size=10), np.ones(10), rng.normal(size=10))


def test_no_candidate_cut():
    # 95 % of the patients share one value: no cut leaves 10-90 % below
    x = np.r_[np.zeros(95), np.arange(1, 6)]
    with pytest.raises(ValueError, match="no marker value splits"):
        cp.maxstat(np.arange(1, 101, dtype=float), np.ones(100), x)


def test_fixed_cut_unadjusted(gbsg2):
    t, e, x = gbsg2["time"].to_numpy(float), gbsg2["cens"].to_numpy(int), gbsg2["pnodes"].to_numpy(float)
    res = cp.fixed_cut(t, e, x, 3.0, "fixed")
    assert res.statistic == pytest.approx(abs(direct_logrank_z(t, e, x > 3)), rel=1e-10)
    assert res.p_value_adjusted == res.p_value_unadjusted
    with pytest.raises(ValueError, match="one group"):
        cp.fixed_cut(t, e, x, 1000.0, "fixed")
