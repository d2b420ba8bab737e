"""Cost of predicting a chain's SMP against simulating it, side by side.

For a 16-block MLP and a 17-block 1-D CNN, times :func:`smpstats.predict_chain`
in the analytic mode (theory, 1000 Monte Carlo draws; with the finite-width
moments, the default, and with the deterministic mean-field moments,
``finite_width=False``) and with the default regression models (1000 draws), against :func:`smpstats.simulate` of the same
chain with exact SMP along smooth paths (``--trials`` networks, 513 points),
which is what the prediction replaces. Prints milliseconds and the ratio
simulate / predict per network predicted. For given weights (one network of
each chain as a module) it times the moments from points pushed through the
network (the default; with and without the 64 template paths whose own points
spread the draws, ``path_templates``) against the mean-field moments. The issue asks for milliseconds
for a 16-block chain in the analytic mode.

Run: ``python benchmarks/bench_chain_prediction.py [--trials 10] [--rounds 3] [--threads 1]``.
"""

from __future__ import annotations

import argparse
import logging

import torch

import smpstats
from timing import best_time  # benchmarks/timing.py (scripts run from this folder's parent)

CASES = (
    (" | ".join(["linear(out_features=64) | relu"] * 8), (32,)),
    (" | ".join(["conv1d(out_channels=16, kernel_size=3, padding=1) | relu | conv1d(out_channels=16, kernel_size=3, "
                 "padding=1) | relu | maxpool1d(kernel_size=2)"] * 3) + " | flatten | linear(out_features=10)",
     (3, 64)),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=10, help="simulated networks per chain")
    parser.add_argument("--rounds", type=int, default=3, help="repetitions (best is kept)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.disable(logging.WARNING)
    model = smpstats.default_model("regression")
    print(f"{'chain':>6s} {'blocks':>6s} {'theory ms':>10s} {'infinite width ms':>17s} {'regression ms':>13s} "
          f"{'simulate ms/network':>19s} {'ratio sim/theory per network':>28s}")
    for spec, shape in CASES:
        n_blocks = len(smpstats.build_chain(spec, shape).stages)
        theory = best_time(lambda: smpstats.predict_chain(spec, input_shape=shape, n_draws=1000), args.rounds)
        infinite = best_time(lambda: smpstats.predict_chain(spec, input_shape=shape, n_draws=1000, finite_width=False),
                             args.rounds)
        regression = best_time(lambda: smpstats.predict_chain(spec, input_shape=shape, n_draws=1000, model=model),
                               args.rounds)
        sim = best_time(lambda: smpstats.simulate(spec, args.trials, seed=0, input_shape=shape, n_points=513,
                                                  method="exact"), 1) / args.trials
        print(f"{'mlp' if len(shape) == 1 else 'cnn':>6s} {n_blocks:6d} {theory * 1e3:10.0f} {infinite * 1e3:17.0f} "
              f"{regression * 1e3:13.0f} "
              f"{sim * 1e3:19.0f} {sim / (theory / 1000):28.0f}")
    print("\nGiven weights (one network of each chain as a torch module), theory, 1000 draws:")
    print(f"{'chain':>6s} {'sampled moments ms':>18s} {'no path templates ms':>20s} {'mean-field moments ms':>21s} "
          f"{'ratio':>6s}")
    for spec, shape in CASES:
        module = torch.nn.Sequential(*(s.module for s in smpstats.build_chain(spec, shape).stages))
        sampled = best_time(lambda: smpstats.predict_chain(module, input_shape=shape, n_draws=1000), args.rounds)
        untemplated = best_time(lambda: smpstats.predict_chain(module, input_shape=shape, n_draws=1000,
                                                               path_templates=0), args.rounds)
        mean_field = best_time(lambda: smpstats.predict_chain(module, input_shape=shape, n_draws=1000,
                                                              sample_module=False), args.rounds)
        print(f"{'mlp' if len(shape) == 1 else 'cnn':>6s} {sampled * 1e3:18.0f} {untemplated * 1e3:20.0f} "
              f"{mean_field * 1e3:21.0f} {sampled / mean_field:6.1f}")


if __name__ == "__main__":
    main()
