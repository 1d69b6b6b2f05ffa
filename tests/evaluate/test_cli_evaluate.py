"""`tmln evaluate froc|slides|patches|staging` end to end on tiny inputs written here."""

import json
import shutil

import pytest
from click.testing import CliRunner
from shapely.geometry import Point, box

from tmln.annotations import Annotation, write_asap_xml
from tmln.cli import main


def _run(*args):
    result = CliRunner().invoke(main, list(map(str, args)), catch_exceptions=False)
    return result


@pytest.fixture
def camelyon_like(tmp_path):
    truth, preds = tmp_path / "truth", tmp_path / "preds"
    truth.mkdir()
    preds.mkdir()
    # Tumor_001: two lesions (one detected twice, one missed) + an exclusion; Tumor_002: ITC only
    write_asap_xml(truth / "Tumor_001.xml", [
        Annotation(box(10000, 10000, 14000, 14000), "_0", name="Annotation 0"),
        Annotation(box(30000, 10000, 34000, 14000), "_1", name="Annotation 1"),
        Annotation(box(11000, 11000, 12000, 12000), "_2", name="Annotation 2"),
    ])
    write_asap_xml(truth / "Tumor_002.xml", [Annotation(Point(5000, 5000).buffer(150), "Tumor")])
    (preds / "Tumor_001.csv").write_text("0.9,12000,12000\n0.8,13000,13000\n0.6,50000,30000\n")
    (preds / "Tumor_002.csv").write_text("probability,x,y\n0.7,5000,5000\n")
    (preds / "Normal_001.csv").write_text("0.95,100,100\n0.3,200,200\n")
    sizes = tmp_path / "sizes.csv"
    sizes.write_text("slide_id,width_px,height_px,mpp\nTumor_001,60000,40000,0.243\nTumor_002,10000,10000,0.243\n")
    return tmp_path, truth, preds, sizes


def test_froc_end_to_end(camelyon_like):
    tmp, truth, preds, sizes = camelyon_like
    out = tmp / "out"
    r = _run("evaluate", "froc", "--truth", truth, "--predictions", preds, "--slides", sizes, "--out", out)
    assert r.exit_code == 0, r.output
    res = json.loads((out / "froc.json").read_text())
    assert res["n_slides"] == 3 and res["n_tumour_slides"] == 2 and res["n_lesions"] == 2
    assert set(res["sensitivities"]) == {"0.25", "0.5", "1", "2", "4", "8"}
    # FPs .6 (Tumor_001), .95 and .3 (normal); the ITC hit is ignored; lesions [.9, 0], ITC [0]
    # thresholds .3 .6 .9 .95 -> FPs/slide 1, 2/3, 1/3, 1/3 and sensitivity .5 .5 .5 0, then (0, 0)
    assert res["sensitivities"]["0.25"] == 0.0  # between (0, 0) and (1/3, 0)
    assert all(res["sensitivities"][k] == pytest.approx(0.5) for k in ("0.5", "1", "2", "4", "8"))
    assert res["froc"] == pytest.approx(2.5 / 6)
    for name in ("froc_curve.csv", "froc_slides.csv", "froc_detections.csv", "froc.png"):
        assert (out / name).stat().st_size > 0
    assert "FROC 0.4167" in r.output
    assert not list(out.glob(".*tmp*"))


def test_froc_with_a_slide_folder_and_errors(camelyon_like, cmu_slide):
    tmp, truth, preds, _ = camelyon_like
    slides = tmp / "slides"
    slides.mkdir()
    for sid in ("Tumor_001", "Tumor_002"):  # the CMU slide (2220 x 2967 px) stands in for both
        shutil.copy(cmu_slide, slides / f"{sid}.svs")
    out = tmp / "out2"
    r = _run("evaluate", "froc", "--truth", truth, "--predictions", preds, "--slides", slides, "--out", out, "--mpp", 0.243)
    assert r.exit_code == 2 and "outside the slide" in r.output  # predictions beyond 2220 px
    assert not out.exists() or not (out / "froc.json").exists()
    (preds / "Tumor_003.csv").unlink(missing_ok=True)
    write_asap_xml(truth / "Tumor_003.xml", [Annotation(box(0, 0, 10, 10), "_0")])
    r = _run("evaluate", "froc", "--truth", truth, "--predictions", preds, "--slides", tmp / "sizes.csv", "--out", out)
    assert r.exit_code == 2 and "no predictions CSV" in r.output


def test_slides_auc_end_to_end(camelyon_like):
    tmp, truth, preds, _ = camelyon_like
    out = tmp / "auc"
    r = _run("evaluate", "slides", "--predictions", preds, "--truth", truth, "--out", out, "--n-boot", 50)
    assert r.exit_code == 0, r.output
    m = json.loads((out / "slides_auc.json").read_text())
    # scores: Normal .95, Tumor_001 .9, Tumor_002 .7 (ITC slide is annotated: positive) -> AUC 0
    assert m["auc"] == 0.0 and m["n_positive"] == 2
    table = tmp / "scores.csv"
    table.write_text("slide_id,score,label\na,0.9,tumor\nb,0.2,normal\nc,0.6,1\nd,0.7,0\n")
    r = _run("evaluate", "slides", "--table", table, "--out", out, "--n-boot", 50)
    assert r.exit_code == 0, r.output
    assert json.loads((out / "slides_auc.json").read_text())["auc"] == pytest.approx(0.75)
    r = _run("evaluate", "slides", "--out", out)
    assert r.exit_code == 2 and "exactly one" in r.output
    labels = tmp / "labels.csv"
    labels.write_text("slide_id,label\nTumor_001,tumor\nTumor_002,normal\nNormal_001,normal\n")
    r = _run("evaluate", "slides", "--predictions", preds, "--labels", labels, "--out", out, "--n-boot", 20)
    assert r.exit_code == 0, r.output
    assert json.loads((out / "slides_auc.json").read_text())["auc"] == 0.5  # .9 vs .95 and .7


