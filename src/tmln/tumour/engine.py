"""Dense tumour probability maps over whole slides.

Three ways to run a patch classifier over a slide, the first that applies chosen automatically:

``stream`` (ResNet / DenseNet / MobileNetV2; see ``tmln.tumour.dense`` and ``tmln.tumour.stream``)
    The classifier runs fully convolutionally: feature extractor, then the linear head as a 1×1
    convolution, giving one *cell logit* per ``stride`` px (32 px = 16 µm for a ResNet at
    0.5 µm/px). The region of interest is cut into column strips (default 4096 model px wide on
    CPU); each strip's run of needed rows is one *segment*, read in bands of ``BAND_PX`` rows and
    streamed through the network layer by layer, every layer computing each of its rows once. The
    receptive-field margin (cells whose receptive field would leave the segment are dropped) is
    paid once per segment edge, so the model sees about 1.3–1.7 px per tissue px instead of the
    original method's 17.6. Each output pixel is the mean of the ``k × k`` cell logits under the
    ``patch_size`` patch centred on it (``k = patch_size / stride``; 7 for 224 px) — the patch
    classifier's logit up to border effects (see ``docs/tumour-inference.md``) — then sigmoid.

``dense`` (the same architectures)
    The same computation in large overlapping tiles, each keeping the cells whose receptive
    field lies wholly inside it (margins recomputed per tile). Used for models with a Macenko
    stain step (estimated per image read) and on request; gives the same map as ``stream``.

``grid`` (any architecture)
    One patch per output pixel on a stride grid (default ``patch_size / 2``), cropped from large
    tiles read once (no redundant reads: neighbouring patches share the tile's pixels).

Coordinates first, pixels later: the tile / band list is computed from the region-of-interest
mask at the output stride; a ``DataLoader`` whose workers each open their own ``Slide`` (it
pickles by path) reads them (on small CPUs the main process reads, in turn). Memory is bounded
whatever the slide size: the only whole-slide arrays are at the output stride (a 100k × 100k px
slide at 0.25 µm/px gives a 1563² map at 16 µm/px). Runs on CUDA when available (AMP,
channels-last), else CPU; results do not depend on tile or strip size, worker count or timing.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from tmln.errors import TmlnError
from tmln.rundir import TUMOUR_MAP_JSON as SIDECAR_NAME
from tmln.rundir import TUMOUR_MAP_NPY as MAP_NAME
from tmln.rundir import TUMOUR_MAP_PNG as PREVIEW_NAME

MASKS = ("tissue", "nodes", None)

METHODS = ("auto", "stream", "dense", "grid")
# default tile edge in model px (dense mode): large tiles waste less on the receptive-field margin
DEFAULT_TILE_CPU = 2048
DEFAULT_TILE_CUDA = 4096
# streaming: strip width in model px, band height read per step, output rows (cells) per step
STRIP_WIDTH_CPU = 4096
STRIP_WIDTH_CUDA = 8192
BAND_PX = 512
CHUNK_CPU = 4
CHUNK_CUDA = 32


@dataclass
class ProbabilityMap:
    """A tumour probability map over a slide.

    array : float32 (h, w); P(tumour) in [0, 1]; NaN outside the region of interest.
    mpp : µm per map pixel (square).
    origin : level-0 px (x, y) of the top-left corner of map pixel (0, 0); pixel (r, c) covers
        level-0 x in ``origin[0] + [c, c + 1) * mpp / slide_mpp[0]`` (likewise y) and holds the
        classifier's probability for the patch centred on the pixel's centre.
    slide_mpp : level-0 µm/px (x, y) of the slide.
    """

    array: np.ndarray
    mpp: float
    origin: tuple[float, float]
    slide_mpp: tuple[float, float]
    model: str = ""
    threshold: float = 0.5
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.array.shape)

    @property
    def scale(self) -> tuple[float, float]:
        """Level-0 px per map pixel (x, y)."""
        return self.mpp / self.slide_mpp[0], self.mpp / self.slide_mpp[1]

    def sidecar(self) -> dict:
        keys = ("method", "stride_px", "patch_size", "model_mpp", "tile_size", "margin_cells", "pool_cells",
                "mask", "slide", "reader", "device", "precision", "int8", "cpu_isa", "architecture", "slide_size_px",
                "tiles", "model_mpx")
        return {
            "format": 1,
            "array": MAP_NAME,
            "mpp": self.mpp,
            "origin_px": list(self.origin),
            "slide_mpp": list(self.slide_mpp),
            "shape": list(self.array.shape),
            "model": self.model,
            "threshold": self.threshold,
            "values": "P(tumour) in [0, 1]; NaN outside the region of interest",
            **{k: self.info[k] for k in keys if k in self.info},
        }

    def save(self, out_dir: str | Path) -> Path:
        """Write ``tumour_map.npy``, ``tumour_map.json`` (sidecar) and ``tumour_map.png`` (preview),
        each atomically; the sidecar last."""
        from tmln.atomic import write_bytes, write_json, write_npy

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_npy(out / MAP_NAME, self.array.astype(np.float32, copy=False))
        write_bytes(out / PREVIEW_NAME, preview_png(self.array))
        write_json(out / SIDECAR_NAME, self.sidecar())
        return out

    @classmethod
    def load(cls, out_dir: str | Path) -> "ProbabilityMap":
        out = Path(out_dir)
        side = out / SIDECAR_NAME
        if not side.is_file():
            raise TmlnError(f"no {SIDECAR_NAME} (not a tumour-map folder)", out)
        meta = json.loads(side.read_text(encoding="utf-8"))
        arr = np.load(out / meta.get("array", MAP_NAME), allow_pickle=False)
        return cls(arr, float(meta["mpp"]), tuple(meta["origin_px"]), tuple(meta["slide_mpp"]),
                   meta.get("model", ""), float(meta.get("threshold", 0.5)), meta)


def preview_png(prob: np.ndarray) -> bytes:
    """PNG bytes: probability as a blue-to-red colour ramp, outside the region of interest grey."""
    import cv2

    p = np.nan_to_num(prob, nan=0.0).clip(0, 1)
    ramp = (p * 255).astype(np.uint8)
    rgb = cv2.applyColorMap(ramp, cv2.COLORMAP_JET)  # BGR
    rgb[np.isnan(prob)] = (220, 220, 220)
    ok, buf = cv2.imencode(".png", rgb)
    if not ok:  # pragma: no cover
        raise TmlnError("cannot encode the preview PNG")
    return buf.tobytes()


# ---------------------------------------------------------------------------- planning
@dataclass
class _Plan:
    """Where to read and where results go. Model px = px at the model's µm/px; the cell lattice is
    anchored at the slide's level-0 origin."""

    method: str
    stride: int  # model px per output pixel
    f: tuple[float, float]  # level-0 px per model px (x, y)
    shape: tuple[int, int]  # output map (h, w)
    origin_model: float  # model px of the map's top-left corner (x and y)
    tile: tuple[int, int]  # (h, w) model px read per tile
    kept: tuple[int, int]  # (rows, cols) of output cells each tile contributes
    margin: tuple[int, int] = (0, 0)  # dense: cells dropped before / after
    pool: int = 1  # dense: k (cells per patch edge)
    pool_lo: int = 0  # dense: a = k // 2
    tiles: list = field(default_factory=list)  # (row0, col0) in the tile's own index space


