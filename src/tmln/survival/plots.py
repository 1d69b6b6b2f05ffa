"""Journal-quality figures: Kaplan–Meier curves with a numbers-at-risk table, forest plots, cut-point scan.

Figures are drawn on a bare ``matplotlib.figure.Figure`` with the Agg canvas (no pyplot, no global
backend state) and rendered to bytes: ``{"png": ..., "svg": ...}`` (PNG at 300 dpi). Writing is
left to the caller (through ``tmln.atomic``), so a failed run leaves no partial figure.
Colours: Okabe–Ito (colour-blind safe). Fonts: sans-serif 8–9 pt at 1:1 for a single column
(~ 3.5 in) to 1.5 columns.
"""

from __future__ import annotations

import io

import numpy as np

OKABE_ITO = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000"]
DPI = 300
_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")
_RC = {"font.size": 8, "axes.labelsize": 9, "axes.titlesize": 9, "legend.fontsize": 8,
       "xtick.labelsize": 8, "ytick.labelsize": 8, "font.family": "sans-serif",
       "svg.fonttype": "none", "axes.spines.top": False, "axes.spines.right": False}


def _render(fig) -> dict[str, bytes]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    out = {}
    for fmt in ("png", "svg"):
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=DPI, bbox_inches="tight", metadata={"Date": None} if fmt == "svg" else None)
        out[fmt] = buf.getvalue()
    return out


def format_p(p: float | None) -> str:
    """``p = 0.032``, ``p = 1.2 × 10⁻⁵``-style text (``p < 0.001`` style avoided: exact values)."""
    if p is None or not np.isfinite(p):
        return "p = n/a"
    if p >= 0.001:
        return f"p = {p:.3f}"
    mant, exp = f"{p:.1e}".split("e")
    return f"p = {mant} × 10{str(int(exp)).translate(_SUPERSCRIPT)}"


def _nice_ticks(t_max: float, n: int = 6) -> np.ndarray:
    raw = t_max / n
    mag = 10 ** np.floor(np.log10(raw)) if raw > 0 else 1
    step = min((s * mag for s in (1, 2, 2.5, 5, 10) if s * mag >= raw), default=raw)
    return np.arange(0, t_max + step * 0.01, step)


def km_figure(km_groups, time_label: str, annotation: str = "", title: str = "",
              colours=None, at_risk_times=None, ci_bands: bool | None = None) -> dict[str, bytes]:
    """KM step curves (95 % CI bands, + = censored) with a numbers-at-risk table below the axis.

    ``km_groups``: list of ``kaplan_meier.KMGroup``. ``time_label``: x-axis label with its unit,
    e.g. "Time since surgery (months)". ``annotation``: text (log-rank p ...) in the lower left.
    ``ci_bands``: shade 95 % CIs (default: only with up to 3 groups, where they stay readable).
    """
    import matplotlib
    from matplotlib.figure import Figure

    colours = colours or OKABE_ITO
    with matplotlib.rc_context(_RC):
        t_max = max(float(g.curve["time"].max()) for g in km_groups)
        ticks = np.asarray(at_risk_times) if at_risk_times is not None else _nice_ticks(t_max)
        n_groups = len(km_groups)
        ci_bands = n_groups <= 3 if ci_bands is None else ci_bands
        fig = Figure(figsize=(4.8, 3.4 + 0.18 * n_groups))
        gs = fig.add_gridspec(2, 1, height_ratios=[3.4, 0.35 + 0.18 * n_groups], hspace=0.32)
        ax = fig.add_subplot(gs[0])
        tab = fig.add_subplot(gs[1], sharex=ax)
        for i, g in enumerate(km_groups):
            c = colours[i % len(colours)]
            cur = g.curve
            t = np.r_[0.0, cur["time"].to_numpy()] if cur["time"].iloc[0] > 0 else cur["time"].to_numpy()
            s = np.r_[1.0, cur["survival"].to_numpy()] if cur["time"].iloc[0] > 0 else cur["survival"].to_numpy()
            lo = np.r_[1.0, cur["ci_low"].to_numpy()] if cur["time"].iloc[0] > 0 else cur["ci_low"].to_numpy()
            hi = np.r_[1.0, cur["ci_high"].to_numpy()] if cur["time"].iloc[0] > 0 else cur["ci_high"].to_numpy()
            label = f"{g.name} (n = {g.n}, events = {g.events})"
            ax.step(t, s, where="post", color=c, lw=1.4, label=label)
            if ci_bands:
                ax.fill_between(t, lo, hi, step="post", color=c, alpha=0.15, lw=0)
            cens = cur[cur["censored"] > 0]
            ax.plot(cens["time"], cens["survival"], ls="none", marker="|", ms=5, mew=0.9, color=c)
        ax.set_ylim(0, 1.02)
        ax.set_xlim(0, ticks[-1] if len(ticks) else t_max)
        ax.set_ylabel("Survival probability")
        ax.set_yticks(np.linspace(0, 1, 6))
        ax.grid(axis="y", lw=0.3, alpha=0.5)
        ax.tick_params(labelbottom=False)
        if title:
            ax.set_title(title, loc="left")
        ax.legend(loc="upper right", frameon=True, framealpha=0.85, edgecolor="none", handlelength=1.5)
        if annotation:
            ax.text(0.02, 0.04, annotation, transform=ax.transAxes, ha="left", va="bottom")
        # numbers-at-risk table
        tab.set_ylim(-0.5, n_groups - 0.5)
        tab.invert_yaxis()
        for i, g in enumerate(km_groups):
            c = colours[i % len(colours)]
            times = g.curve["time"].to_numpy()
            at_risk = g.curve["at_risk"].to_numpy()
            for t in ticks:
                # at risk at t = at_risk of the first curve time >= t (0 beyond the last)
                j = np.searchsorted(times, t, side="left")
                n = int(at_risk[j]) if j < len(times) else 0
                tab.text(t, i, str(n), ha="center", va="center", color=c, fontsize=7.5)
        tab.set_yticks(range(n_groups))
        tab.set_yticklabels([g.name for g in km_groups])
        for lab, i in zip(tab.get_yticklabels(), range(n_groups)):
            lab.set_color(colours[i % len(colours)])
        tab.tick_params(axis="y", length=0, pad=16)
        tab.spines["left"].set_visible(False)
        tab.set_xticks(ticks)
        tab.set_xlabel(time_label)
        tab.set_title("Number at risk", loc="left", fontsize=8)
        return _render(fig)


