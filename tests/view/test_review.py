"""The review list rules on hand-made node tables (tmln.view.review)."""

from __future__ import annotations

import numpy as np
import pytest
from shapely.geometry import box

from tmln.measure.staging import n_stage
from tmln.view.review import (cutoff_reason, deposit_map_stats, probability_reasons, review_list,
                              stage_reason)


def node(pid="P1", sid="S1", nid=1, ld=0.0, cat=None, met=None):
    from tmln.measure.staging import deposit_category, is_metastatic

    cat = cat or deposit_category(ld)
    met = is_metastatic(cat) if met is None else met
    return {"patient_id": pid, "slide_id": sid, "node_id": str(nid), "largest_deposit_mm": str(ld),
            "category": cat, "metastatic": "True" if met else "False", "area_mm2": "1.0",
            "tumour_area_mm2": "0.1"}


# ------------------------------------------------------------------ cut-off rule
@pytest.mark.parametrize("ld, flagged, cut", [
    (0.18, True, "0.2 mm"), (0.2, True, "0.2 mm"), (0.22, True, "0.2 mm"), (0.179, False, None),
    (0.221, False, None), (1.8, True, "2 mm"), (2.2, True, "2 mm"), (1.79, False, None), (2.21, False, None),
    (0.0, False, None), (1.0, False, None), (5.0, False, None),
])
def test_cutoff_rule_within_ten_percent(ld, flagged, cut):
    r = cutoff_reason(ld, "micro")
    assert (r is not None) == flagged
    if flagged:
        assert cut in r and f"{ld:.3g} mm" in r and "10 %" in r


def test_cutoff_reason_names_both_categories():
    assert "between ITC and micro" in cutoff_reason(0.19, "itc")
    assert "between micro and macro" in cutoff_reason(2.1, "macro")
    assert "(called macro)" in cutoff_reason(2.1, "macro")


# ------------------------------------------------------------------ probability rule
def test_probability_rule_needs_half_of_the_deposit_near_the_threshold():
    near = {"near_fraction": 0.62, "threshold": 0.5, "index": 2, "area_mm2": 0.031}
    far = {"near_fraction": 0.2, "threshold": 0.5, "index": 1}
    out = probability_reasons([far, near])
    assert len(out) == 1
    assert "62 %" in out[0] and "deposit 2" in out[0] and "threshold 0.5" in out[0]
    assert probability_reasons([{"near_fraction": None, "threshold": 0.5}]) == []
    assert len(probability_reasons([{"near_fraction": 0.5, "threshold": 0.66}])) == 1


def test_deposit_map_stats_counts_cells_inside_each_deposit():
    # map of 0.1 everywhere, 0.55 in the left half; cells of 10 level-0 px, origin (100, 50)
    prob = np.full((20, 20), 0.1, np.float32)
    prob[:, :10] = 0.55
    prob[0, :] = np.nan
    place = {"x": 100.0, "y": 50.0, "width": 200.0, "height": 200.0, "threshold": 0.5}
    deps = [(1, box(100, 60, 200, 160), 0.01),  # all in the 0.55 half: near the threshold
            (1, box(200, 60, 300, 160), 0.01),  # all 0.1: not near
            (2, box(150, 60, 250, 160), None),  # half and half
            (3, box(101, 61, 103, 63), None)]  # smaller than a cell: the cell under its centroid
    st = deposit_map_stats(prob, place, deps)
    assert [d["near_fraction"] for d in st[1]] == [1.0, 0.0]
    assert [d["index"] for d in st[1]] == [1, 2]
    assert st[2][0]["near_fraction"] == pytest.approx(0.5)
    assert st[3][0]["near_fraction"] == 1.0 and st[3][0]["cells"] == 1
    assert st[1][0]["cells"] == 100


def test_deposit_outside_the_map_gives_no_fraction():
    prob = np.full((5, 5), 0.5, np.float32)
    st = deposit_map_stats(prob, {"x": 0, "y": 0, "width": 50, "height": 50, "threshold": 0.5},
                           [(1, box(500, 500, 600, 600), None)])
    assert st[1][0]["near_fraction"] is None
    assert probability_reasons(st[1]) == []


