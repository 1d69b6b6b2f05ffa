"""Exceptions. Every error names the file it is about and what is wrong with it."""

from __future__ import annotations

from pathlib import Path


class TmlnError(Exception):
    """Base class: a user-facing error. The CLI prints ``str(err)`` on one line and exits 2."""

    def __init__(self, message: str, path: str | Path | None = None):
        self.path = None if path is None else str(path)
        self.message = message
        super().__init__(f"{self.path}: {message}" if self.path else message)


class SlideError(TmlnError):
    """A slide that cannot be opened or read (missing, not a slide, truncated, bad tile)."""


class MissingMppError(SlideError):
    """A step needs physical size but the slide's µm/px is unknown."""

    def __init__(self, path: str | Path):
        super().__init__(
            "microns per pixel (mpp) unknown: the slide has no openslide.mpp-x/-y property and no "
            "TIFF resolution tags. Provide it with the `mpp=` argument (Python), the `--mpp` flag "
            "(CLI) or an `mpp` column in the slides table.",
            path,
        )


class AnnotationError(TmlnError):
    """An annotation file that cannot be parsed or holds invalid geometry."""


class ModelCardError(TmlnError):
    """A model directory whose card or weights are missing or inconsistent."""


class InputTableError(TmlnError):
    """A CSV input (slides table, survival table, ...) with missing or bad columns/rows."""


class NoTissueError(SlideError):
    """Tissue detection found no tissue on a slide (blank glass, or everything rejected as pen/dirt)."""
