"""Deep Zoom (DZI) tiles of a slide, read through ``tmln.slide.Slide``.

Deep Zoom level ``L`` of ``max_level + 1`` levels (``max_level = ceil(log2(max(W, H)))``) is the slide
downsampled by ``d = 2 ** (max_level - L)``: level ``max_level`` is level 0 of the slide, level 0 a single
pixel. A tile ``(col, row)`` of level ``L`` covers level-L pixels ``[col * T - o, (col + 1) * T + o)``
(``T`` tile size, ``o`` overlap; clipped at the level's edges), the usual DZI layout that
OpenSeadragon reads. Each tile is read from the coarsest slide level whose downsample does not exceed
``d`` (so never upsampled) and shrunk with area averaging.

Tiles are encoded once and kept in a byte-bounded LRU cache (``cache_bytes``), so panning over a whole
slide keeps memory flat.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict

import numpy as np

TILE_SIZE = 254
OVERLAP = 1
FORMATS = {"jpeg": "image/jpeg", "jpg": "image/jpeg", "png": "image/png"}
CACHE_BYTES = 48 << 20


class TileRequestError(ValueError):
    """A tile request that names no tile of this slide (level, column or row out of range, bad format)."""


class DeepZoom:
    """DZI geometry and tile rendering for one open ``Slide``."""

    def __init__(self, slide, tile_size: int = TILE_SIZE, overlap: int = OVERLAP, quality: int = 80,
                 cache_bytes: int = CACHE_BYTES):
        self.slide = slide
        self.tile_size = int(tile_size)
        self.overlap = int(overlap)
        self.quality = int(quality)
        self.width, self.height = (int(v) for v in slide.dimensions)
        self.max_level = int(math.ceil(math.log2(max(self.width, self.height, 1))))
        self._cache: OrderedDict = OrderedDict()
        self._cache_bytes = 0
        self._cache_limit = int(cache_bytes)
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ geometry
    @property
    def level_count(self) -> int:
        return self.max_level + 1

    def downsample(self, level: int) -> int:
        return 1 << (self.max_level - level)

    def level_size(self, level: int) -> tuple[int, int]:
        d = self.downsample(level)
        return max(1, -(-self.width // d)), max(1, -(-self.height // d))

    def tile_grid(self, level: int) -> tuple[int, int]:
        w, h = self.level_size(level)
        return -(-w // self.tile_size), -(-h // self.tile_size)

    def dzi_xml(self, fmt: str = "jpeg") -> str:
        return ('<?xml version="1.0" encoding="UTF-8"?>\n'
                f'<Image xmlns="http://schemas.microsoft.com/deepzoom/2008" Format="{fmt}" '
                f'Overlap="{self.overlap}" TileSize="{self.tile_size}">'
                f'<Size Width="{self.width}" Height="{self.height}"/></Image>\n')

    def tile_box(self, level: int, col: int, row: int) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) of the tile in level px; ``TileRequestError`` when there is no such tile."""
        if not (0 <= level <= self.max_level):
            raise TileRequestError(f"level {level} out of range 0..{self.max_level}")
        cols, rows = self.tile_grid(level)
        if not (0 <= col < cols and 0 <= row < rows):
            raise TileRequestError(f"tile {col}_{row} out of range for level {level} ({cols} x {rows} tiles)")
        w, h = self.level_size(level)
        t, o = self.tile_size, self.overlap
        x0, y0 = max(0, col * t - o), max(0, row * t - o)
        x1, y1 = min(w, (col + 1) * t + o), min(h, (row + 1) * t + o)
        return x0, y0, x1, y1

    # ------------------------------------------------------------------ pixels
    def tile_rgb(self, level: int, col: int, row: int) -> np.ndarray:
        """The tile's pixels (h, w, 3) uint8."""
        import cv2

        x0, y0, x1, y1 = self.tile_box(level, col, row)
        d = self.downsample(level)
        k = self.slide.best_level(d)
        ds = self.slide.level_downsamples[k]
        # the tile's level-0 window, in slide level-k px (whole pixels covering it)
        lx0, ly0 = int(math.floor(x0 * d / ds + 1e-9)), int(math.floor(y0 * d / ds + 1e-9))
        lx1, ly1 = int(math.ceil(x1 * d / ds - 1e-9)), int(math.ceil(y1 * d / ds - 1e-9))
        lw, lh = max(1, lx1 - lx0), max(1, ly1 - ly0)
        raw = self.slide.read_level((int(round(lx0 * ds)), int(round(ly0 * ds))), k, (lw, lh))
        out_w, out_h = x1 - x0, y1 - y0
        if (lw, lh) != (out_w, out_h):
            raw = cv2.resize(raw, (out_w, out_h), interpolation=cv2.INTER_AREA)
        return np.ascontiguousarray(raw)

    def tile(self, level: int, col: int, row: int, fmt: str = "jpeg") -> bytes:
        """Encoded tile bytes (cached)."""
        if fmt not in FORMATS:
            raise TileRequestError(f"unknown tile format {fmt!r} (jpeg or png)")
        fmt = "jpeg" if fmt == "jpg" else fmt
        key = (level, col, row, fmt)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        data = encode(self.tile_rgb(level, col, row), fmt, self.quality)
        with self._lock:
            if key not in self._cache:
                self._cache[key] = data
                self._cache_bytes += len(data)
                while self._cache_bytes > self._cache_limit and len(self._cache) > 1:
                    _, old = self._cache.popitem(last=False)
                    self._cache_bytes -= len(old)
        return data


def encode(rgb: np.ndarray, fmt: str = "jpeg", quality: int = 80) -> bytes:
    import cv2

    bgr = np.ascontiguousarray(rgb[..., ::-1])
    if fmt == "png":
        ok, buf = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    else:
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:  # pragma: no cover
        raise RuntimeError("tile encoding failed")
    return buf.tobytes()


def unreadable_tile(w: int, h: int) -> bytes:
    """A grey tile crossed in magenta (the overlay's mark for tiles that could not be decoded)."""
    import cv2

    img = np.full((max(1, h), max(1, w), 3), 200, np.uint8)
    cv2.line(img, (0, 0), (w - 1, h - 1), (255, 0, 255), 2)
    cv2.line(img, (0, h - 1), (w - 1, 0), (255, 0, 255), 2)
    return encode(img, "jpeg")
