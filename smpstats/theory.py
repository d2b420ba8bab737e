"""Theory tier: expected SMP and output moments of single blocks (DESIGN §4).

Every function broadcasts over its arguments like a numpy ufunc and returns a
float for scalar input, else an array of the broadcast shape.

Notation (one unit's input signal ``x(t)`` along a path ``t in [0, T]``):

* ``mu``, ``sigma`` — mean and standard deviation of ``x(t)`` (input units);
* ``sigma_dot`` — root-mean-square of the slope ``x'(t)`` (input units per
  time unit); for a stationary squared-exponential process of length scale
  ``l``, ``sigma_dot = sigma / l``;
* ``length`` — path length ``T`` (time units);
* ``smp_in`` — SMP the input already carries over the path, *mean per input
  unit* (input units per time unit, summed over the path);
* ``phi``, ``Phi`` — standard normal pdf and cdf; ``a = mu / sigma``.

Assumptions shared by the SMP formulas: at each time the value ``x(t)`` is
``N(mu, sigma**2)`` and independent of the slope ``x'(t)`` (true for any
stationary Gaussian process), so Kac-Rice applies; the existing kinks of the
input fall at times independent of the smooth part and of each other
(distinct units never kink at the same time). Each formula is a mean; real
blocks (correlated neighbours, coincident kinks, trained weights) depart from
it, which is what the statistical tier models.

Every expected-SMP function is affine in ``smp_in``: the kinks a block creates
are ``f(..., smp_in=0)`` and the carried ones the rest.
"""

from __future__ import annotations

import functools
import math
import numbers
from typing import Any, Callable, NamedTuple

import numpy as np
from scipy import special

from .errors import InputError
from .kink_state import expected_chi

__all__ = [
    "OutputMoments",
    "relu_expected_smp",
    "leaky_relu_expected_smp",
    "prelu_expected_smp",
    "maxpool_expected_smp",
    "linear_expected_smp",
    "avgpool_expected_smp",
    "smooth_activation_expected_smp",
    "smooth_activation_gain",
    "SMOOTH_ACTIVATIONS",
    "relu_output_moments",
    "leaky_relu_output_moments",
    "max_output_moments",
    "max_input_moments",
    "max_after_rectifier_moments",
    "smooth_after_max_gains",
    "clark_max_moments",
    "linear_output_moments",
    "random_affine_kink_factor",
]

_SQRT2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)

# --------------------------------------------------------------------------- results


class OutputMoments(NamedTuple):
    """Mean-field moments of a block's output, unit by unit.

    A named tuple, so ``mu, sigma, sigma_dot = relu_output_moments(...)``
    works. Fields are floats for scalar input, else arrays of the broadcast
    shape.

    Attributes
    ----------
    mu : float or array
        Mean of the output (output units).
    sigma : float or array
        Standard deviation of the output (output units).
    sigma_dot : float or array or None
        Root-mean-square of the output's time derivative (output units per
        time unit); ``None`` where the inputs' slope statistics were not given.
    """

    mu: Any
    sigma: Any
    sigma_dot: Any = None

    def to_dict(self) -> dict[str, Any]:
        """Return ``{"mu": ..., "sigma": ..., "sigma_dot": ...}``."""
        return {"mu": self.mu, "sigma": self.sigma, "sigma_dot": self.sigma_dot}

    def to_frame(self):
        """Return a pandas DataFrame with one row per unit (broadcast, flattened)."""
        import pandas as pd

        fields = {k: v for k, v in self.to_dict().items() if v is not None}
        arrays = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in fields.values()))
        return pd.DataFrame({k: a.ravel() for k, a in zip(fields, arrays)})

    def summary(self) -> str:
        """Describe the moments in plain words and name the next step."""

        def describe(value) -> str:
            arr = np.asarray(value, dtype=np.float64)
            if arr.ndim == 0:
                return f"{float(arr):.4g}"
            return f"{arr.min():.4g} to {arr.max():.4g} over {arr.size} units"

        parts = [f"mean {describe(self.mu)}", f"std {describe(self.sigma)}"]
        if self.sigma_dot is not None:
            parts.append(f"slope RMS {describe(self.sigma_dot)}")
        nxt = (
            "feed mu, sigma and sigma_dot to the next block's theory function, e.g. "
            "relu_expected_smp(m.mu, m.sigma, m.sigma_dot, length)."
            if self.sigma_dot is not None
            else "pass the inputs' slope RMS (sigma_dot) as well to propagate it to the next block."
        )
        return (
            f"Output moments: {', '.join(parts)}. These are the first two moments "
            f"of a generally non-Gaussian output; the next block's formulas treat it "
            f"as Gaussian. Next: {nxt}"
        )


# ------------------------------------------------------------------------ validation


def _real_array(value: Any, name: str, *, minimum: float | None = None, strict: bool = False,
                maximum: float | None = None, strict_max: bool = False, hint: str = "") -> np.ndarray:
    """Return ``value`` as a float64 array of finite numbers in range, or raise InputError."""
    what = "finite real numbers"
    bounds = []
    if minimum is not None:
        bounds.append(f"{'>' if strict else '>='} {minimum:g}")
    if maximum is not None:
        bounds.append(f"{'<' if strict_max else '<='} {maximum:g}")
    if bounds:
        what += " " + " and ".join(bounds)
    try:
        arr = np.asarray(value)
    except Exception:  # ragged sequences and the like
        raise InputError(f"{name} must be a real number or an array of {what}; got {_short(value)}.") from None
    if arr.dtype == object or arr.dtype == bool or not np.issubdtype(arr.dtype, np.number) \
            or np.iscomplexobj(arr):
        raise InputError(
            f"{name} must be a real number or an array of {what}; got {_short(value)} (dtype {arr.dtype})."
        )
    arr = arr.astype(np.float64, copy=False)
    bad = ~np.isfinite(arr)
    if minimum is not None:
        bad |= (arr <= minimum) if strict else (arr < minimum)
    if maximum is not None:
        bad |= (arr >= maximum) if strict_max else (arr > maximum)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        where = f" at index {idx}" if arr.ndim else ""
        raise InputError(f"{name} must be {what}; got {float(arr[idx])!r}{where}.{hint}")
    return arr


def _int_array(value: Any, name: str, *, minimum: int) -> np.ndarray:
    """Return ``value`` as an int64 array of integers >= minimum (integral floats accepted)."""
    msg = f"{name} must be an int >= {minimum} (or an array of them)"
    try:
        arr = np.asarray(value)
    except Exception:
        raise InputError(f"{msg}; got {value!r}.") from None
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise InputError(f"{msg}; got {_short(value)} (dtype {arr.dtype}).")
    as_float = arr.astype(np.float64)
    bad = ~np.isfinite(as_float) | (as_float != np.round(as_float)) | (as_float < minimum)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        where = f" at index {idx}" if arr.ndim else ""
        raise InputError(f"{msg}; got {arr[idx].item()!r}{where}.")
    return as_float.astype(np.int64)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _broadcast(names: tuple[str, ...], *arrays: np.ndarray) -> list[np.ndarray]:
    try:
        return list(np.broadcast_arrays(*arrays))
    except ValueError:
        shapes = ", ".join(f"{n} {a.shape}" for n, a in zip(names, arrays))
        raise InputError(
            f"The arguments cannot be broadcast together (shapes: {shapes}); "
            "give them equal shapes or shapes that numpy can broadcast."
        ) from None


def _check_constant_inputs(sigma: np.ndarray, sigma_dot: np.ndarray) -> None:
    bad = (sigma == 0) & (sigma_dot != 0)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        where = f" at index {idx}" if sigma.ndim else ""
        raise InputError(
            f"sigma_dot must be 0 where sigma is 0 (an input with zero variance is constant, "
            f"so its slope is 0); got sigma_dot={float(sigma_dot[idx])!r} with sigma=0{where}."
        )


