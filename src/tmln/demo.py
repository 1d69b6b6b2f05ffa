"""``tmln demo``: the whole pipeline on a phantom cohort, in minutes, on a CPU.

1. ``make_demo_cohort``: a phantom cohort (``tmln.phantom``) of ``patients`` patients with 1-3 slides
   each whose TRUE N stages cycle through ``DEMO_STAGES`` (node-negative and N1-N3a patients); slide
   seeds are drawn per patient until the truth has the wanted stage. Truth tables and outlines are
   written beside the slides (``phantoms/``).
2. ``simulate_follow_up``: seeded follow-up whose hazard rises with the TRUE T/MLN (Weibull
   proportional hazards with administrative and random censoring; ``FollowUpModel``).
3. ``tmln.cohort.run.run_cohort`` with the bundled demo models (``demo-nodes``, ``demo-tumour``): the
   outlines are measured by the models, never taken from the truth.
4. ``tmln.survival.run_survival`` on the measured ``patients.csv`` joined with the follow-up
   (median cut-point, univariable; whatever cannot be fitted on a handful of patients is reported,
   never fatal), then ``report.html`` with a measured-vs-truth table and the survival section.

The run directory (``OUT``) is an ordinary ``tmln analyze`` run directory plus ``phantoms/``,
``patients_followup.csv``, ``comparison.csv``, ``survival/`` and ``demo.json``. A rerun reuses the
phantoms (same parameters) and the finished slides; ``fresh=True`` starts again.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from tmln.atomic import write_csv, write_json
from tmln.cohort.run import run_cohort
from tmln.errors import TmlnError
from tmln.measure.staging import NODE_COLUMNS, PATIENT_COLUMNS
from tmln.models.card import resolve_model_dir
from tmln.phantom import SlideSpec, make_layout, make_slide
from tmln.phantom.truth import node_rows, patient_rows
from tmln.report.html import write_report
from tmln.rundir import RunDir
from tmln.survival import run_survival
from tmln.survival.report import survival_html

# TRUE N stage of patient i is DEMO_STAGES[i % len(DEMO_STAGES)]
DEMO_STAGES = ("N0", "N1", "N2", "N3a", "N1", "N0", "N2", "N1")
SLIDE_SIZE_MM = (6.0, 4.5)
SLIDE_MPP = 0.5
COHORT_FORMAT = 1
_COHORT_TAG = 0xDE70  # mixed into every seed: demo cohorts never coincide with make_cohort cohorts
_FOLLOW_TAG = 0xF011
_MAX_TRIES = 400
# metastatic nodes per patient drawn for each target stage (N3a kept low so that 3 small slides suffice)
_MLN_RANGE = {"N0": (0, 0), "N1": (1, 2), "N2": (3, 6), "N3a": (7, 9)}
_MANY_NODES = 6  # nodes asked of a slide that must hold >= 3 metastatic nodes
_SLIDES_FOR = {"N2": (2, 3), "N3a": (3, 3)}  # (min, max) slides; default (1, 3)


# ---------------------------------------------------------------------------- follow-up
@dataclass(frozen=True)
class FollowUpModel:
    """Simulated survival: Weibull proportional hazards in the TRUE T/MLN ``x`` (0 without MLN).

    hazard h(t | x) = (k / lam) (t / lam)^(k - 1) exp(beta x), t in months, with shape ``k`` and
    scale ``lam`` set so that the median survival at x = 0 is ``median_months``.
    Censoring: administrative at Uniform(``follow_up_months``) (staggered entry) and random loss to
    follow-up at rate 1 / ``loss_mean_months``; time = min(death, censoring), event = death observed.
    """

    shape: float = 1.3
    median_months: float = 90.0
    beta: float = 3.0  # log hazard ratio per unit T/MLN (HR 20 from 0 to 1)
    follow_up_months: tuple[float, float] = (24.0, 84.0)
    loss_mean_months: float = 300.0

    @property
    def scale_months(self) -> float:
        return self.median_months / math.log(2.0) ** (1.0 / self.shape)


def simulate_follow_up(t_mln: Sequence[float], seed: int = 0, model: FollowUpModel = FollowUpModel()):
    """Follow-up for patients with TRUE T/MLN ``t_mln`` (one value per patient, in order).

    Returns a DataFrame with ``time_months`` (float, > 0) and ``event`` (1 = death observed,
    0 = censored), deterministic in ``seed``.
    """
    import pandas as pd

    x = np.asarray(t_mln, dtype=np.float64)
    if x.ndim != 1 or not np.all(np.isfinite(x)):
        raise ValueError("t_mln must be a 1-D sequence of finite numbers")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), _FOLLOW_TAG]))
    n = x.size
    u = rng.random(n)
    # inverse of S(t) = exp(-(t / lam)^k exp(beta x))
    death = model.scale_months * (-np.log1p(-u) * np.exp(-model.beta * x)) ** (1.0 / model.shape)
    admin = rng.uniform(*model.follow_up_months, n)
    loss = rng.exponential(model.loss_mean_months, n)
    censor = np.minimum(admin, loss)
    time_months = np.maximum(np.minimum(death, censor), 0.1)
    return pd.DataFrame({"time_months": np.round(time_months, 2), "event": (death <= censor).astype(int)})


# ---------------------------------------------------------------------------- cohort
def _stage_plan(patients: int, seed: int, stages: Sequence[str]) -> list[tuple[str, int]]:
    """(target stage, number of slides) per patient."""
    plan = []
    for p in range(patients):
        target = stages[p % len(stages)]
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), p, _COHORT_TAG, 1]))
        lo, hi = _SLIDES_FOR.get(target, (1, 3))
        plan.append((target, int(rng.integers(lo, hi + 1))))
    return plan


def _patient_specs(p: int, target: str, n_slides: int, seed: int, size_mm, mpp):
    """Slide specs of patient ``p`` whose truth has N stage ``target``.

    A total metastatic-node count in the stage's range is drawn and split over the slides; each slide's
    seed is drawn until its truth has its share (a cheap layout-only check: nothing is rendered).
    """

    rng = np.random.default_rng(np.random.SeedSequence([int(seed), p, _COHORT_TAG]))
    lo, hi = _MLN_RANGE[target]
    total = int(rng.integers(lo, hi + 1))
    quotas = [total // n_slides + (1 if i < total % n_slides else 0) for i in range(n_slides)]
    quotas = [quotas[i] for i in rng.permutation(n_slides)]
    specs = []
    for q in quotas:
        for _ in range(_MAX_TRIES):
            spec = SlideSpec(seed=int(rng.integers(2**31 - 1)), size_mm=tuple(size_mm), mpp=float(mpp),
                             n_nodes=_MANY_NODES if q >= 3 else None)
            lay = make_layout(spec)
            n_mln = sum(r["metastatic"] for r in node_rows(lay.nodes, lay.tumour, lay.mpp, lay.mpp, "p", "s"))
            if n_mln == q:
                specs.append(spec)
                break
        else:
            raise TmlnError(f"could not draw a {size_mm[0]} x {size_mm[1]} mm phantom slide with {q} metastatic "
                            f"nodes in {_MAX_TRIES} tries (true stage {target}); use larger slides")
    return specs


def make_demo_cohort(out_dir, patients: int = 8, seed: int = 0, *, size_mm=SLIDE_SIZE_MM, mpp: float = SLIDE_MPP,
                     stages: Sequence[str] = DEMO_STAGES, progress: Callable[[str], None] | None = None) -> Path:
    """Write the demo's phantom cohort into ``out_dir``; returns its ``slides.csv``.

    Patient ``i`` (``P001``...) has the TRUE N stage ``stages[i % len(stages)]`` and 1-3 slides
    (N2: 2-3, N3a: 3) of ``size_mm`` at ``mpp`` µm/px. Writes ``<slide_id>.tiff`` with
    ``<slide_id>.nodes.geojson`` / ``.tumour.geojson`` (truth outlines), ``slides.csv``,
    ``truth_nodes.csv``, ``truth_patients.csv`` (as ``tmln.phantom.make_cohort``) and
    ``cohort.json`` (the parameters, written last).
    """
    import pandas as pd

    if patients < 1:
        raise TmlnError(f"patients must be >= 1, got {patients}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    slide_rows, nodes, n_slides = [], [], {}
    for p, (target, k) in enumerate(_stage_plan(patients, seed, stages)):
        pid = f"P{p + 1:03d}"
        specs = _patient_specs(p, target, k, seed, size_mm, mpp)
        n_slides[pid] = len(specs)
        for s, spec in enumerate(specs):
            sid = f"{pid}_S{s + 1:02d}"
            ph = make_slide(out / f"{sid}.tiff", spec)
            lay = ph.layout
            nodes += node_rows(lay.nodes, lay.tumour, lay.mpp, lay.mpp, pid, sid)
            slide_rows.append({"slide_path": f"{sid}.tiff", "patient_id": pid})
            if progress:
                progress(f"phantom {sid} (true stage of {pid}: {target})")
    write_csv(out / "truth_nodes.csv", pd.DataFrame(nodes, columns=NODE_COLUMNS))
    write_csv(out / "truth_patients.csv", pd.DataFrame(patient_rows(nodes, n_slides), columns=PATIENT_COLUMNS))
    csv = out / "slides.csv"
    write_csv(csv, pd.DataFrame(slide_rows, columns=["slide_path", "patient_id"]))
    write_json(out / "cohort.json", _cohort_params(patients, seed, size_mm, mpp, stages))
    return csv


def _cohort_params(patients, seed, size_mm, mpp, stages) -> dict:
    return {"format": COHORT_FORMAT, "generator": "tmln.demo.make_demo_cohort", "patients": int(patients),
            "seed": int(seed), "size_mm": [float(v) for v in size_mm], "mpp": float(mpp), "stages": list(stages)}


def _reusable_cohort(folder: Path, params: dict) -> bool:
    try:
        old = json.loads((folder / "cohort.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    if old != params:
        return False
    import pandas as pd

    try:
        table = pd.read_csv(folder / "slides.csv")
    except Exception:
        return False
    return all((folder / p).is_file() for p in table["slide_path"]) and (folder / "truth_patients.csv").is_file()


# ---------------------------------------------------------------------------- survival
def _survival(table, out_dir: Path, seed: int) -> tuple[dict | None, str, list[str]]:
    """Univariable survival analysis with a median cut; returns (result, html section, notes)."""

    notes = []
    n, events = len(table), int(table["event"].sum())
    if n < 3 or events < 1:
        why = f"{n} patients with {events} events: too few for a survival analysis"
        return None, _note_html(why), [why]
    import warnings

    try:
        with warnings.catch_warnings(record=True) as caught:
            # eight patients: Cox fits in bootstrap resamples may separate (overflow in exp)
            warnings.simplefilter("always", RuntimeWarning)
            res = run_survival(table, "time_months", "event", marker="t_mln", covariates=(), cutpoint="median",
                               out_dir=out_dir, seed=seed, bootstrap=100, time_unit="months")
        if any(issubclass(w.category, RuntimeWarning) for w in caught):
            notes.append("numerical warnings in some bootstrap Cox fits (near-separation with so few patients): "
                         "treat the confidence intervals as rough")
    except Exception as exc:  # a demo never dies of a statistic that cannot be fitted on 8 patients
        why = f"survival analysis not possible on this cohort ({type(exc).__name__}: {exc})"
        return None, _note_html(why), [why]
    figures = {}
    for name in res.get("outputs", []):
        if name.endswith(".png"):
            figures[name[:-4]] = (out_dir / name).read_bytes()
    notes.append(f"{n} patients, {events} events; median cut-point, univariable Cox (no multivariable model: "
                 "far too few patients)")
    return res, survival_html(res, figures), notes


def _note_html(text: str) -> str:
    import html

    return f'<section class="tmln-survival"><h2>Survival analysis</h2><p>{html.escape(text)}</p></section>'


# ---------------------------------------------------------------------------- comparison
def compare_with_truth(measured, truth, follow=None):
    """Per patient: true vs measured N stage, node counts and T/MLN (a DataFrame)."""
    import pandas as pd

    m = measured.set_index(measured["patient_id"].astype(str))
    t = truth.set_index(truth["patient_id"].astype(str))
    rows = []
    for pid in t.index:
        mr = m.loc[pid] if pid in m.index else None

        def get(col, cast=float):
            if mr is None:
                return None
            v = mr.get(col)
            try:
                return None if v is None or (isinstance(v, float) and math.isnan(v)) or v == "" else cast(v)
            except (TypeError, ValueError):
                return None

        tv = float(t.loc[pid, "t_mln"])
        mv = get("t_mln")
        ms = get("n_stage", str)
        row = {
            "patient_id": pid,
            "n_slides": int(t.loc[pid, "n_slides"]),
            "true_n_nodes": int(t.loc[pid, "n_nodes"]),
            "measured_n_nodes": get("n_nodes", lambda v: int(float(v))),
            "true_n_metastatic_nodes": int(t.loc[pid, "n_metastatic_nodes"]),
            "measured_n_metastatic_nodes": get("n_metastatic_nodes", lambda v: int(float(v))),
            "true_n_stage": str(t.loc[pid, "n_stage"]),
            "measured_n_stage": ms,
            "n_stage_agrees": ms == str(t.loc[pid, "n_stage"]),
            "true_t_mln": tv,
            "measured_t_mln": mv,
            "abs_delta_t_mln": None if mv is None else abs(mv - tv),
        }
        rows.append(row)
    out = pd.DataFrame(rows)
    if follow is not None:
        out = out.merge(follow[["patient_id", "time_months", "event"]], on="patient_id", how="left")
    return out


def comparison_text(comp) -> str:
    """A short fixed-width table of the comparison for the terminal."""
    lines = [f"{'patient':<8} {'slides':>6} {'nodes true/meas':>15} {'N stage true -> measured':>25} "
             f"{'T/MLN true':>10} {'measured':>9} {'|diff|':>7}  follow-up"]
    for r in comp.to_dict("records"):
        ms = r["measured_n_stage"] or "n/a"
        mark = "ok" if r["n_stage_agrees"] else "DIFFERS"
        mv = "n/a" if r["measured_t_mln"] is None or _nan(r["measured_t_mln"]) else f"{r['measured_t_mln']:.3f}"
        dv = "n/a" if r["abs_delta_t_mln"] is None or _nan(r["abs_delta_t_mln"]) else f"{r['abs_delta_t_mln']:.3f}"
        mn = "n/a" if r["measured_n_nodes"] is None or _nan(r["measured_n_nodes"]) else str(int(r["measured_n_nodes"]))
        fu = ""
        if "time_months" in r and r["time_months"] is not None and not _nan(r["time_months"]):
            fu = f"{r['time_months']:.0f} mo, {'died' if int(r['event']) else 'censored'}"
        lines.append(f"{r['patient_id']:<8} {r['n_slides']:>6} {str(r['true_n_nodes']) + '/' + mn:>15} "
                     f"{r['true_n_stage'] + ' -> ' + ms + ' (' + mark + ')':>25} {r['true_t_mln']:>10.3f} {mv:>9} "
                     f"{dv:>7}  {fu}")
    return "\n".join(lines)


def _nan(v) -> bool:
    try:
        return math.isnan(float(v))
    except (TypeError, ValueError):
        return False


def comparison_html(comp, info: dict) -> str:
    """The demo's report section: measured vs true per patient (``report/templates/demo_comparison.html``;
    every value is HTML-escaped here, the template only lays it out)."""
    import html

    from jinja2 import Environment, PackageLoader

    cols = ["patient_id", "n_slides", "true_n_nodes", "measured_n_nodes", "true_n_metastatic_nodes",
            "measured_n_metastatic_nodes", "true_n_stage", "measured_n_stage", "true_t_mln", "measured_t_mln",
            "abs_delta_t_mln", "time_months", "event"]
    cols = [c for c in cols if c in comp.columns]

    def cell(v):
        if v is None or _nan(v):
            return "n/a"
        if isinstance(v, float):
            return f"{v:.3f}"
        return html.escape(str(v))

    agree = comp["n_stage_agrees"].mean() if len(comp) else float("nan")
    d = comp["abs_delta_t_mln"].dropna()
    env = Environment(loader=PackageLoader("tmln.report", "templates"), autoescape=False)
    return env.get_template("demo_comparison.html").render(
        cohort=html.escape(info["cohort"]), node_model=html.escape(info["node_model"]),
        tumour_model=html.escape(info["tumour_model"]), follow_up=html.escape(info["follow_up"]),
        agree=f"{agree:.0%}", median=f"{(d.median() if len(d) else float('nan')):.3f}",
        max=f"{(d.max() if len(d) else float('nan')):.3f}", cols=[html.escape(c) for c in cols],
        rows=[[cell(r[c]) for c in cols] for r in comp.to_dict("records")])


def follow_up_description(model: FollowUpModel = FollowUpModel()) -> str:
    return (f"Weibull proportional hazards, shape {model.shape:g}, median {model.median_months:g} months at "
            f"T/MLN = 0, log HR {model.beta:g} per unit T/MLN; administrative censoring Uniform"
            f"({model.follow_up_months[0]:g}, {model.follow_up_months[1]:g}) months, loss to follow-up at rate "
            f"1/{model.loss_mean_months:g} per month")


# ---------------------------------------------------------------------------- the demo
DEMO_MARKER = "demo.json"
_SURVIVAL_SUMMARY = ("n", "events", "cutpoint", "cox_univariable", "c_index")  # of survival.json, in demo.json


def _clean(out: Path) -> None:
    """Remove what an earlier demo wrote (only from a folder that holds a demo's marker file)."""
    if not out.exists():
        return
    if not (out / DEMO_MARKER).is_file() and any(out.iterdir()):
        raise TmlnError(f"refusing to clean a folder that was not written by tmln demo (no {DEMO_MARKER})", out)
    shutil.rmtree(out)


# public API mirroring `tmln demo`'s options, one keyword each
def run_demo(out_dir="demo-run", *, patients: int = 8, seed: int = 0, quiet: bool = False,
             node_model: str = "demo-nodes", tumour_model: str = "demo-tumour", device: str = "auto",
             fresh: bool = False, size_mm=SLIDE_SIZE_MM, mpp: float = SLIDE_MPP,
             follow_up: FollowUpModel = FollowUpModel(), echo: Callable[[str], None] | None = None) -> dict:
    """Run the demo into ``out_dir``; returns the ``demo.json`` dict (paths, comparison, timings).

    patients : phantom patients (true stages cycle through ``DEMO_STAGES``).
    seed : phantom and follow-up seed (the demo models never saw these phantoms).
    node_model / tumour_model : bundled names or model directories.
    fresh : delete an earlier demo in ``out_dir`` first; otherwise phantoms and finished slides are reused.
    echo : where progress lines go (default: stdout unless ``quiet``); the final summary is always
        returned, and printed by the CLI.
    """
    import pandas as pd

    say = echo if echo is not None else ((lambda s: None) if quiet else (lambda s: print(s, file=sys.stderr, flush=True)))
    for m in (node_model, tumour_model):
        resolve_model_dir(m)  # ModelCardError now, not per slide
    out = Path(out_dir)
    if fresh:
        _clean(out)
    out.mkdir(parents=True, exist_ok=True)
    timing: dict[str, float] = {}
    t_all = time.perf_counter()

    # 1. phantoms (reused when the parameters match) and their simulated follow-up
    t = time.perf_counter()
    phantoms = out / "phantoms"
    params = _cohort_params(patients, seed, size_mm, mpp, DEMO_STAGES)
    csv = _phantom_cohort(phantoms, params, patients, seed, size_mm, mpp, say)
    timing["phantoms_s"] = time.perf_counter() - t
    truth = pd.read_csv(phantoms / "truth_patients.csv", dtype={"patient_id": str})
    follow = _follow_up_table(truth, seed, follow_up)
    write_csv(phantoms / "follow_up.csv", follow)

    # 2. measure with the models
    t = time.perf_counter()
    summary = _measure(csv, out, node_model, tumour_model, quiet, device, say)
    timing["analyze_s"] = time.perf_counter() - t

    # 3. survival on the measured table joined with the follow-up
    t = time.perf_counter()
    measured = pd.read_csv(RunDir(out).patients_csv, dtype={"patient_id": str, "n_stage": str})
    surv, surv_html, surv_notes = _measured_survival(out, measured, follow, seed)
    for n in surv_notes:
        say(n)
    timing["survival_s"] = time.perf_counter() - t

    # 4. comparison and report
    t = time.perf_counter()
    comp = compare_with_truth(measured, truth, follow)
    write_csv(out / "comparison.csv", comp)
    info = {"cohort": f"{patients} patients, seed {seed}, {size_mm[0]:g} x {size_mm[1]:g} mm slides at {mpp:g} µm/px",
            "node_model": str(node_model), "tumour_model": str(tumour_model),
            "follow_up": follow_up_description(follow_up)}
    # the survival fragment brings its own heading
    report = write_report(out, sections=[("Demo: measured by the demo models vs phantom truth", comparison_html(comp, info)),
                                         ("", surv_html)])
    timing["report_s"] = time.perf_counter() - t
    timing["total_s"] = time.perf_counter() - t_all
    result = {
        "report": str(report.resolve()),
        "out_dir": str(out.resolve()),
        "cohort": {**params, "slides": int(len(pd.read_csv(csv)))},
        "models": {"nodes": str(node_model), "tumour": str(tumour_model)},
        "follow_up_model": {**asdict(follow_up), "description": follow_up_description(follow_up)},
        "slides_failed": summary.n_failed,
        "slides_reused": summary.n_reused,
        **_agreement(comp),
        "survival": None if surv is None else {k: surv.get(k) for k in _SURVIVAL_SUMMARY},
        "survival_notes": surv_notes,
        "comparison": json.loads(comp.to_json(orient="records")),
        "comparison_text": comparison_text(comp),
        "timing_s": {k: round(v, 2) for k, v in timing.items()},
    }
    write_json(out / DEMO_MARKER, result)
    return result


def _phantom_cohort(phantoms: Path, params: dict, patients: int, seed: int, size_mm, mpp: float,
                    say: Callable[[str], None]) -> Path:
    """The demo cohort's ``slides.csv``: the one in ``phantoms`` when it was made with ``params``,
    else a new cohort written there."""
    if _reusable_cohort(phantoms, params):
        say(f"reusing the phantom cohort in {phantoms}")
        return phantoms / "slides.csv"
    if phantoms.exists():
        shutil.rmtree(phantoms)
    say(f"generating {patients} phantom patients in {phantoms} ...")
    return make_demo_cohort(phantoms, patients, seed, size_mm=size_mm, mpp=mpp, progress=say)


def _measure(csv: Path, out: Path, node_model: str, tumour_model: str, quiet: bool, device: str,
             say: Callable[[str], None]):
    """``tmln analyze`` of the phantom slides with the models into ``out``; failures are said."""
    import pandas as pd

    say(f"measuring {len(pd.read_csv(csv))} slides with {node_model} + {tumour_model} ...")
    summary = run_cohort(csv, out, node_model=node_model, tumour_model=tumour_model, quiet=quiet, device=device)
    for f in summary.failures:
        say(f"failed {f['kind']} {f['id']}: {f['error']}")
    return summary


def _agreement(comp) -> dict:
    """How well the measured patients agree with the truth: N stage agreement, max and median |ΔT/MLN|."""
    d = comp["abs_delta_t_mln"].dropna()
    return {"n_stage_agreement": float(comp["n_stage_agrees"].mean()) if len(comp) else None,
            "abs_delta_t_mln_max": float(d.max()) if len(d) else None,
            "abs_delta_t_mln_median": float(d.median()) if len(d) else None}


def _follow_up_table(truth, seed: int, model: FollowUpModel):
    """Simulated follow-up per patient of the truth table, with the patient's TRUE T/MLN and N stage."""
    follow = simulate_follow_up(truth["t_mln"].to_numpy(), seed=seed, model=model)
    follow.insert(0, "patient_id", truth["patient_id"].astype(str).to_numpy())
    follow["true_t_mln"] = truth["t_mln"].to_numpy()
    follow["true_n_stage"] = truth["n_stage"].to_numpy()
    return follow


def _measured_survival(out: Path, measured, follow, seed: int) -> tuple[dict | None, str, list[str]]:
    """Write ``patients_followup.csv`` (measured patients joined with the follow-up) and analyse its
    patients with a T/MLN into ``survival/``; returns (result, html section, notes) as ``_survival``."""
    joined = measured.merge(follow, on="patient_id", how="inner")
    write_csv(out / "patients_followup.csv", joined)
    usable = joined.dropna(subset=["t_mln"])
    surv_dir = out / "survival"
    surv_dir.mkdir(exist_ok=True)
    return _survival(usable, surv_dir, seed)

