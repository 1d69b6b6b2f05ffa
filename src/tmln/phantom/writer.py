"""Streaming writer of pyramidal, tiled, JPEG-compressed TIFF / Aperio-SVS-style files.

Tiles are produced by a callback and written as they come (tifffile consumes a tile iterator), and
each pyramid level is rendered again at its own resolution, so memory stays bounded by a few tiles
whatever the slide size. Levels are separate TIFF pages (OpenSlide's generic-TIFF reader does not
follow SubIFDs); the SVS variant follows Aperio's layout (level 0 with an ``Aperio Image Library``
description, a stripped thumbnail as the second page, then the other levels).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Callable

import numpy as np

TileFn = Callable[[int, int, int, int, int], np.ndarray]  # (ds, x0, y0, w, h) -> (h, w, 3) uint8


def level_sizes(width: int, height: int, factor: int = 4, min_size: int = 1000) -> list[tuple[int, int, int]]:
    """[(downsample, width, height)] from level 0 until the largest side is below ``min_size``."""
    out = [(1, width, height)]
    ds = 1
    while max(out[-1][1], out[-1][2]) >= min_size:
        ds *= factor
        out.append((ds, int(math.ceil(width / ds)), int(math.ceil(height / ds))))
    return out


def _tiles(fn: TileFn, ds: int, w: int, h: int, tile: int):
    for y in range(0, h, tile):
        for x in range(0, w, tile):
            yield fn(ds, x, y, tile, tile)


@dataclass(frozen=True)
class PyramidOptions:
    """How ``write_pyramid`` encodes a pyramid.

    fmt : ``tiff`` (generic tiled TIFF) or ``svs`` (Aperio-style).
    tile : tile side (px); factor : downsample between levels; min_size : the last level is the
        first whose largest side is below it.
    quality : JPEG quality. description : level-0 ImageDescription (generic TIFF only).
    compression : ``jpeg`` (``quality``; what scanners write, needs imagecodecs) or ``zlib``
        (lossless deflate; tifffile alone can write it; generic TIFF only).
    """

    fmt: str = "tiff"
    tile: int = 512
    quality: int = 85
    factor: int = 4
    min_size: int = 1000
    description: str = ""
    compression: str = "jpeg"

    def check(self) -> None:
        if self.fmt not in ("tiff", "svs"):
            raise ValueError(f"fmt must be 'tiff' or 'svs', got {self.fmt!r}")
        if self.compression not in ("jpeg", "zlib") or (self.fmt == "svs" and self.compression != "jpeg"):
            raise ValueError(f"compression must be 'jpeg' (or 'zlib' for fmt='tiff'), got {self.compression!r}")


def write_pyramid(
    path: str | os.PathLike,
    width: int,
    height: int,
    render: TileFn,
    mpp: float | None,
    options: PyramidOptions = PyramidOptions(),
) -> list[tuple[int, int, int]]:
    """Write a pyramid to ``path`` (the caller makes it atomic). Returns the level sizes.

    mpp : level-0 µm/px written as TIFF resolution (pixels per cm) and, for SVS, as ``MPP =``;
        ``None`` writes no physical size at all.
    options : format, tiling, compression and level spacing (:class:`PyramidOptions`).
    """
    import tifffile

    o = options
    o.check()
    levels = level_sizes(width, height, o.factor, o.min_size)
    bigtiff = width * height * 3 * 1.34 > 3.5e9
    common = dict(dtype=np.uint8, photometric="rgb", compression=o.compression, metadata=None,
                  compressionargs={"level": int(o.quality)} if o.compression == "jpeg" else None)

    def res(ds):
        if mpp is None:
            return {}
        ppcm = 1e4 / (mpp * ds)
        return {"resolution": (ppcm, ppcm), "resolutionunit": "CENTIMETER"}

    with tifffile.TiffWriter(path, bigtiff=bigtiff) as tw:
        for i, (ds, w, h) in enumerate(levels):
            if o.fmt == "svs":
                desc = _aperio_description(width, height, w, h, o.tile, o.quality, mpp, i == 0)
            else:
                desc = o.description if i == 0 else ""
            tw.write(_tiles(render, ds, w, h, o.tile), shape=(h, w, 3), tile=(o.tile, o.tile),
                     subfiletype=0 if i == 0 else 1, description=desc or None, **res(ds), **common)
            if o.fmt == "svs" and i == 0:
                _write_thumbnail(tw, render, width, height, levels[-1][0], mpp, o)
    return levels


def _write_thumbnail(tw, render: TileFn, width: int, height: int, ds: int, mpp: float | None,
                     o: PyramidOptions) -> None:
    """Aperio: the second page is a stripped thumbnail (the last level's downsample, halved until
    its largest side is at most 1024 px)."""
    while max(width / ds, height / ds) > 1024:
        ds *= 2
    tw_, th_ = int(math.ceil(width / ds)), int(math.ceil(height / ds))
    thumb = _assemble(render, ds, tw_, th_, o.tile)
    tw.write(thumb, photometric="rgb", compression="jpeg", compressionargs={"level": int(o.quality)},
             rowsperstrip=16, subfiletype=1, metadata=None,
             description=_aperio_description(width, height, tw_, th_, None, o.quality, mpp, False))


def _assemble(render: TileFn, ds: int, w: int, h: int, tile: int) -> np.ndarray:
    out = np.empty((h, w, 3), np.uint8)
    for y in range(0, h, tile):
        for x in range(0, w, tile):
            t = render(ds, x, y, tile, tile)
            out[y:y + tile, x:x + tile] = t[: min(tile, h - y), : min(tile, w - x)]
    return out


def _aperio_description(W, H, w, h, tile, quality, mpp, first: bool) -> str:
    """ImageDescription in the style of Aperio ImageScope files (OpenSlide parses the first one)."""
    head = "Aperio Image Library v12.0.16 (tmln phantom)\r\n"
    if first:
        geom = f"{W}x{H} [0,0 {W}x{H}] ({tile}x{tile}) JPEG/RGB Q={quality}"
    else:
        geom = f"{W}x{H} -> {w}x{h} - " + (f"({tile}x{tile}) " if tile else "") + f"JPEG/RGB Q={quality}"
    fields = []
    if mpp is not None:
        fields.append(f"AppMag = {20 if mpp >= 0.35 else 40}")
        fields.append(f"MPP = {mpp:.4f}".rstrip("0").rstrip("."))
    fields.append("ScanScope ID = TMLN-PHANTOM")
    return head + geom + "|" + "|".join(fields)
