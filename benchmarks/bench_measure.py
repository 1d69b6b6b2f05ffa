"""Measurement core and cohort runs, side by side in one run (ratios, not absolute promises).

1. Greatest dimension of a raster-outlined deposit (pixel-exact outline, ~20k vertices):
   convex-hull vertices + pdist (tmln) vs pdist over all outline vertices (identical value, asserted).
2. A model-sized slide: 150 node instances vectorised from a label map at 8 µm/px plus tumour
   regions from a mask: vectorise time and measure time (exact polygon areas vs pixel counts, asserted).
3. A phantom cohort (4 slides, 8 x 6 mm at 0.5 µm/px): first run vs a rerun that finds every slide done.

Run: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_measure.py [--out benchmarks/results/measure.md]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np


def _best(fn, repeat=3):
    out, best = None, float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def bench_feret():
    from scipy.spatial.distance import pdist
    from skimage.draw import ellipse

    from tmln.measure.nodes import max_feret_mm
    from tmln.regions import polygons_from_mask

    mask = np.zeros((3000, 3000), bool)
    rr, cc = ellipse(1500, 1500, 1400, 900, rotation=0.4)
    mask[rr, cc] = True
    rng = np.random.default_rng(0)
    mask &= rng.random(mask.shape) > 0.02  # ragged, as a thresholded map
    (poly,) = polygons_from_mask(mask, 1.0, 1.0, 1.0)[:1]
    n = len(poly.exterior.coords)
    t_tmln, v_tmln = _best(lambda: max_feret_mm(poly, 0.5, 0.5))
    pts = np.asarray(poly.exterior.coords) * 0.5
    t_ref, v_ref = _best(lambda: float(pdist(pts).max()) / 1000, repeat=1)
    assert abs(v_tmln - v_ref) < 1e-12, (v_tmln, v_ref)
    return n, t_tmln, t_ref


def bench_model_slide():
    from scipy import ndimage

    from tmln.measure.nodes import measure_slide
    from tmln.regions import polygons_from_labels, polygons_from_mask

    rng = np.random.default_rng(1)
    H, W = 2500, 3500  # 20 x 28 mm at 8 µm/px
    seeds = np.zeros((H, W), bool)
    seeds[rng.integers(50, H - 50, 150), rng.integers(50, W - 50, 150)] = True
    dist = ndimage.distance_transform_edt(~seeds)
    labels, _ = ndimage.label(dist < 40)
    tumour = np.zeros((H, W), bool)
    for y, x in zip(rng.integers(0, H, 60), rng.integers(0, W, 60)):
        tumour[max(0, y - 15):y + 15, max(0, x - 10):x + 25] = True
    mpp = 0.25
    t_vec, (nodes, tum) = _best(lambda: (polygons_from_labels(labels, 8.0, mpp, mpp),
                                         polygons_from_mask(tumour, 8.0, mpp, mpp)), repeat=1)
    t_meas, m = _best(lambda: measure_slide(nodes, tum, mpp, mpp), repeat=1)
    px_mm2 = (8.0 * 8.0) / 1e6
    assert abs(m.summary["node_area_mm2"] - (labels > 0).sum() * px_mm2) < 1e-9
    assert abs(m.summary["tumour_area_mm2"] - ((labels > 0) & tumour).sum() * px_mm2) < 1e-9
    return len(nodes), len(tum), t_vec, t_meas


def bench_cohort():
    from tmln.cohort.run import run_cohort
    from tmln.phantom import make_cohort

    with tempfile.TemporaryDirectory() as d:
        csv = make_cohort(Path(d) / "c", patients=2, slides_per_patient=2, seed=3, size_mm=(8.0, 6.0))
        kw = dict(node_annotations=csv.parent, tumour_annotations=csv.parent, quiet=True)
        t0 = time.perf_counter()
        s = run_cohort(csv, Path(d) / "run", **kw)
        t_first = time.perf_counter() - t0
        t0 = time.perf_counter()
        s2 = run_cohort(csv, Path(d) / "run", **kw)
        t_rerun = time.perf_counter() - t0
        assert s.n_done == 4 and s2.n_reused == 4
    return t_first, t_rerun


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    n, t1, t2 = bench_feret()
    nn, nt, tv, tm = bench_model_slide()
    tf, tr = bench_cohort()
    lines = [
        "# Measurement core benchmarks",
        "",
        "Command: `OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_measure.py --out benchmarks/results/measure.md`",
        f"Machine: {platform.processor() or platform.machine()}, 1 thread, Python {platform.python_version()} "
        "(shared 2-core box: ratios matter, absolute times are noisy).",
        "",
        "| task | tmln | reference | ratio |",
        "|---|---|---|---|",
        f"| greatest dimension of a {n}-vertex raster outline | {t1 * 1e3:.1f} ms (hull + pdist) | "
        f"{t2 * 1e3:.0f} ms (pdist of all vertices) | {t2 / t1:.0f}x |",
        f"| vectorise a 2500 x 3500 label map ({nn} nodes) + tumour mask ({nt} regions) | {tv:.2f} s | - | - |",
        f"| measure those {nn} nodes (exact areas = pixel counts, asserted) | {tm:.2f} s | - | - |",
        f"| phantom cohort, 4 slides of 8 x 6 mm: first run vs rerun (all done) | {tf:.1f} s | {tr:.2f} s | "
        f"{tf / tr:.0f}x |",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if a.out:
        Path(a.out).write_text(text)


if __name__ == "__main__":
    main()
