"""End-to-end on a phantom cohort: truth GeoJSON as annotations -> tables equal the phantom truth."""

import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from tmln.annotations import Annotation, read_annotations, write_asap_xml, write_geojson, feature
from tmln.cohort.run import run_cohort
from tmln.rundir import RUN_OUTPUTS


def analyze(slides, ann, out, **kw):
    return run_cohort(slides, out, node_annotations=ann, tumour_annotations=ann, quiet=True, **kw)


def test_phantom_truth(phantom_cohort, tmp_path):
    d = phantom_cohort.parent
    s = analyze(phantom_cohort, d, tmp_path / "run")
    assert s.exit_code == 0
    got = pd.read_csv(tmp_path / "run" / "nodes.csv")
    truth = pd.read_csv(d / "truth_nodes.csv")
    assert len(got) == len(truth)
    assert got.groupby("slide_id").size().to_dict() == truth.groupby("slide_id").size().to_dict()
    assert (got[["slide_id", "node_id"]].values == truth[["slide_id", "node_id"]].values).all()
    for col in ("area_mm2", "tumour_area_mm2", "largest_deposit_mm"):
        assert got[col].tolist() == pytest.approx(truth[col].tolist(), rel=5e-3, abs=1e-9), col
    assert got["category"].tolist() == truth["category"].tolist()
    assert got["metastatic"].tolist() == truth["metastatic"].tolist()
    gp = pd.read_csv(tmp_path / "run" / "patients.csv")
    tp = pd.read_csv(d / "truth_patients.csv")
    assert gp["patient_id"].tolist() == tp["patient_id"].tolist()
    for col in ("n_slides", "n_nodes", "n_metastatic_nodes", "n_stage", "n_negative_nodes", "nodes_examined_lt16",
                "n_itc_nodes", "n_micro_nodes", "n_macro_nodes"):
        assert gp[col].tolist() == tp[col].tolist(), col
    for col in ("tumour_area_mm2", "metastatic_node_area_mm2", "t_mln", "t_mln_mean_nodes", "lymph_node_ratio", "lodds"):
        assert gp[col].tolist() == pytest.approx(tp[col].tolist(), rel=5e-3, abs=1e-9), col
    assert (tp["n_metastatic_nodes"] > 0).any() and (tp["n_metastatic_nodes"] == 0).any()


def test_asap_xml_and_geojson_give_identical_tables(phantom_cohort, tmp_path):
    """The same shapes as GeoJSON and as ASAP XML (exteriors; snapped to a 1/4 px grid that both formats
    write exactly) give byte-identical tables."""
    import shapely

    src = phantom_cohort.parent
    gj, xml = tmp_path / "gj", tmp_path / "xml"
    gj.mkdir(), xml.mkdir()
    for f in sorted(src.glob("*.nodes.geojson")) + sorted(src.glob("*.tumour.geojson")):
        anns = [Annotation(shapely.set_precision(shapely.Polygon(p.exterior), 0.25), label=a.label, name=a.name)
                for a in read_annotations(f) for p in getattr(a.geometry, "geoms", [a.geometry])]
        write_geojson(gj / f.name, [feature(a.geometry, a.label, name=a.name) for a in anns])
        write_asap_xml(xml / f.name.replace(".geojson", ".xml"), anns)
    analyze(phantom_cohort, gj, tmp_path / "run_gj")
    analyze(phantom_cohort, xml, tmp_path / "run_xml")
    for name in ("nodes.csv", "patients.csv"):
        assert (tmp_path / "run_gj" / name).read_bytes() == (tmp_path / "run_xml" / name).read_bytes(), name
    a = pd.read_csv(tmp_path / "run_gj" / "slides.csv").drop(columns=["nodes_source", "tumour_source"])
    b = pd.read_csv(tmp_path / "run_xml" / "slides.csv").drop(columns=["nodes_source", "tumour_source"])
    pd.testing.assert_frame_equal(a, b)


def test_kill_and_resume_gives_identical_bytes(phantom_cohort, tmp_path):
    d = phantom_cohort.parent
    args = [sys.executable, "-m", "tmln", "analyze", "--slides", str(phantom_cohort), "--node-annotations", str(d),
            "--tumour-annotations", str(d), "-q"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ref = tmp_path / "ref"
    assert analyze(phantom_cohort, d, ref).exit_code == 0
    run = tmp_path / "killed"
    proc = subprocess.Popen(args + ["--out", str(run)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if any(run.glob("slides/*/state.json")):
            break
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    n_states = len(list(run.glob("slides/*/state.json")))
    assert n_states < 3 and not (run / "summary.json").exists(), "the run finished before it was killed"
    resumed = analyze(phantom_cohort, d, run)
    assert resumed.n_reused == n_states and resumed.exit_code == 0
    for name in RUN_OUTPUTS:
        assert (run / name).read_bytes() == (ref / name).read_bytes(), name
    for f in ref.glob("slides/*/*"):
        if f.name != "state.json":
            assert (run / f.relative_to(ref)).read_bytes() == f.read_bytes(), f
    assert not list(run.rglob(".*.tmp*"))
