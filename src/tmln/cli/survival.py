"""``tmln survival PATIENTS --time COL --event COL --out DIR``: prognostic analysis of a marker."""

from __future__ import annotations

import click

from tmln.cli.options import out_dir_option


def _csv_list(value: str | None) -> tuple[str, ...]:
    return tuple(v.strip() for v in (value or "").split(",") if v.strip())


def _horizons(ctx, param, value):
    try:
        return tuple(float(v) for v in _csv_list(value))
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers, got {value!r}") from None


def _cutpoint(ctx, param, value):
    if value in ("maxstat", "median"):
        return value
    try:
        return float(value)
    except ValueError:
        raise click.BadParameter(f"expected maxstat, median or a number, got {value!r}") from None


@click.command("survival")
@click.argument("patients", type=click.Path())
@click.option("--time", "time_col", required=True, help="Column with follow-up time (>= 0).")
@click.option("--event", "event_col", required=True, help="Column with the event indicator (1 = event, 0 = censored).")
@click.option("--followup", type=click.Path(dir_okay=False), default=None,
              help="Follow-up CSV (patient_id + time, event, covariates) joined to PATIENTS by patient_id; ids on one "
                   "side only are listed; the joined table is written as patients_followup.csv.")
@click.option("--marker", default="t_mln", show_default=True, help="Continuous marker column.")
@click.option("--markers", default="",
              help="Comma-separated markers compared side by side on the same patients, e.g. "
                   "t_mln,n_stage,lymph_node_ratio,lodds: C-index with CI, HR per SD, nested test over n_stage "
                   "(marker_comparison.csv, forest_markers.png).")
@click.option("--covariates", default="", help="Comma-separated covariate columns, e.g. n_stage,age. "
              "Text columns and n_stage are categorical (reference = N0 / first level).")
@click.option("--categorical", default="", help="Comma-separated numeric-coded covariates to treat as categorical.")
@click.option("--cutpoint", default="maxstat", show_default=True, callback=_cutpoint,
              help="maxstat (maximally selected log-rank, 10-90 % range), median, or a marker value.")
@click.option("--validation", type=click.Path(dir_okay=False), default=None,
              help="Validation cohort CSV (same columns); the training cut-point is applied unchanged.")
@click.option("--horizons", default="", callback=_horizons,
              help="Comma-separated times (unit of --time) for survival estimates and time-dependent AUC.")
@click.option("--time-unit", default=None, help="Unit of --time for axis labels, e.g. months.")
@click.option("--permutations", type=click.IntRange(min=0), default=0, show_default=True,
              help="Permutations for an exact maxstat p-value (0 = none; 1000-10000 for a paper).")
@click.option("--bootstrap", type=click.IntRange(min=0), default=200, show_default=True,
              help="Bootstrap resamples for every confidence interval of a C-index.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for bootstrap and permutations.")
@click.option("--on-missing", type=click.Choice(["exclude", "error"]), default="exclude", show_default=True,
              help="Rows with a missing value: exclude them (listed in survival.json) or stop with an error.")
@click.option("--no-figures", is_flag=True, help="Skip the PNG/SVG figures (tables, JSON and HTML only).")
@out_dir_option
def command(patients, time_col, event_col, followup, marker, markers, covariates, categorical, cutpoint, validation, horizons,
            time_unit, permutations, bootstrap, seed, on_missing, no_figures, out):
    """Kaplan-Meier, log-rank, cut-point, Cox and C-index of a marker (T/MLN) against covariates.

    PATIENTS is a run directory (its patients.csv) or a CSV with one row per patient.

    Writes survival.json, CSV tables (cox_univariable.csv, cox_multivariable.csv, km_groups.csv,
    km_curves.csv, cutpoint_scan.csv, discrimination.csv, proportional_hazards.csv), KM and
    forest plots (PNG 300 dpi + SVG) and survival.html (a fragment for report.html) into --out.

    \b
    Example:
      tmln survival run/patients_followup.csv --time os_months --event death \\
          --marker t_mln --covariates n_stage,age --horizons 36,60 --time-unit months \\
          --validation cohort2.csv --permutations 1000 --out survival/
      tmln survival run/ --followup followup.csv --time os_months --event death \\
          --markers t_mln,n_stage,lymph_node_ratio,lodds --out survival/
    Exit 0 on success; 2 with a one-line error naming the file, column and rows otherwise.
    """
    from tmln.survival.analysis import run_survival

    res = run_survival(patients, time_col, event_col, marker=marker, covariates=_csv_list(covariates),
                       cutpoint=cutpoint, validation=validation, horizons=horizons, out_dir=out, seed=seed,
                       permutations=permutations, bootstrap=bootstrap, time_unit=time_unit, on_missing=on_missing,
                       categorical=_csv_list(categorical), draw_figures=not no_figures,
                       markers=_csv_list(markers), followup=followup)
    j = res.get("followup_join")
    if j:
        click.echo(f"follow-up joined by patient_id: {j['n_matched']} matched; {len(j['only_in_patients'])} only in "
                   f"{j['patients']}, {len(j['only_in_followup'])} only in {j['followup']}")
    c = res["cutpoint"]
    mv = res["cox_multivariable"].get(marker, {})
    click.echo(f"{res['n']} patients, {res['events']} events"
               + (f" ({res['excluded']['n']} excluded for missing values)" if res["excluded"]["n"] else ""))
    click.echo(f"cut-point {marker} > {c['value']:.4g} ({c['method']}): log-rank p = {res['logrank']['p_value']:.3g}, "
               f"adjusted p = {c['p_value_adjusted']:.3g}")
    if mv:
        click.echo(f"multivariable HR per SD = {mv['hr']:.3g} ({mv['ci_low']:.3g}-{mv['ci_high']:.3g}), p = {mv['p_value']:.3g}")
    n = res["nested"]
    click.echo(f"nested LR p = {n['p_value']:.3g}, delta C = {n['delta_c']:.3f}")
    mc = res.get("marker_comparison")
    if mc:
        click.echo(f"markers on the same {mc['n']} patients ({mc['events']} events):")
        for m in mc["markers"]:
            line = f"  {m['marker']}: Harrell C = {m['harrell']:.3f}"
            if m["harrell_ci_low"] is not None:
                line += f" ({m['harrell_ci_low']:.3f}-{m['harrell_ci_high']:.3f})"
            if m["nested_p_value"] is not None:
                line += f"; over {m['reference']}: LR p = {m['nested_p_value']:.3g}, delta C = {m['delta_c']:.3f}"
            click.echo(line)
    for w in res["warnings"]:
        click.echo(f"warning: {w}", err=True)
    click.echo(f"wrote {len(res['outputs'])} files to {out}")
