"""Simulation-based calibration (SBC) of the Bayesian transfer model (Talts et al. 2018).

For ``n_sims`` parameter sets drawn from the prior, data are simulated from
the model on a fixed design (the covariates and theory terms of real
samples), the model is refitted, and the rank of each true parameter among
the (thinned) posterior draws is recorded. When the sampler and the model's
code are right, every parameter's ranks are uniform on ``0..n_ranks``:
:meth:`SBCResult.uniformity` tests that with a chi-square test per
parameter and :func:`plot_sbc_ranks` draws the rank histograms.

The model is compiled once (nutpie) and refitted with new data containers,
so that an SBC run of 100 fits takes minutes rather than hours.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from .errors import InputError

__all__ = ["sbc", "SBCResult", "plot_sbc_ranks", "SBC_PARAMETERS"]

#: Parameters whose ranks are checked, one scalar per family (and covariate): corrections, scales,
#: dispersion and its slopes, hurdle.
SBC_PARAMETERS = ("a_new", "a_car", "tau_new", "tau_car", "d", "tau_d", "eta_d", "h0")


@dataclass
class SBCResult:
    """Ranks of true parameters among posterior draws.

    Attributes
    ----------
    ranks : pandas.DataFrame
        One row per simulation, one column per scalar parameter, values in
        ``0..n_ranks``.
    n_ranks : int
        Number of thinned posterior draws per fit (ranks take n_ranks + 1 values).
    seconds : float
        Wall time of the run (compile included).
    """

    ranks: pd.DataFrame
    n_ranks: int
    seconds: float

    def uniformity(self, bins: int = 10) -> pd.DataFrame:
        """Chi-square test of uniform ranks per parameter (``p_value`` > 0.01 expected when calibrated)."""
        rows = []
        edges = np.linspace(0, self.n_ranks + 1, bins + 1)
        for c in self.ranks.columns:
            counts, _ = np.histogram(self.ranks[c], bins=edges)
            rows.append({"parameter": c, "n_sims": len(self.ranks), "chi2": stats.chisquare(counts).statistic,
                         "p_value": stats.chisquare(counts).pvalue,
                         "mean_rank_frac": float(self.ranks[c].mean() / self.n_ranks)})
        return pd.DataFrame(rows)

    def summary(self) -> str:
        u = self.uniformity()
        bad = u[u["p_value"] < 0.01]
        head = (f"SBC: {len(self.ranks)} simulations, {self.n_ranks} posterior draws each, "
                f"{self.seconds:.0f} s; ranks uniform (chi-square p > 0.01) for "
                f"{len(u) - len(bad)} of {len(u)} parameters")
        return "\n".join([head, u.to_string(index=False, float_format=lambda v: f"{v:.3f}")])


def _scalar_columns(prior: Any) -> list[tuple[str, str, dict[str, str]]]:
    """(label, variable, selection) of every scalar in :data:`SBC_PARAMETERS` (one per family and covariate)."""
    import itertools

    cols = []
    for name in SBC_PARAMETERS:
        if name not in prior:
            continue
        arr = prior[name]
        dims = [d for d in arr.dims if d not in ("chain", "draw")]
        for values in itertools.product(*(arr[d].values for d in dims)):
            sel = {d: str(v) for d, v in zip(dims, values)}
            cols.append((f"{name}[{', '.join(sel.values())}]" if sel else name, name, sel))
    return cols


def sbc(samples: pd.DataFrame, n_sims: int = 100, *, n_ranks: int = 99, tune: int = 300, chains: int = 2,
        seed: int = 0, progress: bool = False) -> SBCResult:
    """Run SBC of the Bayesian transfer model on the design of ``samples`` (see the module doc).

    Parameters
    ----------
    samples : pandas.DataFrame
        Simulated rows (their covariates and theory terms form the fixed
        design; their ``smp_out`` only sets which rows are zero).
    n_sims : int, default=100
        Prior draws (fits).
    n_ranks : int, default=99
        Posterior draws kept per fit (thinned evenly from ``chains`` x
        ``(n_ranks + 1) * 2`` draws).
    tune, chains : int
        Sampler settings per fit.
    seed : int
        Seed of the prior draws and of the fits.
    progress : bool
        Progress bar over simulations.
    """
    import pymc as pm
    from tqdm.auto import tqdm

    from .bayes import _Index, build_model
    from .transfer import check_samples

    try:
        import nutpie
    except ImportError:  # pragma: no cover - nutpie is a dependency
        raise InputError("sbc needs nutpie (pip install nutpie) to refit the compiled model quickly.") from None
    for name, v, lo in (("n_sims", n_sims, 2), ("n_ranks", n_ranks, 9)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise InputError(f"{name} must be an int >= {lo}; got {v!r}.")
    t0 = time.perf_counter()
    design = check_samples(samples, need_y=True)
    index = _Index.from_design(design)
    model = build_model(design, index)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prior = pm.sample_prior_predictive(draws=n_sims, model=model, random_seed=seed)
    compiled = nutpie.compile_pymc_model(model)
    theory = design.loc[design["y"] > 0, "theory"].to_numpy()
    cols = _scalar_columns(prior.prior)
    per_chain = 2 * (n_ranks + 1) // chains + 1
    ranks = []
    for i in tqdm(range(n_sims), desc="SBC fits", disable=not progress):
        y_pos = np.maximum(prior.prior_predictive["y_pos"].values[0, i], 1e-12 * theory)
        is_zero = prior.prior_predictive["is_zero"].values[0, i]
        fitted = compiled.with_data(y_pos_obs=y_pos, is_zero_obs=is_zero)
        post = nutpie.sample(fitted, draws=per_chain, tune=tune, chains=chains, seed=seed + 1 + i,
                             progress_bar=False).posterior
        row = {}
        for label, name, sel in cols:
            truth = float(prior.prior[name].isel(chain=0, draw=i).sel(**sel))
            draws = post[name].sel(**sel).values.reshape(-1)
            thin = draws[np.linspace(0, draws.size - 1, n_ranks).round().astype(int)]
            row[label] = int((thin < truth).sum())
        ranks.append(row)
    return SBCResult(pd.DataFrame(ranks), n_ranks, time.perf_counter() - t0)


def plot_sbc_ranks(result: SBCResult, bins: int = 10):
    """Rank histograms per parameter with the 99 % band of a uniform histogram."""
    from .plotting import _pyplot

    plt = _pyplot()

    cols = list(result.ranks.columns)
    ncol = min(5, len(cols))
    nrow = int(np.ceil(len(cols) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(2.6 * ncol, 2.1 * nrow), squeeze=False)
    n = len(result.ranks)
    lo, hi = stats.binom.ppf([0.005, 0.995], n, 1 / bins)
    for ax, c in zip(axes.flat, cols):
        ax.axhspan(lo, hi, color="grey", alpha=0.25)
        ax.hist(result.ranks[c], bins=np.linspace(0, result.n_ranks + 1, bins + 1), color="C0")
        ax.set_title(c, fontsize=8)
        ax.set_yticks([])
    for ax in list(axes.flat)[len(cols):]:
        ax.set_visible(False)
    fig.suptitle(f"SBC rank histograms ({n} simulations; grey: 99 % range under uniformity)")
    fig.tight_layout()
    return fig