def _map_shape(slide, model_mpp: float, stride: int, origin: float = 0.0) -> tuple[int, int]:
    """Output pixels covering the slide from ``origin`` (model px, <= 0)."""
    wm = slide.width * slide.mpp_x / model_mpp - origin
    hm = slide.height * slide.mpp_y / model_mpp - origin
    return max(1, math.ceil(hm / stride - 1e-9)), max(1, math.ceil(wm / stride - 1e-9))


def _any_in_window(roi: np.ndarray, before: int, after: int) -> np.ndarray:
    """``e[j] = any(roi[j - before - after .. j])`` on a grid extended by ``before + after``: which
    extended cells some output pixel's window needs (window of output c = ext [c, c + k))."""
    k = before + after + 1
    h, w = roi.shape
    e = np.zeros((h + k - 1, w + k - 1), bool)
    for dy in range(k):
        for dx in range(k):
            e[dy : dy + h, dx : dx + w] |= roi
    return e


def _tiles_over(need: np.ndarray, kept: tuple[int, int]) -> list[tuple[int, int]]:
    out = []
    h, w = need.shape
    kr, kc = kept
    for r0 in range(0, h, kr):
        for c0 in range(0, w, kc):
            if need[r0 : r0 + kr, c0 : c0 + kc].any():
                out.append((r0, c0))
    return out


def _model_mpx(plan) -> float:
    """Megapixels (at the model's µm/px) the network ran on: tiles are trimmed (dense) or fixed (grid)."""
    if plan.method in ("dense", "stream"):
        lo, hi = plan.margin
        return sum((nr + lo + hi) * (nc + lo + hi) for _, _, nr, nc in plan.tiles) * plan.stride ** 2 / 1e6
    return len(plan.tiles) * plan.tile[0] * plan.tile[1] / 1e6


