"""A tumour probability map over a slide (a ``tmln.raster.Raster``) and its files in a run."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tmln.atomic import write_bytes
from tmln.errors import TmlnError
from tmln.raster import Raster, raster_fields, read_raster
from tmln.rundir import TUMOUR_MAP_JSON as SIDECAR_NAME
from tmln.rundir import TUMOUR_MAP_NPY as MAP_NAME
from tmln.rundir import TUMOUR_MAP_PNG as PREVIEW_NAME

# what the engine records about a run in the sidecar (``info`` holds more: timing, roi_mm2)
SIDECAR_INFO = ("method", "stride_px", "patch_size", "model_mpp", "tile_size", "margin_cells", "pool_cells",
                "mask", "slide", "reader", "device", "precision", "int8", "cpu_isa", "architecture",
                "slide_size_px", "tiles", "model_mpx")


@dataclass
class ProbabilityMap(Raster):
    """A tumour probability map over a slide.

    array : float32 (h, w); P(tumour) in [0, 1]; NaN outside the region of interest.
    mpp : µm per map pixel (square).
    origin : level-0 px (x, y) of the top-left corner of map pixel (0, 0); pixel (r, c) covers
        level-0 x in ``origin[0] + [c, c + 1) * mpp / slide_mpp[0]`` (likewise y) and holds the
        classifier's probability for the patch centred on the pixel's centre.
    slide_mpp : level-0 µm/px (x, y) of the slide.
    """

    model: str = ""
    threshold: float = 0.5
    info: dict[str, Any] = field(default_factory=dict)

    VALUES = "P(tumour) in [0, 1]; NaN outside the region of interest"

    def save(self, out_dir: str | Path) -> Path:
        """Write ``tumour_map.png`` (preview), ``tumour_map.npy`` and ``tumour_map.json`` (sidecar, last),
        each atomically."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_bytes(out / PREVIEW_NAME, preview_png(self.array))
        self.write(out / MAP_NAME)
        return out

    def __post_init__(self):
        self.array = np.asarray(self.array, np.float32)

    def sidecar(self, array_name: str = MAP_NAME) -> dict:
        return {**super().sidecar(array_name), "model": self.model, "threshold": self.threshold,
                **{k: self.info[k] for k in SIDECAR_INFO if k in self.info}}

    @classmethod
    def load(cls, out_dir: str | Path) -> "ProbabilityMap":
        """The map a ``save`` wrote into ``out_dir``."""
        out = Path(out_dir)
        if not (out / SIDECAR_NAME).is_file():
            raise TmlnError(f"no {SIDECAR_NAME} (not a tumour-map folder)", out)
        arr, meta = read_raster(out / MAP_NAME, "tumour map")
        return cls(arr, **raster_fields(meta), model=meta.get("model", ""),
                   threshold=float(meta.get("threshold", 0.5)), info=meta)


def preview_png(prob: np.ndarray) -> bytes:
    """PNG bytes: probability as a blue-to-red colour ramp, outside the region of interest grey."""
    import cv2

    p = np.nan_to_num(prob, nan=0.0).clip(0, 1)
    ramp = (p * 255).astype(np.uint8)
    rgb = cv2.applyColorMap(ramp, cv2.COLORMAP_JET)  # BGR
    rgb[np.isnan(prob)] = (220, 220, 220)
    ok, buf = cv2.imencode(".png", rgb)
    if not ok:  # pragma: no cover
        raise TmlnError("cannot encode the preview PNG")
    return buf.tobytes()
