"""What the viewer shows, read from a run directory (or made for one slide): tables, slides, heat maps.

``RunData.from_run(RUN)`` reads ``slides.csv``, ``patients.csv``, ``nodes.csv`` and ``summary.json``
once; slide files are found from the table's ``slide_path`` (absolute, else relative to the slides
table's folder as recorded in ``summary.json``, else to the run's parent folder) and checked
against the size recorded in the slide's ``state.json``. A slide that is missing or changed gets a
``problem`` (which file, why); everything else about the run still works.

``RunData.for_slide(SLIDE, annotations=..., tumour_map=...)`` makes the same structure for one
slide and a GeoJSON file (measured with tmln's own measurement code when the file holds nodes).
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tmln.annotations import GENERIC_SUFFIXES, KIND_INFIXES, node_outlines, read_annotations, tumour_outlines
from tmln.errors import TmlnError
from tmln.measure.nodes import measure_slide
from tmln.models.appearance import WARN_DISTANCE, out_of_range
from tmln.measure.staging import NODE_COLUMNS
from tmln.regions import polygon_parts
from tmln.report.geojson import node_features, tumour_features
from tmln.rundir import SLIDES_CSV, TUMOUR_MAP_JSON, RunDir, SlideDir
from tmln.slide import Slide
from tmln.view.review import deposit_map_stats, review_list
from tmln.view.tiles import DeepZoom

HEAT_MAX_PX = 4096  # the heat layer's longer side (px); finer maps are shrunk for the browser


@dataclass
class SlideInfo:
    """One slide of the viewer: its table row, where its file is (or why it is not usable), its files."""

    slide_id: str
    patient_id: str
    status: str
    error: str | None
    row: dict
    path: Path | None = None
    problem: str | None = None  # the slide file cannot be shown: which file and why
    warning: str | None = None  # shown, but something is off (e.g. file changed since the run)
    folder: Path | None = None  # RUN/slides/<slide_id> (None in single-slide mode)
    nodes_geojson: Path | None = None
    tumour_geojson: Path | None = None
    heat_dir: Path | None = None  # folder with tumour_map.npy + tumour_map.json
    mpp: tuple[float, float] | None = None

    @property
    def heat_available(self) -> bool:
        return self.heat_dir is not None and SlideDir(self.heat_dir).has_tumour_map()


@dataclass
class RunData:
    root: Path | None  # the run directory (None for a single slide)
    summary: dict
    slides: list[SlideInfo]
    patients: list[dict]
    nodes: list[dict]
    node_columns: list[str] = field(default_factory=lambda: list(NODE_COLUMNS))
    mode: str = "run"
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _open: dict = field(default_factory=dict, repr=False)  # slide_id -> (Slide, DeepZoom) or error
    _heat: dict = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_run(cls, run_dir) -> "RunData":
        root = Path(run_dir).resolve()
        if not root.is_dir():
            raise TmlnError("run directory not found", run_dir)
        run = RunDir(root)
        if not run.is_run():
            raise TmlnError(f"not a tmln run directory (no {SLIDES_CSV})", run_dir)
        summary = _read_json(run.summary) or {}
        slides_rows = _read_csv(run.slides_csv)
        patients = _read_csv(run.patients_csv)
        nodes, node_cols = _read_csv(run.nodes_csv, with_columns=True)
        table_dir = None
        sc = (summary.get("parameters") or {}).get("slides_csv")
        if sc:
            table_dir = Path(sc).parent
        slides = []
        for r in slides_rows:
            sid = str(r.get("slide_id", ""))
            sd = run.slide(sid)
            folder = sd.path
            info = SlideInfo(slide_id=sid, patient_id=str(r.get("patient_id", "")), status=r.get("status") or "",
                             error=r.get("error") or None, row=r, folder=folder,
                             nodes_geojson=_file_in(root, sd.nodes_geojson),
                             tumour_geojson=_file_in(root, sd.tumour_geojson),
                             heat_dir=folder if _file_in(root, sd.tumour_map_json) else None,
                             mpp=_mpp(r))
            state = sd.read_state() or {}
            info.path, info.problem, info.warning = locate_slide(r.get("slide_path") or "", table_dir, root, state)
            unlike = [f"this slide looks unlike the {kind} model's training data (appearance distance {d:.2f} > "
                      f"{WARN_DISTANCE:g}): check its counts by eye" for kind, d in out_of_range(r)]
            if unlike:
                info.warning = "; ".join([info.warning, *unlike] if info.warning else unlike)
            slides.append(info)
        return cls(root=root, summary=summary, slides=slides, patients=patients, nodes=nodes,
                   node_columns=node_cols or list(NODE_COLUMNS))

    @classmethod
    def for_slide(cls, slide_path, annotations=None, tumour_map=None, mpp=None, mln_rule: str = "ajcc") -> "RunData":
        """One slide, optionally with a GeoJSON/XML annotation file (nodes and/or tumour outlines) and a
        tumour-map folder (``tmln tumour-map`` output). Nodes in the file are measured as ``analyze``
        would; a file with only tumour outlines is drawn as it is."""

        path = Path(slide_path).resolve()
        if not path.is_file():
            raise TmlnError("slide file not found", slide_path)
        sid = path.stem
        with Slide(path, mpp=mpp) as s:
            mx, my = (s.mpp_x, s.mpp_y) if s.has_mpp else (None, None)
            size = s.dimensions
        row = {"slide_id": sid, "patient_id": "", "slide_path": str(path), "status": "done", "error": "",
               "width_px": size[0], "height_px": size[1], "mpp_x": mx, "mpp_y": my}
        info = SlideInfo(slide_id=sid, patient_id="", status="done", error=None, row=row, path=path,
                         mpp=(mx, my) if mx else None)
        nodes: list[dict] = []
        geo: dict = {}
        if annotations:
            nodes, geo, notes = measure_annotations(annotations, sid, size, (mx, my), mln_rule)
            info.warning = "; ".join(notes) or None
        if tumour_map is not None:
            d = Path(tumour_map)
            if not SlideDir(d).tumour_map_json.is_file():
                raise TmlnError(f"no {TUMOUR_MAP_JSON} in the tumour-map folder", tumour_map)
            info.heat_dir = d.resolve()
        data = cls(root=None, summary={"parameters": {"mln_rule": mln_rule}}, slides=[info], patients=[],
                   nodes=nodes, mode="slide")
        data._geo = geo
        return data

    # ------------------------------------------------------------------ lookups
    def slide(self, slide_id: str) -> SlideInfo | None:
        for s in self.slides:
            if s.slide_id == slide_id:
                return s
        return None

    def geojson(self, info: SlideInfo, kind: str) -> bytes | None:
        """``nodes`` / ``tumour`` GeoJSON bytes of a slide (None when it has none)."""
        if self.mode == "slide":
            obj = getattr(self, "_geo", {}).get(kind)
            return None if obj is None else json.dumps(obj).encode("utf-8")
        p = info.nodes_geojson if kind == "nodes" else info.tumour_geojson
        if p is None or not p.is_file():
            return None
        return p.read_bytes()

    def deep_zoom(self, info: SlideInfo):
        """The slide's ``DeepZoom`` (opened once, kept); raises ``TmlnError`` when it cannot be opened."""

        with self._lock:
            hit = self._open.get(info.slide_id)
            if hit is None:
                if info.path is None:
                    hit = TmlnError(info.problem or "slide file not available")
                else:
                    try:
                        s = Slide(info.path, mpp=info.mpp)
                        hit = DeepZoom(s)
                    except Exception as exc:  # SlideError and any decoder problem: reported, not raised
                        hit = TmlnError(f"cannot open slide file {info.path}: {exc}")
                        info.problem = str(hit)
                self._open[info.slide_id] = hit
        if isinstance(hit, Exception):
            raise hit
        return hit

    def heat(self, info: SlideInfo) -> tuple[dict, bytes] | None:
        """(placement in level-0 px + threshold, RGBA PNG bytes) of the slide's tumour map, or None."""
        if not info.heat_available:
            return None
        with self._lock:
            hit = self._heat.get(info.slide_id)
        if hit is None:
            meta = _read_json(SlideDir(info.heat_dir).tumour_map_json) or {}
            arr = np.load(SlideDir(info.heat_dir).tumour_map, allow_pickle=False, mmap_mode="r")
            hit = (heat_placement(meta, arr.shape), heat_png(np.asarray(arr)))
            with self._lock:
                self._heat[info.slide_id] = hit
        return hit

    def review(self) -> list[dict]:
        """The review list (``tmln.view.review.review_list``), tumour-map statistics included where the
        run has maps; computed once."""

        with self._lock:
            hit = self._heat.get("__review__")
        if hit is None:
            stats = {}
            for info in self.slides:
                try:
                    stats.update({(info.slide_id, nid): v for nid, v in self.deposit_stats(info).items()})
                except Exception as exc:  # a damaged map: the rule is skipped for that slide, said in the notes
                    info.warning = ((info.warning + "; ") if info.warning else "") + \
                        f"tumour map not usable for the review list ({type(exc).__name__}: {exc})"
            rule = str((self.summary.get("parameters") or {}).get("mln_rule") or "ajcc")
            hit = review_list(self.nodes, self.patients, stats, mln_rule=rule)
            with self._lock:
                self._heat["__review__"] = hit
        return hit

    def deposit_stats(self, info: SlideInfo) -> dict:
        """Near-threshold shares of the slide's deposits (``review.deposit_map_stats``); {} without a map."""
        from shapely.geometry import shape

        if not info.heat_available:
            return {}
        raw = self.geojson(info, "tumour")
        if raw is None:
            return {}
        deps = []
        for f in json.loads(raw).get("features", []):
            m = (f.get("properties") or {}).get("measurements") or {}
            if m.get("node_id") is None:  # extranodal tumour
                continue
            deps.append((int(m["node_id"]), shape(f["geometry"]), m.get("area_mm2")))
        if not deps:
            return {}
        meta = _read_json(SlideDir(info.heat_dir).tumour_map_json) or {}
        arr = np.load(SlideDir(info.heat_dir).tumour_map, allow_pickle=False, mmap_mode="r")
        return deposit_map_stats(arr, heat_placement(meta, arr.shape), deps)

    def close(self) -> None:
        with self._lock:
            for v in self._open.values():
                if not isinstance(v, Exception):
                    v.slide.close()
            self._open.clear()


