"""Node label maps -> node polygons in level-0 px, and the files ``tmln node-map`` writes.

A label map at ``mpp`` µm/px with its top-left corner at level-0 ``origin`` becomes one shapely
Polygon per instance; each label pixel is a ``mpp / mpp_x`` by ``mpp / mpp_y`` level-0 px square
(vectorised exactly to the pixel grid by ``tmln.regions.polygons_from_labels``), so polygon area =
pixel count × pixel area.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tmln.annotations import feature, write_geojson
from tmln.atomic import write_bytes
from tmln.raster import Raster, raster_fields, read_raster
from tmln.regions import polygons_from_labels, rasterise
from tmln.rundir import NODE_LABELS_NPY, NODE_LABELS_PNG, NODES_GEOJSON

if TYPE_CHECKING:  # annotations only: no import at run time
    from tmln.models.card import ModelCard
    from tmln.slide import Slide

NODE_CLASS = "Lymph node"


@dataclass
class NodeMap(Raster):
    """Node instances of a slide: int32 labels (0 = background) at ``mpp`` µm/px (a ``Raster``);
    ``prob`` the model's (C, H, W) probabilities (node, [node_core]) when it made them, ``rgb`` the
    slide at ``mpp`` when it was read in memory."""

    prob: np.ndarray | None = None
    rgb: np.ndarray | None = None
    info: dict = field(default_factory=dict)  # how it was computed: precision (int8: its calibration), ...

    VALUES = "int32 instance labels (0 = background)"

    @property
    def labels(self) -> np.ndarray:
        return self.array


def _slide_mpp(slide_or_mpp) -> tuple[float, float]:
    if hasattr(slide_or_mpp, "mpp_x_required"):
        return float(slide_or_mpp.mpp_x_required), float(slide_or_mpp.mpp_y_required)
    if np.isscalar(slide_or_mpp):
        return float(slide_or_mpp), float(slide_or_mpp)
    mx, my = slide_or_mpp
    return float(mx), float(my)


def labels_to_polygons(labels: np.ndarray, mpp: float, slide_or_mpp, origin=(0.0, 0.0)) -> list:
    """Instance labels at ``mpp`` µm/px -> one Polygon per label (increasing label order), level-0 px.

    slide_or_mpp : the ``Slide`` (its level-0 µm/px), or the level-0 µm/px as a float or (x, y).
    origin : level-0 px of the label map's top-left corner.
    A label split into several parts (which ``tmln.nodes.instances`` never produces) keeps its
    largest part; collinear vertices along pixel edges are dropped (the area is unchanged).
    """
    import shapely

    mx, my = _slide_mpp(slide_or_mpp)
    geoms = polygons_from_labels(np.asarray(labels), mpp, mx, my, origin=origin, connectivity=4)
    out = []
    for g in geoms:
        if g.geom_type == "MultiPolygon":
            g = max(g.geoms, key=lambda p: p.area)
        out.append(shapely.simplify(g, 0.0, preserve_topology=True))
    return out


def polygons_to_labels(polygons, shape: tuple[int, int], mpp: float, slide_or_mpp, origin=(0.0, 0.0)) -> np.ndarray:
    """Polygons in level-0 px -> (h, w) int32 labels at ``mpp`` µm/px (pixel centres inside;
    polygon i gets label i + 1)."""

    mx, my = _slide_mpp(slide_or_mpp)
    return rasterise(polygons, shape, (mpp / mx, mpp / my), origin=origin)


def label_colours(n: int) -> np.ndarray:
    """(n + 1, 3) uint8 distinct colours; row 0 (background) black."""
    import colorsys

    out = np.zeros((n + 1, 3), np.uint8)
    for k in range(1, n + 1):
        h = (k * 0.618033988749895) % 1.0
        r, g, b = colorsys.hsv_to_rgb(h, 0.85, 0.95)
        out[k] = (int(r * 255), int(g * 255), int(b * 255))
    return out


def preview_image(rgb: np.ndarray, labels: np.ndarray, alpha: float = 0.35) -> np.ndarray:
    """RGB with each instance tinted in its colour and outlined."""
    from skimage.segmentation import find_boundaries

    lab = np.asarray(labels)
    if lab.shape != rgb.shape[:2]:
        import cv2

        lab = cv2.resize(lab.astype(np.int32).astype(np.float32), (rgb.shape[1], rgb.shape[0]),
                         interpolation=cv2.INTER_NEAREST).astype(np.int32)
    col = label_colours(int(lab.max()))[lab]
    fg = lab > 0
    out = rgb.astype(np.float32)
    out[fg] = (1 - alpha) * out[fg] + alpha * col[fg]
    edge = find_boundaries(lab, mode="inner") & fg
    out[edge] = col[edge]
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def write_png(path, rgb: np.ndarray) -> None:
    import cv2

    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]))
    if not ok:  # pragma: no cover
        raise RuntimeError("PNG encoding failed")
    write_bytes(path, buf.tobytes())


def node_features(polygons, slide_or_mpp) -> list[dict]:
    """QuPath GeoJSON features (class "Lymph node") with ``area_mm2`` measurements."""

    mx, my = _slide_mpp(slide_or_mpp)
    return [feature(p, classification=NODE_CLASS, object_type="annotation", name=f"node {k}",
                    measurements={"area_mm2": p.area * mx * my / 1e6}, id=f"node-{k}")
            for k, p in enumerate(polygons, start=1)]


def write_node_outputs(out_dir, slide: Slide, node_map: NodeMap, card: ModelCard, split_touching: bool = True,
                       preview_max_px: int = 2048, geojson: bool = True) -> dict:
    """Write ``node_labels.npy`` + ``node_labels.json`` (its sidecar, ``tmln.raster``), ``node_labels.png``
    and, with ``geojson``, ``nodes.geojson`` into ``out_dir`` (each atomically). Returns the sidecar."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    labels = np.asarray(node_map.labels, np.int32)
    mx, my = _slide_mpp(slide)
    areas = np.bincount(labels.ravel())[1:] * (node_map.mpp ** 2) / 1e6
    raster = NodeMap(labels, float(node_map.mpp), tuple(node_map.origin), (mx, my))
    meta = raster.write(out / NODE_LABELS_NPY, {
        "slide": str(getattr(slide, "path", "")),
        "n_nodes": int(labels.max()),
        "node_area_mm2": [round(float(a), 6) for a in areas],
        "model": {"task": card.task, "architecture": card.architecture, "mpp": card.mpp,
                  "threshold": card.threshold, "tmln_version": card.tmln_version},
        "split_touching": bool(split_touching),
        **({"inference": node_map.info} if node_map.info else {}),
    })
    if geojson:
        polys = labels_to_polygons(labels, node_map.mpp, (mx, my), origin=node_map.origin)
        write_geojson(out / NODES_GEOJSON, node_features(polys, (mx, my)))
    rgb = node_map.rgb
    if rgb is None or max(rgb.shape[:2]) > preview_max_px:
        pmpp = max(node_map.mpp, max(slide.width * mx, slide.height * my) / preview_max_px)
        rgb = slide.thumbnail(pmpp)
    write_png(out / NODE_LABELS_PNG, preview_image(rgb, labels))
    return meta


def read_node_labels(path) -> NodeMap:
    """Read ``node_labels.npy`` (or its folder) and its sidecar -> ``NodeMap`` (``.labels``, ``.mpp``,
    ``.origin``, ``.slide_mpp``); a ``TmlnError`` naming the file when it is missing or not a label map."""
    p = Path(path)
    if p.is_dir():
        p = p / NODE_LABELS_NPY
    labels, meta = read_raster(p, "node label map")
    return NodeMap(labels.astype(np.int32), **raster_fields(meta))
