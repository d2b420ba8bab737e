"""Study: exact kink counts of random conv nets, and the grid estimator's error against them.

Claims checked:

1. Along a straight segment, the number of activation-region boundaries
   (and of output kinks) of a randomly initialised ReLU + max-pooling conv net
   grows linearly with its number of neurons (Hanin and Rolnick, 2019, prove
   linear growth of the expected count for ReLU nets at initialisation; max
   pooling is not covered by their theorem). A line is fitted through the
   per-architecture means.
2. The grid estimator (``smpstats.smp`` on sampled outputs) underestimates
   the SMP of such nets when kinks share sampling steps; its error against the
   exact SMP shrinks as the step shrinks.

Networks: ``conv2d(c) | relu | maxpool2d(2)`` repeated ``depth`` times on a
(1, 16, 16) input, then ``linear(10)``, kaiming init, for channel counts c
and depths 2 and 3. Segments: ``x0 -> x0 + length * (x1 - x0)`` with x0, x1
independent standard Gaussian images.

Writes into ``analyses/results/exact_vs_grid/``: ``kinks_vs_neurons.csv/.md``
(one row per architecture), ``line_fit.csv/.md``, ``grid_error.csv/.md`` (one
row per architecture and step), ``segments.csv`` (one row per segment) and
``figure.png``.

Run: ``python analyses/exact_vs_grid.py [--seeds 3] [--segments 4]``
(about three minutes on two cores).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

import smpstats  # noqa: E402
from smpstats.blocks import build_chain  # noqa: E402
from smpstats.exact import exact_smp  # noqa: E402
from smpstats.io import atomic_write  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "exact_vs_grid"
INPUT_SHAPE = (1, 16, 16)
ARCHITECTURES = [(2, c) for c in (2, 4, 8, 16, 24)] + [(3, c) for c in (2, 4, 8, 16)]
GRID_LOG2_POINTS = range(6, 16)


def spec(depth: int, channels: int) -> str:
    block = f"conv2d(out_channels={channels},kernel_size=3,padding=1) | relu | maxpool2d(kernel_size=2)"
    return " | ".join([block] * depth + ["linear(out_features=10)"])


def n_relu_units(chain) -> int:
    return int(sum(stage.n_units_out for stage in chain if stage.name == "relu"))


def grid_outputs(module, start, end, t, chunk=8192) -> np.ndarray:
    out = []
    with torch.no_grad():
        for s in range(start.shape[0]):
            rows = []
            for lo in range(0, t.size, chunk):
                tt = t[lo:lo + chunk].reshape((-1,) + (1,) * start[s].ndim)
                rows.append(module(torch.from_numpy(start[s][None] + tt * (end[s] - start[s])[None])).numpy())
            out.append(np.concatenate(rows))
    return np.stack(out)


def grid_errors(module, start, end, exact) -> list[dict]:
    """Relative error of the grid's total SMP on nested grids of 2**k + 1 points."""
    rows = []
    truth = exact.total
    t = y = None
    for k in GRID_LOG2_POINTS:
        t_new = np.linspace(0.0, 1.0, 2**k + 1)
        if y is None:
            y = grid_outputs(module, start, end, t_new)
        else:
            y_new = np.empty((y.shape[0], t_new.size, y.shape[2]))
            y_new[:, ::2] = y
            y_new[:, 1::2] = grid_outputs(module, start, end, t_new[1::2])
            y = y_new
        t = t_new
        g = smpstats.smp(y, dt=t[1], axis=1)  # batch (segment, component)
        rel = (np.asarray(g.value).sum(axis=1) - truth) / truth  # per segment
        rows.append({"n_points": t.size, "step": t[1], "kinks_per_step": float(np.mean(exact.n_events)) * t[1],
                     "rel_error_mean": float(np.mean(rel)), "abs_rel_error_max": float(np.max(np.abs(rel))),
                     "resolved": float(np.mean(g.resolved))})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3, help="random networks per architecture")
    parser.add_argument("--segments", type=int, default=4, help="segments per network")
    parser.add_argument("--length", type=float, default=0.25, help="segment length as a fraction of |x1 - x0|")
    parser.add_argument("--seed", type=int, default=0, help="root seed")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: stable timings; small float64 convolutions gain nothing from more)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    OUT.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    root = np.random.SeedSequence(args.seed)

    segment_rows, error_rows = [], []
    for (depth, channels), arch_seed in zip(ARCHITECTURES, root.spawn(len(ARCHITECTURES))):
        for net_index, net_seed in enumerate(arch_seed.spawn(args.seeds)):
            weights_seed, input_seed = net_seed.spawn(2)
            chain = build_chain(spec(depth, channels), INPUT_SHAPE, generator=weights_seed)
            rng = np.random.default_rng(input_seed)
            x0 = rng.normal(size=(args.segments,) + INPUT_SHAPE)
            x1 = rng.normal(size=(args.segments,) + INPUT_SHAPE)
            start, end = x0, x0 + args.length * (x1 - x0)
            t0 = time.perf_counter()
            exact = exact_smp(chain.module, start, end, batched=True)
            seconds = time.perf_counter() - t0
            kinks_any = [int(np.any(m.reshape(m.shape[0], -1), axis=1).sum()) for m in exact._kink_mask]
            for s in range(args.segments):
                segment_rows.append({
                    "depth": depth, "channels": channels, "n_neurons": n_relu_units(chain), "net": net_index,
                    "segment": s, "n_events": int(exact.n_events[s]), "n_output_kinks": kinks_any[s],
                    "kinks_per_component": float(np.mean(exact.n_kinks[s])), "smp_total": float(exact.total[s]),
                    "evaluations_per_segment": exact.n_evaluations / args.segments,
                    "seconds_per_segment": seconds / args.segments,
                })
            if net_index == 0 and depth == 2:
                for row in grid_errors(chain.module, start, end, exact):
                    error_rows.append({"depth": depth, "channels": channels, "n_neurons": n_relu_units(chain), **row})
            print(f"depth {depth}, {channels:2d} channels, net {net_index}: "
                  f"{np.mean(exact.n_events):7.1f} events/segment, {seconds:6.1f} s", flush=True)

    segments = pd.DataFrame(segment_rows)
    arch = (segments.groupby(["depth", "channels", "n_neurons"], as_index=False)
            .agg(n_segments=("n_events", "size"), events_mean=("n_events", "mean"), events_sem=("n_events", "sem"),
                 output_kinks_mean=("n_output_kinks", "mean"), output_kinks_sem=("n_output_kinks", "sem"),
                 smp_total_mean=("smp_total", "mean"), evaluations_per_segment=("evaluations_per_segment", "mean"),
                 seconds_per_segment=("seconds_per_segment", "mean")))
    arch["events_per_neuron"] = arch["events_mean"] / arch["n_neurons"]

    fits = []
    for what in ("events_mean", "output_kinks_mean"):
        for depth in (None, 2, 3):
            sub = arch if depth is None else arch[arch["depth"] == depth]
            slope, intercept = np.polyfit(sub["n_neurons"], sub[what], 1)
            pred = intercept + slope * sub["n_neurons"]
            r2 = 1 - np.sum((sub[what] - pred) ** 2) / np.sum((sub[what] - sub[what].mean()) ** 2)
            fits.append({"count": what.replace("_mean", ""), "depths": "all" if depth is None else str(depth),
                         "slope_per_neuron": slope, "intercept": intercept, "r_squared": r2, "n_architectures": len(sub)})
    fits = pd.DataFrame(fits)
    errors = pd.DataFrame(error_rows)

    def write(frame: pd.DataFrame, name: str, md: bool = True) -> None:
        with atomic_write(OUT / f"{name}.csv") as fh:
            fh.write(frame.to_csv(index=False).encode())
        if md:
            with atomic_write(OUT / f"{name}.md") as fh:
                fh.write(frame.to_markdown(index=False, floatfmt=".4g").encode())

    write(segments, "segments", md=False)
    write(arch, "kinks_vs_neurons")
    write(fits, "line_fit")
    write(errors, "grid_error")

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    fit_all = fits[(fits["count"] == "events") & (fits["depths"] == "all")].iloc[0]
    for depth, marker in ((2, "o"), (3, "s")):
        sub = arch[arch["depth"] == depth]
        ax1.errorbar(sub["n_neurons"], sub["events_mean"], yerr=sub["events_sem"], fmt=marker, capsize=3,
                     label=f"region boundaries, depth {depth}")
        ax1.errorbar(sub["n_neurons"], sub["output_kinks_mean"], yerr=sub["output_kinks_sem"], fmt=marker,
                     mfc="none", capsize=3, label=f"output kinks, depth {depth}")
    xs = np.linspace(0, arch["n_neurons"].max() * 1.05, 50)
    ax1.plot(xs, fit_all["intercept"] + fit_all["slope_per_neuron"] * xs, "k--", lw=1,
             label=f"line fit: {fit_all['slope_per_neuron']:.3g} per neuron (R² {fit_all['r_squared']:.4f})")
    fit_kinks = fits[(fits["count"] == "output_kinks") & (fits["depths"] == "all")].iloc[0]
    ax1.plot(xs, fit_kinks["intercept"] + fit_kinks["slope_per_neuron"] * xs, "k:", lw=1,
             label=f"line fit: {fit_kinks['slope_per_neuron']:.3g} per neuron (R² {fit_kinks['r_squared']:.4f})")
    ax1.set_xlabel("ReLU neurons")
    ax1.set_ylabel("count along the segment (mean ± sem)")
    ax1.set_title("Exact counts grow linearly with width and depth")
    ax1.legend(fontsize=7)
    floor = 1e-5
    for channels, sub in errors.groupby("channels"):
        ax2.loglog(sub["step"], np.maximum(np.abs(sub["rel_error_mean"]), floor), "o-", ms=3,
                   label=f"{channels} channels ({sub['n_neurons'].iloc[0]} neurons)")
    ax2.axhline(0.01, color="grey", lw=0.8, ls=":")
    ax2.set_ylim(floor / 2, 2)
    ax2.text(ax2.get_xlim()[0] * 1.1, floor * 0.6, "exact to round-off (shown at 1e-5)", fontsize=7, color="grey")
    ax2.set_xlabel("grid step h (t units; segment = 1)")
    ax2.set_ylabel("|grid SMP - exact| / exact (mean over segments)")
    ax2.set_title("Grid estimator's error against the exact SMP (depth 2)")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    with atomic_write(OUT / "figure.png") as fh:
        fig.savefig(fh, dpi=110, format="png")

    lines = ["# Exact kink counts and the grid estimator's error", ""]
    for _, f in fits[fits["depths"] == "all"].iterrows():
        lines.append(f"- {f['count'].replace('_', ' ')} per segment = {f['intercept']:.3g} + "
                     f"{f['slope_per_neuron']:.4g} x neurons (R² {f['r_squared']:.5f}, {f['n_architectures']} architectures)")
    for channels, sub in errors.groupby("channels"):
        ok = sub[sub["abs_rel_error_max"] <= 0.01]
        need = f"{int(ok['n_points'].iloc[0])} points (h = {ok['step'].iloc[0]:.3g})" if len(ok) else "more than " \
            f"{int(sub['n_points'].max())} points"
        lines.append(f"- {channels} channels, {int(sub['n_neurons'].iloc[0])} neurons (first network, "
                     f"{sub['kinks_per_step'].iloc[0] / sub['step'].iloc[0]:.0f} region boundaries per segment): the "
                     f"grid needs {need} for every segment within 1 %; at the finest step its mean error is "
                     f"{sub['rel_error_mean'].iloc[-1]:+.2g} with {sub['resolved'].iloc[-1]:.0%} of series resolved.")
    summary = "\n".join(lines) + "\n"
    with atomic_write(OUT / "summary.md") as fh:
        fh.write(summary.encode())
    print(summary)
    print(arch.to_markdown(index=False, floatfmt=".4g"))
    print(fits.to_markdown(index=False, floatfmt=".4g"))
    print(errors.to_markdown(index=False, floatfmt=".3g"))
    print(f"wrote {OUT} in {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