def _out(x: np.ndarray):
    """Return a Python float for 0-d results, else the array."""
    x = np.asarray(x, dtype=np.float64)
    return float(x) if x.ndim == 0 else x


def _standardise(mu: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """Return ``a = mu / sigma``, with ``+-inf`` (or 0 for mu = 0) where sigma is 0."""
    safe = np.where(sigma > 0, sigma, 1.0)
    with np.errstate(over="ignore"):  # |a| beyond 1e308 is +-inf, the right limit
        a = mu / safe
    return np.where(sigma > 0, a, np.where(mu > 0, np.inf, np.where(mu < 0, -np.inf, 0.0)))


# ------------------------------------------------------------------- Gaussian helpers


def _kac_rice_density(a: np.ndarray, sigma: np.ndarray, sigma_dot: np.ndarray) -> np.ndarray:
    """``sigma_dot**2 * phi(a) / sigma`` per time unit; 0 for a constant input (sigma = 0)."""
    ok = (sigma > 0) & np.isfinite(a)
    safe = np.where(ok, sigma, 1.0)
    a_safe = np.where(ok, a, 0.0)
    with np.errstate(over="ignore", under="ignore"):
        dens = sigma_dot**2 * _INV_SQRT_2PI * np.exp(-0.5 * a_safe**2) / safe
    return np.where(ok, dens, 0.0)


#: Below this a = mu / sigma, rectified moments use Laplace's continued fraction.
_CF_THRESHOLD = -3.0
_CF_TERMS = 60


def _rectified_standard(a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Moments of ``max(a + Z, 0)``, Z ~ N(0, 1): returns (Phi(a), mean, variance).

    Stable for all finite a: for a < -3 the mean ``phi(a) + a Phi(a)`` and the
    variance cancel catastrophically, so they are written with Laplace's
    continued fraction for Mills' ratio, ``Phi(-b)/phi(b) = 1/(b + 1/C1)``,
    ``C_n = b + (n + 1)/C_{n+1}``: mean = Phi(a)/C1, second moment =
    2 Phi(a)/(C1 C2) (60 terms: machine precision for b >= 3). For a >= -3
    the variance is written with ``Q = Phi(-a)`` so that it stays accurate
    when a is large. Non-finite a gives mean and variance 0 (callers take
    the limit themselves).
    """
    a = np.asarray(a, dtype=np.float64)
    P = special.ndtr(a)
    Q = special.ndtr(-a)
    finite = np.isfinite(a)
    # Beyond |a| = 40, phi(a) and Phi(-|a|) are below 1e-300: mean = max(a, 0), variance 1 or 0.
    af = np.clip(np.where(finite, a, 0.0), -40.0, 40.0)
    with np.errstate(under="ignore"):
        p = _INV_SQRT_2PI * np.exp(-0.5 * af**2)
    mean = np.array(np.where(a > 40.0, a, p + af * P), dtype=np.float64)
    var = np.array(P + af**2 * P * Q + af * p * (Q - P) - p**2, dtype=np.float64)
    low = finite & (a < _CF_THRESHOLD)
    if low.any():
        b = np.minimum(-a[low], 1e6)  # Phi(a) is 0 there anyway; avoids overflow in C1 C2
        c_next = b.copy()
        c1 = c2 = b
        for n in range(_CF_TERMS, 0, -1):
            c = b + (n + 1) / c_next
            if n == 2:
                c2 = c
            elif n == 1:
                c1 = c
            c_next = c
        Pl = P[low]
        mean[low] = Pl / c1
        var[low] = Pl * (2.0 / (c1 * c2) - Pl / c1**2)
    mean = np.where(finite, mean, 0.0)
    var = np.where(finite, np.clip(var, 0.0, None), 0.0)
    return P, mean, var


#: Trapezoid grid in z for integrals against phi(z): spectrally accurate for
#: these analytic, fast-decaying integrands (checked against closed forms).
_Z_STEP = 0.02
_Z = np.arange(-14.0, 22.0 + _Z_STEP / 2, _Z_STEP)
_Z_WEIGHT = _Z_STEP * _INV_SQRT_2PI * np.exp(-0.5 * _Z**2)
_LOG_PHI_Z = special.log_ndtr(_Z)
_LOG_PHI_Z_HALF = special.log_ndtr(_Z / _SQRT2)


def _by_unique_k(k: np.ndarray, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Evaluate ``fn`` (column vector of unique k -> values) and scatter back to ``k``'s shape."""
    uniq, inverse = np.unique(k, return_inverse=True)
    vals = np.empty(uniq.shape, dtype=np.float64)
    step = 256
    for start in range(0, uniq.size, step):
        vals[start:start + step] = fn(uniq[start:start + step, None].astype(np.float64))
    return vals[inverse].reshape(k.shape)


def _max_normal_moments(k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """E[M] and E[M**2] for M the maximum of k i.i.d. N(0, 1) (k >= 1)."""

    def first(kk):
        dens = kk * np.exp((kk - 1) * _LOG_PHI_Z)
        return (dens * _Z * _Z_WEIGHT).sum(-1)

    def second(kk):
        dens = kk * np.exp((kk - 1) * _LOG_PHI_Z)
        return (dens * _Z**2 * _Z_WEIGHT).sum(-1)

    return _by_unique_k(k, first), _by_unique_k(k, second)


def _switch_factor(k: np.ndarray) -> np.ndarray:
    """``E[Phi(Z / sqrt 2)**(k - 2)]``, Z ~ N(0, 1), for k >= 2 (0 for k < 2).

    The probability that k - 2 other i.i.d. units lie below the common value
    of two units that cross. Closed forms: 1 (k = 2), 1/2 (k = 3),
    1/4 + asin(1/3)/(2 pi) (k = 4).
    """

    def fn(kk):
        return (np.exp(np.maximum(kk - 2, 0) * _LOG_PHI_Z_HALF) * _Z_WEIGHT).sum(-1)

    return np.where(k >= 2, _by_unique_k(k, fn), 0.0)


# ----------------------------------------------------------------------- ReLU family


def relu_expected_smp(mu, sigma, sigma_dot, length, smp_in=0.0):
    r"""Expected SMP of ``relu(x(t))`` over a path (Kac-Rice plus surviving kinks).

    .. math::

        E[S_{out}] = \Phi(a)\, S_{in} + T\, \frac{\dot\sigma^2}{\sigma}\, \phi(a),
        \qquad a = \mu / \sigma .

    *New kinks*: ReLU kinks where ``x`` crosses 0, with slope jump ``|x'|``.
    By the Kac-Rice formula the expected sum of ``|x'|`` over the zeros of
    ``x`` in ``[0, T]`` is ``T E[x'^2] p_x(0) = T sigma_dot**2 phi(a) / sigma``,
    whenever ``x(t) ~ N(mu, sigma**2)`` is independent of ``x'(t)`` (any
    stationary Gaussian process; ``x'`` itself need not be Gaussian).
    *Carried kinks*: an input kink of slope jump ``J`` passes unchanged where
    ``x > 0`` and vanishes where ``x < 0``: a fraction ``Phi(a)`` survives
    when kink times are independent of the smooth part.

    Parameters
    ----------
    mu : float or array
        Mean of the input (input units).
    sigma : float or array, >= 0
        Standard deviation of the input (input units). ``sigma = 0`` means a
        constant input (then ``sigma_dot`` must be 0): no new kinks.
    sigma_dot : float or array, >= 0
        RMS slope of the input (input units per time unit); ``sigma / l`` for
        a squared-exponential process of length scale ``l``.
    length : float or array, >= 0
        Path length ``T`` (time units).
    smp_in : float or array, >= 0, default=0.0
        SMP already in the input over the path (input units per time unit).

    Returns
    -------
    float or array of the broadcast shape
        Expected SMP of the output over the path (output units per time unit).

    Notes
    -----
    Limits: ``a -> +inf`` gives ``S_in`` (ReLU is the identity, no crossings);
    ``a -> -inf`` gives 0; ``sigma_dot = 0`` gives no new kinks.
    """
    return _leaky_relu_expected_smp(mu, sigma, sigma_dot, length, smp_in, None)


def leaky_relu_expected_smp(mu, sigma, sigma_dot, length, smp_in=0.0, negative_slope=0.01):
    r"""Expected SMP of ``leaky_relu(x(t))`` (slope 1 for x > 0, ``alpha`` for x < 0).

    .. math::

        E[S_{out}] = \left[\Phi(a) + |\alpha|\,(1 - \Phi(a))\right] S_{in}
                     + |1 - \alpha|\; T\, \frac{\dot\sigma^2}{\sigma}\, \phi(a).

    At a zero crossing the slope jumps from ``alpha x'`` to ``x'`` (or back),
    a jump of ``|1 - alpha| |x'|``: the ReLU Kac-Rice term times
    ``|1 - alpha|``. An input kink ``J`` becomes ``J`` where ``x > 0``
    (probability ``Phi(a)``) and ``alpha J`` where ``x < 0``. ``alpha = 0`` is
    ReLU, ``alpha = 1`` the identity. Use the same function for PReLU with its
    learned slope (:func:`prelu_expected_smp` is an alias); any real alpha is
    allowed (hence the absolute values).

    Parameters
    ----------
    mu, sigma, sigma_dot, length, smp_in
        As in :func:`relu_expected_smp`.
    negative_slope : float or array, default=0.01
        ``alpha``, the slope for negative inputs (torch's ``negative_slope``).

    Returns
    -------
    float or array of the broadcast shape
        Expected SMP of the output over the path (output units per time unit).
    """
    return _leaky_relu_expected_smp(mu, sigma, sigma_dot, length, smp_in, negative_slope)


def _leaky_relu_expected_smp(mu, sigma, sigma_dot, length, smp_in, negative_slope):
    """Shared body; ``negative_slope=None`` is ReLU (alpha = 0, not listed in messages)."""
    names = ("mu", "sigma", "sigma_dot", "length", "smp_in", "negative_slope")
    arrays = [
        _real_array(mu, "mu"),
        _real_array(sigma, "sigma", minimum=0.0),
        _real_array(sigma_dot, "sigma_dot", minimum=0.0),
        _real_array(length, "length", minimum=0.0),
        _real_array(smp_in, "smp_in", minimum=0.0),
    ]
    if negative_slope is not None:
        arrays.append(_real_array(negative_slope, "negative_slope"))
    mu, sigma, sigma_dot, length, smp_in, *rest = _broadcast(names[:len(arrays)], *arrays)
    alpha = rest[0] if rest else np.zeros_like(mu)
    _check_constant_inputs(sigma, sigma_dot)
    a = _standardise(mu, sigma)
    P = special.ndtr(a)
    new = np.abs(1.0 - alpha) * length * _kac_rice_density(a, sigma, sigma_dot)
    carried = (P + np.abs(alpha) * (1.0 - P)) * smp_in
    return _out(new + carried)


def prelu_expected_smp(mu, sigma, sigma_dot, length, smp_in=0.0, weight=0.25):
    """Expected SMP of PReLU with slope ``weight`` for negative inputs.

    Same formula as :func:`leaky_relu_expected_smp` with ``negative_slope =
    weight`` (torch's PReLU default initial weight is 0.25).
    """
    return leaky_relu_expected_smp(mu, sigma, sigma_dot, length, smp_in, negative_slope=weight)


def relu_output_moments(mu, sigma, sigma_dot=None) -> OutputMoments:
    r"""Mean, std and RMS slope of ``relu(x)`` for ``x ~ N(mu, sigma**2)``.

    Rectified Gaussian, with ``a = mu / sigma``:

    .. math::

        \mu_{out} = \mu \Phi(a) + \sigma \phi(a), \qquad
        E[y^2] = (\mu^2 + \sigma^2) \Phi(a) + \mu \sigma \phi(a), \qquad
        \dot\sigma_{out}^2 = \dot\sigma^2 \Phi(a),

    the last because ``y' = x' 1[x > 0]`` with ``x'`` independent of ``x``.
    Computed stably for any ``a`` (continued fraction in the far left tail).

    Parameters
    ----------
    mu : float or array
        Input mean.
    sigma : float or array, >= 0
        Input standard deviation (0: constant input, output ``relu(mu)``).
    sigma_dot : float or array, >= 0, optional
        Input RMS slope (per time unit). Omit it to get ``sigma_dot=None``.

    Returns
    -------
    OutputMoments
        ``(mu, sigma, sigma_dot)`` of the output, broadcast shape.
    """
    return leaky_relu_output_moments(mu, sigma, sigma_dot, negative_slope=0.0)


def leaky_relu_output_moments(mu, sigma, sigma_dot=None, negative_slope=0.01) -> OutputMoments:
    r"""Mean, std and RMS slope of ``leaky_relu(x)``, ``x ~ N(mu, sigma**2)``.

    With ``y = (1 - alpha) relu(x) + alpha x``, ``m, v`` the mean and
    variance of ``relu(x)`` and Stein's identity ``Cov(relu(x), x) =
    sigma**2 Phi(a)``:

    .. math::

        \mu_{out} = (1 - \alpha) m + \alpha \mu, \qquad
        \sigma_{out}^2 = (1 - \alpha)^2 v + \alpha^2 \sigma^2
                         + 2 \alpha (1 - \alpha) \sigma^2 \Phi(a), \qquad
        \dot\sigma_{out}^2 = \dot\sigma^2 [\Phi(a) + \alpha^2 (1 - \Phi(a))].

    Parameters
    ----------
    mu, sigma, sigma_dot
        As in :func:`relu_output_moments`.
    negative_slope : float or array, default=0.01
        ``alpha``, the slope for negative inputs (any real; PReLU weight).

    Returns
    -------
    OutputMoments
    """
    have_dot = sigma_dot is not None
    names = ("mu", "sigma", "sigma_dot", "negative_slope")
    arrays = [
        _real_array(mu, "mu"),
        _real_array(sigma, "sigma", minimum=0.0),
        _real_array(0.0 if not have_dot else sigma_dot, "sigma_dot", minimum=0.0),
        _real_array(negative_slope, "negative_slope"),
    ]
    mu, sigma, sigma_dot, alpha = _broadcast(names, *arrays)
    _check_constant_inputs(sigma, sigma_dot)
    a = _standardise(mu, sigma)
    P, m_std, v_std = _rectified_standard(a)
    # |a| = inf (sigma = 0, or mu / sigma beyond float range): relu(x) is 0 or x itself.
    finite = np.isfinite(a)
    m = np.where(finite, sigma * m_std, np.maximum(mu, 0.0))
    v = np.where(finite, sigma**2 * v_std, np.where(a > 0, sigma**2, 0.0))
    mean = (1.0 - alpha) * m + alpha * mu
    var = (1.0 - alpha) ** 2 * v + alpha**2 * sigma**2 + 2.0 * alpha * (1.0 - alpha) * sigma**2 * P
    dot = sigma_dot * np.sqrt(P + alpha**2 * (1.0 - P))
    return OutputMoments(_out(mean), _out(np.sqrt(np.clip(var, 0.0, None))), _out(dot) if have_dot else None)


# -------------------------------------------------------------------------- max pool


def maxpool_expected_smp(k, mu, sigma, sigma_dot, length, smp_in=0.0, *, rho=0.0, rho_dot=None):
    r"""Expected SMP of the maximum of ``k`` exchangeable Gaussian inputs.

    .. math::

        E[S_{out}] = S_{in} + \binom{k}{2}\, T\,
            \frac{2 \dot\sigma^2 (1 - \rho')}{\sqrt{2 (1 - \rho)}\,\sigma\sqrt{2\pi}}\;
            E_V\!\left[\Phi\!\left(\frac{V - \mu}{\sigma}\right)^{k-2}\right],
        \qquad V \sim N(\mu, \sigma^2 / 2),

    which for i.i.d. inputs (``rho = rho' = 0``) is the DESIGN formula,
    ``C(k, 2) T sigma_dot**2 c_k / (sigma sqrt(pi))`` with
    ``c_k = E[Phi(Z / sqrt 2)**(k - 2)]`` (``c_2 = 1``, ``c_3 = 1/2``,
    ``c_4 = 1/4 + asin(1/3)/(2 pi)``). ``mu`` drops out (the max is shift
    equivariant).

    *New kinks* (derivation): the output switches from unit ``i`` to ``j``
    where ``D = x_i - x_j`` crosses 0 while the other ``k - 2`` units lie
    below the common value ``V = (x_i + x_j) / 2``; the kink is
    ``|x_i' - x_j'| = |D'|``. Kac-Rice on ``D`` (std ``sqrt(2(1-rho)) sigma``,
    slope RMS ``sqrt(2(1-rho')) sigma_dot``) with ``D'`` independent of all
    values at the same time, and ``V`` independent of ``D`` (equal
    variances) gives ``T E[D'^2] p_D(0) P(others < V)`` per pair. For
    correlated inputs we assume the factor model ``x_i = sqrt(rho) W +
    sqrt(1 - rho) u_i`` (``u_i`` i.i.d.), whose common part cancels in every
    comparison, so ``P(others < V)`` is the i.i.d. ``c_k``.

    *Carried kinks*: the output's slope is that of the current maximum, so
    each unit's kinks pass (unchanged) while it is the maximum, a fraction
    ``1/k`` of the time for exchangeable units. Summed over the ``k`` units:
    ``k * (1/k) * smp_in = smp_in``, where ``smp_in`` is the mean SMP *per
    input unit*. (If you hold the window's total input SMP, divide it by k.)

    Parameters
    ----------
    k : int or array of int, >= 1
        Number of inputs in the pooling window (e.g. 4 for a 2x2 window).
    mu : float or array
        Input mean (does not change the result; broadcast only).
    sigma : float or array, > 0
        Input standard deviation.
    sigma_dot : float or array, >= 0
        Input RMS slope (per time unit).
    length : float or array, >= 0
        Path length ``T`` (time units).
    smp_in : float or array, >= 0, default=0.0
        Mean SMP per input unit over the path.
    rho : float or array in [0, 1), default=0.0
        Common correlation of the inputs' values (neighbouring pixels of a
        smooth image are positively correlated: fewer switches).
    rho_dot : float or array in [0, 1], optional
        Common correlation of the inputs' slopes; defaults to ``rho`` (units
        sharing one covariance shape, e.g. one SE length scale). The new-kink
        term scales by ``(1 - rho_dot) / sqrt(1 - rho)``.

    Returns
    -------
    float or array of the broadcast shape
        Expected SMP of the pooled output over the path (output units per time
        unit).
    """
    k = _int_array(k, "k", minimum=1)
    names = ("k", "mu", "sigma", "sigma_dot", "length", "smp_in", "rho", "rho_dot")
    rho_arr = _real_array(rho, "rho", minimum=0.0, maximum=1.0, strict_max=True,
                          hint=" Identical inputs (rho = 1) never switch; the pooled output is then one input.")
    rho_dot_arr = rho_arr if rho_dot is None else _real_array(rho_dot, "rho_dot", minimum=0.0, maximum=1.0)
    arrays = [
        k,
        _real_array(mu, "mu"),
        _real_array(sigma, "sigma", minimum=0.0, strict=True,
                    hint=" Identical constant inputs never switch; for a constant input the pooled SMP is smp_in."),
        _real_array(sigma_dot, "sigma_dot", minimum=0.0),
        _real_array(length, "length", minimum=0.0),
        _real_array(smp_in, "smp_in", minimum=0.0),
        rho_arr,
        rho_dot_arr,
    ]
    k, mu, sigma, sigma_dot, length, smp_in, rho_arr, rho_dot_arr = _broadcast(names, *arrays)
    pairs = k * (k - 1) / 2.0
    per_pair = (
        2.0 * sigma_dot**2 * (1.0 - rho_dot_arr)
        / (np.sqrt(2.0 * (1.0 - rho_arr)) * sigma * math.sqrt(2.0 * math.pi))
    )
    new = pairs * length * per_pair * _switch_factor(k)
    return _out(new + smp_in)


_RECT_A = np.linspace(-8.0, 8.0, 4001)
_RECT_CDF = special.ndtr(_RECT_A)
_RECT_PDF = np.exp(-_RECT_A**2 / 2) / math.sqrt(2 * math.pi)
_RECT_M = _RECT_A * _RECT_CDF + _RECT_PDF  # E relu(x) / sigma
_RECT_Q = (_RECT_A**2 + 1) * _RECT_CDF + _RECT_A * _RECT_PDF  # E relu(x)**2 / sigma**2


def random_affine_kink_factor(fan_in, static=0.0):
    r"""New kinks of a ReLU (or max pool) after a random affine block, relative to the pooled formula.

    Unit ``j`` of a linear or conv block with i.i.d. normal weights ``w_j``
    (``n = fan_in`` per unit, zero mean) over independent inputs has time
    mean ``c_j = w_j . m`` and variance ``v_j = |w_j|^2 v``: both come from
    the same weights. The pooled formula takes ``E v_j`` and the spread of
    the ``c_j`` (a share ``rho = static`` of the pooled variance), but the
    Kac-Rice SMP of the unit, ``sigma_dot_j**2 phi(c_j / sqrt(v_j)) /
    sqrt(v_j)`` with ``sigma_dot_j**2 / v_j`` the same for all units, is
    concave in ``|w_j|^2``, and ``c_j / sqrt(v_j)`` is t-like (a small
    ``|w_j|`` makes it large). With ``z = w_j . m / (|m| s)``, ``q = |w_j|^2 /
    (n s^2)`` (``s`` the weight std; ``n q - z**2 ~ chi2_{n-1}``, independent of ``z``):

    .. math::

        K(n, \rho) = \frac{E\left[\sqrt{q}\, \exp\!\left(-\frac{\rho\, z^2}{2 (1 - \rho)\, q}\right)\right]}{\sqrt{1 - \rho}}.

    The two factors are independent: ``n q ~ chi2_n`` and ``u = z**2 / (n q)
    ~ Beta(1/2, (n - 1)/2)``, so with Kummer's function ``M`` (the Beta's
    moment generating function)

    .. math::

        K(n, \rho) = \frac{E\sqrt{\chi^2_n}}{\sqrt{n}}\,
            \frac{M\!\left(\tfrac12, \tfrac n2, -\frac{n \rho}{2 (1 - \rho)}\right)}{\sqrt{1 - \rho}}.

    ``K(n, 0) = E sqrt(chi2_n) / sqrt(n)`` (0.969 at ``n = 8``); the static
    share lowers it further (0.935 at ``n = 8``, ``rho = 0.6``); ``K -> 1``
    as ``n`` grows. A max pool's switching kinks within one channel scale
    with the channel's weight norm alone: ``K(n, 0)``.

    Parameters
    ----------
    fan_in : int or array of int, >= 1
        Inputs per unit of the affine block (a conv's in_channels times its kernel size).
    static : float or array, default=0.0
        Share of the units' pooled variance that is the spread of their time means, in [0, 1].

    Returns
    -------
    float or array of the broadcast shape, in (0, 1]
    """
    n = _int_array(fan_in, "fan_in", minimum=1)
    rho = _real_array(static, "static", minimum=0.0, maximum=1.0)
    n, rho = _broadcast(("fan_in", "static"), n, rho)
    n, rho = n.astype(float), np.minimum(rho, 0.999)  # finite at rho = 1 (units that never move)
    norm = expected_chi(n) / np.sqrt(n)
    return _out(norm * special.hyp1f1(0.5, n / 2, -n * rho / (2 * (1 - rho))) / np.sqrt(1 - rho))


def relu_preactivation(mean, std, sigma_dot, negative_slope=0.0):
    """Invert ReLU's (or LeakyReLU's) moments: ``(mu, sigma, sigma_dot)`` of the Gaussian ``x`` whose
    ``relu(x)`` (``leaky_relu(x)`` with this ``negative_slope`` in [0, 1)) has these.

    ``E relu(x) = sigma m(a)``, ``E relu(x)**2 = sigma**2 q(a)``, ``a = mu / sigma``,
    with ``m = a Phi(a) + phi(a)`` and ``q = (a**2 + 1) Phi(a) + a phi(a)``;
    ``leaky_relu(x) = relu(x) - s relu(-x)`` has mean ``sigma (m(a) - s m(-a))``
    and mean square ``sigma**2 (q(a) + s**2 q(-a))``. ``mean / std`` is
    increasing in ``a`` and is inverted on a table of ``a`` in [-8, 8]; the
    RMS slope of the output is ``sqrt(Phi(a) + s**2 Phi(-a)) sigma_dot``.
    Arrays broadcast; ``std`` > 0.
    """
    mean, std, sigma_dot = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (mean, std, sigma_dot)))
    s = float(negative_slope)
    if not 0.0 <= s < 1.0:
        raise InputError(f"negative_slope must lie in [0, 1) to invert the moments; got {negative_slope!r}.")
    m = _RECT_M - s * _RECT_M[::-1]  # m(-a) is m reversed on the symmetric table
    var = _RECT_Q + s**2 * _RECT_Q[::-1] - m**2
    ratio = m / np.sqrt(np.maximum(var, 1e-300))
    a = np.interp(mean / np.maximum(std, 1e-300), ratio, _RECT_A)
    sigma = std / np.sqrt(np.interp(a, _RECT_A, var))
    cdf = special.ndtr(a)
    return a * sigma, sigma, sigma_dot / np.sqrt(cdf + s**2 * (1.0 - cdf))


#: 64-point Gauss-Hermite nodes and normalised weights of :func:`maxpool_after_relu_terms` (computed once).
_SWITCH_Z, _SWITCH_W = np.polynomial.hermite_e.hermegauss(64)
_SWITCH_W = _SWITCH_W / _SWITCH_W.sum()


def maxpool_after_relu_terms(k, mu, sigma, sigma_dot, length, negative_slope=0.0):
    r"""SMP terms of ``maxpool(relu(x))`` (or of ``maxpool(leaky_relu(x))``) for ``k`` i.i.d. Gaussian
    pre-activations ``N(mu, sigma**2)``.

    ``max(relu(x_i)) = relu(max(x_i))``, and the same for any increasing
    activation: the output switches between units at full size where the
    common value is positive (times the slope ``s`` where it is negative),
    and a unit's own kink at 0 passes only where the other ``k - 1`` units
    are negative. Returns a tuple

    * ``new``: switching kinks, ``C(k, 2) T 2 sigma_dot**2 / (sqrt 2 sigma
      sqrt(2 pi)) E[Phi((V - mu)/sigma)**(k-2) (1{V > 0} + s 1{V < 0})]``,
      ``V ~ N(mu, sigma**2 / 2)``;
    * ``pass_new``: share of the activation's new kinks (per unit) carried
      per output unit, ``k Phi(-a)**(k-1)``;
    * ``pass_old``: share of the older kinks that survived the activation
      carried, ``(1 - Phi(-a)**k + s Phi(-a)**k) / (Phi(a) + s Phi(-a))``
      (the current maximum's kinks, at full size while it is positive).
    """
    k, mu, sigma, sigma_dot, length = np.broadcast_arrays(
        *(np.asarray(v, dtype=float) for v in (k, mu, sigma, sigma_dot, length)))
    s = float(negative_slope)
    a = mu / sigma
    z, w = _SWITCH_Z, _SWITCH_W
    v = mu[..., None] + sigma[..., None] * z / math.sqrt(2)  # the common value of two crossing units
    size = np.where(v > 0, 1.0, s)
    switch = ((special.ndtr(z / math.sqrt(2)) ** np.maximum(k[..., None] - 2, 0)) * size * w).sum(-1)
    pairs = k * (k - 1) / 2
    new = pairs * length * 2 * sigma_dot**2 / (math.sqrt(2) * sigma * math.sqrt(2 * math.pi)) * switch
    phi_neg = special.ndtr(-a)
    pass_new = k * phi_neg ** (k - 1)
    pass_old = np.divide(1 - phi_neg**k + s * phi_neg**k, 1 - phi_neg + s * phi_neg, out=np.ones_like(a),
                         where=(1 - phi_neg + s * phi_neg) > 0)
    return new, pass_new, pass_old


def max_output_moments(k, mu, sigma, sigma_dot=None) -> OutputMoments:
    r"""Mean, std and RMS slope of the maximum of ``k`` i.i.d. ``N(mu, sigma**2)`` inputs.

    ``max = mu + sigma M_k`` with ``M_k`` the maximum of k standard normals,
    whose moments ``E[M_k^n] = int z^n k phi(z) Phi(z)^(k-1) dz`` are computed
    by quadrature (exact to ~1e-14; ``E[M_2] = 1/sqrt(pi)``,
    ``E[M_3] = 3 / (2 sqrt(pi))``). The output slope is the slope of the
    current maximum, and a stationary unit's slope is independent of all
    values at the same time, so ``sigma_dot_out = sigma_dot`` exactly.

    Parameters
    ----------
    k : int or array of int, >= 1
        Number of inputs.
    mu : float or array
        Input mean.
    sigma : float or array, >= 0
        Input standard deviation.
    sigma_dot : float or array, >= 0, optional
        Input RMS slope (per time unit).

    Returns
    -------
    OutputMoments
    """
    have_dot = sigma_dot is not None
    k = _int_array(k, "k", minimum=1)
    names = ("k", "mu", "sigma", "sigma_dot")
    arrays = [k, _real_array(mu, "mu"), _real_array(sigma, "sigma", minimum=0.0),
              _real_array(0.0 if not have_dot else sigma_dot, "sigma_dot", minimum=0.0)]
    k, mu, sigma, sigma_dot = _broadcast(names, *arrays)
    _check_constant_inputs(sigma, sigma_dot)
    e1, e2 = _max_normal_moments(k)
    mean = mu + sigma * e1
    std = sigma * np.sqrt(np.clip(e2 - e1**2, 0.0, None))
    return OutputMoments(_out(mean), _out(std), _out(sigma_dot) if have_dot else None)


def clark_max_moments(mu1, sigma1, mu2, sigma2, rho=0.0, sigma_dot1=None, sigma_dot2=None) -> OutputMoments:
    r"""Clark's (1961) exact first two moments of ``max(X1, X2)`` for bivariate normals.

    With ``theta = sqrt(sigma1**2 + sigma2**2 - 2 rho sigma1 sigma2)`` and
    ``alpha = (mu1 - mu2) / theta``:

    .. math::

        E[\max] = \mu_1 \Phi(\alpha) + \mu_2 \Phi(-\alpha) + \theta \phi(\alpha),

        E[\max^2] = (\mu_1^2 + \sigma_1^2) \Phi(\alpha) + (\mu_2^2 + \sigma_2^2) \Phi(-\alpha)
                    + (\mu_1 + \mu_2) \theta \phi(\alpha).

    ``theta = 0`` (identical up to a shift) gives the larger-mean input.
    The slope RMS, when both ``sigma_dot1`` and ``sigma_dot2`` are given, is
    ``sqrt(sigma_dot1**2 Phi(alpha) + sigma_dot2**2 Phi(-alpha))``: it assumes
    the slopes are independent of the values at the same time (true for
    jointly stationary Gaussian processes with symmetric cross-covariance).

    Parameters
    ----------
    mu1, sigma1, mu2, sigma2 : float or array
        Means and standard deviations (>= 0) of the two inputs.
    rho : float or array in [-1, 1], default=0.0
        Correlation of the two inputs.
    sigma_dot1, sigma_dot2 : float or array, >= 0, optional
        RMS slopes of the two inputs (per time unit).

    Returns
    -------
    OutputMoments
        The max is not Gaussian; these are its exact mean and std.
    """
    have_dot = sigma_dot1 is not None or sigma_dot2 is not None
    if have_dot and (sigma_dot1 is None or sigma_dot2 is None):
        raise InputError(
            "sigma_dot1 and sigma_dot2 must be given together; got only "
            f"{'sigma_dot1' if sigma_dot2 is None else 'sigma_dot2'}."
        )
    rho_arr = _real_array(rho, "rho", minimum=-1.0, maximum=1.0)
    names = ("mu1", "sigma1", "mu2", "sigma2", "rho", "sigma_dot1", "sigma_dot2")
    arrays = [
        _real_array(mu1, "mu1"), _real_array(sigma1, "sigma1", minimum=0.0),
        _real_array(mu2, "mu2"), _real_array(sigma2, "sigma2", minimum=0.0), rho_arr,
        _real_array(0.0 if sigma_dot1 is None else sigma_dot1, "sigma_dot1", minimum=0.0),
        _real_array(0.0 if sigma_dot2 is None else sigma_dot2, "sigma_dot2", minimum=0.0),
    ]
    mu1, s1, mu2, s2, r, d1, d2 = _broadcast(names, *arrays)
    theta = np.sqrt(np.clip(s1**2 + s2**2 - 2.0 * r * s1 * s2, 0.0, None))
    alpha = _standardise(mu1 - mu2, theta)
    P1 = special.ndtr(alpha)
    P2 = special.ndtr(-alpha)
    # Beyond |alpha| = 40 the max is the larger-mean input to within 1e-300.
    far = ~(np.abs(alpha) <= 40.0)
    af = np.where(far, 0.0, alpha)
    with np.errstate(over="ignore", invalid="ignore"):
        dens = np.where(far | (theta == 0), 0.0, theta * _INV_SQRT_2PI * np.exp(-0.5 * af**2))
        m1 = mu1 * P1 + mu2 * P2 + dens
        # Variance written around mu2 for accuracy: max - mu2 = max(X1 - mu2, X2 - mu2).
        c1 = mu1 - mu2
        m2c = (c1**2 + s1**2) * P1 + s2**2 * P2 + c1 * dens
        var = m2c - (c1 * P1 + dens) ** 2
    first = alpha > 0
    m1 = np.where(far, np.where(first, mu1, mu2), m1)
    var = np.where(far, np.where(first, s1**2, s2**2), var)
    std = np.sqrt(np.clip(var, 0.0, None))
    dot = np.sqrt(d1**2 * P1 + d2**2 * P2)
    return OutputMoments(_out(m1), _out(std), _out(dot) if have_dot else None)


# ------------------------------------------------------------------- affine blocks


def linear_expected_smp(weights_l1, smp_in):
    r"""Expected SMP of an affine unit ``y = sum_i w_i x_i + b`` (also conv).

    .. math:: S_{out} = \sum_i |w_i| S_{in,i} = \|w\|_1 \, \bar S_{in}

    An affine map creates no kinks. When the inputs' kinks fall at distinct
    times (independent units), each kink ``J`` of input ``i`` appears in the
    output as ``w_i J``, so the first equality holds exactly, path by path;
    with kinks i.i.d. across inputs and independent of the weights, its mean
    is ``||w||_1`` times the mean per-unit input SMP. Kinks that coincide (one
    upstream unit feeding several inputs) can cancel: then it is an upper
    bound.

    Parameters
    ----------
    weights_l1 : float or array, >= 0
        L1 norm of the unit's weights, ``sum_i |w_i|`` (for a convolution, over
        input channels and kernel positions). For a weight matrix ``W`` of
        shape (n_out, n_in) pass ``np.abs(W).sum(-1)``; with per-input SMP
        values use ``np.abs(W) @ smp_per_input`` directly.
    smp_in : float or array, >= 0
        Mean SMP per input unit over the path.

    Returns
    -------
    float or array of the broadcast shape
    """
    w, s = _broadcast(("weights_l1", "smp_in"),
                      _real_array(weights_l1, "weights_l1", minimum=0.0,
                                  hint=" Pass the L1 norm sum(|w|), e.g. np.abs(W).sum(-1)."),
                      _real_array(smp_in, "smp_in", minimum=0.0))
    return _out(w * s)


def avgpool_expected_smp(k, smp_in):
    r"""Expected SMP of average pooling over ``k`` inputs: ``S_out = smp_in``.

    The output ``(1/k) sum_i x_i`` carries each input kink scaled by ``1/k``;
    with kinks at distinct times, ``S_out = (1/k) sum_i S_in,i``, whose mean is
    the mean per-unit input SMP whatever ``k``. No kinks are created.

    Parameters
    ----------
    k : int or array of int, >= 1
        Inputs per window (validated and broadcast; it cancels).
    smp_in : float or array, >= 0
        Mean SMP per input unit over the path.

    Returns
    -------
    float or array of the broadcast shape
    """
    k = _int_array(k, "k", minimum=1)
    k, s = _broadcast(("k", "smp_in"), k, _real_array(smp_in, "smp_in", minimum=0.0))
    return _out(s)


def linear_output_moments(weights, bias, mu, sigma, sigma_dot=None) -> OutputMoments:
    r"""Moments of ``y = W x + b`` for independent inputs.

    .. math::

        \mu_{out} = W \mu + b, \qquad \sigma_{out}^2 = W^2 \sigma^2, \qquad
        \dot\sigma_{out}^2 = W^2 \dot\sigma^2,

    with ``W^2`` element-wise: inputs (values and slopes) mutually
    independent. Correlated inputs need the full covariance ``W C W^T``.

    Parameters
    ----------
    weights : array of shape (..., n_in)
        Weights; the last axis runs over inputs (torch's ``Linear.weight`` of
        shape (n_out, n_in) works as is).
    bias : float or array of shape (...)
        Bias, broadcast against the output shape (pass 0 for none).
    mu, sigma : float or array of shape (..., n_in)
        Input means and standard deviations (>= 0), broadcast against
        ``weights``.
    sigma_dot : float or array of shape (..., n_in), optional
        Input RMS slopes (per time unit).

    Returns
    -------
    OutputMoments
        Arrays of the shape ``weights.shape[:-1]`` (broadcast with the rest).
    """
    have_dot = sigma_dot is not None
    w = _real_array(weights, "weights")
    if w.ndim == 0:
        raise InputError(
            "weights must have a last axis over the inputs, shape (..., n_in); got a scalar. "
            "For one input pass [w]."
        )
    b = _real_array(bias, "bias")
    names = ("weights", "mu", "sigma", "sigma_dot")
    arrays = [w, _real_array(mu, "mu"), _real_array(sigma, "sigma", minimum=0.0),
              _real_array(0.0 if not have_dot else sigma_dot, "sigma_dot", minimum=0.0)]
    w, mu, sigma, sigma_dot = _broadcast(names, *arrays)
    mean = (w * mu).sum(-1)
    try:
        mean, b = np.broadcast_arrays(mean, b)
    except ValueError:
        raise InputError(
            f"bias of shape {b.shape} cannot be broadcast to the output shape {mean.shape} "
            "(weights.shape[:-1]); pass one bias per output unit or a scalar."
        ) from None
    mean = mean + b
    std = np.sqrt((w**2 * sigma**2).sum(-1))
    dot = np.sqrt((w**2 * sigma_dot**2).sum(-1))
    std, dot = np.broadcast_arrays(std, dot, mean)[:2]
    return OutputMoments(_out(mean), _out(std), _out(dot) if have_dot else None)


# -------------------------------------------------------------- smooth activations


def _gelu_d(x):
    return special.ndtr(x) + x * _INV_SQRT_2PI * np.exp(-0.5 * x**2)


_GELU_C = math.sqrt(2.0 / math.pi)


def _gelu_tanh_d(x):
    u = _GELU_C * (x + 0.044715 * x**3)
    t = np.tanh(u)
    return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t**2) * _GELU_C * (1.0 + 3 * 0.044715 * x**2)


