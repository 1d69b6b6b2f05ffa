"""Training data for the lymph-node U-Net: slides + node outlines -> images and masks at one µm/px.

Each slide is read whole as an RGB thumbnail at the model's µm/px (default 8 µm/px: a 100k px
slide at 0.25 µm/px is ~3k px, a few MB), and its node outlines (QuPath GeoJSON or ASAP XML, found
in the annotation folder as ``<slide_id>.nodes.geojson|.json|.xml`` or ``<slide_id>.geojson|.json|.xml``)
are rasterised on the same grid (pixel centres inside). Targets, one uint8 channel each:

* ``node`` — every node pixel (tumour effacing a node is part of that node);
* ``node_core`` (optional, instance-aware) — the node minus a band of ``border_um`` along borders
  shared with another node, so the network learns where touching nodes separate; at inference the
  cores are the watershed markers.

Random square crops (``NodeCropDataset``): a quarter centred on a border shared by touching nodes
(where the slide has one), the others half on a node boundary (foreground and background in one
crop), a quarter on a node pixel and a quarter anywhere; optionally a share centred on tissue outside
the nodes (hard negatives) and a share on **metastases inside nodes**: where the annotation folder also
holds the slide's tumour outlines (``<slide_id>.tumour.geojson|.json|.xml``), the tumour pixels inside
nodes, so that a node largely replaced by carcinoma is still learnt as node (it looks like the
carcinoma outside nodes that the hard negatives teach to reject); and optionally a share on the
**model's own mistakes** (``mistake_components``: node called outside the outlines, node missed inside
them, away from the outlines' edges), mined during training (``tmln.train.nodes``), each mistake as
likely as any other. Crops reaching past the slide are padded with white glass and background target.
Train/validation split is by patient.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from tmln.annotations import AmbiguousAnnotation, find_annotation, node_outlines, read_annotations, tumour_outlines
from tmln.cohort.table import read_slides_table
from tmln.errors import AnnotationError, InputTableError
from tmln.regions import rasterise
from tmln.slide import Slide

CLASSES_SEMANTIC = ["node"]
CLASSES_INSTANCE = ["node", "node_core"]
NON_NODE_OD = 0.25  # optical density sum (RGB) above which a pixel outside the nodes counts as tissue
MISTAKE_MARGIN_UM = 24.0  # mistakes closer than this (µm) to a node outline are the boundary crops' business
MISTAKE_MIN_MM2 = 0.002  # smaller mistakes (mm²) are noise, not a false or missed node


@dataclass
class NodeSlide:
    """One training slide at ``mpp`` µm/px: ``image`` (H, W, 3) uint8, ``instances`` (H, W) int32
    (0 = background), ``target`` (C, H, W) uint8 (node[, node_core]); ``tumour`` (H, W) bool: the
    slide's outlined tumour, or None where no tumour outlines were found."""

    slide_id: str
    patient_id: str
    path: str
    mpp: float
    image: np.ndarray
    instances: np.ndarray
    target: np.ndarray
    n_nodes: int
    annotation: str
    tumour: np.ndarray | None = field(default=None, repr=False)
    _boundary: np.ndarray | None = field(default=None, repr=False)
    _foreground: np.ndarray | None = field(default=None, repr=False)
    _shared: np.ndarray | None = field(default=None, repr=False)
    _non_node: np.ndarray | None = field(default=None, repr=False)
    _metastasis: np.ndarray | None = field(default=None, repr=False)

    @property
    def node_area_mm2(self) -> float:
        return float(np.count_nonzero(self.instances)) * self.mpp * self.mpp / 1e6

    def boundary_pixels(self) -> np.ndarray:
        if self._boundary is None:
            from skimage.segmentation import find_boundaries

            self._boundary = np.argwhere(find_boundaries(self.instances > 0, mode="inner"))
        return self._boundary

    def shared_border_pixels(self) -> np.ndarray:
        """Pixels of the band along borders shared by touching nodes (node but not core)."""
        if self._shared is None:
            t = self.target
            self._shared = np.argwhere((t[0] > 0) & (t[1] == 0)) if t.shape[0] > 1 else np.zeros((0, 2), int)
        return self._shared

    def foreground_pixels(self) -> np.ndarray:
        if self._foreground is None:
            self._foreground = np.argwhere(self.instances > 0)
        return self._foreground

    def non_node_pixels(self) -> np.ndarray:
        """Stained pixels outside every node (optical density sum > ``NON_NODE_OD``): septa, vessels,
        fat, other tissue, pen marks: where a node finder must learn to say no."""
        if self._non_node is None:
            od = -np.log10(np.clip(self.image.astype(np.float32), 1.0, 255.0) / 255.0).sum(-1)
            self._non_node = np.argwhere((od > NON_NODE_OD) & (self.instances == 0))
        return self._non_node

    def metastasis_pixels(self) -> np.ndarray:
        """Outlined tumour pixels inside nodes (empty where the slide has no tumour outlines)."""
        if self._metastasis is None:
            m = np.zeros((0, 2), int) if self.tumour is None else np.argwhere(self.tumour & (self.instances > 0))
            self._metastasis = m
        return self._metastasis


