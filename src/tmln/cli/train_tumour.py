"""``tmln train tumour``: train the tumour patch classifier (thin shell over ``tmln.train.tumour``)."""

from __future__ import annotations

import click

from tmln.cli.options import (
    Command, average_epochs_option, deprecated_alias, device_option, loader_workers_option, quiet_option, seed_option,
)

MODEL_MPP_MEANING = "the model's input µm/px; the slides' own µm/px comes from the files or the table's mpp column"


@click.command("tumour", cls=Command)
@click.option("--out", "out", required=True, type=click.Path(file_okay=False),
              help="Model directory to write (model.safetensors + model_card.json; train/ holds log and checkpoints).")
@click.option("--patches", type=click.Path(file_okay=False), default=None,
              help="Patch folder with tumor/ and normal/ sub-folders (PNG, JPEG, TIFF).")
@click.option("--val-patches", type=click.Path(file_okay=False), default=None,
              help="Validation patch folder (same classes as --patches) instead of a split of --patches; use it when "
                   "file names carry no slide id (e.g. PCam's train/ and valid/).")
@click.option("--slides", type=click.Path(dir_okay=False), default=None,
              help="Slides table (slide_path, patient_id[, mpp]); needs --annotations.")
@click.option("--annotations", type=click.Path(file_okay=False), default=None,
              help="Folder with <slide stem>.xml|.geojson|.json tumour annotations (ASAP, QuPath, NCRF).")
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True, help="Training epochs.")
@click.option("--model-mpp", "mpp", type=click.FloatRange(min=0, min_open=True), default=0.5, show_default=True,
              help="The model's input resolution, µm/px (0.5 ~ 20x). Not the slides' µm/px: that comes from the files "
                   "or the slides table's mpp column, and --patches-mpp for patch folders.")
