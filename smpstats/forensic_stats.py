"""Multiscale roughness statistics of trajectories (pure numpy).

Second differences ``d_h[n] = y[n+h] - 2 y[n] + y[n-h]`` at step ``h``
(frames) separate three kinds of signal by how their mean square ``V(h)``
grows with ``h`` and by the correlation of neighbouring ``d_1``:

=====================================  ==========  ===================
signal                                 ``V(h)``    corr(d_1[n], d_1[n+1])
=====================================  ==========  ===================
white noise                            ``h**0``    -2/3 (lag 2: +1/6)
slope with dense random jumps (kinks)  ``h**3``    +1/4
smooth (analytic) signal               ``h**4``    ~ +1
=====================================  ==========  ===================

Sparse kinks also give ``d_1`` heavy tails (kurtosis above 3). The
statistic vector of :func:`statistic_vector` holds these features; every
entry is invariant to the scale of the trajectory and to adding a linear
trend (second differences remove it exactly).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "STATISTIC_NAMES",
    "SCALING_STEPS",
    "second_differences",
    "difference_variance",
    "statistic_vector",
    "se_second_difference_variance",
    "se_fourth_difference_variance",
    "fit_smooth_plus_noise",
    "white_noise_std",
]

#: Steps (frames) whose consecutive variance ratios enter the statistic vector.
SCALING_STEPS = (1, 2, 4, 8)

#: Names of the entries of :func:`statistic_vector`.
STATISTIC_NAMES = (
    "log_v2_over_v1",   # log V(2)/V(1): 0 for white noise, 3 log 2 for dense kinks, 4 log 2 smooth
    "log_v4_over_v2",
    "log_v8_over_v4",
    "corr_lag1",        # corr(d_1[n], d_1[n+1]): -2/3 white noise, +1/4 dense kinks, ~1 smooth
    "corr_lag2",        # +1/6 white noise
    "log_kurtosis",     # log(E d_1^4 / (E d_1^2)^2): log 3 for Gaussian roughness
)


def second_differences(y: np.ndarray, h: int = 1) -> np.ndarray:
    """Return ``y[..., n+h] - 2 y[..., n] + y[..., n-h]``, shape (..., n_times - 2h)."""
    return y[..., 2 * h:] - 2.0 * y[..., h:-h] + y[..., :-2 * h]


def difference_variance(y: np.ndarray, h: int) -> np.ndarray:
    """Mean square of the second differences at step ``h``; shape (...,)."""
    return np.mean(second_differences(y, h) ** 2, axis=-1)


def statistic_vector(y: np.ndarray) -> np.ndarray:
    """Multiscale statistics of trajectories, averaged over components.

    Parameters
    ----------
    y : array of shape (..., n_components, n_times)
        Trajectories; each component must have non-zero second differences and
        ``n_times >= 2 * max(SCALING_STEPS) + 3``.

    Returns
    -------
    array of shape (..., len(STATISTIC_NAMES))
        The entries of :data:`STATISTIC_NAMES`, each the mean over components.
    """
    variances = np.stack([difference_variance(y, h) for h in SCALING_STEPS], axis=-1)  # (..., C, n_steps)
    log_ratios = np.log(variances[..., 1:] / variances[..., :-1])
    d = second_differences(y, 1)
    v1 = variances[..., 0]
    corr1 = np.mean(d[..., 1:] * d[..., :-1], axis=-1) / v1
    corr2 = np.mean(d[..., 2:] * d[..., :-2], axis=-1) / v1
    kurtosis = np.mean(d**4, axis=-1) / v1**2
    per_component = np.concatenate(
        [log_ratios, corr1[..., None], corr2[..., None], np.log(kurtosis)[..., None]], axis=-1
    )
    return per_component.mean(axis=-2)


def se_second_difference_variance(h: np.ndarray, length_scale: float) -> np.ndarray:
    """Variance of ``d_h`` for a unit-variance squared-exponential process (``h`` and length scale in frames).

    ``6 - 8 exp(-h^2 / (2 l^2)) + 2 exp(-2 h^2 / l^2)``, which is ``3 h^4 / l^4`` for ``h << l``.
    """
    r = (np.asarray(h, dtype=np.float64) / length_scale) ** 2
    # -expm1 keeps full precision for h << l.
    return -8.0 * np.expm1(-0.5 * r) + 2.0 * np.expm1(-2.0 * r)


def se_fourth_difference_variance(h: np.ndarray, length_scale: float) -> np.ndarray:
    """Variance of the fourth difference at step ``h`` of a unit-variance squared-exponential process.

    ``E[(2 sin(w h / 2))^8]`` for ``w ~ N(0, 1 / l^2)`` (the spectral form), by Gauss-Hermite
    quadrature where ``h < 2 l`` (exact for the polynomial small-step regime, ``105 h^8 / l^8``)
    and by the closed form ``70 - 112 e_1 + 56 e_2 - 16 e_3 + 2 e_4``, ``e_d = exp(-d^2 h^2 / (2 l^2))``,
    beyond it (no cancellation there). White noise of std sigma gives ``70 sigma^2``.
    """
    h = np.asarray(h, dtype=np.float64)
    ratio = h / length_scale
    e = [np.exp(-0.5 * (d * ratio) ** 2) for d in range(1, 5)]
    closed = 70.0 - 112.0 * e[0] + 56.0 * e[1] - 16.0 * e[2] + 2.0 * e[3]
    nodes, weights = np.polynomial.hermite_e.hermegauss(40)
    theta = np.multiply.outer(ratio, nodes)                       # w h for w = node / l
    quad = np.tensordot((2.0 * np.sin(0.5 * theta)) ** 8, weights, axes=([-1], [0])) / np.sqrt(2 * np.pi)
    return np.where(ratio < 2.0, quad, closed)


def fit_smooth_plus_noise(y: np.ndarray, *, length_scales: np.ndarray | None = None):
    """Fit ``V(h) = 6 sigma^2 + s^2 g_SE(h; l)`` to the second-difference variances of each series.

    The smooth-plus-noise (null) model: a squared-exponential process of std
    ``s`` and length scale ``l`` (frames) plus white noise of std ``sigma``.
    For each ``l`` on a log grid, ``(sigma^2, s^2)`` is a non-negative
    least-squares fit in relative error over the second differences at steps
    ``h = 1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 24, 32, 48, 64`` (those up to
    ``n_times / 6``) and the fourth differences at steps 1 and 2 (``70
    sigma^2 + s^2 g4_SE(h; l)``, which pin the noise where the smooth part
    dominates the second differences); the best ``l`` is kept.

    Parameters
    ----------
    y : array of shape (..., n_times)

    Returns
    -------
    sigma, s, length_scale : arrays of shape (...,)
        Noise std and smooth std (units of y), length scale (frames).
    """
    n_times = y.shape[-1]
    steps = np.array([h for h in (1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 24, 32, 48, 64) if 6 * h <= n_times] or [1, 2])
    if length_scales is None:
        length_scales = np.geomspace(1.0, max(4.0 * n_times, 8.0), 72)
    # Second differences at every step, and fourth differences at steps 1 and 2: the latter see the
    # noise (70 sigma^2) under a smooth part that dominates the second differences.
    fourth = [np.mean(np.diff(y[..., ::h], n=4, axis=-1) ** 2, axis=-1) if h == 1 else
              np.mean((y[..., 4 * h:] - 4 * y[..., 3 * h:-h] + 6 * y[..., 2 * h:-2 * h] - 4 * y[..., h:-3 * h]
                       + y[..., :-4 * h]) ** 2, axis=-1) for h in (1, 2)]
    observed = np.concatenate([np.stack([difference_variance(y, int(h)) for h in steps], axis=-1),
                               np.stack(fourth, axis=-1)], axis=-1)             # (..., n_rows)
    noise_gain = np.r_[np.full(steps.size, 6.0), 70.0, 70.0]
    smooth_gain = np.concatenate([se_second_difference_variance(steps[None, :], length_scales[:, None]),
                                  se_fourth_difference_variance(np.array([1.0, 2.0])[None, :],
                                                                length_scales[:, None])], axis=-1)
    # Relative-error design per length scale: columns gain / V_obs, target 1.
    a = noise_gain / observed[..., None, :]                                     # (..., 1, n_rows)
    b = smooth_gain / observed[..., None, :]
    a = np.broadcast_to(a, b.shape)                                              # (..., n_l, n_rows)
    aa, bb, ab = (a * a).sum(-1), (b * b).sum(-1), (a * b).sum(-1)
    a1, b1 = a.sum(-1), b.sum(-1)
    det = aa * bb - ab**2
    with np.errstate(divide="ignore", invalid="ignore"):
        both = (np.stack([(bb * a1 - ab * b1) / det, (aa * b1 - ab * a1) / det], axis=-1))
    only_a = np.stack([a1 / aa, np.zeros_like(a1)], axis=-1)
    only_b = np.stack([np.zeros_like(b1), b1 / bb], axis=-1)
    n = observed.shape[-1]

    def sse(c):
        return n - 2 * (c[..., 0] * a1 + c[..., 1] * b1) + c[..., 0] ** 2 * aa + c[..., 1] ** 2 * bb \
            + 2 * c[..., 0] * c[..., 1] * ab

    feasible = np.isfinite(both).all(-1) & (both >= 0).all(-1)
    candidates = [np.where(feasible[..., None], both, np.nan), only_a, only_b]
    errors = np.stack([np.where(np.isnan(c[..., 0]), np.inf, sse(c)) for c in candidates], axis=-1)
    pick = errors.argmin(-1)                                                     # (..., n_l)
    coef = np.choose(pick[..., None], [np.nan_to_num(c) for c in candidates])    # (..., n_l, 2)
    best = np.take_along_axis(errors, pick[..., None], -1)[..., 0].argmin(-1)    # (...,)
    coef = np.take_along_axis(coef, best[..., None, None], -2)[..., 0, :]
    return np.sqrt(np.maximum(coef[..., 0], 0)), np.sqrt(np.maximum(coef[..., 1], 0)), length_scales[best]


def white_noise_std(y: np.ndarray) -> np.ndarray:
    """Robust std of white noise from third differences (median absolute value); shape (...,).

    Third differences of white noise have std ``sqrt(20) sigma``; a smooth
    signal adds little to them when sampled with several frames per length
    scale. Any roughness that is not white noise (kinks) is counted too, so
    this is an upper bound on the white-noise level.
    """
    d3 = np.diff(y, n=3, axis=-1)
    return np.median(np.abs(d3), axis=-1) / (0.6744897501960817 * np.sqrt(20.0))
