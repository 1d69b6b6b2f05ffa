"""The bundled node model ``pcam-nodes``: its card, nodes found where there are nodes (phantoms of
unseen seeds) and none in perinodal fat with septa, vessels and islands (the failure of ``demo-nodes``
on real slides); with ../shared present, also on phantoms textured from real PCam patches it never saw.

Known failures, measured and documented rather than asserted (benchmarks/results/pcam_nodes.md,
docs/node-segmentation.md): a node almost wholly replaced by carcinoma (≥ 90 % of its area) can fall under
the card's ``min_node_probability`` and be lost, as one of the seven procedural nodes here is; a carcinoma
mass outside nodes is now and then called a node."""

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
    assert card.task == "node-segmentation" and card.mpp == 4.0 and card.classes == ["node", "node_core"]
    use = card.intended_use
    assert "NOT FOR DIAGNOSIS" in use and "gastric" in use and "--init pcam-nodes" in use
    assert "PCam" in card.training["data"] and card.training["non_node_crops"] > 0
    # a node replaced by carcinoma is still a node: crops on the metastases inside nodes, from their outlines
    assert card.training["metastasis_crops"] > 0 and card.training["slides_with_tumour_outlines"] > 0
    stats = card.training["appearance"]
    assert stats["patch_size"] == 64 and stats["n_patches"] > 1000 and "training slides" in stats["reference"]
    held = card.metrics["held_out"]
    assert {"real", "procedural", "sections"} <= set(held)
    assert card.metrics["tested_on"] and card.metrics["not_tested_on"]
    # the second draw of unseen phantoms (benchmarks/pcam_nodes_second_draw.py) travels with the model too
    second = card.metrics["second_draw"]
    assert {"real", "procedural", "procedural-perinodal", "sections"} == set(second)
    assert any("second draw" in t for t in card.metrics["tested_on"]) and second["real"]["n_truth"] > 0
    third = card.metrics["third_draw"]  # seeds 3500+: drawn to decide on the node-edge check, reported for the model
    assert set(third) == set(second) and any("third draw" in t for t in card.metrics["tested_on"])
    for name in ("fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth", "eleventh", "twelfth",
                 "thirteenth"):  # seeds 3600+ to 4500+: drawn to decide on changes, reported for the model
        assert set(card.metrics[f"{name}_draw"]) == set(second)
        assert any(f"{name} draw" in t for t in card.metrics["tested_on"])


REPLACED = 0.9  # a node with at least this share of its area outlined as tumour: "replaced by carcinoma"


def _score(tmp_path, spec: SlideSpec) -> dict:
    ph = make_slide(tmp_path / f"s{spec.seed}{spec.section}.tiff", spec)
    pred = regions_from_model(ph.path, NAME)
    res = evaluate_slide(ph.layout.nodes, pred)
    tumour = [0.0] * len(ph.layout.nodes)
    for poly, k in zip(ph.layout.tumour, ph.layout.tumour_node):
        tumour[k] += poly.area / ph.layout.nodes[k].area
    found = {m["truth_id"] - 1 for m in res["_matches"]}  # 1-based
    res["kept_nodes"] = [i for i, f in enumerate(tumour) if f < REPLACED]
    res["kept_found"] = [i for i in res["kept_nodes"] if i in found]
    return res


def _pooled(results: list[dict]) -> tuple[float, float, float, float]:
    """Dice, precision, recall over all nodes and recall over the nodes not replaced by carcinoma."""
    p = pooled(results)
    kept = sum(len(r["kept_nodes"]) for r in results)
    return p["dice"], p["precision"], p["recall"], sum(len(r["kept_found"]) for r in results) / kept


def test_finds_the_nodes_of_procedural_phantoms_it_never_saw(tmp_path):
    """Measured: Dice 0.97, no extra region, 6 of 7 nodes found; the one lost is 96 % carcinoma (its mean node
    probability is under the card's 0.9)."""
    res = [_score(tmp_path, SlideSpec(seed=s, size_mm=(8.0, 6.0), mpp=2.0, perinodal=True)) for s in SEEDS]
    dice, precision, recall, recall_kept = _pooled(res)
    assert sum(len(r["kept_nodes"]) for r in res) >= 6  # the check below is about most of the nodes
    assert dice >= 0.95 and precision >= 0.95 and recall_kept >= 0.95 and recall >= 0.85, (dice, precision, recall)


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
    assert found[NAME] <= 1 and found["demo-nodes"] >= 4 * max(1, found[NAME]), found  # measured 0 vs 21


@pytest.mark.skipif(not PCAM.is_dir(), reason="../shared/data/pcam absent")
def test_real_textured_phantoms_from_patches_it_never_saw(tmp_path):
    """Textures from PCam valid/ (training used train/): nodes found, and none on node-free sections.
    Measured: Dice 0.99, 7 of 7 nodes (the 96 % carcinoma node included), no extra region."""
    valid = str(PCAM / "valid")
    res = [_score(tmp_path, SlideSpec(seed=s, size_mm=(8.0, 6.0), mpp=2.0, perinodal=True, textures=valid))
           for s in SEEDS]
    dice, precision, recall, recall_kept = _pooled(res)
    assert dice >= 0.95 and precision >= 0.95 and recall_kept >= 0.95 and recall >= 0.85, (dice, precision, recall)
    for kind in ("fibrofatty", "muscle"):
        r = _score(tmp_path, SlideSpec(seed=7020, size_mm=(6.0, 4.5), mpp=2.0, section=kind, textures=valid))
        assert r["n_pred"] == 0, (kind, r)


def _pooled_benchmark():
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "pcam_nodes_pooled.py"
    spec = importlib.util.spec_from_file_location("pcam_nodes_pooled", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_pooled_figures_add_up_every_unseen_set_of_the_card(card):
    bench = _pooled_benchmark()
    sets = bench.unseen_sets(card.metrics)
    assert list(sets)[:3] == ["test", "second", "third"]  # the test set, then the draws in the order drawn
    pooled = bench.pool(sets)
    real = [s["real"] for s in sets.values()]
    assert pooled["real"]["nodes"] == sum(r["n_truth"] for r in real)
    assert pooled["real"]["false"] == sum(r["n_pred"] - r["tp"] for r in real)
    lo, hi = pooled["real"]["recall_ci"]
    assert lo <= pooled["real"]["recall"] <= hi
    assert pooled["sections"]["slides"] == sum(s["sections"]["slides"] for s in sets.values())
    # two made-up sets: 9 of 10 and 10 of 10 found, one false node -> 19/20 recall, 19/20 precision
    made = {"a": {"real": {"tp": 9, "n_pred": 10, "n_truth": 10, "slides": 1, "dice": 0.9}},
            "b": {"real": {"tp": 10, "n_pred": 10, "n_truth": 10, "slides": 1, "dice": 0.99}}}
    r = bench.pool(made)["real"]
    assert (r["recall"], r["precision"], r["missed"], r["false"], r["min_dice"]) == (0.95, 0.95, 1, 1, 0.9)
    assert r["dice"] == pytest.approx(0.945)  # (0.9 x 10 + 0.99 x 10) / 20 nodes
