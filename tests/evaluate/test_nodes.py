"""Pooling of per-slide node metrics (tmln.evaluate.nodes.pooled)."""

from __future__ import annotations

import pytest
from shapely.geometry import box

from tmln.evaluate.nodes import evaluate_slide, pooled


def test_pooled_sums_areas_and_instances_over_slides():
    a = evaluate_slide([box(0, 0, 10, 10)], [box(0, 0, 10, 4)])  # 40 % found: IoU 0.4, no match
    b = evaluate_slide([box(0, 0, 10, 10)], [box(0, 0, 10, 10), box(50, 50, 60, 60)])  # found + one extra
    p = pooled([a, b])
    assert p["dice"] == pytest.approx(2 * 140 / (200 + 240))
    assert (p["tp"], p["n_truth"], p["n_pred"]) == (1, 2, 3)
    assert p["precision"] == pytest.approx(1 / 3) and p["recall"] == pytest.approx(0.5)


def test_pooled_leaves_undefined_metrics_empty():
    none_found = pooled([evaluate_slide([], [])])
    assert none_found["dice"] is None and none_found["precision"] is None and none_found["recall"] is None
    false_only = pooled([evaluate_slide([], [box(0, 0, 5, 5)])])
    assert false_only["dice"] == 0.0 and false_only["precision"] == 0.0 and false_only["recall"] is None
