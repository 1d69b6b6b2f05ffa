"""Compare phantom textures with the real Camelyon16 lymph-node patches (../shared, read in place).

Measures, for real normal/tumour patches and phantom lymphoid/tumour patches rendered at the same
µm/px (0.25, stain "none" and the per-slide random stains): RGB percentiles, the bright (>220) and
dark (<100) pixel fractions, and nuclear size (equivalent diameter in µm of connected
components darker than the Otsu threshold of the set's mean OD, opened by 1 µm, 12-400 µm²).

    .venv/bin/python benchmarks/phantom_calibration.py --out benchmarks/results/phantom_calibration.md
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
from pathlib import Path

import numpy as np
from common import emit

REAL_MPP = 0.243
SHARED = Path(os.environ.get("TMLN_SHARED", Path(__file__).resolve().parents[2] / "shared")) / "data" / "camelyon16-patches"


def load_real(label: str) -> np.ndarray:
    from PIL import Image

    files = sorted(glob.glob(str(SHARED / label / "*.png")))
    return np.stack([np.asarray(Image.open(f))[..., :3] for f in files])


def phantom_patches(cls: int, n: int, stain: str, mpp: float = 0.25) -> np.ndarray:
    from tmln.phantom.geometry import SlideSpec, make_layout
    from tmln.phantom.render import SlideRenderer

    out = []
    seed = 100
    while len(out) < n and seed < 140:
        lay = make_layout(SlideSpec(seed=seed, size_mm=(8.0, 6.0), mpp=mpp, negative=False, stain=stain))
        r = SlideRenderer(lay)
        rng = np.random.default_rng(seed)
        for _ in range(800):
            x, y = int(rng.integers(0, lay.width - 256)), int(rng.integers(0, lay.height - 256))
            lab = r.labels(1, x, y, 256, 256)
            if (lab == cls).mean() > 0.95:
                out.append(r.tile(1, x, y, 256, 256))
                if len(out) % 4 == 0:
                    break
            if len(out) >= n:
                break
        seed += 1
    return np.stack(out)


def nuclear_diameters_um(imgs: np.ndarray, mpp: float) -> np.ndarray:
    import cv2
    from skimage.filters import threshold_otsu
    from skimage.measure import label, regionprops

    out = []
    ods = -np.log10(np.clip(imgs.astype(np.float32), 1, 255) / 250.0)
    thr = threshold_otsu(ods.mean(-1))  # nuclei vs the rest, over the whole patch set
    for im, od in zip(imgs, ods):
        m = od.mean(-1) > thr
        k = max(1, int(round(1.0 / mpp)))
        m = cv2.morphologyEx(m.astype(np.uint8), cv2.MORPH_OPEN, np.ones((k, k), np.uint8)).astype(bool)
        for rp in regionprops(label(m)):
            a = rp.area * mpp * mpp
            if 12 <= a <= 400 and not _touches_border(rp.bbox, im.shape):
                out.append(2 * np.sqrt(a / np.pi))
    return np.asarray(out)


def _touches_border(bbox, shape):
    r0, c0, r1, c1 = bbox
    return r0 == 0 or c0 == 0 or r1 == shape[0] or c1 == shape[1]


def describe(imgs: np.ndarray, mpp: float) -> dict:
    a = imgs.reshape(-1, 3).astype(float)
    g = a.mean(1)
    d = nuclear_diameters_um(imgs, mpp)
    return {
        "median": np.percentile(a, 50, 0), "p5": np.percentile(a, 5, 0), "p95": np.percentile(a, 95, 0),
        "bright": float(np.mean(g > 220)), "dark": float(np.mean(g < 100)),
        "nuc_d_median": float(np.median(d)) if d.size else float("nan"),
        "nuc_d_iqr": (float(np.percentile(d, 25)), float(np.percentile(d, 75))) if d.size else (np.nan, np.nan),
        "n_nuclei": int(d.size),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=16, help="phantom patches per class and stain")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    if not SHARED.is_dir():
        sys.exit(f"{SHARED} is absent: this calibration needs the real patches")
    from tmln.phantom.texture import LYMPH, TUMOUR

    rows = []
    for label, cls in (("normal", LYMPH), ("tumor", TUMOUR)):
        rows.append((f"real {label} (Camelyon16, n={len(load_real(label))})", describe(load_real(label), REAL_MPP)))
        for stain in ("none", "normal"):
            name = "lymphoid" if cls == LYMPH else "tumour"
            rows.append((f"phantom {name}, stain {stain}", describe(phantom_patches(cls, a.n, stain), 0.25)))
    fmt = lambda v: "(" + ", ".join(f"{x:.0f}" for x in v) + ")"  # noqa: E731
    lines = [
        "# Phantom calibration against real lymph-node H&E patches",
        "",
        f"Command: `.venv/bin/python benchmarks/phantom_calibration.py {' '.join(sys.argv[1:])}`",
        "Real: 256 x 256 patches at 0.243 µm/px; phantom: 256 x 256 patches at 0.25 µm/px (>95 % one class).",
        "",
        "| patches | RGB median | RGB p5 | RGB p95 | bright >220 | dark <100 | nucleus Ø µm median (IQR) | nuclei |",
        "|---|---|---|---|---:|---:|---|---:|",
    ]
    for name, r in rows:
        lines.append(f"| {name} | {fmt(r['median'])} | {fmt(r['p5'])} | {fmt(r['p95'])} | {r['bright']:.2f} | "
                     f"{r['dark']:.2f} | {r['nuc_d_median']:.1f} ({r['nuc_d_iqr'][0]:.1f}-{r['nuc_d_iqr'][1]:.1f}) | "
                     f"{r['n_nuclei']} |")
    emit("\n".join(lines) + "\n", a.out)


if __name__ == "__main__":
    main()
