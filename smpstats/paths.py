"""Input paths x(t) along which a network's output is measured (pure numpy).

A path maps a time ``t`` in ``[0, length]`` to one network input of shape
``input_shape`` (no batch dimension). Three kinds are provided:

* :class:`SegmentPath` — the straight line ``x(t) = start + t (end - start)``,
  ``t`` in ``[0, 1]``: the path of an interpolation sweep between two inputs.
* :class:`GaussianProcessPath` — every input coordinate an independent,
  stationary squared-exponential Gaussian process, fixed by a seed at
  construction, so the path is one smooth function that can be evaluated at
  any ``t``; its statistics (mean, std, derivative std) are known exactly.
* :class:`SequencePath` — a user-supplied sequence of inputs on a uniform
  time grid (the frames of a video, samples of a trajectory).

:func:`as_path` turns the usual user objects into a path. Torch tensors are
accepted wherever arrays are (detached and copied to the CPU as float64).
"""

from __future__ import annotations

import abc
import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._validation import check_real, check_step, step_from_times
from .errors import InputError, SignalError, TimeGridError
from .processes import se_fourier_modes

__all__ = [
    "InputPath",
    "PathStats",
    "SegmentPath",
    "GaussianProcessPath",
    "SequencePath",
    "as_path",
]

#: Relative tolerance (of the path length) for times just outside [0, length]
#: and for matching a SequencePath's sample times.
_TIME_RTOL = 1e-9


def _is_torch_tensor(x: Any) -> bool:
    cls = type(x)
    return cls.__module__.startswith("torch") and cls.__name__ in {"Tensor", "Parameter"}


def _as_float_array(x: Any, name: str, error: type = InputError) -> np.ndarray:
    """Return ``x`` (array-like or torch tensor) as a finite float64 array (any shape)."""
    if _is_torch_tensor(x):
        if x.is_complex():
            raise error(f"{name} must be real-valued; got a complex torch tensor of dtype {x.dtype}.")
        x = x.detach().cpu().to(dtype=__import__("torch").float64).numpy()
    try:
        arr = np.asarray(x)
    except Exception as exc:  # ragged lists and other non-array input
        raise error(f"{name} could not be converted to a numeric array: {exc}") from None
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise error(f"{name} must be a numeric array or torch tensor; got dtype {arr.dtype}.")
    if np.iscomplexobj(arr):
        raise error(f"{name} must be real-valued; got complex dtype {arr.dtype}.")
    arr = np.array(arr, dtype=np.float64)  # a private copy: later changes by the caller do not move the path
    if not np.isfinite(arr).all():
        bad = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])
        raise error(f"{name} contains NaN or infinite values (first at index {bad}); pass finite values.")
    return arr


def _plain(x: Any) -> Any:
    """Return numpy scalars as Python scalars, so that messages read 2 and not np.int64(2)."""
    return x.item() if isinstance(x, np.generic) else x


def _shape_text(shape: tuple[int, ...]) -> str:
    return str(tuple(int(s) for s in shape))


