"""Procedural H&E textures rendered at a given µm/px.

The stain model is Beer-Lambert: each pixel holds a haematoxylin amount ``cH`` and an eosin amount
``cE`` (optical density units), and RGB = background * 10^-(cH * vH + cE * vE). Tissue classes
differ in how ``cH``/``cE`` are built from periodic texture fields:

* lymphoid tissue: dense small round nuclei (Ø 5-7 µm), dark purple, little cytoplasm;
* follicles (germinal-centre-like): the same nuclei, sparser and paler;
* capsule: pink fibres with a few spindle nuclei;
* perinodal fat: empty polygonal cells (Ø 40-110 µm) with thin pink walls;
* tumour: large pleomorphic vesicular nuclei (Ø 10-15 µm, rim + nucleoli), pink cytoplasm,
  glandular clusters around lumens;
* glass: near white with slight noise.

Fields are drawn once per slide at level-0 µm/px on a periodic square (``period_px``), turned into
one RGB texture per class and averaged down for coarser pyramid levels, so physical sizes are right at every level and a tile's content
depends only on its position (tiles can be rendered in any order, by any process).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tmln.phantom.geometry import StainSpec

# tissue class codes of the label raster
GLASS, FAT, LYMPH, FOLLICLE, CAPSULE, TUMOUR, CAPSULE_45, CAPSULE_90, CAPSULE_135 = range(9)
# non-node tissue (``SlideSpec.perinodal`` / ``SlideSpec.section``): fibrous septa, vessel walls and loose
# connective tissue; smooth muscle; carcinoma outside any node (a primary tumour, not a deposit)
STROMA, MUSCLE, CARCINOMA = range(9, 12)
CLASS_NAMES = ("glass", "fat", "lymphoid", "follicle", "capsule", "tumour", "capsule-45", "capsule-90", "capsule-135",
               "stroma", "muscle", "carcinoma")
# the label raster's codes of non-node tissue, by the names the layout uses (``SlideLayout.other``)
OTHER_CLASSES = {"stroma": STROMA, "muscle": MUSCLE, "carcinoma": CARCINOMA}
# capsule classes by fibre direction (0, 45, 90, 135 degrees): fibres run along the node outline
CAPSULE_BY_ORIENTATION = (CAPSULE, CAPSULE_45, CAPSULE_90, CAPSULE_135)

# Reference stain OD vectors (unit length; R, G, B), estimated from the Camelyon16 patches
# (see docs/phantoms.md, "Calibration").
REF_H = np.array([0.50, 0.76, 0.41])
REF_E = np.array([0.28, 0.86, 0.43])


def _unit(v):
    v = np.asarray(v, float)
    return v / np.linalg.norm(v)


def _rotate(v, angle):
    """Rotate an OD vector about the grey axis (a hue shift; Rodrigues' formula)."""
    v = _unit(v)
    g = _unit(np.ones(3))
    c, s = math.cos(angle), math.sin(angle)
    r = v * c + np.cross(g, v) * s + g * np.dot(g, v) * (1 - c)
    return _unit(np.clip(r, 0.01, None))


@dataclass
class ClassParams:
    """cH/cE recipe per class (optical density units)."""

    h_base: float
    e_base: float
    h_nuc: float  # haematoxylin added at full nuclear coverage


# per class: base H, base E, nucleus H (used with the class's nucleus field)
PARAMS = {
    GLASS: ClassParams(0.0, 0.0, 0.0),
    FAT: ClassParams(0.0, 0.01, 0.0),
    LYMPH: ClassParams(0.09, 0.17, 0.95),
    FOLLICLE: ClassParams(0.05, 0.16, 0.70),
    CAPSULE: ClassParams(0.04, 0.22, 0.80),
    CAPSULE_45: ClassParams(0.04, 0.22, 0.80),
    CAPSULE_90: ClassParams(0.04, 0.22, 0.80),
    CAPSULE_135: ClassParams(0.04, 0.22, 0.80),
    TUMOUR: ClassParams(0.06, 0.10, 0.55),
    STROMA: ClassParams(0.02, 0.16, 0.60),
    MUSCLE: ClassParams(0.04, 0.34, 0.70),
    CARCINOMA: ClassParams(0.06, 0.10, 0.55),
}


class TextureBank:
    """Per-class RGB textures of one slide on a periodic square, at level 0 and per downsample.

    The raw fields (nuclei, fibres, fat walls, noise) are drawn once at level-0 µm/px, turned into
    one RGB texture per tissue class with the slide's stain, and averaged down (``cv2.INTER_AREA``,
    i.e. what a scanner's coarser level would show) for the other pyramid levels.
    """

    def __init__(self, seed: int, mpp: float, stain=None, period_px: int = 2048, tile: int = 512,
                 variants: int = 4):
        self._frame(mpp, stain, period_px, tile)
        # Raw fields are drawn for one of ``variants`` texture seeds (cached per process: drawing them
        # is the costly part); each slide sees them through its own random offset and its own stain.
        rs = np.random.default_rng(np.random.SeedSequence([int(seed), 0x0FF5]))
        self.seed = int(rs.integers(0, variants))
        self.offset = (int(rs.integers(0, self.period)), int(rs.integers(0, self.period)))
        fields = _cached_fields(self.seed, self.mpp, self.period)
        lut = stain_lut(self.stain)
        self._rgb0 = {cls: class_rgb(cls, fields, self.stain, lut) for cls in range(len(CLASS_NAMES))}
        self._focus()

    def _frame(self, mpp: float, stain, period_px: int, tile: int) -> None:
        """Resolution, stain, texture period and tile size (what every bank, procedural or real, has)."""
        self.mpp = float(mpp)
        self.stain = stain if stain is not None else StainSpec()
        if period_px % 64:
            raise ValueError("period_px must be a multiple of 64 (pyramid downsamples up to 64 stay integral)")
        self.period = int(period_px)
        self.tile = int(tile)
        self._levels: dict[int, dict] = {}

    def _focus(self) -> None:
        """The scanner's focus (``stain.blur_um``): a periodic Gaussian blur of every class texture."""
        blur = getattr(self.stain, "blur_um", 0.0) / self.mpp  # px
        if blur > 0.1:
            import cv2

            for cls, rgb in self._rgb0.items():  # periodic blur: wrap-pad, blur, crop
                pad = int(math.ceil(3 * blur)) + 1
                big = np.pad(rgb, ((pad, pad), (pad, pad), (0, 0)), mode="wrap")
                self._rgb0[cls] = np.ascontiguousarray(cv2.GaussianBlur(big, (0, 0), blur)[pad:-pad, pad:-pad])

    def _all_fields(self) -> dict[str, np.ndarray]:
        fields = self._make_fields()
        rng = self._rng("grain")
        fields["blot_f"] = fields["blot"].astype(np.float32) * np.float32(1 / 255.0) - np.float32(0.5)
        fields["fine_f"] = fields["fine"].astype(np.float32) * np.float32(1 / 255.0)
        fields["dither_f"] = rng.random((self.period, self.period), dtype=np.float32) - np.float32(0.5)
        fields["noise_f"] = rng.random((self.period, self.period), dtype=np.float32) * np.float32(0.012)
        return fields

    # ------------------------------------------------------------------ fields at level 0
    def _rng(self, name: str) -> np.random.Generator:
        key = [self.seed, int.from_bytes(name.encode()[:8].ljust(8, b"\0"), "little") & 0xFFFFFFFF]
        return np.random.default_rng(np.random.SeedSequence(key))

    def _make_fields(self) -> dict[str, np.ndarray]:
        return {
            "lymph": self._nuclei_field("lymph", spacing_um=6.8, radius_um=(2.3, 3.2), fill=0.78, ecc=(0.75, 1.0)),
            "foll": self._nuclei_field("foll", spacing_um=10.0, radius_um=(2.8, 4.2), fill=0.75, ecc=(0.7, 1.0)),
            **self._tumour_fields(),
            "fat": self._fat_field(),
            **self._fibre_fields(),
            "blot": self._smooth_noise("blot", 12.0),
            "fine": self._smooth_noise("fine", 1.2),
            "gap": self._smooth_noise("gap", 2.2),
        }

    def _warp(self, field: np.ndarray, name: str, amp_um: float = 0.8, scale_um: float = 2.5) -> np.ndarray:
        """Displace a periodic field by a smooth periodic random offset (irregular outlines)."""
        import cv2

        P = self.period
        dx = (self._smooth_noise(name + "x", scale_um).astype(np.float32) - 128) / 40 * (amp_um / self.mpp)
        dy = (self._smooth_noise(name + "y", scale_um).astype(np.float32) - 128) / 40 * (amp_um / self.mpp)
        dx += np.arange(P, dtype=np.float32)[None, :]
        dy += np.arange(P, dtype=np.float32)[:, None]
        return cv2.remap(field, dx, dy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)

    def _canvas(self, margin_px: int):
        P = self.period
        return np.zeros((P + 2 * margin_px, P + 2 * margin_px), np.uint8)

    def _wrap_points(self, pts: np.ndarray, margin_px: float) -> tuple[np.ndarray, np.ndarray]:
        """Replicate points near the edges of the periodic square; returns (points, source index)."""
        P = self.period
        out, idx = [pts], [np.arange(len(pts))]
        for dx in (-P, 0, P):
            for dy in (-P, 0, P):
                if dx == 0 and dy == 0:
                    continue
                q = pts + np.array([dx, dy])
                keep = (q[:, 0] > -margin_px) & (q[:, 0] < P + margin_px) & (q[:, 1] > -margin_px) & (q[:, 1] < P + margin_px)
                out.append(q[keep])
                idx.append(np.nonzero(keep)[0])
        return np.concatenate(out), np.concatenate(idx)

    def _fold(self, canvas: np.ndarray, m: int) -> np.ndarray:
        return np.ascontiguousarray(canvas[m:m + self.period, m:m + self.period])

    def _jittered_grid(self, rng, spacing_px: float, jitter: float = 0.45) -> np.ndarray:
        P = self.period
        n = max(1, int(round(P / spacing_px)))
        s = P / n
        gy, gx = np.mgrid[0:n, 0:n]
        pts = np.column_stack([(gx.ravel() + 0.5) * s, (gy.ravel() + 0.5) * s])
        pts += rng.uniform(-jitter, jitter, pts.shape) * s
        return np.mod(pts, P)

    def _nuclei_field(self, name, spacing_um, radius_um, fill, ecc) -> np.ndarray:
        """Coverage (0-255) of round-ish dark nuclei on a jittered grid."""
        import cv2

        rng = self._rng(name)
        mpp = self.mpp
        pts = self._jittered_grid(rng, spacing_um / mpp, 0.42)
        pts = pts[rng.random(len(pts)) < fill]
        n = len(pts)
        ra = rng.uniform(*radius_um, n) / mpp
        rb = ra * rng.uniform(*ecc, n)
        ang = rng.uniform(0, 180, n)
        val = rng.integers(190, 256, n)
        m = int(math.ceil(radius_um[1] / mpp)) + 2
        allp, src = self._wrap_points(pts, m)
        canvas = self._canvas(m)
        S = 4  # fixed-point sub-pixel bits for cv2 drawing
        for (x, y), k in zip(allp, src):
            cv2.ellipse(canvas, (int((x + m) * 16), int((y + m) * 16)), (max(1, int(ra[k] * 16)), max(1, int(rb[k] * 16))),
                        float(ang[k]), 0, 360, int(val[k]), -1, cv2.LINE_AA, S)
        return self._warp(self._fold(canvas, m), name, 0.35, 2.0)

    def _tumour_fields(self) -> dict[str, np.ndarray]:
        """``tnuc``: H amount of vesicular pleomorphic nuclei; ``tcyt``: E amount (0 in lumens).

        Cells (Ø ~17 µm) tile the plane as a Voronoi diagram with pale borders and a cytoplasm
        shade per cell; glandular lumens (Ø 15-50 µm) are punched out of the sheet.
        """
        import cv2

        rng = self._rng("tumour")
        mpp = self.mpp
        P = self.period
        m = int(math.ceil(60 / mpp))
        cells = self._jittered_grid(rng, 17.0 / mpp, 0.35)
        n = len(cells)
        # glands: lumens on a coarser jittered grid; cells inside a lumen are removed
        glands = self._jittered_grid(rng, 95.0 / mpp, 0.3)
        glands = glands[rng.random(len(glands)) < 0.65]
        lum_r = rng.uniform(8, 25, len(glands)) / mpp
        lum_ax = rng.uniform(0.35, 0.9, len(glands))  # lumens: ellipses, slit-like to round
        lum_ang = rng.uniform(0, 180, len(glands))
        keep = np.ones(n, bool)
        for (gx, gy), r in zip(glands, lum_r):
            d = np.hypot(*(np.mod(cells - [gx, gy] + P / 2, P) - P / 2).T)
            keep &= d > r + 3.0 / mpp
        cells = cells[keep]
        n = len(cells)
        # Voronoi cells with pale borders and per-cell cytoplasm shade
        allc, srcc = self._wrap_points(cells, m)
        canvas = np.full((P + 2 * m,) * 2, 255, np.uint8)
        ij = np.clip(np.round(allc + m).astype(int), 0, P + 2 * m - 1)
        canvas[ij[:, 1], ij[:, 0]] = 0
        _, labels = cv2.distanceTransformWithLabels(canvas, cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL)
        # each seed pixel carries its own label: map labels back to cells through the seed pixels
        shade = np.full(int(labels.max()) + 1, 200, np.uint8)
        cell_shade = rng.integers(110, 230, n)
        shade[labels[ij[:, 1], ij[:, 0]]] = cell_shade[srcc]
        cyt = shade[labels]
        edge = np.zeros(labels.shape, bool)
        edge[:, 1:] |= labels[:, 1:] != labels[:, :-1]
        edge[1:, :] |= labels[1:, :] != labels[:-1, :]
        cyt[edge] = (cyt[edge] * 0.55).astype(np.uint8)
        allg, srcg = self._wrap_points(glands, m)
        for (x, y), k in zip(allg, srcg):
            cv2.ellipse(cyt, (int((x + m) * 16), int((y + m) * 16)), (int(lum_r[k] * 16), int(lum_r[k] * lum_ax[k] * 16)),
                        float(lum_ang[k]), 0, 360, 0, -1, cv2.LINE_AA, 4)
        cyt = cv2.GaussianBlur(cyt, (0, 0), 0.6 / mpp)
        # nuclei: large, pleomorphic, vesicular (pale interior, dark rim, 1-2 nucleoli)
        a = rng.uniform(4.8, 7.8, n) / mpp
        b = a * rng.uniform(0.6, 0.95, n)
        ang = rng.uniform(0, 180, n)
        off = rng.normal(0, 1.5 / mpp, (n, 2))
        inner = rng.integers(60, 135, n)
        nuc = self._canvas(m)
        rim = max(1, int(round(0.8 / mpp)))
        rn = max(1, int(round(0.9 / mpp * 16)))
        for (x, y), k in zip(allc, srcc):
            c = (int((x + m + off[k, 0]) * 16), int((y + m + off[k, 1]) * 16))
            axes = (max(1, int(a[k] * 16)), max(1, int(b[k] * 16)))
            cv2.ellipse(nuc, c, axes, float(ang[k]), 0, 360, int(inner[k]), -1, cv2.LINE_AA, 4)
            cv2.ellipse(nuc, c, axes, float(ang[k]), 0, 360, 200, rim, cv2.LINE_AA, 4)
            cv2.circle(nuc, (c[0] + int(0.3 * b[k] * 16 * math.cos(ang[k])), c[1]), rn, 250, -1, cv2.LINE_AA, 4)
        # chromatin granularity inside the nuclei
        grain = cv2.GaussianBlur(rng.integers(0, 255, nuc.shape, dtype=np.uint8), (0, 0), max(0.6, 0.5 / mpp))
        nuc = np.where(nuc > 0, np.clip(nuc.astype(np.int16) + (grain.astype(np.int16) - 128) * 3 // 2, 0, 255), 0)
        return {"tnuc": self._warp(self._fold(nuc.astype(np.uint8), m), "tnuc", 0.6, 5.0),
                "tcyt": self._warp(self._fold(cyt, m), "tcyt", 2.0, 6.0)}

    def _fat_field(self) -> np.ndarray:
        """Thin walls (0-255) between polygonal adipocytes (a periodic Voronoi diagram)."""
        import cv2

        rng = self._rng("fat")
        mpp = self.mpp
        pts = self._jittered_grid(rng, 75 / mpp, 0.4)
        m = int(math.ceil(160 / mpp))
        allp, _ = self._wrap_points(pts, m)
        canvas = np.full((self.period + 2 * m,) * 2, 255, np.uint8)
        ij = np.round(allp + m).astype(int)
        ok = (ij[:, 0] >= 0) & (ij[:, 1] >= 0) & (ij[:, 0] < canvas.shape[1]) & (ij[:, 1] < canvas.shape[0])
        canvas[ij[ok, 1], ij[ok, 0]] = 0
        _, labels = cv2.distanceTransformWithLabels(canvas, cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL)
        edge = np.zeros(labels.shape, bool)
        edge[:, 1:] |= labels[:, 1:] != labels[:, :-1]
        edge[1:, :] |= labels[1:, :] != labels[:-1, :]
        walls = edge.astype(np.uint8) * 255
        k = max(1, int(round(1.2 / mpp)))
        walls = cv2.dilate(walls, np.ones((k, k), np.uint8))
        walls = cv2.GaussianBlur(walls, (0, 0), 0.5 / mpp)
        return self._fold(walls, m)

    def _fibre_fields(self) -> dict[str, np.ndarray]:
        """``fib``: wavy collagen fibres in all directions (E amount); ``fib0``..``fib3`` and
        ``fibnuc0``..``fibnuc3``: fibres and spindle nuclei running at 0/45/90/135 degrees (±20)."""
        out = {"fib": self._fibres("fib", None)}
        for k in range(4):
            out[f"fib{k}"] = self._fibres(f"fib{k}", k * np.pi / 4)
            out[f"fibnuc{k}"] = self._spindles(f"fibnuc{k}", k * 45.0)
        return out

    def _fibres(self, name: str, direction: float | None) -> np.ndarray:
        import cv2

        rng = self._rng(name)
        mpp = self.mpp
        P = self.period
        m = int(math.ceil(130 / mpp))
        n = int((P * mpp) ** 2 / 180)
        pts = rng.uniform(0, P, (n, 2))
        allp, src = self._wrap_points(pts, m)
        length = rng.uniform(20, 120, n) / mpp
        ang = rng.uniform(0, np.pi, n) if direction is None else direction + rng.uniform(-0.35, 0.35, n)
        thick = np.maximum(1, np.round(rng.uniform(0.8, 2.5, n) / mpp)).astype(int)
        val = rng.integers(120, 256, n)
        fib = self._canvas(m)
        for (x, y), k in zip(allp, src):
            dx, dy = 0.5 * length[k] * math.cos(ang[k]), 0.5 * length[k] * math.sin(ang[k])
            p0 = (int((x + m - dx) * 16), int((y + m - dy) * 16))
            p1 = (int((x + m + dx) * 16), int((y + m + dy) * 16))
            cv2.line(fib, p0, p1, int(val[k]), int(thick[k]), cv2.LINE_AA, 4)
        return self._fold(fib, m)

    def _spindles(self, name: str, direction_deg: float) -> np.ndarray:
        import cv2

        rng = self._rng(name)
        mpp = self.mpp
        P = self.period
        m = int(math.ceil(20 / mpp))
        ns = int((P * mpp) ** 2 / 900)
        npts = rng.uniform(0, P, (ns, 2))
        alln, srcn = self._wrap_points(npts, m)
        nang = direction_deg + rng.uniform(-20, 20, ns)
        fn = self._canvas(m)
        for (x, y), k in zip(alln, srcn):
            cv2.ellipse(fn, (int((x + m) * 16), int((y + m) * 16)), (int(6 / mpp * 16), int(1.6 / mpp * 16)),
                        float(nang[k]), 0, 360, 230, -1, cv2.LINE_AA, 4)
        return self._fold(fn, m)

    def _smooth_noise(self, name: str, scale_um: float) -> np.ndarray:
        """Periodic Gaussian-filtered noise (0-255, mean 128, sd 40) with feature size ``scale_um``."""
        import cv2

        rng = self._rng(name)
        P = self.period
        sigma = max(0.5, scale_um / self.mpp)
        f = 1
        while sigma / (2 * f) >= 2 and P % (2 * f) == 0:  # blur coarser where the scale allows
            f *= 2
        n = P // f
        white = rng.standard_normal((n, n)).astype(np.float32)
        pad = min(n, int(math.ceil(4 * sigma / f)) + 1)
        big = np.pad(white, pad, mode="wrap")
        sm = cv2.GaussianBlur(big, (0, 0), sigma / f)[pad: pad + n, pad: pad + n]
        if f > 1:
            big = np.pad(sm, 2, mode="wrap")
            big = cv2.resize(big, ((n + 4) * f, (n + 4) * f), interpolation=cv2.INTER_LINEAR)
            sm = big[2 * f: 2 * f + P, 2 * f: 2 * f + P]
        sm = (sm - sm.mean()) / (sm.std() + 1e-9)
        return np.clip(128 + 40 * sm, 0, 255).astype(np.uint8)

    # ------------------------------------------------------------------ per level
    def level(self, downsample: int) -> dict:
        """Class textures averaged down by ``downsample``, padded by one tile so that any tile window
        is a contiguous slice. Only the last two levels asked for are kept (bounded memory)."""
        import cv2

        ds = int(downsample)
        lv = self._levels.get(ds)
        if lv is None:
            P = self.period
            Pl = max(1, P // ds)
            reps = int(math.ceil((Pl + self.tile) / Pl))
            lv = {"_period": Pl}
            for cls, rgb in self._rgb0.items():
                g = rgb if ds == 1 else cv2.resize(rgb, (Pl, Pl), interpolation=cv2.INTER_AREA)
                lv[cls] = np.ascontiguousarray(np.tile(g, (reps, reps, 1))[: Pl + self.tile, : Pl + self.tile])
            if len(self._levels) >= 2:
                self._levels.pop(next(iter(self._levels)))
            self._levels[ds] = lv
        return lv

    def window(self, downsample: int, cls: int, x0: int, y0: int, w: int, h: int) -> np.ndarray:
        """Class ``cls`` texture at level pixels [y0, y0+h) x [x0, x0+w) (h, w <= tile)."""
        lv = self.level(downsample)
        P = lv["_period"]
        ds = int(downsample)
        ys, xs = (y0 + self.offset[1] // ds) % P, (x0 + self.offset[0] // ds) % P
        return lv[cls][ys: ys + h, xs: xs + w]


_FIELD_CACHE: dict = {}


def _cached_fields(variant: int, mpp: float, period: int) -> dict:
    """Raw texture fields for (variant, mpp, period); the last two are kept per process."""
    key = (variant, round(mpp, 9), period)
    f = _FIELD_CACHE.get(key)
    if f is None:
        bank = TextureBank.__new__(TextureBank)
        bank.seed, bank.mpp, bank.period = variant, mpp, period
        f = bank._all_fields()
        if len(_FIELD_CACHE) >= 2:
            _FIELD_CACHE.pop(next(iter(_FIELD_CACHE)))
        _FIELD_CACHE[key] = f
    return f


def stain_vectors(stain) -> tuple[np.ndarray, np.ndarray]:
    """The slide's H and E OD vectors after its hue variation."""
    return _rotate(REF_H, stain.h_hue), _rotate(REF_E, stain.e_hue)


def od_to_rgb(od: np.ndarray, stain) -> np.ndarray:
    """Optical density (..., 3) -> RGB uint8 under the slide's background, colour cast and gamma."""
    bg = np.float32(stain.background) * np.asarray(stain.cast, np.float32)
    rgb = bg * np.exp(od.astype(np.float32) * np.float32(-math.log(10.0)))
    if stain.gamma != 1.0:
        rgb = 255.0 * np.power(np.clip(rgb, 0, 255) / 255.0, np.float32(stain.gamma))
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)


_QMAX_OD = 4.0  # largest dye amount in the look-up table (OD units)


def stain_lut(stain) -> np.ndarray:
    """(65536, 3) uint8: RGB for dye amounts quantised as q = 255 * sqrt(c / 4) (fine near white),
    indexed by ``qH * 256 + qE``."""
    q = (np.arange(256, dtype=np.float64) / 255.0) ** 2 * _QMAX_OD
    vH, vE = stain_vectors(stain)
    od = (stain.h_scale * q)[:, None, None] * vH + (stain.e_scale * q)[None, :, None] * vE
    return od_to_rgb(od, stain).reshape(-1, 3)


def _quantise(c: np.ndarray, dither: np.ndarray) -> np.ndarray:
    np.clip(c, 0, _QMAX_OD, out=c)
    q = np.sqrt(c * np.float32(1.0 / _QMAX_OD))
    q *= np.float32(255.0)
    q += dither
    return np.clip(q, 0, 255).astype(np.uint16)


def class_rgb(cls: int, F: dict, stain, lut: np.ndarray | None = None) -> np.ndarray:
    """The RGB texture (P, P, 3) of tissue class ``cls`` from the raw fields ``F`` (uint8, P x P;
    ``F["blot"]``, ``F["fine"]`` and ``F["dither"]`` as float32 in [0, 1))."""
    f32 = lambda a: a.astype(np.float32) * np.float32(1.0 / 255.0)  # noqa: E731
    p = PARAMS[cls]
    blot, fine = F["blot_f"], F["fine_f"]  # blot ~ +-0.25 (12 µm blotches), fine in [0, 1] (~1 µm grain)
    cH = np.full(blot.shape, p.h_base, np.float32)
    cE = np.full(blot.shape, p.e_base, np.float32)
    if cls == LYMPH:
        ly = f32(F["lymph"])
        # clear spaces between the cells (retraction, sinusoids): ~15 % of the area
        gap = np.clip((F["gap"].astype(np.float32) - 160.0) * np.float32(1 / 25.0), 0, 1)
        keep = 1.0 - gap * (1.0 - ly)
        cH *= keep
        cE *= keep
        cH += p.h_nuc * ly * (0.8 + 0.35 * fine + 0.3 * blot) + 0.08 * fine * blot  # chromatin texture
        cE += (0.35 * blot * fine - p.e_base * 0.5 * ly + 0.07 * f32(F["fib"])) * keep  # + reticular fibres
    elif cls == FOLLICLE:
        fo = f32(F["foll"])
        cH += p.h_nuc * fo
        cE += 0.1 * blot - p.e_base * 0.5 * fo
    elif cls in CAPSULE_BY_ORIENTATION:
        k = CAPSULE_BY_ORIENTATION.index(cls)
        cH += p.h_nuc * f32(F[f"fibnuc{k}"])
        cE += 0.45 * f32(F[f"fib{k}"]) + 0.1 * blot
    elif cls == FAT:
        wall = f32(F["fat"])
        cE += 0.40 * wall
        cH += 0.06 * wall
    elif cls in (STROMA, MUSCLE):  # wavy collagen / parallel smooth-muscle fibres with spindle nuclei
        k = 0 if cls == STROMA else 2
        cH += p.h_nuc * f32(F[f"fibnuc{k}"]) * (0.5 if cls == STROMA else 1.0)
        cE += (0.35 if cls == STROMA else 0.25) * f32(F[f"fib{k}"]) + 0.1 * blot
    elif cls in (TUMOUR, CARCINOMA):
        cyt = f32(F["tcyt"])
        tn = f32(F["tnuc"])
        # a sparse lymphocytic infiltrate in patches (~25 % of the area), between the tumour nuclei
        infil = np.clip((blot - 0.08) * 6.0, 0, 1) * (tn == 0) * f32(F["lymph"])
        cH += p.h_base * (cyt - 1.0) + p.h_nuc * tn + PARAMS[LYMPH].h_nuc * infil
        cE += 0.36 * cyt * (0.7 + 0.6 * fine + 0.4 * blot) - 0.08
    # scanner noise: a small random dye amount on top (also dithers the quantisation)
    cE += F["noise_f"]
    lut = stain_lut(stain) if lut is None else lut
    idx = _quantise(cH, F["dither_f"]) << 8
    idx |= _quantise(cE, F["dither_f"])
    return lut[idx]


def compose(lab: np.ndarray, bank: TextureBank, ds: int, x0: int, y0: int, ink=None) -> np.ndarray:
    """RGB uint8 tile from a class raster ``lab`` (level px; top-left at level px x0, y0).

    ink : optional (h, w, 3) float32 optical density of pen marks, laid over the tissue.
    """
    h, w = lab.shape
    counts = np.bincount(lab.ravel(), minlength=len(CLASS_NAMES))
    order = np.argsort(-counts)
    import cv2

    out = bank.window(ds, int(order[0]), x0, y0, w, h).copy()
    for cls in order[1:]:
        if counts[cls] == 0:
            break
        m = (lab == cls).view(np.uint8)
        cv2.copyTo(bank.window(ds, int(cls), x0, y0, w, h), m, out)
    if ink is not None:
        out = np.clip(out.astype(np.float32) * np.exp(ink * np.float32(-math.log(10.0))) + 0.5, 0, 255).astype(np.uint8)
    return out
