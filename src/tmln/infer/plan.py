"""Planning what a model reads: the output grid, the cells needed, and the tiles or strips over them.

Two kinds of model share it. A patch classifier's output grid has one pixel per ``stride`` model px
(model px = px at the model card's µm/px, the lattice anchored at the slide's level-0 origin): its
reads are tiles (``Plan`` of method ``dense`` or ``grid``) or streamed column strips (``stream``),
trimmed to the cells the region of interest needs. A segmentation network's output is its input
grid: its reads are overlapping square tiles (``tile_origins``), blended afterwards.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Plan:
    """Where to read and where results go, in model px and output cells."""

    method: str  # "stream", "dense" or "grid"
    stride: int  # model px per output pixel
    f: tuple[float, float]  # level-0 px per model px (x, y)
    shape: tuple[int, int]  # output map (h, w)
    origin_model: float  # model px of the map's top-left corner (x and y)
    tile: tuple[int, int]  # (h, w) model px read per tile
    kept: tuple[int, int]  # (rows, cols) of output cells each tile contributes
    margin: tuple[int, int] = (0, 0)  # dense: cells dropped before / after
    pool: int = 1  # dense: k (cells per patch edge)
    pool_lo: int = 0  # dense: a = k // 2
    tiles: list = field(default_factory=list)  # dense / stream: (r0, c0, rows, cols); grid: (r0, c0)

    @property
    def stride_level0(self) -> tuple[float, float]:
        """Level-0 px per output pixel (x, y)."""
        return self.stride * self.f[0], self.stride * self.f[1]

    @property
    def origin_level0(self) -> tuple[float, float]:
        """Level-0 px (x, y) of the output map's top-left corner."""
        return self.origin_model * self.f[0], self.origin_model * self.f[1]

    @property
    def model_mpx(self) -> float:
        """Megapixels (at the model's µm/px) the network runs on: tiles trimmed (dense, stream) or fixed (grid)."""
        if self.method in ("dense", "stream"):
            lo, hi = self.margin
            return sum((nr + lo + hi) * (nc + lo + hi) for _, _, nr, nc in self.tiles) * self.stride ** 2 / 1e6
        return len(self.tiles) * self.tile[0] * self.tile[1] / 1e6


def map_shape(slide, model_mpp: float, stride: int, origin: float = 0.0) -> tuple[int, int]:
    """Output pixels covering the slide from ``origin`` (model px, <= 0)."""
    wm = slide.width * slide.mpp_x / model_mpp - origin
    hm = slide.height * slide.mpp_y / model_mpp - origin
    return max(1, math.ceil(hm / stride - 1e-9)), max(1, math.ceil(wm / stride - 1e-9))


