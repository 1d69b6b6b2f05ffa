"""Appearance distance: ≈ 1 for patches like the training ones, > WARN_DISTANCE for greyscale,
blurred or differently stained ones; background is not summarised; statistics travel in a card."""

from __future__ import annotations

import numpy as np
import pytest

from tmln.models import appearance as A

from .helpers import cmu_cohort


def he_patch(rng, size=64, pink=(225, 150, 195), purple=(110, 60, 150)):
    """An H&E-like patch: pink stroma with purple nuclei and mild noise."""
    img = np.empty((size, size, 3), np.float64)
    img[:] = np.asarray(pink) + rng.normal(0, 12, 3)
    yy, xx = np.mgrid[:size, :size]
    for _ in range(rng.integers(8, 20)):
        cy, cx, r = rng.uniform(0, size), rng.uniform(0, size), rng.uniform(2, 5)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = np.asarray(purple) + rng.normal(0, 10, 3)
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def stats():
    rng = np.random.default_rng(0)
    return A.training_statistics([he_patch(rng) for _ in range(150)], mpp=1.0, source="synthetic")


def test_like_training_is_near_one_and_unlike_is_flagged(stats):
    rng = np.random.default_rng(1)
    same = A.distance(A.feature_table([he_patch(rng) for _ in range(40)]), stats)
    assert 0.7 < same["distance"] < 1.4 and not same["out_of_range"] and same["n_patches"] == 40
    grey = [np.repeat(he_patch(rng).mean(axis=2, keepdims=True), 3, axis=2).astype(np.uint8) for _ in range(40)]
    g = A.distance(A.feature_table(grey), stats)
    assert g["distance"] > A.WARN_DISTANCE and g["out_of_range"]
    brown = A.distance(A.feature_table([he_patch(rng, pink=(200, 170, 120), purple=(120, 80, 40)) for _ in range(40)]), stats)
    assert brown["out_of_range"] and brown["feature"] is not None and abs(brown["z"]) > 1


def test_background_is_not_summarised_and_empty_is_nan(stats):
    white = np.full((64, 64, 3), 250, np.uint8)
    assert A.patch_features(white) is None
    d = A.distance(A.feature_table([white, white]), stats)
    assert np.isnan(d["distance"]) and not d["out_of_range"] and d["n_patches"] == 0


def test_statistics_are_plain_json_and_checked(stats):
    import json

    back = json.loads(json.dumps(stats))
    assert back["features"] == list(A.FEATURES) and len(back["covariance"]) == len(A.FEATURES)
    assert back["median_distance"] > 0 and back["p99_distance"] > back["median_distance"]
    bad = dict(back, features=["other"])
    with pytest.raises(ValueError, match="feature set"):
        A.distance(A.feature_table([he_patch(np.random.default_rng(3))]), bad)
    with pytest.raises(ValueError, match="too few"):
        A.training_statistics([he_patch(np.random.default_rng(4))] * 3, mpp=1.0)


def test_slide_distance_reads_tissue_patches(cmu_slide):
    """On a real slide: patches come from its tissue at the card's µm/px; a card without statistics
    gives None."""
    from tmln.models.card import ModelCard
    from tmln.slide import Slide

    slide = Slide(cmu_slide)
    patches = A.slide_patches(slide, 1.0, 64, n=16, seed=0)
    assert len(patches) == 16 and all(p.shape == (64, 64, 3) for p in patches)
    card = ModelCard(task="tumour-classifier", architecture="resnet18", mpp=1.0, patch_size=64, classes=["normal", "tumour"])
    assert A.slide_distance(slide, card) is None
    card.training["appearance"] = A.training_statistics(patches, mpp=1.0)
    d = A.slide_distance(slide, card, n=16, seed=1)
    assert d["n_patches"] >= 12 and d["distance"] < A.WARN_DISTANCE


def test_analyze_reports_each_models_appearance_distance(tmp_path, cmu_slide):
    """slides.csv gets the tumour model's appearance distance; a slide far from the training data
    gets an APPEARANCE note (here: a tumour model whose statistics come from grey patches)."""
    import pandas as pd
    import torch

    from tmln.cohort.run import run_cohort
    from tmln.models.card import ModelCard, save_model_dir
    from tmln.models.classifier import build_classifier

    rng = np.random.default_rng(5)
    grey = [np.repeat(he_patch(rng).mean(axis=2, keepdims=True), 3, axis=2).astype(np.uint8) for _ in range(60)]
    card = ModelCard(task="tumour-classifier", architecture="resnet18", mpp=4.0, patch_size=32,
                     classes=["normal", "tumour"], params={"num_outputs": 1})
    card.training["appearance"] = A.training_statistics(grey, mpp=4.0)
    torch.manual_seed(0)
    save_model_dir(tmp_path / "m", build_classifier("resnet18").state_dict(), card)
    slides, ann = cmu_cohort(tmp_path, cmu_slide)
    s = run_cohort(slides, tmp_path / "run", node_annotations=ann, tumour_model=tmp_path / "m",
                   quiet=True, device="cpu", tumour_precision="fp32")
    assert s.exit_code == 0 and s.n_failed == 0
    row = pd.read_csv(tmp_path / "run" / "slides.csv").iloc[0]
    assert row["tumour_model_appearance_distance"] > A.WARN_DISTANCE
    assert pd.isna(row["node_model_appearance_distance"])
    assert "APPEARANCE" in row["notes"]
