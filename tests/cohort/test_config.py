"""RunConfig: one frozen configuration per run, checked once, carried by the jobs, written as the summary's
parameters."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import pytest

from tmln.cohort.config import RunConfig
from tmln.errors import TmlnError


def test_frozen_picklable_and_model_names_as_text(tmp_path):
    c = RunConfig(node_model=Path("models/m"), tumour_annotations=str(tmp_path))
    assert c.node_model == "models/m"
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.mln_rule = "any"  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(c)) == c
    assert c.replace(mln_rule="any").mln_rule == "any" and c.mln_rule == "ajcc"


@pytest.mark.parametrize("kw, message", [
    ({"mln_rule": "most"}, "unknown MLN rule"),
    ({"staging": "lung"}, "unknown staging system"),
    ({"tumour_annotations": "T"}, "no node source"),
    ({"node_annotations": "N"}, "no tumour source"),
    ({"node_annotations": "N", "node_model": "m", "tumour_annotations": "T"}, "not both"),
    ({"node_annotations": "missing", "tumour_annotations": "T"}, "node annotation folder not found"),
])
def test_check(tmp_path, kw, message):
    for k in ("node_annotations", "tumour_annotations"):
        if kw.get(k) in ("N", "T"):
            (tmp_path / kw[k]).mkdir()
            kw[k] = str(tmp_path / kw[k])
        elif kw.get(k) == "missing":
            kw[k] = str(tmp_path / "missing")
    with pytest.raises(TmlnError, match=message):
        RunConfig(**kw).check()


def test_summary_parameters_leave_default_knobs_out(tmp_path):
    c = RunConfig(node_annotations=str(tmp_path), tumour_model="demo-tumour", tumour_method="dense")
    p = c.summary_parameters(tmp_path / "slides.csv")
    assert p["node_annotations"] == str(tmp_path.resolve()) and p["tumour_annotations"] is None
    assert p["tumour_method"] == "dense"
    assert not {"node_split", "min_node_area_mm2", "tumour_tile_size", "device", "overlay_max_px"} & set(p)
    assert p["nodes_from"] == "annotations" and p["tumour_from"] == "model demo-tumour"
    assert RunConfig(node_split=False).chosen_knobs() == {"node_split": False}
