"""Camelyon16 lesion-detection FROC, following the rules of the challenge's official evaluation code.

Reference: computationalpathologygroup/Camelyon16, ``Python/Evaluation_FROC.py`` (read, not copied).
Every rule below is that code's; where tmln must differ (it starts from annotation polygons, not
from the official mask TIFFs) the difference is stated. ``docs/evaluation.md`` has the full text.

Units: predictions and annotations are in level-0 pixels; ``mpp`` is level-0 µm/px; the evaluation
mask lives at ``level`` (downsample ``2**level``, 32 for the default level 5).

1. Evaluation mask: the tumour of the outlines (``tmln.annotations.tumour_outlines``: tumour
   polygons, holes honoured, minus exclusion polygons such as ``_2``, ``Exclusion``, NCRF
   ``negative``), rasterised on the level grid (a pixel is tumour when its centre lies inside). Pixels whose Euclidean distance to tumour is < 75 µm / 2
   (= ``75 / (mpp * 2**level * 2)`` level pixels) join the tumour; holes are filled; regions are
   labelled with 8-connectivity.
2. ITC regions: ellipse major-axis length (scikit-image ``regionprops``, level pixels) below
   ``275 / (mpp * 2**level)`` (200 µm ITC limit plus the 75 µm margin). Hits on them are ignored.
3. A prediction at (x, y) hits the region at row ``floor(y / 2**level)``, column ``floor(x / 2**level)``.
   Several hits on one region count once, with the highest probability (a hit must be > 0).
   Predictions outside all regions, and every prediction on a slide without tumour, are false
   positives.
4. Curve: thresholds are the distinct pooled probabilities (false positives, and one value per
   region, 0 for missed and ITC regions) except the lowest; at each, FPs/slide = #FP >= t /
   number of slides, sensitivity = #lesions with probability >= t / number of non-ITC lesions;
   a final point (0, 0) closes the curve.
5. FROC score: mean of the sensitivities linearly interpolated (``numpy.interp`` on the reversed
   curve) at 0.25, 0.5, 1, 2, 4 and 8 false positives per slide.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from tmln.annotations import annotation_index, read_annotations, tumour_outlines
from tmln.atomic import atomic_path, write_csv, write_json
from tmln.errors import InputTableError, SlideError, TmlnError
from tmln.evaluate.tables import numeric_column, read_table
from tmln.regions import burn
from tmln.slide import Slide

FROC_FPS_PER_SLIDE = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
DEFAULT_LEVEL = 5
TUMOUR_CELLS_UM = 75.0  # "5 tumour cells": the margin is half of it, 37.5 µm
ITC_MAJOR_AXIS_UM = 275.0  # 200 µm ITC limit + 75 µm added by the margin
CAMELYON16_MPP = 0.243  # the official code's L0_RESOLUTION, used for every slide
TRUTH_SUFFIXES = (".xml", ".geojson", ".json")


# ---------------------------------------------------------------------------- evaluation mask
@dataclass(frozen=True)
class EvaluationMask:
    """Labelled tumour regions of one slide on the evaluation grid.

    labels : int32 (rows, cols) at ``level``; 0 = background, 1..n = regions (raster order).
    itc : labels of isolated-tumour-cell regions (hits ignored).
    mpp : level-0 µm/px used for the margin and the ITC limit.
    """

    labels: np.ndarray
    itc: frozenset
    mpp: float
    level: int = DEFAULT_LEVEL
    size: tuple | None = None  # (width, height) level-0 px of the slide, when known

    @property
    def downsample(self) -> int:
        return 2 ** self.level

    @property
    def n_regions(self) -> int:
        return int(self.labels.max()) if self.labels.size else 0

    @property
    def n_lesions(self) -> int:
        """Regions that must be detected (non-ITC)."""
        return self.n_regions - len(self.itc)

    def region_at(self, x, y) -> np.ndarray:
        """Region label under level-0 points (arrays); raises ``ValueError`` outside the grid."""
        col = np.floor(np.asarray(x, dtype=float) / self.downsample).astype(np.int64)
        row = np.floor(np.asarray(y, dtype=float) / self.downsample).astype(np.int64)
        h, w = self.labels.shape
        sw, sh = self.size or (w * self.downsample, h * self.downsample)
        xa, ya = np.ravel(np.asarray(x, dtype=float)), np.ravel(np.asarray(y, dtype=float))
        outside = (row < 0) | (col < 0) | (row >= h) | (col >= w) | (xa >= sw) | (ya >= sh)
        if outside.any():
            i = int(np.flatnonzero(outside)[0])
            raise ValueError(f"detection {i + 1} at ({xa[i]:g}, {ya[i]:g}) is outside the slide "
                             f"({sw} x {sh} px at level 0)")
        return self.labels[row, col]


def grid_shape(width: int, height: int, level: int = DEFAULT_LEVEL) -> tuple[int, int]:
    """(rows, cols) of the evaluation grid: ceil(size / 2**level)."""
    d = 2 ** level
    return int(math.ceil(height / d)), int(math.ceil(width / d))


def rasterise_truth(annotations: Iterable, width: int, height: int, level: int = DEFAULT_LEVEL) -> np.ndarray:
    """Binary tumour mask (bool, level grid) of the outlines' tumour (``tmln.annotations.tumour_outlines``:
    tumour polygons, holes honoured, minus exclusion polygons).

    A pixel is set when its centre lies inside (``tmln.annotations.outline_mask``). A tumour part too
    small to contain any pixel centre still marks the pixel holding its representative point, so
    tiny lesions are not lost.
    """

    shape = grid_shape(width, height, level)
    tumour = np.zeros(shape, dtype=bool)
    d = float(2 ** level)
    for poly in tumour_outlines(list(annotations)).polygons:
        _fill_polygon(poly, tumour, d, True)
    return tumour


def _fill_polygon(poly, target: np.ndarray, d: float, keep_tiny: bool) -> None:
    """OR one polygon (pixel centres inside, holes respected) into ``target``."""

    if not burn(target, poly, d) and keep_tiny:
        p = poly.representative_point()
        r, c = int(math.floor(p.y / d)), int(math.floor(p.x / d))
        if 0 <= r < target.shape[0] and 0 <= c < target.shape[1]:
            target[r, c] = True


def evaluation_mask(tumour: np.ndarray, mpp: float, level: int = DEFAULT_LEVEL) -> EvaluationMask:
    """Official steps 1-2 on a binary tumour mask at ``level``: margin, fill holes, 8-labels, ITC list."""
    from skimage.measure import label, regionprops

    if not (mpp > 0 and math.isfinite(mpp)):
        raise ValueError(f"mpp must be a positive number, got {mpp!r}")
    tumour = np.asarray(tumour, dtype=bool)
    labels = np.zeros(tumour.shape, dtype=np.int32)
    if not tumour.any():
        return EvaluationMask(labels, frozenset(), float(mpp), level)
    d = 2 ** level
    margin_px = TUMOUR_CELLS_UM / (mpp * d * 2)
    # Work on the tumour bounding box padded beyond the margin: the distance test, hole filling
    # (holes = background not connected to the border) and raster-order labels are unchanged.
    pad = int(math.ceil(margin_px)) + 2
    rows, cols = np.flatnonzero(tumour.any(axis=1)), np.flatnonzero(tumour.any(axis=0))
    r0, r1 = max(rows[0] - pad, 0), min(rows[-1] + pad + 1, tumour.shape[0])
    c0, c1 = max(cols[0] - pad, 0), min(cols[-1] + pad + 1, tumour.shape[1])
    crop = tumour[r0:r1, c0:c1]
    labels[r0:r1, c0:c1] = label(_fill_holes(_within_distance(crop, margin_px)), connectivity=2)
    itc_limit_px = ITC_MAJOR_AXIS_UM / (mpp * d)
    itc = frozenset(int(p.label) for p in regionprops(labels) if p.axis_major_length < itc_limit_px)
    return EvaluationMask(labels, itc, float(mpp), level)


def _within_distance(mask: np.ndarray, radius: float) -> np.ndarray:
    """Pixels whose Euclidean distance to ``mask`` is < ``radius`` (``distance_transform_edt < r``).

    For small radii a dilation by the disc {offsets with length < r} (OpenCV) gives the identical
    set far faster; large radii use scipy's exact distance transform.
    """
    from scipy import ndimage

    k = int(math.ceil(radius))
    if k > 24:
        return ndimage.distance_transform_edt(~mask) < radius
    import cv2

    yy, xx = np.mgrid[-k:k + 1, -k:k + 1]
    disc = (np.hypot(yy, xx) < radius).astype(np.uint8)
    return cv2.dilate(mask.astype(np.uint8), disc, borderType=cv2.BORDER_CONSTANT, borderValue=0) > 0


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """``scipy.ndimage.binary_fill_holes`` (background 4-connected to the border stays) via an
    OpenCV flood fill from a 1-px background frame."""
    import cv2

    pad = np.pad(mask.astype(np.uint8), 1)
    cv2.floodFill(pad, np.zeros((pad.shape[0] + 2, pad.shape[1] + 2), np.uint8), (0, 0), 2, flags=4)
    return pad[1:-1, 1:-1] != 2


def evaluation_mask_from_annotations(annotations: Iterable, width: int, height: int, mpp: float,
                                     level: int = DEFAULT_LEVEL) -> EvaluationMask:
    """Evaluation mask of one slide from its annotations (level-0 px; slide ``width`` x ``height`` px)."""
    m = evaluation_mask(rasterise_truth(annotations, width, height, level), mpp, level)
    return EvaluationMask(m.labels, m.itc, m.mpp, m.level, (int(width), int(height)))


# ---------------------------------------------------------------------------- predictions
_PROB_NAMES = ("probability", "prob", "p", "score", "confidence", "p_tumour", "p_tumor")
_X_NAMES = ("x", "x_px", "coord_x", "x_level0")
_Y_NAMES = ("y", "y_px", "coord_y", "y_level0")


def read_predictions(path: str | Path):
    """Camelyon16 submission CSV: ``probability,x,y`` per detection (level-0 px), header optional.

    Returns a DataFrame with float columns ``probability``, ``x``, ``y`` (an empty file = no
    detections). Probabilities must lie in [0, 1] and coordinates be finite and >= 0.
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise InputTableError("predictions file not found", path)
    text = path.read_text(encoding="utf-8-sig", errors="replace")
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        return pd.DataFrame({"probability": [], "x": [], "y": []}, dtype=float)
    first = [f.strip().strip('"').lower() for f in re.split(r"[,;\t]", lines[0])]
    has_header = not _is_number(first[0])
    sep = "," if "," in lines[0] else ("\t" if "\t" in lines[0] else ";")
    try:
        frame = pd.read_csv(path, header=0 if has_header else None, sep=sep, skipinitialspace=True,
                            encoding="utf-8-sig")
    except (pd.errors.ParserError, ValueError) as exc:
        raise InputTableError(f"not a readable predictions CSV ({exc})", path) from None
    if has_header:
        frame.columns = [str(c).strip().lower() for c in frame.columns]
        names = {}
        for canon, options in (("probability", _PROB_NAMES), ("x", _X_NAMES), ("y", _Y_NAMES)):
            found = next((c for c in options if c in frame.columns), None)
            names[canon] = found
        if any(v is None for v in names.values()):
            if frame.shape[1] < 3:
                raise InputTableError("predictions need 3 columns: probability,x,y", path)
            names = dict(zip(("probability", "x", "y"), frame.columns[:3]))
        frame = frame[[names["probability"], names["x"], names["y"]]]
    else:
        if frame.shape[1] < 3:
            raise InputTableError("predictions need 3 columns: probability,x,y", path)
        frame = frame.iloc[:, :3]
    frame.columns = ["probability", "x", "y"]
    out = pd.DataFrame({c: _numbers(frame, c, path, has_header) for c in ("probability", "x", "y")})
    bad = (out["probability"] < 0) | (out["probability"] > 1)
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise InputTableError(f"row {i + 1 + has_header}: probability {out['probability'].iloc[i]:g} is outside [0, 1]", path)
    neg = (out["x"] < 0) | (out["y"] < 0)
    if neg.any():
        i = int(np.flatnonzero(neg.to_numpy())[0])
        raise InputTableError(f"row {i + 1 + has_header}: negative coordinate ({out['x'].iloc[i]:g}, {out['y'].iloc[i]:g})", path)
    return out


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def _numbers(frame, column, path, has_header):
    import pandas as pd

    values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(values)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputTableError(f"row {i + 1 + has_header}: {column} is not a finite number ({frame[column].iloc[i]!r})", path)
    return values