def _silu_d(x):
    s = special.expit(x)
    return s * (1.0 + x * (1.0 - s))


def _tanh_d(x):
    return 1.0 / np.cosh(np.clip(x, -350.0, 350.0)) ** 2


def _sigmoid_d(x):
    s = special.expit(x)
    return s * (1.0 - s)


class _Smooth(NamedTuple):
    derivative: Callable[[np.ndarray], np.ndarray]
    lower: float  # below: derivative equals left (to < 1e-15)
    upper: float  # above: derivative equals right
    left: float
    right: float
    has_root: bool  # derivative < 0 on (-inf, root), > 0 above


_SMOOTH = {
    "gelu": _Smooth(_gelu_d, -12.0, 12.0, 0.0, 1.0, True),
    "gelu_tanh": _Smooth(_gelu_tanh_d, -12.0, 12.0, 0.0, 1.0, True),
    "silu": _Smooth(_silu_d, -45.0, 45.0, 0.0, 1.0, True),
    "softplus": _Smooth(lambda x: special.expit(x), -40.0, 40.0, 0.0, 1.0, False),
    "tanh": _Smooth(_tanh_d, -20.0, 20.0, 0.0, 0.0, False),
    "sigmoid": _Smooth(_sigmoid_d, -40.0, 40.0, 0.0, 0.0, False),
}

