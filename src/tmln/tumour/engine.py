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

Coordinates first, pixels later: the tile / band list is planned from the region-of-interest
mask at the output stride (``tmln.infer.plan``); a ``DataLoader`` whose workers each open their own
``Slide`` (``tmln.infer.readers``) reads them (on small CPUs the main process reads, in turn). Memory
is bounded whatever the slide size: the only whole-slide arrays are at the output stride (a 100k ×
100k px slide at 0.25 µm/px gives a 1563² map at 16 µm/px). Runs on CUDA when available (AMP,
channels-last), else CPU; results do not depend on tile or strip size, worker count or timing.
The runners are in ``tmln.tumour.runners``, the map type in ``tmln.tumour.probability_map``. Between
calls the engine keeps the last model's forms (``_cached``) and the last model loaded from a directory
(``_load``), so that a cohort does not rebuild them per slide.
"""

from __future__ import annotations

import contextlib
import copy
import threading
import time
import weakref
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from tmln.device import select_device
from tmln.errors import TmlnError
from tmln.infer import precision as P
from tmln.infer.memory import EVERY_S, release_freed
from tmln.infer.plan import plan_dense, plan_grid
from tmln.infer.readers import default_workers
from tmln.infer.roi import MASKS, roi_cells
from tmln.models.backend import cpu_isa
from tmln.models.card import resolve_model_dir
from tmln.models.classifier import input_transform, load_classifier
from tmln.slide import Slide
from tmln.tumour.dense import dense_form
from tmln.tumour.int8 import int8_dense
from tmln.tumour.probability_map import ProbabilityMap
from tmln.tumour.runners import Run, pool_and_activate, run_dense, run_grid, run_streamed
from tmln.tumour.stream import NotStreamable, StreamedNet

METHODS = ("auto", "stream", "dense", "grid")
# default tile edge in model px (dense mode): large tiles waste less on the receptive-field margin
DEFAULT_TILE_CPU = 2048
DEFAULT_TILE_CUDA = 4096
# streaming: strip width in model px, band height read per step, output rows (cells) per step
STRIP_WIDTH_CPU = 4096
STRIP_WIDTH_CUDA = 8192
BAND_PX = 512
CHUNK_CPU = 4
CHUNK_CPU_WINOGRAD = 6  # output rows per step: NNPACK computes 6 × 6 output tiles, so 6 rows (6, 12, 24, 48 in the stages) waste none (measured: 1.04x vs 8)
CHUNK_CUDA = 32


# public API mirroring `tmln tumour-map`'s options; its length is the docstring
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
    num_workers : DataLoader reader processes (default ``tmln.infer.readers.default_workers``: none on
        a CPU of up to 4 cores, where readers would compete with the model; 0 = read in this process).
    tile_size : strip width (stream; default 4096 on CPU, 8192 on CUDA) or tile edge (dense;
        2048 / 4096), model px.
    method : ``"auto"`` (stream, else dense, else grid: the first the model allows), ``"stream"``,
        ``"dense"`` or ``"grid"``.
    grid_stride : output stride in model px for the grid method (default ``patch_size // 2``).
    precision : ``"auto"`` (``tmln.infer.precision``): bfloat16 autocast where the device runs it
        natively (CUDA with bf16, CPUs with AVX512-BF16 or AMX), float16 on older CUDA, float32 with
        Winograd 3 x 3 convolutions on CPUs PyTorch runs with AVX2 (``"fp32-winograd"``, NNPACK:
        probabilities within ~1e-5 of direct float32), float32 on other CPUs; or ``"fp32"`` (direct
        convolutions, the same results on every machine), ``"fp32-winograd"``, ``"bf16"``, ``"fp16"``, or
        ``"int8"`` (x86 CPUs with AVX2, streamed and dense methods: about 2x float32 on AVX2, calibrated on
        a few tiles of this slide, recorded in ``info["int8"]``; not a default, its thresholded maps
        change 0.8-1.3 % of pixels on real tissue).
    tissue : optional precomputed tissue mask (``TissueMask`` or ``(bool array, µm/px)``) for
        ``mask="tissue"``.
    """
    t_start = time.perf_counter()
    with contextlib.ExitStack() as opened:  # a slide given as a path is closed at the end
        if not isinstance(slide, Slide):
            slide = opened.enter_context(Slide(slide))
        if mask not in MASKS:
            raise TmlnError(f"mask must be one of 'tissue', 'nodes', None; got {mask!r}")
        if method not in METHODS:
            raise TmlnError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
        dev = select_device(device)
        module, card, model_name = _load(model, dev)
        transform = input_transform(card)
        _ = slide.mpp  # MissingMppError early, naming the slide
        cuda = dev.type == "cuda"
        key = (card.patch_size, transform.has_stain, method, str(dev))
        dense, streamed = _cached(module, ("float",) + key, lambda: _forms(module, card, transform, method, dev))
        prec = P.resolve(precision, dev, int8_ok=dense is not None,
                         why_not_int8=f"{card.architecture!r} runs patch by patch (method grid)")
        if dense is not None:
            width = tile_size or ((STRIP_WIDTH_CUDA if cuda else STRIP_WIDTH_CPU) if streamed is not None
                                  else (DEFAULT_TILE_CUDA if cuda else DEFAULT_TILE_CPU))
            plan = plan_dense(slide, card.mpp, card.patch_size, dense.stride, dense.rf.margins(), width,
                              "stream" if streamed is not None else "dense")
        else:
            plan = plan_grid(slide, card.mpp, card.patch_size, grid_stride,
                             tile_size or (DEFAULT_TILE_CUDA if cuda else DEFAULT_TILE_CPU))
        if prec == P.WINOGRAD and dense is None and precision == "auto":
            prec = "fp32"  # patch by patch (grid), Winograd was slower: 96 px patches are too small for its tiles
        roi = roi_cells(slide, plan.shape, plan.stride_level0, plan.origin_level0, mask, node_polygons, tissue)
        run = Run(slide, card, plan, roi, transform, dev, P.amp_dtype(prec),
                  default_workers(cuda) if num_workers is None else max(0, int(num_workers)), progress)
        if prec == P.WINOGRAD:  # float32, 3 x 3 convolutions by NNPACK's Winograd kernels
            dense, streamed, module = _cached(module, ("winograd",) + key,
                                              lambda: _winograd_forms(dense, streamed, module))
        int8 = None
        if prec == "int8":  # calibrated on tiles of this slide's region of interest (tmln.models.backend)
            dense, streamed, int8 = int8_dense(dense, streamed, slide, card, transform, roi, plan.stride_level0,
                                               plan.origin_level0)
            run.timing["int8_build_s"] = int8["build_s"]
        with P.deterministic(cuda), torch.inference_mode():
            if streamed is not None:
                logits = run_streamed(run, streamed, dense.head.out_channels, band_px=BAND_PX,
                                      chunk=CHUNK_CUDA if cuda else CHUNK_CPU_WINOGRAD if prec == P.WINOGRAD
                                      else CHUNK_CPU)
                prob = pool_and_activate(logits, plan.pool, card)
            elif dense is not None:
                logits = run_dense(run, dense.to(dev), batch_size or (2 if cuda else 1))
                prob = pool_and_activate(logits, plan.pool, card)
            else:
                prob = run_grid(run, module, batch_size or 64)
        prob = prob.astype(np.float32, copy=False)
        prob[~roi] = np.nan
        # the logits and the network's buffers, once per map; the collector at most every EVERY_S s: with the
        # model's forms kept (``_cached``) a map leaves no large cycles, and a collection costs 0.15-0.2 s
        release_freed(collect_every_s=EVERY_S)  # (tmln.infer.memory)
        run.timing["total_s"] = time.perf_counter() - t_start
        info = {
            "method": plan.method, "stride_px": plan.stride, "patch_size": card.patch_size, "model_mpp": card.mpp,
            "tile_size": list(plan.tile), "margin_cells": list(plan.margin), "pool_cells": plan.pool,
            "mask": mask or "none", "slide": str(slide.path), "device": str(dev), "architecture": card.architecture,
            "precision": P.dtype_name(run.amp_dtype, int8=bool(int8), winograd=prec == P.WINOGRAD),
            **({"int8": int8} if int8 else {}), "cpu_isa": cpu_isa() if dev.type == "cpu" else "",
            "reader": slide.reader(slide.best_level(card.mpp / slide.mpp)),
            "slide_size_px": [slide.width, slide.height], "tiles": len(plan.tiles),
            "model_mpx": plan.model_mpx,
            "roi_mm2": float(roi.sum()) * (plan.stride * card.mpp / 1000) ** 2, "timing": run.timing,
        }
        pm = ProbabilityMap(prob, plan.stride * card.mpp, plan.origin_level0, (slide.mpp_x, slide.mpp_y), model_name,
                            float(card.threshold), info)
        if out_dir is not None:
            pm.save(out_dir)
        return pm


