"""Cox proportional-hazards models (lifelines ``CoxPHFitter``, Efron ties).

* ``fit_cox``: one model on a design matrix -> per-term HR, 95 % Wald CI, Wald p.
* ``univariable`` / ``multivariable``: per variable, and all variables together. Categorical
  covariates enter as indicator terms against their reference level (``n_stage=N1`` vs N0); each
  categorical variable also gets a likelihood-ratio p-value for the whole variable.
  The marker enters standardised (HR per SD of the training cohort); other continuous covariates
  per unit of their column.
* ``proportional_hazards``: scaled Schoenfeld residual test against rank(time) per term
  (lifelines ``proportional_hazard_test``); p < 0.05 flags a possible violation.
* ``nested_comparison``: covariates vs covariates + marker: likelihood-ratio test (1 df) and the
  gain in Harrell's C of the linear predictor, with a percentile bootstrap 95 % CI (both models
  refitted on each resample; the gain is the apparent, in-sample one).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from tmln.survival.table import SurvivalTable, design_matrix, term_variable

Z95 = stats.norm.ppf(0.975)


class CoxFitError(ValueError):
    """A Cox model that cannot be fitted (no events, separation, collinear columns)."""


@dataclass
class CoxModel:
    """A fitted Cox model: ``terms`` (one row per design column) and the lifelines fitter."""

    terms: pd.DataFrame
    log_likelihood: float
    null_log_likelihood: float
    n: int
    events: int
    fitter: object
    columns: list[str]
    data: pd.DataFrame | None = None

    @property
    def params(self) -> pd.Series:
        return self.terms.set_index("term")["coef"]

    def linear_predictor(self, x: pd.DataFrame) -> np.ndarray:
        """Risk score ``x·β`` (higher = higher hazard = shorter survival)."""
        return x[self.columns].to_numpy(dtype=float) @ self.params[self.columns].to_numpy()


def fit_cox(x: pd.DataFrame, time, event, penalizer: float = 0.0) -> CoxModel:
    """Fit a Cox model of ``time``/``event`` on the columns of ``x`` (all numeric)."""
    from lifelines import CoxPHFitter
    from lifelines.exceptions import ConvergenceError, ConvergenceWarning

    if x.shape[1] == 0:
        raise CoxFitError("a Cox model needs at least one covariate")
    constant = [c for c in x.columns if np.ptp(x[c].to_numpy(dtype=float)) == 0]
    if constant:
        raise CoxFitError(f"constant column(s) {constant} in the Cox model (a level with no patients?)")
    df = x.reset_index(drop=True).copy()
    df["__time"] = np.asarray(time, dtype=float)
    df["__event"] = np.asarray(event, dtype=int)
    cph = CoxPHFitter(penalizer=penalizer)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            cph.fit(df, "__time", "__event")
    except (ConvergenceError, np.linalg.LinAlgError) as err:
        raise CoxFitError(f"the Cox model with {list(x.columns)} did not converge "
                          f"(collinear covariates or complete separation?): {str(err).splitlines()[0]}") from None
    s = cph.summary
    terms = pd.DataFrame({
        "term": list(s.index),
        "coef": s["coef"].to_numpy(),
        "se": s["se(coef)"].to_numpy(),
        "hr": s["exp(coef)"].to_numpy(),
        "ci_low": np.exp(s["coef"] - Z95 * s["se(coef)"]).to_numpy(),
        "ci_high": np.exp(s["coef"] + Z95 * s["se(coef)"]).to_numpy(),
        "z": s["z"].to_numpy(),
        "p_value": s["p"].to_numpy(),
    })
    lr = cph.log_likelihood_ratio_test()
    null_ll = float(cph.log_likelihood_ - lr.test_statistic / 2)
    return CoxModel(terms=terms, log_likelihood=float(cph.log_likelihood_), null_log_likelihood=null_ll,
                    n=len(df), events=int(df["__event"].sum()), fitter=cph, columns=list(x.columns),
                    data=df)


def marker_scale(table: SurvivalTable) -> tuple[float, float]:
    """``(mean, sd)`` of the marker (sample SD, ddof=1) used for HR per SD."""
    x = table.marker_values
    return float(x.mean()), float(x.std(ddof=1))


def _rows(model: CoxModel, table: SurvivalTable, scale, model_name: str) -> pd.DataFrame:
    out = model.terms.copy()
    out.insert(1, "variable", [term_variable(t, table) for t in out["term"]])
    units = []
    for term in out["term"]:
        var = term_variable(term, table)
        if var in table.categorical:
            units.append(f"{term.split('=', 1)[1]} vs {table.categorical[var][0]}")
        elif var == table.marker:
            units.append(f"per SD = {scale[1]:.4g}")
        else:
            units.append("per unit")
    out.insert(2, "contrast", units)
    out.insert(0, "model", model_name)
    out["n"] = model.n
    out["events"] = model.events
    return out


def _variable_lr(model: CoxModel, table: SurvivalTable, variables, var, scale) -> float | None:
    """LR p-value for dropping all terms of categorical ``var`` from the model."""
    rest = [v for v in variables if v != var]
    k = len(table.categorical[var]) - 1
    if k < 1:
        return None
    if rest:
        reduced = fit_cox(design_matrix(table, rest, scale), table.times, table.event_flags)
        ll0 = reduced.log_likelihood
    else:
        ll0 = model.null_log_likelihood
    return float(stats.chi2.sf(2 * (model.log_likelihood - ll0), k))


def univariable(table: SurvivalTable, variables, scale=None) -> pd.DataFrame:
    """One Cox model per variable; rows per term plus ``variable_p_value`` (LR) for categorical ones."""
    scale = scale or marker_scale(table)
    frames = []
    for var in variables:
        model = fit_cox(design_matrix(table, [var], scale), table.times, table.event_flags)
        rows = _rows(model, table, scale, "univariable")
        rows["variable_p_value"] = (_variable_lr(model, table, [var], var, scale)
                                    if var in table.categorical else rows["p_value"])
        frames.append(rows)
    return pd.concat(frames, ignore_index=True)


def multivariable(table: SurvivalTable, variables, scale=None) -> tuple[pd.DataFrame, CoxModel]:
    """All ``variables`` in one Cox model; returns the term table and the model."""
    scale = scale or marker_scale(table)
    model = fit_cox(design_matrix(table, list(variables), scale), table.times, table.event_flags)
    rows = _rows(model, table, scale, "multivariable")
    pvals = {}
    for var in variables:
        if var in table.categorical:
            pvals[var] = _variable_lr(model, table, list(variables), var, scale)
    rows["variable_p_value"] = [pvals.get(v, p) for v, p in zip(rows["variable"], rows["p_value"])]
    return rows, model


def proportional_hazards(model: CoxModel) -> pd.DataFrame:
    """Schoenfeld-residual PH test per term (rank(time) transform): statistic, p, ``violated`` (p < 0.05)."""
    from lifelines.statistics import proportional_hazard_test

    res = proportional_hazard_test(model.fitter, model.data, time_transform="rank")
    s = res.summary
    return pd.DataFrame({"term": [i if isinstance(i, str) else i[0] for i in s.index],
                         "statistic": s["test_statistic"].to_numpy(), "p_value": s["p"].to_numpy(),
                         "violated": (s["p"] < 0.05).to_numpy()})


def harrell(time, event, risk) -> float:
    """Harrell's C of a risk score (higher = shorter survival), scikit-survival."""
    from sksurv.metrics import concordance_index_censored

    return float(concordance_index_censored(np.asarray(event, dtype=bool), np.asarray(time, dtype=float),
                                            np.asarray(risk, dtype=float))[0])


