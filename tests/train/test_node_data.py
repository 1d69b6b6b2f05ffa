"""Node training data: targets from outlines, shared-border band, patient split, random crops."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from tmln.train.node_data import (
    NodeCropDataset, NodeSlide, crop, load_node_slide, load_node_slides, mistake_components, node_targets,
    shared_border_band, split_by_patient,
)


def two_touching_squares():
    lab = np.zeros((40, 60), np.int32)
    lab[10:30, 10:30] = 1
    lab[10:30, 30:50] = 2
    return lab


def test_shared_border_band_only_where_nodes_touch():
    lab = two_touching_squares()
    band = shared_border_band(lab, 3)
    cols = np.nonzero(band.any(axis=0))[0]
    assert cols.min() == 27 and cols.max() == 32  # 3 px each side of the shared border
    assert not band[:, :27].any() and not band[:, 33:].any()
    assert not shared_border_band(np.where(lab == 2, 0, lab), 3).any()  # a lone node has no band


def test_node_targets_channels():
    lab = two_touching_squares()
    t = node_targets(lab, 8.0, 24.0)  # 24 µm = 3 px
    assert t.shape == (2, 40, 60) and t.dtype == np.uint8
    assert t[0].sum() == 800 and t[1].sum() == 800 - 6 * 20
    assert node_targets(lab, 8.0, None).shape == (1, 40, 60)


def test_split_by_patient_never_shares_a_patient():
    items = [SimpleNamespace(patient_id=f"P{i // 2}", slide_id=f"S{i}") for i in range(10)]
    train, val = split_by_patient(items, 0.25, seed=1)
    assert {i.patient_id for i in train}.isdisjoint({i.patient_id for i in val})
    assert len(train) + len(val) == 10 and len({i.patient_id for i in val}) == 1
    one = [SimpleNamespace(patient_id="P", slide_id="S")]
    assert split_by_patient(one, 0.25) == (one, [])
    assert split_by_patient(items, 0.25, seed=1) == (train, val)  # deterministic


def test_crop_pads():
    a = np.arange(16, dtype=np.uint8).reshape(4, 4)
    c = crop(a, -1, 2, 3, 99)
    assert c.tolist() == [[99, 99, 99], [2, 3, 99], [6, 7, 99]]


def make_node_slide():
    lab = two_touching_squares()
    img = np.full((40, 60, 3), 240, np.uint8)
    img[lab > 0] = (120, 60, 160)
    return NodeSlide("S", "P", "S.tiff", 8.0, img, lab, node_targets(lab, 8.0, 16.0), 2, "S.geojson")


def test_crops_are_deterministic_and_hold_both_classes():
    ds = NodeCropDataset([make_node_slide()], tile_size=32, samples_per_epoch=40, seed=3)
    img, tgt = ds[5]
    assert img.shape == (32, 32, 3) and img.dtype == np.uint8 and tgt.shape == (2, 32, 32)
    img2, tgt2 = ds[5]
    assert np.array_equal(img, img2) and np.array_equal(tgt, tgt2)
    ds.set_epoch(1)
    assert not np.array_equal(ds[5][0], img) or not np.array_equal(ds[6][0], ds[6][0] * 0)
    mixed = sum(0 < t[0].mean() < 1 for _, t in (ds[i] for i in range(len(ds))))
    assert mixed >= len(ds) // 2  # boundary-centred crops hold node and background
    # the image matches the target (node pixels purple, background glass)
    for i in range(10):
        im, t = ds[i]
        assert np.all(im[t[0] > 0][:, 1] == 60)


def test_non_node_crops_centre_on_tissue_outside_the_nodes():
    s = make_node_slide()
    s.image[0:4, 52:58] = (230, 150, 190)  # a pink septum far from the nodes
    assert {tuple(p) for p in s.non_node_pixels()} == {(y, x) for y in range(0, 4) for x in range(52, 58)}
    ds = NodeCropDataset([s], tile_size=8, samples_per_epoch=60, seed=1, p_boundary=0.0, p_foreground=0.0,
                         p_shared=0.0, p_non_node=1.0)
    for i in range(len(ds)):
        img, tgt = ds[i]
        assert tgt[0].sum() == 0 and (img == (230, 150, 190)).all(-1).any()  # every crop holds the septum
    with pytest.raises(ValueError, match="must be <= 1"):
        NodeCropDataset([s], tile_size=8, p_non_node=0.5)  # 0.5 + 0.25 + 0.5 > 1


def test_metastasis_crops_centre_on_tumour_inside_nodes():
    s = make_node_slide()
    s.tumour = np.zeros(s.instances.shape, bool)
    s.tumour[18:22, 38:42] = True  # a deposit in node 2
    s.tumour[0:3, 0:3] = True  # tumour outside every node: not a metastasis crop
    assert {tuple(p) for p in s.metastasis_pixels()} == {(y, x) for y in range(18, 22) for x in range(38, 42)}
    ds = NodeCropDataset([s], tile_size=8, samples_per_epoch=60, seed=1, p_boundary=0.0, p_foreground=0.0,
                         p_shared=0.0, p_metastasis=1.0)
    for i in range(len(ds)):
        img, tgt = ds[i]
        assert tgt[0].all()  # every crop lies inside node 2 (jitter 2 px, the deposit 8 px from its edges)
    # with a slide without tumour outlines beside it, every metastasis crop still comes from the one that has
    s2 = make_node_slide()
    s2.image[:] = 200
    assert s2.tumour is None and len(s2.metastasis_pixels()) == 0
    ds = NodeCropDataset([s2, s, s2], tile_size=8, samples_per_epoch=60, seed=1, p_boundary=0.0, p_foreground=0.0,
                         p_shared=0.0, p_metastasis=1.0)
    assert all(tuple(ds[i][0][4, 4]) == (120, 60, 160) for i in range(len(ds)))
    # no slide has any: node-centred crops instead
    ds2 = NodeCropDataset([s2], tile_size=8, samples_per_epoch=30, seed=1, p_boundary=0.0, p_foreground=0.0,
                          p_shared=0.0, p_metastasis=1.0)
    assert all(ds2[i][1][0].any() for i in range(len(ds2)))
    with pytest.raises(ValueError, match="must be <= 1"):
        NodeCropDataset([s], tile_size=8, p_non_node=0.2, p_metastasis=0.1)  # 0.5 + 0.25 + 0.3 > 1


def slide_with_mistakes():
    """The node slide, a pink island outside the nodes, and node probabilities that call the island and
    a patch of glass, miss the middle of node 1, and are off by a pixel along every outline."""
    from scipy import ndimage as ndi

    s = make_node_slide()
    s.image[0:7, 52:59] = (230, 150, 190)  # 49 px of tissue outside the nodes (0.0031 mm² at 8 µm/px)
    prob = ndi.binary_dilation(s.instances > 0).astype(np.float32)  # the outlines, 1 px too wide
    prob[0:7, 52:59] = 0.9  # the island called node
    prob[36:38, 0:2] = 0.9  # 4 px: too small to be a mistake that counts
    prob[0:6, 0:6] = 0.9  # "node" on glass (36 px)
    prob[14:26, 14:26] = 0.1  # node 1's middle missed
    return s, prob


def test_mistake_components_are_the_false_and_missed_node_away_from_the_outlines():
    s, prob = slide_with_mistakes()
    parts = mistake_components(s, prob)
    got = sorted({tuple(map(tuple, p[[0, -1]])) for p in parts})
    # the glass, the island, node 1's middle: nothing else (not the 4 px, not the 1 px along the outlines)
    assert got == [((0, 0), (5, 5)), ((0, 52), (6, 58)), ((14, 14), (25, 25))]
    assert sorted(len(p) for p in parts) == [36, 49, 144]
    assert mistake_components(s, (s.instances > 0).astype(float)) == []  # a perfect model makes none
    with pytest.raises(ValueError, match="slide S"):
        mistake_components(s, prob[:-1])


def test_mistake_crops_centre_on_each_mistake_alike():
    s, prob = slide_with_mistakes()
    ds = NodeCropDataset([s], tile_size=8, samples_per_epoch=200, seed=2, p_boundary=0.0, p_foreground=0.0,
                         p_shared=0.0, p_mistake=1.0)
    # before any mining: crops centred on tissue outside the nodes (the centre jitters by 2 px)
    assert all(ds[i][1][0][4, 4] == 0 for i in range(20))
    other = make_node_slide()
    ds = NodeCropDataset([other, s], tile_size=8, samples_per_epoch=200, seed=2, p_boundary=0.0, p_foreground=0.0,
                         p_shared=0.0, p_mistake=1.0)
    ds.set_mistakes([[], [p for p in mistake_components(s, prob) if len(p) > 36]])  # the island and node 1
    island = [(ds[i][0] == (230, 150, 190)).all(-1).any() for i in range(len(ds))]
    inside = [ds[i][1][0][4, 4] == 1 for i in range(len(ds))]
    assert all(a != b for a, b in zip(island, inside))  # every crop on one of the two mistakes
    assert 70 <= sum(island) <= 130  # each mistake alike, though one is three times the other's size
    with pytest.raises(ValueError, match="1 slides"):
        ds.set_mistakes([[]])
    with pytest.raises(ValueError, match="must be <= 1"):
        NodeCropDataset([s], tile_size=8, p_non_node=0.1, p_mistake=0.2)


def test_tumour_outlines_read_beside_the_node_outlines(tmp_path):
    from shapely.geometry import Point

    from tmln.annotations import feature, write_geojson

    from .node_synth import MPP, make_node_cohort, node_polygons

    csv = make_node_cohort(tmp_path / "c")
    assert all(s.tumour is None for s in load_node_slides(csv, tmp_path / "c", mpp=8.0, tumour=True))
    deposit = Point(node_polygons(0)[2].centroid).buffer(60)  # inside node 3 of slide S0, 120 µm across
    write_geojson(tmp_path / "c" / "S0.tumour.geojson", [feature(deposit, "Tumor")])
    items = load_node_slides(csv, tmp_path / "c", mpp=8.0, tumour=True)
    assert items[1].tumour is None  # S1 has no tumour file
    t = items[0].tumour
    assert t.shape == items[0].instances.shape and t.dtype == bool
    assert t.sum() * 8.0 ** 2 == pytest.approx(deposit.area * MPP ** 2, rel=0.1)
    assert set(np.unique(items[0].instances[t])) == {3} and len(items[0].metastasis_pixels()) == t.sum()
    # not asked for: not read
    assert load_node_slides(csv, tmp_path / "c", mpp=8.0)[0].tumour is None


def test_load_node_slides_from_a_cohort(tmp_path):
    from .node_synth import MPP, make_node_cohort, node_polygons

    csv = make_node_cohort(tmp_path / "c")
    items = load_node_slides(csv, tmp_path / "c", mpp=8.0)
    assert [s.patient_id for s in items] == ["P0", "P1"]
    s = items[0]
    assert s.image.shape == (250, 375, 3) and s.instances.shape == (250, 375)
    assert s.instances.max() == s.n_nodes == 3
    assert s.target[1].sum() < s.target[0].sum()  # cores exclude the shared border
    area_mm2 = sum(p.area for p in node_polygons(0)) * MPP * MPP / 1e6
    assert s.node_area_mm2 == pytest.approx(area_mm2, rel=0.02)
    assert s.image[s.instances > 0].mean(axis=0)[1] < 90  # node pixels are the purple ones


def test_missing_annotation_is_an_error(tmp_path):
    from .node_synth import make_node_cohort

    from tmln.errors import AnnotationError

    csv = make_node_cohort(tmp_path / "c", patients=1)
    with pytest.raises(AnnotationError, match="no node annotation"):
        load_node_slides(csv, tmp_path)
    with pytest.raises(AnnotationError):
        load_node_slide(tmp_path / "c" / "S0.tiff", tmp_path / "c" / "missing.geojson")
