"""tmln — lymph-node metastasis measurement (T/MLN, N stage) from whole-slide images.

Data flow (one sub-package or module per stage):
slide -> tissue -> nodes -> tumour -> measure -> cohort/report -> survival;
models/ (model directories + cards) and train/ sit beside them.
"""

__version__ = "0.1.0"

from tmln.errors import TmlnError, SlideError, MissingMppError, AnnotationError  # noqa: E402

__all__ = ["__version__", "TmlnError", "SlideError", "MissingMppError", "AnnotationError"]
