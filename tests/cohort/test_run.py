import json
import sys
import types

import pandas as pd
import pytest
from click.testing import CliRunner
from shapely.geometry import box

from tmln.cli import main
from tmln.cohort.run import RUN_PATIENT_COLUMNS, SLIDE_COLUMNS, run_cohort
from tmln.errors import TmlnError
from tmln.measure.staging import NODE_COLUMNS

from .helpers import fc, feat, make_tiff, square, write_json



def fake_providers(monkeypatch, nodes_from_model, tumour_from_model):
    """Stand-ins for the node and tumour model packages (their ``regions_from_model``)."""
    fake_nodes = types.ModuleType("tmln.nodes")
    fake_nodes.regions_from_model = nodes_from_model
    fake_tumour = types.ModuleType("tmln.tumour")
    fake_tumour.regions_from_model = tumour_from_model
    monkeypatch.setitem(sys.modules, "tmln.nodes", fake_nodes)
    monkeypatch.setitem(sys.modules, "tmln.tumour", fake_tumour)


def run(slides, ann, out, **kw):
    return run_cohort(slides, out, node_annotations=ann, tumour_annotations=ann, quiet=True, **kw)


def read(out, name):
    return pd.read_csv(out / name, dtype={"patient_id": str})


def test_small_cohort_tables(small_cohort, tmp_path):
    slides, ann = small_cohort
    out = tmp_path / "run"
    s = run(slides, ann, out)
    assert s.exit_code == 0 and (s.n_done, s.n_failed, s.n_processed) == (3, 0, 3)
    nodes = read(out, "nodes.csv")
    assert list(nodes.columns) == NODE_COLUMNS
    assert nodes["area_mm2"].tolist() == pytest.approx([0.04, 0.04, 0.0225, 0.09])
    assert nodes["category"].tolist() == ["itc", "negative", "negative", "micro"]
    assert nodes["largest_deposit_mm"].tolist() == pytest.approx([0.0707107, 0, 0, 0.3535534])
    sl = read(out, "slides.csv")
    assert list(sl.columns) == SLIDE_COLUMNS
    assert sl["extranodal_tumour_area_mm2"].tolist() == pytest.approx([0.000625, 0, 0])
    assert sl["status"].tolist() == ["done"] * 3
    assert "no tumour" in sl.loc[1, "tumour_source"]
    pts = read(out, "patients.csv")
    assert list(pts.columns) == RUN_PATIENT_COLUMNS
    assert pts["n_stage"].tolist() == ["N0", "N1"]
    assert pts["n_slides"].tolist() == [2, 1] and pts["n_nodes"].tolist() == [3, 1]
    assert pts["t_mln"].tolist() == pytest.approx([0, 0.0625 / 0.09])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["done"] == 3 and summary["failures"] == []
    for sid in ("S1", "S2", "S3"):
        for f in ("nodes.geojson", "tumour.geojson", "overlay.png", "nodes.csv", "state.json"):
            assert (out / "slides" / sid / f).is_file()
    assert not list(out.rglob(".*.tmp*"))  # no temporaries left


def test_rerun_skips_force_redoes_and_changed_parameters_invalidate(small_cohort, tmp_path):
    slides, ann = small_cohort
    out = tmp_path / "run"
    run(slides, ann, out)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    s = run(slides, ann, out)
    assert (s.n_processed, s.n_reused) == (0, 3)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert run(slides, ann, out, force=True).n_processed == 3
    # a changed annotation file redoes only its slide
    write_json(ann / "S2.nodes.geojson", fc(feat(square(100, 400, 200))))
    s = run(slides, ann, out)
    assert (s.n_processed, s.n_reused) == (1, 2)
    assert read(out, "nodes.csv")["area_mm2"].tolist()[2] == pytest.approx(0.01)
    # another MLN rule redoes everything: the ITC node becomes metastatic
    s = run(slides, ann, out, mln_rule="any")
    assert s.n_processed == 3
    assert read(out, "patients.csv")["n_stage"].tolist() == ["N1", "N1"]
    # moving a slide to another patient redoes it, and its node rows carry the new patient
    slides.write_text("slide_path,patient_id\nS1.tiff,P1\nS2.tiff,P3\nS3.tiff,P2\n")
    s = run(slides, ann, out, mln_rule="any")
    assert (s.n_processed, s.n_reused) == (1, 2)
    assert read(out, "nodes.csv")["patient_id"].tolist() == ["P1", "P1", "P3", "P2"]


