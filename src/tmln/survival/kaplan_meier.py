"""Kaplan–Meier curves by group, numbers at risk, log-rank test and log-rank test for trend.

Times are in the unit of the input table's time column. KM estimates and their 95 % CIs
(exponential Greenwood, lifelines' default) come from ``lifelines.KaplanMeierFitter``; the
k-group log-rank test from ``lifelines.statistics.multivariate_logrank_test``. The trend test
for ordered groups (e.g. N0 < N1 < N2 < N3a < N3b), which lifelines lacks, is computed here from
the log-rank observed-minus-expected vector U and its hypergeometric covariance V:
``chi2 = (w·U)² / (wᵀ V w)`` with 1 degree of freedom and scores ``w`` = 1, 2, ..., k.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats


@dataclass
class LogRankResult:
    """k-group log-rank: chi-square ``statistic`` on ``df`` degrees of freedom."""

    statistic: float
    p_value: float
    df: int
    observed: dict
    expected: dict
    trend_statistic: float | None = None
    trend_p_value: float | None = None

    def as_dict(self) -> dict:
        out = {"statistic": self.statistic, "p_value": self.p_value, "df": self.df,
               "observed": self.observed, "expected": self.expected}
        if self.trend_statistic is not None:
            out.update(trend_statistic=self.trend_statistic, trend_p_value=self.trend_p_value)
        return out


def logrank_components(time, event, groups, order) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Observed O, expected E (length k) and the covariance V (k×k) of O - E for groups in ``order``.

    Hypergeometric (tie-corrected) variance: at each event time with n at risk and d events,
    ``V_gh = d (n - d) / (n - 1) · (n_g/n) (δ_gh - n_h/n)``.
    """
    time = np.asarray(time, dtype=float)
    event = np.asarray(event, dtype=int)
    groups = np.asarray(groups)
    k = len(order)
    member = np.stack([groups == g for g in order], axis=1).astype(float)  # n × k
    event_times = np.unique(time[event == 1])
    obs = np.zeros(k)
    exp = np.zeros(k)
    cov = np.zeros((k, k))
    for t in event_times:
        at_risk = time >= t
        n_g = member[at_risk].sum(axis=0)
        n = n_g.sum()
        died = at_risk & (time == t) & (event == 1)
        d_g = member[died].sum(axis=0)
        d = d_g.sum()
        frac = n_g / n
        obs += d_g
        exp += d * frac
        if n > 1:
            cov += d * (n - d) / (n - 1) * (np.diag(frac) - np.outer(frac, frac))
    return obs, exp, cov, event_times


def logrank(time, event, groups, order=None, trend: bool = False, scores=None) -> LogRankResult:
    """Log-rank test of equal survival across ``groups`` (lifelines); optional trend test (here).

    ``order`` fixes the group order (and thus the trend direction); default sorted labels.
    ``scores`` are the trend-test weights (default 1..k).
    """
    from lifelines.statistics import multivariate_logrank_test

    time = np.asarray(time, dtype=float)
    event = np.asarray(event, dtype=int)
    groups = np.asarray(groups).astype(str)
    order = [str(g) for g in (order if order is not None else sorted(set(groups)))]
    order = [g for g in order if (groups == g).any()]
    if len(order) < 2:
        raise ValueError("log-rank needs at least two non-empty groups")
    res = multivariate_logrank_test(time, groups, event)
    obs, exp, cov, _ = logrank_components(time, event, groups, order)
    out = LogRankResult(statistic=float(res.test_statistic), p_value=float(res.p_value), df=len(order) - 1,
                        observed={g: float(o) for g, o in zip(order, obs)},
                        expected={g: float(e) for g, e in zip(order, exp)})
    if trend and len(order) > 2:
        w = np.arange(1, len(order) + 1, dtype=float) if scores is None else np.asarray(scores, dtype=float)
        u = float(w @ (obs - exp))
        var = float(w @ cov @ w)
        out.trend_statistic = u * u / var
        out.trend_p_value = float(stats.chi2.sf(out.trend_statistic, 1))
    return out


