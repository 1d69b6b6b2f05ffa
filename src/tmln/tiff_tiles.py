"""Direct tile decoding for tiled TIFF pyramids: the fast path behind ``Slide.read_level``.

OpenSlide composes every region through its tile cache and cairo painting; on this project's
benchmark machine that runs at about 60 level-0 Mpx/s on one core, while decoding the same
TIFF tiles with tifffile + imagecodecs runs at 250–650 Mpx/s (benchmarks/results/slide_read.md).
For formats whose levels are a plain grid of tiles (OpenSlide vendors ``generic-tiff`` and
``aperio``), :class:`TiffTiles` reads a level's tiles straight from the file.

Safety net: a level is used only after one of its tiles, decoded here, equals OpenSlide's
pixels exactly (colour space, JPEG tables, subsampling all included); a level that differs, or
that tifffile cannot decode, stays with OpenSlide. Pixels outside the level and tiles stored
empty are white, as ``Slide.read_level`` makes OpenSlide's transparent pixels.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict

import numpy as np

from tmln.imaging import rgba_to_rgb_white

log = logging.getLogger(__name__)

# OpenSlide vendors whose levels are exactly the TIFF pages' tile grids (no overlaps, no
# per-tile positions, no sparse-tile rules of their own)
DIRECT_VENDORS = frozenset({"generic-tiff", "aperio"})
CACHE_BYTES = 64 << 20  # decoded tiles kept per slide handle (a 512 px RGB tile is 0.75 MiB)


class TiffTiles:
    """Tile-level reader of one slide file's pyramid pages.

    ``osr`` is the slide's ``openslide.OpenSlide``: it defines the levels (matched to TIFF pages
    by size) and is the reference each level is checked against on first use.
    """

    def __init__(self, path: str | os.PathLike, osr, cache_bytes: int = CACHE_BYTES):
        import tifffile

        self._tf = tifffile.TiffFile(str(path))
        self._osr = osr
        self._lock = threading.Lock()  # file position and cache
        self._check_lock = threading.Lock()  # first-use checks (no read of a level before its check ends)
        self._cache: OrderedDict = OrderedDict()
        self._cache_bytes = 0
        self._cache_limit = int(cache_bytes)
        self.on_bad_tile = None  # callable(level, x, y, w, h, exc) in level px: set to read around bad tiles
        self._pages = {}  # level -> page, or None where OpenSlide reads the level
        by_size: dict = {}
        for page in self._tf.pages:
            if _plain_tiles(page):
                by_size.setdefault((page.imagewidth, page.imagelength), []).append(page)
        for level, (dims, ds) in enumerate(zip(osr.level_dimensions, osr.level_downsamples)):
            found = by_size.get(tuple(dims), [])
            integral = abs(ds - round(ds)) < 1e-9
            self._pages[level] = found[0] if len(found) == 1 and integral else None
        self._checked: set = set()

    @classmethod
    def open(cls, path, osr, vendor: str | None) -> "TiffTiles | None":
        """A reader for ``path`` where the vendor is a plain tile grid and tifffile opens it."""
        if vendor not in DIRECT_VENDORS:
            return None
        try:
            return cls(path, osr)
        except Exception as exc:  # not a TIFF tifffile reads: OpenSlide reads everything
            log.debug("direct TIFF reading off for %s (%s)", path, exc)
            return None

    def direct(self, level: int) -> bool:
        """Whether ``level`` is read here (checked against OpenSlide on the first call)."""
        if level not in self._checked:
            with self._check_lock:
                if level not in self._checked:
                    page = self._pages.get(level)
                    if page is not None and not self._agrees(level, page):
                        self._pages[level] = None
                    self._checked.add(level)
        return self._pages.get(level) is not None

    def read(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray | None:
        """RGB uint8 (h, w, 3) of ``size`` = (w, h) level px at ``location`` (level-0 px), or
        ``None`` where this level (or this location, between level pixels) is OpenSlide's."""
        if not self.direct(level):
            return None
        ds = int(round(self._osr.level_downsamples[level]))
        x0, y0 = int(location[0]), int(location[1])
        if x0 % ds or y0 % ds:
            return None
        return self._region(self._pages[level], level, x0 // ds, y0 // ds, int(size[0]), int(size[1]))

    def close(self) -> None:
        self._tf.close()
        self._cache.clear()

    # ------------------------------------------------------------------ internals
    def _region(self, page, level, x, y, w, h) -> np.ndarray:
        out = np.full((h, w, 3), 255, np.uint8)
        tw, tl = page.tilewidth, page.tilelength
        iw, ih = page.imagewidth, page.imagelength
        x1, y1 = min(x + w, iw), min(y + h, ih)  # the part inside the level
        xa, ya = max(x, 0), max(y, 0)
        if x1 <= xa or y1 <= ya:
            return out
        across = -(-iw // tw)
        for ty in range(ya // tl, (y1 - 1) // tl + 1):
            for tx in range(xa // tw, (x1 - 1) // tw + 1):
                try:
                    tile = self._tile(page, level, ty * across + tx)
                except Exception as exc:
                    if self.on_bad_tile is None:
                        raise
                    # the slide records the unreadable tile (level px) and its pixels stay white
                    self.on_bad_tile(level, tx * tw, ty * tl, min(tw, iw - tx * tw), min(tl, ih - ty * tl), exc)
                    continue
                if tile is None:
                    continue
                # overlap of tile (tx, ty) with the wanted window, in level px
                gx0, gy0 = max(xa, tx * tw), max(ya, ty * tl)
                gx1, gy1 = min(x1, (tx + 1) * tw), min(y1, (ty + 1) * tl)
                out[gy0 - y : gy1 - y, gx0 - x : gx1 - x] = tile[gy0 - ty * tl : gy1 - ty * tl,
                                                               gx0 - tx * tw : gx1 - tx * tw]
        return out

    def _tile(self, page, level: int, index: int) -> np.ndarray | None:
        key = (level, index)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
            offset, count = int(page.dataoffsets[index]), int(page.databytecounts[index])
            if count == 0:  # an empty tile: nothing scanned there
                return None
            fh = self._tf.filehandle
            fh.seek(offset)
            data = fh.read(count)
        if len(data) != count:
            raise ValueError(f"tile {index} of level {level} is truncated ({len(data)} of {count} bytes)")
        decoded = page.decode(data, index, jpegtables=page.jpegtables)[0]
        tile = decoded.reshape(decoded.shape[-3:])
        with self._lock:
            self._cache[key] = tile
            self._cache_bytes += tile.nbytes
            while self._cache_bytes > self._cache_limit and len(self._cache) > 1:
                _, old = self._cache.popitem(last=False)
                self._cache_bytes -= old.nbytes
        return tile

    def _agrees(self, level: int, page) -> bool:
        """Decode the level's largest stored tile (the most detail: tissue rather than glass) here and
        through OpenSlide."""
        counts = np.asarray(page.databytecounts)
        if not counts.size or counts.max() == 0:
            return False
        index = int(np.argmax(counts))
        tw, tl = page.tilewidth, page.tilelength
        across = -(-page.imagewidth // tw)
        ty, tx = divmod(index, across)
        w, h = min(tw, page.imagewidth - tx * tw), min(tl, page.imagelength - ty * tl)
        ds = int(round(self._osr.level_downsamples[level]))
        try:
            mine = self._region(page, level, tx * tw, ty * tl, w, h)
        except Exception as exc:
            log.debug("level %d: tifffile cannot decode (%s); OpenSlide reads it", level, exc)
            return False
        ref = rgba_to_rgb_white(np.asarray(self._osr.read_region((tx * tw * ds, ty * tl * ds), level, (w, h))))
        same = ref.shape == mine.shape and np.array_equal(ref, mine)
        if not same:
            log.debug("level %d: tifffile pixels differ from OpenSlide's; OpenSlide reads it", level)
            with self._lock:
                for key in [k for k in self._cache if k[0] == level]:
                    self._cache_bytes -= self._cache.pop(key).nbytes
        return same


def _plain_tiles(page) -> bool:
    """An 8-bit RGB (or YCbCr), chunky, tiled 2-D page."""
    try:
        return (page.is_tiled and page.imagedepth == 1 and page.planarconfig == 1
                and page.bitspersample == 8 and page.samplesperpixel == 3
                and int(page.photometric) in (2, 6))  # RGB, YCbCr
    except Exception:
        return False
