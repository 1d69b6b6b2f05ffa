import json

import pytest
from shapely.geometry import MultiPolygon, Polygon, box

from tmln.annotations import (
    AmbiguousAnnotation,
    Annotation,
    feature,
    find_annotation,
    is_exclusion_label,
    is_tumour_label,
    node_outlines,
    read_annotations,
    tumour_outlines,
    write_asap_xml,
    write_geojson,
)
from tmln.errors import AnnotationError

SQUARE = [[0, 0], [100, 0], [100, 100], [0, 100], [0, 0]]


def _fc(*features):
    return {"type": "FeatureCollection", "features": list(features)}


def _feat(coords, cls=None, gtype="Polygon"):
    props = {"objectType": "annotation"}
    if cls:
        props["classification"] = {"name": cls, "color": [255, 0, 0]}
    return {"type": "Feature", "geometry": {"type": gtype, "coordinates": coords}, "properties": props}


def test_geojson_polygon_with_hole_and_multipolygon(tmp_path):
    hole = [[25, 25], [75, 25], [75, 75], [25, 75], [25, 25]]
    p = tmp_path / "a.geojson"
    p.write_text(json.dumps(_fc(_feat([SQUARE, hole], "Tumor"), _feat([[SQUARE], [[[200, 0], [300, 0], [300, 50], [200, 0]]]], "Lymph node", "MultiPolygon"))))
    anns = read_annotations(p)
    assert [a.label for a in anns] == ["Tumor", "Lymph node"]
    assert anns[0].geometry.area == pytest.approx(100 * 100 - 50 * 50)
    assert anns[1].geometry.geom_type == "MultiPolygon"
    assert anns[1].geometry.area == pytest.approx(100 * 100 + 0.5 * 100 * 50)


def test_geojson_single_feature_and_points_ignored(tmp_path):
    p = tmp_path / "b.json"
    p.write_text(json.dumps(_feat(SQUARE and [SQUARE])))
    assert len(read_annotations(p)) == 1
    p.write_text(json.dumps(_fc({"type": "Feature", "geometry": {"type": "Point", "coordinates": [1, 2]}, "properties": {}})))
    assert read_annotations(p) == []


def test_roundtrip_geojson_and_asap_give_same_geometry(tmp_path):
    geoms = [box(10, 10, 60, 40), Polygon([(100, 100), (180, 110), (150, 190)])]
    write_geojson(tmp_path / "s.geojson", [feature(g, "Tumor") for g in geoms])
    write_asap_xml(tmp_path / "s.xml", [Annotation(g, label="Tumor") for g in geoms])
    a = read_annotations(tmp_path / "s.geojson")
    b = read_annotations(tmp_path / "s.xml")
    assert len(a) == len(b) == 2
    for x, y in zip(a, b):
        assert x.label == y.label == "Tumor"
        assert x.geometry.symmetric_difference(y.geometry).area < 1e-6


def test_ncrf_json(tmp_path):
    p = tmp_path / "Tumor_999.json"
    p.write_text(json.dumps({"positive": [{"name": "A0", "vertices": SQUARE[:-1]}], "negative": []}))
    anns = read_annotations(p)
    assert len(anns) == 1 and anns[0].label == "positive" and is_tumour_label(anns[0].label)


def test_bowtie_repaired_and_said(tmp_path):
    p = tmp_path / "bow.geojson"
    p.write_text(json.dumps(_fc(_feat([[[0, 0], [100, 100], [100, 0], [0, 100], [0, 0]]], "Tumor"))))
    (a,) = read_annotations(p)
    assert a.geometry.is_valid and a.note and "repaired" in a.note
    assert a.geometry.area == pytest.approx(5000)


