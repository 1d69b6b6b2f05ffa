"""``tmln tissue SLIDE --out mask.png``: tissue mask at a stated µm/px, with a JSON sidecar."""

from __future__ import annotations

import json

import click

from tmln.cli.options import mpp_option


@click.command("tissue")
@click.argument("slide", type=click.Path(dir_okay=True))
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False),
              help="Mask PNG to write (0/255); <stem>.json beside it gets µm/px, area and parameters.")
@mpp_option
@click.option("--mask-mpp", type=click.FloatRange(min=0, min_open=True), default=8.0, show_default=True,
              help="µm/px of the mask.")
@click.option("--min-area-mm2", type=click.FloatRange(min=0), default=0.02, show_default=True,
              help="Drop tissue pieces smaller than this.")
@click.option("--require-tissue", is_flag=True, help="Exit 2 (error) instead of 0 (warning) when no tissue is found.")
def command(slide, out, mpp, mask_mpp, min_area_mm2, require_tissue):
    """Detect tissue (Otsu on saturation, pen marks and glass rejected) and write a mask PNG.

    \b
    Example:
      tmln tissue slide.svs --out slide.tissue.png
      tmln tissue scan.tif --mpp 0.25 --out mask.png --mask-mpp 4
    Prints the sidecar JSON (mpp, area_mm2, tissue_found). A slide without tissue gives an empty
    mask and a warning (exit 0), or exit 2 with --require-tissue.
    """
    from tmln.slide import Slide
    from tmln.tissue import detect_tissue

    with Slide(slide, mpp=mpp) as s:
        tm = detect_tissue(s, mpp=mask_mpp, min_area_mm2=min_area_mm2)
    if require_tissue:
        tm.require()
    tm.save(out)
    if tm.empty:
        click.echo(f"warning: {slide}: no tissue found (empty mask written)", err=True)
    click.echo(json.dumps(tm.sidecar()))
