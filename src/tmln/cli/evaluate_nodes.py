"""``tmln evaluate nodes``: node segmentation (Dice, instance detection) against reference outlines."""

from __future__ import annotations

import click

from tmln.cli.options import out_dir_option, quiet_option


@click.command("nodes")
@click.option("--truth", required=True, type=click.Path(file_okay=False, exists=True),
              help="Folder of reference node outlines: <slide_id>.nodes.geojson or <slide_id>.geojson|.json|.xml.")
@click.option("--predictions", required=True, type=click.Path(file_okay=False, exists=True),
              help="Folder of predicted nodes: the same file names, <slide_id>/nodes.geojson or node_labels.npy "
                   "(tmln node-map output), or a tmln run directory (slides/<slide_id>/).")
@click.option("--slides", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Slides table (slide_path, patient_id[, mpp]): the slides to evaluate and their µm/px "
                   "(for mm² columns). Default: every node file in --truth.")
@out_dir_option
@click.option("--iou", type=click.FloatRange(min=0, max=1, min_open=True), default=0.5, show_default=True,
              help="IoU needed for a predicted node to match a reference node.")
@quiet_option
def command(truth, predictions, slides, out, iou, quiet):
    """Per-slide Dice/IoU of node areas, instance precision/recall/count error at IoU >= 0.5, and
    split/merge errors. Writes nodes_slides.csv, nodes_matches.csv and nodes.json to OUT.

    \b
    Example:
      tmln evaluate nodes --truth outlines/ --predictions run/ --slides slides.csv --out eval/
    """
    from tmln.evaluate.nodes import evaluate_nodes, write_evaluation

    frame, matches, summary = evaluate_nodes(truth, predictions, slides=slides, iou=iou)
    write_evaluation(out, frame, matches, summary)
    if not quiet:
        def f(v):
            return "n/a" if v is None else f"{v:.3f}"

        click.echo(f"{summary['slides']} slide(s): Dice {f(summary['dice_pooled'])} (pooled), instance precision "
                   f"{f(summary['precision'])}, recall {f(summary['recall'])}, count error {summary['count_error']:+d}, "
                   f"splits {summary['split_errors']}, merges {summary['merge_errors']}")