@dataclass(frozen=True)
class PathStats:
    """Exact statistics of a random input path, per input coordinate.

    For a stationary process these are the ensemble statistics at any ``t``;
    they are what :mod:`smpstats.theory` takes as ``mu``, ``sigma`` and
    ``sigma_dot``.

    Attributes
    ----------
    mu : array of shape input_shape
        Mean of each coordinate (input units).
    sigma : array of shape input_shape
        Standard deviation of each coordinate (input units).
    sigma_dot : array of shape input_shape
        Standard deviation of each coordinate's t-derivative (input units per time unit).
    length : float
        Path length ``T`` (time units).
    length_scale : float or None
        Covariance length scale (time units), where the path has one.
    """

    mu: np.ndarray
    sigma: np.ndarray
    sigma_dot: np.ndarray
    length: float
    length_scale: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the statistics as a dict (arrays kept as arrays)."""
        return {
            "mu": self.mu,
            "sigma": self.sigma,
            "sigma_dot": self.sigma_dot,
            "length": self.length,
            "length_scale": self.length_scale,
        }

    def to_frame(self):
        """Return a pandas DataFrame with one row per input coordinate.

        Columns: ``coordinate`` (flat index), ``mu``, ``sigma``, ``sigma_dot``,
        ``length``, ``length_scale``.
        """
        import pandas as pd

        return pd.DataFrame(
            {
                "coordinate": np.arange(self.mu.size),
                "mu": self.mu.ravel(),
                "sigma": self.sigma.ravel(),
                "sigma_dot": self.sigma_dot.ravel(),
                "length": self.length,
                "length_scale": self.length_scale,
            }
        )

    def __repr__(self) -> str:
        def brief(a: np.ndarray) -> str:
            if a.size == 1:
                return f"{float(a.ravel()[0]):.4g}"
            lo, hi = float(a.min()), float(a.max())
            return f"{lo:.4g}" if lo == hi else f"{lo:.4g}..{hi:.4g}"

        return (
            f"PathStats(shape={_shape_text(self.mu.shape)}, mu={brief(self.mu)}, sigma={brief(self.sigma)}, "
            f"sigma_dot={brief(self.sigma_dot)}, length={self.length:.4g}, length_scale={self.length_scale})"
        )


class InputPath(abc.ABC):
    """A path of network inputs ``x(t)``, ``t`` in ``[0, length]``.

    Attributes
    ----------
    input_shape : tuple of int
        Shape of one input (no batch dimension).
    length : float
        Time span of the path (time units); ``t`` runs over ``[0, length]``.
    origin : float
        Time stamp, in the caller's own clock, that ``t = 0`` stands for
        (0 except for a :class:`SequencePath` built from time stamps).
    """

    input_shape: tuple[int, ...]
    length: float
    origin: float = 0.0

    @abc.abstractmethod
    def _evaluate(self, t: np.ndarray) -> np.ndarray:
        """Evaluate at validated times ``t`` (1-D float64 array)."""

    @property
    def stats(self) -> PathStats | None:
        """Exact per-coordinate statistics, or None where the path has none."""
        return None

    def evaluate(self, t: Any) -> np.ndarray:
        """Return the inputs at times ``t``.

        Parameters
        ----------
        t : float or array of shape (n,)
            Times in ``[0, length]`` (time units).

        Returns
        -------
        array of shape (n, *input_shape), float64
        """
        t = self._check_times(t)
        return self._evaluate(t)

    def times(self, n_points: int) -> np.ndarray:
        """Return the uniform grid of ``n_points`` times over ``[0, length]``, shape (n_points,)."""
        n_points = self._check_n_points(n_points)
        return np.linspace(0.0, self.length, n_points)

    def grid(self, n_points: int) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(t, x)`` on the uniform grid of ``n_points`` times over ``[0, length]``.

        Returns
        -------
        t : array of shape (n_points,)
        x : array of shape (n_points, *input_shape), float64
        """
        t = self.times(n_points)
        return t, self._evaluate(t)

    # -- helpers -----------------------------------------------------------
    @staticmethod
    def _check_n_points(n_points: Any) -> int:
        if isinstance(n_points, bool) or not isinstance(n_points, numbers.Integral) or n_points < 3:
            raise InputError(
                f"n_points must be an int >= 3 (samples along the path; SMP needs at least 3); got {_plain(n_points)!r}."
            )
        return int(n_points)

    def _check_times(self, t: Any) -> np.ndarray:
        if _is_torch_tensor(t):
            t = t.detach().cpu().double().numpy()
        try:
            t = np.atleast_1d(np.asarray(t, dtype=np.float64))
        except (TypeError, ValueError):
            raise TimeGridError(f"t must be a float or a 1-D array of times; got {t!r}.") from None
        if t.ndim != 1:
            raise TimeGridError(f"t must be a float or a 1-D array of times; got an array of shape {t.shape}.")
        if not np.isfinite(t).all():
            raise TimeGridError("t contains NaN or infinite times; pass finite times in [0, length].")
        tol = _TIME_RTOL * max(self.length, 1.0)
        if t.size and (t.min() < -tol or t.max() > self.length + tol):
            raise TimeGridError(
                f"t must lie in [0, {self.length:g}] (the path's time span); got values from "
                f"{float(t.min())!r} to {float(t.max())!r}."
            )
        return np.clip(t, 0.0, self.length)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(input_shape={_shape_text(self.input_shape)}, length={self.length:g})"


