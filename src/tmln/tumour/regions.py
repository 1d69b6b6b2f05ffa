"""Tumour probability map -> tumour regions (shapely Polygons in level-0 px).

A map pixel is tumour when ``P(tumour) >= threshold`` (the model card's threshold unless
overridden). Tumour pixels are vectorised exactly to the map's pixel grid (each pixel a square of
``map.mpp / slide.mpp`` level-0 px; ``tmln.regions.polygons_from_mask``), then clipped to the node
polygons when given. Pixels outside the region of interest (NaN) are never tumour.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from tmln.regions import polygon_parts
from tmln.tumour.engine import ProbabilityMap


def tumour_mask(pm: ProbabilityMap, threshold: float | None = None) -> np.ndarray:
    """Boolean map: ``P >= threshold`` (NaN -> False)."""
    t = pm.threshold if threshold is None else float(threshold)
    if not 0.0 <= t <= 1.0:
        from tmln.errors import TmlnError

        raise TmlnError(f"threshold must be in [0, 1], got {t}")
    with np.errstate(invalid="ignore"):
        return np.nan_to_num(pm.array, nan=-1.0) >= t


def regions_from_map(pm: ProbabilityMap, threshold: float | None = None, node_polygons: Sequence | None = None,
                     min_area_um2: float = 0.0) -> list:
    """Tumour polygons (level-0 px) from a probability map.

    node_polygons : when given (level-0 px), regions are clipped to their union.
    min_area_um2 : drop polygons smaller than this (µm²) after clipping.
    Returns Polygons ordered by (top, left).
    """
    from shapely.ops import unary_union

    from tmln.regions import polygons_from_mask

    mask = tumour_mask(pm, threshold)
    polys = polygons_from_mask(mask, pm.mpp, pm.slide_mpp[0], pm.slide_mpp[1], origin=pm.origin)
    if node_polygons is not None:
        nodes = unary_union([p for p in node_polygons if p is not None and not p.is_empty])
        clipped = []
        for p in polys:
            g = p.intersection(nodes)
            clipped += polygon_parts(g)
        polys = clipped
    px_um2 = pm.slide_mpp[0] * pm.slide_mpp[1]
    polys = [p for p in polys if p.area > 0 and p.area * px_um2 >= min_area_um2]
    return sorted(polys, key=lambda p: (p.bounds[1], p.bounds[0]))


def regions_from_model(slide, model, node_polygons=None, out_dir=None, device="auto", threshold=None) -> list:
    """Tumour regions of a slide from a tumour classifier (the engine behind ``tmln analyze
    --tumour-model``).

    slide : ``tmln.slide.Slide`` or path. model : model directory or bundled model name.
    node_polygons : level-0 px; when given the map is computed over the nodes only and regions are
        clipped to them, else over the tissue.
    out_dir : when given, the map is written there (``tumour_map.npy/.json/.png``).
    threshold : overrides the model card's threshold.
    Returns a list of shapely Polygons in level-0 px.
    """
    from tmln.tumour.engine import tumour_map

    mask = "nodes" if node_polygons is not None else "tissue"
    pm = tumour_map(slide, model, mask=mask, node_polygons=node_polygons,
                    out_dir=Path(out_dir) if out_dir is not None else None, device=device)
    return regions_from_map(pm, threshold=threshold, node_polygons=node_polygons)
