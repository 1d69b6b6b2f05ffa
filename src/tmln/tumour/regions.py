"""Tumour probability map -> tumour regions (shapely Polygons in level-0 px).

A map pixel is tumour when ``P(tumour) >= threshold`` (the model card's threshold unless
overridden). Tumour pixels are vectorised exactly to the map's pixel grid (each pixel a square of
``map.mpp / slide.mpp`` level-0 px; ``tmln.regions.polygons_from_mask``), then clipped to each node
polygon when given. Pixels outside the region of interest (NaN) are never tumour.

Clipping a pixel-grid outline to a node outline leaves *slivers* where a tumour pixel straddles the
border between two touching nodes: a deposit effacing one node then seems to reach into its
neighbour by a strip a few µm wide, which would make the neighbour metastatic (its "deposit" as
long as the shared border). The map cannot place a deposit's edge more precisely than one map
pixel plus half a patch (``localisation_um``: a patch classifier responds wherever its patch
overlaps tumour), and node borders between touching nodes carry the node model's own error. So a
clipped part is dropped when it is narrower everywhere than half a map pixel (no disc of that
diameter fits inside it), or when it lies wholly within ``localisation_um`` of a touching node
that holds the larger part of the same tumour region (it continues that node's deposit). Tumour
farther inside a node is never dropped, and a part reaching deeper is kept whole.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from tmln.errors import TmlnError
from tmln.regions import polygon_parts, polygons_from_mask
from tmln.tumour.engine import tumour_map
from tmln.tumour.probability_map import ProbabilityMap


def tumour_mask(pm: ProbabilityMap, threshold: float | None = None) -> np.ndarray:
    """Boolean map: ``P >= threshold`` (NaN -> False)."""
    t = pm.threshold if threshold is None else float(threshold)
    if not 0.0 <= t <= 1.0:
        raise TmlnError(f"threshold must be in [0, 1], got {t}")
    with np.errstate(invalid="ignore"):
        return np.nan_to_num(pm.array, nan=-1.0) >= t


def regions_from_map(pm: ProbabilityMap, threshold: float | None = None, node_polygons: Sequence | None = None,
                     min_area_um2: float = 0.0) -> list:
    """Tumour polygons (level-0 px) from a probability map.

    node_polygons : when given (level-0 px), regions are clipped to each node, dropping clipped
        parts narrower than half a map pixel (see the module docstring).
    min_area_um2 : drop polygons smaller than this (µm²) after clipping.
    Returns Polygons ordered by (top, left).
    """
    from shapely.ops import unary_union

    mask = tumour_mask(pm, threshold)
    polys = polygons_from_mask(mask, pm.mpp, pm.slide_mpp[0], pm.slide_mpp[1], origin=pm.origin)
    if node_polygons is not None:
        from shapely import STRtree

        nodes = [p for p in node_polygons if p is not None and not p.is_empty]
        tree = STRtree(nodes)
        px = pm.mpp / min(pm.slide_mpp)  # one map pixel, level-0 px
        band = localisation_um(pm) / min(pm.slide_mpp)
        clipped = []
        for p in polys:
            parts = [(i, q) for i in tree.query(p, predicate="intersects")
                     for q in polygon_parts(p.intersection(nodes[i])) if not q.buffer(-px / 4).is_empty]
            clipped += [q for i, q in parts if not _bleeds_from_neighbour(i, q, parts, nodes, band)]
        polys = polygon_parts(unary_union(clipped)) if clipped else []
    px_um2 = pm.slide_mpp[0] * pm.slide_mpp[1]
    polys = [p for p in polys if p.area > 0 and p.area * px_um2 >= min_area_um2]
    return sorted(polys, key=lambda p: (p.bounds[1], p.bounds[0]))


def localisation_um(pm: ProbabilityMap) -> float:
    """How precisely the map places a deposit's edge, µm: one map pixel (quantisation) plus half a
    patch (a patch classifier responds wherever its patch overlaps tumour)."""
    info = pm.info or {}
    half_patch = 0.5 * float(info.get("patch_size") or 0) * float(info.get("model_mpp") or 0)
    return float(pm.mpp) + half_patch


def _bleeds_from_neighbour(i: int, q, parts: list, nodes: list, band: float) -> bool:
    """True when ``q`` (the part of a tumour region inside node ``i``) lies wholly within ``band``
    level-0 px of a touching node ``j`` holding a larger part of the same region: the map cannot
    place tumour that close to the shared border, so it is the spread of that node's deposit."""
    for j, other in parts:
        if j != i and other.area > q.area and q.distance(other) <= 1e-6 * band and \
                q.difference(nodes[j].buffer(band)).is_empty:
            return True
    return False


def regions_from_model(slide, model, node_polygons=None, out_dir=None, device="auto", threshold=None,
                       precision="auto", method="auto", tile_size=None) -> list:
    """Tumour regions of a slide from a tumour classifier (the engine behind ``tmln analyze
    --tumour-model``).

    slide : ``tmln.slide.Slide`` or path. model : model directory or bundled model name.
    node_polygons : level-0 px; when given the map is computed over the nodes only and regions are
        clipped to them, else over the tissue.
    out_dir : when given, the map is written there (``tumour_map.npy/.json/.png``).
    threshold : overrides the model card's threshold. precision, method, tile_size : as ``tumour_map``'s.
    Returns a list of shapely Polygons in level-0 px.
    """
    mask = "nodes" if node_polygons is not None else "tissue"
    pm = tumour_map(slide, model, mask=mask, node_polygons=node_polygons,
                    out_dir=Path(out_dir) if out_dir is not None else None, device=device, precision=precision,
                    method=method, tile_size=tile_size)
    return regions_from_map(pm, threshold=threshold, node_polygons=node_polygons)
