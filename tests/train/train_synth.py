"""Synthetic training data for tests/train: separable coloured patch folders and tiny annotated TIFF
slides (helpers; the fixtures are in conftest.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

TUMOUR_RGB = (90, 40, 150)
NORMAL_RGB = (230, 150, 190)


def make_patch_folder(root: Path, n_groups: int = 4, per_group: int = 6, size: int = 40, seed: int = 0,
                      rgba: bool = False) -> Path:
    """root/tumor/*.png (purple) and root/normal/*.png (pink), named <group>_<x>_<y>.png."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for cls, col in (("tumor", TUMOUR_RGB), ("normal", NORMAL_RGB)):
        d = root / cls
        d.mkdir(parents=True, exist_ok=True)
        for g in range(n_groups):
            for k in range(per_group):
                img = np.clip(np.array(col) + rng.normal(0, 20, (size, size, 3)), 0, 255).astype(np.uint8)
                if rgba:
                    img = np.dstack([img, np.full((size, size), 255, np.uint8)])
                Image.fromarray(img).save(d / f"slide{g}_{k * 10}_{k * 20}.png")
    return root


def make_slide(path: Path, size: int = 1024, mpp: float = 0.5, seed: int = 0) -> list:
    """A one-level tiled TIFF: pink tissue square with a purple tumour square; returns the tumour
    polygon (level-0 px)."""
    import tifffile

    rng = np.random.default_rng(seed)
    img = np.full((size, size, 3), 245, np.uint8)
    yy, xx = np.mgrid[0:size, 0:size]
    tissue = (xx > 100) & (xx < 900) & (yy > 100) & (yy < 900)
    tumour = (xx > 450) & (xx < 850) & (yy > 450) & (yy < 850)
    img[tissue] = NORMAL_RGB
    img[tumour] = TUMOUR_RGB
    img = np.clip(img.astype(int) + rng.normal(0, 10, img.shape) * tissue[..., None], 0, 255).astype(np.uint8)
    tifffile.imwrite(path, img, tile=(256, 256), photometric="rgb", compression="zlib",
                     resolution=(1e4 / mpp, 1e4 / mpp), resolutionunit="CENTIMETER")
    return [[450, 450], [850, 450], [850, 850], [450, 850]]


def write_geojson_tumour(path: Path, poly: list, cls: str = "Tumor") -> None:
    ring = [list(map(float, p)) for p in poly] + [list(map(float, poly[0]))]
    fc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]},
         "properties": {"objectType": "annotation", "classification": {"name": cls}}}]}
    path.write_text(json.dumps(fc))