def test_bad_inputs_are_reported_and_others_finish(tmp_path):
    d, ann = tmp_path / "c", tmp_path / "a"
    d.mkdir(), ann.mkdir()
    good = fc(feat(square(100, 100, 400), "Lymph node"))
    make_tiff(d / "ok.tiff")
    write_json(ann / "ok.nodes.geojson", good)
    write_json(ann / "ok.tumour.geojson", fc(feat(square(150, 150, 300), "Tumor")))
    (d / "garbage.tiff").write_bytes(b"II*\x00" + bytes(range(256)) * 40)
    write_json(ann / "garbage.nodes.geojson", good)
    make_tiff(d / "nompp.tiff", mpp=None)
    write_json(ann / "nompp.nodes.geojson", good)
    make_tiff(d / "bowtie.tiff")
    write_json(ann / "bowtie.nodes.geojson", fc(feat([[100, 100], [300, 300], [300, 100], [100, 300], [100, 100]])))
    make_tiff(d / "notgeo.tiff")
    write_json(ann / "notgeo.nodes.geojson", {"foo": [1, 2]})
    make_tiff(d / "laughs.tiff")
    (ann / "laughs.nodes.xml").write_text(
        '<?xml version="1.0"?>\n<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">'
        '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;">]>\n<ASAP_Annotations>&lol3;</ASAP_Annotations>\n')
    make_tiff(d / "outside.tiff")
    write_json(ann / "outside.nodes.geojson", fc(feat(square(1000, 700, 400))))
    make_tiff(d / "nonode.tiff")
    make_tiff(d / "ambiguous.tiff")
    write_json(ann / "ambiguous.geojson", good)
    (ann / "ambiguous.xml").write_text("<ASAP_Annotations/>")
    (d / "slides.csv").write_text(
        "slide_path,patient_id\nok.tiff,P1\ngarbage.tiff,P2\nnompp.tiff,P3\nbowtie.tiff,P4\nnotgeo.tiff,P5\n"
        "laughs.tiff,P6\noutside.tiff,P7\nnonode.tiff,P8\nok.tiff,P1\nambiguous.tiff,P9\nmissing.tiff,P10\n")
    out = tmp_path / "run"
    s = run(d / "slides.csv", ann, out)
    assert s.exit_code == 1
    sl = read(out, "slides.csv").fillna("")
    status = sl["status"].tolist()
    assert status == ["done", "failed", "failed", "done", "failed", "failed", "failed", "failed", "failed",
                      "failed", "failed"]
    e = sl["error"].tolist()
    assert "not a slide format" in e[1] and "garbage.tiff" in e[1]
    assert "microns per pixel" in e[2]
    assert "repaired invalid polygon" in sl.loc[3, "notes"]
    assert "not GeoJSON" in e[4]
    assert "XML rejected for safety" in e[5]
    assert "outside the slide" in e[6]
    assert "no node annotation for slide 'nonode'" in e[7]
    assert "listed twice" in e[8]
    assert "several nodes annotation files" in e[9]
    assert "no such file" in e[10]
    pts = read(out, "patients.csv")
    assert pts.loc[0, "n_stage"] == "N1"  # P1: its duplicate row does not block its own staging
    assert pts["n_stage"].isna().sum() == 8  # P2, P3, P5..P10; P4 (repaired bow-tie) is staged
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["failed"] == 9
    kinds = [(f["kind"], f["id"]) for f in summary["failures"]]
    assert ("patient", "P2") in kinds and ("slide", "garbage") in kinds
    assert any(f["error"] == "no readable slide" for f in summary["failures"] if f["kind"] == "patient")
    html = (out / "report.html").read_text()
    assert "XML rejected for safety" in html
    assert not (out / "slides" / "garbage" / "nodes.csv").exists()


def test_patient_with_duplicate_row_only(tmp_path, small_cohort):
    slides, ann = small_cohort
    slides.write_text("slide_path,patient_id\nS1.tiff,P1\nS1.tiff,P2\n")
    s = run(slides, ann, tmp_path / "run")
    pts = read(tmp_path / "run", "patients.csv")
    assert pts["n_stage"].isna().all()  # the slide is claimed by two patients: neither is staged
    assert s.exit_code == 1


