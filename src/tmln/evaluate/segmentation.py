"""Segmentation quality: pixel Dice/IoU and one-to-one instance matching (lymph nodes).

Rasters are label images (0 = background, k > 0 = instance k) or binary masks of the same shape
and the same µm/px; polygons are shapely geometries in level-0 px of one slide.

Instance matching: a truth and a prediction can match when IoU >= ``iou`` (0.5 by default); the
one-to-one assignment maximises the summed IoU (Hungarian, ``scipy.optimize.linear_sum_assignment``)
or takes pairs by decreasing IoU (``greedy``); at IoU > 0.5 both give the same pairs, as each
instance can then overlap only one partner that much. Unmatched truths are false negatives,
unmatched predictions false positives.

Split and merge errors use *cover*: a prediction covers a truth part when at least ``cover``
(0.5) of the *prediction's* area lies in that truth (for splits), and a prediction covers a truth
when at least ``cover`` of the *truth's* area lies in that prediction (for merges).
- split error: a truth with >= 2 predictions each lying mostly inside it (one node cut in pieces);
- merge error: a prediction that holds most of each of >= 2 truths (adjacent nodes fused).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from tmln.regions import burn


def _ratio(a: float, b: float):
    return float(a) / float(b) if b else None


# ---------------------------------------------------------------------------- pixels
def pixel_overlap(truth: np.ndarray, pred: np.ndarray) -> dict:
    """Foreground (> 0) overlap of two rasters: Dice, IoU, precision, recall and pixel counts.

    Both empty: Dice = IoU = 1 (perfect agreement on "nothing"); precision/recall None when their
    denominator is 0.
    """
    t, p = _foreground(truth), _foreground(pred)
    if t.shape != p.shape:
        raise ValueError(f"truth and prediction rasters differ in shape: {t.shape} vs {p.shape}")
    tp = int(np.count_nonzero(t & p))
    fp = int(np.count_nonzero(p & ~t))
    fn = int(np.count_nonzero(t & ~p))
    empty = tp + fp + fn == 0
    return {
        "dice": 1.0 if empty else 2 * tp / (2 * tp + fp + fn),
        "iou": 1.0 if empty else tp / (tp + fp + fn),
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "tp_px": tp, "fp_px": fp, "fn_px": fn,
    }


def dice(truth: np.ndarray, pred: np.ndarray) -> float:
    """Dice coefficient 2|T∩P| / (|T| + |P|) of the foregrounds (1 when both are empty)."""
    return pixel_overlap(truth, pred)["dice"]


def iou(truth: np.ndarray, pred: np.ndarray) -> float:
    """Jaccard index |T∩P| / |T∪P| of the foregrounds (1 when both are empty)."""
    return pixel_overlap(truth, pred)["iou"]


def _foreground(a) -> np.ndarray:
    a = np.asarray(a)
    return a.astype(bool) if a.dtype == bool else a > 0


# ---------------------------------------------------------------------------- instances
def overlap_table(truth_labels: np.ndarray, pred_labels: np.ndarray):
    """Pairwise intersections of two label rasters.

    Returns (truth_ids, pred_ids, intersection[n_truth, n_pred], truth_area[n_truth],
    pred_area[n_pred]); areas in pixels, ids sorted, 0 (background) excluded.
    """
    t = np.asarray(truth_labels)
    p = np.asarray(pred_labels)
    if t.shape != p.shape:
        raise ValueError(f"truth and prediction label rasters differ in shape: {t.shape} vs {p.shape}")
    for name, a in (("truth", t), ("prediction", p)):
        if a.dtype.kind not in "biu":
            raise ValueError(f"{name} labels must be an integer (or bool) raster, got {a.dtype}")
        if a.size and a.min() < 0:
            raise ValueError(f"{name} labels must be >= 0")
    t = t.ravel().astype(np.int64)
    p = p.ravel().astype(np.int64)
    t_ids, t_inv = np.unique(t, return_inverse=True)
    p_ids, p_inv = np.unique(p, return_inverse=True)
    nt, np_ = len(t_ids), len(p_ids)
    counts = np.bincount(t_inv * np_ + p_inv, minlength=nt * np_).reshape(nt, np_)
    t_area = counts.sum(axis=1)
    p_area = counts.sum(axis=0)
    tk = t_ids > 0
    pk = p_ids > 0
    return t_ids[tk], p_ids[pk], counts[np.ix_(tk, pk)], t_area[tk], p_area[pk]


def match_from_overlap(truth_ids, pred_ids, intersection, truth_area, pred_area, iou: float = 0.5,
                       method: str = "hungarian", cover: float = 0.5) -> dict:
    """Instance detection metrics from an intersection table (see module doc for the rules)."""
    from scipy.optimize import linear_sum_assignment

    if method not in ("hungarian", "greedy"):
        raise ValueError(f"method must be 'hungarian' or 'greedy', got {method!r}")
    if not 0 < iou <= 1:
        raise ValueError(f"iou threshold must be in (0, 1], got {iou}")
    inter = np.asarray(intersection, dtype=float).reshape(len(truth_ids), len(pred_ids))
    ta = np.asarray(truth_area, dtype=float)
    pa = np.asarray(pred_area, dtype=float)
    union = ta[:, None] + pa[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        ious = np.where(union > 0, inter / union, 0.0)
    cand = ious >= iou
    pairs: list[tuple[int, int]] = []
    if cand.any():
        rows = np.flatnonzero(cand.any(axis=1))
        cols = np.flatnonzero(cand.any(axis=0))
        sub = np.where(cand[np.ix_(rows, cols)], ious[np.ix_(rows, cols)], 0.0)
        if method == "hungarian":
            r, c = linear_sum_assignment(sub, maximize=True)
            pairs = [(rows[i], cols[j]) for i, j in zip(r, c) if sub[i, j] >= iou and sub[i, j] > 0]
        else:
            order = sorted(zip(*np.nonzero(sub)), key=lambda ij: (-sub[ij], ij[0], ij[1]))
            used_r, used_c = set(), set()
            for i, j in order:
                if i not in used_r and j not in used_c:
                    used_r.add(i)
                    used_c.add(j)
                    pairs.append((rows[i], cols[j]))
    pairs.sort()
    n_t, n_p, tp = len(truth_ids), len(pred_ids), len(pairs)
    with np.errstate(invalid="ignore", divide="ignore"):
        pred_in_truth = inter >= cover * pa[None, :]  # prediction mostly inside the truth
        truth_in_pred = inter >= cover * ta[:, None]  # truth mostly inside the prediction
    pred_in_truth &= inter > 0
    truth_in_pred &= inter > 0
    split = [int(truth_ids[i]) for i in np.flatnonzero(pred_in_truth.sum(axis=1) >= 2)]
    merge = [int(pred_ids[j]) for j in np.flatnonzero(truth_in_pred.sum(axis=0) >= 2)]
    matched_t = {i for i, _ in pairs}
    matched_p = {j for _, j in pairs}
    matched_ious = [float(ious[i, j]) for i, j in pairs]
    return {
        "n_truth": n_t, "n_pred": n_p, "tp": tp, "fp": n_p - tp, "fn": n_t - tp,
        "precision": _ratio(tp, n_p), "recall": _ratio(tp, n_t),
        "f1": _ratio(2 * tp, n_t + n_p),
        "count_error": n_p - n_t, "abs_count_error": abs(n_p - n_t),
        "split_errors": len(split), "merge_errors": len(merge),
        "split_truth_ids": split, "merge_pred_ids": merge,
        "mean_matched_iou": float(np.mean(matched_ious)) if matched_ious else None,
        "matches": [{"truth_id": int(truth_ids[i]), "pred_id": int(pred_ids[j]), "iou": float(ious[i, j])}
                    for i, j in pairs],
        "unmatched_truth_ids": [int(truth_ids[i]) for i in range(n_t) if i not in matched_t],
        "unmatched_pred_ids": [int(pred_ids[j]) for j in range(n_p) if j not in matched_p],
        "iou_threshold": float(iou), "method": method, "cover": float(cover),
    }


def match_instances(truth_labels: np.ndarray, pred_labels: np.ndarray, iou: float = 0.5,
                    method: str = "hungarian", cover: float = 0.5) -> dict:
    """One-to-one instance matching of two label rasters (same shape and µm/px).

    Returns a dict: n_truth, n_pred, tp, fp, fn, precision, recall, f1 (None when undefined),
    count_error (n_pred - n_truth), abs_count_error, split_errors, merge_errors (+ the ids),
    mean_matched_iou, matches [{truth_id, pred_id, iou}], unmatched ids.
    """
    return match_from_overlap(*overlap_table(truth_labels, pred_labels), iou=iou, method=method, cover=cover)


def match_polygons(truth: Sequence, pred: Sequence, iou: float = 0.5, method: str = "hungarian",
                   cover: float = 0.5, pixel_size: float | None = None) -> dict:
    """Instance matching of polygons (shapely, level-0 px); instance ids are 1-based list positions.

    ``pixel_size=None``: exact areas and intersections (shapely). ``pixel_size=s``: both sets are
    rasterised on one grid of s level-0 px per pixel (pixel centres inside; a later polygon
    overwrites an earlier one where they overlap) and matched with ``match_instances``.
    """
    truth = [getattr(g, "geometry", g) for g in truth]
    pred = [getattr(g, "geometry", g) for g in pred]
    if pixel_size is not None:
        t_lab, p_lab = rasterise_instances(truth, pred, pixel_size)
        out = match_instances(t_lab, p_lab, iou=iou, method=method, cover=cover)
        # instances too small to own a pixel still count (as unmatched)
        out = _pad_missing(out, len(truth), len(pred))
        return out
    from shapely import STRtree

    ta = np.array([g.area for g in truth], dtype=float)
    pa = np.array([g.area for g in pred], dtype=float)
    inter = np.zeros((len(truth), len(pred)))
    if truth and pred:
        tree = STRtree(pred)
        for i, g in enumerate(truth):
            for j in tree.query(g, predicate="intersects"):
                inter[i, j] = g.intersection(pred[j]).area
    return match_from_overlap(np.arange(1, len(truth) + 1), np.arange(1, len(pred) + 1), inter, ta, pa,
                              iou=iou, method=method, cover=cover)


def rasterise_instances(truth: Sequence, pred: Sequence, pixel_size: float) -> tuple[np.ndarray, np.ndarray]:
    """Label rasters (int32) of two polygon lists on their common bounding grid (ids = position + 1)."""

    if not pixel_size > 0:
        raise ValueError("pixel_size must be > 0")
    geoms = list(truth) + list(pred)
    if not geoms:
        return np.zeros((0, 0), np.int32), np.zeros((0, 0), np.int32)
    x0 = min(g.bounds[0] for g in geoms)
    y0 = min(g.bounds[1] for g in geoms)
    x1 = max(g.bounds[2] for g in geoms)
    y1 = max(g.bounds[3] for g in geoms)
    shape = (int(np.ceil((y1 - y0) / pixel_size)) + 1, int(np.ceil((x1 - x0) / pixel_size)) + 1)

    def burn_all(polys):
        lab = np.zeros(shape, np.int32)
        for k, g in enumerate(polys, start=1):
            burn(lab, g, pixel_size, (x0, y0), value=k)
        return lab

    return burn_all(truth), burn_all(pred)


def _pad_missing(out: dict, n_truth: int, n_pred: int) -> dict:
    extra_t = n_truth - out["n_truth"]
    extra_p = n_pred - out["n_pred"]
    if extra_t == 0 and extra_p == 0:
        return out
    seen_t = {m["truth_id"] for m in out["matches"]} | set(out["unmatched_truth_ids"])
    seen_p = {m["pred_id"] for m in out["matches"]} | set(out["unmatched_pred_ids"])
    out["unmatched_truth_ids"] = sorted(set(out["unmatched_truth_ids"]) | (set(range(1, n_truth + 1)) - seen_t))
    out["unmatched_pred_ids"] = sorted(set(out["unmatched_pred_ids"]) | (set(range(1, n_pred + 1)) - seen_p))
    tp = out["tp"]
    out.update({"n_truth": n_truth, "n_pred": n_pred, "fp": n_pred - tp, "fn": n_truth - tp,
                "precision": _ratio(tp, n_pred), "recall": _ratio(tp, n_truth), "f1": _ratio(2 * tp, n_truth + n_pred),
                "count_error": n_pred - n_truth, "abs_count_error": abs(n_pred - n_truth)})
    return out
