"""``tmln tumour-map``: tumour probability map and tumour regions of one slide (thin shell over
``tmln.tumour``)."""

from __future__ import annotations

import click

from tmln.cli.options import (
    Command, deprecated_alias, device_option, map_loader_workers_option, mpp_option, out_dir_option, precision_option, quiet_option,
)


@click.command("tumour-map", cls=Command)
@click.argument("slide", type=click.Path(dir_okay=False))
@click.option("--model", required=True, help="Tumour classifier: model directory or bundled model name.")
@out_dir_option
@click.option("--mask", type=click.Choice(["tissue", "nodes", "none"]), default=None,
              help="Region to map: tissue (default), nodes (needs --node-annotations; default when given) or none.")
@click.option("--node-annotations", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Node outlines (QuPath GeoJSON, ASAP XML, NCRF JSON) restricting the map and the regions.")
@click.option("--threshold", type=click.FloatRange(0, 1), default=None,
              help="P(tumour) threshold for tumour.geojson (default: the model card's).")
@device_option
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Tiles per forward pass for --method dense, patches for grid (default 1 tile on CPU, 2 on "
                   "CUDA; 64 patches). The streamed default runs one strip at a time.")
@map_loader_workers_option
@deprecated_alias("--workers", "--loader-workers", "workers", click.IntRange(min=0), "DataLoader processes")
@click.option("--tile-size", type=click.IntRange(min=64), default=None,
              help="Strip width (stream; default 4096 on CPU, 8192 on CUDA) or tile edge (dense; 2048 / 4096) in "
                   "model px; wider wastes less on the receptive-field margin.")
@click.option("--method", type=click.Choice(["auto", "stream", "dense", "grid"]), default="auto", show_default=True,
              help="stream = fully convolutional over strips streamed band by band (ResNet/DenseNet/MobileNetV2); "
                   "dense = the same in overlapping tiles; grid = one patch per output pixel (any architecture). "
                   "auto = the first that applies.")
@click.option("--grid-stride", type=click.IntRange(min=1), default=None,
              help="Output stride in model px for --method grid (default: patch size / 2).")
@precision_option
@mpp_option
@quiet_option
def command(slide, model, out, mask, node_annotations, threshold, device, batch_size, workers, tile_size, method,
            grid_stride, precision, mpp, quiet):
    """Map P(tumour) over a slide with a patch classifier, and outline the tumour.

    Writes into OUT: tumour_map.npy (float32 P(tumour), NaN outside the mapped region),
    tumour_map.json (its µm/px, origin in level-0 px, model, threshold), tumour_map.png (preview)
    and tumour.geojson (regions with P >= threshold, level-0 px, QuPath-compatible, area_mm2).

    \b
    Example:
      tmln tumour-map slide.svs --model demo-tumour --out tm/
      tmln tumour-map slide.tif --model my-model/ --out tm/ --node-annotations slide.nodes.geojson
      tmln tumour-map scan.tif --mpp 0.25 --model my-model/ --out tm/ --mask none --threshold 0.7
    """
    from pathlib import Path

    from tmln.annotations import feature, node_outlines, read_annotations, write_geojson
    from tmln.rundir import TUMOUR_GEOJSON
    from tmln.slide import Slide
    from tmln.tumour import regions_from_map, tumour_map

    with Slide(slide, mpp=mpp) as s:
        nodes = None
        if node_annotations:
            nodes, _ = node_outlines(read_annotations(node_annotations, slide_size=s.dimensions))
        if mask is None:
            mask = "nodes" if nodes is not None else "tissue"
        if mask == "nodes" and nodes is None:
            raise click.UsageError("--mask nodes needs --node-annotations")
        pm = tumour_map(s, model, mask=None if mask == "none" else mask, node_polygons=nodes, out_dir=out,
                        device=device, batch_size=batch_size, num_workers=workers, tile_size=tile_size,
                        method=method, grid_stride=grid_stride, precision=precision, progress=not quiet)
        regions = regions_from_map(pm, threshold=threshold, node_polygons=nodes if mask == "nodes" else None)
        um2 = s.mpp_x * s.mpp_y
        feats = [feature(p, classification="Tumor", name=f"tumour {i + 1}",
                         measurements={"area_mm2": p.area * um2 / 1e6})
                 for i, p in enumerate(regions)]
        write_geojson(Path(out) / TUMOUR_GEOJSON, feats)
    if not quiet:
        t = pm.threshold if threshold is None else threshold
        area = sum(f["properties"]["measurements"]["area_mm2"] for f in feats)
        click.echo(f"map {pm.shape[1]}x{pm.shape[0]} at {pm.mpp:g} µm/px ({pm.info['method']}, "
                   f"{pm.info['timing']['total_s']:.1f} s); {len(feats)} region(s) with P >= {t:g}, "
                   f"{area:.3f} mm²; written to {out}")