def _runs(idx: np.ndarray, gap: int) -> list[tuple[int, int]]:
    """[first, last] of the runs in sorted indices ``idx``, runs more than ``gap`` apart kept apart."""
    cut = np.flatnonzero(np.diff(idx) > gap)
    return [(int(a), int(b)) for a, b in zip(np.r_[idx[0], idx[cut + 1]], np.r_[idx[cut], idx[-1]])]


def _strips(need: np.ndarray, cols: int, gap: int, step: int = 16) -> list[tuple[int, int, int, int]]:
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
    for a, b in _runs(idx, gap):
        pos = sorted(set(range(a, b + 1, step)) | {b + 1})
        best, back = [0] + [None] * (len(pos) - 1), [0] * len(pos)
        for j in range(1, len(pos)):
            for i in range(j - 1, -1, -1):
                if pos[j] - pos[i] > cols:
                    break
                c = best[i] + sum((nr + gap) * (nc + gap) for _, _, nr, nc in _segments(need, pos[i], pos[j], gap))
                if best[j] is None or c < best[j]:
                    best[j], back[j] = c, i
        cuts, j = [], len(pos) - 1
        while j > 0:
            cuts.append((pos[back[j]], pos[j]))
            j = back[j]
        for c0, c1 in reversed(cuts):
            out += _segments(need, c0, c1, gap)
    return out


def _segments(need: np.ndarray, c0: int, c1: int, gap: int) -> list[tuple[int, int, int, int]]:
    """The segments of the strip of columns [c0, c1): row runs, each trimmed to its columns."""
    band = need[:, c0:c1]
    rows = np.flatnonzero(band.any(1))
    out = []
    if rows.size:
        for r0, r1 in _runs(rows, gap):
            cc = np.flatnonzero(band[r0 : r1 + 1].any(0))
            out.append((r0, int(c0 + cc[0]), r1 - r0 + 1, int(cc[-1] - cc[0] + 1)))
    return out


def _trim_tiles(need: np.ndarray, tiles: list[tuple[int, int]], kept: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """(r0, c0, rows, cols) per tile: the bounding box of the needed cells inside its kept block."""
    out = []
    kr, kc = kept
    for r0, c0 in tiles:
        sub = need[r0 : r0 + kr, c0 : c0 + kc]
        rows, cols = np.flatnonzero(sub.any(1)), np.flatnonzero(sub.any(0))
        out.append((r0 + int(rows[0]), c0 + int(cols[0]), int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)))
    return out


# ---------------------------------------------------------------------------- region of interest
def roi_cells(slide, shape, stride_level0: tuple[float, float], origin_level0: tuple[float, float],
              mask: str | None = "tissue", node_polygons: Sequence | None = None,
              tissue: tuple[np.ndarray, float] | None = None) -> np.ndarray:
    """Boolean (h, w) region of interest at the output grid.

    ``mask="tissue"``: pixels touching tissue (``tmln.tissue``; or ``tissue``, a ``TissueMask`` or
    ``(mask, mpp)``);
    ``"nodes"``: pixels touching ``node_polygons`` (level-0 px); ``None``: everything.
    """
    h, w = shape
    if mask is None:
        return np.ones((h, w), bool)
    if mask == "nodes":
        if node_polygons is None:
            raise TmlnError("mask='nodes' needs node polygons (e.g. --node-annotations)")
        from tmln.regions import rasterise

        polys = [p for p in node_polygons if p is not None and not p.is_empty]
        return rasterise(polys, (h, w), scale=stride_level0, origin=origin_level0, all_touched=True,
                         dtype=np.uint8).astype(bool)
    if mask == "tissue":
        tmask, tmpp = _as_mask_mpp(tissue) if tissue is not None else tissue_mask(slide)
        return _resample_mask(np.asarray(tmask, bool), tmpp, slide, shape, stride_level0, origin_level0)
    raise TmlnError(f"mask must be 'tissue', 'nodes' or None, got {mask!r}")


def tissue_mask(slide) -> tuple[np.ndarray, float]:
    """(bool mask, µm/px) from ``tmln.tissue.detect_tissue`` (an empty mask gives an empty map)."""
    from tmln.tissue import detect_tissue

    tm = detect_tissue(slide)
    return np.asarray(tm.mask, bool), float(tm.mpp)


def _as_mask_mpp(tissue) -> tuple[np.ndarray, float]:
    """A ``TissueMask`` or a ``(mask, mpp)`` pair -> (bool mask, µm/px)."""
    if hasattr(tissue, "mask") and hasattr(tissue, "mpp"):
        return np.asarray(tissue.mask, bool), float(tissue.mpp)
    m, mpp = tissue
    return np.asarray(m, bool), float(mpp)