# ---------------------------------------------------------------------------- per-slide scoring
@dataclass
class SlideDetections:
    """One slide's contribution to the FROC (the official ``compute_FP_TP_Probs``).

    fp_probs : probabilities of the false positives.
    region_probs : one value per region of the evaluation mask (index = label - 1): the highest
        hit probability for lesions, 0 for missed lesions and for ITC regions.
    n_lesions / n_itc : non-ITC and ITC regions.
    detections : per prediction: probability, x, y, region (0 = none) and outcome
        (``tp`` the counted hit, ``duplicate`` a further hit on a counted lesion, ``itc`` ignored,
        ``fp``; a 0-probability hit on a lesion is ``duplicate`` as it cannot count).
    """

    slide_id: str
    is_tumour: bool
    fp_probs: np.ndarray
    region_probs: np.ndarray
    n_lesions: int
    n_itc: int = 0
    detections: object = None  # pandas DataFrame
    itc_labels: tuple = ()

    def __post_init__(self):
        import pandas as pd

        self.fp_probs = np.asarray(self.fp_probs, dtype=float)
        self.region_probs = np.asarray(self.region_probs, dtype=float)
        if self.detections is None:  # built from probabilities alone: a table without coordinates
            hits = np.flatnonzero(self.region_probs > 0)
            probs = np.r_[self.region_probs[hits], self.fp_probs]
            self.detections = pd.DataFrame({
                "probability": probs, "x": np.full(probs.size, np.nan), "y": np.full(probs.size, np.nan),
                "region": np.r_[hits + 1, np.zeros(self.fp_probs.size, dtype=int)].astype(int),
                "outcome": ["tp"] * hits.size + ["fp"] * self.fp_probs.size})

    @property
    def lesion_probs(self) -> np.ndarray:
        """Highest hit probability per non-ITC lesion (0 = missed)."""
        itc = set(self.itc_labels)
        keep = [i for i in range(len(self.region_probs)) if (i + 1) not in itc]
        return self.region_probs[keep]


