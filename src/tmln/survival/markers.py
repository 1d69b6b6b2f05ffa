"""Node-based markers side by side (``tmln survival --markers t_mln,n_stage,lymph_node_ratio,lodds``).

All markers are compared on the **same patients**: the complete cases of every listed marker (and of
the reference, N stage by default), so their C-indices differ only by the marker.

Per marker:

* discrimination of the marker itself as a risk score (higher = shorter survival): Harrell's and
  Uno's C with percentile-bootstrap 95 % CIs (``tmln.survival.concordance``). A categorical marker
  (``n_stage``, any text column) is scored by its level's rank (N0 = 0, N1 = 1, ...; stage order of
  the staging system, otherwise sorted);
* univariable Cox: a continuous marker per SD of its values (HR, 95 % CI, Wald p); a categorical
  one by its levels against the first, with the likelihood-ratio p of the whole variable;
* for each continuous marker, when the reference column is present: the nested comparison
  reference vs reference + marker (likelihood-ratio test, 1 df, and the gain in Harrell's C with a
  bootstrap CI: ``tmln.survival.cox.nested_comparison``) and the marker's HR per SD adjusted for
  the reference.

Outputs (through ``run_survival``): ``marker_comparison.csv``, ``survival.json`` ``marker_comparison``,
``forest_markers.png/svg`` (HR per SD of every continuous marker, unadjusted and adjusted for the
reference) and a table in ``survival.html``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from tmln.errors import InputTableError
from tmln.survival import concordance, cox
from tmln.survival.table import SurvivalTable, read_survival_table

COMPARISON_COLUMNS = [
    "marker", "kind", "n", "events", "harrell", "harrell_ci_low", "harrell_ci_high", "uno", "uno_ci_low",
    "uno_ci_high", "sd", "hr_per_sd", "hr_ci_low", "hr_ci_high", "hr_p_value", "reference", "hr_adjusted_per_sd",
    "hr_adjusted_ci_low", "hr_adjusted_ci_high", "hr_adjusted_p_value", "nested_lr_statistic", "nested_p_value",
    "c_reference", "c_reference_plus_marker", "delta_c", "delta_c_ci_low", "delta_c_ci_high",
]


def _numeric(frame: pd.DataFrame, col: str) -> bool:
    blank = frame[col].astype(str).str.strip().isin(["", "NA", "NaN", "nan", "None", "null", "N/A"])
    return bool(pd.to_numeric(frame[col][~blank], errors="coerce").notna().all()) and bool((~blank).any())


def read_marker_table(table, time: str, event: str, markers, reference: str | None = "n_stage", *,
                      on_missing: str = "exclude", source: str | None = None) -> SurvivalTable:
    """One complete-case table holding every marker (and the reference when the table has it)."""
    from pathlib import Path

    markers = [m for m in dict.fromkeys(markers) if m]
    if len(markers) < 1:
        raise InputTableError("--markers lists no column")
    if isinstance(table, pd.DataFrame):
        frame = table.copy()
        source = source or "<table>"
    else:
        source = str(table)
        if not Path(table).is_file():
            raise InputTableError("file not found", source)
        frame = pd.read_csv(table, dtype=str, keep_default_na=False, skipinitialspace=True)
    missing = [m for m in markers if m not in frame.columns]
    if missing:
        raise InputTableError(f"marker column(s) {missing} not in the table (it has {list(frame.columns)})", source)
    numeric = [m for m in markers if _numeric(frame, m) and m != "n_stage"]
    if not numeric:
        raise InputTableError(f"--markers {','.join(markers)}: at least one marker must be numeric", source)
    extra = [reference] if reference and reference in frame.columns and reference not in markers else []
    others = [m for m in markers if m != numeric[0]] + extra
    return read_survival_table(frame, time, event, numeric[0], tuple(others), on_missing=on_missing, source=source)


def _as_marker(tab: SurvivalTable, marker: str, covariates=()) -> SurvivalTable:
    return dataclasses.replace(tab, marker=marker, covariates=tuple(covariates))


def compare_markers(tab: SurvivalTable, markers, reference: str | None = "n_stage", *, bootstrap: int = 200,
                    seed: int = 0) -> tuple[pd.DataFrame, list[dict]]:
    """The comparison table (``COMPARISON_COLUMNS``, one row per marker) and forest-plot rows."""
    t, e = tab.times, tab.event_flags
    columns = set(tab.frame.columns)
    ref = reference if reference and reference in columns else None
    rows, forest = [], []
    for m in dict.fromkeys(markers):
        row = {c: None for c in COMPARISON_COLUMNS}
        row.update(marker=m, n=tab.n, events=tab.events, reference=ref)
        if m in tab.categorical:
            levels = tab.categorical[m]
            score = tab.frame[m].astype(str).map({lv: i for i, lv in enumerate(levels)}).to_numpy(dtype=float)
            row["kind"] = "ordinal (" + " < ".join(levels) + ")"
            uni = cox.univariable(_as_marker(tab, tab.marker, [m]), [m], (0.0, 1.0))
            row["hr_p_value"] = float(uni["variable_p_value"].iloc[0])
        else:
            score = tab.frame[m].to_numpy(dtype=float)
            sd = float(np.std(score, ddof=1))
            if not sd > 0:
                raise InputTableError(f"marker {m!r} is constant among the {tab.n} analysed patients", tab.source)
            row.update(kind="continuous", sd=sd)
            tm = _as_marker(tab, m)
            scale = (float(score.mean()), sd)
            uni = cox.univariable(tm, [m], scale).iloc[0]
            row.update(hr_per_sd=uni["hr"], hr_ci_low=uni["ci_low"], hr_ci_high=uni["ci_high"], hr_p_value=uni["p_value"])
            forest.append({"label": f"{m} (per SD = {sd:.3g})", "hr": uni["hr"], "ci_low": uni["ci_low"],
                           "ci_high": uni["ci_high"], "p_value": uni["p_value"]})
            if ref is not None and ref != m:
                tr = _as_marker(tab, m, [ref])
                multi, _ = cox.multivariable(tr, [ref, m], scale)
                adj = multi[multi["term"] == m].iloc[0]
                nested = cox.nested_comparison(tr, [ref], scale, bootstrap=bootstrap, seed=seed)
                row.update(hr_adjusted_per_sd=adj["hr"], hr_adjusted_ci_low=adj["ci_low"],
                           hr_adjusted_ci_high=adj["ci_high"], hr_adjusted_p_value=adj["p_value"],
                           nested_lr_statistic=nested["lr_statistic"], nested_p_value=nested["p_value"],
                           c_reference=nested["c_covariates"], c_reference_plus_marker=nested["c_full"],
                           delta_c=nested["delta_c"], delta_c_ci_low=nested["delta_c_ci"][0],
                           delta_c_ci_high=nested["delta_c_ci"][1])
                forest.append({"label": f"{m}, adjusted for {ref}", "hr": adj["hr"], "ci_low": adj["ci_low"],
                               "ci_high": adj["ci_high"], "p_value": adj["p_value"]})
        d = concordance.discrimination(t, e, score, (), bootstrap, seed)
        row.update(harrell=d["harrell"], harrell_ci_low=d["harrell_ci"][0], harrell_ci_high=d["harrell_ci"][1],
                   uno=d["uno"], uno_ci_low=d["uno_ci"][0], uno_ci_high=d["uno_ci"][1])
        rows.append(row)
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS), forest
