"""`tmln demo`, its follow-up simulation and the bundled demo models (tmln.demo, tmln.cli.demo)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from tmln.cli import main
from tmln.demo import FollowUpModel, compare_with_truth, simulate_follow_up

SMALL_MM = "3.5,3"  # small phantom slides keep the end-to-end tests to seconds


# ---------------------------------------------------------------------------- follow-up
def test_follow_up_is_seeded():
    x = np.linspace(0, 1, 50)
    a, b = simulate_follow_up(x, seed=4), simulate_follow_up(x, seed=4)
    pd.testing.assert_frame_equal(a, b)
    assert not simulate_follow_up(x, seed=5).equals(a)
    assert list(a.columns) == ["time_months", "event"]
    assert (a["time_months"] > 0).all() and set(a["event"].unique()) <= {0, 1}
    lo, hi = FollowUpModel().follow_up_months
    assert a["time_months"].max() <= hi  # nobody is followed beyond the end of the study


def test_follow_up_hazard_rises_with_t_mln():
    from lifelines import CoxPHFitter

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, 3000)
    fu = simulate_follow_up(x, seed=1)
    assert 0.2 < fu["event"].mean() < 0.9  # events and censoring both present
    cph = CoxPHFitter().fit(fu.assign(t_mln=x), "time_months", "event")
    beta = cph.params_["t_mln"]
    assert beta > 0 and abs(beta - FollowUpModel().beta) < 0.5  # the simulated log hazard ratio is recovered
    # no effect -> no sign
    flat = simulate_follow_up(x, seed=1, model=FollowUpModel(beta=0.0))
    assert abs(CoxPHFitter().fit(flat.assign(t_mln=x), "time_months", "event").params_["t_mln"]) < 0.3


def test_follow_up_rejects_bad_input():
    with pytest.raises(ValueError):
        simulate_follow_up([0.1, float("nan")])


# ---------------------------------------------------------------------------- cohort
def test_demo_patients_have_the_planned_true_stages():
    """Slide seeds are drawn until each patient's truth has its planned stage (layouts only: fast)."""
    from tmln.demo import _patient_specs, _stage_plan
    from tmln.measure.staging import n_stage
    from tmln.phantom import make_layout
    from tmln.phantom.truth import node_rows

    plan = _stage_plan(4, seed=3, stages=("N1", "N0", "N2", "N3a"))
    assert [t for t, _ in plan] == ["N1", "N0", "N2", "N3a"]
    assert all(1 <= k <= 3 for _, k in plan) and plan[2][1] >= 2 and plan[3][1] == 3
    for p, (target, k) in enumerate(plan):
        specs = _patient_specs(p, target, k, 3, (6.0, 4.5), 0.5)
        assert len(specs) == k
        n_mln = 0
        for spec in specs:
            lay = make_layout(spec)
            n_mln += sum(r["metastatic"] for r in node_rows(lay.nodes, lay.tumour, lay.mpp, lay.mpp, "p", "s"))
        assert n_stage(n_mln) == target
    assert [s.seed for s in _patient_specs(0, "N1", 2, 3, (6.0, 4.5), 0.5)] == \
        [s.seed for s in _patient_specs(0, "N1", 2, 3, (6.0, 4.5), 0.5)]  # deterministic


def test_compare_with_truth():
    truth = pd.DataFrame({"patient_id": ["A", "B"], "n_slides": [1, 2], "n_nodes": [3, 4], "n_metastatic_nodes": [0, 2],
                          "n_stage": ["N0", "N1"], "t_mln": [0.0, 0.4]})
    measured = truth.assign(n_stage=["N0", "N2"], t_mln=[0.0, 0.43], n_metastatic_nodes=[0, 3])
    comp = compare_with_truth(measured, truth)
    assert comp["n_stage_agrees"].tolist() == [True, False]
    assert comp["abs_delta_t_mln"].tolist() == pytest.approx([0.0, 0.03])


