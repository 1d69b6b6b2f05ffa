"""An HTML fragment (one ``<section>``) of the survival analysis for a run's ``report.html``.

Self-contained: figures are embedded as base64 PNG data URIs; all text is escaped (jinja2
autoescape). Styling uses a few ``tmln-`` classes that the host page may style; the fragment also
reads fine unstyled.
"""

from __future__ import annotations

import base64

import jinja2

_TEMPLATE = """
<section class="tmln-survival" id="survival">
<h2>Survival analysis: {{ r.marker }}</h2>
<p>{{ r.n }} patients, {{ r.events }} events{% if r.excluded.n %} ({{ r.excluded.n }} excluded for missing values: rows {{ r.excluded.rows[:20]|join(", ") }}{% if r.excluded.n > 20 %}, …{% endif %}){% endif %}.
Time: <code>{{ r.time }}</code>{% if r.time_unit %} ({{ r.time_unit }}){% endif %}; event: <code>{{ r.event }}</code>;
covariates: {{ r.covariates|join(", ") if r.covariates else "none" }}.</p>
{% if r.get("followup_join") %}{% set j = r.followup_join %}<p>Follow-up <code>{{ j.followup }}</code> joined to <code>{{ j.patients }}</code> by patient_id: {{ j.n_matched }} matched of {{ j.n_patients }} patients and {{ j.n_followup }} follow-up rows{% if j.only_in_patients %}; only in the patients table: {{ j.only_in_patients[:20]|join(", ") }}{% if j.only_in_patients|length > 20 %}, …{% endif %}{% endif %}{% if j.only_in_followup %}; only in the follow-up: {{ j.only_in_followup[:20]|join(", ") }}{% if j.only_in_followup|length > 20 %}, …{% endif %}{% endif %}.</p>{% endif %}
{% if r.warnings %}<ul class="tmln-warnings">{% for w in r.warnings %}<li>{{ w }}</li>{% endfor %}</ul>{% endif %}

<h3>Cut-point</h3>
<table class="tmln-table">
<tr><th>method</th><th>cut ({{ r.marker }})</th><th>low / high (n)</th><th>max |Z|</th><th>p (unadjusted)</th><th>p (adjusted, {{ "Lausen–Schumacher 1992" if c.method == "maxstat" else "no selection" }})</th>{% if c.p_value_lausen94 is not none %}<th>p (Lausen 1994)</th>{% endif %}{% if c.p_value_permutation is not none %}<th>p (permutation, B={{ c.permutations }})</th>{% endif %}<th>HR high vs low (95 % CI)</th></tr>
<tr><td>{{ c.method }}</td><td>{{ fmt(c.value) }}</td><td>{{ c.n_low }} / {{ c.n_high }}</td><td>{{ fmt(c.statistic) }}</td><td>{{ p(c.p_value_unadjusted) }}</td><td>{{ p(c.p_value_adjusted) }}</td>{% if c.p_value_lausen94 is not none %}<td>{{ p(c.p_value_lausen94) }}</td>{% endif %}{% if c.p_value_permutation is not none %}<td>{{ p(c.p_value_permutation) }}</td>{% endif %}<td>{{ hr(c.hr_high_vs_low, c.ci_low, c.ci_high) }}</td></tr>
</table>
{% for name in figs if name.startswith("km_") or name == "cutpoint_scan" %}
<figure class="tmln-figure"><img alt="{{ name }}" src="data:image/png;base64,{{ figs[name] }}" style="max-width:640px;width:100%"><figcaption>{{ captions.get(name, name) }}</figcaption></figure>
{% endfor %}

{% if r.get("marker_comparison") %}{% set mc = r.marker_comparison %}
<h3>Node-based markers compared</h3>
<p>{{ mc.n }} patients, {{ mc.events }} events (the same patients for every marker{% if mc.excluded.n %}; {{ mc.excluded.n }} excluded for a missing value{% endif %}). Each marker as a risk score; HR per SD from a univariable Cox model{% if mc.reference %}; nested test: {{ mc.reference }} vs {{ mc.reference }} + marker (LR, 1 df) and the gain in Harrell's C{% endif %}.</p>
<table class="tmln-table">
<tr><th>marker</th><th>Harrell's C (95 % CI)</th><th>Uno's C (95 % CI)</th><th>HR per SD (95 % CI)</th><th>p</th>{% if mc.reference %}<th>HR per SD adjusted for {{ mc.reference }}</th><th>nested LR p</th><th>ΔC over {{ mc.reference }} (95 % CI)</th>{% endif %}</tr>
{% for m in mc.markers %}<tr><td>{{ m.marker }}{% if m.kind != "continuous" %} <small>({{ m.kind }})</small>{% endif %}</td><td>{{ ci(m.harrell, [m.harrell_ci_low, m.harrell_ci_high]) }}</td><td>{{ ci(m.uno, [m.uno_ci_low, m.uno_ci_high]) }}</td><td>{{ hr(m.hr_per_sd, m.hr_ci_low, m.hr_ci_high) if m.hr_per_sd is not none else "levels" }}</td><td>{{ p(m.hr_p_value) }}</td>{% if mc.reference %}<td>{{ hr(m.hr_adjusted_per_sd, m.hr_adjusted_ci_low, m.hr_adjusted_ci_high) }}</td><td>{{ p(m.nested_p_value) }}</td><td>{% if m.delta_c is not none %}{{ fmt(m.delta_c) }} ({{ fmt(m.delta_c_ci_low) }} to {{ fmt(m.delta_c_ci_high) }}){% else %}n/a{% endif %}</td>{% endif %}</tr>
{% endfor %}
</table>
{% for name in figs if name in ("cindex_markers", "forest_markers") %}
<figure class="tmln-figure"><img alt="{{ name }}" src="data:image/png;base64,{{ figs[name] }}" style="max-width:640px;width:100%"><figcaption>{{ captions.get(name, name) }}</figcaption></figure>
{% endfor %}
{% endif %}
{% for cohort, res in cohorts %}
<h3>Cox models ({{ cohort }} cohort)</h3>
<table class="tmln-table">
<tr><th>term</th><th>contrast</th><th>univariable HR (95 % CI)</th><th>p</th><th>multivariable HR (95 % CI)</th><th>p</th></tr>
{% for term, m in res.cox_multivariable.items() %}{% set u = res.cox_univariable.get(term) %}
<tr><td>{{ term }}</td><td>{{ m.contrast }}</td><td>{% if u %}{{ hr(u.hr, u.ci_low, u.ci_high) }}{% endif %}</td><td>{% if u %}{{ p(u.p_value) }}{% endif %}</td><td>{{ hr(m.hr, m.ci_low, m.ci_high) }}</td><td>{{ p(m.p_value) }}</td></tr>
{% endfor %}
</table>
<p>Nested comparison (covariates vs covariates + {{ r.marker }}): LR χ² = {{ fmt(res.nested.lr_statistic) }} (1 df), {{ p(res.nested.p_value, True) }};
Harrell's C {{ fmt(res.nested.c_covariates) }} → {{ fmt(res.nested.c_full) }}, ΔC = {{ fmt(res.nested.delta_c) }} (95 % CI {{ fmt(res.nested.delta_c_ci[0]) }} to {{ fmt(res.nested.delta_c_ci[1]) }}).</p>
<table class="tmln-table">
<tr><th>risk score</th><th>Harrell's C (95 % CI)</th><th>Uno's C (95 % CI), τ = {{ fmt(res.c_index.tau) }}</th></tr>
<tr><td>{{ r.marker }}</td><td>{{ ci(res.c_index.harrell, res.c_index.harrell_ci) }}</td><td>{{ ci(res.c_index.uno, res.c_index.uno_ci) }}</td></tr>
{% for name, d in res.c_index_models.items() %}<tr><td>Cox: {{ name }}</td><td>{{ ci(d.harrell, d.harrell_ci) }}</td><td>{{ ci(d.uno, d.uno_ci) }}</td></tr>{% endfor %}
</table>
{% endfor %}
{% for name in figs if name.startswith("forest") and name != "forest_markers" %}
<figure class="tmln-figure"><img alt="{{ name }}" src="data:image/png;base64,{{ figs[name] }}" style="max-width:720px;width:100%"><figcaption>{{ captions.get(name, name) }}</figcaption></figure>
{% endfor %}
<p class="tmln-note">HR of {{ r.marker }} per SD ({{ fmt(r.marker_scale.sd) }}) of the training cohort. C-indices: higher risk score = shorter survival; bootstrap B = {{ r.bootstrap }}, seed {{ r.seed }}.</p>
</section>
"""


