"""Helpers for tests/models: a one-node outline file for the committed CMU slide."""

from __future__ import annotations

import json
from pathlib import Path


def cmu_cohort(tmp_path: Path, cmu_slide: Path) -> tuple[Path, Path]:
    """(slides.csv, annotation folder) for the CMU slide with one 1000 px square 'Lymph node'."""
    (tmp_path / "slides.csv").write_text(f"slide_path,patient_id\n{cmu_slide},X\n")
    ann = tmp_path / "ann"
    ann.mkdir()
    node = [[200, 200], [1200, 200], [1200, 1200], [200, 1200], [200, 200]]
    (ann / "CMU-1-Small-Region.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [node]},
         "properties": {"classification": {"name": "Lymph node"}}}]}))
    return tmp_path / "slides.csv", ann
