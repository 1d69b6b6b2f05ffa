"""Read and validate a one-row-per-patient survival table (CSV or DataFrame).

Rows are numbered as a spreadsheet shows them: the header is row 1, the first patient row 2.
Every error names the file, the column and (up to 10 of) the offending rows.

Checks: the named columns exist; times are numeric, finite and >= 0; events are 0/1 (also
``True/False``, ``yes/no``); the marker is numeric and not constant; at least one event.
Missing values (blank cells, ``NA``) in any analysed column are, by default, a documented
*exclusion* (complete-case analysis; ``SurvivalTable.excluded`` lists the rows and the columns
that were empty) or, with ``on_missing="error"``, an :class:`InputTableError`.
Text covariates (and ``n_stage``) are categorical; their reference level is the first in
stage order for N stage (N0 / pN0, the order of the staging system whose stages hold every value:
gastric, breast, camelyon17 or colorectal) and otherwise the first in sorted order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from tmln.errors import InputTableError
from tmln.measure.staging import N_STAGES, STAGES, stage_order

MISSING_POLICIES = ("exclude", "error")
_TRUE = {"1", "1.0", "true", "yes", "y", "dead", "event"}
_FALSE = {"0", "0.0", "false", "no", "n", "alive", "censored"}
# known ordered categorical columns: name -> level order
ORDERED_LEVELS: dict[str, tuple[str, ...]] = {"n_stage": N_STAGES}


@dataclass
class SurvivalTable:
    """A validated complete-case table.

    ``frame`` holds the analysed columns (time float, event int 0/1, marker float, covariates)
    plus ``row`` (the spreadsheet row of each patient). ``categorical`` maps each categorical
    covariate to its levels, reference first.
    """

    frame: pd.DataFrame
    time: str
    event: str
    marker: str
    covariates: tuple[str, ...]
    categorical: dict[str, list[str]] = field(default_factory=dict)
    excluded: list[dict] = field(default_factory=list)
    source: str = "<table>"

    @property
    def n(self) -> int:
        return len(self.frame)

    @property
    def events(self) -> int:
        return int(self.frame[self.event].sum())

    @property
    def times(self) -> np.ndarray:
        return self.frame[self.time].to_numpy(dtype=float)

    @property
    def event_flags(self) -> np.ndarray:
        return self.frame[self.event].to_numpy(dtype=int)

    @property
    def marker_values(self) -> np.ndarray:
        return self.frame[self.marker].to_numpy(dtype=float)

    def exclusion_summary(self) -> dict:
        """``{"n": k, "rows": [...], "by_column": {col: [rows]}}`` for survival.json."""
        by_col: dict[str, list[int]] = {}
        for item in self.excluded:
            for col in item["columns"]:
                by_col.setdefault(col, []).append(item["row"])
        return {"n": len(self.excluded), "rows": [e["row"] for e in self.excluded], "by_column": by_col,
                "rule": "complete-case: rows with a missing value in any analysed column are excluded"}


def _rows_text(rows) -> str:
    rows = [int(r) for r in rows]
    head = ", ".join(str(r) for r in rows[:10])
    return f"row {head}" if len(rows) == 1 else f"rows {head}" + (f" (and {len(rows) - 10} more)" if len(rows) > 10 else "")


def _is_blank(series: pd.Series) -> pd.Series:
    blank = series.isna()
    if series.dtype == object:
        blank |= series.astype(str).str.strip().isin(["", "NA", "NaN", "nan", "None", "null", "N/A"])
    return blank


def _to_numeric(series: pd.Series, column: str, source: str, rows: pd.Series) -> pd.Series:
    values = pd.to_numeric(series, errors="coerce")
    bad = values.isna() & ~_is_blank(series)
    if bad.any():
        examples = ", ".join(repr(v) for v in series[bad].astype(str).unique()[:3])
        raise InputTableError(f"column {column!r} must be numeric; non-numeric values ({examples}) in "
                              f"{_rows_text(rows[bad])}", source)
    inf = np.isinf(values.to_numpy(dtype=float, na_value=np.nan))
    if inf.any():
        raise InputTableError(f"column {column!r} has infinite values in {_rows_text(rows[inf])}", source)
    return values.astype(float)


def _to_event(series: pd.Series, column: str, source: str, rows: pd.Series) -> pd.Series:
    blank = _is_blank(series)
    text = series.astype(str).str.strip().str.lower()
    out = pd.Series(np.nan, index=series.index)
    out[text.isin(_TRUE)] = 1.0
    out[text.isin(_FALSE)] = 0.0
    numeric = pd.to_numeric(series, errors="coerce")
    out[numeric == 1] = 1.0
    out[numeric == 0] = 0.0
    bad = out.isna() & ~blank
    if bad.any():
        examples = ", ".join(repr(v) for v in series[bad].astype(str).unique()[:3])
        raise InputTableError(f"column {column!r} must be 0 (censored) or 1 (event); got {examples} in "
                              f"{_rows_text(rows[bad])}", source)
    return out


def _levels(column: str, values: pd.Series, source: str, rows: pd.Series) -> list[str]:
    present = sorted(set(values.dropna().astype(str)))
    order = ORDERED_LEVELS.get(column)
    if order is None:
        return present
    if column == "n_stage":
        order = stage_order(present) or order
        if not set(present) <= set(order):
            bad = values.astype(str).isin([v for v in present if v not in order]) & values.notna()
            raise InputTableError(f"column {column!r} has unknown levels {[v for v in present if v not in order]} (expected "
                                  f"the stages of one staging system: "
                                  f"{'; '.join(f'{k} {list(v)}' for k, v in STAGES.items())}) in {_rows_text(rows[bad])}",
                                  source)
    unknown = [v for v in present if v not in order]
    if unknown:
        bad = values.astype(str).isin(unknown) & values.notna()
        raise InputTableError(f"column {column!r} has unknown levels {unknown} (expected {list(order)}) in "
                              f"{_rows_text(rows[bad])}", source)
    return [lv for lv in order if lv in present]


def read_survival_table(
    table: str | Path | pd.DataFrame,
    time: str,
    event: str,
    marker: str = "t_mln",
    covariates: tuple[str, ...] | list[str] = (),
    *,
    on_missing: str = "exclude",
    categorical: tuple[str, ...] | list[str] = (),
    levels: dict[str, list[str]] | None = None,
    source: str | None = None,
) -> SurvivalTable:
    """Read ``table`` (CSV path or DataFrame) and validate it; see the module docstring.

    ``categorical`` forces numeric-coded covariates to be categorical. ``levels`` fixes the
    levels of categorical covariates (used for a validation cohort: the training levels, reference
    first); a level not in ``levels`` is an error.
    """
    if on_missing not in MISSING_POLICIES:
        raise ValueError(f"on_missing must be one of {MISSING_POLICIES}")
    frame, source = _read_frame(table, source)
    covariates = tuple(c for c in covariates if c)
    wanted = _check_columns(frame, [time, event, marker, *covariates], marker, covariates, source)

    frame = frame.reset_index(drop=True)
    rows = pd.Series(np.arange(len(frame)) + 2, index=frame.index)
    out = pd.DataFrame({"row": rows})
    out[time] = _to_numeric(frame[time], time, source, rows)
    negative = out[time] < 0
    if negative.any():
        raise InputTableError(f"column {time!r} (follow-up time) must be >= 0; negative in {_rows_text(rows[negative])}", source)
    out[event] = _to_event(frame[event], event, source, rows)
    out[marker] = _to_numeric(frame[marker], marker, source, rows)
    cats: dict[str, list[str]] = {}
    for col in covariates:
        values, col_levels = _covariate(frame[col], col, categorical, levels, source, rows)
        if col_levels is not None:
            cats[col] = col_levels
        out[col] = values

    out, excluded = _complete_rows(out, wanted, rows, on_missing, source)
    out[event] = out[event].astype(int)
    for col, lv in cats.items():
        if not (levels and col in levels) and len(set(out[col])) < 2:
            raise InputTableError(f"categorical covariate {col!r} has a single level {lv} among complete rows", source)
        cats[col] = [v for v in lv] if (levels and col in levels) else [v for v in lv if v in set(out[col])]
    _check_analysable(out, event, marker, [c for c in covariates if c not in cats], source)
    return SurvivalTable(frame=out, time=time, event=event, marker=marker, covariates=covariates,
                         categorical=cats, excluded=excluded, source=source)


def _read_frame(table: str | Path | pd.DataFrame, source: str | None) -> tuple[pd.DataFrame, str]:
    """(a copy of the DataFrame, or the CSV read as text cells; the source label for errors)."""
    if isinstance(table, pd.DataFrame):
        return table.copy(), source or "<table>"
    source = str(table)
    path = Path(table)
    if not path.is_file():
        raise InputTableError("file not found", source)
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True), source
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise InputTableError(f"not a readable CSV table ({err})", source) from None


def _check_columns(frame: pd.DataFrame, wanted: list[str], marker: str, covariates: tuple[str, ...],
                   source: str) -> list[str]:
    """``wanted`` (time, event, marker, covariates) once each and all present, in a non-empty table."""
    if marker in covariates:
        raise InputTableError(f"the marker {marker!r} is also listed as a covariate", source)
    if len(set(wanted)) != len(wanted):
        raise InputTableError(f"a column is named twice among time/event/marker/covariates: {wanted}", source)
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        raise InputTableError(f"missing column(s) {missing}; the table has {list(frame.columns)}", source)
    if len(frame) == 0:
        raise InputTableError("the table has no rows", source)
    return wanted


def _covariate(raw: pd.Series, col: str, categorical, levels: dict[str, list[str]] | None, source: str,
               rows: pd.Series) -> tuple[pd.Series, list[str] | None]:
    """(values, levels): a categorical covariate (forced, known ordered, with given ``levels``, or
    holding text) as stripped text with its levels; otherwise numeric values and ``None``."""
    blank = _is_blank(raw)
    numeric = pd.to_numeric(raw, errors="coerce")
    is_cat = (col in categorical or col in ORDERED_LEVELS or (levels and col in levels)
              or bool((numeric.isna() & ~blank).any()))
    if not is_cat:
        return _to_numeric(raw, col, source, rows), None
    values = raw.astype(str).str.strip().where(~blank, None)
    if not (levels and col in levels):
        return values, _levels(col, values, source, rows)
    allowed = [str(v) for v in levels[col]]
    unknown = values.notna() & ~values.isin(allowed)
    if unknown.any():
        raise InputTableError(f"column {col!r} has level(s) {sorted(set(values[unknown]))} not seen "
                              f"in the training cohort {allowed}, in {_rows_text(rows[unknown])}", source)
    return values, allowed


def _complete_rows(out: pd.DataFrame, wanted: list[str], rows: pd.Series, on_missing: str,
                   source: str) -> tuple[pd.DataFrame, list[dict]]:
    """(the complete rows, the excluded ones as ``{"row", "columns"}``); an error for any missing
    value when ``on_missing="error"`` or when no row is complete."""
    blank = out[wanted].isna()
    excluded = [{"row": int(rows[i]), "columns": [c for c in wanted if blank.at[i, c]]}
                for i in out.index[blank.any(axis=1)]]
    if excluded and on_missing == "error":
        parts = [f"{c!r} in {_rows_text(rows[blank[c]])}" for c in wanted if blank[c].any()]
        raise InputTableError("missing values: " + "; ".join(parts), source)
    out = out[~blank.any(axis=1)].reset_index(drop=True)
    if len(out) == 0:
        raise InputTableError(f"no complete rows: every row has a missing value in {wanted}", source)
    return out, excluded


def _check_analysable(out: pd.DataFrame, event: str, marker: str, numeric_covariates: list[str], source: str) -> None:
    """At least one event, a marker that varies and numeric covariates that vary among the analysed rows."""
    if out[event].sum() == 0:
        raise InputTableError(f"column {event!r} has no events (all {len(out)} analysed patients censored): "
                              "survival statistics need at least one event", source)
    if out[marker].nunique() < 2:
        raise InputTableError(f"marker column {marker!r} is constant ({out[marker].iloc[0]!r}) among the "
                              f"{len(out)} analysed patients: nothing to test", source)
    for col in numeric_covariates:
        if out[col].nunique() < 2:
            raise InputTableError(f"covariate {col!r} is constant among the analysed patients", source)


def design_matrix(table: SurvivalTable, variables: tuple[str, ...] | list[str],
                  marker_scale: tuple[float, float] | None = None) -> pd.DataFrame:
    """Numeric design matrix for ``variables`` (no time/event columns).

    Categorical variables become indicator columns ``"<var>=<level>"`` (reference level dropped).
    The marker, when listed, is standardised as ``(x - mean) / sd`` with ``marker_scale=(mean, sd)``
    (per-SD hazard ratios); without ``marker_scale`` it is kept in its own unit.
    """
    cols = {}
    for var in variables:
        if var in table.categorical:
            values = table.frame[var].astype(str)
            for level in table.categorical[var][1:]:
                column = (values == level).astype(float).to_numpy()
                if column.any():  # a level absent from this cohort (validation) has no column
                    cols[f"{var}={level}"] = column
        elif var == table.marker and marker_scale is not None:
            mean, sd = marker_scale
            cols[var] = (table.frame[var].to_numpy(dtype=float) - mean) / sd
        else:
            cols[var] = table.frame[var].to_numpy(dtype=float)
    return pd.DataFrame(cols, index=table.frame.index)


def term_variable(term: str, table: SurvivalTable) -> str:
    """The covariate a design-matrix column came from (``"n_stage=N2"`` -> ``"n_stage"``)."""
    base = term.split("=", 1)[0]
    return base if base in table.categorical else term
