"""Phantom textures quilted from real patches (tmln.phantom.real_texture), on a patch folder made here
and, where ../shared is present, on the real PCam patches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tmln.errors import TmlnError
from tmln.phantom import make_slide
from tmln.phantom.geometry import SlideSpec, StainSpec
from tmln.phantom.real_texture import GROUPS, PatchPools, RealTextureBank, patch_group, quilt, restain
from tmln.phantom.texture import FAT, GLASS, LYMPH, STROMA, TUMOUR
from tmln.regions import burn
from tmln.slide import Slide

PCAM = Path(__file__).resolve().parents[3] / "shared" / "data" / "pcam"


def _lymphoid(rng, n=48):
    a = np.full((n, n, 3), (190, 150, 200), np.uint8)  # purple ground
    ys, xs = rng.integers(0, n, (2, n * n // 3))
    a[ys, xs] = (60, 30, 90)  # dense dark nuclei
    return a


def _loose(rng, n=48):
    a = np.full((n, n, 3), 240, np.uint8)
    a[rng.integers(0, n, 5), :] = (220, 160, 200)  # thin pink walls
    return a


def _stroma(rng, n=48):
    a = np.full((n, n, 3), (235, 150, 190), np.uint8)
    a[:, ::6] = (215, 120, 170)
    return a


def _tumour(rng, n=48):
    a = np.full((n, n, 3), (200, 140, 190), np.uint8)
    a[rng.random((n, n)) < 0.2] = (80, 40, 110)
    return a


@pytest.fixture(scope="module")
def patch_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("patches")
    rng = np.random.default_rng(0)
    (root / "normal").mkdir()
    (root / "tumor").mkdir()
    k = 0
    for make in (_lymphoid, _loose, _stroma):
        for _ in range(10):
            Image.fromarray(make(rng)).save(root / "normal" / f"p{k:03d}.png")
            k += 1
    for _ in range(10):
        Image.fromarray(_tumour(rng)).save(root / "tumor" / f"p{k:03d}.png")
        k += 1
    return root


def test_patch_groups_follow_the_documented_rules():
    rng = np.random.default_rng(1)
    assert patch_group(_lymphoid(rng), tumour=False) == "lymphoid"
    assert patch_group(_loose(rng), tumour=False) == "loose"
    assert patch_group(_stroma(rng), tumour=False) == "stroma"
    assert patch_group(_tumour(rng), tumour=True) == "tumour"
    assert patch_group(np.full((48, 48, 3), 250, np.uint8), tumour=True) is None  # a tumour label on glass
    half = _loose(rng)
    half[:, :16] = _lymphoid(rng)[:, :16]
    assert patch_group(half, tumour=False) is None  # neither dense nor loose nor fibrous: not used


def test_pools_resample_to_the_slide_resolution(patch_dir):
    pools = PatchPools(patch_dir, patch_mpp=1.0, mpp=2.0)
    assert pools.counts() == {"lymphoid": 10, "loose": 10, "stroma": 10, "tumour": 10}
    assert pools.groups["lymphoid"][0].shape == (24, 24, 3)  # 48 px at 1 µm/px -> 24 px at 2 µm/px
    assert pools.groups["tumour"][0].shape == (12, 12, 3)  # the centre half only (the label's region)
    assert set(pools.groups) == set(GROUPS)


def test_quilt_is_periodic_and_made_of_patch_colours():
    rng = np.random.default_rng(2)
    red = [np.full((16, 16, 3), (200, 20, 20), np.uint8)]
    q = quilt(red, 64, rng)
    assert q.shape == (64, 64, 3)
    assert np.abs(q.astype(int) - (200, 20, 20)).max() <= 1
    two = [np.full((16, 16, 3), 40, np.uint8), np.full((16, 16, 3), 200, np.uint8)]
    q = quilt(two, 64, np.random.default_rng(3)).astype(float)
    assert 40 <= q.min() and q.max() <= 200 and q.std() > 10
    # periodic: the jump across the wrap seam is no larger than jumps inside the texture
    seam = np.abs(q[:, 0] - q[:, -1]).mean()
    inside = np.abs(np.diff(q, axis=1)).mean()
    assert seam <= 3 * inside + 1


def test_restain_keeps_the_reference_stain_and_scales_dyes():
    rng = np.random.default_rng(4)
    rgb = _lymphoid(rng)
    bg = np.array([240.0, 240.0, 240.0])
    same = restain(rgb, StainSpec(background=240.0), bg)
    assert np.abs(same.astype(int) - rgb).max() <= 2
    pale = restain(rgb, StainSpec(background=240.0, h_scale=0.5, e_scale=0.5), bg)
    assert pale.mean() > rgb.mean() + 5


def test_bank_paints_classes_from_their_groups(patch_dir):
    bank = RealTextureBank(patch_dir, seed=3, mpp=2.0, stain=StainSpec(), patch_mpp=1.0, period_px=256, tile=128)
    mean = {c: bank.window(1, c, 0, 0, 128, 128).reshape(-1, 3).mean(0) for c in (GLASS, FAT, LYMPH, STROMA, TUMOUR)}
    assert mean[LYMPH].mean() < mean[STROMA].mean() < mean[FAT].mean() <= mean[GLASS].mean() + 1
    assert mean[STROMA][0] > mean[STROMA][1] + 40  # pink
    # one seed, one look: the same bank twice is the same
    again = RealTextureBank(patch_dir, seed=3, mpp=2.0, stain=StainSpec(), patch_mpp=1.0, period_px=256, tile=128)
    assert np.array_equal(bank.window(2, LYMPH, 5, 7, 64, 64), again.window(2, LYMPH, 5, 7, 64, 64))


def test_slide_with_real_textures_keeps_its_geometry(patch_dir, tmp_path):
    spec = SlideSpec(seed=6, size_mm=(2.0, 1.5), mpp=2.0, textures=str(patch_dir), textures_mpp=1.0)
    ph = make_slide(tmp_path / "s.tiff", spec)
    plain = make_slide(tmp_path / "p.tiff", SlideSpec(seed=6, size_mm=(2.0, 1.5), mpp=2.0))
    assert [p.wkb for p in ph.layout.nodes] == [p.wkb for p in plain.layout.nodes]
    with Slide(ph.path) as s:
        img = s.thumbnail(8.0)
    assert img.shape[:2] == (188, 250)
    # lymphoid nodes darker than the rest of the tissue
    node = np.zeros(img.shape[:2], bool)
    for p in ph.layout.nodes:
        burn(node, p, 4.0)
    assert node.any() and img[node].mean() < img[~node].mean() - 20


def test_bad_texture_folders_name_the_folder_or_file(tmp_path, patch_dir):
    (tmp_path / "only").mkdir()
    (tmp_path / "only" / "normal").mkdir()
    with pytest.raises(TmlnError, match="needs sub-folders tumor/"):
        PatchPools(tmp_path / "only", 1.0, 2.0)
    bad = tmp_path / "bad"
    for sub in ("normal", "tumor"):
        (bad / sub).mkdir(parents=True)
    (bad / "tumor" / "x.png").write_bytes(b"not a png")
    with pytest.raises(TmlnError, match=r"x\.png.*not a readable image"):
        PatchPools(bad, 1.0, 2.0)
    (bad / "tumor" / "x.png").unlink()
    Image.fromarray(_tumour(np.random.default_rng(0))).save(bad / "tumor" / "t.png")
    with pytest.raises(TmlnError, match="too few patches"):
        PatchPools(bad, 1.0, 2.0)


@pytest.mark.skipif(not PCAM.is_dir(), reason="../shared/data/pcam absent")
def test_pcam_patches_fill_every_group():
    pools = PatchPools(PCAM / "valid", patch_mpp=0.97, mpp=2.0, per_label=600)
    counts = pools.counts()
    # measured on this 600 + 600 sample: every group well populated
    assert all(n >= 20 for n in counts.values()), counts
    assert counts["lymphoid"] > counts["stroma"]
