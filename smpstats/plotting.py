"""Figures (matplotlib, imported lazily; the Agg backend when no display)."""

from __future__ import annotations

import numpy as np

__all__ = ["plot_sources", "plot_kinks", "plot_refinement", "plot_chain_prediction"]


def _pyplot():
    import matplotlib

    if matplotlib.get_backend().lower() not in ("agg", "pdf", "svg", "ps", "cairo") and not _has_display():
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _has_display() -> bool:
    import os

    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def plot_sources(study):
    """Two panels: mean output SMP per block (theory marked), and simulation vs theory per trial.

    Parameters
    ----------
    study : smpstats.studies.SourcesStudy

    Returns
    -------
    matplotlib.figure.Figure
    """
    plt = _pyplot()
    table = study.table
    fig, (ax_bar, ax_sc) = plt.subplots(1, 2, figsize=(12, 5.5), gridspec_kw={"width_ratios": [1.2, 1]})
    y = np.arange(len(table))[::-1]
    colors = np.where(table["creates_smp"], "#c0392b", "#2e86c1")
    ax_bar.barh(y, table["smp_out"], xerr=2 * table["smp_out_sem"].fillna(0), color=colors, alpha=0.8)
    has_theory = table["theory_smp"].notna()
    ax_bar.plot(table.loc[has_theory, "theory_smp"], y[has_theory.to_numpy()], "kD", ms=6, label="theory (DESIGN §4)")
    for yi, (_, r) in zip(y, table.iterrows()):
        if not r.creates_smp:
            ax_bar.text(0, yi, f"  {r.smp_out:.2g}", va="center", fontsize=8)
    ax_bar.set_yticks(y, table["block_spec"], fontsize=8)
    ax_bar.set_xlabel("mean output SMP per unit (smooth Gaussian-process inputs, T = 1)")
    ax_bar.set_title("Which blocks create nonsmoothness")
    ax_bar.legend(loc="lower right", fontsize=8)

    samples = study.samples
    kinky = samples[samples["theory_smp"].notna()]
    for spec, grp in kinky.groupby("study_spec", sort=False):
        ax_sc.loglog(grp["theory_smp"], grp["smp_out"], "o", ms=3.5, alpha=0.7, label=spec)
    if len(kinky):
        lo = float(np.nanmin(kinky[["theory_smp", "smp_out"]].to_numpy()[kinky[["theory_smp", "smp_out"]].to_numpy() > 0]))
        hi = float(np.nanmax(kinky[["theory_smp", "smp_out"]].to_numpy()))
        ax_sc.plot([lo, hi], [lo, hi], "k-", lw=1, label="simulation = theory")
        ax_sc.legend(fontsize=7)
    ax_sc.set_xlabel("theory: expected SMP per unit")
    ax_sc.set_ylabel("simulated SMP per unit (trial mean over units)")
    ax_sc.set_title("Per trial: simulation against theory")
    fig.tight_layout()
    return fig


