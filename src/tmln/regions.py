"""Regions: the one currency between stages (node instances and tumour regions of one slide).

Geometry is shapely, in **level-0 pixels** of a slide whose µm/px is known. Model stages that work
on rasters convert with :func:`polygons_from_labels` / :func:`polygons_from_mask` (a raster always
travels with its µm/px) and back with :func:`rasterize`.

Vectorisation is exact to the pixel grid: each raster pixel becomes a square of
``mpp_raster / mpp_x`` by ``mpp_raster / mpp_y`` level-0 px, so the polygon area equals the pixel
count times the pixel area (no smoothing, no simplification).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

@dataclass
class SlideRegions:
    """Node instances and tumour regions of one slide, level-0 px.

    nodes : one Polygon per lymph-node instance (MultiPolygons are split by the producers that
        cannot guarantee connectivity; a MultiPolygon is accepted and measured as one node).
    tumour : tumour regions (may overlap each other and extend outside nodes).
    nodes_source / tumour_source : where they came from (annotation file path or model name).
    notes : human-readable remarks (repairs, skipped classes, ...), reported in slides.csv.
    """

    nodes: list = field(default_factory=list)
    tumour: list = field(default_factory=list)
    nodes_source: str = ""
    tumour_source: str = ""
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------- annotations -> regions
def node_polygons_from_annotations(annotations: Sequence) -> tuple[list, list[str]]:
    """Node polygons and notes of a node outline file (``tmln.annotations.node_outlines``)."""
    from tmln.annotations import node_outlines

    return node_outlines(annotations)


def tumour_polygons_from_annotations(annotations: Sequence, also_node_file: bool = False) -> tuple[list, list[str]]:
    """Tumour polygons (holes kept) and notes of a tumour outline file: tumour classes minus exclusion
    classes (``tmln.annotations.tumour_outlines``)."""
    from tmln.annotations import tumour_outlines

    t = tumour_outlines(annotations, also_node_file=also_node_file)
    return t.polygons, t.notes


def valid_polygons(geoms: Iterable, what: str = "region") -> tuple[list, list[str]]:
    """Model outputs -> valid Polygons: invalid ones are repaired with ``shapely.make_valid`` (polygonal
    parts kept), MultiPolygons split, empty ones dropped. Returns (polygons, notes)."""
    import shapely

    out, repaired, dropped = [], 0, 0
    for g in geoms:
        if g is None or g.is_empty:
            dropped += 1
            continue
        if not g.is_valid:
            g = shapely.make_valid(g)
            repaired += 1
        parts = [p for p in polygon_parts(g) if p.area > 0]
        dropped += not parts
        out += parts
    notes = []
    if repaired:
        notes.append(f"{repaired} invalid {what} polygon(s) from the model repaired")
    if dropped:
        notes.append(f"{dropped} empty {what} polygon(s) from the model dropped")
    return out, notes


def polygon_parts(geom) -> list:
    """The non-empty Polygons of any shapely geometry (Polygon, MultiPolygon, nested
    GeometryCollections; lines and points dropped; None or empty -> [])."""
    if geom is None or geom.is_empty:
        return []
    if geom.geom_type == "Polygon":
        return [geom]
    out = []
    for g in getattr(geom, "geoms", []):
        out += polygon_parts(g)
    return out


# ---------------------------------------------------------------------------- rasters <-> polygons
def _pair(v) -> tuple[float, float]:
    if np.isscalar(v):
        return float(v), float(v)
    a, b = v
    return float(a), float(b)


def _transform(scale, origin):
    from rasterio.transform import Affine

    sx, sy = _pair(scale)
    ox, oy = _pair(origin)
    return Affine(sx, 0.0, ox, 0.0, sy, oy)


def polygons_from_labels(labels: np.ndarray, mpp_raster, mpp_x: float, mpp_y: float,
                         origin=(0.0, 0.0), connectivity: int = 4) -> list:
    """Label raster (0 = background, k > 0 = instance k) -> one geometry per label, in label order.

    labels : (h, w) integer array at ``mpp_raster`` µm/px (a float, or (x, y)).
    mpp_x, mpp_y : level-0 µm/px of the slide.
    origin : level-0 px of the raster's top-left corner.
    Each label's pixels are unioned; a label with several disconnected parts gives a MultiPolygon.
    connectivity : 4 (default) or 8 for tracing; pixels that touch only diagonally are separate parts
        in the vector result either way (one polygon cannot pinch at a point), and every returned
        geometry is valid.
    Returns a list of geometries (Polygon, or MultiPolygon for a label with disconnected parts),
    one per label present, in increasing label order.
    """
    import shapely
    from rasterio.features import shapes
    from shapely.geometry import shape
    from shapely.ops import unary_union

    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be 2-D, got shape {labels.shape}")
    if labels.size == 0 or not labels.any():
        return []
    mrx, mry = _pair(mpp_raster)
    tr = _transform((mrx / mpp_x, mry / mpp_y), origin)
    arr = labels.astype(np.int32, copy=False)
    per_label: dict[int, list] = {}
    for geom, value in shapes(arr, mask=arr > 0, connectivity=connectivity, transform=tr):
        per_label.setdefault(int(value), []).append(shape(geom))
    out = []
    for k in sorted(per_label):
        parts = [p if p.is_valid else shapely.make_valid(p) for p in per_label[k]]
        g = parts[0] if len(parts) == 1 else unary_union(parts)
        if not g.is_valid or g.geom_type not in ("Polygon", "MultiPolygon"):
            g = shapely.make_valid(g)
            polys = polygon_parts(g)
            g = polys[0] if len(polys) == 1 else shapely.MultiPolygon(polys)
        out.append(g)
    return out


def polygons_from_mask(mask: np.ndarray, mpp_raster, mpp_x: float, mpp_y: float,
                       origin=(0.0, 0.0), connectivity: int = 4) -> list:
    """Binary mask at ``mpp_raster`` µm/px -> list of Polygons (one per connected component, holes kept),
    level-0 px, ordered by (top, left)."""
    from shapely.ops import unary_union

    geoms = polygons_from_labels(np.asarray(mask).astype(bool).astype(np.int32), mpp_raster, mpp_x, mpp_y,
                                 origin, connectivity)
    if not geoms:
        return []
    merged = unary_union(geoms)
    polys = polygon_parts(merged)
    return sorted(polys, key=lambda p: (p.bounds[1], p.bounds[0]))


def rasterize(polygons: Iterable, shape: tuple[int, int], scale, origin=(0.0, 0.0), values=None,
              all_touched: bool = False, dtype=np.int32) -> np.ndarray:
    """Polygons (level-0 px) -> (h, w) raster.

    shape : (h, w) of the output raster.
    scale : level-0 px per raster pixel (the downsample), a float or (x, y); e.g. for a raster at
        ``mpp_r`` µm/px of a slide at ``mpp_x`` µm/px: ``mpp_r / mpp_x``.
    origin : level-0 px of the raster's top-left corner.
    values : one value per polygon (default 1, 2, 3, ... in order); later polygons overwrite earlier
        ones where they overlap. A pixel is burnt when its centre is inside, holes respected
        (``tmln.evaluate.rasterise``, the one rasteriser of outlines), or, with ``all_touched``, when
        the polygon touches it at all (rasterio; for display and regions of interest).
    """
    from tmln.evaluate.rasterise import burn

    polys = list(polygons)
    h, w = int(shape[0]), int(shape[1])
    if not polys or h == 0 or w == 0:
        return np.zeros((h, w), dtype)
    if values is None:
        values = range(1, len(polys) + 1)
    pairs = [(p, int(v)) for p, v in zip(polys, values) if not p.is_empty]
    if not pairs:
        return np.zeros((h, w), dtype)
    if not all_touched:
        out = np.zeros((h, w), np.int32)
        for p, v in pairs:
            burn(out, p, _pair(scale), _pair(origin), value=v)
        return out.astype(dtype, copy=False)
    from rasterio.features import rasterize as _rio_rasterize

    out = _rio_rasterize(pairs, out_shape=(h, w), transform=_transform(scale, origin), fill=0,
                         all_touched=True, dtype=np.int32)
    return out.astype(dtype, copy=False)
