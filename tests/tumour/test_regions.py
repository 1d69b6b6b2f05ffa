"""Probability map -> tumour polygons in level-0 px."""

from __future__ import annotations

import numpy as np
import pytest
from shapely.geometry import box

from tmln.tumour import ProbabilityMap, regions_from_map, regions_from_model, tumour_mask

from .helpers import make_model_dir, texture, write_slide


def _map(arr, mpp=16.0, slide_mpp=0.25, origin=(0.0, 0.0), threshold=0.5):
    return ProbabilityMap(np.asarray(arr, np.float32), mpp, origin, (slide_mpp, slide_mpp), "m", threshold)


def test_squares_become_polygons_of_exact_level0_area():
    arr = np.zeros((20, 30), np.float32)
    arr[2:7, 3:8] = 0.9  # 5 x 5 map px
    arr[10:12, 20:26] = 0.6  # 2 x 6
    pm = _map(arr, origin=(32.0, 32.0))  # 16 µm/px map, 0.25 µm/px slide: 64 level-0 px per map px
    polys = regions_from_map(pm)
    assert len(polys) == 2
    a, b = polys
    assert a.area == pytest.approx(25 * 64**2) and b.area == pytest.approx(12 * 64**2)
    assert a.bounds == pytest.approx((32 + 3 * 64, 32 + 2 * 64, 32 + 8 * 64, 32 + 7 * 64))
    # in µm²: 25 map px of 16 µm
    assert a.area * 0.25**2 == pytest.approx(25 * 16**2)


def test_threshold_from_card_overridable_and_nan_never_tumour():
    arr = np.full((10, 10), np.nan, np.float32)
    arr[1:4, 1:4] = 0.6
    arr[6:9, 6:9] = 0.8
    pm = _map(arr, threshold=0.7)
    assert len(regions_from_map(pm)) == 1  # card threshold 0.7
    assert len(regions_from_map(pm, threshold=0.5)) == 2
    assert regions_from_map(pm, threshold=0.9) == []
    assert tumour_mask(pm).sum() == 9
    with pytest.raises(Exception, match="threshold"):
        regions_from_map(pm, threshold=1.5)


def test_regions_clipped_to_nodes_and_min_area():
    arr = np.zeros((10, 10), np.float32)
    arr[0:4, 0:4] = 1.0
    arr[8, 8] = 1.0
    pm = _map(arr, mpp=8.0, slide_mpp=0.5)  # 16 level-0 px per map px
    node = box(0, 0, 32, 64)  # covers half of the 64 x 64 square
    polys = regions_from_map(pm, node_polygons=[node])
    assert len(polys) == 1 and polys[0].area == pytest.approx(32 * 64)
    both = regions_from_map(pm)
    assert len(both) == 2
    # the single pixel is 8 x 8 µm = 64 µm²
    assert len(regions_from_map(pm, min_area_um2=65.0)) == 1


def test_anisotropic_slide_pixels():
    arr = np.zeros((4, 4), np.float32)
    arr[1, 1] = 1.0
    pm = ProbabilityMap(arr, 16.0, (0.0, 0.0), (0.25, 0.5), "m", 0.5)
    (p,) = regions_from_map(pm)
    assert p.bounds == pytest.approx((64, 32, 128, 64))  # 64 x 32 level-0 px, 16 x 16 µm


def test_regions_from_model_end_to_end(tmp_path):
    """The entry point the measurement core calls: polygons inside the nodes, map written to out_dir."""
    import inspect

    sig = inspect.signature(regions_from_model)
    assert list(sig.parameters) == ["slide", "model", "node_polygons", "out_dir", "device", "threshold"]
    path = write_slide(tmp_path / "s.tif", texture(256, 256, seed=3), 1.0)
    model = make_model_dir(tmp_path / "model", mpp=2.0, patch=64, threshold=0.0)  # threshold 0: all tumour
    node = box(20, 30, 200, 150)
    polys = regions_from_model(path, model, node_polygons=[node], out_dir=tmp_path / "out", device="cpu")
    assert polys and all(p.geom_type == "Polygon" for p in polys)
    assert sum(p.area for p in polys) == pytest.approx(node.area)  # everything tumour, clipped to the node
    assert (tmp_path / "out" / "tumour_map.npy").is_file()
    pm = ProbabilityMap.load(tmp_path / "out")
    assert pm.threshold == 0.0 and np.isnan(pm.array).any()  # outside the node: not mapped
