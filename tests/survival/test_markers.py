"""``--markers`` (side-by-side comparison) and ``--followup`` (join by patient_id)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from tmln.cli import main
from tmln.errors import InputTableError
from tmln.measure.patients import node_markers
from tmln.survival import run_survival
from tmln.survival.followup import join_followup
from tmln.survival.markers import COMPARISON_COLUMNS, compare_markers, read_marker_table
from tmln.survival.table import read_survival_table

STAGE_MIN = {"N0": 0, "N1": 1, "N2": 3, "N3a": 7, "N3b": 16}


def with_node_markers(frame: pd.DataFrame, seed: int = 1) -> pd.DataFrame:
    """Node counts consistent with the simulated N stage, and the markers computed as patients.csv does."""
    rng = np.random.default_rng(seed)
    out = frame.copy()
    mln = [STAGE_MIN[s] + (int(rng.integers(0, 2)) if s != "N0" else 0) for s in out["n_stage"]]
    nodes = [m + int(rng.integers(1, 25)) for m in mln]  # at least one negative node ...
    nodes[0] = 0  # ... except patient 0: no node found, LNR empty, excluded from the comparison
    mln[0] = 0
    rows = [node_markers(n, m) for n, m in zip(nodes, mln)]
    out["n_nodes"], out["n_metastatic_nodes"] = nodes, mln
    for col in ("n_negative_nodes", "lymph_node_ratio", "lodds", "nodes_examined_lt16"):
        out[col] = [r[col] for r in rows]
    out.loc[0, "n_stage"] = "N0"
    return out


def test_compare_markers_same_patients_and_definitions(sim_table):
    frame = with_node_markers(sim_table)
    markers = ["t_mln", "n_stage", "lymph_node_ratio", "lodds"]
    tab = read_marker_table(frame, "os_months", "death", markers)
    assert tab.n == len(frame) - 1 and tab.exclusion_summary()["rows"] == [2]
    comp, forest = compare_markers(tab, markers, bootstrap=5, seed=3)
    assert list(comp.columns) == COMPARISON_COLUMNS and list(comp["marker"]) == markers
    assert set(comp["n"]) == {tab.n}
    st = comp.set_index("marker")
    assert st.loc["n_stage", "kind"].startswith("ordinal (N0 < N1")
    assert pd.isna(st.loc["n_stage", "hr_per_sd"]) and pd.isna(st.loc["n_stage", "nested_p_value"])
    # the C-index of a marker is that of the marker itself as a risk score
    from tmln.survival.concordance import harrell_c

    sub = frame.drop(index=0)
    assert st.loc["lodds", "harrell"] == pytest.approx(harrell_c(sub["os_months"], sub["death"], sub["lodds"]))
    ranks = sub["n_stage"].map({s: i for i, s in enumerate(STAGE_MIN)})
    assert st.loc["n_stage", "harrell"] == pytest.approx(harrell_c(sub["os_months"], sub["death"], ranks))
    # t_mln drives the simulated hazard beyond N stage: the nested test sees it
    assert st.loc["t_mln", "nested_p_value"] < 0.01 and st.loc["t_mln", "delta_c"] > 0
    assert st.loc["t_mln", "c_reference"] == pytest.approx(st.loc["lodds", "c_reference"])
    assert st.loc["t_mln", "sd"] == pytest.approx(sub["t_mln"].std(ddof=1))
    assert len(forest) == 6 and forest[1]["label"] == "t_mln, adjusted for n_stage"


def test_compare_markers_errors(sim_table):
    with pytest.raises(InputTableError, match="not in the table"):
        read_marker_table(sim_table, "os_months", "death", ["t_mln", "lodds"])
    with pytest.raises(InputTableError, match="at least one marker must be numeric"):
        read_marker_table(sim_table, "os_months", "death", ["n_stage"])


def _write(tmp_path, frame):
    run = tmp_path / "run"
    run.mkdir()
    pts = frame.drop(columns=["os_months", "death", "age"])
    pts.to_csv(run / "patients.csv", index=False)
    fu = frame[["patient_id", "os_months", "death", "age"]].copy()
    fu = fu.iloc[3:]  # 3 patients without follow-up
    fu = pd.concat([fu, pd.DataFrame([{"patient_id": "X999", "os_months": 3, "death": 1, "age": 50}])])
    fu["t_mln"] = 0.5  # a clashing column: kept as t_mln_followup, the run's t_mln analysed
    fu.to_csv(tmp_path / "followup.csv", index=False)
    return run, tmp_path / "followup.csv"


def test_join_followup_lists_unmatched_ids(sim_table, tmp_path):
    frame = with_node_markers(sim_table)
    run, fu = _write(tmp_path, frame)
    joined, rep = join_followup(run, fu)
    assert rep["n_matched"] == len(frame) - 3 == len(joined)
    assert rep["only_in_patients"] == list(frame["patient_id"][:3]) and rep["only_in_followup"] == ["X999"]
    assert rep["renamed_followup_columns"] == {"t_mln": "t_mln_followup"}
    assert list(joined["patient_id"]) == list(frame["patient_id"][3:])
    assert joined["t_mln"].tolist() == frame["t_mln"][3:].astype(str).tolist()
    bad = tmp_path / "dup.csv"
    bad.write_text("patient_id,os_months,death\nP001,1,1\nP001,2,0\n")
    with pytest.raises(InputTableError, match="more than once"):
        join_followup(run, bad)
    none = tmp_path / "none.csv"
    none.write_text("patient_id,os_months,death\nQ1,1,1\n")
    with pytest.raises(InputTableError, match="no patient_id in common"):
        join_followup(run, none)


def test_cli_followup_and_markers_end_to_end(sim_table, tmp_path):
    frame = with_node_markers(sim_table)
    run, fu = _write(tmp_path, frame)
    out = tmp_path / "surv"
    r = CliRunner().invoke(main, [
        "survival", str(run), "--followup", str(fu), "--time", "os_months", "--event", "death",
        "--markers", "t_mln,n_stage,lymph_node_ratio,lodds", "--bootstrap", "3", "--seed", "1", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "3 only in" in r.output and "1 only in" in r.output
    assert "lodds: Harrell C =" in r.output and "over n_stage: LR p =" in r.output
    res = json.loads((out / "survival.json").read_text())
    assert res["followup_join"]["only_in_followup"] == ["X999"]
    assert res["n"] == len(frame) - 3
    assert res["marker_comparison"]["n"] == len(frame) - 3  # patient 0 (no node) had no follow-up anyway
    comp = pd.read_csv(out / "marker_comparison.csv")
    assert list(comp["marker"]) == ["t_mln", "n_stage", "lymph_node_ratio", "lodds"]
    assert (out / "forest_markers.png").is_file() and (out / "patients_followup.csv").is_file()
    assert (out / "cindex_markers.svg").is_file()
    html = (out / "survival.html").read_text()
    assert "Node-based markers compared" in html and "X999" in html
    # the run's t_mln is analysed (the follow-up's constant t_mln is kept as t_mln_followup)
    tab = read_survival_table(out / "patients_followup.csv", "os_months", "death")
    assert tab.n == res["n"] and "t_mln_followup" in pd.read_csv(out / "patients_followup.csv").columns
    assert math.isclose(res["marker_scale"]["sd"], float(tab.marker_values.std(ddof=1)))


def test_run_survival_accepts_a_run_directory(sim_table, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    sim_table.to_csv(run / "patients.csv", index=False)
    res = run_survival(run, "os_months", "death", bootstrap=0, draw_figures=False)
    assert res["n"] == len(sim_table) and res["followup_join"] is None and res["marker_comparison"] is None
