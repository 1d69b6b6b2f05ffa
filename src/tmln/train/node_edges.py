"""Train the node-edge classifier of ``tmln.nodes.edges`` from outlines: node edges against other tissue's edges.

``edge_patches`` writes a patch folder: ``positive/`` holds patches centred on points every ``step_um`` µm
along lymph-node outlines, ``negative/`` patches centred on outlines of tissue that is not lymph node
(carcinoma, connective tissue, muscle, vessel walls), each centre moved at random by up to ``jitter_um`` µm
(a segmentation's outline lies a few µm off the true one); ``groups.csv`` names each patch's slide (the
validation split keeps a slide on one side) and tissue kind; ``edge_patches.json`` the settings. Points
nearer than ``margin_um`` to the slide's border are skipped. At most ``per_class`` points per slide and
class; negatives are drawn with ``negative_weights`` per kind (default: carcinoma 3x, the look-alike that
matters), and no kind is more than its ``max_share`` of all negatives (default: stroma 60 %). ``train_node_edges`` trains a patch classifier on that folder (``tmln.train.tumour``'s loop:
slide-level split, class balance, flips, rotations, colour and HED jitter) and writes its card as a
``node-edge-classifier`` with the folder's µm/px, patch size and outline step.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tmln.atomic import write_json
from tmln.models.card import read_card, CARD_NAME
from tmln.nodes.edges import DEFAULT_MARGIN_UM, DEFAULT_STEP_UM, TASK, away_from_border, read_centred
from tmln.regions import polygon_parts
from tmln.slide import Slide
from tmln.train.tumour import train_tumour

SETTINGS_NAME = "edge_patches.json"
CLASSES = ["other_edge", "node_edge"]


@dataclass
class EdgeSource:
    """One slide's outlines (shapely Polygons, level-0 px): ``nodes``, and ``other`` as (kind, polygon)."""

    slide: Path
    group: str
    nodes: list
    other: list = field(default_factory=list)


def _points(poly, step: float, rng) -> list[tuple[float, float]]:
    ring = poly.exterior
    if ring.length < step:
        return []
    return [(p.x, p.y) for p in (ring.interpolate(d) for d in np.arange(rng.uniform(0, step), ring.length, step))]


def edge_patches(out_dir: str | Path, sources, *, mpp: float = 2.0, patch_size: int = 96,  # public API: one keyword per sampling option
                 step_um: float = DEFAULT_STEP_UM, per_class: int = 160, margin_um: float = DEFAULT_MARGIN_UM,
                 jitter_um: float = 20.0, negative_weights: dict | None = None, max_share: dict | None = None,
                 seed: int = 0) -> Path:
    """Write the edge patch folder (module docstring) into ``out_dir`` (replaced whole, atomically); returns it.

    ``max_share``: {kind: largest share of all negative patches}; patches of a kind over it are dropped at random
    (default: ``stroma`` at most 0.6: islands, septa and vessel walls are most outline points of a node slide, and
    would drown the carcinoma and muscle edges that look most like a node's)."""
    from PIL import Image
    import pandas as pd

    weights = {"carcinoma": 3.0} if negative_weights is None else dict(negative_weights)
    out = Path(out_dir)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    rows = []
    for k, src in enumerate(sources):
        rng = np.random.default_rng([int(seed), k])
        with Slide(src.slide) as s:
            step, jitter = step_um / s.mpp_x_required, jitter_um / s.mpp_x_required
            pos = [("node", p) for q in src.nodes for g in polygon_parts(q) for p in _points(g, step, rng)]
            neg = [(kind, p) for kind, q in src.other for g in polygon_parts(q) for p in _points(g, step, rng)]
            pos, neg = ([x for x, ok in zip(xs, away_from_border([p for _, p in xs], s, margin_um)) if ok]
                        for xs in (pos, neg))
            for label, pts, w in (("positive", pos, None), ("negative", neg, weights)):
                if len(pts) > per_class:
                    pr = None
                    if w:
                        pr = np.array([float(w.get(kind, 1.0)) for kind, _ in pts])
                        pr /= pr.sum()
                    pts = [pts[i] for i in sorted(rng.choice(len(pts), per_class, replace=False, p=pr))]
                if not pts:
                    continue
                centres = np.array([p for _, p in pts]) + rng.uniform(-jitter, jitter, (len(pts), 2))
                patches = read_centred(s, centres, patch_size, mpp)
                folder = tmp / label
                folder.mkdir(parents=True, exist_ok=True)
                for j, ((kind, _), rgb) in enumerate(zip(pts, patches)):
                    name = f"{label}/{src.group}_{kind}_{j:04d}.png"
                    Image.fromarray(rgb).save(tmp / name)
                    rows.append({"image": name, "group": src.group, "kind": kind})
    if not rows:
        raise ValueError("no outline point lies inside any slide: no edge patch written")
    rows = _cap_shares(tmp, rows, {"stroma": 0.6} if max_share is None else dict(max_share), seed)
    pd.DataFrame(rows).to_csv(tmp / "groups.csv", index=False)
    kinds = pd.DataFrame(rows).groupby("kind").size().to_dict()
    write_json(tmp / SETTINGS_NAME, {"mpp": float(mpp), "patch_size": int(patch_size), "step_um": float(step_um),
                                     "margin_um": float(margin_um), "jitter_um": float(jitter_um),
                                     "per_class": int(per_class), "negative_weights": weights,
                                     "max_share": {"stroma": 0.6} if max_share is None else dict(max_share),
                                     "seed": int(seed),
                                     "slides": len({r["group"] for r in rows}),
                                     "patches": {k: int(v) for k, v in kinds.items()}})
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out


