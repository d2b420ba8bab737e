"""Simulated trajectories under the two forensic hypotheses (pure numpy).

* **Smooth plus noise** (the null): a smooth squared-exponential process per
  component plus independent white noise.
* **Network** (the alternative): the output of a random ReLU network whose
  input moves along a smooth path, ``sum_j a_cj relu(w_j . x(t) + b_j)`` with
  ``x(t)`` a smooth 4-dimensional squared-exponential path; components share
  the units (and so the kink times), as the outputs of one network do. A
  smooth trend and white noise are added, as under the null.

Amplitudes are set by the share of each part in the mean square of the
first-step second differences ``V(1)``, so that the simulated statistics
(which are scale-free, see :mod:`smpstats.forensic_stats`) cover the regimes
from noise-dominated to smooth-dominated. :func:`prior_predictive` draws the
hypotheses' parameters from their priors (:data:`PRIORS`);
:func:`simulate_null` simulates the null at fitted parameters (parametric
bootstrap).
"""

from __future__ import annotations

import numpy as np

from .forensic_stats import difference_variance, se_second_difference_variance
from .processes import sample_se_gp

__all__ = ["PRIORS", "prior_predictive", "simulate_null", "network_ripple"]

#: Prior ranges (log-uniform unless noted). Length scales in frames; shares are ratios of V(1).
PRIORS = {
    "trend_length_scale": (6.0, 400.0),
    "trend_over_noise": (1e-3, 1e4),        # smooth: V(1) of the trend / V(1) of the noise
    # network: V(1) of the trend / V(1) of ripple + noise. The network hypothesis is that the
    # kinks make up a visible share of the frame-scale roughness (at least ~1 %), not that a
    # smooth trajectory might hide kinks far below the detection limit.
    "trend_over_rough": (1e-3, 1e2),
    # Length scale of the network's input path: at least a frame (the frames resolve the input's
    # motion); below that the kinks of different frames are unrelated and look like white noise.
    "ripple_length_scale": (1.0, 30.0),
    "ripple_units": (4, 512),               # number of ReLU units (log-uniform integer)
    "ripple_over_noise": (0.25, 1e3),       # V(1) of the ripple / V(1) of the noise: kinks are >= 1/5 of it
}

#: Input dimension of the random networks' smooth input path.
_INPUT_DIM = 4
#: Length scales are drawn from this many log-spaced values (GP paths are sampled per value).
_GRID = 24


def _log_uniform(rng, bounds, size):
    lo, hi = np.log(bounds[0]), np.log(bounds[1])
    return np.exp(rng.uniform(lo, hi, size=size))


def _grid_values(bounds):
    return np.geomspace(bounds[0], bounds[1], _GRID)


def _normalise(x: np.ndarray) -> np.ndarray:
    """Scale each series (last axis) to V(1) = 1; series with V(1) = 0 stay zero."""
    v = difference_variance(x, 1)
    return x / np.sqrt(np.where(v > 0, v, 1.0))[..., None]


def _se_paths(n_times, length_scales, grid, shape_per_path, rng):
    """SE GP paths of unit std: one length scale per leading index (snapped to ``grid``)."""
    n = len(length_scales)
    idx = np.abs(np.log(length_scales)[:, None] - np.log(grid)[None, :]).argmin(axis=1)
    out = np.empty((n, *shape_per_path, n_times))
    for k in np.unique(idx):
        rows = np.flatnonzero(idx == k)
        out[rows] = sample_se_gp(n_times, 1.0, grid[k], size=(rows.size, *shape_per_path), rng=rng)
    return out, grid[idx]


def network_ripple(x: np.ndarray, n_components: int, n_units: int, rng: np.random.Generator) -> np.ndarray:
    """Output of one random ReLU network along the smooth input path ``x``.

    Parameters
    ----------
    x : array of shape (input_dim, n_times)
        The input path (e.g. unit-std SE paths).

    Returns
    -------
    array of shape (n_components, n_times)
        ``sum_j a_cj relu(w_j . x(t) + b_j)`` with ``w_j ~ N(0, I / input_dim)``, ``b_j ~ N(0, 1)``
        and ``a_cj ~ N(0, 1 / n_units)``.
    """
    w = rng.standard_normal((n_units, x.shape[0])) / np.sqrt(x.shape[0])
    b = rng.standard_normal((n_units, 1))
    a = rng.standard_normal((n_components, n_units)) / np.sqrt(n_units)
    return a @ np.maximum(w @ x + b, 0.0)


