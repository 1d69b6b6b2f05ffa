"""Macenko: recovers known stain vectors on a synthetic H&E image; normalisation maps onto the reference."""

import numpy as np
import pytest

from tmln.errors import TmlnError
from tmln.stain import StainEstimationError, check_reference, estimate, normalise, reference_from_images

H = np.array([0.65, 0.70, 0.29])
E = np.array([0.07, 0.99, 0.11])


def _synthetic(h_vec, e_vec, seed=0, n=64, scale=(1.0, 1.0), io=240.0):
    rng = np.random.default_rng(seed)
    h_vec = h_vec / np.linalg.norm(h_vec)
    e_vec = e_vec / np.linalg.norm(e_vec)
    ch = rng.gamma(2.0, 0.35, (n, n)) * scale[0]
    ce = rng.gamma(2.0, 0.30, (n, n)) * scale[1]
    od = ch[..., None] * h_vec + ce[..., None] * e_vec
    return np.clip(io * np.exp(-od) - 1, 0, 255).round().astype(np.uint8)


def test_estimate_recovers_stain_vectors():
    ref = estimate(_synthetic(H, E))
    he = np.asarray(ref["stain_matrix"])
    assert he.shape == (3, 2)
    assert np.dot(he[:, 0], H / np.linalg.norm(H)) > 0.98  # haematoxylin first
    assert np.dot(he[:, 1], E / np.linalg.norm(E)) > 0.98
    assert all(c > 0 for c in ref["max_concentrations"])
    check_reference(ref)


def test_normalise_maps_source_onto_reference():
    target = _synthetic(H, E, seed=1)
    # a differently stained source: bluer haematoxylin, stronger eosin
    source = _synthetic(np.array([0.55, 0.75, 0.38]), np.array([0.15, 0.95, 0.25]), seed=2, scale=(0.8, 1.5))
    ref = estimate(target)
    out = normalise(source, ref)
    assert out.shape == source.shape and out.dtype == np.uint8
    before = np.abs(source.reshape(-1, 3).mean(0) - target.reshape(-1, 3).mean(0)).sum()
    after = np.abs(out.reshape(-1, 3).mean(0) - target.reshape(-1, 3).mean(0)).sum()
    assert after < 0.5 * before
    # normalising the reference image onto itself changes little
    same = normalise(target, ref)
    assert np.abs(same.astype(int) - target).mean() < 3
    # batches
    assert normalise(np.stack([source, target]), ref).shape == (2, *source.shape)


def test_blank_image_unchanged_and_estimation_error():
    blank = np.full((32, 32, 3), 240, np.uint8)
    ref = estimate(_synthetic(H, E))
    assert np.array_equal(normalise(blank, ref), blank)
    with pytest.raises(StainEstimationError):
        estimate(blank)


def test_bad_reference():
    with pytest.raises(TmlnError):
        normalise(_synthetic(H, E), {"method": "macenko", "stain_matrix": [[1, 2]], "max_concentrations": [1, 1]})


def test_reference_from_images_and_real_targets(shared_data):
    from PIL import Image

    folder = shared_data / "stain-reference"
    imgs = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(folder.glob("*.png"))]
    ref = reference_from_images(imgs)
    he = np.asarray(ref["stain_matrix"])
    # real H&E: haematoxylin absorbs red more than eosin does; eosin absorbs green most
    assert he[0, 0] > he[0, 1] and np.argmax(he[:, 1]) == 1
    out = normalise(imgs[0], ref)
    assert out.shape == imgs[0].shape
