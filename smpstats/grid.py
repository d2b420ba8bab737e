"""SMP of sampled signals: the grid estimator (DESIGN §2).

For samples ``y[n] = y(t0 + n h)`` the second difference
``d[n] = y[n+1] - 2 y[n] + y[n-1]`` is zero on a linear piece; a kink of slope
jump ``D`` between two samples puts a total of ``D h`` into at most two
neighbouring entries of ``d``. Smooth curvature adds an ``O(h**2)`` background
that varies slowly from sample to sample, and white measurement noise of std
``e`` adds noise of std ``sqrt(6) e``.

The estimator works in four vectorised steps over all series at once:

1. *Candidates*: samples next to a jump of ``d`` (a third difference) larger
   than a robust multiple of its typical size. A smooth background changes
   ``d`` by ``O(h**3)`` per sample, a kink by ``O(h)``.
2. *Baseline*: across each run of candidates the background is interpolated
   linearly from the nearest non-candidate samples on both sides; the residual
   ``r = d - baseline`` holds the kink mass.
3. *Peaks*: residuals larger than the detection threshold
   (``z * sqrt(6) * noise`` plus a multiple of the local background level)
   are grouped into runs of one sign; adjacent smaller residuals of the same
   sign (the part of a kink that fell on the neighbouring sample) join them.
   Each peak gives a slope jump ``sum(r) / h`` and a position (centroid).
4. *Resolution*: the estimate is repeated with the step doubled. Kinks are
   invariant under the change, curvature and noise leaking into peaks are
   not, and dense kinks that share sampling steps cancel more at ``2 h``.

Exact zeros (flat ReLU stretches) are excluded from the robust scales.

The steps are written here in vectorised numpy (the reference, and the
fallback where numba is missing); :mod:`smpstats._smp_kernel` runs the same
operations compiled, one series at a time, and is used when it loads. Both
give the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import logging

import numpy as np

from ._validation import as_signal, check_real, check_step, step_from_times
from .errors import InputError

__all__ = ["smp", "SMPResult"]

logger = logging.getLogger(__name__)

#: 1 / Phi^{-1}(3/4): turns a median absolute value into a normal std.
_MAD_TO_STD = 1.482602218505602
#: Std of the third difference and of the second difference of unit white noise.
_NOISE_STD_E = np.sqrt(20.0)
_NOISE_STD_D = np.sqrt(6.0)
#: Round-off floor, relative to the series' largest magnitude.
_ROUNDOFF = 1024 * np.finfo(np.float64).eps
#: A jump of d is a candidate kink if it departs from the straight line through
#: the jumps two samples away by this fraction of its size (a smooth background
#: follows that line), or by more than the second factor times the candidate
#: threshold (kinks so dense that every jump of d belongs to one).
_SPIKE_FRACTION = 0.5
_LARGE_JUMP = 8.0
#: A run of candidates without a peak but with a residual above this many noise
#: std of d counts as a possible kink below the detection limit.
_WEAK_SIGMA = 4.0
#: Elements of y per block of rows processed together (keeps temporaries in cache).
_BLOCK_ELEMENTS = 1 << 18
#: At most this many third differences per series enter the robust scale.
_SCALE_SUBSAMPLE = 1024
#: The compiled kernel module once loaded (False where it cannot be).
_KERNEL = None


@dataclass(frozen=True)
class _Peaks:
    series: np.ndarray  # flat series index, shape (n_peaks_total,)
    time: np.ndarray  # kink position, time units from the first sample
    jump: np.ndarray  # signed slope jump, y units per time unit
    snr: np.ndarray  # |jump| h / (sqrt(6) noise)


@dataclass(frozen=True, repr=False)
class SMPResult:
    """SMP estimate of a batch of sampled signals.

    Scalars for a 1-D input; otherwise arrays of the batch shape (the input
    shape without its time axis).

    Attributes
    ----------
    value : float or array of shape batch
        SMP: sum of the magnitudes of the slope jumps (y units per time unit).
    n_peaks : int or array of shape batch
        Number of kinks detected.
    resolved : bool or array of shape batch
        Whether the estimate holds when the step is doubled.
    reason : str or array of str
        Why an estimate is not resolved ("" when it is).
    value_coarse : float or array
        The same estimate at twice the step (used for ``resolved``).
    noise : float or array
        Noise std (y units) used for the detection threshold: given or estimated.
    detection_limit : float or array
        Smallest |slope jump| detected wherever it falls between samples
        (y units per time unit); smaller kinks may be missed.
    n_below_limit : int or array
        Candidate kinks that stood out from the noise (> 4 sigma of d) but not
        enough to be counted: possible kinks below the detection limit.
    dt : float
        Sampling step (time units).
    n_times : int
        Samples per series.
    """

    value: Any
    n_peaks: Any
    resolved: Any
    reason: Any
    value_coarse: Any
    noise: Any
    detection_limit: Any
    n_below_limit: Any
    dt: float
    n_times: int
    batch_shape: tuple[int, ...]
    _peaks: _Peaks = field(compare=False)

    @property
    def total(self) -> float:
        """Sum of ``value`` over the batch."""
        return float(np.sum(self.value))

    def peaks_frame(self):
        """Return every detected kink as a :class:`pandas.DataFrame`.

        Columns: one ``index_<k>`` per batch axis (absent for 1-D input),
        ``time`` (time units from the first sample), ``jump`` (signed slope
        jump) and ``snr`` (peak mass over the noise std of ``d``).
        """
        import pandas as pd

        p = self._peaks
        columns = {}
        if self.batch_shape:
            for axis, idx in enumerate(np.unravel_index(p.series, self.batch_shape)):
                columns[f"index_{axis}"] = idx
        columns.update(time=p.time, jump=p.jump, snr=p.snr)
        return pd.DataFrame(columns)

    def to_frame(self):
        """One row per series: value, n_peaks, resolved, reason, noise, detection limit."""
        import pandas as pd

        columns = {}
        if self.batch_shape:
            grid = np.indices(self.batch_shape).reshape(len(self.batch_shape), -1)
            for axis, idx in enumerate(grid):
                columns[f"index_{axis}"] = idx
        for name in ("value", "n_peaks", "resolved", "reason", "value_coarse", "noise", "detection_limit", "n_below_limit"):
            columns[name] = np.ravel(getattr(self, name))
        return pd.DataFrame(columns)

    def to_dict(self) -> dict:
        """Plain-Python summary (lists for batched input)."""
        out = {}
        for name in ("value", "n_peaks", "resolved", "reason", "value_coarse", "noise", "detection_limit", "n_below_limit"):
            v = getattr(self, name)
            out[name] = v.tolist() if isinstance(v, np.ndarray) else v
        out.update(dt=self.dt, n_times=self.n_times)
        return out

    def summary(self) -> str:
        """Plain-words report, ending with the sensible next step."""
        n_series = int(np.prod(self.batch_shape, dtype=np.int64))
        resolved = np.asarray(self.resolved)
        lines = [
            f"SMP of {n_series} series of {self.n_times} samples (step {self.dt:g}):",
            f"  SMP      {_fmt(self.value)}  (sum of |slope jumps|, y units per time unit)",
            f"  kinks    {_fmt(self.n_peaks)}",
            f"  noise    {_fmt(self.noise)}  -> kinks smaller than {_fmt(self.detection_limit)} may be missed",
            f"  resolved {int(resolved.sum())} of {n_series}",
        ]
        if np.any(np.asarray(self.n_below_limit) > 0):
            lines.append(f"  {int(np.sum(self.n_below_limit))} possible kink(s) below the detection limit")
        reasons = sorted({r for r in np.ravel(self.reason) if r})
        for r in reasons[:3]:
            lines.append(f"  not resolved: {r}")
        if not resolved.all():
            lines.append("Next: sample more densely (smaller dt) or use smpstats.exact_smp for piecewise-linear torch models.")
        else:
            lines.append("Next: .peaks_frame() lists every kink; .to_frame() gives one row per series.")
        return "\n".join(lines)

    def __repr__(self) -> str:
        if not self.batch_shape:
            return (
                f"SMPResult(value={self.value:.6g}, n_peaks={self.n_peaks}, resolved={self.resolved}, "
                f"noise={self.noise:.3g}, dt={self.dt:g}, n_times={self.n_times})"
            )
        resolved = np.asarray(self.resolved)
        return (
            f"SMPResult(batch_shape={self.batch_shape}, total={self.total:.6g}, "
            f"n_peaks={int(np.sum(self.n_peaks))}, resolved={int(resolved.sum())}/{resolved.size}, "
            f"dt={self.dt:g}, n_times={self.n_times})"
        )


def _fmt(v) -> str:
    a = np.asarray(v, dtype=float)
    if a.ndim == 0:
        return f"{float(a):.6g}"
    return f"mean {a.mean():.6g} (min {a.min():.6g}, max {a.max():.6g})"


def smp(
    y,
    dt: float = 1.0,
    *,
    axis: int = -1,
    t=None,
    noise=None,
    threshold: float = 5.0,
    background_factor: float = 2.0,
    resolution_rtol: float = 0.05,
) -> SMPResult:
    """Estimate the SMP (total size of all slope jumps) of sampled signals.

    Parameters
    ----------
    y : array-like or torch.Tensor of shape (..., n_times, ...)
        Samples on a uniform grid; time runs along ``axis``. At least 3
        samples; finite values.
    dt : float, default=1.0
        Sampling step (time units per sample). Ignored when ``t`` is given.
    axis : int, default=-1
        The time axis of ``y``.
    t : array of shape (n_times,), optional
        Time stamps; must be increasing and uniform. Sets ``dt``.
    noise : float or array broadcastable to the batch shape, optional
        Std of white measurement noise on ``y`` (y units). Estimated from the
        third differences (robustly, exact zeros excluded) when omitted.
    threshold : float, default=5.0
        Detection threshold in noise standard deviations of ``d``.
    background_factor : float, default=2.0
        A peak must also exceed this multiple of the local smooth background
        of ``d`` (curvature times h**2) next to it.
    resolution_rtol : float, default=0.05
        Largest relative change of the estimate, when the step is doubled,
        for it to count as resolved.

    Returns
    -------
    SMPResult

    Notes
    -----
    Exact, to float64 round-off, on piecewise-linear signals whose kinks are
    at least 3 samples apart. The ``resolved`` check needs at least 5
    samples, and is strict: kinks closer than about 6 samples merge at the
    doubled step and make an estimate unresolved even where it is exact.

    Large batches are measured on ``NUMBA_NUM_THREADS`` threads (environment
    variable; default: the number of CPUs); the results do not depend on it. The first call in a new environment compiles the kernel
    (seconds; cached on disk afterwards).
    """
    arr = as_signal(y, axis=axis, name="y")
    n_times = arr.shape[-1]
    dt = step_from_times(t, n_times) if t is not None else check_step(dt)
    threshold = check_real(threshold, "threshold", minimum=0.0, strict_minimum=True)
    background_factor = check_real(background_factor, "background_factor", minimum=0.0)
    resolution_rtol = check_real(resolution_rtol, "resolution_rtol", minimum=0.0)
    batch_shape = arr.shape[:-1]
    flat = arr.reshape(-1, n_times)
    if noise is not None:
        noise = _broadcast_noise(noise, batch_shape).reshape(-1)

    measure = _measure_compiled if _kernel() is not None else _measure_numpy
    noise_used, fine, coarse_value, dense = measure(flat, dt, noise, threshold, background_factor)
    if n_times >= 5:
        resolved, reason = _judge(fine, coarse_value, dense, resolution_rtol)
    else:
        coarse_value = np.full(flat.shape[0], np.nan)
        resolved = np.zeros(flat.shape[0], dtype=bool)
        reason = np.full(flat.shape[0], "fewer than 5 samples: the step cannot be doubled to check resolution", dtype=object)

    def shaped(a, kind=None):
        a = np.asarray(a)
        if kind is not None:
            a = a.astype(kind)
        return a.reshape(batch_shape) if batch_shape else a.reshape(()).item()

    return SMPResult(
        value=shaped(fine.value),
        n_peaks=shaped(fine.n_peaks, np.int64),
        resolved=shaped(resolved, bool),
        reason=shaped(reason, object) if batch_shape else str(reason[0]),
        value_coarse=shaped(coarse_value),
        noise=shaped(noise_used),
        detection_limit=shaped(fine.detection_limit),
        n_below_limit=shaped(fine.n_below_limit, np.int64),
        dt=dt,
        n_times=n_times,
        batch_shape=tuple(batch_shape),
        _peaks=fine.peaks,
    )


def _kernel():
    """The compiled kernel module, or None where numba cannot be imported (the numpy path is used)."""
    global _KERNEL
    if _KERNEL is None:
        try:
            from . import _smp_kernel
        except ImportError as exc:  # numba missing or not built for this numpy
            logger.info("smp: compiled kernel unavailable (%s); using the numpy estimator.", exc)
            _KERNEL = False
        else:
            _KERNEL = _smp_kernel
    return _KERNEL or None


def _measure_numpy(flat, dt, noise, threshold, background_factor):
    """(noise used, estimate at dt, value at 2 dt or None, dense flags) of the rows of ``flat``, in numpy.

    Rows are processed in blocks that fit in cache; everything inside a block is vectorised.
    """
    n_series, n_times = flat.shape
    block = max(1, _BLOCK_ELEMENTS // n_times)
    parts = []
    for lo in range(0, n_series, block):
        rows = flat[lo : lo + block]
        scale_y = np.max(np.abs(rows), axis=-1)
        noise_rows = None if noise is None else noise[lo : lo + block]
        noise_used, fine = _estimate(rows, dt, noise_rows, threshold, background_factor, scale_y)
        coarse = None
        dense = np.zeros(rows.shape[0], dtype=bool)
        if n_times >= 5:
            _, coarse = _estimate(
                rows[:, ::2], 2 * dt, noise_used, threshold, background_factor, scale_y, value_only=True
            )
            if noise is None:
                dense = _looks_dense(rows, fine.roughness, coarse.roughness, scale_y)
        parts.append((lo, noise_used, fine, coarse, dense))
    offsets = [p[0] for p in parts]
    fine = _concat([p[2] for p in parts], offsets)
    coarse_value = np.concatenate([p[3].value for p in parts]) if n_times >= 5 else None
    return np.concatenate([p[1] for p in parts]), fine, coarse_value, np.concatenate([p[4] for p in parts])


def _thread_count() -> int:
    """Threads for the compiled kernel: ``numba.config.NUMBA_NUM_THREADS`` (the environment variable, else the CPUs).

    Read from the configuration rather than ``numba.get_num_threads``, which
    would start numba's own thread pool (unused here: blocks of rows run on
    Python threads, as the kernel releases the GIL).
    """
    import numba

    return max(1, int(numba.config.NUMBA_NUM_THREADS))


def _measure_compiled(flat, dt, noise, threshold, background_factor):
    """As :func:`_measure_numpy`, one series at a time in the compiled kernel (same numbers).

    Large batches are split into consecutive blocks of rows run on several
    threads; every series is computed alone and the peaks are joined in
    row order, so the results do not depend on the thread count.
    """
    kernel = _kernel()
    n_series, n_times = flat.shape
    flat = np.ascontiguousarray(flat)
    with_coarse = n_times >= 5
    consts = np.array([_MAD_TO_STD, _NOISE_STD_E, _NOISE_STD_D, _SPIKE_FRACTION, _LARGE_JUMP, _WEAK_SIGMA,
                       3.0 * _NOISE_STD_E * np.sqrt(2.0), _SCALE_SUBSAMPLE])
    out_float = np.zeros((n_series, 7))
    out_int = np.zeros((n_series, 4), dtype=np.int64)
    noise_in = np.zeros(n_series) if noise is None else np.ascontiguousarray(noise)

    def run(lo: int, hi: int) -> list[np.ndarray]:  # rows lo:hi; returns their peaks
        capacity = max(1024, 4 * (hi - lo))
        peaks = [np.empty(capacity, dtype=np.int64), np.empty(capacity), np.empty(capacity), np.empty(capacity)]
        row, n_out = lo, 0
        while True:
            row, n_out = kernel.smp_rows(flat, dt, noise_in, noise is not None, threshold, background_factor,
                                         with_coarse, consts, _ROUNDOFF, row, hi, out_float, out_int, *peaks, n_out)
            if row == hi:
                return [p[:n_out] for p in peaks]
            capacity = 2 * capacity + n_times  # the buffers filled up: grow and go on from that row
            peaks = [np.concatenate([p[:n_out], np.empty(capacity - n_out, dtype=p.dtype)]) for p in peaks]

    n_threads = min(_thread_count(), n_series) if flat.size >= _BLOCK_ELEMENTS else 1
    if n_threads > 1:
        from concurrent.futures import ThreadPoolExecutor

        bounds = np.linspace(0, n_series, min(n_series, 4 * n_threads) + 1).astype(int)
        with ThreadPoolExecutor(n_threads) as pool:
            parts = list(pool.map(run, bounds[:-1], bounds[1:]))
        peaks = [np.concatenate(column) for column in zip(*parts)]
    else:
        peaks = [p.copy() for p in run(0, n_series)]
    value, roughness, noise_used, t_sig, value_coarse, roughness_coarse, scale_y = np.ascontiguousarray(out_float.T)
    n_peaks, n_below, n_sig, n_wide = np.ascontiguousarray(out_int.T)
    fine = _Estimate(
        value=value,
        n_peaks=n_peaks,
        n_below_limit=n_below,
        detection_limit=2.0 * t_sig / dt,
        peak_fraction=n_sig / max(n_times - 2, 1),
        n_wide=n_wide,
        roughness=roughness,
        peaks=_Peaks(*peaks),
    )
    dense = np.zeros(n_series, dtype=bool)
    if with_coarse and noise is None:
        dense = _looks_dense(flat, roughness, roughness_coarse, scale_y)
    return noise_used, fine, (value_coarse if with_coarse else None), dense


def _broadcast_noise(noise, batch_shape) -> np.ndarray:
    try:
        a = np.asarray(noise, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"noise must be a non-negative number or array (y units); got {noise!r}.") from None
    if not np.all(np.isfinite(a)) or np.any(a < 0):
        shown = a.item() if a.ndim == 0 else noise
        raise InputError(f"noise must be finite and >= 0 (std of the measurement noise, y units); got {shown!r}.")
    try:
        return np.broadcast_to(a, batch_shape).astype(np.float64)
    except ValueError:
        raise InputError(
            f"noise of shape {a.shape} does not broadcast to the batch shape {tuple(batch_shape)} "
            "(the shape of y without its time axis)."
        ) from None


@dataclass(frozen=True)
class _Estimate:
    value: np.ndarray
    n_peaks: np.ndarray
    n_below_limit: np.ndarray
    detection_limit: np.ndarray
    peak_fraction: np.ndarray
    n_wide: np.ndarray  # curved-background bumps left out (step too coarse)
    roughness: np.ndarray  # robust std of the third differences (y units)
    peaks: _Peaks


def _masked_quantile(values: np.ndarray, valid: np.ndarray, q: float) -> np.ndarray:
    """Per-row ``q`` quantile (lower order statistic) of ``values`` where ``valid``; 0 where none."""
    n = values.shape[-1]
    out = np.zeros(values.shape[0])
    full = valid.all(axis=-1)
    if full.any():  # O(n) selection where every entry is valid
        k = int(np.floor(q * (n - 1)))
        out[full] = np.partition(values[full], k, axis=-1)[:, k]
    if not full.all():
        part = ~full
        sub = np.sort(np.where(valid[part], values[part], np.inf), axis=-1)
        n_valid = valid[part].sum(axis=-1)
        k = np.clip(np.floor(q * (n_valid - 1)).astype(np.int64), 0, None)
        picked = np.take_along_axis(sub, k[:, None], axis=-1)[:, 0]
        out[part] = np.where(n_valid > 0, picked, 0.0)
    return out


def _masked_median_abs(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Per-row median of ``|values|`` where ``valid``, in O(n) (0 where none valid).

    Invalid entries are replaced by -1 at even and +inf at odd positions, so
    that the middle order statistic of the row is the median of the valid
    entries to within half the imbalance of the two (a rank or so per run of
    invalid entries), found by one partition.
    """
    work = np.abs(values)
    invalid = ~valid
    if invalid.any():
        fill = np.where(np.arange(work.shape[-1]) % 2 == 0, -1.0, np.inf)
        np.copyto(work, np.broadcast_to(fill, work.shape), where=invalid)
    mid = work.shape[-1] // 2
    part = np.partition(work, mid, axis=-1)[:, mid]
    return np.where(invalid.all(axis=-1), 0.0, part)


