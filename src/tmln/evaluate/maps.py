"""Threshold calibration of dense tumour maps against tumour outlines, pixel by pixel.

A tumour classifier's card threshold is chosen on isolated validation patches (``tmln train
tumour``). The dense engines (``stream``, ``dense``) classify each patch with its surrounding tissue
in place of zero padding, which can move the calibration (docs/tumour-inference.md). Here slides
with tumour outlines are mapped with the engine as ``tmln analyze`` maps them, each map pixel
(16 µm for ResNet-18 at 0.5 µm/px) is labelled by its centre (inside the outlines' tumour,
``tmln.annotations.tumour_outlines``: tumour polygons minus exclusion polygons, the truth of every
command), and over all slides' pixels this reports
the pixel ROC AUC, sensitivity, specificity and Dice across thresholds, the thresholds that
maximise Youden's J and Dice, and how the card's own threshold does. ``write_model`` saves a copy
of the model whose card carries the chosen threshold.

Probabilities are binned at 1e-4 (``BINS``), so thresholds are found to 1e-4 and the AUC is that
of P rounded to 1e-4; memory does not grow with the cohort beyond one histogram per slide.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tmln.annotations import (
    AmbiguousAnnotation,
    find_annotation,
    node_outlines,
    outline_mask,
    read_annotations,
    tumour_outlines,
)
from tmln.atomic import atomic_path, file_digest, file_identity, write_csv, write_json
from tmln.cohort.table import read_slides_table
from tmln.errors import TmlnError
from tmln.models.card import CARD_NAME, WEIGHTS_NAME, model_identity, read_card, resolve_model_dir
from tmln.slide import Slide
from tmln.tumour import ProbabilityMap, tumour_map

BINS = 10_000
RULES = ("youden", "dice")
PARAMS_NAME = "calibration_params.json"  # beside each cached map: what it was computed with
SLIDE_COLUMNS = ["slide_id", "status", "error", "map_px", "true_tumour_mm2", "pred_tumour_mm2_card",
                 "dice_card", "pred_tumour_mm2_chosen", "dice_chosen"]
THRESHOLD_COLUMNS = ["threshold", "sensitivity", "specificity", "youden_j", "dice", "pred_tumour_mm2"]


@dataclass
class SlidePixels:
    """One slide's map pixels as histograms of P (``BINS`` bins), tumour and non-tumour."""

    slide_id: str
    tumour: np.ndarray
    normal: np.ndarray
    pixel_mm2: float  # area of one map pixel
    info: dict = field(default_factory=dict)


def truth_on_map(pm, tumour_polygons, exclusion_polygons=()) -> tuple[np.ndarray, np.ndarray]:
    """(tumour, excluded) boolean arrays on the map grid: a pixel is tumour (excluded) when its
    centre lies inside a tumour (exclusion) polygon (level-0 px; ``tmln.annotations.outline_mask``)."""
    from shapely.ops import unary_union

    out = []
    for polys in (tumour_polygons, exclusion_polygons):
        polys = list(polys)
        out.append(outline_mask(unary_union(polys) if polys else None, pm.shape, pm.scale, pm.origin))
    return out[0], out[1]


def slide_pixels(slide_id: str, pm, tumour_polygons, exclusion_polygons=()) -> SlidePixels:
    """Histograms of the mapped pixels' P, split by the outlines: tumour polygons minus exclusion
    polygons are tumour, every other mapped pixel is not (the truth of ``tmln.evaluate.froc`` and
    of patch sampling in ``tmln.train.patches``)."""
    tumour, excluded = truth_on_map(pm, tumour_polygons, exclusion_polygons)
    p = pm.array
    keep = np.isfinite(p)
    bins = np.minimum((p[keep] * BINS).astype(np.int64), BINS - 1)
    t = (tumour & ~excluded)[keep]
    return SlidePixels(slide_id, np.bincount(bins[t], minlength=BINS), np.bincount(bins[~t], minlength=BINS),
                       pixel_mm2=(pm.mpp / 1000.0) ** 2)


