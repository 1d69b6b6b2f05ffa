"""The node-edge check (tmln.nodes.edges): outline sampling, the segmenter dropping instances whose outline does not
read as a node's edge, the card naming the edge model (the bundled node models name none)."""

from __future__ import annotations

import numpy as np
import pytest
from shapely.geometry import Point, box

from tmln.errors import ModelCardError
from tmln.models.card import read_card
from tmln.nodes import edges as E
from tmln.nodes.infer import NodeSegmenter
from tmln.phantom import make_slide
from tmln.phantom.geometry import SlideSpec
from tmln.slide import Slide


def test_outline_points_are_evenly_spaced_on_the_outline():
    sq = box(0, 0, 400, 400)
    pts = E.outline_points(sq, 100.0, 64)
    assert len(pts) == 16
    assert np.allclose([sq.exterior.distance(Point(p)) for p in pts], 0)
    assert len(E.outline_points(sq, 1.0, 64)) == 64  # capped
    assert len(E.outline_points(box(0, 0, 10, 10), 100.0, 64)) == 4  # at least four


class _FakeSlide:
    dimensions = (1000, 600)  # level-0 px at 2 µm/px: 2 x 1.2 mm
    mpp_x_required = mpp_y_required = 2.0


def test_points_near_the_slide_border_are_left_out():
    pts = np.array([(60, 300), (59, 300), (500, 60), (500, 539), (500, 540), (939, 300), (940, 300)])
    ok = E.away_from_border(pts, _FakeSlide(), 120.0)  # 120 µm = 60 px from every border
    assert ok.tolist() == [True, False, True, True, False, True, False]
    assert E.away_from_border([], _FakeSlide(), 120.0).shape == (0,)


class _Scores:
    """An edge checker whose scores are given (the segmenter's bookkeeping is what is tested here)."""

    def __init__(self, scores):
        self._scores = scores
        self.seen = None

    def scores(self, slide, polygons):
        self.seen = polygons
        return self._scores


def test_segmenter_drops_instances_under_the_edge_threshold_and_renumbers(tmp_path):
    ph = make_slide(tmp_path / "s.tiff", SlideSpec(seed=3, size_mm=(2.0, 2.0), mpp=2.0))
    seg = NodeSegmenter("pcam-nodes", device="cpu")
    labels = np.zeros((100, 100), np.int32)
    labels[10:30, 10:30], labels[40:60, 40:60], labels[70:90, 10:30] = 1, 2, 3
    seg.edges, seg.min_edge_score = _Scores([0.9, 0.2, None]), 0.5
    with Slide(ph.path) as s:
        kept, info = seg.check_edges(s, labels)
    assert len(seg.edges.seen) == 3
    # instance 2 (score 0.2) is gone; instance 3 (no point to read: None) stays; labels are 1..n again
    assert set(np.unique(kept)) == {0, 1, 2} and (kept[40:60, 40:60] == 0).all() and (kept[70:90, 10:30] == 2).all()
    assert info["removed"] == 1 and info["scores"] == [0.9, 0.2, None] and info["min_edge_score"] == 0.5


def _edge_model(path):
    """An untrained node-edge classifier directory (what the segmenter loads is tested, not what it scores)."""
    from tmln.models.card import ModelCard, save_model_dir
    from tmln.models.classifier import build_classifier

    card = ModelCard(task=E.TASK, architecture="resnet18", mpp=8.0, patch_size=32, classes=["other_edge", "node_edge"],
                     params={"num_outputs": 1, "step_um": 200.0})
    return save_model_dir(path, build_classifier("resnet18").state_dict(), card)


def _node_model(path, **params):
    from tmln.models.card import load_state_dict, save_model_dir

    card = read_card("demo-nodes")
    card.params = {**card.params, **params}
    return save_model_dir(path, load_state_dict("demo-nodes"), card)


def test_edge_check_is_named_by_the_card_and_can_be_turned_off(tmp_path):
    _edge_model(tmp_path / "edges")
    named = _node_model(tmp_path / "nodes", edge_model="../edges", min_edge_score=0.5)  # relative to the node model
    seg = NodeSegmenter(named, device="cpu")
    assert seg.edges is not None and seg.edges.step_um == 200.0 and seg.min_edge_score == 0.5
    assert NodeSegmenter(named, device="cpu", params={"min_edge_score": 0}).edges is None
    assert NodeSegmenter("pcam-nodes", device="cpu").edges is None  # the bundled models check no edges
    # a card naming an edge model that is not there: the error names it
    missing = _node_model(tmp_path / "nodes2", edge_model="no-such-edges", min_edge_score=0.5)
    with pytest.raises(ModelCardError, match="no-such-edges"):
        NodeSegmenter(missing, device="cpu")
    # a tumour classifier is not an edge model
    wrong = _node_model(tmp_path / "nodes3", edge_model="demo-tumour", min_edge_score=0.5)
    with pytest.raises(ModelCardError, match="node-edge-classifier"):
        NodeSegmenter(wrong, device="cpu")


def test_node_map_runs_the_check_and_reports_every_score(tmp_path):
    _edge_model(tmp_path / "edges")
    named = _node_model(tmp_path / "nodes", edge_model=str(tmp_path / "edges"), min_edge_score=1.0)
    ph = make_slide(tmp_path / "s.tiff", SlideSpec(seed=5, size_mm=(4.0, 3.0), mpp=2.0))
    with Slide(ph.path) as s:
        open_ = NodeSegmenter("demo-nodes", device="cpu").node_map(s)
        checked = NodeSegmenter(named, device="cpu").node_map(s)
    n = int(open_.labels.max())
    assert n > 0 and "edge_check" not in open_.info
    info = checked.info["edge_check"]
    # a threshold of 1 drops every instance with a point to read; those without one stay
    assert len(info["scores"]) == n and info["removed"] == sum(v is not None for v in info["scores"])
    assert int(checked.labels.max()) == n - info["removed"]
