"""Every boundary of every staging system (tmln.measure.staging), and the node-based markers."""

import math

import pytest

from tmln.measure.patients import node_markers, patient_row
from tmln.measure.staging import (
    STAGES, STAGING_SYSTEMS, breast_n_stage, camelyon17_n_stage, colorectal_n_stage, n_stage, stage, stage_order,
)


@pytest.mark.parametrize("n,expected", [(0, "N0"), (1, "N1"), (2, "N1"), (3, "N2"), (6, "N2"), (7, "N3a"),
                                        (15, "N3a"), (16, "N3b"), (40, "N3b")])
def test_gastric_ajcc8(n, expected):
    assert n_stage(n) == expected
    assert stage("gastric", n_metastatic_nodes=n) == expected


@pytest.mark.parametrize("n,expected", [(0, "N0"), (1, "N1a"), (2, "N1b"), (3, "N1b"), (4, "N2a"), (6, "N2a"),
                                        (7, "N2b"), (30, "N2b")])
def test_colorectal_ajcc8(n, expected):
    assert colorectal_n_stage(n) == expected
    assert stage("colorectal", n_metastatic_nodes=n) == expected


@pytest.mark.parametrize("macro,micro,itc,expected", [
    (0, 0, 0, "N0"),
    (0, 0, 1, "N0(i+)"),      # ITC only
    (0, 0, 12, "N0(i+)"),     # ITC nodes are never counted as positive
    (0, 1, 0, "N1mi"),        # micrometastasis only
    (0, 5, 3, "N1mi"),        # micrometastases only, whatever their number
    (1, 0, 0, "N1a"),
    (1, 2, 0, "N1a"),         # 3 positive nodes, one macro
    (1, 2, 5, "N1a"),         # ITC nodes not counted
    (1, 3, 0, "N2a"),         # 4 positive nodes (micro nodes count once a macro is present)
    (4, 0, 0, "N2a"),
    (9, 0, 0, "N2a"),
    (5, 4, 0, "N2a"),
    (10, 0, 0, "N3a"),
    (1, 9, 0, "N3a"),
])
def test_breast_ajcc8(macro, micro, itc, expected):
    assert breast_n_stage(macro, micro, itc) == expected
    assert stage("breast", n_macro_nodes=macro, n_micro_nodes=micro, n_itc_nodes=itc) == expected


@pytest.mark.parametrize("macro,micro,itc,expected", [
    (0, 0, 0, "pN0"), (0, 0, 2, "pN0(i+)"), (0, 1, 0, "pN1mi"), (0, 4, 1, "pN1mi"), (1, 0, 0, "pN1"),
    (1, 2, 2, "pN1"), (3, 0, 0, "pN1"), (1, 3, 0, "pN2"), (4, 0, 0, "pN2"), (5, 0, 0, "pN2"), (10, 0, 0, "pN2"),
])
def test_camelyon17(macro, micro, itc, expected):
    assert camelyon17_n_stage(macro, micro, itc) == expected
    assert stage("camelyon17", n_macro_nodes=macro, n_micro_nodes=micro, n_itc_nodes=itc) == expected


def test_every_stage_is_reachable_and_errors():
    seen = {s: set() for s in STAGING_SYSTEMS}
    for n in range(0, 20):
        seen["gastric"].add(stage("gastric", n_metastatic_nodes=n))
        seen["colorectal"].add(stage("colorectal", n_metastatic_nodes=n))
        for micro in range(0, 12):
            for itc in (0, 1):
                for system in ("breast", "camelyon17"):
                    seen[system].add(stage(system, n_macro_nodes=n, n_micro_nodes=micro, n_itc_nodes=itc))
    for system in STAGING_SYSTEMS:
        assert seen[system] == set(STAGES[system]), system
    with pytest.raises(ValueError):
        n_stage(-1)
    with pytest.raises(ValueError, match="unknown staging system"):
        stage("lung", n_metastatic_nodes=1)
    with pytest.raises(ValueError, match="macro"):
        stage("breast", n_metastatic_nodes=1)


def test_stage_order_picks_the_system():
    assert stage_order(["N0", "N3b"]) == STAGES["gastric"]
    assert stage_order(["N0", "N1a", "N2b"]) == STAGES["colorectal"]
    assert stage_order(["N0(i+)", "N1mi"]) == STAGES["breast"]
    assert stage_order(["pN0", "pN2"]) == STAGES["camelyon17"]
    assert stage_order(["N4"]) is None


@pytest.mark.parametrize("n,m,neg,lnr,lt16", [(0, 0, 0, None, True), (15, 3, 12, 0.2, True), (16, 0, 16, 0.0, False),
                                              (16, 16, 0, 1.0, False), (30, 6, 24, 0.2, False)])
def test_node_markers(n, m, neg, lnr, lt16):
    r = node_markers(n, m)
    assert r["n_negative_nodes"] == neg
    assert r["lymph_node_ratio"] == (None if lnr is None else pytest.approx(lnr))
    assert r["lodds"] == pytest.approx(math.log((m + 0.5) / (neg + 0.5)))
    assert r["nodes_examined_lt16"] is lt16
    with pytest.raises(ValueError):
        node_markers(2, 3)


def _node(cat, met=None):
    area = 1.0
    tumour = {"negative": 0.0, "itc": 0.0001, "micro": 0.01, "macro": 0.5}[cat]
    return {"patient_id": "P", "slide_id": "S", "area_mm2": area, "tumour_area_mm2": tumour, "category": cat,
            "metastatic": cat in ("micro", "macro") if met is None else met}


def test_patient_row_stages_by_system_and_counts_categories():
    rows = [_node("macro"), _node("micro"), _node("micro"), _node("itc"), _node("negative")]
    r = {s: patient_row("P", rows, 1, s) for s in STAGING_SYSTEMS}
    assert r["gastric"]["n_stage"] == "N2" and r["colorectal"]["n_stage"] == "N1b"
    assert r["breast"]["n_stage"] == "N1a" and r["camelyon17"]["n_stage"] == "pN1"
    g = r["gastric"]
    assert (g["n_itc_nodes"], g["n_micro_nodes"], g["n_macro_nodes"]) == (1, 2, 1)
    assert g["n_negative_nodes"] == 2 and g["lymph_node_ratio"] == pytest.approx(3 / 5)
    assert g["lodds"] == pytest.approx(math.log(3.5 / 2.5)) and g["nodes_examined_lt16"] is True
    # --mln-rule any: the ITC node is metastatic for gastric counts, but breast staging keeps its categories
    rows_any = [dict(n, metastatic=n["category"] != "negative") for n in rows]
    assert patient_row("P", rows_any, 1, "gastric")["n_stage"] == "N2"
    assert patient_row("P", rows_any, 1, "gastric")["n_negative_nodes"] == 1
    assert patient_row("P", rows_any, 1, "breast")["n_stage"] == "N1a"
    with pytest.raises(ValueError, match="unknown staging system"):
        patient_row("P", rows, 1, "lung")