# ---------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    res = CliRunner().invoke(main, ["demo", "--out", str(out), "--patients", "2", "--seed", "5",
                                    "--slide-mm", SMALL_MM, "--device", "cpu"])
    assert res.exit_code == 0, res.output
    return out, res.output


def test_demo_cli_end_to_end(demo_run):
    out, output = demo_run
    for name in ("report.html", "patients.csv", "nodes.csv", "slides.csv", "summary.json", "comparison.csv",
                 "patients_followup.csv", "demo.json", "phantoms/truth_patients.csv", "phantoms/follow_up.csv"):
        assert (out / name).is_file(), name
    assert f"report: {(out / 'report.html').resolve()}" in output
    html = (out / "report.html").read_text(encoding="utf-8")
    assert 'id="demo"' in html and "Survival analysis" in html
    meta = json.loads((out / "demo.json").read_text())
    assert meta["models"] == {"nodes": "demo-nodes", "tumour": "demo-tumour"}
    slides = pd.read_csv(out / "slides.csv")
    assert (slides["status"] == "done").all()
    # the models measured the slides (not the truth outlines)
    assert slides["nodes_source"].str.startswith("model:demo-nodes").all()
    assert slides["tumour_source"].str.startswith("model:demo-tumour").all()
    comp = pd.read_csv(out / "comparison.csv")
    assert comp["patient_id"].tolist() == ["P001", "P002"]
    assert comp["true_n_stage"].tolist() == ["N0", "N1"]
    for pid in comp["patient_id"]:
        assert pid in output  # the per-patient comparison is printed


def test_demo_rerun_resumes(demo_run):
    out, _ = demo_run
    before = (out / "patients.csv").read_bytes()
    res = CliRunner().invoke(main, ["demo", "--out", str(out), "--patients", "2", "--seed", "5",
                                    "--slide-mm", SMALL_MM, "--device", "cpu", "--quiet"])
    assert res.exit_code == 0, res.output
    meta = json.loads((out / "demo.json").read_text())
    assert meta["slides_reused"] == meta["cohort"]["slides"]  # nothing recomputed
    assert (out / "patients.csv").read_bytes() == before


def test_demo_refuses_to_clean_a_foreign_folder(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    res = CliRunner().invoke(main, ["demo", "--out", str(tmp_path), "--fresh", "--patients", "1"])
    assert res.exit_code == 2 and "refusing" in res.output
    assert (tmp_path / "precious.txt").is_file()


def test_bundled_models_load_by_name_in_analyze(tmp_path):
    from tmln.phantom import make_cohort

    csv = make_cohort(tmp_path / "c", patients=1, seed=5, size_mm=(3.5, 3.0))
    res = CliRunner().invoke(main, ["analyze", "--slides", str(csv), "--out", str(tmp_path / "run"),
                                    "--node-model", "demo-nodes", "--tumour-model", "demo-tumour", "--quiet",
                                    "--device", "cpu"])
    assert res.exit_code == 0, res.output
    patients = pd.read_csv(tmp_path / "run" / "patients.csv")
    truth = pd.read_csv(tmp_path / "c" / "truth_patients.csv")
    assert patients["n_stage"].notna().all()
    assert abs(int(patients["n_nodes"].iloc[0]) - int(truth["n_nodes"].iloc[0])) <= 1
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["parameters"]["node_model"] == "demo-nodes"


def test_bundled_demo_cards_say_phantom_and_not_for_diagnosis():
    from tmln.models.card import list_bundled, read_card

    assert {"demo-nodes", "demo-tumour"} <= set(list_bundled())
    for name, task in (("demo-nodes", "node-segmentation"), ("demo-tumour", "tumour-classifier")):
        card = read_card(name)
        assert card.task == task
        assert "phantom" in card.intended_use.lower() and "not for diagnosis" in card.intended_use.lower()
        assert card.training["phantom_training_cohort"]["real_tissue"] is False