@deprecated_alias("--mpp", "--model-mpp", "mpp", click.FloatRange(min=0, min_open=True), MODEL_MPP_MEANING)
@click.option("--patch-size", type=click.IntRange(min=8), default=224, show_default=True, help="Model input size, px.")
@click.option("--arch", default="resnet18", show_default=True, help="torchvision or timm architecture name.")
@click.option("--batch-size", type=click.IntRange(min=2), default=32, show_default=True, help="Patches per training batch.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-3, show_default=True, help="AdamW learning rate.")
@seed_option
@click.option("--init", "init", default=None,
              help="Initial weights to fine-tune: a bundled model name (e.g. pcam-tumour), a model directory, "
                   ".safetensors, or a torch state dict (loaded weights-only).")
@click.option("--macenko", is_flag=True, help="Macenko stain normalisation; the reference (from the training patches) is stored in the card.")
@click.option("--macenko-reference", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Use this image as the Macenko reference instead (implies --macenko).")
@click.option("--hard-negatives", is_flag=True, help="After half the epochs, oversample the normal patches the model scores highest.")
@click.option("--patches-mpp", type=click.FloatRange(min=0, min_open=True), default=None,
              help="µm/px of the images in --patches (default: already at --model-mpp); they are resampled to "
                   "--model-mpp.")
@click.option("--groups", type=click.Path(dir_okay=False, exists=True), default=None,
              help="CSV mapping patch files (path/file column) to patients or source slides (group/patient_id column) "
                   "for the split; default: the file-name prefix before trailing coordinates.")
@click.option("--val-fraction", type=click.FloatRange(min=0, max=1, max_open=True), default=0.25, show_default=True,
              help="Fraction of patients held out for validation (0: none; the last epoch is kept).")
@click.option("--patches-per-class", type=click.IntRange(min=1), default=200, show_default=True,
              help="--slides: at most this many tumour and normal patches per slide.")
@click.option("--weight-decay", type=click.FloatRange(min=0), default=1e-4, show_default=True,
              help="AdamW's decoupled weight decay.")
@click.option("--colour-jitter", type=click.FloatRange(min=0), default=0.1, show_default=True,
              help="Colour augmentation strength: brightness/contrast/saturation 1 ± s, hue ± s/2 turns.")
@click.option("--hed-jitter", type=click.FloatRange(min=0), default=0.03, show_default=True,
              help="HED stain augmentation σ (each stain scaled 1 ± σ and shifted ± σ OD).")
@click.option("--label-region", default=None,
              help="What a patch's label refers to, recorded in the card, e.g. 'centre 32x32 px' (PCam). Default: the whole patch.")
@click.option("--keep", type=click.Choice(["best", "last"]), default="best", show_default=True,
              help="Weights to keep: the epoch of best validation AUC, or the last epoch (validation then only "
                   "sets the threshold, so its AUC is a held-out figure).")
@average_epochs_option
@click.option("--equivariant", is_flag=True,
              help="Train with weights tied over 90° turns and flips (D4 group convolutions, as Veeling et al.'s "
                   "p4m networks; resnet18/resnet34, random init): the output ignores a patch's orientation. "
                   "The model ships as the equivalent plain ResNet.")
@loader_workers_option
@deprecated_alias("--workers", "--loader-workers", "loader_workers", click.IntRange(min=0), "DataLoader processes")
@click.option("--no-resume", is_flag=True, help="Start afresh even if OUT/train/last.pt exists.")
@device_option
@quiet_option
def command(out, patches, slides, annotations, epochs, mpp, patch_size, arch, batch_size, lr, seed, init, macenko,
            macenko_reference, hard_negatives, patches_mpp, groups, val_fraction, patches_per_class, loader_workers,
            no_resume, device, quiet, val_patches, colour_jitter, hed_jitter, label_region, keep, weight_decay,
            average_epochs, equivariant):
    """Train the tumour patch classifier on a patch folder or on annotated slides.

    \b
    Examples:
      tmln train tumour --out my-tumour --patches patches/ --patches-mpp 0.25 --epochs 20
      tmln train tumour --out my-tumour --patches pcam/train --val-patches pcam/valid --model-mpp 0.97 --patch-size 96 \\
          --label-region "centre 32x32 px"
      tmln train tumour --out my-tumour --init pcam-tumour --slides slides.csv --annotations ann/ --model-mpp 0.97 \\
          --patch-size 96
      tmln train tumour --out my-tumour --slides slides.csv --annotations ann/ --model-mpp 0.5 --patch-size 224
      torchrun --nproc_per_node 4 -m tmln train tumour --out my-tumour --slides slides.csv --annotations ann/
    Interrupted runs resume from the last finished epoch when run again with the same --out.
    """
    import logging

    from tmln.errors import TmlnError
    from tmln.train.common import env_world
    from tmln.train.tumour import train_tumour

    if (patches is None) == (slides is None):
        raise click.UsageError("give either --patches DIR or --slides SLIDES.csv --annotations DIR")
    if slides is not None and annotations is None:
        raise click.UsageError("--slides needs --annotations DIR")
    if val_patches is not None and patches is None:
        raise click.UsageError("--val-patches goes with --patches")
    if not quiet:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        card = train_tumour(
            out, patches=patches, slides=slides, annotations=annotations, epochs=epochs, mpp=mpp,
            patch_size=patch_size, arch=arch, batch_size=batch_size, lr=lr, weight_decay=weight_decay, seed=seed, init_checkpoint=init,
            macenko=macenko_reference or macenko, hard_negative=hard_negatives, device=device,
            resume=not no_resume, val_fraction=val_fraction, num_workers=loader_workers, patches_mpp=patches_mpp,
            groups=groups, patches_per_class=patches_per_class, quiet=quiet, val_patches=val_patches,
            colour=colour_jitter, hed=hed_jitter, label_region=label_region, keep=keep,
            average_epochs=average_epochs, equivariant=equivariant)
    except TmlnError:
        raise
    if env_world()[0] == 0 and not quiet:
        auc = card.metrics.get("auc")
        click.echo(f"model written to {out} (validation AUC {auc if auc is None else f'{auc:.3f}'}, "
                   f"threshold {card.threshold:.3f})")