# ---------------------------------------------------------------------------- helpers
def locate_slide(slide_path: str, table_dir: Path | None, run_dir: Path, state: dict):
    """(path or None, problem, warning) for a slides-table ``slide_path``.

    Tried in order: the path itself when absolute; relative to the slides table's folder (from
    ``summary.json``); relative to the run directory's parent. The first existing file is used and
    compared with the size the run recorded in ``state.json`` (a different size: a warning).
    """
    if not slide_path:
        return None, "the slides table names no slide file for this row", None
    p = Path(slide_path)
    tried = []
    cands = [p] if p.is_absolute() else [c / p for c in (table_dir, run_dir.parent) if c is not None]
    for c in cands:
        tried.append(str(c))
        try:
            if c.is_file():
                return c.resolve(), None, _identity_warning(c, state)
            if c.exists():
                return None, f"slide file {c} is not a regular file", None
        except OSError as exc:
            return None, f"slide file {c} cannot be read ({exc})", None
    where = " or ".join(tried) if tried else slide_path
    return None, (f"slide file not found: {where} (moved or deleted since the run?); "
                  "the tables, outlines and review list still work"), None


def _identity_warning(path: Path, state: dict) -> str | None:
    rec = ((state.get("params") or {}).get("slide") or {})
    size = rec.get("size")
    try:
        now = path.stat().st_size
    except OSError:
        return None
    if size is not None and int(size) != now:
        return (f"slide file {path} is {now} bytes but the run measured a file of {size} bytes: "
                "it was replaced since the run, so the outlines may not match the pixels")
    return None


