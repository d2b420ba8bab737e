"""Families of random input signals for block simulations (pure numpy).

A family draws, for one trial, a signal for every input unit of a block on a
uniform t-grid over ``[0, length]``, with per-trial parameters drawn from
ranges so that the input statistics vary across trials:

* :class:`SmoothInputs` — every unit an independent stationary Gaussian
  process with squared-exponential covariance (mean ``mu``, std ``sigma``,
  length scale ``l``; derivative std ``sigma / l``). Smooth: SMP zero.
* :class:`KinkedInputs` — the same plus piecewise-linear signals with
  Poisson kinks (``kink_rate`` per time unit) and Gaussian slope jumps of std
  ``jump_ratio * sigma / l``; the exact input SMP is known. Rates reach down
  to where most units have no kink at all, so the input SMP spans a wide
  range that includes zero.

Ranges are ``(low, high)`` pairs or a single number (fixed). Scale
parameters (``sigma``, ``length_scale``, ``kink_rate``, ``jump_ratio``) are
drawn log-uniformly, ``mu`` uniformly.
"""

from __future__ import annotations

import abc
import numbers
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from .errors import InputError
from .processes import RandomKinks, sample_random_kinks, se_fourier_modes

__all__ = ["InputFamily", "InputDraw", "SmoothInputs", "KinkedInputs", "SegmentInputs", "as_input_family",
           "realised_path_moments", "RealisedPaths",
           "INPUT_FAMILIES"]


@dataclass(frozen=True, repr=False)
class InputDraw:
    """One trial's input signals.

    Attributes
    ----------
    t : array of shape (n_points,)
        Time grid over ``[0, length]`` (time units).
    x : array of shape (n_points, n_units)
        Signal of every input unit (units in C order of the input shape).
    params : dict of str to float
        The trial's family parameters (``mu``, ``sigma``, ...).
    smp_true : array of shape (n_units,) or None
        Exact SMP of every unit's signal over the grid's span, where known.
    n_kinks_true : array of shape (n_units,) or None
        Exact number of kinks of every unit, where known.
    start, end : arrays of shape (n_units,) or None
        End points of straight-segment inputs (``x(t) = start + t / length *
        (end - start)``), which exact SMP needs.
    kinks : RandomKinks or None
        The kinks of kinked inputs (times, units, slope jumps), which exact
        SMP needs.
    """

    t: np.ndarray
    x: np.ndarray
    params: dict[str, float]
    smp_true: np.ndarray | None = None
    n_kinks_true: np.ndarray | None = None
    start: np.ndarray | None = None
    end: np.ndarray | None = None
    kinks: RandomKinks | None = None

    @property
    def dt(self) -> float:
        return float(self.t[1] - self.t[0])

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v:.4g}" for k, v in self.params.items())
        return f"InputDraw(n_points={self.x.shape[0]}, n_units={self.x.shape[1]}, {params})"


def _check_range(value: Any, name: str, *, positive: bool) -> tuple[float, float]:
    lo_hi = (value, value) if isinstance(value, numbers.Real) and not isinstance(value, bool) else value
    try:
        lo, hi = (float(v) for v in lo_hi)
        ok = np.isfinite(lo) and np.isfinite(hi) and lo <= hi and (lo > 0 if positive else True)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        need = "positive " if positive else ""
        raise InputError(
            f"{name} must be a {need}finite number or a (low, high) pair of {need}finite numbers with "
            f"low <= high; got {value!r}."
        )
    return lo, hi


def _log_uniform(rng: np.random.Generator, lo_hi: tuple[float, float]) -> float:
    lo, hi = lo_hi
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi)))) if hi > lo else lo


def _uniform(rng: np.random.Generator, lo_hi: tuple[float, float]) -> float:
    lo, hi = lo_hi
    return float(rng.uniform(lo, hi)) if hi > lo else lo


