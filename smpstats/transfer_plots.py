"""Figures of transfer-model checks (matplotlib; ArviZ for posterior predictive plots).

Every function returns a :class:`matplotlib.figure.Figure`; saving is the
caller's business (the CLI writes them atomically).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from .checks import PROBS, CheckReport
from .plotting import _pyplot as _plt

__all__ = ["plot_bands", "plot_coverage", "plot_config_intervals", "plot_pit", "plot_ppc", "plot_loo_pit",
           "check_figures"]


def plot_bands(report: CheckReport, family: str, *, max_points: int = 300):
    """Observed SMP against the theory, with the predictive mean and 90 % band, for one family.

    Rows are sorted by the theory; x is the row rank, y the SMP per unit
    (log scale): observed points, theory line, predictive mean and band.
    """
    plt = _plt()
    rows = report.rows[report.rows["family"] == family]
    if len(rows) > max_points:
        rows = rows.iloc[np.linspace(0, len(rows) - 1, max_points).round().astype(int)]
    rows = rows.sort_values("theory")
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.fill_between(x, rows["lower_90"], rows["upper_90"], color="C0", alpha=0.25, step="mid",
                    label=f"{report.kind}: 90 % predictive interval")
    ax.plot(x, rows["pred_mean"], color="C0", lw=1, label=f"{report.kind}: predictive mean")
    ax.plot(x, rows["theory"], color="C3", lw=1, ls="--", label="theory (expected SMP)")
    ax.scatter(x, rows["observed"], s=6, color="k", zorder=3, label="simulated (held out)")
    ax.set_yscale("log")
    ax.set_xlabel("held-out trial, sorted by theory")
    ax.set_ylabel("output SMP per unit")
    cov = ((rows["observed"] >= rows["lower_90"]) & (rows["observed"] <= rows["upper_90"])).mean()
    ax.set_title(f"{family}: theory and predictive bands ({cov:.0%} inside the 90 % band)")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig


def plot_coverage(report: CheckReport):
    """Empirical against nominal coverage of the central intervals, per family."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 4))
    nominal = np.array(PROBS)
    for i, (_, r) in enumerate(report.table.iterrows()):
        emp = [r[f"coverage_{round(100 * p)}"] for p in PROBS]
        style = dict(color="k", lw=2) if r["family"] == "all" else dict(color=f"C{i}", lw=1)
        ax.plot(nominal, emp, marker="o", label=r["family"], **style)
    ax.plot([0.4, 1], [0.4, 1], color="grey", ls=":", lw=1)
    ax.fill_between([0.88, 0.92], 0.85, 0.95, color="C2", alpha=0.2, label="90 % target")
    ax.set_xlabel("nominal coverage")
    ax.set_ylabel("held-out coverage")
    ax.set_title(f"{report.kind}: interval coverage")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_pit(report: CheckReport, bins: int = 10):
    """Histogram of held-out PIT values per family (flat when calibrated)."""
    plt = _plt()
    fams = [f for f in report.table["family"] if f != "all"]
    ncol = min(4, len(fams))
    nrow = int(np.ceil(len(fams) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(3 * ncol, 2.4 * nrow), squeeze=False)
    for ax, fam in zip(axes.flat, fams):
        pit = report.rows.loc[report.rows["family"] == fam, "pit"]
        ax.hist(pit, bins=bins, range=(0, 1), density=True, color="C0", alpha=0.7)
        ax.axhline(1.0, color="k", lw=1, ls=":")
        ax.set_title(fam, fontsize=9)
        ax.set_xlim(0, 1)
    for ax in list(axes.flat)[len(fams):]:
        ax.set_visible(False)
    fig.suptitle(f"{report.kind}: PIT of held-out trials")
    fig.tight_layout()
    return fig


def plot_ppc(model: Any, seed: int = 0):
    """ArviZ posterior predictive check of log output SMP on the training rows (Bayesian tier)."""
    plt = _plt()
    from .bayes import _quiet_arviz

    az = _quiet_arviz()
    idata = model.check_idata(seed=seed, max_draws=200)
    observed = idata.observed_data["smp_out"].values
    # exact zeros (the hurdle) sit at a floor one decade below the smallest positive observation
    floor = 0.1 * (observed[observed > 0].min() if (observed > 0).any() else 1.0)
    for group in (idata.posterior_predictive, idata.observed_data):
        group["smp_out"] = np.log10(np.maximum(group["smp_out"], floor))
    fig, ax = plt.subplots(figsize=(6, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        az.plot_ppc(idata, ax=ax, num_pp_samples=100, random_seed=seed)
    ax.set_xlabel("log10 output SMP per unit (training rows)")
    ax.set_title("Posterior predictive check")
    fig.tight_layout()
    return fig


def plot_loo_pit(model: Any, seed: int = 0):
    """ArviZ LOO-PIT ECDF difference plot on the training rows (Bayesian tier)."""
    plt = _plt()
    from .bayes import _quiet_arviz

    az = _quiet_arviz()
    idata = model.check_idata(seed=seed)
    fig, ax = plt.subplots(figsize=(6, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        az.plot_loo_pit(idata, y="smp_out", ecdf=True, ax=ax)
    ax.set_title("LOO-PIT (ECDF difference with 94 % band)")
    fig.tight_layout()
    return fig


def plot_config_intervals(report: CheckReport):
    """Each held-out configuration's mean SMP against the 90 % interval of its predictive distribution.

    Everything is divided by the predicted mean (1 = the prediction), one
    row per configuration grouped by family; filled points lie inside.
    """
    plt = _plt()
    cfg = report.configs
    fig, ax = plt.subplots(figsize=(10, 0.22 * len(cfg) + 1.4))
    y = np.arange(len(cfg))[::-1]
    scale = cfg["predicted_mean"].to_numpy()
    families = list(dict.fromkeys(cfg["family"]))
    for i, fam in enumerate(families):
        m = (cfg["family"] == fam).to_numpy()
        inside = cfg["in_90"].to_numpy(bool)
        ax.hlines(y[m], (cfg["lower_90"] / scale)[m], (cfg["upper_90"] / scale)[m], color=f"C{i}", lw=3, alpha=0.5,
                  label=fam)
        obs = (cfg["observed_mean"] / scale).to_numpy()
        ax.scatter(obs[m & inside], y[m & inside], color=f"C{i}", s=14, zorder=3)
        ax.scatter(obs[m & ~inside], y[m & ~inside], facecolor="white", edgecolor=f"C{i}", s=18, zorder=3)
    ax.axvline(1.0, color="grey", lw=0.8, ls=":")
    ax.set_yticks(y, [str(c) for c in cfg["config"]], fontsize=6)
    ax.set_xlabel("mean SMP of the configuration / predicted mean (bar: 90 % interval; open point: outside it)")
    ax.set_title(f"{report.kind}: held-out configurations, {cfg['in_90'].mean():.0%} in their 90 % interval")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


def check_figures(report: CheckReport, model: Any = None) -> dict[str, Any]:
    """All figures of a check: ``{file stem: Figure}`` (bands per family, coverage, configurations, PIT, PPC,
    LOO-PIT)."""
    figs = {f"bands_{fam}": plot_bands(report, fam) for fam in report.table["family"] if fam != "all"}
    figs["coverage"] = plot_coverage(report)
    figs["config_intervals"] = plot_config_intervals(report)
    figs["pit"] = plot_pit(report)
    if model is not None and getattr(model, "kind", "") == "bayes":
        figs["ppc"] = plot_ppc(model)
        figs["loo_pit"] = plot_loo_pit(model)
    return figs