def test_patches_end_to_end(tmp_path):
    pred = tmp_path / "pred.csv"
    pred.write_text("path,p_tumour\nd/tumor/a.png,0.9\nd/tumor/b.png,0.4\nd/normal/c.png,0.3\nd/normal/e.png,0.6\n")
    r = _run("evaluate", "patches", pred, "--out", tmp_path / "o", "--n-boot", 50)
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "o" / "patches_metrics.json").read_text())
    assert m["auc"] == pytest.approx(0.75) and m["sensitivity"] == 0.5 and m["specificity"] == 0.5


def test_staging_end_to_end(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "patients.csv").write_text("patient_id,n_metastatic_nodes,n_stage\nA,0,N0\nB,2,N1\nC,9,N3a\nD,20,N3b\n")
    ref = tmp_path / "ref.csv"
    ref.write_text("patient_id,n_metastatic_nodes,n_stage\nA,0,N0\nB,3,N2\nC,9,N3a\nD,17,N3b\n")
    r = _run("evaluate", "staging", run, ref, "--out", tmp_path / "o", "--n-boot", 100)
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "o" / "staging_agreement.json").read_text())
    assert m["n_patients"] == 4 and m["counts"]["mae"] == pytest.approx(1.0)
    assert m["n_stage"]["exact_agreement"] == 0.75
    assert (tmp_path / "o" / "staging_confusion.csv").read_text().startswith("reference \\ run,N0,N1")
    assert "quadratic kappa" in r.output


def test_staging_camelyon17_from_run_counts_and_challenge_table(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    # the run was staged as gastric: --staging camelyon17 restages it from its node-category counts
    (run / "patients.csv").write_text(
        "patient_id,n_metastatic_nodes,n_stage,n_itc_nodes,n_micro_nodes,n_macro_nodes\n"
        "patient_000,0,N0,0,0,0\npatient_001,0,N0,1,0,0\npatient_002,2,N1,0,2,0\n"
        "patient_003,2,N1,0,1,1\npatient_004,4,N2,0,1,3\n")
    ref = tmp_path / "stage_labels.csv"  # the challenge's own layout: patient rows and slide rows
    ref.write_text("patient,stage\npatient_000.zip,pN0\npatient_000_node_0.tif,negative\npatient_001.zip,pN0(i+)\n"
                   "patient_002.zip,pN1mi\npatient_003.zip,pN1\npatient_004.zip,pN1\n")
    r = _run("evaluate", "staging", run, ref, "--staging", "camelyon17", "--out", tmp_path / "o", "--n-boot", 50)
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "o" / "staging_agreement.json").read_text())
    assert m["staging"] == "camelyon17" and m["n_patients"] == 5
    assert m["n_stage"]["stages"] == ["pN0", "pN0(i+)", "pN1mi", "pN1", "pN2"]
    assert m["n_stage"]["exact_agreement"] == pytest.approx(0.8)  # patient_004: run pN2, reference pN1
    r = _run("evaluate", "staging", run, ref, "--staging", "camelyon17", "--stages", "a,b", "--out", tmp_path / "x")
    assert r.exit_code != 0


def test_help_has_examples():
    for sub in ("froc", "slides", "patches", "staging"):
        r = _run("evaluate", sub, "--help")
        assert r.exit_code == 0 and "Example" in r.output


def test_froc_with_official_mask_images(camelyon_like):
    import numpy as np
    import tifffile

    tmp, truth, preds, sizes = camelyon_like
    raw = np.zeros((2048, 2048), np.uint8)
    raw[256:1536, 256:1536] = 255
    with tifffile.TiffWriter(truth / "Tumor_003_Mask.tif") as tw:
        lvl = raw
        for i in range(6):
            tw.write(lvl, tile=(64, 64) if min(lvl.shape) >= 64 else (16, 16), photometric="minisblack",
                     subfiletype=0 if i == 0 else 1)
            lvl = lvl[::2, ::2]
    (preds / "Tumor_003.csv").write_text("0.85,1000,1000\n")
    out = tmp / "out3"
    r = _run("evaluate", "froc", "--truth", truth, "--predictions", preds, "--slides", sizes, "--out", out,
             "--mpp", 0.243)
    assert r.exit_code == 0, r.output
    res = json.loads((out / "froc.json").read_text())
    assert res["n_tumour_slides"] == 3 and res["n_lesions"] == 3 and res["truth_from_masks"] == ["Tumor_003"]
    slides = (out / "froc_slides.csv").read_text()
    assert "Tumor_003,True,1,0,1,1,0" in slides
