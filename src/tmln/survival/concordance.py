"""Discrimination of a risk score: Harrell's C, Uno's C, time-dependent AUC, bootstrap CIs.

Sign convention: every function takes a *risk score* — higher = higher hazard = shorter
survival (a Cox linear predictor, or T/MLN itself). A score that orders patients perfectly by
shortening survival has C = 1; 0.5 is chance; C < 0.5 means the score runs the other way.
(lifelines' ``concordance_index`` expects the opposite — predicted survival times — which is why
scikit-survival's functions, that take risk scores, are used here.)

* Harrell: ``sksurv.metrics.concordance_index_censored`` (ties in risk count 1/2).
* Uno: ``sksurv.metrics.concordance_index_ipcw`` with the censoring distribution estimated on the
  cohort itself, truncated at ``tau`` (default: the last time at which >= 10 % of patients are
  still at risk, so that the censoring weights stay bounded).
* Time-dependent cumulative/dynamic AUC at horizons: ``sksurv.metrics.cumulative_dynamic_auc``.
* CIs: percentile bootstrap over patients (the score is held fixed), seeded.
"""

from __future__ import annotations

import numpy as np


def _surv(time, event):
    from sksurv.util import Surv

    return Surv.from_arrays(event=np.asarray(event, dtype=bool), time=np.asarray(time, dtype=float))


def default_tau(time, min_at_risk: float = 0.1) -> float:
    """Last observed time at which at least ``min_at_risk`` of the patients are still at risk."""
    t = np.sort(np.asarray(time, dtype=float))
    k = max(int(np.ceil(min_at_risk * len(t))), 1)
    return float(t[len(t) - k])


def harrell_c(time, event, risk) -> float:
    """Harrell's C of ``risk`` (higher = shorter survival)."""
    from sksurv.metrics import concordance_index_censored

    return float(concordance_index_censored(np.asarray(event, dtype=bool), np.asarray(time, dtype=float),
                                            np.asarray(risk, dtype=float))[0])


def uno_c(time, event, risk, tau: float | None = None) -> float:
    """Uno's IPCW C of ``risk`` up to ``tau`` (censoring distribution from the same cohort)."""
    from sksurv.metrics import concordance_index_ipcw

    y = _surv(time, event)
    tau = default_tau(time) if tau is None else tau
    return float(concordance_index_ipcw(y, y, np.asarray(risk, dtype=float), tau=tau)[0])


def time_dependent_auc(time, event, risk, horizons) -> dict:
    """Cumulative/dynamic AUC at each horizon inside the follow-up; others reported as skipped."""
    from sksurv.metrics import cumulative_dynamic_auc

    time = np.asarray(time, dtype=float)
    event = np.asarray(event, dtype=int)
    lo = time[event == 1].min() if (event == 1).any() else np.inf
    hi = time.max()
    usable = [float(h) for h in horizons if lo <= h < hi]
    skipped = [float(h) for h in horizons if not (lo <= h < hi)]
    out = {"horizons": usable, "auc": [], "mean_auc": None, "skipped_horizons": skipped}
    if usable:
        y = _surv(time, event)
        auc, mean_auc = cumulative_dynamic_auc(y, y, np.asarray(risk, dtype=float), np.asarray(usable))
        out["auc"] = [float(a) for a in np.atleast_1d(auc)]
        out["mean_auc"] = float(mean_auc)
    return out


def bootstrap_ci(statistic, n: int, bootstrap: int, seed: int = 0, level: float = 0.95):
    """Percentile CI of ``statistic(idx)`` over ``bootstrap`` resamples of ``range(n)``.

    Resamples where the statistic fails (e.g. no events or no comparable pairs) are skipped.
    Returns ``(low, high, used)``; ``(None, None, used)`` with fewer than 2 successful resamples.
    """
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(int(bootstrap)):
        idx = rng.integers(0, n, n)
        try:
            v = statistic(idx)
        except (ValueError, ZeroDivisionError):
            continue
        if v is not None and np.isfinite(v):
            values.append(v)
    if len(values) < 2:
        return None, None, len(values)
    a = (1 - level) / 2
    return float(np.quantile(values, a)), float(np.quantile(values, 1 - a)), len(values)


def discrimination(time, event, risk, horizons=(), bootstrap: int = 200, seed: int = 0,
                   tau: float | None = None) -> dict:
    """Harrell's and Uno's C with bootstrap CIs, plus time-dependent AUC at ``horizons``."""
    time = np.asarray(time, dtype=float)
    event = np.asarray(event, dtype=int)
    risk = np.asarray(risk, dtype=float)
    tau = default_tau(time) if tau is None else float(tau)
    h = harrell_c(time, event, risk)
    u = uno_c(time, event, risk, tau)
    h_lo, h_hi, h_n = bootstrap_ci(lambda i: harrell_c(time[i], event[i], risk[i]), len(time), bootstrap, seed)
    u_lo, u_hi, u_n = bootstrap_ci(lambda i: uno_c(time[i], event[i], risk[i], tau), len(time), bootstrap, seed)
    out = {"harrell": h, "harrell_ci": [h_lo, h_hi], "uno": u, "uno_ci": [u_lo, u_hi], "tau": tau,
           "bootstrap": int(bootstrap), "bootstrap_used": [h_n, u_n],
           "sign": "risk score: higher = shorter survival; 1 = perfect, 0.5 = chance"}
    if len(horizons):
        out["time_dependent_auc"] = time_dependent_auc(time, event, risk, horizons)
    return out