def _log_ticks(ax, lo: float, hi: float) -> None:
    """Readable ticks (0.25, 0.5, 1, 2, 4 ...) on a log x-axis."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    cands = [m * 10.0 ** k for k in range(-3, 4) for m in (1, 2, 5)] + [0.25, 0.75, 1.5, 3, 4]
    ticks = sorted(t for t in cands if lo <= t <= hi)
    if len(ticks) > 7:
        ticks = sorted(t for t in ticks if any(np.isclose(t, m * 10.0 ** k) for k in range(-3, 4) for m in (1, 2, 5)))
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def forest_figure(rows, title: str = "", x_label: str = "Hazard ratio (95 % CI, log scale)") -> dict[str, bytes]:
    """Forest plot: one line per term (label, HR [CI], p) on a log axis with a reference line at 1.

    ``rows``: iterable of dicts with ``label``, ``hr``, ``ci_low``, ``ci_high``, ``p_value``.
    """
    import matplotlib
    from matplotlib.figure import Figure

    rows = [r for r in rows if r.get("hr") is not None and np.isfinite(r["hr"])]
    with matplotlib.rc_context(_RC):
        n = max(len(rows), 1)
        fig = Figure(figsize=(6.4, 0.9 + 0.3 * n))
        ax = fig.add_axes((0.30, 0.8 / (0.9 + 0.3 * n), 0.40, (0.3 * n) / (0.9 + 0.3 * n)))
        y = np.arange(n)[::-1]
        lows = [r["ci_low"] for r in rows] or [1]
        highs = [r["ci_high"] for r in rows] or [1]
        for yi, r in zip(y, rows):
            ax.plot([r["ci_low"], r["ci_high"]], [yi, yi], color="black", lw=1)
            ax.plot([r["hr"]], [yi], marker="s", color=OKABE_ITO[0], ms=5)
            ax.text(-0.03, yi, r["label"], transform=ax.get_yaxis_transform(), ha="right", va="center")
            ax.text(1.03, yi, f"{r['hr']:.2f} ({r['ci_low']:.2f}–{r['ci_high']:.2f})",
                    transform=ax.get_yaxis_transform(), ha="left", va="center")
            ax.text(1.42, yi, format_p(r.get("p_value")).replace("p = ", ""),
                    transform=ax.get_yaxis_transform(), ha="left", va="center")
        top = n - 0.4
        ax.text(1.03, top + 0.2, "HR (95 % CI)", transform=ax.get_yaxis_transform(), ha="left",
                va="bottom", fontweight="bold")
        ax.text(1.42, top + 0.2, "p", transform=ax.get_yaxis_transform(), ha="left", va="bottom",
                fontweight="bold")
        ax.axvline(1.0, color="grey", lw=0.8, ls="--")
        ax.set_xscale("log")
        lo, hi = min(min(lows), 1.0), max(max(highs), 1.0)
        ax.set_xlim(lo / 1.25, hi * 1.25)
        _log_ticks(ax, lo / 1.25, hi * 1.25)
        return _finish_rows(fig, ax, n, x_label, title, title_x=-0.72)


def _finish_rows(fig, ax, n: int, x_label: str, title: str, title_x: float) -> dict[str, bytes]:
    """The common end of the one-row-per-item figures (forest plot, C-index plot): rows without a
    y axis, the x label, the title left of the row labels; rendered."""
    ax.set_ylim(-0.6, n - 0.4)
    ax.set_yticks([])
    ax.spines["left"].set_visible(False)
    ax.set_xlabel(x_label)
    if title:
        ax.set_title(title, loc="left", x=title_x, pad=18, fontsize=9)
    return _render(fig)


def cindex_figure(rows, title: str = "", x_label: str = "Harrell's C (95 % CI)") -> dict[str, bytes]:
    """Dot plot of C-indices: one line per marker (label, C [CI]) with a reference line at 0.5 (chance).

    ``rows``: iterable of dicts with ``label``, ``c``, ``ci_low``, ``ci_high`` (CI bounds may be None).
    """
    import matplotlib
    from matplotlib.figure import Figure

    rows = [r for r in rows if r.get("c") is not None and np.isfinite(r["c"])]
    with matplotlib.rc_context(_RC):
        n = max(len(rows), 1)
        fig = Figure(figsize=(5.6, 0.9 + 0.3 * n))
        ax = fig.add_axes((0.30, 0.8 / (0.9 + 0.3 * n), 0.45, (0.3 * n) / (0.9 + 0.3 * n)))
        y = np.arange(n)[::-1]
        values = [0.5]
        for yi, r in zip(y, rows):
            lo, hi = r.get("ci_low"), r.get("ci_high")
            if lo is not None and hi is not None and np.isfinite(lo) and np.isfinite(hi):
                ax.plot([lo, hi], [yi, yi], color="black", lw=1)
                values += [lo, hi]
                text = f"{r['c']:.3f} ({lo:.3f}–{hi:.3f})"
            else:
                text = f"{r['c']:.3f}"
            values.append(r["c"])
            ax.plot([r["c"]], [yi], marker="o", color=OKABE_ITO[0], ms=5)
            ax.text(-0.03, yi, r["label"], transform=ax.get_yaxis_transform(), ha="right", va="center")
            ax.text(1.03, yi, text, transform=ax.get_yaxis_transform(), ha="left", va="center")
        ax.text(1.03, n - 0.2, "C (95 % CI)", transform=ax.get_yaxis_transform(), ha="left", va="bottom",
                fontweight="bold")
        ax.axvline(0.5, color="grey", lw=0.8, ls="--")
        lo, hi = min(values), max(values)
        pad = max(0.02, 0.08 * (hi - lo))
        ax.set_xlim(max(0.0, lo - pad), min(1.0, hi + pad))
        return _finish_rows(fig, ax, n, x_label, title, title_x=-0.55)


def scan_figure(scan, marker: str, cut: float, critical: float | None = None) -> dict[str, bytes]:
    """Standardised log-rank |Z| over the candidate cuts, the chosen cut and the 5 % critical value."""
    import matplotlib
    from matplotlib.figure import Figure

    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(4.2, 2.8))
        ax = fig.add_subplot(1, 1, 1)
        ax.plot(scan["cut"], np.abs(scan["z"]), marker="o", ms=2.5, lw=1, color=OKABE_ITO[0],
                label="|standardised log-rank statistic|")
        ax.axvline(cut, color=OKABE_ITO[1], lw=1, ls="--", label=f"selected cut = {cut:.4g}")
        if critical is not None:
            ax.axhline(critical, color="grey", lw=0.8, ls=":", label=f"5 % critical value (corrected) = {critical:.2f}")
        ax.set_xlabel(f"Cut-point ({marker}; low = at or below the cut)")
        ax.set_ylabel("|Z|, standardised log-rank")
        ax.set_ylim(0, max(float(np.abs(scan["z"]).max()), critical or 0) * 1.08)
        ax.legend(frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.2))
        return _render(fig)
