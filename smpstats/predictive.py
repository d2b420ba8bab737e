"""Predictive distributions as Monte Carlo draws, and proper scores for them.

A :class:`Predictive` holds ``draws`` of shape (n_rows, n_draws): for each
row of the inputs (one block on one input), draws from the predictive
distribution of the output SMP per unit. It gives means, central intervals,
quantiles and a tidy table, and scores observed values: CRPS, PIT and
interval coverage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .errors import InputError

__all__ = ["Predictive", "crps_from_draws", "pit_from_draws"]


def _check_prob(prob: Any) -> float:
    if isinstance(prob, bool) or not isinstance(prob, (int, float, np.floating)) or not 0.0 < float(prob) < 1.0:
        raise InputError(f"prob must be a number strictly between 0 and 1 (e.g. 0.9); got {prob!r}.")
    return float(prob)


def _check_observed(observed: Any, n_rows: int) -> np.ndarray:
    y = np.asarray(observed, dtype=float).reshape(-1)
    if y.shape != (n_rows,):
        raise InputError(f"observed values must have one entry per row ({n_rows}); got shape {np.shape(observed)}.")
    if not np.isfinite(y).all():
        raise InputError("observed values must be finite; got NaN or inf.")
    return y


def crps_from_draws(draws: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """Continuous ranked probability score of each row's draws at its observed value.

    ``CRPS = E|X - y| - E|X - X'| / 2`` with the empirical distribution of the
    draws, computed from sorted draws in O(n log n) per row. Lower is better;
    it has the units of the observations.

    Parameters
    ----------
    draws : array (n_rows, n_draws)
    observed : array (n_rows,)
    """
    x = np.sort(np.asarray(draws, dtype=float), axis=1)
    y = np.asarray(observed, dtype=float)[:, None]
    m = x.shape[1]
    term1 = np.abs(x - y).mean(axis=1)
    # E|X - X'| = 2/m^2 * sum_i (2i - m - 1) x_(i)  (i = 1..m)
    weights = (2.0 * np.arange(1, m + 1) - m - 1.0) / (m * m)
    term2 = 2.0 * (x * weights).sum(axis=1)
    return term1 - 0.5 * term2


def pit_from_draws(draws: np.ndarray, observed: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
    """Probability integral transform of each observation under its row's draws.

    Ties (e.g. an exact zero observed with point mass at zero) are broken
    uniformly at random (randomised PIT), so a calibrated forecast gives
    U(0, 1) values even with atoms. ``rng`` defaults to a fixed seed.
    """
    x = np.asarray(draws, dtype=float)
    y = np.asarray(observed, dtype=float)[:, None]
    below = (x < y).mean(axis=1)
    equal = (x == y).mean(axis=1)
    rng = np.random.default_rng(0) if rng is None else rng
    return below + equal * rng.uniform(size=below.shape)


@dataclass(frozen=True)
class Predictive:
    """Predictive distribution of output SMP per unit, one row per input row.

    Attributes
    ----------
    draws : ndarray of shape (n_rows, n_draws)
        Monte Carlo draws (SMP per unit over the path).
    index : pandas.Index
        Labels of the rows (the index of the inputs).
    kind : str
        Which tier made it: "theory", "regression" or "bayes".
    warnings : tuple of str
        Caveats inherited from the fit (e.g. failed convergence checks).
    """

    draws: np.ndarray
    index: pd.Index = field(default=None)  # type: ignore[assignment]
    kind: str = ""
    warnings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        d = np.asarray(self.draws, dtype=float)
        if d.ndim != 2 or d.shape[1] < 1:
            raise InputError(f"draws must have shape (n_rows, n_draws); got {d.shape}.")
        object.__setattr__(self, "draws", d)
        if self.index is None:
            object.__setattr__(self, "index", pd.RangeIndex(d.shape[0]))
        elif len(self.index) != d.shape[0]:
            raise InputError(f"index has {len(self.index)} labels for {d.shape[0]} rows of draws.")

    @property
    def n_rows(self) -> int:
        return self.draws.shape[0]

    @property
    def n_draws(self) -> int:
        return self.draws.shape[1]

    def mean(self) -> np.ndarray:
        """Predictive mean per row, shape (n_rows,)."""
        return self.draws.mean(axis=1)

    def std(self) -> np.ndarray:
        """Predictive standard deviation per row, shape (n_rows,)."""
        return self.draws.std(axis=1, ddof=1) if self.n_draws > 1 else np.zeros(self.n_rows)

    def quantile(self, q: Any) -> np.ndarray:
        """Quantiles per row: shape (n_rows,) for a scalar ``q``, (n_rows, len(q)) otherwise."""
        qs = np.asarray(q, dtype=float)
        if not ((qs >= 0) & (qs <= 1)).all():
            raise InputError(f"quantile levels must lie in [0, 1]; got {q!r}.")
        out = np.quantile(self.draws, qs, axis=1)
        return out if qs.ndim == 0 else np.moveaxis(out, 0, -1)

    def interval(self, prob: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
        """Central predictive interval with probability ``prob``: (lower, upper), each (n_rows,)."""
        p = _check_prob(prob)
        lo, hi = self.quantile([(1 - p) / 2, (1 + p) / 2]).T
        return lo, hi

    def coverage(self, observed: Any, prob: float = 0.9) -> float:
        """Fraction of observations inside their central ``prob`` interval."""
        y = _check_observed(observed, self.n_rows)
        lo, hi = self.interval(prob)
        return float(np.mean((y >= lo) & (y <= hi)))

    def crps(self, observed: Any) -> np.ndarray:
        """CRPS of each observation (lower is better), shape (n_rows,)."""
        return crps_from_draws(self.draws, _check_observed(observed, self.n_rows))

    def pit(self, observed: Any, seed: int = 0) -> np.ndarray:
        """Randomised PIT of each observation, shape (n_rows,); U(0, 1) when calibrated."""
        return pit_from_draws(self.draws, _check_observed(observed, self.n_rows), np.random.default_rng(seed))

    def to_frame(self, probs: tuple[float, ...] = (0.5, 0.9)) -> pd.DataFrame:
        """Table with the mean, std, median and central intervals per row."""
        cols: dict[str, Any] = {"mean": self.mean(), "std": self.std(), "median": self.quantile(0.5)}
        for p in probs:
            lo, hi = self.interval(p)
            cols[f"lower_{round(100 * p)}"] = lo
            cols[f"upper_{round(100 * p)}"] = hi
        return pd.DataFrame(cols, index=self.index)

    def __repr__(self) -> str:
        m = self.mean()
        span = f"mean {m.min():.4g}..{m.max():.4g}" if self.n_rows else "empty"
        warn = f", {len(self.warnings)} warning(s)" if self.warnings else ""
        return f"Predictive(kind={self.kind!r}, rows={self.n_rows}, draws={self.n_draws}, {span}{warn})"