class InputFamily(abc.ABC):
    """A random family of input signals; subclass and implement :meth:`draw`.

    Attributes
    ----------
    name : str
        Short name, recorded in the ``family`` column of simulate tables.
    length : float
        Path length: t runs over ``[0, length]`` (time units).
    """

    name: str = "custom"
    length: float = 1.0

    @abc.abstractmethod
    def draw(self, n_points: int, n_units: int, rng: np.random.Generator) -> InputDraw:
        """Draw one trial's signals for ``n_units`` units on ``n_points`` grid points."""

    def min_length_scale(self) -> float | None:
        """Shortest time scale of the signals (for the sampling check), if known."""
        return None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (stored with simulate's results)."""
        return {"name": self.name, "length": self.length}

    def grid(self, n_points: int) -> np.ndarray:
        return np.linspace(0.0, self.length, n_points)


class SmoothInputs(InputFamily):
    """Independent stationary SE Gaussian processes, one per input unit.

    Parameters
    ----------
    mu : float or (low, high), default=(-1.0, 1.0)
        Mean of the process (input units); drawn uniformly per trial.
    sigma : float or (low, high), default=(0.5, 2.0)
        Marginal std (input units); drawn log-uniformly per trial.
    length_scale : float or (low, high), default=(0.05, 0.25)
        Covariance length scale (time units); drawn log-uniformly per trial.
    length : float, default=1.0
        Path length (time units).

    Notes
    -----
    Paths are drawn from the Fourier modes of the SE covariance made periodic
    beyond the path (as :func:`smpstats.processes.se_fourier_modes`, with a
    wrap-around margin of 9 length scales): exactly Gaussian and stationary on
    ``[0, length]`` with the SE covariance to ~1e-18, and one matrix product
    for all units.
    """

    name = "smooth"

    def __init__(self, mu: Any = (-1.0, 1.0), sigma: Any = (0.5, 2.0), length_scale: Any = (0.05, 0.25), length: float = 1.0):
        self.mu = _check_range(mu, "mu", positive=False)
        self.sigma = _check_range(sigma, "sigma", positive=True)
        self.length_scale = _check_range(length_scale, "length_scale", positive=True)
        self.length = _check_range(length, "length", positive=True)[0]

    def min_length_scale(self) -> float:
        return self.length_scale[0]

    def _draw_params(self, rng: np.random.Generator) -> dict[str, float]:
        mu = _uniform(rng, self.mu)
        sigma = _log_uniform(rng, self.sigma)
        length_scale = _log_uniform(rng, self.length_scale)
        return {"mu": mu, "sigma": sigma, "length_scale": length_scale, "sigma_dot": sigma / length_scale}

    def _smooth(self, t: np.ndarray, n_units: int, p: dict[str, float], rng: np.random.Generator) -> np.ndarray:
        modes = se_fourier_modes(self.length, p["length_scale"])
        z = rng.standard_normal((2 * modes.omega.shape[0], n_units))
        x = modes.basis(t) @ z  # (n_points, n_units)
        x *= p["sigma"]
        x += p["mu"]
        return x

    def draw(self, n_points: int, n_units: int, rng: np.random.Generator) -> InputDraw:
        t = self.grid(n_points)
        p = self._draw_params(rng)
        return InputDraw(t=t, x=self._smooth(t, n_units, p, rng), params=p)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "length": self.length, "mu": list(self.mu), "sigma": list(self.sigma),
                "length_scale": list(self.length_scale)}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.to_dict().items() if k != 'name')})"