class SegmentPath(InputPath):
    """Straight segment ``x(t) = start + t (end - start)``, ``t`` in ``[0, 1]``.

    Parameters
    ----------
    start, end : array-like or torch tensor of shape input_shape
        End points (one input each, no batch dimension), finite, same shape.

    Notes
    -----
    A network made of affine and piecewise-linear maps is affine in ``t``
    between kinks along a segment, so this is the path of the exact
    enumeration (DESIGN section 3). ``stats`` is None: a segment is not a
    random process.
    """

    def __init__(self, start: Any, end: Any):
        start = _as_float_array(start, "start")
        end = _as_float_array(end, "end")
        if start.shape != end.shape:
            raise InputError(
                f"start and end must have the same shape (one input each, no batch dimension); "
                f"got start of shape {_shape_text(start.shape)} and end of shape {_shape_text(end.shape)}."
            )
        self.start = start
        self.end = end
        self.input_shape = tuple(int(s) for s in start.shape)
        self.length = 1.0

    @property
    def direction(self) -> np.ndarray:
        """``end - start``: dx/dt, array of shape input_shape (input units per time unit)."""
        return self.end - self.start

    def _evaluate(self, t: np.ndarray) -> np.ndarray:
        tt = t.reshape((-1,) + (1,) * len(self.input_shape))
        return self.start + tt * (self.end - self.start)

    def __repr__(self) -> str:
        return f"SegmentPath(input_shape={_shape_text(self.input_shape)}, |end - start|={np.linalg.norm(self.direction):.4g})"