def _robust_scale(e: np.ndarray, stride: int = 1) -> np.ndarray:
    """Normal-equivalent std (from the median absolute value) of each row of ``e[:, ::stride]``."""
    sub = e[:, ::stride]
    return _MAD_TO_STD * _masked_median_abs(sub, np.ones(sub.shape, dtype=bool))


def _window_slices(n: int, n_windows: int) -> tuple[slice, int]:
    """Slice of up to ``n_windows`` window starts spread over ``n - 3`` positions, and their spacing.

    From a spacing of 4 on the windows of four samples do not overlap, so the
    third differences of white noise are independent.
    """
    spacing = max(1, (n - 3) // n_windows)
    count = min(n_windows, -(-(n - 3) // spacing))
    return slice(0, spacing * (count - 1) + 1, spacing), spacing


def _roughness_and_noise(rows: np.ndarray, d: np.ndarray, e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Robust scale of the third differences and white-noise std estimate, per row.

    ``d`` and ``e`` are the second and third differences of ``rows``. Both
    scales come from up to ``_SCALE_SUBSAMPLE`` windows of four samples
    spread over each row. Windows where y is constant (flat ReLU stretches,
    exact zeros: d = e = 0 and equal neighbours) are left out; rows where fewer
    than a quarter of the windows remain are redone from all their windows.
    Third differences of white noise of std s have std sqrt(20) s; a smooth
    background adds only O(h**3), a kink a few entries. When kinks are so
    close that few third differences are clean, the second differences still
    vanish between them, which noise never does: a low quantile of |d| far
    below what the third differences imply reveals a noise-free
    piecewise-linear signal, and sets both scales.
    """
    n_series, n = rows.shape
    if n < 4:
        zero = np.zeros(n_series)
        return zero, zero
    cols, spacing = _window_slices(n, _SCALE_SUBSAMPLE)
    d1, e1 = d[:, cols], e[:, cols]
    flat_d = (d1 == 0) & (rows[:, cols] == rows[:, 1:][:, cols])
    flat_e = flat_d & (e1 == 0)
    scale_e = _MAD_TO_STD * _masked_median_abs(e1, ~flat_e)
    sub = slice(None, None, -(-d1.shape[-1] // 256))  # at most 256 second differences for the low quantile
    low_d = _masked_quantile(np.abs(d1[:, sub]), ~flat_d[:, sub], 0.1)
    sparse = (~flat_e).sum(axis=-1) < 0.25 * e1.shape[-1]
    if sparse.any() and spacing > 1:
        d_all, e_all, y_all = d[sparse], e[sparse], rows[sparse]
        flat_d_all = (d_all == 0) & (y_all[:, :-2] == y_all[:, 1:-1])
        flat_e_all = flat_d_all[:, :-1] & (e_all == 0)
        scale_e[sparse] = _MAD_TO_STD * _masked_quantile(np.abs(e_all), ~flat_e_all, 0.5)
        low_d[sparse] = _masked_quantile(np.abs(d_all), ~flat_d_all, 0.1)
    noise = scale_e / _NOISE_STD_E
    # 10 % quantile of |N(0, 1)| is 0.12566.
    noise_d = low_d / (0.12566 * _NOISE_STD_D)
    exact = noise_d < 0.25 * noise
    noise = np.where(exact, noise_d, noise)
    scale_e = np.where(exact, _NOISE_STD_E * noise_d, scale_e)
    return scale_e, noise


def _robust_correlation(e: np.ndarray, lag: int) -> np.ndarray:
    """Robust lag correlation of each row of ``e`` (from MADs of sums and differences)."""
    if e.shape[-1] <= lag:
        return np.full(e.shape[0], np.nan)
    stride = max(1, (e.shape[-1] - lag) // 256)
    a, b = e[:, :-lag:stride], e[:, lag::stride]
    plus = _robust_scale(a + b, 1) ** 2
    minus = _robust_scale(a - b, 1) ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(plus + minus > 0, (plus - minus) / (plus + minus), np.nan)


def _looks_dense(rows: np.ndarray, rough_fine: np.ndarray, rough_coarse: np.ndarray, scale_y: np.ndarray) -> np.ndarray:
    """Whether the roughness of each row has the signature of many kinks per step.

    Two signatures, both of the third differences ``e``: how their scale
    grows when the step doubles (white noise x1, kinks so dense that several
    share each step x2**1.5, smooth curvature x8), and their lag-1 and lag-2
    correlations (noise (-0.75, 0.30), dense kinks (-1/3, -1/6), smooth
    (1, 1)). Mixtures of noise and smooth curvature can match the first but
    stay on the line between (-0.75, 0.30) and (1, 1), with lag-2 >= 0.3
    (the cut is at 0.15).
    The correlations are computed only for rows whose scale growth is
    ambiguous.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        growth = rough_coarse / rough_fine
    ambiguous = (growth > 1.8) & (growth < 5.0) & (rough_fine > 1e6 * _ROUNDOFF * scale_y)
    dense = np.zeros(rows.shape[0], dtype=bool)
    if ambiguous.any():
        e = np.diff(rows[ambiguous], 3, axis=-1)
        rho1 = _robust_correlation(e, 1)
        rho2 = _robust_correlation(e, 2)
        dense[ambiguous] = (rho1 > -0.6) & (rho1 < 0.3) & (rho2 < 0.15)
    return dense


def _estimate(flat, dt, noise, threshold, background_factor, scale_y, *, value_only=False):
    """Return (noise std, _Estimate) for rows of ``flat`` sampled at step ``dt``.

    With ``value_only`` the peak table, the weak-candidate count and the peak
    fraction are left empty (the doubled-step pass needs only values).
    """
    n_series, n_times = flat.shape
    floor = _ROUNDOFF * scale_y  # round-off level of d and its differences, per series
    d = np.diff(flat, 2, axis=-1)  # (n_series, m), d[:, j] sits at sample j + 1
    m = d.shape[-1]
    e = d[:, 1:] - d[:, :-1]
    scale_e, noise_est = _roughness_and_noise(flat, d, e)
    noise_used = noise_est if noise is None else noise
    sigma_d = _NOISE_STD_D * noise_used
    t_sig = np.maximum(threshold * sigma_d, floor)
    # A kink half as large as the peak threshold must become a candidate.
    t_cand = np.maximum(np.minimum(3.0 * np.maximum(scale_e, _NOISE_STD_E * noise_used), 0.8 * t_sig), floor)

    # 1. candidates: samples on either side of a jump of d that is large, or that
    #    departs from the trend of the jumps two samples away (a smooth background
    #    changes slowly, so its third differences follow that trend).
    t_col = t_cand[:, None]
    jumps = e > t_col
    jumps |= e < -t_col
    cand = np.zeros((n_series, m + 1), dtype=bool)  # padded column keeps runs inside a row
    k = np.flatnonzero(jumps)
    if k.size:
        n_e = m - 1
        col = k % n_e
        eflat = e.reshape(-1)
        before = np.where(col >= 2, eflat[np.maximum(k - 2, 0)], np.nan)
        after = np.where(col < n_e - 2, eflat[np.minimum(k + 2, eflat.size - 1)], np.nan)
        trend = np.where(np.isnan(before), after, np.where(np.isnan(after), before, 0.5 * (before + after)))
        size = np.abs(eflat[k])
        deviation = np.where(np.isnan(trend), size, np.abs(eflat[k] - trend))
        keep = (deviation > _SPIKE_FRACTION * size) | (deviation > _LARGE_JUMP * t_cand[k // n_e])
        k = k[keep]
        # the two samples on either side of the jump, widened by one sample each way so
        # that the part of a kink that fell on a neighbouring sample never anchors the baseline
        row_start = k // n_e * (m + 1)
        padded = k + k // n_e * 2  # e index -> padded sample index of its left sample
        flat_cand = cand.reshape(-1)
        flat_cand[np.maximum(padded - 1, row_start)] = True
        flat_cand[padded] = True
        flat_cand[padded + 1] = True
        flat_cand[np.minimum(padded + 2, row_start + m - 1)] = True
    if m == 1:
        cand[:, 0] = np.abs(d[:, 0]) > t_sig
    idx = np.flatnonzero(cand)
    if idx.size == 0:
        return noise_used, _empty_estimate(n_series, t_sig / dt, scale_e)
    width = m + 1
    dflat = d.reshape(-1)

    def d_at(padded_index):  # value of d at an index of the padded (n_series, m + 1) layout
        return dflat[padded_index - padded_index // width]

    # 2. baseline: interpolate d across each run from its non-candidate neighbours.
    new_run = np.ones(idx.shape, dtype=bool)
    new_run[1:] = idx[1:] != idx[:-1] + 1
    run_id = np.cumsum(new_run) - 1
    starts = idx[new_run]
    ends = idx[np.r_[new_run[1:], True]]
    row = starts // width
    left = starts - 1
    right = ends + 1
    has_left = (left >= 0) & (left // width == row)
    has_right = (right % width) < m  # the padded column is not a sample
    d_left = np.where(has_left, d_at(np.where(has_left, left, starts)), 0.0)
    d_right = np.where(has_right, d_at(np.where(has_right, right, ends)), 0.0)
    d_left = np.where(has_left, d_left, np.where(has_right, d_right, 0.0))
    d_right = np.where(has_right, d_right, d_left)
    # Slopes of the background just outside the run (jumps of d between the anchor
    # and the sample beyond it), for a cubic Hermite baseline where the background's
    # curvature stands out from the noise, and a straight line elsewhere.
    outer_left = left - 1
    outer_right = right + 1
    has_outer_left = has_left & (outer_left >= 0) & (outer_left // width == row)
    has_outer_right = has_right & ((outer_right % width) < m) & (outer_right // width == row)
    e_left = np.where(has_outer_left, d_left - d_at(np.where(has_outer_left, outer_left, starts)), 0.0)
    e_right = np.where(has_outer_right, d_at(np.where(has_outer_right, outer_right, ends)) - d_right, 0.0)
    span = (right - left).astype(np.float64)
    one_sided = has_left != has_right
    change = np.where(one_sided, np.abs(e_left + e_right) * 4, np.abs(e_right - e_left))
    change = np.maximum(change - 3.0 * _NOISE_STD_E * np.sqrt(2.0) * noise_used[row], 0.0)  # beyond the noise
    curved = (change > 0) & has_outer_left & has_outer_right
    u = (idx - left[run_id]) / span[run_id]
    u2, u3 = u * u, u * u * u
    w_left = 2 * u3 - 3 * u2 + 1  # cubic Hermite basis (the right weight is 1 - w_left)
    hermite = np.where(curved, span, 0.0)[run_id] * (
        (u3 - 2 * u2 + u) * e_left[run_id] + (u3 - u2) * e_right[run_id]
    )
    linear = np.where(curved[run_id], w_left, 1 - u)
    baseline = linear * d_left[run_id] + (1 - linear) * d_right[run_id] + hermite
    resid = d_at(idx) - baseline
    # What the baseline may still miss of the background: a quarter of the linear
    # interpolation error |e_R - e_L| L / 8 where the Hermite form is used, all of it elsewhere.
    curvature = change * span / 8 * np.where(curved, 0.25, 1.0)
    local_bg = (background_factor * np.maximum(np.abs(d_left), np.abs(d_right)) + 2 * curvature)[run_id]
    srow = idx // width

    # 3. peaks: significant residuals grouped by sign; same-sign neighbours join.
    limit = t_sig[srow] + local_bg
    sig = np.abs(resid) > limit
    sign = np.sign(resid)
    adjacent = np.zeros(idx.shape, dtype=bool)
    adjacent[1:] = (idx[1:] == idx[:-1] + 1) & (sign[1:] == sign[:-1])
    core_start = sig & ~(adjacent & np.r_[False, sig[:-1]])
    core_id = np.cumsum(core_start) - 1
    group = np.where(sig, core_id, -1)
    # a non-significant sample joins the significant same-sign neighbour on its left, else on its right
    joins_left = ~sig & adjacent & np.r_[False, sig[:-1]]
    group[joins_left] = core_id[np.flatnonzero(joins_left) - 1]
    adj_right = np.r_[adjacent[1:], False]
    joins_right = ~sig & ~joins_left & adj_right & np.r_[sig[1:], False]
    group[joins_right] = core_id[np.flatnonzero(joins_right) + 1]

    n_groups = int(core_start.sum())
    member = group >= 0
    g = group[member]
    mass = np.bincount(g, weights=resid[member], minlength=n_groups)
    group_series = srow[member][np.r_[True, g[1:] != g[:-1]]] if g.size else np.zeros(0, dtype=np.int64)
    # A kink puts its mass into at most two samples: a group with three or more
    # significant samples whose largest residual holds less than 40 % of its mass
    # is a curved background that the step does not resolve, not a kink.
    largest = np.zeros(n_groups)
    np.maximum.at(largest, g, np.abs(resid[member]))
    spread = np.bincount(g, weights=np.abs(resid[member]), minlength=n_groups)
    wide = (np.bincount(core_id[sig], minlength=n_groups) >= 3) & (largest < 0.4 * spread)
    n_wide = np.bincount(group_series[wide], minlength=n_series)
    kept = ~wide
    if value_only:
        estimate = _empty_estimate(n_series, t_sig / dt, scale_e)
        estimate.value[:] = np.bincount(group_series[kept], weights=np.abs(mass[kept]) / dt, minlength=n_series)
        return noise_used, estimate
    sample_time = ((idx[member] % width) + 1) * dt
    centroid = np.bincount(g, weights=resid[member] * sample_time, minlength=n_groups) / np.where(mass != 0, mass, 1.0)
    peak_series = group_series[kept]
    mass = mass[kept]
    centroid = centroid[kept]
    jump = mass / dt
    value = np.bincount(peak_series, weights=np.abs(jump), minlength=n_series).astype(np.float64)
    n_peaks = np.bincount(peak_series, minlength=n_series)
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = np.where(sigma_d[peak_series] > 0, np.abs(mass) / sigma_d[peak_series], np.inf)

    # possible kinks: runs whose largest residual beats _WEAK_SIGMA sigma but no peak.
    n_runs = starts.size
    weak = np.bincount(run_id, weights=(np.abs(resid) > _WEAK_SIGMA * sigma_d[srow]) & ~member, minlength=n_runs) > 0
    weak &= np.bincount(run_id, weights=member, minlength=n_runs) == 0
    n_below = np.bincount(row[weak], minlength=n_series)

    detection_limit = 2.0 * t_sig / dt  # a kink split evenly over two samples
    peaks = _Peaks(series=peak_series, time=centroid, jump=jump, snr=snr)
    estimate = _Estimate(
        value=value,
        n_peaks=n_peaks,
        n_below_limit=n_below,
        detection_limit=detection_limit,
        peak_fraction=np.bincount(srow[sig], minlength=n_series) / max(m, 1),
        n_wide=n_wide,
        roughness=scale_e,
        peaks=peaks,
    )
    return noise_used, estimate


def _concat(estimates: list[_Estimate], offsets: list[int]) -> _Estimate:
    """Join the estimates of consecutive row blocks (series indices shifted by the offsets)."""
    if len(estimates) == 1:
        return estimates[0]
    cat = np.concatenate
    peaks = _Peaks(
        series=cat([e.peaks.series + off for e, off in zip(estimates, offsets)]),
        time=cat([e.peaks.time for e in estimates]),
        jump=cat([e.peaks.jump for e in estimates]),
        snr=cat([e.peaks.snr for e in estimates]),
    )
    fields = ("value", "n_peaks", "n_below_limit", "detection_limit", "peak_fraction", "n_wide", "roughness")
    return _Estimate(**{f: cat([getattr(e, f) for e in estimates]) for f in fields}, peaks=peaks)


def _empty_estimate(n_series: int, half_limit: np.ndarray, roughness: np.ndarray) -> _Estimate:
    empty = np.zeros(0)
    return _Estimate(
        value=np.zeros(n_series),
        n_peaks=np.zeros(n_series, dtype=np.int64),
        n_below_limit=np.zeros(n_series, dtype=np.int64),
        detection_limit=2.0 * half_limit,
        peak_fraction=np.zeros(n_series),
        n_wide=np.zeros(n_series, dtype=np.int64),
        roughness=roughness,
        peaks=_Peaks(series=np.zeros(0, dtype=np.int64), time=empty, jump=empty, snr=empty),
    )


def _judge(fine: _Estimate, coarse_value: np.ndarray, dense_roughness: np.ndarray, rtol: float):
    """Resolution verdict per series from the estimates at h and 2h."""
    v1, v2 = fine.value, coarse_value
    tol = rtol * np.maximum(v1, v2) + 0.5 * fine.detection_limit * np.finfo(np.float64).eps ** 0.5
    dense = fine.peak_fraction > 0.25
    rough = dense_roughness & ~dense
    curved = (fine.n_wide > 0) & ~dense & ~rough
    drops = (v1 - v2 > tol) & ~dense & ~rough & ~curved
    grows = (v2 - v1 > tol) & ~dense & ~rough & ~curved
    resolved = ~(dense | rough | curved | drops | grows)
    reason = np.full(v1.shape, "", dtype=object)
    with np.errstate(divide="ignore", invalid="ignore"):
        change = np.where(v1 > 0, (v2 - v1) / v1, np.inf)
    for mask, text in (
        (dense, "dense kinks: {frac:.0%} of samples carry kinks; kinks this close cannot be told apart from "
                "kinks that share sampling steps and cancel, so the estimate may be a lower bound"),
        (rough, "dense kinks: the roughness between samples has the correlation signature of many kinks "
                "per sampling step, not of white noise, so kinks cancel within steps and are taken for noise; "
                "the estimate is a lower bound (pass noise= if the noise level is known)"),
        (curved, "the step does not resolve the smooth curvature: {wide} bump(s) of the second differences "
                  "wider than a kink were left out; sample more densely"),
        (drops, "estimate drops by {pct:.0%} when the step is doubled: kinks closer than a few samples "
                "merge or cancel (dense kinks); the estimate is likely a lower bound"),
        (grows, "estimate grows by {pct:.0%} when the step is doubled: curvature or noise is being "
                "counted as kinks"),
    ):
        rows = np.flatnonzero(mask)
        if rows.size == 0:
            continue
        for i, frac, wide, pct in zip(rows.tolist(), fine.peak_fraction[rows].tolist(), fine.n_wide[rows].tolist(),
                                      np.where(np.isfinite(change[rows]), np.abs(change[rows]), 1.0).tolist()):
            reason[i] = text.format(frac=frac, wide=wide, pct=pct)
    return resolved, reason
