"""Validation of the survival table: every bad input gets its own clear error (column + rows)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tmln.errors import InputTableError
from tmln.survival.table import design_matrix, read_survival_table


def _read(frame, **kw):
    args = dict(time="os_months", event="death", marker="t_mln", covariates=("n_stage", "age"))
    args.update(kw)
    return read_survival_table(frame, **args)


def test_good_table_reads(sim_table):
    tab = _read(sim_table)
    assert tab.n == len(sim_table)
    assert tab.events == int(sim_table["death"].sum())
    assert tab.categorical["n_stage"][0] == "N0"
    assert tab.categorical["n_stage"] == [s for s in ["N0", "N1", "N2", "N3a", "N3b"] if s in set(sim_table.n_stage)]
    assert list(tab.frame["row"][:3]) == [2, 3, 4]


def test_csv_and_frame_agree(sim_csv, sim_table):
    a = _read(sim_csv)
    b = _read(sim_table)
    pd.testing.assert_frame_equal(a.frame, b.frame)
    assert a.source == str(sim_csv)


def test_missing_column_named(sim_table):
    with pytest.raises(InputTableError, match=r"missing column\(s\) \['death'\]"):
        _read(sim_table.drop(columns="death"))


def test_missing_file(tmp_path):
    with pytest.raises(InputTableError, match="file not found"):
        _read(tmp_path / "nope.csv")


def test_non_numeric_time_names_rows(sim_table):
    bad = sim_table.astype({"os_months": object})
    bad.loc[[4, 9], "os_months"] = "ten"
    with pytest.raises(InputTableError, match=r"'os_months' must be numeric.*rows 6, 11"):
        _read(bad)


def test_negative_time(sim_table):
    bad = sim_table.copy()
    bad.loc[0, "os_months"] = -1.0
    with pytest.raises(InputTableError, match=r"'os_months'.*>= 0.*row 2\b"):
        _read(bad)


def test_event_not_binary(sim_table):
    bad = sim_table.copy()
    bad.loc[7, "death"] = 2
    with pytest.raises(InputTableError, match=r"'death' must be 0 .* or 1 .*'2'.*row 9\b"):
        _read(bad)


def test_event_words_accepted(sim_table):
    words = sim_table.copy()
    words["death"] = np.where(sim_table["death"] == 1, "yes", "no")
    assert _read(words).events == int(sim_table["death"].sum())


def test_no_events(sim_table):
    bad = sim_table.assign(death=0)
    with pytest.raises(InputTableError, match="no events"):
        _read(bad)


def test_constant_marker(sim_table):
    with pytest.raises(InputTableError, match="'t_mln' is constant"):
        _read(sim_table.assign(t_mln=0.3))


def test_nan_excluded_and_reported(sim_table):
    frame = sim_table.copy()
    frame.loc[3, "t_mln"] = np.nan
    frame.loc[5, "n_stage"] = None
    tab = _read(frame)
    assert tab.n == len(frame) - 2
    summary = tab.exclusion_summary()
    assert summary["rows"] == [5, 7]
    assert summary["by_column"] == {"t_mln": [5], "n_stage": [7]}


def test_nan_error_policy(sim_table):
    frame = sim_table.copy()
    frame.loc[3, "t_mln"] = np.nan
    with pytest.raises(InputTableError, match=r"missing values: 't_mln' in row 5\b"):
        _read(frame, on_missing="error")


def test_blank_cells_in_csv_are_missing(tmp_path, sim_table):
    path = tmp_path / "p.csv"
    text = sim_table.to_csv(index=False).splitlines()
    cells = text[1].split(",")
    cells[3] = ""  # t_mln of the first patient
    text[1] = ",".join(cells)
    path.write_text("\n".join(text) + "\n")
    tab = _read(path)
    assert tab.exclusion_summary()["rows"] == [2]


def test_unknown_n_stage_level(sim_table):
    bad = sim_table.copy()
    bad.loc[2, "n_stage"] = "N4"
    with pytest.raises(InputTableError, match=r"'n_stage' has unknown levels \['N4'\].*row 4\b"):
        _read(bad)


def test_validation_level_not_in_training(sim_table):
    with pytest.raises(InputTableError, match="not seen in the training cohort"):
        _read(sim_table, levels={"n_stage": ["N0", "N1"]})


def test_marker_as_covariate_rejected(sim_table):
    with pytest.raises(InputTableError, match="also listed as a covariate"):
        _read(sim_table, covariates=("t_mln",))


def test_design_matrix_dummies_and_scale(sim_table):
    tab = _read(sim_table)
    x = design_matrix(tab, ["n_stage", "t_mln", "age"], marker_scale=(0.2, 0.1))
    stages = [s for s in ["N1", "N2", "N3a", "N3b"] if s in set(sim_table.n_stage)]
    assert list(x.columns) == [f"n_stage={s}" for s in stages] + ["t_mln", "age"]
    assert np.allclose(x["t_mln"], (sim_table["t_mln"] - 0.2) / 0.1)
    assert (x[[f"n_stage={s}" for s in stages]].sum(axis=1) == (sim_table["n_stage"] != "N0")).all()
