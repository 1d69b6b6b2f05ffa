"""Cut-point for a continuous marker: maximally selected log-rank statistic and its corrected p-value.

Candidate cuts ``c`` are the distinct marker values for which the fraction of patients with
``marker <= c`` lies in ``[min_prop, max_prop]`` (default 10–90 %). For each cut the patients split
into *low* (``marker <= c``) and *high* (``marker > c``) and the standardised two-sample log-rank
statistic ``Z_c = (O_high - E_high) / sqrt(V)`` is computed (hypergeometric variance, as lifelines'
``logrank_test``; ``Z_c² `` equals its chi-square). The selected cut maximises ``|Z_c|``
(the smallest such cut on ties). ``statistic`` is that maximum ``M = max |Z_c|``.

Selecting the best of many cuts makes the naive p-value of ``Z`` far too small. Corrections:

* Lausen & Schumacher (1992, Biometrics 48:73–85), from Miller & Siegmund (1982):
  ``P(M > b) ≈ φ(b)(b - 1/b) log(ε₂(1-ε₁) / ((1-ε₂)ε₁)) + 4 φ(b)/b`` with ε₁, ε₂ = min/max
  proportion; clipped to [0, 1]. The approximation is for large ``b``: below the point where it
  peaks (≈ 1.1 for 10–90 %; there is no evidence of association there) 1 is returned. This is
  ``p_value_adjusted``.
* Lausen, Sauerbrei & Schumacher (1994) improved Bonferroni-type bound using the actual cuts
  (better for discrete markers): ``1 - (Φ(b) - Φ(-b)) + Σ_j (1/π) e^{-b²/2} (t_j - (b²/4 - 1) t_j³/6)``,
  ``t_j = sqrt(1 - m_j (N - m_{j+1}) / ((N - m_j) m_{j+1}))``, ``m_j`` = size of the low group at cut j.
* Permutation (exact up to Monte Carlo error): the marker is permuted ``B`` times (seeded), the
  whole scan is redone, ``p = (1 + #{M* >= M}) / (B + 1)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

MIN_PATIENTS = 20


@dataclass
class CutpointResult:
    value: float
    statistic: float
    p_value_adjusted: float
    method: str
    p_value_unadjusted: float
    p_value_lausen94: float | None = None
    p_value_permutation: float | None = None
    permutations: int = 0
    min_prop: float = 0.1
    max_prop: float = 0.9
    n_candidates: int = 1
    n_low: int = 0
    n_high: int = 0
    scan: pd.DataFrame | None = None

    def as_dict(self) -> dict:
        return {
            "value": self.value, "statistic": self.statistic, "chi2": self.statistic ** 2,
            "p_value_adjusted": self.p_value_adjusted, "method": self.method,
            "p_value_unadjusted": self.p_value_unadjusted, "p_value_lausen94": self.p_value_lausen94,
            "p_value_permutation": self.p_value_permutation, "permutations": self.permutations,
            "min_prop": self.min_prop, "max_prop": self.max_prop, "n_candidates": self.n_candidates,
            "n_low": self.n_low, "n_high": self.n_high,
            "rule": "high = marker > value; low = marker <= value",
        }


def candidate_cuts(marker, min_prop: float = 0.1, max_prop: float = 0.9) -> np.ndarray:
    """Distinct marker values ``c`` with ``mean(marker <= c)`` in ``[min_prop, max_prop]`` (excl. the maximum)."""
    x = np.asarray(marker, dtype=float)
    values = np.unique(x)[:-1]
    frac = np.searchsorted(np.sort(x), values, side="right") / len(x)
    return values[(frac >= min_prop - 1e-12) & (frac <= max_prop + 1e-12)]


def logrank_z_scan(time, event, marker, cuts) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Standardised log-rank ``Z`` (high vs low) at every cut, vectorised over cuts.

    Returns ``(z, observed_minus_expected, variance)``; each of length ``len(cuts)``.
    """
    time = np.asarray(time, dtype=float)
    event = np.asarray(event, dtype=float)
    marker = np.asarray(marker, dtype=float)
    cuts = np.asarray(cuts, dtype=float)
    order = np.argsort(time, kind="stable")
    t = time[order]
    e = event[order]
    high = (marker[order][:, None] > cuts[None, :]).astype(float)  # n × C
    uniq, first = np.unique(t, return_index=True)
    last = np.r_[first[1:], len(t)]  # one past the last index of each distinct time
    is_event_time = np.add.reduceat(e, first) > 0
    first, last = first[is_event_time], last[is_event_time]
    n_total = len(t)
    # at risk at a time = all patients from its first index on
    n = (n_total - first).astype(float)
    cum_high = np.vstack([np.zeros((1, high.shape[1])), np.cumsum(high, axis=0)])
    n_high = cum_high[-1][None, :] - cum_high[first]
    cum_e = np.r_[0.0, np.cumsum(e)]
    d = cum_e[last] - cum_e[first]
    cum_eh = np.vstack([np.zeros((1, high.shape[1])), np.cumsum(high * e[:, None], axis=0)])
    d_high = cum_eh[last] - cum_eh[first]
    frac = n_high / n[:, None]
    o_minus_e = (d_high - d[:, None] * frac).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        tie = np.where(n > 1, (n - d) / np.maximum(n - 1, 1), 0.0)
    var = (d[:, None] * tie[:, None] * frac * (1 - frac)).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.where(var > 0, o_minus_e / np.sqrt(var), 0.0)
    return z, o_minus_e, var