#: Names accepted by :func:`smooth_activation_expected_smp`.
SMOOTH_ACTIVATIONS = tuple(_SMOOTH)


@functools.lru_cache(maxsize=None)
def _root(name: str) -> float:
    from scipy.optimize import brentq

    return float(brentq(_SMOOTH[name].derivative, -3.0, -0.1, xtol=1e-15, rtol=4 * np.finfo(float).eps))


_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(16)
_GL_SEGMENTS = 48
_GL_CHUNK = 1024


def _composite_gauss(f, lo, hi, mu, sigma):
    """``int_lo^hi f(x) N(x; mu, sigma**2) dx`` for 1-D arrays, 0 where lo >= hi."""
    width = np.clip(hi - lo, 0.0, None)
    seg = width / _GL_SEGMENTS
    starts = lo[:, None] + seg[:, None] * np.arange(_GL_SEGMENTS)
    x = starts[:, :, None] + (seg[:, None, None] / 2) * (_GL_NODES + 1.0)
    w = (seg[:, None, None] / 2) * _GL_WEIGHTS
    with np.errstate(over="ignore", under="ignore"):  # far nodes: density underflows to 0
        z = (x - mu[:, None, None]) / sigma[:, None, None]
        dens = _INV_SQRT_2PI * np.exp(-0.5 * z**2) / sigma[:, None, None]
    return (f(x) * dens * w).sum(axis=(1, 2))


