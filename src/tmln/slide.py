"""Whole-slide access at physical resolution.

``Slide`` opens every format OpenSlide opens and reads RGB uint8 pixels at a requested µm/px,
choosing the best pyramid level and resampling where no level matches exactly.

Coordinates are level-0 pixels unless ``units="um"`` is given. µm/px (mpp) comes from, in order:
an explicit override, OpenSlide's ``openslide.mpp-x/-y``, the TIFF resolution tags.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from tmln.errors import MissingMppError, SlideError
from tmln.imaging import _affine_sample, iter_blocks, resize_rgb, rgba_to_rgb_white
from tmln.tiff_tiles import TiffTiles

# A level is "close enough" to the requested downsample when within this relative tolerance;
# the level is then read without an extra resampling step.
_LEVEL_TOLERANCE = 1e-3
_TIFF_UNIT_UM = {"centimeter": 1e4, "inch": 25400.0, "3": 1e4, "2": 25400.0}


def _import_openslide():
    try:
        import openslide  # openslide-python finds the library shipped by openslide-bin
    except Exception as exc:  # pragma: no cover - install problem
        raise SlideError(f"OpenSlide is not usable ({exc}); install openslide-python and openslide-bin") from exc
    return openslide


class Slide:
    """One whole-slide image.

    Parameters
    ----------
    path : slide file (any OpenSlide format).
    mpp : optional µm/px override at level 0 (a float, or an (x, y) pair). Takes precedence over
        everything in the file.
    direct : decode the tiles of plain tiled TIFFs (generic TIFF, Aperio SVS) with tifffile, each
        level checked against OpenSlide's pixels on first use (``tmln.tiff_tiles``); ``False``
        reads everything through OpenSlide.
    """

    def __init__(self, path: str | os.PathLike, mpp: float | tuple[float, float] | None = None,
                 direct: bool = True):
        self.path = Path(path)
        if not self.path.exists():
            raise SlideError("no such file", self.path)
        if self.path.is_dir():
            raise SlideError("is a directory, not a slide file", self.path)
        if not os.access(self.path, os.R_OK):
            raise SlideError("file is not readable (permission denied)", self.path)
        openslide = _import_openslide()
        try:
            self._osr = openslide.OpenSlide(str(self.path))
        except openslide.OpenSlideUnsupportedFormatError:
            raise SlideError("not a slide format that OpenSlide can open", self.path) from None
        except Exception as exc:
            raise SlideError(f"cannot open slide ({exc})", self.path) from None
        self.properties = dict(self._osr.properties)
        self.mpp_x, self.mpp_y, self.mpp_source = self._find_mpp(mpp)
        self._direct = direct
        self._tiles = None
        self._record_gaps = False
        self.gaps: dict[tuple[int, int, int, int], str] = {}  # (x0, y0, x1, y1) level-0 px -> reason
        if direct:
            self._tiles = TiffTiles.open(self.path, self._osr, self.vendor)

    # ------------------------------------------------------------------ unreadable tiles
    @property
    def record_gaps(self) -> bool:
        """When True, a tile that cannot be decoded does not fail a read: its pixels are white and
        its rectangle (level-0 px) is recorded in ``gaps`` (see ``gap_geometry``)."""
        return self._record_gaps

    @record_gaps.setter
    def record_gaps(self, on: bool) -> None:
        self._record_gaps = bool(on)
        if self._tiles is not None:
            self._tiles.on_bad_tile = self._bad_tile if on else None

    def _bad_tile(self, level: int, x: int, y: int, w: int, h: int, exc) -> None:
        """Record the tile at level px (x, y, w, h) of ``level`` as a gap in level-0 px."""
        ds = self.level_downsamples[level]
        W, H = self.dimensions
        box = (int(math.floor(x * ds)), int(math.floor(y * ds)), min(W, int(math.ceil((x + w) * ds))),
               min(H, int(math.ceil((y + h) * ds))))
        self.gaps.setdefault(box, f"{type(exc).__name__}: {exc}".strip())

    def gap_geometry(self):
        """Union of the unreadable tiles met so far (shapely geometry, level-0 px; empty when none)."""
        from shapely.geometry import Polygon, box
        from shapely.ops import unary_union

        return unary_union([box(*b) for b in self.gaps]) if self.gaps else Polygon()

    def _reopen(self) -> None:
        self._osr = _import_openslide().OpenSlide(str(self.path))
        if self._tiles is not None:
            self._tiles._osr = self._osr

    def _read_level_tilewise(self, location, level: int, w: int, h: int) -> np.ndarray:
        """OpenSlide read of a region tile by tile (the level's tile grid), unreadable tiles white and
        recorded in ``gaps``. OpenSlide refuses every call after an error, so it is reopened."""
        self._reopen()
        p = self.properties
        tw = int(p.get(f"openslide.level[{level}].tile-width", 256) or 256)
        th = int(p.get(f"openslide.level[{level}].tile-height", 256) or 256)
        ds = self.level_downsamples[level]
        lw, lh = self.level_dimensions[level]
        lx, ly = int(round(location[0] / ds)), int(round(location[1] / ds))
        out = np.full((h, w, 3), 255, np.uint8)
        for ty in range(max(ly, 0) // th, max(min(ly + h, lh) - 1, 0) // th + 1):
            for tx in range(max(lx, 0) // tw, max(min(lx + w, lw) - 1, 0) // tw + 1):
                cw, ch = min(tw, lw - tx * tw), min(th, lh - ty * th)
                if cw <= 0 or ch <= 0:
                    continue
                try:
                    cell = rgba_to_rgb_white(np.asarray(self._osr.read_region(
                        (int(round(tx * tw * ds)), int(round(ty * th * ds))), level, (cw, ch))))
                except Exception as exc:
                    self._reopen()
                    self._bad_tile(level, tx * tw, ty * th, cw, ch, exc)
                    continue
                gx0, gy0 = max(lx, tx * tw), max(ly, ty * th)
                gx1, gy1 = min(lx + w, tx * tw + cw), min(ly + h, ty * th + ch)
                if gx1 > gx0 and gy1 > gy0:
                    out[gy0 - ly:gy1 - ly, gx0 - lx:gx1 - lx] = cell[gy0 - ty * th:gy1 - ty * th,
                                                                    gx0 - tx * tw:gx1 - tx * tw]
        return out

    # ------------------------------------------------------------------ metadata
    def _find_mpp(self, override):
        if override is not None:
            mx, my = (override, override) if np.isscalar(override) else override
            mx, my = float(mx), float(my)
            if not (mx > 0 and my > 0 and math.isfinite(mx) and math.isfinite(my)):
                raise SlideError(f"mpp override must be a positive number, got {override!r}", self.path)
            return mx, my, "override"
        p = self.properties
        try:
            mx, my = float(p["openslide.mpp-x"]), float(p["openslide.mpp-y"])
            if mx > 0 and my > 0:
                return mx, my, "openslide"
        except (KeyError, ValueError):
            pass
        tiff = self._mpp_from_tiff_tags()
        if tiff is not None:
            return tiff[0], tiff[1], "tiff"
        return None, None, None

    def _mpp_from_tiff_tags(self):
        p = self.properties
        unit = str(p.get("tiff.ResolutionUnit", "")).lower()
        if unit in _TIFF_UNIT_UM and "tiff.XResolution" in p and "tiff.YResolution" in p:
            try:
                xr, yr = float(p["tiff.XResolution"]), float(p["tiff.YResolution"])
                if xr > 0 and yr > 0:
                    return _TIFF_UNIT_UM[unit] / xr, _TIFF_UNIT_UM[unit] / yr
            except ValueError:
                pass
        try:  # OpenSlide may not expose the tags (e.g. for some vendors): ask tifffile directly
            import tifffile

            with tifffile.TiffFile(self.path) as tf:
                page = tf.pages[0]
                tags = page.tags
                if "XResolution" not in tags or "ResolutionUnit" not in tags:
                    return None
                unit = int(tags["ResolutionUnit"].value)
                if unit not in (2, 3):
                    return None
                scale = 25400.0 if unit == 2 else 1e4
                xn, xd = tags["XResolution"].value
                yn, yd = tags["YResolution"].value
                if xn > 0 and yn > 0 and xd > 0 and yd > 0:
                    return scale * xd / xn, scale * yd / yn
        except Exception:
            return None
        return None

    @property
    def has_mpp(self) -> bool:
        return self.mpp_x is not None

    @property
    def mpp(self) -> float:
        """µm/px at level 0 (mean of x and y). Raises ``MissingMppError`` when unknown."""
        if self.mpp_x is None:
            raise MissingMppError(self.path)
        return 0.5 * (self.mpp_x + self.mpp_y)

    @property
    def dimensions(self) -> tuple[int, int]:
        """(width, height) of level 0 in pixels."""
        return tuple(self._osr.dimensions)

    @property
    def width(self) -> int:
        return self.dimensions[0]

    @property
    def height(self) -> int:
        return self.dimensions[1]

    @property
    def level_count(self) -> int:
        return self._osr.level_count

    @property
    def level_dimensions(self) -> list[tuple[int, int]]:
        return [tuple(d) for d in self._osr.level_dimensions]

    @property
    def level_downsamples(self) -> list[float]:
        return [float(d) for d in self._osr.level_downsamples]

    @property
    def vendor(self) -> str | None:
        return self.properties.get("openslide.vendor")

    @property
    def objective_power(self) -> float | None:
        v = self.properties.get("openslide.objective-power")
        try:
            return float(v) if v is not None else None
        except ValueError:
            return None

    @property
    def size_um(self) -> tuple[float, float]:
        """(width, height) in µm."""
        return self.width * self.mpp_x_required, self.height * self.mpp_y_required

    @property
    def mpp_x_required(self) -> float:
        if self.mpp_x is None:
            raise MissingMppError(self.path)
        return self.mpp_x

    @property
    def mpp_y_required(self) -> float:
        if self.mpp_y is None:
            raise MissingMppError(self.path)
        return self.mpp_y

    def info(self) -> dict:
        """The JSON-able description printed by ``tmln info``."""
        return {
            "path": str(self.path),
            "vendor": self.vendor,
            "width": self.width,
            "height": self.height,
            "level_count": self.level_count,
            "level_dimensions": [list(d) for d in self.level_dimensions],
            "level_downsamples": self.level_downsamples,
            "mpp_x": self.mpp_x,
            "mpp_y": self.mpp_y,
            "mpp_source": self.mpp_source,
            "objective_power": self.objective_power,
            "readers": [self.reader(level) for level in range(self.level_count)],
        }

    # ------------------------------------------------------------------ reading
    def best_level(self, downsample: float) -> int:
        """The coarsest level whose downsample does not exceed ``downsample`` (so we never upsample
        from a coarser level than needed)."""
        best = 0
        for i, d in enumerate(self.level_downsamples):
            if d <= downsample * (1 + _LEVEL_TOLERANCE):
                best = i
        return best

    def read_level(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        """Raw read at a pyramid level: ``location`` level-0 px, ``size`` (w, h) level px -> RGB uint8.

        Transparent pixels (outside the scanned area) become white.
        """
        w, h = int(size[0]), int(size[1])
        if w <= 0 or h <= 0:
            raise ValueError(f"size must be positive, got {size}")
        try:
            if self._tiles is not None:
                out = self._tiles.read((int(location[0]), int(location[1])), int(level), (w, h))
                if out is not None:
                    return out
            region = self._osr.read_region((int(location[0]), int(location[1])), int(level), (w, h))
        except Exception as exc:
            if self._record_gaps:
                return self._read_level_tilewise(location, int(level), w, h)
            raise SlideError(f"cannot read region at {tuple(location)} level {level} ({exc})", self.path) from None
        rgba = np.asarray(region)
        return rgba_to_rgb_white(rgba)

    def reader(self, level: int = 0) -> str:
        """Which decoder reads ``level``: ``"tifffile"`` (direct tiles) or ``"openslide"``."""
        return "tifffile" if self._tiles is not None and self._tiles.direct(level) else "openslide"

    def read(
        self,
        location: tuple[float, float],
        size: tuple[int, int],
        mpp: float | None = None,
        units: str = "px",
    ) -> np.ndarray:
        """Read a region at a requested µm/px.

        location : top-left corner, level-0 pixels (``units="px"``) or µm (``units="um"``).
        size : (width, height) of the output in pixels at ``mpp``.
        mpp : output µm/px; ``None`` means level 0 (no resampling).
        Returns an (h, w, 3) uint8 RGB array.
        """
        x, y = location
        if units == "um":
            x, y = x / self.mpp_x_required, y / self.mpp_y_required
        elif units != "px":
            raise ValueError(f"units must be 'px' or 'um', got {units!r}")
        w, h = int(size[0]), int(size[1])
        if mpp is None:
            return self.read_level((round(x), round(y)), 0, (w, h))
        fx = mpp / self.mpp_x_required  # level-0 px per output px
        fy = mpp / self.mpp_y_required
        level = self.best_level(min(fx, fy))
        ds = self.level_downsamples[level]
        sx, sy = fx / ds, fy / ds  # level px per output px
        lx, ly = x / ds, y / ds  # top-left in level px (fractional)
        ix, iy = int(math.floor(lx + 1e-9)), int(math.floor(ly + 1e-9))
        exact = (abs(lx - ix) < 1e-6 and abs(ly - iy) < 1e-6
                 and abs(sx - round(sx)) < 1e-6 and abs(sy - round(sy)) < 1e-6)
        if exact:  # integral offset and factor: area averaging of whole level pixels
            lw, lh = max(1, w * round(sx)), max(1, h * round(sy))
            raw = self.read_level((round(ix * ds), round(iy * ds)), level, (lw, lh))
            return raw if (lw, lh) == (w, h) else resize_rgb(raw, (w, h))
        # general case: read the covering window, shrink it by the integral part k of the factor
        # with area averaging on a k-grid anchored at the level origin (so that neighbouring reads
        # agree), then map output pixel centres exactly (affine, bilinear)
        k = max(1, int(math.floor(min(sx, sy) + 1e-9)))
        ix, iy = ix // k * k, iy // k * k
        lw = -(-(int(math.ceil(lx + w * sx - 1e-9)) + 1 - ix) // k) * k
        lh = -(-(int(math.ceil(ly + h * sy - 1e-9)) + 1 - iy) // k) * k
        raw = self.read_level((round(ix * ds), round(iy * ds)), level, (lw, lh))
        if k > 1:
            raw = resize_rgb(raw, (lw // k, lh // k))
        return _affine_sample(raw, (sx / k, sy / k), ((lx - ix) / k, (ly - iy) / k), (w, h))

    def thumbnail(self, mpp: float, block: int = 1024) -> np.ndarray:
        """The whole slide at ``mpp`` µm/px, read block by block (never a whole level at once)."""
        w = max(1, int(round(self.width * self.mpp_x_required / mpp)))
        h = max(1, int(round(self.height * self.mpp_y_required / mpp)))
        out = np.empty((h, w, 3), np.uint8)
        for oy, ox, bh, bw in iter_blocks((h, w), block):
            loc = (ox * mpp / self.mpp_x_required, oy * mpp / self.mpp_y_required)
            out[oy : oy + bh, ox : ox + bw] = self.read(loc, (bw, bh), mpp=mpp)
        return out

    def verify(self) -> None:
        """Read the smallest level whole and a few level-0 tiles; raise ``SlideError`` on a bad tile."""
        top = self.level_count - 1
        self.read_level((0, 0), top, self.level_dimensions[top])
        w, h = self.dimensions
        t = 256
        for fx, fy in ((0, 0), (0.5, 0.5), (1, 1), (1, 0), (0, 1)):
            x = int(max(0, min(w - t, fx * (w - t))))
            y = int(max(0, min(h - t, fy * (h - t))))
            self.read_level((x, y), 0, (min(t, w), min(t, h)))

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        if getattr(self, "_tiles", None) is not None:
            self._tiles.close()
            self._tiles = None
        if getattr(self, "_osr", None) is not None:
            self._osr.close()
            self._osr = None

    def __enter__(self) -> "Slide":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        mpp = f"{self.mpp_x:.4g}" if self.mpp_x else "unknown"
        return f"Slide({str(self.path)!r}, {self.width}x{self.height} px, mpp={mpp})"

    # pickling (Dask, DataLoader workers): reopen by path
    def __getstate__(self):
        return {"path": str(self.path), "mpp": (self.mpp_x, self.mpp_y) if self.mpp_source == "override" else None,
                "direct": self._direct}

    def __setstate__(self, state):
        self.__init__(state["path"], mpp=state["mpp"], direct=state.get("direct", True))
