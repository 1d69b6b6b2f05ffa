"""make_cohort / `tmln phantom`: files, truth tables that match the geometry, negatives, CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from tmln.annotations import read_annotations
from tmln.measure.staging import NODE_COLUMNS, PATIENT_COLUMNS, deposit_category, is_metastatic, n_stage
from tmln.phantom import make_cohort
from tmln.phantom.truth import node_rows

SIZE = (2.5, 2.0)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("cohort")
    return make_cohort(out, patients=3, slides_per_patient=2, seed=4, size_mm=SIZE, negative_fraction=0.34)


def test_files_and_columns(cohort):
    d = cohort.parent
    slides = pd.read_csv(cohort)
    assert list(slides.columns) == ["slide_path", "patient_id"]
    assert len(slides) == 6 and slides["patient_id"].nunique() == 3
    for rel in slides["slide_path"]:
        stem = rel.rsplit(".", 1)[0]
        assert (d / rel).is_file() and rel.endswith(".tiff")
        assert (d / f"{stem}.nodes.geojson").is_file() and (d / f"{stem}.tumour.geojson").is_file()
    nodes = pd.read_csv(d / "truth_nodes.csv")
    patients = pd.read_csv(d / "truth_patients.csv")
    assert list(nodes.columns) == NODE_COLUMNS
    assert list(patients.columns) == PATIENT_COLUMNS
    assert set(nodes["slide_id"]) <= {r.rsplit(".", 1)[0] for r in slides["slide_path"]}
    assert not list(d.glob(".*tmp*"))  # no temporaries left


def test_geojson_is_qupath_style(cohort):
    d = cohort.parent
    fc = json.loads(next(d.glob("*.nodes.geojson")).read_text())
    assert fc["type"] == "FeatureCollection" and fc["features"]
    for f in fc["features"]:
        assert f["geometry"]["type"] == "Polygon"
        assert f["properties"]["classification"]["name"] == "Lymph node"
    for p in d.glob("*.tumour.geojson"):
        for f in json.loads(p.read_text())["features"]:
            assert f["properties"]["classification"]["name"] == "Tumor"


def test_truth_recomputed_from_geojson_is_identical(cohort):
    """What the measurement core reads (the GeoJSON) gives exactly the truth table."""
    d = cohort.parent
    truth = pd.read_csv(d / "truth_nodes.csv")
    slides = pd.read_csv(cohort)
    for rel, pid in zip(slides["slide_path"], slides["patient_id"]):
        sid = rel.rsplit(".", 1)[0]
        nodes = [a.geometry for a in read_annotations(d / f"{sid}.nodes.geojson")]
        tumour = [a.geometry for a in read_annotations(d / f"{sid}.tumour.geojson")]
        got = pd.DataFrame(node_rows(nodes, tumour, 0.5, 0.5, pid, sid), columns=NODE_COLUMNS)
        want = truth[truth["slide_id"] == sid].reset_index(drop=True)
        assert len(got) == len(want)
        for col in ("area_mm2", "tumour_area_mm2", "largest_deposit_mm", "centroid_x_um", "centroid_y_um"):
            assert got[col].tolist() == pytest.approx(want[col].tolist(), rel=1e-8, abs=1e-12), col
        assert got["category"].tolist() == want["category"].tolist()


def test_truth_areas_match_rasterised_masks(cohort):
    from rasterio.features import rasterize
    from shapely import affinity

    d = cohort.parent
    truth = pd.read_csv(d / "truth_nodes.csv")
    checked = 0
    for sid, rows in truth.groupby("slide_id"):
        nodes = [a.geometry for a in read_annotations(d / f"{sid}.nodes.geojson")]
        tumour = [a.geometry for a in read_annotations(d / f"{sid}.tumour.geojson")]
        for (_, row), node in zip(rows.iterrows(), nodes):
            x0, y0, x1, y1 = (int(np.floor(v)) for v in node.bounds)
            shape = (y1 - y0 + 2, x1 - x0 + 2)
            shift = lambda g: affinity.translate(g, -x0, -y0)  # noqa: E731
            m = rasterize([shift(node)], out_shape=shape).astype(bool)
            assert m.sum() * 0.25e-6 == pytest.approx(row["area_mm2"], rel=5e-3)
            if row["tumour_area_mm2"] > 0.005:
                t = rasterize([shift(g) for g in tumour], out_shape=shape).astype(bool) & m
                assert t.sum() * 0.25e-6 == pytest.approx(row["tumour_area_mm2"], rel=5e-3)
            checked += 1
    assert checked >= 6


def test_node_and_patient_tables_are_consistent(cohort):
    d = cohort.parent
    nodes = pd.read_csv(d / "truth_nodes.csv")
    patients = pd.read_csv(d / "truth_patients.csv")
    for _, r in nodes.iterrows():
        assert r["category"] == deposit_category(r["largest_deposit_mm"])
        assert r["metastatic"] == is_metastatic(r["category"], "ajcc")
        assert r["tumour_fraction"] == pytest.approx(r["tumour_area_mm2"] / r["area_mm2"])
    for sid, g in nodes.groupby("slide_id"):
        assert g["node_id"].tolist() == list(range(1, len(g) + 1))
        assert g.sort_values(["centroid_y_um", "centroid_x_um"])["node_id"].tolist() == g["node_id"].tolist()
    for _, p in patients.iterrows():
        g = nodes[nodes["patient_id"] == p["patient_id"]]
        mln = g[g["metastatic"]]
        assert p["n_slides"] == 2 and p["n_nodes"] == len(g) and p["n_metastatic_nodes"] == len(mln)
        assert p["n_stage"] == n_stage(len(mln))
        assert p["tumour_area_mm2"] == pytest.approx(g["tumour_area_mm2"].sum())
        assert p["metastatic_node_area_mm2"] == pytest.approx(mln["area_mm2"].sum())
        t_mln = mln["tumour_area_mm2"].sum() / mln["area_mm2"].sum() if len(mln) else 0.0
        assert p["t_mln"] == pytest.approx(t_mln)
        assert p["t_mln_mean_nodes"] == pytest.approx(mln["tumour_fraction"].mean() if len(mln) else 0.0)


def test_negative_slides_and_touching_pairs_exist(cohort):
    d = cohort.parent
    slides = pd.read_csv(cohort)
    n_tumour = {}
    for rel in slides["slide_path"]:
        sid = rel.rsplit(".", 1)[0]
        n_tumour[sid] = len(json.loads((d / f"{sid}.tumour.geojson").read_text())["features"])
    assert sum(v == 0 for v in n_tumour.values()) >= 2  # 34 % of 6 slides
    assert sum(v > 0 for v in n_tumour.values()) >= 1
    # the first slide has a touching pair: two node polygons at distance 0
    first = [a.geometry for a in read_annotations(d / "P001_S01.nodes.geojson")]
    assert any(a.distance(b) < 1e-6 for i, a in enumerate(first) for b in first[i + 1:])


def test_cli_equals_api(tmp_path):
    from tmln.cli import main

    api = make_cohort(tmp_path / "api", patients=1, seed=2, size_mm=(1.5, 1.2), fmt="svs", write_mpp=False)
    r = CliRunner().invoke(main, ["phantom", str(tmp_path / "cli"), "--patients", "1", "--slides-per-patient", "1",
                                  "--seed", "2", "--size-mm", "1.5", "1.2", "--format", "svs", "--no-mpp"])
    assert r.exit_code == 0, r.output
    assert r.output.strip().endswith("slides.csv")
    names = sorted(p.name for p in api.parent.iterdir())
    assert names == sorted(p.name for p in (tmp_path / "cli").iterdir())
    for n in names:
        assert (api.parent / n).read_bytes() == (tmp_path / "cli" / n).read_bytes(), n


def test_workers_give_identical_files(tmp_path):
    a = make_cohort(tmp_path / "one", patients=2, seed=5, size_mm=(1.2, 1.0))
    b = make_cohort(tmp_path / "two", patients=2, seed=5, size_mm=(1.2, 1.0), workers=2)
    names = sorted(p.name for p in a.parent.iterdir())
    assert names == sorted(p.name for p in b.parent.iterdir())
    for n in names:
        assert (a.parent / n).read_bytes() == (b.parent / n).read_bytes(), n


def test_cli_rejects_bad_arguments(tmp_path):
    from tmln.cli import main

    r = CliRunner().invoke(main, ["phantom", str(tmp_path), "--mpp", "0.3"])
    assert r.exit_code == 2 and "0.3" in r.output
    r = CliRunner().invoke(main, ["phantom", str(tmp_path), "--patients", "0"])
    assert r.exit_code == 2


def test_cohort_specs_rebuild_the_written_layouts(tmp_path):
    """``cohort_specs`` + ``make_layout`` give every written slide's truth (its non-node tissue too) without reading it."""
    from tmln.phantom import cohort_specs, make_layout

    opts = dict(patients=3, seed=5, size_mm=SIZE, mpp=4.0, negative_fraction=0.3, perinodal=True, non_node_fraction=0.34)
    make_cohort(tmp_path, **opts)
    specs = cohort_specs(**opts)
    assert [f"{sid}.tiff" for _, sid, _ in specs] == list(pd.read_csv(tmp_path / "slides.csv")["slide_path"])
    assert {spec.section for _, _, spec in specs} - {"node"}  # a node-free section among them
    for _, sid, spec in specs:
        written = read_annotations(tmp_path / f"{sid}.nodes.geojson")
        lay = make_layout(spec)
        assert len(written) == len(lay.nodes)
        assert all(a.geometry.equals_exact(b, 1e-6) for a, b in zip(written, lay.nodes))
    with pytest.raises(TypeError, match="patiens"):
        cohort_specs(patiens=3)
