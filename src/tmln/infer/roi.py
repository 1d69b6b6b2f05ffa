"""The region of interest on an output grid: which map pixels a model computes.

An output grid is ``shape`` pixels of ``stride_level0`` level-0 px (x, y) from ``origin_level0``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from tmln.errors import TmlnError
from tmln.raster import Raster
from tmln.regions import rasterise
from tmln.tissue import detect_tissue

MASKS = ("tissue", "nodes", None)


def roi_cells(slide, shape, stride_level0: tuple[float, float], origin_level0: tuple[float, float],
              mask: str | None = "tissue", node_polygons: Sequence | None = None,
              tissue: tuple[np.ndarray, float] | None = None) -> np.ndarray:
    """Boolean (h, w) region of interest at the output grid.

    ``mask="tissue"``: pixels touching tissue (``tmln.tissue``; or ``tissue``, a ``TissueMask`` or
    ``(mask, mpp)``);
    ``"nodes"``: pixels touching ``node_polygons`` (level-0 px); ``None``: everything.
    """
    h, w = shape
    if mask is None:
        return np.ones((h, w), bool)
    if mask == "nodes":
        if node_polygons is None:
            raise TmlnError("mask='nodes' needs node polygons (e.g. --node-annotations)")
        polys = [p for p in node_polygons if p is not None and not p.is_empty]
        return rasterise(polys, (h, w), scale=stride_level0, origin=origin_level0, all_touched=True,
                         dtype=np.uint8).astype(bool)
    if mask == "tissue":
        tmask, tmpp = as_mask_mpp(tissue) if tissue is not None else tissue_mask(slide)
        return resample_mask(np.asarray(tmask, bool), tmpp, slide, shape, stride_level0, origin_level0)
    raise TmlnError(f"mask must be 'tissue', 'nodes' or None, got {mask!r}")


def tissue_mask(slide) -> tuple[np.ndarray, float]:
    """(bool mask, µm/px) from ``tmln.tissue.detect_tissue`` (an empty mask gives an empty map)."""
    tm = detect_tissue(slide)
    return np.asarray(tm.mask, bool), float(tm.mpp)


def as_mask_mpp(tissue) -> tuple[np.ndarray, float]:
    """A ``TissueMask`` (any ``Raster``) or a ``(mask, mpp)`` pair -> (bool mask, µm/px)."""
    if isinstance(tissue, Raster):
        return np.asarray(tissue.array, bool), float(tissue.mpp)
    m, mpp = tissue
    return np.asarray(m, bool), float(mpp)


def resample_mask(tmask, tmpp, slide, shape, stride_level0, origin_level0) -> np.ndarray:
    """Map each mask pixel (at ``tmpp`` µm/px from the slide origin) to the output pixel holding its
    centre: an output pixel is in the region when any mask pixel falls in it (plus a 1 px rim)."""
    from scipy import ndimage

    h, w = shape
    out = np.zeros((h, w), bool)
    ys, xs = np.nonzero(tmask)
    if ys.size:
        x0 = (xs + 0.5) * tmpp / slide.mpp_x  # level-0 px
        y0 = (ys + 0.5) * tmpp / slide.mpp_y
        c = np.floor((x0 - origin_level0[0]) / stride_level0[0]).astype(np.int64)
        r = np.floor((y0 - origin_level0[1]) / stride_level0[1]).astype(np.int64)
        ok = (r >= 0) & (r < h) & (c >= 0) & (c < w)
        out[r[ok], c[ok]] = True
        out = ndimage.binary_dilation(out, np.ones((3, 3), bool))
    return out
