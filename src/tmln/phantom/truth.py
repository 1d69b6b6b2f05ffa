"""Truth tables of phantom slides, with the definitions the measurement core uses.

node      = one node polygon (instance); ``area_mm2`` includes the tumour inside it.
deposit   = one connected tumour component inside a node.
``largest_deposit_mm`` = the greatest maximum-Feret diameter (mm) among the node's deposits.
category  = ``deposit_category(largest_deposit_mm)``; ``metastatic`` = ``is_metastatic(cat, rule)``.
``tumour_fraction`` = tumour area / node area; centroid of the node in µm.
Patient: ``t_mln`` = Σ tumour area in metastatic nodes / Σ metastatic-node area;
``t_mln_mean_nodes`` = mean over metastatic nodes of tumour / node area (both 0 without MLN).
Areas from the exact shapely geometry times ``mpp_x * mpp_y``.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from tmln.measure.patients import category_counts, node_markers
from tmln.measure.staging import NODE_COLUMNS, PATIENT_COLUMNS, deposit_category, is_metastatic, n_stage
from tmln.phantom.geometry import feret_diameter


def node_rows(nodes: list, tumour: list, mpp_x: float, mpp_y: float, patient_id: str, slide_id: str,
              rule: str = "ajcc") -> list[dict]:
    """One row per node (``NODE_COLUMNS``), node_id 1..n ordered by centroid (y, x).

    nodes, tumour : shapely polygons in level-0 px.
    """
    from shapely.ops import unary_union
    from shapely.strtree import STRtree

    px_area_mm2 = mpp_x * mpp_y * 1e-6
    tree = STRtree(tumour) if tumour else None
    order = sorted(range(len(nodes)), key=lambda k: (nodes[k].centroid.y, nodes[k].centroid.x))
    rows = []
    for node_id, k in enumerate(order, start=1):
        node = nodes[k]
        area = node.area * px_area_mm2
        t_area, largest = 0.0, 0.0
        if tree is not None:
            near = [tumour[i] for i in tree.query(node)]
            inside = node.intersection(unary_union(near)) if near else None
            if inside is not None and not inside.is_empty:
                t_area = inside.area * px_area_mm2
                comps = [g for g in getattr(inside, "geoms", [inside]) if g.geom_type == "Polygon" and g.area > 0]
                largest = max((_feret_mm(g, mpp_x, mpp_y) for g in comps), default=0.0)
        cat = deposit_category(largest)
        c = node.centroid
        rows.append({
            "patient_id": patient_id,
            "slide_id": slide_id,
            "node_id": node_id,
            "area_mm2": area,
            "tumour_area_mm2": t_area,
            "tumour_fraction": t_area / area if area > 0 else 0.0,
            "largest_deposit_mm": largest,
            "category": cat,
            "metastatic": bool(is_metastatic(cat, rule)),
            "centroid_x_um": c.x * mpp_x,
            "centroid_y_um": c.y * mpp_y,
        })
    assert all(list(r) == NODE_COLUMNS for r in rows)
    return rows


def _feret_mm(geom, mpp_x: float, mpp_y: float) -> float:
    from shapely import affinity

    return feret_diameter(affinity.scale(geom, mpp_x * 1e-3, mpp_y * 1e-3, origin=(0, 0)))


def patient_rows(node_rows_: Iterable[dict], slides: dict[str, int]) -> list[dict]:
    """One row per patient (``PATIENT_COLUMNS``). ``slides`` maps patient_id -> number of slides
    (a patient whose slides hold no node still gets a row)."""
    by_patient: dict[str, list[dict]] = {p: [] for p in slides}
    for r in node_rows_:
        by_patient.setdefault(r["patient_id"], []).append(r)
    out = []
    for pid, rows in by_patient.items():
        mln = [r for r in rows if r["metastatic"]]
        mln_area = sum(r["area_mm2"] for r in mln)
        mln_tumour = sum(r["tumour_area_mm2"] for r in mln)
        out.append({
            "patient_id": pid,
            "n_slides": int(slides.get(pid, 0)),
            "n_nodes": len(rows),
            "n_metastatic_nodes": len(mln),
            "n_stage": n_stage(len(mln)),
            "tumour_area_mm2": sum(r["tumour_area_mm2"] for r in rows),
            "metastatic_node_area_mm2": mln_area,
            "t_mln": mln_tumour / mln_area if mln_area > 0 else 0.0,
            "t_mln_mean_nodes": float(np.mean([r["tumour_fraction"] for r in mln])) if mln else 0.0,
            **node_markers(len(rows), len(mln)),
            **category_counts(rows),
        })
    assert all(list(r) == PATIENT_COLUMNS for r in out)
    return out
