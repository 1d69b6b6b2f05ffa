"""Helpers for cohort tests: small synthetic slides and annotations with known geometry."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def make_tiff(path: Path, width: int = 1200, height: int = 900, mpp: float | None = 0.5) -> Path:
    """A tiled two-level pyramidal TIFF (a pink block on grey) with resolution tags when ``mpp``."""
    import tifffile

    img = np.full((height, width, 3), 235, np.uint8)
    img[height // 6: height * 5 // 6, width // 8: width * 7 // 8] = (200, 120, 170)
    kw = {}
    if mpp:
        ppcm = 1e4 / mpp
        kw = {"resolution": (ppcm, ppcm), "resolutionunit": "CENTIMETER"}
    with tifffile.TiffWriter(path) as tw:
        tw.write(img, tile=(256, 256), compression="zlib", photometric="rgb", **kw)
        tw.write(img[::4, ::4].copy(), tile=(256, 256), compression="zlib", photometric="rgb", subfiletype=1,
                 **({"resolution": (kw["resolution"][0] / 4, kw["resolution"][1] / 4), "resolutionunit": "CENTIMETER"} if mpp else {}))
    return path


def square(x, y, s):
    return [[x, y], [x + s, y], [x + s, y + s], [x, y + s], [x, y]]


def fc(*features):
    return {"type": "FeatureCollection", "features": list(features)}


def feat(ring, cls=None):
    props = {"objectType": "annotation"}
    if cls:
        props["classification"] = {"name": cls, "color": [255, 0, 0]}
    return {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]}, "properties": props}


def write_json(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj))
    return path


def write_small_cohort(tmp_path: Path) -> tuple[Path, Path]:
    """Two patients, three slides (1200 x 900 px at 0.5 µm/px), squares with known measurements.

    S1 (P1): node 1 = 400 px square (200 µm side, 0.04 mm²) holding a 100 px tumour square (50 µm
    side: area 0.0025 mm², Feret 0.0707 mm -> ITC); node 2 = 400 px square, negative; a 50 px tumour
    square outside both (extranodal 0.000625 mm²).
    S2 (P1): one 300 px node (0.0225 mm²); no tumour file -> no tumour.
    S3 (P2): one 600 px node (0.09 mm²) with a 500 px tumour (0.0625 mm², Feret 0.3536 mm -> micro).
    """
    d = tmp_path / "cohort"
    d.mkdir()
    ann = tmp_path / "ann"
    ann.mkdir()
    for sid in ("S1", "S2", "S3"):
        make_tiff(d / f"{sid}.tiff")
    (d / "slides.csv").write_text("slide_path,patient_id\nS1.tiff,P1\nS2.tiff,P1\nS3.tiff,P2\n")
    write_json(ann / "S1.nodes.geojson", fc(feat(square(100, 100, 400), "Lymph node"),
                                             feat(square(600, 100, 400), "Lymph node")))
    write_json(ann / "S1.tumour.geojson", fc(feat(square(150, 150, 100), "Tumor"),
                                              feat(square(1050, 600, 50), "Tumor")))
    write_json(ann / "S2.nodes.geojson", fc(feat(square(100, 400, 300))))
    write_json(ann / "S3.nodes.geojson", fc(feat(square(100, 100, 600))))
    write_json(ann / "S3.tumour.geojson", fc(feat(square(110, 110, 500))))
    return d / "slides.csv", ann
