"""``run_survival``: the whole prognostic analysis of a marker (T/MLN) against covariates (N stage ...).

Training cohort: validated table -> cut-point (maxstat with Lausen–Schumacher and optional
permutation p; or the median; or a fixed value) -> KM + log-rank for the marker groups and for
each categorical covariate (with a trend test) -> Cox univariable/multivariable (marker per SD),
PH check -> discrimination (Harrell, Uno, time-dependent AUC) of the marker and of the Cox models
-> nested LR test and C gain. A validation cohort gets the training cut-point and the training
marker scale unchanged, the same tests, and the training models' risk scores evaluated on it.

Everything is computed before anything is written; outputs are then written file by file through
``tmln.atomic`` (never a partial file).
"""

from __future__ import annotations

import math
import warnings as warnings_module
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from tmln import __version__, atomic
from tmln.errors import InputTableError
from tmln.survival import concordance, cox, plots
from tmln.survival import cutpoint as cp
from tmln.survival import kaplan_meier as km
from tmln.survival.followup import join_followup, patients_path
from tmln.survival.markers import compare_markers, read_marker_table
from tmln.survival.report import survival_html
from tmln.survival.table import SurvivalTable, design_matrix, read_survival_table

CUTPOINT_METHODS = ("maxstat", "median")


def _clean(obj):
    """JSON-safe copy: numpy scalars -> Python, NaN/inf -> None, tuples -> lists."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(float(obj)) else None
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    return obj


def _concat(frames: list[pd.DataFrame], first: list[str]) -> pd.DataFrame:
    """Stack tables (all-NaN columns allowed) with the ``first`` columns leading."""
    with warnings_module.catch_warnings():
        warnings_module.simplefilter("ignore", FutureWarning)
        out = pd.concat(frames, ignore_index=True)
    return out[first + [c for c in out.columns if c not in first]]


def _group_labels(marker: str, value: float) -> tuple[str, str]:
    return f"{marker} ≤ {value:.4g}", f"{marker} > {value:.4g}"


def _time_label(time: str, time_unit: str | None) -> str:
    return f"Time ({time_unit})" if time_unit else f"Time ({time}, units of the input table)"


def _choose_cut(tab: SurvivalTable, method, permutations: int, seed: int, min_prop: float,
                max_prop: float) -> cp.CutpointResult:
    t, e, x = tab.times, tab.event_flags, tab.marker_values
    try:
        if method == "maxstat":
            return cp.maxstat(t, e, x, min_prop, max_prop, permutations=permutations, seed=seed)
        if method == "median":
            return cp.fixed_cut(t, e, x, float(np.median(x)), "median")
        return cp.fixed_cut(t, e, x, float(method), "fixed")
    except ValueError as err:
        raise InputTableError(f"cut-point for {tab.marker!r}: {err}", tab.source) from None


@dataclass(frozen=True)
class _Columns:
    """Which columns of a patients table are analysed, and how (``read_survival_table``'s options)."""

    time: str
    event: str
    marker: str
    covariates: tuple[str, ...]
    categorical: tuple[str, ...]
    on_missing: str

    def read(self, table, levels: dict[str, list[str]] | None = None, source: str | None = None) -> SurvivalTable:
        return read_survival_table(table, self.time, self.event, self.marker, self.covariates,
                                   on_missing=self.on_missing, categorical=self.categorical, levels=levels,
                                   source=source)


@dataclass(frozen=True)
class _Fixed:
    """What the training cohort fixes for every cohort analysed: the cut-point and the marker scale,
    with the run's settings (horizons, bootstrap resamples, seed, time-axis label)."""

    cut_value: float
    scale: tuple[float, float]
    horizons: tuple[float, ...]
    bootstrap: int
    seed: int
    time_label: str


@dataclass
class _CohortOut:
    """One cohort's statistics as they are collected: the JSON part, tables and (undrawn) figures."""

    cohort: str  # training | validation
    warnings: list[str]
    json: dict = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    figures: dict = field(default_factory=dict)

    @property
    def title(self) -> str:
        return f"{self.cohort.capitalize()} cohort"


def _cohort(tab: SurvivalTable, fixed: _Fixed, cohort: str, train_models: dict | None,
            warnings: list) -> tuple[dict, dict, dict, dict]:
    """All per-cohort statistics. Returns (json part, tables, figures, Cox models by name).

    Figures are returned undrawn (name -> zero-argument callable giving ``{"png", "svg"}`` bytes).
    """
    out = _CohortOut(cohort, warnings, {"n": tab.n, "events": tab.events, "excluded": tab.exclusion_summary()})
    if tab.events < 10:
        warnings.append(f"{cohort}: only {tab.events} events; Cox estimates and CIs are unreliable")
    km_rows, curves = _marker_groups(tab, fixed, out)
    _covariate_groups(tab, fixed, out, km_rows, curves)
    out.tables["km_groups"] = _concat(km_rows, ["analysis", "group"])
    out.tables["km_curves"] = _concat(curves, ["analysis", "group"])
    out.json["km"] = out.tables["km_groups"].to_dict("records")
    multi_model = _cox_models(tab, fixed, out)
    models = _discrimination(tab, fixed, out, train_models, multi_model)
    return out.json, out.tables, out.figures, models


def _marker_groups(tab: SurvivalTable, fixed: _Fixed, out: _CohortOut) -> tuple[list, list]:
    """Marker groups (low / high of the cut-point): KM, log-rank and HR high vs low.

    Returns the KM summary rows and curves (the covariates' follow).
    """
    t, e, x = tab.times, tab.event_flags, tab.marker_values
    low, high = _group_labels(tab.marker, fixed.cut_value)
    groups = np.where(x > fixed.cut_value, high, low)
    order = [g for g in (low, high) if (groups == g).any()]
    fits = km.kaplan_meier(t, e, groups, order)
    km_rows = [km.km_summary(fits, fixed.horizons).assign(analysis=tab.marker)]
    curves = [pd.concat([f.curve.assign(group=f.name) for f in fits]).assign(analysis=tab.marker)]
    group_part = {"low": low, "high": high, "n_low": int((groups == low).sum()), "n_high": int((groups == high).sum())}
    if len(order) == 2:
        lr = km.logrank(t, e, groups, order)
        out.json["logrank"] = lr.as_dict()
        hr = cox.fit_cox(pd.DataFrame({"high": (groups == high).astype(float)}), t, e).terms.iloc[0]
        group_part.update(hr_high_vs_low=hr["hr"], ci_low=hr["ci_low"], ci_high=hr["ci_high"], p_value=hr["p_value"])
        annotation = f"Log-rank {plots.format_p(lr.p_value)}\nHR {hr['hr']:.2f} ({hr['ci_low']:.2f}–{hr['ci_high']:.2f})"
    else:
        out.json["logrank"] = {"statistic": None, "p_value": None, "df": 0}
        out.warnings.append(f"{out.cohort}: the cut-point {fixed.cut_value:g} leaves one group empty; no log-rank test")
        annotation = ""
    out.json["groups"] = group_part
    out.figures[f"km_{tab.marker}"] = partial(plots.km_figure, fits, fixed.time_label, annotation,
                                              title=f"{out.title}: {tab.marker} groups")
    return km_rows, curves


def _covariate_groups(tab: SurvivalTable, fixed: _Fixed, out: _CohortOut, km_rows: list, curves: list) -> None:
    """Each categorical covariate: KM (appended to ``km_rows`` / ``curves``), log-rank and trend test."""
    t, e = tab.times, tab.event_flags
    out.json["logrank_covariates"] = {}
    for var, levels in tab.categorical.items():
        vals = tab.frame[var].astype(str).to_numpy()
        present = [lv for lv in levels if (vals == lv).any()]
        fits_v = km.kaplan_meier(t, e, vals, present)
        km_rows.append(km.km_summary(fits_v, fixed.horizons).assign(analysis=var))
        curves.append(pd.concat([f.curve.assign(group=f.name) for f in fits_v]).assign(analysis=var))
        if len(present) >= 2:
            lr_v = km.logrank(t, e, vals, present, trend=True)
            out.json["logrank_covariates"][var] = lr_v.as_dict()
            text = f"Log-rank {plots.format_p(lr_v.p_value)}"
            if lr_v.trend_p_value is not None:
                text += f"\nTrend {plots.format_p(lr_v.trend_p_value)}"
            out.figures[f"km_{var}"] = partial(plots.km_figure, fits_v, fixed.time_label, text, title=f"{out.title}: {var}")


def _cox_models(tab: SurvivalTable, fixed: _Fixed, out: _CohortOut):
    """Univariable and multivariable Cox (marker per SD), the PH check and the forest plots; returns
    the multivariable model."""
    variables = list(tab.covariates) + [tab.marker]
    try:
        uni = cox.univariable(tab, variables, fixed.scale)
        multi, multi_model = cox.multivariable(tab, variables, fixed.scale)
    except cox.CoxFitError as err:
        raise InputTableError(f"{out.cohort} cohort: {err}", tab.source) from None
    out.json["cox_univariable"] = cox.terms_dict(uni)
    out.json["cox_multivariable"] = cox.terms_dict(multi)
    try:
        ph = cox.proportional_hazards(multi_model)
        out.json["proportional_hazards"] = {r["term"]: {k: r[k] for k in ("statistic", "p_value", "violated")}
                                            for r in ph.to_dict("records")}
        bad = [r["term"] for r in ph.to_dict("records") if r["violated"]]
        if bad:
            out.warnings.append(f"{out.cohort}: proportional-hazards assumption questionable (Schoenfeld p < 0.05) for {bad}")
        out.tables["proportional_hazards"] = ph
    except Exception as err:  # noqa: BLE001 - the PH test is a diagnostic; report, don't fail
        out.warnings.append(f"{out.cohort}: proportional-hazards test failed: {err}")
    out.tables["cox_univariable"] = uni
    out.tables["cox_multivariable"] = multi

    def label(row):
        return f"{row['variable']}: {row['contrast']}" if row["variable"] in tab.categorical else \
            f"{row['term']} ({row['contrast']})"

    out.figures["forest_multivariable"] = partial(plots.forest_figure,
        [dict(r, label=label(r)) for r in multi.to_dict("records")], title=f"{out.title}: multivariable Cox")
    out.figures["forest_univariable"] = partial(plots.forest_figure,
        [dict(r, label=label(r)) for r in uni.to_dict("records")], title=f"{out.title}: univariable Cox")
    return multi_model


def _discrimination(tab: SurvivalTable, fixed: _Fixed, out: _CohortOut, train_models: dict | None,
                    multi_model) -> dict:
    """C-index of the marker itself and of the Cox models' risk scores (this cohort's fits, or the
    training cohort's ``train_models`` unchanged), the nested test; returns the models by name."""
    t, e, x = tab.times, tab.event_flags, tab.marker_values
    horizons, bootstrap, seed = fixed.horizons, fixed.bootstrap, fixed.seed
    out.json["c_index"] = dict(concordance.discrimination(t, e, x, horizons, bootstrap, seed), risk_score=tab.marker)
    variables = list(tab.covariates) + [tab.marker]
    x_full = design_matrix(tab, variables, fixed.scale)
    models = train_models or {}
    if train_models is None:
        models["covariates+marker"] = multi_model
        if tab.covariates:
            base_cols = [c for c in x_full.columns if c != tab.marker]
            models["covariates"] = cox.fit_cox(x_full[base_cols], t, e)
    disc_models = {}
    for name, model in models.items():
        missing_cols = [c for c in model.columns if c not in x_full.columns]
        xm = x_full.reindex(columns=model.columns, fill_value=0.0) if missing_cols else x_full
        disc_models[name] = dict(concordance.discrimination(t, e, model.linear_predictor(xm), horizons, bootstrap, seed),
                                 model=("training-cohort" if train_models is not None else "this-cohort") + " Cox fit",
                                 terms=model.columns)
    out.json["c_index_models"] = disc_models
    try:
        out.json["nested"] = cox.nested_comparison(tab, tab.covariates, fixed.scale, bootstrap=bootstrap, seed=seed)
    except cox.CoxFitError as err:
        raise InputTableError(f"{out.cohort} cohort: {err}", tab.source) from None
    out.tables["discrimination"] = _discrimination_table(tab.marker, out.json["c_index"], disc_models)
    return models


def _discrimination_table(marker: str, c_index: dict, disc_models: dict) -> pd.DataFrame:
    """``discrimination.csv``: one row per risk score (the marker, then ``cox:<model>``)."""
    rows = [{"score": marker, **{k: c_index[k] for k in ("harrell", "uno", "tau")},
             "harrell_ci_low": c_index["harrell_ci"][0], "harrell_ci_high": c_index["harrell_ci"][1],
             "uno_ci_low": c_index["uno_ci"][0], "uno_ci_high": c_index["uno_ci"][1]}]
    for name, d in disc_models.items():
        rows.append({"score": f"cox:{name}", "harrell": d["harrell"], "uno": d["uno"], "tau": d["tau"],
                     "harrell_ci_low": d["harrell_ci"][0], "harrell_ci_high": d["harrell_ci"][1],
                     "uno_ci_low": d["uno_ci"][0], "uno_ci_high": d["uno_ci"][1]})
    return pd.DataFrame(rows)


def run_survival(  # public API mirroring `tmln survival`'s options, one keyword each
    table,
    time: str,
    event: str,
    marker: str = "t_mln",
    covariates=(),
    cutpoint="maxstat",
    validation=None,
    horizons=(),
    out_dir=None,
    seed: int = 0,
    permutations: int = 0,
    *,
    bootstrap: int = 200,
    time_unit: str | None = None,
    on_missing: str = "exclude",
    categorical=(),
    min_prop: float = 0.1,
    max_prop: float = 0.9,
    draw_figures: bool = True,
    markers=(),
    reference: str | None = "n_stage",
    followup=None,
) -> dict:
    """Run the prognostic analysis; return the ``survival.json`` dict (and write outputs to ``out_dir``).

    ``table``/``validation``: CSV path or DataFrame, one row per patient. ``cutpoint``: "maxstat",
    "median" or a number (marker units). ``horizons``: times (units of ``time``) for survival
    estimates and time-dependent AUC. ``bootstrap``: resamples for every CI (0 = none).
    ``permutations``: permutation p-value of the maxstat cut (0 = none). ``seed`` seeds both.
    ``draw_figures=False`` skips drawing the figures (faster; tables, JSON and HTML still written).
    ``markers``: columns compared side by side on the same patients (``tmln.survival.markers``), each
    continuous one also over ``reference`` (N stage) by a nested test. ``followup``: a CSV joined to
    ``table`` (a run directory or patients CSV) by ``patient_id`` first (``tmln.survival.followup``).
    Raises :class:`InputTableError` for bad input (see ``tmln.survival.table``).
    """
    cutpoint = _parse_cutpoint(cutpoint)
    horizons = tuple(float(h) for h in horizons)
    if any(h <= 0 for h in horizons):
        raise InputTableError(f"horizons must be positive times, got {list(horizons)}")
    warnings: list[str] = []
    columns = _Columns(time, event, marker, tuple(covariates), tuple(categorical), on_missing)
    table, join, source = _training_table(table, followup, warnings)
    tab = columns.read(table, source=source)
    scale = cox.marker_scale(tab)
    cut = _choose_cut(tab, cutpoint, permutations, seed, min_prop, max_prop)
    fixed = _Fixed(cut.value, scale, horizons, bootstrap, seed, _time_label(time, time_unit))
    train, tables, figures, models = _cohort(tab, fixed, "training", None, warnings)
    result = _training_result(tab, columns, cut, fixed, train, time_unit)
    if cut.scan is not None:
        tables["cutpoint_scan"] = cut.scan
    if cut.method == "maxstat":
        figures["cutpoint_scan"] = partial(plots.scan_figure, cut.scan, marker, cut.value,
                                           cp.critical_value(0.05, min_prop, max_prop))
    result["followup_join"] = join
    if join is not None:  # the analysed table itself: excluded rows and error rows refer to it
        tables["patients_followup"] = table
    result["marker_comparison"] = None
    if markers:
        result["marker_comparison"] = _compare_markers(table, columns, list(markers), reference, source, fixed,
                                                       tables, figures)
    result["validation"] = None
    if validation is not None:
        result["validation"] = _validation(validation, columns, tab, fixed, models, warnings, tables, figures)
    result["warnings"] = warnings
    result = _clean(result)
    figures = {name: draw() for name, draw in figures.items()} if draw_figures else {}
    if out_dir is not None:
        result["outputs"] = write_outputs(out_dir, result, tables, figures, tab)
    return result


def _parse_cutpoint(cutpoint):
    """``maxstat``, ``median`` or a number (a numeric string becomes a float)."""
    if not (isinstance(cutpoint, (int, float)) or cutpoint in CUTPOINT_METHODS):
        try:
            cutpoint = float(cutpoint)
        except (TypeError, ValueError):
            raise InputTableError(f"--cutpoint must be 'maxstat', 'median' or a number, not {cutpoint!r}") from None
    return cutpoint


def _training_table(table, followup, warnings: list[str]):
    """(table to analyse, follow-up join report or None, source label or None): ``table`` joined with
    ``followup`` by patient_id (unmatched ids warned about), or a run directory's patients table."""
    if followup is not None:
        table, join = join_followup(table, followup)
        source = f"{join['patients']} joined with {join['followup']}"
        for side, ids in (("the patients table", join["only_in_patients"]), ("the follow-up", join["only_in_followup"])):
            if ids:
                warnings.append(f"{len(ids)} patient_id(s) only in {side}, not analysed: "
                                + ", ".join(ids[:20]) + (" ..." if len(ids) > 20 else ""))
        return table, join, source
    if not isinstance(table, pd.DataFrame) and Path(table).is_dir():
        table = patients_path(table)
    return table, None, None


def _training_result(tab: SurvivalTable, columns: _Columns, cut: cp.CutpointResult, fixed: _Fixed, train: dict,
                     time_unit: str | None) -> dict:
    """The head of ``survival.json``: the run's settings, the cut-point and the training cohort's statistics."""
    return {
        "tmln_version": __version__, "n": tab.n, "events": tab.events, "marker": columns.marker,
        "time": columns.time, "event": columns.event, "time_unit": time_unit, "covariates": list(tab.covariates),
        "categorical": tab.categorical, "horizons": list(fixed.horizons), "seed": fixed.seed,
        "bootstrap": fixed.bootstrap,
        "marker_scale": {"mean": fixed.scale[0], "sd": fixed.scale[1], "hr_unit": "per SD of the training cohort"},
        "cutpoint": {**cut.as_dict(), "hr_high_vs_low": train["groups"].get("hr_high_vs_low"),
                     "ci_low": train["groups"].get("ci_low"), "ci_high": train["groups"].get("ci_high")},
        **{k: v for k, v in train.items() if k not in ("n", "events")},
        "source": tab.source,
    }


def _compare_markers(table, columns: _Columns, markers: list[str], reference: str | None, source: str | None,
                     fixed: _Fixed, tables: dict, figures: dict) -> dict:
    """``--markers``: every marker on the same patients (adds a table and figures); the JSON part."""
    mtab = read_marker_table(table, columns.time, columns.event, markers, reference, on_missing=columns.on_missing,
                             source=source)
    comp, forest = compare_markers(mtab, markers, reference, bootstrap=fixed.bootstrap, seed=fixed.seed)
    tables["marker_comparison"] = comp
    if forest:
        figures["forest_markers"] = partial(plots.forest_figure, forest,
                                            title="Node-based markers: Cox HR per SD")
    figures["cindex_markers"] = partial(plots.cindex_figure, [
        {"label": r["marker"], "c": r["harrell"], "ci_low": r["harrell_ci_low"], "ci_high": r["harrell_ci_high"]}
        for r in comp.to_dict("records")], title=f"Node-based markers: discrimination ({mtab.n} patients)")
    return {
        "n": mtab.n, "events": mtab.events, "reference": comp["reference"].iloc[0],
        "excluded": mtab.exclusion_summary(), "markers": comp.to_dict("records"),
        "note": "same patients for every marker (complete cases of all markers and the reference); "
                "C-index of each marker as a risk score, ordinal markers by their level's rank",
    }


def _validation(validation, columns: _Columns, tab: SurvivalTable, fixed: _Fixed, models: dict,
                warnings: list[str], tables: dict, figures: dict) -> dict:
    """The validation cohort with the training cut-point, marker scale, levels and models unchanged;
    its tables are stacked under the training ones (``cohort`` column), its figures get ``_validation``."""
    if not isinstance(validation, pd.DataFrame) and Path(validation).is_dir():
        validation = patients_path(validation)
    vtab = columns.read(validation, levels=tab.categorical)
    vres, vtables, vfigures, _ = _cohort(vtab, fixed, "validation", models, warnings)
    vres["cutpoint"] = {"value": fixed.cut_value, "method": "from training cohort (unchanged)"}
    vres["source"] = vtab.source
    for name, frame in vtables.items():
        tables[name] = pd.concat([tables[name].assign(cohort="training"), frame.assign(cohort="validation")],
                                 ignore_index=True) if name in tables else frame.assign(cohort="validation")
    figures.update({f"{k}_validation": v for k, v in vfigures.items()})
    return vres


def write_outputs(out_dir, result: dict, tables: dict, figures: dict, tab: SurvivalTable) -> list[str]:
    """Write survival.json, CSV tables, PNG/SVG figures and survival.html (all atomic); list the names."""

    out = Path(out_dir)
    names = []
    for name, frame in tables.items():
        atomic.write_csv(out / f"{name}.csv", frame)
        names.append(f"{name}.csv")
    if tab.excluded:
        atomic.write_csv(out / "excluded.csv", pd.DataFrame(
            {"row": [x["row"] for x in tab.excluded], "missing_columns": [";".join(x["columns"]) for x in tab.excluded]}))
        names.append("excluded.csv")
    for name, fig in figures.items():
        for fmt, data in fig.items():
            atomic.write_bytes(out / f"{name}.{fmt}", data)
            names.append(f"{name}.{fmt}")
    names += ["survival.html", "survival.json"]
    result["outputs"] = sorted(names)
    atomic.write_text(out / "survival.html", survival_html(result, {k: v["png"] for k, v in figures.items()}))
    atomic.write_json(out / "survival.json", result)
    return result["outputs"]
