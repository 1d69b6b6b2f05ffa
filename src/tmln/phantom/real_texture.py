"""Phantom textures quilted from real H&E patches, in place of the procedural ones.

A patch folder with ``tumor/`` (or ``tumour/``) and ``normal/`` sub-folders (PatchCamelyon's layout;
any size, any µm/px given as ``patch_mpp``) is sorted into appearance groups, and each tissue class
of the phantom's label raster is filled with a periodic quilt of that group's patches, resampled to
the slide's µm/px. Geometry and truth stay those of ``tmln.phantom.geometry``: only the look changes.

Appearance groups (rule on each patch's tissue fraction ``t`` = share of pixels with optical density
sum > 0.3, and dark fraction ``d`` = share of pixels with mean RGB < 130, i.e. nuclei):

=========  ================================  =================================================
group      rule                              paints
=========  ================================  =================================================
lymphoid   normal, t >= 0.8 and d >= 0.25    lymphoid tissue; the paler half also follicles
loose      normal, t < 0.25                  perinodal fat and loose connective tissue
stroma     normal, t >= 0.5 and d < 0.15     capsule, septa, vessel walls, hilum, muscle
tumour     tumour, t >= 0.7 and d >= 0.1     deposits and carcinoma (centre crop, see below)
=========  ================================  =================================================

Label noise: a PCam ``tumor`` label says only that the centre 32 x 32 px hold tumour, so tumour
patches are cropped to their central half before use; ``normal`` patches hold no tumour in the centre
but may at the rim, so groups are chosen by appearance (dense small nuclei, fat, fibres) rather than
trusted as labelled; patches matching no rule are not used. Within one slide, patches of every group
are drawn from the third closest in stain hue (the direction of their mean optical density) to one
anchor patch, so a phantom slide looks stained in one run, and slides differ as real ones do; the
slide's ``StainSpec`` then varies dye amounts, background, colour cast, tone curve and focus on top.

Textures are never sharper than ``patch_mpp`` (PCam: 0.97 µm/px): finer slides get upsampled patches.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np

from tmln.errors import TmlnError
from tmln.phantom.texture import (
    CAPSULE_BY_ORIENTATION, CARCINOMA, FAT, FOLLICLE, GLASS, LYMPH, MUSCLE, REF_E, REF_H, STROMA, TUMOUR,
    TextureBank, stain_vectors,
)

GROUPS = ("lymphoid", "loose", "stroma", "tumour")
PATCHES_PER_LABEL = 3000  # patches read per label folder (a seeded sample), enough for every group
HUE_SHARE = 1 / 3  # share of each group closest in stain hue to the slide's anchor patch
MIN_PER_GROUP = 8
_TISSUE_OD, _DARK_RGB = 0.3, 130.0
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}


def patch_group(rgb: np.ndarray, tumour: bool) -> str | None:
    """The appearance group of one RGB uint8 patch (see the module docstring), or None."""
    a = rgb.astype(np.float32)
    od = -np.log10(np.clip(a, 1.0, 255.0) / 255.0)
    t = float((od.sum(-1) > _TISSUE_OD).mean())
    d = float((a.mean(-1) < _DARK_RGB).mean())
    if tumour:
        return "tumour" if t >= 0.7 and d >= 0.1 else None
    if t >= 0.8 and d >= 0.25:
        return "lymphoid"
    if t < 0.25:
        return "loose"
    if t >= 0.5 and d < 0.15:
        return "stroma"
    return None


def _hue(rgb: np.ndarray) -> np.ndarray:
    """Unit direction of the mean optical density of the stained pixels (stain hue)."""
    od = -np.log10(np.clip(rgb.astype(np.float32), 1.0, 255.0) / 255.0).reshape(-1, 3)
    od = od[od.sum(-1) > _TISSUE_OD]
    v = od.mean(0) if len(od) else np.ones(3, np.float32)
    return v / (np.linalg.norm(v) + 1e-9)


class PatchPools:
    """Patches of a folder sorted into appearance groups, resampled to ``mpp`` µm/px."""

    def __init__(self, folder: str | Path, patch_mpp: float, mpp: float, per_label: int = PATCHES_PER_LABEL,
                 seed: int = 0):
        import cv2
        from PIL import Image

        folder = Path(folder)
        labels = {}
        for name, tumour in (("tumor", True), ("tumour", True), ("normal", False)):
            if (folder / name).is_dir():
                labels[folder / name] = tumour
        if not labels or not any(labels.values()) or all(labels.values()):
            raise TmlnError("a texture patch folder needs sub-folders tumor/ (or tumour/) and normal/", folder)
        rng = np.random.default_rng(seed)
        scale = float(patch_mpp) / float(mpp)
        self.mpp, self.patch_mpp = float(mpp), float(patch_mpp)
        self.groups: dict[str, list[np.ndarray]] = {g: [] for g in GROUPS}
        self.hues: dict[str, list[np.ndarray]] = {g: [] for g in GROUPS}
        self.read = 0
        for sub, tumour in labels.items():
            files = sorted(p for p in sub.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
            if len(files) > per_label:
                files = [files[i] for i in sorted(rng.choice(len(files), per_label, replace=False))]
            for f in files:
                try:
                    with Image.open(f) as im:
                        rgb = np.asarray(im.convert("RGB"))
                except OSError as e:
                    raise TmlnError(f"not a readable image ({e})", f) from e
                self.read += 1
                g = patch_group(rgb, tumour)
                if g is None:
                    continue
                if tumour:  # the label holds for the centre only
                    h, w = rgb.shape[:2]
                    rgb = rgb[h // 4: h - h // 4, w // 4: w - w // 4]
                size = (max(4, round(rgb.shape[1] * scale)), max(4, round(rgb.shape[0] * scale)))
                interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
                self.groups[g].append(np.ascontiguousarray(cv2.resize(rgb, size, interpolation=interp)))
                self.hues[g].append(_hue(rgb))
        short = [g for g in GROUPS if len(self.groups[g]) < MIN_PER_GROUP]
        if short:
            raise TmlnError(f"too few patches for the texture groups {short} (need {MIN_PER_GROUP} each; "
                            "see tmln.phantom.real_texture for the rules)", folder)
        self.source = str(folder)

    def counts(self) -> dict[str, int]:
        return {g: len(v) for g, v in self.groups.items()}

    def choose(self, group: str, anchor: np.ndarray, rng) -> list[np.ndarray]:
        """The patches of ``group`` closest in stain hue to ``anchor`` (``HUE_SHARE`` of them)."""
        hues = np.stack(self.hues[group])
        n = max(MIN_PER_GROUP, int(len(hues) * HUE_SHARE))
        near = np.argsort(-(hues @ anchor))[:n]
        return [self.groups[group][i] for i in near]


def pools_for(folder: str | Path, patch_mpp: float, mpp: float) -> PatchPools:
    """``PatchPools`` cached per process (reading and sorting the patches is the costly part)."""
    return _pools(str(Path(folder).resolve()), round(float(patch_mpp), 9), round(float(mpp), 9))


@functools.lru_cache(maxsize=2)
def _pools(folder: str, patch_mpp: float, mpp: float) -> PatchPools:
    return PatchPools(folder, patch_mpp, mpp)


def quilt(patches: list[np.ndarray], period: int, rng, overlap: float = 0.3) -> np.ndarray:
    """A periodic (period x period) RGB texture of randomly placed, rotated and flipped patches,
    blended with feathered (raised-cosine) weights where they overlap."""
    s = min(min(p.shape[:2]) for p in patches)
    step = max(2, int(round(s * (1 - overlap))))
    n = int(math.ceil(period / step))
    win1 = np.sin(np.linspace(0, np.pi, s + 2)[1:-1]) ** 2 + 1e-3
    win = (win1[:, None] * win1[None, :]).astype(np.float32)[..., None]
    acc = np.zeros((period + s, period + s, 3), np.float32)
    wsum = np.zeros((period + s, period + s, 1), np.float32)
    for iy in range(n):
        for ix in range(n):
            p = patches[int(rng.integers(len(patches)))]
            y0 = int(rng.integers(0, p.shape[0] - s + 1))
            x0 = int(rng.integers(0, p.shape[1] - s + 1))
            p = np.rot90(p[y0:y0 + s, x0:x0 + s], int(rng.integers(4)))
            if rng.random() < 0.5:
                p = p[:, ::-1]
            y = (iy * step + int(rng.integers(-step // 4, step // 4 + 1))) % period
            x = (ix * step + int(rng.integers(-step // 4, step // 4 + 1))) % period
            acc[y:y + s, x:x + s] += p.astype(np.float32) * win
            wsum[y:y + s, x:x + s] += win
    # fold the overhang back onto the start (periodic)
    for a in (acc, wsum):
        a[:s, :] += a[period:period + s, :]
        a[:, :s] += a[:, period:period + s]
    out = acc[:period, :period] / np.maximum(wsum[:period, :period], 1e-6)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def restain(rgb: np.ndarray, stain, background: np.ndarray) -> np.ndarray:
    """Apply a ``StainSpec`` to real RGB: haematoxylin/eosin amounts scaled along the slide's stain
    vectors (the rest of the optical density kept), then glass brightness, colour cast, tone curve."""
    bg = np.asarray(background, np.float32)
    od = -np.log10(np.clip(rgb.astype(np.float32), 1.0, 255.0) / bg)
    od = np.clip(od, 0, None).reshape(-1, 3)
    basis = np.stack([REF_H, REF_E], 1).astype(np.float32)  # (3, 2)
    ab = od @ np.linalg.pinv(basis).T  # (n, 2) dye amounts
    rest = od - ab @ basis.T
    vH, vE = stain_vectors(stain)
    od2 = np.outer(ab[:, 0] * stain.h_scale, vH) + np.outer(ab[:, 1] * stain.e_scale, vE) + rest
    out = np.float32(stain.background) * np.asarray(stain.cast, np.float32) * np.power(10.0, -od2).astype(np.float32)
    if stain.gamma != 1.0:
        out = 255.0 * np.power(np.clip(out, 0, 255) / 255.0, np.float32(stain.gamma))
    return np.clip(out + 0.5, 0, 255).astype(np.uint8).reshape(rgb.shape)


class RealTextureBank(TextureBank):
    """``TextureBank`` whose class textures are quilts of real patches (same ``level``/``window``)."""

    def __init__(self, folder: str | Path, seed: int, mpp: float, stain=None, patch_mpp: float = 0.97,
                 period_px: int = 2048, tile: int = 512):
        self._frame(mpp, stain, period_px, tile)
        rs = np.random.default_rng(np.random.SeedSequence([int(seed), 0x7E47]))
        self.seed = int(seed)
        self.offset = (int(rs.integers(0, self.period)), int(rs.integers(0, self.period)))
        pools = pools_for(folder, patch_mpp, self.mpp)
        anchor = pools.hues["lymphoid"][int(rs.integers(len(pools.hues["lymphoid"])))]
        chosen = {g: pools.choose(g, anchor, rs) for g in GROUPS}
        # the source's glass: the brightest pixels of its fat patches
        loose = np.concatenate([p.reshape(-1, 3) for p in chosen["loose"]]).astype(np.float32)
        background = np.percentile(loose, 97, axis=0).clip(200, 255)
        lymph = chosen["lymphoid"]
        pale = sorted(lymph, key=lambda p: -float(p.mean()))[: max(MIN_PER_GROUP, len(lymph) // 2)]
        P = self.period
        textures = {
            LYMPH: quilt(lymph, P, rs), FOLLICLE: quilt(pale, P, rs), FAT: quilt(chosen["loose"], P, rs),
            TUMOUR: quilt(chosen["tumour"], P, rs), STROMA: quilt(chosen["stroma"], P, rs),
        }
        textures[CARCINOMA] = quilt(chosen["tumour"], P, rs)
        textures[MUSCLE] = quilt(chosen["stroma"], P, rs)
        for c in CAPSULE_BY_ORIENTATION:
            textures[c] = textures[STROMA]
        noise = rs.normal(0, 1.5, (P, P, 1)).astype(np.float32)
        textures[GLASS] = np.clip(background[None, None] + noise + 0.5, 0, 255).astype(np.uint8)
        self._rgb0 = {c: restain(t, self.stain, background) for c, t in textures.items()}
        self._focus()
        self.source = {"folder": pools.source, "patch_mpp": pools.patch_mpp, "groups": pools.counts()}
