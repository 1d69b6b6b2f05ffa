"""``tmln evaluate maps``: pixel-level agreement of dense tumour maps with tumour outlines, and the
threshold that fits the dense maps (``tmln.evaluate.maps``)."""

from __future__ import annotations

import sys

import click

from tmln.cli.options import device_option, mpp_option, out_dir_option, precision_option, quiet_option


@click.command("maps")
@click.option("--slides", "slides", required=True, type=click.Path(dir_okay=False, exists=True),
              help="Slides table (CSV): slide_path, patient_id, optional mpp.")
@click.option("--tumour-annotations", required=True, type=click.Path(file_okay=False, exists=True),
              help="Folder of tumour outlines <slide>.tumour.geojson|.geojson|.json|.xml; no file = no tumour.")
@click.option("--model", required=True, help="Tumour classifier (bundled name or model directory).")
@click.option("--node-annotations", type=click.Path(file_okay=False, exists=True), default=None,
              help="Folder of node outlines: map and score the nodes only (as tmln analyze does); default: the tissue.")
@click.option("--rule", type=click.Choice(["youden", "dice"]), default="youden", show_default=True,
              help="Threshold to choose: max sensitivity + specificity - 1, or max pixel Dice.")
@click.option("--write-model", type=click.Path(file_okay=False), default=None,
              help="Save a copy of the model whose card carries the chosen threshold here.")
@out_dir_option
@device_option
@precision_option
@mpp_option
@quiet_option
def command(slides, tumour_annotations, model, node_annotations, rule, write_model, out, device, precision, mpp,
            quiet):
    """Compare dense tumour maps with tumour outlines pixel by pixel and choose a threshold for them.

    The card threshold of a tumour classifier comes from isolated validation patches; dense maps
    see each patch with its surrounding tissue and may be calibrated differently. Writes
    OUT/calibration.json (pixel AUC, chosen threshold, metrics at it and at the card's),
    OUT/thresholds.csv, OUT/slides.csv and OUT/maps/ (reused by a rerun).

    \b
    Examples:
      tmln evaluate maps --slides val.csv --tumour-annotations ann/ --model M --out cal/
      tmln evaluate maps ... --node-annotations nodes/ --rule dice --write-model M_dense/
    Exit 0 when every slide was mapped, 1 when some failed (see OUT/slides.csv), 2 when nothing
    could be calibrated.
    """
    from tmln.evaluate.maps import calibrate_threshold

    r = calibrate_threshold(slides, tumour_annotations, model, out, node_annotations=node_annotations, rule=rule,
                            device=device, precision=precision, mpp=mpp, write_model=write_model, quiet=quiet)
    if not quiet:
        def f(v):
            return "n/a" if v is None else f"{v:.3f}"

        c, k = r["at_chosen"], r["at_card"]
        click.echo(f"{r['slides_mapped']} of {r['slides']} slides, {r['pixels']} map pixels ({r['tumour_pixels']} tumour); "
                   f"pixel AUC {f(r['pixel_auc'])}")
        click.echo(f"card threshold {r['card_threshold']:.4f}: sensitivity {f(k['sensitivity'])}, specificity "
                   f"{f(k['specificity'])}, Dice {f(k['dice'])}")
        click.echo(f"{r['rule']} threshold {r['chosen_threshold']:.4f}: sensitivity {f(c['sensitivity'])}, specificity "
                   f"{f(c['specificity'])}, Dice {f(c['dice'])}")
        if "written_model" in r:
            click.echo(f"model with this threshold: {r['written_model']}")
    if r["slides_failed"]:
        click.echo(f"{r['slides_failed']} slide(s) failed: see {out}/slides.csv", err=True)
        sys.exit(1)
