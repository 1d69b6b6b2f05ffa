"""``tmln predict-patches``: tumour probability per image of a folder (CSV ``path,p_tumour``)."""

from __future__ import annotations

import click

from tmln.cli.options import Command, deprecated_alias, device_option, loader_workers_option, quiet_option


@click.command("predict-patches", cls=Command)
@click.option("--model", required=True, help="Model directory or bundled model name (tumour classifier).")
@click.argument("folder", type=click.Path(file_okay=False))
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="Output CSV (path,p_tumour).")
@click.option("--patches-mpp", "mpp", type=click.FloatRange(min=0, min_open=True), default=None,
              help="µm/px of the images (resampled to the model's); default: already at the model's µm/px.")
@deprecated_alias("--mpp", "--patches-mpp", "mpp", click.FloatRange(min=0, min_open=True), "the images' µm/px")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True,
              help="Images per forward pass.")
@loader_workers_option
@deprecated_alias("--workers", "--loader-workers", "loader_workers", click.IntRange(min=0), "DataLoader processes")
@device_option
@quiet_option
def command(model, folder, out, mpp, batch_size, loader_workers, device, quiet):
    """Write p_tumour for every PNG, JPEG or TIFF image under FOLDER (recursive).

    \b
    Example:
      tmln predict-patches --model my-tumour patches/ --out preds.csv --patches-mpp 0.243
      tmln evaluate patches preds.csv --out eval/      # labels from tumor/ and normal/ folder names
    Paths in the CSV are relative to FOLDER. The model card supplies µm/px, patch size and normalisation.
    """
    from tmln.tumour.predict_patches import predict_patches, write_predictions

    frame = predict_patches(model, folder, mpp=mpp, batch_size=batch_size, device=device, num_workers=loader_workers)
    write_predictions(frame, out)
    if not quiet:
        click.echo(f"{len(frame)} images -> {out} (mean p_tumour {frame['p_tumour'].mean():.3f})")
