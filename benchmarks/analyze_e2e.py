"""`tmln analyze` end to end, both models, on the 60k x 40k px phantom: wall clock per precision.

    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 .venv/bin/python benchmarks/analyze_e2e.py \
        --precision fp32,auto --out benchmarks/results/analyze_avx2.md

One slide (`p15x10mm` of `benchmarks/tumour_engine.py`: 15 x 10 mm at 0.25 µm/px, 7 nodes), the node
model `demo-nodes`, the tumour model that benchmark's random-weight ResNet-18 at 0.5 µm/px (patch 224).
Each precision is one `python -m tmln analyze` process, timed from launch to exit (imports included),
run one after another on the same cores; the OpenMP wait policy is left to the CLI (it sets PASSIVE
where Winograd is the default); peak RSS is the process's own (`wait4`). Maps are compared against the first precision's: max |dP| and the
share of thresholded pixels that change; node counts from `slides.csv`.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_name, emit  # noqa: E402
from tumour_engine import model_dir, slide_path  # noqa: E402


def run_one(work: Path, model: Path, table: Path, precision: str) -> dict:
    out = work / f"analyze_{precision}"
    subprocess.run(["rm", "-rf", str(out)], check=True)
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    load0 = os.getloadavg()[0]
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "tmln", "analyze", "--slides", str(table), "--out", str(out),
                             "--node-model", "demo-nodes", "--tumour-model", str(model), "--precision", precision,
                             "--device", "cpu", "--quiet"], env=env)
    _, status, usage = os.wait4(proc.pid, 0)  # this process's own peak RSS (ru_maxrss, KiB on Linux)
    wall = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"tmln analyze --precision {precision} exited with {proc.returncode}")
    sd = out / "slides" / "p15x10mm"
    info = json.loads((sd / "tumour_map.json").read_text())
    nodes = json.loads((sd / "node_labels.json").read_text())
    with open(out / "slides.csv", newline="") as f:
        row = next(csv.DictReader(f))
    state = json.loads((sd / "state.json").read_text())
    return {"precision": precision, "wall_s": wall, "peak_rss_mib": usage.ru_maxrss / 1024, "slide_s": state.get("elapsed_s"), "load": (load0, os.getloadavg()[0]),
            "map_precision": info.get("precision"), "node_precision": (nodes.get("inference") or {}).get("precision"),
            "model_mpx": info.get("model_mpx"), "segments": info.get("tiles"), "n_nodes": int(row["n_nodes"]),
            "tumour_mm2": float(row["tumour_area_mm2"]), "map": sd / "tumour_map.npy", "threshold": info.get("threshold")}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="/tmp/tmln-bench")
    ap.add_argument("--precision", default="fp32,auto", help="comma-separated; maps compared against the first")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    slide, model = slide_path(work, "p15x10mm"), model_dir(work)
    table = work / "analyze_e2e.csv"
    table.write_text(f"slide_path,patient_id\n{slide},P1\n", encoding="utf-8")
    rows = [run_one(work, model, table, p) for p in args.precision.split(",")]
    ref = np.load(rows[0]["map"])
    ok = ~np.isnan(ref)
    thr = 0.5
    caps = [f"{v}={os.environ[v]}" for v in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA") if os.environ.get(v)]
    from tmln.models.backend import cpu_isa

    lines = ["# `tmln analyze` end to end, both models, one 60k x 40k px slide", "",
             f"Command: `{' '.join(caps + ['.venv/bin/python'] + sys.argv)}`  ",
             f"Machine: {cpu_name()}, {os.cpu_count()} CPUs visible; instruction set allowed: **{cpu_isa()}**"
             + (f" (capped: {', '.join(caps)})" if caps else "") + "  ",
             f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", "",
             "| `--precision` | tumour map ran | node U-Net ran | wall clock, whole `tmln analyze` | slide time "
             "(state.json) | vs first row | tumour model Mpx | nodes found | max \\|dP\\| vs first row | "
             "thresholded px changed | peak RSS | load average before → after |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        m = np.load(r["map"])
        dp = float(np.abs(m - ref)[ok].max())
        ch = float(((m[ok] >= thr) != (ref[ok] >= thr)).mean())
        lines.append(f"| {r['precision']} | {r['map_precision']} | {r['node_precision']} | **{r['wall_s']:.1f} s** | "
                     f"{r['slide_s']:.1f} s | {rows[0]['wall_s'] / r['wall_s']:.2f}x | {r['model_mpx']:.1f} | "
                     f"{r['n_nodes']} | {dp:.2g} | {100 * ch:.2f} % | {r['peak_rss_mib']:.0f} MiB | "
                     f"{r['load'][0]:.1f} → {r['load'][1]:.1f} |")
    lines += ["", f"Threshold {thr} (the random model's card). {int(ok.sum())} map pixels over the nodes."]
    emit("\n".join(lines) + "\n", args.out)


if __name__ == "__main__":
    main()