def score_slide(slide_id: str, predictions, mask: EvaluationMask | None, path: str | Path | None = None) -> SlideDetections:
    """Classify one slide's predictions (DataFrame ``probability,x,y``) against its mask.

    ``mask=None`` is a normal slide: every prediction is a false positive. On a tumour slide whose
    regions are all ITC (0 lesions) hits on them are ignored and the rest are false positives.
    ``path`` names the predictions file in errors.
    """
    import pandas as pd

    probs = np.asarray(predictions["probability"], dtype=float)
    xs = np.asarray(predictions["x"], dtype=float)
    ys = np.asarray(predictions["y"], dtype=float)
    n = len(probs)
    if mask is None:
        det = pd.DataFrame({"probability": probs, "x": xs, "y": ys, "region": np.zeros(n, dtype=int),
                            "outcome": ["fp"] * n})
        return SlideDetections(slide_id, False, probs.copy(), np.zeros(0), 0, 0, det)
    try:
        regions = mask.region_at(xs, ys).astype(int) if n else np.zeros(0, dtype=int)
    except ValueError as exc:
        raise InputTableError(str(exc), path or slide_id) from None
    region_probs = np.zeros(mask.n_regions, dtype=float)
    best_row = np.full(mask.n_regions, -1, dtype=int)
    outcome = np.empty(n, dtype=object)
    for i in range(n):  # in file order, as the official loop: the first of equal maxima is kept
        r = regions[i]
        if r == 0:
            outcome[i] = "fp"
        elif r in mask.itc:
            outcome[i] = "itc"
        else:
            outcome[i] = "duplicate"
            if probs[i] > region_probs[r - 1]:
                region_probs[r - 1] = probs[i]
                best_row[r - 1] = i
    outcome[best_row[best_row >= 0]] = "tp"
    det = pd.DataFrame({"probability": probs, "x": xs, "y": ys, "region": regions, "outcome": outcome})
    return SlideDetections(slide_id, True, probs[regions == 0].copy(), region_probs, mask.n_lesions,
                           len(mask.itc), det, tuple(sorted(mask.itc)))


