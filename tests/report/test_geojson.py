import json

import pytest
from shapely.geometry import box

from tmln.annotations import node_outlines, read_annotations, tumour_outlines, write_geojson
from tmln.measure.nodes import measure_slide
from tmln.report.geojson import node_features, tumour_features


def measurement():
    nodes = [box(0, 0, 1000, 1000), box(2000, 0, 3000, 1000), box(0, 2000, 5000, 6000)]
    tumour = [box(100, 100, 140, 140), box(300, 2100, 4000, 5000), box(1200, 200, 1500, 500)]
    return measure_slide(nodes, tumour, 0.5, 0.5, patient_id="P", slide_id="S")


def test_qupath_features_and_reimport_gives_same_measurements(tmp_path):
    m = measurement()
    write_geojson(tmp_path / "nodes.geojson", node_features(m))
    write_geojson(tmp_path / "tumour.geojson", tumour_features(m))
    obj = json.loads((tmp_path / "nodes.geojson").read_text())
    assert obj["type"] == "FeatureCollection" and len(obj["features"]) == 3
    props = [f["properties"] for f in obj["features"]]
    assert {p["objectType"] for p in props} == {"annotation"}
    assert [p["classification"]["name"] for p in props] == ["Lymph node: itc", "Lymph node: negative",
                                                            "Lymph node: macro"]
    assert props[2]["classification"]["color"] == [200, 0, 0]
    assert props[2]["measurements"]["area_mm2"] == pytest.approx(m.rows[2]["area_mm2"])
    assert props[2]["measurements"]["metastatic"] == 1
    # the written files, read back as annotations, reproduce the measurements
    nodes, _ = node_outlines(read_annotations(tmp_path / "nodes.geojson"))
    tumour = tumour_outlines(read_annotations(tmp_path / "tumour.geojson")).polygons
    again = measure_slide(nodes, tumour, 0.5, 0.5, patient_id="P", slide_id="S")
    for a, b in zip(m.rows, again.rows):
        assert a == pytest.approx(b)
    assert again.summary["extranodal_tumour_area_mm2"] == pytest.approx(m.summary["extranodal_tumour_area_mm2"])
    names = [f["properties"]["name"] for f in json.loads((tmp_path / "tumour.geojson").read_text())["features"]]
    assert names == ["deposit 1 of node 1", "deposit 1 of node 3", "extranodal tumour"]


def test_detection_object_type():
    assert {f["properties"]["objectType"] for f in node_features(measurement(), "detection")} == {"detection"}


def test_object_ids_are_deterministic_uuids():
    import uuid

    a = [f["id"] for f in node_features(measurement())]
    assert a == [f["id"] for f in node_features(measurement())] and len(set(a)) == 3
    assert all(uuid.UUID(x).version == 5 for x in a)
