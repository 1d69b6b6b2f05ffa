"""CLI end to end: ``tmln node-map`` writes its files, ``tmln evaluate nodes`` scores them; errors exit 2."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from tmln.cli import main

MPP = 2.0


@pytest.fixture(scope="module")
def slide_and_truth(tmp_path_factory):
    """A 2 µm/px tiled TIFF with two touching purple nodes and one apart, and their GeoJSON outlines."""
    import tifffile
    from shapely.geometry import Point
    from skimage.draw import polygon as draw_polygon

    from tmln.annotations import feature, write_geojson

    d = tmp_path_factory.mktemp("nodes-cli")
    a = Point(300, 300).buffer(150)
    b = Point(580, 310).buffer(140).difference(a)
    c = Point(900, 600).buffer(100)
    img = np.full((800, 1100, 3), 240, np.uint8)
    for p in (a, b, c):
        xy = np.asarray(p.exterior.coords)
        rr, cc = draw_polygon(xy[:, 1] - 0.5, xy[:, 0] - 0.5, img.shape[:2])
        img[rr, cc] = (110, 60, 150)
    tifffile.imwrite(d / "S1.tiff", img, tile=(256, 256), photometric="rgb", resolution=(1e4 / MPP, 1e4 / MPP),
                     resolutionunit="CENTIMETER")
    truth = d / "truth"
    write_geojson(truth / "S1.nodes.geojson", [feature(p, "Lymph node") for p in (a, b, c)])
    (d / "slides.csv").write_text("slide_path,patient_id\nS1.tiff,P1\n")
    return d


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    import torch

    from tmln.models.card import ModelCard, save_model_dir
    from tmln.models.unet import build_unet

    torch.manual_seed(0)
    card = ModelCard(task="node-segmentation", architecture="unet:tu-mobilenetv3_small_050", mpp=8.0, patch_size=64,
                     classes=["node", "node_core"], threshold=0.5,
                     params={"unet": {"encoder_depth": 3, "decoder_channels": [16, 8, 8]}, "overlap": 16,
                             "min_node_area_mm2": 0.0})
    d = tmp_path_factory.mktemp("model") / "m"
    save_model_dir(d, build_unet(card).state_dict(), card)
    return d


def test_node_map_writes_label_map_json_geojson_png(tmp_path, slide_and_truth, model_dir):
    out = tmp_path / "nm"
    r = CliRunner().invoke(main, ["node-map", str(slide_and_truth / "S1.tiff"), "--model", str(model_dir),
                                  "--out", str(out), "--device", "cpu", "--quiet"])
    assert r.exit_code == 0, r.output
    labels = np.load(out / "node_labels.npy")
    meta = json.loads((out / "node_labels.json").read_text())
    assert labels.shape == (200, 275) and labels.dtype == np.int32  # 2200 x 1600 µm at 8 µm/px
    assert meta["mpp"] == 8.0 and meta["slide_mpp"] == [MPP, MPP] and meta["n_nodes"] == int(labels.max())
    gj = json.loads((out / "nodes.geojson").read_text())
    assert len(gj["features"]) == labels.max()
    assert (out / "node_labels.png").stat().st_size > 0
    r = CliRunner().invoke(main, ["node-map", str(slide_and_truth / "S1.tiff"), "--model", str(model_dir),
                                  "--out", str(tmp_path / "nm2"), "--no-split", "--device", "cpu", "--quiet"])
    assert r.exit_code == 0 and json.loads((tmp_path / "nm2" / "node_labels.json").read_text())["split_touching"] is False


def test_node_map_precision_and_reader_processes(tmp_path, slide_and_truth, model_dir, monkeypatch):
    """--precision and --loader-workers as tumour-map's: read tile by tile in 2 reader processes, the
    label map is the one read in this process; the arithmetic is recorded in the sidecar."""
    from tmln.nodes import infer

    monkeypatch.setattr(infer, "IN_MEMORY_MAX_PX", 0)  # tile by tile, as a large slide
    outs = {}
    for workers in ("0", "2"):
        out = tmp_path / f"w{workers}"
        r = CliRunner().invoke(main, ["node-map", str(slide_and_truth / "S1.tiff"), "--model", str(model_dir),
                                      "--out", str(out), "--device", "cpu", "--precision", "fp32",
                                      "--loader-workers", workers, "--quiet"])
        assert r.exit_code == 0, r.output
        outs[workers] = np.load(out / "node_labels.npy")
        meta = json.loads((out / "node_labels.json").read_text())
        assert meta["inference"]["precision"] == "fp32" and meta["inference"]["reader_processes"] == int(workers)
    np.testing.assert_array_equal(outs["0"], outs["2"])
    r = CliRunner().invoke(main, ["node-map", str(slide_and_truth / "S1.tiff"), "--model", str(model_dir),
                                  "--out", str(tmp_path / "bad"), "--precision", "fp64"])
    assert r.exit_code == 2 and "fp64" in r.output


def test_regions_from_model_leaves_the_geojson_to_its_caller(tmp_path, slide_and_truth, model_dir):
    """In a run the job writes the measured nodes.geojson: the model step writes the label map only
    (it used to write nodes.geojson too, which the job then overwrote)."""
    from tmln.nodes import node_map, regions_from_model

    polys = regions_from_model(slide_and_truth / "S1.tiff", model_dir, out_dir=tmp_path / "r", device="cpu")
    assert (tmp_path / "r" / "node_labels.npy").is_file() and not (tmp_path / "r" / "nodes.geojson").exists()
    nm = node_map(slide_and_truth / "S1.tiff", model_dir, out_dir=tmp_path / "n", device="cpu")
    assert len(polys) == int(nm.labels.max()) and (tmp_path / "n" / "nodes.geojson").is_file()


def test_node_map_errors(tmp_path, slide_and_truth, model_dir):
    r = CliRunner().invoke(main, ["node-map", str(tmp_path / "none.svs"), "--model", str(model_dir), "--out",
                                  str(tmp_path / "o")])
    assert r.exit_code == 2 and "no such file" in r.output
    r = CliRunner().invoke(main, ["node-map", str(slide_and_truth / "S1.tiff"), "--model", str(tmp_path),
                                  "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "model_card.json" in r.output
    assert not (tmp_path / "o").exists()


def test_evaluate_perfect_and_merged_predictions(tmp_path, slide_and_truth):
    from shapely.ops import unary_union

    from tmln.annotations import feature, read_annotations, write_geojson

    truth = slide_and_truth / "truth"
    polys = [a.geometry for a in read_annotations(truth / "S1.nodes.geojson")]
    perfect = tmp_path / "perfect"
    write_geojson(perfect / "S1.nodes.geojson", [feature(p, "Lymph node") for p in polys])
    r = CliRunner().invoke(main, ["evaluate", "nodes", "--truth", str(truth), "--predictions", str(perfect),
                                  "--slides", str(slide_and_truth / "slides.csv"), "--out", str(tmp_path / "e1")])
    assert r.exit_code == 0, r.output
    s = json.loads((tmp_path / "e1" / "nodes.json").read_text())
    assert s["dice_pooled"] == pytest.approx(1.0) and s["recall"] == 1.0 and s["precision"] == 1.0
    assert s["count_error"] == 0 and s["merge_errors"] == 0
    # the touching pair fused into one node: a merge error and one node fewer, same area (Dice 1)
    merged = tmp_path / "merged" / "S1"
    write_geojson(merged / "nodes.geojson", [feature(unary_union(polys[:2]), "Lymph node"), feature(polys[2], "Lymph node")])
    r = CliRunner().invoke(main, ["evaluate", "nodes", "--truth", str(truth), "--predictions", str(tmp_path / "merged"),
                                  "--out", str(tmp_path / "e2")])
    assert r.exit_code == 0, r.output
    s = json.loads((tmp_path / "e2" / "nodes.json").read_text())
    assert s["dice_pooled"] == pytest.approx(1.0) and s["merge_errors"] == 1 and s["count_error"] == -1
    assert s["tp"] == 2  # the larger node still matches its fused outline at IoU >= 0.5
    import pandas as pd

    rows = pd.read_csv(tmp_path / "e2" / "nodes_slides.csv")
    assert rows.loc[0, "status"] == "ok" and rows.loc[0, "n_pred"] == 2


def test_evaluate_label_map_predictions_and_missing(tmp_path, slide_and_truth, model_dir):
    from tmln.nodes import node_map

    node_map(slide_and_truth / "S1.tiff", model_dir, out_dir=tmp_path / "pred" / "S1", device="cpu")
    (tmp_path / "pred" / "S1" / "nodes.geojson").unlink()  # the label map alone must do
    from tmln.evaluate.nodes import evaluate_nodes

    frame, matches, s = evaluate_nodes(slide_and_truth / "truth", tmp_path / "pred")
    assert frame.loc[0, "pred_source"].endswith("node_labels.npy")
    assert 0 <= s["dice_pooled"] <= 1 and frame.loc[0, "truth_area_mm2"] > 0
    (tmp_path / "empty").mkdir()
    frame, _, s = evaluate_nodes(slide_and_truth / "truth", tmp_path / "empty")
    assert frame.loc[0, "status"].startswith("no prediction") and s["recall"] == 0.0
    r = CliRunner().invoke(main, ["evaluate", "nodes", "--truth", str(tmp_path / "empty"), "--predictions",
                                  str(tmp_path / "pred"), "--out", str(tmp_path / "e")])
    assert r.exit_code == 2 and "no node annotation files" in r.output