def _smooth_spec(activation: Any, beta: Any) -> tuple[_Smooth, float]:
    """The activation's derivative table and its beta (1.0 but for softplus), after checking both."""
    if activation not in _SMOOTH:
        import difflib

        close = difflib.get_close_matches(str(activation), SMOOTH_ACTIVATIONS, n=1)
        fix = f" Did you mean {close[0]!r}?" if close else ""
        if str(activation) in ("relu", "leaky_relu", "prelu", "hardtanh"):
            fix = f" {activation} is piecewise linear: use relu_expected_smp / leaky_relu_expected_smp."
        raise InputError(
            f"activation must be one of {', '.join(repr(c) for c in SMOOTH_ACTIVATIONS)}; got {activation!r}.{fix}"
        )
    if isinstance(beta, bool) or not isinstance(beta, numbers.Real) or not (np.isfinite(beta) and beta > 0):
        raise InputError(f"beta must be a finite real number > 0 (softplus sharpness); got {beta!r}.")
    spec = _SMOOTH[activation]
    beta = float(beta) if activation == "softplus" else 1.0
    return spec, beta


def _abs_slope(spec: _Smooth, u: np.ndarray) -> np.ndarray:
    """``|g'(u)|`` anywhere, with the saturated values outside ``[lower, upper]``."""
    inside = np.abs(spec.derivative(np.clip(u, spec.lower, spec.upper)))
    return np.where(u < spec.lower, abs(spec.left), np.where(u > spec.upper, abs(spec.right), inside))


