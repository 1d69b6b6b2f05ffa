"""Rebuild the bundled real-tissue model ``pcam-tumour`` from the PCam patches in ``../shared``.

    make real-models                                   # = the command below, then bundle
    OMP_NUM_THREADS=2 .venv/bin/python scripts/train_real_models.py [--shared ../shared] [--work build/real-models]
    .venv/bin/python scripts/train_real_models.py --stage evaluate,bundle   # after training (resumes)

Stages (comma-separated ``--stage``, default all):

* ``train``: ``tmln.train.tumour.train_tumour`` on ``pcam/train`` (10,000 tumour + 10,000 normal
  patches, 96 px at 0.97 µm/px) with ``pcam/valid`` (1,500 + 1,500, slide-disjoint) as the
  validation folder: torchvision ResNet-18 from random init (no pretrained weights exist here),
  flips + 90° rotations + colour jitter 0.15 + HED jitter 0.05, AdamW lr 1e-3 with cosine decay,
  batch 64, seed 0, bf16 autocast where the CPU or GPU runs it natively. The *last* epoch is kept
  (``keep="last"``): ``valid/`` picks only the threshold (Youden), so its AUC is a held-out figure.
  Resumes from ``WORK/pcam-tumour/train/last.pt``.
* ``evaluate``: ``tmln.tumour.model_evaluation.evaluate_pcam_model``: PCam valid AUC with a bootstrap
  CI, balanced accuracy at the card's threshold; the 89 Camelyon16 40x patches (other slides)
  resampled to 0.97 µm/px; the real CMU heart slide (no lymph node, no tumour) mapped by the
  streamed engine: fraction of tissue above the threshold. Written to ``WORK/evaluation.json``.
  Also the appearance statistics (``tmln.models.appearance``) of 4,000 training patches, and the
  appearance distance of held-out, blurred and greyscale data to them.
* ``bundle``: weights + card (the card amended with provenance, licence, intended use, the
  evaluation and the appearance statistics) into ``src/tmln/models/bundled/pcam-tumour/``.

Training time on 2 AVX-512-BF16 CPU cores (bf16): see the card's ``training.wall_seconds``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUNDLED = REPO / "src" / "tmln" / "models" / "bundled"
NAME = "pcam-tumour"

SETTINGS = dict(arch="resnet18", mpp=0.97, patch_size=96, epochs=22, batch_size=64, lr=1e-3, seed=0,
                colour=0.15, hed=0.05, keep="last", label_region="centre 32x32 px")


def train(shared: Path, work: Path, device: str, epochs: int) -> None:
    from tmln.train.tumour import train_tumour

    kw = dict(SETTINGS, epochs=epochs)
    t0 = time.time()
    card = train_tumour(work / NAME, patches=shared / "data/pcam/train", val_patches=shared / "data/pcam/valid",
                        device=device, **kw)
    print(f"trained {NAME} in {time.time() - t0:.0f} s: validation AUC {card.metrics.get('auc'):.4f}", flush=True)


def evaluate(shared: Path, work: Path, device: str, mosaic_side: int = 54) -> dict:
    """Held-out evidence for the card (fp32, so the figures are the same on every machine)."""
    import numpy as np

    from tmln.atomic import write_text
    from tmln.evaluate.auc import evaluate_scores, labels_from_folders
    from tmln.models.card import read_card
    from tmln.tumour.engine import tumour_map
    from tmln.tumour.predict_patches import predict_patches

    model = work / NAME
    card = read_card(model)
    thr = float(card.threshold)
    data = shared / "data"
    out: dict = {"threshold": thr, "precision": "float32"}

    # 1. PCam valid/ (slide-disjoint from train/; it chose only the threshold)
    valid = data / "pcam" / "valid"
    pv = predict_patches(model, valid, device=device)
    yv = labels_from_folders(pv["path"])
    out["pcam_valid"] = _summary(evaluate_scores(yv, pv["p_tumour"].to_numpy(), thr, n_boot=2000, seed=0))

    # 2. Camelyon16 40x patches of other slides, resampled 0.243 -> 0.97 um/px (64 px, reflect-padded to 96)
    cam = data / "camelyon16-patches"
    pc = predict_patches(model, cam, mpp=0.243, device=device)
    out["camelyon16_patches"] = _summary(evaluate_scores(labels_from_folders(pc["path"]), pc["p_tumour"].to_numpy(),
                                                         thr, n_boot=2000, seed=0))

    # 3. the streamed engine on real tissue: valid/ patches tiled into a mosaic slide (random order,
    #    seed 0), the map read at each patch centre, vs the same patches classified one by one (grid)
    rng = np.random.default_rng(0)
    n = mosaic_side * mosaic_side
    if n > len(pv):
        raise SystemExit(f"a {mosaic_side} x {mosaic_side} mosaic needs {n} patches; valid/ has {len(pv)}")
    pick = rng.permutation(len(pv))[:n]
    from tmln.imaging import read_image

    tiles = [read_image(valid / pv["path"].iloc[i]) for i in pick]
    side = mosaic_side * 96
    mosaic = np.zeros((side, side, 3), np.uint8)
    for t, img in enumerate(tiles):
        r, c = divmod(t, mosaic_side)
        mosaic[r * 96:(r + 1) * 96, c * 96:(c + 1) * 96] = img
    import tempfile

    import tifffile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pcam_valid_mosaic.tif"
        ppcm = 1e4 / card.mpp
        tifffile.imwrite(path, mosaic, photometric="rgb", tile=(256, 256), compression="zlib",
                         resolution=(ppcm, ppcm), resolutionunit="CENTIMETER", metadata=None)
        maps = {m: tumour_map(path, model, mask=None, device=device, method=m, precision="fp32",
                              grid_stride=96 if m == "grid" else None) for m in ("stream", "grid")}
    rc = np.arange(mosaic_side)
    stream = maps["stream"].array[np.ix_(3 * rc + 1, 3 * rc + 1)].ravel()
    grid = maps["grid"].array[np.ix_(rc, rc)].ravel()
    labels = yv[pick]
    single = pv["p_tumour"].to_numpy()[pick]
    out["engine_on_mosaic"] = {
        "n_patches": int(n), "mosaic_px": side, "method": maps["stream"].info["method"],
        "stream_map_at_patch_centres": _summary(evaluate_scores(labels, stream, thr, n_boot=2000, seed=0)),
        "grid_map": _summary(evaluate_scores(labels, grid, thr, n_boot=2000, seed=0)),
        "grid_vs_single_patch_max_abs_dp": float(np.abs(grid - single).max()),
        "stream_vs_grid_mean_abs_dp": float(np.abs(stream - grid).mean()),
        "stream_vs_grid_call_agreement": float(((stream >= thr) == (grid >= thr)).mean()),
        "stream_model_mpx": maps["stream"].info["model_mpx"],
    }

    # 4. a real slide without lymph node or tumour: CMU-1-Small-Region (heart), tissue mask
    cmu = data / "slides" / "CMU-1-Small-Region.svs"
    pm = tumour_map(cmu, model, mask="tissue", device=device, precision="fp32")
    vals = pm.array[~np.isnan(pm.array)]
    # the same grid of 31 µm cells, each the patch classifier on its own 96 px patch
    grid = tumour_map(cmu, model, mask="tissue", device=device, precision="fp32", method="grid", grid_stride=32)
    gvals = grid.array[~np.isnan(grid.array)]
    out["cmu_heart_slide"] = {
        "tissue_map_px": int(vals.size), "tissue_mm2": round(float(pm.info["roi_mm2"]), 4),
        "fraction_above_threshold": float((vals >= thr).mean()) if vals.size else None,
        "p_tumour_p99": float(np.quantile(vals, 0.99)) if vals.size else None,
        "method": pm.info["method"],
        "grid_fraction_above_threshold": float((gvals >= thr).mean()) if gvals.size else None,
    }
    # 5. appearance statistics of the training patches (stored in the card) and distances of held-out data
    stats, out["appearance_distance"] = appearance(data, card, model, pv, valid)
    write_text(work / "appearance.json", json.dumps(stats) + "\n")
    write_text(work / "evaluation.json", json.dumps(out, indent=2) + "\n")
    results = REPO / "benchmarks" / "results"
    write_text(results / "appearance.md", appearance_markdown(out["appearance_distance"], stats))
    print(json.dumps(out, indent=2), flush=True)
    return out


def _hardware(training: dict) -> str:
    import torch

    from tmln.train.common import hardware_description

    return hardware_description(torch.device(training.get("device", "cpu")))


def _cmd() -> str:
    return "OMP_NUM_THREADS=2 .venv/bin/python scripts/train_real_models.py --stage evaluate  (or make real-models)"


def _kept(card) -> str:
    """Which weights the card's model holds, in words (``metrics.kept``, e.g. the last epoch)."""
    kept = card.metrics.get("kept") or "last epoch"
    return kept if kept.startswith("mean") else f"{kept} kept"


