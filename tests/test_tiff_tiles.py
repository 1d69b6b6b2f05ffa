"""tmln.tiff_tiles: direct tile decoding must give OpenSlide's pixels exactly, or step aside."""

from __future__ import annotations

import pickle
import shutil

import numpy as np
import pytest

from tmln.errors import SlideError
from tmln.slide import Slide
from tmln.tiff_tiles import TiffTiles


@pytest.fixture(scope="module", params=["jpeg-tiff", "zlib-tiff", "jpeg-svs"])
def phantom(request, tmp_path_factory):
    from tmln.phantom import SlideSpec, make_slide

    compression, fmt = request.param.split("-")
    p = tmp_path_factory.mktemp("tiles") / f"p.{fmt}"
    make_slide(p, SlideSpec(seed=5, size_mm=(0.9, 0.7), mpp=0.25), tile=256, compression=compression,
               geojson=False)
    return p


def _random_reads(path, n=25, seed=0):
    """Reads at every level, partly outside the level, against OpenSlide's own."""
    fast, ref = Slide(path), Slide(path, direct=False)
    rng = np.random.default_rng(seed)
    worst, count = 0, 0
    for level in range(fast.level_count):
        ds = fast.level_downsamples[level]
        w_l, h_l = fast.level_dimensions[level]
        step = int(round(ds)) if abs(ds - round(ds)) < 1e-9 else 1
        for _ in range(n):
            w, h = (int(v) for v in rng.integers(1, 700, 2))
            x = int(rng.integers(-200, w_l + 50)) * step
            y = int(rng.integers(-200, h_l + 50)) * step
            a, b = fast.read_level((x, y), level, (w, h)), ref.read_level((x, y), level, (w, h))
            assert a.shape == b.shape == (h, w, 3) and a.dtype == np.uint8
            worst = max(worst, int(np.abs(a.astype(int) - b).max()))
            count += 1
    return fast, worst, count


def test_phantom_reads_equal_openslide(phantom):
    fast, worst, count = _random_reads(phantom)
    assert fast.reader(0) == "tifffile"
    assert worst == 0 and count >= 50


def test_aperio_svs_reads_equal_openslide(cmu_slide):
    # Aperio stores RGB (not YCbCr) JPEG tiles with shared JPEG tables: a decoder that guesses
    # the colour space gets every pixel wrong, which is what the check on first use catches
    fast, worst, _ = _random_reads(cmu_slide, n=40)
    assert fast.vendor == "aperio" and fast.reader(0) == "tifffile"
    assert worst == 0


def test_resampled_reads_equal_openslide(phantom):
    fast, ref = Slide(phantom), Slide(phantom, direct=False)
    for loc, size, mpp in [((100, 60), (300, 200), 0.5), ((7, 3), (123, 77), 0.37), ((0, 0), (90, 70), 1.0)]:
        assert np.array_equal(fast.read(loc, size, mpp=mpp), ref.read(loc, size, mpp=mpp))


def test_level_that_disagrees_stays_with_openslide(phantom, monkeypatch):
    decode = TiffTiles._tile

    def wrong(self, page, level, index):  # a decoder that gets the colours wrong
        tile = decode(self, page, level, index)
        return None if tile is None else 255 - tile

    monkeypatch.setattr(TiffTiles, "_tile", wrong)
    fast, ref = Slide(phantom), Slide(phantom, direct=False)
    assert fast.reader(0) == "openslide"
    assert np.array_equal(fast.read_level((64, 32), 0, (300, 200)), ref.read_level((64, 32), 0, (300, 200)))


def test_level_tifffile_cannot_decode_stays_with_openslide(phantom, monkeypatch):
    def cannot(self, page, level, index):  # e.g. JPEG tiles where imagecodecs is not installed
        raise ValueError("decoding needs imagecodecs")

    monkeypatch.setattr(TiffTiles, "_tile", cannot)
    with Slide(phantom) as s, Slide(phantom, direct=False) as ref:
        assert s.reader(0) == "openslide"
        assert np.array_equal(s.read_level((10, 20), 0, (64, 48)), ref.read_level((10, 20), 0, (64, 48)))


def test_other_vendors_and_opt_out_use_openslide(phantom):
    with Slide(phantom, direct=False) as s:
        assert s.reader(0) == "openslide"
        again = pickle.loads(pickle.dumps(s))  # DataLoader workers / Dask reopen by path
        assert again.reader(0) == "openslide"
    with Slide(phantom) as s:
        assert pickle.loads(pickle.dumps(s)).reader(0) == "tifffile"
    assert TiffTiles.open(phantom, None, "hamamatsu") is None


def test_cache_stays_within_its_budget(phantom):
    with Slide(phantom) as s:
        tiles = s._tiles
        tiles._cache_limit = 3 * 256 * 256 * 3
        s.read_level((0, 0), 0, s.level_dimensions[0])
        assert len(tiles._cache) == 3 and tiles._cache_bytes == 3 * 256 * 256 * 3


def test_tile_cut_short_is_a_slide_error(tmp_path, phantom):
    if phantom.suffix != ".tiff":
        pytest.skip("one format is enough")
    p = tmp_path / "cut.tiff"
    shutil.copy(phantom, p)
    s = Slide(p)
    assert s.reader(0) == "tifffile"
    page = s._tiles._pages[0]
    last = int(np.argmax(page.dataoffsets))
    with open(p, "r+b") as fh:  # the file loses the end of its last level-0 tile while open
        fh.truncate(int(page.dataoffsets[last]) + int(page.databytecounts[last]) // 2)
    ty, tx = divmod(last, -(-page.imagewidth // page.tilewidth))
    with pytest.raises(SlideError, match="cut.tiff.*truncated"):
        s.read_level((tx * page.tilewidth, ty * page.tilelength), 0, (16, 16))
