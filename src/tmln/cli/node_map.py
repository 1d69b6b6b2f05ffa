"""``tmln node-map``: lymph-node instances of one slide (thin shell over ``tmln.nodes``)."""

from __future__ import annotations

import click

from tmln.cli.options import (
    device_option, map_loader_workers_option, mpp_option, node_precision_option, out_dir_option, quiet_option,
)


@click.command("node-map")
@click.argument("slide", type=click.Path(dir_okay=False))
@click.option("--model", required=True, help="Node model directory or bundled model name (see `tmln models`).")
@out_dir_option
@click.option("--no-split", is_flag=True, help="Do not split touching nodes (one instance per connected region).")
@click.option("--min-node-area", "min_node_area", type=click.FloatRange(min=0), default=None,
              help="Smallest node kept, mm² (default: the model card's).")
@mpp_option
@device_option
@node_precision_option
@map_loader_workers_option
@quiet_option
def command(slide, model, out, no_split, min_node_area, mpp, device, precision, workers, quiet):
    """Segment the lymph nodes of a slide into instances.

    Writes into OUT: node_labels.npy (int32 instance labels at the model's µm/px) + node_labels.json
    (its µm/px and origin), nodes.geojson (QuPath, level-0 px, one feature per node with area_mm2)
    and node_labels.png (a preview).

    \b
    Example:
      tmln node-map slide.svs --model demo-nodes --out nodes/
      tmln node-map scan.tif --mpp 0.25 --model my-nodes --out nodes/ --no-split
    """
    from tmln.nodes.infer import NodeSegmenter, node_map

    params = {} if min_node_area is None else {"min_node_area_mm2": float(min_node_area)}
    seg = NodeSegmenter(model, device=device, params=params, precision=precision, num_workers=workers)
    progress = None
    if not quiet:
        from tqdm import tqdm

        bar = tqdm(total=0, unit="tile", desc="node-map", leave=False)

        def progress(done, total):
            bar.total = total
            bar.n = done
            bar.refresh()

    nm = node_map(slide, seg, out_dir=out, split_touching=False if no_split else None, mpp=mpp, progress=progress)
    if not quiet:
        bar.close()
        click.echo(f"{int(nm.labels.max())} node(s) at {nm.mpp:g} µm/px ({seg.predict.info['precision']}) "
                   f"written to {out}")