@pytest.mark.parametrize(
    "content,suffix,msg",
    [
        ("{not json", ".geojson", "not valid JSON"),
        ('{"type": "Topology"}', ".geojson", "not GeoJSON"),
        ('{"type": "FeatureCollection", "features": [{"type": "Feature"}]}', ".geojson", "not GeoJSON"),
        ("<root/>", ".xml", "not ASAP XML"),
        ("<ASAP_Annotations><Annotations><Annotation><Coordinates>", ".xml", "not well-formed"),
        ('{"positive": [{"vertices": [[0, 0]]}]}', ".json", ">= 3"),
        ("x", ".txt", "unknown annotation format"),
    ],
)
def test_bad_files_name_the_file(tmp_path, content, suffix, msg):
    p = tmp_path / f"bad{suffix}"
    p.write_text(content)
    with pytest.raises(AnnotationError, match=msg) as exc:
        read_annotations(p)
    assert str(p) in str(exc.value)


def test_billion_laughs_rejected(tmp_path):
    p = tmp_path / "laughs.xml"
    p.write_text(
        '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>'
        "<ASAP_Annotations>&lol2;</ASAP_Annotations>"
    )
    with pytest.raises(AnnotationError, match="rejected for safety"):
        read_annotations(p)


def test_outside_slide_rejected(tmp_path):
    p = tmp_path / "o.geojson"
    write_geojson(p, [feature(box(0, 0, 500, 500), "Tumor")])
    assert read_annotations(p, slide_size=(500, 500))
    with pytest.raises(AnnotationError, match="outside the slide"):
        read_annotations(p, slide_size=(400, 600))


def test_label_semantics():
    assert all(is_tumour_label(x) for x in ["_0", "_1", "Tumor", "tumour", "positive"])
    assert all(is_exclusion_label(x) for x in ["_2", "Exclusion"])
    assert not is_tumour_label("_2") and not is_tumour_label(None) and not is_tumour_label("Lymph node")


def test_qupath_feature_shape():
    f = feature(box(0, 0, 2, 2), "micro", object_type="detection", measurements={"area_mm2": 1.5}, id="n1")
    assert f["properties"]["classification"]["name"] == "micro"
    assert len(f["properties"]["classification"]["color"]) == 3
    assert f["properties"]["objectType"] == "detection" and f["properties"]["measurements"]["area_mm2"] == 1.5


def test_class_vocabulary_per_format():
    from tmln.annotations import EXCLUSION, NODE, TUMOUR, UNCLASSIFIED, UNKNOWN, label_kind

    assert [label_kind(x, "asap") for x in ("_0", "_1", "Tumor", "_2", "Exclusion", "None")] == \
        [TUMOUR, TUMOUR, TUMOUR, EXCLUSION, EXCLUSION, UNCLASSIFIED]
    assert [label_kind(x) for x in ("tumour", "METASTASIS", "Tumor: Positive", "Ignore*", "Region*", "Other",
                                    "Lymph node: macro", "Fat", None)] == \
        [TUMOUR, TUMOUR, TUMOUR, EXCLUSION, EXCLUSION, EXCLUSION, NODE, UNKNOWN, UNCLASSIFIED]
    assert [label_kind(x, "ncrf") for x in ("positive", "negative")] == [TUMOUR, EXCLUSION]


def test_tumour_rule_and_notes():
    from shapely.geometry import box

    from tmln.annotations import node_outlines, tumour_outlines

    anns = [Annotation(box(0, 0, 100, 100), "Tumor"), Annotation(box(10, 10, 20, 20), "Stroma"),
            Annotation(box(50, 50, 60, 60), "Fat"), Annotation(box(200, 0, 300, 100), "Lymph node"),
            Annotation(box(400, 0, 410, 10))]
    t = tumour_outlines(anns)
    assert t.tumour.area == pytest.approx(100 * 100 - 100)  # Fat (unknown) is never tumour, nor carved
    text = " ".join(t.notes)
    assert "'Fat'" in text and "does not know" in text and "'Lymph node'" in text and "unclassified" in text
    # plain outlines are tumour, an exclusion class beside them still carves
    t = tumour_outlines([Annotation(box(0, 0, 100, 100)), Annotation(box(0, 0, 10, 10), "Ignore*")])
    assert t.tumour.area == pytest.approx(9900) and t.ignore.area == pytest.approx(100)
    polys, notes = node_outlines([Annotation(box(0, 0, 10, 10), "Lymph node"), Annotation(box(20, 0, 30, 10), "Tumor"),
                                  Annotation(box(40, 0, 50, 10), "negative", fmt="ncrf"),
                                  Annotation(box(60, 0, 70, 10), "Positive")])
    assert len(polys) == 3 and any("'Tumor'" in n and "tumour outlines, not nodes" in n for n in notes)