def test_run_level_errors(small_cohort, tmp_path):
    slides, ann = small_cohort
    with pytest.raises(TmlnError, match="no tumour source"):
        run_cohort(slides, tmp_path / "r", node_annotations=ann, quiet=True)
    with pytest.raises(TmlnError, match="not both"):
        run_cohort(slides, tmp_path / "r", node_annotations=ann, node_model="m", tumour_annotations=ann)
    with pytest.raises(TmlnError, match="folder not found"):
        run_cohort(slides, tmp_path / "r", node_annotations=tmp_path / "nope", tumour_annotations=ann)
    with pytest.raises(TmlnError, match="MLN rule"):
        run(slides, ann, tmp_path / "r", mln_rule="pn")


def test_model_providers_missing_and_present(small_cohort, tmp_path, monkeypatch):
    slides, ann = small_cohort
    monkeypatch.setitem(sys.modules, "tmln.nodes", types.ModuleType("tmln.nodes"))
    with pytest.raises(TmlnError, match="tmln.nodes.regions_from_model"):
        run_cohort(slides, tmp_path / "r", node_model="demo-nodes", tumour_annotations=ann)
    calls = []

    def nodes_from_model(slide, model, out_dir=None, device="auto"):
        calls.append((slide.path.name, model, device))
        return [box(100, 100, 1000, 800)]

    thresholds = []

    precisions = []

    def tumour_from_model(slide, model, node_polygons=None, out_dir=None, device="auto", threshold=None,
                          precision="auto"):
        assert node_polygons and out_dir
        thresholds.append(threshold)
        precisions.append(precision)
        return [box(100, 100, 700, 700)]  # 300 µm side: micro

    fake_providers(monkeypatch, nodes_from_model, tumour_from_model)
    s = run_cohort(slides, tmp_path / "m", node_model="n1", tumour_model="t1", quiet=True, device="cpu")
    assert s.exit_code == 0 and len(calls) == 3 and calls[0][1:] == ("n1", "cpu")
    assert thresholds == [None] * 3  # the card's own threshold
    s = run_cohort(slides, tmp_path / "m", node_model="n1", tumour_model="t1", quiet=True, device="cpu",
                   tumour_threshold=0.8)
    assert s.n_processed == 3 and thresholds[3:] == [0.8] * 3  # a new threshold redoes every slide
    assert precisions == ["auto"] * 6
    s = run_cohort(slides, tmp_path / "m", node_model="n1", tumour_model="t1", quiet=True, device="cpu",
                   tumour_threshold=0.8, tumour_precision="fp32")
    assert s.n_processed == 3 and precisions[6:] == ["fp32"] * 3  # a chosen precision redoes them too
    sl = read(tmp_path / "m", "slides.csv")
    assert sl["nodes_source"].tolist() == ["model:n1"] * 3
    assert read(tmp_path / "m", "patients.csv")["n_stage"].tolist() == ["N1", "N1"]


def test_cli_exit_codes(small_cohort, tmp_path):
    slides, ann = small_cohort
    r = CliRunner().invoke(main, ["analyze", "--slides", str(slides), "--out", str(tmp_path / "r"),
                                  "--node-annotations", str(ann), "--tumour-annotations", str(ann), "-q"])
    assert r.exit_code == 0, r.output
    (slides.parent / "S2.tiff").write_bytes(b"not a slide")
    r = CliRunner().invoke(main, ["analyze", "--slides", str(slides), "--out", str(tmp_path / "r"),
                                  "--node-annotations", str(ann), "--tumour-annotations", str(ann), "-q"])
    assert r.exit_code == 1 and "failed slide S2" in r.output
    r = CliRunner().invoke(main, ["analyze", "--slides", str(tmp_path / "none.csv"), "--out", str(tmp_path / "r"),
                                  "--node-annotations", str(ann), "--tumour-annotations", str(ann)])
    assert r.exit_code == 2 and "slides table not found" in r.output
    assert "Example" in CliRunner().invoke(main, ["analyze", "--help"]).output


