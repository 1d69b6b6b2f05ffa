"""Deep Zoom geometry and tile pixels (tmln.view.tiles) against tmln's own slide reader."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from tmln.slide import Slide
from tmln.view.tiles import DeepZoom, TileRequestError

CMU = Path(__file__).resolve().parents[1] / "data" / "CMU-1-Small-Region.svs"


@pytest.fixture(scope="module")
def pyramid(tmp_path_factory):
    """A 2-level TIFF (1000 x 700, level 1 at 4x) with a pixel pattern that shows any misplacement."""
    import tifffile

    d = tmp_path_factory.mktemp("dz")
    yy, xx = np.mgrid[0:700, 0:1000]
    img = np.stack([(xx * 7) % 256, (yy * 5) % 256, ((xx // 16 + yy // 16) % 2) * 200], -1).astype(np.uint8)
    p = d / "p.tiff"
    with tifffile.TiffWriter(p) as tw:
        tw.write(img, tile=(256, 256), compression="zlib", photometric="rgb")
        import cv2

        small = cv2.resize(img, (250, 175), interpolation=cv2.INTER_AREA)
        tw.write(small, tile=(256, 256), compression="zlib", photometric="rgb", subfiletype=1)
    return p, img


def test_geometry(pyramid):
    with Slide(pyramid[0], mpp=0.5) as s:
        dz = DeepZoom(s, tile_size=254, overlap=1)
        assert dz.max_level == math.ceil(math.log2(1000)) == 10 and dz.level_count == 11
        assert dz.level_size(10) == (1000, 700) and dz.level_size(9) == (500, 350)
        assert dz.level_size(0) == (1, 1) and dz.level_size(8) == (250, 175)
        assert dz.tile_grid(10) == (4, 3)
        assert dz.tile_box(10, 0, 0) == (0, 0, 255, 255)
        assert dz.tile_box(10, 1, 1) == (253, 253, 509, 509)
        assert dz.tile_box(10, 3, 2) == (761, 507, 1000, 700)
        for bad in ((11, 0, 0), (-1, 0, 0), (10, 4, 0), (10, 0, 3), (10, -1, 0)):
            with pytest.raises(TileRequestError):
                dz.tile_box(*bad)
        assert '<Size Width="1000" Height="700"/>' in dz.dzi_xml()


def test_full_resolution_tiles_are_the_slide_pixels(pyramid):
    path, img = pyramid
    with Slide(path, mpp=0.5) as s:
        dz = DeepZoom(s)
        for col, row in ((0, 0), (1, 1), (3, 2), (2, 0)):
            x0, y0, x1, y1 = dz.tile_box(10, col, row)
            assert np.array_equal(dz.tile_rgb(10, col, row), img[y0:y1, x0:x1])


def test_coarser_tiles_match_the_slide_at_that_downsample(pyramid):
    path, img = pyramid
    with Slide(path, mpp=0.5) as s:
        dz = DeepZoom(s)
        # level 9 (2x): read from slide level 0 and area-averaged
        t = dz.tile_rgb(9, 1, 0).astype(float)
        x0, y0, x1, y1 = dz.tile_box(9, 1, 0)
        ref = img[2 * y0:2 * y1, 2 * x0:2 * x1].reshape(y1 - y0, 2, x1 - x0, 2, 3).mean((1, 3))
        assert np.abs(t - ref).max() <= 1.0
        # level 8 (4x): the slide's own 4x level, read as it is
        x0, y0, x1, y1 = dz.tile_box(8, 0, 0)
        assert np.array_equal(dz.tile_rgb(8, 0, 0), s.read_level((0, 0), 1, (x1 - x0, y1 - y0)))
        # level 0: one pixel, the mean colour of the slide (within rounding of the pyramid)
        one = dz.tile_rgb(0, 0, 0)
        assert one.shape == (1, 1, 3)


def test_real_svs_tiles(tmp_path):
    import cv2

    with Slide(CMU) as s:
        dz = DeepZoom(s)
        W, H = s.dimensions
        assert dz.level_size(dz.max_level) == (W, H)
        top = dz.tile(dz.max_level, 0, 0)
        rgb = cv2.imdecode(np.frombuffer(top, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
        ref = s.read_level((0, 0), 0, (255, 255))
        assert np.abs(rgb.astype(int) - ref.astype(int)).mean() < 4  # JPEG q80
        cols, rows = dz.tile_grid(dz.max_level)
        last = dz.tile_rgb(dz.max_level, cols - 1, rows - 1)
        x0, y0, x1, y1 = dz.tile_box(dz.max_level, cols - 1, rows - 1)
        assert last.shape == (y1 - y0, x1 - x0, 3) and x1 == W and y1 == H


def test_tile_cache_is_bounded(pyramid):
    with Slide(pyramid[0], mpp=0.5) as s:
        dz = DeepZoom(s, cache_bytes=60_000)
        first = dz.tile(10, 0, 0, "png")
        for col in range(4):
            for row in range(3):
                dz.tile(10, col, row, "png")
                assert dz._cache_bytes <= 60_000 or len(dz._cache) == 1
        assert dz.tile(10, 0, 0, "png") == first
        with pytest.raises(TileRequestError):
            dz.tile(10, 0, 0, "gif")
