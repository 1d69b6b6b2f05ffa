"""tmln — lymph-node metastasis measurement (T/MLN, N stage) from whole-slide images.

Data flow (one sub-package or module per stage; docs/architecture.md draws the layers):
slide -> tissue -> nodes -> tumour -> measure -> cohort/report -> survival;
models/ (model directories + cards) and train/ sit beside them.

The public facade: ``import tmln`` is cheap (the errors and the version only); each name below is
imported from its module on first use::

    tmln.Slide, tmln.run_cohort, tmln.RunDir, tmln.read_annotations, tmln.tumour_map, tmln.node_map,
    tmln.measure_slide, tmln.aggregate_patients, tmln.read_card
"""

from __future__ import annotations

import importlib
from typing import Any

from tmln.errors import AnnotationError, MissingMppError, SlideError, TmlnError

__version__ = "0.1.0"

# public name -> the module that defines it (imported on first attribute access). No TYPE_CHECKING imports
# here: modules below the cohort import tmln.__version__ from this package, and the layers contract follows them.
_LAZY = {
    "Slide": "tmln.slide",
    "read_annotations": "tmln.annotations",
    "measure_slide": "tmln.measure.nodes",
    "aggregate_patients": "tmln.measure.patients",
    "read_card": "tmln.models.card",
    "node_map": "tmln.nodes.infer",
    "tumour_map": "tmln.tumour.engine",
    "run_cohort": "tmln.cohort.run",
    "RunDir": "tmln.rundir",
}

__all__ = [
    "__version__", "TmlnError", "SlideError", "MissingMppError", "AnnotationError",
    "Slide", "read_annotations", "measure_slide", "aggregate_patients", "read_card", "node_map", "tumour_map",
    "run_cohort", "RunDir",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tmln' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next access is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
