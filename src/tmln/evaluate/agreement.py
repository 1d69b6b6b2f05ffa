"""Patient-level agreement between a run and a reference (e.g. pathologists): metastatic-node
counts and N stage.

Counts: mean absolute error, RMSE, exact and within-one agreement, Bland-Altman bias
(mean of run - reference) with 95 % limits of agreement (bias ± 1.96 SD of the differences).
N stage: Cohen's κ with quadratic weights (scikit-learn ``cohen_kappa_score``) over the ordered
stages (AJCC 8th gastric N0 < N1 < N2 < N3a < N3b by default; any order can be given, e.g.
Camelyon17's pN0, pN0(i+), pN1mi, pN1, pN2), with a seeded percentile bootstrap CI over patients,
plus unweighted and linear κ and the confusion matrix (rows reference, columns run).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from tmln.errors import InputTableError, TmlnError
from tmln.evaluate.tables import numeric_column, read_table
from tmln.measure.staging import N_STAGES, STAGES, n_stage, stage

PATIENT_ALIASES = {
    "patient_id": ["patient", "case", "case_id", "id"],
    "n_metastatic_nodes": ["mln", "n_mln", "metastatic_nodes", "positive_nodes", "n_positive_nodes"],
    "n_stage": ["stage", "pn", "pn_stage", "n"],
}
# the node counts each staging system is derived from
STAGING_COUNTS = {
    "gastric": ("n_metastatic_nodes",),
    "colorectal": ("n_metastatic_nodes",),
    "breast": ("n_macro_nodes", "n_micro_nodes"),
    "camelyon17": ("n_macro_nodes", "n_micro_nodes"),
}


def read_staged_table(path: str | Path, staging: str, prefer: str = "stage"):
    """A patient table staged by ``staging`` (``tmln.measure.staging.STAGING_SYSTEMS``).

    The stage is derived from the node counts the system uses (``STAGING_COUNTS``; ``n_itc_nodes``
    optional) or taken from ``n_stage``: ``prefer="stage"`` (a reference) uses ``n_stage`` when the table
    has it; ``prefer="counts"`` (a run, whose ``n_stage`` may be of another system) derives it from
    the counts when the table has them. CAMELYON17's own table (``patient,stage`` with
    ``patient_000.zip`` rows and per-slide ``*.tif`` rows) is read as it is: slide rows are dropped and
    ``.zip`` removed from patient ids.
    """

    if staging not in STAGES:
        raise TmlnError(f"unknown staging system {staging!r}; expected one of {', '.join(STAGES)}")
    stages = STAGES[staging]
    t = read_table(path, ["patient_id"], aliases=PATIENT_ALIASES)
    t["patient_id"] = t["patient_id"].astype(str).str.strip()
    slide_rows = t["patient_id"].str.lower().str.endswith((".tif", ".tiff"))
    t = t[~slide_rows].copy()
    t["patient_id"] = t["patient_id"].str.replace(r"\.zip$", "", regex=True)
    dup = t["patient_id"][t["patient_id"].duplicated()]
    if len(dup):
        raise InputTableError(f"patient_id {dup.iloc[0]!r} appears more than once", path)
    needed = STAGING_COUNTS[staging]
    has_counts = all(c in t.columns for c in needed)
    for c in (*needed, "n_itc_nodes", "n_metastatic_nodes"):
        if c in t.columns:
            v = numeric_column(t, c, path)
            if (v < 0).any() or (v != np.round(v)).any():
                i = int(np.flatnonzero((v < 0) | (v != np.round(v)))[0])
                raise InputTableError(f"row {i + 1}: {c} must be a whole number >= 0", path)
            t[c] = v.astype(int)
    use_counts = has_counts and (prefer == "counts" or "n_stage" not in t.columns)
    if use_counts:
        t["n_stage"] = [stage(staging, **{c: rec[c] for c in (*needed, "n_itc_nodes") if c in t.columns})
                        for rec in t.to_dict("records")]
    elif "n_stage" in t.columns:
        t["n_stage"] = [normalise_stage(v, stages, path, i) for i, v in enumerate(t["n_stage"])]
    else:
        raise InputTableError(f"{staging} staging needs a n_stage column or the count column(s) "
                              f"{', '.join(needed)}", path)
    return t.set_index("patient_id")


def read_patient_table(path: str | Path, stages: Sequence[str] = N_STAGES):
    """CSV with ``patient_id`` and ``n_metastatic_nodes`` and/or ``n_stage``.

    A missing ``n_stage`` column is derived from the counts (AJCC 8th gastric, ``staging.n_stage``);
    stages are normalised to the spelling in ``stages`` (case-insensitive; a ``p``/``yp`` prefix is
    accepted). Returns a DataFrame indexed by ``patient_id`` (string).
    """

    t = read_table(path, ["patient_id"], aliases=PATIENT_ALIASES)
    if "n_metastatic_nodes" not in t.columns and "n_stage" not in t.columns:
        raise InputTableError("needs a n_metastatic_nodes and/or a n_stage column", path)
    t["patient_id"] = t["patient_id"].astype(str).str.strip()
    dup = t["patient_id"][t["patient_id"].duplicated()]
    if len(dup):
        raise InputTableError(f"patient_id {dup.iloc[0]!r} appears more than once", path)
    if "n_metastatic_nodes" in t.columns:
        counts = numeric_column(t, "n_metastatic_nodes", path)
        if (counts < 0).any() or (counts != np.round(counts)).any():
            i = int(np.flatnonzero((counts < 0) | (counts != np.round(counts)))[0])
            raise InputTableError(f"row {i + 1}: n_metastatic_nodes must be a whole number >= 0", path)
        t["n_metastatic_nodes"] = counts.astype(int)
    if "n_stage" in t.columns:
        t["n_stage"] = [normalise_stage(v, stages, path, i) for i, v in enumerate(t["n_stage"])]
    else:
        if tuple(stages) != tuple(N_STAGES):
            raise InputTableError("no n_stage column: stages can only be derived for the AJCC gastric N stages", path)
        t["n_stage"] = [n_stage(c) for c in t["n_metastatic_nodes"]]
    return t.set_index("patient_id")


def normalise_stage(value, stages: Sequence[str] = N_STAGES, path=None, row: int | None = None) -> str:
    text = str(value).strip()
    low = {s.lower(): s for s in stages}
    for cand in (text, text[1:] if text.lower().startswith("p") else None,
                 text[2:] if text.lower().startswith("yp") else None, "p" + text):
        if cand is not None and cand.lower() in low:
            return low[cand.lower()]
    where = f"row {row + 1}: " if row is not None else ""
    raise InputTableError(f"{where}N stage {value!r} is not one of {', '.join(stages)}", path)


def count_agreement(run_counts, reference_counts) -> dict:
    """MAE, RMSE, exact / within-one agreement and Bland-Altman bias and 95 % limits (run - reference)."""
    a = np.asarray(run_counts, dtype=float)
    b = np.asarray(reference_counts, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError("run and reference counts must be non-empty 1-D arrays of equal length")
    d = a - b
    sd = float(np.std(d, ddof=1)) if d.size > 1 else 0.0
    bias = float(d.mean())
    out = {
        "n": int(d.size), "mae": float(np.abs(d).mean()), "rmse": float(np.sqrt((d ** 2).mean())),
        "exact_agreement": float((d == 0).mean()), "within_one": float((np.abs(d) <= 1).mean()),
        "bias": bias, "sd_difference": sd, "loa_low": bias - 1.96 * sd, "loa_high": bias + 1.96 * sd,
    }
    if d.size > 2 and np.std(a) > 0 and np.std(b) > 0:
        from scipy.stats import spearmanr

        out["spearman_r"] = float(spearmanr(a, b).statistic)
    else:
        out["spearman_r"] = None
    return out


def _kappa(ref_idx, run_idx, k: int, weights):
    from sklearn.metrics import cohen_kappa_score

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # undefined kappa (one category) -> nan -> None
        value = cohen_kappa_score(ref_idx, run_idx, labels=list(range(k)), weights=weights)
    return float(value) if np.isfinite(value) else None


def _bootstrap_quadratic_kappa(ref_idx, run_idx, k: int, n_boot: int, rng) -> np.ndarray:
    """Quadratic κ of ``n_boot`` patient resamples, vectorised over replicates (same formula as
    scikit-learn: 1 - sum(W O) / sum(W E), W_ij = (i - j)^2, E from the marginals); undefined
    replicates (sum(W E) = 0) are dropped."""
    n = ref_idx.size
    w = (np.arange(k)[:, None] - np.arange(k)[None, :]) ** 2.0
    out = []
    chunk = max(1, 2_000_000 // max(n, 1))
    for start in range(0, n_boot, chunk):
        m = min(chunk, n_boot - start)
        idx = rng.integers(0, n, (m, n))
        code = (np.arange(m)[:, None] * k * k + ref_idx[idx] * k + run_idx[idx]).ravel()
        conf = np.bincount(code, minlength=m * k * k).reshape(m, k, k).astype(float)
        expected = conf.sum(axis=2)[:, :, None] * conf.sum(axis=1)[:, None, :] / n
        den = (w * expected).sum(axis=(1, 2))
        num = (w * conf).sum(axis=(1, 2))
        ok = den > 0
        out.append(1.0 - num[ok] / den[ok])
    return np.concatenate(out) if out else np.zeros(0)


def stage_agreement(run_stages, reference_stages, stages: Sequence[str] = N_STAGES, n_boot: int = 2000,
                    seed: int = 0, confidence: float = 0.95) -> dict:
    """Quadratic-weighted κ (+ bootstrap CI over patients), linear and unweighted κ, exact agreement,
    confusion matrix (rows = reference stage, columns = run stage, in ``stages`` order)."""
    order = {s: i for i, s in enumerate(stages)}
    try:
        a = np.array([order[s] for s in run_stages], dtype=int)
        b = np.array([order[s] for s in reference_stages], dtype=int)
    except KeyError as exc:
        raise ValueError(f"stage {exc.args[0]!r} not in {list(stages)}") from None
    if a.shape != b.shape or a.size == 0:
        raise ValueError("run and reference stages must be non-empty and of equal length")
    k = len(stages)
    conf = np.zeros((k, k), dtype=int)
    np.add.at(conf, (b, a), 1)
    out = {
        "n": int(a.size), "stages": list(stages),
        "kappa_quadratic": _kappa(b, a, k, "quadratic"),
        "kappa_linear": _kappa(b, a, k, "linear"),
        "kappa_unweighted": _kappa(b, a, k, None),
        "exact_agreement": float((a == b).mean()),
        "confusion_matrix": conf.tolist(),
        "confidence": confidence, "n_bootstrap": n_boot, "seed": seed,
    }
    rng = np.random.default_rng(seed)
    boots = _bootstrap_quadratic_kappa(b, a, k, n_boot, rng)
    if boots.size and out["kappa_quadratic"] is not None:
        alpha = (1 - confidence) / 2
        lo, hi = np.quantile(boots, [alpha, 1 - alpha])
        out["kappa_quadratic_ci"] = [float(lo), float(hi)]
    else:
        out["kappa_quadratic_ci"] = [None, None]
    out["n_bootstrap_used"] = int(boots.size)
    return out


def confusion_table(result: dict):
    """The confusion matrix of ``stage_agreement`` as a DataFrame (index reference, columns run)."""
    import pandas as pd

    stages = result["stages"]
    frame = pd.DataFrame(result["confusion_matrix"], index=stages, columns=stages)
    frame.index.name = "reference \\ run"
    return frame


def evaluate_agreement(run: str | Path, reference: str | Path, stages: Sequence[str] | None = N_STAGES,
                       n_boot: int = 2000, seed: int = 0, confidence: float = 0.95,
                       staging: str | None = None) -> tuple[dict, object]:
    """Agreement of a run's ``patients.csv`` with a reference table, over their common patients.

    ``staging`` (a system of ``tmln.measure.staging``) stages both tables by that system: the run from
    its node counts, the reference from its ``n_stage`` (or its counts); it overrides ``stages``.
    Returns (metrics dict, merged per-patient DataFrame). Patients present in only one table are
    listed (``only_in_run``, ``only_in_reference``) and left out of every statistic.
    """
    if staging is not None:
        stages = STAGES[staging] if staging in STAGES else None
        r = read_staged_table(run, staging, prefer="counts")
        ref = read_staged_table(reference, staging, prefer="stage")
    else:
        r = read_patient_table(run, stages)
        ref = read_patient_table(reference, stages)
    common = sorted(set(r.index) & set(ref.index))
    if not common:
        raise TmlnError(f"the run ({run}) and the reference ({reference}) share no patient_id")
    import pandas as pd

    merged = pd.DataFrame({"patient_id": common})
    out: dict = {
        "staging": staging,
        "n_patients": len(common),
        "only_in_run": sorted(set(r.index) - set(ref.index)),
        "only_in_reference": sorted(set(ref.index) - set(r.index)),
    }
    if "n_metastatic_nodes" in r.columns and "n_metastatic_nodes" in ref.columns:
        merged["n_metastatic_nodes_run"] = r.loc[common, "n_metastatic_nodes"].to_numpy()
        merged["n_metastatic_nodes_reference"] = ref.loc[common, "n_metastatic_nodes"].to_numpy()
        merged["n_metastatic_nodes_difference"] = merged["n_metastatic_nodes_run"] - merged["n_metastatic_nodes_reference"]
        out["counts"] = count_agreement(merged["n_metastatic_nodes_run"], merged["n_metastatic_nodes_reference"])
    else:
        out["counts"] = None
    merged["n_stage_run"] = r.loc[common, "n_stage"].to_numpy()
    merged["n_stage_reference"] = ref.loc[common, "n_stage"].to_numpy()
    out["n_stage"] = stage_agreement(merged["n_stage_run"], merged["n_stage_reference"], stages, n_boot, seed, confidence)
    return out, merged
