"""Find a slide's annotation file in a folder: the rules live in ``tmln.annotations``
(``find_annotation``, ``candidate_names``); re-exported here for the cohort code."""

from __future__ import annotations

from tmln.annotations import GENERIC_SUFFIXES, KIND_INFIXES, AmbiguousAnnotation, candidate_names, find_annotation

__all__ = ["GENERIC_SUFFIXES", "KIND_INFIXES", "AmbiguousAnnotation", "candidate_names", "find_annotation"]
