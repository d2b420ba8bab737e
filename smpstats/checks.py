"""Checks of transfer models on held-out simulations (DESIGN §5).

:func:`check` predicts held-out rows (other seeds and, for honest numbers,
other block configurations than the fit used) and scores the predictive
distributions per block family:

* error of the predictive mean and of the theory against the observed mean;
* coverage of the central 50, 90 and 95 % predictive intervals;
* CRPS (lower is better) and the PIT values (uniform when calibrated);
* at the level of configurations: the predictive distribution of each
  held-out configuration's mean SMP (the draws averaged over its rows,
  which share the configuration's effect in every draw), its 90 % interval
  and PIT. A family has a handful of configurations, and where the spread
  between configurations dominates the spread between a configuration's
  trials, each configuration's trials fall in or out of their intervals
  together: the family's trial coverage then counts how many of its few
  configurations fall inside. The coverage of the configurations' means,
  pooled over all families, is the check of the spread between
  configurations;
* for the regression tier, the coverage of the quantile-regression 90 %
  interval (a distribution-free comparison);
* for the Bayesian tier, the convergence diagnostics of the fit and, on the
  training rows, PSIS-LOO (elpd, p_loo, Pareto k) and LOO-PIT.

The result is a :class:`CheckReport` with a table, ``summary()``,
``to_dict()`` (JSON-ready) and the arrays behind the figures of
:mod:`smpstats.transfer_plots`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from .errors import InputError
from .predictive import Predictive
from .transfer import TransferModel, check_samples

__all__ = ["check", "CheckReport", "PROBS", "COVERAGE_TARGET"]

#: Interval probabilities whose coverage is reported.
PROBS = (0.5, 0.9, 0.95)
#: Acceptable coverage range of the 90 % intervals.
COVERAGE_TARGET = (0.85, 0.95)


def _nan_json(v: Any) -> Any:
    if isinstance(v, (float, np.floating)):
        return float(v) if np.isfinite(v) else None
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.bool_,)):
        return bool(v)
    return v


@dataclass
class CheckReport:
    """Result of :func:`check`.

    Attributes
    ----------
    kind : str
        Tier of the checked model.
    table : pandas.DataFrame
        One row per block family plus ``all``: ``n``, ``observed_mean``,
        ``predicted_mean``, ``mean_rel_error``, ``theory_rel_error``,
        ``coverage_50``/``_90``/``_95``, ``crps``, ``pit_ks_p`` (KS test of
        the PIT values against U(0, 1)), ``n_configs`` and
        ``config_coverage_90`` (share of the configurations whose mean SMP
        lies in its 90 % interval) and, for regression, ``qr_coverage_90``.
    configs : pandas.DataFrame
        Per held-out configuration: family, config, ``n`` rows, observed and
        predicted mean SMP, ``lower_90``/``upper_90`` of the predictive
        distribution of that mean, and its ``pit``.
    rows : pandas.DataFrame
        Per held-out row: family, config, observed, theory, predictive mean,
        interval bounds, CRPS and PIT.
    diagnostics : dict
        Bayesian tier: R-hat, ESS, divergences, sampler timings; LOO results.
    loo_pit : ndarray or None
        LOO-PIT values of the training rows (Bayesian tier).
    warnings : list of str
        The fit's warnings and failed targets.
    predictive : Predictive or None
        The held-out predictions the scores came from.
    """

    kind: str
    table: pd.DataFrame
    rows: pd.DataFrame
    configs: pd.DataFrame
    diagnostics: dict[str, Any] = field(default_factory=dict)
    loo_pit: np.ndarray | None = None
    warnings: list[str] = field(default_factory=list)
    predictive: Predictive | None = None

    @property
    def passed(self) -> bool:
        """True when every family's 90 % coverage lies in :data:`COVERAGE_TARGET` and the fit has no warnings."""
        lo, hi = COVERAGE_TARGET
        cov = self.table.loc[self.table["family"] != "all", "coverage_90"]
        return bool(((cov >= lo) & (cov <= hi)).all()) and not self.warnings

    def summary(self) -> str:
        lines = [f"Check of the {self.kind} transfer model on {int(self.table['n'].iloc[-1])} held-out rows"]
        cols = ["family", "n", "mean_rel_error", "theory_rel_error", "coverage_50", "coverage_90", "coverage_95",
                "crps", "pit_ks_p", "n_configs", "config_coverage_90"] + (
                    ["qr_coverage_90"] if "qr_coverage_90" in self.table else [])
        lines.append(self.table[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        d = self.diagnostics
        if "r_hat_max" in d:
            lines.append(f"Diagnostics: max R-hat {d['r_hat_max']:.4f}, min bulk ESS {d['ess_bulk_min']:.0f}, "
                         f"min tail ESS {d['ess_tail_min']:.0f}, divergences {d['divergences']}")
        if "elpd_loo" in d:
            lines.append(f"PSIS-LOO on the training rows: elpd {d['elpd_loo']:.1f} (se {d['elpd_loo_se']:.1f}), "
                         f"p_loo {d['p_loo']:.1f}, Pareto k > 0.7: {d['pareto_k_bad']} rows")
        covered = self.configs["in_90"]
        lines.append(f"Configurations: the 90 % intervals of their mean SMP hold {int(covered.sum())} of "
                     f"{len(covered)} ({covered.mean():.0%}; binomial 90 % range "
                     f"{_binomial_range(len(covered)):s}), the check of the spread between configurations.")
        lo, hi = COVERAGE_TARGET
        lines.append(f"Target: 90 % intervals cover {lo:.0%}-{hi:.0%} for every family: "
                     f"{'met' if self.passed else 'NOT met'}.")
        lines += [f"WARNING: {w}" for w in self.warnings]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "passed": self.passed,
            "table": [{k: _nan_json(v) for k, v in r.items()} for r in self.table.to_dict(orient="records")],
            "configs": [{k: _nan_json(v) for k, v in r.items()} for r in self.configs.to_dict(orient="records")],
            "diagnostics": {k: _nan_json(v) for k, v in self.diagnostics.items()},
            "warnings": list(self.warnings),
        }


def _binomial_range(n: int, p: float = 0.9) -> str:
    """Central 90 % range of the share of ``n`` calibrated 90 % intervals that hold their value, as text."""
    lo, hi = stats.binom.ppf([0.05, 0.95], n, p) / n
    return f"{lo:.0%}-{hi:.0%}"


def _config_table(rows: pd.DataFrame, draws: np.ndarray) -> pd.DataFrame:
    """Predictive distribution of each configuration's mean SMP against the observed mean (module doc).

    ``draws`` has shape (n_rows, n_draws), rows in the order of ``rows``.
    """
    out = []
    for (fam, cfg), at in rows.groupby(["family", "config"], sort=True).indices.items():
        mean_draws = draws[at].mean(axis=0)
        observed = float(rows["observed"].to_numpy()[at].mean())
        lo, hi = np.quantile(mean_draws, [0.05, 0.95])
        below, ties = np.mean(mean_draws < observed), np.mean(mean_draws == observed)
        out.append({"family": fam, "config": cfg, "n": len(at), "observed_mean": observed,
                    "predicted_mean": float(mean_draws.mean()), "lower_90": lo, "upper_90": hi,
                    "in_90": bool(lo <= observed <= hi), "pit": below + ties / 2})
    return pd.DataFrame(out)


def _family_table(rows: pd.DataFrame, configs: pd.DataFrame, have_qr: bool) -> pd.DataFrame:
    out = []
    for fam, g in list(rows.groupby("family", sort=True)) + [("all", rows)]:
        c = configs if fam == "all" else configs[configs["family"] == fam]
        obs_mean = g["observed"].mean()
        rec = {
            "family": fam, "n": len(g), "observed_mean": obs_mean, "predicted_mean": g["pred_mean"].mean(),
            "mean_rel_error": g["pred_mean"].mean() / obs_mean - 1 if obs_mean > 0 else np.nan,
            "theory_rel_error": g["theory"].mean() / obs_mean - 1 if obs_mean > 0 else np.nan,
        }
        for p in PROBS:
            k = round(100 * p)
            rec[f"coverage_{k}"] = float(((g["observed"] >= g[f"lower_{k}"]) & (g["observed"] <= g[f"upper_{k}"])).mean())
        rec["crps"] = g["crps"].mean()
        rec["pit_ks_p"] = stats.kstest(g["pit"], "uniform").pvalue if len(g) >= 5 else np.nan
        rec["n_configs"] = len(c)
        rec["config_coverage_90"] = float(c["in_90"].mean())
        if have_qr:
            rec["qr_coverage_90"] = float(((g["observed"] >= g["qr_q05"]) & (g["observed"] <= g["qr_q95"])).mean())
        out.append(rec)
    return pd.DataFrame(out)


def check(model: TransferModel, holdout: pd.DataFrame, *, n_draws: int = 1000, seed: int = 0) -> CheckReport:
    """Score a transfer model's predictive distributions on held-out samples (see the module doc).

    Parameters
    ----------
    model : TransferModel
        From :func:`smpstats.fit` or :func:`smpstats.load_model`.
    holdout : pandas.DataFrame
        Simulated rows with ``smp_out`` (e.g. ``block_samples(split="holdout")``).
    n_draws : int, default=1000
        Predictive draws per row.
    seed : int, default=0
        Seed of the predictive draws.

    Returns
    -------
    CheckReport
    """
    if not isinstance(model, TransferModel):
        raise InputError(f"model must be a TransferModel (from smpstats.fit or load_model); got {type(model).__name__}.")
    design = check_samples(holdout, need_y=True)
    pred = model.predict(holdout, n_draws=n_draws, seed=seed)
    y = design["y"].to_numpy(float)
    rows = pd.DataFrame({"family": design["family"], "config": design["config"], "observed": y,
                         "theory": design["theory"], "pred_mean": pred.mean()}, index=holdout.index)
    for p in PROBS:
        lo, hi = pred.interval(p)
        rows[f"lower_{round(100 * p)}"], rows[f"upper_{round(100 * p)}"] = lo, hi
    rows["crps"] = pred.crps(y)
    rows["pit"] = pred.pit(y, seed=seed)
    have_qr = model.kind == "regression"
    if have_qr:
        q = model.predict_quantiles(holdout)  # type: ignore[attr-defined]
        rows["qr_q05"], rows["qr_q95"] = q["q05"].to_numpy(), q["q95"].to_numpy()
    configs = _config_table(rows, pred.draws)
    report = CheckReport(model.kind, _family_table(rows, configs, have_qr), rows, configs, predictive=pred,
                         warnings=list(model.warnings))
    if model.kind == "bayes":
        _bayes_checks(model, report, seed)
    lo, hi = COVERAGE_TARGET
    for _, r in report.table.iterrows():
        if r["family"] != "all" and not lo <= r["coverage_90"] <= hi:
            report.warnings.append(f"{r['family']}: 90 % intervals cover {r['coverage_90']:.1%} of held-out rows "
                                   f"(target {lo:.0%}-{hi:.0%}).")
    return report


def _bayes_checks(model: Any, report: CheckReport, seed: int) -> None:
    from .bayes import _quiet_arviz

    az = _quiet_arviz()
    info = model.info
    report.diagnostics.update({k: info[k] for k in ("r_hat_max", "ess_bulk_min", "ess_tail_min", "divergences",
                                                    "sampler", "compile_seconds", "sampling_seconds") if k in info})
    idata = model.check_idata(seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loo = az.loo(idata, pointwise=True)
        report.loo_pit = np.asarray(az.loo_pit(idata, y="smp_out"))
    k = np.asarray(loo.pareto_k)
    report.diagnostics.update({"elpd_loo": float(loo.elpd_loo), "elpd_loo_se": float(loo.se), "p_loo": float(loo.p_loo),
                               "pareto_k_bad": int((k > 0.7).sum())})
