"""The review list: nodes whose call is least certain, each with the reasons (pure functions).

Three rules (issue 17):

- ``cutoff``: the largest deposit lies within 10 % of a category cut-off, 0.2 mm (ITC / micro) or
  2 mm (micro / macro): ``|largest - cut| <= 0.1 * cut``. A small error of the outline moves the node
  to the other category.
- ``probability``: over much of a deposit (``PROB_SHARE`` = half or more of the tumour map's cells
  inside it) the tumour probability lies within ``PROB_BAND`` (0.1) of the threshold that made it:
  the model was unsure there. Needs the run's tumour map (``--tumour-model``).
- ``n_stage``: calling this node the other way (metastatic <-> not, under the run's MLN rule) would
  change the patient's N stage (``tmln.measure.staging.n_stage`` of the patient's count of metastatic
  nodes plus or minus one). Only nodes with tumour are weighed: a tumour-free node's call is not in
  doubt from the measurements (in an N0 patient every tumour-free node would otherwise be listed);
  the ``probability`` rule is the one that looks at what the model saw.

A node is listed once, with all its reasons; nodes with more reasons come first.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from tmln.measure.staging import ITC_MAX_MM, MICRO_MAX_MM, n_stage

CUTOFF_TOLERANCE = 0.10  # relative distance to a cut-off
PROB_BAND = 0.10  # |P(tumour) - threshold| within this is "close to the threshold"
PROB_SHARE = 0.5  # ... over at least this share of a deposit's map cells

CUTOFFS = ((ITC_MAX_MM, "ITC", "micro"), (MICRO_MAX_MM, "micro", "macro"))


def _f(v, default=0.0) -> float:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return default
    return x if np.isfinite(x) else default


def _truthy(v) -> bool:
    if isinstance(v, str):
        return v.strip().lower() in ("true", "1", "yes")
    return bool(v)


def cutoff_reason(largest_deposit_mm, category: str | None = None, tolerance: float = CUTOFF_TOLERANCE) -> str | None:
    """The reason when the largest deposit is within ``tolerance`` (relative) of a cut-off, else None."""
    ld = _f(largest_deposit_mm)
    if ld <= 0:
        return None
    for cut, below, above in CUTOFFS:
        if abs(ld - cut) <= tolerance * cut + 1e-12:
            called = f" (called {category})" if category else ""
            return (f"largest deposit {ld:.3g} mm is within {tolerance * 100:.0f} % of the {cut:g} mm cut-off "
                    f"between {below} and {above}{called}")
    return None


def probability_reasons(deposits: Iterable[dict], band: float = PROB_BAND, share: float = PROB_SHARE) -> list[str]:
    """Reasons for the deposits of one node whose map cells are mostly close to the threshold.

    deposits : dicts with ``near_fraction`` (share of the deposit's map cells within ``band`` of the
    threshold), ``threshold``, optionally ``index`` (deposit number in the node) and ``area_mm2``.
    """
    out = []
    for k, d in enumerate(deposits, 1):
        frac = d.get("near_fraction")
        if frac is None or not np.isfinite(frac) or frac < share:
            continue
        idx = d.get("index", k)
        area = d.get("area_mm2")
        size = f", {float(area):.3g} mm²" if area is not None else ""
        out.append(f"P(tumour) within ±{band:g} of the threshold {float(d['threshold']):g} over {frac * 100:.0f} % "
                   f"of deposit {idx}{size}")
    return out


def stage_reason(node: dict, patient_nodes: Sequence[dict], mln_rule: str = "ajcc", patient_id: str = "") -> str | None:
    """The reason when calling ``node`` the other way would change its patient's N stage, else None.

    patient_nodes : all node rows of the patient (``node`` among them), with ``metastatic``.
    Only nodes with tumour (``largest_deposit_mm`` > 0 or a category other than negative) are weighed.
    """
    has_tumour = _f(node.get("largest_deposit_mm")) > 0 or str(node.get("category", "negative")) not in ("", "negative")
    if not has_tumour:
        return None
    count = sum(_truthy(r.get("metastatic")) for r in patient_nodes)
    met = _truthy(node.get("metastatic"))
    flipped = count - 1 if met else count + 1
    now, then = n_stage(count), n_stage(flipped)
    if now == then:
        return None
    other = "not metastatic" if met else "metastatic"
    why = ""
    if not met and str(node.get("category")) == "itc" and mln_rule == "ajcc":
        why = " (an ITC node is not metastatic under the AJCC rule)"
    who = f"patient {patient_id}" if patient_id else "the patient"
    return f"calling this node {other} would change {who} from {now} to {then}{why}"


def review_list(nodes: Sequence[dict], patients: Sequence[dict] = (), deposit_stats: dict | None = None,
                mln_rule: str = "ajcc") -> list[dict]:
    """The review list of a run.

    nodes : ``nodes.csv`` rows (dicts of strings are fine).
    patients : ``patients.csv`` rows; the N-stage rule is applied to patients with an ``n_stage``
        (staged). Without patient rows every patient of ``nodes`` is taken as staged.
    deposit_stats : ``{(slide_id, node_id): [deposit dicts for probability_reasons]}``.
    Returns one dict per listed node: ``patient_id``, ``slide_id``, ``node_id``, ``category``,
    ``largest_deposit_mm``, ``reasons`` (list of ``{"rule", "text"}``), in review order.
    """
    deposit_stats = deposit_stats or {}
    staged = None
    if patients:
        staged = {str(p.get("patient_id")) for p in patients if str(p.get("n_stage") or "").strip()}
    by_patient: dict[str, list[dict]] = {}
    for r in nodes:
        by_patient.setdefault(str(r.get("patient_id", "")), []).append(r)
    out = []
    for order, r in enumerate(nodes):
        pid, sid = str(r.get("patient_id", "")), str(r.get("slide_id", ""))
        nid = int(_f(r.get("node_id"), 0))
        reasons = []
        cat = str(r.get("category", ""))
        t = cutoff_reason(r.get("largest_deposit_mm"), cat or None)
        if t:
            reasons.append({"rule": "cutoff", "text": t})
        for t in probability_reasons(deposit_stats.get((sid, nid), [])):
            reasons.append({"rule": "probability", "text": t})
        if staged is None or pid in staged:
            t = stage_reason(r, by_patient[pid], mln_rule, pid)
            if t:
                reasons.append({"rule": "n_stage", "text": t})
        if reasons:
            out.append({"patient_id": pid, "slide_id": sid, "node_id": nid, "category": cat,
                        "largest_deposit_mm": _f(r.get("largest_deposit_mm")),
                        "metastatic": _truthy(r.get("metastatic")), "reasons": reasons, "_order": order})
    out.sort(key=lambda d: (-len(d["reasons"]), d["_order"]))
    for d in out:
        del d["_order"]
    return out


# ---------------------------------------------------------------------------- tumour map statistics
def deposit_map_stats(prob: np.ndarray, placement: dict, deposits: Iterable[tuple[int, object, float | None]],
                      band: float = PROB_BAND) -> dict:
    """Per node, the share of each deposit's map cells within ``band`` of the map's threshold.

    prob : the tumour map (h, w) float, NaN outside the mapped region.
    placement : ``tmln.view.data.heat_placement`` of the map (level-0 px box, threshold).
    deposits : (node_id, shapely polygon in level-0 px, area_mm2) per deposit.
    Returns ``{node_id: [{"index", "near_fraction", "threshold", "area_mm2", "cells"}]}``; a deposit
    smaller than a map cell is judged by the cell under its centroid.
    """
    import shapely

    prob = np.asarray(prob)
    h, w = prob.shape
    sx = placement["width"] / w  # level-0 px per map cell
    sy = placement["height"] / h
    ox, oy, t = placement["x"], placement["y"], float(placement["threshold"])
    out: dict[int, list[dict]] = {}
    for node_id, geom, area in deposits:
        x0, y0, x1, y1 = geom.bounds
        c0, r0 = max(0, int(np.floor((x0 - ox) / sx))), max(0, int(np.floor((y0 - oy) / sy)))
        c1, r1 = min(w, int(np.ceil((x1 - ox) / sx)) + 1), min(h, int(np.ceil((y1 - oy) / sy)) + 1)
        vals = np.empty(0, np.float32)
        if c1 > c0 and r1 > r0:
            # map cells whose centre lies inside the deposit (holes and parts honoured)
            cx = ox + (np.arange(c0, c1) + 0.5) * sx
            cy = oy + (np.arange(r0, r1) + 0.5) * sy
            gx, gy = np.meshgrid(cx, cy)
            mask = shapely.contains_xy(geom, gx, gy)
            vals = prob[r0:r1, c0:c1][mask]
        if vals.size == 0:
            cx, cy = geom.centroid.x, geom.centroid.y
            c, r = int((cx - ox) // sx), int((cy - oy) // sy)
            if 0 <= r < h and 0 <= c < w:
                vals = prob[r:r + 1, c]
        vals = vals[np.isfinite(vals)]
        frac = float(np.mean(np.abs(vals - t) <= band)) if vals.size else None
        lst = out.setdefault(int(node_id), [])
        lst.append({"index": len(lst) + 1, "near_fraction": frac, "threshold": t, "cells": int(vals.size),
                    **({"area_mm2": float(area)} if area is not None else {})})
    return out