def test_other_executor_gives_identical_tables(small_cohort, tmp_path):
    """The executor slot (issue 9): jobs round-trip through pickle; results may come in any order."""
    import pickle

    from tmln.cohort.job import process_slide

    class PickleReversed:  # what a process pool / Dask does to a job, finishing in another order
        def map(self, fn, jobs):
            for job in reversed(list(jobs)):
                yield pickle.loads(pickle.dumps(fn))(pickle.loads(pickle.dumps(job)))

    slides, ann = small_cohort
    run(slides, ann, tmp_path / "serial")
    s = run(slides, ann, tmp_path / "other", executor=PickleReversed())
    assert s.n_done == 3 and process_slide.__module__ == "tmln.cohort.job"
    for name in ("nodes.csv", "slides.csv", "patients.csv", "summary.json", "report.html"):
        assert (tmp_path / "serial" / name).read_bytes() == (tmp_path / "other" / name).read_bytes(), name


def test_second_concurrent_run_is_refused(small_cohort, tmp_path):
    from tmln.cohort.run import run_lock

    slides, ann = small_cohort
    with run_lock(tmp_path / "run"):
        with pytest.raises(TmlnError, match="another tmln analyze is running"):
            run(slides, ann, tmp_path / "run")
    assert run(slides, ann, tmp_path / "run").exit_code == 0  # released


def test_real_svs_slide(cmu_slide, tmp_path):
    """The committed Aperio slide (0.499 µm/px from its properties) with hand-made outlines."""
    (tmp_path / "slides.csv").write_text(f"slide_path,patient_id\n{cmu_slide},X\n")
    ann = tmp_path / "ann"
    ann.mkdir()
    write_json(ann / "CMU-1-Small-Region.geojson",
               fc(feat(square(200, 200, 1000), "Lymph node"), feat(square(300, 300, 500), "Tumor")))
    s = run(tmp_path / "slides.csv", ann, tmp_path / "run")
    assert s.exit_code == 0
    n = read(tmp_path / "run", "nodes.csv")
    assert n["area_mm2"][0] == pytest.approx((1000 * 0.499) ** 2 / 1e6, rel=1e-3)
    assert n["category"][0] == "micro"
    assert read(tmp_path / "run", "slides.csv")["mpp_x"][0] == pytest.approx(0.499)


def test_cli_passes_precision_and_device_on(small_cohort, tmp_path, monkeypatch):
    import dataclasses

    import tmln.cohort.run

    seen = {}

    def fake_run_cohort(slides, out, config, **kw):  # the CLI builds the run's configuration
        seen.update(dataclasses.asdict(config))
        return run_cohort(slides, out, config.replace(tumour_precision="auto"), **kw)

    monkeypatch.setattr(tmln.cohort.run, "run_cohort", fake_run_cohort)
    slides, ann = small_cohort
    args = ["analyze", "--slides", str(slides), "--out", str(tmp_path / "r"), "--node-annotations", str(ann),
            "--tumour-annotations", str(ann), "-q", "--device", "cpu"]
    r = CliRunner().invoke(main, args + ["--precision", "fp32"])
    assert r.exit_code == 0, r.output
    assert seen["tumour_precision"] == "fp32" and seen["device"] == "cpu"
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0 and seen["tumour_precision"] == "auto"
    assert CliRunner().invoke(main, args + ["--precision", "int4"]).exit_code == 2


def test_notes_name_unknown_and_mixed_classes(tmp_path):
    """Unknown classes are never silently tumour; node classes in a tumour file and tumour classes in
    a node file are said in the slide's notes, unless one file is given as both."""
    d = tmp_path / "c"
    d.mkdir()
    make_tiff(d / "S1.tiff")
    (d / "slides.csv").write_text("slide_path,patient_id\nS1.tiff,P1\n")
    ann, both = tmp_path / "ann", tmp_path / "both"
    ann.mkdir()
    both.mkdir()
    write_json(ann / "S1.nodes.geojson", fc(feat(square(100, 100, 400), "Lymph node"), feat(square(150, 150, 50), "Tumor")))
    write_json(ann / "S1.tumour.geojson", fc(feat(square(150, 150, 100), "Tumor"), feat(square(300, 300, 100), "Fat"),
                                              feat(square(100, 100, 400), "Lymph node")))
    write_json(both / "S1.geojson", fc(feat(square(100, 100, 400), "Lymph node"), feat(square(150, 150, 100), "Tumor"),
                                       feat(square(300, 300, 100), "Fat"), feat(square(600, 100, 300), "Positive"),
                                       feat(square(600, 500, 300))))
    run(d / "slides.csv", ann, tmp_path / "r1")
    s = read(tmp_path / "r1", "slides.csv")
    notes = s["notes"].iloc[0]
    assert s["tumour_area_mm2"].iloc[0] == pytest.approx(0.0025)  # Fat is not tumour
    assert "'Fat'" in notes and "does not know" in notes
    assert "'Lymph node'" in notes and "'Tumor'" in notes
    run(d / "slides.csv", both, tmp_path / "r2")
    s = read(tmp_path / "r2", "slides.csv")
    assert s["tumour_area_mm2"].iloc[0] == pytest.approx(0.0025)  # node status and unclassified: nodes
    assert s["n_nodes"].iloc[0] == 3 and s["extranodal_tumour_area_mm2"].iloc[0] == 0  # Fat lies inside the node
    notes = s["notes"].iloc[0]
    assert "'Fat'" in notes and "'Lymph node'" not in notes and "not nodes" not in notes


