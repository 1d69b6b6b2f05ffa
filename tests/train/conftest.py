"""Fixtures for tests/train (helpers in train_synth.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .train_synth import make_patch_folder, make_slide, write_geojson_tumour


@pytest.fixture
def patch_folder(tmp_path) -> Path:
    return make_patch_folder(tmp_path / "patches")


@pytest.fixture
def slide_cohort(tmp_path) -> tuple[Path, Path]:
    """(slides.csv, annotation folder) with 4 slides of 4 patients, GeoJSON / ASAP / NCRF annotations."""
    sdir, adir = tmp_path / "slides", tmp_path / "ann"
    sdir.mkdir()
    adir.mkdir()
    rows = ["slide_path,patient_id"]
    for i in range(4):
        poly = make_slide(sdir / f"S{i}.tif", seed=i)
        if i == 1:  # ASAP XML, Camelyon16 group _0
            coords = "".join(f'<Coordinate Order="{j}" X="{x}" Y="{y}"/>' for j, (x, y) in enumerate(poly))
            (adir / f"S{i}.xml").write_text(
                f'<ASAP_Annotations><Annotations><Annotation Name="A" Type="Polygon" PartOfGroup="_0">'
                f"<Coordinates>{coords}</Coordinates></Annotation></Annotations></ASAP_Annotations>")
        elif i == 2:  # NCRF JSON
            (adir / f"S{i}.json").write_text(json.dumps({"positive": [{"name": "t", "vertices": poly}], "negative": []}))
        else:
            write_geojson_tumour(adir / f"S{i}.geojson", poly)
        rows.append(f"slides/S{i}.tif,P{i}")
    csv = tmp_path / "slides.csv"
    csv.write_text("\n".join(rows) + "\n")
    return csv, adir
