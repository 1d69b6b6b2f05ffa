"""One slide's work: open, get regions (annotations or models), measure, write outputs, state last.

``process_slide(job)`` is a module-level function of one picklable ``SlideJob`` (plain fields only),
so any executor (serial, process pool, Dask) can run it. It never raises for a bad slide or bad
annotation: the failure is recorded in ``state.json`` and returned.

Outputs in ``slides/<slide_id>/`` (each written atomically; ``state.json`` last):
``nodes.csv``, ``nodes.geojson``, ``tumour.geojson``, ``overlay.png``, ``state.json``.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from tmln import __version__
from tmln.annotations import node_outlines, read_annotations, tumour_outlines, write_geojson
from tmln.atomic import remove_stale_temporaries, write_bytes, write_csv
from tmln.cohort.config import RunConfig, node_provider, tumour_provider
from tmln.errors import ModelCardError, TmlnError
from tmln.measure.nodes import SlideMeasurement, area_mm2, measure_slide
from tmln.measure.staging import NODE_COLUMNS
from tmln.models.appearance import WARN_DISTANCE, distance_column, slide_distance
from tmln.models.card import read_card
from tmln.regions import SlideRegions, valid_polygons
from tmln.report.geojson import node_features, tumour_features
from tmln.report.overlay import encode_png, overlay_image
from tmln.rundir import SlideDir
from tmln.slide import Slide


@dataclass
class SlideJob:
    """Everything needed to process one slide (picklable; paths as strings)."""

    slide_id: str
    patient_id: str
    slide_path: str  # absolute path of the slide file
    table_slide_path: str  # as written in the slides table
    slide_dir: str  # RUN/slides/<slide_id>
    mpp: float | None = None
    node_annotation: str | None = None
    tumour_annotation: str | None = None
    node_annotation_error: str | None = None  # lookup failure (missing/ambiguous file)
    tumour_annotation_error: str | None = None
    config: RunConfig = field(default_factory=RunConfig)  # the run's options (tmln.cohort.config)
    params: dict = field(default_factory=dict)
    params_hash: str = ""


class SlideJobError(TmlnError):
    """A per-slide problem found by the job itself (e.g. no node annotation for the slide)."""


# ---------------------------------------------------------------------------- regions
def slide_regions(job: SlideJob, slide: Slide) -> SlideRegions:
    """Node and tumour polygons of one slide (level-0 px) from annotations or models; outlines mean
    what ``tmln.annotations`` says (tumour = tumour classes minus exclusion classes)."""

    c = job.config
    regions = SlideRegions()
    size = slide.dimensions
    if c.node_model:
        knobs = {**({} if c.node_split else {"split_touching": False}),
                 **({} if c.min_node_area_mm2 is None else {"min_node_area_mm2": c.min_node_area_mm2})}
        raw = node_provider()(slide, c.node_model, out_dir=job.slide_dir, device=c.device, **knobs)
        regions.nodes, notes = valid_polygons(raw, "node")
        regions.notes += notes
        regions.nodes_source = f"model:{c.node_model}"
    else:
        if job.node_annotation_error:
            raise SlideJobError(job.node_annotation_error, job.slide_path)
        anns = read_annotations(job.node_annotation, slide_size=size)
        regions.nodes, notes = node_outlines(anns)
        if _same_file(job.node_annotation, job.tumour_annotation) and not c.tumour_model:
            notes = [n for n in notes if "tumour outlines, not nodes" not in n]  # one file holds both
        regions.notes += notes
        regions.nodes_source = f"annotations:{Path(job.node_annotation).name}"
        if not regions.nodes:
            regions.notes.append("the node annotation file holds no node polygon")
    if c.tumour_model:
        raw = tumour_provider()(slide, c.tumour_model, node_polygons=regions.nodes, out_dir=job.slide_dir,
                                device=c.device, threshold=c.tumour_threshold, precision=c.tumour_precision,
                                **({} if c.tumour_method == "auto" else {"method": c.tumour_method}),
                                **({} if c.tumour_tile_size is None else {"tile_size": c.tumour_tile_size}))
        regions.tumour, notes = valid_polygons(raw, "tumour")
        regions.notes += notes
        regions.tumour_source = f"model:{c.tumour_model}"
    elif job.tumour_annotation_error:
        raise SlideJobError(job.tumour_annotation_error, job.slide_path)
    elif job.tumour_annotation:
        anns = read_annotations(job.tumour_annotation, slide_size=size)
        shared = not c.node_model and _same_file(job.node_annotation, job.tumour_annotation)
        # a file that is also the node file: its unclassified and node-status polygons are nodes
        truth = tumour_outlines(anns, also_node_file=shared)
        regions.tumour = truth.polygons
        regions.notes += truth.notes
        regions.tumour_source = f"annotations:{Path(job.tumour_annotation).name}"
    else:
        regions.tumour_source = "none (no tumour annotation file: no tumour)"
    return regions


def _same_file(a: str | None, b: str | None) -> bool:
    return bool(a and b) and Path(a).resolve() == Path(b).resolve()


# ---------------------------------------------------------------------------- the job
def process_slide(job: SlideJob) -> dict:
    """Process one slide; return its state dict (also written to ``slide_dir/state.json``)."""

    t0 = time.monotonic()
    sd = SlideDir(job.slide_dir)
    sd.path.mkdir(parents=True, exist_ok=True)
    sd.clear_state()
    remove_stale_temporaries(sd.path)  # left by a worker killed mid-write
    base = {"slide_id": job.slide_id, "patient_id": job.patient_id, "slide_path": job.table_slide_path,
            "params_hash": job.params_hash, "params": job.params}
    try:
        result, notes = _measure_and_write(job, sd)
        state = {**base, "status": "done", "error": None, "result": result, "notes": notes}
    except TmlnError as exc:
        sd.clear()
        state = {**base, "status": "failed", "error": str(exc), "result": None, "notes": []}
    except Exception as exc:  # a bug or an unexpected library error: report, keep the cohort going
        sd.clear()
        state = {**base, "status": "failed", "error": f"internal error: {type(exc).__name__}: {exc}",
                 "traceback": traceback.format_exc(), "result": None, "notes": []}
    state["elapsed_s"] = round(time.monotonic() - t0, 3)

    state["tmln_version"] = __version__
    sd.write_state(state)
    return state


def _measure_and_write(job: SlideJob, sd: SlideDir) -> tuple[dict, list[str]]:
    import pandas as pd

    with Slide(job.slide_path, mpp=job.mpp) as slide:
        mpp_x, mpp_y = slide.mpp_x_required, slide.mpp_y_required
        slide.record_gaps = True  # an unreadable tile is a recorded gap, not a failed slide
        slide.verify()
        regions = slide_regions(job, slide)
        appearance, appearance_notes = model_appearance(slide, job)
        m = measure_slide(regions.nodes, regions.tumour, mpp_x, mpp_y, patient_id=job.patient_id,
                          slide_id=job.slide_id, mln_rule=job.config.mln_rule)
        overlay = overlay_image(slide, m, max_side=job.config.overlay_max_px)  # reads pixels: may meet gaps too
        from_models = bool(job.config.node_model or job.config.tumour_model)
        gaps, gap_notes = unread_tiles(slide, m, mpp_x, mpp_y, from_models=from_models)
        notes = list(regions.notes) + list(m.notes) + gap_notes + appearance_notes
        write_csv(sd.nodes_csv, pd.DataFrame(m.rows, columns=NODE_COLUMNS))
        write_geojson(sd.nodes_geojson, node_features(m))
        write_geojson(sd.tumour_geojson, tumour_features(m))
        write_bytes(sd.overlay, encode_png(overlay))
        result = {
            "slide_id": job.slide_id,
            "patient_id": job.patient_id,
            "slide_path": job.table_slide_path,
            "mpp_x": mpp_x,
            "mpp_y": mpp_y,
            "mpp_source": slide.mpp_source,
            "width_px": slide.width,
            "height_px": slide.height,
            **m.summary,
            **gaps,
            **appearance,
            "nodes_source": regions.nodes_source,
            "tumour_source": regions.tumour_source,
        }
    return result, notes


def model_appearance(slide: Slide, job: SlideJob) -> tuple[dict, list[str]]:
    """Each model's appearance distance to this slide (``tmln.models.appearance``): columns
    ``tumour_model_appearance_distance`` / ``node_model_appearance_distance`` (None without a model or
    without statistics in its card) and a note for a slide out of the model's range."""

    out, notes = {}, []
    for kind, model in (("tumour", job.config.tumour_model), ("node", job.config.node_model)):
        col = distance_column(kind)
        out[col] = None
        if not model:
            continue
        try:
            card = read_card(model)
        except ModelCardError:  # a provider that takes other model names (plug-ins, tests): no card to compare
            continue
        d = slide_distance(slide, card)
        if d is None or d["n_patches"] == 0:
            continue
        out[col] = round(d["distance"], 3)
        if d["out_of_range"]:
            notes.append(f"APPEARANCE: this slide looks unlike the {kind} model's training data (appearance distance "
                         f"{d['distance']:.2f} > {WARN_DISTANCE:g}; farthest feature {d['feature']}, z {d['z']:+.2f}): "
                         f"check the {kind} model on a few outlined slides of this kind before trusting its numbers")
    return out, notes


