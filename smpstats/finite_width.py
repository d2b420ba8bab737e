"""Finite-width moment propagation: the realised pooled moments of one random network of the family.

The mean-field map (:mod:`smpstats.mean_field`) is exact for the expected
second moment, but one random network of finite width realises its own: every random affine block multiplies a layer's second moment and slope
mean square by correlated chi-square-like factors of mean 1
(:func:`affine_fluctuation`), and a ReLU averages over a finite number of
units (:func:`rectifier_units`), so the realised moments walk randomly with
depth (their logs drift down: the concave functions of them that SMP
depends on fall below their mean-field values) and spread from network to
network. Deep narrow layers also come to move along their mean vector
(:func:`radial_after_affine`), which couples value and slope scales and
thins out the new kinks of a ReLU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from .mean_field import _BN_E_INV_VAR, _BN_GAMMA2, _GIVEN_AFFINE, _GIVEN_BATCHNORM, _given

__all__ = ["path_static_share", "affine_fluctuation", "radial_after_affine", "rectifier_units", "FiniteWidth"]


def path_static_share(sigma, sigma_dot, length: float) -> np.ndarray:
    r"""Share of a smooth unit's variance held by its time mean over one finite path.

    For a stationary Gaussian process with squared-exponential covariance of
    length scale ``l = sigma / sigma_dot`` observed on ``[0, T]``, the time
    mean has variance ``sigma**2 s`` with ``u = T / l`` and

    .. math::

        s = \frac{2 \sqrt{2\pi}}{u} \left(\Phi(u) - \tfrac12\right) - \frac{2}{u^2}\left(1 - e^{-u^2/2}\right),

    so a unit of the input layer splits its variance into a part that is
    constant along the path (``s``, the spread of the units' time means) and
    a part that moves (``1 - s``).

    Parameters
    ----------
    sigma, sigma_dot : arrays, > 0
        Std and RMS slope (per time unit) of the units.
    length : float, > 0
        Path length ``T`` (time units).

    Returns
    -------
    ndarray
        ``s`` in ``(0, 1]``, the shape of ``sigma``.
    """
    from scipy.special import ndtr

    u = float(length) * np.asarray(sigma_dot, dtype=float) / np.maximum(np.asarray(sigma, dtype=float), 1e-300)
    u = np.maximum(u, 1e-6)
    s = 2 * math.sqrt(2 * math.pi) / u * (ndtr(u) - 0.5) - 2 / u**2 * -np.expm1(-u**2 / 2)
    return np.clip(s, 1e-12, 1.0)


def _inv_k(sigma, sigma_dot, length: float) -> np.ndarray:
    """``1/K = l sqrt(pi) / T`` (at most 1): the inverse number of effective samples of a time average over a path
    of length ``T`` of a squared-exponential process of length scale ``l = sigma / sigma_dot``."""
    ratio = np.asarray(sigma, dtype=float) / np.maximum(np.asarray(sigma_dot, dtype=float), 1e-300)
    return np.minimum(1.0, math.sqrt(math.pi) * ratio / float(length))


def affine_fluctuation(mu, sigma, sigma_dot, static, radial, *, fan_in: int, rows: int, positions: int,
                       sigma_w: float, sigma_b: float, length: float):
    r"""Relative variances and covariance of the realised pooled moments after one random affine block.

    Given its input layer (``fan_in`` inputs per output unit, second-moment
    matrix ``C`` of the inputs over time and positions, ``D`` of their slopes),
    a block with ``rows`` independent weight rows ``w_j ~ N(0, sigma_w**2 /
    n)``, ``n = fan_in`` (a linear block's output features, a conv block's
    output channels, each applied at ``P = positions`` places) and biases
    ``N(0, sigma_b**2)`` has pooled output second moment ``Q = mean_j (w_j' C
    w_j + 2 b_j w_j' m + b_j**2)`` and slope mean square ``Q' = mean_j w_j' D
    w_j``. These are means of ``rows`` independent quadratic forms of Gaussian
    vectors, so, exactly,

    .. math::

        \frac{\mathrm{Var}\,Q}{(E Q)^2} = \frac{2}{\mathrm{rows}}
            \frac{\sigma_w^4\, \mathrm{tr}(C^2)/n^2 + 2 \sigma_b^2 \sigma_w^2 |\bar m|^2/n + \sigma_b^4}
                 {(\sigma_w^2 q + \sigma_b^2)^2}, \quad
        \frac{\mathrm{Var}\,Q'}{(E Q')^2} = \frac{2}{\mathrm{rows}} \frac{\mathrm{tr}(D^2)}{\mathrm{tr}(D)^2},
        \quad
        \frac{\mathrm{Cov}(Q, Q')}{E Q\, E Q'} = \frac{2}{\mathrm{rows}}
            \frac{\sigma_w^2\, \mathrm{tr}(C D)}{(\sigma_w^2 q + \sigma_b^2)\, n\, \mathrm{tr}(D)}.

    A single input vector (``C`` of rank one) gives the classical
    ``chi2_rows / rows`` of the squared norm. The traces follow from the
    pooled state: mean ``mu``, a spread of the units' time means of variance
    ``S = static sigma**2`` (independent across positions), a moving part of
    variance ``v = sigma**2 - S`` whose time averages over the path have
    ``1/K = l sqrt(pi) / T`` effective samples (``l = sigma / sigma_dot``,
    squared-exponential; ``3/4`` of that for slopes), ``q = mu**2 +
    sigma**2``, and the share ``g = radial`` of the moving part and of the
    slopes that lies along the layer's mean vector (deep random layers move
    mostly along it; see :class:`FiniteWidth`). With ``a = mu**2 + g v``:

    .. math::

        \mathrm{tr}(C^2)/n^2 &= a^2 + \frac{2 a S + S^2}{P} + \frac{(1-g)^2 v^2}{K P}
                               + \frac{2\mu^2 \sigma^2 + \sigma^4}{n}, \\
        \frac{\mathrm{tr}(D^2)}{\mathrm{tr}(D)^2} &= g^2 + (1-g)^2 \left(\frac1n + \frac{3}{4 K P}\right), \\
        \frac{\mathrm{tr}(C D)}{n\, \mathrm{tr}(D)} &= (a + S/P)\, g + \frac{(\mu^2 + S)(1-g)}{n}
            + (1-g)^2 v \left(\frac1n + \frac{1}{2 K P}\right).

    Parameters
    ----------
    mu, sigma, sigma_dot, static, radial : arrays of one shape
        Input layer's mean, pooled std, RMS slope, static share ``S /
        sigma**2`` and radial share ``g``.
    fan_in, rows, positions : int
        ``n``, the independent weight rows and the output positions per row ``P``.
    sigma_w, sigma_b : float
        Weight scale (weight std times ``sqrt(fan_in)``) and bias std.
    length : float
        Path length ``T``.

    Returns
    -------
    (var_q, var_d, cov) : arrays
        Relative variances of ``Q`` and ``Q'`` and their relative covariance.
    """
    mu, sigma, sigma_dot, static, g = (np.asarray(v, dtype=float) for v in (mu, sigma, sigma_dot, static, radial))
    n, p = float(fan_in), float(positions)
    s2, m2 = sigma**2, mu**2
    big_s, v, q = static * s2, (1 - static) * s2, m2 + s2
    inv_kp = _inv_k(sigma, sigma_dot, length) / p
    sw2, sb2 = float(sigma_w) ** 2, float(sigma_b) ** 2
    a = m2 + g * v
    tr_c2 = a**2 + (2 * a * big_s + big_s**2) / p + (1 - g) ** 2 * v**2 * inv_kp + (2 * m2 * s2 + s2**2) / n
    tr_d2 = g**2 + (1 - g) ** 2 * (1 / n + 0.75 * inv_kp)
    tr_cd = (a + big_s / p) * g + (m2 + big_s) * (1 - g) / n + (1 - g) ** 2 * v * (1 / n + 0.5 * inv_kp)
    mean_q = np.maximum(sw2 * q + sb2, 1e-300)
    var_q = 2 / rows * (sw2**2 * tr_c2 + 2 * sb2 * sw2 * (m2 + big_s / p) + sb2**2) / mean_q**2
    return var_q, 2 / rows * tr_d2, 2 / rows * sw2 * tr_cd / mean_q


def radial_after_affine(radial, rows: int) -> np.ndarray:
    r"""Radial share ``g`` after a random affine block with ``rows`` independent weight rows.

    With ``m`` the input's mean vector and ``D`` its slopes' second-moment
    matrix, ``g = m' D m / (|m|**2 tr D)``; for ``W`` with i.i.d. normal
    entries ``E[W'W D W'W] = s**4 (rows (rows + 1) D + rows tr(D) I)`` and
    ``E[|W m|**2 tr(W D W')] = s**4 rows |m|**2 tr(D) (rows + 2 g)``, so

    .. math::  g_{out} = \frac{(\mathrm{rows} + 1)\, g + 1}{\mathrm{rows} + 2 g}.

    A random map couples the mean direction to the others by ``1/rows``;
    repeated, the share climbs towards 1 (deep narrow networks move along
    their mean vector). Elementwise blocks keep it (their masks act alike on
    the mean and the motion, to first order).
    """
    g = np.asarray(radial, dtype=float)
    return ((rows + 1) * g + 1) / (rows + 2 * g)


def _lognormal_pair(rng: np.random.Generator, var_a, var_b, cov) -> tuple[np.ndarray, np.ndarray]:
    """Two positive factors of mean 1 with the given relative variances and covariance (joint log-normal)."""
    la, lb = np.log1p(var_a), np.log1p(var_b)
    lab = np.log1p(cov)
    sa, sb = np.sqrt(la), np.sqrt(lb)
    rho = np.clip(np.divide(lab, sa * sb, out=np.zeros_like(sa), where=sa * sb > 0), -0.999, 0.999)
    z1, z2 = rng.standard_normal((2, *np.shape(la)))
    za, zb = z1, rho * z1 + np.sqrt(1 - rho**2) * z2
    return np.exp(sa * za - la / 2), np.exp(sb * zb - lb / 2)


def _rectified_units(c, v_layer, g, c2_scale, alpha: float) -> np.ndarray:
    """Per-unit moments of a (leaky) ReLU's units with time means ``c``, shape (8, *c.shape).

    Rows: ``m, m**2, m2, p, p c**2, c**2, r, r0`` (unit mean, its square,
    second moment, slope share, slope share along the mean vector, squared
    mean, zero-crossing rate ``f phi(a) / sqrt(v)`` per unit of the layer's
    slope mean square, and that rate without radial motion, ``g = 0``) for
    units whose moving part has variance ``v = v_layer f``
    and slope mean square proportional to ``f = (1 - g) + g c**2 / c2_scale``
    (the radial motion scales with ``|c|``).
    """
    from scipy.special import ndtr

    out = np.empty((8, *c.shape), dtype=c.dtype)
    m, mm, m2, on, on_c2, c2, rate, rate_flat = out
    np.multiply(c, c, out=c2)
    f = c2 * (g / np.maximum(c2_scale, 1e-30))[:, None]
    f += (1 - g)[:, None]
    v = np.maximum(f * v_layer[:, None], 1e-30)
    sd = np.sqrt(v)
    a = c / sd
    ndtr(a, out=on)
    small_phi = np.exp(-0.5 * (a * a)) * (1 / math.sqrt(2 * math.pi))
    tail = sd * small_phi
    np.multiply(f / sd, small_phi, out=rate)
    m[...] = c * on + tail
    m2[...] = (c2 + v) * on + c * tail
    if alpha:
        m *= 1 - alpha
        m += alpha * c
        m2 *= 1 - alpha**2
        m2 += alpha**2 * (c2 + v)
        on *= 1 - alpha**2
        on += alpha**2
    np.multiply(m, m, out=mm)
    np.multiply(on, c2, out=on_c2)
    sd_flat = np.sqrt(np.maximum(v_layer, 1e-30))[:, None]
    np.divide(np.exp(-0.5 * c2 / sd_flat**2) * (1 / math.sqrt(2 * math.pi)), sd_flat, out=rate_flat)
    return out


#: Layers of up to this many independent units are sampled whole; wider ones by _WIDE_SAMPLE units whose mean's
#: deviation from the population's (Gauss-Hermite) is shrunk by sqrt(_WIDE_SAMPLE / units).
_SAMPLED_UNITS = 16
_WIDE_SAMPLE = 8
_POP_X, _POP_W = np.polynomial.hermite_e.hermegauss(8)
_POP_W = _POP_W / _POP_W.sum()


def _population_rates(mu, big_s, v, g) -> tuple[np.ndarray, np.ndarray]:
    """Population means of the zero-crossing rates ``r`` and ``r0`` of :func:`_rectified_units`, over ``c ~ N(mu, S)``.

    The rate's Gaussian factor ``phi(c / sqrt(v0)) / sqrt(v0)`` (``v0 = (1 -
    g) v``, the least moving variance) times the density of ``c`` is
    ``N(mu; 0, S + v0) N(c; mu', S')`` with ``S' = S v0 / (S + v0)``, ``mu' =
    mu v0 / (S + v0)``; Gauss-Hermite over that narrow normal integrates the
    smooth rest. ``r0`` is the pooled ``phi(mu / sigma) / sigma`` exactly.
    """
    v0 = np.maximum((1 - g) * v, 1e-300)
    total = np.maximum(big_s + v0, 1e-300)
    s_post, m_post = big_s * v0 / total, mu * v0 / total
    c = m_post[:, None] + np.sqrt(s_post)[:, None] * _POP_X
    c2 = c * c
    f = (1 - g)[:, None] + g[:, None] * c2 / np.maximum(mu**2 + big_s, 1e-300)[:, None]
    vc = np.maximum(f * v[:, None], 1e-300)
    rest = f * np.sqrt(v0[:, None] / vc) * np.exp(-0.5 * c2 * (1 / vc - 1 / v0[:, None]))
    norm = np.exp(-0.5 * mu**2 / total) / np.sqrt(2 * math.pi * total)
    pooled = np.exp(-0.5 * mu**2 / np.maximum(big_s + v, 1e-300)) / np.sqrt(2 * math.pi * np.maximum(big_s + v, 1e-300))
    return norm * (rest @ _POP_W), pooled


def rectifier_units(rng: np.random.Generator, mu, sigma, sigma_dot, static, shared, radial, *, channels: int,
                    positions: int, negative_slope: float = 0.0):
    """Realised pooled moments of a (leaky) ReLU over the finite units of one layer, one sample per draw.

    Unit ``j`` of the input layer has time mean ``c_j`` and a moving part;
    the means are ``N(mu, S)`` with ``S = static sigma**2``, a share
    ``shared`` of which is common to the positions of one channel, so the
    ``channels x positions`` units average like ``n = channels positions /
    (1 + (positions - 1) shared)`` independent ones (Kish's design effect).
    The mean-field moments are the population averages of the units'
    rectified moments over that normal; a real layer averages over its ``n``
    units. Layers of up to 16 are sampled whole, one sample per draw; for
    wider ones 8 units are sampled and their averages' deviations from the
    population's (8-point Gauss-Hermite) shrunk by ``sqrt(8 / n)`` (the
    spread of an ``n``-unit mean). The
    result is rescaled to the input's pooled second moment (already
    realised), so that this adds the spread of which units are on: for
    static units, ``sum relu(c_j)**2 / sum c_j**2`` has relative variance
    ``3 / (n + 2)`` and is independent of the input's norm.

    Per unit, with ``a = c / sqrt(v)``: mean ``c Phi(a) + sqrt(v) phi(a)``,
    second moment ``(c**2 + v) Phi(a) + c sqrt(v) phi(a)``, active share
    ``Phi(a)``; the leaky version ``(1 - alpha) relu + alpha x`` has mean
    ``(1 - alpha) m + alpha c``, second moment ``(1 - alpha**2) m2 + alpha**2
    (c**2 + v)`` and slope share ``p_j = Phi + alpha**2 (1 - Phi)``. A share
    ``g = radial`` of the moving part and of the slopes moves along the mean
    vector ``c`` (the unit's moving variance is ``v ((1 - g) + g c_j**2 /
    E c**2)``, ``v = (1 - static) sigma**2``; the rest is spread evenly), so
    the slope mean square passes with ``g sum_j p_j c_j**2 / sum_j c_j**2 +
    (1 - g) mean_j p_j``: the slopes go where the mean goes, which couples
    the two.

    The new kinks follow the units too: unit ``j`` crosses zero at the
    Kac-Rice rate ``T sigma_dot_j**2 phi(c_j / sqrt(v_j)) / sqrt(v_j)``, and
    with radial motion (``g > 0``) the units far from zero move with their
    mean and rarely cross it, so the layer's rate falls below the pooled
    ``T sigma_dot**2 phi(mu / sigma) / sigma`` (which it equals at ``g = 0``
    by the mixture identity): to 0.81 of it at ``g = 0.5``, ``static =
    0.7``.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of the sampled units.
    mu, sigma, sigma_dot, static, shared, radial : arrays, shape (n_draws,)
        The input layer's realised state (see :class:`FiniteWidth`).
    channels, positions : int
        Independent weight rows of the block that made the units, and positions per row.
    negative_slope : float, default=0
        ``alpha`` (0: ReLU).


    Returns
    -------
    (mu, sigma, sigma_dot, static, kinks) : arrays, shape (n_draws,)
        The output layer's realised state, and the ratio of the units' new
        kinks to the pooled formula's.
    """
    mu, sigma, sigma_dot, static, shared, g = (np.asarray(v, dtype=float)
                                               for v in (mu, sigma, sigma_dot, static, shared, radial))
    n_units = channels * positions / (1 + (positions - 1) * shared)
    n_max = float(np.max(n_units))
    wide = n_max > _SAMPLED_UNITS or np.any(n_units < n_max)  # some draw averages over more units than are sampled
    n_sample = _WIDE_SAMPLE if wide else int(math.ceil(n_max))
    # in units of the layer's RMS value (dimensionless, so that single precision is safe and twice as fast)
    scale = np.sqrt(np.maximum(mu**2 + sigma**2, 1e-300))
    mu_r, s2_r = mu / scale, (sigma / scale) ** 2
    v_layer, g32 = ((1 - static) * s2_r).astype(np.float32), g.astype(np.float32)
    alpha = float(negative_slope)
    z = rng.standard_normal((len(mu), n_sample), dtype=np.float32)
    if wide:
        z = np.concatenate([z, np.broadcast_to(_POP_X.astype(np.float32), (len(mu), len(_POP_X)))], axis=1)
    c = (mu_r[:, None] + np.sqrt(static * s2_r)[:, None] * z).astype(np.float32)
    per_unit = _rectified_units(c, v_layer, g32, (mu_r**2 + static * s2_r).astype(np.float32), alpha)
    sample = per_unit[..., :n_sample].mean(axis=-1, dtype=np.float64)  # (8, n_draws)
    if wide:
        population = per_unit[..., n_sample:].astype(np.float64) @ _POP_W
        population[6:] = _population_rates(mu_r, static * s2_r, (1 - static) * s2_r, g)
        sample = population + (sample - population) * np.sqrt(np.minimum(1.0, n_sample / n_units))
    m, mm, m2, on, on_c2, c2, rate, rate_flat = sample
    radial_pass = np.divide(on_c2, c2, out=on.copy(), where=c2 > 0)
    slope_pass = np.maximum(g * radial_pass + (1 - g) * on, 0.0)
    rescale2 = 1 / np.maximum(c2 + (1 - static) * s2_r, 1e-30)  # to the input's realised second moment
    mean_out = m * np.sqrt(rescale2)
    var_out = np.maximum(m2 * rescale2 - mean_out**2, 1e-30)
    static_out = np.clip((mm - m * m) * rescale2 / var_out, 0.0, 1.0)
    mean_out, var_out = mean_out * scale, var_out * scale**2
    # the same units without radial motion give the pooled formula on average (mixture identity): their ratio is
    # the radial thinning, free of the sampling noise the pooled formula already has
    kinks = np.divide(rate, rate_flat, out=np.ones_like(rate), where=rate_flat > 0)
    return mean_out, np.sqrt(var_out), sigma_dot * np.sqrt(slope_pass), static_out, kinks


@dataclass
class FiniteWidth:
    """What the finite width of the current layer adds to the pooled state, per Monte Carlo draw.

    Attributes
    ----------
    static : ndarray, shape (n_draws,)
        Share of the pooled variance that is the spread of the units' time means.
    shared : ndarray, shape (n_draws,)
        Share of that spread common to the positions of one channel.
    radial : ndarray, shape (n_draws,)
        Share of the moving part and of the slopes along the layer's mean
        vector (:func:`radial_after_affine`); ``1 / n`` for ``n`` independent input units.
    channels, positions : int or None
        Independent weight rows of the last random affine block (output
        features or channels) and positions per channel now; None while the
        layer's units are not those of a random block (the input, given
        weights): the state then stays deterministic.
    """

    static: np.ndarray
    shared: np.ndarray
    radial: np.ndarray
    channels: int | None = None
    positions: int = 1

    @classmethod
    def of_inputs(cls, sigma, sigma_dot, length: float, n_units: int) -> "FiniteWidth":
        """The input layer: ``n_units`` independent smooth units, their time means over a path of ``length``.

        Independent units put ``1 / n_units`` of their slopes along any fixed
        direction, the mean vector included (the radial share).
        """
        static = path_static_share(sigma, sigma_dot, length)
        return cls(static, np.zeros_like(static), np.full_like(static, 1.0 / max(int(n_units), 1)))

    def step(self, block: str, params: Mapping[str, Any], state_in, state_out, rng: np.random.Generator,
             length: float):
        """Replace one block's mean-field output ``state_out = (mu, sigma, sigma_dot)`` by a realised one.

        Random affine blocks multiply the output's second moment and slope
        mean square by correlated log-normal factors of mean 1 with the
        variances of :func:`affine_fluctuation` (the mean stays the mean-field
        one); a (leaky) ReLU after a random block averages over the layer's
        units (:func:`rectifier_units`). Stages with given weights, and every
        stage before the first random affine block, stay deterministic.
        Updates the static share (random batch norm adds per-channel offsets;
        pooling and elementwise blocks keep it).

        Returns
        -------
        (mu, sigma, sigma_dot, kinks, carried) : arrays, shape (n_draws,)
            The realised output state, the factor on the block's new
            kinks relative to the pooled formula (1 except for rectifiers),
            and this network's factor on the kinks it carries, of mean 1: a
            random affine block maps slope jumps as it maps slopes (the
            square root of its slope factor), a rectifier passes them
            through the units that are on (its realised slope share over
            the population's); 1 for the other blocks.
        """
        mu_in, sigma_in, sdot_in = state_in
        mu, sigma, sdot = state_out
        ones = np.ones_like(np.asarray(mu, dtype=float))
        out_shape = params["out_shape"]
        out_shape = tuple(int(v) for v in (out_shape.strip("()").split(",") if isinstance(out_shape, str) else out_shape)
                          if str(v).strip())
        if block in ("linear", "conv1d", "conv2d"):
            if _given(params, _GIVEN_AFFINE):
                self.channels = None
                return mu, sigma, sdot, ones, ones
            rows = int(out_shape[-1]) if block == "linear" else int(out_shape[0])
            positions = 1 if block == "linear" else int(np.prod(out_shape[1:]))
            sw, sb = float(params["sigma_w"]), float(params.get("sigma_b", 0.0) or 0.0)
            var_q, var_d, cov = affine_fluctuation(mu_in, sigma_in, sdot_in, self.static, self.radial,
                                                   fan_in=int(params["fan_in"]), rows=rows, positions=positions,
                                                   sigma_w=sw, sigma_b=sb, length=length)
            f_q, f_d = _lognormal_pair(rng, var_q, var_d, cov)
            # unit means N(0, sw^2 (mu^2 + S) + sb^2): all static; the moving part scales by sw^2
            static_sq = sw**2 * (mu_in**2 + self.static * sigma_in**2) + sb**2
            channel_sq = sw**2 * mu_in**2 + sb**2  # the part from the input mean and the bias: one per channel
            moving = sw**2 * (1 - self.static) * sigma_in**2
            self.static = static_sq / np.maximum(static_sq + moving, 1e-300)
            self.shared = np.zeros_like(self.static) if block == "linear" else channel_sq / np.maximum(static_sq, 1e-300)
            self.channels, self.positions = rows, positions
            self.radial = radial_after_affine(self.radial, rows)
            second = (mu**2 + sigma**2) * f_q
            # a slope jump is mapped like a slope: by sqrt(f_d), over its mean exp(-log1p(var_d) / 8) (the kink
            # rules already give the expectation over networks)
            carried = np.sqrt(f_d) * np.exp(np.log1p(var_d) / 8)
            return mu, np.sqrt(np.maximum(second - mu**2, 0.0)), sdot * np.sqrt(f_d), ones, carried
        if block in ("relu", "leaky_relu", "prelu") and self.channels is not None:
            slope = 0.0 if block == "relu" else float(params["negative_slope"] if block == "leaky_relu"
                                                       else params["alpha"])
            mean_field_sdot = np.asarray(sdot, dtype=float)
            mu, sigma, sdot, self.static, kinks = rectifier_units(
                rng, mu_in, sigma_in, sdot_in, self.static, self.shared, self.radial, channels=self.channels,
                positions=self.positions, negative_slope=slope)
            # an older kink passes the units that are on: the realised share of slope over the population's
            carried = np.divide(sdot, mean_field_sdot, out=ones.copy(), where=mean_field_sdot > 0) ** 2
            return mu, sigma, sdot, kinks, carried
        if block == "batchnorm" and not _given(params, _GIVEN_BATCHNORM):
            gain2 = _BN_GAMMA2 * _BN_E_INV_VAR
            moving = gain2 * (1 - self.static) * sigma_in**2
            position_part = gain2 * self.static * (1 - self.shared) * sigma_in**2
            static_sq = np.maximum(sigma**2 - moving, 0.0)
            self.static = static_sq / np.maximum(sigma**2, 1e-300)
            self.shared = np.clip(1 - position_part / np.maximum(static_sq, 1e-300), 0.0, 1.0)
        elif block in ("maxpool1d", "maxpool2d", "avgpool1d", "avgpool2d") and len(out_shape) > 1:
            self.positions = int(np.prod(out_shape[1:]))
        return mu, sigma, sdot, ones, ones
