"""``tmln train nodes``: train the lymph-node U-Net (thin shell over ``tmln.train.nodes``)."""

from __future__ import annotations

import click

from tmln.cli.options import (
    Command, average_epochs_option, deprecated_alias, device_option, loader_workers_option, quiet_option, seed_option,
)


def _channels(ctx, param, value):
    if value is None:
        return None
    try:
        out = [int(v) for v in str(value).split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter("expected comma-separated integers, e.g. 64,48,32,24,16") from None
    if not out or any(v <= 0 for v in out):
        raise click.BadParameter("expected positive integers, e.g. 64,48,32,24,16")
    return out


@click.command("nodes", cls=Command)
@click.option("--out", "out", required=True, type=click.Path(file_okay=False),
              help="Model directory to write (model.safetensors + model_card.json; train/ holds log and checkpoints).")
@click.option("--slides", required=True, type=click.Path(dir_okay=False),
              help="Slides table (slide_path, patient_id[, mpp]).")
@click.option("--annotations", required=True, type=click.Path(file_okay=False),
              help="Folder with node outlines per slide: <slide_id>.nodes.geojson or <slide_id>.geojson|.json|.xml "
                   "(QuPath GeoJSON, ASAP XML).")
@click.option("--epochs", type=click.IntRange(min=1), default=40, show_default=True, help="Training epochs.")
@click.option("--model-mpp", "mpp", type=click.FloatRange(min=0, min_open=True), default=8.0, show_default=True,
              help="The model's input resolution, µm/px (slides are read whole at this resolution). Not the slides' "
                   "µm/px: that comes from the files or the slides table's mpp column.")
@deprecated_alias("--mpp", "--model-mpp", "mpp", click.FloatRange(min=0, min_open=True),
                  "the model's input µm/px; the slides' own µm/px comes from the files or the table's mpp column")
@click.option("--encoder", default="resnet18", show_default=True,
              help="segmentation-models-pytorch encoder, e.g. resnet18, efficientnet-b0, tu-mobilenetv3_small_100.")
@click.option("--encoder-depth", type=click.IntRange(1, 5), default=5, show_default=True,
              help="Encoder stages used (fewer: a smaller, coarser model).")
@click.option("--decoder-channels", callback=_channels, default=None,
              help="Decoder widths, one per encoder stage (default 256,128,64,32,16), e.g. 64,48,32,24,16 for a small model.")
@click.option("--tile-size", type=click.IntRange(min=32), default=256, show_default=True,
              help="Inference tile size, px (a multiple of 2**encoder-depth), and the training crop size unless "
                   "--crop-size is given.")
@click.option("--crop-size", type=click.IntRange(min=32), default=None,
              help="Training crop size, px (default: --tile-size). Tiles larger than the crops give a model trained "
                   "on context the context at inference (pcam-nodes: 256 px crops, 512 px tiles).")
@click.option("--overlap", type=click.IntRange(min=0), default=None,
              help="Inference tile overlap, px (default: tile size / 4, at most 64; stored in the card).")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True, help="Crops per training batch.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-3, show_default=True, help="AdamW learning rate.")
@click.option("--samples-per-epoch", type=click.IntRange(min=1), default=None,
              help="Random crops per epoch (default: about 4 per tile-sized area of the training slides).")
@click.option("--val-fraction", type=click.FloatRange(min=0, max=1, max_open=True), default=0.25, show_default=True,
              help="Fraction of patients held out for validation (best checkpoint by their Dice).")
@click.option("--no-instance-target", is_flag=True,
              help="Train the node channel only (touching nodes are then split by shape alone).")
@click.option("--border-um", type=click.FloatRange(min=0), default=24.0, show_default=True,
              help="Width of the band along borders shared by touching nodes removed from the node_core target, µm.")
@click.option("--min-node-area", "min_node_area", type=click.FloatRange(min=0), default=0.05, show_default=True,
              help="Inference: smallest node kept, mm² (stored in the card).")
@seed_option
@loader_workers_option
@deprecated_alias("--workers", "--loader-workers", "loader_workers", click.IntRange(min=0), "DataLoader processes")
@click.option("--init", "init", default=None,
              help="Initial weights to fine-tune: a bundled model name (e.g. demo-nodes), a model directory, "
                   ".safetensors, or a torch state dict (loaded weights-only); tensors of another shape stay random.")
@click.option("--non-node-crops", type=click.FloatRange(min=0, max=1, max_open=True), default=0.0, show_default=True,
              help="Share of training crops centred on tissue outside the nodes (septa, vessels, other tissue: "
                   "hard negatives).")
@click.option("--metastasis-crops", type=click.FloatRange(min=0, max=1, max_open=True), default=0.0, show_default=True,
              help="Share of training crops centred on outlined tumour inside nodes, from <slide_id>.tumour.geojson "
                   "(.json, .xml) files in --annotations where present: a node replaced by carcinoma is still a node.")
@click.option("--mistake-crops", type=click.FloatRange(min=0, max=1, max_open=True), default=0.0, show_default=True,
              help="Share of training crops centred on the model's own mistakes on the training slides (node called "
                   "outside the outlines, missed inside them), mined before the first epoch when fine-tuning (--init), "
                   "else half-way, and again every --mine-every epochs.")
@click.option("--mine-every", type=click.IntRange(min=0), default=4, show_default=True,
              help="Epochs between two minings of mistakes for --mistake-crops (0: mine once).")
@average_epochs_option
@click.option("--no-resume", is_flag=True, help="Start afresh even if OUT/train/train_state.pt exists.")
@device_option
@quiet_option
def command(out, slides, annotations, epochs, mpp, encoder, encoder_depth, decoder_channels, tile_size, crop_size, overlap,
            batch_size, lr, samples_per_epoch, val_fraction, no_instance_target, border_um, min_node_area, seed, loader_workers, init,
            non_node_crops, metastasis_crops, mistake_crops, mine_every, average_epochs, no_resume, device, quiet):
    """Train the lymph-node segmentation U-Net on slides with node outlines.

    \b
    Examples:
      tmln train nodes --out my-nodes --slides slides.csv --annotations outlines/ --epochs 40
      tmln train nodes --out small-nodes --slides slides.csv --annotations outlines/ \\
          --encoder tu-mobilenetv3_small_100 --decoder-channels 64,48,32,24,16
      tmln train nodes --out my-nodes --init pcam-nodes --slides slides.csv --annotations outlines/ \\
          --encoder tu-mobilenetv3_small_100 --decoder-channels 48,32,16,8,8 --lr 3e-4 --epochs 10 \\
          --non-node-crops 0.3
      torchrun --nproc_per_node 2 -m tmln train nodes --out my-nodes --slides slides.csv --annotations outlines/
    Interrupted runs resume from the last finished epoch when run again with the same --out.
    """
    import logging

    from tmln.train.common import env_world
    from tmln.train.nodes import train_nodes

    if not quiet:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    card = train_nodes(
        out, slides=slides, annotations=annotations, epochs=epochs, mpp=mpp, tile_size=tile_size, crop_size=crop_size,
        overlap=overlap, encoder=encoder, encoder_depth=encoder_depth, decoder_channels=decoder_channels,
        batch_size=batch_size, lr=lr, seed=seed,
        device=device, resume=not no_resume, val_fraction=val_fraction, samples_per_epoch=samples_per_epoch,
        instance_target=not no_instance_target, border_um=border_um, params={"min_node_area_mm2": min_node_area},
        workers=loader_workers, quiet=quiet, init=init, non_node_crops=non_node_crops,
        metastasis_crops=metastasis_crops, mistake_crops=mistake_crops, mine_every=mine_every,
        average_epochs=average_epochs)
    if env_world()[0] == 0 and not quiet:
        v = card.metrics.get("validation", {})
        rec = v.get("instance_recall")
        click.echo(f"model written to {out} (validation Dice {v.get('dice', float('nan')):.3f}, instance recall "
                   f"{'n/a' if rec is None else f'{rec:.3f}'}, on {card.metrics.get('validation_on')})")
