"""Study: which building blocks create nonsmoothness from smooth inputs?

Claim: linear maps, convolutions, average pooling, batch norm and smooth
activations (GELU, SiLU, softplus, tanh) create no SMP from smooth inputs;
ReLU, LeakyReLU/PReLU and max pooling do, in the amounts that the theory of
DESIGN §4 predicts (Kac-Rice for the rectifiers, pairwise switching for max
pooling over i.i.d. inputs).

Writes into ``analyses/results/sources_of_nonsmoothness/``:
``table.csv`` and ``table.md`` (one row per block), ``samples.parquet``
(one row per block and trial) and ``figure.png``.

Run: ``python analyses/sources_of_nonsmoothness.py [--trials 100] [--seed 0]``
(about two minutes on two cores).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

from smpstats.io import atomic_write, save_samples  # noqa: E402
from smpstats.plotting import plot_sources  # noqa: E402
from smpstats.studies import sources_of_nonsmoothness  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "sources_of_nonsmoothness"
COLUMNS = ["block_spec", "n_trials", "smp_out", "smp_out_sem", "smp_out_rel", "kinks_out", "theory_smp",
           "rel_error", "resolved_out", "creates_smp"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=100, help="trials per block")
    parser.add_argument("--seed", type=int, default=0, help="root seed")
    parser.add_argument("--n-points", type=int, default=512, help="grid points per path")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    study = sources_of_nonsmoothness(n_trials=args.trials, seed=args.seed, n_points=args.n_points, progress=True)
    save_samples(study.samples, OUT / "samples.parquet", metadata={"study": "sources_of_nonsmoothness"})
    table = study.table[COLUMNS]
    with atomic_write(OUT / "table.csv") as fh:
        fh.write(table.to_csv(index=False).encode())
    with atomic_write(OUT / "table.md") as fh:
        fh.write(table.to_markdown(index=False, floatfmt=".4g").encode())
    fig = plot_sources(study)
    with atomic_write(OUT / "figure.png") as fh:
        fig.savefig(fh, dpi=110, format="png")
    print(study.summary())
    print(f"wrote {OUT} in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
