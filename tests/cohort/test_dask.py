"""Issue 9: a cohort on Dask gives byte-identical tables to a serial run, also when a worker dies."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import cloudpickle
import pytest

from tmln.cohort.dask_executor import DaskExecutor, parse_resources
from tmln.cohort.run import run_cohort
from tmln.rundir import RUN_OUTPUTS
from tmln.errors import TmlnError

pytestmark = pytest.mark.slow
# test-module functions travel to the workers by value (the workers cannot import tests/)
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def run(slides, ann, out, **kw):
    return run_cohort(slides, out, node_annotations=ann, tumour_annotations=ann, quiet=True, **kw)


def assert_same_outputs(a: Path, b: Path):
    for name in RUN_OUTPUTS:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_parse_resources():
    assert parse_resources("GPU=1, MEM=8e9") == {"GPU": 1.0, "MEM": 8e9}
    assert parse_resources(None) == {}
    with pytest.raises(TmlnError, match="bad --resources"):
        parse_resources("GPU")
    with pytest.raises(TmlnError, match="either"):
        DaskExecutor()


def test_local_cluster_matches_serial_and_logs_per_slide(small_cohort, tmp_path):
    slides, ann = small_cohort
    run(slides, ann, tmp_path / "serial")
    with DaskExecutor(workers=2, resources={"GPU": 1}) as ex:
        s = run(slides, ann, tmp_path / "dask", executor=ex)
    assert s.n_done == 3 and s.exit_code == 0
    assert_same_outputs(tmp_path / "serial", tmp_path / "dask")
    for d in (tmp_path / "dask" / "slides").iterdir():
        log = (d / "tmln.log").read_text()
        assert "start on" in log and "done in" in log


def _dies_once(fn, marker_dir):
    """Wrap ``fn`` so that the first attempt on slide S2 kills its worker process mid-slide."""

    def wrapped(job):
        marker = Path(marker_dir) / f"{job.slide_id}.died"
        if job.slide_id == "S2" and not marker.exists():
            marker.write_text("x")
            # leave a half-written temporary file, as a kill during an atomic write would
            Path(job.slide_dir).mkdir(parents=True, exist_ok=True)
            (Path(job.slide_dir) / ".nodes.abc.tmp.csv").write_text("half")
            os._exit(1)
        return fn(job)

    return wrapped


class KillingExecutor(DaskExecutor):
    def __init__(self, marker_dir, **kw):
        super().__init__(**kw)
        self.marker_dir = marker_dir

    def map(self, fn, jobs):
        return super().map(_dies_once(fn, self.marker_dir), jobs)


def test_worker_dying_mid_slide_is_retried_and_tables_complete(small_cohort, tmp_path):
    slides, ann = small_cohort
    run(slides, ann, tmp_path / "serial")
    with KillingExecutor(tmp_path, workers=2, retries=2) as ex:
        s = run(slides, ann, tmp_path / "dask", executor=ex)
    assert (tmp_path / "S2.died").exists(), "the worker was not killed: the test tested nothing"
    assert s.n_done == 3 and s.exit_code == 0
    assert_same_outputs(tmp_path / "serial", tmp_path / "dask")
    assert not list((tmp_path / "dask" / "slides" / "S2").glob(".*.tmp*")), "partial output left behind"


def test_external_scheduler_and_workers_as_processes(small_cohort, tmp_path):
    slides, ann = small_cohort
    run(slides, ann, tmp_path / "serial")
    sched_file = tmp_path / "scheduler.json"
    env = {**os.environ, "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
    bindir = Path(sys.executable).parent
    procs = [subprocess.Popen([str(bindir / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0",
                               "--no-dashboard", "--scheduler-file", str(sched_file)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        for _ in range(200):
            if sched_file.exists() and sched_file.stat().st_size:
                break
            time.sleep(0.1)
        import json

        address = json.loads(sched_file.read_text())["address"]
        assert address.startswith("tcp://127.0.0.1:")
        for _ in range(2):
            procs.append(subprocess.Popen([str(bindir / "dask"), "worker", address, "--nthreads", "1",
                                           "--no-dashboard", "--host", "127.0.0.1", "--resources", "GPU=1"],
                                          env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        from click.testing import CliRunner

        from tmln.cli import main

        r = CliRunner().invoke(main, ["analyze", "--slides", str(slides), "--out", str(tmp_path / "dask"),
                                      "--node-annotations", str(ann), "--tumour-annotations", str(ann), "-q",
                                      "--scheduler", address, "--resources", "GPU=1"])
        assert r.exit_code == 0, r.output
        assert_same_outputs(tmp_path / "serial", tmp_path / "dask")
    finally:
        for p in procs[::-1]:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
