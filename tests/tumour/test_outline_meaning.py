"""One meaning of a tumour outline file in every command (tmln.annotations).

One node with a tumour outline that has a non-tumour island inside it, written in five formats:
ASAP XML (island in group ``_2``), QuPath GeoJSON (island of class ``Ignore*``), NCRF JSON (island
under ``negative``), QuPath GeoJSON with the island as a hole, and the same without classes. Every
path that reads outlines must give tumour = outline - island: ``tmln analyze``, ``tmln evaluate
froc|maps|slides`` and tumour-patch training; a hole does not shorten the largest deposit.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from shapely.geometry import Polygon, box

from tmln.annotations import Annotation, feature, read_annotations, write_asap_xml, write_geojson

from .helpers import make_model_dir, write_slide

MPP = 0.5  # µm/px
W, H = 1200, 900  # slide, level-0 px
NODE = box(100, 100, 700, 700)
TUMOUR = box(200, 200, 600, 600)  # 400 px side
ISLAND = box(352, 352, 448, 448)  # 96 px side, inside the tumour
TRUE_MM2 = (400**2 - 96**2) * (MPP / 1000) ** 2  # 0.037696 mm²
LARGEST_MM = 400 * math.sqrt(2) * MPP / 1000  # diagonal of the outline: the island does not shorten it
FORMATS = ["asap_group_2", "qupath_ignore_class", "ncrf_negative", "qupath_hole", "qupath_hole_unclassified"]


def _ring(p):
    return [list(map(float, xy)) for xy in p.exterior.coords]


def write_tumour(folder, fmt: str, sid: str = "S1"):
    """The tumour outline with its island, as a pathologist would export it in ``fmt``."""
    holed = Polygon(TUMOUR.exterior.coords, [ISLAND.exterior.coords])
    if fmt == "asap_group_2":
        path = folder / f"{sid}.tumour.xml"
        write_asap_xml(path, [Annotation(TUMOUR, "_0", "Tumor 1"), Annotation(ISLAND, "_2", "Island")])
    elif fmt == "qupath_ignore_class":
        path = folder / f"{sid}.tumour.geojson"
        write_geojson(path, [feature(TUMOUR, "Tumor"), feature(ISLAND, "Ignore*")])
    elif fmt == "ncrf_negative":
        path = folder / f"{sid}.tumour.json"
        path.write_text(json.dumps({"positive": [{"name": "t", "vertices": _ring(TUMOUR)[:-1]}],
                                    "negative": [{"name": "i", "vertices": _ring(ISLAND)[:-1]}]}))
    elif fmt == "qupath_hole":
        path = folder / f"{sid}.tumour.geojson"
        write_geojson(path, [feature(holed, "Tumor")])
    else:
        path = folder / f"{sid}.tumour.geojson"
        write_geojson(path, [feature(holed)])
    return path


@pytest.fixture(scope="module")
def slide_and_model(tmp_path_factory):
    d = tmp_path_factory.mktemp("outline_meaning")
    img = np.full((H, W, 3), 230, np.uint8)
    img[100:700, 100:700] = (200, 120, 170)
    write_slide(d / "S1.tif", img, MPP)
    (d / "slides.csv").write_text("slide_path,patient_id\nS1.tif,P1\n")
    return d, make_model_dir(d / "model", mpp=4.0, patch=32)


@pytest.fixture(params=FORMATS)
def outlines(request, slide_and_model, tmp_path):
    d, model = slide_and_model
    ann = tmp_path / "ann"
    ann.mkdir()
    write_geojson(ann / "S1.nodes.geojson", [feature(NODE, "Lymph node")])
    return d, model, ann, write_tumour(ann, request.param)


def test_analyze(outlines, tmp_path):
    from tmln.cohort.run import run_cohort

    d, _, ann, _ = outlines
    run_cohort(d / "slides.csv", tmp_path / "run", node_annotations=ann, tumour_annotations=ann, quiet=True)
    slides = pd.read_csv(tmp_path / "run" / "slides.csv")
    assert slides["status"].tolist() == ["done"], slides["error"].tolist()
    assert slides["tumour_area_mm2"].iloc[0] == pytest.approx(TRUE_MM2, rel=1e-9)
    nodes = pd.read_csv(tmp_path / "run" / "nodes.csv")
    assert nodes["largest_deposit_mm"].iloc[0] == pytest.approx(LARGEST_MM, rel=1e-9)
    assert nodes["tumour_area_mm2"].iloc[0] == pytest.approx(TRUE_MM2, rel=1e-9)
    assert nodes["category"].iloc[0] == "micro"


def test_evaluate_froc_and_slides(outlines, tmp_path):
    from tmln.evaluate.auc import slide_labels_from_truth
    from tmln.evaluate.froc import evaluate_froc, rasterise_truth

    _, _, ann, path = outlines
    mask = rasterise_truth(read_annotations(path), W, H, level=3)  # 8 level-0 px per pixel
    assert mask.sum() * (8 * MPP / 1000) ** 2 == pytest.approx(TRUE_MM2, rel=1e-9)
    assert not mask[400 // 8, 400 // 8] and mask[250 // 8, 250 // 8]  # the island is not tumour
    preds = tmp_path / "preds"
    preds.mkdir()
    (preds / "S1.csv").write_text("probability,x,y\n0.9,250,250\n")
    r = evaluate_froc(ann, preds, geometries={"S1": (W, H, MPP)}, level=3)
    assert r.n_tumour_slides == 1 and r.n_lesions == 1
    assert slide_labels_from_truth(ann, ["S1"]).tolist() == [1]


def test_evaluate_maps(outlines, tmp_path, monkeypatch):
    import tmln.evaluate.maps as maps
    import tmln.tumour.engine as engine
    from tmln.evaluate.maps import calibrate_threshold

    d, model, ann, _ = outlines

    def fake_map(slide, model_dir, **kw):  # P = 0.9 on a grid of 8 level-0 px, all slide
        return engine.ProbabilityMap(np.full((H // 8, W // 8), 0.9, np.float32), mpp=8 * MPP, origin=(0.0, 0.0),
                                     slide_mpp=(MPP, MPP), info={"method": "fake", "precision": "fp32"})

    monkeypatch.setattr(maps, "tumour_map", fake_map)
    calibrate_threshold(d / "slides.csv", ann, model, tmp_path / "cal", node_annotations=ann, device="cpu")
    slides = pd.read_csv(tmp_path / "cal" / "slides.csv")
    assert slides["true_tumour_mm2"].iloc[0] == pytest.approx(TRUE_MM2, rel=1e-9)


def test_tumour_training(outlines):
    from tmln.annotations import outline_mask
    from tmln.train.patches import find_annotation, tumour_geometry

    _, _, ann, path = outlines
    assert find_annotation(ann, "S1") == path
    tumour, _ = tumour_geometry(read_annotations(path, slide_size=(W, H)))
    assert tumour.area * (MPP / 1000) ** 2 == pytest.approx(TRUE_MM2, rel=1e-9)
    mask = outline_mask(tumour, (H // 8, W // 8), (8.0, 8.0))  # the mask patch sampling uses
    assert mask.sum() * (8 * MPP / 1000) ** 2 == pytest.approx(TRUE_MM2, rel=1e-9)
