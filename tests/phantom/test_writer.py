"""Phantom slide files: OpenSlide reads them, mpp round trip (TIFF and SVS), levels, determinism."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from tmln.phantom import SlideSpec, make_slide
from tmln.phantom.writer import level_sizes
from tmln.imaging import resize_rgb
from tmln.slide import Slide

SMALL = (2.0, 1.5)  # mm: 4000 x 3000 px at 0.5 µm/px


def _sha(p):
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.mark.parametrize("fmt,mpp", [("tiff", 0.5), ("svs", 0.5), ("tiff", 0.25), ("svs", 0.25)])
def test_mpp_round_trip(tmp_path, fmt, mpp):
    size = SMALL if mpp == 0.5 else (1.0, 0.75)
    ph = make_slide(tmp_path / f"s.{fmt}", SlideSpec(seed=1, size_mm=size, mpp=mpp), geojson=False)
    with Slide(ph.path) as s:
        assert s.mpp_x == pytest.approx(mpp, rel=1e-6) and s.mpp_y == pytest.approx(mpp, rel=1e-6)
        assert s.vendor == ("aperio" if fmt == "svs" else "generic-tiff")
        assert s.mpp_source == "openslide"
        assert s.dimensions == (round(size[0] * 1000 / mpp), round(size[1] * 1000 / mpp))
        if fmt == "svs":
            assert s.objective_power == (20 if mpp == 0.5 else 40)
            assert "thumbnail" in s._osr.associated_images


@pytest.mark.parametrize("fmt", ["tiff", "svs"])
def test_no_mpp_variant(tmp_path, fmt):
    ph = make_slide(tmp_path / f"s.{fmt}", SlideSpec(seed=2, size_mm=(1.0, 0.8)), write_mpp=False, geojson=False)
    with Slide(ph.path) as s:
        assert not s.has_mpp
        assert "openslide.mpp-x" not in s.properties


def test_pyramid_levels_read_by_openslide(tmp_path):
    ph = make_slide(tmp_path / "s.tiff", SlideSpec(seed=4, size_mm=(4.0, 3.0)), level_factor=2, geojson=False)
    with Slide(ph.path) as s:
        expect = level_sizes(8000, 6000, 2)
        assert s.level_count == len(expect) >= 3
        assert s.level_dimensions == [(w, h) for _, w, h in expect]
        assert s.level_downsamples[1] == pytest.approx(2.0)
        assert max(s.level_dimensions[-1]) < 1000
        tiff_tile = int(s.properties["openslide.level[0].tile-width"])
        assert tiff_tile == 512
        # a coarser level shows what the averaged level 0 shows (textures rendered per level)
        x, y = 2000, 1500
        lv1 = s.read_level((x, y), 1, (256, 256)).astype(float)
        lv0 = resize_rgb(s.read_level((x, y), 0, (512, 512)), (256, 256)).astype(float)
        assert np.abs(lv1.mean((0, 1)) - lv0.mean((0, 1))).max() < 6.0
        assert np.abs(lv1 - lv0).mean() < 20.0


def test_level_sizes():
    assert level_sizes(16000, 12000, 4) == [(1, 16000, 12000), (4, 4000, 3000), (16, 1000, 750), (64, 250, 188)]
    assert level_sizes(900, 500, 2) == [(1, 900, 500)]


def test_deterministic_bytes(tmp_path):
    spec = SlideSpec(seed=9, size_mm=(1.5, 1.0))
    a = make_slide(tmp_path / "a.tiff", spec)
    b = make_slide(tmp_path / "b.tiff", spec)
    assert _sha(a.path) == _sha(b.path)
    assert a.nodes_geojson.read_bytes() == b.nodes_geojson.read_bytes()
    c = make_slide(tmp_path / "c.tiff", SlideSpec(seed=10, size_mm=(1.5, 1.0)), geojson=False)
    assert _sha(c.path) != _sha(a.path)


def test_no_partial_output_on_failure(tmp_path, monkeypatch):
    import tmln.phantom.render as render

    def boom(*a, **k):
        raise RuntimeError("render failed")

    monkeypatch.setattr(render.SlideRenderer, "tile", boom)
    with pytest.raises(RuntimeError):
        make_slide(tmp_path / "x.tiff", SlideSpec(seed=1, size_mm=(1.0, 1.0)))
    assert list(tmp_path.iterdir()) == []


def test_lossless_zlib_variant_has_the_jpeg_content(tmp_path):
    """compression='zlib': OpenSlide reads it, same geometry, pixels within JPEG error of the default;
    SVS stays JPEG (Aperio) and an unknown compression is refused."""
    spec = SlideSpec(seed=3, size_mm=(1.0, 0.75))
    j = make_slide(tmp_path / "j.tiff", spec, geojson=False)
    z = make_slide(tmp_path / "z.tiff", spec, geojson=False, compression="zlib")
    with Slide(j.path) as a, Slide(z.path) as b:
        assert a.dimensions == b.dimensions and a.mpp_x == b.mpp_x
        pa, pb = a.read((0, 0), a.dimensions), b.read((0, 0), b.dimensions)
        assert np.abs(pa.astype(int) - pb.astype(int)).mean() < 4.0
        assert not np.array_equal(pa, pb)  # the lossless file is not the JPEG one
    with pytest.raises(ValueError, match="compression"):
        make_slide(tmp_path / "s.svs", spec, geojson=False, compression="zlib")
    with pytest.raises(ValueError, match="compression"):
        make_slide(tmp_path / "x.tiff", spec, geojson=False, compression="lzma")
