"""Render any tile of a phantom slide at any pyramid downsample (a pure function of position)."""

from __future__ import annotations

import numpy as np

from tmln.phantom.geometry import SlideLayout
from tmln.regions import polygon_parts
from tmln.phantom.real_texture import RealTextureBank
from tmln.phantom.texture import (
    CAPSULE_BY_ORIENTATION, FAT, FOLLICLE, GLASS, LYMPH, OTHER_CLASSES, TUMOUR, TextureBank, compose,
)

_SHIFT = 3  # cv2 fixed-point bits (1/8 px)


class SlideRenderer:
    """Tiles of ``layout`` at level downsample ``ds``: ``tile(ds, x0, y0, w, h)`` -> (h, w, 3) uint8.

    x0, y0 are level pixels; level pixel j covers level-0 pixels [j*ds, (j+1)*ds).
    """

    def __init__(self, layout: SlideLayout, tile: int = 512, period_px: int = 2048):
        self.layout = layout
        spec = layout.spec
        if spec.textures:
            self.bank = RealTextureBank(spec.textures, spec.seed, layout.mpp, layout.stain, patch_mpp=spec.textures_mpp,
                                        period_px=period_px, tile=tile)
        else:
            self.bank = TextureBank(spec.seed, layout.mpp, layout.stain, period_px=period_px, tile=tile)
        # (class, polygon, bounds) in drawing order: later classes paint over earlier ones
        items = []
        for p in polygon_parts(layout.fat):
            items.append((FAT, p))
        for kind, g in layout.other:
            items += [(OTHER_CLASSES[kind], p) for p in polygon_parts(g)]
        for p in layout.nodes:
            items.append((LYMPH, p))
        for p in layout.follicles:
            items.append((FOLLICLE, p))
        for g in layout.node_fat:
            items += [(FAT, p) for p in polygon_parts(g)]
        self._items = [(c, p, p.bounds) for c, p in items]
        self._caps = [(p, p.bounds, cap / layout.mpp) for p, cap in zip(layout.nodes, layout.capsule_um)]
        # a node the slide's edge cuts has no capsule along that edge (the section ends there)
        self._open_sides = {k: self._on_slide_edge(layout.nodes[k], layout.width, layout.height)
                            for k in layout.edge_cut}
        self._tumour = [(p, p.bounds) for p in layout.tumour]
        self._pen = [(s, (s.points[:, 0].min() - s.width_px, s.points[:, 1].min() - s.width_px,
                          s.points[:, 0].max() + s.width_px, s.points[:, 1].max() + s.width_px)) for s in layout.pen]
        self._artefacts = {k: [(p, p.bounds) for kk, g in layout.artefacts if kk == k for p in polygon_parts(g)]
                           for k in ("tear", "fold", "bubble")}

    @staticmethod
    def _on_slide_edge(poly, width: int, height: int, tol: float = 0.5) -> np.ndarray:
        """Per segment of ``poly``'s outline: True where it runs along the slide's edge."""
        a = np.asarray(poly.exterior.coords, np.float64)[:, :2]
        p, q = a[:-1], a[1:]
        along = lambda v, lim: (np.abs(p[:, v] - lim) <= tol) & (np.abs(q[:, v] - lim) <= tol)  # noqa: E731
        return along(0, 0.0) | along(0, float(width)) | along(1, 0.0) | along(1, float(height))

    @staticmethod
    def _hits(bounds, x0, y0, x1, y1) -> bool:
        return not (bounds[2] < x0 or bounds[0] > x1 or bounds[3] < y0 or bounds[1] > y1)

    @staticmethod
    def _ring(coords, ds, x0, y0):
        a = np.asarray(coords, np.float64)[:, :2]
        a = (a / ds - 0.5 - np.array([x0, y0])) * (1 << _SHIFT)
        return np.round(a).astype(np.int32)

    def _fill(self, mask, poly, ds, x0, y0, value=1):
        import cv2

        cv2.fillPoly(mask, [self._ring(poly.exterior.coords, ds, x0, y0)], value, cv2.LINE_8, _SHIFT)
        if poly.interiors:
            cv2.fillPoly(mask, [self._ring(r.coords, ds, x0, y0) for r in poly.interiors], 0, cv2.LINE_8, _SHIFT)

    def labels(self, ds: int, x0: int, y0: int, w: int, h: int) -> np.ndarray:
        """Class raster (uint8, see ``texture`` class codes) of the tile."""
        import cv2

        lab = np.zeros((h, w), np.uint8)
        X0, Y0, X1, Y1 = x0 * ds, y0 * ds, (x0 + w) * ds, (y0 + h) * ds
        tmp = np.zeros((h, w), np.uint8)
        for cls, poly, b in self._items:
            if self._hits(b, X0, Y0, X1, Y1):
                tmp[:] = 0
                self._fill(tmp, poly, ds, x0, y0)
                lab[tmp > 0] = cls
        caps = [(k, *c) for k, c in enumerate(self._caps) if self._hits(c[1], X0 - c[2], Y0 - c[2], X1 + c[2], Y1 + c[2])]
        if caps:
            # capsule band along each outline; each segment drawn with its direction (0/45/90/135
            # degrees) so that the capsule fibres run along the node
            band = np.zeros((h, w), np.uint8)
            for k, poly, _, cap_px in caps:
                thick = max(1, int(round(2 * cap_px / ds)))
                ring = self._ring(poly.exterior.coords, ds, x0, y0)
                d = np.diff(ring, axis=0).astype(np.float64)
                octant = (np.round(np.degrees(np.arctan2(d[:, 1], d[:, 0])) / 45.0).astype(int) % 4) + 1
                if k in self._open_sides:
                    octant[self._open_sides[k]] = 0  # no capsule along the slide's edge
                margin = (thick + 2) << _SHIFT
                lo, hi = -margin, ((max(w, h) + 2) << _SHIFT) + margin
                for (p, q), o in zip(zip(ring[:-1], ring[1:]), octant):
                    if o == 0 or max(p[0], q[0]) < lo or min(p[0], q[0]) > hi or max(p[1], q[1]) < lo or min(p[1], q[1]) > hi:
                        continue
                    cv2.line(band, (int(p[0]), int(p[1])), (int(q[0]), int(q[1])), int(o), thick, cv2.LINE_8, _SHIFT)
            sel = (band > 0) & (lab >= LYMPH)
            lab[sel] = np.asarray(CAPSULE_BY_ORIENTATION, np.uint8)[band[sel] - 1]
        for poly, b in self._tumour:
            if self._hits(b, X0, Y0, X1, Y1):
                tmp[:] = 0
                self._fill(tmp, poly, ds, x0, y0)
                lab[tmp > 0] = TUMOUR
        tear = self._mask(self._artefacts["tear"], ds, x0, y0, w, h)
        if tear is not None:  # cracks show the glass, over any tissue
            lab[tear > 0] = GLASS
        return lab

    def _mask(self, items, ds, x0, y0, w, h) -> np.ndarray | None:
        """The union of ``items`` ((polygon, bounds) pairs) on the tile as uint8, or None where none hits."""
        X0, Y0, X1, Y1 = x0 * ds, y0 * ds, (x0 + w) * ds, (y0 + h) * ds
        out = None
        for poly, b in items:
            if self._hits(b, X0, Y0, X1, Y1):
                out = np.zeros((h, w), np.uint8) if out is None else out
                self._fill(out, poly, ds, x0, y0)
        return out

    def _shading(self, ds, x0, y0, w, h) -> np.ndarray | None:
        """Uneven illumination: a smooth grey optical density (h, w, 1) float32, or None."""
        if not self.layout.shading or self.layout.shading[0] <= 0:
            return None
        amp, lx, ly, phase = self.layout.shading
        xs = (np.arange(w, dtype=np.float32) + x0 + 0.5) * ds
        ys = (np.arange(h, dtype=np.float32) + y0 + 0.5) * ds
        f = 0.5 + 0.5 * np.cos(2 * np.pi * (xs[None, :] / lx + ys[:, None] / ly) + phase)
        return (np.float32(amp) * f.astype(np.float32))[..., None]

    def ink(self, ds: int, x0: int, y0: int, w: int, h: int):
        """Pen-mark optical density (h, w, 3) float32, or None."""
        import cv2

        X0, Y0, X1, Y1 = x0 * ds, y0 * ds, (x0 + w) * ds, (y0 + h) * ds
        out = None
        for s, b in self._pen:
            if not self._hits(b, X0, Y0, X1, Y1):
                continue
            m = np.zeros((h, w), np.uint8)
            cv2.polylines(m, [self._ring(s.points, ds, x0, y0)], False, 255, max(1, int(round(s.width_px / ds))),
                          cv2.LINE_AA, _SHIFT)
            if out is None:
                out = np.zeros((h, w, 3), np.float32)
            out += (m.astype(np.float32) / 255.0)[..., None] * np.asarray(s.od, np.float32)
        return out

    def tile(self, ds: int, x0: int, y0: int, w: int, h: int) -> np.ndarray:
        lab = self.labels(ds, x0, y0, w, h)
        ink = self.ink(ds, x0, y0, w, h)
        if self.layout.artefacts or self.layout.shading:
            extra = np.zeros((h, w, 3), np.float32)
            rim = self._mask(self._artefacts["bubble"], ds, x0, y0, w, h)
            if rim is not None:  # a bubble's edge: a thin grey line
                extra += rim[..., None].astype(np.float32) * np.float32(0.35)
            shade = self._shading(ds, x0, y0, w, h)
            if shade is not None:
                extra += shade
            ink = extra if ink is None else ink + extra
        out = compose(lab, self.bank, ds, x0, y0, ink)
        fold = self._mask(self._artefacts["fold"], ds, x0, y0, w, h)
        if fold is not None:  # tissue folded over itself: its optical density doubled
            f = fold.astype(bool) & (lab != GLASS)
            v = out[f].astype(np.float32)
            out[f] = np.clip(v * v / 245.0 + 0.5, 0, 255).astype(np.uint8)
        return out

    def region(self, ds: int, x0: int, y0: int, w: int, h: int) -> np.ndarray:
        """A region of any size (assembled from tile-sized pieces)."""
        T = self.bank.tile
        out = np.empty((h, w, 3), np.uint8)
        for ty in range(0, h, T):
            for tx in range(0, w, T):
                th, tw = min(T, h - ty), min(T, w - tx)
                out[ty:ty + th, tx:tx + tw] = self.tile(ds, x0 + tx, y0 + ty, tw, th)
        return out
