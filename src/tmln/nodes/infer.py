"""Slide-scale node segmentation: tiled U-Net inference with blending, then instances.

The slide is read at the model card's µm/px (default 8 µm/px, where a 100k px slide is ~3k px).
Tiles of ``card.patch_size`` px overlap by ``params["overlap"]`` px (``tmln.infer.plan.tile_origins``)
and are blended with a separable cosine window that is nearly 0 on the outer quarter of the overlap
(where padding artefacts are) and strictly positive, so every pixel is a weighted mean of the tiles
that cover it: no seams, and a pointwise model gives back exactly its pointwise output. Tiles are
processed one row at a time into a band buffer of one tile's height, so memory is bounded by the
output map plus one band, for any slide size. Small slides are read once as a thumbnail (the same
pixels the model was trained on); large ones are streamed tile by tile, by reader processes where
the tumour engine would use them (``tmln.infer.readers.default_workers``). Precision and
deterministic kernels as the tumour engine's (``tmln.infer.precision``).

Post-processing (``tmln.nodes.instances``): threshold from the card, hole filling, splitting of
touching nodes, minimum node area in mm², minimum mean node probability (both from the card); then, where
the card names an edge model, the node-edge check (``tmln.nodes.edges``: instances whose outline does not
look like a node's capsule at 2 µm/px are dropped). Units: label maps travel with their µm/px (``NodeMap``,
a ``tmln.raster.Raster``).
"""

from __future__ import annotations

import copy
import dataclasses
import time
from typing import Callable

import numpy as np

from tmln.infer import precision as P
from tmln.infer.plan import tile_origins
from tmln.infer.readers import Reader, SlideReader, array_reader, default_workers, slide_shape
from tmln.models import backend
from tmln.models.card import resolve_model_dir
from tmln.models.unet import load_unet, normalise
from tmln.nodes.edges import EdgeChecker, edge_model_path
from tmln.nodes.instances import InstanceParams, instances_from_mask, relabel_sequential
from tmln.nodes.regions import NodeMap, labels_to_polygons, write_node_outputs
from tmln.slide import Slide

DEFAULT_OVERLAP = 64  # px at the model's µm/px
IN_MEMORY_MAX_PX = 4096 * 4096  # read the whole slide at the model's µm/px when at most this big


