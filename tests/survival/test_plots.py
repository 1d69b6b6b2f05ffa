"""Figures: PNG at 300 dpi and SVG, with the labels a journal expects."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from tmln.survival import kaplan_meier as km
from tmln.survival import plots


def _check_png(data: bytes) -> Image.Image:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    img = Image.open(io.BytesIO(data))
    dpi = img.info.get("dpi")
    assert dpi is not None and round(dpi[0]) == 300
    return img


def test_km_figure(gbsg2):
    groups = np.where(gbsg2["pnodes"] > 3, "pnodes > 3", "pnodes ≤ 3")
    fits = km.kaplan_meier(gbsg2["time"], gbsg2["cens"], groups, ["pnodes ≤ 3", "pnodes > 3"])
    fig = plots.km_figure(fits, "Time (days)", "Log-rank p = 0.001")
    img = _check_png(fig["png"])
    assert img.size[0] > 1000  # 300 dpi at ~4.8 in
    svg = fig["svg"].decode()
    for text in ("Time (days)", "Survival probability", "Number at risk", "Log-rank p = 0.001", "pnodes &gt; 3 (n = "):
        assert text in svg, text
    # numbers at risk at t = 0 are the group sizes
    assert f">{int((gbsg2['pnodes'] > 3).sum())}<" in svg


def test_forest_figure():
    rows = [{"label": "n_stage: N1 vs N0", "hr": 1.8, "ci_low": 1.1, "ci_high": 2.9, "p_value": 0.02},
            {"label": "t_mln (per SD = 0.1)", "hr": 1.5, "ci_low": 1.2, "ci_high": 1.9, "p_value": 2e-5},
            {"label": "bad", "hr": float("nan"), "ci_low": 0, "ci_high": 0, "p_value": None}]
    fig = plots.forest_figure(rows, title="Multivariable Cox")
    _check_png(fig["png"])
    svg = fig["svg"].decode()
    assert "n_stage: N1 vs N0" in svg and "1.80 (1.10–2.90)" in svg and "Hazard ratio" in svg
    assert "bad" not in svg  # non-finite rows are left out


def test_cindex_figure():
    rows = [{"label": "t_mln", "c": 0.68, "ci_low": 0.61, "ci_high": 0.74},
            {"label": "n_stage", "c": 0.64, "ci_low": None, "ci_high": None},
            {"label": "bad", "c": float("nan"), "ci_low": None, "ci_high": None}]
    fig = plots.cindex_figure(rows, title="Markers")
    _check_png(fig["png"])
    svg = fig["svg"].decode()
    assert "0.680 (0.610–0.740)" in svg and "0.640" in svg
    assert "bad" not in svg and "Harrell" in svg


def test_format_p():
    assert plots.format_p(0.0321) == "p = 0.032"
    assert plots.format_p(2.5e-7).startswith("p = 2.5 × 10")
    assert plots.format_p(None) == "p = n/a"
