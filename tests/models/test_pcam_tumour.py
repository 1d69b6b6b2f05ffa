"""The bundled real-tissue tumour model ``pcam-tumour``: its card, its size, the streamed engine,
every entry point by name, and (where ../shared is present) its accuracy on real patches it never saw."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tmln.models.card import list_bundled, read_card, resolve_model_dir
from tmln.models.classifier import load_classifier
from tmln.tumour.dense import dense_form

from .helpers import cmu_cohort

NAME = "pcam-tumour"


@pytest.fixture(scope="module")
def card():
    return read_card(NAME)


def test_card_states_geometry_provenance_use_and_evidence(card):
    assert NAME in list_bundled()
    assert card.task == "tumour-classifier" and card.architecture == "resnet18"
    assert card.mpp == pytest.approx(0.97) and card.patch_size == 96 and card.classes == ["normal", "tumour"]
    assert 0.0 < card.threshold < 1.0
    assert "centre 32x32 px" in card.training["label_region"]
    data = card.training["data"]
    assert data["licence"] == "CC0 1.0" and "Camelyon16" in data["origin"] and "two scanners" in data["origin"]
    assert data["train"]["n_patches"] == 20000 and data["validation"]["n_patches"] == 3000
    assert "groups" not in data["train"]  # 20,000 one-patch groups are not listed
    assert card.training["wall_seconds"] > 0 and card.training["hardware"] and card.training["command"]
    use = card.intended_use
    assert "NOT FOR DIAGNOSIS" in use and "gastric" in use and "--init pcam-tumour" in use
    held = card.metrics["held_out"]
    for key in ("pcam_valid", "camelyon16_patches", "engine_on_mosaic", "cmu_heart_slide"):
        assert key in held
    lo, hi = held["pcam_valid"]["auc_ci"]
    assert lo <= held["pcam_valid"]["auc"] <= hi
    assert held["pcam_valid"]["threshold"] == pytest.approx(card.threshold, abs=1e-4)  # rounded to 4 places
    assert card.metrics["not_tested_on"] and card.metrics["tested_on"]
    assert card.metrics["kept"] == "last epoch"


def test_weights_under_50_mb_and_load_strictly():
    size = (resolve_model_dir(NAME) / "model.safetensors").stat().st_size
    assert size <= 50e6
    module, c = load_classifier(NAME, device="cpu")
    assert not module.training and c.architecture == "resnet18"


def test_runs_streamed_not_grid_and_reproduces_its_card(cmu_slide, card):
    """Fully convolutional (no grid fallback) on a real 0.499 µm/px slide, its 0.97 µm/px input
    resampled from it; the fraction of heart tissue called tumour is the figure the card
    publishes (so the documented evidence is what the shipped weights give), and the slide is
    flagged as unlike the training data."""
    from tmln.models.appearance import slide_distance
    from tmln.slide import Slide
    from tmln.tumour.engine import tumour_map

    module, c = load_classifier(NAME, device="cpu")
    assert dense_form(module) is not None
    pm = tumour_map(cmu_slide, NAME, mask="tissue", device="cpu", precision="fp32")
    assert pm.info["method"] == "stream" and pm.info["model_mpp"] == pytest.approx(0.97)
    assert pm.mpp == pytest.approx(32 * 0.97)
    vals = pm.array[~np.isnan(pm.array)]
    held = card.metrics["held_out"]["cmu_heart_slide"]
    assert vals.size == held["tissue_map_px"]
    assert (vals >= c.threshold).mean() == pytest.approx(held["fraction_above_threshold"], abs=0.01)
    d = slide_distance(Slide(cmu_slide), card)
    assert d["out_of_range"] and d["n_patches"] > 30


def test_every_entry_point_takes_it_by_name(cmu_slide, tmp_path):
    """`tmln models`, `tmln tumour-map --model`, `tmln analyze --tumour-model`, `tmln predict-patches --model`."""
    from click.testing import CliRunner
    from PIL import Image

    from tmln.cli import main

    r = CliRunner().invoke(main, ["models"])
    assert r.exit_code == 0 and NAME in r.output
    r = CliRunner().invoke(main, ["models", NAME, "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["patch_size"] == 96

    rgb = np.asarray(Image.new("RGB", (96, 96), (230, 180, 210)))
    (tmp_path / "p").mkdir()
    Image.fromarray(rgb).save(tmp_path / "p" / "a.png")
    r = CliRunner().invoke(main, ["predict-patches", str(tmp_path / "p"), "--model", NAME, "--out",
                                  str(tmp_path / "pred.csv"), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "pred.csv").is_file()

    slides, ann = cmu_cohort(tmp_path, cmu_slide)
    r = CliRunner().invoke(main, ["analyze", "--slides", str(slides), "--out", str(tmp_path / "run"),
                                  "--node-annotations", str(ann), "--tumour-model", NAME, "--device", "cpu",
                                  "--precision", "fp32", "--quiet"])
    assert r.exit_code == 0, r.output
    import pandas as pd

    nodes = pd.read_csv(tmp_path / "run" / "nodes.csv")
    assert len(nodes) == 1 and nodes["area_mm2"][0] == pytest.approx((1000 * 0.499) ** 2 / 1e6, rel=1e-3)
    # heart muscle is not what the model knows: the run says so beside the number
    row = pd.read_csv(tmp_path / "run" / "slides.csv").iloc[0]
    assert row["tumour_model_appearance_distance"] > 2 and "APPEARANCE" in row["notes"]


def test_auc_on_real_pcam_patches_it_never_saw(shared_data, card, tmp_path):
    """200 patches of PCam valid/ (slides never seen in training), read in place through symlinks:
    AUC well above chance and in line with the card's full-set figure."""
    from sklearn.metrics import roc_auc_score

    from tmln.tumour.predict_patches import predict_patches

    valid = shared_data / "pcam" / "valid"
    if not valid.is_dir():
        pytest.skip("PCam valid/ absent")
    for cls in ("tumor", "normal"):
        (tmp_path / cls).mkdir()
        for p in sorted((valid / cls).iterdir())[:100]:
            (tmp_path / cls / p.name).symlink_to(p)
    pred = predict_patches(NAME, tmp_path, device="cpu")
    y = np.array([1 if p.startswith("tumor/") else 0 for p in pred["path"]])
    auc = roc_auc_score(y, pred["p_tumour"])
    assert auc > 0.85
    assert abs(auc - card.metrics["held_out"]["pcam_valid"]["auc"]) < 0.08
