"""``tmln analyze``: measure a cohort into a run directory (resumable)."""

from __future__ import annotations

import sys

import click

from tmln.cli.options import (
    device_option, force_option, mpp_option, out_dir_option, precision_option, quiet_option, staging_option,
)


@click.command("analyze")
@click.option("--slides", "slides", required=True, type=click.Path(),
              help="Slides table (CSV): slide_path, patient_id, optional mpp; paths relative to the CSV's folder. Or a "
                   "folder of slides with one sub-folder per patient (named by the patient id) holding its slide files: "
                   "the derived table is written to RUN/slides_table.csv.")
@out_dir_option
@click.option("--node-annotations", type=click.Path(file_okay=False), default=None,
              help="Folder of node outlines: <slide>.nodes.geojson|.geojson|.json|.xml (QuPath GeoJSON, ASAP XML).")
@click.option("--tumour-annotations", type=click.Path(file_okay=False), default=None,
              help="Folder of tumour outlines: <slide>.tumour.geojson|.geojson|.json|.xml. No file = no tumour.")
@click.option("--node-model", default=None, help="Node segmentation model (bundled name or model directory).")
@click.option("--tumour-model", default=None, help="Tumour classifier model (bundled name or model directory).")
@click.option("--tumour-threshold", type=click.FloatRange(0, 1), default=None,
              help="P(tumour) threshold for --tumour-model regions (default: the model card's threshold).")
@click.option("--mln-rule", type=click.Choice(["ajcc", "any"]), default="ajcc", show_default=True,
              help="Metastatic node: ajcc = micro or macro metastasis; any = any tumour (Wang et al. 2021).")
@staging_option
@click.option("--no-split", is_flag=True,
              help="--node-model: do not split touching nodes (one instance per connected region), as node-map --no-split.")
@click.option("--min-node-area", "min_node_area", type=click.FloatRange(min=0), default=None,
              help="--node-model: smallest node kept, mm² (default: the model card's).")
@click.option("--method", type=click.Choice(["auto", "stream", "dense", "grid"]), default="auto", show_default=True,
              help="--tumour-model map method, as tumour-map: stream (strips), dense (overlapping tiles) or grid "
                   "(one patch per output pixel); auto = the first that applies.")
@click.option("--tile-size", type=click.IntRange(min=64), default=None,
              help="--tumour-model map: strip width (stream) or tile edge (dense) in model px, as tumour-map "
                   "(default: the engine's).")
@force_option
@quiet_option
@device_option
@precision_option
@mpp_option
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Slides processed in parallel: a local Dask cluster of this many worker processes (one thread each).")
@click.option("--scheduler", default=None, metavar="tcp://HOST:PORT",
              help="Run slides on an existing Dask cluster (dask scheduler/worker, dask-jobqueue, Kubernetes).")
@click.option("--resources", default=None, metavar="NAME=N[,...]",
              help="Dask resources each slide task asks for, e.g. GPU=1 (workers declare them: dask worker --resources GPU=1).")
@click.option("--retries", type=click.IntRange(min=0), default=1, show_default=True,
              help="With Dask: times a slide is retried after its worker died, before it is reported failed.")
def command(slides, out, node_annotations, tumour_annotations, node_model, tumour_model, tumour_threshold, mln_rule, staging,
            no_split, min_node_area, method, tile_size, force, quiet,
            device, precision, mpp, workers, scheduler, resources, retries):
    """Measure lymph-node metastasis per node, slide and patient (N stage, T/MLN).

    Writes RUN/nodes.csv, slides.csv, patients.csv, summary.json, report.html and
    RUN/slides/<slide_id>/ (nodes.geojson, tumour.geojson, overlay.png, nodes.csv, state.json).
    Rerunning skips finished slides (--force redoes them); an interrupted run resumes.
    --mpp applies to rows of the table without an mpp value.

    \b
    Examples:
      tmln analyze --slides slides.csv --out run/ --node-annotations ann/ --tumour-annotations ann/
      tmln analyze --slides slides.csv --out run/ --node-model demo-nodes --tumour-model demo-tumour
      tmln analyze --slides scans/ --out run/ --node-model M1 --tumour-model M2   # scans/<patient>/<slide>.svs
      tmln analyze --slides slides.csv --out run/ --node-model M1 --tumour-model M2 --workers 4
      tmln analyze ... --scheduler tcp://10.0.0.5:8786 --resources GPU=1
    Exit 0 when every slide was measured; 1 when a slide or patient failed (see slides.csv,
    summary.json); 2 for an unusable input (bad table, missing folder, unknown model).
    """
    import contextlib

    from tmln.cohort.config import RunConfig
    from tmln.cohort.run import run_cohort

    if (no_split or min_node_area is not None) and not node_model:
        raise click.UsageError("--no-split and --min-node-area apply to --node-model (annotations are measured as drawn)")
    if (method != "auto" or tile_size is not None) and not tumour_model:
        raise click.UsageError("--method and --tile-size apply to --tumour-model")
    if workers and scheduler:
        raise click.UsageError("give --workers (a local cluster) or --scheduler (an existing one), not both")
    config = RunConfig(node_annotations=node_annotations, tumour_annotations=tumour_annotations,
                       node_model=node_model, tumour_model=tumour_model, tumour_threshold=tumour_threshold,
                       tumour_precision=precision, mln_rule=mln_rule, staging=staging, node_split=not no_split,
                       min_node_area_mm2=min_node_area, tumour_method=method, tumour_tile_size=tile_size,
                       device=device, mpp=mpp)
    executor = contextlib.nullcontext(None)
    if workers or scheduler:
        from tmln.cohort.dask_executor import DaskExecutor, parse_resources

        executor = DaskExecutor(workers=workers, scheduler=scheduler, resources=parse_resources(resources),
                                retries=retries)
    with executor as ex:
        summary = run_cohort(slides, out, config, force=force, quiet=quiet, executor=ex)
    if not quiet or summary.failures:
        click.echo(f"{summary.n_slides} slides: {summary.n_done} measured ({summary.n_reused} from an earlier run), "
                   f"{summary.n_failed} failed; {summary.n_patients_staged} of {summary.n_patients} patients staged; "
                   f"results in {summary.out_dir}", err=bool(summary.failures))
    for f in summary.failures:
        click.echo(f"failed {f['kind']} {f['id']}: {f['error']}", err=True)
    for u in summary.unread:
        click.echo(f"slide {u['slide_id']} (patient {u['patient_id']}): {len(u['tiles_px'])} unreadable tile(s), "
                   f"{u['unread_area_mm2']:.4g} mm² ({u['unread_node_area_mm2']:.4g} mm² inside nodes); "
                   "measured around them, see the slide's notes", err=True)
    if summary.exit_code:
        sys.exit(summary.exit_code)