class KinkedInputs(SmoothInputs):
    """Smooth SE processes plus random kinks with known SMP.

    Parameters
    ----------
    mu, sigma, length_scale, length
        As in :class:`SmoothInputs`.
    kink_rate : float or (low, high), default=(0.1, 30.0)
        Poisson rate of kinks per time unit and unit; drawn log-uniformly.
    jump_ratio : float or (low, high), default=(0.2, 1.0)
        Std of the slope jumps in units of the smooth part's derivative std
        ``sigma / length_scale``; drawn log-uniformly.

    Notes
    -----
    The piecewise-linear part has its least-squares line removed per unit
    (which leaves its kinks unchanged), so the kinks add bends rather than a
    drift. Its slope still wanders, so the measured ``sigma_in`` exceeds
    ``sigma`` when kinks are many and large: use the measured input columns.
    The exact SMP per unit is ``InputDraw.smp_true``.
    """

    name = "kinked"

    def __init__(self, mu: Any = (-1.0, 1.0), sigma: Any = (0.5, 2.0), length_scale: Any = (0.05, 0.25),
                 length: float = 1.0, kink_rate: Any = (0.1, 30.0), jump_ratio: Any = (0.2, 1.0)):
        super().__init__(mu=mu, sigma=sigma, length_scale=length_scale, length=length)
        self.kink_rate = _check_range(kink_rate, "kink_rate", positive=True)
        self.jump_ratio = _check_range(jump_ratio, "jump_ratio", positive=True)

    def draw(self, n_points: int, n_units: int, rng: np.random.Generator) -> InputDraw:
        t = self.grid(n_points)
        p = self._draw_params(rng)
        p["kink_rate"] = _log_uniform(rng, self.kink_rate)
        p["jump_scale"] = _log_uniform(rng, self.jump_ratio) * p["sigma_dot"]
        x = self._smooth(t, n_units, p, rng)
        kinks = sample_random_kinks(n_points, t[1] - t[0], rate=p["kink_rate"], jump_scale=p["jump_scale"],
                                    size=n_units, rng=rng)
        v = kinks.values  # (n_units, n_points)
        tc = t - t.mean()
        slope = (v @ tc) / (tc @ tc)
        v = v - v.mean(axis=1, keepdims=True) - slope[:, None] * tc
        x += v.T
        return InputDraw(t=t, x=x, params=p, smp_true=kinks.smp, n_kinks_true=kinks.n_kinks, kinks=kinks)

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "kink_rate": list(self.kink_rate), "jump_ratio": list(self.jump_ratio)}


class SegmentInputs(InputFamily):
    """Straight segments between two random inputs: ``x(t) = start + t / T (end - start)``.

    Every unit's start and end are independent N(mu, sigma**2) draws. The
    inputs are linear in t (SMP zero), so every kink downstream is created by
    the blocks, and a piecewise-linear chain's output SMP can be computed
    exactly (``simulate(..., method="exact")``).

    Parameters
    ----------
    mu : float or (low, high), default=(-1.0, 1.0)
        Mean of the end points; drawn uniformly per trial.
    sigma : float or (low, high), default=(0.5, 2.0)
        Std of the end points; drawn log-uniformly per trial.
    length : float, default=1.0
        Path length T (time units).
    """

    name = "segment"

    def __init__(self, mu: Any = (-1.0, 1.0), sigma: Any = (0.5, 2.0), length: float = 1.0):
        self.mu = _check_range(mu, "mu", positive=False)
        self.sigma = _check_range(sigma, "sigma", positive=True)
        self.length = _check_range(length, "length", positive=True)[0]

    def draw(self, n_points: int, n_units: int, rng: np.random.Generator) -> InputDraw:
        t = self.grid(n_points)
        mu, sigma = _uniform(rng, self.mu), _log_uniform(rng, self.sigma)
        start = rng.normal(mu, sigma, size=n_units)
        end = rng.normal(mu, sigma, size=n_units)
        x = start + np.multiply.outer(t / self.length, end - start)
        params = {"mu": mu, "sigma": sigma, "sigma_dot": float(np.sqrt(2.0) * sigma / self.length)}
        return InputDraw(t=t, x=x, params=params, start=start, end=end)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "length": self.length, "mu": list(self.mu), "sigma": list(self.sigma)}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.to_dict().items() if k != 'name')})"


#: Names accepted by ``simulate(path=...)``.
INPUT_FAMILIES = {"smooth": SmoothInputs, "kinked": KinkedInputs, "segment": SegmentInputs}


def as_input_family(path: Any) -> InputFamily:
    """Return ``path`` as an :class:`InputFamily` ("smooth", "kinked" or an instance)."""
    if isinstance(path, InputFamily):
        return path
    if isinstance(path, str) and path in INPUT_FAMILIES:
        return INPUT_FAMILIES[path]()
    raise InputError(
        f"path must be one of {', '.join(repr(k) for k in INPUT_FAMILIES)} or an InputFamily "
        f"(e.g. smpstats.inputs.KinkedInputs(kink_rate=(1, 10))); got {path!r}."
    )