def _resample_mask(tmask, tmpp, slide, shape, stride_level0, origin_level0) -> np.ndarray:
    """Map each mask pixel (at ``tmpp`` µm/px from the slide origin) to the output pixel holding its
    centre: an output pixel is in the region when any mask pixel falls in it (plus a 1 px rim)."""
    from scipy import ndimage

    h, w = shape
    out = np.zeros((h, w), bool)
    ys, xs = np.nonzero(tmask)
    if ys.size:
        x0 = (xs + 0.5) * tmpp / slide.mpp_x  # level-0 px
        y0 = (ys + 0.5) * tmpp / slide.mpp_y
        c = np.floor((x0 - origin_level0[0]) / stride_level0[0]).astype(np.int64)
        r = np.floor((y0 - origin_level0[1]) / stride_level0[1]).astype(np.int64)
        ok = (r >= 0) & (r < h) & (c >= 0) & (c < w)
        out[r[ok], c[ok]] = True
        out = ndimage.binary_dilation(out, np.ones((3, 3), bool))
    return out


# ---------------------------------------------------------------------------- reading
class _TileReader:
    """Map-style dataset of tiles: item i -> (i, uint8 (h, w, 3) tensor, read seconds).

    Holds the slide's path (and µm/px override), not an open handle: each process opens its own
    ``Slide`` on first use, so a reader process never touches a handle inherited from its parent.
    """

    def __init__(self, slide, locations, size, mpp: float, transform):
        self.slide_state = slide.__getstate__()
        self.locations = locations  # level-0 px (x, y) of each tile's top-left corner
        self.size = size  # (h, w) model px for every tile, or a list with one (h, w) per tile
        self.mpp = mpp
        self.transform = transform
        self._slide = None
        self._pid = None

    def _open(self):
        import os

        from tmln.slide import Slide

        if self._slide is None or self._pid != os.getpid():
            self._slide = Slide.__new__(Slide)
            self._slide.__setstate__(self.slide_state)
            self._pid = os.getpid()
        return self._slide

    def __getstate__(self):
        d = dict(self.__dict__)
        d["_slide"] = d["_pid"] = None
        return d

    def __len__(self):
        return len(self.locations)

    def __getitem__(self, i):
        import torch

        t0 = time.perf_counter()
        h, w = self.size[i] if isinstance(self.size, list) else self.size
        rgb = self._open().read(self.locations[i], (w, h), mpp=self.mpp)
        rgb = self.transform.stain(rgb)
        return i, torch.from_numpy(np.ascontiguousarray(rgb)), time.perf_counter() - t0


def _worker_init(_):
    import torch

    torch.set_num_threads(1)  # a reader decodes; the model's threads stay with the main process
    # (no cv2.setNumThreads here: after a fork it can deadlock on the parent's thread pool)


def _loader(dataset, num_workers: int, pin: bool):
    from torch.utils.data import DataLoader

    return DataLoader(
        dataset, batch_size=None, shuffle=False, num_workers=num_workers, pin_memory=pin,
        worker_init_fn=_worker_init if num_workers else None,
        prefetch_factor=2 if num_workers else None, persistent_workers=False,
        multiprocessing_context=_mp_context() if num_workers else None,
    )


def _mp_context():
    """Reader processes: ``fork`` where available (no re-import of the caller's main module; each
    reader opens its own slide handle), else the platform default."""
    import multiprocessing as mp

    return "fork" if "fork" in mp.get_all_start_methods() else None


