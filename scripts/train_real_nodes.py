"""Build the bundled node model ``pcam-nodes``: a U-Net trained on phantoms that look like real tissue.

    make real-models                     # pcam-tumour, then this script
    OMP_NUM_THREADS=2 .venv/bin/python scripts/train_real_nodes.py [--shared ../shared] [--work build/real-nodes]
    .venv/bin/python scripts/train_real_nodes.py --stage evaluate,bundle   # after training
    ... --model-mpp 8 --work build/real-nodes-8um     # the same recipe at 8 µm/px (the model bundled before 2026-12-07)

No real lymph-node outlines with a licence exist in this project, so the node finder cannot be
trained on real outlines. What it is trained on instead (issue 15):

* phantom slides whose tissue is quilted from **real** lymph-node H&E patches (PCam ``train/``,
  CC0; ``tmln.phantom.real_texture``), 8 x 6 mm at 2 µm/px, each with one stain, with what real
  node slides hold beside the nodes (``tmln.phantom.non_node``): fibrous septa, vessels and islands of
  connective tissue in the perinodal fat, a hilum, nodes partly replaced by fat, a fragment of
  carcinoma or muscle, pen marks; a quarter of the slides are sections with no node at all (carcinoma, muscle,
  fibro-fatty tissue, a layered gastric wall);
* procedural phantoms with the same non-node tissue (8 of the 56 slides), so the demo's look stays known;
* colour and HED stain jitter on top of the slides' own stain variety; the encoder starts from ``demo-nodes``;
* stage 2 (``finetune``) goes on at a lower learning rate with 40 % of its crops on tissue outside nodes;
* stage 3 (``context``) adds 24 slides of which 22 are node-free sections (``SECTION_COHORTS``: 15
  real-textured, 7 procedural, every kind in turn) and reads 2 mm crops (512 px at 4 µm/px, where stages
  1-2 read 1 mm): 35 % centred on tissue outside nodes, 30 % on tumour inside nodes (a node replaced by
  carcinoma is still a node; carcinoma outside nodes is not, and at 4 µm/px the capsule and the context
  tell them apart, not the texture);
* two instance rules in the card, chosen on validation phantoms of other seeds (``rules``): a smallest
  node area (mm²) and a smallest mean node probability per instance.

``--edge-check`` (an experiment, not in the bundled model: benchmarks/results/pcam_nodes_experiments.md) adds a
node-edge check (``tmln.nodes.edges``): a ResNet-18 patch classifier at 2 µm/px trained on 96 px patches centred on
the training slides' node outlines against outlines of the non-node tissue of their layouts (carcinoma,
connective-tissue islands, septa, vessels, muscle) — a node has a capsule, a carcinoma nodule in the fat does not —
and a third rule, a smallest mean edge score per instance, chosen with the others on two validation draws.

Stages (``--stage``, default all): ``data`` (write the cohorts), ``train`` (stage 1), ``finetune`` (stage 2),
``context`` (stage 3), ``edges`` (``--edge-check`` only: edge patches → ``WORK/edge-patches``, the node-edge
classifier → ``WORK/pcam-node-edges``), ``rules`` (the card's ``min_node_area_mm2`` and ``min_node_probability``, with
``--edge-check`` also ``min_edge_score``, from ``RULE_GRID``, chosen on validation slides of seeds 3200+ (and 3400+
with ``--edge-check``): textured from PCam ``train/``, procedural with and without perinodal tissue, node-free
sections; never the test seeds; → ``WORK/rules.json``), ``evaluate`` (phantoms of
unseen seeds textured from PCam ``valid/`` — other slides than the training textures — and procedural
phantoms; sections without nodes; the real CMU heart slide; → ``WORK/evaluation.json``), ``bundle``
(weights + amended card into ``src/tmln/models/bundled/pcam-nodes/``, and ``pcam-node-edges/`` with ``--edge-check``; writes
``benchmarks/results/pcam_nodes.md``).
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
BUNDLED = REPO / "src" / "tmln" / "models" / "bundled"
RESULTS = REPO / "benchmarks" / "results"
NAME = "pcam-nodes"
SLIDE_MPP = 2.0  # phantom level 0; the bundled model reads 4 µm/px
SIZE_MM = (8.0, 6.0)
# (folder, patients, seed, textured from PCam, non-node fraction, slide-id prefix)
TRAIN_COHORTS = (("real", 24, 3000, True, 0.25, "R"), ("procedural", 8, 3001, False, 0.25, "P"),
                 ("second-real", 24, 3002, True, 0.25, "S"))
# stage 3 adds cohorts that are nearly all node-free sections (the first slide of a cohort always holds nodes):
# 15 real-textured and 7 procedural sections of every kind, so that tissue without nodes outweighs the nodes' look-alikes
SECTION_COHORTS = (("sections", 16, 3003, True, 15 / 16, "N"), ("procedural-sections", 8, 3004, False, 7 / 8, "Q"))
TEST_SEED = 3100
# validation slides for the post-processing rules (``rules`` stage): seeds 3200+, textures from PCam train/
# (as in training; the test textures, valid/, stay unseen), never the test seeds
VAL_SEED = 3200
VAL_SECTIONS_PER_KIND = 2  # node-free validation sections per kind and texture
SECTION_KINDS = ("carcinoma", "muscle", "fibrofatty", "stomach")
# wider than demo-nodes' 48-32-16-8-8: real textures at 8 µm/px need more than the phantom's flat colours
# (with the demo's decoder, 10 epochs reached validation instance F1 0.76 at best); the encoder starts from demo-nodes
NODE_DECODER = (64, 48, 32, 24, 16)
SETTINGS = dict(epochs=24, samples_per_epoch=512, lr=1e-3, batch_size=8, crop_size=128, tile_size=256, seed=0,
                augment={"colour": 0.1, "hed": 0.05}, non_node_crops=0.3)
# training resumes exactly (crops and augmentation are functions of seed and epoch), so a stage may run in
# several sittings; SCHEDULE_NOTE is how the bundled weights were trained (the 8 µm/px model before them: stage 1
# in three sittings on 2 shared AMD cores in float32, stage 3 ~35 s an epoch)
SCHEDULE_NOTE = ("each stage in one sitting at 4 µm/px with bf16 autocast on 2 Sapphire Rapids cores (AMX): stage 1 "
                 "24 epochs on the 56 slides of slides.csv (~80 s an epoch), stage 2 12 epochs on them (~80 s), stage 3 "
                 "16 epochs on the 80 slides of slides-ft.csv (~130 s); best validation epoch of each stage kept")
# stage 2 (``finetune``): from the stage-1 model, into WORK/<NAME>-ft, on the stage-1 slides
STAGE2 = f"{NAME}-ft"
FINETUNE = dict(epochs=12, lr=3e-4, non_node_crops=0.4)
# stage 3 (``context``): from the stage-2 model, into WORK/<NAME>-ctx (which rules, evaluate and bundle use), on
# slides-ft.csv: 2 mm crops, hard negatives and crops on metastases inside nodes (their tumour outlines lie beside
# the node outlines). Tried before this: 1 mm crops with half on non-node tissue (branch issue15: sections 2 false
# nodes, but nodes replaced by carcinoma lost), 2 mm crops without metastasis crops (1 false node on CMU)
FINAL = f"{NAME}-ctx"
CONTEXT = dict(epochs=16, lr=3e-4, non_node_crops=0.35, metastasis_crops=0.3, crop_size=256, samples_per_epoch=256)
# the stage-3 model's inference tile and overlap (px at 8 µm/px), set in its card by the rules stage: 4 mm tiles. With
# 2 mm tiles (its training crops) the inside of a node larger than a tile, no capsule in view, reads as a carcinoma
# mass (a tile-shaped hole in the node probability of a 12 mm² node, which the probability rule then dropped)
INFER_TILE = (512, 128)
# the model's µm/px (``--model-mpp``): 4 for the bundled model. Every size above in px is given at 8 µm/px and
# scaled by 8 / MODEL_MPP (``_px``), so a finer model sees the same millimetres in more pixels. At 8 µm/px (the
# model bundled until 2026-12-07, same recipe) a nucleus is one pixel and a capsule two: carcinoma nodules in
# perinodal fat were called nodes and carcinoma inside nodes missed (benchmarks/results/pcam_nodes_experiments.md)
MODEL_MPP = 4.0


# the node-edge check (``tmln.nodes.edges``, stage ``edges``): a patch classifier at 2 µm/px (the phantoms' level 0)
# on 96 px patches (192 µm) centred on outline points every 100 µm: node outlines (capsule between node and fat)
# against outlines of the non-node tissue the phantom layouts hold (carcinoma fragments and sections, connective-tissue
# islands, septa, vessels, muscle); trained on the training cohorts' slides, its threshold chosen with the rules
EDGE_MODEL = "pcam-node-edges"
EDGE = dict(mpp=2.0, patch_size=96, per_class=160, epochs=6, arch="resnet18")
# the second validation draw (rules stage): 36 validation slides cannot choose an edge threshold (every threshold
# 0-0.3 ties with no check at all), so 24 more real-textured and 8 procedural perinodal node slides are drawn
VAL2_SEED = 3400


def _px(n: int) -> int:
    """``n`` px at 8 µm/px in px at ``MODEL_MPP`` (the same field of view in mm)."""
    return int(round(n * 8.0 / MODEL_MPP))

INTENDED_USE = (
    "Research use: finds lymph-node outlines on H&E slides at 4 µm/px. Trained on phantom slides whose tissue "
    "is quilted from real breast-cancer sentinel lymph-node patches (PCam, CC0) with perinodal non-node tissue "
    "and node-free sections; it has never seen a real node outline and is NOT validated on real gastric "
    "lymph-node slides: check its counts against a pathologist's on your own slides before trusting them, and "
    "fine-tune it on your own outlines (tmln train nodes --init pcam-nodes). NOT FOR DIAGNOSIS."
)


EDGE_INTENDED_USE = (
    "Research use: the node-edge check of pcam-nodes (tmln.nodes.edges). Scores 96 px patches at 2 µm/px centred on a "
    "candidate node's outline: 1 = the edge of a lymph node (capsule between node and fat), 0 = the edge of other "
    "tissue (carcinoma, connective tissue, septa, vessels, muscle). Trained on phantom slides quilted from real "
    "PCam patches (CC0) with the phantom layouts' outlines; it has never seen a real node outline and is NOT validated "
    "on real gastric lymph-node slides. NOT FOR DIAGNOSIS."
)


def make_data(shared: Path, work: Path) -> Path:
    """Training cohorts hard-linked into one folder (ids prefixed by the cohort's letter); cohorts already
    there are kept, new ones added. Slide tables: ``slides.csv`` (stage 1: ``TRAIN_COHORTS``) and
    ``slides-ft.csv`` (stage 3: those and ``SECTION_COHORTS``)."""
    import pandas as pd

    from tmln.phantom import make_cohort

    train = work / "train"
    rows, first = [], []
    for name, patients, seed, real, non_node, prefix in TRAIN_COHORTS + SECTION_COHORTS:
        d = work / "cohorts" / name
        if not (d / "slides.csv").is_file():
            t = time.time()
            make_cohort(d, patients=patients, seed=seed, size_mm=SIZE_MM, mpp=SLIDE_MPP, perinodal=True,
                        non_node_fraction=non_node, negative_fraction=0.3,
                        textures=(shared / "data/pcam/train") if real else None, pen_marks=real)
            print(f"cohort {name}: {patients} slides in {time.time() - t:.0f} s", flush=True)
        for r in pd.read_csv(d / "slides.csv").itertuples():
            stem = Path(r.slide_path).stem
            new = f"{prefix}_{stem}"
            for suffix in (".tiff", ".nodes.geojson", ".tumour.geojson"):
                link = train / f"{new}{suffix}"
                link.parent.mkdir(parents=True, exist_ok=True)
                if not link.exists():  # a hard link: a symlink would resolve to the original file name (the slide id)
                    os.link(d / f"{stem}{suffix}", link)
            rows.append({"slide_path": f"{new}.tiff", "patient_id": f"{prefix}_{r.patient_id}"})
        if (name, patients, seed, real, non_node, prefix) in TRAIN_COHORTS:
            first = list(rows)
    for table, part in (("slides.csv", first), ("slides-ft.csv", rows)):
        tmp = train / f"{table}.tmp"
        pd.DataFrame(part).to_csv(tmp, index=False)
        os.replace(tmp, train / table)  # a new file: never rewrite a hard-linked one in place
    return train


def _node_cohorts(out: dict[str, Path], seed: int, textures: Path) -> None:
    """The node cohorts of a test or validation set, where not yet written: ``out["real"]``, 8 perinodal phantoms
    textured from ``textures`` (``seed``), and ``out["procedural"]``, 6 procedural phantoms (``seed + 1``)."""
    from tmln.phantom import make_cohort

    if not (out["real"] / "slides.csv").is_file():
        make_cohort(out["real"], patients=8, seed=seed, size_mm=SIZE_MM, mpp=SLIDE_MPP, perinodal=True,
                    negative_fraction=0.3, textures=textures)
    if not (out["procedural"] / "slides.csv").is_file():
        make_cohort(out["procedural"], patients=6, seed=seed + 1, size_mm=SIZE_MM, mpp=SLIDE_MPP)


def make_tests(shared: Path, work: Path) -> dict[str, Path]:
    """Test slides of unseen seeds: textured from PCam valid/ (other slides than training)."""
    from tmln.phantom import make_slide
    from tmln.phantom.geometry import SlideSpec

    valid = shared / "data/pcam/valid"
    out = {"real": work / "test" / "real", "procedural": work / "test" / "procedural",
           "sections": work / "test" / "sections"}
    _node_cohorts(out, TEST_SEED, valid)
    if not (out["sections"] / "done").is_file():
        out["sections"].mkdir(parents=True, exist_ok=True)
        for i, kind in enumerate(SECTION_KINDS * 2):
            textures = valid if i < len(SECTION_KINDS) else None
            make_slide(out["sections"] / f"{kind}_{'real' if textures else 'procedural'}.tiff",
                       SlideSpec(seed=TEST_SEED + 10 + i, size_mm=SIZE_MM, mpp=SLIDE_MPP, section=kind,
                                 pen_marks=i % 2 == 0, textures=None if textures is None else str(textures)))
        (out["sections"] / "done").write_text("")
    return out


def make_validation(shared: Path, work: Path, second: bool = True) -> dict[str, Path]:
    """Validation slides (seeds ``VAL_SEED``+ and ``VAL2_SEED``+, PCam train/ textures) on which post-processing rules
    are chosen: like the tests, with perinodal tissue on the real-textured ones, procedural slides with and without
    perinodal tissue, ``VAL_SECTIONS_PER_KIND`` node-free sections per kind and texture, and a second draw of 24
    real-textured and 8 procedural perinodal node slides (``second``; its seeds do not move with ``VAL_SEED``, so a
    caller drawing other slides with this function's recipe leaves it out)."""
    from tmln.phantom import make_cohort, make_slide
    from tmln.phantom.geometry import SlideSpec

    tex = shared / "data/pcam/train"
    out = {"real": work / "val" / "real", "procedural": work / "val" / "procedural",
           "procedural-perinodal": work / "val" / "procedural-perinodal", "sections": work / "val" / "sections"}
    if not (out["procedural-perinodal"] / "slides.csv").is_file():  # procedural nodes among septa, vessels, islands
        make_cohort(out["procedural-perinodal"], patients=6, seed=VAL_SEED + 2, size_mm=SIZE_MM, mpp=SLIDE_MPP,
                    perinodal=True, negative_fraction=0.3)
    _node_cohorts(out, VAL_SEED, tex)
    if second:  # more node slides with the look-alikes an edge threshold has to tell apart
        out["procedural-perinodal-2"], out["real-2"] = work / "val" / "procedural-perinodal-2", work / "val" / "real-2"
        if not (out["procedural-perinodal-2"] / "slides.csv").is_file():
            make_cohort(out["procedural-perinodal-2"], patients=8, seed=VAL2_SEED + 2, size_mm=SIZE_MM, mpp=SLIDE_MPP,
                        perinodal=True, negative_fraction=0.3)
        if not (out["real-2"] / "slides.csv").is_file():
            make_cohort(out["real-2"], patients=24, seed=VAL2_SEED, size_mm=SIZE_MM, mpp=SLIDE_MPP, perinodal=True,
                        negative_fraction=0.3, textures=tex)
    if not (out["sections"] / "done").is_file():
        out["sections"].mkdir(parents=True, exist_ok=True)
        i = 0
        for rep in range(VAL_SECTIONS_PER_KIND):
            for real in (True, False):
                for kind in SECTION_KINDS:
                    make_slide(out["sections"] / f"{kind}_{'real' if real else 'procedural'}_{rep}.tiff",
                               SlideSpec(seed=VAL_SEED + 10 + i, size_mm=SIZE_MM, mpp=SLIDE_MPP, section=kind,
                                         pen_marks=i % 2 == 0, textures=str(tex) if real else None))
                    i += 1
        (out["sections"] / "done").write_text("")
    return out


def _train(train_dir: Path, out: Path, device: str, init: str, epochs: int, lr: float, non_node_crops: float,
           table: str = "slides.csv", metastasis_crops: float = 0.0, crop_size: int | None = None,
           samples_per_epoch: int | None = None):
    """One training stage into ``out`` (resumes there) on the slides of ``train_dir / table``; crop size
    and crops per epoch default to those of ``SETTINGS``."""
    from tmln.train.nodes import train_nodes

    t = time.time()
    card = train_nodes(out, slides=train_dir / table, annotations=train_dir, epochs=epochs, lr=lr, mpp=MODEL_MPP,
                       tile_size=_px(SETTINGS["tile_size"]), crop_size=_px(crop_size or SETTINGS["crop_size"]),
                       encoder="tu-mobilenetv3_small_100", decoder_channels=list(NODE_DECODER),
                       batch_size=SETTINGS["batch_size"], samples_per_epoch=samples_per_epoch or SETTINGS["samples_per_epoch"],
                       seed=SETTINGS["seed"], device=device, params={"neck_ratio": 0.85}, augment=SETTINGS["augment"],
                       init=init, non_node_crops=non_node_crops, metastasis_crops=metastasis_crops,
                       resume=True, quiet=False)
    print(f"{out.name} trained in {(time.time() - t) / 60:.1f} min; validation "
          f"{json.dumps(card.metrics.get('validation'))}", flush=True)
    return card


def train(train_dir: Path, work: Path, device: str, epochs: int):
    """Stage 1: the encoder from demo-nodes, the settings of ``SETTINGS``."""
    return _train(train_dir, work / NAME, device, "demo-nodes", epochs, SETTINGS["lr"], SETTINGS["non_node_crops"])


def finetune(train_dir: Path, work: Path, device: str):
    """Stage 2: from the stage-1 model, a lower learning rate and more crops on non-node tissue."""
    return _train(train_dir, work / STAGE2, device, str(work / NAME), **FINETUNE)


def context(train_dir: Path, work: Path, device: str):
    """Stage 3: from the stage-2 model, on the slides of all cohorts (``slides-ft.csv``), ``CONTEXT``."""
    return _train(train_dir, work / FINAL, device, str(work / STAGE2), table="slides-ft.csv", **CONTEXT)


def edge_sources(shared: Path, work: Path) -> list:
    """The training cohorts' slides with their truth outlines, node and non-node (``tmln.train.node_edges.EdgeSource``):
    each slide's layout rebuilt from its cohort's options (``tmln.phantom.cohort_specs``), checked against the
    node outlines written beside the slide."""
    from tmln.annotations import read_annotations
    from tmln.phantom import cohort_specs, make_layout
    from tmln.train.node_edges import EdgeSource

    out = []
    for name, patients, seed, real, non_node, prefix in TRAIN_COHORTS + SECTION_COHORTS:
        d = work / "cohorts" / name
        for _, sid, spec in cohort_specs(patients=patients, seed=seed, size_mm=SIZE_MM, mpp=SLIDE_MPP,
                                         negative_fraction=0.3, perinodal=True, non_node_fraction=non_node,
                                         textures=(shared / "data/pcam/train") if real else None, pen_marks=real):
            lay = make_layout(spec)
            written = len(read_annotations(d / f"{sid}.nodes.geojson"))
            if written != len(lay.nodes):
                raise SystemExit(f"{d / sid}: {written} node outlines written, the rebuilt layout has {len(lay.nodes)}: "
                                 "the cohort was written with other options or another tmln")
            out.append(EdgeSource(d / f"{sid}.tiff", f"{prefix}_{sid}", lay.nodes, lay.other))
    return out


def edges(shared: Path, work: Path, device: str):
    """Stage ``edges``: edge patches from the training cohorts (``WORK/edge-patches``, written once) and the node-edge
    classifier trained on them into ``WORK/EDGE_MODEL`` (``tmln.train.node_edges``)."""
    from tmln.train.node_edges import edge_patches, train_node_edges

    patches = work / "edge-patches"
    if not (patches / "groups.csv").is_file():
        edge_patches(patches, edge_sources(shared, work), mpp=EDGE["mpp"], patch_size=EDGE["patch_size"],
                     per_class=EDGE["per_class"], seed=SETTINGS["seed"])
    t = time.time()
    card = train_node_edges(work / EDGE_MODEL, patches, epochs=EDGE["epochs"], arch=EDGE["arch"], device=device,
                            seed=SETTINGS["seed"], quiet=False, data_note=(
                                "edge patches of the training cohorts (slides-ft.csv: PCam train/ textured and "
                                "procedural phantoms, node-free sections): node outlines against outlines of "
                                "carcinoma, connective tissue, septa, vessels and muscle from the phantom layouts"))
    print(f"{EDGE_MODEL} trained in {(time.time() - t) / 60:.1f} min; validation {json.dumps(card.metrics)}", flush=True)
    return card


# instance rules (``tmln.nodes.instances``, ``tmln.nodes.edges``) chosen on the validation slides (``rules`` stage),
# written into the card: the triple with the fewest instance errors (false + missed nodes, IoU >= 0.5) over all
# validation slides; among ties the smallest edge threshold, then the smallest probability, then the smallest area
# (the mildest rule); the test slides play no part
RULE_GRID = {"min_node_area_mm2": (0.05, 0.1, 0.15, 0.2, 0.25, 0.3),
             "min_node_probability": (0.0, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9),
             "min_edge_score": (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6)}
VAL_NODE_SETS = ("real", "procedural", "procedural-perinodal", "real-2", "procedural-perinodal-2")


def choose_rules(shared: Path, work: Path, edge_check: bool = False) -> dict:
    """Stage ``rules``: the card's ``min_node_area_mm2`` (mm²), ``min_node_probability`` (mean node probability of an
    instance, 0-1) and ``min_edge_score`` (mean node-edge probability along its outline, 0-1; the edge model
    ``WORK/EDGE_MODEL``) from ``RULE_GRID``, chosen on ``make_validation``'s slides with the stage-3 model read with
    ``INFER_TILE`` tiles; writes them (and the tile and the edge model) into its card and ``WORK/rules.json`` (every
    triple's errors). Without ``edge_check`` (the bundled model) only the first two, on the first validation draw."""
    import itertools

    import numpy as np

    from tmln.atomic import write_json
    from tmln.evaluate.nodes import evaluate_slide
    from tmln.models.card import read_card
    from tmln.nodes.edges import EdgeChecker
    from tmln.nodes.infer import NodeSegmenter
    from tmln.nodes.instances import InstanceParams, instances_from_mask
    from tmln.nodes.regions import labels_to_polygons
    from tmln.slide import Slide

    val = make_validation(shared, work, second=edge_check)
    grid = RULE_GRID if edge_check else {k: v for k, v in RULE_GRID.items() if k != "min_edge_score"}
    node_sets = VAL_NODE_SETS if edge_check else VAL_NODE_SETS[:3]
    card = read_card(work / FINAL)
    card.patch_size = _px(INFER_TILE[0])
    card.params = {**card.params, "overlap": _px(INFER_TILE[1])}
    if edge_check:
        card.params["edge_model"] = f"../{EDGE_MODEL}"
    write_json(work / FINAL / "model_card.json", card.to_dict())
    seg = NodeSegmenter(work / FINAL, params={"min_edge_score": 0.0})  # the rules are applied here, not in the segmenter
    edge = EdgeChecker(work / EDGE_MODEL) if edge_check else None
    slides = [(p, k) for k in (*node_sets, "sections") for p in cohort_slides(val[k])]
    maps = []
    for path, kind in slides:
        with Slide(path) as s:
            prob, _ = seg.slide_probabilities(s)
        maps.append((path, kind, prob, [] if kind == "sections" else node_truth(path)))
    core = seg.card.classes.index("node_core") if "node_core" in seg.card.classes else None
    scored: dict = {}  # (slide, polygon WKB) -> edge score: the same instance under several area rules is read once
    table = []
    for area in grid["min_node_area_mm2"]:
        params = InstanceParams.from_dict({**seg.card.params, "min_node_area_mm2": area, "min_node_probability": 0.0})
        cands = []  # per slide: (polygon, mean node probability, edge score)
        for path, kind, prob, truth in maps:
            called = prob[0] >= seg.card.threshold
            lab = instances_from_mask(called, seg.mpp, core=None if core is None else prob[core], params=params)
            polys = labels_to_polygons(lab, seg.mpp, (SLIDE_MPP, SLIDE_MPP))
            ids = np.unique(lab[lab > 0])
            new = [q for q in polys if (path, q.wkb) not in scored]
            if edge is None:
                scored.update({(path, q.wkb): None for q in new})
            elif new:
                with Slide(path) as s:
                    scored.update({(path, q.wkb): v for q, v in zip(new, edge.scores(s, new))})
            cands.append([(q, float(prob[0][(lab == i) & called].mean()), scored[(path, q.wkb)]) for q, i in zip(polys, ids)])
        matched: dict = {}  # (slide, kept instances) -> (false, missed): most rules keep the same instances
        for pmin, emin in itertools.product(grid["min_node_probability"], grid.get("min_edge_score", (0.0,))):
            err = {k: [0, 0] for k in (*node_sets, "sections")}
            for j, (cs, (_, kind, _, truth)) in enumerate(zip(cands, maps)):
                kept = tuple(i for i, (_, m, e) in enumerate(cs) if m >= pmin and (e is None or e >= emin))
                if (j, kept) not in matched:
                    m = evaluate_slide(truth, [cs[i][0] for i in kept])
                    matched[(j, kept)] = (m["fp"], m["fn"])
                err[kind][0] += matched[(j, kept)][0]
                err[kind][1] += matched[(j, kept)][1]
            table.append({"min_node_area_mm2": area, "min_node_probability": pmin,
                          **({"min_edge_score": emin} if edge_check else {}),
                          "errors": int(sum(a + b for a, b in err.values())),
                          **{f"{k}_false_missed": v for k, v in err.items()}})
    best = min(table, key=lambda r: (r["errors"], r.get("min_edge_score", 0.0), r["min_node_probability"],
                                     r["min_node_area_mm2"]))
    chosen = {k: best[k] for k in grid}
    card.params = {**card.params, **chosen}
    n_nodes = sum(k != "sections" for _, k, _, _ in maps)
    card.metrics = {**card.metrics, "rules_chosen_on": {
        "slides": f"{len(maps)} validation phantoms of seeds {VAL_SEED}+{f' and {VAL2_SEED}+' if edge_check else ''} "
                  f"(PCam train/ textures): {n_nodes} with nodes, {len(maps) - n_nodes} node-free sections",
        "criterion": "fewest false + missed nodes (IoU >= 0.5) over the validation slides; mildest among ties"
                     + (" (the smallest edge threshold, then probability, then area)" if edge_check else ""),
        "grid": {k: list(v) for k, v in grid.items()}, "chosen": best}}
    write_json(work / FINAL / "model_card.json", card.to_dict())
    write_json(work / "rules.json", {"chosen": best, "table": table})
    print(f"rules chosen on validation: {json.dumps(best)}", flush=True)
    return best


def cohort_slides(folder: Path) -> list[Path]:
    """The slides of a cohort folder: those of its ``slides.csv``, or (node-free sections) every .tiff in it."""
    import pandas as pd

    if (folder / "slides.csv").is_file():
        return [folder / s for s in pd.read_csv(folder / "slides.csv")["slide_path"]]
    return sorted(folder.glob("*.tiff"))


def node_truth(slide: Path) -> list:
    """A phantom's true node outlines (level-0 px), from the annotation beside it."""
    from tmln.evaluate.nodes import load_truth

    return load_truth(slide.parent, slide.stem).polygons


def _score(model, slides: list[Path], truth_of) -> dict:
    """Pooled Dice and instance precision/recall (IoU >= 0.5) of ``model`` over slides, and per slide."""
    from tmln.evaluate.nodes import evaluate_slide, pooled
    from tmln.nodes import regions_from_model

    results = [evaluate_slide(truth_of(p), regions_from_model(p, model), mpp=(SLIDE_MPP, SLIDE_MPP)) for p in slides]
    per = [{"slide": p.name, "n_truth": m["n_truth"], "n_pred": m["n_pred"], "tp": m["tp"], "dice": round(m["dice"], 4),
            "pred_area_mm2": round(m["pred_area_mm2"] or 0.0, 3)} for p, m in zip(slides, results)]
    return {**pooled(results), "slides": len(slides), "per_slide": per}


def evaluate(shared: Path, work: Path, models=(NAME, STAGE2, "demo-nodes")) -> dict:
    """Stage ``evaluate``: each model on the test slides (``NAME``: the stage-3 model, ``STAGE2``: the stage-2 one,
    the earlier bundled pcam-nodes; other names: bundled models) → ``WORK/evaluation.json``."""
    from tmln.nodes import regions_from_model
    from tmln.slide import Slide

    tests = make_tests(shared, work)
    # models not evaluated this time keep their earlier results (the same test slides)
    ev = json.loads((work / "evaluation.json").read_text()) if (work / "evaluation.json").is_file() else {}
    for model in models:
        m = {NAME: str(work / FINAL), STAGE2: str(work / STAGE2)}.get(model, model)
        res = {}
        for kind in ("real", "procedural"):
            res[kind] = _score(m, cohort_slides(tests[kind]), node_truth)
        res["sections"] = _score(m, cohort_slides(tests["sections"]), lambda p: [])
        cmu = shared / "data/slides/CMU-1-Small-Region.svs"
        if cmu.is_file():
            with Slide(cmu) as s:
                polys = regions_from_model(s, m)
                area = sum(p.area for p in polys) * s.mpp_x * s.mpp_y / 1e6
            res["cmu"] = {"n_pred": len(polys), "pred_area_mm2": round(area, 4)}
        ev[model] = res
        print(model, json.dumps({k: {kk: vv for kk, vv in v.items() if kk != "per_slide"} for k, v in res.items()}),
              flush=True)
    tmp = work / "evaluation.json.tmp"
    tmp.write_text(json.dumps({k: ev[k] for k in sorted(ev, key=lambda k: k != NAME)}, indent=1))
    os.replace(tmp, work / "evaluation.json")
    return ev


def _stage_seconds(work: Path) -> dict[str, float | None]:
    """Seconds of all epochs of each stage, from its training log (resumed sittings included). A stage whose model
    came without its log (trained in an earlier session) counts its card's ``training.wall_seconds``, which covers
    it and the stages before it: the key then names them all ("1-2")."""
    import pandas as pd

    from tmln.models.card import read_card

    out: dict[str, float | None] = {}
    for stage, d in (("1", NAME), ("2", STAGE2), ("3", FINAL)):
        log = work / d / "train" / "train_log.csv"
        if log.is_file():
            out[stage] = round(float(pd.read_csv(log)["seconds"].sum()), 1)
        elif (work / d / "model_card.json").is_file():
            out = {f"1-{stage}": read_card(work / d).training.get("wall_seconds")}
        else:
            out[stage] = None
    return out


def bundle(shared: Path, work: Path) -> Path:
    from tmln.models.card import load_state_dict, read_card, save_model_dir
    from tmln.train.node_data import load_node_slides
    from tmln.train.nodes import appearance_of_slides

    card = read_card(work / FINAL)
    ev = json.loads((work / "evaluation.json").read_text())
    training = dict(card.training)
    for k in ("slides_table", "annotations"):
        training.pop(k, None)
    training["init_checkpoint"] = ("stage 2 of this recipe (stage 1: 24 epochs on slides.csv, encoder from demo-nodes; "
                                   "stage 2: 12 epochs from stage 1)")
    # appearance statistics sampled as analyze samples a slide (tissue mask), all training slides
    items = load_node_slides(work / "train" / "slides-ft.csv", work / "train", mpp=float(card.mpp), border_um=None)
    training["appearance"] = appearance_of_slides(items, float(card.mpp), seed=SETTINGS["seed"])
    training.update({
        "data": "phantom slides (tmln.phantom) textured from real H&E patches: PCam train/ (CC0; breast-cancer "
                "sentinel lymph nodes, Radboud UMC and UMC Utrecht, two scanners) + procedural phantoms; "
                "perinodal septa/vessels/islands, hilum, fatty replacement, carcinoma/muscle fragments, node-free "
                "sections, pen marks",
        "cohorts": [dict(zip(("name", "patients", "seed", "real_textures", "non_node_fraction", "prefix"), c))
                    for c in TRAIN_COHORTS + SECTION_COHORTS],
        "slide_mpp": SLIDE_MPP, "size_mm": list(SIZE_MM), "init": "demo-nodes (encoder; the decoder is wider)",
        "schedule_note": SCHEDULE_NOTE,
        "tile_note": (f"tile_size_px is the tile of the validation during training; the model reads {_px(INFER_TILE[0])} px "
                      f"tiles (overlap {_px(INFER_TILE[1])} px: the card's patch_size), set by the rules stage"),
        "recipe": "scripts/train_real_nodes.py (make real-models)",
        "stage_seconds": (secs := _stage_seconds(work)),
        "wall_seconds": round(sum(v for v in secs.values() if v), 1),
        # the training card names the CPU, its threads and bf16 (train_nodes); older cards did not
        "hardware": training.get("hardware") or f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
    })
    card.training = training
    card.intended_use = INTENDED_USE
    card.params = {**card.params, "name": NAME}
    if "edge_model" in card.params:  # the bundled edge model, by name
        card.params["edge_model"] = EDGE_MODEL
    ours = ev[NAME]
    card.metrics = {**card.metrics, "held_out": {k: {kk: vv for kk, vv in v.items() if kk != "per_slide"}
                                                 for k, v in ours.items()}}
    card.metrics["tested_on"] = [
        "phantoms of unseen seeds textured from PCam valid/ (slides not used for the training textures)",
        "procedural phantoms of unseen seeds", "node-free phantom sections (carcinoma, muscle, fibro-fatty, gastric wall)",
        "CMU-1-Small-Region.svs (real heart tissue, no lymph node): nodes found",
    ]
    card.metrics["not_tested_on"] = ["real lymph-node outlines (none with a licence available)",
                                     "real gastric lymph-node slides", "frozen sections, IHC, non-H&E stains"]
    dest = BUNDLED / NAME
    if dest.exists():
        shutil.rmtree(dest)
    save_model_dir(dest, load_state_dict(work / FINAL), card)
    if "edge_model" in card.params:
        _bundle_edge_model(work)
    RESULTS.joinpath("pcam_nodes.md").write_text(markdown(ev, card))
    print(f"bundled {NAME}: {dest}", flush=True)
    return dest


def _bundle_edge_model(work: Path) -> None:
    """The node-edge classifier into ``src/tmln/models/bundled/EDGE_MODEL`` (float16 weights)."""
    from tmln.models.card import load_state_dict, read_card, save_model_dir
    from tmln.train.node_edges import as_edge_card

    edge = as_edge_card(read_card(work / EDGE_MODEL))  # idempotent: the class names of cards written before it
    edge.intended_use = EDGE_INTENDED_USE
    edge.training = {**edge.training, "recipe": "scripts/train_real_nodes.py --edge-check",
                     "hardware": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"}
    edge.metrics = {**edge.metrics, "used_by": f"{NAME} (its card's min_edge_score, chosen on validation slides)"}
    if (BUNDLED / EDGE_MODEL).exists():
        shutil.rmtree(BUNDLED / EDGE_MODEL)
    # float16 on disk (half of resnet18's 45 MB), loaded into float32
    edge.training["weights_dtype"] = "float16 on disk, float32 in use"
    save_model_dir(BUNDLED / EDGE_MODEL, {k: v.half() if v.is_floating_point() else v
                                          for k, v in load_state_dict(work / EDGE_MODEL).items()}, edge)


def markdown(ev: dict, card) -> str:
    """The results file: every evaluated model on the test sets, then the bundled model's inference tile and the
    instance rules chosen on validation (``card``: the bundled model's card)."""
    lines = [
        f"# pcam-nodes ({MODEL_MPP:g} µm/px, stage 3) and the other models evaluated on held-out phantoms and a real "
        "non-node slide", "",
        "Command: `OMP_NUM_THREADS=2 .venv/bin/python scripts/train_real_nodes.py` (stages data, train, finetune, context, rules, "
        "evaluate, bundle; `make real-models`). Instances match at IoU >= 0.5; Dice pooled over the slides' node areas. "
        "Test slides: seeds 3100+ (training 3000-3002), textures from PCam `valid/` (training: `train/`).", "",
        "| model | test set | slides | Dice | instance precision | instance recall | nodes found / true |",
        "|---|---|---|---|---|---|---|",
    ]
    names = {"real": "phantoms textured from PCam valid/ (unseen seeds)", "procedural": "procedural phantoms (unseen seeds)",
             "sections": "node-free sections (8: 4 real-textured, 4 procedural)"}
    for model, res in ev.items():
        for k, label in names.items():
            r = res[k]
            cells = " | ".join("–" if r[k] is None else f"{r[k]:.3f}" for k in ("dice", "precision", "recall"))
            lines.append(f"| {model} | {label} | {r['slides']} | {cells} | {r['n_pred']} / {r['n_truth']} |")
        if "cmu" in res:
            lines.append(f"| {model} | CMU-1-Small-Region.svs (real heart, no node) | 1 | – | – | – | "
                         f"{res['cmu']['n_pred']} / 0 ({res['cmu']['pred_area_mm2']} mm²) |")
    rules = card.metrics.get("rules_chosen_on", {})
    chosen = rules.get("chosen", {})
    lines += ["", f"pcam-nodes reads {card.patch_size} px tiles (overlap {card.params.get('overlap')} px) at "
              f"{card.mpp:g} µm/px. Instance rules in its card, chosen on {rules.get('slides', '?')}: "
              f"min_node_area_mm2 {chosen.get('min_node_area_mm2')}, min_node_probability "
              f"{chosen.get('min_node_probability')}, min_edge_score {chosen.get('min_edge_score')} (edge model "
              f"{card.params.get('edge_model')}; {chosen.get('errors')} validation errors; criterion: "
              f"{rules.get('criterion', '?')}; every triple in WORK/rules.json). "
              "Stage 3 and the experiments before it: [pcam_nodes_experiments.md](pcam_nodes_experiments.md)."]
    lines += ["", "Per slide (node-free sections): " + "; ".join(
        f"{m}: " + ", ".join(f"{s['slide']} {s['n_pred']}" for s in res["sections"]["per_slide"]) for m, res in ev.items()), ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    global MODEL_MPP
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    ap.add_argument("--work", type=Path, default=REPO / "build" / "real-nodes")
    ap.add_argument("--stage", default="data,train,finetune,context,rules,evaluate,bundle")
    ap.add_argument("--edge-check", action="store_true",
                    help="the node-edge check too (an experiment, not in the bundled model): adds the stage edges before "
                         "rules, and the rules stage chooses min_edge_score on two validation draws")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--epochs", type=int, default=SETTINGS["epochs"])
    ap.add_argument("--evaluate", default=f"{NAME},{STAGE2},demo-nodes",
                    help=f"models the evaluate stage runs (comma-separated; {STAGE2}: the stage-2 model)")
    ap.add_argument("--model-mpp", type=float, default=MODEL_MPP,
                    help="the model's µm/px (default 4, the bundled model; sizes in px scale with it)")
    a = ap.parse_args(argv)
    MODEL_MPP = a.model_mpp
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not (a.shared / "data/pcam/train").is_dir():
        print(f"{a.shared}/data/pcam/train not found: this script needs the PCam patches", file=sys.stderr)
        return 2
    a.work.mkdir(parents=True, exist_ok=True)
    stages = a.stage.split(",")
    if a.edge_check and "rules" in stages and "edges" not in stages:
        stages.insert(stages.index("rules"), "edges")
    train_dir = (make_data(a.shared, a.work) if {"data", "train", "finetune", "context", "edges", "bundle"} & set(stages)
                 else a.work / "train")
    if "train" in stages:
        train(train_dir, a.work, a.device, a.epochs)
    if "finetune" in stages:
        finetune(train_dir, a.work, a.device)
    if "context" in stages:
        context(train_dir, a.work, a.device)
    if "edges" in stages:
        edges(a.shared, a.work, a.device)
    if "rules" in stages:
        choose_rules(a.shared, a.work, edge_check=a.edge_check)
    if "evaluate" in stages:
        evaluate(a.shared, a.work, models=tuple(a.evaluate.split(",")))
    if "bundle" in stages:
        bundle(a.shared, a.work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
