"""Regions: the one currency between stages (node instances and tumour regions of one slide).

Geometry is shapely, in **level-0 pixels** of a slide whose µm/px is known. Model stages that work
on rasters convert with :func:`polygons_from_labels` / :func:`polygons_from_mask` (a raster always
travels with its µm/px) and back with :func:`rasterise`.

Vectorisation is exact to the pixel grid: each raster pixel becomes a square of
``mpp_raster / mpp_x`` by ``mpp_raster / mpp_y`` level-0 px, so the polygon area equals the pixel
count times the pixel area (no smoothing, no simplification).

Rasterisation (:func:`rasterise`, :func:`burn`, :func:`polygon_mask`) is the one rasteriser of outlines:
exact and fast, a pixel is inside when its centre is (even-odd scanlines). With ``scale`` level-0 px
per pixel (a float, or (sx, sy) for anisotropic pixels) and ``origin`` (x0, y0) in level-0 px, pixel
(r, c) covers [x0 + c s, x0 + (c + 1) s) x [y0 + r s, y0 + (r + 1) s) and is set when its centre
(x0 + (c + 0.5) s, y0 + (r + 0.5) s) lies inside the polygon (holes respected). Cost grows with
rows x edges, not pixels x edges (``skimage.draw.polygon`` tests every vertex per pixel).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable

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


def rasterise(polygons: Iterable, shape: tuple[int, int], scale, origin=(0.0, 0.0), values=None,
              all_touched: bool = False, dtype=np.int32) -> np.ndarray:
    """Polygons (level-0 px) -> (h, w) raster.

    shape : (h, w) of the output raster.
    scale : level-0 px per raster pixel (the downsample), a float or (x, y); e.g. for a raster at
        ``mpp_r`` µm/px of a slide at ``mpp_x`` µm/px: ``mpp_r / mpp_x``.
    origin : level-0 px of the raster's top-left corner.
    values : one value per polygon (default 1, 2, 3, ... in order); later polygons overwrite earlier
        ones where they overlap. A pixel is burnt when its centre is inside, holes respected
        (:func:`burn`, the one rasteriser of outlines), or, with ``all_touched``, when
        the polygon touches it at all (rasterio; for display and regions of interest).
    """
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


# ---------------------------------------------------------------------------- scanline rasteriser
_CHUNK = 4_000_000  # rows x edges per vectorised block


def _scales(scale) -> tuple[float, float]:
    if isinstance(scale, (tuple, list, np.ndarray)):
        return float(scale[0]), float(scale[1])
    return float(scale), float(scale)


def polygon_mask(poly, shape: tuple[int, int], scale, origin: tuple[float, float] = (0.0, 0.0)):
    """Rasterise one shapely Polygon on a (rows, cols) grid; returns (r0, c0, local bool mask) for
    its clipped bounding box (``local`` may be empty when the polygon lies off the grid)."""
    h, w = shape
    x0, y0 = origin
    sx, sy = _scales(scale)
    bx0, by0, bx1, by1 = poly.bounds
    c0 = max(int(math.floor((bx0 - x0) / sx)) - 1, 0)
    r0 = max(int(math.floor((by0 - y0) / sy)) - 1, 0)
    c1 = min(int(math.ceil((bx1 - x0) / sx)) + 1, w)
    r1 = min(int(math.ceil((by1 - y0) / sy)) + 1, h)
    if c1 <= c0 or r1 <= r0:
        return 0, 0, np.zeros((0, 0), dtype=bool)
    rings = [poly.exterior, *poly.interiors]
    u1, v1, u2, v2 = [], [], [], []
    for ring in rings:
        xy = np.asarray(ring.coords, dtype=float)
        u = (xy[:, 0] - x0) / sx - c0  # local grid units: pixel c centre at c + 0.5
        v = (xy[:, 1] - y0) / sy - r0
        u1.append(u[:-1]); v1.append(v[:-1]); u2.append(u[1:]); v2.append(v[1:])  # noqa: E702
    u1, v1, u2, v2 = (np.concatenate(a) for a in (u1, v1, u2, v2))
    keep = v1 != v2  # horizontal edges never cross a scanline
    u1, v1, u2, v2 = u1[keep], v1[keep], u2[keep], v2[keep]
    rows, cols = r1 - r0, c1 - c0
    diff = np.zeros((rows, cols + 1), dtype=np.int32)
    step = max(1, _CHUNK // max(len(u1), 1))
    for start in range(0, rows, step):
        yc = np.arange(start, min(start + step, rows)) + 0.5
        cross = (v1[None, :] <= yc[:, None]) != (v2[None, :] <= yc[:, None])
        ri, ei = np.nonzero(cross)
        if ri.size == 0:
            continue
        xs = u1[ei] + (yc[ri] - v1[ei]) * (u2[ei] - u1[ei]) / (v2[ei] - v1[ei])
        order = np.lexsort((xs, ri))
        ri, xs = ri[order], xs[order]
        a_row, a, b = ri[0::2], xs[0::2], xs[1::2]  # even-odd: consecutive crossings pair up per row
        cs = np.clip(np.ceil(a - 0.5), 0, cols).astype(np.int64)
        ce = np.clip(np.ceil(b - 0.5), 0, cols).astype(np.int64)
        ok = ce > cs
        np.add.at(diff, (a_row[ok] + start, cs[ok]), 1)
        np.add.at(diff, (a_row[ok] + start, ce[ok]), -1)
    local = np.cumsum(diff[:, :cols], axis=1) > 0
    return r0, c0, local


def burn(target: np.ndarray, poly, scale, origin: tuple[float, float] = (0.0, 0.0), value=True) -> np.ndarray:
    """Set ``target`` to ``value`` inside ``poly`` (Polygon or MultiPolygon); returns the local mask hit."""
    parts = [poly] if poly.geom_type == "Polygon" else [g for g in getattr(poly, "geoms", []) if g.geom_type == "Polygon"]
    any_set = False
    for part in parts:
        r0, c0, local = polygon_mask(part, target.shape, scale, origin)
        if local.size and local.any():
            target[r0:r0 + local.shape[0], c0:c0 + local.shape[1]][local] = value
            any_set = True
    return any_set