def _fmt(x, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}g}"


def _p(x, prefix: bool = False) -> str:
    if x is None:
        s = "n/a"
    elif x >= 0.001:
        s = f"{x:.3f}"
    else:
        s = f"{x:.1e}"
    return f"p = {s}" if prefix else s


def _hr(h, lo, hi) -> str:
    return "n/a" if h is None else f"{h:.2f} ({_fmt(lo, 3)}–{_fmt(hi, 3)})"


def _ci(v, ci) -> str:
    return "n/a" if v is None else f"{v:.3f} ({_fmt(ci[0])}–{_fmt(ci[1])})"


def _caption(name: str, marker: str) -> str:
    cohort = "validation" if name.endswith("_validation") else "training"
    base = name.removesuffix("_validation")
    if base == "cutpoint_scan":
        return "Standardised log-rank statistic over the candidate cut-points (dotted: corrected 5 % critical value)."
    if base.startswith("km_"):
        return f"Kaplan–Meier curves by {base[3:]} ({cohort} cohort); + censored; numbers at risk below."
    if base == "cindex_markers":
        return "Node-based markers: Harrell's C of each marker as a risk score, bootstrap 95 % CI; dashed: chance (0.5)."
    if base == "forest_markers":
        return "Node-based markers: Cox HR per SD of each marker, unadjusted and adjusted for the reference, with 95 % CI."
    if base.startswith("forest_"):
        return f"{base[7:].capitalize()} Cox model ({cohort} cohort), HR with 95 % CI."
    return name


def survival_html(result: dict, figures_png: dict[str, bytes] | None = None) -> str:
    """The fragment for ``result`` (the ``run_survival`` dict); ``figures_png``: name -> PNG bytes."""
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    template = env.from_string(_TEMPLATE)
    figs = {k: base64.b64encode(v).decode("ascii") for k, v in (figures_png or {}).items()}
    cohorts = [("training", result)] + ([("validation", result["validation"])] if result.get("validation") else [])
    return template.render(r=result, c=result["cutpoint"], figs=figs, cohorts=cohorts, fmt=_fmt, p=_p, hr=_hr,
                           ci=_ci, captions={k: _caption(k, result["marker"]) for k in figs}).strip() + "\n"
