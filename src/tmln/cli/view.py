"""``tmln view``: review a run directory (or one slide) in the browser."""

from __future__ import annotations

from pathlib import Path

import click

from tmln.cli.options import mpp_option


@click.command("view")
@click.argument("target", type=click.Path(exists=True))
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True,
              help="TCP port (0: any free port).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but a loopback address lets other computers see the slides (a warning says so).")
@click.option("--outlines", "annotations", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="With a SLIDE: GeoJSON/XML outlines to draw and measure; repeatable. *.nodes.* files hold nodes, "
                   "*.tumour.* files tumour, any other name both (one export), as tmln analyze reads them.")
@click.option("--tumour-map", type=click.Path(exists=True, file_okay=False), default=None,
              help="With a SLIDE: a tumour-map folder (tmln tumour-map --out) shown as the heat layer.")
@mpp_option
@click.option("--mln-rule", type=click.Choice(["ajcc", "any"]), default="ajcc", show_default=True,
              help="With a SLIDE: which nodes count as metastatic (ajcc: micro or macro; any: any tumour).")
@click.option("--open", "open_browser", is_flag=True, help="Open the page in the default web browser.")
@click.option("--log", "log_requests", is_flag=True, help="Print every request.")
def command(target, port, host, annotations, tumour_map, mpp, mln_rule, open_browser, log_requests):
    """Review RUN (a tmln analyze run directory) or one SLIDE in the browser.

    A local, read-only web app: slides per patient with N stage and T/MLN, the slide at every zoom
    with node outlines by category, tumour regions, node labels and the tumour probability map as a
    heat layer, the sortable node table (click a row to go to the node) and the review list of the
    least certain calls. Stop it with Ctrl-C.

    \b
    Examples:
      tmln view run/                         # then open http://127.0.0.1:8000/
      tmln view slide.svs --outlines slide.geojson --tumour-map maps/slide/
    """
    from tmln.errors import TmlnError
    from tmln.rundir import RUN_OUTPUTS
    from tmln.view.data import RunData
    from tmln.view.server import host_warning, serve

    t = Path(target)
    if t.is_dir():
        if annotations or tumour_map or mpp:
            raise click.UsageError("--outlines, --tumour-map and --mpp go with a SLIDE, not a run directory")
        data = RunData.from_run(t)
    elif t.is_file():
        if t.name in RUN_OUTPUTS:
            raise TmlnError("give the run directory, not one of its files", t)
        data = RunData.for_slide(t, annotations=list(annotations), tumour_map=tumour_map, mpp=mpp, mln_rule=mln_rule)
    else:
        raise TmlnError("not a run directory or a slide file", t)
    w = host_warning(host)
    if w:
        click.echo(f"warning: {w}", err=True)

    def ready(srv):
        what = f"run {data.root}" if data.root else f"slide {data.slides[0].path}"
        click.echo(f"tmln view: {what} at {srv.url} (Ctrl-C stops)", err=True)
        for s in data.slides:
            if s.problem:
                click.echo(f"  slide {s.slide_id}: {s.problem}", err=True)

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # said above already
        try:
            serve(host=host, port=port, data=data, quiet=not log_requests, open_browser=open_browser, ready=ready)
        except OSError as exc:
            raise TmlnError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None
