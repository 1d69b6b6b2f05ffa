"""Label map -> polygons in level-0 px (exact scaling), polygons -> labels, node-map files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tmln.nodes.infer import NodeMap
from tmln.nodes.regions import (
    labels_to_polygons, node_features, polygons_to_labels, preview_image, read_node_labels,
)


def synthetic_labels():
    lab = np.zeros((40, 50), np.int32)
    lab[5:15, 10:30] = 1  # 200 px
    lab[20:35, 5:12] = 2  # 105 px
    lab[22:30, 12:20] = 3  # touches 2 (separate instance)
    lab[8, 40] = 4  # a single pixel
    return lab


def test_scaling_to_level0_is_exact():
    lab = synthetic_labels()
    polys = labels_to_polygons(lab, 8.0, 0.5)  # 16 level-0 px per label pixel
    assert len(polys) == 4 and all(p.geom_type == "Polygon" and p.is_valid for p in polys)
    for k, p in enumerate(polys, start=1):
        assert p.area == pytest.approx((lab == k).sum() * 16 * 16, abs=1e-6)
    assert polys[0].bounds == (160.0, 80.0, 480.0, 240.0)
    assert polys[3].bounds == (640.0, 128.0, 656.0, 144.0)
    assert len(polys[0].exterior.coords) == 5  # collinear pixel-edge vertices dropped


def test_anisotropic_mpp_and_origin():
    lab = synthetic_labels()
    polys = labels_to_polygons(lab, 8.0, (0.5, 0.25), origin=(1000, 2000))
    assert polys[0].bounds == (1000 + 160.0, 2000 + 5 * 32.0, 1000 + 480.0, 2000 + 15 * 32.0)


def test_round_trip_labels_polygons_labels():
    lab = synthetic_labels()
    polys = labels_to_polygons(lab, 8.0, 0.25)
    back = polygons_to_labels(polys, lab.shape, 8.0, 0.25)
    np.testing.assert_array_equal(back, lab)


def test_node_features_area_mm2():
    polys = labels_to_polygons(synthetic_labels(), 8.0, 0.5)
    feats = node_features(polys, 0.5)
    assert feats[0]["properties"]["classification"]["name"] == "Lymph node"
    assert feats[0]["properties"]["measurements"]["area_mm2"] == pytest.approx(200 * 64e-6)


def test_preview_shape_and_tint():
    rgb = np.full((40, 50, 3), 255, np.uint8)
    out = preview_image(rgb, synthetic_labels())
    assert out.shape == rgb.shape and out.dtype == np.uint8
    assert (out[0, 0] == 255).all() and not (out[10, 20] == 255).all()


def test_write_and_read_node_outputs(tmp_path):
    from tmln.models.card import ModelCard
    from tmln.nodes.regions import write_node_outputs

    class FakeSlide:  # what write_node_outputs uses of a Slide
        path = tmp_path / "slide.tiff"
        mpp_x_required, mpp_y_required = 0.5, 0.5
        width, height = 800, 640

    card = ModelCard(task="node-segmentation", architecture="unet:resnet18", mpp=8.0, patch_size=64, classes=["node"])
    lab = synthetic_labels()
    nm = NodeMap(lab, 8.0, rgb=np.full((40, 50, 3), 230, np.uint8))
    meta = write_node_outputs(tmp_path / "out", FakeSlide(), nm, card)
    assert meta["n_nodes"] == 4 and meta["slide_mpp"] == [0.5, 0.5]
    back = read_node_labels(tmp_path / "out")
    np.testing.assert_array_equal(back.labels, lab)
    assert back.mpp == 8.0 and back.origin == (0.0, 0.0) and back.slide_mpp == (0.5, 0.5)
    assert meta["format"] == 1 and meta["array"] == "node_labels.npy" and meta["values"] == NodeMap.VALUES
    gj = json.loads((tmp_path / "out" / "nodes.geojson").read_text())
    assert len(gj["features"]) == 4
    assert (tmp_path / "out" / "node_labels.png").read_bytes()[:4] == b"\x89PNG"
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # no temporary leftovers


def test_read_node_labels_errors(tmp_path):
    from tmln.errors import TmlnError

    np.save(tmp_path / "node_labels.npy", np.zeros((3, 3), np.int32))
    with pytest.raises(TmlnError, match="µm/px is unknown"):
        read_node_labels(tmp_path)
    with pytest.raises(TmlnError, match="not found"):
        read_node_labels(tmp_path / "nothing.npy")
