"""``tmln train {tumour,nodes}``: train a model on your own annotations."""

from __future__ import annotations

import click

from tmln.cli import LazyGroup


@click.group("train", cls=LazyGroup, commands={"tumour": "train_tumour", "nodes": "train_nodes"})
def command():
    """Train the tumour patch classifier or the lymph-node U-Net; writes a model directory
    (model.safetensors + model_card.json)."""
