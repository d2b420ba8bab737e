"""Speed of the grid estimator, measured side by side in one run.

Targets (issue: foundation):
- ``smp`` on a 4096 x 4096 float64 array: at most 4x one ``np.diff(y, 2)`` pass;
- at least 20x faster than a per-row ``scipy.signal.find_peaks`` loop on the
  same data.

``smp`` is timed on one thread (the fair comparison with the single-threaded
``np.diff`` pass and loops), on ``NUMBA_NUM_THREADS`` threads (blocks of rows
in parallel; same results), and with its vectorised numpy path (the
reference and fallback where numba is missing; same results). The loops
(second differences per row, peaks of |d| above a robust threshold) are the
natural hand-written alternative; they lack background removal, split-peak
merging and the resolution check:

- ``height``: ``find_peaks(|d|, height=5 * robust std of |d|)``, at the step h only;
- ``prominence``: the same with ``prominence=`` (peaks over their local background);
- ``h+2h``: the height loop at the steps h and 2h, as smp measures both (the
  comparison at equal coverage).

Each loop costs about 0.1-0.2 ms per row of 4096 samples (interpreter,
``np.diff``, ``np.median`` and ``find_peaks``, all compiled code), 5-10x one
``np.diff`` pass over the whole array: the 20x target would need smp in a
third to a half of one ``np.diff`` pass, near the time it takes only to read
the array from memory once.

Run: ``python benchmarks/bench_smp.py [--size 4096] [--repeat 3]``.
Times are the best of ``repeat`` runs; ratios are what matters.
"""

from __future__ import annotations

import argparse

import numba
import numpy as np
import scipy.signal

import smpstats
from smpstats import grid
from smpstats.processes import sample_random_kinks, sample_se_gp
from timing import best_time  # benchmarks/timing.py (scripts run from this folder's parent)


def find_peaks_loop(y: np.ndarray, prominence: bool = False, steps: tuple[int, ...] = (1,)) -> np.ndarray:
    """Per-row sum of peaks of |d| above a robust threshold (height, or prominence over the local background)."""
    out = np.zeros(y.shape[0])
    for i, row in enumerate(y):
        for step in steps:
            d = np.abs(np.diff(row[::step], 2))
            threshold = 5 * 1.4826 * np.median(d)
            if prominence:
                peaks, props = scipy.signal.find_peaks(d, prominence=threshold)
                out[i] += props["prominences"].sum()
            else:
                peaks, props = scipy.signal.find_peaks(d, height=threshold)
                out[i] += props["peak_heights"].sum()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=4096, help="rows and samples per row")
    parser.add_argument("--repeat", type=int, default=3, help="runs per timing (best is kept)")
    args = parser.parse_args()
    n = args.size
    dt = 1.0 / n
    rng = np.random.default_rng(0)
    signals = {
        "relu(GP), l=0.05": np.maximum(sample_se_gp(n, dt, 0.05, size=(n,), rng=rng), 0.0),
        "GP + 20 kinks/unit": sample_se_gp(n, dt, 0.1, size=(n,), rng=rng)
        + sample_random_kinks(n, dt, rate=20, jump_scale=1.0, size=(n,), rng=rng).values,
        "white noise": rng.standard_normal((n, n)),
    }
    threads = numba.config.NUMBA_NUM_THREADS
    smpstats.smp(signals["white noise"][:2], dt=dt)  # compile or load the kernel
    print(f"smp on {n} x {n} float64 (best of {args.repeat}); numpy {np.__version__}, numba {numba.__version__}")
    print(f"{'signal':20s} {'diff2 ms':>8s} {'smp ms':>7s} {'smp/diff2':>9s} "
          f"{f'{threads} thr ms':>9s} {'smp/diff2':>9s} {'height/smp':>10s} {'prom./smp':>9s} "
          f"{'h+2h/smp':>8s} {'numpy/diff2':>11s} {'kinks/row':>9s}")
    for name, y in signals.items():

        def timed_smp(n_threads):
            numba.config.NUMBA_NUM_THREADS = n_threads  # what smp reads on each call
            try:
                return best_time(lambda: smpstats.smp(y, dt=dt), args.repeat)
            finally:
                numba.config.NUMBA_NUM_THREADS = threads

        t_diff = best_time(lambda: np.diff(y, 2), args.repeat)
        t_smp = timed_smp(1)
        t_par = timed_smp(threads)
        kernel, grid._KERNEL = grid._KERNEL, False  # the numpy path
        try:
            t_numpy = best_time(lambda: smpstats.smp(y, dt=dt), 1)
        finally:
            grid._KERNEL = kernel
        t_diff = min(t_diff, best_time(lambda: np.diff(y, 2), args.repeat))  # bracket smp by two diff timings
        t_height = best_time(lambda: find_peaks_loop(y), 1)
        t_prominence = best_time(lambda: find_peaks_loop(y, prominence=True), 1)
        t_both = best_time(lambda: find_peaks_loop(y, steps=(1, 2)), 1)
        kinks = smpstats.smp(y, dt=dt).n_peaks.mean()
        print(f"{name:20s} {t_diff * 1e3:8.1f} {t_smp * 1e3:7.1f} {t_smp / t_diff:9.2f} {t_par * 1e3:9.1f} "
              f"{t_par / t_diff:9.2f} {t_height / t_smp:10.2f} {t_prominence / t_smp:9.2f} {t_both / t_smp:8.2f} "
              f"{t_numpy / t_diff:11.2f} {kinks:9.1f}")
    print("targets: smp/diff2 <= 4, loop/smp >= 20 (loop ratios against smp on one thread)")


if __name__ == "__main__":
    main()
