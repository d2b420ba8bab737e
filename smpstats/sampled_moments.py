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
``x' ~ N(0, sigma_dot^2)`` independent of ``x``. Pushing ``n_samples`` such
points through the network, with the slopes carried by forward-mode
differentiation (``y' = J(x) x'``), gives every stage's mean, pooled std
(over units and samples, as :func:`smpstats.simulate` measures it over
units and ``t``) and RMS slope, per input draw.
"""

from __future__ import annotations

import numpy as np
import torch

from ._validation import check_int
from .blocks import Chain

__all__ = ["sampled_stage_moments", "standard_points"]

#: Input values pushed through the network together (memory: a few times this, in float64, per layer).
_CHUNK_VALUES = 2**22


def sampled_stage_moments(chain: Chain, mu: np.ndarray, sigma: np.ndarray, sigma_dot: np.ndarray, *,
                          n_samples: int = 256, seed: int = 0) -> np.ndarray:
    """Input moments of every stage of ``chain`` and of its output, per input draw.

    Parameters
    ----------
    chain : Chain
        A chain with its modules (e.g. :func:`smpstats.chain_reading.read_chain`).
    mu, sigma, sigma_dot : arrays, shape (n_draws,)
        Each draw's input mean, std and RMS slope (per time unit), the same
        for every input element.
    n_samples : int, default=256
        Points per draw; the moments' relative Monte Carlo error is about
        ``1 / sqrt(n_samples * effective units)``, a bias shared by all draws.
    seed : int
        Seed of the standard points, which all draws share (common random
        numbers): equal input parameters give equal moments, and the chunking
        changes only the rounding.

    Returns
    -------
    numpy.ndarray, shape (n_stages + 1, 3, n_draws)
        ``[k]`` holds mean, pooled std and RMS slope of stage ``k``'s input
        (``[n_stages]``: the chain's output).
    """
    n_samples = check_int(n_samples, "n_samples", minimum=2)
    seed = check_int(seed, "seed", minimum=0)
    mu, sigma, sigma_dot = (np.asarray(v, dtype=float) for v in (mu, sigma, sigma_dot))
    n_draws = len(mu)
    # common random numbers: every draw scales the same standard points, so that its moments are a smooth
    # function of its input parameters (equal parameters, equal moments) and the chunking changes nothing
    rng = np.random.default_rng(seed)
    z = np.stack([standard_points(rng, n_samples, chain.input_shape) for _ in range(2)])
    out = np.empty((len(chain) + 1, 3, n_draws))
    per_chunk = max(1, _CHUNK_VALUES // z[0].size)
    column = (-1,) + (1,) * z[0].ndim  # one value per draw, against the points' axes
    for start in range(0, n_draws, per_chunk):
        sl = slice(start, min(start + per_chunk, n_draws))
        n = sl.stop - sl.start
        h = torch.from_numpy((mu[sl].reshape(column) + sigma[sl].reshape(column) * z[0]).reshape(-1, *chain.input_shape))
        hv = torch.from_numpy((sigma_dot[sl].reshape(column) * z[1]).reshape(-1, *chain.input_shape))
        _record(out[0][:, sl], h, hv, n)
        with torch.no_grad():
            for k, stage in enumerate(chain.stages, start=1):
                h, hv = torch.func.jvp(stage.module, (h,), (hv,))
                _record(out[k][:, sl], h, hv, n)
    return out


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


def _record(target: np.ndarray, h: torch.Tensor, hv: torch.Tensor, n_draws: int) -> None:
    """Write mean, pooled std and RMS slope per draw (rows of ``h`` grouped by draw) into ``target`` (3, n)."""
    values = h.reshape(n_draws, -1).double()
    slopes = hv.reshape(n_draws, -1).double()
    target[0] = values.mean(1).numpy()
    target[1] = values.std(1, correction=0).numpy()
    target[2] = slopes.pow(2).mean(1).sqrt().numpy()
