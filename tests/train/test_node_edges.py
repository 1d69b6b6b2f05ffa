"""Edge patches from outlines and the node-edge classifier trained on them (tmln.train.node_edges): patches centred
on node outlines vs other tissue's outlines, a slide-level split, a card the node-edge check loads."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tmln.models.card import read_card
from tmln.nodes.edges import TASK, EdgeChecker
from tmln.phantom import make_slide
from tmln.phantom.geometry import SlideSpec
from tmln.train.node_edges import EdgeSource, edge_patches, train_node_edges


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """Three small procedural perinodal phantoms (2 µm/px) with their node and non-node outlines."""
    d = tmp_path_factory.mktemp("edge-slides")
    out = []
    for seed in (11, 12, 13):
        ph = make_slide(d / f"e{seed}.tiff", SlideSpec(seed=seed, size_mm=(4.0, 3.0), mpp=2.0, perinodal=True))
        out.append(EdgeSource(ph.path, f"e{seed}", ph.layout.nodes, ph.layout.other))
    return out


def test_edge_patches_lie_on_the_outlines_they_are_labelled_by(sources, tmp_path):
    out = edge_patches(tmp_path / "edges", sources, mpp=8.0, patch_size=24, per_class=12, jitter_um=0.0)
    groups = pd.read_csv(out / "groups.csv")
    assert set(groups["group"]) == {"e11", "e12", "e13"}
    assert (groups["kind"] == "node").sum() == len(list((out / "positive").glob("*.png")))
    assert set(groups.loc[groups["kind"] != "node", "kind"]) <= {"stroma", "carcinoma", "muscle"}
    assert groups.groupby(["group", "kind"]).size().max() <= 12 * 2  # per_class per slide and class
    settings = json.loads((out / "edge_patches.json").read_text())
    assert settings["mpp"] == 8.0 and settings["patch_size"] == 24 and settings["patches"]["node"] > 0
    # no temporary folder is left behind; a rerun replaces the folder whole
    assert not (tmp_path / "edges.tmp").exists()
    again = edge_patches(tmp_path / "edges", sources[:1], mpp=8.0, patch_size=24, per_class=4)
    assert set(pd.read_csv(again / "groups.csv")["group"]) == {"e11"}


def test_no_outline_inside_the_slides_is_an_error(sources, tmp_path):
    empty = [EdgeSource(sources[0].slide, "x", [], [])]
    with pytest.raises(ValueError, match="no edge patch"):
        edge_patches(tmp_path / "none", empty)
    assert not (tmp_path / "none").exists()


def test_trained_card_is_a_node_edge_classifier_the_checker_loads(sources, tmp_path):
    patches = edge_patches(tmp_path / "edges", sources, mpp=8.0, patch_size=32, per_class=16)
    card = train_node_edges(tmp_path / "m", patches, epochs=1, batch_size=8, val_fraction=0.34, device="cpu")
    assert card.task == TASK and card.classes == ["other_edge", "node_edge"]
    assert card.mpp == 8.0 and card.patch_size == 32 and card.params["step_um"] == 100.0
    assert card.training["edge_patches"]["patches"]["node"] > 0
    assert read_card(tmp_path / "m").to_dict() == card.to_dict()
    # validation patches come from other slides than training patches
    data = card.training["data"]
    assert not set(data["train"]["groups"]) & set(data["validation"]["groups"])
    checker = EdgeChecker(tmp_path / "m", device="cpu")
    from tmln.slide import Slide

    with Slide(sources[0].slide) as s:
        scores = checker.scores(s, sources[0].nodes)
    assert len(scores) == len(sources[0].nodes) and all(v is None or 0.0 <= v <= 1.0 for v in scores)
    assert np.isfinite([v for v in scores if v is not None]).all()


def test_no_negative_kind_is_more_than_its_share(sources, tmp_path):
    from shapely.geometry import box

    # a carcinoma outline beside the slides' stroma (islands, septa, vessels) to balance against
    mixed = [EdgeSource(s.slide, s.group, s.nodes, [*s.other, ("carcinoma", box(600, 500, 1100, 1000))]) for s in sources]
    out = edge_patches(tmp_path / "edges", mixed, mpp=8.0, patch_size=24, per_class=40, max_share={"stroma": 0.5})
    neg = pd.read_csv(out / "groups.csv").query("kind != 'node'")
    assert set(neg["kind"]) == {"stroma", "carcinoma"} and (neg["kind"] == "stroma").mean() <= 0.5
    assert len(list((out / "negative").glob("*.png"))) == len(neg)  # dropped patches are deleted, not just unlisted
    # a kind that is all the negatives there are is kept whole
    only = edge_patches(tmp_path / "only", sources, mpp=8.0, patch_size=24, per_class=40, max_share={"stroma": 0.5})
    assert (pd.read_csv(only / "groups.csv")["kind"] == "stroma").sum() > 0