def _architecture_words(card) -> str:
    """The network in words: ResNet-18 from random init, with D4-tied weights if it was trained so."""
    tied = card.training.get("weight_tying")
    return ("ResNet-18 with weights tied over 90° turns and flips (D4 group convolutions, `--equivariant`; shipped "
            "as the equivalent plain ResNet-18), random init" if tied else "ResNet-18 (random init)")


def evaluation_markdown(ev: dict, card) -> str:
    def row(name, m, note=""):
        lo, hi = m["auc_ci"]
        return (f"| {name} | {m['n']} ({m['n_positive']} / {m['n_negative']}) | **{m['auc']:.3f}** ({lo:.3f}-{hi:.3f}) | "
                f"{m['sensitivity']:.3f} | {m['specificity']:.3f} | {m['balanced_accuracy']:.3f} | {note} |")

    eng = ev["engine_on_mosaic"]
    cmu = ev["cmu_heart_slide"]
    tr = card.training
    lines = [
        "# pcam-tumour: the bundled real-tissue tumour classifier, on data it never saw", "",
        f"Command: `{_cmd()}`  ",
        f"Model: {_architecture_words(card)}, 96 px at 0.97 µm/px, trained on PCam train/ (20,000 patches) for "
        f"{tr.get('epochs')} epochs, {_kept(card)}; threshold {ev['threshold']:.3f} (Youden on PCam valid/); "
        f"training {tr.get('wall_seconds', 0) / 60:.0f} min on {tr.get('hardware') or _hardware(tr)} "
        f"({tr.get('amp') or 'float32'}; median epoch {tr.get('epoch_seconds_median', 0):.0f} s, other jobs shared "
        "the cores during some epochs). "
        "All figures below in float32; AUC 95 % CI by 2,000 bootstrap resamples, sensitivity/specificity at the card's threshold.", "",
        "| data (never seen in training) | n (tumour / normal) | AUC (95 % CI) | sensitivity | specificity | balanced accuracy | note |",
        "|---|---|---|---|---|---|---|",
        row("PCam valid/ (Camelyon16 slides disjoint from train/)", ev["pcam_valid"], "chose the threshold only"),
        row("Camelyon16 40x patches (DIDSR), resampled 0.243 → 0.97 µm/px", ev["camelyon16_patches"],
            "64 px of tissue, reflect-padded to 96"),
        row("streamed engine on a mosaic of PCam valid/ patches, map at patch centres",
            eng["stream_map_at_patch_centres"], f"{eng['n_patches']} patches, {eng['mosaic_px']} px square"),
        row("grid method on the same mosaic (patch by patch)", eng["grid_map"], "equals the patch classifier"),
        "",
        f"Engine vs patch classifier on the mosaic: grid map vs the patches classified one by one max |ΔP| "
        f"{eng['grid_vs_single_patch_max_abs_dp']:.1e}; streamed map vs grid mean |ΔP| {eng['stream_vs_grid_mean_abs_dp']:.3f}, "
        f"same call at the threshold for {eng['stream_vs_grid_call_agreement']:.1%} of patches. The streamed map is the "
        "classifier run fully convolutionally: each cell sees the real neighbouring tissue where the patch classifier saw "
        "zero padding, so the two differ by design (a mosaic's neighbours are unrelated patches; on a slide they are the "
        "same tissue).", "",
        f"Real slide without lymph node or tumour (CMU-1-Small-Region.svs, Aperio, heart, {cmu['tissue_mm2']:.2f} mm² of "
        f"tissue mapped, method {cmu['method']}): **{cmu['fraction_above_threshold']:.2%}** of the mapped tissue above the "
        f"threshold (the patch classifier patch by patch on the same 31 µm grid: "
        f"{cmu['grid_fraction_above_threshold']:.2%}); 99th percentile of P(tumour) {cmu['p_tumour_p99']:.3f}. "
        "Heart muscle is tissue the model never saw (its appearance distance is flagged, see appearance.md): "
        "`tmln analyze` maps tumour only inside lymph nodes, and notes slides out of the model's range.", "",
        "Reference points: Veeling et al. 2018 on the full PCam (262k training patches, PNG, test split): P4M-DenseNet AUC "
        "0.963, plain DenseNet ≈ 0.955. Here: 20k training patches, JPEG.", "",
    ]
    return "\n".join(lines) + "\n"


