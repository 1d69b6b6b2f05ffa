"""Macenko stain normalisation (Macenko et al., ISBI 2009), NumPy only.

A *stain reference* is a plain dict that travels in the model card as ``normalisation["stain"]``::

    {"method": "macenko", "stain_matrix": [[hR, eR], [hG, eG], [hB, eB]],  # unit OD vectors
     "max_concentrations": [h99, e99], "io": 240}

``estimate(rgb)`` computes one from an image (or a mosaic of training patches);
``normalise(rgb, reference)`` maps an image onto it: the image's own stain vectors are estimated
(or given as ``source``, e.g. estimated once from a slide thumbnail so that all tiles of a slide
share them), its concentrations are rescaled to the reference's 99th percentiles and recomposed
with the reference stain vectors. Images without enough stained pixels to estimate stains
(background, blank tiles) are returned unchanged.
"""

from __future__ import annotations

import numpy as np

from tmln.errors import TmlnError

DEFAULT_IO = 240.0  # transmitted-light intensity (white level) used for optical density
OD_THRESHOLD = 0.15  # pixels with OD below this in any channel are background for estimation
ANGLE_PERCENTILE = 1.0  # robust extreme angles (alpha in the paper), percent
CONC_PERCENTILE = 99.0
MIN_PIXELS = 100  # fewer stained pixels than this: no estimate


class StainEstimationError(TmlnError):
    """Not enough stained pixels (or degenerate colours) to estimate stain vectors."""


def optical_density(rgb: np.ndarray, io: float = DEFAULT_IO) -> np.ndarray:
    """(..., 3) uint8 RGB -> optical density ``-ln((I + 1) / io)``, float64 (values >= 0 clipped)."""
    od = -np.log((rgb.astype(np.float64) + 1.0) / io)
    return np.maximum(od, 0.0)


def estimate(rgb: np.ndarray, io: float = DEFAULT_IO, beta: float = OD_THRESHOLD, alpha: float = ANGLE_PERCENTILE) -> dict:
    """Macenko stain vectors and 99th-percentile concentrations of an RGB image (any shape
    (..., 3), uint8). Raises ``StainEstimationError`` when the image has too little stain."""
    od = optical_density(np.asarray(rgb)[..., :3].reshape(-1, 3), io)
    tissue = od[np.all(od > beta, axis=1)]
    if tissue.shape[0] < MIN_PIXELS:
        raise StainEstimationError(f"only {tissue.shape[0]} stained pixels (need {MIN_PIXELS})")
    cov = np.cov(tissue, rowvar=False)
    if not np.all(np.isfinite(cov)):
        raise StainEstimationError("degenerate colours")
    _, vecs = np.linalg.eigh(cov)  # ascending eigenvalues
    plane = vecs[:, 1:3]  # two largest
    plane = plane * np.where(plane.sum(axis=0) < 0, -1.0, 1.0)  # point into positive OD
    proj = tissue @ plane
    phi = np.arctan2(proj[:, 1], proj[:, 0])
    lo, hi = np.percentile(phi, [alpha, 100 - alpha])
    v1 = plane @ np.array([np.cos(lo), np.sin(lo)])
    v2 = plane @ np.array([np.cos(hi), np.sin(hi)])
    # haematoxylin is the vector with the larger red OD component (bluish-purple absorbs red)
    he = np.stack([v1, v2], axis=1) if v1[0] > v2[0] else np.stack([v2, v1], axis=1)
    he = he / np.linalg.norm(he, axis=0, keepdims=True)
    if not np.all(np.isfinite(he)) or abs(np.dot(he[:, 0], he[:, 1])) > 0.999:
        raise StainEstimationError("stain vectors are degenerate (one stain only?)")
    conc = _concentrations(od, he)
    max_c = np.percentile(conc, CONC_PERCENTILE, axis=1)
    if not np.all(max_c > 0):
        raise StainEstimationError("non-positive stain concentrations")
    return {"method": "macenko", "stain_matrix": he.tolist(), "max_concentrations": max_c.tolist(), "io": float(io)}


def _concentrations(od: np.ndarray, he: np.ndarray) -> np.ndarray:
    """Least-squares concentrations (2, N) of OD pixels (N, 3) for stain matrix ``he`` (3, 2)."""
    return np.linalg.lstsq(he, od.T, rcond=None)[0]


def check_reference(reference: dict) -> dict:
    """Validate a stain reference dict (as stored in a model card); returns it."""
    try:
        if reference.get("method") != "macenko":
            raise ValueError(f"unknown method {reference.get('method')!r}")
        he = np.asarray(reference["stain_matrix"], dtype=float)
        mc = np.asarray(reference["max_concentrations"], dtype=float)
        if he.shape != (3, 2) or mc.shape != (2,) or not np.all(np.isfinite(he)) or not np.all(mc > 0):
            raise ValueError("stain_matrix must be 3x2 and max_concentrations 2 positive numbers")
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise TmlnError(f"invalid Macenko stain reference ({exc})") from None
    return reference


def normalise(rgb: np.ndarray, reference: dict, source: dict | None = None) -> np.ndarray:
    """Map an RGB uint8 image (H, W, 3) or batch (N, H, W, 3) onto the reference stains.

    source : the image's own stain estimate (``estimate`` output) to use instead of estimating it
        from ``rgb`` (e.g. once per slide). Without it each image of a batch is estimated on its
        own; images with too little stain are returned unchanged.
    """
    check_reference(reference)
    a = np.asarray(rgb)
    if a.ndim == 4:
        return np.stack([normalise(im, reference, source) for im in a])
    if a.ndim != 3 or a.shape[-1] < 3:
        raise ValueError(f"expected (H, W, 3) RGB, got {a.shape}")
    a = a[..., :3]
    if source is None:
        try:
            source = estimate(a, io=reference.get("io", DEFAULT_IO))
        except StainEstimationError:
            return a.copy()
    io = float(reference.get("io", DEFAULT_IO))
    he_src = np.asarray(source["stain_matrix"], dtype=float)
    mc_src = np.asarray(source["max_concentrations"], dtype=float)
    he_ref = np.asarray(reference["stain_matrix"], dtype=float)
    mc_ref = np.asarray(reference["max_concentrations"], dtype=float)
    od = optical_density(a.reshape(-1, 3), io)
    conc = _concentrations(od, he_src) * (mc_ref / mc_src)[:, None]
    out = io * np.exp(-(he_ref @ conc))
    return np.clip(out.T.reshape(a.shape), 0, 255).round().astype(np.uint8)


def reference_from_images(images, max_images: int = 256, seed: int = 0) -> dict:
    """A reference from many images (e.g. training patches): stains estimated on their pooled
    pixels (a random subset of at most ``max_images``)."""
    imgs = list(images)
    if not imgs:
        raise StainEstimationError("no images to estimate a stain reference from")
    rng = np.random.default_rng(seed)
    if len(imgs) > max_images:
        imgs = [imgs[i] for i in sorted(rng.choice(len(imgs), max_images, replace=False))]
    pixels = np.concatenate([np.asarray(im)[..., :3].reshape(-1, 3) for im in imgs])
    if pixels.shape[0] > 2_000_000:
        pixels = pixels[rng.choice(pixels.shape[0], 2_000_000, replace=False)]
    return estimate(pixels)
