"""Pixel helpers: compositing on white, resampling to a µm/px, fitting to a patch, reading image files."""

import numpy as np
import pytest
from PIL import Image

from tmln.errors import TmlnError
from tmln.imaging import fit_to_patch, iter_blocks, list_images, read_image, resample, rgba_to_rgb_white


def test_rgba_composited_on_white():
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (10, 20, 30, 255)
    rgba[0, 1] = (0, 0, 0, 128)
    out = rgba_to_rgb_white(rgba)
    assert out[1, 1].tolist() == [255, 255, 255]
    assert out[0, 0].tolist() == [10, 20, 30]
    assert out[0, 1].tolist() == [127, 127, 127]  # half-transparent black over white


def test_resample_and_fit_to_patch():
    # 40 px at 0.25 µm/px -> 20 px at 0.5 µm/px; 10 x 12 reflect-padded to 16 x 16
    assert resample(np.zeros((40, 40, 3), np.uint8), 0.25, 0.5).shape == (20, 20, 3)
    assert resample(np.zeros((40, 40, 3), np.uint8), None, 0.5).shape == (40, 40, 3)
    assert fit_to_patch(np.zeros((10, 12, 3), np.uint8), 16).shape == (16, 16, 3)
    img = np.arange(30 * 30 * 3, dtype=np.uint8).reshape(30, 30, 3)
    assert np.array_equal(fit_to_patch(img, 10), img[10:20, 10:20])  # centred crop


def test_iter_blocks_cover_once():
    seen = np.zeros((7, 5), int)
    for y, x, h, w in iter_blocks((7, 5), 3):
        seen[y : y + h, x : x + w] += 1
    assert (seen == 1).all()


def test_read_and_list_images(tmp_path):
    (tmp_path / "a").mkdir()
    Image.fromarray(np.zeros((4, 6, 4), np.uint8)).save(tmp_path / "a" / "x.png")  # transparent
    (tmp_path / ".hidden.png").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("no image")
    assert [p.name for p in list_images(tmp_path)] == ["x.png"]
    rgb = read_image(tmp_path / "a" / "x.png")
    assert rgb.shape == (4, 6, 3) and int(rgb.min()) == 255


def test_unreadable_image_names_file(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    with pytest.raises(TmlnError, match="broken.png"):
        read_image(bad)
