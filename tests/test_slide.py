"""tmln.slide and `tmln info` on the committed CMU slide, phantoms and broken files."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from tmln.cli import main
from tmln.errors import MissingMppError, SlideError
from tmln.imaging import resize_rgb, rgba_to_rgb_white
from tmln.slide import Slide


@pytest.fixture(scope="module")
def nompp_slide(tmp_path_factory):
    from tmln.phantom import SlideSpec, make_slide

    p = tmp_path_factory.mktemp("nompp") / "nompp.tiff"
    make_slide(p, SlideSpec(seed=3, size_mm=(1.0, 0.8)), write_mpp=False, geojson=False)
    return p


def test_cmu_metadata(cmu_slide):
    with Slide(cmu_slide) as s:
        assert s.vendor == "aperio"
        assert s.dimensions == (2220, 2967)
        assert s.mpp == pytest.approx(0.499, abs=1e-3)
        assert s.mpp_source == "openslide"
        assert s.objective_power == 20
        assert s.info()["readers"] == ["tifffile"]
        info = s.info()
    for key in ("path", "vendor", "width", "height", "level_count", "level_dimensions", "level_downsamples",
                "mpp_x", "mpp_y", "objective_power", "readers"):
        assert key in info


def test_read_at_requested_mpp_matches_downsampled_level0(cmu_slide):
    with Slide(cmu_slide) as s:
        # 400 x 300 output px at 1.996 µm/px = exactly 4x the level-0 pixel
        target = s.mpp_x * 4
        out = s.read((800, 1200), (100, 75), mpp=target)
        assert out.shape == (75, 100, 3) and out.dtype == np.uint8
        ref = resize_rgb(s.read_level((800, 1200), 0, (400, 300)), (100, 75))
        assert np.abs(out.astype(int) - ref.astype(int)).mean() < 1.0
        # physical units: the same region addressed in µm
        out_um = s.read((800 * s.mpp_x, 1200 * s.mpp_y), (100, 75), mpp=target, units="um")
        assert np.array_equal(out, out_um)


def test_read_non_integer_factor(cmu_slide):
    with Slide(cmu_slide) as s:
        out = s.read((0, 0), (64, 48), mpp=1.3)
        assert out.shape == (48, 64, 3)
        ref = resize_rgb(s.read_level((0, 0), 0, (round(64 * 1.3 / s.mpp_x), round(48 * 1.3 / s.mpp_y))), (64, 48))
        assert np.abs(out.astype(int) - ref.astype(int)).mean() < 3.0


def test_read_position_is_exact_at_fractional_factors(cmu_slide):
    with Slide(cmu_slide) as s:
        f = 1.5 * s.mpp_x  # 1.5 level-0 px per output px
        a = s.read((600, 900), (120, 90), mpp=f).astype(int)
        b = s.read((600 + 3, 900), (120, 90), mpp=f).astype(int)  # 3 level-0 px = 2 output px
        assert np.abs(a[:, 2:] - b[:, :-2]).mean() < 0.5
        ref = resize_rgb(s.read_level((600, 900), 0, (180, 135)), (120, 90)).astype(int)
        assert np.abs(a - ref).mean() < 2.0


def test_transparent_becomes_white(cmu_slide):
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (10, 20, 30, 255)
    assert rgba_to_rgb_white(rgba)[1, 1].tolist() == [255, 255, 255]
    assert rgba_to_rgb_white(rgba)[0, 0].tolist() == [10, 20, 30]
    with Slide(cmu_slide) as s:  # outside the scanned area OpenSlide returns transparent pixels
        out = s.read_level((s.width - 8, s.height - 8), 0, (16, 16))
        assert out[12:, 12:].min() == 255


def test_thumbnail_shape(cmu_slide):
    with Slide(cmu_slide) as s:
        th = s.thumbnail(4.0, block=64)  # several blocks
        assert th.shape == (round(2967 * s.mpp_y / 4.0), round(2220 * s.mpp_x / 4.0), 3)
        whole = s.read((0, 0), (th.shape[1], th.shape[0]), mpp=4.0)
        # block reads share one resampling grid: stitched blocks equal one big read
        assert np.abs(th.astype(int) - whole.astype(int)).max() <= 1


def test_mpp_override_and_missing(nompp_slide):
    with Slide(nompp_slide) as s:
        assert not s.has_mpp and s.mpp_x is None
        with pytest.raises(MissingMppError) as err:
            s.mpp  # noqa: B018
        msg = str(err.value)
        assert str(nompp_slide) in msg and "mpp=" in msg and "--mpp" in msg and "`mpp` column" in msg
        with pytest.raises(MissingMppError):
            s.read((0, 0), (10, 10), mpp=2.0)
    with Slide(nompp_slide, mpp=0.5) as s:
        assert s.mpp == 0.5 and s.mpp_source == "override"
    with pytest.raises(SlideError):
        Slide(nompp_slide, mpp=-1)


def test_slide_pickles(cmu_slide):
    import pickle

    with Slide(cmu_slide, mpp=0.7) as s:
        t = pickle.loads(pickle.dumps(s))
        assert t.mpp == 0.7 and t.dimensions == s.dimensions


# ---------------------------------------------------------------------------- tmln info
def _info(*args):
    return CliRunner().invoke(main, ["info", *map(str, args)])


def test_info_ok(cmu_slide):
    r = _info(cmu_slide)
    assert r.exit_code == 0, r.output
    info = json.loads(r.output)
    assert info["vendor"] == "aperio" and info["width"] == 2220 and info["height"] == 2967
    assert info["mpp_x"] == pytest.approx(0.499, abs=1e-3) and info["level_count"] == 1


def test_info_missing_mpp_is_null(nompp_slide):
    r = _info(nompp_slide)
    assert r.exit_code == 0, r.output
    info = json.loads(r.output)
    assert info["mpp_x"] is None and info["mpp_y"] is None
    r = _info(nompp_slide, "--mpp", "0.25")
    assert json.loads(r.output)["mpp_x"] == 0.25


def _assert_one_line_error(r, path):
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.strip().splitlines() if ln]
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(path) in lines[0]


def test_info_not_a_slide(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("hello\n")
    _assert_one_line_error(_info(p), p)


def test_info_truncated(tmp_path, cmu_slide):
    p = tmp_path / "truncated.svs"
    shutil.copy(cmu_slide, p)
    size = p.stat().st_size
    with open(p, "r+b") as fh:
        fh.truncate(size // 2)
    _assert_one_line_error(_info(p), p)


def test_info_missing_and_directory(tmp_path):
    _assert_one_line_error(_info(tmp_path / "nope.svs"), tmp_path / "nope.svs")
    _assert_one_line_error(_info(tmp_path), tmp_path)


@pytest.mark.parametrize("unit, per_unit_um", [("CENTIMETER", 1e4), ("INCH", 25400.0)])
@pytest.mark.parametrize("openslide_tags", [True, False])
def test_tiff_resolution_unit(tmp_path, unit, per_unit_um, openslide_tags):
    """µm/px from TIFF resolution tags in either unit, via OpenSlide's ``tiff.*`` properties and via
    the tifffile fallback (vendors whose tags OpenSlide does not expose): a unit read wrongly puts
    the pixel size 2.54x off and areas 6.45x off."""
    import tifffile

    p = tmp_path / "s.tiff"
    img = np.full((512, 512, 3), 200, np.uint8)
    tifffile.imwrite(p, img, photometric="rgb", tile=(256, 256), compression="zlib",
                     resolution=(per_unit_um / 0.25, per_unit_um / 0.25), resolutionunit=unit)
    with Slide(p) as s:
        if not openslide_tags:
            s.properties = {k: v for k, v in s.properties.items() if not k.startswith("tiff.")}
            assert "tiff.ResolutionUnit" not in s.properties
        mx, my = s._mpp_from_tiff_tags()
    assert mx == pytest.approx(0.25, rel=1e-6) and my == pytest.approx(0.25, rel=1e-6)