def test_failed_rerun_leaves_no_earlier_outputs(small_cohort, tmp_path):
    """A slide that fails after an earlier success keeps none of its earlier outputs, model maps included."""
    slides, ann = small_cohort
    out = tmp_path / "run"
    run(slides, ann, out)
    d = out / "slides" / "S1"
    for name in ("tumour_map.npy", "tumour_map.json", "tumour_map.png", "node_labels.npy", "node_labels.json"):
        (d / name).write_bytes(b"from an earlier run with models")
    assert (d / "nodes.csv").is_file() and (d / "overlay.png").is_file()
    (ann / "S1.nodes.geojson").write_text("{not json")
    run(slides, ann, out)
    assert read(out, "slides.csv").set_index("slide_id").loc["S1", "status"] == "failed"
    assert sorted(p.name for p in d.iterdir()) == ["state.json"]


def test_resume_does_not_depend_on_path_spelling(small_cohort, tmp_path, monkeypatch):
    """Inputs are identified by what they are: relative, absolute and trailing-slash spellings, another
    working directory and a moved run directory all resume without recomputing."""
    import shutil

    slides, ann = small_cohort
    monkeypatch.chdir(tmp_path)
    s = run_cohort("cohort/slides.csv", "run", node_annotations="ann", tumour_annotations="ann", quiet=True)
    assert s.n_processed == 3
    spellings = [(str(slides), str(tmp_path / "run"), str(ann)),  # absolute
                 ("cohort/slides.csv", "run/", "ann/"),  # trailing slashes
                 ("./cohort/../cohort/slides.csv", "./run", "./ann/.")]
    for table, out, folder in spellings:
        s = run_cohort(table, out, node_annotations=folder, tumour_annotations=folder, quiet=True)
        assert (s.n_processed, s.n_reused) == (0, 3), (table, out, folder)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    s = run_cohort("../cohort/slides.csv", "../run", node_annotations="../ann", tumour_annotations="../ann", quiet=True)
    assert (s.n_processed, s.n_reused) == (0, 3)
    # a moved run directory resumes; a changed input still redoes its slide
    shutil.move(str(tmp_path / "run"), str(tmp_path / "moved"))
    s = run_cohort("../cohort/slides.csv", "../moved", node_annotations="../ann", tumour_annotations="../ann", quiet=True)
    assert (s.n_processed, s.n_reused) == (0, 3)
    write_json(ann / "S3.tumour.geojson", fc(feat(square(110, 110, 400))))
    s = run_cohort(str(slides), tmp_path / "moved", node_annotations=ann, tumour_annotations=ann, quiet=True)
    assert (s.n_processed, s.n_reused) == (1, 2)