# ---------------------------------------------------------------------------- blending
def blend_window(tile: int, overlap: int, floor: float = 1e-3) -> np.ndarray:
    """(tile, tile) float32 weights, separable: ``floor`` on the outer ``overlap // 4`` px of each edge
    (where a convolutional network's padding artefacts live), then a cosine ramp up to 1 at
    ``overlap`` px from the edge, 1 in the centre. Never 0, so a pixel covered by one tile only
    keeps that tile's value."""
    ramp = np.ones(tile, np.float64)
    n = int(min(max(overlap, 0), tile // 2))
    if n > 0:
        m = n // 4
        r = np.full(n, floor)
        k = n - m
        t = (np.arange(k) + 0.5) / k
        r[m:] = floor + (1 - floor) * 0.5 * (1 - np.cos(np.pi * t))
        ramp[:n] = r
        ramp[tile - n :] = r[::-1]
    return np.outer(ramp, ramp).astype(np.float32)


def predict_tiled(read: Reader, shape: tuple[int, int], predict: Callable[[np.ndarray], np.ndarray],
                  tile: int, overlap: int = DEFAULT_OVERLAP, batch_size: int = 8, channels: int = 1,
                  progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Blend ``predict`` over overlapping tiles of an image of ``shape`` = (H, W).

    read : a ``Reader`` (tile at model px (x, y, w, h)), e.g. ``array_reader`` or ``SlideReader``.
    predict : (N, tile, tile, 3) uint8 -> (N, C, tile, tile) float (probabilities).
    Returns (C, H, W) float32. Rows of tiles go through a band buffer of one tile's height.
    """
    H, W = int(shape[0]), int(shape[1])
    win = blend_window(tile, overlap)
    ys, xs = tile_origins(H, tile, overlap), tile_origins(W, tile, overlap)
    # a SlideReader reads the whole list in order (in reader processes when it has them)
    tiles = read.tiles([(x, y) for y in ys for x in xs], tile) if hasattr(read, "tiles") else \
        (read(x, y, tile, tile) for y in ys for x in xs)
    x0 = xs[0]
    bw = xs[-1] + tile - x0  # band width covering every tile of a row
    out = np.zeros((channels, H, W), np.float32)
    num = np.zeros((channels, tile, bw), np.float64)
    den = np.zeros((tile, bw), np.float64)
    stride = tile - overlap
    done, total = 0, len(ys) * len(xs)
    for r, y in enumerate(ys):
        for b in range(0, len(xs), batch_size):
            bx = xs[b : b + batch_size]
            batch = np.stack([next(tiles) for _ in bx])
            prob = np.asarray(predict(batch), np.float64)
            if prob.shape != (len(bx), channels, tile, tile):
                raise ValueError(f"predict returned {prob.shape}, expected {(len(bx), channels, tile, tile)}")
            for i, x in enumerate(bx):
                num[:, :, x - x0 : x - x0 + tile] += prob[i] * win
                den[:, x - x0 : x - x0 + tile] += win
            done += len(bx)
            if progress is not None:
                progress(done, total)
        # rows [y, y_next) are final: no later tile row reaches them
        last = r == len(ys) - 1
        n_final = tile if last else stride
        _flush(out, num, den, y, n_final, x0, H, W)
        if not last:
            num[:, : tile - stride] = num[:, stride:]
            num[:, tile - stride :] = 0
            den[: tile - stride] = den[stride:]
            den[tile - stride :] = 0
    for _ in tiles:  # every tile was read; this ends the source (reader processes, its slide handle)
        raise AssertionError("unread tiles left")
    return out


def _flush(out, num, den, y, n_rows, x0, H, W):
    r0, r1 = max(0, y), min(H, y + n_rows)
    if r1 <= r0:
        return
    c0, c1 = -x0, -x0 + W  # columns of the band holding image columns 0..W
    d = den[r0 - y : r1 - y, c0:c1]
    out[:, r0:r1, :] = (num[:, r0 - y : r1 - y, c0:c1] / np.maximum(d, 1e-12)).astype(np.float32)


# ---------------------------------------------------------------------------- the model
def model_predictor(net, card, device=None, amp: bool = True, precision: str = "auto") -> Callable[[np.ndarray], np.ndarray]:
    """(N, h, w, 3) uint8 -> (N, C, h, w) sigmoid probabilities with a loaded U-Net.

    precision : as the tumour engine's (``tmln.infer.precision``), except that ``auto`` keeps float32
        arithmetic on CPUs (direct, or Winograd where PyTorch runs AVX2): the U-Net at 8 µm/px is a
        small share of a slide's time and its int8 / bf16 maps were not shown to stay the maps
        (docs/tumour-inference.md). ``int8`` is calibrated on the first
        batch of tiles (the slide's own), recorded in ``predict.info``. ``amp=False``: float32.
    """
    import torch

    dev = device if device is not None else next(net.parameters()).device
    prec = P.resolve("fp32" if not amp else precision, dev, cpu_reduced=False)
    dtype = P.amp_dtype(prec)
    state: dict = {"net": P.form(net, prec) if prec != "int8" else None}  # fp32-winograd: NNPACK's convolutions

    def predict(batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(dev).permute(0, 3, 1, 2).float() / 255.0
        x = normalise(x, card)
        if state["net"] is None:  # int8: calibrate on this first batch of the slide's tiles
            t0 = time.perf_counter()
            q, cache = backend.quantize(net, [x[i : i + 1] for i in range(len(x))])
            cal = backend.Calibration("the first batch of node-model tiles", list(range(len(x))),
                                      int(x.shape[-1]), float(card.mpp), cache, time.perf_counter() - t0)
            state["net"] = q
            predict.info["int8"] = cal.record()
        with P.deterministic(dev.type == "cuda"), torch.inference_mode(), P.autocast(dev, dtype):
            logits = state["net"](x)
        return torch.sigmoid(logits.float()).cpu().numpy()

    predict.info = {"precision": prec}
    return predict


class NodeSegmenter:
    """A loaded node-segmentation model (load once, run on many slides).

    model : model directory, bundled model name, or an already loaded ``(module, card)`` pair.
    params : overrides of the card's post-processing parameters (``InstanceParams`` fields).
    precision : ``model_predictor``'s (``auto``: float32 on CPUs); ``self.predict.info`` says what ran.
    num_workers : reader processes for slides read tile by tile (default ``default_workers``).
    The node-edge check runs where the card (or ``params``) names an ``edge_model`` and a ``min_edge_score``
    above 0 (``params={"min_edge_score": 0}`` turns it off).
    """

    def __init__(self, model, device="auto", params: dict | None = None, batch_size: int = 8, precision: str = "auto",
                 num_workers: int | None = None):
        model_dir = None
        if isinstance(model, tuple):
            self.net, self.card = model
            self.net.eval()
        else:
            self.net, self.card = load_unet(model, device)
            model_dir = resolve_model_dir(model)
        self.device = next(self.net.parameters()).device
        merged = dict(self.card.params)
        merged.update(params or {})
        self.params = InstanceParams.from_dict(merged)
        self.tile = int(self.card.patch_size)
        self.overlap = min(int(merged.get("overlap", DEFAULT_OVERLAP)), self.tile // 2)
        self.batch_size = int(batch_size)
        self.mpp = float(self.card.mpp)
        self.predict = model_predictor(self.net, self.card, self.device, precision=precision)
        self.workers = default_workers(self.device.type == "cuda") if num_workers is None else max(0, int(num_workers))
        self.min_edge_score = float(merged.get("min_edge_score") or 0.0)
        edge_dir = edge_model_path(self.card, model_dir) if self.min_edge_score > 0 else None
        self.edges = EdgeChecker(edge_dir, device) if edge_dir is not None else None

    @property
    def channels(self) -> int:
        return len(self.card.classes)

    def probabilities(self, image: np.ndarray, progress=None) -> np.ndarray:
        """(C, H, W) probabilities for an RGB image already at the model's µm/px."""
        img = np.asarray(image)
        return predict_tiled(array_reader(img), img.shape[:2], self.predict, self.tile, self.overlap,
                             self.batch_size, self.channels, progress)

    def slide_probabilities(self, slide: Slide, progress=None) -> tuple[np.ndarray, np.ndarray | None]:
        """(C, H, W) probabilities at the model's µm/px for a slide, and the RGB when read whole."""
        H, W = slide_shape(slide, self.mpp)
        if H * W <= IN_MEMORY_MAX_PX:
            rgb = slide.thumbnail(self.mpp)
            return self.probabilities(rgb, progress), rgb
        prob = predict_tiled(SlideReader(slide, self.mpp, self.workers), (H, W), self.predict, self.tile,
                             self.overlap, self.batch_size, self.channels, progress)
        return prob, None

    def instances(self, prob: np.ndarray, split_touching: bool | None = None) -> np.ndarray:
        """Probabilities (C, H, W) -> int32 instance labels (threshold from the card)."""
        p = self.params
        if split_touching is not None:
            p = InstanceParams.from_dict({**p.to_dict(), "split_touching": bool(split_touching)})
        thr = float(self.card.threshold)
        mask = prob[0] >= thr
        # the core channel goes in as probabilities: the splitter weighs how strongly the model
        # separates two regions, not only whether it does (tmln.nodes.instances)
        core = prob[self.card.classes.index("node_core")] if "node_core" in self.card.classes else None
        return instances_from_mask(mask, self.mpp, core=core, params=p, prob=prob[0])

    def node_map(self, slide: Slide, split_touching: bool | None = None, progress=None) -> NodeMap:
        """The slide's node instances at the model's µm/px (origin at level-0 (0, 0))."""
        prob, rgb = self.slide_probabilities(slide, progress)
        labels = self.instances(prob, split_touching)
        info = {**self.predict.info, "device": str(self.device), "reader_processes": self.workers if rgb is None else 0}
        if self.edges is not None:
            labels, info["edge_check"] = self.check_edges(slide, labels)
        return NodeMap(labels, self.mpp, (0.0, 0.0), (slide.mpp_x_required, slide.mpp_y_required), prob=prob, rgb=rgb,
                       info=info)

    def check_edges(self, slide: Slide, labels: np.ndarray) -> tuple[np.ndarray, dict]:
        """Drop the instances whose edge score is below ``min_edge_score`` (``tmln.nodes.edges``); the labels
        left (renumbered 1..n) and what was checked: the edge model, the threshold, every instance's score."""
        polys = labels_to_polygons(labels, self.mpp, slide)
        ids = np.unique(labels[labels > 0])  # the polygons' labels, in order
        scores = self.edges.scores(slide, polys)
        drop = [int(i) for i, s in zip(ids, scores) if s is not None and s < self.min_edge_score]
        if drop:
            labels = relabel_sequential(np.where(np.isin(labels, drop), 0, labels))
        return labels, {"edge_model": self.card.params.get("edge_model"), "min_edge_score": self.min_edge_score,
                        "scores": [None if s is None else round(s, 4) for s in scores], "removed": len(drop)}


_CACHE: dict = {}


def get_segmenter(model, device="auto") -> NodeSegmenter:
    """A ``NodeSegmenter`` for a model directory/name, cached per (path, device) for cohort runs."""
    if isinstance(model, NodeSegmenter):
        return model
    if isinstance(model, tuple):
        return NodeSegmenter(model)
    path = resolve_model_dir(model).resolve()
    key = (str(path), str(device), path.joinpath("model.safetensors").stat().st_mtime_ns
           if path.joinpath("model.safetensors").exists() else 0)
    seg = _CACHE.get(key)
    if seg is None:
        if len(_CACHE) >= 2:
            _CACHE.pop(next(iter(_CACHE)))
        seg = _CACHE[key] = NodeSegmenter(path, device)
    return seg


def _open(slide, mpp=None) -> tuple[Slide, bool]:
    if isinstance(slide, Slide):
        return slide, False
    return Slide(slide, mpp=mpp), True


def node_map(slide, model, out_dir=None, device="auto", *, split_touching: bool | None = None,
             mpp: float | None = None, progress=None) -> NodeMap:
    """Node instances of a slide: a ``NodeMap`` (``.labels`` int32 (H, W) at ``.mpp`` µm/px, the card's;
    origin at level-0 (0, 0)). ``slide``: a ``Slide`` or a path (``mpp`` overrides its µm/px).
    When ``out_dir`` is given, also writes ``node_labels.npy``, ``node_labels.json``,
    ``node_labels.png`` (preview) and ``nodes.geojson`` there (atomically)."""
    seg = get_segmenter(model, device)
    s, opened = _open(slide, mpp)
    try:
        nm = seg.node_map(s, split_touching=split_touching, progress=progress)
        if out_dir is not None:
            write_node_outputs(out_dir, s, nm, seg.card, split_touching=seg.params.split_touching
                               if split_touching is None else split_touching)
    finally:
        if opened:
            s.close()
    return nm


def regions_from_model(slide, model, out_dir=None, device="auto", *, split_touching: bool | None = None,
                       mpp: float | None = None, min_node_area_mm2: float | None = None) -> list:
    """Lymph-node instances of a slide as shapely Polygons in level-0 px (one per node, in label order).

    model : model directory, bundled name (e.g. ``"demo-nodes"``) or a ``NodeSegmenter``.
    out_dir : when given, the label map (``node_labels.npy`` + ``.json``) and a PNG preview are
        written there (the caller writes the nodes' GeoJSON: ``tmln.cohort.job`` its measured one).
    split_touching : False keeps touching nodes as one instance (default: the card's).
    min_node_area_mm2 : smallest node kept (default: the card's).
    """
    seg = get_segmenter(model, device)
    if min_node_area_mm2 is not None:  # a shallow copy: the cached segmenter (and its weights) is shared
        seg = copy.copy(seg)
        seg.params = dataclasses.replace(seg.params, min_node_area_mm2=float(min_node_area_mm2))
    s, opened = _open(slide, mpp)
    try:
        nm = seg.node_map(s, split_touching=split_touching)
        if out_dir is not None:
            write_node_outputs(out_dir, s, nm, seg.card, split_touching=seg.params.split_touching
                               if split_touching is None else split_touching, geojson=False)
        return labels_to_polygons(nm.labels, nm.mpp, s)
    finally:
        if opened:
            s.close()


__all__ = ["NodeSegmenter", "NodeMap", "node_map", "regions_from_model", "predict_tiled", "blend_window",
           "tile_origins", "array_reader", "SlideReader", "slide_shape", "get_segmenter", "Reader"]
