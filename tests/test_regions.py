import numpy as np
import pytest
from shapely.geometry import MultiPolygon, Point, Polygon, box
from skimage.draw import polygon as draw_polygon

from tmln.regions import burn, polygon_mask, polygons_from_labels, polygons_from_mask, rasterise, valid_polygons


def test_labels_to_polygons_exact_areas_scale_and_origin():
    labels = np.zeros((20, 30), np.int32)
    labels[2:6, 3:10] = 1  # 4 x 7 px
    labels[10:15, 20:22] = 7  # 5 x 2 px
    labels[10:12, 0:2] = 7  # second part of label 7
    # raster at 2 µm/px of a slide at 0.5 µm/px -> 4 level-0 px per raster px; origin (100, 50)
    geoms = polygons_from_labels(labels, 2.0, 0.5, 0.5, origin=(100, 50))
    assert len(geoms) == 2
    assert geoms[0].area == pytest.approx(4 * 7 * 16)
    assert geoms[0].bounds == pytest.approx((100 + 3 * 4, 50 + 2 * 4, 100 + 10 * 4, 50 + 6 * 4))
    assert geoms[1].geom_type == "MultiPolygon"
    assert geoms[1].area == pytest.approx((5 * 2 + 2 * 2) * 16)


def test_anisotropic_pixels():
    labels = np.ones((3, 5), np.uint8)
    (g,) = polygons_from_labels(labels, (1.0, 2.0), 0.5, 0.25)
    assert g.bounds == pytest.approx((0, 0, 10, 24))


def test_rasterise_roundtrip():
    rng = np.random.default_rng(3)
    labels = np.zeros((40, 50), np.int32)
    for k in range(1, 6):
        y, x = rng.integers(0, 35), rng.integers(0, 45)
        labels[y:y + 5, x:x + 5] = k
    geoms = polygons_from_labels(labels, 4.0, 1.0, 1.0)
    present = sorted(set(np.unique(labels)) - {0})
    back = rasterise(geoms, labels.shape, 4.0, values=present)
    np.testing.assert_array_equal(back, labels)


def test_rasterise_scale_and_origin():
    out = rasterise([box(40, 80, 80, 120)], (10, 10), scale=(8, 8), origin=(0, 40))
    assert out.sum() == 5 * 5
    assert out[5:10, 5:10].all()


def test_mask_components_keep_holes():
    mask = np.zeros((20, 20), bool)
    mask[2:12, 2:12] = True
    mask[5:8, 5:8] = False  # hole
    mask[15:18, 15:19] = True
    polys = polygons_from_mask(mask, 1.0, 1.0, 1.0)
    assert len(polys) == 2
    assert polys[0].area == pytest.approx(100 - 9)
    assert len(polys[0].interiors) == 1
    assert polys[1].area == pytest.approx(12)
    assert polygons_from_mask(np.zeros((4, 4), bool), 1.0, 1.0, 1.0) == []


def test_valid_polygons_repairs_model_output():
    bowtie = Polygon([(0, 0), (10, 10), (10, 0), (0, 10)])
    polys, notes = valid_polygons([bowtie, Polygon(), MultiPolygon([box(20, 0, 30, 10), box(40, 0, 50, 10)])])
    assert len(polys) == 4 and all(p.is_valid for p in polys)
    assert sum(p.area for p in polys) == pytest.approx(50 + 200)
    assert len(notes) == 2


@pytest.mark.parametrize("connectivity", [4, 8])
def test_diagonal_pixels_give_valid_separate_parts(connectivity):
    m = np.zeros((4, 4), np.int32)
    m[0, 0] = m[1, 1] = 1
    (g,) = polygons_from_labels(m, 1, 1, 1, connectivity=connectivity)
    assert g.is_valid and g.area == pytest.approx(2)
    polys = polygons_from_mask(m > 0, 1, 1, 1, connectivity=connectivity)
    assert len(polys) == 2 and all(p.is_valid for p in polys)


def test_polygon_parts_flattens_any_geometry():
    from shapely.geometry import GeometryCollection, LineString, MultiPolygon, Point, Polygon, box

    from tmln.regions import polygon_parts

    a, b, c = box(0, 0, 1, 1), box(2, 2, 3, 3), box(5, 5, 6, 6)
    nested = GeometryCollection([MultiPolygon([a, b]), LineString([(0, 0), (1, 1)]), Point(9, 9),
                                 GeometryCollection([c, Polygon()])])
    assert [p.bounds for p in polygon_parts(nested)] == [a.bounds, b.bounds, c.bounds]
    assert polygon_parts(None) == [] and polygon_parts(Polygon()) == [] and polygon_parts(a) == [a]


# ---------------------------------------------------------------------------- scanline rasteriser
# agrees with scikit-image's pixel-centre rule, holes included
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
