"""Cost of batch invariance: the blocks' linear and conv forward against torch's own, side by side.

``smpstats.blocks`` computes linear and conv layers one row at a time
(batched one-row products of the inputs, or of the unfolded patches), so
that a sample's output does not depend on the batch it is evaluated in: on
some CPUs a matrix product rounds a row differently by its position in the
block. This prints, per layer, the best time of the blocks' forward and of
``F.linear`` / ``F.conv1d`` / ``F.conv2d`` on the same weights and batch
(timings alternate, so both see the same load), and their ratio.

Run: ``python benchmarks/bench_batch_invariant.py [--batch 512] [--rounds 5] [--threads 1]``.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from smpstats.blocks import build_chain
from timing import best_time  # benchmarks/timing.py (scripts run from this folder's parent)

CASES = (
    ("linear(out_features=64)", (64,)),
    ("linear(out_features=256)", (256,)),
    ("conv1d(out_channels=16,kernel_size=5)", (8, 64)),
    ("conv2d(out_channels=32,kernel_size=3)", (16, 16, 16)),
    ("conv2d(out_channels=64,kernel_size=5)", (64, 16, 16)),
)


def torch_forward(m: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    if isinstance(m, torch.nn.Linear):
        return F.linear(x.flatten(1), m.weight, m.bias)
    conv = F.conv1d if x.dim() == 3 else F.conv2d
    return conv(x, m.weight, m.bias, stride=m.stride, padding=m.padding, dilation=m.dilation)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=512, help="samples per forward pass")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (best is kept)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{'layer':42s} {'input':>12s} {'blocks ms':>10s} {'torch ms':>9s} {'ratio':>6s}")
    for spec, shape in CASES:
        m = build_chain(spec, shape, generator=0)[0].module
        x = torch.randn(args.batch, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            torch.testing.assert_close(m(x), torch_forward(m, x), rtol=1e-10, atol=1e-10)
            ours = theirs = float("inf")
            for _ in range(args.rounds):
                ours = min(ours, best_time(lambda: m(x), 1))
                theirs = min(theirs, best_time(lambda: torch_forward(m, x), 1))
        print(f"{spec:42s} {str(shape):>12s} {1e3 * ours:10.2f} {1e3 * theirs:9.2f} {ours / theirs:6.2f}")


if __name__ == "__main__":
    main()