def sweep(tumour_hist: np.ndarray, normal_hist: np.ndarray) -> dict[str, np.ndarray]:
    """Metrics at every threshold k / BINS (P >= threshold is tumour), k = 0..BINS-1."""
    tp = np.cumsum(tumour_hist[::-1])[::-1].astype(float)  # pixels with bin >= k
    fp = np.cumsum(normal_hist[::-1])[::-1].astype(float)
    pos, neg = tp[0], fp[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        sens = tp / pos if pos else np.full_like(tp, np.nan)
        spec = 1.0 - fp / neg if neg else np.full_like(fp, np.nan)
        dice = 2 * tp / (2 * tp + fp + (pos - tp))
    return {"threshold": np.arange(BINS) / BINS, "sensitivity": sens, "specificity": spec,
            "youden_j": sens + spec - 1.0, "dice": dice, "positive": tp + fp}


def binned_auc(tumour_hist: np.ndarray, normal_hist: np.ndarray) -> float:
    """ROC AUC of the binned scores (ties count one half)."""
    pos, neg = tumour_hist.sum(), normal_hist.sum()
    if not pos or not neg:
        return float("nan")
    below = np.cumsum(normal_hist) - normal_hist  # normal pixels in lower bins
    return float((tumour_hist * (below + 0.5 * normal_hist)).sum() / (pos * neg))


def choose(metrics: dict, rule: str) -> int:
    """Bin index of the threshold that maximises the rule's metric (the lowest on ties)."""
    if rule not in RULES:
        raise TmlnError(f"rule must be one of {RULES}, got {rule!r}")
    values = np.nan_to_num(metrics["youden_j" if rule == "youden" else "dice"], nan=-np.inf)
    return int(np.argmax(values))


def _at(metrics: dict, k: int) -> dict:
    return {name: (None if not math.isfinite(float(metrics[name][k])) else float(metrics[name][k]))
            for name in ("sensitivity", "specificity", "youden_j", "dice")}


# public API mirroring `tmln evaluate maps`'s options, one keyword each
def calibrate_threshold(slides_csv, tumour_annotations, model, out_dir, *, node_annotations=None,
                        rule: str = "youden", device: str = "auto", precision: str = "auto",
                        mpp: float | None = None, write_model=None, quiet: bool = True) -> dict:
    """Map every slide of ``slides_csv``, compare with the outlines in ``tumour_annotations`` (no
    file = a slide without tumour) and write to ``out_dir``: ``calibration.json`` (pixel AUC, the
    thresholds each rule chooses and their metrics, the card threshold's metrics), ``thresholds.csv``
    (every 0.01), ``slides.csv`` (per slide: tumour mm² true / predicted and Dice at the card's and
    at the chosen threshold) and ``maps/<slide_id>/`` (the maps, reused by a rerun with the same
    model and settings).

    node_annotations : folder of node outlines; when given, maps cover the nodes (as ``tmln
        analyze`` does with a node source), else the tissue.
    rule : ``youden`` (max sensitivity + specificity - 1) or ``dice`` (max pixel Dice).
    write_model : a new model directory: the same weights, the card's threshold replaced by the
        chosen one and the calibration recorded under ``metrics["dense_map_calibration"]``.
    Returns the contents of ``calibration.json``. Raises ``TmlnError`` when no slide could be
    mapped or the outlines hold no tumour pixel.
    """
    if rule not in RULES:
        raise TmlnError(f"rule must be one of {RULES}, got {rule!r}")
    for folder in (tumour_annotations, node_annotations):
        if folder is not None and not Path(folder).is_dir():
            raise TmlnError("annotation folder not found", folder)
    card = read_card(model)
    model_dir = resolve_model_dir(model)
    out = Path(out_dir)
    entries = read_slides_table(slides_csv, mpp=mpp)
    done, rows = _map_slides(entries, model_dir, tumour_annotations, node_annotations, out / "maps",
                             device, precision, quiet)
    if not done:
        _write_slides(out, rows)
        raise TmlnError("no slide could be mapped (see the errors in slides.csv)", slides_csv)
    tumour = np.sum([s.tumour for s in done], axis=0)
    normal = np.sum([s.normal for s in done], axis=0)
    if not tumour.sum():
        _write_slides(out, rows)
        raise TmlnError("the tumour outlines cover no mapped pixel: nothing to calibrate against",
                        tumour_annotations)
    metrics = sweep(tumour, normal)
    best = {r: choose(metrics, r) for r in RULES}
    k = best[rule]
    k_card = min(max(int(math.ceil(card.threshold * BINS - 1e-9)), 0), BINS - 1)
    chosen = k / BINS
    by_id = {s.slide_id: s for s in done}
    for row in rows:
        s = by_id.get(row["slide_id"])
        if s is not None:
            row.update(_slide_row(s, k_card, k))
    pixel_mm2 = done[0].pixel_mm2
    result = {
        "model": str(model), "architecture": card.architecture, "model_mpp": card.mpp,
        "map_mpp": done[0].info.get("map_mpp"), "method": done[0].info.get("method"),
        "precision": done[0].info.get("precision"), "mask": "nodes" if node_annotations else "tissue",
        "slides": len(entries), "slides_mapped": len(done), "slides_failed": len(entries) - len(done),
        "pixels": int(tumour.sum() + normal.sum()), "tumour_pixels": int(tumour.sum()),
        "pixel_auc": binned_auc(tumour, normal),
        "rule": rule, "chosen_threshold": chosen, "at_chosen": _at(metrics, k),
        "card_threshold": card.threshold, "at_card": _at(metrics, k_card),
        "best": {r: {"threshold": kr / BINS, **_at(metrics, kr)} for r, kr in best.items()},
        "bins": BINS,
    }
    _write_thresholds(out, metrics, pixel_mm2)
    _write_slides(out, rows)
    if write_model is not None:
        result["written_model"] = str(write_calibrated_model(model_dir, card, write_model, result))
    write_json(out / "calibration.json", result)
    return result


def _map_slides(entries, model_dir, tumour_annotations, node_annotations, maps_dir: Path, device, precision,
                quiet: bool) -> tuple[list[SlidePixels], list[dict]]:
    """(pixels of the slides mapped, one ``slides.csv`` row per entry): a slide that cannot be read
    or mapped, or whose outlines are ambiguous, is a failed row and the others go on."""
    from tqdm import tqdm

    done, rows = [], []
    for e in tqdm(entries, desc="slides", unit="slide", disable=quiet, leave=False):
        if e.error is not None:
            rows.append({"slide_id": e.slide_id, "status": "failed", "error": e.error})
            continue
        try:
            sp = _slide(e, model_dir, tumour_annotations, node_annotations, maps_dir / e.slide_id, device, precision)
        except (TmlnError, AmbiguousAnnotation) as exc:
            rows.append({"slide_id": e.slide_id, "status": "failed", "error": str(exc)})
            continue
        done.append(sp)
        rows.append({"slide_id": e.slide_id, "status": "done", "error": ""})
    return done, rows


def _write_thresholds(out: Path, metrics: dict, pixel_mm2: float) -> None:
    """``thresholds.csv``: the metrics at every 0.01 and the predicted tumour area (mm²)."""
    import pandas as pd

    grid = np.arange(0, BINS, BINS // 100)
    table = {name: metrics[name][grid] for name in THRESHOLD_COLUMNS[:-1]}
    table["pred_tumour_mm2"] = metrics["positive"][grid] * pixel_mm2
    write_csv(out / "thresholds.csv", pd.DataFrame(table)[THRESHOLD_COLUMNS])


def write_calibrated_model(model_dir, card, dest, result: dict) -> Path:
    """Copy the weights to ``dest`` and write the card with the chosen threshold (card last, so a
    directory with a card is complete)."""
    import dataclasses

    dest = Path(dest)
    if dest.resolve() == Path(model_dir).resolve():
        raise TmlnError("--write-model must be a new directory, not the model being calibrated", dest)
    dest.mkdir(parents=True, exist_ok=True)
    with atomic_path(dest / WEIGHTS_NAME) as tmp:
        tmp.write_bytes((Path(model_dir) / WEIGHTS_NAME).read_bytes())
    note = {k: result[k] for k in ("rule", "chosen_threshold", "card_threshold", "pixel_auc", "at_chosen", "at_card",
                                   "map_mpp", "method", "precision", "mask", "slides_mapped", "pixels",
                                   "tumour_pixels")}
    new = dataclasses.replace(card, threshold=result["chosen_threshold"],
                              metrics={**card.metrics, "dense_map_calibration": note})
    write_json(dest / CARD_NAME, new.to_dict())
    return dest


# ---------------------------------------------------------------------------- per slide
def _slide(entry, model_dir, tumour_annotations, node_annotations, map_dir: Path, device, precision) -> SlidePixels:
    with Slide(entry.path, mpp=entry.mpp) as slide:
        size = slide.dimensions
        tumour_file = find_annotation(tumour_annotations, entry.slide_id, "tumour")
        anns = read_annotations(tumour_file, slide_size=size) if tumour_file else []
        tumour = tumour_outlines(anns).polygons  # exclusions already carved out
        nodes, node_file = None, None
        if node_annotations is not None:
            node_file = find_annotation(node_annotations, entry.slide_id, "nodes")
            if node_file is None:
                raise TmlnError(f"no node annotation for slide {entry.slide_id!r} in {node_annotations}")
            nodes, _ = node_outlines(read_annotations(node_file, slide_size=size))
        params = {"model": model_identity(str(model_dir)),
                  "slide": {"path": str(entry.path), **(file_identity(entry.path) or {})}, "mpp": entry.mpp,
                  "mask": "nodes" if nodes is not None else "tissue", "nodes_sha256": file_digest(node_file),
                  "precision": precision, "device": str(device)}
        cached = map_dir / PARAMS_NAME
        if cached.is_file() and json.loads(cached.read_text(encoding="utf-8")) == params:
            pm = ProbabilityMap.load(map_dir)
        else:
            pm = tumour_map(slide, model_dir, mask=params["mask"], node_polygons=nodes, out_dir=map_dir,
                            device=device, precision=precision)

            write_json(cached, params)
    sp = slide_pixels(entry.slide_id, pm, tumour)
    sp.info = {"map_mpp": pm.mpp, "method": pm.info.get("method"), "precision": pm.info.get("precision")}
    return sp


def _slide_row(s: SlidePixels, k_card: int, k: int) -> dict:
    pos = s.tumour.sum()
    row = {"map_px": int(pos + s.normal.sum()), "true_tumour_mm2": float(pos * s.pixel_mm2)}
    for name, kk in (("card", k_card), ("chosen", k)):
        tp, fp = s.tumour[kk:].sum(), s.normal[kk:].sum()
        row[f"pred_tumour_mm2_{name}"] = float((tp + fp) * s.pixel_mm2)
        denom = 2 * tp + fp + (pos - tp)
        row[f"dice_{name}"] = float(2 * tp / denom) if denom else None
    return row


def _write_slides(out: Path, rows: list[dict]) -> None:
    import pandas as pd

    write_csv(out / "slides.csv", pd.DataFrame(rows, columns=SLIDE_COLUMNS))
