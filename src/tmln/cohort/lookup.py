"""Find a slide's annotation file in a folder.

Node folder, in order: ``<stem>.nodes.geojson``, ``<stem>.nodes.json``, ``<stem>.nodes.xml``, then the
generic ``<stem>.geojson``, ``<stem>.json``, ``<stem>.xml``. Tumour folder: the same with ``.tumour``
(``.tumor`` also accepted). A kind-specific file wins over a generic one; two generic files for one
slide (e.g. both ``S1.geojson`` and ``S1.xml``) are ambiguous and the slide fails. So a phantom folder
(``S1.nodes.geojson`` + ``S1.tumour.geojson``) can be given as both folders, and a folder with one
file per slide holding nodes and tumour classes (``S1.geojson``) works the same way.
"""

from __future__ import annotations

from pathlib import Path

GENERIC_SUFFIXES = (".geojson", ".json", ".xml")
KIND_INFIXES = {"nodes": (".nodes", ".node"), "tumour": (".tumour", ".tumor")}


class AmbiguousAnnotation(Exception):
    pass


def candidate_names(slide_id: str, kind: str) -> list[str]:
    """File names looked for, kind-specific first: ``S1.tumour.geojson`` ... ``S1.geojson``, ``S1.json``, ``S1.xml``."""
    return [f"{slide_id}{infix}{suf}" for infix in (*KIND_INFIXES[kind], "") for suf in GENERIC_SUFFIXES]


def find_annotation(folder: str | Path, slide_id: str, kind: str) -> Path | None:
    """The annotation file of ``slide_id`` (kind ``"nodes"`` or ``"tumour"``) in ``folder``, or None.

    Raises ``AmbiguousAnnotation`` when several generic candidates exist.
    """
    folder = Path(folder)
    for infix in KIND_INFIXES[kind]:
        for suf in GENERIC_SUFFIXES:
            p = folder / f"{slide_id}{infix}{suf}"
            if p.is_file():
                return p
    found = [folder / f"{slide_id}{suf}" for suf in GENERIC_SUFFIXES if (folder / f"{slide_id}{suf}").is_file()]
    if len(found) > 1:
        raise AmbiguousAnnotation(
            f"several {kind} annotation files for slide {slide_id!r} in {folder}: "
            f"{', '.join(p.name for p in found)}; keep one")
    return found[0] if found else None