def smooth_activation_gain(activation, mu, sigma, *, beta=1.0, positive=False):
    r"""``E|g'(X)|`` for ``X ~ N(mu, sigma**2)``: the factor on carried kinks.

    Computed by composite Gauss-Legendre quadrature in x over the part of
    ``mu +- 12 sigma`` where ``g'`` is not yet saturated, split at the sign
    change of ``g'`` (GELU, SiLU), plus the Gaussian tail masses times the
    saturated values (accurate to ~1e-10 for any sigma, including tiny and
    huge ones). ``sigma = 0`` gives ``|g'(mu)|``.

    Parameters
    ----------
    activation : {'gelu', 'gelu_tanh', 'silu', 'softplus', 'tanh', 'sigmoid'}
        ``gelu`` is the exact (erf) form, torch's default; ``gelu_tanh`` is
        ``approximate='tanh'``.
    mu : float or array
        Input mean.
    sigma : float or array, >= 0
        Input standard deviation.
    beta : float > 0, default=1.0
        Softplus sharpness, ``g(x) = log(1 + exp(beta x)) / beta`` (torch's
        ``beta``; its linear branch above ``threshold`` changes g' by < 3e-9).
        Ignored by the other activations.
    positive : bool, default=False
        ``E[|g'(X)| | X > 0]`` instead (kinks that survived a ReLU sit where
        its pre-activation ``X`` is positive); ``|g'(0)|`` where ``P(X > 0)``
        underflows.

    Returns
    -------
    float or array of the broadcast shape (dimensionless)
    """
    spec, beta = _smooth_spec(activation, beta)
    mu, sigma = _broadcast(("mu", "sigma"), _real_array(mu, "mu"), _real_array(sigma, "sigma", minimum=0.0))
    shape = mu.shape
    # Work in u = beta x (only softplus has beta != 1): X ~ N(beta mu, (beta sigma)^2).
    m = (beta * mu).ravel()
    s = (beta * sigma).ravel()
    fabs = lambda x: np.abs(spec.derivative(x))  # noqa: E731
    out = np.empty(m.shape)
    for start in range(0, m.size, _GL_CHUNK):
        mm, ss = m[start:start + _GL_CHUNK], s[start:start + _GL_CHUNK]
        const = ss == 0
        s_safe = np.where(const, 1.0, ss)
        # Quadrature nodes stay inside [lower, upper], where g' is evaluated safely.
        lo = np.clip(mm - 12.0 * s_safe, spec.lower, spec.upper)
        hi = np.clip(mm + 12.0 * s_safe, spec.lower, spec.upper)
        if positive:
            lo = np.clip(lo, 0.0, spec.upper)
        if spec.has_root:
            r = _root(activation)
            total = _composite_gauss(fabs, lo, np.minimum(hi, r), mm, s_safe)
            total += _composite_gauss(fabs, np.maximum(lo, r), hi, mm, s_safe)
        else:
            total = _composite_gauss(fabs, lo, hi, mm, s_safe)
        with np.errstate(over="ignore"):
            if not positive:
                total += spec.left * special.ndtr((spec.lower - mm) / s_safe)
            total += spec.right * special.ndtr((mm - spec.upper) / s_safe)
        at_mu = _abs_slope(spec, mm)
        if positive:
            p_pos = special.ndtr(mm / s_safe)
            usable = p_pos > 1e-300
            total = np.where(usable, total / np.where(usable, p_pos, 1.0), fabs(0.0))
            at_mu = np.where(mm > 0, at_mu, fabs(0.0))
        out[start:start + _GL_CHUNK] = np.where(const, at_mu, total)
    return _out(out.reshape(shape))