# ---------------------------------------------------------------------------- curve and score
def froc_curve(slides: Sequence[SlideDetections], official_thresholds: bool = True):
    """The FROC curve (official ``computeFROC``) as a DataFrame sorted by decreasing FPs/slide.

    Columns: ``threshold`` (probability; inf for the closing point), ``fps_per_slide``,
    ``sensitivity``. ``official_thresholds=False`` adds 0 to the pooled probabilities before the
    lowest is dropped, so that the lowest real probability is kept as a threshold even when no
    lesion was missed and no ITC region exists (the official code would drop it).
    """
    import pandas as pd

    if not slides:
        raise TmlnError("no slides to evaluate")
    n_lesions = sum(s.n_lesions for s in slides)
    if n_lesions == 0:
        raise TmlnError("the truth has no lesion to detect (no tumour region above the ITC size): FROC is undefined")
    fp = np.concatenate([s.fp_probs for s in slides]) if slides else np.zeros(0)
    tp = np.concatenate([s.region_probs for s in slides])
    pool = np.concatenate([fp, tp] + ([] if official_thresholds else [np.zeros(1)]))
    thresholds = np.unique(pool)[1:]
    fp_sorted, tp_sorted = np.sort(fp), np.sort(tp)
    n_fp = len(fp_sorted) - np.searchsorted(fp_sorted, thresholds, side="left")  # count >= t
    n_tp = len(tp_sorted) - np.searchsorted(tp_sorted, thresholds, side="left")
    curve = pd.DataFrame({
        "threshold": np.append(thresholds, np.inf),
        "fps_per_slide": np.append(n_fp, 0) / float(len(slides)),
        "sensitivity": np.append(n_tp, 0) / float(n_lesions),
    })
    return curve


