"""``tmln evaluate slides``: slide-level ROC AUC (bootstrap CI), sensitivity and specificity."""

from __future__ import annotations

import click

from tmln.cli.options import out_dir_option, quiet_option


@click.command("slides")
@click.option("--table", type=click.Path(dir_okay=False, exists=True), default=None,
              help="CSV slide_id,score,label (label tumour/normal or 1/0).")
@click.option("--predictions", type=click.Path(file_okay=False, exists=True), default=None,
              help="Folder of Camelyon16 prediction CSVs (probability,x,y); the slide score is --score of them.")
@click.option("--truth", type=click.Path(file_okay=False, exists=True), default=None,
              help="With --predictions: folder of annotation files; a slide with a tumour annotation is positive.")
@click.option("--labels", type=click.Path(dir_okay=False, exists=True), default=None,
              help="With --predictions: CSV slide_id,label instead of --truth.")
@click.option("--score", "reduce", type=click.Choice(["max", "mean", "top10_mean", "count"]), default="max",
              show_default=True, help="Slide score from its detections (no detections = 0).")
@click.option("--threshold", type=float, default=0.5, show_default=True, help="Score >= threshold calls a slide tumour.")
@click.option("--n-boot", type=click.IntRange(min=0), default=2000, show_default=True, help="Bootstrap replicates.")
@click.option("--seed", type=int, default=0, show_default=True, help="Bootstrap seed.")
@out_dir_option
@quiet_option
def command(table, predictions, truth, labels, reduce, threshold, n_boot, seed, out, quiet):
    """Slide-level ROC AUC with a stratified bootstrap CI (Camelyon16 task 2).

    Writes slides_auc.json, slides_scores.csv and slides_roc.csv to OUT.

    \b
    Examples:
      tmln evaluate slides --table slide_scores.csv --out eval/
      tmln evaluate slides --predictions my_csvs/ --truth lesion_annotations/ --out eval/
    """
    from pathlib import Path

    from tmln.atomic import write_csv, write_json
    from tmln.errors import TmlnError
    from tmln.evaluate import auc

    if (table is None) == (predictions is None):
        raise TmlnError("give exactly one of --table or --predictions")
    if table is not None:
        frame = auc.read_slide_table(table)[["slide_id", "score", "label"]]
    else:
        frame = auc.slide_scores_from_predictions(predictions, reduce)
        if (truth is None) == (labels is None):
            raise TmlnError("with --predictions give exactly one of --truth or --labels")
        if truth is not None:
            frame["label"] = auc.slide_labels_from_truth(truth, list(frame["slide_id"]))
        else:
            mapping = auc.read_slide_labels(labels)
            missing = [s for s in frame["slide_id"] if s not in mapping]
            if missing:
                from tmln.errors import InputTableError

                raise InputTableError(f"no label for slide {missing[0]!r}", labels)
            frame["label"] = [mapping[s] for s in frame["slide_id"]]
    metrics = auc.evaluate_slides(frame["score"].to_numpy(), frame["label"].to_numpy(), threshold, n_boot, seed)
    metrics["score"] = "table" if table is not None else reduce
    out = Path(out)
    write_csv(out / "slides_scores.csv", frame)
    if metrics["auc"] is not None:
        write_csv(out / "slides_roc.csv", auc.roc_curve_table(frame["label"], frame["score"]))
    write_json(out / "slides_auc.json", metrics)
    if not quiet:
        a = metrics["auc"]
        ci = metrics["auc_ci"]
        text = "AUC undefined (one class only)" if a is None else f"AUC {a:.4f} (95% CI {ci[0]:.4f}-{ci[1]:.4f})"
        click.echo(f"{text}; {metrics['n_positive']} tumour / {metrics['n_negative']} normal slides; "
                   f"sensitivity {metrics['sensitivity']:.3f}, specificity {metrics['specificity']:.3f} at {threshold:g}")