# ------------------------------------------------------------------ N-stage rule
def _restaged(nodes, i):
    """The rule's definition, by hand: flip node i's call and restage with tmln.measure.staging."""
    count = sum(r["metastatic"] == "True" for r in nodes)
    flipped = count - 1 if nodes[i]["metastatic"] == "True" else count + 1
    return n_stage(count), n_stage(flipped)


def test_stage_rule_single_metastasis_n1_to_n0():
    nodes = [node(nid=1, ld=0.5), node(nid=2), node(nid=3)]
    r = stage_reason(nodes[0], nodes, patient_id="P1")
    assert r == "calling this node not metastatic would change patient P1 from N1 to N0"
    assert _restaged(nodes, 0) == ("N1", "N0")
    # tumour-free nodes are not weighed (each would be, in an N0 patient)
    assert stage_reason(nodes[1], nodes) is None


def test_stage_rule_itc_node_would_raise_the_stage():
    nodes = [node(nid=1, ld=0.1), node(nid=2)]  # ITC only: N0
    r = stage_reason(nodes[0], nodes, "ajcc", "P1")
    assert "metastatic would change patient P1 from N0 to N1" in r and "ITC" in r


@pytest.mark.parametrize("n_met, expect", [(1, True), (2, False), (3, True), (4, False), (6, False), (7, True),
                                           (15, False), (16, True)])
def test_stage_rule_at_the_n_stage_boundaries(n_met, expect):
    nodes = [node(nid=i + 1, ld=1.0) for i in range(n_met)] + [node(nid=99, ld=0.0)]
    got = stage_reason(nodes[0], nodes) is not None
    s0, s1 = _restaged(nodes, 0)
    assert got == expect == (s0 != s1)


def test_stage_rule_for_an_itc_node_one_below_a_boundary():
    # two metastatic nodes (N1) + an ITC node: calling it metastatic makes 3 -> N2
    nodes = [node(nid=1, ld=1.0), node(nid=2, ld=3.0), node(nid=3, ld=0.15)]
    assert "from N1 to N2" in stage_reason(nodes[2], nodes)
    # under the "any" rule the ITC node is already metastatic: N2; not metastatic -> N1
    anyr = [node(nid=1, ld=1.0), node(nid=2, ld=3.0), node(nid=3, ld=0.15, met=True)]
    assert "not metastatic would change the patient from N2 to N1" in stage_reason(anyr[2], anyr, "any")


# ------------------------------------------------------------------ the list
def test_review_list_combines_rules_orders_and_skips_unstaged_patients():
    nodes = [
        node("P1", "S1", 1, 1.0), node("P1", "S1", 2, 0.0),  # P1: N1 by node 1
        node("P1", "S2", 1, 0.21),  # micro near the 0.2 cut -> P1 has 2 MLN; node 1 no longer alone
        node("P2", "S3", 1, 5.0), node("P2", "S3", 2, 1.0), node("P2", "S3", 3, 1.2),  # N2 (3): each flip -> N1
        node("P3", "S4", 1, 0.19),  # patient not staged (failed slide): no stage reason, cut-off still
    ]
    patients = [{"patient_id": "P1", "n_stage": "N1"}, {"patient_id": "P2", "n_stage": "N2"},
                {"patient_id": "P3", "n_stage": ""}]
    stats = {("S3", 2): [{"near_fraction": 0.8, "threshold": 0.5, "index": 1}]}
    out = review_list(nodes, patients, stats)
    keys = [(r["slide_id"], r["node_id"]) for r in out]
    assert keys[0] == ("S3", 2)  # two reasons first
    assert [x["rule"] for x in out[0]["reasons"]] == ["probability", "n_stage"]
    assert set(keys) == {("S3", 1), ("S3", 2), ("S3", 3), ("S2", 1), ("S4", 1)}
    s2 = next(r for r in out if r["slide_id"] == "S2")
    assert [x["rule"] for x in s2["reasons"]] == ["cutoff"]  # 2 MLN -> 1 MLN: still N1
    s4 = next(r for r in out if r["slide_id"] == "S4")
    assert [x["rule"] for x in s4["reasons"]] == ["cutoff"]
    for r in out:
        assert r["reasons"] and all(x["text"] for x in r["reasons"])


def test_review_list_empty_when_nothing_is_borderline():
    nodes = [node(nid=1, ld=0.0), node(nid=2, ld=0.0)]
    assert review_list(nodes, [{"patient_id": "P1", "n_stage": "N0"}]) == []
