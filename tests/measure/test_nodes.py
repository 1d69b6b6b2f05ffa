import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from shapely.geometry import Polygon, box

from tmln.measure.nodes import is_sliver, max_feret_mm, measure_slide, resolve_overlaps
from tmln.measure.staging import NODE_COLUMNS

MPP = 0.5  # µm/px


def test_areas_deposit_and_category_exact():
    # node 2000 px square = 1000 µm = 1 mm side -> 1 mm²; tumour 1000 px = 0.5 mm side
    m = measure_slide([box(0, 0, 2000, 2000)], [box(500, 500, 1500, 1500)], MPP, MPP, patient_id="P", slide_id="S")
    (r,) = m.rows
    assert list(r) == NODE_COLUMNS
    assert r["area_mm2"] == pytest.approx(1.0)
    assert r["tumour_area_mm2"] == pytest.approx(0.25)
    assert r["tumour_fraction"] == pytest.approx(0.25)
    assert r["largest_deposit_mm"] == pytest.approx(0.5 * math.sqrt(2))
    assert r["category"] == "micro" and r["metastatic"] is True
    assert (r["centroid_x_um"], r["centroid_y_um"]) == pytest.approx((500.0, 500.0))
    assert m.summary["extranodal_tumour_area_mm2"] == 0


def test_anisotropic_mpp_feret_and_area():
    # 100 x 100 px with mpp (0.5, 0.25) -> 50 x 25 µm
    g = box(0, 0, 100, 100)
    assert max_feret_mm(g, 0.5, 0.25) == pytest.approx(math.hypot(50, 25) / 1000)
    m = measure_slide([box(0, 0, 1000, 1000)], [g], 0.5, 0.25)
    assert m.rows[0]["area_mm2"] == pytest.approx(500 * 250 / 1e6)
    assert m.rows[0]["tumour_area_mm2"] == pytest.approx(50 * 25 / 1e6)


def test_feret_of_rotated_and_concave_shapes():
    from shapely import affinity

    # an L shape: the greatest dimension joins the tips of its arms
    ell = Polygon([(0, 0), (100, 0), (100, 10), (10, 10), (10, 100), (0, 100)])
    assert max_feret_mm(ell, 1.0, 1.0) == pytest.approx(math.hypot(100, 100) / 1000)
    bar = affinity.rotate(box(0, 0, 300, 40), 33, origin=(0, 0))
    assert max_feret_mm(bar, 2.0, 2.0) == pytest.approx(2 * math.hypot(300, 40) / 1000)
    assert max_feret_mm(Polygon(), 1.0, 1.0) == 0.0


@pytest.mark.parametrize("side_um,category", [(5.0, "itc"), (0.2 / math.sqrt(2) * 1000 - 0.01, "itc"),
                                               (0.2 / math.sqrt(2) * 1000 + 0.5, "micro"),
                                               (2.0 / math.sqrt(2) * 1000 + 1, "macro")])
def test_category_thresholds_by_greatest_dimension(side_um, category):
    s = side_um / MPP
    m = measure_slide([box(0, 0, 10000, 10000)], [box(100, 100, 100 + s, 100 + s)], MPP, MPP)
    assert m.rows[0]["category"] == category


def test_several_deposits_and_extranodal_tumour():
    nodes = [box(0, 0, 1000, 1000), box(2000, 0, 3000, 1000)]
    tumour = [box(100, 100, 200, 200), box(500, 500, 800, 900),  # two deposits in node 1
              box(900, 400, 2100, 600)]  # spans node 1, gap, node 2
    m = measure_slide(nodes, tumour, 1.0, 1.0)
    r1, r2 = m.rows
    assert len([d for d in m.deposits if d.node_id == 1]) == 3
    assert r1["largest_deposit_mm"] == pytest.approx(math.hypot(300, 400) / 1000)
    assert r2["tumour_area_mm2"] == pytest.approx(100 * 200 / 1e6)
    assert m.summary["extranodal_tumour_area_mm2"] == pytest.approx(1000 * 200 / 1e6)
    assert m.summary["n_deposits"] == 4