def froc_score(curve, fps_per_slide: Sequence[float] = FROC_FPS_PER_SLIDE) -> tuple[float, dict[str, float]]:
    """(mean sensitivity, {"0.25": s, ...}) interpolated on ``curve`` at the given FPs/slide."""
    fps = curve["fps_per_slide"].to_numpy()[::-1]
    sens = curve["sensitivity"].to_numpy()[::-1]
    values = np.interp(np.asarray(fps_per_slide, dtype=float), fps, sens)
    return float(np.mean(values)), {_fmt(f): float(v) for f, v in zip(fps_per_slide, values)}


def _fmt(f: float) -> str:
    return f"{f:g}"


@dataclass
class FrocResult:
    """Everything ``tmln evaluate froc`` writes."""

    froc: float
    sensitivities: dict
    curve: object  # DataFrame threshold, fps_per_slide, sensitivity
    slides: object  # DataFrame, one row per slide
    detections: object  # DataFrame, one row per prediction
    n_slides: int
    n_tumour_slides: int
    n_lesions: int
    n_itc: int
    level: int = DEFAULT_LEVEL
    official_thresholds: bool = True
    settings: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "froc": self.froc,
            "sensitivities": self.sensitivities,
            "n_slides": self.n_slides,
            "n_tumour_slides": self.n_tumour_slides,
            "n_lesions": self.n_lesions,
            "n_itc_regions": self.n_itc,
            "n_predictions": int(len(self.detections)),
            "n_false_positives": int((self.detections["outcome"] == "fp").sum()),
            "evaluation_level": self.level,
            "evaluation_downsample": 2 ** self.level,
            "margin_um": TUMOUR_CELLS_UM / 2,
            "itc_major_axis_um": ITC_MAJOR_AXIS_UM,
            "official_thresholds": self.official_thresholds,
            **self.settings,
        }


