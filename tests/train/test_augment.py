"""Augmenter: geometry shared by images and masks, seeded, colour/HED jitter bounded and effective."""

import numpy as np
import pytest
import torch

from tmln.train.augment import Augmenter, hed_jitter, numpy_to_tensor, tensor_to_numpy


def _batch(n=8, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g)


def test_geometry_applied_identically_to_masks():
    x = _batch()
    # the mask is a function of the image, so any shared geometric transform keeps the relation
    mask = (x[:, 0] > 0.5).to(torch.uint8)
    aug = Augmenter(flips=True, rot90=True, colour=0, hed=0)
    xa, ma = aug(x, mask, generator=torch.Generator().manual_seed(3))
    assert torch.equal((xa[:, 0] > 0.5).to(torch.uint8), ma)
    assert not torch.equal(xa, x)  # something moved
    # geometry only: each output is one of the 8 dihedral versions of its input
    for i in range(x.shape[0]):
        versions = [torch.rot90(torch.flip(x[i], d) if d else x[i], k, (-2, -1)) for d in ((), (-1,)) for k in range(4)]
        assert any(torch.equal(xa[i], v) for v in versions)


def test_seeded_and_varies():
    x = _batch()
    aug = Augmenter()
    a = aug(x, generator=torch.Generator().manual_seed(1))
    b = aug(x, generator=torch.Generator().manual_seed(1))
    c = aug(x, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 1


def test_numpy_round_trip_and_masks_numpy():
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (4, 12, 12, 3), dtype=np.uint8)
    masks = rng.integers(0, 3, (4, 12, 12)).astype(np.int64)
    out, m = Augmenter(colour=0, hed=0)(imgs, masks, generator=torch.Generator().manual_seed(0))
    assert out.dtype == np.uint8 and out.shape == imgs.shape and isinstance(m, np.ndarray)
    # same pixel multiset per image (pure permutation of pixels)
    for i in range(4):
        assert sorted(out[i].reshape(-1, 3).tolist()) == sorted(imgs[i].reshape(-1, 3).tolist())
        assert np.bincount(m[i].ravel(), minlength=3).tolist() == np.bincount(masks[i].ravel(), minlength=3).tolist()
    assert np.array_equal(tensor_to_numpy(numpy_to_tensor(imgs)), imgs)


def test_non_square_keeps_shape():
    x = torch.rand(5, 3, 8, 12)
    y = Augmenter()(x, generator=torch.Generator().manual_seed(0))
    assert y.shape == x.shape


def test_colour_and_hed_jitter_change_colour_but_not_structure():
    x = _batch(4, 16)
    y = Augmenter(flips=False, rot90=False, colour=0.2, hed=0.05)(x, generator=torch.Generator().manual_seed(0))
    assert (y - x).abs().mean() > 1e-3
    # structure kept: strong per-image correlation of the grey levels
    for i in range(4):
        a, b = x[i].mean(0).flatten(), y[i].mean(0).flatten()
        assert torch.corrcoef(torch.stack([a, b]))[0, 1] > 0.8


def test_hed_jitter_zero_sigma_is_identity_on_valid_pixels():
    x = _batch(2, 8).clamp(min=0.05)
    y = hed_jitter(x, 0.0, torch.Generator().manual_seed(0))
    assert torch.allclose(x, y, atol=1e-5)


def test_bad_shape():
    with pytest.raises(ValueError):
        Augmenter()(torch.rand(2, 4, 8, 8))
    with pytest.raises(ValueError):
        Augmenter()(torch.rand(2, 3, 8, 8), torch.zeros(2, 7, 8))
