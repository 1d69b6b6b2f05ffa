"""Instances from a node mask: touching nodes split, no-split switch, holes, minimum area, minimum mean
probability, fragments."""

from __future__ import annotations

import numpy as np
import pytest

from tmln.nodes.instances import (
    InstanceParams, border_stats, fill_holes, instances_from_mask, keeps_border, merge_enclosed, merge_fragments,
    relabel_sequential, remove_small, remove_unsure, split_touching,
)

MPP = 8.0  # µm/px


def discs(centres, r, shape=(300, 400)):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    m = np.zeros(shape, bool)
    for cy, cx in centres:
        m |= (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
    return m


def test_two_touching_discs_split_into_two_equal_halves():
    m = discs([(150, 120), (150, 210)], 50)  # centres 90 px apart, radius 50: a narrow waist
    lab = instances_from_mask(m, MPP)
    assert lab.max() == 2
    sizes = np.bincount(lab.ravel())[1:]
    assert abs(sizes[0] - sizes[1]) < 0.02 * sizes.sum()
    assert (lab > 0).sum() == m.sum()  # splitting moves no pixel out of the nodes
    # each instance lies on its own side of the waist
    assert set(np.unique(lab[:, :165])) - {0} == {1} and set(np.unique(lab[:, 166:])) - {0} == {2}


def test_split_touching_false_keeps_one_instance():
    m = discs([(150, 120), (150, 210)], 50)
    assert instances_from_mask(m, MPP, params=InstanceParams(split_touching=False)).max() == 1
    assert split_touching(m, MPP, params=InstanceParams(split_touching=False)).max() == 1


def test_elongated_node_is_not_split():
    yy, xx = np.mgrid[:300, :500]
    ellipse = ((yy - 150) / 45.0) ** 2 + ((xx - 250) / 200.0) ** 2 < 1
    assert instances_from_mask(ellipse, MPP).max() == 1


def test_wide_neck_needs_learned_cores():
    """Two nodes pressed together along a long border: the shape alone gives one node, the cores two."""
    m = np.zeros((200, 300), bool)
    m[50:150, 40:260] = True  # a 100 x 220 px block: two 100 x 110 nodes sharing a 100 px border
    assert instances_from_mask(m, MPP).max() == 1
    core = m.copy()
    core[:, 147:153] = False  # the network's gap along the shared capsule
    lab = instances_from_mask(m, MPP, core=core)
    assert lab.max() == 2 and (lab > 0).sum() == m.sum()
    assert np.all(lab[50:150, 40:145] == 1) and np.all(lab[50:150, 155:260] == 2)


def test_learned_cores_without_markers_keep_their_component():
    m = discs([(100, 100)], 40) | discs([(100, 300)], 40)
    core = discs([(100, 100)], 30)  # the second node has no core pixel at all
    lab = instances_from_mask(m, MPP, core=core)
    assert lab.max() == 2


def test_core_probabilities_with_a_slight_waist_split_and_noise_does_not():
    """Two nodes with a wide neck (waist ratio ~0.9: the shape alone keeps one node): a learned band of
    moderate confidence splits them along it; the same weak band without a waist (one convex node)
    does not, nor do blotchy holes in the core probability of one node."""
    m = discs([(150, 175), (150, 225)], 50)  # centres 50 px apart, radius 50
    assert instances_from_mask(m, MPP).max() == 1
    core = np.where(m, 0.9, 0.0).astype(np.float32)
    core[:, 197:203] = 0.35  # a faint band along the shared border (probability of core 0.35)
    lab = instances_from_mask(m, MPP, core=core)
    assert lab.max() == 2 and (lab > 0).sum() == m.sum()
    assert set(np.unique(lab[:, :195])) - {0} == {1} and set(np.unique(lab[:, 205:])) - {0} == {2}
    # the same faint band across one round node (no waist) is not a border
    one = discs([(150, 200)], 70)
    core1 = np.where(one, 0.9, 0.0).astype(np.float32)
    core1[:, 197:203] = 0.35
    assert instances_from_mask(one, MPP, core=core1).max() == 1
    # an under-trained core channel: low-probability blotches (and islands inside them) in one node
    rng = np.random.default_rng(0)
    blotch = np.where(one, 0.9, 0.0).astype(np.float32)
    yy, xx = np.mgrid[:300, :400]
    for _ in range(6):
        cy, cx = rng.integers(110, 190), rng.integers(160, 240)
        blotch[(yy - cy) ** 2 + (xx - cx) ** 2 < 18 ** 2] = 0.2
    blotch[(yy - 150) ** 2 + (xx - 175) ** 2 < 35 ** 2] = 0.2  # a large one (tumour the model finds odd) ...
    blotch[(yy - 150) ** 2 + (xx - 175) ** 2 < 14 ** 2] = 0.9  # ... with an island of core inside
    assert instances_from_mask(one, MPP, core=blotch).max() == 1


def test_enclosed_regions_join_their_longest_neighbour():
    lab = np.zeros((40, 60), np.int32)
    lab[5:35, 5:30], lab[5:35, 30:55] = 1, 2
    lab[15:25, 20:28] = 3  # inside 1 (touches 2 nowhere)
    lab[14:26, 27:36] = 4  # straddles 1 and 2 (and 3): the longest border is with 2
    out = merge_enclosed(lab)
    assert out.max() == 2
    assert np.all(out[lab == 1] == out[10, 10]) and np.all(out[lab == 2] == out[10, 50])
    assert np.all(out[15:25, 20:27] == out[10, 10]) and np.all(out[lab == 4] == out[10, 50])


def test_keeps_border_rules():
    p = InstanceParams(neck_ratio=0.85, core_gap_min=0.45, core_neck_ratio=0.95, core_gap_strong=0.8)
    assert keeps_border(0.80, 0.0, p)  # a clear waist: shape alone
    assert not keeps_border(0.90, 0.0, p)  # slight waist, no learned band
    assert keeps_border(0.90, 0.5, p)  # slight waist + learned band
    assert not keeps_border(1.00, 0.5, p)  # learned band but no waist at all
    assert keeps_border(1.00, 0.85, p)  # a strong learned band alone


def test_border_stats_counts_saddle_and_gap():
    lab = np.zeros((4, 6), np.int32)
    lab[:, :3], lab[:, 3:] = 1, 2
    dist = np.tile(np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]), (4, 1))
    dist[2, 2] = 9.0
    gap = np.full((4, 6), 0.5)
    st = border_stats(lab, dist, gap)
    assert list(st) == [(1, 2)]
    n, saddle, gsum = st[(1, 2)]
    assert n == 4 and saddle == 4.0 and gsum == pytest.approx(2.0)  # min(9, 4) on row 2


