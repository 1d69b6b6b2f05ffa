"""A cohort run: slides table -> per-slide jobs (skipping finished ones) -> run-level tables and report.

The run directory is the contract (docs/run-directory.md). Per-slide results live in
``slides/<slide_id>/`` and a slide is finished when its ``state.json`` says so for the current
parameters. The run-level files (``nodes.csv``, ``slides.csv``, ``patients.csv``, ``summary.json``,
``report.html``) are always rebuilt from the per-slide files, never from memory, so a rerun after any
interruption (even ``kill -9``) gives byte-identical tables.

Executors: anything with ``map(fn, jobs) -> iterable of results`` (results in any order). The default
runs slides one after another in this process; ``concurrent.futures`` executors work as they are, and a
Dask executor (``client.map`` + ``as_completed``) plugs in the same way.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Protocol, Sequence

from tmln import __version__
from tmln.annotations import AmbiguousAnnotation, find_annotation
from tmln.atomic import file_digest, file_identity, remove_stale_temporaries, write_csv, write_json, write_text
from tmln.cohort.config import RunConfig
from tmln.cohort.job import SlideJob, process_slide
from tmln.cohort.state import is_done, params_hash
from tmln.cohort.table import SlideEntry, read_slides_table, write_slides_table_from_folders
from tmln.errors import TmlnError
from tmln.measure.nodes import MEASURE_VERSION, SLIDE_MEASURE_COLUMNS
from tmln.measure.patients import aggregate_patients, counted_slides
from tmln.measure.staging import NODE_COLUMNS, PATIENT_COLUMNS, STAGES
from tmln.models.card import model_identity
from tmln.report.html import write_report
from tmln.rundir import RUN_OUTPUTS, RunDir, SlideDir

SLIDE_COLUMNS = [
    "slide_id", "patient_id", "slide_path", "status", "error", "mpp_x", "mpp_y", "width_px", "height_px",
    *SLIDE_MEASURE_COLUMNS, "unread_area_mm2", "unread_node_area_mm2", "tumour_model_appearance_distance",
    "node_model_appearance_distance", "nodes_source", "tumour_source", "notes",
]
# patients.csv: the staging columns plus the area of unreadable tiles on the patient's slides (mm²;
# > 0 marks a patient whose numbers rest on a slide with gaps: see the slides' notes)
RUN_PATIENT_COLUMNS = [*PATIENT_COLUMNS, "unread_area_mm2", "unread_node_area_mm2"]


class Executor(Protocol):
    def map(self, fn: Callable, jobs: Iterable) -> Iterable: ...


class SerialExecutor:
    """Run jobs one after another in this process (results yielded as they finish)."""

    def map(self, fn: Callable, jobs: Iterable) -> Iterator:
        for job in jobs:
            yield fn(job)


@dataclass
class RunSummary:
    """What a run did. ``exit_code`` is 0 when every slide was measured and every patient staged."""

    out_dir: Path
    n_slides: int = 0
    n_done: int = 0
    n_failed: int = 0
    unread: list[dict] = field(default_factory=list)  # measured slides with unreadable tiles (summary.json)
    n_processed: int = 0  # slides (re)processed by this call
    n_reused: int = 0  # slides finished by an earlier call and skipped
    n_patients: int = 0
    n_patients_staged: int = 0
    failures: list[dict] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 1 if self.failures else 0

    @property
    def ok(self) -> bool:
        return not self.failures


def build_job(entry: SlideEntry, out_dir: Path, config: RunConfig) -> SlideJob:
    """The job of one table row: annotation lookup and the parameters that decide whether it is done."""
    c = config
    job = SlideJob(slide_id=entry.slide_id, patient_id=entry.patient_id, slide_path=str(entry.path),
                   table_slide_path=entry.slide_path, slide_dir=str(RunDir(out_dir).slide(entry.slide_id).path),
                   mpp=entry.mpp, config=config)
    if c.node_annotations:
        try:
            p = find_annotation(c.node_annotations, entry.slide_id, "nodes")
            if p is None:
                job.node_annotation_error = f"no node annotation for slide {entry.slide_id!r} in {c.node_annotations}"
            else:
                job.node_annotation = str(p)
        except AmbiguousAnnotation as exc:
            job.node_annotation_error = str(exc)
    if c.tumour_annotations:
        try:
            p = find_annotation(c.tumour_annotations, entry.slide_id, "tumour")
            job.tumour_annotation = None if p is None else str(p)
        except AmbiguousAnnotation as exc:
            job.tumour_annotation_error = str(exc)
    job.params = {
        "measure_version": MEASURE_VERSION,
        "slide_id": entry.slide_id,
        "patient_id": entry.patient_id,
        # inputs by what they are (file name, size, mtime; annotation contents), not by how their
        # paths are spelt: a rerun from elsewhere, with absolute paths, or a moved run directory resumes
        "slide": {"name": Path(entry.path).name, **(file_identity(entry.path) or {})},
        "mpp": entry.mpp,
        "mln_rule": c.mln_rule,
        "overlay_max_px": c.overlay_max_px,
        # model knobs join the identity only when chosen (runs made before the options stay finished)
        "nodes": ({"model": model_identity(c.node_model), **({} if c.node_split else {"split": False}),
                   **({} if c.min_node_area_mm2 is None else {"min_node_area_mm2": c.min_node_area_mm2})}
                  if c.node_model else _annotation_identity(job.node_annotation, job.node_annotation_error)),
        # precision joins the identity only when chosen (runs made before the option stay finished)
        "tumour": ({"model": model_identity(c.tumour_model), "threshold": c.tumour_threshold,
                    **({"precision": c.tumour_precision} if c.tumour_precision != "auto" else {}),
                    **({"method": c.tumour_method} if c.tumour_method != "auto" else {}),
                    **({"tile_size": c.tumour_tile_size} if c.tumour_tile_size is not None else {})}
                   if c.tumour_model else _annotation_identity(job.tumour_annotation, job.tumour_annotation_error)),
    }
    job.params_hash = params_hash(job.params)
    return job


def _annotation_identity(path: str | None, error: str | None) -> dict:
    """An annotation file by its name (which says its format and kind) and content digest; a failed
    lookup only by whether it failed (failed slides are redone on every run anyway)."""
    return {"annotation": None if path is None else Path(path).name, "sha256": file_digest(path),
            "error": error is not None}


@contextlib.contextmanager
def run_lock(out_dir: Path):
    """Hold ``RUN/.tmln.lock`` (an OS file lock, released even on kill -9) so two runs never write one
    run directory at once."""
    import fcntl

    out_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(RunDir(out_dir).lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise TmlnError("another tmln analyze is running in this run directory", out_dir) from None
        yield
    finally:
        os.close(fd)


def _slide_is_finished(job: SlideJob) -> bool:
    sd = SlideDir(job.slide_dir)
    return is_done(sd.read_state(), job.params_hash) and sd.has_outputs()


def run_cohort(slides_csv, out_dir, config: RunConfig | None = None, *, force: bool = False, quiet: bool = False,
               executor: Executor | None = None, report_sections: Sequence[tuple[str, str]] = (),
               **options) -> RunSummary:
    """Measure a cohort. Returns a :class:`RunSummary`; ``summary.exit_code`` is non-zero if anything failed.

    slides_csv : table with ``slide_path``, ``patient_id``, optional ``mpp``; or a folder with one
        sub-folder per patient (its name the patient id) holding the patient's slide files: the table
        derived from it is written to ``RUN/slides_table.csv`` and used.
    out_dir : the run directory (created; reused for resume).
    config : the run's options (:class:`tmln.cohort.config.RunConfig`: annotation folders or models,
        threshold, precision, MLN rule, staging, model knobs, device, mpp, overlay size); ``options``
        are its fields as keyword arguments (``run_cohort(csv, out, node_model="demo-nodes", ...)``),
        applied over ``config``.
    force : redo slides that are already finished. quiet : no progress bar.
    executor : object with ``map(process_slide, jobs)``; default serial in this process.
    report_sections : extra (title, html) sections of report.html.
    Raises ``TmlnError`` for problems with the run as a whole (bad table, missing folder, no provider,
    another run holding the run directory).
    """
    config = (config or RunConfig()).replace(**options)
    config.check()
    out_dir = Path(out_dir)
    if Path(slides_csv).is_dir():
        with run_lock(out_dir):
            slides_csv = write_slides_table_from_folders(slides_csv, RunDir(out_dir).derived_table)
    entries = read_slides_table(slides_csv, mpp=config.mpp)
    with run_lock(out_dir):
        remove_stale_temporaries(out_dir)  # a killed earlier run's half-written tables
        return _run_locked(entries, slides_csv, out_dir, config, force=force, quiet=quiet, executor=executor,
                           report_sections=report_sections)


def _run_locked(entries, slides_csv, out_dir: Path, config: RunConfig, *, force: bool, quiet: bool,
                executor: Executor | None, report_sections: Sequence[tuple[str, str]]) -> RunSummary:
    from tqdm import tqdm

    jobs = {e.row: build_job(e, out_dir, config) for e in entries if e.error is None}
    todo = [j for j in jobs.values() if force or not _slide_is_finished(j)]
    run = RunSummary(out_dir=out_dir, n_processed=len(todo), n_reused=len(jobs) - len(todo))
    ex = executor if executor is not None else SerialExecutor()
    with tqdm(total=len(todo), desc="slides", unit="slide", disable=quiet or not todo, leave=False) as bar:
        for state in ex.map(process_slide, todo):
            bar.update(1)
            if state.get("status") != "done" and not quiet:
                bar.write(f"failed: {state.get('slide_id')}: {state.get('error')}")
    totals = rebuild_run(out_dir, entries, jobs, config.summary_parameters(slides_csv), sections=report_sections)
    run.n_slides, run.n_done, run.n_failed = totals["slides"], totals["done"], totals["failed"]
    run.n_patients, run.n_patients_staged = totals["patients"], totals["patients_staged"]
    run.failures = totals["failures"]
    run.unread = totals["unread_tiles"]
    return run


# ---------------------------------------------------------------------------- run-level tables
def rebuild_run(out_dir: Path, entries: Sequence[SlideEntry], jobs: dict[int, SlideJob], parameters: dict,
                sections: Sequence[tuple[str, str]] = ()) -> dict:
    """(Re)write nodes.csv, slides.csv, patients.csv, summary.json and report.html from the per-slide files.

    Returns the summary's counts plus ``failures``.
    """
    import pandas as pd

    slide_rows, node_lines, failures, unread = [], [], [], []
    for e in entries:
        row, lines, gaps = _slide_row(e, jobs.get(e.row))
        node_lines += lines
        if gaps is not None:
            unread.append(gaps)
        if row["status"] != "done":
            failures.append({"kind": "slide", "id": e.slide_id, "row": e.row, "patient_id": e.patient_id,
                             "slide_path": e.slide_path, "error": row["error"]})
        slide_rows.append(row)

    run = RunDir(out_dir)
    write_text(run.nodes_csv, "\n".join([",".join(NODE_COLUMNS), *node_lines]) + "\n")
    nodes = pd.read_csv(run.nodes_csv, dtype=str, keep_default_na=False)
    node_rows = nodes.to_dict("records")
    write_csv(run.slides_csv, pd.DataFrame(slide_rows, columns=SLIDE_COLUMNS))

    # a slide listed again for the same patient is reported (failed row) but measured once: not counted
    counted = counted_slides(slide_rows, [None if e.duplicate_of is None else e.duplicate_of - 1 for e in entries])
    staging = parameters.get("staging", "gastric")
    patient_rows = _patient_rows(node_rows, counted, staging)
    write_csv(run.patients_csv, pd.DataFrame(patient_rows, columns=RUN_PATIENT_COLUMNS))
    staged = [p for p in patient_rows if p["n_stage"] is not None]
    failures += _unstaged_patients(patient_rows, counted)

    n_done = sum(r["status"] == "done" for r in slide_rows)
    counts = {
        "slides": len(slide_rows),
        "done": n_done,
        "failed": len(slide_rows) - n_done,
        "patients": len(patient_rows),
        "patients_staged": len(staged),
        "nodes": len(node_rows),
        "metastatic_nodes": int(sum(str(r["metastatic"]).lower() == "true" for r in node_rows)),
        "slides_with_unread_tiles": len(unread),
    }
    summary = {
        "tmln_version": __version__,
        "parameters": parameters,
        "counts": counts,
        "n_stage_counts": {s: sum(p["n_stage"] == s for p in staged) for s in STAGES[staging]},
        "failures": failures,
        "unread_tiles": unread,  # measured slides with tiles that could not be read (gaps)
        "outputs": list(RUN_OUTPUTS),
    }
    write_json(run.summary, json.loads(json.dumps(summary)))
    write_report(out_dir, sections=sections)
    return {**counts, "failures": failures, "unread_tiles": unread}


def _slide_row(e: SlideEntry, job: SlideJob | None) -> tuple[dict, list[str], dict | None]:
    """(the slides.csv row, the slide's nodes.csv lines without header, its unreadable tiles or None)
    from the slide's state and files; a failed, unprocessed, stale or damaged slide is a failed row."""
    row = {c: None for c in SLIDE_COLUMNS}
    row.update(slide_id=e.slide_id, patient_id=e.patient_id, slide_path=e.slide_path)
    state = SlideDir(job.slide_dir).read_state() if job is not None else None
    if job is None:
        row.update(status="failed", error=e.error)
        return row, [], None
    if state is None or state.get("params_hash") != job.params_hash:
        row.update(status="failed", error="not processed (the run was interrupted or the state is stale); rerun")
        return row, [], None
    if state.get("status") != "done":
        row.update(status="failed", error=state.get("error") or "failed")
        return row, [], None
    nodes_csv = SlideDir(job.slide_dir).nodes_csv
    try:
        lines = nodes_csv.read_text(encoding="utf-8").splitlines()
    except OSError:
        lines = None
    if not lines or lines[0].split(",") != NODE_COLUMNS:
        row.update(status="failed", error=f"per-slide nodes.csv missing or damaged ({nodes_csv}); rerun with --force")
        return row, [], None
    res = state["result"]
    row.update({k: res.get(k) for k in SLIDE_COLUMNS if k in res})
    row.update(status="done", error=None, notes="; ".join(state.get("notes") or []) or None, slide_path=e.slide_path)
    gaps = None
    if res.get("unread_tiles_px"):
        gaps = {"slide_id": e.slide_id, "patient_id": e.patient_id, "unread_area_mm2": res.get("unread_area_mm2"),
                "unread_node_area_mm2": res.get("unread_node_area_mm2"), "tiles_px": res["unread_tiles_px"]}
    return row, lines[1:], gaps


def _patient_rows(node_rows: list[dict], counted: list[dict], staging: str) -> list[dict]:
    """patients.csv rows: the staging of each patient plus the unreadable area of its measured slides."""
    patient_rows = aggregate_patients(node_rows, counted, staging)
    for p in patient_rows:
        if p["n_stage"] is not None:
            mine = [r for r in counted if str(r["patient_id"]) == str(p["patient_id"]) and r["status"] == "done"]
            for col in ("unread_area_mm2", "unread_node_area_mm2"):
                p[col] = float(sum(float(r.get(col) or 0.0) for r in mine))
    return patient_rows


def _unstaged_patients(patient_rows: list[dict], counted: list[dict]) -> list[dict]:
    """A failure for each patient left without N stage, saying how many of its slides failed."""
    per_patient: dict[str, list[dict]] = {}
    for r in counted:
        per_patient.setdefault(str(r["patient_id"]), []).append(r)
    failures = []
    for p in patient_rows:
        if p["n_stage"] is None:
            rows = per_patient[str(p["patient_id"])]
            n_failed = sum(r["status"] != "done" for r in rows)
            reason = ("no readable slide" if n_failed == len(rows)
                      else f"{n_failed} of {len(rows)} slides failed; the patient is not staged")
            failures.append({"kind": "patient", "id": str(p["patient_id"]), "error": reason})
    return failures
