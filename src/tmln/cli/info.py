"""``tmln info SLIDE``: one JSON object describing a slide."""

from __future__ import annotations

import json

import click

from tmln.cli.options import mpp_option


@click.command("info")
@click.argument("slide", type=click.Path(dir_okay=True))
@mpp_option
@click.option("--no-verify", is_flag=True, help="Skip reading a few tiles to check that the file is intact.")
def command(slide, mpp, no_verify):
    """Print a slide's size, pyramid and µm/px as one JSON object.

    \b
    Example:
      tmln info CMU-1-Small-Region.svs
      tmln info scan.tif --mpp 0.25
    Exit 0 for a readable slide; 2 with a one-line error naming the file otherwise.
    """
    from tmln.slide import Slide

    with Slide(slide, mpp=mpp) as s:
        if not no_verify:
            s.verify()
        click.echo(json.dumps(s.info()))
