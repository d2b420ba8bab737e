"""Overhead of ``simulate`` over the bare torch forward pass, side by side.

For each chain, one trial of ``simulate`` (input draw, batched forward pass,
SMP and moments of up to ``max_units`` units at the input and after every
stage, table row; one ``simulate`` call of ``trials`` trials, per trial) is
timed against the bare forward pass of the same chain on the same batch
(``n_points`` inputs), the timings alternating so that all see the same
load. Target (issue: foundation): at most 1.3x.

The column ``smp ms`` is the grid SMP (:func:`smpstats.smp`) alone of the
signals one trial measures (the input and every stage, at most
``max_units`` units each), and ``floor`` is ``(forward + smp) / forward``:
the ratio ``simulate`` would reach if everything else it does (input draw,
weight draw, gathering the measured units, moments, table) were free. The
grid estimator costs some 20-40 ns per measured sample (unit and grid
point), gathering the units and their moments some 10 ns more, and the
input draw adds its matrix product: the target needs a forward pass of at
least about 100-150 ns per measured sample (the 64-channel 5x5
convolution: ~200 ns; the 32-channel 3x3 one: ~25 ns; the small conv1d:
~3 ns, where the SMP alone is several forward passes).

torch, the SMP kernel and the BLAS behind numpy (the input draw's matrix
product) all run on ``--threads`` threads: a BLAS left on all CPUs makes the
draw, and on a busy machine the whole trial, several times slower.

Run: ``python benchmarks/bench_simulate.py [--trials 3] [--rounds 3] [--n-points 512] [--threads 1]``.
"""

from __future__ import annotations

import argparse

import numba
import numpy as np
import torch
from threadpoolctl import threadpool_limits  # installed with pymc, a dependency of smpstats

import smpstats
from smpstats.blocks import build_chain
from smpstats.inputs import SmoothInputs
from timing import best_time  # benchmarks/timing.py (scripts run from this folder's parent)

CASES = (
    ("conv1d(out_channels=16,kernel_size=5)|relu|maxpool1d(kernel_size=2)", (8, 64)),
    ("conv2d(out_channels=32,kernel_size=3)|relu|maxpool2d(kernel_size=2)", (16, 16, 16)),
    ("conv2d(out_channels=64,kernel_size=5)|relu", (64, 16, 16)),
)
MAX_UNITS = 2048  # simulate's default


def measured_signals(chain, x: torch.Tensor, rng: np.random.Generator) -> list[np.ndarray]:
    """The (units, n_points) signals one trial measures: the input and every stage, at most MAX_UNITS units each."""
    n_points = x.shape[0]
    outs = [y for s, y in zip(chain.stages, chain.forward_stages(x)) if not isinstance(s.module, torch.nn.Flatten)]
    signals = []
    for y in [x, *outs]:
        a = y.numpy().reshape(n_points, -1)
        if a.shape[1] > MAX_UNITS:
            a = a[:, np.sort(rng.choice(a.shape[1], size=MAX_UNITS, replace=False))]
        signals.append(np.ascontiguousarray(a.T))
    return signals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=3, help="trials per simulate call")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of both timings (best is kept)")
    parser.add_argument("--n-points", type=int, default=512, help="grid points per path (the batch)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch, smp and BLAS threads (1: stable timings; on a busy machine a second torch "
                             "thread can make small forward passes ten times slower)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    numba.config.NUMBA_NUM_THREADS = args.threads  # what smp reads on each call
    with threadpool_limits(args.threads):
        print(f"simulate vs bare forward, {args.n_points} points per trial, torch {torch.__version__}; "
              f"{args.threads} torch, smp and BLAS thread(s)")
        print(f"{'chain':70s} {'forward ms':>10s} {'simulate ms':>11s} {'ratio':>6s} {'smp ms':>7s} {'floor':>6s} "
              f"{'units':>7s}")
        for spec, shape in CASES:
            chain = build_chain(spec, shape, generator=0)
            draw = SmoothInputs().draw(args.n_points, int(np.prod(shape)), np.random.default_rng(0))
            x = torch.from_numpy(draw.x.reshape(args.n_points, *shape))
            signals = measured_signals(chain, x, np.random.default_rng(0))

            def forward():
                with torch.no_grad():
                    chain(x)

            def simulate():
                smpstats.simulate(spec, n_trials=args.trials, seed=0, input_shape=shape, n_points=args.n_points)

            def measure():
                for y in signals:
                    smpstats.smp(y, draw.dt)

            simulate()  # warm-up
            # Alternate the timings, so that all see the same load; keep the best of each.
            t_forward = t_sim = t_smp = np.inf
            for _ in range(args.rounds):
                t_forward = min(t_forward, best_time(forward, args.trials))
                t_sim = min(t_sim, best_time(simulate, 1) / args.trials)
                t_smp = min(t_smp, best_time(measure, 1))
            units = sum(int(np.prod(s.out_shape)) for s in chain.stages) + int(np.prod(shape))
            print(f"{spec:70s} {t_forward * 1e3:10.1f} {t_sim * 1e3:11.1f} {t_sim / t_forward:6.2f} "
                  f"{t_smp * 1e3:7.1f} {(t_forward + t_smp) / t_forward:6.2f} {units:7d}")
    print(f"target: ratio <= 1.3. simulate measures up to max_units={MAX_UNITS} units per stage (mean SMP, kinks,")
    print("moments, resolution check at h and 2h); floor: the ratio with the grid SMP as the only cost besides the")
    print("forward pass. A chain whose forward pass is cheap per output unit cannot reach the target.")


if __name__ == "__main__":
    main()
