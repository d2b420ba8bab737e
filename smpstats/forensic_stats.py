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


def fit_smooth_plus_noise(y: np.ndarray, *, length_scales: np.ndarray | None = None):
    """Fit ``V(h) = 6 sigma^2 + s^2 g_SE(h; l)`` to the second-difference variances of each component.

    The smooth-plus-noise (null) model: a squared-exponential process of std
    ``s`` and length scale ``l`` (frames) plus white noise of std ``sigma``.
    For each ``l`` on a log grid, ``(sigma^2, s^2)`` is a non-negative
    least-squares fit in relative error over steps ``h = 1, 2, 3, 4, 6, 8,
    10, 12, 16`` (those up to ``n_times / 6``: the scales the statistics use,
    and twice more); the best ``l`` is kept. Only ``s / l**2`` is identified
    when ``l`` is much longer than 16 frames, and only that matters here.

    Parameters
    ----------
    y : array of shape (n_components, n_times)

    Returns
    -------
    sigma, s, length_scale : arrays of shape (n_components,)
        Noise std and smooth std (units of y), length scale (frames).
    """
    from scipy.optimize import nnls

    n_times = y.shape[-1]
    steps = np.array([h for h in (1, 2, 3, 4, 5, 6, 8, 10, 12, 16) if 6 * h <= n_times] or [1, 2])
    if length_scales is None:
        length_scales = np.geomspace(1.0, max(4.0 * n_times, 8.0), 72)
    observed = np.stack([difference_variance(y, int(h)) for h in steps], axis=-1)  # (C, n_steps)
    sigma = np.empty(y.shape[0])
    s = np.empty(y.shape[0])
    ell = np.empty(y.shape[0])
    for c in range(y.shape[0]):
        best = (np.inf, 0.0, 0.0, 1.0)
        weight = 1.0 / observed[c]
        for length in length_scales:
            design = np.stack([np.full(steps.shape, 6.0), se_second_difference_variance(steps, length)], axis=1)
            coef, residual = nnls(design * weight[:, None], observed[c] * weight)
            if residual < best[0]:
                best = (residual, coef[0], coef[1], length)
        sigma[c], s[c], ell[c] = np.sqrt(best[1]), np.sqrt(best[2]), best[3]
    return sigma, s, ell


def white_noise_std(y: np.ndarray) -> np.ndarray:
    """Robust std of white noise from third differences (median absolute value); shape (...,).

    Third differences of white noise have std ``sqrt(20) sigma``; a smooth
    signal adds little to them when sampled with several frames per length
    scale. Any roughness that is not white noise (kinks) is counted too, so
    this is an upper bound on the white-noise level.
    """
    d3 = np.diff(y, n=3, axis=-1)
    return np.median(np.abs(d3), axis=-1) / (0.6744897501960817 * np.sqrt(20.0))
