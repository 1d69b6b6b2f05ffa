"""Pixel Dice/IoU and one-to-one instance matching with split and merge errors."""

import numpy as np
import pytest
from shapely.geometry import box

from tmln.evaluate.segmentation import dice, iou, match_instances, match_polygons, pixel_overlap


def test_dice_iou_hand():
    t = np.zeros((10, 10), int)
    p = np.zeros((10, 10), int)
    t[0:4, 0:5] = 3  # 20 px, label raster
    p[2:6, 0:5] = True  # 20 px, overlap 10
    assert dice(t, p) == pytest.approx(2 * 10 / 40)
    assert iou(t, p) == pytest.approx(10 / 30)
    o = pixel_overlap(t, p)
    assert (o["tp_px"], o["fp_px"], o["fn_px"]) == (10, 10, 10)
    assert dice(np.zeros((3, 3)), np.zeros((3, 3))) == 1.0
    with pytest.raises(ValueError, match="shape"):
        dice(t, p[:5])


def _labels(shape, *rects):
    lab = np.zeros(shape, np.int32)
    for k, (r0, r1, c0, c1) in enumerate(rects, start=1):
        lab[r0:r1, c0:c1] = k
    return lab


def test_perfect_and_shifted_matches():
    t = _labels((50, 50), (0, 10, 0, 10), (20, 30, 20, 30), (40, 50, 0, 10))
    p = _labels((50, 50), (0, 10, 2, 12), (20, 30, 20, 30))  # iou 80/120 and 1; third missed
    m = match_instances(t, p)
    assert (m["tp"], m["fp"], m["fn"]) == (2, 0, 1)
    assert m["precision"] == 1.0 and m["recall"] == pytest.approx(2 / 3) and m["f1"] == pytest.approx(0.8)
    assert m["count_error"] == -1 and m["unmatched_truth_ids"] == [3]
    assert m["mean_matched_iou"] == pytest.approx((80 / 120 + 1) / 2)
    # a shift below IoU 0.5 is no match
    p2 = _labels((50, 50), (0, 10, 6, 16))
    assert match_instances(t, p2)["tp"] == 0


def test_split_and_merge():
    t = _labels((40, 60), (0, 20, 0, 20), (0, 20, 30, 40), (0, 20, 42, 52))
    p = np.zeros((40, 60), np.int32)
    p[0:10, 0:20] = 1  # truth 1 cut in two halves (IoU 0.5 each)
    p[10:20, 0:20] = 2
    p[0:20, 30:52] = 3  # truths 2 and 3 fused
    m = match_instances(t, p)
    assert m["split_errors"] == 1 and m["split_truth_ids"] == [1]
    assert m["merge_errors"] == 1 and m["merge_pred_ids"] == [3]
    assert m["tp"] == 1 and m["matches"][0]["truth_id"] == 1  # one half matches at IoU exactly 0.5
    assert m["n_truth"] == 3 and m["n_pred"] == 3 and m["count_error"] == 0


def test_hungarian_vs_greedy_and_non_contiguous_ids():
    t = _labels((20, 40), (0, 10, 0, 10))
    t[t == 1] = 17
    p = _labels((20, 40), (0, 10, 0, 10))
    p[p == 1] = 5
    for method in ("hungarian", "greedy"):
        m = match_instances(t, p, method=method)
        assert m["matches"] == [{"truth_id": 17, "pred_id": 5, "iou": 1.0}]
    # with a low threshold greedy takes the best pair first, Hungarian maximises the summed IoU
    t = np.zeros((1, 20), np.int32)
    p = np.zeros((1, 20), np.int32)
    t[0, 0:10], t[0, 10:20] = 1, 2
    p[0, 3:14], p[0, 0:3] = 1, 2  # p1: IoU .5 with t1, 4/17 with t2; p2: IoU .3 with t1
    g = match_instances(t, p, iou=0.2, method="greedy")
    h = match_instances(t, p, iou=0.2, method="hungarian")
    assert g["tp"] == 1 and g["matches"][0] == {"truth_id": 1, "pred_id": 1, "iou": 0.5}
    assert h["tp"] == 2 and [(m["truth_id"], m["pred_id"]) for m in h["matches"]] == [(1, 2), (2, 1)]
    assert match_instances(np.zeros((4, 4), int), np.zeros((4, 4), int))["precision"] is None


def test_polygons_exact_and_rasterised_agree():
    truth = [box(0, 0, 100, 100), box(200, 0, 300, 100)]
    pred = [box(10, 0, 110, 100), box(200, 0, 250, 100), box(250, 0, 300, 100), box(500, 500, 510, 510)]
    exact = match_polygons(truth, pred)
    assert exact["tp"] == 2 and exact["fp"] == 2 and exact["split_errors"] == 1
    assert exact["matches"][0]["iou"] == pytest.approx(9000 / 11000)
    raster = match_polygons(truth, pred, pixel_size=5)
    assert {k: raster[k] for k in ("tp", "fp", "fn", "split_errors")} == {"tp": 2, "fp": 2, "fn": 0, "split_errors": 1}
    assert raster["matches"][0]["iou"] == pytest.approx(9000 / 11000, abs=0.01)