def prior_predictive(hypothesis: str, n_sims: int, n_times: int, n_components: int,
                     rng: np.random.Generator) -> np.ndarray:
    """Simulate ``n_sims`` trajectories with parameters drawn from :data:`PRIORS`.

    Parameters
    ----------
    hypothesis : {'smooth', 'network'}
    n_sims, n_times, n_components : int

    Returns
    -------
    array of shape (n_sims, n_components, n_times)
        Scaled so that the rough part (noise + ripple) has V(1) = 1 per component.
    """
    noise = _normalise(rng.standard_normal((n_sims, n_components, n_times)))
    if hypothesis == "network":
        ripple_share = _log_uniform(rng, PRIORS["ripple_over_noise"], n_sims)
        lengths = _log_uniform(rng, PRIORS["ripple_length_scale"], n_sims)
        units = np.round(_log_uniform(rng, PRIORS["ripple_units"], n_sims)).astype(int)
        paths, _ = _se_paths(n_times, lengths, _grid_values(PRIORS["ripple_length_scale"]), (_INPUT_DIM,), rng)
        ripple = np.stack([network_ripple(paths[i], n_components, units[i], rng) for i in range(n_sims)])
        ripple = _normalise(ripple)
        rough = (np.sqrt(ripple_share)[:, None, None] * ripple + noise) / np.sqrt(1.0 + ripple_share)[:, None, None]
    elif hypothesis == "smooth":
        rough = noise
    else:  # pragma: no cover - internal
        raise ValueError(f"unknown hypothesis {hypothesis!r}")
    trend_share = _log_uniform(rng, PRIORS["trend_over_rough" if hypothesis == "network" else "trend_over_noise"],
                               n_sims)
    trend_lengths = _log_uniform(rng, PRIORS["trend_length_scale"], n_sims)
    trend, _ = _se_paths(n_times, trend_lengths, _grid_values(PRIORS["trend_length_scale"]),
                         (n_components,), rng)
    trend = _normalise(trend) * np.sqrt(trend_share)[:, None, None]
    return rough + trend


def simulate_null(sigma: np.ndarray, s: np.ndarray, length_scale: np.ndarray, n_times: int, n_sims: int,
                  rng: np.random.Generator, *, smooth_power: np.ndarray | None = None,
                  reference_step: int = 1) -> np.ndarray:
    """Simulate the smooth-plus-noise model at given parameters (parametric bootstrap).

    The bootstrap is conditional on the one smooth path that was observed: each simulated smooth
    part is scaled so that the mean square of its second differences at ``reference_step`` is
    ``smooth_power`` (default: the model's ``s**2 * g_SE(reference_step; l)``). Without this, the
    spread of the power of a smooth path only a few length scales long would dominate the
    simulated statistics and distort the p-values.

    Parameters
    ----------
    sigma, s, length_scale : arrays of shape (n_components,)
        Noise std, smooth std (units of y) and smooth length scale (frames) per component.
    smooth_power : array of shape (n_components,), optional
        Target mean square of the smooth part's second differences at ``reference_step``.
    reference_step : int, default=1

    Returns
    -------
    array of shape (n_sims, n_components, n_times)
    """
    n_components = len(sigma)
    out = sigma[None, :, None] * rng.standard_normal((n_sims, n_components, n_times))
    for c in range(n_components):
        if s[c] > 0:
            smooth = sample_se_gp(n_times, 1.0, float(length_scale[c]), size=n_sims, rng=rng)
            target = (s[c] ** 2 * se_second_difference_variance(reference_step, float(length_scale[c]))
                      if smooth_power is None else smooth_power[c])
            out[:, c] += smooth * np.sqrt(target / difference_variance(smooth, reference_step))[:, None]
    return out