def default_workers(cuda: bool = False) -> int:
    """Reader processes by default. On CUDA, half the CPUs (at most 8): the GPU waits on decoding.
    On CPU the model already uses every core, so a reader process only competes with it: none up
    to 4 cores (reading in turn is faster there: measured 4.3 s vs 5.0 s on 2 cores,
    benchmarks/results/tumour_engine.md), then a quarter of the cores (at most 4)."""
    import os

    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if cuda:
        return max(1, min(8, n // 2))
    return 0 if n <= 4 else min(4, n // 4)


# ---------------------------------------------------------------------------- the engine
def tumour_map(slide, model, mask: str | None = "tissue", node_polygons: Sequence | None = None,
               out_dir: str | Path | None = None, device: str | None = "auto", batch_size: int | None = None,
               num_workers: int | None = None, tile_size: int | None = None, method: str = "auto",
               grid_stride: int | None = None, precision: str = "auto", tissue=None,
               progress: bool = False) -> ProbabilityMap:
    """Tumour probability map of a slide.

    slide : ``tmln.slide.Slide`` or a path.
    model : model directory / bundled model name, or ``(module, ModelCard)`` from ``load_classifier``.
    mask : region of interest: ``"tissue"`` (``tmln.tissue``), ``"nodes"`` (``node_polygons``,
        level-0 px) or ``None`` (whole slide). Pixels outside it are NaN.
    out_dir : when given, writes ``tumour_map.npy`` + ``tumour_map.json`` + ``tumour_map.png``.
    device : ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda:1"``, ...
    batch_size : tiles per forward pass (dense; default 1 on CPU, 2 on CUDA) or patches (grid;
        default 64); stream runs one strip at a time.
    num_workers : DataLoader reader processes (default ``default_workers``: none on a CPU of up to
        4 cores, where readers would compete with the model; 0 = read in this process).
    tile_size : strip width (stream; default 4096 on CPU, 8192 on CUDA) or tile edge (dense;
        2048 / 4096), model px.
    method : ``"auto"`` (stream, else dense, else grid: the first the model allows), ``"stream"``,
        ``"dense"`` or ``"grid"``.
    grid_stride : output stride in model px for the grid method (default ``patch_size // 2``).
    precision : ``"auto"`` (``tmln.models.backend.resolve_precision``): bfloat16 autocast where the device
        runs it natively (CUDA with bf16, CPUs with AVX512-BF16 or AMX), float16 on older CUDA, float32
        on other CPUs; or ``"fp32"`` (the same results on every machine), ``"bf16"``, ``"fp16"``, or
        ``"int8"`` (x86 CPUs with AVX2, streamed and dense methods: about 2x float32 on AVX2, calibrated on
        a few tiles of this slide, recorded in ``info["int8"]``; not a default, its thresholded maps
        change 0.8-1.3 % of pixels on real tissue).
    tissue : optional precomputed tissue mask (``TissueMask`` or ``(bool array, µm/px)``) for
        ``mask="tissue"``.
    """
    import torch

    from tmln.device import select_device
    from tmln.models.classifier import input_transform, load_classifier
    from tmln.slide import Slide

    t_start = time.perf_counter()
    if not isinstance(slide, Slide):
        slide = Slide(slide)
    if mask not in MASKS:
        raise TmlnError(f"mask must be one of 'tissue', 'nodes', None; got {mask!r}")
    dev = select_device(device)
    if isinstance(model, tuple):
        module, card = model
        module = module.to(dev).eval()
        model_name = str(card.params.get("name", card.architecture)) if isinstance(card.params, dict) else ""
    else:
        module, card = load_classifier(model, device=dev)
        model_name = str(model)
    transform = input_transform(card)
    _ = slide.mpp  # MissingMppError early, naming the slide
    mppx, mppy = slide.mpp_x, slide.mpp_y
    f = (card.mpp / mppx, card.mpp / mppy)
    cuda = dev.type == "cuda"
    workers = default_workers(cuda) if num_workers is None else max(0, int(num_workers))

    from tmln.tumour.dense import dense_form

    dense = streamed = None
    if method not in METHODS:
        raise TmlnError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    if method in ("auto", "stream", "dense"):
        dense = dense_form(module)
        if dense is not None and card.patch_size % dense.stride:
            dense = None  # the patch is not a whole number of cells
        if dense is None and method != "auto":
            raise TmlnError(f"architecture {card.architecture!r} (patch {card.patch_size} px) has no exact "
                            "fully convolutional form; use method='grid'")
    if dense is not None and method in ("auto", "stream"):
        streamed, why = _streamable(dense.to(dev), transform)
        if streamed is None and method == "stream":
            raise TmlnError(f"architecture {card.architecture!r} cannot be streamed ({why}); use method='dense'")

    from tmln.models import backend as BK

    prec = BK.resolve_precision(precision, dev, int8_ok=dense is not None,
                                why_not_int8=f"{card.architecture!r} runs patch by patch (method grid)")
    amp_dtype = BK.amp_dtype(prec)
    if streamed is not None:
        plan = _plan_dense(slide, card, dense, tile_size or (STRIP_WIDTH_CUDA if cuda else STRIP_WIDTH_CPU))
        plan.method = "stream"
    elif dense is not None:
        plan = _plan_dense(slide, card, dense, tile_size or (DEFAULT_TILE_CUDA if cuda else DEFAULT_TILE_CPU))
    else:
        plan = _plan_grid(slide, card, grid_stride, tile_size or (DEFAULT_TILE_CUDA if cuda else DEFAULT_TILE_CPU))
    stride_l0 = (plan.stride * f[0], plan.stride * f[1])
    origin_l0 = (plan.origin_model * f[0], plan.origin_model * f[1])
    roi = roi_cells(slide, plan.shape, stride_l0, origin_l0, mask, node_polygons, tissue)

    timing = {"read_s": 0.0, "compute_s": 0.0, "wait_s": 0.0}
    int8 = None
    if prec == "int8":  # calibrated on tiles of this slide's region of interest (tmln.models.backend)
        from tmln.tumour.int8 import int8_dense

        dense, streamed, int8 = int8_dense(dense, streamed, slide, card, transform, roi, stride_l0, origin_l0)
        timing["int8_build_s"] = int8["build_s"]
    with _deterministic(cuda), torch.inference_mode():
        if streamed is not None:
            logits = _run_streamed(slide, card, streamed, dense.head.out_channels, plan, roi, transform, dev,
                                   amp_dtype, workers, timing, progress, band_px=BAND_PX,
                                   chunk=CHUNK_CUDA if cuda else CHUNK_CPU)
            prob = _pool_and_activate(logits, plan.pool, card)
        elif dense is not None:
            logits = _run_dense(slide, card, dense.to(dev), plan, roi, transform, dev, amp_dtype,
                                batch_size or (2 if cuda else 1), workers, timing, progress)
            prob = _pool_and_activate(logits, plan.pool, card)
        else:
            prob = _run_grid(slide, card, module, plan, roi, transform, dev, amp_dtype, batch_size or 64,
                             workers, timing, progress)
    prob = prob.astype(np.float32, copy=False)
    prob[~roi] = np.nan
    timing["total_s"] = time.perf_counter() - t_start
    info = {
        "method": plan.method, "stride_px": plan.stride, "patch_size": card.patch_size, "model_mpp": card.mpp,
        "tile_size": list(plan.tile), "margin_cells": list(plan.margin), "pool_cells": plan.pool,
        "mask": mask or "none", "slide": str(slide.path), "device": str(dev), "architecture": card.architecture,
        "precision": "int8" if int8 else str(amp_dtype).replace("torch.", "") if amp_dtype else "float32",
        **({"int8": int8} if int8 else {}), "cpu_isa": BK.cpu_isa() if dev.type == "cpu" else "",
        "reader": slide.reader(slide.best_level(card.mpp / slide.mpp)),
        "slide_size_px": [slide.width, slide.height], "tiles": len(plan.tiles),
        "model_mpx": _model_mpx(plan),
        "roi_mm2": float(roi.sum()) * (plan.stride * card.mpp / 1000) ** 2, "timing": timing,
    }
    pm = ProbabilityMap(prob, plan.stride * card.mpp, origin_l0, (mppx, mppy), model_name, float(card.threshold), info)
    if out_dir is not None:
        pm.save(out_dir)
    return pm


def _streamable(dense, transform):
    """(``StreamedNet``, "") when the dense form can be row-streamed exactly, else (None, reason).

    Not with a Macenko stain step: it estimates the stain per image read, so bands would be
    normalised differently from tiles."""
    from tmln.tumour.stream import NotStreamable, StreamedNet

    if transform.has_stain:
        return None, "Macenko normalisation is estimated per tile"
    import copy

    try:
        # the check compares values, so it runs on a float32 CPU copy (no TF32 / cuDNN algorithm noise)
        StreamedNet(copy.deepcopy(dense).cpu().float()).check()
        net = StreamedNet(dense)
    except NotStreamable as e:
        return None, str(e)
    return net, ""


def _amp_dtype(precision: str, dev, int8_ok: bool = False):
    """The autocast dtype for ``precision`` (``tmln.models.backend.resolve_precision``); None for float32
    and for int8, which runs its own kernels."""
    from tmln.models import backend as BK

    return BK.amp_dtype(BK.resolve_precision(precision, dev, int8_ok=int8_ok))


def _autocast(dev, amp_dtype):
    """Autocast to ``amp_dtype`` on ``dev``; a no-op context for float32 (``amp_dtype`` None)."""
    import torch

    return torch.autocast(dev.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None)


class _deterministic:
    """cuDNN in deterministic mode for the duration (restored afterwards)."""

    def __init__(self, cuda: bool):
        self.cuda = cuda

    def __enter__(self):
        import torch

        self.saved = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
        if self.cuda:
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False

    def __exit__(self, *exc):
        import torch

        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = self.saved


def _plan_dense(slide, card, dense, tile_size: int) -> _Plan:
    s = dense.stride
    lo, hi = dense.rf.margins()
    k = card.patch_size // s
    a = k // 2
    cells = max(int(tile_size) // s, lo + hi + 1)
    # map pixel c = patch over cells [c - a, c - a + k): its centre is s * (c - a + k / 2), the pixel's
    # centre when the map starts at origin s * (k / 2 - a - 1 / 2): 0 for odd k, -s / 2 for even k
    origin = s * (k / 2 - a - 0.5)
    shape = _map_shape(slide, card.mpp, s, origin)
    # no tile larger than the slide needs (extended grid + margins)
    cy, cx = (min(cells, n + k - 1 + lo + hi) for n in shape)
    return _Plan("dense", s, (card.mpp / slide.mpp_x, card.mpp / slide.mpp_y), shape, origin, (cy * s, cx * s),
                 (cy - lo - hi, cx - lo - hi), (lo, hi), k, a)


def _plan_grid(slide, card, grid_stride, tile_size: int) -> _Plan:
    p = int(card.patch_size)
    s = int(grid_stride or max(1, p // 2))
    shape = _map_shape(slide, card.mpp, s)
    kept = max(1, (int(tile_size) - p) // s + 1)
    ky, kx = min(kept, shape[0]), min(kept, shape[1])
    return _Plan("grid", s, (card.mpp / slide.mpp_x, card.mpp / slide.mpp_y), shape, 0.0,
                 (s * (ky - 1) + p, s * (kx - 1) + p), (ky, kx))


def _progress(total, enabled):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="tile", desc="tumour map")


def _run_dense(slide, card, dense, plan, roi, transform, dev, amp_dtype, batch_size, workers, timing, progress):
    import torch

    k, a = plan.pool, plan.pool_lo
    lo, hi = plan.margin
    need = _any_in_window(roi, a, k - 1 - a)  # extended cells: ext j <-> cell j - a
    # each tile of the fixed lattice is trimmed to the bounding box of the cells it must produce, so
    # tiles straddling the edge of irregular tissue read and compute only what is needed
    plan.tiles = _trim_tiles(need, _tiles_over(need, plan.kept), plan.kept)
    n_out = dense.head.out_channels
    logits = np.full((n_out,) + need.shape, np.nan, np.float32)
    s, fx, fy = plan.stride, plan.f[0], plan.f[1]
    # tile (r0, c0, nr, nc) keeps ext cells [r0, r0 + nr) x [c0, c0 + nc); it reads model px from
    # s * (c0 - a - lo), (nr + lo + hi) x (nc + lo + hi) cells
    locs = [((c0 - a - lo) * s * fx, (r0 - a - lo) * s * fy) for r0, c0, _, _ in plan.tiles]
    sizes = [((nr + lo + hi) * s, (nc + lo + hi) * s) for _, _, nr, nc in plan.tiles]
    data = _TileReader(slide, locs, sizes, card.mpp, transform)
    cl = torch.channels_last
    dense = dense.to(memory_format=cl)
    bar = _progress(len(locs), progress)
    batch: list = []

    def flush():
        t0 = time.perf_counter()
        x = torch.stack([b[1] for b in batch]).to(dev, non_blocking=True)
        x = transform.normalise(x).contiguous(memory_format=cl)
        with _autocast(dev, amp_dtype):
            y = dense(x)
        y = y.float().cpu().numpy()
        for (i, _, _), out in zip(batch, y):
            r0, c0, nr, nc = plan.tiles[i]
            logits[:, r0 : r0 + nr, c0 : c0 + nc] = out[:, lo : lo + nr, lo : lo + nc]
        timing["compute_s"] += time.perf_counter() - t0
        if bar is not None:
            bar.update(len(batch))
        batch.clear()

    t_wait = time.perf_counter()
    for item in _loader(data, workers, dev.type == "cuda"):
        timing["wait_s"] += time.perf_counter() - t_wait
        timing["read_s"] += item[2]
        if batch and batch[0][1].shape != item[1].shape:  # a batch holds tiles of one size
            flush()
        batch.append(item)
        if len(batch) >= batch_size:
            flush()
        t_wait = time.perf_counter()
    if batch:
        flush()
    if bar is not None:
        bar.close()
    return logits


def stream_reads(plan, roi: np.ndarray, band_px: int):
    """Plan the streamed reads: sets ``plan.tiles`` to the segments and returns (needed extended
    cells, band locations in level-0 px, band (h, w) in model px, segment of each band)."""
    k, a = plan.pool, plan.pool_lo
    lo, hi = plan.margin
    need = _any_in_window(roi, a, k - 1 - a)
    plan.tiles = _strips(need, plan.kept[1], lo + hi)
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


def _run_streamed(slide, card, streamed, n_out: int, plan, roi, transform, dev, amp_dtype, workers, timing,
                  progress, band_px: int, chunk: int):
    """Dense cell logits, each segment (a column strip's run of needed rows) streamed band by band
    through the network (``tmln.tumour.stream``): the receptive-field margin is paid once per
    segment edge, not once per tile edge."""
    import torch

    lo, hi = plan.margin
    need, locs, sizes, owner = stream_reads(plan, roi, band_px)
    logits = np.full((n_out,) + need.shape, np.nan, np.float32)
    s = plan.stride
    data = _TileReader(slide, locs, sizes, card.mpp, transform)
    cl = torch.channels_last
    bar = _progress(len(plan.tiles), progress)
    items = iter(_loader(data, workers, dev.type == "cuda"))

    def bands(t):
        while True:
            t_wait = time.perf_counter()
            try:
                i, band, rs = next(items)
            except StopIteration:
                return
            timing["wait_s"] += time.perf_counter() - t_wait
            timing["read_s"] += rs
            assert owner[i] == t, "bands arrive in segment order"
            x = band[None].to(dev, non_blocking=True)
            yield transform.normalise(x).contiguous(memory_format=cl)

    with _autocast(dev, amp_dtype):
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
            if bar is not None:
                bar.update(1)
    for _ in items:  # pragma: no cover - every band was consumed; this ends the reader processes
        raise AssertionError("unread bands left")  # (an unfinished DataLoader waits ~5 s to shut down)
    if bar is not None:
        bar.close()
    return logits


def _pool_and_activate(logits: np.ndarray, k: int, card) -> np.ndarray:
    """Mean of the k×k cell logits under each patch (valid windows over the extended grid), then
    sigmoid (one output) or softmax -> P(tumour class)."""
    import torch

    t = torch.from_numpy(logits)[None]
    pooled = torch.nn.functional.avg_pool2d(t, k, stride=1)[0] if k > 1 else t[0]
    return _activate(pooled, card).numpy()


def _activate(logits, card):
    """(C, ...) logits -> P(tumour) (...)."""
    import torch

    if logits.shape[0] == 1:
        return torch.sigmoid(logits[0])
    return torch.softmax(logits, dim=0)[tumour_index(card)]


def tumour_index(card) -> int:
    """Which output is tumour for a multi-output model: the first class named like tumour, else the last."""
    from tmln.annotations import is_tumour_label

    for i, name in enumerate(card.classes):
        if is_tumour_label(name):
            return i
    return len(card.classes) - 1


def _run_grid(slide, card, module, plan, roi, transform, dev, amp_dtype, batch_size, workers, timing, progress):
    import torch

    s, p = plan.stride, int(card.patch_size)
    kr, kc = plan.kept
    h, w = plan.shape
    plan.tiles = _tiles_over(roi, plan.kept)
    fx, fy = plan.f
    # output pixel c: patch centred at s * (c + 0.5) model px -> top-left s * c + s / 2 - p / 2
    off = s / 2 - p / 2
    locs = [((c0 * s + off) * fx, (r0 * s + off) * fy) for r0, c0 in plan.tiles]
    data = _TileReader(slide, locs, plan.tile, card.mpp, transform)
    out = np.full((h, w), np.nan, np.float32)
    module = module.to(memory_format=torch.channels_last)
    bar = _progress(len(locs), progress)
    pend_x: list = []
    pend_rc: list = []

    def flush():
        t0 = time.perf_counter()
        x = torch.stack(pend_x).to(dev, non_blocking=True)
        x = transform.normalise(x).contiguous(memory_format=torch.channels_last)
        with _autocast(dev, amp_dtype):
            y = module(x)
        pr = _activate(y.float().T, card).cpu().numpy()
        for (r, c), v in zip(pend_rc, pr):
            out[r, c] = v
        pend_x.clear()
        pend_rc.clear()
        timing["compute_s"] += time.perf_counter() - t0

    t_wait = time.perf_counter()
    for i, tile, rs in _loader(data, workers, dev.type == "cuda"):
        timing["wait_s"] += time.perf_counter() - t_wait
        timing["read_s"] += rs
        r0, c0 = plan.tiles[i]
        sub = roi[r0 : r0 + kr, c0 : c0 + kc]
        for dr, dc in zip(*np.nonzero(sub)):
            pend_x.append(tile[dr * s : dr * s + p, dc * s : dc * s + p])
            pend_rc.append((r0 + dr, c0 + dc))
            if len(pend_x) >= batch_size:
                flush()
        if bar is not None:
            bar.update(1)
        t_wait = time.perf_counter()
    if pend_x:
        flush()
    if bar is not None:
        bar.close()
    return out