def test_one_lookup(tmp_path):
    from tmln.annotations import AmbiguousAnnotation, annotation_index, find_annotation

    for name in ("A.tumour.xml", "A.nodes.geojson", "b.geojson", "C.geojson", "C.xml", "notes.txt"):
        (tmp_path / name).write_text("{}")
    assert find_annotation(tmp_path, "B", "tumour").name == "b.geojson"  # case-insensitive fallback
    assert find_annotation(tmp_path, "A", "nodes").name == "A.nodes.geojson"
    with pytest.raises(AmbiguousAnnotation, match="C.geojson, C.xml"):
        annotation_index(tmp_path, "tumour")
    (tmp_path / "C.xml").unlink()
    assert {k: v.name for k, v in annotation_index(tmp_path, "tumour").items()} == \
        {"A": "A.tumour.xml", "C": "C.geojson", "b": "b.geojson"}


def test_node_class_filter():
    anns = [Annotation(box(0, 0, 10, 10), label="Lymph node"), Annotation(box(20, 0, 30, 10), label="Tumor"),
            Annotation(box(40, 0, 50, 10), label="Exclusion"), Annotation(box(60, 0, 70, 10), label="negative"),
            Annotation(box(80, 0, 90, 10), label=None)]
    polys, notes = node_outlines(anns)
    assert [p.bounds[0] for p in polys] == [0, 60, 80]
    assert any("Tumor" in n for n in notes) and any("Exclusion" in n for n in notes)


def test_tumour_class_filter():
    labelled = [Annotation(box(0, 0, 10, 10), label="Tumor"), Annotation(box(20, 0, 30, 10), label="Lymph node"),
                Annotation(box(40, 0, 50, 10), label="_0")]
    truth = tumour_outlines(labelled)
    polys, notes = truth.polygons, truth.notes
    assert [p.bounds[0] for p in polys] == [0, 40]
    assert notes and "Lymph node" in notes[0]
    unlabelled = [Annotation(box(0, 0, 10, 10)), Annotation(box(20, 0, 30, 10), label="None")]
    truth = tumour_outlines(unlabelled)
    polys, notes = truth.polygons, truth.notes
    assert len(polys) == 2 and not notes


def test_multipolygon_annotation_gives_one_node_per_part():
    polys, _ = node_outlines([Annotation(MultiPolygon([box(0, 0, 1, 1), box(5, 5, 6, 6)]))])
    assert len(polys) == 2


def test_annotation_lookup_rules(tmp_path):
    for name in ("S1.nodes.geojson", "S1.tumour.geojson", "S2.geojson", "S3.xml", "S4.geojson", "S4.xml",
                 "S5.tumor.xml"):
        (tmp_path / name).write_text("{}")
    assert find_annotation(tmp_path, "S1", "nodes").name == "S1.nodes.geojson"
    assert find_annotation(tmp_path, "S1", "tumour").name == "S1.tumour.geojson"
    assert find_annotation(tmp_path, "S2", "nodes").name == "S2.geojson"
    assert find_annotation(tmp_path, "S2", "tumour").name == "S2.geojson"
    assert find_annotation(tmp_path, "S3", "tumour").name == "S3.xml"
    assert find_annotation(tmp_path, "S5", "tumour").name == "S5.tumor.xml"
    assert find_annotation(tmp_path, "S9", "nodes") is None
    with pytest.raises(AmbiguousAnnotation, match="S4.geojson, S4.xml"):
        find_annotation(tmp_path, "S4", "nodes")
