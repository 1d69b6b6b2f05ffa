"""The bundled node model ``pcam-nodes``: its card, nodes found where there are nodes (phantoms of
unseen seeds) and none in perinodal fat with septa, vessels and islands (the failure of ``demo-nodes``
on real slides); with ../shared present, also on phantoms textured from real PCam patches it never saw.

Known failures, measured and documented rather than asserted (benchmarks/results/pcam_nodes.md): it
calls some carcinoma masses and the carcinoma band of gastric-wall phantoms nodes, and two small
regions of the real CMU heart section."""

from __future__ import annotations

from pathlib import Path

import pytest

from tmln.models.card import list_bundled, read_card
from tmln.nodes import regions_from_model
from tmln.evaluate.nodes import evaluate_slide, pooled
from tmln.phantom import make_slide
from tmln.phantom.geometry import SlideSpec

NAME = "pcam-nodes"
PCAM = Path(__file__).resolve().parents[3] / "shared" / "data" / "pcam"
# unseen seeds: training used make_cohort seeds 3000/3001, the script's tests 3100+ (scripts/train_real_nodes.py)
SEEDS = (7001, 7002)


@pytest.fixture(scope="module")
def card():
    return read_card(NAME)


def test_card_says_what_it_was_trained_and_tested_on(card):
    assert NAME in list_bundled()
    assert card.task == "node-segmentation" and card.mpp == 8.0 and card.classes == ["node", "node_core"]
    use = card.intended_use
    assert "NOT FOR DIAGNOSIS" in use and "gastric" in use and "--init pcam-nodes" in use
    assert "PCam" in card.training["data"] and card.training["non_node_crops"] > 0
    stats = card.training["appearance"]
    assert stats["patch_size"] == 64 and stats["n_patches"] > 1000 and "training slides" in stats["reference"]
    held = card.metrics["held_out"]
    assert {"real", "procedural", "sections"} <= set(held)
    assert card.metrics["tested_on"] and card.metrics["not_tested_on"]


def _score(tmp_path, spec: SlideSpec) -> dict:
    ph = make_slide(tmp_path / f"s{spec.seed}{spec.section}.tiff", spec)
    pred = regions_from_model(ph.path, NAME)
    return evaluate_slide(ph.layout.nodes, pred)


def _pooled(results: list[dict]) -> tuple[float, float, float]:
    p = pooled(results)
    return p["dice"], p["precision"], p["recall"]


def test_finds_the_nodes_of_procedural_phantoms_it_never_saw(tmp_path):
    """Measured: Dice 0.98, 7 of 7 nodes found, one extra region (precision 0.875)."""
    res = [_score(tmp_path, SlideSpec(seed=s, size_mm=(8.0, 6.0), mpp=2.0, perinodal=True)) for s in SEEDS]
    dice, precision, recall = _pooled(res)
    assert dice >= 0.95 and recall >= 0.95 and precision >= 0.8, (dice, precision, recall)


def test_no_node_in_fibro_fatty_tissue_where_demo_nodes_finds_many(tmp_path):
    """Fat with septa, vessels and connective-tissue islands, no node: what real slides hold."""
    ph = make_slide(tmp_path / "ff.tiff", SlideSpec(seed=7010, size_mm=(6.0, 4.5), mpp=2.0, section="fibrofatty"))
    assert regions_from_model(ph.path, NAME) == []
    assert len(regions_from_model(ph.path, "demo-nodes")) >= 3


def test_far_fewer_false_nodes_than_demo_nodes_on_node_free_sections(tmp_path):
    found = {m: 0 for m in (NAME, "demo-nodes")}
    for kind in ("carcinoma", "muscle", "fibrofatty"):
        ph = make_slide(tmp_path / f"{kind}.tiff", SlideSpec(seed=7010, size_mm=(6.0, 4.5), mpp=2.0, section=kind))
        for m in found:
            found[m] += len(regions_from_model(ph.path, m))
    assert found[NAME] <= 4 and found["demo-nodes"] >= 4 * max(1, found[NAME]), found  # measured 3 vs 21


@pytest.mark.skipif(not PCAM.is_dir(), reason="../shared/data/pcam absent")
def test_real_textured_phantoms_from_patches_it_never_saw(tmp_path):
    """Textures from PCam valid/ (training used train/): nodes found, and none on node-free sections."""
    valid = str(PCAM / "valid")
    res = [_score(tmp_path, SlideSpec(seed=s, size_mm=(8.0, 6.0), mpp=2.0, perinodal=True, textures=valid))
           for s in SEEDS]
    dice, precision, recall = _pooled(res)
    assert dice >= 0.95 and precision >= 0.95 and recall >= 0.95, (dice, precision, recall)
    for kind in ("fibrofatty", "muscle"):
        r = _score(tmp_path, SlideSpec(seed=7020, size_mm=(6.0, 4.5), mpp=2.0, section=kind, textures=valid))
        assert r["n_pred"] == 0, (kind, r)
