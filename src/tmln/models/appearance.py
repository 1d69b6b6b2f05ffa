"""Appearance statistics: how far a slide's tissue looks from what a model was trained on.

A model card may hold ``training["appearance"]``: the mean and covariance of the *features* below
over the training patches, and the median Mahalanobis distance of a training patch to them. A slide
is summarised by patches drawn from its tissue at the model's µm/px and patch size; its
**appearance distance** is the median Mahalanobis distance of those patches, divided by the
training patches' own median (dimensionless: ≈ 1 for a slide that looks like the training data).
Above ``WARN_DISTANCE`` (2: the slide's typical patch lies twice as far from the training data as a
typical training patch) the model is out of its depth and its numbers need a check. The feature
whose slide median lies farthest from the training mean (in training standard deviations) is
named, to say *how* the slide differs.

Measured with ``pcam-tumour``'s statistics (PCam train/, 0.97 µm/px): PCam valid/ 1.0, Camelyon16
40x patches resampled 1.5, PCam valid/ blurred (σ 1-2 px) 1.9-2.1, the CMU heart slide 2.6, PCam
valid/ in greyscale 3.2 (``benchmarks/results/appearance.md``).

Features of one RGB patch, on its stained pixels (optical density ≥ 0.15 in some channel; OD =
−ln((I + 1) / 240), as the Macenko code uses):

- ``od_mean_r|g|b``, ``od_std_r|g|b``: mean and spread of optical density per channel (stain
  intensity, hue, scanner colour response);
- ``haematoxylin``, ``eosin``: mean concentrations by Ruifrok–Johnston colour deconvolution
  (``skimage.color.rgb2hed``);
- ``texture_1``, ``texture_2``, ``texture_4``: mean gradient magnitude of the OD grey image at the
  patch's µm/px and 2× and 4× coarser (sharpness, nuclear detail, blur, JPEG smoothing);
- ``stained_fraction``: share of stained pixels (tissue density vs background and fat).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

import numpy as np

from tmln.stain import DEFAULT_IO, OD_THRESHOLD, optical_density
from tmln.tissue import detect_tissue

if TYPE_CHECKING:  # annotations only: no import at run time
    from tmln.models.card import ModelCard
    from tmln.slide import Slide

FEATURES = ("od_mean_r", "od_mean_g", "od_mean_b", "od_std_r", "od_std_g", "od_std_b", "haematoxylin", "eosin",
            "texture_1", "texture_2", "texture_4", "stained_fraction")
WARN_DISTANCE = 2.0  # documented level: slides farther than this from the training data are flagged
MODEL_KINDS = ("node", "tumour")  # the models whose distance slides.csv reports
MIN_STAINED = 0.05  # patches with less stained area than this are background and not summarised
_MIN_STD = 1e-6
_RIDGE = 1e-9  # added to the covariance's diagonal before inversion (constant features)


def distance_column(kind: str) -> str:
    """The ``slides.csv`` column of a model's appearance distance (``node`` or ``tumour`` model)."""
    return f"{kind}_model_appearance_distance"


def out_of_range(row: dict) -> list[tuple[str, float]]:
    """(model kind, distance) of a ``slides.csv`` row's models whose distance is above ``WARN_DISTANCE``."""
    out = []
    for kind in MODEL_KINDS:
        try:
            d = float(row.get(distance_column(kind)) or "nan")
        except (TypeError, ValueError):
            continue
        if d > WARN_DISTANCE:
            out.append((kind, d))
    return out


def patch_features(rgb: np.ndarray) -> dict[str, float] | None:
    """The appearance features of one ``(H, W, 3)`` uint8 RGB patch (None when it is background)."""
    from skimage.color import rgb2hed

    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or min(rgb.shape[:2]) < 8:
        raise ValueError(f"expected an (H >= 8, W >= 8, 3) RGB patch, got {rgb.shape}")
    od = optical_density(rgb, DEFAULT_IO)
    stained = (od >= OD_THRESHOLD).any(axis=2)
    frac = float(stained.mean())
    if frac < MIN_STAINED:
        return None
    sel = od[stained]
    hed = rgb2hed(rgb)[stained]
    grey = od.mean(axis=2)
    out = {
        "od_mean_r": float(sel[:, 0].mean()), "od_mean_g": float(sel[:, 1].mean()), "od_mean_b": float(sel[:, 2].mean()),
        "od_std_r": float(sel[:, 0].std()), "od_std_g": float(sel[:, 1].std()), "od_std_b": float(sel[:, 2].std()),
        "haematoxylin": float(hed[:, 0].mean()), "eosin": float(hed[:, 1].mean()),
        "stained_fraction": frac,
    }
    for f in (1, 2, 4):
        g = grey if f == 1 else _block_mean(grey, f)
        gy, gx = np.gradient(g)
        out[f"texture_{f}"] = float(np.hypot(gx, gy).mean())
    return out