def nested_comparison(table: SurvivalTable, covariates, scale=None, bootstrap: int = 200,
                      seed: int = 0) -> dict:
    """Covariates vs covariates + marker: LR test and Harrell's C gain with bootstrap CI."""
    scale = scale or marker_scale(table)
    covariates = list(covariates)
    full_vars = covariates + [table.marker]
    x_full = design_matrix(table, full_vars, scale)
    base_cols = [c for c in x_full.columns if c != table.marker]
    time, event = table.times, table.event_flags

    def fit_pair(idx):
        xf = x_full.iloc[idx]
        full = fit_cox(xf, time[idx], event[idx])
        c_full = harrell(time[idx], event[idx], full.linear_predictor(xf))
        if base_cols:
            base = fit_cox(xf[base_cols], time[idx], event[idx])
            c_base = harrell(time[idx], event[idx], base.linear_predictor(xf))
            ll_base = base.log_likelihood
        else:
            c_base, ll_base = 0.5, full.null_log_likelihood
        return full, c_full, c_base, ll_base

    all_idx = np.arange(table.n)
    full, c_full, c_base, ll_base = fit_pair(all_idx)
    lr = max(0.0, 2 * (full.log_likelihood - ll_base))
    rng = np.random.default_rng(seed)
    deltas = []
    failed = 0
    for _ in range(int(bootstrap)):
        idx = rng.integers(0, table.n, table.n)
        if event[idx].sum() == 0:
            failed += 1
            continue
        try:
            _, cf, cb, _ = fit_pair(idx)
        except CoxFitError:
            failed += 1
            continue
        deltas.append(cf - cb)
    ci = (float(np.percentile(deltas, 2.5)), float(np.percentile(deltas, 97.5))) if len(deltas) >= 2 else (None, None)
    return {
        "covariates": covariates, "lr_statistic": lr, "df": 1, "p_value": float(stats.chi2.sf(lr, 1)),
        "log_likelihood_covariates": ll_base, "log_likelihood_full": full.log_likelihood,
        "c_covariates": c_base, "c_full": c_full, "delta_c": c_full - c_base,
        "delta_c_ci": list(ci), "bootstrap": len(deltas), "bootstrap_failed": failed,
        "c_type": "Harrell, apparent (in-sample) linear predictors",
    }


def terms_dict(rows: pd.DataFrame) -> dict:
    """``{term: {hr, ci_low, ci_high, p_value, ...}}`` for survival.json."""
    keep = ["variable", "contrast", "coef", "se", "hr", "ci_low", "ci_high", "z", "p_value", "variable_p_value",
            "n", "events"]
    return {r["term"]: {k: r[k] for k in keep if k in r} for r in rows.to_dict("records")}