def test_min_area_in_mm2():
    big = discs([(100, 100)], 40)  # 5026 px = 0.32 mm² at 8 µm/px
    small = discs([(100, 300)], 6)  # 113 px = 0.0072 mm²
    lab = instances_from_mask(big | small, MPP, params=InstanceParams(min_node_area_mm2=0.05))
    assert lab.max() == 1 and lab[100, 300] == 0
    lab = instances_from_mask(big | small, MPP, params=InstanceParams(min_node_area_mm2=0.005))
    assert lab.max() == 2
    # the same pixels at 4 µm/px are a quarter of the area: the speck (0.0018 mm²) goes
    assert instances_from_mask(big | small, 4.0, params=InstanceParams(min_node_area_mm2=0.005)).max() == 1


def test_min_node_probability_drops_half_node_like_islands():
    """A node the model is sure of stays; an island it finds only half node-like (mean 0.6) goes when the
    card asks for a mean node probability of 0.7; without probabilities, or at 0, both stay."""
    sure = discs([(150, 100)], 50)
    unsure = discs([(150, 300)], 40)
    prob = np.where(sure, 0.95, np.where(unsure, 0.6, 0.05)).astype(np.float32)
    mask = sure | unsure
    p = InstanceParams(min_node_probability=0.7)
    lab = instances_from_mask(mask, MPP, params=p, prob=prob)
    assert lab.max() == 1 and lab[150, 100] == 1 and lab[150, 300] == 0
    assert instances_from_mask(mask, MPP, params=p).max() == 2  # no probabilities: the rule does not apply
    assert instances_from_mask(mask, MPP, params=InstanceParams(), prob=prob).max() == 2  # default 0: off
    assert instances_from_mask(mask, MPP, params=InstanceParams(min_node_probability=0.55), prob=prob).max() == 2
    with pytest.raises(ValueError, match="shape"):
        instances_from_mask(mask, MPP, params=p, prob=prob[:, :-1])


