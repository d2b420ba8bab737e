"""Figures of forensic assessments (matplotlib, Agg-safe; imported only when plotting)."""

from __future__ import annotations

import numpy as np

__all__ = ["plot_report", "plot_validation"]


def plot_report(report, *, max_components: int = 3):
    """Figure of a :class:`smpstats.forensics.ForensicReport`.

    Panels: the trajectory (up to ``max_components`` components) with the kinks the grid
    estimator resolved; its second differences; the log Bayes factor against its predictive
    distributions under the fitted smooth-plus-noise null and under the network hypothesis.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    from .forensic_stats import second_differences

    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    y = report.trajectory
    t = np.arange(report.n_frames) * report.dt
    kinks = report.kinks
    for c in range(min(report.n_components, max_components)):
        line, = axes[0].plot(t, y[:, c], lw=1.0, label=f"component {c}")
        k = kinks[kinks["component"] == c] if len(kinks) else kinks
        if len(k):
            idx = np.clip(np.round(k["time"].to_numpy() / report.dt).astype(int), 0, report.n_frames - 1)
            axes[0].plot(k["time"], y[idx, c], "x", color=line.get_color(), ms=6)
        d = second_differences(y[:, c], 1)
        axes[1].plot(t[1:-1], d / np.sqrt(np.mean(d**2)), lw=0.7, color=line.get_color())
    axes[0].set(xlabel="time", ylabel="trajectory",
                title=f"trajectory ({len(kinks)} resolved kink(s) marked x)")
    axes[0].legend(fontsize=8)
    axes[1].set(xlabel="time", ylabel="d / rms(d)", title="second differences (frame step)")
    ax = axes[2]
    bins = np.linspace(-10.5, 10.5, 43)
    ax.hist(report.null_log_bf, bins=bins, density=True, alpha=0.5, color="tab:blue",
            label="smooth + noise (fitted, bootstrap)")
    ax.hist(report.network_log_bf, bins=bins, density=True, alpha=0.5, color="tab:red",
            label="network (prior predictive)")
    ax.axvline(report.log_bayes_factor, color="k", lw=2, label="observed")
    ax.set(xlabel="log Bayes factor (network : smooth)", ylabel="density",
           title=f"P(network) = {report.posterior_nonsmooth:.3f}, p = {report.p_value_smooth:.3g}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_validation(results, examples: dict | None = None):
    """Figure of the validation study: ROC, p-values under the null, reliability of the posterior.

    Parameters
    ----------
    results : pandas.DataFrame
        One row per trajectory with columns ``source`` ('relu', 'gelu' or 'null*'),
        ``label`` (1 for piecewise-linear networks), ``log_bf``, ``posterior``, ``p_value``
        and ``matched`` (whether a null trajectory's noise is matched to a network's roughness).
    examples : dict of name -> (n_frames,) array, optional
        Example trajectories (minus their smooth truth) for a first panel.
    """
    import matplotlib.pyplot as plt

    n = 4 if examples else 3
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.8))
    axes = list(axes)
    if examples:
        ax = axes.pop(0)
        for offset, (name, err) in enumerate(examples.items()):
            ax.plot(err - err.mean() + 3 * offset * np.std(list(examples.values())[0]), lw=0.8, label=name)
        ax.set(xlabel="frame", ylabel="output - truth (offset)", title="residual roughness")
        ax.legend(fontsize=8)
    pos = results[results["source"] == "relu"]["log_bf"].to_numpy()
    neg = results[results["source"].str.startswith("null") & results["matched"]]["log_bf"].to_numpy()
    gelu = results[results["source"] == "gelu"]["log_bf"].to_numpy()
    ax = axes[0]
    for other, name in ((neg, "matched noise"), (gelu, "GELU nets")):
        if other.size and pos.size:
            thresholds = np.unique(np.r_[pos, other])[::-1]
            tpr = np.r_[0, [(pos >= th).mean() for th in thresholds]]
            fpr = np.r_[0, [(other >= th).mean() for th in thresholds]]
            ax.plot(fpr, tpr, label=f"ReLU vs {name}")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (score: log Bayes factor)")
    ax.legend(fontsize=8)
    ax = axes[1]
    p = np.sort(results[results["source"].str.startswith("null")]["p_value"].to_numpy())
    ax.plot(np.arange(1, p.size + 1) / (p.size + 1), p, ".", ms=3)
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set(xlabel="uniform quantile", ylabel="p-value", title=f"p-values under the null ({p.size})")
    ax = axes[2]
    calib = results[results["source"].isin(["relu"]) | (results["source"].str.startswith("null") & results["matched"])]
    edges = np.linspace(0, 1, 11)
    which = np.clip(np.digitize(calib["posterior"], edges) - 1, 0, 9)
    xs, ys, ns = [], [], []
    for b in range(10):
        sel = which == b
        if sel.any():
            xs.append(calib["posterior"][sel].mean())
            ys.append(calib["label"][sel].mean())
            ns.append(int(sel.sum()))
    ax.scatter(xs, ys, s=np.array(ns) * 2 + 5)
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set(xlabel="posterior P(network)", ylabel="observed frequency", title="reliability (size = count)")
    fig.tight_layout()
    return fig