class GaussianProcessPath(InputPath):
    """Independent squared-exponential Gaussian processes on every input coordinate.

    Coordinate ``i`` follows ``x_i(t) = center_i + sigma_i * g_i(t)`` where the
    ``g_i`` are independent, stationary, unit-variance Gaussian processes with
    covariance ``exp(-tau**2 / (2 length_scale**2))`` on ``[0, length]``. The
    random coefficients are drawn once, at construction, from ``seed``: the
    path is one fixed, smooth function that can be evaluated at any ``t``
    (built on :func:`smpstats.processes.se_fourier_modes`).

    Parameters
    ----------
    input_shape : tuple of int, optional
        Shape of one input. Taken from ``center`` when omitted.
    center : float, array-like or torch tensor, optional
        Mean of each coordinate (input units); broadcast to ``input_shape``.
        Default 0.
    length_scale : float > 0, default=0.25
        Covariance length scale (time units).
    sigma : float or array-like >= 0, default=1.0
        Std of each coordinate (input units); broadcast to ``input_shape``.
    length : float > 0, default=1.0
        Time span of the path (time units).
    seed : None, int, numpy.random.SeedSequence or numpy.random.Generator
        Source of the random coefficients. Same seed, same path.

    Attributes
    ----------
    stats : PathStats
        Exact statistics: ``mu = center``, ``sigma``, ``sigma_dot = sigma / length_scale``.
    """

    def __init__(
        self,
        input_shape: Any = None,
        *,
        center: Any = None,
        length_scale: float = 0.25,
        sigma: Any = 1.0,
        length: float = 1.0,
        seed: Any = None,
    ):
        self.length_scale = check_real(length_scale, "length_scale", minimum=0.0, strict_minimum=True)
        self.length = check_real(length, "length", minimum=0.0, strict_minimum=True)
        center_arr = None if center is None else _as_float_array(center, "center")
        if input_shape is None:
            if center_arr is None:
                raise InputError(
                    "GaussianProcessPath needs the shape of one input: pass input_shape=(...) "
                    "(e.g. input_shape=(3, 32, 32)) or an array center=... of that shape."
                )
            input_shape = center_arr.shape
        elif isinstance(input_shape, numbers.Integral) and not isinstance(input_shape, bool):
            input_shape = (int(input_shape),)
        try:
            shape = tuple(int(s) for s in input_shape)
            ok = all(s >= 1 and s == d for s, d in zip(shape, input_shape))
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise InputError(
                f"input_shape must be a tuple of ints >= 1 (the shape of one input, no batch dimension); "
                f"got {input_shape!r}."
            )
        self.input_shape = shape
        self.center = self._broadcast(0.0 if center_arr is None else center_arr, "center")
        sigma_arr = self._broadcast(_as_float_array(sigma, "sigma"), "sigma")
        if (sigma_arr < 0).any():
            raise InputError(f"sigma must be >= 0 (std of each coordinate); got a minimum of {float(sigma_arr.min())!r}.")
        self.sigma = sigma_arr
        self._modes = se_fourier_modes(self.length, self.length_scale)
        rng = self._rng(seed)
        n_coords = int(np.prod(self.input_shape, dtype=np.int64))
        # Coefficients z of shape (2 * n_modes, n_coords): x = center + sigma * (basis(t) @ z).
        self._coef = rng.standard_normal((2 * self._modes.omega.shape[0], n_coords))

    def _broadcast(self, value: Any, name: str) -> np.ndarray:
        arr = np.asarray(value, dtype=np.float64)
        try:
            return np.array(np.broadcast_to(arr, self.input_shape), dtype=np.float64)
        except ValueError:
            raise InputError(
                f"{name} of shape {_shape_text(arr.shape)} cannot be broadcast to input_shape "
                f"{_shape_text(self.input_shape)}; pass a scalar or an array of shape input_shape."
            ) from None

    @staticmethod
    def _rng(seed: Any) -> np.random.Generator:
        if isinstance(seed, np.random.Generator):
            return seed
        if seed is None or isinstance(seed, np.random.SeedSequence) or (
            isinstance(seed, numbers.Integral) and not isinstance(seed, bool) and seed >= 0
        ):
            return np.random.default_rng(seed)
        raise InputError(
            f"seed must be None, an int >= 0, a numpy SeedSequence or a numpy Generator; got {seed!r}."
        )

    @property
    def stats(self) -> PathStats:
        return PathStats(
            mu=self.center.copy(),
            sigma=self.sigma.copy(),
            sigma_dot=self.sigma / self.length_scale,
            length=self.length,
            length_scale=self.length_scale,
        )

    def _evaluate(self, t: np.ndarray) -> np.ndarray:
        unit = self._modes.basis(t) @ self._coef  # shape (n, n_coords)
        return self.center + self.sigma * unit.reshape((t.shape[0],) + self.input_shape)

    def derivative(self, t: Any) -> np.ndarray:
        """Return dx/dt at times ``t``: array of shape (n, *input_shape) (input units per time unit)."""
        t = self._check_times(t)
        phase = np.multiply.outer(t, self._modes.omega)
        w = self._modes.omega * self._modes.amplitude
        dbasis = np.concatenate([-np.sin(phase) * w, np.cos(phase) * w], axis=-1)
        return self.sigma * (dbasis @ self._coef).reshape((t.shape[0],) + self.input_shape)

    def __repr__(self) -> str:
        return (
            f"GaussianProcessPath(input_shape={_shape_text(self.input_shape)}, "
            f"length_scale={self.length_scale:g}, length={self.length:g})"
        )