def test_min_node_probability_ignores_filled_holes():
    """A node with fatty replacement: a large hole of fat (probability 0.05) filled into the node; the
    mean over the pixels the model called node (0.95) decides, so the node stays."""
    node = discs([(150, 150)], 80)
    fat = discs([(150, 150)], 60)
    prob = np.where(node & ~fat, 0.95, 0.05).astype(np.float32)
    mask = prob >= 0.5
    lab = instances_from_mask(mask, MPP, params=InstanceParams(min_node_probability=0.8), prob=prob)
    assert lab.max() == 1 and lab[150, 150] == 1  # filled, and kept
    assert np.asarray(prob)[lab == 1].mean() < 0.8  # the mean over the filled node would have dropped it


def test_remove_unsure_uses_the_mean_over_each_instance():
    lab = np.array([[1, 1, 0, 2, 2], [1, 1, 0, 2, 2]], np.int32)
    prob = np.array([[0.75, 0.5, 0, 1.0, 0.75], [0.5, 0.25, 0, 0.75, 0.5]], np.float32)  # means 0.5 and 0.75
    assert np.array_equal(remove_unsure(lab, prob, 0.7), np.where(lab == 2, 2, 0))
    assert np.array_equal(remove_unsure(lab, prob, 0.5), lab)  # at the threshold: kept
    assert np.array_equal(remove_unsure(lab, prob, 0.0), lab)
    where = prob >= 0.5  # instance 1 over its called pixels only: 0.75, 0.5, 0.5 -> 0.583
    assert np.array_equal(remove_unsure(lab, prob, 0.55, where=where), lab)
    assert np.array_equal(remove_unsure(lab, prob, 0.55), np.where(lab == 2, 2, 0))


def test_hole_filling():
    ring = discs([(100, 100)], 50) & ~discs([(100, 100)], 20)
    assert fill_holes(ring)[100, 100]
    lab = instances_from_mask(ring, MPP)
    assert lab[100, 100] == 1 and (lab > 0).sum() == discs([(100, 100)], 50).sum()
    kept = instances_from_mask(ring, MPP, params=InstanceParams(fill_holes=False))
    assert kept[100, 100] == 0


def test_fragments_merge_into_their_neighbour_and_labels_are_sequential():
    lab = np.zeros((50, 60), np.int32)
    lab[10:40, 10:40] = 7
    lab[10:40, 40:42] = 3  # a 60 px sliver on its border
    lab[5:8, 50:53] = 9  # isolated speck
    merged = merge_fragments(lab, 100)
    assert set(np.unique(merged)) == {0, 7, 9}
    cleaned = relabel_sequential(remove_small(merged, 100))
    assert set(np.unique(cleaned)) == {0, 1} and cleaned.dtype == np.int32


@pytest.mark.parametrize("bad", [np.zeros((20, 20), bool)])
def test_empty_mask(bad):
    assert instances_from_mask(bad, MPP).max() == 0


def test_params_round_trip_through_a_card_dict():
    p = InstanceParams(min_node_area_mm2=0.2, split_touching=False, min_distance_um=90.0)
    d = {**p.to_dict(), "overlap": 64, "unet": {"encoder_depth": 3}}
    assert InstanceParams.from_dict(d) == p