def heat_placement(meta: dict, shape) -> dict:
    """Where the map lies on the slide: level-0 px box (x, y, width, height) and its threshold."""
    h, w = int(shape[0]), int(shape[1])
    mpp = float(meta["mpp"])
    smx, smy = (float(v) for v in meta.get("slide_mpp", [mpp, mpp]))
    ox, oy = (float(v) for v in meta.get("origin_px", [0.0, 0.0]))
    return {"x": ox, "y": oy, "width": w * mpp / smx, "height": h * mpp / smy,
            "threshold": float(meta.get("threshold", 0.5)), "model": str(meta.get("model", "")),
            "mpp": mpp, "shape": [h, w]}


def heat_png(prob: np.ndarray, max_px: int = HEAT_MAX_PX) -> bytes:
    """RGBA PNG of a probability map: blue (0) to red (1) ramp; NaN (outside the mapped region)
    transparent. Maps larger than ``max_px`` are shrunk (nearest: no blur across the NaN edge)."""
    import cv2

    p = np.asarray(prob, np.float32)
    h, w = p.shape
    f = min(1.0, max_px / max(h, w, 1))
    if f < 1.0:
        p = cv2.resize(p, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_NEAREST)
    valid = np.isfinite(p)
    ramp = (np.nan_to_num(p, nan=0.0).clip(0, 1) * 255).astype(np.uint8)
    bgr = cv2.applyColorMap(ramp, cv2.COLORMAP_JET)
    bgra = np.dstack([bgr, np.where(valid, 255, 0).astype(np.uint8)])
    ok, buf = cv2.imencode(".png", bgra)
    if not ok:  # pragma: no cover
        raise RuntimeError("heat map encoding failed")
    return buf.tobytes()