def _load(model, dev):
    """(module on ``dev`` in eval mode, card, the model's name for the sidecar)."""
    if isinstance(model, tuple):
        module, card = model
        name = str(card.params.get("name", card.architecture)) if isinstance(card.params, dict) else ""
        return module.to(dev).eval(), card, name
    d = resolve_model_dir(model)
    files = tuple(sorted((f.name, f.stat().st_mtime_ns, f.stat().st_size) for f in d.iterdir() if f.is_file()))
    key = (str(d.resolve()), str(dev), files)
    with _KEPT_LOCK:
        if _LOADED.get("key") != key:  # a cohort maps every slide with one model: loaded once while unchanged
            _LOADED.clear()
            _LOADED.update(key=key, model=load_classifier(d, device=dev))
        module, card = _LOADED["model"]
    return module, card, str(model)


_LOADED: dict = {}  # the last model loaded from a directory (``_load``): its key and (module, card)


def _forms(module, card, transform, method: str, dev):
    """(dense form or None, streamed net or None) for ``method``: the forms the model allows, or an
    error naming the architecture when the requested method is not one of them."""
    dense = streamed = None
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
    return dense, streamed


_LAST: dict = {}  # the forms built for the last model mapped (``_cached``)
_KEPT_LOCK = threading.RLock()  # guards _LAST and _LOADED


