"""Study: per-block transfer models (theory, regression, Bayesian) checked on held-out simulations.

Claims checked:

1. Theory tier: the expected output SMP per unit (DESIGN section 4, with the
   layer's pooled sigma) is within 5 % of simulation for ReLU, LeakyReLU,
   linear/conv and average pooling on Gaussian-process inputs, and within
   10 % for max pooling over i.i.d. inputs. Where real blocks break the
   assumptions (correlated pooling windows after a conv, dense kinks below
   the grid's detection limit, non-Gaussian kinked inputs) the error is
   reported per configuration.
2. Statistical tiers: the 90 % predictive intervals of the regression and
   Bayesian models cover 85-95 % of held-out trials, for every block family,
   on configurations and seeds that the fits never saw.
3. The Bayesian fit passes its diagnostics (R-hat <= 1.01, bulk and tail
   ESS >= 400, no divergences); fit times with nutpie and with PyMC's NUTS.
4. Simulation-based calibration of the Bayesian model: rank histograms.

Writes into ``analyses/results/transfer_models/``: ``theory_by_config.csv/.md``,
``theory_vs_exact.csv/.md`` (carried-kink theory of affine and average-pooling blocks against the
exact SMP, free of the grid's detection losses),
``coverage.csv/.md``, ``timing.csv/.md``, ``sbc.csv/.md``, one figure per
block family ``bands_<family>.png`` (theory and posterior predictive bands
against held-out SMP), ``coverage.png``, ``pit.png``, ``ppc.png``,
``loo_pit.png``, ``sbc_ranks.png``.

Run: ``python analyses/transfer_models.py [--trials 120] [--holdout-trials 80]
[--sbc-sims 100]`` (about half an hour on two cores, most of it simulation;
the samples are cached in the results folder's ``cache/``, which git ignores).
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import smpstats  # noqa: E402
from smpstats.default_models import DEFAULT_TRAINING  # noqa: E402
from smpstats.io import atomic_write, load_samples, save_samples  # noqa: E402
from smpstats.sbc import plot_sbc_ranks, sbc  # noqa: E402
from smpstats.theory_terms import theory_terms  # noqa: E402
from smpstats.training_data import configs_digest  # noqa: E402
from smpstats.transfer_data import design_frame  # noqa: E402
from smpstats.transfer_plots import check_figures  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "transfer_models"
CACHE = OUT / "cache"


def write_table(df: pd.DataFrame, stem: str) -> None:
    with atomic_write(OUT / f"{stem}.csv") as fh:
        fh.write(df.to_csv(index=False).encode())
    with atomic_write(OUT / f"{stem}.md") as fh:
        fh.write(df.to_markdown(index=False, floatfmt=".4g").encode())


def samples(split: str, n_trials: int, seed: int) -> pd.DataFrame:
    # the file name carries a digest of the split's configurations: changing them never reuses stale samples
    n_points = DEFAULT_TRAINING["n_points"]  # the default models' resolution, for both splits
    path = CACHE / f"{split}_{n_trials}_{seed}_{n_points}_{configs_digest(split)}.parquet"
    if path.exists():
        return load_samples(path)
    t = time.perf_counter()
    df = smpstats.block_samples(split=split, n_trials=n_trials, seed=seed, n_points=n_points, progress=True)
    save_samples(df, path)
    print(f"{split}: {len(df)} rows simulated in {time.perf_counter() - t:.0f} s")
    return df


def theory_by_config(df: pd.DataFrame) -> pd.DataFrame:
    d = design_frame(df)
    d["source"] = df["source"].to_numpy()
    d["split"] = df["split"].to_numpy()
    d["resolved_out"] = df["resolved_out"].to_numpy()
    rows = []
    for (split, fam, src), g in d.groupby(["split", "family", "source"], sort=True):
        sem = g["y"].std(ddof=1) / np.sqrt(len(g))
        rows.append({"split": split, "family": fam, "configuration": src, "n": len(g),
                     "simulated_mean": g["y"].mean(), "simulated_sem": sem, "theory_mean": g["theory"].mean(),
                     "theory_rel_error": g["theory"].mean() / g["y"].mean() - 1,
                     "resolved_fraction": g["resolved_out"].mean()})
    return pd.DataFrame(rows)


#: Chains whose second block only carries kinks: its theory against the exact SMP (no grid losses).
EXACT_CHAINS = (("relu | linear(out_features=32)", (64,)), ("relu | conv1d(out_channels=8, kernel_size=3)", (4, 64)),
                ("relu | conv2d(out_channels=4, kernel_size=3)", (2, 16, 16)),
                ("relu | avgpool1d(kernel_size=3)", (8, 64)), ("relu | avgpool2d(kernel_size=2)", (3, 16, 16)))


def theory_vs_exact(n_trials: int, seed: int) -> pd.DataFrame:
    """Carried-kink theory of affine and average-pooling blocks against exact SMP (Gaussian-process paths)."""
    rows = []
    for spec, shape in EXACT_CHAINS:
        df = smpstats.simulate(spec, n_trials=n_trials, seed=seed, input_shape=shape, path="smooth", n_points=513,
                               method="exact")
        second = df[df["stage"] == 2]
        th = theory_terms(second)["theory"]
        exact = second["smp_out"]
        # the theory takes each trial's measured input SMP: the paired difference is what is uncertain
        paired_se = (th - exact).std(ddof=1) / np.sqrt(len(second)) / exact.mean()
        rows.append({"chain": spec, "input_shape": str(shape), "n": len(second), "exact_mean": exact.mean(),
                     "theory_mean": th.mean(), "theory_rel_error": th.mean() / exact.mean() - 1,
                     "rel_error_se": paired_se})
    return pd.DataFrame(rows)


def timing(train: pd.DataFrame, n_rows: int, seed: int) -> pd.DataFrame:
    sub = train.sample(n=min(n_rows, len(train)), random_state=seed)
    rows = []
    for sampler in ("nutpie", "pymc"):
        t = time.perf_counter()
        m = smpstats.fit(sub, kind="bayes", sampler=sampler, seed=seed)
        i = m.info
        rows.append({"sampler": sampler, "rows": len(sub), "compile_s": i["compile_seconds"],
                     "sampling_s": i["sampling_seconds"], "total_s": time.perf_counter() - t,
                     "r_hat_max": i["r_hat_max"], "ess_bulk_min": i["ess_bulk_min"],
                     "ess_tail_min": i["ess_tail_min"], "divergences": i["divergences"]})
        print(rows[-1])
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=120, help="training trials per configuration")
    ap.add_argument("--holdout-trials", type=int, default=80, help="held-out trials per configuration")
    ap.add_argument("--sbc-sims", type=int, default=100, help="SBC simulations")
    ap.add_argument("--exact-trials", type=int, default=200, help="trials per chain of the theory-vs-exact table")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-timing", action="store_true", help="skip the nutpie vs PyMC timing fits")
    args = ap.parse_args()
    CACHE.mkdir(parents=True, exist_ok=True)
    warnings.simplefilter("ignore", FutureWarning)

    train = samples("train", args.trials, args.seed)
    holdout = samples("holdout", args.holdout_trials, args.seed)  # the split has its own seed streams
    write_table(theory_by_config(pd.concat([train, holdout], ignore_index=True)), "theory_by_config")
    write_table(theory_vs_exact(args.exact_trials, args.seed), "theory_vs_exact")

    coverage = []
    reports = {}
    for kind in ("theory", "regression", "bayes"):
        t = time.perf_counter()
        model = smpstats.fit(train, kind=kind, **({"seed": args.seed} if kind == "bayes" else {}))
        fit_s = time.perf_counter() - t
        if kind == "bayes":
            print(model.summary())
            model.save(CACHE / "bayes_fit.nc")
        report = smpstats.check(model, holdout, seed=args.seed)
        reports[kind] = (report, model)
        print(report.summary())
        tab = report.table.assign(tier=kind, fit_seconds=fit_s)
        coverage.append(tab)
    cov = pd.concat(coverage, ignore_index=True)
    cols = ["tier", "family", "n", "mean_rel_error", "theory_rel_error", "coverage_50", "coverage_90", "coverage_95",
            "crps", "pit_ks_p", "n_configs", "config_coverage_90", "qr_coverage_90", "fit_seconds"]
    write_table(cov[[c for c in cols if c in cov]], "coverage")
    write_table(pd.concat([reports[k][0].configs.assign(tier=k) for k in ("regression", "bayes")], ignore_index=True),
                "config_coverage")

    report, model = reports["bayes"]
    diag = {k: v for k, v in report.diagnostics.items()}
    write_table(pd.DataFrame([diag]), "bayes_diagnostics")
    for stem, fig in check_figures(report, model).items():
        fig.savefig(OUT / f"{stem}.png", dpi=110)
        plt.close(fig)

    if not args.skip_timing:
        write_table(timing(train, 2000, args.seed), "timing")

    # SBC on the design of two families (a creating and a carrying one), 300 rows
    sbc_rows = train[train["block"].isin(["relu", "avgpool1d"])].sample(n=300, random_state=args.seed)
    res = sbc(sbc_rows, n_sims=args.sbc_sims, seed=args.seed, progress=True)
    print(res.summary())
    write_table(res.uniformity(), "sbc")
    fig = plot_sbc_ranks(res)
    fig.savefig(OUT / "sbc_ranks.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