def shared_border_band(instances: np.ndarray, border_px: float) -> np.ndarray:
    """Pixels of an instance lying within ``border_px`` of a different instance (bool)."""
    from scipy import ndimage as ndi
    from skimage.morphology import disk

    lab = np.asarray(instances)
    if border_px <= 0 or lab.max() < 2:
        return np.zeros(lab.shape, bool)
    fp = disk(max(1, int(round(border_px))))
    big = np.iinfo(np.int32).max
    lo_in = np.where(lab > 0, lab, big).astype(np.int32)
    hi = ndi.maximum_filter(lab.astype(np.int32), footprint=fp, mode="constant", cval=0)
    lo = ndi.minimum_filter(lo_in, footprint=fp, mode="constant", cval=big)
    fg = lab > 0
    return fg & (((hi != lab) & (hi > 0)) | ((lo != lab) & (lo != big)))


def node_targets(instances: np.ndarray, mpp: float, border_um: float | None) -> np.ndarray:
    """(C, H, W) uint8 targets from instance labels: node, and node_core when ``border_um`` is set."""
    node = (instances > 0).astype(np.uint8)
    if border_um is None:
        return node[None]
    core = node & ~shared_border_band(instances, border_um / mpp)
    return np.stack([node, core.astype(np.uint8)])


def _find(folder: str | Path, slide_id: str, kind: str) -> Path | None:
    """``find_annotation``, with several candidate files reported as an ``AnnotationError`` naming the folder."""
    try:
        return find_annotation(folder, slide_id, kind)
    except AmbiguousAnnotation as exc:
        raise AnnotationError(exc.message, folder) from None


def find_node_annotation(folder: str | Path, slide_id: str) -> Path:
    """The node annotation file of a slide (see module docstring); raises ``AnnotationError``."""

    p = _find(folder, slide_id, "nodes")
    if p is None:
        raise AnnotationError(f"no node annotation for slide {slide_id!r} (looked for {slide_id}.nodes.geojson, "
                              f"{slide_id}.geojson, .json, .xml)", folder)
    return p


def load_node_slide(path, annotation, mpp: float = 8.0, border_um: float | None = 24.0, slide_id: str | None = None,
                    patient_id: str | None = None, slide_mpp: float | None = None, tumour_annotation=None) -> NodeSlide:
    """Read one slide at ``mpp`` µm/px and rasterise its node outlines (and, when a tumour outline
    file is given, its tumour) on that grid."""

    with Slide(path, mpp=slide_mpp) as s:
        image = s.thumbnail(mpp)
        anns = read_annotations(annotation, slide_size=s.dimensions)
        polys, _ = node_outlines(anns)
        tumour = None
        if tumour_annotation is not None:
            tumour = tumour_outlines(read_annotations(tumour_annotation, slide_size=s.dimensions)).polygons
        scale = (mpp / s.mpp_x_required, mpp / s.mpp_y_required)
    instances = rasterise(polys, image.shape[:2], scale)
    sid = slide_id or Path(path).stem
    return NodeSlide(slide_id=sid, patient_id=patient_id or sid, path=str(path), mpp=float(mpp), image=image,
                     instances=instances, target=node_targets(instances, mpp, border_um), n_nodes=len(polys),
                     annotation=str(annotation),
                     tumour=None if tumour is None else rasterise(tumour, image.shape[:2], scale) > 0)


def load_node_slides(slides_csv, annotations, mpp: float = 8.0, border_um: float | None = 24.0,
                     tumour: bool = False) -> list[NodeSlide]:
    """Every slide of a slides table with its node outlines from the ``annotations`` folder (and, with
    ``tumour``, its tumour outlines from the same folder where it holds them: ``<slide_id>.tumour.*``)."""

    entries = read_slides_table(slides_csv)
    bad = [f"row {e.row}: {e.error}" for e in entries if e.error]
    if bad:
        raise InputTableError("cannot train on this table: " + "; ".join(bad), slides_csv)
    out = []
    for e in entries:
        ann = find_node_annotation(annotations, e.slide_id)
        tum = _tumour_file(annotations, e.slide_id, ann) if tumour else None
        out.append(load_node_slide(e.path, ann, mpp, border_um, slide_id=e.slide_id, patient_id=e.patient_id,
                                   slide_mpp=e.mpp, tumour_annotation=tum))
    return out


