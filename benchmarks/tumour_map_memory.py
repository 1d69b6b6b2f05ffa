"""Peak memory of whole-slide tumour maps: slide size x model µm/px (finer, equal, coarser than the slide).

Each case runs ``tmln.tumour.engine.tumour_map(slide, model, mask="tissue")`` over the whole
tissue of a phantom slide in a fresh process; a sampler thread in that process reads its RSS every
0.2 s (peak, and the peaks of the first and last quarter of the run: growth between them says that
something accumulates). ``ru_maxrss`` is not used: Linux carries the parent's peak across fork. The model is a random-weight ResNet-18
(the cost and memory of real weights are the same) with a 224 px patch (``--patch-size``). After the map, its polygons
(``regions_from_map``, as ``tmln tumour-map`` does): a random model calls about half the tissue
tumour in small islands, the worst case for that step.

    .venv/bin/python benchmarks/tumour_map_memory.py --sizes 8000 20000 --model-mpp 0.243 0.5 1.0 \
        --out benchmarks/results/tumour_map_memory.md
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import cpu_name, emit

CHILD = r"""
import json, sys, threading, time
import numpy as np, torch
from tmln.models.card import ModelCard
from tmln.models.classifier import build_classifier
from tmln.tumour.engine import tumour_map

path, model_mpp, patch, repeat, precision = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]

def rss_mib():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096 / 2**20

samples, stop = [], threading.Event()
def sample():
    t0 = time.perf_counter()
    while not stop.is_set():
        samples.append((time.perf_counter() - t0, rss_mib()))
        stop.wait(0.2)

torch.manual_seed(0)
net = build_classifier("resnet18", 1).eval()
card = ModelCard(task="tumour-classifier", architecture="resnet18", mpp=model_mpp, patch_size=patch,
                 classes=["normal", "tumour"])
th = threading.Thread(target=sample, daemon=True)
th.start()
walls, after = [], []
for _ in range(repeat):  # the same map again in this process: what stays resident after each
    t = time.perf_counter()
    pm = tumour_map(path, (net, card), mask="tissue", device="cpu", precision=precision)
    walls.append(time.perf_counter() - t)
    after.append(rss_mib())
wall = min(walls)
map_peak = max(r for _, r in samples)
from tmln.tumour import regions_from_map  # what `tmln tumour-map` does next: threshold -> polygons
t = time.perf_counter()
regions = regions_from_map(pm)
regions_s = time.perf_counter() - t
stop.set(); th.join()
n = len(samples)
q = max(1, n // 4)
print(json.dumps({"wall_s": wall, "peak_rss_mib": max(r for _, r in samples), "map_peak_rss_mib": map_peak,
                  "regions_s": regions_s, "n_regions": len(regions), "model_mpx": pm.info["model_mpx"], "roi_mm2": pm.info["roi_mm2"],
                  "method": pm.info["method"], "precision": pm.info["precision"], "after_each_mib": after,
                  "rss_first_quarter_max_mib": max(r for _, r in samples[:q]) if samples else None,
                  "rss_last_quarter_max_mib": max(r for _, r in samples[-q:]) if samples else None}))
"""


def make_phantom(px: int, mpp: float, folder: Path) -> Path:
    path = folder / f"phantom_{px}_{mpp}.tiff"
    if not path.exists():  # in a subprocess, so that this process stays small
        mm = px * mpp / 1000.0
        code = ("from tmln.phantom import SlideSpec, make_slide; "
                f"make_slide({str(path)!r}, SlideSpec(seed=1, size_mm=({mm}, {mm * 0.75}), mpp={mpp}), geojson=False)")
        subprocess.run([sys.executable, "-c", code], check=True)
    return path


def run_case(path: Path, model_mpp: float, patch: int = 224, repeat: int = 1, precision: str = "auto",
             trim: str = "on") -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    env["TMLN_MALLOC_TRIM"] = "1" if trim == "on" else "0"  # tmln.infer.memory
    p = subprocess.Popen([sys.executable, "-c", CHILD, str(path), str(model_mpp), str(patch), str(repeat), precision],
                         stdout=subprocess.PIPE, env=env)
    _, status, _ = os.wait4(p.pid, 0)
    out = p.stdout.read().decode().strip().splitlines()
    if status != 0 or not out:
        raise SystemExit(f"{path} at {model_mpp} µm/px failed (status {status})")
    return json.loads(out[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[8000, 16000], help="slide width, px (height 3/4)")
    ap.add_argument("--slide-mpp", type=float, default=0.5)
    ap.add_argument("--model-mpp", type=float, nargs="+", default=[0.25, 0.5, 1.0])
    ap.add_argument("--patch-size", type=int, default=224, help="the model's patch, px")
    ap.add_argument("--work", default=None, help="folder for the phantom slides (kept for reruns)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--repeat", type=int, default=1, help="maps of the same slide in one process (RSS after each)")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--trim", nargs="+", default=["on"], choices=["on", "off"],
                    help="freed memory returned during the map (tmln.infer.memory) or not (TMLN_MALLOC_TRIM=0)")
    a = ap.parse_args()
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="tmln-mem-"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for px in a.sizes:
        t = time.perf_counter()
        path = make_phantom(px, a.slide_mpp, work)
        print(f"phantom {px} px ready ({time.perf_counter() - t:.0f} s)", flush=True)
        for mm in a.model_mpp:
            for trim in a.trim:  # side by side: same slide, same model
                r = run_case(path, mm, patch=a.patch_size, repeat=a.repeat, precision=a.precision, trim=trim)
                r.update(px=px, model_mpp=mm, trim=trim)
                rows.append(r)
                print(json.dumps(r), flush=True)
    lines = [
        "# Whole-slide tumour maps: peak memory",
        "",
        f"Command: `{' '.join(['.venv/bin/python', 'benchmarks/tumour_map_memory.py', *sys.argv[1:]])}`",
        f"CPU: {cpu_name()}, {os.cpu_count()} cores; one process per case; phantom slides at {a.slide_mpp} µm/px "
        f"(width x 3/4 width), whole tissue mapped (`mask=\"tissue\"`), random-weight ResNet-18, {a.patch_size} px patch, "
        f"precision {a.precision}; each map made {a.repeat} time(s) in its process (map (s): the fastest; RSS after "
        "each map: what stays resident); malloc_trim: freed memory returned during the map (`tmln.infer.memory`).",
        "",
        "| slide (px) | model µm/px | model/slide | method | precision | malloc_trim | model Mpx | tissue mm² | "
        "map (s) | map peak RSS (MiB) | RSS 1st / last quarter (MiB) | RSS after each map (MiB) | polygons | "
        "polygons (s) | peak RSS (MiB) |",
        "|---|---:|---:|---|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['px']} x {r['px'] * 3 // 4} | {r['model_mpp']} | {r['model_mpp'] / a.slide_mpp:.2f} | {r['method']} | "
            f"{r['precision']} | {r['trim']} | {r['model_mpx']:.0f} | {r['roi_mm2']:.1f} | {r['wall_s']:.0f} | "
            f"{r['map_peak_rss_mib']:.0f} | {r['rss_first_quarter_max_mib']:.0f} / {r['rss_last_quarter_max_mib']:.0f} | "
            f"{', '.join(f'{v:.0f}' for v in r['after_each_mib'])} | {r['n_regions']} | "
            f"{r['regions_s']:.1f} | {r['peak_rss_mib']:.0f} |")
    emit("\n".join(lines) + "\n", a.out)


if __name__ == "__main__":
    main()
