"""Speed of the grid estimator, measured side by side in one run.

Targets (issue: foundation):
- ``smp`` on a 4096 x 4096 float64 array: at most 4x one ``np.diff(y, 2)`` pass;
- at least 20x faster than a per-row ``scipy.signal.find_peaks`` loop on the
  same data (second differences per row, peaks of |d| above a robust threshold
  — the natural hand-written alternative, which still lacks background
  removal, split-peak merging and the resolution check).

Run: ``python benchmarks/bench_smp.py [--size 4096] [--repeat 3]``.
Times are the best of ``repeat`` runs; ratios are what matters.
"""

from __future__ import annotations

import argparse

import numpy as np
import scipy.signal

import smpstats
from smpstats.processes import sample_random_kinks, sample_se_gp
from timing import best_time  # benchmarks/timing.py (scripts run from this folder's parent)


def find_peaks_loop(y: np.ndarray, prominence: bool) -> np.ndarray:
    """Per-row peaks of |d| above a robust threshold (height, or prominence over the local background)."""
    out = np.empty(y.shape[0])
    for i, row in enumerate(y):
        d = np.abs(np.diff(row, 2))
        threshold = 5 * 1.4826 * np.median(d)
        if prominence:
            peaks, props = scipy.signal.find_peaks(d, prominence=threshold)
            out[i] = props["prominences"].sum()
        else:
            peaks, props = scipy.signal.find_peaks(d, height=threshold)
            out[i] = props["peak_heights"].sum()
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
    print(f"smp on {n} x {n} float64 (best of {args.repeat}); numpy {np.__version__}")
    print(f"{'signal':22s} {'diff2 ms':>9s} {'smp ms':>8s} {'smp/diff2':>10s} {'height loop/smp':>16s} "
          f"{'prominence loop/smp':>20s} {'kinks/row':>9s}")
    for name, y in signals.items():
        t_diff = best_time(lambda: np.diff(y, 2), args.repeat)
        t_smp = best_time(lambda: smpstats.smp(y, dt=dt), args.repeat)
        t_diff = min(t_diff, best_time(lambda: np.diff(y, 2), args.repeat))  # bracket smp by two diff timings
        t_height = best_time(lambda: find_peaks_loop(y, prominence=False), 1)
        t_prominence = best_time(lambda: find_peaks_loop(y, prominence=True), 1)
        kinks = smpstats.smp(y, dt=dt).n_peaks.mean()
        print(f"{name:22s} {t_diff * 1e3:9.1f} {t_smp * 1e3:8.1f} {t_smp / t_diff:10.2f} "
              f"{t_height / t_smp:16.2f} {t_prominence / t_smp:20.2f} {kinks:9.1f}")
    print("targets: smp/diff2 <= 4, loop/smp >= 20")


if __name__ == "__main__":
    main()
