"""Peak memory and time of phantom slide generation versus slide size (streaming check).

Each size runs in a fresh process; its peak RSS comes from os.wait4 (ru_maxrss). If generation
streams, peak RSS stays flat while the pixel count grows by orders of magnitude.

    .venv/bin/python benchmarks/phantom_memory.py --sizes 8000 16000 32000 64000 100000 \
        --out benchmarks/results/phantom.md
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import emit

CHILD = r"""
import sys, time
from tmln.phantom import SlideSpec, make_slide
px, mpp, path = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
mm = px * mpp / 1000.0
t = time.perf_counter()
make_slide(path, SlideSpec(seed=1, size_mm=(mm, mm), mpp=mpp), geojson=False)
print(time.perf_counter() - t)
"""


def run_one(px: int, mpp: float, tmp: Path) -> dict:
    path = tmp / f"bench_{px}.tiff"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.Popen([sys.executable, "-c", CHILD, str(px), str(mpp), str(path)], stdout=subprocess.PIPE, env=env)
    t0 = time.perf_counter()
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    out = p.stdout.read().decode().strip()
    if status != 0:
        raise SystemExit(f"size {px} failed (status {status})")
    size = path.stat().st_size
    path.unlink()
    return {"px": px, "gpx": px * px / 1e9, "peak_rss_mib": ru.ru_maxrss / 1024, "gen_s": float(out or wall),
            "file_mib": size / 2**20, "mpx_per_s": px * px / 1e6 / float(out or wall)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[8000, 16000, 32000])
    ap.add_argument("--mpp", type=float, default=0.5)
    ap.add_argument("--tmp", default=None, help="folder for the (deleted) slides")
    ap.add_argument("--out", default=None, help="markdown file to write")
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(dir=a.tmp) as tmp:
        for px in a.sizes:
            r = run_one(px, a.mpp, Path(tmp))
            rows.append(r)
            print(f"{px:>7} px  {r['gpx']:.3f} Gpx  peak RSS {r['peak_rss_mib']:.0f} MiB  {r['gen_s']:.1f} s  "
                  f"{r['mpx_per_s']:.0f} Mpx/s  file {r['file_mib']:.0f} MiB", flush=True)
    lines = [
        "# Phantom slide generation: memory and speed",
        "",
        f"Command: `{' '.join(['.venv/bin/python', 'benchmarks/phantom_memory.py', *sys.argv[1:]])}`",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs (shared), Python {platform.python_version()}; "
        f"one process per size, OMP_NUM_THREADS=1, mpp {a.mpp} µm/px, JPEG q85, 512 px tiles, 4x pyramid.",
        "",
        "| size (px) | Gpx | peak RSS (MiB) | time (s) | Mpx/s | file (MiB) | RSS ratio to smallest |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    base = rows[0]["peak_rss_mib"]
    for r in rows:
        lines.append(f"| {r['px']} x {r['px']} | {r['gpx']:.3f} | {r['peak_rss_mib']:.0f} | {r['gen_s']:.1f} | "
                     f"{r['mpx_per_s']:.0f} | {r['file_mib']:.0f} | {r['peak_rss_mib'] / base:.2f} |")
    emit("\n".join(lines) + "\n", a.out)


if __name__ == "__main__":
    main()
