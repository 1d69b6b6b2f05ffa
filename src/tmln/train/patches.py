"""Training patches for the tumour classifier: from patch folders or from slides + annotations.

Two sources, one record type (``PatchRecord``) and one dataset (``PatchDataset``):

* **patch folders**: ``DIR/tumor/`` and ``DIR/normal/`` (aliases ``tumour``/``positive`` and
  ``negative``; names compared case-insensitively), images PNG/JPEG/TIFF found recursively below
  each class folder. RGBA is composited on white. Images are at ``source_mpp`` µm/px (default: the
  model's) and resampled to the model's µm/px, then centre-cropped (randomly cropped in training)
  or reflect-padded to ``patch_size``. Groups for the patient-level split come from a groups CSV
  (a path column and a group column) or from the file name's source-slide prefix (the name without
  its trailing numeric tokens, e.g. ``tumor_001_69916_134313.png`` -> ``tumor_001``).
* **slides + annotations**: a slides table (``slide_path``, ``patient_id``, optional ``mpp``) and
  an annotation folder holding ``<slide stem>.xml|.geojson|.json|.tumour.geojson`` per slide (read
  with ``tmln.annotations.read_annotations``; tumour = tumour classes minus exclusion classes, e.g.
  Camelyon16 ``_0``/``_1``/``Tumor`` minus ``_2``/``Exclusion``; NCRF ``positive`` minus
  ``negative``; an empty file = a tumour-free slide). Patch centres are drawn inside tumour (at least
  ``min_tumour_fraction`` of the patch tumour) and inside non-tumour tissue (patch touching no
  tumour, at least ``min_tissue_fraction`` tissue), on a mask at a few µm/px; pixels are read with
  ``Slide.read(..., mpp=model mpp)``. Each DataLoader worker opens its own ``Slide``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from tmln.annotations import AmbiguousAnnotation, candidate_names, outline_mask, read_annotations, tumour_outlines
from tmln.annotations import find_annotation as lookup
from tmln.cohort.table import read_slides_table
from tmln.errors import AnnotationError, InputTableError, TmlnError
from tmln.imaging import fit_to_patch, list_images, read_image, resample
from tmln.slide import Slide
from tmln.stain import normalise
from tmln.tissue import tissue_from_rgb

CLASS_FOLDERS = {"tumor": 1, "tumour": 1, "positive": 1, "normal": 0, "negative": 0}
CLASSES = ["normal", "tumour"]
MAX_GROUPS_LISTED = 200  # the model card lists the training/validation groups up to this many
_GROUP_PATH_COLUMNS = ("path", "file", "filename", "image")
_GROUP_COLUMNS = ("group", "patient_id", "patient", "slide_id", "slide", "camelyon16_slide")


@dataclass
class PatchRecord:
    """One training example. ``source`` is an image path (patch folders) or a slide index into the
    dataset's slide list; ``x``/``y`` are the patch's top-left corner in level-0 px (slides only)."""

    source: str | int
    label: int
    group: str
    x: float = 0.0
    y: float = 0.0
    slide_id: str = ""
    split: str = "train"  # "validation" for records of an explicit validation folder


@dataclass
class SlideSource:
    """A slide to read patches from (picklable; opened lazily in each worker)."""

    path: str
    slide_id: str
    patient_id: str
    mpp: float | None = None


@dataclass
class PatchSet:
    """Records plus what reading them needs, and a summary for the model card."""

    records: list[PatchRecord]
    slides: list[SlideSource] = field(default_factory=list)
    source_mpp: float | None = None  # patch folders: the images' µm/px (None = the model's)
    kind: str = "patches"  # "patches" or "slides"
    notes: list[str] = field(default_factory=list)

    def labels(self) -> np.ndarray:
        return np.array([r.label for r in self.records], dtype=np.int64)

    def groups(self) -> np.ndarray:
        return np.array([r.group for r in self.records], dtype=object)


# ---------------------------------------------------------------------------- patch folders
def source_prefix(name: str) -> str:
    """The source-slide prefix of a patch file name: the stem without up to two trailing numeric
    tokens (coordinates), e.g. ``tumor_001_69916_134313`` -> ``tumor_001``, ``S12-x1024-y2048`` ->
    ``S12``."""
    stem = Path(name).stem
    for _ in range(2):
        m = re.match(r"^(.+?)[_\-\s.]+[xy]?\d+$", stem)
        if not m:
            break
        stem = m.group(1)
    return stem


def collect_patch_folder(root: str | Path, groups_csv: str | Path | None = None,
                         source_mpp: float | None = None, *, val_folder: str | Path | None = None,
                         progress: bool = False, check_images: bool = True) -> PatchSet:
    """Records from ``root/<class>/**/*.{png,jpg,tif}`` (and, with ``val_folder``, the validation
    records of a second folder of the same classes, marked ``split="validation"``).

    Raises ``TmlnError`` naming the folder or file for: a missing folder, a missing or empty class
    folder, a sub-folder that is no known class, a validation folder whose classes differ, and (with
    ``check_images``, each image decoded once while indexing) an image that cannot be decoded (not an
    image, truncated). Greyscale images are expanded to RGB, RGBA composited on white, and images of
    another size resampled/cropped/padded to the patch (``PatchDataset``); mixed sizes are noted.
    """
    folders = [(Path(root), "train")] + ([(Path(val_folder), "validation")] if val_folder is not None else [])
    # each folder must hold both classes and nothing else, so a validation folder has the same classes
    found = [(folder, split, _class_folders(folder, split)) for folder, split in folders]
    group_map = _read_groups(groups_csv, Path(root)) if groups_csv else None
    listed = []
    for folder, split, class_dirs in found:
        for label, dirs in class_dirs.items():
            files = [(d, p) for d in dirs for p in list_images(d)]
            if not files:
                raise TmlnError(f"class folder {', '.join(d.name for d in dirs)} holds no PNG, JPEG or TIFF images", dirs[0])
            listed.extend((folder, split, label, p) for _, p in files)
    records, sizes = [], set()
    from tqdm import tqdm

    for folder, split, label, p in tqdm(listed, desc="indexing patches", unit="image", disable=not progress,
                                        leave=False, mininterval=1.0):
        if check_images:
            sizes.add(_check_image(p))
        rel = p.relative_to(folder).as_posix()
        if group_map is not None and split == "train":
            g = group_map.get(rel, group_map.get(p.name))
            if g is None:
                raise InputTableError(f"no group for image {rel}", groups_csv)
        else:
            g = source_prefix(p.name)
        if split == "validation":
            g = f"validation:{g}"
        records.append(PatchRecord(str(p), label, str(g), split=split))
    notes = []
    if len(sizes) > 1:
        shown = ", ".join(f"{w}x{h}" for w, h in sorted(sizes)[:5]) + (" ..." if len(sizes) > 5 else "")
        notes.append(f"images of {len(sizes)} sizes ({shown} px): each resampled to the model's µm/px, then "
                     "centre-cropped (random crops in training) or reflect-padded to the patch size")
    return PatchSet(records, source_mpp=source_mpp, kind="patches", notes=notes)


def _class_folders(root: Path, split: str = "train") -> dict[int, list[Path]]:
    """``{1: tumour folders, 0: normal folders}`` of a patch folder; errors name the folder."""
    what = "validation patch folder" if split == "validation" else "patch folder"
    if not root.is_dir():
        raise TmlnError(f"{what} not found", root)
    class_dirs: dict[int, list[Path]] = {0: [], 1: []}
    unknown = []
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        label = CLASS_FOLDERS.get(d.name.lower())
        if label is None:
            unknown.append(d.name)
        else:
            class_dirs[label].append(d)
    if not class_dirs[0] and not class_dirs[1]:
        raise TmlnError("no class folders: expected tumor/ (or tumour/, positive/) and normal/ (or negative/)", root)
    for label, want in ((1, "tumor/ (or tumour/, positive/)"), (0, "normal/ (or negative/)")):
        if not class_dirs[label]:
            raise TmlnError(f"{what}: missing class folder {want}: training and validation need both classes", root)
    if unknown:
        raise TmlnError(f"{what}: sub-folder(s) {', '.join(unknown)} are no class tmln knows (tumor/tumour/positive, "
                        "normal/negative): move them out of the patch folder", root)
    return class_dirs


def _check_image(path: Path) -> tuple[int, int]:
    """Decode an image once (catches non-images and truncated files); returns its (width, height)."""
    try:
        from PIL import Image

        with Image.open(path) as im:
            im.load()
            return im.size
    except Exception as exc:
        if path.suffix.lower() in (".tif", ".tiff"):  # high bit depth / multi-channel TIFFs: tifffile
            a = read_image(path)
            return a.shape[1], a.shape[0]
        raise TmlnError(f"cannot decode image ({type(exc).__name__}: {exc}); remove or replace the file", path) from None


def _read_groups(path: str | Path, root: Path, group_column: str | None = None) -> dict[str, str]:
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise InputTableError("groups table not found", path)
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as exc:
        raise InputTableError(f"not a readable CSV table ({exc})", path) from None
    cols = {c.strip().lower(): c for c in frame.columns}
    pcol = next((cols[c] for c in _GROUP_PATH_COLUMNS if c in cols), None)
    gcol = cols.get(group_column.lower()) if group_column else next((cols[c] for c in _GROUP_COLUMNS if c in cols), None)
    if pcol is None or gcol is None:
        raise InputTableError(f"groups table needs a path column ({'/'.join(_GROUP_PATH_COLUMNS)}) and a group "
                              f"column ({'/'.join(_GROUP_COLUMNS)}); found {', '.join(frame.columns)}", path)
    out = {}
    for p, g in zip(frame[pcol], frame[gcol]):
        p = str(p).strip().replace("\\", "/")
        out[p] = str(g).strip()
        out.setdefault(Path(p).name, str(g).strip())
    return out


# ---------------------------------------------------------------------------- slides + annotations
def find_annotation(folder: str | Path, slide_id: str) -> Path | None:
    """The tumour annotation of ``slide_id`` in ``folder``, by the rules ``tmln analyze`` uses
    (``tmln.annotations``: ``<id>.tumour.*`` first, then one generic ``<id>.geojson|.json|.xml``)."""

    try:
        return lookup(folder, slide_id, "tumour")
    except AmbiguousAnnotation as exc:
        raise AnnotationError(exc.message, folder) from None


def tumour_geometry(annotations) -> tuple[object, object]:
    """(tumour, ignore) shapely geometries in level-0 px from annotations: the outlines' tumour
    (``tmln.annotations.tumour_outlines``: tumour classes, holes honoured, minus exclusion classes;
    plain unclassified outlines are tumour); ``ignore`` (``Ignore``/``Ignore*``) regions are sampled
    as neither class. Either is None when empty."""

    t = tumour_outlines(list(annotations))
    return (None if t.tumour.is_empty else t.tumour), (None if t.ignore.is_empty else t.ignore)


def tissue_mask_from_thumbnail(rgb: np.ndarray, mpp: float) -> np.ndarray:
    """Tissue (True) on an RGB thumbnail at ``mpp`` µm/px, with ``tmln.tissue``'s detector (pen
    marks and glass rejected, morphological clean-up scaled to µm)."""

    mask, _ = tissue_from_rgb(np.ascontiguousarray(rgb), {"mpp": float(mpp)})
    return np.asarray(mask, dtype=bool)


def collect_slides(  # ten parameters: the slide-sampling options of `train tumour --slides`, one keyword each
        slides_csv: str | Path, annotations_dir: str | Path, mpp: float, patch_size: int, *,
        patches_per_class: int = 200, min_tumour_fraction: float = 0.5,
        min_tissue_fraction: float = 0.5, negative_pool_factor: int = 1, seed: int = 0,
        slide_mpp: float | None = None) -> PatchSet:
    """Patch records sampled from every slide of a slides table with its annotation.

    patches_per_class : at most this many tumour and this many normal patches per slide
        (``negative_pool_factor`` times as many normal candidates are drawn for hard-negative
        mining; the extra ones are marked ``group`` as usual and kept in ``PatchSet.records``
        after the first ``patches_per_class`` of each slide: see ``split_reserve``).
    """

    annotations_dir = Path(annotations_dir)
    if not annotations_dir.is_dir():
        raise TmlnError("annotation folder not found", annotations_dir)
    entries = read_slides_table(slides_csv, mpp=slide_mpp)
    bad = [e for e in entries if e.error]
    if bad:
        raise InputTableError(f"row {bad[0].row} ({bad[0].slide_path}): {bad[0].error}", slides_csv)
    rng = np.random.default_rng(seed)
    sources, records, notes = [], [], []
    ids = set()
    for e in entries:
        ann_path = find_annotation(annotations_dir, e.slide_id)
        if ann_path is None:
            raise AnnotationError(
                f"no annotation for slide {e.slide_id!r} (looked for {', '.join(candidate_names(e.slide_id, 'tumour'))}; "
                "give a tumour-free slide an empty GeoJSON FeatureCollection)", annotations_dir)
        idx = len(sources)
        sources.append(SlideSource(str(e.path), e.slide_id, e.patient_id, e.mpp))
        ids.add(e.slide_id)
        recs, note = _sample_slide(sources[-1], idx, ann_path, mpp, patch_size, patches_per_class,
                                   min_tumour_fraction, min_tissue_fraction, negative_pool_factor, rng)
        records += recs
        if note:
            notes.append(note)
    stray = sorted({p.name for p in annotations_dir.iterdir() if p.is_file() and not p.name.startswith(".")
                    and not any(p.name in candidate_names(i, "tumour") for i in ids)})
    if stray:
        notes.append(f"{len(stray)} file(s) in the annotation folder match no slide of the table: {', '.join(stray[:5])}"
                     + (" ..." if len(stray) > 5 else ""))
    if not records:
        raise TmlnError("no patches could be sampled from any slide (no tissue or tumour found)", slides_csv)
    labels = np.array([r.label for r in records if not _is_reserve(r)])
    if (labels == 1).sum() == 0 or (labels == 0).sum() == 0:
        missing = "tumour" if (labels == 1).sum() == 0 else "normal"
        raise TmlnError(f"no {missing} patches could be sampled from the slides: training needs both classes", slides_csv)
    return PatchSet(records, slides=sources, kind="slides", notes=notes)


RESERVE_PREFIX = "reserve:"


def _is_reserve(r: PatchRecord) -> bool:
    return r.slide_id.startswith(RESERVE_PREFIX)


def split_reserve(records: Sequence[PatchRecord]) -> tuple[list[int], list[int]]:
    """Indices of (training records, reserve normal candidates for hard-negative mining)."""
    main = [i for i, r in enumerate(records) if not _is_reserve(r)]
    reserve = [i for i, r in enumerate(records) if _is_reserve(r)]
    return main, reserve


def _sample_slide(  # ten parameters: collect_slides' sampling options, passed on per slide
        src: SlideSource, idx: int, ann_path: Path, mpp: float, patch_size: int, per_class: int,
        min_tumour: float, min_tissue: float, pool_factor: int, rng) -> tuple[list[PatchRecord], str]:
    from scipy import ndimage

    with Slide(src.path, mpp=src.mpp) as s:
        anns = read_annotations(ann_path, slide_size=s.dimensions)
        tumour, ignore = tumour_geometry(anns)
        patch_um = patch_size * mpp
        mask_mpp = min(8.0, patch_um / 4.0)
        # keep the mask below ~4k px per side
        mask_mpp = max(mask_mpp, max(s.size_um) / 4096.0)
        thumb = s.thumbnail(mask_mpp)
        mx, my = s.mpp_x, s.mpp_y
        W0, H0 = s.dimensions
    h, w = thumb.shape[:2]
    scale = (mask_mpp / mx, mask_mpp / my)  # level-0 px per mask px
    tissue = tissue_mask_from_thumbnail(thumb, mask_mpp)
    tum = outline_mask(tumour, (h, w), scale)
    ign = outline_mask(ignore, (h, w), scale)
    win = max(1, int(round(patch_um / mask_mpp)))
    tum_frac = ndimage.uniform_filter(tum.astype(np.float32), size=win, mode="constant")
    tis_frac = ndimage.uniform_filter((tissue & ~ign).astype(np.float32), size=win, mode="constant")
    touch_tum = ndimage.maximum_filter(tum, size=win + 2, mode="constant")
    touch_ign = ndimage.maximum_filter(ign, size=win, mode="constant")
    # patch must lie inside the slide
    half = patch_um / 2.0
    yy, xx = np.mgrid[0:h, 0:w]
    cx_um, cy_um = (xx + 0.5) * mask_mpp, (yy + 0.5) * mask_mpp
    inside = (cx_um - half >= 0) & (cy_um - half >= 0) & (cx_um + half <= W0 * mx) & (cy_um + half <= H0 * my)
    pos = inside & tum & (tum_frac >= min_tumour - 1e-6) & ~touch_ign
    neg = inside & ~touch_tum & ~touch_ign & (tis_frac >= min_tissue - 1e-6)
    recs = []
    counts = {}
    for label, cand, n_want in ((1, pos, per_class), (0, neg, per_class * max(1, pool_factor))):
        ys, xs = np.nonzero(cand)
        n = min(n_want, ys.size)
        counts[label] = n
        if n == 0:
            continue
        pick = np.sort(rng.choice(ys.size, n, replace=False))
        jit = rng.random((n, 2))
        for k, j in enumerate(pick):
            cx = (xs[j] + jit[k, 0]) * mask_mpp / mx
            cy = (ys[j] + jit[k, 1]) * mask_mpp / my
            x0, y0 = cx - half / mx, cy - half / my
            x0 = float(min(max(0.0, x0), W0 - patch_um / mx))
            y0 = float(min(max(0.0, y0), H0 - patch_um / my))
            reserve = label == 0 and k >= per_class
            sid = (RESERVE_PREFIX if reserve else "") + src.slide_id
            recs.append(PatchRecord(idx, label, src.patient_id, x0, y0, sid))
    # reserve candidates were drawn in random order: make "first per_class" a random subset
    if counts.get(0, 0) > per_class:
        negs = [r for r in recs if r.label == 0]
        order = rng.permutation(len(negs))
        for rank, i in enumerate(order):
            negs[i].slide_id = (RESERVE_PREFIX if rank >= per_class else "") + src.slide_id
    note = ""
    if counts.get(1, 0) == 0 and tumour is not None and not tumour.is_empty:
        note = f"{src.slide_id}: tumour outlined but no patch of {patch_um:.0f} µm fits {min_tumour:.0%} inside it"
    if counts.get(0, 0) == 0:
        note = (note + "; " if note else "") + f"{src.slide_id}: no tumour-free tissue for normal patches"
    return recs, note


# ---------------------------------------------------------------------------- split and balance
def group_split(labels: np.ndarray, groups: np.ndarray, val_fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, validation indices) with no group (patient) on both sides.

    Uses ``StratifiedGroupKFold`` with ``round(1 / val_fraction)`` folds and takes the first fold
    whose validation and training parts both hold both classes (else the first whose training part
    does). ``val_fraction = 0`` -> everything is training. Raises ``TmlnError`` with fewer than two
    groups.
    """
    n = len(labels)
    if val_fraction <= 0:
        return np.arange(n), np.array([], dtype=np.int64)
    if not 0 < val_fraction < 1:
        raise TmlnError(f"val_fraction must be in [0, 1), got {val_fraction}")
    uniq = np.unique(groups)
    if uniq.size < 2:
        raise TmlnError(f"a patient-level validation split needs at least 2 patients/groups, got {uniq.size} "
                        f"({uniq[0] if uniq.size else 'none'}); add groups or set the validation fraction to 0")
    from sklearn.model_selection import StratifiedGroupKFold

    k = int(min(max(2, round(1 / val_fraction)), uniq.size))
    codes = np.unique(groups, return_inverse=True)[1]
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    folds = list(splitter.split(np.zeros(n), labels, codes))
    for need_val_both in (True, False):
        for tr, va in folds:
            tr_ok = np.unique(labels[tr]).size == 2
            va_ok = np.unique(labels[va]).size == 2
            if tr_ok and (va_ok or not need_val_both):
                return np.sort(tr), np.sort(va)
    raise TmlnError("no patient-level split leaves both classes in the training set")


