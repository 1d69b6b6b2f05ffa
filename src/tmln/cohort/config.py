"""One run's configuration: what ``tmln analyze`` (or ``tmln.run_cohort``) was asked to do.

``RunConfig`` is built once (by the CLI, or from ``run_cohort``'s keyword arguments), checked once,
carried by every ``SlideJob`` and written into ``summary.json`` as ``parameters``; a new analyze option
is a field here, its flag in ``cli/analyze.py`` and its use where it acts.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from pathlib import Path

from tmln.errors import TmlnError
from tmln.measure.nodes import MEASURE_VERSION
from tmln.measure.staging import MLN_RULES, STAGING_SYSTEMS

# model post-processing and map knobs: in the summary (and the slide identity) only when chosen
MODEL_KNOBS = ("node_split", "min_node_area_mm2", "tumour_method", "tumour_tile_size")


@dataclass(frozen=True)
class RunConfig:
    """The options of one run (frozen; picklable, so it travels with each slide job).

    node_annotations / tumour_annotations : folders with per-slide annotation files.
    node_model / tumour_model : model names or directories (as strings).
    tumour_threshold : P(tumour) threshold overriding the tumour model card's (None = the card's).
    tumour_precision : tumour classifier arithmetic (``tmln.tumour.tumour_map``'s ``precision``).
    mln_rule : ``ajcc`` (micro/macro metastatic) or ``any`` (any tumour).
    staging : the system of patients.csv's ``n_stage``; changes only the run-level tables.
    node_split / min_node_area_mm2 : node-model post-processing (False: touching nodes stay one
        instance; smallest node kept, mm²; None = the model card's).
    tumour_method / tumour_tile_size : the tumour map's method and strip/tile size, model px.
    device : torch device for the models. mpp : level-0 µm/px for table rows without an ``mpp`` cell.
    overlay_max_px : longer side of ``overlay.png``, px.
    """

    node_annotations: str | None = None
    tumour_annotations: str | None = None
    node_model: str | None = None
    tumour_model: str | None = None
    tumour_threshold: float | None = None
    tumour_precision: str = "auto"
    mln_rule: str = "ajcc"
    staging: str = "gastric"
    node_split: bool = True
    min_node_area_mm2: float | None = None
    tumour_method: str = "auto"
    tumour_tile_size: int | None = None
    device: str = "auto"
    mpp: float | None = None
    overlay_max_px: int = 1500

    def __post_init__(self):
        # model names or directories as strings (they go into the job parameters and summary.json)
        for name in ("node_model", "tumour_model"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                object.__setattr__(self, name, str(value))

    def replace(self, **changes) -> RunConfig:
        return dataclasses.replace(self, **changes)

    def check(self) -> None:
        """Raise ``TmlnError`` for a configuration no slide can run with (one source per kind, known
        rule and staging system, existing folders, importable model providers)."""
        if self.mln_rule not in MLN_RULES:
            raise TmlnError(f"unknown MLN rule {self.mln_rule!r}; expected one of {', '.join(MLN_RULES)}")
        if self.staging not in STAGING_SYSTEMS:
            raise TmlnError(f"unknown staging system {self.staging!r}; expected one of {', '.join(STAGING_SYSTEMS)}")
        if self.node_annotations and self.node_model:
            raise TmlnError("give either node annotations or a node model, not both")
        if self.tumour_annotations and self.tumour_model:
            raise TmlnError("give either tumour annotations or a tumour model, not both")
        if not (self.node_annotations or self.node_model):
            raise TmlnError("no node source: give --node-annotations DIR or --node-model MODEL")
        if not (self.tumour_annotations or self.tumour_model):
            raise TmlnError("no tumour source: give --tumour-annotations DIR or --tumour-model MODEL")
        for folder, what in ((self.node_annotations, "node"), (self.tumour_annotations, "tumour")):
            if folder and not Path(folder).is_dir():
                raise TmlnError(f"{what} annotation folder not found", folder)
        if self.node_model:
            node_provider()
        if self.tumour_model:
            tumour_provider()

    def chosen_knobs(self) -> dict:
        """The model knobs set away from their defaults (None, True and "auto" are defaults)."""
        knobs = {k: getattr(self, k) for k in MODEL_KNOBS}
        return {k: v for k, v in knobs.items() if not (v is None or v is True or (isinstance(v, str) and v == "auto"))}

    def summary_parameters(self, slides_csv: str | Path) -> dict:
        """``summary.json``'s ``parameters``: the configuration, folders resolved, default knobs left out."""
        def folder(p):
            return None if not p else str(Path(p).resolve())

        return {
            "slides_csv": str(Path(slides_csv).resolve()),
            "node_annotations": folder(self.node_annotations),
            "tumour_annotations": folder(self.tumour_annotations),
            "node_model": self.node_model,
            "tumour_model": self.tumour_model,
            "tumour_threshold": self.tumour_threshold,
            "tumour_precision": self.tumour_precision,
            "mln_rule": self.mln_rule,
            "staging": self.staging,
            **self.chosen_knobs(),
            "mpp": self.mpp,
            "nodes_from": f"model {self.node_model}" if self.node_model else "annotations",
            "tumour_from": f"model {self.tumour_model}" if self.tumour_model else "annotations",
            "measure_version": MEASURE_VERSION,
        }


# ---------------------------------------------------------------------------- model providers
def node_provider():
    """``tmln.nodes.regions_from_model``, imported lazily; a clear error when not installed."""
    return _provider("tmln.nodes", "--node-model")


def tumour_provider():
    """``tmln.tumour.regions_from_model``, imported lazily; a clear error when not installed."""
    return _provider("tmln.tumour", "--tumour-model")


def _provider(module: str, option: str):
    try:
        mod = importlib.import_module(module)
    except Exception as exc:  # ImportError, or a broken optional dependency (torch, ...)
        raise TmlnError(f"{option} needs {module}.regions_from_model, which cannot be imported "
                        f"({type(exc).__name__}: {exc})") from None
    fn = getattr(mod, "regions_from_model", None)
    if not callable(fn):
        raise TmlnError(f"{option} needs {module}.regions_from_model, which this installation does not provide yet")
    return fn
