"""Layer moments of a network with given weights, by Monte Carlo over points of the input family.

Mean-field rules (:mod:`smpstats.mean_field`) treat a layer's units as
independent. In a trained network they are not: units share inputs, have
their own means, and a linear layer's output variance is ``w^T C w`` with
the full covariance ``C`` of its input units, not its diagonal (in a small
trained ReLU MLP the mean-field std after the second linear layer is 40 %
low, and the SMP predicted from it half the simulated one).

For given weights the moments can be had without those assumptions: the
input family's signals are stationary Gaussian processes, so at one time
``t`` an input is ``x ~ N(mu, sigma^2)`` per element and its slope
``x' ~ N(0, sigma_dot^2)`` independent of ``x``. Pushing points through the
network, with the slopes carried by forward-mode differentiation
(``y' = J(x) x'``), gives every stage's mean, pooled std (over units and
points, as :func:`smpstats.simulate` measures it over units and ``t``) and
RMS slope. The slopes are linear in ``x'``, so the RMS slope is
``sigma_dot`` times its value at ``sigma_dot = 1``; mean and std depend on
``(mu, sigma)`` only. They are computed on a small grid over the draws'
input means and log stds (:func:`input_grid`, the same standard points at
every grid point) and interpolated to each draw, so the cost does not grow
with the number of draws.
"""

from __future__ import annotations

import numpy as np
import torch

from ._validation import check_int
from .blocks import Chain

__all__ = ["sampled_stage_moments", "standard_points", "input_grid", "interpolate"]

#: Input values pushed through the network together (memory: a few times this, in float64, per layer).
_CHUNK_VALUES = 2**22


def sampled_stage_moments(chain: Chain, mu: np.ndarray, sigma: np.ndarray, sigma_dot: np.ndarray, *,
                          n_samples: int = 512, grid: int = 5, seed: int = 0) -> np.ndarray:
    """Input moments of every stage of ``chain`` and of its output, per input draw.

    Parameters
    ----------
    chain : Chain
        A chain with its modules (e.g. :func:`smpstats.chain_reading.read_chain`).
    mu, sigma, sigma_dot : arrays, shape (n_draws,)
        Each draw's input mean, std (> 0) and RMS slope (per time unit), the
        same for every input element.
    n_samples : int, default=512
        Points per grid point; the moments' relative Monte Carlo error is
        about ``1 / sqrt(n_samples * effective units)``, a bias shared by
        all draws.
    grid : int, default=5
        Grid points per axis (input mean, log input std) over the draws'
        range (one where all draws share the value).
    seed : int
        Seed of the standard points.

    Returns
    -------
    numpy.ndarray, shape (n_stages + 1, 3, n_draws)
        ``[k]`` holds mean, pooled std and RMS slope of stage ``k``'s input
        (``[n_stages]``: the chain's output).
    """
    n_samples = check_int(n_samples, "n_samples", minimum=2)
    seed = check_int(seed, "seed", minimum=0)
    mu, sigma, sigma_dot = (np.asarray(v, dtype=float) for v in (mu, sigma, sigma_dot))
    rng = np.random.default_rng(seed)
    z, z_dot = (standard_points(rng, n_samples, chain.input_shape) for _ in range(2))
    axes = input_grid(mu, sigma, grid)
    table = np.empty((len(axes[0]), len(axes[1]), len(chain) + 1, 3))
    for i, m in enumerate(axes[0]):
        for j, log_s in enumerate(axes[1]):
            table[i, j] = _moments(chain, m + np.exp(log_s) * z, z_dot)
    out = interpolate(axes, table.reshape(*table.shape[:2], -1), mu, sigma).reshape(len(chain) + 1, 3, len(mu))
    out[:, 2] *= sigma_dot
    out[0] = mu, sigma, sigma_dot  # the input's own (the standard points reproduce them to rounding)
    return out


def input_grid(mu: np.ndarray, sigma: np.ndarray, n: int) -> list[np.ndarray]:
    """Axes of a grid over the draws' input means and log stds (a single point where all draws agree)."""
    def axis(values: np.ndarray) -> np.ndarray:
        lo, hi = float(values.min()), float(values.max())
        return np.array([lo]) if hi - lo <= 1e-9 * max(1.0, abs(lo)) else np.linspace(lo, hi, n)

    return [axis(mu), axis(np.log(sigma))]


def interpolate(axes: list[np.ndarray], table: np.ndarray, mu: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """``table`` (n_mu, n_log_sigma, n_values) at each draw's (mu, log sigma), bilinear; (n_values, n_draws)."""
    from scipy.interpolate import RegularGridInterpolator

    keep = [len(a) > 1 for a in axes]
    if not any(keep):
        return np.repeat(table[0, 0][:, None], len(mu), axis=1)
    squeezed = table.reshape(*[len(a) for a, k in zip(axes, keep) if k], table.shape[-1])
    points = np.column_stack([v for v, k in zip((mu, np.log(sigma)), keep) if k])
    return RegularGridInterpolator([a for a, k in zip(axes, keep) if k], squeezed)(points).T


def standard_points(rng: np.random.Generator, n: int, shape: tuple[int, ...]) -> np.ndarray:
    """``n`` standard normal points of ``shape`` whose sample moments are exact.

    Each element has sample mean 0 and std 1; with at least 4 points per
    element the points are whitened (sample covariance the identity), so
    that the moments after a first linear layer carry no Monte Carlo error.
    """
    z = rng.standard_normal((n, int(np.prod(shape))))
    z -= z.mean(axis=0)
    if n >= 4 * z.shape[1]:
        z = z @ np.linalg.inv(np.linalg.cholesky(z.T @ z / n)).T
    else:
        z /= z.std(axis=0)
    return z.reshape(n, *shape)


def _moments(chain: Chain, x: np.ndarray, x_dot: np.ndarray) -> np.ndarray:
    """Mean, pooled std and RMS slope of the input and every stage's output, (n_stages + 1, 3)."""
    out = np.zeros((len(chain) + 1, 3))
    per_chunk = max(1, _CHUNK_VALUES // max(1, x[0].size))
    with torch.no_grad():
        for start in range(0, len(x), per_chunk):
            h = torch.from_numpy(np.ascontiguousarray(x[start:start + per_chunk]))
            v = torch.from_numpy(np.ascontiguousarray(x_dot[start:start + per_chunk]))
            _accumulate(out[0], h, v)
            for k, stage in enumerate(chain.stages, start=1):
                h, v = torch.func.jvp(stage.module, (h,), (v,))
                _accumulate(out[k], h, v)
    n = np.array([[x[0].size], *[[int(np.prod(s.out_shape))] for s in chain.stages]]) * len(x)
    mean = out[:, 0:1] / n
    var = np.maximum(out[:, 1:2] / n - mean**2, 0.0)
    return np.hstack([mean, np.sqrt(var), np.sqrt(out[:, 2:3] / n)])


def _accumulate(target: np.ndarray, h: torch.Tensor, v: torch.Tensor) -> None:
    """Add the sums of values, squared values and squared slopes to ``target`` (3,)."""
    h, v = h.double(), v.double()
    target += [float(h.sum()), float(h.pow(2).sum()), float(v.pow(2).sum())]