def _corrupt_tiles(path, tiles):
    """Overwrite the compressed bytes of level-0 tiles (column, row) of a tiled TIFF with garbage."""
    import tifffile

    with tifffile.TiffFile(path) as tf:
        page = tf.pages[0]
        across = -(-page.imagewidth // page.tilewidth)
        spans = [(int(page.dataoffsets[r * across + c]), int(page.databytecounts[r * across + c])) for c, r in tiles]
    with open(path, "r+b") as fh:
        for offset, count in spans:
            fh.seek(offset)
            fh.write((b"\x00garbage" * count)[:count])


def _jpeg_slide(path, width=1200, height=900, mpp=0.5):
    import numpy as np
    import tifffile

    img = np.full((height, width, 3), 235, np.uint8)
    img[100:800, 100:1100] = (200, 120, 170)
    tifffile.imwrite(path, img, tile=(256, 256), compression="jpeg", photometric="rgb",
                     resolution=(1e4 / mpp, 1e4 / mpp), resolutionunit="CENTIMETER")
    return path


def test_unreadable_tiles_are_a_recorded_gap_not_a_failed_slide(tmp_path):
    """A corrupt tile inside a node and one outside: the slide is measured from its outlines, the gaps
    (position, mm², mm² inside nodes) are in the notes, slides.csv, patients.csv, summary.json and drawn
    on the overlay."""
    import numpy as np
    from PIL import Image

    d = tmp_path / "c"
    d.mkdir()
    _corrupt_tiles(_jpeg_slide(d / "S1.tiff"), [(1, 1), (4, 3)])  # px 256-512 (in the node); 1024-1200 x 768-900
    (d / "slides.csv").write_text("slide_path,patient_id\nS1.tiff,P1\n")
    ann = tmp_path / "ann"
    ann.mkdir()
    write_json(ann / "S1.nodes.geojson", fc(feat(square(100, 100, 400), "Lymph node")))
    write_json(ann / "S1.tumour.geojson", fc(feat(square(150, 150, 300), "Tumor")))
    s = run(d / "slides.csv", ann, tmp_path / "r")
    sl = read(tmp_path / "r", "slides.csv").iloc[0]
    assert sl["status"] == "done", sl["error"]
    assert sl["tumour_area_mm2"] == pytest.approx(300 * 300 * 0.25 / 1e6)  # outlines need no pixel
    px_mm2 = 0.25 / 1e6
    assert sl["unread_area_mm2"] == pytest.approx((256 * 256 + 176 * 132) * px_mm2)
    assert sl["unread_node_area_mm2"] == pytest.approx(244 * 244 * px_mm2)
    assert "UNREAD TILES: 2 tile(s)" in sl["notes"] and "(256, 256)-(512, 512)" in sl["notes"]
    pt = read(tmp_path / "r", "patients.csv").iloc[0]
    assert pt["n_stage"] == "N1" and pt["unread_node_area_mm2"] == pytest.approx(244 * 244 * px_mm2)
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["counts"]["slides_with_unread_tiles"] == 1
    assert summary["unread_tiles"][0]["tiles_px"] == [[256, 256, 512, 512], [1024, 768, 1200, 900]]
    overlay = np.asarray(Image.open(tmp_path / "r" / "slides" / "S1" / "overlay.png").convert("RGB"))
    assert ((overlay == (255, 0, 255)).all(axis=2)).sum() > 100
    assert s.exit_code == 0


def test_models_say_how_much_of_each_node_they_could_not_see(tmp_path, monkeypatch):
    d = tmp_path / "c"
    d.mkdir()
    _corrupt_tiles(_jpeg_slide(d / "S1.tiff"), [(1, 1)])
    (d / "slides.csv").write_text("slide_path,patient_id\nS1.tiff,P1\n")

    def nodes_from_model(slide, model, out_dir=None, device="auto"):
        slide.read((0, 0), (1200, 900))  # the model looks at every pixel
        return [box(100, 100, 500, 500)]

    fake_nodes = types.ModuleType("tmln.nodes")
    fake_nodes.regions_from_model = nodes_from_model
    monkeypatch.setitem(sys.modules, "tmln.nodes", fake_nodes)
    ann = tmp_path / "ann"
    ann.mkdir()
    run_cohort(d / "slides.csv", tmp_path / "r", node_model="n1", tumour_annotations=ann, quiet=True)
    sl = read(tmp_path / "r", "slides.csv").iloc[0]
    assert sl["status"] == "done", sl["error"]
    assert "node 1: 0.014884 mm² (37.2 % of the node) not seen by the models" in sl["notes"]


def test_slides_folder_with_one_folder_per_patient(small_cohort, tmp_path):
    """``--slides DIR``: DIR/<patient>/<slide files>; the derived table is written into the run directory
    and the run equals the one from the hand-written table."""
    import shutil

    from tmln.cohort.table import slides_table_from_folders

    slides, ann = small_cohort
    scans = tmp_path / "scans"
    for sid, pid in (("S1", "P1"), ("S2", "P1"), ("S3", "P2")):
        (scans / pid).mkdir(parents=True, exist_ok=True)
        shutil.copy2(slides.parent / f"{sid}.tiff", scans / pid / f"{sid}.tiff")
    (scans / "P1" / "notes.txt").write_text("not a slide")
    (scans / ".hidden").mkdir()
    rows = slides_table_from_folders(scans)
    assert [(r["patient_id"], r["slide_path"].rsplit("/", 1)[1]) for r in rows] == [
        ("P1", "S1.tiff"), ("P1", "S2.tiff"), ("P2", "S3.tiff")]
    r = CliRunner().invoke(main, ["analyze", "--slides", str(scans), "--out", str(tmp_path / "dir"),
                                  "--node-annotations", str(ann), "--tumour-annotations", str(ann), "-q"])
    assert r.exit_code == 0, r.output
    derived = pd.read_csv(tmp_path / "dir" / "slides_table.csv", dtype=str)
    assert list(derived.columns) == ["slide_path", "patient_id"] and derived["patient_id"].tolist() == ["P1", "P1", "P2"]
    run(slides, ann, tmp_path / "csv")
    for name in ("nodes.csv", "patients.csv"):
        assert (tmp_path / "dir" / name).read_bytes() == (tmp_path / "csv" / name).read_bytes()
    summary = json.loads((tmp_path / "dir" / "summary.json").read_text())
    assert summary["parameters"]["slides_csv"].endswith("slides_table.csv")


def test_slides_folder_errors(tmp_path):
    from tmln.cohort.table import slides_table_from_folders
    from tmln.errors import InputTableError

    (tmp_path / "a").mkdir()
    with pytest.raises(InputTableError, match="no patient folders"):
        slides_table_from_folders(tmp_path / "a")
    (tmp_path / "a" / "loose.svs").write_bytes(b"x")
    with pytest.raises(InputTableError, match="directly in the folder"):
        slides_table_from_folders(tmp_path / "a")
    (tmp_path / "b" / "P1").mkdir(parents=True)
    (tmp_path / "b" / "P1" / "readme.txt").write_text("x")
    with pytest.raises(InputTableError, match="without a slide file.*P1"):
        slides_table_from_folders(tmp_path / "b")


def test_analyze_model_knobs_reach_the_providers_and_redo_slides(small_cohort, tmp_path, monkeypatch):
    """--no-split, --min-node-area, --method, --tile-size (the single-slide commands' knobs) on analyze."""
    slides, ann = small_cohort
    node_kw, tumour_kw = [], []

    def nodes_from_model(slide, model, out_dir=None, device="auto", **kw):
        node_kw.append(kw)
        return [box(100, 100, 1000, 800)]

    def tumour_from_model(slide, model, node_polygons=None, out_dir=None, device="auto", threshold=None,
                          precision="auto", **kw):
        tumour_kw.append(kw)
        return [box(100, 100, 700, 700)]

    fake_providers(monkeypatch, nodes_from_model, tumour_from_model)
    args = ["analyze", "--slides", str(slides), "--out", str(tmp_path / "r"), "--node-model", "n1",
            "--tumour-model", "t1", "-q", "--device", "cpu"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert node_kw == [{}] * 3 and tumour_kw == [{}] * 3  # defaults: nothing passed, the cards decide
    r = CliRunner().invoke(main, args + ["--no-split", "--min-node-area", "0.2", "--method", "dense",
                                         "--tile-size", "1024"])
    assert r.exit_code == 0, r.output
    assert node_kw[3:] == [{"split_touching": False, "min_node_area_mm2": 0.2}] * 3  # new knobs redo every slide
    assert tumour_kw[3:] == [{"method": "dense", "tile_size": 1024}] * 3
    params = json.loads((tmp_path / "r" / "summary.json").read_text())["parameters"]
    assert params["node_split"] is False and params["min_node_area_mm2"] == 0.2 and params["tumour_method"] == "dense"
    r = CliRunner().invoke(main, ["analyze", "--slides", str(slides), "--out", str(tmp_path / "a"),
                                  "--node-annotations", str(ann), "--tumour-annotations", str(ann), "--no-split"])
    assert r.exit_code == 2 and "apply to --node-model" in r.output
