"""The HTML fragment: embedded figures, key numbers, escaped text."""

from __future__ import annotations

from tmln.survival.analysis import run_survival
from tmln.survival.report import survival_html


def test_fragment_embeds_and_escapes(sim_table):
    frame = sim_table.rename(columns={"t_mln": "<b>x</b>"})
    res = run_survival(frame, "os_months", "death", marker="<b>x</b>", covariates=("n_stage",), bootstrap=3,
                       draw_figures=False)
    html = survival_html(res, {"km_<b>x</b>": b"\x89PNGfake", "forest_multivariable": b"\x89PNGfake"})
    assert html.startswith('<section class="tmln-survival"')
    assert "<b>x</b>" not in html and "&lt;b&gt;x&lt;/b&gt;" in html
    assert html.count("data:image/png;base64,") == 2
    assert "Lausen–Schumacher 1992" in html
    assert f"{res['n']} patients, {res['events']} events" in html
    assert "n_stage=N1" in html  # Cox table rows
