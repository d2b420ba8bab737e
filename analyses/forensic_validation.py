"""Study: can :func:`smpstats.assess` tell a trained ReLU CNN's output from a smooth track plus noise?

Small CNN regressors (``forensic_cnn.py``) are trained here to predict the
centre of a soft ellipse in 32x32 images: ReLU + max-pool networks
(piecewise linear) and GELU + average-pool networks (smooth) of similar
accuracy. The ellipse moves along a smooth path (a squared-exponential
process, rendered analytically, so the motion is smooth in image space) and
the networks' outputs are recorded for 400 frames. Smooth ground truth (the
true centre path) plus white noise gives the null trajectories, with noise
matched to the ReLU networks' frame-to-frame roughness (same mean square of
second differences) and at other levels, including noise as large as the
networks' own error. A few trajectories with fast motion (coarse frames)
show what happens when the frames no longer resolve the networks' features.

Targets: ROC AUC >= 0.95 for ReLU networks against matched-noise tracks,
p-values uniform under the null (KS p > 0.05, >= 200 null trajectories),
expected calibration error of the posterior <= 0.05, and GELU networks not
called piecewise linear.

Writes into ``analyses/results/forensic/``: ``trajectories.csv`` (one row per
trajectory), ``metrics.csv`` / ``metrics.md``, ``figure.png`` (residuals,
ROC, p-value QQ plot, reliability diagram) and ``example_report.png`` (the
figure of ``smpstats forensic`` for one ReLU trajectory). Trained networks
are cached in ``_cache/`` (not committed; training takes about 3 minutes per
network on one core).

Run: ``python analyses/forensic_validation.py [--trajectories 60] [--seed 0]``
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from scipy import stats  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from forensic_cnn import load_or_train, smooth_centre_path, trajectory  # noqa: E402

from smpstats.forensic_plots import plot_report, plot_validation  # noqa: E402
from smpstats.forensic_stats import difference_variance  # noqa: E402
from smpstats.forensics import assess  # noqa: E402
from smpstats.io import atomic_write  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "forensic"
N_FRAMES = 400
#: Noise levels of the null tracks relative to the matched level (1 = same second-difference power).
NOISE_FACTORS = (1.0, 0.3, 3.0)
#: Length scale (frames) of the centre path: "slow" is the main condition (~0.04 px per frame);
#: "fast" (~0.25 px per frame) shows what coarser frames do to both architectures.
SPEEDS = {"slow": 60.0, "fast": 10.0}


def roc_auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney), ties counted half."""
    ranks = stats.rankdata(np.r_[pos, neg])
    return float((ranks[: pos.size].sum() - pos.size * (pos.size + 1) / 2) / (pos.size * neg.size))