def appearance_markdown(dist: dict, stats: dict) -> str:
    from tmln.models.appearance import WARN_DISTANCE

    lines = ["# Appearance distance to pcam-tumour's training data", "",
             f"Command: `{_cmd()}`  ",
             f"Statistics: {stats['source']} at {stats['mpp']} µm/px (`tmln.models.appearance`, stored in the card); "
             f"training patches' own median Mahalanobis distance {stats['median_distance']:.2f}. Distance = the data's "
             f"median Mahalanobis distance / that median; flagged above {WARN_DISTANCE:g}.", "",
             "| data | patches | distance | flagged | farthest feature (z) |", "|---|---|---|---|---|"]
    for name, d in dist.items():
        lines.append(f"| {name} | {d['n_patches']} | {d['distance']:.2f} | {'yes' if d['out_of_range'] else 'no'} | "
                     f"{d['feature']} ({d['z']:+.2f}) |")
    return "\n".join(lines) + "\n"


def appearance(data: Path, card, model: Path, pv, valid: Path, n_train: int = 4000) -> tuple[dict, dict]:
    """``tmln.models.appearance`` statistics of ``n_train`` random PCam train/ patches (seed 0), and the
    appearance distance of held-out data to them (``benchmarks/results/appearance.md`` has the table)."""
    import cv2
    import numpy as np

    from tmln.models import appearance as A
    from tmln.slide import Slide
    from tmln.imaging import fit_to_patch, list_images, read_image, resample

    rng = np.random.default_rng(0)
    files = list_images(data / "pcam" / "train")
    pick = rng.choice(len(files), min(n_train, len(files)), replace=False)
    stats = A.training_statistics((read_image(files[i]) for i in pick), mpp=card.mpp,
                                  source=f"{len(pick)} random PCam train/ patches (seed 0)")
    held = [read_image(valid / p) for p in pv["path"].iloc[rng.choice(len(pv), 400, replace=False)]]
    cam = [fit_to_patch(resample(read_image(p), 0.243, card.mpp), card.patch_size)
           for p in list_images(data / "camelyon16-patches")]
    cases = {
        "PCam valid/ (400 patches)": held,
        "Camelyon16 40x patches resampled to 0.97 um/px (89)": cam,
        "CMU heart slide (64 tissue patches)": A.slide_patches(Slide(data / "slides" / "CMU-1-Small-Region.svs"),
                                                               card.mpp, card.patch_size, n=64, seed=0),
        "PCam valid/ blurred, Gaussian sigma 1 px": [cv2.GaussianBlur(x, (0, 0), 1) for x in held],
        "PCam valid/ blurred, Gaussian sigma 2 px": [cv2.GaussianBlur(x, (0, 0), 2) for x in held],
        "PCam valid/ in greyscale": [np.repeat(x.mean(axis=2, keepdims=True), 3, axis=2).astype(np.uint8) for x in held],
    }
    return stats, {k: A.distance(A.feature_table(v), stats) for k, v in cases.items()}