def lausen_schumacher_1992(b: float, min_prop: float = 0.1, max_prop: float = 0.9) -> float:
    """Approximate ``P(max |Z| > b)`` under no association (Lausen & Schumacher 1992), clipped to [0, 1]."""
    b = float(b)
    if b <= _ls92_peak(min_prop, max_prop):
        return 1.0
    return float(min(1.0, max(0.0, _ls92(b, min_prop, max_prop))))


def _ls92(b: float, min_prop: float, max_prop: float) -> float:
    phi = stats.norm.pdf(b)
    return phi * (b - 1 / b) * np.log(max_prop * (1 - min_prop) / ((1 - max_prop) * min_prop)) + 4 * phi / b


def _ls92_peak(min_prop: float, max_prop: float) -> float:
    """Where the approximation peaks (≈ 1.1 for 10–90 %); below it (M small, no evidence) it is invalid."""
    from scipy.optimize import minimize_scalar

    return float(minimize_scalar(lambda b: -_ls92(b, min_prop, max_prop), bounds=(0.3, 3.0), method="bounded").x)


def lausen_schumacher_1994(b: float, n: int, low_sizes) -> float:
    """Improved approximation using the low-group sizes ``m_j`` of the candidate cuts, clipped to [0, 1]."""
    b = float(b)
    m = np.asarray(sorted(low_sizes), dtype=float)
    p = 1 - (stats.norm.cdf(b) - stats.norm.cdf(-b))
    if len(m) > 1:
        m1, m2 = m[:-1], m[1:]
        t = np.sqrt(1 - m1 * (n - m2) / ((n - m1) * m2))
        p += float(np.sum(np.exp(-b * b / 2) / np.pi * (t - (b * b / 4 - 1) * t ** 3 / 6)))
    return float(min(1.0, max(0.0, p)))


def _scan_table(time, event, marker, cuts, z, ome, var) -> pd.DataFrame:
    marker = np.asarray(marker, dtype=float)
    event = np.asarray(event, dtype=int)
    low = marker[:, None] <= cuts[None, :]
    return pd.DataFrame({
        "cut": cuts,
        "n_low": low.sum(axis=0),
        "n_high": (~low).sum(axis=0),
        "fraction_low": low.mean(axis=0),
        "events_low": (low * event[:, None]).sum(axis=0),
        "events_high": ((~low) * event[:, None]).sum(axis=0),
        "observed_minus_expected_high": ome,
        "variance": var,
        "z": z,
        "chi2": z ** 2,
        "p_value_unadjusted": 2 * stats.norm.sf(np.abs(z)),
    })