def smooth_activation_expected_smp(activation, mu, sigma, smp_in, *, beta=1.0):
    r"""Expected SMP after a smooth activation ``g`` (GELU, SiLU, softplus, tanh, sigmoid).

    .. math:: E[S_{out}] = E|g'(X)|\; S_{in}, \qquad X \sim N(\mu, \sigma^2).

    A smooth ``g`` creates no kinks; an input kink of slope jump ``J`` at time
    ``t_k`` becomes ``g'(x(t_k)) J``. With kink times independent of the
    smooth part, the value there is ``N(mu, sigma**2)``. The factor is
    :func:`smooth_activation_gain`.

    Parameters
    ----------
    activation : str
        One of :data:`SMOOTH_ACTIVATIONS`.
    mu : float or array
        Input mean.
    sigma : float or array, >= 0
        Input standard deviation.
    smp_in : float or array, >= 0
        Mean SMP per input unit over the path.
    beta : float > 0, default=1.0
        Softplus sharpness (ignored by the others).

    Returns
    -------
    float or array of the broadcast shape
    """
    gain = np.asarray(smooth_activation_gain(activation, mu, sigma, beta=beta))
    g, s = _broadcast(("mu/sigma", "smp_in"), gain, _real_array(smp_in, "smp_in", minimum=0.0))
    return _out(g * s)


