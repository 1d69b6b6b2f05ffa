"""Join follow-up to a run's patients by ``patient_id`` (``tmln survival RUN --followup FOLLOWUP.csv``).

The patients table is a run directory (its ``patients.csv``) or any CSV with ``patient_id``; the
follow-up table is a CSV with ``patient_id`` and the follow-up columns (time, event, covariates).
Ids are compared as text with surrounding spaces removed. Only patients in both tables are
analysed; the ids found on one side only are listed (``only_in_patients``, ``only_in_followup``) in
``survival.json`` and on the terminal, so a typo in an id is seen rather than silently dropped. A
follow-up column that the patients table also has (other than ``patient_id``) is kept as
``<name>_followup`` (the run's measurement keeps its name). An id that appears twice in either
table is an error.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from tmln.errors import InputTableError
from tmln.rundir import RunDir

ID = "patient_id"


def patients_path(path) -> Path:
    """A run directory's ``patients.csv``, or the path itself."""
    p = Path(path)
    if p.is_dir():
        p = RunDir(p).patients_csv
        if not p.is_file():
            raise InputTableError(f"the run directory has no {p.name} (run tmln analyze first)", path)
    return p


def _read(path: Path, what: str) -> pd.DataFrame:
    if not path.is_file():
        raise InputTableError(f"{what} table not found", path)
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True, encoding="utf-8-sig")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise InputTableError(f"not a readable CSV table ({str(err).strip().splitlines()[0]})", path) from None
    frame.columns = [str(c).strip() for c in frame.columns]
    if ID not in frame.columns:
        raise InputTableError(f"{what} table has no {ID} column (it has {list(frame.columns)})", path)
    frame[ID] = frame[ID].astype(str).str.strip()
    dup = frame[ID][frame[ID].duplicated()]
    if len(dup):
        raise InputTableError(f"{ID} {dup.iloc[0]!r} appears more than once in the {what} table", path)
    return frame


def join_followup(patients, followup) -> tuple[pd.DataFrame, dict]:
    """(joined table in the patients table's order, join report for survival.json)."""
    p_path, f_path = patients_path(patients), Path(followup)
    pts = _read(p_path, "patients")
    fu = _read(f_path, "follow-up")
    clash = [c for c in fu.columns if c != ID and c in pts.columns]
    fu = fu.rename(columns={c: f"{c}_followup" for c in clash})
    joined = pts.merge(fu, on=ID, how="inner", sort=False)
    p_ids, f_ids = list(pts[ID]), set(fu[ID])
    report = {
        "patients": str(p_path), "followup": str(f_path),
        "n_patients": len(pts), "n_followup": len(fu), "n_matched": len(joined),
        "only_in_patients": [i for i in p_ids if i not in f_ids],
        "only_in_followup": [i for i in fu[ID] if i not in set(p_ids)],
        "renamed_followup_columns": {c: f"{c}_followup" for c in clash},
    }
    if len(joined) == 0:
        raise InputTableError(f"no patient_id in common between {p_path} ({len(pts)} patients) and the follow-up "
                              f"table ({len(fu)} rows); e.g. {p_ids[:3]} vs {list(fu[ID])[:3]}", f_path)
    return joined, report