def _summary(m: dict) -> dict:
    keep = ("n", "n_positive", "n_negative", "auc", "auc_ci", "threshold", "sensitivity", "specificity",
            "balanced_accuracy", "accuracy", "sensitivity_ci95", "specificity_ci95")
    return {k: (round(v, 4) if isinstance(v, float) else [round(x, 4) for x in v] if isinstance(v, list) else v)
            for k, v in m.items() if k in keep}


INTENDED_USE = (
    "Research use only. NOT FOR DIAGNOSIS. Trained on H&E sentinel lymph nodes of breast-cancer patients "
    "(PCam subset of Camelyon16: Radboud UMC and UMC Utrecht, two scanners); NOT validated on gastric or other "
    "lymph nodes, other stains or other scanners. Check it on annotated slides of your own "
    "(tmln evaluate froc|maps) and fine-tune it on your outlines: "
    "tmln train tumour --init pcam-tumour --slides slides.csv --annotations outlines/ --model-mpp 0.97 --patch-size 96.")

PROVENANCE = {
    "dataset": "PatchCamelyon (PCam) subset: 10,000 tumour + 10,000 normal training patches (train/); "
               "1,500 + 1,500 slide-disjoint validation patches (valid/)",
    "origin": "Camelyon16 sentinel lymph-node WSIs of breast-cancer patients, H&E, Radboud UMC and UMC Utrecht, "
              "two scanners, 40x (0.243 um/px) downsampled 4x (~0.97 um/px)",
    "licence": "CC0 1.0",
    "citation": "Veeling et al., MICCAI 2018 (PCam); Ehteshami Bejnordi et al., JAMA 2017 (Camelyon16)",
    "label": "tumour = at least one tumour pixel in the centre 32 x 32 px (31 um) of the 96 px patch",
    "jpeg": "patches re-saved as JPEG (quality ~75) by the subset's publisher",
}

