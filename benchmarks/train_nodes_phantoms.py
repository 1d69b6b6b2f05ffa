"""Benchmark: train the lymph-node U-Net on a phantom cohort, evaluate on phantoms of other seeds.

Reports pixel Dice, instance precision/recall (IoU >= 0.5), count error, split/merge errors, how many
touching node pairs came out as two correctly matched instances, and the training time, and writes
``benchmarks/results/nodes.md``.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/train_nodes_phantoms.py --work /tmp/nodes-bench --threads 1

The trained model directory stays in ``WORK/model`` (candidate for the bundled ``demo-nodes``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import sys
import time
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]


def make_cohorts(work: Path, args) -> tuple[Path, list[Path]]:
    from tmln.phantom import make_cohort

    train_csv = work / "train" / "slides.csv"
    if not train_csv.is_file():
        make_cohort(work / "train", patients=args.train_patients, seed=args.train_seed, mpp=args.train_slide_mpp)
    tests = []
    for s in args.test_seeds:
        csv = work / f"test-{s}" / "slides.csv"
        if not csv.is_file():
            make_cohort(csv.parent, patients=args.test_patients, seed=s, mpp=args.test_slide_mpp)
        tests.append(csv)
    return train_csv, tests


def touching_pairs(polys) -> list[tuple[int, int]]:
    """1-based ids of truth node pairs that share a boundary."""
    out = []
    for i in range(len(polys)):
        for j in range(i + 1, len(polys)):
            if polys[i].distance(polys[j]) < 1e-6 and polys[i].boundary.intersection(polys[j].boundary).length > 0:
                out.append((i + 1, j + 1))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="/tmp/tmln-nodes-bench", help="scratch folder (cohorts, model, predictions)")
    ap.add_argument("--train-patients", type=int, default=8)
    ap.add_argument("--train-seed", type=int, default=11)
    ap.add_argument("--train-slide-mpp", type=float, default=1.0)
    ap.add_argument("--test-seeds", type=int, nargs="+", default=[101, 202, 303, 404])
    ap.add_argument("--test-patients", type=int, default=4)
    ap.add_argument("--test-slide-mpp", type=float, default=0.5)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--samples-per-epoch", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--encoder", default="tu-mobilenetv3_small_100")
    ap.add_argument("--decoder-channels", default="64,48,32,24,16")
    ap.add_argument("--tile-size", type=int, default=256, help="inference tile, px")
    ap.add_argument("--crop-size", type=int, default=128, help="training crop, px")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--results", default=str(REPO / "benchmarks" / "results" / "nodes.md"))
    ap.add_argument("--fresh", action="store_true", help="retrain even if WORK/model exists")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from tmln.nodes import node_map
    from tmln.evaluate.nodes import evaluate_nodes, load_truth
    from tmln.train.nodes import train_nodes, weights_size_mb

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    train_csv, test_csvs = make_cohorts(work, args)
    t_data = time.time() - t0

    model_dir = work / "model"
    if args.fresh and model_dir.exists():
        shutil.rmtree(model_dir)
    card = train_nodes(model_dir, slides=train_csv, annotations=train_csv.parent, epochs=args.epochs,
                       tile_size=args.tile_size, crop_size=args.crop_size, encoder=args.encoder,
                       decoder_channels=[int(c) for c in args.decoder_channels.split(",")],
                       batch_size=args.batch_size, lr=args.lr, samples_per_epoch=args.samples_per_epoch, seed=0, device="cpu")
    import csv as _csv

    with open(model_dir / "train" / "train_log.csv", newline="") as fh:  # survives a resumed run
        t_train = sum(float(r["seconds"]) for r in _csv.DictReader(fh))

    results = []
    infer_s = 0.0
    for csv in test_csvs:
        pred_dir = work / "pred" / csv.parent.name
        import pandas as pd

        table = pd.read_csv(csv)
        n_pairs = n_split = 0
        for rel in table["slide_path"]:
            sid = Path(rel).stem
            t2 = time.time()
            node_map(csv.parent / rel, model_dir, out_dir=pred_dir / sid, device="cpu")
            infer_s += time.time() - t2
        frame, matches, summary = evaluate_nodes(csv.parent, pred_dir, slides=csv)
        for sid in frame["slide_id"]:
            truth = load_truth(csv.parent, sid).polygons
            pairs = touching_pairs(truth)
            m = matches[matches["slide_id"] == sid]
            matched = dict(zip(m["truth_id"], m["pred_id"]))
            for a, b in pairs:
                n_pairs += 1
                n_split += int(a in matched and b in matched and matched[a] != matched[b])
        results.append((csv.parent.name, frame, summary, n_pairs, n_split))

    size_mb = weights_size_mb(model_dir)
    params = card.training.get("parameters")
    lines = [
        "# Lymph-node U-Net on phantoms (train on one seed, test on others)",
        "",
        f"Command: `OMP_NUM_THREADS={args.threads} .venv/bin/python benchmarks/train_nodes_phantoms.py "
        + " ".join(a for a in (argv or sys.argv[1:])) + "`",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores (shared with other jobs during the run: "
        f"timings are upper bounds), torch {torch.__version__}, {args.threads} torch threads, CPU only.",
        "",
        f"- Training cohort: {args.train_patients} patients x 1 slide (seed {args.train_seed}, 8 x 6 mm at "
        f"{args.train_slide_mpp} µm/px); patient-level split, validation on {card.metrics.get('validation_on')}.",
        f"- Model: `{card.architecture}`, decoder {card.params['unet']['decoder_channels']}, classes {card.classes}, "
        f"{card.mpp} µm/px, tile {card.patch_size} px; {params:,} parameters, `model.safetensors` {size_mb:.1f} MB.",
        f"- Training: {args.epochs} epochs x {args.samples_per_epoch} crops of {args.crop_size} px, batch {args.batch_size}, "
        f"AdamW lr {args.lr:g}: "
        f"**{t_train / 60:.1f} min** (sum of epoch times incl. validation; phantom generation {t_data:.0f} s, not included); best epoch "
        f"{card.metrics.get('best_epoch')} (by validation Dice + instance F1).",
        f"- Inference (node-map, whole slides at {card.mpp} µm/px incl. reading + post-processing): "
        f"{infer_s / max(1, sum(len(r[1]) for r in results)):.1f} s per slide.",
        "",
        "| test cohort (seed) | slides | Dice (pooled) | Dice (min slide) | nodes | instance precision | "
        "instance recall | count error | splits | merges | touching pairs split |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    def f(v, nd=3):
        return "n/a" if v is None else f"{v:.{nd}f}"

    for name, frame, s, n_pairs, n_split in results:
        lines.append(f"| {name} | {s['slides']} | {f(s['dice_pooled'], 4)} | {f(s['dice_min'], 4)} | {s['n_truth']} | "
                     f"{f(s['precision'])} | {f(s['recall'])} | {s['count_error']:+d} | {s['split_errors']} | "
                     f"{s['merge_errors']} | {n_split}/{n_pairs} |")
    lines += ["", "Goal: Dice >= 0.95, instance recall >= 0.95, touching pairs split.", ""]
    text = "\n".join(lines)
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.results).write_text(text, encoding="utf-8")
    print(text)
    (work / "summary.json").write_text(json.dumps([r[2] for r in results], indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