def expected_calibration_error(prob: np.ndarray, label: np.ndarray, n_bins: int = 10) -> float:
    """Expected calibration error over equal-width probability bins."""
    which = np.clip((prob * n_bins).astype(int), 0, n_bins - 1)
    return float(sum(abs(prob[which == b].mean() - label[which == b].mean()) * (which == b).mean()
                     for b in range(n_bins) if (which == b).any()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trajectories", type=int, default=60, help="trajectories per trained network")
    parser.add_argument("--fast-trajectories", type=int, default=10,
                        help="extra trajectories per network with fast motion (coarse frames)")
    parser.add_argument("--networks", type=int, default=2, help="trained networks per architecture")
    parser.add_argument("--seed", type=int, default=0, help="root seed")
    args = parser.parse_args()
    torch.set_num_threads(2)
    OUT.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    rows, examples, example_track = [], {}, None
    for kind in ("relu", "gelu"):
        for net_seed in range(args.networks):
            net, rmse = load_or_train(kind, net_seed, OUT / "_cache")
            print(f"{kind} network {net_seed}: test RMSE {rmse:.3f} px")
            rng = np.random.default_rng([args.seed, net_seed, 0 if kind == "relu" else 1])
            for i in range(args.trajectories + args.fast_trajectories):
                speed = "slow" if i < args.trajectories else "fast"
                centres = smooth_centre_path(N_FRAMES, rng, length_scale=SPEEDS[speed])
                out = trajectory(net, centres, rng)
                report = assess(out, seed=args.seed)
                v1 = difference_variance(out.T, 1)
                error_rms = np.sqrt(np.mean((out - centres) ** 2, axis=0))
                rows.append(_row(kind if speed == "slow" else f"{kind} fast", f"{kind}{net_seed}",
                                 int(kind == "relu"), report, False, float(np.sqrt(np.mean(v1) / 6)), rmse))
                if speed == "fast":
                    continue
                if i == 0 and net_seed == 0:
                    examples[f"{kind} net"] = out[:, 0] - centres[:, 0]
                    if kind == "relu":
                        example_track = report
                if kind != "relu":
                    continue
                # Null tracks: the true smooth path plus white noise, matched to this output's roughness.
                for factor in NOISE_FACTORS:
                    sigma = factor * np.sqrt(v1 / 6.0)
                    noisy = centres + sigma * rng.standard_normal(centres.shape)
                    r0 = assess(noisy, seed=args.seed)
                    rows.append(_row(f"null x{factor:g}", f"relu{net_seed}", 0, r0, factor == 1.0,
                                     float(np.mean(sigma)), np.nan))
                    if i == 0 and net_seed == 0 and factor == 1.0:
                        examples["matched noise"] = noisy[:, 0] - centres[:, 0]
                # Noise as large as the network's own error along the track (a less demanding null).
                noisy = centres + error_rms * rng.standard_normal(centres.shape)
                rows.append(_row("null error-matched", f"relu{net_seed}", 0, assess(noisy, seed=args.seed), False,
                                 float(np.mean(error_rms)), np.nan))
            print(f"  {args.trajectories} trajectories assessed ({time.perf_counter() - start:.0f} s)")
    results = pd.DataFrame(rows)
    metrics = _metrics(results)
    runtime = time.perf_counter() - start
    metrics.loc[len(metrics)] = ["runtime_s (incl. training if not cached)", runtime, "", ""]
    with atomic_write(OUT / "trajectories.csv") as fh:
        fh.write(results.to_csv(index=False, float_format="%.6g").encode())
    with atomic_write(OUT / "metrics.csv") as fh:
        fh.write(metrics.to_csv(index=False).encode())
    with atomic_write(OUT / "metrics.md") as fh:
        fh.write(metrics.to_markdown(index=False, floatfmt=".4g").encode())
    fig = plot_validation(results, examples)
    with atomic_write(OUT / "figure.png") as fh:
        fig.savefig(fh, dpi=90, format="png")
    fig = plot_report(example_track)
    with atomic_write(OUT / "example_report.png") as fh:
        fig.savefig(fh, dpi=80, format="png")
    print(metrics.to_markdown(index=False, floatfmt=".4g"))
    print(f"wrote {OUT} in {runtime:.0f} s")


def _row(source, network, label, report, matched, noise, rmse) -> dict:
    return {
        "source": source, "network": network, "label": label, "matched": matched,
        "log_bf": report.log_bayes_factor, "posterior": report.posterior_nonsmooth,
        "p_value": report.p_value_smooth, "verdict": report.verdict, "noise": noise,
        "fits_smooth": report.fits_smooth, "fits_network": report.fits_network, "net_rmse_px": rmse,
        **{f"stat_{k}": v for k, v in report.statistics.items()},
    }


def _metrics(results: pd.DataFrame) -> pd.DataFrame:
    relu = results[results["source"] == "relu"]
    gelu = results[results["source"] == "gelu"]
    matched = results[results["source"] == "null x1"]
    nulls = results[results["source"].str.startswith("null")]
    err = results[results["source"] == "null error-matched"]
    fast_relu, fast_gelu = results[results["source"] == "relu fast"], results[results["source"] == "gelu fast"]
    calib = pd.concat([relu, matched])
    ks = stats.kstest(nulls["p_value"], "uniform")
    rows = [
        ["ROC AUC, ReLU vs matched noise", roc_auc(relu["log_bf"].to_numpy(), matched["log_bf"].to_numpy()),
         ">= 0.95", f"{len(relu)} vs {len(matched)}"],
        ["ROC AUC, ReLU vs GELU", roc_auc(relu["log_bf"].to_numpy(), gelu["log_bf"].to_numpy()), "", ""],
        ["KS p-value of null p-values", ks.pvalue, "> 0.05", f"{len(nulls)} null tracks, D = {ks.statistic:.3f}"],
        ["ECE of posterior (ReLU + matched noise)",
         expected_calibration_error(calib["posterior"].to_numpy(), calib["label"].to_numpy()), "<= 0.05",
         f"{len(calib)} tracks, prior odds 1"],
        ["ReLU detected (verdict network)", (relu["verdict"] == "network").mean(), "", "posterior >= 0.95"],
        ["ReLU p < 0.05", (relu["p_value"] < 0.05).mean(), "", ""],
        ["matched noise called network", (matched["verdict"] == "network").mean(), "", "posterior >= 0.95"],
        ["null p < 0.05", (nulls["p_value"] < 0.05).mean(), "~0.05", ""],
        ["GELU called network", (gelu["verdict"] == "network").mean(), "0", "posterior >= 0.95"],
        ["GELU posterior > 0.5", (gelu["posterior"] > 0.5).mean(), "", ""],
        ["GELU p < 0.05", (gelu["p_value"] < 0.05).mean(), "", "smooth null rejected"],
        ["GELU verdict smooth", (gelu["verdict"] == "smooth").mean(), "", "posterior <= 0.05"],
        ["error-matched noise called network", (err["verdict"] == "network").mean(), "",
         "noise std = network RMS error"],
        ["fast motion: ReLU detected", (fast_relu["verdict"] == "network").mean(), "", "~0.25 px per frame"],
        ["fast motion: GELU called network", (fast_gelu["verdict"] == "network").mean(), "", ""],
        ["fast motion: GELU verdict smooth", (fast_gelu["verdict"] == "smooth").mean(), "", ""],
        ["net test RMSE px, ReLU", relu["net_rmse_px"].mean(), "", ""],
        ["net test RMSE px, GELU", gelu["net_rmse_px"].mean(), "", ""],
    ]
    return pd.DataFrame(rows, columns=["metric", "value", "target", "note"])


if __name__ == "__main__":
    main()
