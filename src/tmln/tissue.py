"""Tissue detection at a stated µm/px (default 8 µm/px).

Method (all thresholds are parameters of ``detect_tissue``):

1. read the slide block-wise at ``mpp`` µm/px (``Slide.thumbnail``) and white-balance it on the
   glass colour (scanner colour casts would otherwise look like saturation);
2. reject coloured pixels that are not H&E: pen ink and dirt, i.e. saturated pixels where green is
   not the most absorbed channel (``G >= R - pen_margin`` or ``G > B + 10``: blue, green inks; H&E
   is pink to purple, so R > G and B > G), strongly saturated red where blue is absorbed almost as
   much as green (``S > red_ink_saturation`` and ``B − G < red_ink_blue_ratio · (R − G)``: red ink;
   eosin is pink, B well above G; red blood cells are less saturated: the rule flags 0.006 % of the
   pixels of 2,000 real PCam H&E patches at 0.97 µm/px, at most 3.9 % of one patch), and very dark pixels (``V < dark_value``: black ink, debris);
3. Otsu threshold on HSV saturation over the remaining pixels, clamped to
   [``min_saturation``, ``max_saturation``] so that blank glass gives no tissue and a pen-heavy or very
   dark slide does not push the threshold above pale tissue;
4. morphological clean-up: closing (``close_um``), holes smaller than ``max_hole_mm2`` filled (fat
   lobules, tears), opening (``open_um``), components smaller than ``min_area_mm2`` removed.

A slide without tissue is a reported condition: the mask is empty and ``TissueMask.empty`` is true;
``TissueMask.require()`` turns that into a ``NoTissueError`` for callers that need tissue.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tmln.atomic import atomic_path, write_json
from tmln.errors import NoTissueError, SlideError
from tmln.raster import Raster, raster_fields
from tmln.slide import Slide

DEFAULTS = {
    "mpp": 8.0,  # µm/px of the mask
    "min_saturation": 15,  # 0-255; blank glass is ~2-8
    "max_saturation": 40,
    "pen_margin": 0,  # G >= R - margin is not H&E (grey levels)
    "red_ink_saturation": 165,  # 0-255; red ink is strongly saturated ...
    "red_ink_blue_ratio": 0.2,  # ... and absorbs blue almost as much as green: B - G < ratio * (R - G)
    "dark_value": 45,  # V below this is ink / debris
    "close_um": 40.0,
    "open_um": 16.0,
    "max_hole_mm2": 0.05,
    "min_area_mm2": 0.02,
}


@dataclass
class TissueMask(Raster):
    """A boolean tissue mask of a slide at ``mpp`` µm/px (a ``Raster``; mask pixel (0, 0) = slide top-left)."""

    slide_path: str | None = None
    params: dict = field(default_factory=dict)
    threshold: float | None = None  # saturation threshold used (0-255)

    VALUES = "tissue (PNG 255) or not (0)"

    @property
    def mask(self) -> np.ndarray:
        """The bool (h, w) mask (the raster's array)."""
        return self.array

    @property
    def empty(self) -> bool:
        """True when no tissue was found."""
        return not bool(self.mask.any())

    @property
    def area_mm2(self) -> float:
        """Tissue area in mm²."""
        return float(self.mask.sum()) * self.mpp * self.mpp * 1e-6

    def require(self) -> "TissueMask":
        """Return self, or raise ``NoTissueError`` when the mask is empty."""
        if self.empty:
            raise NoTissueError("no tissue found (blank slide, or everything rejected as pen marks/glass)",
                                self.slide_path)
        return self

    def fraction(self, x_um: float, y_um: float, w_um: float, h_um: float) -> float:
        """Fraction of the rectangle (µm from the slide's top-left) covered by tissue."""
        H, W = self.mask.shape
        x0, y0 = int(np.floor(x_um / self.mpp)), int(np.floor(y_um / self.mpp))
        x1, y1 = int(np.ceil((x_um + w_um) / self.mpp)), int(np.ceil((y_um + h_um) / self.mpp))
        x0c, y0c, x1c, y1c = max(0, x0), max(0, y0), min(W, x1), min(H, y1)
        n = max(1, (x1 - x0) * (y1 - y0))
        if x1c <= x0c or y1c <= y0c:
            return 0.0
        return float(self.mask[y0c:y1c, x0c:x1c].sum()) / n

    def resized(self, mpp: float) -> np.ndarray:
        """The mask at another µm/px (nearest neighbour), as bool."""
        import cv2

        H, W = self.mask.shape
        w = max(1, int(round(W * self.mpp / mpp)))
        h = max(1, int(round(H * self.mpp / mpp)))
        return cv2.resize(self.mask.view(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)

    def sidecar(self, array_name: str = "") -> dict:
        """The raster sidecar (``tmln.raster``) with the mask's own keys."""
        return {
            **super().sidecar(array_name),
            "slide": self.slide_path,
            "width": int(self.mask.shape[1]),
            "height": int(self.mask.shape[0]),
            "tissue_found": not self.empty,
            "area_mm2": self.area_mm2,
            "saturation_threshold": self.threshold,
            "params": self.params,
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write the mask as a PNG (0/255) and ``<stem>.json`` beside it; returns the JSON path."""
        import cv2

        path = Path(path)
        ok, buf = cv2.imencode(".png", self.mask.astype(np.uint8) * 255)
        if not ok:  # pragma: no cover
            raise OSError(f"cannot encode {path}")
        with atomic_path(path) as tmp:
            tmp.write_bytes(buf.tobytes())
        side = path.with_suffix(".json")
        write_json(side, self.sidecar(path.name))
        return side

    @classmethod
    def load(cls, path: str | os.PathLike) -> "TissueMask":
        """Read a mask PNG written by ``save`` (its JSON sidecar gives the µm/px)."""
        import cv2

        path = Path(path)
        side = path.with_suffix(".json")
        if not path.is_file() or not side.is_file():
            raise SlideError("tissue mask PNG or its .json sidecar is missing", path)
        meta = json.loads(side.read_text())
        img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if img is None:
            raise SlideError("not a readable PNG", path)
        return cls(img > 127, **raster_fields(meta), slide_path=meta.get("slide"), params=meta.get("params", {}),
                   threshold=meta.get("saturation_threshold"))


def detect_tissue(slide, mpp: float = DEFAULTS["mpp"], **params) -> TissueMask:
    """Tissue mask of ``slide`` (a ``Slide`` or a path) at ``mpp`` µm/px. See the module docstring;
    ``params`` override ``DEFAULTS``. Raises ``MissingMppError`` when the slide's µm/px is unknown."""

    p = {**DEFAULTS, **params, "mpp": float(mpp)}
    unknown = set(params) - set(DEFAULTS)
    if unknown:
        raise TypeError(f"unknown tissue parameters: {sorted(unknown)}")
    own = not isinstance(slide, Slide)
    s = Slide(slide) if own else slide
    try:
        s.mpp  # noqa: B018 - raises MissingMppError with the three ways to give it
        rgb = s.thumbnail(p["mpp"])
        path = str(s.path)
        slide_mpp = (s.mpp_x, s.mpp_y)
    finally:
        if own:
            s.close()
    mask, thr = tissue_from_rgb(rgb, p)
    return TissueMask(mask, p["mpp"], slide_mpp=slide_mpp, slide_path=path, params=p, threshold=thr)


def tissue_from_rgb(rgb: np.ndarray, params: dict | None = None) -> tuple[np.ndarray, float | None]:
    """(bool mask, saturation threshold) of an RGB image at ``params["mpp"]`` µm/px."""
    import cv2
    from skimage.filters import threshold_otsu
    from skimage.morphology import remove_small_holes, remove_small_objects

    p = {**DEFAULTS, **(params or {})}
    mpp = float(p["mpp"])
    px_mm2 = mpp * mpp * 1e-6
    rgb = white_balance(rgb)
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    sat, val = hsv[..., 1], hsv[..., 2]
    r, g = rgb[..., 0].astype(np.int16), rgb[..., 1].astype(np.int16)
    b = rgb[..., 2].astype(np.int16)
    coloured = sat > int(p["min_saturation"])  # grey/white glass is judged by saturation alone
    not_he = (coloured & ((g >= r - int(p["pen_margin"])) | (g > b + 10))) | (val < int(p["dark_value"]))
    not_he |= red_ink(rgb, sat, p)
    # ink edges blend with glass/tissue: grow the rejected area by two pixels
    not_he = cv2.dilate(not_he.view(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    cand = sat[~not_he]
    thr = None
    if cand.size and int(cand.max()) > int(cand.min()):
        thr = float(threshold_otsu(cand))
    thr = float(np.clip(thr if thr is not None else p["min_saturation"], p["min_saturation"], p["max_saturation"]))
    mask = (sat > thr) & ~not_he
    if mask.any():
        k = _disk(p["close_um"] / mpp)
        if k is not None:
            mask = cv2.morphologyEx(mask.view(np.uint8), cv2.MORPH_CLOSE, k).astype(bool)
        mask = remove_small_holes(mask, max_size=max(1, int(p["max_hole_mm2"] / px_mm2)))
        k = _disk(p["open_um"] / mpp)
        if k is not None:
            mask = cv2.morphologyEx(mask.view(np.uint8), cv2.MORPH_OPEN, k).astype(bool)
        mask &= ~not_he  # ink over tissue cannot be analysed either: never tissue
        mask = remove_small_objects(mask, max_size=max(1, int(p["min_area_mm2"] / px_mm2)))
    return mask.astype(bool), thr


def red_ink(rgb: np.ndarray, sat: np.ndarray, params: dict | None = None) -> np.ndarray:
    """Red-ink pixels of an RGB image (``sat``: its HSV saturation, 0-255): strongly saturated red
    where blue is absorbed almost as much as green (eosin is pink: B well above G)."""
    p = {**DEFAULTS, **(params or {})}
    r, g, b = (rgb[..., i].astype(np.int16) for i in range(3))
    return (sat > int(p["red_ink_saturation"])) & (r - g > 60) & ((b - g) < float(p["red_ink_blue_ratio"]) * (r - g))


def white_balance(rgb: np.ndarray) -> np.ndarray:
    """Divide out the glass colour (scanner colour cast), estimated as the median of the brightest
    10 % of pixels when those are near-white (value > 180, saturation < 0.15); else unchanged."""
    flat = rgb.reshape(-1, 3)
    if flat.shape[0] < 16:
        return rgb
    v = flat.max(1)
    bright = flat[v >= np.percentile(v, 90)]
    bg = np.median(bright, axis=0)
    if bg.max() <= 180 or (bg.max() - bg.min()) / bg.max() >= 0.15:
        return rgb
    gain = bg.max() / np.maximum(bg, 1.0)
    return np.clip(rgb.astype(np.float32) * gain.astype(np.float32) + 0.5, 0, 255).astype(np.uint8)


def _disk(radius_px: float):
    import cv2

    r = int(round(radius_px))
    if r < 1:
        return None
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