def plan_dense(slide, model_mpp: float, patch_size: int, stride: int, margins: tuple[int, int],
               tile_size: int, method: str = "dense") -> Plan:
    """A fully convolutional classifier's plan: cells of ``stride`` model px, ``margins`` cells of
    receptive field dropped before / after each tile or segment, tiles (or strips) ``tile_size`` model
    px wide. Map pixel c is the patch over cells [c - a, c - a + k), k = patch_size / stride."""
    s = stride
    lo, hi = margins
    k = patch_size // s
    a = k // 2
    cells = max(int(tile_size) // s, lo + hi + 1)
    # map pixel c = patch over cells [c - a, c - a + k): its centre is s * (c - a + k / 2), the pixel's
    # centre when the map starts at origin s * (k / 2 - a - 1 / 2): 0 for odd k, -s / 2 for even k
    origin = s * (k / 2 - a - 0.5)
    shape = map_shape(slide, model_mpp, s, origin)
    # no tile larger than the slide needs (extended grid + margins)
    cy, cx = (min(cells, n + k - 1 + lo + hi) for n in shape)
    return Plan(method, s, (model_mpp / slide.mpp_x, model_mpp / slide.mpp_y), shape, origin, (cy * s, cx * s),
                (cy - lo - hi, cx - lo - hi), (lo, hi), k, a)


def plan_grid(slide, model_mpp: float, patch_size: int, grid_stride: int | None, tile_size: int) -> Plan:
    """A patch grid: one patch per output pixel every ``grid_stride`` model px (default half a patch),
    cropped from tiles of about ``tile_size`` model px."""
    p = int(patch_size)
    s = int(grid_stride or max(1, p // 2))
    shape = map_shape(slide, model_mpp, s)
    kept = max(1, (int(tile_size) - p) // s + 1)
    ky, kx = min(kept, shape[0]), min(kept, shape[1])
    return Plan("grid", s, (model_mpp / slide.mpp_x, model_mpp / slide.mpp_y), shape, 0.0,
                (s * (ky - 1) + p, s * (kx - 1) + p), (ky, kx))


def any_in_window(roi: np.ndarray, before: int, after: int) -> np.ndarray:
    """``e[j] = any(roi[j - before - after .. j])`` on a grid extended by ``before + after``: which
    extended cells some output pixel's window needs (window of output c = ext [c, c + k))."""
    k = before + after + 1
    h, w = roi.shape
    e = np.zeros((h + k - 1, w + k - 1), bool)
    for dy in range(k):
        for dx in range(k):
            e[dy : dy + h, dx : dx + w] |= roi
    return e


def needed_cells(plan: Plan, roi: np.ndarray) -> np.ndarray:
    """The extended cells (ext j <-> cell j - a) whose logits some region-of-interest pixel pools."""
    return any_in_window(roi, plan.pool_lo, plan.pool - 1 - plan.pool_lo)


def tiles_over(need: np.ndarray, kept: tuple[int, int]) -> list[tuple[int, int]]:
    """(r0, c0) of the blocks of a fixed ``kept``-cell lattice holding any needed cell."""
    out = []
    h, w = need.shape
    kr, kc = kept
    for r0 in range(0, h, kr):
        for c0 in range(0, w, kc):
            if need[r0 : r0 + kr, c0 : c0 + kc].any():
                out.append((r0, c0))
    return out


def trim_tiles(need: np.ndarray, tiles: list[tuple[int, int]], kept: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """(r0, c0, rows, cols) per tile: the bounding box of the needed cells inside its kept block."""
    out = []
    kr, kc = kept
    for r0, c0 in tiles:
        sub = need[r0 : r0 + kr, c0 : c0 + kc]
        rows, cols = np.flatnonzero(sub.any(1)), np.flatnonzero(sub.any(0))
        out.append((r0 + int(rows[0]), c0 + int(cols[0]), int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)))
    return out


def runs(idx: np.ndarray, gap: int) -> list[tuple[int, int]]:
    """[first, last] of the runs in sorted indices ``idx``, runs more than ``gap`` apart kept apart."""
    cut = np.flatnonzero(np.diff(idx) > gap)
    return [(int(a), int(b)) for a, b in zip(np.r_[idx[0], idx[cut + 1]], np.r_[idx[cut], idx[-1]])]


def strips(need: np.ndarray, cols: int, gap: int, step: int = 16) -> list[tuple[int, int, int, int]]:
    """(r0, c0, rows, cols) segments for streaming.

    Needed columns are grouped into runs (runs more than ``gap`` apart stay apart: a gap costs its
    columns, a new strip costs ``gap`` columns of margin). Each run is cut into strips at most
    ``cols`` wide; in a strip, the rows holding needed cells are grouped the same way, and each
    row run, trimmed to the columns it needs, is one segment. The cuts, on a lattice of ``step``
    columns, minimise the cells the segments compute, margins included (``(rows + gap) x (cols +
    gap)`` summed), by dynamic programming: round nodes cost ~10 % fewer pixels than with equal
    strips (benchmarks/results/tumour_engine.md)."""
    out = []
    idx = np.flatnonzero(need.any(0))
    if not idx.size:
        return out
    step = max(1, min(step, cols))
    for a, b in runs(idx, gap):
        pos = sorted(set(range(a, b + 1, step)) | {b + 1})
        best, back = [0] + [None] * (len(pos) - 1), [0] * len(pos)
        for j in range(1, len(pos)):
            for i in range(j - 1, -1, -1):
                if pos[j] - pos[i] > cols:
                    break
                c = best[i] + sum((nr + gap) * (nc + gap) for _, _, nr, nc in segments(need, pos[i], pos[j], gap))
                if best[j] is None or c < best[j]:
                    best[j], back[j] = c, i
        cuts, j = [], len(pos) - 1
        while j > 0:
            cuts.append((pos[back[j]], pos[j]))
            j = back[j]
        for c0, c1 in reversed(cuts):
            out += segments(need, c0, c1, gap)
    return out


def segments(need: np.ndarray, c0: int, c1: int, gap: int) -> list[tuple[int, int, int, int]]:
    """The segments of the strip of columns [c0, c1): row runs, each trimmed to its columns."""
    band = need[:, c0:c1]
    rows = np.flatnonzero(band.any(1))
    out = []
    if rows.size:
        for r0, r1 in runs(rows, gap):
            cc = np.flatnonzero(band[r0 : r1 + 1].any(0))
            out.append((r0, int(c0 + cc[0]), r1 - r0 + 1, int(cc[-1] - cc[0] + 1)))
    return out


def tile_origins(length: int, tile: int, overlap: int) -> list[int]:
    """Blended tiles covering [0, length): the first starts ``overlap // 2`` before 0 (so image
    borders get context), then every ``tile - overlap`` px until the last tile reaches ``length``."""
    stride = tile - overlap
    if stride <= 0:
        raise ValueError(f"overlap ({overlap}) must be smaller than the tile size ({tile})")
    start = -(overlap // 2)
    out = [start]
    while out[-1] + tile - overlap // 2 < length:
        out.append(out[-1] + stride)
    return out
