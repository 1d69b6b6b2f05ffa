"""Cox models checked against an independent Efron partial likelihood maximised in the test."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import optimize, stats

from tmln.survival import cox
from tmln.survival.table import read_survival_table


def efron_loglik(beta, x, time, event):
    """Efron log partial likelihood, written out directly from its definition.

    For each distinct event time t with d deaths D and risk set R:
    sum_D eta - sum_{k=0}^{d-1} log(sum_R e^eta - k/d sum_D e^eta).
    """
    eta = x @ beta
    r = np.exp(eta)
    times = np.unique(time[event == 1])
    at_risk = time[None, :] >= times[:, None]
    dead = (time[None, :] == times[:, None]) & (event[None, :] == 1)
    d = dead.sum(axis=1)
    risk = at_risk @ r
    tied = dead @ r
    k = np.concatenate([np.arange(n) / n for n in d])
    rep = np.repeat(np.arange(len(times)), d)
    return eta[event == 1].sum() - np.log(risk[rep] - k * tied[rep]).sum()


def independent_cox(x, time, event):
    """MLE by BFGS and standard errors from a central-difference Hessian of the log-likelihood."""
    x = np.asarray(x, dtype=float)
    f = lambda b: -efron_loglik(b, x, time, event)  # noqa: E731
    fit = optimize.minimize(f, np.zeros(x.shape[1]), method="BFGS", options={"gtol": 1e-9})
    beta = fit.x
    k = len(beta)
    h = 1e-4
    hess = np.zeros((k, k))
    for i in range(k):
        for j in range(k):
            ei, ej = np.eye(k)[i] * h, np.eye(k)[j] * h
            hess[i, j] = (f(beta + ei + ej) - f(beta + ei - ej) - f(beta - ei + ej) + f(beta - ei - ej)) / (4 * h * h)
    se = np.sqrt(np.diag(np.linalg.inv(hess)))
    return beta, se, -fit.fun


@pytest.fixture(scope="module")
def gbsg_table(gbsg2):
    return read_survival_table(gbsg2, "time", "cens", "pnodes", ("age", "tgrade"))


def test_gbsg2_univariable_marker_per_sd(gbsg2, gbsg_table):
    t, e = gbsg2["time"].to_numpy(float), gbsg2["cens"].to_numpy(int)
    x = gbsg2["pnodes"].to_numpy(float)
    z = (x - x.mean()) / x.std(ddof=1)
    beta, se, _ = independent_cox(z[:, None], t, e)
    rows = cox.univariable(gbsg_table, ["pnodes"]).set_index("term")
    assert rows.at["pnodes", "coef"] == pytest.approx(beta[0], abs=1e-5)
    assert rows.at["pnodes", "se"] == pytest.approx(se[0], rel=1e-3)
    assert rows.at["pnodes", "hr"] == pytest.approx(np.exp(beta[0]), rel=1e-5)
    assert rows.at["pnodes", "ci_low"] == pytest.approx(np.exp(beta[0] - 1.959964 * se[0]), rel=1e-3)
    assert rows.at["pnodes", "ci_high"] == pytest.approx(np.exp(beta[0] + 1.959964 * se[0]), rel=1e-3)
    assert rows.at["pnodes", "p_value"] == pytest.approx(2 * stats.norm.sf(abs(beta[0] / se[0])), rel=1e-2)
    assert rows.at["pnodes", "contrast"].startswith("per SD")


def test_gbsg2_per_sd_is_per_unit_times_sd(gbsg2):
    from sksurv.linear_model import CoxPHSurvivalAnalysis
    from sksurv.util import Surv

    tab = read_survival_table(gbsg2, "time", "cens", "pnodes")
    sd = gbsg2["pnodes"].std(ddof=1)
    per_sd = cox.univariable(tab, ["pnodes"]).set_index("term").at["pnodes", "coef"]
    y = Surv.from_arrays(event=gbsg2["cens"].astype(bool), time=gbsg2["time"].astype(float))
    sk = CoxPHSurvivalAnalysis(ties="efron").fit(gbsg2[["pnodes"]].astype(float), y)
    assert per_sd == pytest.approx(sk.coef_[0] * sd, rel=1e-5)


def test_gbsg2_multivariable_with_categorical(gbsg2, gbsg_table):
    t, e = gbsg2["time"].to_numpy(float), gbsg2["cens"].to_numpy(int)
    x = gbsg2["pnodes"].to_numpy(float)
    design = np.column_stack([
        gbsg2["age"].to_numpy(float),
        (gbsg2["tgrade"] == "II").to_numpy(float),
        (gbsg2["tgrade"] == "III").to_numpy(float),
        (x - x.mean()) / x.std(ddof=1),
    ])
    beta, se, ll_full = independent_cox(design, t, e)
    rows, model = cox.multivariable(gbsg_table, ["age", "tgrade", "pnodes"])
    rows = rows.set_index("term")
    assert list(rows.index) == ["age", "tgrade=II", "tgrade=III", "pnodes"]
    assert rows.at["tgrade=III", "contrast"] == "III vs I"
    assert np.allclose(rows["coef"].to_numpy(), beta, atol=1e-4)
    assert np.allclose(rows["se"].to_numpy(), se, rtol=2e-3)
    assert model.log_likelihood == pytest.approx(ll_full, rel=1e-7)
    # whole-variable LR p for tgrade: drop both indicators
    _, _, ll_reduced = independent_cox(design[:, [0, 3]], t, e)
    p = stats.chi2.sf(2 * (ll_full - ll_reduced), 2)
    assert rows.at["tgrade=II", "variable_p_value"] == pytest.approx(p, rel=1e-3)


def test_nested_lr_matches_independent(gbsg2, gbsg_table):
    t, e = gbsg2["time"].to_numpy(float), gbsg2["cens"].to_numpy(int)
    base = np.column_stack([gbsg2["age"].to_numpy(float), (gbsg2["tgrade"] == "II").to_numpy(float),
                            (gbsg2["tgrade"] == "III").to_numpy(float)])
    x = gbsg2["pnodes"].to_numpy(float)
    _, _, ll0 = independent_cox(base, t, e)
    _, _, ll1 = independent_cox(np.column_stack([base, (x - x.mean()) / x.std(ddof=1)]), t, e)
    res = cox.nested_comparison(gbsg_table, ["age", "tgrade"], bootstrap=4, seed=1)
    assert res["lr_statistic"] == pytest.approx(2 * (ll1 - ll0), rel=1e-5)
    assert res["p_value"] == pytest.approx(stats.chi2.sf(2 * (ll1 - ll0), 1), rel=1e-3)
    assert res["delta_c"] == pytest.approx(res["c_full"] - res["c_covariates"])
    assert res["delta_c"] > 0  # pnodes adds information beyond age and grade
    lo, hi = res["delta_c_ci"]
    assert lo <= hi and res["bootstrap"] == 4
    again = cox.nested_comparison(gbsg_table, ["age", "tgrade"], bootstrap=4, seed=1)
    assert again["delta_c_ci"] == res["delta_c_ci"]


def test_nested_without_covariates_uses_null_model(gbsg2):
    tab = read_survival_table(gbsg2, "time", "cens", "pnodes")
    x = gbsg2["pnodes"].to_numpy(float)
    t, e = gbsg2["time"].to_numpy(float), gbsg2["cens"].to_numpy(int)
    ll0 = efron_loglik(np.zeros(1), np.zeros((len(x), 1)), t, e)
    _, _, ll1 = independent_cox(((x - x.mean()) / x.std(ddof=1))[:, None], t, e)
    res = cox.nested_comparison(tab, [], bootstrap=0)
    assert res["lr_statistic"] == pytest.approx(2 * (ll1 - ll0), rel=1e-5)
    assert res["c_covariates"] == 0.5


def test_proportional_hazards_table(gbsg_table):
    _, model = cox.multivariable(gbsg_table, ["age", "tgrade", "pnodes"])
    ph = cox.proportional_hazards(model)
    assert list(ph["term"]) == ["age", "pnodes", "tgrade=II", "tgrade=III"] or set(ph["term"]) == set(model.columns)
    assert ((ph["p_value"] >= 0) & (ph["p_value"] <= 1)).all()
    assert (ph["violated"] == (ph["p_value"] < 0.05)).all()


def test_constant_column_rejected():
    x = pd.DataFrame({"a": np.ones(20)})
    with pytest.raises(cox.CoxFitError, match="constant"):
        cox.fit_cox(x, np.arange(1, 21), np.ones(20))
