"""Node-count and N-stage agreement: hand values, sklearn's kappa, bootstrap CI, table reading."""

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from tmln.errors import InputTableError, TmlnError
from tmln.evaluate.agreement import count_agreement, evaluate_agreement, read_patient_table, stage_agreement
from tmln.measure.staging import N_STAGES


def test_count_agreement_hand():
    run = [0, 2, 5, 7]
    ref = [0, 1, 5, 10]
    c = count_agreement(run, ref)
    d = np.array([0, 1, 0, -3])
    assert c["mae"] == pytest.approx(1.0) and c["exact_agreement"] == 0.5 and c["within_one"] == 0.75
    assert c["bias"] == pytest.approx(-0.5)
    sd = np.std(d, ddof=1)
    assert c["loa_low"] == pytest.approx(-0.5 - 1.96 * sd) and c["loa_high"] == pytest.approx(-0.5 + 1.96 * sd)
    assert c["rmse"] == pytest.approx(np.sqrt(10 / 4))


def test_quadratic_kappa_matches_sklearn():
    rng = np.random.default_rng(0)
    ref = rng.integers(0, 5, 60)
    run = np.clip(ref + rng.integers(-1, 2, 60), 0, 4)
    r = stage_agreement([N_STAGES[i] for i in run], [N_STAGES[i] for i in ref], n_boot=200, seed=1)
    assert r["kappa_quadratic"] == pytest.approx(cohen_kappa_score(ref, run, weights="quadratic"))
    assert r["kappa_unweighted"] == pytest.approx(cohen_kappa_score(ref, run))
    lo, hi = r["kappa_quadratic_ci"]
    assert lo < r["kappa_quadratic"] < hi
    assert r == stage_agreement([N_STAGES[i] for i in run], [N_STAGES[i] for i in ref], n_boot=200, seed=1)
    conf = np.array(r["confusion_matrix"])
    assert conf.sum() == 60 and np.trace(conf) == (run == ref).sum()
    assert conf[ref[0], run[0]] >= 1  # rows are the reference


def test_kappa_uses_the_full_ordered_scale():
    # stages absent from both tables still set the weights: N0 vs N3b is the worst disagreement
    a = stage_agreement(["N0", "N3b"], ["N3b", "N0"], n_boot=0)
    assert a["kappa_quadratic"] == pytest.approx(-1.0)
    assert a["kappa_quadratic_ci"] == [None, None]


def test_evaluate_agreement_tables(tmp_path):
    run = tmp_path / "patients.csv"
    run.write_text("patient_id,n_metastatic_nodes,n_stage\nP1,0,N0\nP2,3,N2\nP3,8,N3a\nP4,1,N1\n")
    ref = tmp_path / "ref.csv"
    ref.write_text("patient,n_metastatic_nodes\nP1,0\nP2,2\nP3,8\nP5,4\n")  # stage derived from counts
    m, merged = evaluate_agreement(run, ref, n_boot=100)
    assert m["n_patients"] == 3 and m["only_in_run"] == ["P4"] and m["only_in_reference"] == ["P5"]
    assert list(merged["n_stage_reference"]) == ["N0", "N1", "N3a"]
    assert m["counts"]["mae"] == pytest.approx(1 / 3)
    assert m["n_stage"]["exact_agreement"] == pytest.approx(2 / 3)


def test_stage_spelling_and_errors(tmp_path):
    t = tmp_path / "a.csv"
    t.write_text("patient_id,n_stage\nA,pN1\nB,n3B\n")
    assert list(read_patient_table(t)["n_stage"]) == ["N1", "N3b"]
    c17 = ("pN0", "pN0(i+)", "pN1mi", "pN1", "pN2")
    t.write_text("patient_id,stage\nA,pN0(i+)\nB,N2\n")
    assert list(read_patient_table(t, c17)["n_stage"]) == ["pN0(i+)", "pN2"]
    t.write_text("patient_id,n_stage\nA,N4\n")
    with pytest.raises(InputTableError, match="N4"):
        read_patient_table(t)
    t.write_text("patient_id,n_metastatic_nodes\nA,1\nA,2\n")
    with pytest.raises(InputTableError, match="more than once"):
        read_patient_table(t)
    other = tmp_path / "b.csv"
    other.write_text("patient_id,n_metastatic_nodes\nZ,1\n")
    t.write_text("patient_id,n_metastatic_nodes\nA,1\n")
    with pytest.raises(TmlnError, match="share no patient"):
        evaluate_agreement(t, other)


def test_vectorised_bootstrap_kappa_equals_sklearn_per_replicate():
    from tmln.evaluate.agreement import _bootstrap_quadratic_kappa

    rng = np.random.default_rng(4)
    ref = rng.integers(0, 5, 25)
    run = np.clip(ref + rng.integers(-2, 3, 25), 0, 4)
    got = _bootstrap_quadratic_kappa(ref, run, 5, 30, np.random.default_rng(9))
    r = np.random.default_rng(9)
    idx = r.integers(0, 25, (30, 25))
    want = [cohen_kappa_score(ref[i], run[i], weights="quadratic", labels=list(range(5))) for i in idx]
    assert np.allclose(got, want)
