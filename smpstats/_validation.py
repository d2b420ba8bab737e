"""Input validation shared by the public functions (pure, no I/O)."""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from .errors import InputError, SignalError, TimeGridError

__all__ = [
    "as_signal",
    "check_step",
    "step_from_times",
    "check_int",
    "check_bool",
    "check_real",
    "check_choice",
]


def _is_torch_tensor(x: Any) -> bool:
    cls = type(x)
    return cls.__module__.startswith("torch") and cls.__name__ in {"Tensor", "Parameter"}


def as_signal(y: Any, *, axis: int = -1, name: str = "y", min_length: int = 3) -> np.ndarray:
    """Return ``y`` as a float64 array with the time axis moved last.

    Accepts numpy arrays, array-likes and torch tensors (detached, moved to the
    CPU). Raises :class:`SignalError` for non-numeric or complex data, a time
    axis that does not exist or is shorter than ``min_length``, and NaN/inf.

    Returns
    -------
    array of shape (..., n_times), float64
    """
    if _is_torch_tensor(y):
        y = y.detach().cpu()
        if y.is_complex():
            raise SignalError(f"{name} must be real-valued; got a complex torch tensor of dtype {y.dtype}.")
        y = y.to(dtype=__import__("torch").float64).numpy()
    try:
        arr = np.asarray(y)
    except Exception as exc:  # ragged lists and other non-array input
        raise SignalError(f"{name} could not be converted to a numeric array: {exc}") from None
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise SignalError(
            f"{name} must be a numeric array (float or int); got dtype {arr.dtype}."
        )
    if np.iscomplexobj(arr):
        raise SignalError(f"{name} must be real-valued; got complex dtype {arr.dtype}.")
    if arr.ndim == 0:
        raise SignalError(f"{name} must have a time axis with at least {min_length} samples; got a scalar.")
    if not isinstance(axis, numbers.Integral) or not -arr.ndim <= axis < arr.ndim:
        raise SignalError(
            f"axis={axis!r} is out of range for {name} with {arr.ndim} dimension(s) "
            f"(shape {arr.shape}); pass an int in [{-arr.ndim}, {arr.ndim - 1}]."
        )
    arr = np.moveaxis(arr, axis, -1).astype(np.float64, copy=False)
    n = arr.shape[-1]
    if n < min_length:
        hint = ""
        if arr.ndim > 1 and max(arr.shape[:-1]) >= min_length:
            hint = " If time runs along another axis, pass axis= accordingly (e.g. axis=0 for one series per column)."
        raise SignalError(
            f"{name} needs at least {min_length} samples along axis {axis}; got {n} (shape {np.moveaxis(arr, -1, axis).shape}).{hint}"
        )
    if not np.isfinite(arr).all():
        bad = np.argwhere(~np.isfinite(np.moveaxis(arr, -1, axis)))[0]
        raise SignalError(
            f"{name} contains NaN or infinite values (first at index {tuple(int(i) for i in bad)}); "
            "remove or interpolate them before measuring SMP."
        )
    return arr


def check_step(dt: Any, name: str = "dt") -> float:
    """Return ``dt`` as a positive finite float (time units per sample)."""
    if isinstance(dt, np.generic):
        dt = dt.item()
    if isinstance(dt, bool) or not isinstance(dt, numbers.Real):
        raise TimeGridError(f"{name} must be a positive real number (time units per sample); got {dt!r}.")
    dt = float(dt)
    if not np.isfinite(dt) or dt <= 0:
        raise TimeGridError(f"{name} must be a positive finite number (time units per sample); got {dt!r}.")
    return dt


def step_from_times(t: Any, n_times: int, rtol: float = 1e-6) -> float:
    """Return the uniform step of the time stamps ``t`` (shape (n_times,)).

    Raises :class:`TimeGridError` when the stamps are not 1-D, do not match the
    signal length, are not finite, do not increase, or are not uniform
    to within ``rtol`` of the step.
    """
    t = np.asarray(t, dtype=np.float64) if not _is_torch_tensor(t) else t.detach().cpu().double().numpy()
    if t.ndim != 1:
        raise TimeGridError(f"t must be a 1-D array of time stamps; got shape {t.shape}.")
    if t.shape[0] != n_times:
        raise TimeGridError(f"t has {t.shape[0]} time stamps but the signal has {n_times} samples along its time axis.")
    if not np.isfinite(t).all():
        raise TimeGridError("t contains NaN or infinite time stamps.")
    steps = np.diff(t)
    if (steps <= 0).any():
        i = int(np.argmax(steps <= 0))
        raise TimeGridError(
            f"t must be strictly increasing; t[{i + 1}] = {float(t[i + 1])!r} <= t[{i}] = {float(t[i])!r}. "
            "Sort the samples by time (and reverse both y and t for a path run backwards)."
        )
    h = (t[-1] - t[0]) / (n_times - 1)
    worst = np.max(np.abs(steps - h))
    if worst > rtol * h:
        raise TimeGridError(
            f"t must be uniformly spaced; steps range from {float(steps.min())!r} to {float(steps.max())!r} "
            f"(relative deviation {worst / h:.2g} > {rtol:g}). Resample onto a uniform grid first."
        )
    return float(h)


def check_int(value: Any, name: str, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """Return ``value`` as an int in [minimum, maximum], or raise InputError."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InputError(f"{name} must be an int{_range_text(minimum, maximum)}; got {value!r}.")
    value = int(value)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise InputError(f"{name} must be an int{_range_text(minimum, maximum)}; got {value}.")
    return value


def check_real(
    value: Any, name: str, *, minimum: float | None = None, maximum: float | None = None,
    strict_minimum: bool = False,
) -> float:
    """Return ``value`` as a finite float in the given range, or raise InputError."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(float(value)):
        raise InputError(f"{name} must be a finite real number{_range_text(minimum, maximum, strict_minimum)}; got {value!r}.")
    value = float(value)
    low_bad = minimum is not None and (value <= minimum if strict_minimum else value < minimum)
    if low_bad or (maximum is not None and value > maximum):
        raise InputError(f"{name} must be a finite real number{_range_text(minimum, maximum, strict_minimum)}; got {value!r}.")
    return value


def check_choice(value: Any, name: str, choices: tuple[str, ...]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise InputError."""
    if value not in choices:
        raise InputError(f"{name} must be one of {', '.join(repr(c) for c in choices)}; got {value!r}.")
    return value


def _range_text(minimum, maximum, strict_minimum: bool = False) -> str:
    low = ">" if strict_minimum else ">="
    if minimum is not None and maximum is not None:
        return f" {low} {minimum} and <= {maximum}"
    if minimum is not None:
        return f" {low} {minimum}"
    if maximum is not None:
        return f" <= {maximum}"
    return ""


def check_bool(value: Any, name: str) -> bool:
    """``value`` as a bool; anything but True or False (numpy's included) is an InputError."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise InputError(f"{name} must be True or False; got {value!r}.")
