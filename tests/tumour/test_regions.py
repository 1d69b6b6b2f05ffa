"""Probability map -> tumour polygons in level-0 px."""

from __future__ import annotations

import numpy as np
import pytest
from shapely.geometry import box

from tmln.tumour import ProbabilityMap, regions_from_map, regions_from_model, tumour_mask

from .helpers import make_model_dir, texture, write_slide


def _map(arr, mpp=16.0, slide_mpp=0.25, origin=(0.0, 0.0), threshold=0.5, info=None):
    return ProbabilityMap(np.asarray(arr, np.float32), mpp, origin, (slide_mpp, slide_mpp), "m", threshold, info or {})


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


def test_clipping_slivers_at_a_shared_node_border_are_dropped():
    """A deposit effacing node B whose last pixel row straddles the border with touching node A by a
    quarter of a map pixel: node A gets nothing (the strip is narrower than half a pixel), node B
    keeps the deposit; a one-pixel deposit inside node A survives, and so does a part wider than half
    a pixel. 16 level-0 px per map pixel."""
    arr = np.zeros((12, 12), np.float32)
    arr[4:10, 2:10] = 1.0  # rows 4..9: level-0 y 64..160
    arr[1, 1] = 1.0  # one pixel inside A: y 16..32, x 16..32
    pm = _map(arr, mpp=8.0, slide_mpp=0.5)
    node_a, node_b = box(0, 0, 192, 68), box(0, 68, 192, 192)  # shared border at y = 68: a 4 px strip in A
    polys = regions_from_map(pm, node_polygons=[node_a, node_b])
    inside_a = sum(p.intersection(node_a).area for p in polys)
    assert inside_a == pytest.approx(16 * 16)  # only the one-pixel deposit
    assert sum(p.intersection(node_b).area for p in polys) == pytest.approx(92 * 128)
    # at a node's outer edge (no neighbour): a strip narrower than half a pixel (4 of 16 level-0 px)
    # is dropped, a wider one (10 px) kept
    assert sum(p.area for p in regions_from_map(pm, node_polygons=[box(0, 40, 192, 68)])) == 0
    kept = regions_from_map(pm, node_polygons=[box(0, 40, 192, 74)])
    assert sum(p.area for p in kept) == pytest.approx(10 * 128)


def test_bleed_of_a_deposit_across_a_shared_border_stays_with_its_node():
    """A deposit effacing node B spreads into touching node A within the map's localisation (one map
    pixel + half a patch): A gets nothing. The same strip when A holds the larger part, tumour
    reaching deeper into A, and an isolated deposit of A at the border are all kept."""
    arr = np.zeros((12, 12), np.float32)
    arr[3:10, 2:10] = 1.0  # y 48..160 level-0 px (16 per map pixel)
    no_patch = _map(arr, mpp=8.0, slide_mpp=0.5)  # localisation = one map pixel = 16 level-0 px
    patch = _map(arr, mpp=8.0, slide_mpp=0.5, info={"patch_size": 8, "model_mpp": 2.0})  # + 4 µm = 8 px
    node_a, node_b = box(0, 0, 192, 64), box(0, 64, 192, 192)  # 16 px of the deposit inside A
    for pm in (no_patch, patch):
        polys = regions_from_map(pm, node_polygons=[node_a, node_b])
        assert sum(p.intersection(node_a).area for p in polys) == 0
        assert sum(p.intersection(node_b).area for p in polys) == pytest.approx(96 * 128)
    # 24 px inside A: beyond one pixel, within one pixel + half a patch
    a24, b24 = box(0, 0, 192, 72), box(0, 72, 192, 192)
    assert sum(p.intersection(a24).area for p in regions_from_map(no_patch, node_polygons=[a24, b24])) == \
        pytest.approx(24 * 128)
    assert sum(p.intersection(a24).area for p in regions_from_map(patch, node_polygons=[a24, b24])) == 0
    # the larger part in A: B's part is the spread, A keeps its deposit whole
    flipped = regions_from_map(no_patch, node_polygons=[box(0, 0, 192, 144), box(0, 144, 192, 192)])
    assert sum(p.area for p in flipped) == pytest.approx(96 * 128)
    # an isolated one-row deposit of A at the border, B free of tumour: kept
    arr2 = np.zeros((12, 12), np.float32)
    arr2[3, 2:10] = 1.0
    lone = regions_from_map(_map(arr2, mpp=8.0, slide_mpp=0.5), node_polygons=[node_a, node_b])
    assert sum(p.area for p in lone) == pytest.approx(16 * 128)


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
    assert list(sig.parameters) == ["slide", "model", "node_polygons", "out_dir", "device", "threshold",
                                    "precision", "method", "tile_size"]  # the last two: analyze --method/--tile-size
    path = write_slide(tmp_path / "s.tif", texture(256, 256, seed=3), 1.0)
    model = make_model_dir(tmp_path / "model", mpp=2.0, patch=64, threshold=0.0)  # threshold 0: all tumour
    node = box(20, 30, 200, 150)
    polys = regions_from_model(path, model, node_polygons=[node], out_dir=tmp_path / "out", device="cpu")
    assert polys and all(p.geom_type == "Polygon" for p in polys)
    assert sum(p.area for p in polys) == pytest.approx(node.area)  # everything tumour, clipped to the node
    assert (tmp_path / "out" / "tumour_map.npy").is_file()
    pm = ProbabilityMap.load(tmp_path / "out")
    assert pm.threshold == 0.0 and np.isnan(pm.array).any()  # outside the node: not mapped