class SequencePath(InputPath):
    """A user-supplied sequence of inputs on a uniform time grid.

    Parameters
    ----------
    points : array-like or torch tensor of shape (n_points, *input_shape)
        The inputs, in time order; ``n_points >= 3``, finite.
    t : array-like of shape (n_points,), optional
        Time stamps of the points (strictly increasing, uniform). The path's
        ``t = 0`` stands for ``t[0]`` (kept as ``origin``).
    dt : float > 0, optional
        Time step between points (time units per sample) when ``t`` is not
        given. Default 1.0. Pass ``t`` or ``dt``, not both.

    Notes
    -----
    The path is known only at its samples: :meth:`evaluate` accepts only
    those times, and :meth:`grid` only ``n_points`` equal to the number of
    points (or None). ``stats`` is None.
    """

    def __init__(self, points: Any, t: Any = None, dt: Any = None):
        arr = _as_float_array(points, "points", SignalError)
        if arr.ndim == 0 or arr.shape[0] < 3:
            got = "a scalar" if arr.ndim == 0 else f"{arr.shape[0]} (shape {_shape_text(arr.shape)})"
            raise SignalError(
                f"points must hold at least 3 inputs along its first axis (time); got {got}. "
                "Pass the inputs as an array of shape (n_points, *input_shape)."
            )
        self.points = arr
        n = self.points.shape[0]
        if t is not None and dt is not None:
            raise TimeGridError("Pass either t (time stamps) or dt (time step) to SequencePath, not both.")
        if t is not None:
            self.dt = step_from_times(t, n)
            stamps = t.detach().cpu().double().numpy() if _is_torch_tensor(t) else np.asarray(t, dtype=np.float64)
            self.origin = float(stamps[0])
        else:
            self.dt = check_step(1.0 if dt is None else dt)
            self.origin = 0.0
        self.input_shape = tuple(int(s) for s in self.points.shape[1:])
        self.length = (n - 1) * self.dt

    @property
    def n_points(self) -> int:
        """Number of samples in the sequence."""
        return int(self.points.shape[0])

    def times(self, n_points: int | None = None) -> np.ndarray:
        """Return the sample times ``k * dt``, shape (n_points,); ``n_points`` must be None or the sequence length."""
        if n_points is not None:
            n_points = self._check_n_points(n_points)
            if n_points != self.n_points:
                raise InputError(
                    f"n_points={n_points} does not match the {self.n_points} points of this SequencePath; "
                    "a sequence is known only at its own samples: pass n_points=None (or resample the sequence)."
                )
        return np.arange(self.n_points) * self.dt

    def grid(self, n_points: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(t, x)``: the sample times (shape (n,)) and a copy of the points (shape (n, *input_shape))."""
        t = self.times(n_points)
        return t, self.points.copy()

    def _evaluate(self, t: np.ndarray) -> np.ndarray:
        k = np.rint(t / self.dt)
        off = np.abs(t - k * self.dt)
        if (off > _TIME_RTOL * max(self.length, 1.0)).any():
            i = int(np.argmax(off))
            raise TimeGridError(
                f"A SequencePath is known only at its sample times k * dt (dt = {self.dt:g}); "
                f"got t = {float(t[i])!r}, between samples. Evaluate at path.times() instead."
            )
        return self.points[k.astype(np.int64)]

    def __repr__(self) -> str:
        return (
            f"SequencePath(n_points={self.n_points}, input_shape={_shape_text(self.input_shape)}, "
            f"dt={self.dt:g}, origin={self.origin:g})"
        )


def as_path(obj: Any) -> InputPath:
    """Return ``obj`` as an :class:`InputPath`.

    Parameters
    ----------
    obj : InputPath, tuple (start, end), array-like or torch tensor
        * an :class:`InputPath` is returned as it is;
        * a tuple of two inputs ``(start, end)`` becomes a :class:`SegmentPath`;
        * an array, tensor or list of shape (n_points, *input_shape) with
          ``n_points >= 3`` becomes a :class:`SequencePath` with ``dt = 1``
          (build ``SequencePath(points, t=...)`` yourself for other stamps).

    Returns
    -------
    InputPath
    """
    if isinstance(obj, InputPath):
        return obj
    if isinstance(obj, tuple) and len(obj) == 2:
        return SegmentPath(*obj)
    if isinstance(obj, (np.ndarray, list, tuple)) or _is_torch_tensor(obj):
        return SequencePath(obj)
    raise InputError(
        f"path must be an InputPath (SegmentPath, GaussianProcessPath, SequencePath), a tuple (start, end) "
        f"or an array of inputs of shape (n_points, *input_shape); got an object of type {type(obj).__name__}."
    )
