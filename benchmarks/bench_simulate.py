"""Overhead of ``simulate`` over the bare torch forward pass, side by side.

For each chain, one trial of ``simulate`` (input draw, batched forward pass,
SMP of up to ``max_units`` units at the input and after every stage,
statistics, table row)
is timed against the bare forward pass of the same chain on the same batch
(``n_points`` inputs), the two alternating so that both see the same load.
Target (issue: foundation): at most 1.3x.

Run: ``python benchmarks/bench_simulate.py [--trials 3] [--rounds 3] [--n-points 512] [--threads 1]``.
"""

from __future__ import annotations

import argparse

import numba
import numpy as np
import torch

import smpstats
from smpstats.blocks import build_chain
from smpstats.inputs import SmoothInputs
from timing import best_time  # benchmarks/timing.py (scripts run from this folder's parent)

CASES = (
    ("conv1d(out_channels=16,kernel_size=5)|relu|maxpool1d(kernel_size=2)", (8, 64)),
    ("conv2d(out_channels=32,kernel_size=3)|relu|maxpool2d(kernel_size=2)", (16, 16, 16)),
    ("conv2d(out_channels=64,kernel_size=5)|relu", (64, 16, 16)),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=3, help="trials per simulate call")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of both timings (best is kept)")
    parser.add_argument("--n-points", type=int, default=512, help="grid points per path (the batch)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch and smp threads (1: stable timings; on a busy machine a second torch "
                             "thread can make small forward passes ten times slower)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    numba.config.NUMBA_NUM_THREADS = args.threads  # what smp reads on each call
    print(f"simulate vs bare forward, {args.n_points} points per trial, torch {torch.__version__}; "
          f"{torch.get_num_threads()} torch and {numba.config.NUMBA_NUM_THREADS} smp thread(s)")
    print(f"{'chain':70s} {'forward ms':>10s} {'simulate ms':>11s} {'ratio':>6s} {'units':>7s}")
    for spec, shape in CASES:
        chain = build_chain(spec, shape, generator=0)
        draw = SmoothInputs().draw(args.n_points, int(np.prod(shape)), np.random.default_rng(0))
        x = torch.from_numpy(draw.x.reshape(args.n_points, *shape))

        def forward():
            with torch.no_grad():
                chain(x)

        def simulate():
            smpstats.simulate(spec, n_trials=args.trials, seed=0, input_shape=shape, n_points=args.n_points)

        simulate()  # warm-up
        # Alternate the two, so that both see the same load; keep the best of each.
        t_forward = t_sim = np.inf
        for _ in range(args.rounds):
            t_forward = min(t_forward, best_time(forward, args.trials))
            t_sim = min(t_sim, best_time(simulate, 1) / args.trials)
        units = sum(int(np.prod(s.out_shape)) for s in chain.stages) + int(np.prod(shape))
        print(f"{spec:70s} {t_forward * 1e3:10.1f} {t_sim * 1e3:11.1f} {t_sim / t_forward:6.2f} {units:7d}")
    print("target: ratio <= 1.3. simulate measures up to max_units=2048 units per stage (mean SMP, kinks,")
    print("moments, resolution check at h and 2h): a chain whose forward pass is cheap per output unit cannot reach it.")


if __name__ == "__main__":
    main()
