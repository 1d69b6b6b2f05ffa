"""A tiny synthetic node cohort for tests (fast: no phantom rendering): tiled TIFFs at 2 µm/px with
purple nodes (one touching pair) on pink fat and white glass, plus QuPath GeoJSON node outlines."""

from __future__ import annotations

from pathlib import Path

import numpy as np

MPP = 2.0  # µm/px of the synthetic slides


def node_polygons(seed: int):
    from shapely.geometry import Point

    rng = np.random.default_rng(seed)
    a = Point(400 + rng.uniform(-20, 20), 500).buffer(220)
    b = Point(400 + 220 + 200 + rng.uniform(-10, 0), 520).buffer(200).difference(a)  # touches a
    c = Point(1150, 350 + rng.uniform(-30, 30)).buffer(150)
    return [a, b, c]


def make_node_cohort(root: Path, patients: int = 2) -> Path:
    """Write ``root/S<i>.tiff`` + ``root/S<i>.nodes.geojson`` and ``root/slides.csv``; returns the CSV."""
    import tifffile
    from skimage.draw import polygon as draw_polygon

    from tmln.annotations import feature, write_geojson

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rows = ["slide_path,patient_id"]
    for i in range(patients):
        rng = np.random.default_rng(i)
        h, w = 1000, 1500
        img = np.full((h, w, 3), 240, np.uint8)
        yy, xx = np.mgrid[:h, :w]
        fat = ((yy - 480) / 420.0) ** 2 + ((xx - 750) / 720.0) ** 2 < 1
        img[fat] = (235, 200, 215)
        polys = node_polygons(i)
        for p in polys:
            xy = np.asarray(p.exterior.coords)
            rr, cc = draw_polygon(xy[:, 1] - 0.5, xy[:, 0] - 0.5, (h, w))
            img[rr, cc] = (110, 60, 150)
        for p in polys:  # a darker capsule line along every outline
            for x, y in np.asarray(p.exterior.coords)[::1]:
                img[max(0, int(y) - 2): int(y) + 2, max(0, int(x) - 2): int(x) + 2] = (200, 120, 170)
        img = np.clip(img.astype(int) + rng.integers(-12, 13, img.shape), 0, 255).astype(np.uint8)
        tifffile.imwrite(root / f"S{i}.tiff", img, tile=(256, 256), photometric="rgb",
                         resolution=(1e4 / MPP, 1e4 / MPP), resolutionunit="CENTIMETER")
        write_geojson(root / f"S{i}.nodes.geojson", [feature(p, "Lymph node") for p in polys])
        rows.append(f"S{i}.tiff,P{i}")
    csv = root / "slides.csv"
    csv.write_text("\n".join(rows) + "\n")
    return csv
