"""Measure the SMP of a model's outputs along an input path (torch-centric).

:func:`measure` runs a callable or a ``torch.nn.Module`` on the uniform grid of
an :class:`~smpstats.paths.InputPath`, in chunks of bounded size, and hands
the outputs, one time series per output component, to the grid estimator
:func:`smpstats.grid.smp`.
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from ._validation import check_choice, check_int
from .errors import InputError, ModelEvaluationError, SignalError
from .paths import InputPath, SequencePath, as_path

__all__ = ["measure", "MeasureResult"]

logger = logging.getLogger(__name__)

#: Number of grid points when the caller gives none (paths other than SequencePath).
DEFAULT_N_POINTS = 1024

_INPUT_TYPES = ("torch", "numpy")


@dataclass(repr=False)
class MeasureResult:
    """SMP of a model's outputs along one input path.

    Attributes
    ----------
    value : float or array of shape out_shape
        SMP of each output component (output units per time unit of the path):
        a float when the model returns one number per input.
    total : float
        Sum of ``value`` over the output components.
    resolved : bool
        True when every component's estimate is stable under doubling the
        time step (see ``smp.resolved`` and ``smp.reason`` per component).
    smp : SMPResult
        The grid estimator's full result, batch shape ``out_shape``
        (peaks, noise, detection limit).
    t : array of shape (n_points,)
        Times of the samples (the path's own clock: ``path.origin + k * dt``).
    outputs : array of shape (n_points, *out_shape) or None
        The model outputs, float64, when ``keep_outputs=True``.
    dt : float
        Time step of the grid (time units per sample).
    n_points : int
        Number of samples along the path.
    input_shape, out_shape : tuple of int
        Shape of one input and of one output (no batch dimension).
    path : InputPath
        The path measured.
    """

    value: Any
    total: float
    resolved: bool
    smp: Any
    t: np.ndarray
    outputs: np.ndarray | None
    dt: float
    n_points: int
    input_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    path: InputPath = field(default=None)

    @property
    def n_components(self) -> int:
        """Number of output components (product of ``out_shape``; 1 for scalar outputs)."""
        return int(np.prod(self.out_shape, dtype=np.int64))

    def to_frame(self):
        """Return a pandas DataFrame with one row per output component.

        Columns: ``component`` (flat index into ``out_shape``), ``index``
        (tuple index, only when ``out_shape`` has two or more dimensions),
        ``smp``, ``n_peaks``, ``resolved``, ``reason``.
        """
        import pandas as pd

        n = self.n_components
        data: dict[str, Any] = {"component": np.arange(n)}
        if len(self.out_shape) >= 2:
            data["index"] = [tuple(int(i) for i in np.unravel_index(k, self.out_shape)) for k in range(n)]
        data["smp"] = np.reshape(np.asarray(self.smp.value, dtype=np.float64), n)
        data["n_peaks"] = np.reshape(np.asarray(self.smp.n_peaks), n).astype(np.int64)
        data["resolved"] = np.reshape(np.asarray(self.smp.resolved), n).astype(bool)
        data["reason"] = np.reshape(np.asarray(self.smp.reason, dtype=object), n).astype(str)
        return pd.DataFrame(data)

    def to_dict(self) -> dict[str, Any]:
        """Return the scalar description of the measurement and the per-component values."""
        return {
            "total": self.total,
            "resolved": self.resolved,
            "value": self.value,
            "n_points": self.n_points,
            "dt": self.dt,
            "input_shape": self.input_shape,
            "out_shape": self.out_shape,
            "path": repr(self.path),
        }

    def summary(self) -> str:
        """Describe the measurement in plain words, ending with a next step."""
        n = self.n_components
        values = np.reshape(np.asarray(self.smp.value, dtype=np.float64), n)
        n_peaks = np.reshape(np.asarray(self.smp.n_peaks), n)
        resolved = np.reshape(np.asarray(self.smp.resolved), n).astype(bool)
        reasons = np.reshape(np.asarray(self.smp.reason, dtype=object), n)
        lines = [
            f"SMP measured along {self.path!r} on {self.n_points} points (dt = {self.dt:.4g} time units).",
        ]
        if n == 1:
            lines.append(
                f"Output: one component; SMP = {values[0]:.6g} output units per time unit "
                f"from {int(n_peaks[0])} detected kink(s)."
            )
        else:
            lines.append(
                f"Output: {n} components (shape {self.out_shape}); total SMP = {self.total:.6g}, "
                f"per component min {values.min():.4g}, median {np.median(values):.4g}, max {values.max():.4g}; "
                f"{int(n_peaks.sum())} kink(s) detected in all."
            )
        if resolved.all():
            lines.append("Every estimate is resolved: it is stable when the time step is doubled.")
            lines.append(
                "Next: result.to_frame() for per-component values, or result.smp.peaks_frame() for kink positions."
            )
        else:
            bad = np.flatnonzero(~resolved)
            first = str(reasons[bad[0]]) or "unstable when the step is doubled"
            lines.append(
                f"{bad.size} of {n} component(s) are NOT resolved (first, component {int(bad[0])}: {first})."
            )
            if isinstance(self.path, SequencePath):
                lines.append(
                    "Next: record the sequence at a higher rate (smaller dt), or use a model-based check; "
                    "trust only resolved values."
                )
            else:
                lines.append(
                    f"Next: measure again with more points (e.g. n_points={2 * self.n_points - 1}, which halves "
                    "the step) and compare; trust only resolved values."
                )
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"MeasureResult(total={self.total:.6g}, n_components={self.n_components}, "
            f"resolved={self.resolved}, n_points={self.n_points}, dt={self.dt:.4g}, "
            f"out_shape={self.out_shape})"
        )


def _module_device(module: torch.nn.Module) -> torch.device:
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return torch.device("cpu")


def _float64_eval_module(module: torch.nn.Module) -> torch.nn.Module:
    """Return a float64, eval-mode version of ``module`` without touching ``module``.

    The module itself is used when it already is float64 throughout and in
    eval mode; otherwise a deep copy is converted.
    """
    floating = [p for p in list(module.parameters()) + list(module.buffers()) if p.is_floating_point()]
    if all(p.dtype == torch.float64 for p in floating) and not any(m.training for m in module.modules()):
        return module
    try:
        clone = copy.deepcopy(module)
    except Exception as exc:
        raise InputError(
            f"f (a {type(module).__name__}) could not be copied to run it in float64 eval mode without "
            f"changing it: {type(exc).__name__}: {exc}. Convert it yourself (f.double().eval()) and pass that."
        ) from exc
    logger.info("measure: running a float64 copy of %s in eval mode (the module passed is left unchanged).",
                type(module).__name__)
    return clone.to(torch.float64).eval()


def _to_numpy_output(out: Any, n_rows: int, chunk: int, n_chunks: int, x_shape: tuple[int, ...]) -> np.ndarray:
    where = f"chunk {chunk + 1} of {n_chunks} (input of shape {x_shape})"
    if isinstance(out, torch.Tensor):
        if out.is_complex():
            raise SignalError(f"f returned a complex tensor on {where}; SMP needs real outputs.")
        out = out.detach().to(device="cpu", dtype=torch.float64).numpy()
    elif isinstance(out, (tuple, dict)):
        raise SignalError(
            f"f returned a {type(out).__name__} on {where}; it must return one array or tensor of shape "
            f"({n_rows}, ...). Wrap f to pick the output to measure, e.g. lambda x: f(x)[0]."
        )
    try:
        arr = np.asarray(out, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise SignalError(
            f"f returned an object of type {type(out).__name__} on {where} that is not a numeric array: {exc}"
        ) from None
    if arr.ndim == 0 or arr.shape[0] != n_rows:
        got = "a scalar" if arr.ndim == 0 else f"shape {tuple(arr.shape)}"
        raise SignalError(
            f"f returned {got} on {where}; expected a batch of {n_rows} outputs, shape ({n_rows}, ...). "
            "f must map a batch of inputs (first axis) to a batch of outputs of the same length; "
            "for a function of one input, pass a batched wrapper such as lambda x: torch.stack([g(xi) for xi in x])."
        )
    return arr


def measure(
    f: Callable | torch.nn.Module,
    path: Any,
    n_points: int | None = None,
    *,
    chunk_size: int = 4096,
    noise: Any = None,
    progress: bool = False,
    keep_outputs: bool = False,
    input_type: str = "torch",
) -> MeasureResult:
    """Measure the SMP of ``f`` along ``path``, per output component.

    Parameters
    ----------
    f : torch.nn.Module or callable
        The model. It receives a batch of inputs of shape (chunk, *input_shape)
        and must return a batch of outputs of shape (chunk, *out_shape).
        An ``nn.Module`` is run as a float64 copy in eval mode on the device
        of its parameters (the module passed is never changed). Another
        callable receives a float64 CPU tensor (``input_type="torch"``) or a
        float64 numpy array (``input_type="numpy"``); it may return a tensor
        or an array-like.
    path : InputPath, tuple (start, end) or array of shape (n, *input_shape)
        The input path (see :func:`smpstats.paths.as_path`).
    n_points : int >= 3, optional
        Number of samples on the uniform grid over ``[0, path.length]``;
        default 1024 (logged). A :class:`~smpstats.paths.SequencePath` is
        measured at its own samples (leave None or pass its length).
    chunk_size : int >= 1, default=4096
        Largest number of inputs passed to ``f`` at once (bounds memory).
        Results do not depend on it beyond floating-point rounding.
    noise : optional
        Measurement-noise std of the outputs (output units), passed to
        :func:`smpstats.grid.smp`; None lets the estimator decide.
    progress : bool, default=False
        Show a tqdm progress bar over chunks.
    keep_outputs : bool, default=False
        Keep the outputs, array of shape (n_points, *out_shape), in the result.
    input_type : {"torch", "numpy"}, default="torch"
        What a plain callable receives (an ``nn.Module`` always gets tensors).

    Returns
    -------
    MeasureResult
        ``value`` (per component, output units per time unit), ``total``,
        ``resolved``, ``smp`` (the :class:`~smpstats.grid.SMPResult`), ``t``.

    Raises
    ------
    InputError
        Bad arguments.
    SignalError
        ``f`` returned outputs of the wrong batch size, a changing shape, or
        NaN/inf values.
    ModelEvaluationError
        ``f`` raised; the message names the chunk and the input shape, and the
        original exception is chained.
    """
    if not callable(f):
        raise InputError(
            f"f must be a torch.nn.Module or a callable mapping a batch of inputs to a batch of outputs; "
            f"got an object of type {type(f).__name__}."
        )
    path = as_path(path)
    chunk_size = check_int(chunk_size, "chunk_size", minimum=1)
    input_type = check_choice(input_type, "input_type", _INPUT_TYPES)
    is_module = isinstance(f, torch.nn.Module)
    if is_module and input_type != "torch":
        raise InputError(
            f"input_type={input_type!r} cannot be used with a torch.nn.Module, which needs tensors; "
            "leave input_type='torch'."
        )
    if isinstance(path, SequencePath):
        t = path.times(n_points)
    else:
        if n_points is None:
            n_points = DEFAULT_N_POINTS
            logger.info("measure: n_points not given; using %d points along the path.", n_points)
        t = path.times(n_points)
    n = int(t.shape[0])
    dt = path.dt if isinstance(path, SequencePath) else path.length / (n - 1)

    if is_module:
        model = _float64_eval_module(f)
        device = _module_device(model)
    else:
        model = f
        device = torch.device("cpu")

    n_chunks = math.ceil(n / chunk_size)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_chunks, desc="measure", unit="chunk")
    outputs: np.ndarray | None = None
    try:
        with torch.no_grad():
            for chunk in range(n_chunks):
                lo, hi = chunk * chunk_size, min(n, (chunk + 1) * chunk_size)
                # A copy for sequences too: f may work in place on its input.
                x = path.points[lo:hi].copy() if isinstance(path, SequencePath) else path.evaluate(t[lo:hi])
                x_shape = tuple(x.shape)
                if input_type == "torch":
                    x_in = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64)).to(device)
                    x_desc = f"a torch.float64 tensor of shape {x_shape} on {device}"
                else:
                    x_in = np.array(x, dtype=np.float64)
                    x_desc = f"a float64 numpy array of shape {x_shape}"
                try:
                    out = model(x_in)
                except Exception as exc:
                    raise ModelEvaluationError(
                        f"f raised {type(exc).__name__} on chunk {chunk + 1} of {n_chunks} "
                        f"(samples {lo} to {hi - 1}), given {x_desc}: {exc}. Check that f accepts a batch "
                        f"of inputs of shape (batch, *{path.input_shape}) as given by the path."
                    ) from exc
                arr = _to_numpy_output(out, hi - lo, chunk, n_chunks, x_shape)
                if outputs is None:
                    outputs = np.empty((n,) + arr.shape[1:], dtype=np.float64)
                elif arr.shape[1:] != outputs.shape[1:]:
                    raise SignalError(
                        f"f returned outputs of shape {tuple(arr.shape)} on chunk {chunk + 1} of {n_chunks}, "
                        f"but per-input shape {tuple(outputs.shape[1:])} before; every output must have "
                        "the same shape."
                    )
                if not np.isfinite(arr).all():
                    bad = np.argwhere(~np.isfinite(arr))[0]
                    k = lo + int(bad[0])
                    component = f", component {tuple(int(i) for i in bad[1:])}" if arr.ndim > 1 else ""
                    raise SignalError(
                        f"f returned NaN or infinite outputs, first at sample {k} (t = {path.origin + t[k]:.6g})"
                        f"{component}; SMP needs finite outputs. "
                        "Check the model and the inputs along the path."
                    )
                outputs[lo:hi] = arr
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()

    from .grid import smp as grid_smp

    result = grid_smp(outputs, dt=dt, axis=0, noise=noise)
    value = result.value
    total = float(np.sum(value))
    resolved = bool(np.all(result.resolved))
    return MeasureResult(
        value=value,
        total=total,
        resolved=resolved,
        smp=result,
        t=path.origin + t,
        outputs=outputs if keep_outputs else None,
        dt=dt,
        n_points=n,
        input_shape=tuple(path.input_shape),
        out_shape=tuple(outputs.shape[1:]),
        path=path,
    )