def _tumour_file(folder, slide_id: str, node_file: Path) -> Path | None:
    """The slide's own tumour outline file in the node annotation folder, or None (a generic
    ``<slide_id>.geojson`` is the node file, not a tumour file)."""
    p = _find(folder, slide_id, "tumour")
    return None if p is None or Path(p) == Path(node_file) else p


def mistake_components(s: NodeSlide, node_prob: np.ndarray, threshold: float = 0.5) -> list[np.ndarray]:
    """Where a model's node probabilities (H, W, on ``s``'s grid) disagree with the outlines: node
    called outside every node (on tissue, fat or glass), or missed inside a node, at least ``MISTAKE_MARGIN_UM`` from
    an outline, in connected parts of at least ``MISTAKE_MIN_MM2``. Returns one (n, 2) array of pixel
    coordinates (row, column) per part."""
    truth = s.instances > 0
    called = np.asarray(node_prob) >= threshold
    if called.shape != truth.shape:
        raise ValueError(f"node probabilities of shape {called.shape} for slide {s.slide_id} of shape {truth.shape}")
    margin_px = ndi.distance_transform_edt(~truth) + ndi.distance_transform_edt(truth)  # to the outline, either side
    wrong = (called != truth) & (margin_px * s.mpp >= MISTAKE_MARGIN_UM)
    labels, _ = ndi.label(wrong)
    min_px = MISTAKE_MIN_MM2 * 1e6 / (s.mpp * s.mpp)
    parts = ndi.find_objects(labels)
    out = []
    for k, sl in enumerate(parts, 1):
        pix = np.argwhere(labels[sl] == k)
        if len(pix) >= min_px:
            out.append(pix + [sl[0].start, sl[1].start])
    return out


def split_by_patient(items: list, val_fraction: float = 0.25, seed: int = 0) -> tuple[list, list]:
    """Split slides into (train, validation) with no patient in both. At least one patient goes to
    validation when there are two or more; with one patient validation is empty."""
    patients = sorted({it.patient_id for it in items})
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if len(patients) < 2 or val_fraction == 0:
        return list(items), []
    rng = np.random.default_rng(seed)
    order = [patients[i] for i in rng.permutation(len(patients))]
    n_val = min(len(patients) - 1, max(1, int(round(val_fraction * len(patients)))))
    val_p = set(order[:n_val])
    return [it for it in items if it.patient_id not in val_p], [it for it in items if it.patient_id in val_p]


def crop(array: np.ndarray, top: int, left: int, size: int, fill) -> np.ndarray:
    """A (size, size, ...) window of ``array`` (H, W, ...) at (top, left), padded with ``fill``."""
    H, W = array.shape[:2]
    out = np.full((size, size) + array.shape[2:], fill, array.dtype)
    y0, x0, y1, x1 = max(0, top), max(0, left), min(H, top + size), min(W, left + size)
    if y1 > y0 and x1 > x0:
        out[y0 - top : y1 - top, x0 - left : x1 - left] = array[y0:y1, x0:x1]
    return out