def _block_mean(a: np.ndarray, f: int) -> np.ndarray:
    h, w = (a.shape[0] // f) * f, (a.shape[1] // f) * f
    return a[:h, :w].reshape(h // f, f, w // f, f).mean(axis=(1, 3))


def feature_table(patches: Iterable[np.ndarray]) -> np.ndarray:
    """``(n, len(FEATURES))`` features of the non-background patches."""
    rows = []
    for p in patches:
        f = patch_features(p)
        if f is not None:
            rows.append([f[k] for k in FEATURES])
    return np.asarray(rows, dtype=np.float64).reshape(-1, len(FEATURES))


def training_statistics(patches: Iterable[np.ndarray], mpp: float, source: str = "") -> dict:
    """The card's ``training["appearance"]`` from training patches at ``mpp`` µm/px: feature mean,
    covariance, the training patches' median and 99th-percentile Mahalanobis distance, and per
    feature mean/std/1st/99th percentile (for explanations)."""
    return table_statistics(feature_table(patches), mpp, source)


def table_statistics(table: np.ndarray, mpp: float, source: str = "") -> dict:
    """``training_statistics`` of a feature table (``feature_table`` rows) already computed."""
    if table.shape[0] <= len(FEATURES):
        raise ValueError(f"{table.shape[0]} stained training patches: too few for appearance statistics")
    mean = table.mean(axis=0)
    cov = np.cov(table, rowvar=False)
    d = _mahalanobis(table, mean, cov)
    per = {k: {"mean": float(table[:, i].mean()), "std": float(table[:, i].std(ddof=1)),
               "p01": float(np.percentile(table[:, i], 1)), "p99": float(np.percentile(table[:, i], 99))}
           for i, k in enumerate(FEATURES)}
    return {"features": list(FEATURES), "mean": mean.tolist(), "covariance": cov.tolist(),
            "median_distance": float(np.median(d)), "p99_distance": float(np.percentile(d, 99)),
            "per_feature": per, "n_patches": int(table.shape[0]), "mpp": float(mpp), "source": source}


def _mahalanobis(table: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
    prec = np.linalg.pinv(np.asarray(cov, dtype=np.float64) + _RIDGE * np.eye(len(mean)))
    diff = table - np.asarray(mean)
    return np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", diff, prec, diff), 0.0))


def patch_distances(table: np.ndarray, stats: dict) -> np.ndarray:
    """Mahalanobis distance of each row of a feature table to the training statistics."""
    return _mahalanobis(table, np.asarray(stats["mean"]), np.asarray(stats["covariance"]))


def distance(slide_table: np.ndarray, stats: dict) -> dict:
    """How far a slide (its patch feature table) lies from the training statistics.

    Returns ``{"distance": median Mahalanobis distance / the training median (NaN without stained
    patches), "out_of_range": distance > WARN_DISTANCE, "feature": the feature whose slide median is
    farthest from the training mean, "z": that distance in training standard deviations,
    "n_patches": n}``."""
    n = int(slide_table.shape[0])
    if n == 0:
        return {"distance": float("nan"), "out_of_range": False, "feature": None, "z": None, "n_patches": 0}
    if list(stats.get("features", [])) != list(FEATURES):
        raise ValueError("appearance statistics of another feature set; retrain or update tmln")
    d = _mahalanobis(slide_table, np.asarray(stats["mean"]), np.asarray(stats["covariance"]))
    ratio = float(np.median(d) / max(float(stats["median_distance"]), _MIN_STD))
    med = np.median(slide_table, axis=0)
    per = stats["per_feature"]
    z = {k: float((med[i] - per[k]["mean"]) / max(per[k]["std"], _MIN_STD)) for i, k in enumerate(FEATURES)}
    worst = max(z, key=lambda k: abs(z[k]))
    return {"distance": ratio, "out_of_range": bool(ratio > WARN_DISTANCE), "feature": worst,
            "z": round(z[worst], 3), "n_patches": n}


def slide_patches(slide: Slide, mpp: float, size: int, n: int = 64, seed: int = 0, tissue=None) -> list[np.ndarray]:
    """Up to ``n`` patches of ``size`` px at ``mpp`` µm/px centred on tissue (``tmln.tissue``; or the
    given ``TissueMask``), drawn with ``seed``."""
    tm = tissue if tissue is not None else detect_tissue(slide)
    ys, xs = np.nonzero(np.asarray(tm.mask, bool))
    if ys.size == 0:
        return []
    rng = np.random.default_rng(seed)
    pick = rng.choice(ys.size, min(n, ys.size), replace=False)
    half_um = size * mpp / 2
    out = []
    for i in pick:
        cx_um, cy_um = (xs[i] + 0.5) * tm.mpp, (ys[i] + 0.5) * tm.mpp
        loc = ((cx_um - half_um) / slide.mpp_x, (cy_um - half_um) / slide.mpp_y)
        out.append(slide.read(loc, (size, size), mpp=mpp))
    return out


def slide_distance(slide: Slide, card: ModelCard, n: int = 64, seed: int = 0, tissue=None) -> dict | None:
    """``distance`` of a slide to ``card``'s training appearance (None when the card has none)."""
    stats = (card.training or {}).get("appearance")
    if not stats:
        return None
    size = int(stats.get("patch_size", card.patch_size))  # node models: a patch smaller than the tile
    patches = slide_patches(slide, float(stats.get("mpp", card.mpp)), size, n, seed, tissue)
    return distance(feature_table(patches), stats)