@dataclass
class KMGroup:
    """One group's Kaplan–Meier fit (``curve``: time, survival, ci_low, ci_high, at_risk, events, censored)."""

    name: str
    n: int
    events: int
    curve: pd.DataFrame
    median: float | None
    median_ci: tuple[float | None, float | None]


def _finite(x) -> float | None:
    x = float(x)
    return x if np.isfinite(x) else None


def kaplan_meier(time, event, groups=None, order=None, alpha: float = 0.05) -> list[KMGroup]:
    """Kaplan–Meier estimate per group (all patients as one group "all" when ``groups`` is None)."""
    from lifelines import KaplanMeierFitter
    from lifelines.utils import median_survival_times

    time = np.asarray(time, dtype=float)
    event = np.asarray(event, dtype=int)
    groups = np.full(len(time), "all") if groups is None else np.asarray(groups).astype(str)
    order = [str(g) for g in (order if order is not None else sorted(set(groups)))]
    out = []
    for g in order:
        sel = groups == g
        if not sel.any():
            continue
        kmf = KaplanMeierFitter(alpha=alpha).fit(time[sel], event[sel], label=g)
        sf = kmf.survival_function_[g]
        ci = kmf.confidence_interval_survival_function_
        table = kmf.event_table
        curve = pd.DataFrame({
            "time": sf.index.to_numpy(dtype=float),
            "survival": sf.to_numpy(),
            "ci_low": ci.iloc[:, 0].to_numpy(),
            "ci_high": ci.iloc[:, 1].to_numpy(),
            "at_risk": table["at_risk"].reindex(sf.index).to_numpy(),
            "events": table["observed"].reindex(sf.index).to_numpy(),
            "censored": table["censored"].reindex(sf.index).to_numpy(),
        })
        med_ci = median_survival_times(kmf.confidence_interval_)
        out.append(KMGroup(name=g, n=int(sel.sum()), events=int(event[sel].sum()), curve=curve,
                           median=_finite(kmf.median_survival_time_),
                           median_ci=(_finite(med_ci.iloc[0, 0]), _finite(med_ci.iloc[0, 1]))))
    return out


def survival_at(group: KMGroup, t: float) -> tuple[float, float, float]:
    """KM survival and its 95 % CI at time ``t`` (step function, right-continuous)."""
    curve = group.curve
    idx = np.searchsorted(curve["time"].to_numpy(), t, side="right") - 1
    if idx < 0:
        return 1.0, 1.0, 1.0
    row = curve.iloc[idx]
    return float(row["survival"]), float(row["ci_low"]), float(row["ci_high"])


def numbers_at_risk(time, groups, order, times) -> pd.DataFrame:
    """Patients still at risk (time >= t) per group at each of ``times``: one row per group."""
    time = np.asarray(time, dtype=float)
    groups = np.asarray(groups).astype(str)
    rows = []
    for g in order:
        tg = time[groups == str(g)]
        rows.append([int((tg >= t).sum()) for t in times])
    return pd.DataFrame(rows, index=[str(g) for g in order], columns=list(times))


def km_summary(groups_fit: list[KMGroup], horizons=()) -> pd.DataFrame:
    """One row per group: n, events, median survival (95 % CI; NaN if not reached) and survival at each horizon."""
    rows = []
    for g in groups_fit:
        nan = float("nan")
        row = {"group": g.name, "n": g.n, "events": g.events,
               "median_survival": nan if g.median is None else g.median,
               "median_ci_low": nan if g.median_ci[0] is None else g.median_ci[0],
               "median_ci_high": nan if g.median_ci[1] is None else g.median_ci[1]}
        for h in horizons:
            s, lo, hi = survival_at(g, h)
            key = f"{h:g}"
            row[f"survival_at_{key}"] = s
            row[f"survival_at_{key}_ci_low"] = lo
            row[f"survival_at_{key}_ci_high"] = hi
        rows.append(row)
    return pd.DataFrame(rows)