class NodeCropDataset:
    """Random crops from in-memory ``NodeSlide`` s (a map-style torch dataset).

    Item ``i`` of epoch ``e`` is a pure function of (seed, e, i): reruns, resumes and DDP ranks
    (which take disjoint indices) see the same crops. Returns (image (T, T, 3) uint8,
    target (C, T, T) float32).
    """

    def __init__(self, slides: list[NodeSlide], tile_size: int = 256, samples_per_epoch: int | None = None,
                 seed: int = 0, p_boundary: float = 0.5, p_foreground: float = 0.25, p_shared: float = 0.25,
                 p_non_node: float = 0.0, p_metastasis: float = 0.0, p_mistake: float = 0.0):
        if not slides:
            raise ValueError("no training slides")
        self.slides = slides
        self.tile = int(tile_size)
        self.seed = int(seed)
        self.epoch = 0
        self.p_boundary, self.p_foreground, self.p_shared = p_boundary, p_foreground, p_shared
        self.p_non_node = float(p_non_node)  # crops centred on tissue outside the nodes (hard negatives)
        self.p_metastasis = float(p_metastasis)  # crops centred on outlined tumour inside nodes
        self.p_mistake = float(p_mistake)  # crops centred on the model's mistakes (``set_mistakes``)
        # where each kind of crop ends on [0, 1): boundary, node, non-node, metastasis, mistake; the rest anywhere
        self._ends = np.cumsum([self.p_boundary, p_foreground, self.p_non_node, self.p_metastasis, self.p_mistake])
        if self._ends[-1] > 1:
            raise ValueError("p_boundary + p_foreground + p_non_node + p_metastasis + p_mistake must be <= 1")
        self.mistakes: list[tuple[int, np.ndarray]] = []  # (slide index, pixels) per mistake
        areas = np.array([s.image.shape[0] * s.image.shape[1] for s in slides], float)
        self.weights = areas / areas.sum()
        if samples_per_epoch is None:
            samples_per_epoch = default_samples_per_epoch(slides, self.tile)
        self.n = int(samples_per_epoch)
        self._with_metastases = self._metastasis_slides() if self.p_metastasis > 0 else None

    def _metastasis_slides(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(indices, slide-area weights) of the slides with outlined tumour inside nodes, or None."""
        idx = np.array([i for i, s in enumerate(self.slides) if len(s.metastasis_pixels())], int)
        return None if not len(idx) else (idx, self.weights[idx] / self.weights[idx].sum())

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def set_mistakes(self, per_slide: list[list[np.ndarray]]) -> None:
        """The mistakes to centre ``p_mistake`` of the crops on: per slide (in ``slides`` order) a list
        of (n, 2) pixel arrays (``mistake_components``). Until set, or where there is none, those crops
        are centred on tissue outside the nodes."""
        if len(per_slide) != len(self.slides):
            raise ValueError(f"mistakes for {len(per_slide)} slides, the dataset has {len(self.slides)}")
        self.mistakes = [(i, np.asarray(m)) for i, parts in enumerate(per_slide) for m in parts]

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        rng = np.random.default_rng([self.seed, self.epoch, int(i)])
        s = self.slides[int(rng.choice(len(self.slides), p=self.weights))]
        H, W = s.image.shape[:2]
        u = rng.random()
        pool = None
        if rng.random() < self.p_shared and len(s.shared_border_pixels()):
            pool = s.shared_border_pixels()
        elif u < self._ends[0]:
            pool = s.boundary_pixels()
        elif u < self._ends[1]:
            pool = s.foreground_pixels()
        elif u < self._ends[2]:
            pool = s.non_node_pixels()
        elif u < self._ends[3]:
            with_met = self._with_metastases
            if with_met is not None:  # one of the slides with outlined metastases, by slide area
                s = self.slides[int(rng.choice(with_met[0], p=with_met[1]))]
                H, W = s.image.shape[:2]
                pool = s.metastasis_pixels()
            else:  # no slide has outlined metastases: a node pixel instead
                pool = s.foreground_pixels()
        elif u < self._ends[4]:
            if self.mistakes:  # each mistake as likely as any other, whatever its size and slide
                k, pool = self.mistakes[int(rng.integers(len(self.mistakes)))]
                s = self.slides[k]
                H, W = s.image.shape[:2]
            else:
                pool = s.non_node_pixels()
        if pool is not None and len(pool):
            cy, cx = pool[int(rng.integers(len(pool)))]
            jitter = self.tile // 4
            cy += int(rng.integers(-jitter, jitter + 1))
            cx += int(rng.integers(-jitter, jitter + 1))
        else:
            cy, cx = int(rng.integers(0, H)), int(rng.integers(0, W))
        top, left = int(cy) - self.tile // 2, int(cx) - self.tile // 2
        img = crop(s.image, top, left, self.tile, 255)
        tgt = crop(np.moveaxis(s.target, 0, -1), top, left, self.tile, 0)
        return img, np.ascontiguousarray(np.moveaxis(tgt, -1, 0)).astype(np.float32)


def default_samples_per_epoch(slides: list[NodeSlide], tile: int) -> int:
    """About four crops per tile-sized area of the training slides (at least 32)."""
    tiles = sum(math.ceil(s.image.shape[0] / tile) * math.ceil(s.image.shape[1] / tile) for s in slides)
    return max(32, 4 * tiles)


def data_summary(train: list[NodeSlide], val: list[NodeSlide]) -> dict:
    """The card's training-data summary (counts, areas, patients)."""
    def part(items):
        return {"slides": len(items), "patients": len({s.patient_id for s in items}),
                "nodes": int(sum(s.n_nodes for s in items)),
                "node_area_mm2": round(sum(s.node_area_mm2 for s in items), 3),
                "slide_ids": [s.slide_id for s in items]}

    return {"train": part(train), "validation": part(val)}
