"""tmln.evaluate.maps: pixel-level comparison of dense maps with outlines, threshold choice."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from shapely.geometry import box

from tmln.annotations import feature, write_geojson
from tmln.cli import main
from tmln.errors import TmlnError
from tmln.evaluate.auc import roc_auc
from tmln.evaluate.maps import BINS, binned_auc, calibrate_threshold, choose, slide_pixels, sweep, truth_on_map
from tmln.tumour import ProbabilityMap

from tumour.helpers import make_model_dir, texture, write_slide


def test_binned_metrics_match_direct_counts():
    rng = np.random.default_rng(0)
    truth = rng.random(5000) < 0.3
    p = np.clip(rng.normal(0.35 + 0.3 * truth, 0.2), 0, 1)
    bins = np.minimum((p * BINS).astype(int), BINS - 1)
    m = sweep(np.bincount(bins[truth], minlength=BINS), np.bincount(bins[~truth], minlength=BINS))
    for t in (0.1, 0.4321, 0.5, 0.9):
        k = int(round(t * BINS))
        called = bins >= k  # P >= t for P on the 1e-4 grid
        tp, fp, fn = (called & truth).sum(), (called & ~truth).sum(), (~called & truth).sum()
        assert m["sensitivity"][k] == pytest.approx(tp / truth.sum())
        assert m["specificity"][k] == pytest.approx(1 - fp / (~truth).sum())
        assert m["dice"][k] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    auc = binned_auc(np.bincount(bins[truth], minlength=BINS), np.bincount(bins[~truth], minlength=BINS))
    assert auc == pytest.approx(roc_auc(truth.astype(int), bins / BINS), abs=1e-12)
    assert m["youden_j"][choose(m, "youden")] == np.nanmax(m["youden_j"])
    assert m["dice"][choose(m, "dice")] == np.nanmax(m["dice"])
    with pytest.raises(TmlnError, match="rule"):
        choose(m, "f1")


def test_truth_on_map_uses_pixel_centres():
    # map pixels of 2 level-0 px from (10, 20): centres at x = 11, 13, 15, ... and y = 21, 23, ...
    pm = ProbabilityMap(np.zeros((4, 5), np.float32), mpp=2.0, origin=(10.0, 20.0), slide_mpp=(1.0, 1.0))
    tumour, excluded = truth_on_map(pm, [box(10, 20, 14.5, 23.5)], [box(16, 24, 20, 28)])
    expect = np.zeros((4, 5), bool)
    expect[0:2, 0:2] = True
    assert np.array_equal(tumour, expect)
    ex = np.zeros((4, 5), bool)
    ex[2:4, 3:5] = True
    assert np.array_equal(excluded, ex)
    # exclusion carves non-tumour out of tumour (as the FROC truth does): those pixels count as normal
    pm.array[:] = 0.9
    sp = slide_pixels("S", pm, [box(10, 20, 20, 28)], [box(16, 24, 20, 28)])
    assert sp.tumour.sum() == 16 and sp.normal.sum() == 4 and sp.normal[9000] == 4


@pytest.fixture()
def cohort(tmp_path):
    """Two slides (1 µm/px) with a purple tumour block on textured tissue, nodes covering all."""
    ann = tmp_path / "ann"
    ann.mkdir()
    rows = []
    for i in range(2):
        img = texture(384, 512, seed=10 + i)
        img[96:288, 256 + 32 * i : 448] = (150, 60, 170)
        p = write_slide(tmp_path / f"S{i}.tif", img, 1.0)
        write_geojson(ann / f"S{i}.tumour.geojson", [feature(box(256 + 32 * i, 96, 448, 288), "Tumor")])
        write_geojson(ann / f"S{i}.nodes.geojson", [feature(box(0, 0, 512, 384), "Lymph node")])
        rows.append({"slide_path": p.name, "patient_id": f"P{i}"})
    csv = tmp_path / "slides.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    model = make_model_dir(tmp_path / "model", mpp=2.0, patch=64, threshold=0.5)
    return csv, ann, model


def test_calibration_end_to_end(cohort, tmp_path):
    csv, ann, model = cohort
    out = tmp_path / "cal"
    r = calibrate_threshold(csv, ann, model, out, node_annotations=ann, device="cpu", precision="fp32",
                            write_model=tmp_path / "calibrated")
    assert r["slides_mapped"] == 2 and r["mask"] == "nodes" and r["method"] == "stream"
    assert 0 < r["tumour_pixels"] < r["pixels"] and 0 <= r["pixel_auc"] <= 1
    saved = json.loads((out / "calibration.json").read_text())
    assert saved["chosen_threshold"] == r["chosen_threshold"] == r["best"]["youden"]["threshold"]
    # the chosen threshold is at least as good as any threshold of the 0.01 table
    table = pd.read_csv(out / "thresholds.csv")
    assert len(table) == 100 and r["at_chosen"]["youden_j"] >= table["youden_j"].max() - 1e-12
    slides = pd.read_csv(out / "slides.csv")
    assert slides["status"].tolist() == ["done", "done"]
    # tumour mm² from the outlines, at the map's pixel-centre resolution (64 µm pixels)
    assert slides["true_tumour_mm2"].iloc[0] == pytest.approx(0.192 * 0.192, rel=0.35)
    # the written model: same weights, the card with the chosen threshold and the calibration
    card = json.loads((tmp_path / "calibrated" / "model_card.json").read_text())
    assert card["threshold"] == r["chosen_threshold"]
    assert card["metrics"]["dense_map_calibration"]["rule"] == "youden"
    assert (tmp_path / "calibrated" / "model.safetensors").read_bytes() == (model / "model.safetensors").read_bytes()
    # a rerun reuses the maps; another precision recomputes them
    npy = out / "maps" / "S0" / "tumour_map.npy"
    t0 = npy.stat().st_mtime_ns
    again = calibrate_threshold(csv, ann, model, out, node_annotations=ann, device="cpu", precision="fp32")
    assert npy.stat().st_mtime_ns == t0 and again["chosen_threshold"] == r["chosen_threshold"]
    dice = calibrate_threshold(csv, ann, model, out, node_annotations=ann, device="cpu", precision="bf16",
                               rule="dice")
    assert npy.stat().st_mtime_ns != t0 and dice["precision"] == "bfloat16"
    assert dice["at_chosen"]["dice"] == dice["best"]["dice"]["dice"]


def test_cli_lists_failed_slides_and_refuses_no_tumour(cohort, tmp_path):
    csv, ann, model = cohort
    rows = pd.read_csv(csv)
    pd.concat([rows, pd.DataFrame([{"slide_path": "missing.tif", "patient_id": "P9"}])]).to_csv(csv, index=False)
    args = ["evaluate", "maps", "--slides", str(csv), "--tumour-annotations", str(ann), "--node-annotations",
            str(ann), "--model", str(model), "--device", "cpu", "--precision", "fp32"]
    r = CliRunner().invoke(main, args + ["--out", str(tmp_path / "cal")])
    assert r.exit_code == 1, r.output
    assert "pixel AUC" in r.output and "1 slide(s) failed" in r.output
    slides = pd.read_csv(tmp_path / "cal" / "slides.csv")
    assert slides.set_index("slide_id").loc["missing", "status"] == "failed"
    # two generic outline files for one slide: that slide fails with the reason, the others go on
    (ann / "S1.geojson").write_bytes((ann / "S1.tumour.geojson").read_bytes())
    (ann / "S1.tumour.geojson").rename(ann / "S1.json")
    r = CliRunner().invoke(main, args + ["--out", str(tmp_path / "amb"), "-q"])
    assert r.exit_code == 1, r.output
    failed = pd.read_csv(tmp_path / "amb" / "slides.csv").set_index("slide_id")
    assert failed.loc["S1", "status"] == "failed" and "several tumour annotation files" in failed.loc["S1", "error"]
    assert failed.loc["S0", "status"] == "done"
    empty = tmp_path / "empty"
    empty.mkdir()
    for f in ann.glob("*.nodes.geojson"):
        (empty / f.name).write_bytes(f.read_bytes())
    r = CliRunner().invoke(main, args[:5] + [str(empty)] + args[6:] + ["--out", str(tmp_path / "none"), "-q"])
    assert r.exit_code == 2 and "no mapped pixel" in r.output
