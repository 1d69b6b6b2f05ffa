import pytest

from tmln.measure.patients import aggregate_patients, counted_slides, patient_row
from tmln.measure.staging import PATIENT_COLUMNS


def node(pid, area, tumour, met, sid="S"):
    return {"patient_id": pid, "slide_id": sid, "area_mm2": area, "tumour_area_mm2": tumour, "metastatic": met}


def test_pooled_and_mean_tmln_differ_as_defined():
    rows = [node("P", 1.0, 0.5, True), node("P", 3.0, 0.3, True), node("P", 2.0, 0.01, False)]
    r = patient_row("P", rows, 1)
    assert list(r) == PATIENT_COLUMNS
    assert r["n_nodes"] == 3 and r["n_metastatic_nodes"] == 2 and r["n_stage"] == "N1"
    assert r["tumour_area_mm2"] == pytest.approx(0.81)
    assert r["metastatic_node_area_mm2"] == pytest.approx(4.0)
    assert r["t_mln"] == pytest.approx(0.8 / 4.0)
    assert r["t_mln_mean_nodes"] == pytest.approx((0.5 + 0.1) / 2)


def test_no_metastatic_node_gives_zero_tmln_and_n0():
    r = patient_row("P", [node("P", 1.0, 0.001, False)], 2)
    assert (r["n_stage"], r["t_mln"], r["t_mln_mean_nodes"], r["n_slides"]) == ("N0", 0.0, 0.0, 2)
    assert r["tumour_area_mm2"] == pytest.approx(0.001)


@pytest.mark.parametrize("n,stage", [(0, "N0"), (2, "N1"), (3, "N2"), (6, "N2"), (7, "N3a"), (15, "N3a"), (16, "N3b")])
def test_n_stage_from_count(n, stage):
    assert patient_row("P", [node("P", 1.0, 0.5, "True")] * n, 1)["n_stage"] == stage


def test_aggregate_keeps_table_order_and_does_not_stage_incomplete_patients():
    slides = [{"patient_id": "B", "status": "done"}, {"patient_id": "A", "status": "done"},
              {"patient_id": "A", "status": "failed"}, {"patient_id": "C", "status": "failed"}]
    rows = [node("B", 1.0, 0.5, "True"), node("A", 1.0, 0.5, "True")]
    out = aggregate_patients(rows, slides)
    assert [r["patient_id"] for r in out] == ["B", "A", "C"]
    assert out[0]["n_stage"] == "N1"
    assert out[1]["n_stage"] is None and out[1]["n_slides"] == 1
    assert out[2]["n_stage"] is None and out[2]["n_slides"] == 0


def test_counted_slides_drop_a_repeat_for_the_same_patient_only():
    rows = [{"patient_id": "P1", "slide_id": "a"}, {"patient_id": "P1", "slide_id": "a"},
            {"patient_id": "P2", "slide_id": "a"}, {"patient_id": "P2", "slide_id": "b"}]
    first = [None, 0, 0, None]  # rows 1 and 2 list the file of row 0 again
    assert [(r["patient_id"], r["slide_id"]) for r in counted_slides(rows, first)] == [("P1", "a"), ("P2", "a"),
                                                                                         ("P2", "b")]
    assert counted_slides(rows, [None] * 4) == rows
