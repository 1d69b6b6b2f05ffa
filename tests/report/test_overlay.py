import numpy as np
import pytest
from shapely.geometry import box

from tmln.annotations import CLASS_COLOURS
from tmln.measure.nodes import measure_slide
from tmln.report.overlay import TUMOUR_RGB, draw_overlay, overlay_image, overlay_mpp


def test_draw_outlines_by_category_and_tumour_fill():
    m = measure_slide([box(100, 100, 500, 500), box(600, 100, 1000, 500)], [box(200, 200, 480, 480)], 1.0, 1.0)
    assert [r["category"] for r in m.rows] == ["micro", "negative"]
    img = np.full((300, 600, 3), 255, np.uint8)
    out = draw_overlay(img, m, 0.5, 0.5)  # 2 level-0 px per thumbnail px
    def near(row, x, colour):  # an outline pixel within +-2 px has the category colour
        d = np.abs(out[row, x - 2:x + 3].astype(int) - np.array(colour)).sum(axis=1)
        return d.min() < 30

    assert near(150, 50, CLASS_COLOURS["micro"]) and not near(150, 50, CLASS_COLOURS["negative"])
    assert near(150, 300, CLASS_COLOURS["negative"])  # left edge of node 2 (x = 600 / 2)
    tinted = out[200, 180].astype(int)  # inside the tumour, away from the label
    assert tinted[0] > tinted[1] + 80 and abs(int(tinted[0]) - TUMOUR_RGB[0]) < 60
    assert tuple(out[20, 20]) == (255, 255, 255)
    assert (img == 255).all()  # the input is not modified


def test_overlay_of_real_slide_has_about_1500_px(cmu_slide):
    from tmln.slide import Slide

    m = measure_slide([box(200, 200, 1200, 1500)], [box(400, 400, 700, 700)], 0.499, 0.499)
    with Slide(cmu_slide) as s:
        mpp = overlay_mpp(s, 1500)
        img = overlay_image(s, m, 1500)
    assert max(img.shape[:2]) == pytest.approx(1500, abs=2)
    assert mpp == pytest.approx(2967 * s.mpp_y / 1500, rel=1e-3)
