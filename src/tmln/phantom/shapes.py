"""Shape primitives of the phantom layouts: random blobs, and snapping to the exact 1/8 px grid."""

from __future__ import annotations

import math

import numpy as np

GRID_PX = 0.125  # snapping grid in level-0 px (exact in 3 decimals)


def star_polygon(rng, cx, cy, rx, ry, angle, roughness=0.08, harmonics=6, n=96):
    """A star-shaped (hence simple) blob: an ellipse with random low-frequency radial wobble."""
    from shapely.geometry import Polygon

    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    r = np.ones_like(t)
    for k in range(2, harmonics + 1):
        amp = roughness * rng.uniform(0.3, 1.0) / (k - 1)
        r += amp * np.cos(k * t + rng.uniform(0, 2 * np.pi))
    r = np.clip(r, 0.55, None)
    x, y = rx * r * np.cos(t), ry * r * np.sin(t)
    ca, sa = math.cos(angle), math.sin(angle)
    pts = np.column_stack([cx + ca * x - sa * y, cy + sa * x + ca * y])
    return Polygon(pts)


def snap(geom):
    import shapely

    return plain(shapely.set_precision(geom, GRID_PX))


def plain(geom):
    """The same coordinates without GEOS's attached precision model (which would also round derived
    values such as centroids to the grid): what a reader of the GeoJSON gets."""
    import shapely

    return shapely.from_wkb(shapely.to_wkb(geom))
