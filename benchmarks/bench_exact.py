"""Exact SMP against a grid fine enough to reach the same accuracy, measured side by side.

A 3-layer convolutional ReLU network with max pooling (kaiming init) and 64
straight segments ``x0 -> x0 + delta * noise`` between Gaussian images.

- Exact: ``smpstats.exact.exact_smp`` on all segments (one batched walk).
- Grid: outputs sampled on ``n_points`` along each segment (batched float64
  forward passes, no autograd) and measured with ``smpstats.smp``. The number
  of points is doubled (nested grids, so the search reuses every evaluation)
  until the grid's total SMP is within ``--rtol`` (1 %) of the exact total
  and at least ``--resolved-fraction`` (95 %) of the series (segment x output
  component) are resolved by the grid estimator's own check, the criterion a
  user without the exact answer has to rely on. (Requiring every one of the
  640 series to be resolved takes about 2**17 points here: a few series keep
  kinks closer than six samples.) The grid run at that resolution, and the
  one at the first resolution within 1 % regardless of the check, are then
  timed afresh.

Target (issue: exact SMP): exact at least 10x cheaper than that grid.

Run: ``python benchmarks/bench_exact.py [--segments 64] [--delta 0.1]``
(about four minutes on two cores). Times are wall times of one run on the
same machine; the ratio is what matters.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import smpstats
from smpstats.blocks import build_chain
from smpstats.exact import exact_smp

SPEC = ("conv2d(out_channels=8,kernel_size=3,padding=1) | relu | maxpool2d(kernel_size=2) | "
        "conv2d(out_channels=16,kernel_size=3,padding=1) | relu | maxpool2d(kernel_size=2) | "
        "conv2d(out_channels=16,kernel_size=3,padding=1) | relu | linear(out_features=10)")
INPUT_SHAPE = (3, 12, 12)


def grid_outputs(module, start, end, t, chunk=8192):
    """Outputs (n_segments, len(t), n_out) of the model on the points t of every segment."""
    out = np.empty((start.shape[0], t.size, 10))
    with torch.no_grad():
        for s in range(start.shape[0]):
            for lo in range(0, t.size, chunk):
                tt = t[lo:lo + chunk].reshape((-1,) + (1,) * start[s].ndim)
                x = torch.from_numpy(start[s][None] + tt * (end[s] - start[s])[None])
                out[s, lo:lo + chunk] = module(x).numpy()
    return out


def grid_run(module, start, end, n_points):
    t = np.linspace(0.0, 1.0, n_points)
    y = grid_outputs(module, start, end, t)
    return smpstats.smp(y, dt=t[1], axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--segments", type=int, default=64)
    parser.add_argument("--delta", type=float, default=0.1, help="segment length factor (input noise std)")
    parser.add_argument("--rtol", type=float, default=0.01, help="accuracy the grid must reach")
    parser.add_argument("--resolved-fraction", type=float, default=0.95,
                        help="fraction of series the grid must call resolved")
    parser.add_argument("--max-log2-points", type=int, default=17, help="give up beyond 2**k + 1 points")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: stable timings; small float64 convolutions gain nothing from more)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    chain = build_chain(SPEC, INPUT_SHAPE, generator=args.seed)
    module = chain.module
    rng = np.random.default_rng(args.seed)
    start = rng.normal(size=(args.segments,) + INPUT_SHAPE)
    end = start + args.delta * rng.normal(size=start.shape)
    print(f"model: {SPEC}\ninput {INPUT_SHAPE}, {args.segments} segments x0 -> x0 + {args.delta} * N(0, 1); "
          f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")

    exact_smp(module, start[:2], end[:2], batched=True)  # warm-up (torch loads its jvp decompositions)
    t0 = time.perf_counter()
    exact = exact_smp(module, start, end, batched=True)
    t_exact = time.perf_counter() - t0
    truth = float(exact.total.sum())
    print(f"\nexact: {t_exact:.2f} s, {exact.n_evaluations} model evaluations "
          f"({exact.n_evaluations / args.segments:.0f} per segment), "
          f"{np.mean(exact.n_events):.0f} region boundaries and {np.mean(exact.n_kinks):.0f} kinks per "
          f"segment and component; total SMP {truth:.6g}")

    # Nested doubling: the grid of 2n - 1 points holds the grid of n points.
    print(f"\n{'n_points':>9s} {'rel. error':>11s} {'resolved':>9s} {'kinks found':>12s}")
    k = 7
    t = np.linspace(0.0, 1.0, 2**k + 1)
    y = grid_outputs(module, start, end, t)
    found_1pct = found = None
    while True:
        g = smpstats.smp(y, dt=t[1], axis=1)
        err = (g.total - truth) / truth
        resolved = float(np.mean(g.resolved))
        print(f"{t.size:9d} {err:+11.4f} {resolved:9.2f} {np.mean(g.n_peaks):12.1f}")
        if found_1pct is None and abs(err) <= args.rtol:
            found_1pct = t.size
        if abs(err) <= args.rtol and resolved >= args.resolved_fraction:
            found = t.size
            break
        if k >= args.max_log2_points:
            break
        k += 1
        t_new = np.linspace(0.0, 1.0, 2**k + 1)
        y_new = np.empty((args.segments, t_new.size, 10))
        y_new[:, ::2] = y
        y_new[:, 1::2] = grid_outputs(module, start, end, t_new[1::2])
        t, y = t_new, y_new

    print()
    for label, n in (("within 1 % (only the exact answer tells)", found_1pct),
                     (f"within 1 % and {args.resolved_fraction:.0%} resolved", found)):
        if n is None:
            print(f"grid, {label}: not reached with up to {2**args.max_log2_points + 1} points")
            continue
        t0 = time.perf_counter()
        g = grid_run(module, start, end, n)
        t_grid = time.perf_counter() - t0
        print(f"grid, {label}: n_points = {n}, {t_grid:.2f} s ({args.segments * n} model evaluations), "
              f"error {(g.total - truth) / truth:+.4f}; exact is {t_grid / t_exact:.1f}x cheaper")


if __name__ == "__main__":
    main()
