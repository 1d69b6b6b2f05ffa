"""``tmln evaluate staging``: metastatic-node count and N-stage agreement with a reference table."""

from __future__ import annotations

import click

from tmln.cli.options import out_dir_option, quiet_option


@click.command("staging")
@click.argument("run_patients", type=click.Path(exists=True))
@click.argument("reference", type=click.Path(dir_okay=False, exists=True))
@click.option("--staging", type=click.Choice(["gastric", "breast", "camelyon17", "colorectal"]), default=None,
              help="Staging system by which both tables are staged (docs/measurements.md#staging-systems): the run "
                   "from its node counts, the reference from its n_stage or counts. camelyon17 = the challenge's "
                   "patient pN (compare its kappa with the CAMELYON17 record, 0.92). Default: the tables' n_stage, "
                   "gastric order.")
@click.option("--stages", default=None,
              help="Ordered stage names, comma-separated, for tables staged otherwise (default AJCC 8th gastric "
                   "N0,N1,N2,N3a,N3b); not with --staging.")
@click.option("--n-boot", type=click.IntRange(min=0), default=2000, show_default=True, help="Bootstrap replicates.")
@click.option("--seed", type=int, default=0, show_default=True, help="Bootstrap seed.")
@out_dir_option
@quiet_option
def command(run_patients, reference, staging, stages, n_boot, seed, out, quiet):
    """Agreement of a run's patients.csv with a reference (e.g. pathologists' counts and stages).

    RUN_PATIENTS is a run folder or its patients.csv (patient_id, n_metastatic_nodes, n_stage);
    REFERENCE has patient_id and n_metastatic_nodes and/or n_stage (stage derived from the count
    when absent); with --staging breast|camelyon17, n_stage or n_macro_nodes, n_micro_nodes (and
    n_itc_nodes). CAMELYON17's own stage table (patient,stage; patient_000.zip rows) is read as it is. Reports MAE, exact agreement, Bland-Altman bias/limits, quadratic-weighted kappa
    with a bootstrap CI. Writes staging_agreement.json, staging_patients.csv, staging_confusion.csv.

    \b
    Example:
      tmln evaluate staging run/ pathologists.csv --out eval/
      tmln evaluate staging run/ camelyon17_stage_labels.csv --staging camelyon17 --out eval/
    """
    from pathlib import Path

    from tmln.atomic import write_csv, write_json
    from tmln.evaluate.agreement import confusion_table, evaluate_agreement
    from tmln.measure.staging import N_STAGES
    from tmln.rundir import RunDir

    run_patients = Path(run_patients)
    if run_patients.is_dir():
        run_patients = RunDir(run_patients).patients_csv
    if staging and stages:
        raise click.UsageError("give --staging (a system) or --stages (names), not both")
    order = N_STAGES if stages is None else tuple(s.strip() for s in stages.split(",") if s.strip())
    metrics, merged = evaluate_agreement(run_patients, reference, order, n_boot, seed, staging=staging)
    out = Path(out)
    write_csv(out / "staging_patients.csv", merged)
    write_csv(out / "staging_confusion.csv", confusion_table(metrics["n_stage"]).reset_index())
    write_json(out / "staging_agreement.json", metrics)
    if not quiet:
        st = metrics["n_stage"]
        k, ci = st["kappa_quadratic"], st["kappa_quadratic_ci"]
        ktext = "undefined" if k is None else f"{k:.3f}" + ("" if ci[0] is None else f" (95% CI {ci[0]:.3f}-{ci[1]:.3f})")
        line = f"{metrics['n_patients']} patients; N stage quadratic kappa {ktext}, exact {st['exact_agreement']:.3f}"
        if metrics["counts"] is not None:
            c = metrics["counts"]
            line += f"; node count MAE {c['mae']:.2f}, bias {c['bias']:+.2f} [{c['loa_low']:+.2f}, {c['loa_high']:+.2f}]"
        click.echo(line)
