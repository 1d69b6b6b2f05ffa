"""Overlay thumbnail of one slide: node outlines coloured by category, tumour filled semi-transparent.

The thumbnail is read with ``Slide.thumbnail`` at the µm/px that makes its longer side about
``max_side`` pixels (never finer than level 0). Node ids are written next to each node.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tmln.annotations import CLASS_COLOURS
from tmln.atomic import write_bytes
from tmln.regions import rasterise

if TYPE_CHECKING:  # annotations only: no import at run time
    from tmln.measure.nodes import SlideMeasurement
    from tmln.slide import Slide

TUMOUR_RGB = (220, 0, 0)
TUMOUR_ALPHA = 0.45


def overlay_mpp(slide: Slide, max_side: int = 1500) -> float:
    """µm/px of a thumbnail whose longer side is about ``max_side`` px."""
    w_um, h_um = slide.width * slide.mpp_x_required, slide.height * slide.mpp_y_required
    return max(max(w_um, h_um) / max_side, slide.mpp_x_required, slide.mpp_y_required)


GAP_RGB = (255, 0, 255)  # unreadable tiles: magenta box with a cross


def draw_overlay(image: np.ndarray, measurement, scale_x: float, scale_y: float, gaps=()) -> np.ndarray:
    """Draw on an RGB thumbnail; ``scale_x/y`` = thumbnail px per level-0 px. ``gaps``: unreadable
    tiles (x0, y0, x1, y1) in level-0 px, drawn as crossed boxes. Returns a new array."""
    import cv2
    from shapely import get_parts

    out = image.copy()
    h, w = out.shape[:2]
    tumour = [d.geometry for d in measurement.deposits]
    if measurement.extranodal is not None and not measurement.extranodal.is_empty:
        tumour += list(get_parts(measurement.extranodal))
    if tumour:
        mask = rasterise(tumour, (h, w), (1.0 / scale_x, 1.0 / scale_y), values=[1] * len(tumour),
                         all_touched=True) > 0
        tint = np.array(TUMOUR_RGB, np.float32)
        out[mask] = (out[mask].astype(np.float32) * (1 - TUMOUR_ALPHA) + tint * TUMOUR_ALPHA).round().astype(np.uint8)
    thickness = max(2, int(round(max(h, w) / 600)))
    shift = 4
    for row, geom in zip(measurement.rows, measurement.nodes):
        colour = tuple(int(c) for c in CLASS_COLOURS[row["category"]])
        for poly in get_parts(geom):
            if poly.geom_type != "Polygon":
                continue
            for ring in [poly.exterior, *poly.interiors]:
                xy = np.asarray(ring.coords)
                pts = np.stack([(xy[:, 0] * scale_x - 0.5), (xy[:, 1] * scale_y - 0.5)], axis=1)
                pts = np.round(pts * (1 << shift)).astype(np.int32).reshape(-1, 1, 2)
                cv2.polylines(out, [pts], True, colour, thickness, cv2.LINE_AA, shift)
        c = geom.representative_point()
        org = (int(round(c.x * scale_x)), int(round(c.y * scale_y)))
        scale = 0.4 * thickness + 0.2
        cv2.putText(out, str(row["node_id"]), org, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255),
                    thickness + 2, cv2.LINE_AA)
        cv2.putText(out, str(row["node_id"]), org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thickness, cv2.LINE_AA)
    for x0, y0, x1, y1 in gaps:
        p0 = (int(round(x0 * scale_x)), int(round(y0 * scale_y)))
        p1 = (max(p0[0] + 1, int(round(x1 * scale_x)) - 1), max(p0[1] + 1, int(round(y1 * scale_y)) - 1))
        cv2.rectangle(out, p0, p1, GAP_RGB, max(1, thickness // 2))
        cv2.line(out, p0, p1, GAP_RGB, 1)
        cv2.line(out, (p0[0], p1[1]), (p1[0], p0[1]), GAP_RGB, 1)
    return out


def overlay_image(slide: Slide, measurement: SlideMeasurement, max_side: int = 1500) -> np.ndarray:
    """The overlay of one slide as an RGB uint8 array."""
    mpp = overlay_mpp(slide, max_side)
    thumb = slide.thumbnail(mpp)
    return draw_overlay(thumb, measurement, slide.mpp_x_required / mpp, slide.mpp_y_required / mpp,
                        gaps=sorted(getattr(slide, "gaps", {}) or {}))


def encode_png(rgb: np.ndarray) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]))
    if not ok:  # pragma: no cover
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def write_overlay(path: str | Path, slide: Slide, measurement: SlideMeasurement, max_side: int = 1500) -> None:
    """Write the overlay PNG atomically."""

    write_bytes(path, encode_png(overlay_image(slide, measurement, max_side)))
