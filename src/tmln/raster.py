"""A raster on a slide's grid with its µm/px, and its one sidecar format.

Every whole-slide array tmln makes (a tissue mask, a tumour probability map, a node label map) is a
``Raster``: ``array`` (h, w) at ``mpp`` µm per pixel, pixel (r, c) covering level-0 x in
``origin[0] + [c, c + 1) * mpp / slide_mpp[0]`` (likewise y). On disk it is ``<name>.npy`` beside
``<name>.json``, the sidecar: ``format``, ``array`` (the .npy file name), ``mpp``, ``origin_px``,
``slide_mpp``, ``shape``, ``values`` (what a pixel holds), then the kind's own keys.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tmln.atomic import write_json, write_npy
from tmln.errors import TmlnError

FORMAT = 1


@dataclass
class Raster:
    """``array`` (h, w) at ``mpp`` µm/px; ``origin``: level-0 px (x, y) of pixel (0, 0)'s top-left corner;
    ``slide_mpp``: the slide's level-0 µm/px (x, y)."""

    array: np.ndarray
    mpp: float
    origin: tuple[float, float] = (0.0, 0.0)
    slide_mpp: tuple[float, float] | None = None

    VALUES = "array values"  # what a pixel holds (the sidecar's "values")

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.array.shape)

    @property
    def scale(self) -> tuple[float, float]:
        """Level-0 px per raster pixel (x, y)."""
        if self.slide_mpp is None:
            raise TmlnError("this raster does not know its slide's µm/px")
        return self.mpp / self.slide_mpp[0], self.mpp / self.slide_mpp[1]

    def sidecar(self, array_name: str) -> dict[str, Any]:
        """The sidecar's common keys (a kind adds its own after them)."""
        return {
            "format": FORMAT,
            "array": array_name,
            "mpp": float(self.mpp),
            "origin_px": [float(v) for v in self.origin],
            "slide_mpp": None if self.slide_mpp is None else [float(v) for v in self.slide_mpp],
            "shape": [int(n) for n in self.array.shape],
            "values": self.VALUES,
        }

    def write(self, npy_path: str | Path, meta: dict | None = None) -> dict:
        """Write ``npy_path`` and its sidecar (same name, ``.json``), each atomically, the sidecar last;
        ``meta`` adds the kind's keys. Returns the sidecar."""
        p = Path(npy_path)
        p.parent.mkdir(parents=True, exist_ok=True)
        side = {**self.sidecar(p.name), **(meta or {})}
        write_npy(p, self.array)
        write_json(p.with_suffix(".json"), side)
        return side


def read_raster(npy_path: str | Path, what: str = "raster") -> tuple[np.ndarray, dict]:
    """(array, sidecar) of ``npy_path``; a ``TmlnError`` naming the file when either is missing or
    unreadable. A sidecar without ``format`` (tmln before the common format) is read the same way."""
    p = Path(npy_path)
    side = p.with_suffix(".json")
    if not p.is_file() and not side.is_file():
        raise TmlnError(f"{what} not found", p)
    if not side.is_file():
        raise TmlnError(f"no {side.name} beside the {what} (its µm/px is unknown)", p)
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
        arr = np.load(p.with_name(meta.get("array", p.name)), allow_pickle=False)
    except FileNotFoundError:
        raise TmlnError(f"{what} not found", p) from None
    except Exception as exc:
        raise TmlnError(f"cannot read the {what} ({exc})", p) from None
    if arr.ndim != 2 or "mpp" not in meta:
        raise TmlnError(f"not a {what} (needs a 2-D array and 'mpp' in its JSON)", p)
    return arr, meta


def raster_fields(meta: dict) -> dict:
    """The ``Raster`` fields a sidecar gives: ``mpp``, ``origin``, ``slide_mpp``."""
    sm = meta.get("slide_mpp")
    return {"mpp": float(meta["mpp"]), "origin": tuple(meta.get("origin_px", (0.0, 0.0))),
            "slide_mpp": None if sm is None else tuple(sm)}


__all__ = ["Raster", "read_raster", "raster_fields", "FORMAT"]
