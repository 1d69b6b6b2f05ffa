"""The run directory of ``tmln analyze`` (docs/run-directory.md) as code: every file name and path in it.

One module spells the names; everything that writes or reads a run (``tmln.cohort``, ``tmln.report``,
``tmln.view``, ``tmln.evaluate``, the CLI) goes through :class:`RunDir` and :class:`SlideDir`. The
model outputs' folder layout (``node_labels.*``, ``tumour_map.*``) is the same whether the folder is a
run's ``slides/<slide_id>/`` or the ``--out`` of ``tmln node-map`` / ``tmln tumour-map``, so the
model stages take their file names from here too.

``tests/test_rundir.py`` builds a run and compares its tree with this module and with the tree drawn in
docs/run-directory.md.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from tmln.atomic import write_json

# ---------------------------------------------------------------------------- run level
NODES_CSV = "nodes.csv"  # also the per-slide table of nodes
SLIDES_CSV = "slides.csv"
PATIENTS_CSV = "patients.csv"
SUMMARY_JSON = "summary.json"
REPORT_HTML = "report.html"
DERIVED_TABLE = "slides_table.csv"  # the slides table derived from --slides DIR
LOCK = ".tmln.lock"  # held (OS lock) while a run works on the directory; the empty file stays
SLIDES = "slides"  # folder of the per-slide folders

RUN_OUTPUTS = (NODES_CSV, SLIDES_CSV, PATIENTS_CSV, SUMMARY_JSON, REPORT_HTML)  # rebuilt at the end of every run

# ---------------------------------------------------------------------------- per slide
STATE_JSON = "state.json"  # written last: the slide is done when it says so
STATE_VERSION = 1
NODES_GEOJSON = "nodes.geojson"
TUMOUR_GEOJSON = "tumour.geojson"
OVERLAY_PNG = "overlay.png"
# a node model's label map: int32 instance labels + its µm/px and origin + a preview
NODE_LABELS_NPY, NODE_LABELS_JSON, NODE_LABELS_PNG = "node_labels.npy", "node_labels.json", "node_labels.png"
# a tumour model's probability map: float32 P(tumour) + its sidecar (µm/px, origin, ...) + a preview
TUMOUR_MAP_NPY, TUMOUR_MAP_JSON, TUMOUR_MAP_PNG = "tumour_map.npy", "tumour_map.json", "tumour_map.png"

SLIDE_OUTPUTS = (NODES_CSV, NODES_GEOJSON, TUMOUR_GEOJSON, OVERLAY_PNG)  # every measured slide has them
NODE_MODEL_OUTPUTS = (NODE_LABELS_NPY, NODE_LABELS_JSON, NODE_LABELS_PNG)  # with --node-model
TUMOUR_MODEL_OUTPUTS = (TUMOUR_MAP_NPY, TUMOUR_MAP_JSON, TUMOUR_MAP_PNG)  # with --tumour-model


@dataclass(frozen=True)
class SlideDir:
    """``RUN/slides/<slide_id>/``: one slide's outputs and its ``state.json``."""

    path: Path

    def __init__(self, path: str | Path):
        object.__setattr__(self, "path", Path(path))

    @property
    def slide_id(self) -> str:
        return self.path.name

    state = property(lambda self: self.path / STATE_JSON)
    nodes_csv = property(lambda self: self.path / NODES_CSV)
    nodes_geojson = property(lambda self: self.path / NODES_GEOJSON)
    tumour_geojson = property(lambda self: self.path / TUMOUR_GEOJSON)
    overlay = property(lambda self: self.path / OVERLAY_PNG)
    node_labels = property(lambda self: self.path / NODE_LABELS_NPY)
    node_labels_json = property(lambda self: self.path / NODE_LABELS_JSON)
    tumour_map = property(lambda self: self.path / TUMOUR_MAP_NPY)
    tumour_map_json = property(lambda self: self.path / TUMOUR_MAP_JSON)

    def has_outputs(self) -> bool:
        """Every output of a measured slide is there (``SLIDE_OUTPUTS``; the model maps are optional)."""
        return all((self.path / name).is_file() for name in SLIDE_OUTPUTS)

    def has_tumour_map(self) -> bool:
        return self.tumour_map_json.is_file() and self.tumour_map.is_file()

    # -------------------------------------------------------------------- state
    def read_state(self) -> dict | None:
        """The slide's state, or None when absent or unreadable (treated as not done)."""
        try:
            obj = json.loads(self.state.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return obj if isinstance(obj, dict) else None

    def write_state(self, state: dict) -> None:
        """Write ``state.json`` (atomically, with ``state_version``); call it after every other output."""
        write_json(self.state, {"state_version": STATE_VERSION, **state})

    def clear_state(self) -> None:
        """Remove the state first when a slide is (re)started, so a kill mid-slide never leaves it 'done'."""
        with contextlib.suppress(FileNotFoundError):
            self.state.unlink()

    def clear(self) -> None:
        """Remove everything in the folder (a failed slide keeps no output of an earlier successful run:
        ``nodes.*``, ``tumour.geojson``, ``overlay.png``, ``node_labels.*``, ``tumour_map.*``, ...)."""
        for p in self.path.iterdir():
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()


@dataclass(frozen=True)
class RunDir:
    """``RUN/``: the run-level tables, summary and report, and one :class:`SlideDir` per slide."""

    path: Path

    def __init__(self, path: str | Path):
        object.__setattr__(self, "path", Path(path))

    nodes_csv = property(lambda self: self.path / NODES_CSV)
    slides_csv = property(lambda self: self.path / SLIDES_CSV)
    patients_csv = property(lambda self: self.path / PATIENTS_CSV)
    summary = property(lambda self: self.path / SUMMARY_JSON)
    report = property(lambda self: self.path / REPORT_HTML)
    derived_table = property(lambda self: self.path / DERIVED_TABLE)
    lock = property(lambda self: self.path / LOCK)
    slides = property(lambda self: self.path / SLIDES)

    def slide(self, slide_id: str) -> SlideDir:
        return SlideDir(self.path / SLIDES / slide_id)

    def is_run(self) -> bool:
        """Looks like a run directory (has its ``slides.csv``)."""
        return self.slides_csv.is_file()
