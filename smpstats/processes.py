"""Random signals on a uniform time grid with known statistics (pure numpy).

* :func:`sample_se_gp` — stationary Gaussian process with squared-exponential
  covariance ``sigma**2 * exp(-tau**2 / (2 * length_scale**2))``, sampled
  exactly on the grid by circulant embedding. Samples are band-limited
  trigonometric polynomials, hence smooth: their SMP is zero. Statistics:
  mean ``mu``, std ``sigma``, derivative std ``sigma / length_scale``.
* :func:`sample_random_kinks` — piecewise-linear signals with Poisson kink
  times and Gaussian slope jumps; their exact SMP is returned with them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.fft

from ._validation import check_int, check_real, check_step

__all__ = ["sample_se_gp", "se_fourier_modes", "SEFourierModes", "sample_random_kinks", "RandomKinks"]

#: Embedding margin in length scales: the kernel is exp(-72) ~ 5e-32 there.
_EMBED_MARGIN = 12.0


def sample_se_gp(
    n_times: int,
    dt: float,
    length_scale: float,
    *,
    sigma: float = 1.0,
    mu: float = 0.0,
    size: int | tuple[int, ...] = (),
    rng: np.random.Generator,
) -> np.ndarray:
    """Draw stationary squared-exponential Gaussian-process paths on a grid.

    Parameters
    ----------
    n_times : int >= 2
        Number of samples along the path.
    dt : float > 0
        Time step (time units per sample).
    length_scale : float > 0
        Covariance length scale, in time units.
    sigma, mu : float
        Marginal std (>= 0) and mean of the process.
    size : int or tuple of int
        Shape of the batch of independent paths.
    rng : numpy.random.Generator

    Returns
    -------
    array of shape (*size, n_times), float64
    """
    n_times = check_int(n_times, "n_times", minimum=2)
    dt = check_step(dt)
    length_scale = check_real(length_scale, "length_scale", minimum=0.0, strict_minimum=True)
    sigma = check_real(sigma, "sigma", minimum=0.0)
    mu = check_real(mu, "mu")
    size = (size,) if isinstance(size, (int, np.integer)) else tuple(size)
    n_embed = scipy.fft.next_fast_len(int(n_times + np.ceil(2 * _EMBED_MARGIN * length_scale / dt)), real=True)
    n_embed += n_embed % 2
    lag = np.minimum(np.arange(n_embed), n_embed - np.arange(n_embed)) * dt
    cov = np.exp(-0.5 * (lag / length_scale) ** 2)
    spectrum = np.clip(scipy.fft.rfft(cov).real, 0.0, None)  # shape (n_embed // 2 + 1,)
    n_freq = spectrum.shape[0]
    scale = np.sqrt(spectrum * n_embed / 2.0)
    scale[0] *= np.sqrt(2.0)
    scale[-1] *= np.sqrt(2.0)
    coef = rng.standard_normal((*size, n_freq)) + 1j * rng.standard_normal((*size, n_freq))
    coef[..., 0] = coef[..., 0].real
    coef[..., -1] = coef[..., -1].real
    paths = scipy.fft.irfft(coef * scale, n=n_embed, axis=-1)[..., :n_times]
    return mu + sigma * paths


@dataclass(frozen=True)
class SEFourierModes:
    """Fourier modes of a squared-exponential GP made periodic beyond a span.

    A path ``x(t) = sum_k amplitude[k] * (a_k cos(omega[k] t) + b_k sin(omega[k] t))``
    with i.i.d. standard normal ``a_k, b_k`` is an exactly Gaussian, stationary
    process whose covariance on ``[0, span]`` is ``exp(-tau**2 / (2 l**2))`` up
    to ~1e-17 (unit variance; scale by sigma and add mu). It can be evaluated
    at any t, and is smooth (a trigonometric polynomial).

    Attributes
    ----------
    omega : array of shape (n_modes,)
        Angular frequencies (radians per time unit).
    amplitude : array of shape (n_modes,)
        Standard deviation of each cosine and sine coefficient.
    """

    omega: np.ndarray
    amplitude: np.ndarray

    def basis(self, t: np.ndarray) -> np.ndarray:
        """Return the basis matrix of shape (n_times, 2 * n_modes) at times ``t``."""
        phase = np.multiply.outer(np.asarray(t, dtype=np.float64), self.omega)
        return np.concatenate([np.cos(phase) * self.amplitude, np.sin(phase) * self.amplitude], axis=-1)


def se_fourier_modes(
    span: float, length_scale: float, *, margin: float = 9.0, rtol: float = 1e-17
) -> SEFourierModes:
    """Return the Fourier modes of a unit-variance SE process on ``[0, span]``.

    The process is made periodic with period ``span + margin * length_scale``:
    two points of ``[0, span]`` are then at least ``margin`` length scales
    apart around the period, where the SE covariance is ``exp(-margin**2 / 2)``
    (2.6e-18 for the default 9, below float64 resolution). Modes whose variance
    falls below ``rtol`` times the largest are dropped (amplitude ~3e-9
    relative for the default).
    """
    span = check_real(span, "span", minimum=0.0)
    length_scale = check_real(length_scale, "length_scale", minimum=0.0, strict_minimum=True)
    margin = check_real(margin, "margin", minimum=0.0, strict_minimum=True)
    rtol = check_real(rtol, "rtol", minimum=0.0, maximum=1.0, strict_minimum=True)
    period = span + margin * length_scale
    # Mode variances of the periodised kernel: a_0 = l sqrt(2 pi) / L, a_k = 2 a_0 exp(-(w_k l)^2 / 2).
    k_max = int(np.ceil(np.sqrt(-2.0 * np.log(rtol)) * period / (2 * np.pi * length_scale))) + 1
    omega = 2 * np.pi * np.arange(k_max) / period
    variance = (length_scale * np.sqrt(2 * np.pi) / period) * np.exp(-0.5 * (omega * length_scale) ** 2)
    variance[1:] *= 2.0
    return SEFourierModes(omega=omega, amplitude=np.sqrt(variance))


@dataclass(frozen=True)
class RandomKinks:
    """Piecewise-linear signals with known kinks.

    Attributes
    ----------
    values : array of shape (*size, n_times)
        The signals on the grid (zero value and slope at the first sample).
    smp : array of shape size
        Exact SMP of each signal over the grid's span (sum of |slope jumps|).
    n_kinks : array of shape size
        Number of kinks inside the grid's span.
    times, owner, jumps : arrays of shape (total kinks,)
        Every kink: its time, the flat index of its signal and its slope jump
        (signal units per time unit).
    """

    values: np.ndarray
    smp: np.ndarray
    n_kinks: np.ndarray
    times: np.ndarray
    owner: np.ndarray
    jumps: np.ndarray


def sample_random_kinks(
    n_times: int,
    dt: float,
    *,
    rate: float,
    jump_scale: float,
    size: int | tuple[int, ...] = (),
    rng: np.random.Generator,
) -> RandomKinks:
    """Draw piecewise-linear signals with Poisson kinks and Gaussian slope jumps.

    Kink times are a Poisson process of ``rate`` kinks per time unit over
    ``(0, (n_times - 1) * dt)``; slope jumps are N(0, jump_scale**2), in
    signal units per time unit. Values are exact on the grid.
    """
    n_times = check_int(n_times, "n_times", minimum=2)
    dt = check_step(dt)
    rate = check_real(rate, "rate", minimum=0.0)
    jump_scale = check_real(jump_scale, "jump_scale", minimum=0.0)
    size = (size,) if isinstance(size, (int, np.integer)) else tuple(size)
    n_series = int(np.prod(size, dtype=np.int64))
    span = (n_times - 1) * dt
    counts = rng.poisson(rate * span, size=n_series)
    total = int(counts.sum())
    owner = np.repeat(np.arange(n_series), counts)
    times = rng.uniform(0.0, span, size=total)
    jumps = rng.normal(0.0, jump_scale, size=total)
    # y(t_n) = sum_k J_k (t_n - t_k)_+ = A_n t_n - B_n with A, B cumulative over kinks before t_n.
    first_after = np.minimum(np.floor(times / dt).astype(np.int64) + 1, n_times - 1)
    slope_inc = np.zeros((n_series, n_times))
    offset_inc = np.zeros((n_series, n_times))
    np.add.at(slope_inc, (owner, first_after), jumps)
    np.add.at(offset_inc, (owner, first_after), jumps * times)
    grid = np.arange(n_times) * dt
    values = np.cumsum(slope_inc, axis=1) * grid - np.cumsum(offset_inc, axis=1)
    smp = np.bincount(owner, weights=np.abs(jumps), minlength=n_series)
    return RandomKinks(
        values=values.reshape(*size, n_times),
        smp=smp.reshape(size),
        n_kinks=counts.reshape(size),
        times=times,
        owner=owner,
        jumps=jumps,
    )
