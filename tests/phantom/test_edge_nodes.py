"""Nodes cut by the slide's edge (``SlideSpec.edge_nodes``): partial nodes, as where a section ends."""

from __future__ import annotations

import numpy as np
import pytest

from tmln.phantom.geometry import SlideSpec, make_layout
from tmln.phantom.render import SlideRenderer
from tmln.phantom.texture import CAPSULE_BY_ORIENTATION


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_edge_nodes_are_cut_by_the_slide_and_leave_the_other_nodes_alone(seed):
    spec = dict(seed=seed, size_mm=(6.0, 4.5), mpp=2.0)
    plain = make_layout(SlideSpec(**spec))
    cut = make_layout(SlideSpec(**spec, edge_nodes=2))
    assert plain.edge_cut == []
    assert {p.wkb for p in plain.nodes} <= {p.wkb for p in cut.nodes}  # the other nodes, unchanged
    assert len(cut.nodes) == len(plain.nodes) + len(cut.edge_cut) and 1 <= len(cut.edge_cut) <= 2
    for k in cut.edge_cut:
        node = cut.nodes[k]
        x0, y0, x1, y1 = node.bounds
        assert min(x0, y0) <= 0.125 or x1 >= cut.width - 0.125 or y1 >= cut.height - 0.125  # on the edge
        assert node.is_valid and node.geom_type == "Polygon"
        assert 0 <= x0 and 0 <= y0 and x1 <= cut.width and y1 <= cut.height  # clipped to the slide
        for j, other in enumerate(cut.nodes):
            if j != k:
                assert not node.intersects(other)
        assert cut.fat.distance(node) < 1.0  # fat around it, up to the edge


def test_no_capsule_along_the_cut():
    """The section ends at the slide's edge: no capsule is painted along a cut node's cut side, while
    its other sides keep theirs."""
    capsule = np.asarray(CAPSULE_BY_ORIENTATION)
    for seed in range(1, 20):
        lay = make_layout(SlideSpec(seed=seed, size_mm=(4.0, 3.0), mpp=2.0, edge_nodes=1))
        if not lay.edge_cut:
            continue
        node = lay.nodes[lay.edge_cut[0]]
        x0, y0, x1, y1 = node.bounds
        lab = SlideRenderer(lay).labels(1, 0, 0, lay.width, lay.height)
        if x0 <= 0.125:
            edge = lab[int(y0) + 20 : int(y1) - 20, 0]
        elif y0 <= 0.125:
            edge = lab[0, int(x0) + 20 : int(x1) - 20]
        elif x1 >= lay.width - 0.125:
            edge = lab[int(y0) + 20 : int(y1) - 20, -1]
        else:
            edge = lab[-1, int(x0) + 20 : int(x1) - 20]
        assert edge.size and not np.isin(edge, capsule).any()
        assert np.isin(lab, capsule).any()  # capsules elsewhere
        return
    pytest.fail("no seed gave an edge node")


def test_cohort_counts_the_cut_nodes_in_its_truth(tmp_path):
    import json

    import pandas as pd
    from click.testing import CliRunner

    from tmln.cli import main

    r = CliRunner().invoke(main, ["phantom", str(tmp_path / "cut"), "--patients", "1", "--size-mm", "3", "2.5",
                                  "--mpp", "2.0", "--seed", "4", "--edge-nodes", "2"])
    assert r.exit_code == 0, r.output
    plain = CliRunner().invoke(main, ["phantom", str(tmp_path / "plain"), "--patients", "1", "--size-mm", "3", "2.5",
                                      "--mpp", "2.0", "--seed", "4"])
    assert plain.exit_code == 0, plain.output
    n = {k: len(pd.read_csv(tmp_path / k / "truth_nodes.csv")) for k in ("cut", "plain")}
    features = json.loads((tmp_path / "cut" / "P001_S01.nodes.geojson").read_text())["features"]
    assert n["cut"] == len(features) > n["plain"]