def compute_froc(slides: Sequence[SlideDetections], official_thresholds: bool = True,
                 level: int = DEFAULT_LEVEL) -> FrocResult:
    """Pool per-slide detections into the curve and the score (the slide order does not matter)."""
    import pandas as pd

    curve = froc_curve(slides, official_thresholds)
    score, sens = froc_score(curve)
    rows, dets = [], []
    for s in slides:
        lp = s.lesion_probs
        rows.append({
            "slide_id": s.slide_id, "is_tumour": s.is_tumour, "n_lesions": s.n_lesions, "n_itc_regions": s.n_itc,
            "n_lesions_hit": int((lp > 0).sum()), "n_predictions": int(len(s.detections)),
            "n_false_positives": int(len(s.fp_probs)),
            "max_probability": float(s.detections["probability"].max()) if len(s.detections) else 0.0,
        })
        d = s.detections.copy()
        d.insert(0, "slide_id", s.slide_id)
        dets.append(d)
    per_slide = pd.DataFrame(rows).sort_values("slide_id", kind="stable").reset_index(drop=True)
    detections = (pd.concat(dets, ignore_index=True) if dets else pd.DataFrame(
        columns=["slide_id", "probability", "x", "y", "region", "outcome"]))
    detections = detections.sort_values("slide_id", kind="stable").reset_index(drop=True)
    return FrocResult(
        froc=score, sensitivities=sens, curve=curve, slides=per_slide, detections=detections,
        n_slides=len(slides), n_tumour_slides=int(sum(s.is_tumour for s in slides)),
        n_lesions=int(sum(s.n_lesions for s in slides)), n_itc=int(sum(s.n_itc for s in slides)),
        level=level, official_thresholds=official_thresholds,
    )


# ---------------------------------------------------------------------------- folders
@dataclass(frozen=True)
class SlideGeometry:
    """Level-0 size (px) and µm/px of a slide, all the evaluation needs from it."""

    width: int
    height: int
    mpp: float


def _index_by_stem(folder: Path, suffixes: Sequence[str] | None) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):
            continue
        if suffixes is not None and p.suffix.lower() not in suffixes:
            continue
        out.setdefault(p.stem, p)
    return out


def _lookup(index: Mapping[str, Path], key: str):
    if key in index:
        return index[key]
    low = {k.lower(): v for k, v in index.items()}
    return low.get(key.lower())


def slide_geometries(slides: str | Path | None, slide_ids: Iterable[str], mpp: float | None = None) -> dict[str, SlideGeometry]:
    """Size and µm/px per slide id from a folder of slides (matched by file stem) or a CSV
    ``slide_id,width_px,height_px[,mpp]``. ``mpp`` overrides every slide's own value."""

    slide_ids = list(slide_ids)
    if not slide_ids:
        return {}
    if slides is None:
        raise TmlnError(f"slide sizes are needed for tumour slides ({', '.join(slide_ids[:3])}...): pass --slides")
    slides = Path(slides)
    out: dict[str, SlideGeometry] = {}
    if slides.is_file():
        t = read_table(slides, ["slide_id", "width_px", "height_px"],
                       aliases={"slide_id": ["slide", "id", "image"], "width_px": ["width"], "height_px": ["height"]})
        w = numeric_column(t, "width_px", slides)
        h = numeric_column(t, "height_px", slides)
        m = numeric_column(t, "mpp", slides) if "mpp" in t.columns else np.full(len(t), np.nan)
        table = {str(s): (int(a), int(b), float(c)) for s, a, b, c in zip(t["slide_id"].astype(str), w, h, m)}
        for sid in slide_ids:
            row = table.get(sid) or {k.lower(): v for k, v in table.items()}.get(sid.lower())
            if row is None:
                raise InputTableError(f"no row for slide {sid!r}", slides)
            use = mpp if mpp is not None else row[2]
            if not (use and use > 0 and math.isfinite(use)):
                raise InputTableError(f"slide {sid!r}: no mpp (add an mpp column or pass --mpp)", slides)
            out[sid] = SlideGeometry(row[0], row[1], float(use))
        return out
    if not slides.is_dir():
        raise SlideError("slides folder or table not found", slides)

    index = _index_by_stem(slides, None)
    index = {k: v for k, v in index.items() if v.suffix.lower() not in (".xml", ".csv", ".json", ".geojson", ".txt", ".md")}
    for sid in slide_ids:
        path = _lookup(index, sid)
        if path is None:
            raise SlideError(f"no slide file named {sid}.* for tumour slide {sid!r}", slides)
        with Slide(path, mpp=mpp) as s:
            w, h = s.dimensions
            out[sid] = SlideGeometry(int(w), int(h), float(s.mpp))
    return out