def max_input_moments(k, mean, std):
    """Invert :func:`max_output_moments`: ``(mu, sigma)`` of the k i.i.d. Gaussian inputs whose maximum has these.

    ``mean = mu + sigma E[M_k]`` and ``std = sigma sd(M_k)`` for ``M_k`` the
    maximum of k standard normals. Arrays broadcast; ``std >= 0``.
    """
    k = _int_array(k, "k", minimum=1)
    k, mean, std = _broadcast(("k", "mean", "std"), k, _real_array(mean, "mean"), _real_array(std, "std", minimum=0.0))
    e1, e2 = _max_normal_moments(k)
    sigma = std / np.sqrt(e2 - e1**2)
    return _out(mean - sigma * e1), _out(sigma)


#: Grid indices of z in [-8, 10]: the density of the maximum of k >= 1 standard normals is below 1e-14 outside.
_MAX_GRID_LO, _MAX_GRID_HI = int(np.searchsorted(_Z, -8.0)), int(np.searchsorted(_Z, 10.0)) + 1


def max_after_rectifier_moments(k, mu, sigma, sigma_dot, negative_slope=0.0) -> OutputMoments:
    r"""Mean, std and RMS slope of the maximum of ``k`` i.i.d. ReLU (or LeakyReLU) outputs with these moments.

    Rectified units are not Gaussian, so :func:`max_output_moments` of their
    moments is wrong: it keeps the RMS slope, while the max of ``k`` ReLU
    outputs is active (slope nonzero) whenever any of them is. Here the
    Gaussian pre-activations ``N(m, s**2)`` and their RMS slope ``d`` are
    recovered from the outputs' moments (:func:`relu_preactivation`), and
    ``max(act(x_i)) = act(max(x_i))`` (``act`` increasing) gives
    ``E act(m + s M_k)**n`` over the density ``k phi(z) Phi(z)**(k-1)`` of the
    maximum ``M_k`` of k standard normals. The slope is the current maximum
    unit's (independent of all values at the same time) times ``act'``, so
    ``sigma_dot_out**2 = E[act'(m + s M_k)**2] d**2``.

    Parameters
    ----------
    k : int, >= 1
        Window size.
    mu, sigma, sigma_dot : arrays (broadcast), ``sigma > 0``
        Mean, std and RMS slope of the rectified units.
    negative_slope : float in [0, 1), default=0
        0 for ReLU, the LeakyReLU's slope otherwise.
    """
    k = int(k)
    if k < 1:
        raise InputError(f"k must be an int >= 1; got {k!r}.")
    m, s, d = relu_preactivation(mu, sigma, sigma_dot, negative_slope)
    alpha = float(negative_slope)
    grid = slice(_MAX_GRID_LO, _MAX_GRID_HI)  # where the density of M_k is not negligible
    weight = k * np.exp((k - 1) * _LOG_PHI_Z[grid]) * _Z_WEIGHT[grid]  # density of M_k on the grid
    x = m[..., None] + s[..., None] * _Z[grid]
    y = np.where(x > 0, x, alpha * x)
    e1 = (y * weight).sum(-1)
    e2 = (y * y * weight).sum(-1)
    active = (np.where(x > 0, 1.0, alpha**2) * weight).sum(-1)
    return OutputMoments(_out(e1), _out(np.sqrt(np.maximum(e2 - e1**2, 0.0))), _out(np.sqrt(active) * d))


def smooth_after_max_gains(activation, k, mu, sigma, *, beta=1.0):
    r"""Gains of a smooth activation ``g`` on the two kinds of kinks of a max over ``k`` i.i.d. ``N(mu, sigma**2)``.

    ``g(max)`` scales each kink of the max by ``|g'|`` at the value where it
    sits, and the two kinds sit at different values:

    * *switching* kinks (two units cross, the other ``k - 2`` below): at the
      common value ``V ~ N(mu, sigma**2 / 2)`` weighted by
      ``Phi((V - mu) / sigma)**(k - 2)`` (Kac-Rice on the pair's difference,
      whose slope is independent of ``V``; see :func:`maxpool_expected_smp`):
      ``E[|g'(V)| Phi^(k-2)] / E[Phi^(k-2)]``;
    * *carried* kinks of the current maximum: at the maximum itself, density
      ``k phi(z) Phi(z)**(k - 1)`` in ``z = (max - mu) / sigma``:
      ``E|g'(max)|``.

    Switching kinks sit lower than the maximum's typical value (two units
    tie there), so for GELU and SiLU, whose slope grows with ``x``, their
    gain is the smaller one; :func:`smooth_activation_gain` at the max's
    own moments overstates it (by 26-35 % for max pooling over 2-3 inputs
    before GELU or SiLU).

    Parameters
    ----------
    activation : str
        One of :data:`SMOOTH_ACTIVATIONS`.
    k : int or array of int, >= 1
        Inputs per pooling window.
    mu, sigma : float or array
        Mean and standard deviation (>= 0) of the pooled inputs (not of the
        max: :func:`max_input_moments` inverts those).
    beta : float > 0, default=1.0
        Softplus sharpness (ignored by the others).

    Returns
    -------
    (switch, carried) : floats or arrays of the broadcast shape (dimensionless)
    """
    spec, beta = _smooth_spec(activation, beta)
    k = _int_array(k, "k", minimum=1)
    k, mu, sigma = _broadcast(("k", "mu", "sigma"), k, _real_array(mu, "mu"),
                              _real_array(sigma, "sigma", minimum=0.0))
    shape = k.shape
    k, m, s = k.ravel().astype(float), beta * mu.ravel(), beta * sigma.ravel()  # in u = beta x
    switch, carried = np.empty(k.shape), np.empty(k.shape)
    for start in range(0, k.size, 256):
        sl = slice(start, start + 256)
        kk, mm, ss = k[sl, None], m[sl, None], s[sl, None]
        w_switch = _Z_WEIGHT * np.exp(np.maximum(kk - 2, 0) * _LOG_PHI_Z_HALF)
        w_max = _Z_WEIGHT * kk * np.exp((kk - 1) * _LOG_PHI_Z)
        switch[sl] = (_abs_slope(spec, mm + ss * _Z / _SQRT2) * w_switch).sum(-1) / w_switch.sum(-1)
        carried[sl] = (_abs_slope(spec, mm + ss * _Z) * w_max).sum(-1) / w_max.sum(-1)
    return _out(switch.reshape(shape)), _out(carried.reshape(shape))

