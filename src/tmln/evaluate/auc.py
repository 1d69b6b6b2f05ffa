"""ROC AUC with bootstrap confidence intervals, and sensitivity/specificity at a threshold.

Slide level (Camelyon16 task 1): one score per slide (default: the maximum detection probability;
a slide without detections scores 0), label 1 = tumour slide. Patch level: one probability per
patch. AUC is scikit-learn's ``roc_auc_score`` (ties count one half, as in the Mann-Whitney U).
The CI is a seeded percentile bootstrap, stratified by class (positives and negatives resampled
separately, as pROC's default), so every replicate has both classes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from tmln.annotations import annotation_index, read_annotations, tumour_outlines
from tmln.errors import InputTableError, TmlnError
from tmln.evaluate.froc import _lookup, _mask_index, read_predictions
from tmln.evaluate.tables import numeric_column, read_table

SCORE_REDUCERS: dict[str, Callable[[np.ndarray], float]] = {
    "max": lambda p: float(p.max()) if p.size else 0.0,
    "mean": lambda p: float(p.mean()) if p.size else 0.0,
    "top10_mean": lambda p: float(np.sort(p)[-10:].mean()) if p.size else 0.0,
    "count": lambda p: float(p.size),
}
TUMOUR_NAMES = {"tumor", "tumour", "positive", "pos", "1", "true", "metastasis", "metastases", "cancer", "yes"}
NORMAL_NAMES = {"normal", "negative", "neg", "0", "false", "benign", "non-tumor", "non-tumour", "no"}


def _check_binary(labels, scores, what: str = "labels"):
    y = np.asarray(labels)
    s = np.asarray(scores, dtype=float)
    if y.shape != s.shape or y.ndim != 1:
        raise ValueError(f"labels and scores must be 1-D of equal length, got {y.shape} and {s.shape}")
    y = y.astype(int)
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"{what} must be 0/1")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    return y, s


def roc_auc(labels, scores) -> float:
    """Area under the ROC curve (needs both classes)."""
    from sklearn.metrics import roc_auc_score

    y, s = _check_binary(labels, scores)
    if y.min() == y.max():
        raise ValueError("AUC needs both positive and negative cases")
    return float(roc_auc_score(y, s))


def bootstrap_auc_ci(labels, scores, n_boot: int = 2000, seed: int = 0, confidence: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of the AUC, resampling positives and negatives separately (seeded)."""
    y, s = _check_binary(labels, scores)
    pos, neg = s[y == 1], s[y == 0]
    if pos.size == 0 or neg.size == 0:
        raise ValueError("AUC needs both positive and negative cases")
    rng = np.random.default_rng(seed)
    aucs = np.empty(n_boot)
    chunk = max(1, 2_000_000 // (pos.size + neg.size))
    for start in range(0, n_boot, chunk):
        k = min(chunk, n_boot - start)
        p = pos[rng.integers(0, pos.size, (k, pos.size))]
        n = neg[rng.integers(0, neg.size, (k, neg.size))]
        aucs[start:start + k] = _rank_auc(p, n)
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(aucs, [alpha, 1 - alpha])
    return float(lo), float(hi)


def _rank_auc(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """Row-wise Mann-Whitney AUC (mid-ranks for ties; equals ``roc_auc_score``) of (k, n) arrays."""
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate([pos, neg], axis=1), axis=1)
    n1, n0 = pos.shape[1], neg.shape[1]
    return (ranks[:, :n1].sum(axis=1) - n1 * (n1 + 1) / 2) / (n1 * n0)


def proportion_ci(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of k/n (NaNs when n = 0)."""
    from scipy.stats import binomtest

    if n == 0:
        return float("nan"), float("nan")
    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def threshold_metrics(labels, scores, threshold: float = 0.5) -> dict:
    """Confusion counts and rates calling ``score >= threshold`` positive (Wilson 95 % CIs)."""
    y, s = _check_binary(labels, scores)
    called = s >= threshold
    tp = int((called & (y == 1)).sum())
    fn = int((~called & (y == 1)).sum())
    fp = int((called & (y == 0)).sum())
    tn = int((~called & (y == 0)).sum())

    def ratio(a, b):
        return a / b if b else float("nan")

    sens, spec = ratio(tp, tp + fn), ratio(tn, tn + fp)
    prec = ratio(tp, tp + fp)
    out = {
        "threshold": float(threshold), "tp": tp, "fp": fp, "tn": tn, "fn": fn,
        "sensitivity": sens, "specificity": spec, "precision": prec,
        "accuracy": ratio(tp + tn, y.size),
        "balanced_accuracy": (sens + spec) / 2 if (tp + fn and tn + fp) else float("nan"),
        "f1": ratio(2 * tp, 2 * tp + fp + fn),
    }
    out["sensitivity_ci95"] = list(proportion_ci(tp, tp + fn))
    out["specificity_ci95"] = list(proportion_ci(tn, tn + fp))
    return out


def evaluate_scores(labels, scores, threshold: float = 0.5, n_boot: int = 2000, seed: int = 0,
                    confidence: float = 0.95) -> dict:
    """AUC, its bootstrap CI and the threshold metrics of binary labels vs scores."""
    y, s = _check_binary(labels, scores)
    out = {"n": int(y.size), "n_positive": int(y.sum()), "n_negative": int((1 - y).sum())}
    if y.min() == y.max():
        out.update({"auc": None, "auc_ci": [None, None]})
    else:
        out["auc"] = roc_auc(y, s)
        out["auc_ci"] = list(bootstrap_auc_ci(y, s, n_boot, seed, confidence)) if n_boot > 0 else [None, None]
    out.update({"confidence": confidence, "n_bootstrap": n_boot, "seed": seed})
    out.update(threshold_metrics(y, s, threshold))
    return out


def roc_curve_table(labels, scores):
    """ROC curve points as a DataFrame ``threshold, fpr, tpr`` (scikit-learn, all thresholds kept)."""
    import pandas as pd
    from sklearn.metrics import roc_curve

    y, s = _check_binary(labels, scores)
    fpr, tpr, thr = roc_curve(y, s, drop_intermediate=False)
    return pd.DataFrame({"threshold": thr, "fpr": fpr, "tpr": tpr})


# ---------------------------------------------------------------------------- slide level
def slide_scores_from_predictions(predictions: str | Path, reduce: str = "max"):
    """One score per prediction CSV in a folder (Camelyon16 format): DataFrame ``slide_id, score``."""
    import pandas as pd

    predictions = Path(predictions)
    if not predictions.is_dir():
        raise TmlnError("predictions folder not found", predictions)
    if reduce not in SCORE_REDUCERS:
        raise ValueError(f"unknown score {reduce!r}; choose one of {sorted(SCORE_REDUCERS)}")
    rows = []
    for path in sorted(predictions.glob("*.csv")):
        p = read_predictions(path)["probability"].to_numpy()
        rows.append({"slide_id": path.stem, "score": SCORE_REDUCERS[reduce](p)})
    if not rows:
        raise InputTableError("no predictions CSV in the folder", predictions)
    return pd.DataFrame(rows)


def slide_labels_from_truth(truth: str | Path, slide_ids: Sequence[str]) -> np.ndarray:
    """1 for slides with an annotation file holding a tumour polygon or, without one, an official
    ``<slide_id>_Mask.tif`` (Camelyon16 ships masks for tumour slides only); else 0."""

    truth = Path(truth)
    if not truth.is_dir():
        raise TmlnError("truth folder not found", truth)
    index = annotation_index(truth, "tumour")
    masks = _mask_index(truth)
    out = []
    for sid in slide_ids:
        path = _lookup(index, sid)
        if path is None:
            out.append(int(_lookup(masks, sid) is not None))
        else:
            out.append(int(not tumour_outlines(read_annotations(path)).tumour.is_empty))
    return np.array(out, dtype=int)


def parse_label(value, path=None, row: int | None = None) -> int:
    """0/1 from a label cell: 1/0, true/false, tumor/tumour/positive, normal/negative."""
    text = str(value).strip().lower()
    if text in ("1.0",):
        return 1
    if text in ("0.0",):
        return 0
    if text in TUMOUR_NAMES:
        return 1
    if text in NORMAL_NAMES:
        return 0
    where = f"row {row + 1}: " if row is not None else ""
    raise InputTableError(f"{where}label {value!r} is not tumour/normal or 1/0", path)


def read_slide_table(path: str | Path, score_column: str = "score", label_column: str = "label"):
    """CSV ``slide_id, score, label`` (label tumour/normal or 1/0) -> DataFrame with int labels."""

    t = read_table(path, ["slide_id", score_column, label_column],
                   aliases={"slide_id": ["slide", "image", "id"], "label": ["truth", "y", "class"],
                            "score": ["probability", "p_tumour", "p_tumor", "prob"]})
    t["slide_id"] = t["slide_id"].astype(str).str.strip()
    t[score_column] = numeric_column(t, score_column, path)
    t[label_column] = [parse_label(v, path, i) for i, v in enumerate(t[label_column])]
    return t


def read_slide_labels(path: str | Path) -> dict[str, int]:
    """CSV ``slide_id, label`` (tumour/normal or 1/0) -> {slide_id: 0/1}."""

    t = read_table(path, ["slide_id", "label"], aliases={"slide_id": ["slide", "image", "id"],
                                                         "label": ["truth", "y", "class"]})
    return {str(s).strip(): parse_label(v, path, i) for i, (s, v) in enumerate(zip(t["slide_id"], t["label"]))}


def evaluate_slides(scores, labels, threshold: float = 0.5, n_boot: int = 2000, seed: int = 0) -> dict:
    """Slide-level AUC (+ CI) and threshold metrics; ``scores``/``labels`` aligned arrays."""
    return evaluate_scores(labels, scores, threshold, n_boot, seed)


# ---------------------------------------------------------------------------- patch level
def read_patch_predictions(path: str | Path):
    """``predict-patches`` output: CSV ``path, p_tumour`` (also ``p_tumor``/``probability``)."""

    t = read_table(path, ["path", "p_tumour"], aliases={"p_tumour": ["p_tumor", "probability", "prob", "score"],
                                                        "path": ["patch", "file", "image"]})
    t["p_tumour"] = numeric_column(t, "p_tumour", path)
    return t


def labels_from_folders(paths: Sequence[str], source=None) -> np.ndarray:
    """Labels from the nearest parent folder named tumor/tumour/positive or normal/negative."""
    out = []
    for i, p in enumerate(paths):
        label = None
        for part in reversed(Path(str(p)).parts[:-1]):
            name = part.lower()
            if name in TUMOUR_NAMES - {"1", "true", "yes"}:
                label = 1
                break
            if name in NORMAL_NAMES - {"0", "false", "no"}:
                label = 0
                break
        if label is None:
            raise InputTableError(f"row {i + 1}: no tumour/normal folder in path {p!r} (give a labels CSV)", source)
        out.append(label)
    return np.array(out, dtype=int)


def patch_labels(paths: Sequence[str], labels_csv: str | Path | None = None, source=None) -> np.ndarray:
    """Labels for patch paths: from a CSV ``path,label`` (matched by full path, then file name)
    or, without one, from folder names."""
    if labels_csv is None:
        return labels_from_folders(paths, source)

    t = read_table(labels_csv, ["path", "label"], aliases={
        "path": ["patch", "file", "image", "filename"],
        "label": ["label_tumor", "label_tumour", "tumor", "tumour", "class", "truth", "y"]})
    by_path = {str(p): parse_label(v, labels_csv, i) for i, (p, v) in enumerate(zip(t["path"], t["label"]))}
    by_name: dict[str, int] = {}
    for p, v in by_path.items():
        by_name.setdefault(Path(p).name, v)
    out = []
    for i, p in enumerate(paths):
        v = by_path.get(str(p), by_name.get(Path(str(p)).name))
        if v is None:
            raise InputTableError(f"no label for patch {p!r}", labels_csv)
        out.append(v)
    return np.array(out, dtype=int)


def evaluate_patches(predictions: str | Path, labels_csv: str | Path | None = None, threshold: float = 0.5,
                     n_boot: int = 2000, seed: int = 0) -> tuple[dict, object]:
    """Patch AUC (+ CI), sensitivity/specificity at ``threshold``; returns (metrics, per-patch table)."""
    t = read_patch_predictions(predictions)
    t["label"] = patch_labels(list(t["path"].astype(str)), labels_csv, predictions)
    return evaluate_scores(t["label"].to_numpy(), t["p_tumour"].to_numpy(), threshold, n_boot, seed), t