def test_node_ids_ordered_by_centroid_y_then_x():
    nodes = [box(500, 500, 600, 600), box(0, 0, 10, 10), box(300, 0, 310, 10), box(0, 500, 100, 600)]
    m = measure_slide(nodes, [], 1.0, 1.0)
    assert [(r["centroid_x_um"], r["centroid_y_um"]) for r in m.rows] == [(5, 5), (305, 5), (50, 550), (550, 550)]
    assert [r["node_id"] for r in m.rows] == [1, 2, 3, 4]


def test_overlapping_nodes_overlap_goes_to_larger_and_contained_dropped():
    big, small, inner = box(0, 0, 100, 100), box(80, 0, 120, 40), box(10, 10, 20, 20)
    resolved, notes = resolve_overlaps([small, big, inner])
    assert len(resolved) == 2
    assert resolved[0].area == pytest.approx(20 * 40)  # small lost its 20 x 40 overlap
    assert resolved[1].area == pytest.approx(100 * 100)
    assert len(notes) == 2
    m = measure_slide([small, big, inner], [box(85, 5, 95, 15)], 1.0, 1.0)
    assert m.summary["node_area_mm2"] == pytest.approx((100 * 100 + 20 * 40) / 1e6)
    assert m.summary["tumour_area_mm2"] == pytest.approx(100 / 1e6)  # counted once, in the larger node
    assert m.notes


def test_touching_outlines_make_no_fake_deposit():
    # tumour drawn up to node 1's edge overshoots by 1e-3 px into node 2 (rounding on export)
    nodes = [box(0, 0, 1000, 1000), box(1000, 0, 2000, 1000)]
    tumour = [box(200, 200, 1000.001, 800)]
    m = measure_slide(nodes, tumour, 0.5, 0.5)
    assert m.rows[1]["category"] == "negative" and m.rows[1]["tumour_area_mm2"] == 0
    assert m.summary["extranodal_tumour_area_mm2"] == 0
    assert is_sliver(box(0, 0, 0.001, 500)) and not is_sliver(box(0, 0, 2, 2))


def test_mln_rule_any_counts_itc():
    nodes, tumour = [box(0, 0, 1000, 1000)], [box(10, 10, 20, 20)]
    assert measure_slide(nodes, tumour, 1.0, 1.0, mln_rule="ajcc").rows[0]["metastatic"] is False
    assert measure_slide(nodes, tumour, 1.0, 1.0, mln_rule="any").rows[0]["metastatic"] is True
    with pytest.raises(ValueError):
        measure_slide(nodes, tumour, 1.0, 1.0, mln_rule="bogus")


def test_node_with_hole_excludes_hole_area():
    node = Polygon([(0, 0), (100, 0), (100, 100), (0, 100)], [[(40, 40), (60, 40), (60, 60), (40, 60)]])
    m = measure_slide([node], [box(30, 30, 70, 70)], 1.0, 1.0)
    assert m.rows[0]["area_mm2"] == pytest.approx((10000 - 400) / 1e6)
    assert m.rows[0]["tumour_area_mm2"] == pytest.approx((1600 - 400) / 1e6)


rect = st.tuples(st.integers(0, 900), st.integers(0, 900), st.integers(5, 300), st.integers(5, 300))


@settings(max_examples=40, deadline=None)
@given(st.lists(rect, min_size=1, max_size=4), st.lists(rect, min_size=0, max_size=4))
def test_tumour_is_conserved(node_rects, tumour_rects):
    """Tumour inside nodes + extranodal tumour = all tumour; no node has more tumour than area."""
    from shapely.ops import unary_union

    nodes = [box(x, y, x + w, y + h) for x, y, w, h in node_rects]
    tumour = [box(x, y, x + w, y + h) for x, y, w, h in tumour_rects]
    m = measure_slide(nodes, tumour, 0.5, 0.5)
    total = unary_union(tumour).area * 0.25 / 1e6 if tumour else 0.0
    inside = sum(r["tumour_area_mm2"] for r in m.rows)
    assert inside + m.summary["extranodal_tumour_area_mm2"] == pytest.approx(total, rel=1e-9, abs=1e-12)
    assert all(r["tumour_area_mm2"] <= r["area_mm2"] * (1 + 1e-12) for r in m.rows)
    assert m.summary["node_area_mm2"] == pytest.approx(unary_union(nodes).area * 0.25 / 1e6, rel=1e-9)
