"""Mean-field propagation of a layer's signal statistics through blocks (DESIGN §4).

The state of a layer is ``(mu, sigma, sigma_dot)``: the mean over units and
t, the **pooled** std over units and t (``sigma_pool`` in simulate's tables)
and the RMS slope. Units are treated as exchangeable Gaussians with those
moments (a mixture of Gaussians whose means are Gaussian is Gaussian, so the
pooled description is exact for affine maps of Gaussian inputs). Weights
are drawn from the block's init family, so the propagation predicts a
random network of the family (Poole et al., 2016); stages whose weights are
given (a module read by :mod:`smpstats.chain_reading`) use the statistics
of those weights instead (row sums, row norms and biases; batch-norm gains
and shifts).

All functions are vectorised over arrays of states (one per Monte Carlo
draw).

:func:`between_channel_share` follows how much of the pooled variance is
the spread of the channels' means (the units of a conv's channel share its
weights and bias, so they share a mean): max pooling, whose windows lie
inside one channel, switches on the variance within a channel only.

The realised moments of one random network of finite width are in
:mod:`smpstats.finite_width`.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from . import theory
from .errors import InputError

__all__ = ["propagate_moments", "smooth_activation_moments", "between_channel_share"]

_GH_X, _GH_W = np.polynomial.hermite_e.hermegauss(80)
_GH_W = _GH_W / _GH_W.sum()

#: Batch-norm running statistics and affine parameters as drawn by smpstats.blocks.
_BN_E_INV_VAR = math.exp(0.5**2 / 2)  # E[1/running_var], running_var = exp(0.5 Z)
_BN_E_INV_SD = math.exp(0.25**2 / 2)  # E[running_var^-1/2]
_BN_GAMMA2 = 1.0 + 0.2**2  # E[gamma^2], gamma ~ N(1, 0.2^2)
_BN_BETA2 = 0.2**2  # E[beta^2]


def _smooth_fn(name: str, beta: float):
    import torch

    fns = {
        "gelu": lambda x: torch.nn.functional.gelu(x),
        "gelu_tanh": lambda x: torch.nn.functional.gelu(x, approximate="tanh"),
        "silu": torch.nn.functional.silu,
        "softplus": lambda x: torch.nn.functional.softplus(x, beta=beta),
        "tanh": torch.tanh,
    }
    if name not in fns:
        raise InputError(f"No moment propagation for activation {name!r}; known: {', '.join(fns)}.")
    return fns[name]


def smooth_activation_moments(name: str, mu, sigma, sigma_dot, *, beta: float = 1.0):
    """(mean, std, RMS slope) of ``g(X)``, ``X ~ N(mu, sigma**2)``, by 80-point Gauss-Hermite quadrature.

    The slope is ``g'(x) x'`` with ``x'`` independent of ``x`` (stationary
    Gaussian): ``sigma_dot_out**2 = E[g'(X)**2] sigma_dot**2``.
    """
    import torch

    mu, sigma, sigma_dot = (np.asarray(v, dtype=float) for v in (mu, sigma, sigma_dot))
    x = torch.tensor(mu[..., None] + sigma[..., None] * _GH_X, dtype=torch.float64, requires_grad=True)
    y = _smooth_fn(name, beta)(x)
    (grad,) = torch.autograd.grad(y.sum(), x)
    y, g = y.detach().numpy(), grad.numpy()
    m1 = (y * _GH_W).sum(-1)
    m2 = (y * y * _GH_W).sum(-1)
    d2 = (g * g * _GH_W).sum(-1)
    return m1, np.sqrt(np.maximum(m2 - m1 * m1, 0.0)), np.sqrt(d2) * sigma_dot


#: Statistics of given weights (smpstats.chain_reading.given_weight_columns) that replace the init family's.
_GIVEN_AFFINE = ("w_sq", "rowsum_mean", "rowsum_sq", "rowsum_bias", "b_mean", "sigma_b")
_GIVEN_BATCHNORM = ("bn_gain_mean", "bn_gain_sq", "bn_shift_mean", "bn_shift_sq", "bn_gain_shift")


def _given(params: Mapping[str, Any], names: tuple[str, ...]) -> bool:
    """The stage's weights are given: all of ``names`` are present and finite."""
    try:
        return all(math.isfinite(float(params[k])) for k in names)
    except (KeyError, TypeError, ValueError):
        return False


def _pooled(mu, sigma, sigma_dot, a_mean, a_sq, c_mean, c_sq, ac, v_sq):
    """Pooled moments of ``y_j = a_j X_j + c_j`` over units ``j`` (a given map of exchangeable inputs).

    Unit ``j`` has mean ``a_j mu + c_j`` and variance ``v_j sigma**2``, where
    ``a_j`` is the gain on the input mean (an affine row's sum), ``c_j`` the
    offset and ``v_j`` the gain on the input's variance and slope
    (``mean_j v_j = v_sq``); the pooled variance is the units' mean
    variance plus the variance of their means:
    ``v_sq sigma**2 + mu**2 var(a) + 2 mu cov(a, c) + var(c)``.
    """
    mean = a_mean * mu + c_mean
    spread = mu**2 * (a_sq - a_mean**2) + 2 * mu * (ac - a_mean * c_mean) + (c_sq - c_mean**2)
    return mean, np.sqrt(np.maximum(v_sq * sigma**2 + spread, 0.0)), math.sqrt(v_sq) * sigma_dot


def _given_affine_moments(params: Mapping[str, Any], mu, sigma, sigma_dot):
    """Given weights: ``y_j = sum_i w_ji x_i + b_j`` with the inputs ``x_i`` independent ``N(mu, sigma**2)``.

    Unit ``j`` has mean ``mu r_j + b_j`` (``r_j`` its row sum) and variance
    ``sigma**2 ||w_j||**2``; its slope's mean square is ``||w_j||**2
    sigma_dot**2``.
    """
    p = {k: float(params[k]) for k in _GIVEN_AFFINE}
    b_sq = p["sigma_b"] ** 2 + p["b_mean"] ** 2
    return _pooled(mu, sigma, sigma_dot, p["rowsum_mean"], p["rowsum_sq"], p["b_mean"], b_sq, p["rowsum_bias"],
                   p["w_sq"])


def _given_batchnorm_moments(params: Mapping[str, Any], mu, sigma, sigma_dot):
    """Given running statistics: channel ``c`` maps ``x`` to ``g_c x + s_c``, inputs ``N(mu, sigma**2)``."""
    p = {k: float(params[k]) for k in _GIVEN_BATCHNORM}
    return _pooled(mu, sigma, sigma_dot, p["bn_gain_mean"], p["bn_gain_sq"], p["bn_shift_mean"], p["bn_shift_sq"],
                   p["bn_gain_shift"], p["bn_gain_sq"])


def propagate_moments(block: str, params: Mapping[str, Any], mu, sigma, sigma_dot, share=0.0, after_rectifier=None):
    """Output ``(mu, sigma, sigma_dot)`` of one block for input states (arrays of the same shape).

    Parameters
    ----------
    block : str
        Block name (as in :mod:`smpstats.blocks`).
    params : mapping
        The stage's columns from simulate (``sigma_w``, ``sigma_b``,
        ``window``, ``negative_slope``, ``alpha``, ``beta``, ``approximate``).
        Stages with given weights add the columns of
        :func:`smpstats.chain_reading.given_weight_columns`; the moments are
        then those of these weights rather than the init family's.
    mu, sigma, sigma_dot : arrays
        Layer mean, pooled std (>= 0) and RMS slope of the input.
    share : float or array, default=0
        Share of ``sigma**2`` that is the spread of the channels' means
        (:func:`between_channel_share`). Max pooling maximises within a
        channel: its inputs are ``N(m_c, (1 - share) sigma**2)`` with the
        channel means ``m_c`` spread by ``share sigma**2``, which passes
        unchanged.
    after_rectifier : float, optional
        For max pooling right after a ReLU (0) or LeakyReLU (its negative
        slope): its inputs are rectified Gaussians, not Gaussians
        (:func:`smpstats.theory.max_after_rectifier_moments`).
    """
    mu, sigma, sigma_dot = (np.asarray(v, dtype=float) for v in (mu, sigma, sigma_dot))
    sig = np.maximum(sigma, 1e-300)
    if block in ("linear", "conv1d", "conv2d"):
        if _given(params, _GIVEN_AFFINE):
            return _given_affine_moments(params, mu, sigma, sigma_dot)
        sw, sb = float(params["sigma_w"]), float(params.get("sigma_b", 0.0) or 0.0)
        # random weights: the units' means spread around 0 with variance sw^2 mu^2, which pools into sigma
        return np.zeros_like(mu), np.sqrt(sw**2 * (mu**2 + sigma**2) + sb**2), sw * sigma_dot
    if block == "relu":
        return tuple(np.asarray(v, float) for v in theory.relu_output_moments(mu, sig, sigma_dot))
    if block in ("leaky_relu", "prelu"):
        slope = float(params["negative_slope"] if block == "leaky_relu" else params["alpha"])
        return tuple(np.asarray(v, float) for v in theory.leaky_relu_output_moments(mu, sig, sigma_dot, slope))
    if block in ("maxpool1d", "maxpool2d"):
        k = int(params["window"])
        within = np.maximum(np.sqrt(1.0 - np.asarray(share, dtype=float)) * sig, 1e-300)
        if after_rectifier is None:
            m, s, d = (np.asarray(v, float) for v in theory.max_output_moments(k, mu, within, sigma_dot))
        else:
            m, s, d = (np.asarray(v, float) for v in theory.max_after_rectifier_moments(
                k, mu, within, sigma_dot, float(after_rectifier)))
        return m, np.sqrt(s**2 + np.maximum(sigma**2 - within**2, 0.0)), d
    if block in ("avgpool1d", "avgpool2d"):
        k = float(params["window"])  # independent units: variances shrink by 1/k (an upper bound when correlated)
        return mu.copy(), sigma / math.sqrt(k), sigma_dot / math.sqrt(k)
    if block == "batchnorm":
        if _given(params, _GIVEN_BATCHNORM):
            return _given_batchnorm_moments(params, mu, sigma, sigma_dot)
        mean = _BN_E_INV_SD * mu
        second = _BN_GAMMA2 * _BN_E_INV_VAR * (sigma**2 + mu**2 + 1.0) + _BN_BETA2
        return mean, np.sqrt(np.maximum(second - mean**2, 0.0)), math.sqrt(_BN_GAMMA2 * _BN_E_INV_VAR) * sigma_dot
    if block in ("gelu", "silu", "softplus", "tanh"):
        name = "gelu_tanh" if block == "gelu" and str(params.get("approximate", "none")) == "tanh" else block
        beta = float(params.get("beta", 1.0) or 1.0) if block == "softplus" else 1.0
        return smooth_activation_moments(name, mu, sig, sigma_dot, beta=beta)
    if block == "flatten":
        return mu.copy(), sigma.copy(), sigma_dot.copy()
    raise InputError(f"No moment propagation for block {block!r}.")


def between_channel_share(block: str, params: Mapping[str, Any], mu, sigma, share):
    """Share of a block's output variance (pooled) that is the spread of its channels' means.

    Channels are the first axis of a (channels, ...) layer, as in
    ``sigma_chan`` of :func:`smpstats.simulate`; a 1-D layer is one channel
    (share 0). The input's pooled variance ``sigma**2`` splits into
    ``B = share sigma**2`` between channels and ``W`` within them; the
    within part of the output is

    * conv: ``sigma_w**2 W`` (given weights: ``w_sq W``), as a channel's
      units share its weights and bias; batch norm: ``E[gamma**2 / var] W``
      (given statistics: ``mean gamma_c**2 / var_c``); the rest of the
      output's mean-field variance (:func:`propagate_moments`) is between;
    * average pooling: ``W / k``; max pooling: ``W`` times the variance of
      the max of ``k`` standard normals; ``B`` is unchanged;
    * linear and flatten: one channel (share 0); element-wise activations:
      the share is unchanged (a channel's mean moves with its units).

    Mean-field expectations throughout, so that a draw's realised
    (finite-width) moments cannot push the share to 1. Arrays broadcast
    together (one entry per draw); the result lies in [0, 1).
    """
    mu, sigma, share = (np.asarray(v, dtype=float) for v in (mu, sigma, share))
    between, within = share * sigma**2, (1.0 - share) * sigma**2
    if block in ("linear", "flatten"):
        return np.zeros(np.broadcast(mu, sigma, share).shape)
    if block in ("conv1d", "conv2d", "batchnorm"):
        if block == "batchnorm":
            gain_sq = float(params["bn_gain_sq"]) if _given(params, _GIVEN_BATCHNORM) else _BN_GAMMA2 * _BN_E_INV_VAR
        else:
            gain_sq = float(params["w_sq"]) if _given(params, _GIVEN_AFFINE) else float(params["sigma_w"]) ** 2
        total = propagate_moments(block, params, mu, sigma, np.zeros_like(sigma))[1] ** 2
        return np.clip(1.0 - gain_sq * within / np.maximum(total, 1e-300), 0.0, 1.0 - 1e-12)
    if block in ("avgpool1d", "avgpool2d", "maxpool1d", "maxpool2d"):
        k = int(params["window"])
        factor = 1.0 / k if block.startswith("avg") else float(theory.max_output_moments(k, 0.0, 1.0).sigma) ** 2
        return between / np.maximum(between + factor * within, 1e-300)
    return np.broadcast_to(share, np.broadcast(mu, sigma, share).shape).copy()
