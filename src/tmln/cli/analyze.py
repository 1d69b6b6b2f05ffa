"""``tmln analyze``: measure a cohort into a run directory (resumable)."""

from __future__ import annotations

import sys

import click

from tmln.cli.options import device_option, force_option, mpp_option, out_dir_option, quiet_option


@click.command("analyze")
@click.option("--slides", "slides", required=True, type=click.Path(dir_okay=False),
              help="Slides table (CSV): slide_path, patient_id, optional mpp. Paths relative to the CSV's folder.")
@out_dir_option
@click.option("--node-annotations", type=click.Path(file_okay=False), default=None,
              help="Folder of node outlines: <slide>.nodes.geojson|.geojson|.json|.xml (QuPath GeoJSON, ASAP XML).")
@click.option("--tumour-annotations", type=click.Path(file_okay=False), default=None,
              help="Folder of tumour outlines: <slide>.tumour.geojson|.geojson|.json|.xml. No file = no tumour.")
@click.option("--node-model", default=None, help="Node segmentation model (bundled name or model directory).")
@click.option("--tumour-model", default=None, help="Tumour classifier model (bundled name or model directory).")
@click.option("--mln-rule", type=click.Choice(["ajcc", "any"]), default="ajcc", show_default=True,
              help="Metastatic node: ajcc = micro or macro metastasis; any = any tumour (Wang et al. 2021).")
@force_option
@quiet_option
@device_option
@mpp_option
def command(slides, out, node_annotations, tumour_annotations, node_model, tumour_model, mln_rule, force, quiet,
            device, mpp):
    """Measure lymph-node metastasis per node, slide and patient (N stage, T/MLN).

    Writes RUN/nodes.csv, slides.csv, patients.csv, summary.json, report.html and
    RUN/slides/<slide_id>/ (nodes.geojson, tumour.geojson, overlay.png, nodes.csv, state.json).
    Rerunning skips finished slides (--force redoes them); an interrupted run resumes.
    --mpp applies to rows of the table without an mpp value.

    \b
    Examples:
      tmln analyze --slides slides.csv --out run/ --node-annotations ann/ --tumour-annotations ann/
      tmln analyze --slides slides.csv --out run/ --node-model demo-nodes --tumour-model demo-tumour
    Exit 0 when every slide was measured; 1 when a slide or patient failed (see slides.csv,
    summary.json); 2 for an unusable input (bad table, missing folder, unknown model).
    """
    from tmln.cohort.run import run_cohort

    summary = run_cohort(slides, out, node_annotations=node_annotations, tumour_annotations=tumour_annotations,
                         node_model=node_model, tumour_model=tumour_model, mln_rule=mln_rule, force=force,
                         quiet=quiet, device=device, mpp=mpp)
    if not quiet or summary.failures:
        click.echo(f"{summary.n_slides} slides: {summary.n_done} measured ({summary.n_reused} from an earlier run), "
                   f"{summary.n_failed} failed; {summary.n_patients_staged} of {summary.n_patients} patients staged; "
                   f"results in {summary.out_dir}", err=bool(summary.failures))
    for f in summary.failures:
        click.echo(f"failed {f['kind']} {f['id']}: {f['error']}", err=True)
    if summary.exit_code:
        sys.exit(summary.exit_code)
