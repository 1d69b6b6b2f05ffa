"""Per-patient aggregation of per-node rows (pure): node counts, N stage, tumour areas, T/MLN.

- ``n_metastatic_nodes``: nodes whose ``metastatic`` flag is true (the rule was applied per node).
- ``n_stage``: pN of the staging system (``tmln.measure.staging``; default AJCC 8th edition gastric,
  from ``n_metastatic_nodes``).
- ``tumour_area_mm2``: tumour inside all nodes (metastatic or not) of the patient, mm².
- ``metastatic_node_area_mm2``: summed area of the metastatic nodes, mm².
- ``t_mln`` (pooled): tumour area inside metastatic nodes / metastatic-node area.
- ``t_mln_mean_nodes``: mean over metastatic nodes of (node tumour area / node area).
  Both T/MLN values are 0 when the patient has no metastatic node.
- node-based markers beside T/MLN (``node_markers``): ``n_negative_nodes`` (nodes examined - MLN),
  ``lymph_node_ratio`` (MLN / nodes examined; empty with no node), ``lodds`` (natural log of
  (MLN + 0.5) / (negative nodes + 0.5)), ``nodes_examined_lt16`` (fewer than 16 nodes examined, the
  AJCC 8 minimum for gastric cancer), ``n_itc_nodes`` / ``n_micro_nodes`` / ``n_macro_nodes`` (nodes by
  the category of their largest deposit, whatever the MLN rule).

A patient is staged only when every slide listed for them was measured: with a failed slide the node
count is incomplete, so the row keeps ``n_slides`` (slides measured) and leaves the rest empty.
Slides of one patient are assumed to show distinct nodes (their nodes are summed).
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

from tmln.measure.staging import GASTRIC_MIN_NODES_EXAMINED, PATIENT_COLUMNS, check_system, stage


def node_markers(n_nodes: int, n_metastatic_nodes: int) -> dict:
    """``n_negative_nodes``, ``lymph_node_ratio``, ``lodds``, ``nodes_examined_lt16`` from the counts of
    nodes examined and metastatic nodes (the one definition, used by runs and phantom truth)."""
    n, m = int(n_nodes), int(n_metastatic_nodes)
    if not 0 <= m <= n:
        raise ValueError(f"metastatic nodes ({m}) must be between 0 and the nodes examined ({n})")
    neg = n - m
    return {
        "n_negative_nodes": neg,
        "lymph_node_ratio": m / n if n > 0 else None,
        "lodds": math.log((m + 0.5) / (neg + 0.5)),
        "nodes_examined_lt16": n < GASTRIC_MIN_NODES_EXAMINED,
    }


def category_counts(node_rows: Iterable[dict]) -> dict:
    """``n_itc_nodes``, ``n_micro_nodes``, ``n_macro_nodes`` from the nodes' ``category``."""
    cats = [str(r.get("category", "")) for r in node_rows]
    return {"n_itc_nodes": cats.count("itc"), "n_micro_nodes": cats.count("micro"), "n_macro_nodes": cats.count("macro")}


def patient_stage(system: str, n_metastatic_nodes: int, counts: dict) -> str:
    """pN of ``system`` from the MLN count and ``category_counts``."""
    return stage(system, n_metastatic_nodes=n_metastatic_nodes, n_macro_nodes=counts["n_macro_nodes"],
                 n_micro_nodes=counts["n_micro_nodes"], n_itc_nodes=counts["n_itc_nodes"])


def patient_row(patient_id: str, node_rows: Iterable[dict], n_slides: int, staging: str = "gastric") -> dict:
    """One patients.csv row from the node rows (dicts with NODE_COLUMNS keys) of all its slides.

    ``staging``: the system of ``n_stage`` (``tmln.measure.staging.STAGING_SYSTEMS``)."""
    check_system(staging)
    rows = list(node_rows)
    met = [r for r in rows if _truthy(r["metastatic"])]
    met_area = float(sum(float(r["area_mm2"]) for r in met))
    met_tumour = float(sum(float(r["tumour_area_mm2"]) for r in met))
    fractions = [float(r["tumour_area_mm2"]) / float(r["area_mm2"]) for r in met if float(r["area_mm2"]) > 0]
    counts = category_counts(rows)
    return {
        "patient_id": patient_id,
        "n_slides": int(n_slides),
        "n_nodes": len(rows),
        "n_metastatic_nodes": len(met),
        "n_stage": patient_stage(staging, len(met), counts),
        "tumour_area_mm2": float(sum(float(r["tumour_area_mm2"]) for r in rows)),
        "metastatic_node_area_mm2": met_area,
        "t_mln": met_tumour / met_area if met_area > 0 else 0.0,
        "t_mln_mean_nodes": math.fsum(fractions) / len(fractions) if fractions else 0.0,
        **node_markers(len(rows), len(met)),
        **counts,
    }


def unstaged_row(patient_id: str, n_slides_done: int) -> dict:
    """A patient with at least one failed slide: only ``n_slides`` (slides measured) is filled."""
    row = {c: None for c in PATIENT_COLUMNS}
    row.update(patient_id=patient_id, n_slides=int(n_slides_done))
    return row


def counted_slides(slides: Sequence[dict], first_listing: Sequence[int | None]) -> list[dict]:
    """The slides that count for their patient, in table order: every row of the slides table except a
    slide file listed again for the same patient (measured once; its repeat row is reported, not counted).
    A file listed for two patients counts for both.

    slides : per-slide dicts with ``patient_id`` (one per table row).
    first_listing : per row, the index (0-based) of the row that first lists the same slide file, or None.
    """
    slides = list(slides)
    return [s for s, first in zip(slides, first_listing)
            if first is None or str(slides[first]["patient_id"]) != str(s["patient_id"])]


def aggregate_patients(node_rows: Iterable[dict], slides: Iterable[dict], staging: str = "gastric") -> list[dict]:
    """patients.csv rows, one per patient in order of first appearance in ``slides``.

    node_rows : per-node dicts (NODE_COLUMNS) of the measured slides.
    slides : per-slide dicts with at least ``patient_id`` and ``status`` ("done"/"failed").
    staging : the staging system of ``n_stage``.
    """
    check_system(staging)
    slides = list(slides)
    order: list[str] = []
    done: dict[str, int] = {}
    failed: dict[str, int] = {}
    for s in slides:
        pid = str(s["patient_id"])
        if pid not in done:
            order.append(pid)
            done[pid], failed[pid] = 0, 0
        if s["status"] == "done":
            done[pid] += 1
        else:
            failed[pid] += 1
    by_patient: dict[str, list[dict]] = {pid: [] for pid in order}
    for r in node_rows:
        by_patient.setdefault(str(r["patient_id"]), []).append(r)
    out = []
    for pid in order:
        if failed[pid]:
            out.append(unstaged_row(pid, done[pid]))
        else:
            out.append(patient_row(pid, by_patient[pid], done[pid], staging))
    return out


def _truthy(v) -> bool:
    if isinstance(v, str):
        return v.strip().lower() in ("true", "1", "yes")
    return bool(v)