MAX_GAPS_LISTED = 10  # unreadable tiles named one by one in the notes


def unread_tiles(slide: Slide, m: SlideMeasurement, mpp_x: float, mpp_y: float, from_models: bool) -> tuple[dict, list[str]]:
    """Gaps (tiles the slide could not decode) met while processing: ``unread_area_mm2`` (all gaps),
    ``unread_node_area_mm2`` (inside nodes), ``unread_tiles_px`` ([x0, y0, x1, y1] level-0 px each)
    and notes; with models, how much of each node the models could not see."""
    from shapely.ops import unary_union

    if not slide.gaps:
        return {"unread_area_mm2": 0.0, "unread_node_area_mm2": 0.0, "unread_tiles_px": []}, []
    gaps = slide.gap_geometry()
    nodes = unary_union(m.nodes) if m.nodes else None
    in_nodes = gaps.intersection(nodes) if nodes is not None else None
    total = area_mm2(gaps, mpp_x, mpp_y)
    inside = area_mm2(in_nodes, mpp_x, mpp_y) if in_nodes is not None and not in_nodes.is_empty else 0.0
    boxes = sorted(slide.gaps)
    where = ", ".join(f"({x0}, {y0})-({x1}, {y1})" for x0, y0, x1, y1 in boxes[:MAX_GAPS_LISTED])
    more = f" and {len(boxes) - MAX_GAPS_LISTED} more" if len(boxes) > MAX_GAPS_LISTED else ""
    reason = slide.gaps[boxes[0]]
    notes = [f"UNREAD TILES: {len(boxes)} tile(s) could not be read ({reason}) at level-0 px {where}{more}: "
             f"{total:.6g} mm², {inside:.6g} mm² of it inside nodes; "
             + ("the models saw white there" if from_models else
                "the measurement from outlines needs none of their pixels")]
    if from_models and inside > 0:
        for row, node in zip(m.rows, m.nodes):
            unseen = gaps.intersection(node)
            if not unseen.is_empty:
                a = area_mm2(unseen, mpp_x, mpp_y)
                notes.append(f"node {row['node_id']}: {a:.6g} mm² ({100 * a / max(row['area_mm2'], 1e-30):.3g} % "
                             "of the node) not seen by the models (unreadable tiles)")
    return ({"unread_area_mm2": total, "unread_node_area_mm2": inside, "unread_tiles_px": [list(b) for b in boxes]},
            notes)