def _cached(module, key, build):
    """``build()`` for ``module`` and ``key``, kept while the last model mapped is ``module`` with the same
    weights: a cohort maps every slide with one model, and building its forms (fusing, tracing, checking
    the streamed net, Winograd kernel transforms) took 0.6 s of a ResNet-18 map. Only one model's
    forms are kept (a few hundred MB with Winograd kernels); new or changed weights rebuild them."""
    try:
        mark = tuple((t.data_ptr(), t._version) for t in (*module.parameters(), *module.buffers()))
    except RuntimeError:  # inference tensors keep no version counter: not cached
        return build()
    with _KEPT_LOCK:  # maps made in several threads of one process share the entry
        held = _LAST.get("module")
        if held is None or held() is not module or _LAST.get("mark") != mark:
            _LAST.clear()
            _LAST.update(module=weakref.ref(module), mark=mark, forms={})
        forms = _LAST["forms"]
        if key not in forms:
            forms[key] = build()
        return forms[key]


def _winograd_forms(dense, streamed, module):
    """(dense form, streamed net, module) with NNPACK's Winograd convolutions (``tmln.models.winograd``).
    The streamed net is rebuilt from the Winograd dense form, not checked again: its graph is the float
    form's, which passed ``StreamedNet.check``, with each 3 x 3 convolution computed by another kernel
    over the same window (tests/tumour/test_winograd.py; a check would cost 0.5 s of tiny NNPACK calls)."""
    if dense is None:
        return None, None, P.form(module, P.WINOGRAD)
    dense = P.form(dense, P.WINOGRAD)
    return dense, StreamedNet(dense) if streamed is not None else None, module


def _streamable(dense, transform):
    """(``StreamedNet``, "") when the dense form can be row-streamed exactly, else (None, reason).

    Not with a Macenko stain step: it estimates the stain per image read, so bands would be
    normalised differently from tiles."""
    if transform.has_stain:
        return None, "Macenko normalisation is estimated per tile"
    try:
        # the check compares values, so it runs on a float32 CPU copy (no TF32 / cuDNN algorithm noise)
        StreamedNet(copy.deepcopy(dense).cpu().float()).check()
        net = StreamedNet(dense)
    except NotStreamable as e:
        return None, str(e)
    return net, ""