def plot_kinks(t, y, result, *, label: str = "output", zoom: tuple[float, float] | None = None):
    """Plot a signal with its detected kinks, and its slope over a zoom window.

    Parameters
    ----------
    t : array of shape (n_times,)
    y : array of shape (n_times,)
    result : smpstats.SMPResult
        The SMP of ``y`` alone (1-D input).
    zoom : (t_start, t_end), optional
        Window of the lower panel (slope dy/dt with kinks marked); default the
        tenth of the path around its middle.

    Returns
    -------
    matplotlib.figure.Figure
    """
    plt = _pyplot()
    t = np.asarray(t, dtype=float)
    y = np.asarray(y, dtype=float)
    fig, (ax, ax_slope) = plt.subplots(2, 1, figsize=(10, 6))
    ax.plot(t, y, "-", lw=1, color="#34495e", label=label)
    peaks = result.peaks_frame()
    kink_t = peaks["time"].to_numpy() + t[0]
    if len(peaks):
        ax.plot(kink_t, np.full(kink_t.shape, ax.get_ylim()[0]), "|", color="#c0392b", ms=8,
                label=f"{len(peaks)} kinks (SMP {result.value:.3g})")
    ax.set_xlabel("t")
    ax.legend(fontsize=8, loc="best")
    if zoom is None:
        mid, width = 0.5 * (t[0] + t[-1]), 0.05 * (t[-1] - t[0])
        zoom = (mid - width, mid + width)
    inside = (t >= zoom[0]) & (t <= zoom[1])
    slope = np.gradient(y, t)
    ax_slope.plot(t[inside], slope[inside], "-", lw=1, color="#34495e", label="slope dy/dt")
    show = (kink_t >= zoom[0]) & (kink_t <= zoom[1])
    for tk in kink_t[show]:
        ax_slope.axvline(tk, color="#c0392b", lw=0.6, alpha=0.6)
    ax_slope.set_xlabel("t (zoom)")
    ax_slope.set_title(f"slope jumps at the {int(show.sum())} kinks in this window", fontsize=9)
    ax_slope.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def plot_refinement(table):
    """SMP against the number of grid points, with the resolved flag (table from the demo)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for resolved, marker in ((True, "o"), (False, "x")):
        sel = table[table["resolved"] == resolved]
        ax.semilogx(sel["n_points"], sel["smp_total"], marker, ms=7, ls="none",
                    label="resolved" if resolved else "not resolved")
    ax.semilogx(table["n_points"], table["smp_total"], "-", color="0.6", lw=1, zorder=0)
    ax.set_xlabel("grid points along the path")
    ax.set_ylabel("SMP summed over output components")
    ax.set_title("Grid estimate against the step")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_chain_prediction(prediction, observed=None, ax=None):
    """Predicted SMP per unit after each stage of a chain: median, 50 % and 90 % intervals (log scale).

    ``observed``: optional simulate table of the same chain; its per-trial
    values (networks, or paths of one given network) are drawn as points
    beside each interval, their mean as a cross.
    """
    plt = _pyplot()
    frame = prediction.to_frame()
    x = np.arange(len(frame))
    positive = frame["upper_90"] > 0
    own_figure = ax is None
    if own_figure:
        fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(frame) + 2), 4))
    else:
        fig = ax.figure
    if observed is not None:
        rng = np.random.default_rng(0)
        for i, stage in enumerate(frame["stage"]):
            values = observed.loc[observed["stage"] == stage, "smp_out"].to_numpy(dtype=float)
            values = values[values > 0]
            if len(values):
                ax.plot(i + 0.22 + rng.uniform(-0.06, 0.06, len(values)), values, ".", color="C1", ms=2, alpha=0.4,
                        label="simulated trials" if i == int(np.argmax(positive)) else None)
                ax.plot(i + 0.22, values.mean(), "x", color="C3", ms=7, mew=2,
                        label="simulated mean" if i == int(np.argmax(positive)) else None)
    ax.vlines(x[positive], frame["lower_90"][positive], frame["upper_90"][positive], color="C0", lw=2, alpha=0.4,
              label="90 % interval")
    ax.vlines(x[positive], frame["lower_50"][positive], frame["upper_50"][positive], color="C0", lw=6, alpha=0.8,
              label="50 % interval")
    ax.plot(x[positive], frame["median"][positive], "o", color="k", ms=4, label="median")
    ax.set_yscale("log")
    ax.set_xticks(x, [f"{s}. {b}" for s, b in zip(frame["stage"], frame["block"])], rotation=30, ha="right",
                  fontsize=8)
    ax.set_ylabel("output SMP per unit")
    ax.set_title(f"Predicted SMP per stage ({prediction.kind}); stages with SMP 0 not drawn", fontsize=9)
    ax.legend(fontsize=8)
    if own_figure:
        fig.tight_layout()
    return fig