def annotation_role(path) -> str:
    """``nodes``, ``tumour`` or ``both`` from a file name, as ``tmln analyze`` names them
    (``S1.nodes.geojson``, ``S1.tumour.xml``; any other name: one export holding both)."""

    name = Path(path).name.lower()
    for suf in GENERIC_SUFFIXES:
        if name.endswith(suf):
            name = name[: -len(suf)]
            break
    for kind, infixes in KIND_INFIXES.items():
        if any(name.endswith(i) for i in infixes):
            return kind
    return "both"


def measure_annotations(paths, slide_id: str, size, mpp, mln_rule: str):
    """Node rows, the GeoJSON to draw and notes for the annotation files of one slide (single-slide mode).

    Each file is read with the meaning ``tmln analyze`` gives it (``tmln.annotations``): a
    ``*.nodes.*`` file holds node outlines, a ``*.tumour.*`` file tumour outlines, any other file both
    (one export). Nodes are measured with ``tmln.measure.nodes.measure_slide``; without nodes the
    tumour is drawn as it is; without µm/px nothing is measured.
    """
    from shapely.ops import unary_union

    files = [paths] if isinstance(paths, (str, Path)) else list(paths)
    nodes, tumour, notes = [], [], []
    for f in files:
        anns = read_annotations(f, slide_size=tuple(size))
        role = annotation_role(f)
        if role in ("nodes", "both"):
            polys, n = node_outlines(anns)
            nodes += polys
            notes += [f"{Path(f).name}: {x}" for x in n]
        if role in ("tumour", "both"):
            t = tumour_outlines(anns, also_node_file=role == "both")
            tumour += t.polygons
            notes += [f"{Path(f).name}: {x}" for x in t.notes]
    tumour_geo = {"type": "FeatureCollection",
                  "features": [{"type": "Feature", "geometry": p.__geo_interface__, "properties": {"name": "tumour"}}
                               for p in polygon_parts(unary_union(tumour))]} if tumour else None
    if not nodes:
        return [], {"nodes": None, "tumour": tumour_geo}, \
            notes + ["no lymph-node outlines in the annotation files: tumour drawn as it is, nothing measured"]
    if mpp[0] is None:
        plain = {"type": "FeatureCollection",
                 "features": [{"type": "Feature", "geometry": g.__geo_interface__, "properties": {}} for g in nodes]}
        return [], {"nodes": plain, "tumour": tumour_geo}, notes + ["the slide has no µm/px: nothing measured (give --mpp)"]

    m = measure_slide(nodes, tumour, mpp[0], mpp[1], patient_id="", slide_id=slide_id, mln_rule=mln_rule)
    rows = [{c: _csv_value(r.get(c)) for c in NODE_COLUMNS} for r in m.rows]
    geo = {"nodes": {"type": "FeatureCollection", "features": node_features(m)},
           "tumour": {"type": "FeatureCollection", "features": tumour_features(m)}}
    return rows, geo, notes + list(m.notes)


def _csv_value(v) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "True" if v else "False"
    if isinstance(v, float):
        return f"{v:.10g}"
    return str(v)


def _mpp(row: dict):
    try:
        mx, my = float(row.get("mpp_x") or "nan"), float(row.get("mpp_y") or "nan")
    except ValueError:
        return None
    return (mx, my) if math.isfinite(mx) and math.isfinite(my) and mx > 0 and my > 0 else None


def _file_in(root: Path, p: Path) -> Path | None:
    """``p`` when it is a regular file inside ``root`` (symlinks resolved), else None."""
    try:
        rp = p.resolve()
    except OSError:
        return None
    return rp if rp.is_file() and rp.is_relative_to(root) else None


def _read_json(p: Path):
    try:
        return json.loads(Path(p).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _read_csv(p: Path, with_columns: bool = False):
    import pandas as pd

    try:
        df = pd.read_csv(p, dtype=str, keep_default_na=False)
    except Exception:
        df = pd.DataFrame()
    rows = df.to_dict("records")
    return (rows, list(df.columns)) if with_columns else rows
