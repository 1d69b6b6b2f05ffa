from tmln.annotations import AmbiguousAnnotation, find_annotation
from tmln.cohort.state import is_done, params_hash

import pytest


def test_params_hash_and_is_done():
    h = params_hash({"a": 1, "b": [1, 2]})
    assert h == params_hash({"b": [1, 2], "a": 1}) != params_hash({"a": 2, "b": [1, 2]})
    s = {"status": "done", "params_hash": h}
    assert is_done(s, h) and not is_done(s, "other") and not is_done({**s, "status": "failed"}, h)
    assert not is_done(None, h)


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
