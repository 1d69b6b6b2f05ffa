"""Write phantom slides with their truth: one slide (``make_slide``) or a cohort (``make_cohort``)."""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tmln.annotations import feature, write_geojson
from tmln.atomic import atomic_path, write_csv
from tmln.measure.staging import NODE_COLUMNS, PATIENT_COLUMNS
from tmln.phantom.geometry import SlideLayout, SlideSpec, make_layout
from tmln.phantom.non_node import SECTIONS
from tmln.phantom.render import SlideRenderer
from tmln.phantom.truth import node_rows, patient_rows
from tmln.phantom.writer import PyramidOptions, write_pyramid

FORMATS = ("tiff", "svs")


@dataclass
class PhantomSlide:
    """What ``make_slide`` wrote: the slide, its GeoJSON truth and the layout behind them."""

    path: Path
    nodes_geojson: Path
    tumour_geojson: Path
    layout: SlideLayout

    @property
    def slide_id(self) -> str:
        return self.path.stem


def make_slide(
    path: str | os.PathLike,
    spec: SlideSpec | int = 0,
    *,
    fmt: str | None = None,
    write_mpp: bool = True,
    tile: int = 512,
    quality: int = 85,
    level_factor: int = 4,
    geojson: bool = True,
    compression: str = "jpeg",
) -> PhantomSlide:
    """Write one phantom slide to ``path`` (+ ``<stem>.nodes.geojson`` / ``<stem>.tumour.geojson``).

    spec : a ``SlideSpec`` or just a seed (defaults otherwise: 8 x 6 mm at 0.5 µm/px).
    fmt : ``tiff`` or ``svs``; default from the suffix of ``path`` (``.svs`` -> svs).
    write_mpp : False writes no µm/px at all (for testing the missing-mpp paths).
    compression : ``jpeg`` (default, as scanners write) or ``zlib`` (lossless; generic TIFF only).
    """

    path = Path(path)
    if not isinstance(spec, SlideSpec):
        spec = SlideSpec(seed=int(spec))
    fmt = fmt or ("svs" if path.suffix.lower() == ".svs" else "tiff")
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    layout = make_layout(spec)
    renderer = SlideRenderer(layout, tile=tile)
    desc = f"tmln phantom slide; seed={spec.seed}" + (f"; mpp={spec.mpp:g}" if write_mpp else "")
    with atomic_path(path) as tmp:
        write_pyramid(tmp, layout.width, layout.height, renderer.tile, spec.mpp if write_mpp else None,
                      PyramidOptions(fmt=fmt, tile=tile, quality=quality, factor=level_factor, description=desc,
                                     compression=compression))
    stem = path.with_suffix("")
    nodes_p = Path(f"{stem}.nodes.geojson")
    tum_p = Path(f"{stem}.tumour.geojson")
    if geojson:
        write_geojson(nodes_p, [feature(p, "Lymph node", name=f"Node {i}") for i, p in enumerate(layout.nodes, 1)])
        write_geojson(tum_p, [feature(p, "Tumor", name=f"Deposit {i} (node {k + 1})")
                              for i, (p, k) in enumerate(zip(layout.tumour, layout.tumour_node), 1)])
    return PhantomSlide(path, nodes_p, tum_p, layout)


def make_cohort(  # public API mirroring `tmln phantom`'s options, one keyword each
    out_dir: str | os.PathLike,
    patients: int = 2,
    slides_per_patient: int = 1,
    seed: int = 0,
    size_mm: tuple[float, float] = (8.0, 6.0),
    mpp: float = 0.5,
    fmt: str = "tiff",
    write_mpp: bool = True,
    negative_fraction: float = 0.25,
    stain: str = "normal",
    workers: int = 1,
    perinodal: bool = False,
    non_node_fraction: float = 0.0,
    textures: str | os.PathLike | None = None,
    textures_mpp: float = 0.97,
    pen_marks: bool = False,
    edge_nodes: int = 0,
) -> Path:
    """Write a phantom cohort into ``out_dir``; returns the path of its ``slides.csv``.

    Files: ``<slide_id>.tiff|.svs``, ``<slide_id>.nodes.geojson``, ``<slide_id>.tumour.geojson``,
    ``slides.csv`` (slide_path relative to out_dir, patient_id), ``truth_nodes.csv``
    (``NODE_COLUMNS``), ``truth_patients.csv`` (``PATIENT_COLUMNS``; MLN rule ajcc).
    About ``negative_fraction`` of the slides hold no tumour (at least one when there are >= 2
    slides and the fraction is > 0); the first slide always has a pair of touching nodes.
    ``workers`` > 1 writes slides in that many processes (same bytes as ``workers=1``).
    ``perinodal`` adds non-node tissue around and inside the nodes (``tmln.phantom.non_node``);
    ``non_node_fraction`` of the slides (never the first) are sections without any node (carcinoma,
    muscle, fibro-fatty tissue, gastric wall, in turn); ``textures`` is a patch folder (``tumor/``,
    ``normal/`` at ``textures_mpp`` µm/px) whose real patches texture the slides
    (``tmln.phantom.real_texture``). ``pen_marks`` draws ink strokes on every slide. ``edge_nodes``
    nodes per node slide are cut by the slide's edge (partial nodes; counted in the truth like any node).
    """
    import pandas as pd

    _check_cohort_options(fmt, patients, slides_per_patient, negative_fraction, non_node_fraction)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ext = "svs" if fmt == "svs" else "tiff"
    specs = cohort_specs(patients=patients, slides_per_patient=slides_per_patient, seed=seed, size_mm=size_mm, mpp=mpp,
                         negative_fraction=negative_fraction, stain=stain, perinodal=perinodal,
                         non_node_fraction=non_node_fraction, textures=textures, textures_mpp=textures_mpp,
                         pen_marks=pen_marks, edge_nodes=edge_nodes)
    jobs = [(out / f"{sid}.{ext}", spec, fmt, write_mpp, pid, sid) for pid, sid, spec in specs]
    slide_rows = [{"slide_path": f"{sid}.{ext}", "patient_id": pid} for pid, sid, _ in specs]
    n_slides = {pid: slides_per_patient for pid, _, _ in specs}
    per_slide = _write_slides(jobs, workers)
    nodes = [row for rows in per_slide for row in rows]
    write_csv(out / "truth_nodes.csv", pd.DataFrame(nodes, columns=NODE_COLUMNS))
    write_csv(out / "truth_patients.csv", pd.DataFrame(patient_rows(nodes, n_slides), columns=PATIENT_COLUMNS))
    csv = out / "slides.csv"
    write_csv(csv, pd.DataFrame(slide_rows, columns=["slide_path", "patient_id"]))
    return csv


