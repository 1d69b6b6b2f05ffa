"""KM, log-rank and trend test against scikit-survival and a direct computation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from tmln.survival import kaplan_meier as km


def test_km_matches_sksurv(gbsg2):
    from sksurv.nonparametric import kaplan_meier_estimator

    t, e = gbsg2["time"].to_numpy(float), gbsg2["cens"].to_numpy(int)
    groups = np.where(gbsg2["horTh"] == "yes", "yes", "no")
    fits = km.kaplan_meier(t, e, groups, ["no", "yes"])
    for fit in fits:
        sel = groups == fit.name
        times, surv = kaplan_meier_estimator(e[sel].astype(bool), t[sel])
        ours = np.array([km.survival_at(fit, s)[0] for s in times])
        assert np.allclose(ours, surv, atol=1e-12)
        assert fit.n == sel.sum() and fit.events == e[sel].sum()
        lo, s, hi = fit.curve["ci_low"], fit.curve["survival"], fit.curve["ci_high"]
        assert ((lo <= s + 1e-12) & (s <= hi + 1e-12)).all()


def test_median_survival():
    t = np.array([1, 2, 3, 4, 5], dtype=float)
    fit = km.kaplan_meier(t, np.ones(5))[0]
    assert fit.median == 3.0  # S falls from 0.6 to 0.4 at t = 3


def test_logrank_matches_sksurv_k_groups(gbsg2):
    from sksurv.compare import compare_survival
    from sksurv.util import Surv

    t, e = gbsg2["time"].to_numpy(float), gbsg2["cens"].to_numpy(int)
    grade = gbsg2["tgrade"].to_numpy()
    res = km.logrank(t, e, grade, ["I", "II", "III"], trend=True)
    chi2, p = compare_survival(Surv.from_arrays(event=e.astype(bool), time=t), grade)
    assert res.statistic == pytest.approx(chi2, rel=1e-8)
    assert res.p_value == pytest.approx(p, rel=1e-6)
    assert res.df == 2
    assert sum(res.observed.values()) == e.sum()


def direct_trend(t, e, groups, order):
    """Log-rank test for trend, scores 1..k: (sum_t sum_g w_g (d_g - d n_g/n))^2 / sum_t var_t."""
    w = {g: i + 1 for i, g in enumerate(order)}
    wi = np.array([w[g] for g in groups], dtype=float)
    u = v = 0.0
    for s in np.unique(t[e == 1]):
        r = t >= s
        dead = (t == s) & (e == 1)
        n, d = r.sum(), dead.sum()
        mean_w = wi[r].mean()
        u += wi[dead].sum() - d * mean_w
        if n > 1:
            v += d * (n - d) / (n - 1) * (np.mean(wi[r] ** 2) - mean_w ** 2)
    return u * u / v


def test_trend_test_direct(gbsg2):
    t, e = gbsg2["time"].to_numpy(float), gbsg2["cens"].to_numpy(int)
    grade = gbsg2["tgrade"].to_numpy()
    res = km.logrank(t, e, grade, ["I", "II", "III"], trend=True)
    expected = direct_trend(t, e, grade, ["I", "II", "III"])
    assert res.trend_statistic == pytest.approx(expected, rel=1e-10)
    assert res.trend_p_value == pytest.approx(stats.chi2.sf(expected, 1))
    # reversing the order gives the same chi-square (sign of U flips)
    rev = km.logrank(t, e, grade, ["III", "II", "I"], trend=True)
    assert rev.trend_statistic == pytest.approx(res.trend_statistic, rel=1e-10)


def test_trend_more_powerful_for_ordered_effect():
    rng = np.random.default_rng(4)
    groups = rng.choice(["N0", "N1", "N2", "N3"], 200)
    hazard = np.exp(0.25 * np.array([["N0", "N1", "N2", "N3"].index(g) for g in groups]))
    t = rng.exponential(1 / hazard)
    res = km.logrank(t, np.ones(200, dtype=int), groups, ["N0", "N1", "N2", "N3"], trend=True)
    assert res.trend_p_value < res.p_value


def test_numbers_at_risk():
    t = np.array([1, 2, 3, 4, 5, 6], dtype=float)
    g = np.array(["a", "a", "a", "b", "b", "b"])
    table = km.numbers_at_risk(t, g, ["a", "b"], [0, 2, 4.5])
    assert table.loc["a"].tolist() == [3, 2, 0]
    assert table.loc["b"].tolist() == [3, 3, 2]


def test_km_summary_horizons(gbsg2):
    fits = km.kaplan_meier(gbsg2["time"], gbsg2["cens"])
    summary = km.km_summary(fits, horizons=(365, 1825))
    s365 = summary.at[0, "survival_at_365"]
    assert 0 < summary.at[0, "survival_at_1825"] < s365 < 1
    assert summary.at[0, "survival_at_365_ci_low"] < s365 < summary.at[0, "survival_at_365_ci_high"]
