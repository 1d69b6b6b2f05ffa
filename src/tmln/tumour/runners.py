"""The three ways the tumour engine runs a patch classifier over a planned slide.

``run_streamed`` and ``run_dense`` give dense cell logits on the extended grid (``tmln.infer.plan``),
which ``pool_and_activate`` turns into the map; ``run_grid`` gives the map directly, one patch per
output pixel. Each takes a ``Run``: the slide, the card, the plan, the region of interest and how
to compute (device, autocast dtype, reader processes), and adds its seconds to ``Run.timing``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from tmln.annotations import is_tumour_label
from tmln.infer.memory import EVERY_S, release_freed
from tmln.infer.plan import Plan, needed_cells, strips, tiles_over, trim_tiles
from tmln.infer.precision import autocast
from tmln.infer.readers import TileReader, prefetched, read_all
from tmln.models.card import ModelCard
from tmln.slide import Slide


@dataclass
class Run:
    """One map computation: what to read (``plan``, ``roi``) and how to compute it."""

    slide: Slide
    card: ModelCard
    plan: Plan
    roi: np.ndarray  # bool (h, w) at the output grid
    transform: Any  # tmln.models.classifier.InputTransform
    dev: torch.device
    amp_dtype: Any  # torch dtype or None (float32 / int8)
    workers: int  # reader processes
    progress: bool = False
    timing: dict = field(default_factory=lambda: {"read_s": 0.0, "compute_s": 0.0, "wait_s": 0.0})

    def items(self, locations, sizes):
        """(i, uint8 tensor, read seconds) of each tile, in order; the seconds spent waiting for each
        (``timing["wait_s"]``) and reading it (``timing["read_s"]``) are counted as they arrive."""
        data = TileReader(self.slide, locations, sizes, self.card.mpp, stain=self.transform.stain)
        t_wait = time.perf_counter()
        source = read_all(data, self.workers, self.dev.type == "cuda")
        if not self.workers:  # reading in this process: one tile ahead, in a thread (tmln.infer.readers)
            source = prefetched(source)
        for item in source:
            self.timing["wait_s"] += time.perf_counter() - t_wait
            self.timing["read_s"] += item[2]
            yield item
            t_wait = time.perf_counter()

    def bar(self, total: int):
        if not self.progress:
            return None
        from tqdm import tqdm

        return tqdm(total=total, unit="tile", desc="tumour map")


def run_dense(run: Run, dense, batch_size: int) -> np.ndarray:
    """Dense cell logits (C, extended grid), tile by tile: each tile of the fixed lattice is trimmed
    to the bounding box of the cells it must produce, so tiles straddling the edge of irregular
    tissue read and compute only what is needed."""
    plan, timing, dev, transform = run.plan, run.timing, run.dev, run.transform
    a = plan.pool_lo
    lo, hi = plan.margin
    need = needed_cells(plan, run.roi)  # extended cells: ext j <-> cell j - a
    plan.tiles = trim_tiles(need, tiles_over(need, plan.kept), plan.kept)
    logits = np.full((dense.head.out_channels,) + need.shape, np.nan, np.float32)
    s, fx, fy = plan.stride, plan.f[0], plan.f[1]
    # tile (r0, c0, nr, nc) keeps ext cells [r0, r0 + nr) x [c0, c0 + nc); it reads model px from
    # s * (c0 - a - lo), (nr + lo + hi) x (nc + lo + hi) cells
    locs = [((c0 - a - lo) * s * fx, (r0 - a - lo) * s * fy) for r0, c0, _, _ in plan.tiles]
    sizes = [((nr + lo + hi) * s, (nc + lo + hi) * s) for _, _, nr, nc in plan.tiles]
    cl = torch.channels_last
    dense = dense.to(memory_format=cl)
    bar = run.bar(len(locs))
    batch: list = []

    def flush():
        t0 = time.perf_counter()
        x = torch.stack([b[1] for b in batch]).to(dev, non_blocking=True)
        x = transform.normalise(x).contiguous(memory_format=cl)
        with autocast(dev, run.amp_dtype):
            y = dense(x)
        y = y.float().cpu().numpy()
        for (i, _, _), out in zip(batch, y):
            r0, c0, nr, nc = plan.tiles[i]
            logits[:, r0 : r0 + nr, c0 : c0 + nc] = out[:, lo : lo + nr, lo : lo + nc]
        timing["compute_s"] += time.perf_counter() - t0
        if bar is not None:
            bar.update(len(batch))
        batch.clear()
        release_freed(EVERY_S)  # (tmln.infer.memory)

    for item in run.items(locs, sizes):
        if batch and batch[0][1].shape != item[1].shape:  # a batch holds tiles of one size
            flush()
        batch.append(item)
        if len(batch) >= batch_size:
            flush()
    if batch:
        flush()
    if bar is not None:
        bar.close()
    return logits


def stream_reads(plan: Plan, roi: np.ndarray, band_px: int):
    """Plan the streamed reads: sets ``plan.tiles`` to the segments and returns (needed extended
    cells, band locations in level-0 px, band (h, w) in model px, segment of each band)."""
    a = plan.pool_lo
    lo, hi = plan.margin
    need = needed_cells(plan, roi)
    plan.tiles = strips(need, plan.kept[1], lo + hi)
    s, fx, fy = plan.stride, plan.f[0], plan.f[1]
    locs, sizes, owner = [], [], []
    for t, (r0, c0, nr, nc) in enumerate(plan.tiles):
        x0, y0 = (c0 - a - lo) * s, (r0 - a - lo) * s  # model px of the segment's top-left corner
        height, width = (nr + lo + hi) * s, (nc + lo + hi) * s
        for b0 in range(0, height, band_px):
            locs.append((x0 * fx, (y0 + b0) * fy))
            sizes.append((min(band_px, height - b0), width))
            owner.append(t)
    return need, locs, sizes, owner


def run_streamed(run: Run, streamed, n_out: int, band_px: int, chunk: int) -> np.ndarray:
    """Dense cell logits, each segment (a column strip's run of needed rows) streamed band by band
    through the network (``tmln.tumour.stream``): the receptive-field margin is paid once per
    segment edge, not once per tile edge."""
    plan, timing, dev, transform = run.plan, run.timing, run.dev, run.transform
    lo, hi = plan.margin
    need, locs, sizes, owner = stream_reads(plan, run.roi, band_px)
    logits = np.full((n_out,) + need.shape, np.nan, np.float32)
    s = plan.stride
    cl = torch.channels_last
    bar = run.bar(len(plan.tiles))
    items = iter(run.items(locs, sizes))

    def bands(t):
        while True:
            try:
                i, band, _ = next(items)
            except StopIteration:
                return
            assert owner[i] == t, "bands arrive in segment order"
            x = band[None].to(dev, non_blocking=True)
            yield transform.normalise(x).contiguous(memory_format=cl)

    with autocast(dev, run.amp_dtype):
        for t, (r0, c0, nr, nc) in enumerate(plan.tiles):
            t0, w0 = time.perf_counter(), timing["wait_s"]
            height, width = (nr + lo + hi) * s, (nc + lo + hi) * s
            for r, y in streamed.run(bands(t), height, width, chunk=chunk):
                # output rows r .. r + len: keep segment rows [lo, lo + nr), columns [lo, lo + nc)
                q0, q1 = max(r, lo), min(r + y.shape[2], lo + nr)
                if q1 > q0:
                    rows = y[0, :, q0 - r : q1 - r, lo : lo + nc].float().cpu().numpy()
                    logits[:, r0 + q0 - lo : r0 + q1 - lo, c0 : c0 + nc] = rows
            timing["compute_s"] += time.perf_counter() - t0 - (timing["wait_s"] - w0)
            release_freed(EVERY_S)  # what the segment's layers freed (tmln.infer.memory)
            if bar is not None:
                bar.update(1)
    for _ in items:  # pragma: no cover - every band was consumed; this ends the reader processes
        raise AssertionError("unread bands left")  # (an unfinished DataLoader waits ~5 s to shut down)
    if bar is not None:
        bar.close()
    return logits


def run_grid(run: Run, module, batch_size: int) -> np.ndarray:
    """P(tumour) (h, w), one patch per region-of-interest pixel, cropped from tiles read once."""
    plan, timing, dev, transform, card = run.plan, run.timing, run.dev, run.transform, run.card
    s, p = plan.stride, int(card.patch_size)
    kr, kc = plan.kept
    h, w = plan.shape
    plan.tiles = tiles_over(run.roi, plan.kept)
    fx, fy = plan.f
    # output pixel c: patch centred at s * (c + 0.5) model px -> top-left s * c + s / 2 - p / 2
    off = s / 2 - p / 2
    locs = [((c0 * s + off) * fx, (r0 * s + off) * fy) for r0, c0 in plan.tiles]
    out = np.full((h, w), np.nan, np.float32)
    module = module.to(memory_format=torch.channels_last)
    bar = run.bar(len(locs))
    pend_x: list = []
    pend_rc: list = []

    def flush():
        t0 = time.perf_counter()
        x = torch.stack(pend_x).to(dev, non_blocking=True)
        x = transform.normalise(x).contiguous(memory_format=torch.channels_last)
        with autocast(dev, run.amp_dtype):
            y = module(x)
        pr = activate(y.float().T, card).cpu().numpy()
        for (r, c), v in zip(pend_rc, pr):
            out[r, c] = v
        pend_x.clear()
        pend_rc.clear()
        timing["compute_s"] += time.perf_counter() - t0

    for i, tile, _ in run.items(locs, plan.tile):
        r0, c0 = plan.tiles[i]
        sub = run.roi[r0 : r0 + kr, c0 : c0 + kc]
        for dr, dc in zip(*np.nonzero(sub)):
            pend_x.append(tile[dr * s : dr * s + p, dc * s : dc * s + p])
            pend_rc.append((r0 + dr, c0 + dc))
            if len(pend_x) >= batch_size:
                flush()
        if bar is not None:
            bar.update(1)
        release_freed(EVERY_S)  # (tmln.infer.memory)
    if pend_x:
        flush()
    if bar is not None:
        bar.close()
    return out


def pool_and_activate(logits: np.ndarray, k: int, card: ModelCard) -> np.ndarray:
    """Mean of the k×k cell logits under each patch (valid windows over the extended grid), then
    sigmoid (one output) or softmax -> P(tumour class)."""
    t = torch.from_numpy(logits)[None]
    pooled = torch.nn.functional.avg_pool2d(t, k, stride=1)[0] if k > 1 else t[0]
    return activate(pooled, card).numpy()


def activate(logits, card: ModelCard):
    """(C, ...) logits -> P(tumour) (...)."""
    if logits.shape[0] == 1:
        return torch.sigmoid(logits[0])
    return torch.softmax(logits, dim=0)[tumour_index(card)]


def tumour_index(card: ModelCard) -> int:
    """Which output is tumour for a multi-output model: the first class named like tumour, else the last."""
    for i, name in enumerate(card.classes):
        if is_tumour_label(name):
            return i
    return len(card.classes) - 1