def evaluate_froc(truth: str | Path, predictions: str | Path, slides: str | Path | None = None,
                  level: int = DEFAULT_LEVEL, mpp: float | None = None,
                  geometries: Mapping[str, SlideGeometry | tuple] | None = None,
                  allow_missing: bool = False, official_thresholds: bool = True,
                  use_masks: bool = False) -> FrocResult:
    """Camelyon16 FROC of a folder of prediction CSVs against a folder of annotation files.

    truth : folder of ``<slide_id>.xml`` (or .geojson/.json) and/or official mask images
        ``<slide_id>_Mask.tif``; a slide with neither is negative. Annotations are preferred when
        both exist, unless ``use_masks``.
    predictions : folder of ``<slide_id>.csv`` (``probability,x,y``, level-0 px); these define the
        evaluated slides (as in the official code).
    slides : folder of slide files (stem = slide id) or CSV ``slide_id,width_px,height_px[,mpp]``;
        only tumour slides need one.
    geometries : slide_id -> ``SlideGeometry`` or (width, height, mpp), taking precedence over ``slides``.
    mpp : µm/px for every slide (0.243 reproduces the official evaluation exactly).
    allow_missing : a truth file without a predictions CSV counts as a slide with no detections
        (otherwise an error).
    """
    truth, predictions = Path(truth), Path(predictions)
    if not truth.is_dir():
        raise TmlnError("truth folder not found", truth)
    if not predictions.is_dir():
        raise TmlnError("predictions folder not found", predictions)
    pred_index = _index_by_stem(predictions, (".csv",))
    if not pred_index:
        raise InputTableError("no predictions CSV (<slide_id>.csv) in the folder", predictions)

    ann_index = annotation_index(truth, "tumour")
    mask_index = _mask_index(truth)
    pred_lower = {k.lower() for k in pred_index}
    truth_ids = {k.lower(): k for k in list(mask_index) + list(ann_index)}
    missing = sorted(v for k, v in truth_ids.items() if k not in pred_lower)
    if missing and not allow_missing:
        raise InputTableError(
            f"{len(missing)} annotated slide(s) have no predictions CSV (e.g. {missing[0]}); "
            "pass --allow-missing to count them as slides without detections", predictions)
    slide_ids = sorted(pred_index) + missing

    anns, masks_for = {}, {}
    for sid in slide_ids:
        ann_path, mask_path = _lookup(ann_index, sid), _lookup(mask_index, sid)
        if mask_path is not None and (use_masks or ann_path is None):
            masks_for[sid] = mask_path
        elif ann_path is not None:
            a = read_annotations(ann_path)
            if not tumour_outlines(a).tumour.is_empty:  # a file without tumour marks a normal slide
                anns[sid] = (a, ann_path)
    geoms: dict[str, SlideGeometry] = {}
    for sid, g in (geometries or {}).items():
        g = g if isinstance(g, SlideGeometry) else SlideGeometry(int(g[0]), int(g[1]), float(g[2]))
        geoms[sid] = SlideGeometry(g.width, g.height, float(mpp) if mpp is not None else g.mpp)
    need = [sid for sid in anns if sid not in geoms]
    geoms.update(slide_geometries(slides, need, mpp))
    import pandas as pd

    results, mpps = [], set()
    for sid in slide_ids:
        pred_path = pred_index.get(sid)
        preds = (read_predictions(pred_path) if pred_path is not None
                 else pd.DataFrame({"probability": [], "x": [], "y": []}, dtype=float))
        mask = None
        if sid in anns:
            g = geoms[sid]
            mask = evaluation_mask_from_annotations(anns[sid][0], g.width, g.height, g.mpp, level)
        elif sid in masks_for:
            mask = read_mask_truth(masks_for[sid], mpp=mpp, level=level)
            if mask.n_regions == 0:
                mask = None  # an empty mask: a normal slide
        if mask is not None:
            mpps.add(round(mask.mpp, 6))
        results.append(score_slide(sid, preds, mask, pred_path))
    result = compute_froc(results, official_thresholds, level)
    result.settings = {"mpp_override": mpp, "mpp_used": sorted(mpps),
                       "truth_from_masks": sorted(masks_for), "truth_from_annotations": len(anns)}
    return result