def _cap_shares(folder: Path, rows: list[dict], max_share: dict, seed: int) -> list[dict]:
    """Drop (and delete) random negative patches of each kind over its ``max_share`` of the negatives."""
    rng = np.random.default_rng([int(seed), 0x5A])
    neg = [r for r in rows if r["kind"] != "node"]
    drop: set[str] = set()
    for kind, share in max_share.items():
        mine = [r["image"] for r in neg if r["kind"] == kind]
        others = len(neg) - len(mine)
        keep = int(share / (1.0 - share) * others) if share < 1 else len(mine)
        if others and len(mine) > keep:  # a kind that is all the negatives there are stays whole
            drop.update(mine[i] for i in rng.choice(len(mine), len(mine) - keep, replace=False))
    for name in drop:
        (folder / name).unlink()
    return [r for r in rows if r["image"] not in drop]


def train_node_edges(out_dir: str | Path, patches: str | Path, *, epochs: int = 6, arch: str = "resnet18",  # public API: the patch trainer's options, one keyword each
                     batch_size: int = 64, val_fraction: float = 0.2, colour: float = 0.15, hed: float = 0.05,
                     seed: int = 0, device: str = "auto", quiet: bool = True, data_note: str | None = None):
    """Train a node-edge classifier on an ``edge_patches`` folder into ``out_dir``; returns its ``ModelCard``."""
    patches = Path(patches)
    settings = json.loads((patches / SETTINGS_NAME).read_text())
    train_tumour(out_dir, patches=patches, groups=patches / "groups.csv", epochs=epochs,
                 mpp=settings["mpp"], patch_size=settings["patch_size"], arch=arch, batch_size=batch_size,
                 val_fraction=val_fraction, colour=colour, hed=hed, seed=seed, device=device, keep="best",
                 quiet=quiet, progress=False, label_region="the patch's centre: a point on an outline")
    card = as_edge_card(read_card(out_dir))
    card.params = {**card.params, "step_um": settings["step_um"], "edge_margin_um": settings["margin_um"]}
    card.training = {**card.training, "edge_patches": settings,
                     **({"data_note": data_note} if data_note else {})}
    write_json(Path(out_dir) / CARD_NAME, card.to_dict())
    return card


def _renamed(d):
    """The patch trainer's counts and rates renamed to this task's classes (tumour -> node_edge, normal -> other_edge)."""
    if isinstance(d, dict):
        return {k.replace("tumour", "node_edge").replace("normal", "other_edge"): _renamed(v) for k, v in d.items()}
    return [_renamed(v) for v in d] if isinstance(d, list) else d


def as_edge_card(card):
    """A card written by the patch trainer (``tmln.train.tumour``) as a node-edge classifier's: task, classes,
    output, and the counts under this task's class names."""
    card.task, card.classes = TASK, list(CLASSES)
    card.params = {**card.params, "output": "sigmoid(logit) = P(node edge)"}
    card.metrics = _renamed(card.metrics)
    card.training = {**card.training, "data": _renamed(card.training.get("data", {}))}
    return card
