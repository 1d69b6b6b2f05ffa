"""Reading the CSV tables that evaluation compares (errors name the file and the column)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from tmln.errors import InputTableError


def read_table(path: str | Path, required: Iterable[str] = (), aliases: dict[str, Iterable[str]] | None = None):
    """Read a CSV into a DataFrame with lower-case, stripped column names.

    required : columns that must be present (after applying ``aliases``).
    aliases : canonical name -> accepted alternative names (first found is renamed to canonical).
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise InputTableError("table not found", path)
    try:
        frame = pd.read_csv(path, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise InputTableError("table is empty (no header row)", path) from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise InputTableError(f"not a readable CSV ({exc})", path) from None
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    for canonical, names in (aliases or {}).items():
        if canonical in frame.columns:
            continue
        for name in names:
            if name.lower() in frame.columns:
                frame = frame.rename(columns={name.lower(): canonical})
                break
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise InputTableError(
            f"missing column(s) {', '.join(missing)} (found: {', '.join(frame.columns) or 'none'})", path
        )
    return frame


def numeric_column(frame, column: str, path: str | Path, finite: bool = True):
    """The column as float64; raises naming the first bad row (1-based data row)."""
    import numpy as np
    import pandas as pd

    values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(values) if finite else np.isnan(values)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise InputTableError(f"column {column!r}, row {row + 1}: not a number ({frame[column].iloc[row]!r})", path)
    return values