TESTED = {
    "tested_on": [
        "PCam valid/: 3,000 patches of other Camelyon16 slides than training (chose only the threshold)",
        "89 Camelyon16 40x patches of four training-set slides (DIDSR), resampled 0.243 -> 0.97 um/px",
        "the streamed whole-slide engine on a mosaic of PCam valid/ patches (vs the patches one by one)",
        "CMU-1-Small-Region.svs: real Aperio H&E heart tissue (no lymph node, no tumour), false-positive area",
    ],
    "not_tested_on": [
        "gastric-cancer lymph nodes (the use tmln is built for)",
        "whole lymph-node slides with outlined metastases (no licensed ones were available)",
        "other scanners, stains, fixation or section thickness than Camelyon16's two centres",
        "isolated tumour cells: PCam labels mark tumour in the centre 32 px, not single cells",
    ],
}


def _epoch_times(work: Path) -> dict:
    """Training time from the per-epoch log (a resumed run's own clock covers only its part)."""
    import csv
    import statistics

    rows = list(csv.DictReader((work / NAME / "train" / "log.csv").read_text(encoding="utf-8").splitlines()))
    secs = [float(r["seconds"]) for r in rows]
    return {"wall_seconds": round(sum(secs), 1), "epoch_seconds_median": round(statistics.median(secs), 1),
            "wall_seconds_note": "sum of the epochs' times in train/log.csv (training and validation; an "
                                 "interrupted run resumes from its last epoch); epochs slowed by other jobs "
                                 "on the same cores raise the sum above epochs x the median"}


def release_card(card, evaluation: dict, appearance_stats: dict, work: Path):
    """The trained card amended for release: name, intended use, provenance, held-out evidence."""
    card.intended_use = INTENDED_USE
    card.params = {**card.params, "name": NAME}
    training = dict(card.training)
    data = dict(training.get("data", {}))
    for part in ("train", "validation"):
        if isinstance(data.get(part), dict):
            data[part] = {k: v for k, v in data[part].items() if k != "groups"}
    data["notes"] = data.get("notes", [])
    training["data"] = {**data, **PROVENANCE}
    training["command"] = "make real-models  (scripts/train_real_models.py, seed 0)"
    training.update(_epoch_times(work))
    training.setdefault("hardware", _hardware(training))  # cards from before tmln recorded it: this machine
    training["appearance"] = appearance_stats
    card.training = training
    card.metrics = {**card.metrics, "held_out": evaluation, **TESTED}
    return card


def bundle(work: Path) -> Path:
    from tmln.models.card import read_card

    src = work / NAME
    card = release_card(read_card(src), json.loads((work / "evaluation.json").read_text()),
                        json.loads((work / "appearance.json").read_text()), work)
    dest = BUNDLED / NAME
    tmp = BUNDLED / f".{NAME}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shutil.copy2(src / "model.safetensors", tmp / "model.safetensors")
    (tmp / "model_card.json").write_text(json.dumps(card.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)
    from tmln.atomic import write_text

    write_text(REPO / "benchmarks" / "results" / "pcam_tumour.md",
               evaluation_markdown(card.metrics["held_out"], card))
    print(f"bundled {dest} ({(dest / 'model.safetensors').stat().st_size / 2**20:.1f} MiB)", flush=True)
    return dest


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    ap.add_argument("--work", type=Path, default=REPO / "build" / "real-models")
    ap.add_argument("--stage", default="train,evaluate,bundle")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--epochs", type=int, default=SETTINGS["epochs"])
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not (args.shared / "data" / "pcam" / "train").is_dir():
        print(f"{args.shared / 'data/pcam/train'}: not found (give --shared)", file=sys.stderr)
        return 2
    stages = [s.strip() for s in args.stage.split(",") if s.strip()]
    if "train" in stages:
        train(args.shared, args.work, args.device, args.epochs)
    if "evaluate" in stages:
        evaluate(args.shared, args.work, args.device)
    if "bundle" in stages:
        bundle(args.work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