class RealisedPaths(NamedTuple):
    """What :func:`realised_path_moments` returns: per row the family's mean and the path's std and RMS
    slope, arrays (n_rows,); and for the rows asked to keep, row -> (values, slopes), arrays
    (n_grid, n_units) in the family's units (the path's points, in time order)."""

    mu: np.ndarray
    sigma: np.ndarray
    sigma_dot: np.ndarray
    paths: dict[int, tuple[np.ndarray, np.ndarray]]


def realised_path_moments(mu, sigma, sigma_dot, length: float, n_units: int, rng: np.random.Generator,
                          n_grid: int = 257, keep: Any = ()) -> RealisedPaths:
    """Scale of one drawn path per row, as :class:`SmoothInputs` draws its paths: its std and RMS slope.

    Over a path of finite ``length`` the ``n_units`` independent SE processes
    (mean ``mu``, std ``sigma``, length scale ``sigma / sigma_dot``) do not
    realise their parameters: the pooled variance of a path has relative
    variance about ``2 / (n_units K)``, ``K = length / (l sqrt(pi))`` effective
    samples per unit, its slope mean square about ``1.5 / (n_units K)``, the
    two correlated (about 0.6). Each row's path is drawn from the family's
    Fourier modes (:func:`smpstats.processes.se_fourier_modes`), values and
    exact slopes on ``n_grid`` points, and its variance and slope mean square
    are divided by their expectations (``sigma**2 (1 - s / n_units)``, ``s``
    the share of a unit's variance in its time mean,
    :func:`smpstats.finite_width.path_static_share`, and ``sigma_dot**2``):
    factors of mean 1 on the family's ``sigma**2`` and ``sigma_dot**2``, so
    that formulas of the family's parameters stay unbiased on average. The
    mean is the family's (where a path lies is not a pooled moment; the
    paths of the rows in ``keep`` are returned for what depends on it).

    Parameters
    ----------
    mu, sigma, sigma_dot : arrays, shape (n_rows,)
        The family's parameters per row (sigma and sigma_dot > 0).
    length : float
        Path length (time units).
    n_units : int
        Independent input units.
    rng : numpy.random.Generator
    n_grid : int, default=257
        Points per path at which the moments are taken.
    keep : iterable of int, default=()
        Rows whose paths to return.

    Returns
    -------
    RealisedPaths
        ``(mu, sigma, sigma_dot, paths)``: the family's mean, the path's
        pooled std and RMS slope (their squares of mean ``sigma**2`` and
        ``sigma_dot**2``), and the kept rows' paths.
    """
    from .finite_width import path_static_share

    mu, sigma, sigma_dot = (np.asarray(v, dtype=float) for v in (mu, sigma, sigma_dot))
    keep = {int(k) for k in keep}
    t = np.linspace(0.0, float(length), int(n_grid))
    static = path_static_share(sigma, sigma_dot, float(length))
    var_factor, slope_factor = np.empty(len(mu)), np.empty(len(mu))
    paths = {}
    for i, (m, s, sd) in enumerate(zip(mu, sigma, sigma_dot)):
        modes = se_fourier_modes(float(length), s / sd)
        phase = np.multiply.outer(t, modes.omega)
        slope_basis = np.concatenate([-np.sin(phase), np.cos(phase)], axis=-1) * np.tile(modes.amplitude * modes.omega, 2)
        z = rng.standard_normal((2 * len(modes.omega), int(n_units)))
        x, dx = modes.basis(t) @ z, slope_basis @ z  # unit variance, slopes of mean square (sd / s)**2
        var_factor[i] = x.var() / (1.0 - static[i] / n_units)
        slope_factor[i] = np.mean(dx**2) / (sd / s) ** 2
        if i in keep:
            paths[i] = (m + s * x, s * dx)
    return RealisedPaths(mu.copy(), sigma * np.sqrt(var_factor), sigma_dot * np.sqrt(slope_factor), paths)
