"""Benchmark: the bundled demo models end to end on phantom cohorts of seeds never used in training.

For each seed, a demo cohort (``tmln.demo.make_demo_cohort``: true stages N0-N3a, 1-3 slides per
patient) is measured with ``run_cohort(node_model=..., tumour_model=...)`` and compared per patient with
the phantom truth: node count error, metastatic-node count error, N-stage agreement and |ΔT/MLN|.
Writes ``benchmarks/results/demo_models.md``; ``--overlay`` also saves one overlay for the README.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/demo_accuracy.py --seeds 101 102 103 \
        --overlay docs/img/demo-overlay.png

The models were trained on ``tmln.phantom.make_cohort`` seeds 1000 and 1001 (scripts/train_demo_models.py);
demo cohorts draw every slide seed from ``SeedSequence([seed, patient, 0xDE70])``, so no test slide
is a training slide whatever the seed.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def save_overlay(run_dir: Path, comp, dest: Path, max_px: int = 900, max_bytes: int = 300_000) -> Path:
    """The overlay of the slide with the most measured metastatic nodes, cropped to its tissue and
    stored as a 256-colour PNG below ``max_bytes`` (for the README)."""
    import cv2
    import numpy as np
    import pandas as pd
    from PIL import Image

    slides = pd.read_csv(run_dir / "slides.csv")
    slides = slides[slides["status"] == "done"].sort_values(["n_metastatic_nodes", "n_nodes"], ascending=False)
    sid = str(slides["slide_id"].iloc[0])
    img = cv2.imread(str(run_dir / "slides" / sid / "overlay.png"), cv2.IMREAD_COLOR)[..., ::-1]
    ys, xs = np.nonzero(img.astype(int).sum(-1) < 600)  # tissue and outlines (not glass)
    pad = 10
    img = img[max(0, ys.min() - pad):ys.max() + pad, max(0, xs.min() - pad):xs.max() + pad]
    dest.parent.mkdir(parents=True, exist_ok=True)
    side = max_px
    while True:
        f = min(1.0, side / max(img.shape[:2]))
        small = cv2.resize(np.ascontiguousarray(img), (round(img.shape[1] * f), round(img.shape[0] * f)),
                           interpolation=cv2.INTER_AREA)
        pal = Image.fromarray(small).quantize(colors=256, method=Image.Quantize.MEDIANCUT)
        tmp = dest.with_suffix(".tmp.png")
        pal.save(tmp, optimize=True)
        if tmp.stat().st_size < max_bytes or side < 300:
            break
        side = int(side * 0.85)
    tmp.replace(dest)
    print(f"overlay of {sid}: {dest} ({dest.stat().st_size / 1000:.0f} KB, {small.shape[1]}x{small.shape[0]} px)")
    return dest


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[101, 102, 103])
    ap.add_argument("--patients", type=int, default=8)
    ap.add_argument("--slide-mm", type=float, nargs=2, default=None, help="slide size W H (default: the demo's)")
    ap.add_argument("--work", default="/tmp/tmln-demo-accuracy")
    ap.add_argument("--node-model", default="demo-nodes")
    ap.add_argument("--tumour-model", default="demo-tumour")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--overlay", default=None, help="save one overlay PNG here (from the first seed)")
    ap.add_argument("--results", default=str(REPO / "benchmarks" / "results" / "demo_models.md"))
    args = ap.parse_args(argv)

    import pandas as pd
    import torch

    from tmln.cohort.run import run_cohort
    from tmln.demo import SLIDE_SIZE_MM, compare_with_truth, make_demo_cohort
    from tmln.models.card import read_card

    torch.set_num_threads(args.threads)
    size = tuple(args.slide_mm) if args.slide_mm else SLIDE_SIZE_MM
    work = Path(args.work)
    frames, timings = [], []
    for k, seed in enumerate(args.seeds):
        ph = work / f"seed-{seed}" / "phantoms"
        csv = ph / "slides.csv"
        if not (ph / "cohort.json").is_file():
            make_demo_cohort(ph, args.patients, seed, size_mm=size)
        run = work / f"seed-{seed}" / "run"
        t = time.perf_counter()
        summary = run_cohort(csv, run, node_model=args.node_model, tumour_model=args.tumour_model, quiet=True,
                             device="cpu")
        dt = time.perf_counter() - t
        n_slides = len(pd.read_csv(csv))
        timings.append((seed, n_slides, summary.n_processed, dt))
        measured = pd.read_csv(run / "patients.csv", dtype={"patient_id": str, "n_stage": str})
        truth = pd.read_csv(ph / "truth_patients.csv", dtype={"patient_id": str})
        comp = compare_with_truth(measured, truth).assign(seed=seed)
        frames.append(comp)
        print(f"seed {seed}: {n_slides} slides in {dt:.0f} s; N stage agrees {comp['n_stage_agrees'].mean():.0%}; "
              f"max |ΔT/MLN| {comp['abs_delta_t_mln'].max():.3f}", flush=True)
        if k == 0 and args.overlay:
            save_overlay(run, comp, Path(args.overlay))
    allc = pd.concat(frames, ignore_index=True)
    node_err = allc["measured_n_nodes"] - allc["true_n_nodes"]
    mln_err = allc["measured_n_metastatic_nodes"] - allc["true_n_metastatic_nodes"]
    d = allc["abs_delta_t_mln"]
    nc, tc = read_card(args.node_model), read_card(args.tumour_model)
    processed = [t for t in timings if t[2]]
    per_slide = sum(t[3] for t in processed) / max(1, sum(t[2] for t in processed))
    cmd = (f"OMP_NUM_THREADS={args.threads} .venv/bin/python benchmarks/demo_accuracy.py --seeds "
           + " ".join(map(str, args.seeds)) + (f" --threads {args.threads}" if args.threads != 2 else "")
           + (f" --patients {args.patients}" if args.patients != 8 else "")
           + (f" --slide-mm {size[0]:g} {size[1]:g}" if args.slide_mm else ""))
    lines = [
        "# Bundled demo models, end to end on unseen phantom cohorts",
        "",
        f"Command: `{cmd}`",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores shared with other jobs (timings are upper "
        f"bounds), torch {torch.__version__}, {args.threads} threads, CPU only.",
        "",
        f"- Models: `{args.node_model}` ({nc.architecture}, {nc.mpp:g} µm/px) and `{args.tumour_model}` "
        f"({tc.architecture}, {tc.patch_size} px at {tc.mpp:g} µm/px, threshold {tc.threshold:.3f}); trained on "
        "`make_cohort` phantoms of seeds 1000 and 1001 (scripts/train_demo_models.py).",
        f"- Test cohorts: `tmln.demo.make_demo_cohort`, seeds {', '.join(map(str, args.seeds))}, {args.patients} "
        f"patients each (true stages N0, N1, N2, N3a, N1, N0, N2, N1; 1-3 slides of {size[0]:g} x {size[1]:g} mm at "
        f"0.5 µm/px): {len(allc)} patients, {sum(t[1] for t in timings)} slides.",
        f"- `run_cohort` (read, node U-Net, tumour map over the nodes, measurement, overlays): "
        f"**{per_slide:.1f} s per slide**.",
        "",
        "| metric | result | goal |",
        "|---|---|---|",
        f"| N stage exact | **{allc['n_stage_agrees'].mean():.0%}** ({int(allc['n_stage_agrees'].sum())}/{len(allc)} "
        "patients) | >= 90 % |",
        f"| \\|ΔT/MLN\\| median / max | **{d.median():.3f} / {d.max():.3f}** | <= 0.05 |",
        f"| patients with \\|ΔT/MLN\\| <= 0.05 | {(d <= 0.05).mean():.0%} | |",
        f"| node count error per patient (measured - true): mean / mean abs / range | {node_err.mean():+.2f} / "
        f"{node_err.abs().mean():.2f} / {int(node_err.min()):+d}..{int(node_err.max()):+d} | |",
        f"| metastatic-node count error per patient: mean abs / range | {mln_err.abs().mean():.2f} / "
        f"{int(mln_err.min()):+d}..{int(mln_err.max()):+d} | |",
        "",
        "Per patient:",
        "",
        "| seed | patient | slides | nodes true / measured | MLN true / measured | N stage true / measured | "
        "T/MLN true / measured | \\|Δ\\| |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in allc.to_dict("records"):
        lines.append(f"| {r['seed']} | {r['patient_id']} | {r['n_slides']} | {r['true_n_nodes']} / "
                     f"{r['measured_n_nodes']} | {r['true_n_metastatic_nodes']} / {r['measured_n_metastatic_nodes']} | "
                     f"{r['true_n_stage']} / {r['measured_n_stage']}{'' if r['n_stage_agrees'] else ' ✗'} | "
                     f"{r['true_t_mln']:.3f} / {r['measured_t_mln']:.3f} | {r['abs_delta_t_mln']:.3f} |")
    lines.append("")
    text = "\n".join(lines)
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.results).write_text(text, encoding="utf-8")
    allc.to_csv(work / "per_patient.csv", index=False)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
