"""``report.html``: one self-contained page built from a run directory.

Cohort summary, per-patient table, per-slide table with overlay thumbnails (embedded as base64
JPEG up to ``EMBED_MAX_SLIDES`` slides, linked beyond), failures with reasons, and optional extra sections given as ``(title, html)`` pairs (the
html fragment is trusted and inserted as is, e.g. survival plots from ``tmln.survival``; an empty title adds no heading).
The page has inline CSS, no scripts and no external resources; it is deterministic (no
timestamps), so a resumed run gives the same bytes as an uninterrupted one.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Sequence

from tmln.atomic import write_text
from tmln.models.appearance import MODEL_KINDS, WARN_DISTANCE, distance_column, out_of_range
from tmln.rundir import RunDir

THUMB_MAX_PX = 480
# Up to this many slides the overlays are embedded (one self-contained file); beyond it the page links
# the overlay PNGs in slides/<slide_id>/ so that the report of a large cohort stays small.
EMBED_MAX_SLIDES = 200
TEXT_COLUMNS = {"patient_id", "slide_id", "slide_path", "status", "error", "n_stage", "category", "notes"}


def _thumb_data_uri(png_path: Path, max_px: int = THUMB_MAX_PX) -> str | None:
    import cv2

    if not png_path.is_file():
        return None
    img = cv2.imread(str(png_path), cv2.IMREAD_COLOR)
    if img is None:
        return None
    h, w = img.shape[:2]
    f = min(1.0, max_px / max(h, w))
    if f < 1.0:
        img = cv2.resize(img, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 82])
    if not ok:  # pragma: no cover
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


def _overlay_src(run_dir: Path, slide_id: str, embed: bool) -> str | None:
    png = RunDir(run_dir).slide(slide_id).overlay
    if embed:
        return _thumb_data_uri(png)
    return png.relative_to(run_dir).as_posix() if png.is_file() else None


def _read_csv(path: Path):
    import pandas as pd

    if not path.is_file():
        return pd.DataFrame()
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def _fmt(v: str, column: str = "") -> str:
    """Shorten numbers for display (the CSVs keep full precision); ids and labels stay as written."""
    if column in TEXT_COLUMNS:
        return v
    try:
        f = float(v)
    except (TypeError, ValueError):
        return v
    if v.strip().lstrip("-").isdigit():
        return v
    return f"{f:.4g}"


def render_report(run_dir: str | Path, sections: Sequence[tuple[str, str]] = ()) -> str:
    """The report page of a run directory as a string."""
    from jinja2 import Environment, PackageLoader, select_autoescape

    run_dir = Path(run_dir)
    run = RunDir(run_dir)
    summary = json.loads(run.summary.read_text(encoding="utf-8"))
    patients = _read_csv(run.patients_csv)
    slides = _read_csv(run.slides_csv)
    slide_cols = [c for c in ("slide_id", "patient_id", "status", "n_nodes", "n_metastatic_nodes", "n_itc",
                              "n_micro", "n_macro", "node_area_mm2", "tumour_area_mm2",
                              "extranodal_tumour_area_mm2", "largest_deposit_mm", *map(distance_column, MODEL_KINDS))
                 if c in slides.columns]
    slide_rows = []
    embed = len(slides) <= EMBED_MAX_SLIDES
    for rec in slides.to_dict("records"):
        sid = rec.get("slide_id", "")
        slide_rows.append({
            "cells": [_fmt(str(rec.get(c, "")), c) for c in slide_cols],
            "status": rec.get("status", ""),
            "slide_id": sid,
            "error": rec.get("error", ""),
            "notes": rec.get("notes", ""),
            "overlay": _overlay_src(run_dir, sid, embed) if rec.get("status") == "done" else None,
        })
    unlike = unlike_training(slides)
    env = Environment(loader=PackageLoader("tmln.report", "templates"), autoescape=select_autoescape(["html"]),
                      trim_blocks=True, lstrip_blocks=True)
    tpl = env.get_template("report.html")
    return tpl.render(
        summary=summary,
        patient_cols=list(patients.columns),
        patient_rows=[[_fmt(str(v), c) for c, v in zip(patients.columns, r)] for r in patients.itertuples(index=False)],
        slide_cols=slide_cols,
        slide_rows=slide_rows,
        sections=[(str(t), str(h)) for t, h in sections],
        unlike=unlike,
        warn_distance=WARN_DISTANCE,
    )


def unlike_training(slides) -> list[dict]:
    """Slides whose appearance lies farther than ``WARN_DISTANCE`` from a model's training data:
    ``[{"slide_id", "model", "distance"}]`` (``slides.csv``'s ``*_model_appearance_distance`` columns)."""
    return [{"slide_id": rec.get("slide_id", ""), "model": kind, "distance": f"{d:.2f}"}
            for rec in slides.to_dict("records") for kind, d in out_of_range(rec)]


def write_report(run_dir: str | Path, sections: Sequence[tuple[str, str]] = (), path: str | Path | None = None) -> Path:
    """(Re)write ``RUN/report.html`` (or ``path``) from the run directory's tables; returns its path."""

    run_dir = Path(run_dir)
    out = Path(path) if path is not None else RunDir(run_dir).report
    write_text(out, render_report(run_dir, sections))
    return out
