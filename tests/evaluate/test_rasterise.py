"""Scanline rasterisation agrees with scikit-image's pixel-centre rule, holes included."""

import numpy as np
from shapely.geometry import MultiPolygon, Point, Polygon, box
from skimage.draw import polygon as draw_polygon

from tmln.evaluate.rasterise import burn, polygon_mask


def _reference(poly, shape, s, origin=(0.0, 0.0)):
    m = np.zeros(shape, bool)
    for ring, val in [(poly.exterior, True)] + [(h, False) for h in poly.interiors]:
        xy = np.asarray(ring.coords)
        rr, cc = draw_polygon((xy[:, 1] - origin[1]) / s - 0.5, (xy[:, 0] - origin[0]) / s - 0.5, shape)
        m[rr, cc] = val
    return m


def test_random_polygons_match_skimage():
    rng = np.random.default_rng(0)
    checked = 0
    for i in range(80):
        n = int(rng.integers(3, 30))
        ang = np.sort(rng.random(n)) * 2 * np.pi
        rad = rng.uniform(40, 400, n)
        cx, cy = rng.uniform(-200, 2200, 2)  # some cross the grid edge
        poly = Polygon(np.c_[cx + rad * np.cos(ang), cy + rad * np.sin(ang)])
        if i % 3 == 0:
            poly = poly.difference(Point(cx, cy).buffer(35))
        if not poly.is_valid or poly.geom_type != "Polygon":
            continue
        shape, s, origin = (70, 60), 32.0, (10.0, -5.0)
        r0, c0, local = polygon_mask(poly, shape, s, origin)
        got = np.zeros(shape, bool)
        got[r0:r0 + local.shape[0], c0:c0 + local.shape[1]] |= local
        assert np.array_equal(got, _reference(poly, shape, s, origin)), i
        checked += 1
    assert checked > 50


def test_burn_multipolygon_and_box_edges():
    target = np.zeros((10, 10), np.int32)
    geom = MultiPolygon([box(0, 0, 64, 32), box(128, 128, 160, 320)])
    assert burn(target, geom, 32.0, value=7)
    assert target.sum() == 7 * (2 + 6)  # 2 px + 1 x 6 px, pixel edges on the box edges
    assert not burn(np.zeros((10, 10), bool), box(1000, 1000, 2000, 2000), 32.0)
