"""``tmln evaluate froc``: Camelyon16 lesion-detection FROC of prediction CSVs against annotations."""

from __future__ import annotations

import click

from tmln.cli.options import out_dir_option, quiet_option


@click.command("froc")
@click.option("--truth", required=True, type=click.Path(file_okay=False, exists=True),
              help="Folder of <slide_id>.xml (ASAP/Camelyon16; .geojson/.json also read). No file = negative slide.")
@click.option("--predictions", required=True, type=click.Path(file_okay=False, exists=True),
              help="Folder of predictions: <slide_id>.csv with probability,x,y (level-0 px), header optional.")
@click.option("--slides", type=click.Path(exists=True), default=None,
              help="Folder of slides (matched by file stem) or CSV slide_id,width_px,height_px[,mpp]: "
                   "size and µm/px of the tumour slides.")
@out_dir_option
@click.option("--level", type=click.IntRange(0, 10), default=5, show_default=True,
              help="Evaluation-mask level (downsample 2**level), as in the official code.")
@click.option("--mpp", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Level-0 µm/px for every slide. The official evaluation uses 0.243 for all Camelyon16 "
                   "slides: pass --mpp 0.243 to reproduce published numbers.")
@click.option("--allow-missing", is_flag=True,
              help="Count an annotated slide without a predictions CSV as a slide with no detections.")
@click.option("--all-thresholds", is_flag=True,
              help="Keep the lowest probability as a threshold (the official code drops the lowest pooled "
                   "value, normally the 0 of missed lesions).")
@click.option("--use-masks", is_flag=True,
              help="Where --truth holds both <slide_id>.xml and the official <slide_id>_Mask.tif, use the mask "
                   "(masks are always used for slides without an annotation file).")
@quiet_option
def command(truth, predictions, slides, out, level, mpp, allow_missing, all_thresholds, use_masks, quiet):
    """Camelyon16 FROC: mean sensitivity at 0.25, 0.5, 1, 2, 4 and 8 false positives per slide.

    Truth: ASAP XML per tumour slide (or the official <slide_id>_Mask.tif). Rules of the official
    Camelyon16 evaluation (75 µm/2 margin, ITC regions < 275 µm ignored,
    one hit per lesion); see docs/evaluation.md. Writes froc.json, froc_curve.csv, froc_slides.csv,
    froc_detections.csv and froc.png to OUT.

    \b
    Example:
      tmln evaluate froc --truth lesion_annotations/ --predictions my_csvs/ \\
          --slides testing/images/ --mpp 0.243 --out eval/
    """
    from tmln.evaluate.froc import evaluate_froc, write_froc

    result = evaluate_froc(truth, predictions, slides=slides, level=level, mpp=mpp,
                           allow_missing=allow_missing, official_thresholds=not all_thresholds,
                           use_masks=use_masks)
    write_froc(result, out)
    if not quiet:
        sens = "  ".join(f"{k}:{v:.3f}" for k, v in result.sensitivities.items())
        click.echo(f"FROC {result.froc:.4f}  ({result.n_slides} slides, {result.n_tumour_slides} with tumour, "
                   f"{result.n_lesions} lesions)  sensitivity at FPs/slide {sens}")
