import json

import numpy as np
import pandas as pd

from tmln.report.html import write_report
from tmln.report.overlay import encode_png


def make_run(run):
    (run / "slides" / "S1").mkdir(parents=True)
    (run / "slides" / "S1" / "overlay.png").write_bytes(encode_png(np.full((900, 1500, 3), 200, np.uint8)))
    pd.DataFrame([{"slide_id": "S1", "patient_id": "P1", "status": "done", "error": "", "n_nodes": 2},
                  {"slide_id": "<b>S2", "patient_id": "P2", "status": "failed", "error": "no such file",
                   "n_nodes": None}]).to_csv(run / "slides.csv", index=False)
    pd.DataFrame([{"patient_id": "1e3", "n_slides": 1, "n_stage": "N1", "t_mln": 0.123456789}]).to_csv(
        run / "patients.csv", index=False)
    summary = {"tmln_version": "0", "parameters": {"mln_rule": "ajcc", "nodes_from": "annotations",
                                                  "tumour_from": "annotations"},
               "counts": {"slides": 2, "done": 1, "failed": 1, "patients": 2, "patients_staged": 1, "nodes": 2,
                          "metastatic_nodes": 1},
               "n_stage_counts": {"N0": 0, "N1": 1}, "failures": [{"kind": "slide", "id": "<b>S2",
                                                                     "error": "no such file"}]}
    (run / "summary.json").write_text(json.dumps(summary))


def test_self_contained_report_with_failures_and_sections(tmp_path):
    make_run(tmp_path)
    p = write_report(tmp_path, sections=[("Survival", "<p id='km'>KM plot</p>")])
    html = p.read_text()
    assert html.count("data:image/jpeg;base64,") == 1
    assert "<script" not in html and "http://" not in html and "https://" not in html
    assert "no such file" in html and "&lt;b&gt;S2" in html and "<b>S2" not in html  # escaped
    assert "<h2>Survival</h2>" in html and "<p id='km'>KM plot</p>" in html
    assert "0.1235" in html and "N1" in html and ">1e3<" in html  # ids are not formatted as numbers
    again = write_report(tmp_path, sections=[("Survival", "<p id='km'>KM plot</p>")]).read_text()
    assert again == html  # deterministic


def test_large_cohorts_link_overlays_instead_of_embedding(tmp_path, monkeypatch):
    import tmln.report.html as h

    from tests.cohort.helpers import write_small_cohort
    from tmln.cohort.run import run_cohort

    slides, ann = write_small_cohort(tmp_path)
    run_cohort(slides, tmp_path / "run", node_annotations=ann, tumour_annotations=ann, quiet=True)
    embedded = h.render_report(tmp_path / "run")
    assert "data:image/jpeg;base64," in embedded
    monkeypatch.setattr(h, "EMBED_MAX_SLIDES", 1)
    linked = h.render_report(tmp_path / "run")
    assert "data:image/jpeg;base64," not in linked and 'src="slides/S1/overlay.png"' in linked


def test_slides_unlike_the_training_data_are_listed_with_their_distance(tmp_path):
    from tmln.report.html import render_report

    make_run(tmp_path)
    plain = render_report(tmp_path)
    assert "unlike the models' training data" not in plain  # no distance columns: no section
    df = pd.read_csv(tmp_path / "slides.csv")
    df["node_model_appearance_distance"] = [3.456, None]
    df["tumour_model_appearance_distance"] = [1.2, None]
    df.to_csv(tmp_path / "slides.csv", index=False)
    html = render_report(tmp_path)
    assert "<h2>Slides unlike the models' training data</h2>" in html
    section = html.split("unlike the models' training data</h2>")[1].split("<h2>")[0]
    assert ">S1<" in section and ">node<" in section and ">3.46<" in section
    assert ">tumour<" not in section  # 1.2 is below the warning level
    assert "node_model_appearance_distance" in html  # the per-slide column
