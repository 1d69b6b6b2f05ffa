"""``tmln demo``: phantom cohort -> bundled demo models -> survival -> report.html."""

from __future__ import annotations

import click

from tmln.cli.options import device_option, quiet_option


@click.command("demo")
@click.option("--out", "out", default="demo-run", show_default=True, type=click.Path(file_okay=False),
              help="Output folder (a tmln run directory plus phantoms/ and survival/).")
@click.option("--patients", type=click.IntRange(min=1), default=8, show_default=True,
              help="Phantom patients (true N stages cycle N0, N1, N2, N3a, N1, N0, N2, N1; 1-3 slides each).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the phantoms and the follow-up.")
@click.option("--node-model", default="demo-nodes", show_default=True, help="Node model (bundled name or directory).")
@click.option("--tumour-model", default="demo-tumour", show_default=True,
              help="Tumour model (bundled name or directory).")
@click.option("--slide-mm", default="6,4.5", show_default=True, metavar="W,H",
              help="Phantom slide size in mm (slides are 0.5 µm/px; larger slides take longer).")
@click.option("--fresh", is_flag=True, help="Delete an earlier demo in --out first (default: reuse and resume).")
@device_option
@quiet_option
def command(out, patients, seed, node_model, tumour_model, slide_mm, fresh, device, quiet):
    """Run the whole pipeline on a phantom cohort with the bundled demo models.

    Generates phantom slides with exact truth and simulated follow-up (hazard rising with the true
    T/MLN), measures them with the demo models (as `tmln analyze --node-model demo-nodes
    --tumour-model demo-tumour`), runs the survival analysis on the measured T/MLN, writes
    OUT/report.html and prints measured vs true N stage and T/MLN per patient. A few minutes on
    2 CPU cores. The demo models were trained on phantoms: not for real slides, not for diagnosis.

    \b
    Examples:
      tmln demo                         # -> demo-run/report.html
      tmln demo --out /tmp/demo --patients 4 --seed 3
      tmln demo --fresh                 # start again instead of resuming
    """
    from tmln.demo import run_demo

    try:
        size = tuple(float(v) for v in slide_mm.split(","))
        if len(size) != 2 or min(size) <= 0:
            raise ValueError
    except ValueError:
        raise click.BadParameter(f"expected two positive sizes in mm as W,H, got {slide_mm!r}",
                                 param_hint="--slide-mm") from None
    res = run_demo(out, patients=patients, seed=seed, quiet=quiet, node_model=node_model, tumour_model=tumour_model,
                   device=device, fresh=fresh, size_mm=size)
    if not quiet:
        click.echo(res["comparison_text"])
        agree = res["n_stage_agreement"]
        dmax = res["abs_delta_t_mln_max"]
        click.echo(f"N stage agrees for {agree:.0%} of patients; max |ΔT/MLN| = "
                   + ("n/a" if dmax is None else f"{dmax:.3f}")
                   + f"; {res['timing_s']['total_s']:.0f} s in all")
    click.echo(f"report: {res['report']}")
    if res["slides_failed"]:
        click.echo(f"{res['slides_failed']} slide(s) failed: see {res['out_dir']}/slides.csv", err=True)