def maxstat(time, event, marker, min_prop: float = 0.1, max_prop: float = 0.9,
            permutations: int = 0, seed: int = 0) -> CutpointResult:
    """Maximally selected log-rank statistic over the ``[min_prop, max_prop]`` quantile range.

    Raises ``ValueError`` (with a user-facing message) when there are too few patients or no
    candidate cut inside the range.
    """
    time = np.asarray(time, dtype=float)
    event = np.asarray(event, dtype=int)
    marker = np.asarray(marker, dtype=float)
    n = len(time)
    if n < MIN_PATIENTS:
        raise ValueError(f"too few patients for a cut-point search: {n} < {MIN_PATIENTS}; "
                         "use a fixed cut-point (a value, or 'median')")
    cuts = candidate_cuts(marker, min_prop, max_prop)
    if len(cuts) == 0:
        raise ValueError(f"no marker value splits the cohort with {min_prop:.0%}–{max_prop:.0%} of patients "
                         "in the low group (too few distinct values); use a fixed cut-point")
    z, ome, var = logrank_z_scan(time, event, marker, cuts)
    best = int(np.argmax(np.abs(z)))
    m_stat = float(abs(z[best]))
    scan = _scan_table(time, event, marker, cuts, z, ome, var)
    res = CutpointResult(
        value=float(cuts[best]), statistic=m_stat,
        p_value_adjusted=lausen_schumacher_1992(m_stat, min_prop, max_prop),
        method="maxstat", p_value_unadjusted=float(2 * stats.norm.sf(m_stat)),
        p_value_lausen94=lausen_schumacher_1994(m_stat, n, scan["n_low"].to_numpy()),
        min_prop=min_prop, max_prop=max_prop, n_candidates=len(cuts),
        n_low=int(scan["n_low"].iloc[best]), n_high=int(scan["n_high"].iloc[best]), scan=scan)
    if permutations > 0:
        res.p_value_permutation = permutation_p_value(time, event, marker, m_stat, permutations, seed,
                                                      min_prop, max_prop)
        res.permutations = int(permutations)
    return res


def permutation_p_value(time, event, marker, observed: float, permutations: int, seed: int = 0,
                        min_prop: float = 0.1, max_prop: float = 0.9) -> float:
    """``(1 + #{M* >= M}) / (B + 1)`` over ``B`` seeded permutations of the marker."""
    rng = np.random.default_rng(seed)
    marker = np.asarray(marker, dtype=float)
    cuts = candidate_cuts(marker, min_prop, max_prop)  # permutation keeps the marker's values
    hits = 0
    for _ in range(int(permutations)):
        z, _, _ = logrank_z_scan(time, event, rng.permutation(marker), cuts)
        hits += float(np.max(np.abs(z))) >= observed - 1e-12
    return (1 + hits) / (permutations + 1)


def fixed_cut(time, event, marker, value: float, method: str) -> CutpointResult:
    """A pre-specified cut (``method`` "median" or "fixed"): no selection, so no correction needed."""
    marker = np.asarray(marker, dtype=float)
    low = marker <= value
    if low.all() or not low.any():
        raise ValueError(f"cut-point {value:g} puts every patient in one group "
                         f"(marker range {marker.min():g}–{marker.max():g})")
    cuts = np.array([float(value)])
    z, ome, var = logrank_z_scan(time, event, marker, cuts)
    p = float(2 * stats.norm.sf(abs(z[0])))
    return CutpointResult(value=float(value), statistic=float(abs(z[0])), p_value_adjusted=p, method=method,
                          p_value_unadjusted=p, n_candidates=1, n_low=int(low.sum()), n_high=int((~low).sum()),
                          scan=_scan_table(time, event, marker, cuts, z, ome, var))


def critical_value(alpha: float = 0.05, min_prop: float = 0.1, max_prop: float = 0.9) -> float:
    """``b`` with ``lausen_schumacher_1992(b) = alpha`` (the corrected 5 % threshold for max |Z|)."""
    from scipy.optimize import brentq

    return float(brentq(lambda b: lausen_schumacher_1992(b, min_prop, max_prop) - alpha, 1.5, 10.0))
