"""``tmln evaluate patches``: patch-level ROC AUC, sensitivity and specificity."""

from __future__ import annotations

import click

from tmln.cli.options import out_dir_option, quiet_option


@click.command("patches")
@click.argument("predictions", type=click.Path(dir_okay=False, exists=True))
@click.option("--labels", type=click.Path(dir_okay=False, exists=True), default=None,
              help="CSV path,label (tumour/normal or 1/0). Without it, labels come from folder names "
                   "(…/tumor/x.png, …/normal/y.png).")
@click.option("--threshold", type=float, default=0.5, show_default=True, help="p_tumour >= threshold calls tumour.")
@click.option("--n-boot", type=click.IntRange(min=0), default=2000, show_default=True, help="Bootstrap replicates.")
@click.option("--seed", type=int, default=0, show_default=True, help="Bootstrap seed.")
@out_dir_option
@quiet_option
def command(predictions, labels, threshold, n_boot, seed, out, quiet):
    """Patch AUC (bootstrap CI) and sensitivity/specificity from `tmln predict-patches` output.

    PREDICTIONS is the CSV path,p_tumour. Writes patches_metrics.json, patches_scored.csv and
    patches_roc.csv to OUT.

    \b
    Example:
      tmln predict-patches camelyon16-patches/ --model demo-tumour --out preds.csv
      tmln evaluate patches preds.csv --out eval/
    """
    from pathlib import Path

    from tmln.atomic import write_csv, write_json
    from tmln.evaluate.auc import evaluate_patches, roc_curve_table

    metrics, table = evaluate_patches(predictions, labels, threshold, n_boot, seed)
    out = Path(out)
    write_csv(out / "patches_scored.csv", table)
    if metrics["auc"] is not None:
        write_csv(out / "patches_roc.csv", roc_curve_table(table["label"], table["p_tumour"]))
    write_json(out / "patches_metrics.json", metrics)
    if not quiet:
        a = metrics["auc"]
        text = "AUC undefined (one class only)" if a is None else f"AUC {a:.4f} (95% CI {metrics['auc_ci'][0]:.4f}-{metrics['auc_ci'][1]:.4f})"
        click.echo(f"{text}; {metrics['n']} patches; sensitivity {metrics['sensitivity']:.3f}, "
                   f"specificity {metrics['specificity']:.3f} at {threshold:g}")