def _mask_index(folder: Path) -> dict[str, Path]:
    """Mask images in the truth folder: ``<slide_id>_Mask.tif`` (Camelyon16 naming, any case).
    Other TIFFs are ignored (they may be the slides themselves)."""
    out: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or p.suffix.lower() not in (".tif", ".tiff"):
            continue
        if p.stem.lower().endswith("_mask"):
            out.setdefault(p.stem[:-5], p)
    return out


def read_mask_truth(path: str | Path, mpp: float | None = None, level: int = DEFAULT_LEVEL,
                    tumour_value: int = 255) -> EvaluationMask:
    """Evaluation mask from a Camelyon16 ground-truth mask image (``<slide>_Mask.tif``), as the
    official code: the pyramid level with downsample ``2**level``, tumour where the first channel
    equals ``tumour_value`` (255). A mask without that level is sampled from level 0 at the
    grid-pixel centres (the rule used for annotations). ``mpp`` overrides the file's µm/px.
    """

    d = 2 ** level
    with Slide(path, mpp=mpp) as s:
        use_mpp = s.mpp
        width, height = s.dimensions
        lvl = next((i for i, ds in enumerate(s.level_downsamples) if abs(ds - d) <= 1e-3 * d), None)
        if lvl is not None:
            w, h = s.level_dimensions[lvl]
            tumour = s.read_level((0, 0), lvl, (w, h))[..., 0] == tumour_value
        else:
            rows, cols = grid_shape(width, height, level)
            tumour = np.zeros((rows, cols), dtype=bool)
            xs = np.minimum(np.arange(cols) * d + d // 2, width - 1)
            for r in range(rows):
                y = min(r * d + d // 2, height - 1)
                line = s.read_level((0, y), 0, (width, 1))[0, :, 0]
                tumour[r] = line[xs] == tumour_value
    m = evaluation_mask(tumour, use_mpp, level)
    return EvaluationMask(m.labels, m.itc, m.mpp, m.level, (int(width), int(height)))


# ---------------------------------------------------------------------------- output
def write_froc(result: FrocResult, out: str | Path) -> dict[str, Path]:
    """Write froc.json, froc_curve.csv, froc_slides.csv, froc_detections.csv, froc.png (atomically)."""

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / name for name in ("froc.json", "froc_curve.csv", "froc_slides.csv",
                                           "froc_detections.csv", "froc.png")}
    write_csv(paths["froc_curve.csv"], result.curve)
    write_csv(paths["froc_slides.csv"], result.slides)
    write_csv(paths["froc_detections.csv"], result.detections)
    plot_froc(result, paths["froc.png"])
    write_json(paths["froc.json"], result.to_json())
    return paths


def plot_froc(result: FrocResult, path: str | Path) -> None:
    """FROC curve (FPs/slide 0-8 as in the Camelyon16 paper) with the six scored points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4.2), dpi=120)
    c = result.curve
    ax.plot(c["fps_per_slide"], c["sensitivity"], "-", color="#1f4e79", lw=1.6)
    pts = np.array(FROC_FPS_PER_SLIDE)
    ax.plot(pts, [result.sensitivities[_fmt(f)] for f in pts], "o", color="#c00000", ms=5,
            label=f"FROC = {result.froc:.4f}")
    ax.set_xlim(0, 8.5)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("Average number of false positives per slide")
    ax.set_ylabel("Metastasis detection sensitivity")
    ax.set_title(f"FROC ({result.n_slides} slides, {result.n_lesions} lesions)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
