"""Run a cohort's slides on a ``dask.distributed`` cluster: one slide per task.

``DaskExecutor`` has the executor interface of ``tmln.cohort.run`` (``map(fn, jobs)`` yielding each
job's state as it finishes). It either starts a local cluster (``workers=N``: N worker processes,
one thread each, bound to 127.0.0.1, no dashboard) or connects to an existing scheduler
(``scheduler="tcp://host:port"``: started with ``dask scheduler`` / ``dask worker``, dask-jobqueue on
SLURM, Kubernetes, ...). GPU workers are declared with Dask resources (``dask worker --resources
GPU=1``) and tasks ask for them with ``resources={"GPU": 1}``.

A worker that dies mid-slide leaves no partial output (every file is written to a temporary name and
renamed; ``state.json`` last): Dask reruns the task on another worker up to ``retries`` times, then the
slide is reported failed. Each slide's log (worker, timing, outcome) is appended to
``slides/<slide_id>/tmln.log``.
"""

from __future__ import annotations

import datetime as _dt
import os
import socket
from typing import Callable, Iterable, Iterator

from tmln import __version__
from tmln.rundir import SlideDir
from tmln.errors import TmlnError


def parse_resources(text: str | None) -> dict[str, float]:
    """``"GPU=1,MEM=8e9"`` -> ``{"GPU": 1.0, "MEM": 8e9}``."""
    if not text:
        return {}
    out = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        try:
            if not sep or not name.strip():
                raise ValueError
            out[name.strip()] = float(value)
        except ValueError:
            raise TmlnError(f"bad --resources entry {part!r}; expected NAME=NUMBER[,NAME=NUMBER...]") from None
    return out


class DaskExecutor:
    """Executor over a Dask cluster. Use as a context manager (closes what it started)."""

    def __init__(self, workers: int | None = None, scheduler: str | None = None,
                 resources: dict[str, float] | None = None, retries: int = 1, threads_per_worker: int = 1):
        if (workers is None) == (scheduler is None):
            raise TmlnError("give either a number of local workers or a scheduler address")
        if workers is not None and workers < 1:
            raise TmlnError(f"--workers must be >= 1, got {workers}")
        self.workers, self.scheduler = workers, scheduler
        self.resources = dict(resources or {})
        self.retries = int(retries)
        self.threads_per_worker = threads_per_worker
        self.client = None
        self._cluster = None

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> "DaskExecutor":
        from dask.distributed import Client, LocalCluster

        if self.scheduler is not None:
            try:
                self.client = Client(self.scheduler, timeout="20s")
            except OSError as exc:
                raise TmlnError(f"cannot connect to Dask scheduler {self.scheduler} ({exc})") from None
        else:
            self._cluster = LocalCluster(
                n_workers=self.workers, threads_per_worker=self.threads_per_worker, processes=True,
                host="127.0.0.1", dashboard_address=None, resources=self.resources or None,
            )
            self.client = Client(self._cluster)
        return self

    def __exit__(self, *exc) -> None:
        if self.client is not None:
            self.client.close()
        if self._cluster is not None:
            self._cluster.close()
        self.client = self._cluster = None

    # ------------------------------------------------------------------ work
    def map(self, fn: Callable, jobs: Iterable) -> Iterator[dict]:
        from dask.distributed import as_completed

        if self.client is None:
            raise RuntimeError("DaskExecutor.map outside its `with` block")
        jobs = list(jobs)
        if not jobs:
            return
        futures = self.client.map(
            run_logged, [fn] * len(jobs), jobs, key=[f"tmln-slide-{j.slide_id}-{j.params_hash[:12]}" for j in jobs],
            pure=False, retries=self.retries, resources=self.resources or None,
        )
        job_of = {f.key: j for f, j in zip(futures, jobs)}
        for fut in as_completed(futures):
            job = job_of[fut.key]
            try:
                yield fut.result()
            except Exception as exc:  # KilledWorker (worker died `retries`+1 times), lost scheduler, ...
                yield record_failure(job, f"worker failure: {type(exc).__name__}: {exc}")


def run_logged(fn: Callable, job) -> dict:
    """Run ``fn(job)`` and append one line per start/end to ``slides/<id>/tmln.log``."""
    start = _dt.datetime.now(_dt.timezone.utc)
    where = f"{socket.gethostname()} pid {os.getpid()}"
    _log(job, f"{start.isoformat(timespec='seconds')} start on {where}")
    state = fn(job)
    end = _dt.datetime.now(_dt.timezone.utc)
    _log(job, f"{end.isoformat(timespec='seconds')} {state.get('status')} in {(end - start).total_seconds():.1f} s"
              + (f": {state.get('error')}" if state.get("error") else ""))
    return state


def record_failure(job, error: str) -> dict:
    """Write a failed ``state.json`` for a job whose worker never returned."""
    state = {"slide_id": job.slide_id, "patient_id": job.patient_id, "slide_path": job.table_slide_path,
             "params_hash": job.params_hash, "params": job.params, "status": "failed", "error": error,
             "result": None, "notes": [], "tmln_version": __version__}
    sd = SlideDir(job.slide_dir)
    sd.path.mkdir(parents=True, exist_ok=True)
    sd.write_state(state)
    _log(job, f"{_dt.datetime.now(_dt.timezone.utc).isoformat(timespec='seconds')} failed: {error}")
    return state


def _log(job, line: str) -> None:
    from pathlib import Path

    d = Path(job.slide_dir)
    d.mkdir(parents=True, exist_ok=True)
    with open(d / "tmln.log", "a", encoding="utf-8") as fh:  # append-only log, not a result file
        fh.write(line + "\n")