def cohort_specs(**options) -> list[tuple[str, str, SlideSpec]]:
    """``(patient_id, slide_id, SlideSpec)`` of every slide ``make_cohort(out_dir, **options)`` writes, in order:
    ``make_layout(spec)`` gives a written slide's whole truth geometry (its non-node tissue too) without
    reading the slide. ``options``: ``make_cohort``'s keywords, its defaults where not given (those that do not
    shape a layout, such as ``fmt`` or ``workers``, are ignored)."""
    params = inspect.signature(make_cohort).parameters
    unknown = set(options) - set(params) - {"out_dir"}
    if unknown:
        raise TypeError(f"cohort_specs: unknown option(s) {sorted(unknown)}")
    o = {k: options.get(k, p.default) for k, p in params.items() if k != "out_dir"}
    patients, slides_per_patient, seed = o["patients"], o["slides_per_patient"], o["seed"]
    negative_fraction, non_node_fraction, textures = o["negative_fraction"], o["non_node_fraction"], o["textures"]
    n = patients * slides_per_patient
    negatives = _negative_slides(n, seed, negative_fraction)
    sections = _section_slides(n, seed, non_node_fraction)
    out, k = [], 0
    for p in range(patients):
        pid = f"P{p + 1:03d}"
        for s in range(slides_per_patient):
            slide_seed = int(np.random.SeedSequence([int(seed), p, s]).generate_state(1)[0])
            spec = SlideSpec(seed=slide_seed, size_mm=tuple(o["size_mm"]), mpp=float(o["mpp"]), negative=k in negatives,
                             touching_pair=True if k == 0 else None, stain=o["stain"], perinodal=o["perinodal"],
                             pen_marks=o["pen_marks"], section=sections.get(k, "node"), edge_nodes=int(o["edge_nodes"]),
                             textures=None if textures is None else str(textures), textures_mpp=float(o["textures_mpp"]))
            out.append((pid, f"{pid}_S{s + 1:02d}", spec))
            k += 1
    return out


def _check_cohort_options(fmt: str, patients: int, slides_per_patient: int, negative_fraction: float,
                          non_node_fraction: float) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    if patients < 1 or slides_per_patient < 1:
        raise ValueError("patients and slides_per_patient must be >= 1")
    if not 0.0 <= negative_fraction <= 1.0:
        raise ValueError("negative_fraction must be in [0, 1]")
    if not 0.0 <= non_node_fraction < 1.0:
        raise ValueError("non_node_fraction must be in [0, 1)")


def _negative_slides(n: int, seed: int, negative_fraction: float) -> set[int]:
    """Indices of the slides without tumour: about ``negative_fraction`` of ``n``; with >= 2 slides at
    least one when the fraction is > 0 and not all when it is < 1."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xC0]))
    n_neg = int(round(negative_fraction * n))
    if negative_fraction > 0 and n >= 2:
        n_neg = max(1, n_neg)
    if negative_fraction < 1 and n >= 2:
        n_neg = min(n - 1, n_neg)
    return set(rng.permutation(n)[:n_neg].tolist())


def _section_slides(n: int, seed: int, non_node_fraction: float) -> dict[int, str]:
    """{slide index: section kind} of the sections without nodes (never the first slide), the kinds
    in turn; their own random stream, so a cohort without them keeps its bytes."""
    n_sec = int(round(non_node_fraction * n))
    rng_sec = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5EC]))
    if n <= 1:
        return {}
    return {k: SECTIONS[1 + j % (len(SECTIONS) - 1)]
            for j, k in enumerate(sorted((1 + rng_sec.permutation(n - 1)[:n_sec]).tolist()))}


def _write_slides(jobs: list[tuple], workers: int) -> list[list[dict]]:
    """Run ``_slide_job`` over ``jobs`` (in ``workers`` processes when > 1); truth rows per slide, in order."""
    if workers > 1 and len(jobs) > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=min(workers, len(jobs))) as ex:
            return list(ex.map(_slide_job, jobs))
    return [_slide_job(j) for j in jobs]


def _slide_job(job) -> list[dict]:
    """Write one cohort slide; returns its truth rows (a top-level function: picklable)."""

    path, spec, fmt, write_mpp, pid, sid = job
    lay = make_slide(path, spec, fmt=fmt, write_mpp=write_mpp).layout
    return node_rows(lay.nodes, lay.tumour, lay.mpp, lay.mpp, pid, sid)