def balance_weights(labels: np.ndarray) -> np.ndarray:
    """Per-sample weights giving each class the same total weight."""
    labels = np.asarray(labels)
    w = np.zeros(labels.size, dtype=np.float64)
    for c in np.unique(labels):
        m = labels == c
        w[m] = 1.0 / m.sum()
    return w / w.sum()


def hard_negative_weights(labels: np.ndarray, scores: np.ndarray, top_fraction: float = 0.25,
                          boost: float = 4.0) -> np.ndarray:
    """Balanced weights where the ``top_fraction`` highest-scoring negatives (by tumour probability)
    are ``boost`` times as likely as the other negatives; classes keep equal total weight."""
    labels = np.asarray(labels)
    scores = np.asarray(scores, dtype=np.float64)
    w = balance_weights(labels)
    neg = np.nonzero(labels == 0)[0]
    if neg.size == 0:
        return w
    k = max(1, int(math.ceil(top_fraction * neg.size)))
    top = neg[np.argsort(-scores[neg], kind="stable")[:k]]
    total_neg = w[neg].sum()
    w[top] *= boost
    w[neg] *= total_neg / w[neg].sum()
    return w / w.sum()


# ---------------------------------------------------------------------------- dataset
class PatchDataset:
    """``(uint8 (H, W, 3) patch, label)`` items at the model's µm/px and patch size.

    train : random crops of oversized patch-folder images (else centred crops).
    stain : a Macenko reference (``tmln.stain``) applied to each patch, or None.
    Picklable: slides are opened lazily, once per worker process.
    """

    def __init__(self, patch_set: PatchSet, indices: Sequence[int], mpp: float, patch_size: int,
                 train: bool = False, stain: dict | None = None, seed: int = 0):
        self.set = patch_set
        self.indices = np.asarray(indices, dtype=np.int64)
        self.mpp = float(mpp)
        self.patch_size = int(patch_size)
        self.train = train
        self.stain = stain
        self.seed = seed
        self.epoch = 0
        self._slides: dict[int, object] = {}

    def __len__(self) -> int:
        return int(self.indices.size)

    def labels(self) -> np.ndarray:
        return np.array([self.set.records[i].label for i in self.indices], dtype=np.int64)

    def __getstate__(self):
        d = dict(self.__dict__)
        d["_slides"] = {}
        return d

    def _slide(self, k: int):
        s = self._slides.get(k)
        if s is None:
            src = self.set.slides[k]
            s = Slide(src.path, mpp=src.mpp)
            self._slides[k] = s
        return s

    def read(self, i: int, rng: np.random.Generator | None = None) -> np.ndarray:
        r = self.set.records[int(self.indices[i])]
        if isinstance(r.source, (int, np.integer)):
            img = self._slide(int(r.source)).read((r.x, r.y), (self.patch_size, self.patch_size), mpp=self.mpp)
        else:
            img = resample(read_image(r.source), self.set.source_mpp, self.mpp)
            img = fit_to_patch(img, self.patch_size, rng)
        if self.stain is not None:
            img = normalise(img, self.stain)
        return img

    def __getitem__(self, i: int):
        import torch

        rng = np.random.default_rng((self.seed, self.epoch, int(i))) if self.train else None
        img = self.read(int(i), rng)
        return torch.from_numpy(img), int(self.set.records[int(self.indices[i])].label)

    def close(self) -> None:
        for s in self._slides.values():
            s.close()
        self._slides = {}


def summarise(patch_set: PatchSet, train_idx: Sequence[int], val_idx: Sequence[int]) -> dict:
    """Training-data summary for the model card: patches per class per split, slides, patients."""
    recs = patch_set.records

    def part(idx):
        idx = list(idx)
        labels = [recs[i].label for i in idx]
        groups = sorted({recs[i].group for i in idx})
        out = {"n_patches": len(idx), "n_normal": int(sum(1 for v in labels if v == 0)),
               "n_tumour": int(sum(1 for v in labels if v == 1)), "n_groups": len(groups)}
        if len(groups) <= MAX_GROUPS_LISTED:  # (PCam: 20,000 one-patch groups would bloat the card)
            out["groups"] = groups
        if patch_set.kind == "slides":
            out["slides"] = sorted({recs[i].slide_id.removeprefix(RESERVE_PREFIX) for i in idx})
            out["n_slides"] = len(out["slides"])
        return out

    return {"source": patch_set.kind, "group_by": "patient_id" if patch_set.kind == "slides" else "group",
            "train": part(train_idx), "validation": part(val_idx), "notes": list(patch_set.notes)}
