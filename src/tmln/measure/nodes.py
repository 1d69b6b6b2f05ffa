"""Per-node measurements of one slide from node and tumour polygons (pure; no I/O).

Inputs are shapely geometries in level-0 px and the slide's level-0 µm/px (``mpp_x``, ``mpp_y``,
possibly different). Areas are exact polygon areas (shapely) converted with ``mpp_x * mpp_y`` µm²
per px² to mm²; lengths are measured after scaling x by ``mpp_x`` and y by ``mpp_y`` (so anisotropic
pixels are handled exactly) and reported in mm.

Definitions (see docs/measurements.md):

- node: one lymph-node instance; its area includes the tumour inside it.
- tumour inside a node: (union of all tumour regions) ∩ node.
- deposit: one connected component of the tumour inside a node; its size is its greatest
  dimension (maximum Feret diameter = the largest distance between two vertices of its convex hull).
- category from the largest deposit (``tmln.measure.staging.deposit_category``); metastatic by rule.
- extranodal tumour: (union of tumour) minus (union of nodes), per slide.
- overlapping node polygons: the overlap belongs to the larger node (area before resolution); a
  node entirely inside a larger one is dropped. Both are recorded in ``notes``.
- node_id: 1..n ordered by the node's centroid (y, then x), so ids are stable across runs and formats.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tmln.measure.staging import NODE_COLUMNS, deposit_category, is_metastatic
from tmln.regions import polygon_parts

UM2_PER_MM2 = 1e6
UM_PER_MM = 1e3
# bump when a change to the measurement code changes results: a run's finished slides are then redone
MEASURE_VERSION = 1
# Boolean operations on outlines that share a boundary (touching nodes, tumour drawn up to the capsule,
# coordinates rounded on export) leave slivers. A piece is a sliver, and ignored, when its area is below
# SLIVER_AREA_PX2 or its mean thickness (2 * area / perimeter) below SLIVER_THICKNESS_PX (level-0 px):
# no tissue structure is thinner than half a pixel, and a fake deposit would change a node's category.
SLIVER_AREA_PX2 = 0.5
SLIVER_THICKNESS_PX = 0.5


def is_sliver(geom) -> bool:
    """True for a numerically thin or tiny polygon (see ``SLIVER_*``)."""
    a = geom.area
    return a < SLIVER_AREA_PX2 or 2.0 * a / max(geom.length, 1e-12) < SLIVER_THICKNESS_PX


@dataclass
class Deposit:
    node_id: int
    geometry: object  # shapely Polygon, level-0 px
    area_mm2: float
    greatest_dimension_mm: float


@dataclass
class SlideMeasurement:
    """Everything measured on one slide.

    rows : per-node dicts with the keys of ``NODE_COLUMNS`` (node_id order).
    nodes : resolved node geometries (overlaps removed), same order as ``rows``.
    deposits : tumour deposits inside nodes.
    extranodal : tumour outside every node (a geometry, possibly empty).
    summary : per-slide counts and areas (see ``SLIDE_MEASURE_COLUMNS``).
    notes : remarks about the input (overlaps, dropped nodes, slivers).
    """

    rows: list[dict]
    nodes: list
    deposits: list[Deposit]
    extranodal: object
    summary: dict
    notes: list[str] = field(default_factory=list)


SLIDE_MEASURE_COLUMNS = [
    "n_nodes", "n_metastatic_nodes", "n_negative", "n_itc", "n_micro", "n_macro", "n_deposits",
    "node_area_mm2", "tumour_area_mm2", "extranodal_tumour_area_mm2", "largest_deposit_mm",
]


def area_mm2(geom, mpp_x: float, mpp_y: float) -> float:
    """Polygon area in mm² from level-0 px geometry."""
    return float(geom.area) * mpp_x * mpp_y / UM2_PER_MM2


def max_feret_mm(geom, mpp_x: float, mpp_y: float) -> float:
    """Greatest dimension (maximum Feret diameter) in mm: the largest distance between two vertices of
    the convex hull, after scaling to µm. 0 for an empty geometry."""
    import shapely
    from scipy.spatial.distance import pdist

    if geom is None or geom.is_empty:
        return 0.0
    pts = shapely.get_coordinates(geom.convex_hull) * np.array([mpp_x, mpp_y])
    pts = np.unique(pts, axis=0)
    if len(pts) < 2:
        return 0.0
    if len(pts) > 4000:  # very detailed hulls (raster outlines): exact hull of the scaled points first
        from scipy.spatial import ConvexHull

        pts = pts[ConvexHull(pts).vertices]
    return float(pdist(pts).max()) / UM_PER_MM


def _clean(geom):
    """Keep only polygonal parts above sliver size (boolean ops can leave lines, points, slivers)."""
    from shapely.geometry import MultiPolygon
    from shapely.ops import unary_union

    parts = [p for p in polygon_parts(geom) if not is_sliver(p)]
    if not parts:
        return MultiPolygon()
    return parts[0] if len(parts) == 1 else unary_union(parts)


def resolve_overlaps(nodes: list) -> tuple[list, list[str]]:
    """Make node geometries disjoint: the larger node (by area) keeps an overlap; a node that lies
    entirely inside larger ones is dropped. Returns (geometries in input order minus dropped, notes)."""
    from shapely.ops import unary_union
    from shapely.strtree import STRtree

    nodes = [g for g in nodes if g is not None and not g.is_empty]
    if len(nodes) < 2:
        return list(nodes), []
    tree = STRtree(nodes)
    left, right = tree.query(nodes, predicate="intersects")
    pairs = {(int(a), int(b)) for a, b in zip(left, right) if a < b}
    overlapping = {(a, b) for a, b in pairs if not _clean(nodes[a].intersection(nodes[b])).is_empty}
    if not overlapping:
        return list(nodes), []
    # larger first; ties by position for determinism
    order = sorted(range(len(nodes)), key=lambda i: (-nodes[i].area, nodes[i].centroid.y, nodes[i].centroid.x))
    rank = {i: r for r, i in enumerate(order)}
    partners: dict[int, list[int]] = {}
    for a, b in overlapping:
        partners.setdefault(a, []).append(b)
        partners.setdefault(b, []).append(a)
    resolved: dict[int, object] = {}
    notes = []
    for i in order:
        bigger = [j for j in partners.get(i, []) if rank[j] < rank[i] and j in resolved]
        if not bigger:
            resolved[i] = nodes[i]
            continue
        rest = _clean(nodes[i].difference(unary_union([resolved[j] for j in bigger])))
        lost = nodes[i].area - rest.area
        if rest.is_empty:
            notes.append(f"a node polygon of {nodes[i].area:.0f} px² lies inside a larger node and was dropped")
            continue
        notes.append(f"overlapping node polygons: {lost:.0f} px² assigned to the larger node")
        resolved[i] = rest
    return [resolved[i] for i in range(len(nodes)) if i in resolved], notes


def measure_slide(nodes: list, tumour: list, mpp_x: float, mpp_y: float, *, patient_id: str = "",
                  slide_id: str = "", mln_rule: str = "ajcc") -> SlideMeasurement:
    """Measure every node of one slide.

    nodes, tumour : shapely geometries, level-0 px. mpp_x, mpp_y : level-0 µm/px.
    Returns a :class:`SlideMeasurement` whose ``rows`` follow ``NODE_COLUMNS``.
    """
    from shapely.geometry import MultiPolygon
    from shapely.ops import unary_union

    if not (mpp_x and mpp_y and mpp_x > 0 and mpp_y > 0):
        raise ValueError(f"mpp must be positive, got {mpp_x}, {mpp_y}")
    is_metastatic("negative", mln_rule)  # validates the rule early
    node_geoms, notes = resolve_overlaps(list(nodes))
    tumour_union = _clean(unary_union([t for t in tumour if t is not None and not t.is_empty])) if tumour else MultiPolygon()

    # stable ids: by centroid (y, x)
    keyed = sorted(node_geoms, key=lambda g: (round(g.centroid.y, 6), round(g.centroid.x, 6), -g.area))
    rows, deposits = [], []
    for node_id, g in enumerate(keyed, start=1):
        inside = _clean(g.intersection(tumour_union)) if not tumour_union.is_empty else MultiPolygon()
        parts = polygon_parts(inside)
        dep_sizes = []
        for p in parts:
            d = max_feret_mm(p, mpp_x, mpp_y)
            dep_sizes.append(d)
            deposits.append(Deposit(node_id, p, area_mm2(p, mpp_x, mpp_y), d))
        node_area = area_mm2(g, mpp_x, mpp_y)
        tumour_area = area_mm2(inside, mpp_x, mpp_y) if parts else 0.0
        largest = max(dep_sizes) if dep_sizes else 0.0
        cat = deposit_category(largest)
        c = g.centroid
        rows.append({
            "patient_id": patient_id,
            "slide_id": slide_id,
            "node_id": node_id,
            "area_mm2": node_area,
            "tumour_area_mm2": tumour_area,
            "tumour_fraction": tumour_area / node_area if node_area > 0 else 0.0,
            "largest_deposit_mm": largest,
            "category": cat,
            "metastatic": bool(is_metastatic(cat, mln_rule)),
            "centroid_x_um": float(c.x) * mpp_x,
            "centroid_y_um": float(c.y) * mpp_y,
        })
    assert all(list(r) == NODE_COLUMNS for r in rows)
    if tumour_union.is_empty:
        extranodal = MultiPolygon()
    elif keyed:
        extranodal = _clean(tumour_union.difference(unary_union(keyed)))
    else:
        extranodal = tumour_union
    cats = [r["category"] for r in rows]
    summary = {
        "n_nodes": len(rows),
        "n_metastatic_nodes": int(sum(r["metastatic"] for r in rows)),
        "n_negative": cats.count("negative"),
        "n_itc": cats.count("itc"),
        "n_micro": cats.count("micro"),
        "n_macro": cats.count("macro"),
        "n_deposits": len(deposits),
        "node_area_mm2": float(sum(r["area_mm2"] for r in rows)),
        "tumour_area_mm2": float(sum(r["tumour_area_mm2"] for r in rows)),
        "extranodal_tumour_area_mm2": area_mm2(extranodal, mpp_x, mpp_y) if not extranodal.is_empty else 0.0,
        "largest_deposit_mm": max((r["largest_deposit_mm"] for r in rows), default=0.0),
    }
    return SlideMeasurement(rows, keyed, deposits, extranodal, summary, notes)
