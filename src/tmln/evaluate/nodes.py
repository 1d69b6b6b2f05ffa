"""Evaluate node segmentation against reference outlines, slide by slide (``tmln evaluate nodes``).

Truth: node outlines per slide (``<slide_id>.nodes.geojson`` or ``<slide_id>.geojson|.json|.xml``).
Predictions, per slide, the first found of: the same annotation names, ``<slide_id>/nodes.geojson``,
``slides/<slide_id>/nodes.geojson`` (a run directory), ``<slide_id>/node_labels.npy`` or
``<slide_id>.node_labels.npy`` (a label map with its JSON: converted to level-0 polygons).

Metrics per slide (``tmln.evaluate.segmentation``), computed exactly on the polygons in level-0 px
(no rasterisation error): Dice and IoU of the node areas, one-to-one instance matching at
IoU >= ``iou`` (precision, recall, F1, count error), split and merge errors, mean matched IoU.
The summary pools pixels (Dice over all slides' areas) and instances (micro precision/recall).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tmln.annotations import AmbiguousAnnotation, find_annotation, node_outlines, read_annotations
from tmln.atomic import write_csv, write_json
from tmln.cohort.table import read_slides_table
from tmln.errors import TmlnError
from tmln.evaluate.segmentation import match_polygons
from tmln.nodes.regions import labels_to_polygons, read_node_labels
from tmln.rundir import NODE_LABELS_NPY, RunDir, SlideDir
from tmln.slide import Slide

ANNOTATION_SUFFIXES = (".nodes.geojson", ".nodes.json", ".nodes.xml", ".geojson", ".json", ".xml")
SLIDE_COLUMNS = ["slide_id", "status", "dice", "iou", "n_truth", "n_pred", "tp", "fp", "fn", "precision", "recall",
                 "f1", "count_error", "split_errors", "merge_errors", "mean_matched_iou", "truth_area_mm2",
                 "pred_area_mm2", "truth_source", "pred_source"]
MATCH_COLUMNS = ["slide_id", "truth_id", "pred_id", "iou"]


@dataclass
class NodeSet:
    polygons: list
    source: str
    mpp: tuple[float, float] | None = None  # level-0 µm/px when known


def slide_ids_in(folder) -> list[str]:
    """Slide ids of the node annotation files in a folder (``.tumour`` files are not node files)."""
    ids = set()
    for p in Path(folder).iterdir():
        if not p.is_file():
            continue
        name = p.name
        low = name.lower()
        if any(t in low for t in (".tumour.", ".tumor.")) or low.startswith("."):
            continue
        for suf in ANNOTATION_SUFFIXES:
            if low.endswith(suf):
                ids.add(name[: -len(suf)])
                break
    return sorted(ids)


def _read_polygons(path: Path) -> list:
    polys, _ = node_outlines(read_annotations(path))
    return polys


def load_truth(folder, slide_id: str) -> NodeSet | None:
    try:
        p = find_annotation(folder, slide_id, "nodes")
    except AmbiguousAnnotation as exc:
        raise TmlnError(exc.message, folder) from None
    return None if p is None else NodeSet(_read_polygons(p), str(p))


def load_prediction(folder, slide_id: str) -> NodeSet | None:
    """Predicted nodes of a slide (see module docstring for the names looked for)."""

    folder = Path(folder)
    found = load_truth(folder, slide_id)
    if found is not None:
        return found
    # a node-map --out folder per slide (FOLDER/<slide_id>/), or a run directory (FOLDER/slides/<slide_id>/)
    dirs = (SlideDir(folder / slide_id), RunDir(folder).slide(slide_id))
    for p in (d.nodes_geojson for d in dirs):
        if p.is_file():
            return NodeSet(_read_polygons(p), str(p), _mpp_beside(p.parent))
    for p in (*(d.node_labels for d in dirs), folder / f"{slide_id}.{NODE_LABELS_NPY}"):
        if p.is_file():
            nm = read_node_labels(p)
            if not nm.slide_mpp:
                raise TmlnError("label map JSON lacks slide_mpp (the slide's level-0 µm/px)", p)
            polys = labels_to_polygons(nm.labels, nm.mpp, nm.slide_mpp, nm.origin)
            return NodeSet(polys, str(p), (float(nm.slide_mpp[0]), float(nm.slide_mpp[1])))
    return None


def _mpp_beside(folder: Path):
    import json

    meta = SlideDir(folder).node_labels_json
    if meta.is_file():
        try:
            smpp = json.loads(meta.read_text(encoding="utf-8")).get("slide_mpp")
            return (float(smpp[0]), float(smpp[1])) if smpp else None
        except Exception:
            return None
    return None


def area_overlap(truth: list, pred: list) -> tuple[float, float, float]:
    """(intersection, truth area, prediction area) of the unions, in level-0 px²."""
    from shapely.ops import unary_union

    t = unary_union(truth) if truth else None
    p = unary_union(pred) if pred else None
    ta = t.area if t is not None else 0.0
    pa = p.area if p is not None else 0.0
    inter = t.intersection(p).area if (t is not None and p is not None) else 0.0
    return float(inter), float(ta), float(pa)


def evaluate_slide(truth: list, pred: list, iou: float = 0.5, mpp: tuple[float, float] | None = None) -> dict:
    """Metrics of one slide (polygons in level-0 px; ``mpp`` only for the mm² columns)."""

    inter, ta, pa = area_overlap(truth, pred)
    denom = ta + pa
    m = match_polygons(truth, pred, iou=iou)
    px2mm2 = (mpp[0] * mpp[1] / 1e6) if mpp else None
    return {
        "dice": 2 * inter / denom if denom else 1.0,
        "iou": inter / (denom - inter) if denom - inter > 0 else 1.0,
        "n_truth": m["n_truth"], "n_pred": m["n_pred"], "tp": m["tp"], "fp": m["fp"], "fn": m["fn"],
        "precision": m["precision"], "recall": m["recall"], "f1": m["f1"], "count_error": m["count_error"],
        "split_errors": m["split_errors"], "merge_errors": m["merge_errors"],
        "mean_matched_iou": m["mean_matched_iou"],
        "truth_area_mm2": ta * px2mm2 if px2mm2 else None, "pred_area_mm2": pa * px2mm2 if px2mm2 else None,
        "_inter": inter, "_ta": ta, "_pa": pa, "_matches": m["matches"],
    }


def pooled(results: list[dict]) -> dict:
    """Pooled metrics of ``evaluate_slide`` results (before their ``_`` keys are dropped): Dice and IoU of
    all node areas together, micro instance precision/recall and the counts; None where undefined."""
    inter = sum(r["_inter"] for r in results)
    ta = sum(r["_ta"] for r in results)
    pa = sum(r["_pa"] for r in results)
    tp, n_truth, n_pred = (sum(r[k] for r in results) for k in ("tp", "n_truth", "n_pred"))
    return {"dice": 2 * inter / (ta + pa) if ta + pa else None,
            "iou": inter / (ta + pa - inter) if ta + pa - inter > 0 else None,
            "precision": tp / n_pred if n_pred else None, "recall": tp / n_truth if n_truth else None,
            "tp": int(tp), "n_truth": int(n_truth), "n_pred": int(n_pred)}


def evaluate_nodes(truth_dir, predictions_dir, slides=None, iou: float = 0.5) -> tuple:
    """Evaluate every slide -> (slides DataFrame, matches DataFrame, summary dict).

    slides : optional slides table; gives the slide list and level-0 µm/px (for mm² columns).
    Without it, the slides are the node annotation files found in ``truth_dir``.
    """
    import pandas as pd

    truth_dir, predictions_dir = Path(truth_dir), Path(predictions_dir)
    for name, d in (("truth", truth_dir), ("predictions", predictions_dir)):
        if not d.is_dir():
            raise TmlnError(f"{name} folder not found", d)
    mpps: dict = {}
    if slides is not None:
        entries = read_slides_table(slides)
        ids = [e.slide_id for e in entries]
        for e in entries:
            if e.mpp:
                mpps[e.slide_id] = (e.mpp, e.mpp)
            elif e.path.is_file():
                try:
                    with Slide(e.path) as s:
                        if s.has_mpp:
                            mpps[e.slide_id] = (s.mpp_x, s.mpp_y)
                except TmlnError:
                    pass
    else:
        ids = slide_ids_in(truth_dir)
    if not ids:
        raise TmlnError("no node annotation files (<slide_id>.nodes.geojson, .geojson, .xml) found", truth_dir)
    rows, matches, results = [], [], []
    errs = np.zeros(2)
    for sid in ids:
        t = load_truth(truth_dir, sid)
        if t is None:
            rows.append({"slide_id": sid, "status": "no truth"})
            continue
        p = load_prediction(predictions_dir, sid)
        status = "ok"
        if p is None:
            p, status = NodeSet([], ""), "no prediction (counted as empty)"
        mpp = mpps.get(sid) or p.mpp
        r = evaluate_slide(t.polygons, p.polygons, iou=iou, mpp=mpp)
        results.append(r)
        errs += [r["split_errors"], r["merge_errors"]]
        for mt in r["_matches"]:
            matches.append({"slide_id": sid, **mt})
        rows.append({"slide_id": sid, "status": status, **{k: v for k, v in r.items() if not k.startswith("_")},
                     "truth_source": t.source, "pred_source": p.source})
    frame = pd.DataFrame(rows, columns=SLIDE_COLUMNS)
    evaluated = frame[frame["status"] != "no truth"]
    pool = pooled(results)
    summary = {
        "slides": int(len(evaluated)),
        "slides_without_prediction": int((frame["status"] != "ok").sum() - (frame["status"] == "no truth").sum()),
        "slides_without_truth": int((frame["status"] == "no truth").sum()),
        "dice_pooled": pool["dice"], "iou_pooled": pool["iou"],
        "dice_mean": float(evaluated["dice"].mean()) if len(evaluated) else None,
        "dice_min": float(evaluated["dice"].min()) if len(evaluated) else None,
        "n_truth": pool["n_truth"], "n_pred": pool["n_pred"], "tp": pool["tp"],
        "precision": pool["precision"], "recall": pool["recall"],
        "count_error": pool["n_pred"] - pool["n_truth"],
        "abs_count_error_sum": int(evaluated["count_error"].abs().sum()) if len(evaluated) else 0,
        "split_errors": int(errs[0]), "merge_errors": int(errs[1]),
        "iou_threshold": float(iou),
        "truth": str(truth_dir), "predictions": str(predictions_dir),
    }
    return frame, pd.DataFrame(matches, columns=MATCH_COLUMNS), summary


def write_evaluation(out_dir, frame, matches, summary) -> dict:
    """Write ``nodes_slides.csv``, ``nodes_matches.csv`` and ``nodes.json`` (atomically)."""

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"slides": out / "nodes_slides.csv", "matches": out / "nodes_matches.csv", "summary": out / "nodes.json"}
    write_csv(paths["slides"], frame)
    write_csv(paths["matches"], matches)
    write_json(paths["summary"], summary)
    return paths
