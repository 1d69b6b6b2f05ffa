"""run_survival end to end on simulated cohorts: structure, validation, outputs, no partial output."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tmln.errors import InputTableError
from tmln.survival.analysis import run_survival

REQUIRED = {
    "cutpoint": {"value", "statistic", "p_value_adjusted", "method"},
    "logrank": {"statistic", "p_value"},
    "c_index": {"harrell", "harrell_ci", "uno", "uno_ci"},
    "nested": {"lr_statistic", "p_value", "delta_c", "delta_c_ci"},
}


def test_structure_and_values(sim_table):
    res = run_survival(sim_table, "os_months", "death", covariates=("n_stage", "age"), horizons=(36, 60),
                       bootstrap=5, permutations=9, seed=2, draw_figures=False)
    assert res["n"] == len(sim_table) and res["events"] == int(sim_table["death"].sum())
    assert res["marker"] == "t_mln"
    for key, fields in REQUIRED.items():
        assert fields <= set(res[key]), key
    for part in ("cox_univariable", "cox_multivariable"):
        assert {"t_mln", "age", "n_stage=N1"} <= set(res[part])
        assert {"hr", "ci_low", "ci_high", "p_value"} <= set(res[part]["t_mln"])
    # the simulated marker has a true log-HR of 0.7 per SD
    assert res["cox_multivariable"]["t_mln"]["ci_low"] > 1
    assert res["cutpoint"]["method"] == "maxstat" and res["cutpoint"]["permutations"] == 9
    assert res["logrank"]["p_value"] == pytest.approx(res["cutpoint"]["p_value_unadjusted"], rel=1e-6)
    assert res["logrank_covariates"]["n_stage"]["trend_p_value"] is not None
    assert res["c_index"]["harrell"] > 0.55 and res["c_index"]["sign"].startswith("risk score")
    assert set(res["c_index_models"]) == {"covariates", "covariates+marker"}
    assert res["validation"] is None
    json.dumps(res, allow_nan=False)


def test_validation_uses_training_cut(simulate, tmp_path):
    train, valid = simulate(150, seed=1), simulate(100, seed=2)
    res = run_survival(train, "os_months", "death", covariates=("n_stage",), validation=valid, bootstrap=3,
                       out_dir=tmp_path, draw_figures=False)
    cut = res["cutpoint"]["value"]
    v = res["validation"]
    assert v["cutpoint"]["value"] == cut
    assert v["groups"]["n_high"] == int((valid["t_mln"] > cut).sum())
    assert v["n"] == 100
    assert "covariates+marker" in v["c_index_models"]
    assert not list(tmp_path.glob("*.png"))  # figures skipped on request
    import pandas as pd

    multi = pd.read_csv(tmp_path / "cox_multivariable.csv")
    assert set(multi["cohort"]) == {"training", "validation"}


def test_fixed_and_median_cutpoints(sim_table):
    med = run_survival(sim_table, "os_months", "death", cutpoint="median", bootstrap=0, draw_figures=False)
    assert med["cutpoint"]["method"] == "median"
    assert med["cutpoint"]["value"] == pytest.approx(float(np.median(sim_table["t_mln"])))
    fixed = run_survival(sim_table, "os_months", "death", cutpoint="0.25", bootstrap=0, draw_figures=False)
    assert fixed["cutpoint"]["value"] == 0.25 and fixed["cutpoint"]["method"] == "fixed"
    assert fixed["cutpoint"]["p_value_adjusted"] == fixed["cutpoint"]["p_value_unadjusted"]
    with pytest.raises(InputTableError, match="'maxstat', 'median' or a number"):
        run_survival(sim_table, "os_months", "death", cutpoint="best")


def test_outputs_written(sim_table, tmp_path):
    res = run_survival(sim_table, "os_months", "death", covariates=("n_stage",), out_dir=tmp_path, bootstrap=3,
                       time_unit="months")
    for name in ("survival.json", "survival.html", "cox_univariable.csv", "cox_multivariable.csv", "km_groups.csv",
                 "km_curves.csv", "cutpoint_scan.csv", "discrimination.csv", "km_t_mln.png", "km_t_mln.svg",
                 "km_n_stage.png", "forest_multivariable.svg", "cutpoint_scan.png"):
        assert (tmp_path / name).is_file(), name
    assert "Time (months)" in (tmp_path / "km_t_mln.svg").read_text()
    assert "data:image/png;base64," in (tmp_path / "survival.html").read_text()
    on_disk = json.loads((tmp_path / "survival.json").read_text())
    assert on_disk["cutpoint"] == res["cutpoint"]
    assert sorted(on_disk["outputs"]) == on_disk["outputs"]
    assert not list(tmp_path.glob(".*tmp*"))


def test_bad_input_leaves_no_output(sim_table, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(InputTableError, match="no events"):
        run_survival(sim_table.assign(death=0), "os_months", "death", out_dir=out)
    assert not out.exists()


def test_too_few_patients_for_cutpoint(sim_table):
    with pytest.raises(InputTableError, match="too few patients"):
        run_survival(sim_table.head(12), "os_months", "death", bootstrap=0)


def test_exclusions_reported(sim_table):
    frame = sim_table.copy()
    frame.loc[[0, 10], "t_mln"] = np.nan
    res = run_survival(frame, "os_months", "death", bootstrap=0, draw_figures=False)
    assert res["excluded"]["rows"] == [2, 12] and res["n"] == len(frame) - 2
