"""Node-edge check: does a candidate node's outline look like the edge of a lymph node?

A lymph node is wrapped in a fibrous capsule with lymphoid tissue (or, in a metastatic node, carcinoma)
inside it and fat outside; a carcinoma nodule in perinodal fat, a fragment of the primary tumour or an
island of connective tissue meets the fat directly. At the node model's 4 µm/px a capsule is a few
pixels wide and a carcinoma nodule in fat reads as a node (benchmarks/results/pcam_nodes_experiments.md);
at 2 µm/px the capsule is clear. So every candidate instance's outline is sampled every ``step_um`` µm,
a patch classifier (task ``node-edge-classifier``: ``card.patch_size`` px at ``card.mpp`` µm/px, centred
on the outline point) gives each point the probability of being a node edge, and an instance whose mean
over its outline (its *edge score*, 0-1) is below the node card's ``min_edge_score`` is dropped.

Points closer than ``edge_margin_um`` to the slide's border are not read (a node cut by the slide's edge
has no capsule there); an instance with no point left keeps its place (edge score None). At most
``max_points`` points per instance, evenly spaced along the outline.

The node card names the check in its ``params``: ``edge_model`` (a bundled model name or a path relative
to the node model's directory) and ``min_edge_score``; without them nothing is checked.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tmln.errors import ModelCardError
from tmln.models.card import resolve_model_dir
from tmln.models.classifier import input_transform, load_classifier
from tmln.slide import Slide

TASK = "node-edge-classifier"
DEFAULT_STEP_UM = 100.0  # outline spacing of the points read (µm)
DEFAULT_MARGIN_UM = 120.0  # points nearer than this to the slide's border are not read (µm)
DEFAULT_MAX_POINTS = 64  # points per instance at most
BATCH = 64


def outline_points(poly, step_px: float, max_points: int) -> np.ndarray:
    """(n, 2) points (x, y) along a polygon's exterior every ``step_px`` (at least 4, at most ``max_points``)."""
    ring = poly.exterior
    n = int(min(max_points, max(4, ring.length // max(step_px, 1e-9))))
    return np.array([(p.x, p.y) for p in (ring.interpolate(d) for d in np.linspace(0.0, ring.length, n, endpoint=False))])


def read_centred(slide: Slide, points, size: int, mpp: float) -> np.ndarray:
    """(n, size, size, 3) uint8 RGB patches at ``mpp`` µm/px centred on ``points`` (level-0 px, (n, 2))."""
    hx, hy = 0.5 * size * mpp / slide.mpp_x_required, 0.5 * size * mpp / slide.mpp_y_required
    return np.stack([slide.read((x - hx, y - hy), (size, size), mpp=mpp) for x, y in points])


def away_from_border(points, slide: Slide, margin_um: float) -> np.ndarray:
    """Boolean mask of ``points`` (level-0 px, (n, 2)) lying at least ``margin_um`` µm inside the slide's border
    (a node cut by the slide's edge has no capsule there)."""
    pts = np.asarray(points, float).reshape(-1, 2)
    W, H = slide.dimensions
    mx, my = margin_um / slide.mpp_x_required, margin_um / slide.mpp_y_required
    return (pts[:, 0] >= mx) & (pts[:, 0] < W - mx) & (pts[:, 1] >= my) & (pts[:, 1] < H - my)


class EdgeChecker:
    """A loaded node-edge classifier: ``scores(slide, polygons)`` -> one edge score (0-1, or None) per polygon.

    model : a model directory or bundled name (task ``node-edge-classifier``).
    """

    def __init__(self, model, device="auto"):
        self.net, self.card = load_classifier(model, device, task=TASK)
        self.device = next(self.net.parameters()).device
        self.transform = input_transform(self.card)
        p = self.card.params
        self.step_um = float(p.get("step_um", DEFAULT_STEP_UM))
        self.margin_um = float(p.get("edge_margin_um", DEFAULT_MARGIN_UM))
        self.max_points = int(p.get("max_points", DEFAULT_MAX_POINTS))

    def point_probabilities(self, slide: Slide, points: np.ndarray) -> np.ndarray:
        """Node-edge probability of patches centred on ``points`` (level-0 px, (n, 2))."""
        import torch

        out = []
        for i in range(0, len(points), BATCH):
            batch = read_centred(slide, points[i:i + BATCH], int(self.card.patch_size), self.card.mpp)
            with torch.inference_mode():
                x = self.transform.normalise(torch.from_numpy(batch).to(self.device))
                out.append(torch.sigmoid(self.net(x)[:, -1].float()).cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    def scores(self, slide: Slide, polygons: list) -> list[float | None]:
        """Edge score of each polygon (level-0 px): the mean node-edge probability along its outline."""
        step = self.step_um / slide.mpp_x_required
        out: list[float | None] = []
        for poly in polygons:
            pts = outline_points(poly, step, self.max_points)
            pts = pts[away_from_border(pts, slide, self.margin_um)]
            out.append(float(self.point_probabilities(slide, pts).mean()) if len(pts) else None)
        return out


def edge_check_params(params: dict | None) -> dict:
    """The node-edge check's entries of a node card's ``params`` (``edge_model``, ``min_edge_score``), where given."""
    return {k: params[k] for k in ("edge_model", "min_edge_score") if params and params.get(k) is not None}


def edge_model_path(node_card, node_model_dir: Path | None):
    """The edge model a node card names (``params["edge_model"]``): a bundled name, or a path relative to the
    node model's directory; None when the card names none."""
    name = (node_card.params or {}).get("edge_model")
    if not name:
        return None
    if node_model_dir is not None and (Path(node_model_dir) / str(name)).is_dir():
        return Path(node_model_dir) / str(name)
    try:
        return resolve_model_dir(str(name))
    except ModelCardError as err:
        raise ModelCardError(f"the node model's edge_model {name!r} was not found: {err.message}", node_model_dir) from None
