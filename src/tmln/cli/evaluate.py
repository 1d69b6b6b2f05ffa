"""``tmln evaluate {froc,slides,patches,nodes,staging,maps}``: compare predictions with a reference."""

from __future__ import annotations

import click

from tmln.cli import LazyGroup


@click.group(
    "evaluate",
    cls=LazyGroup,
    commands={
        "froc": "evaluate_froc",
        "slides": "evaluate_slides",
        "patches": "evaluate_patches",
        "nodes": "evaluate_nodes",
        "staging": "evaluate_staging",
        "maps": "evaluate_maps",
    },
)
def command():
    """Evaluate models: Camelyon16 FROC, slide/patch AUC, node Dice and detection, N-stage agreement,
    tumour-map threshold calibration."""
