"""Study: predictive distributions of SMP for chains of blocks, against exactly measured simulated networks.

Claims checked (chains the per-block fits never saw, depths 2 to 12, 1-D
and 2-D, mixing linear, conv, ReLU, LeakyReLU, max and average pooling and
batch norm):

1. Mean output SMP per stage within 10 % of simulation up to depth 6 and
   within 20 % up to depth 12 (reported per stage, as predicted / simulated,
   with the simulated mean's standard error, for predictions from the input
   family and for predictions matched to each simulated trial's input
   parameters, which removes the input-sampling noise from the comparison).
2. 90 % predictive intervals of per-network output SMP cover 85-95 % of the
   simulated networks at every stage; PIT roughly uniform.
3. CRPS of the full statistical prediction (default regression models,
   propagated state) better than two baselines: theory only (no uncertainty
   model: the theory's mean per stage as a point forecast, whose CRPS is
   its mean absolute error) and per-block regression chained without the
   propagated state. The analytic mode (theory with the spread of the input
   family, of finite-width networks and of paths) is scored beside them.
4. Where predictions break: very narrow layers, deep max-pool stacks, and
   trained weights (a ReLU MLP, a small 1-D CNN and a 2-D CNN with leaky
   ReLU, max pooling and PReLU, trained here; their
   moments from points pushed through the network against mean-field
   moments that assume independent units).

The predictions use the defaults of :func:`smpstats.predict_chain`:
finite-width moments (``finite_width=True``: each Monte Carlo draw
realises one random network's pooled moments and its gains on the kinks it
carries) and, in the analytic mode, one path per draw (``path_noise=True``:
its own finite number of kink events).

Ground truth: :func:`smpstats.simulate` with ``method="exact"`` walks the
polyline through 513 points of each smooth input path and records every kink
of every unit of every stage (no grid detection limit).

Writes into ``analyses/results/chain_predictions/``: ``by_stage.csv/.md``
(every architecture, stage and method), ``coverage_by_depth.csv/.md``,
``crps.csv/.md``, ``means.md``, ``trained.csv/.md`` (the trained networks)
and one figure per architecture ``chain_<name>.png`` (intervals and
simulated networks per stage).

Run: ``python analyses/chain_predictions.py [--trials 200]`` (about ten
minutes on two cores; the simulations are cached in the results folder's
``cache/``, which git ignores).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

import smpstats  # noqa: E402
from smpstats.inputs import SmoothInputs  # noqa: E402
from smpstats.io import atomic_write, load_samples, save_figure, save_samples  # noqa: E402
from smpstats.plotting import plot_chain_prediction  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "chain_predictions"
CACHE = OUT / "cache"
FAMILY = SmoothInputs(mu=(-0.5, 0.5), sigma=(0.5, 1.5), length_scale=(0.1, 0.3))
N_POINTS = 513

#: name -> (spec, input shape). None of these chains is in the per-block training data.
ARCHITECTURES = {
    "mlp2": ("linear(out_features=32) | relu", (16,)),
    "mlp12": (" | ".join(["linear(out_features=16) | relu"] * 6), (8,)),
    "leaky8": (" | ".join(["linear(out_features=24) | leaky_relu(negative_slope=0.1)"] * 4), (8,)),
    "cnn1d": ("conv1d(out_channels=8, kernel_size=3) | relu | conv1d(out_channels=8, kernel_size=3) | relu | "
              "maxpool1d(kernel_size=2) | conv1d(out_channels=8, kernel_size=3) | batchnorm | relu | "
              "avgpool1d(kernel_size=2) | flatten | linear(out_features=4)", (2, 32)),
    "cnn2d": ("conv2d(out_channels=4, kernel_size=3) | batchnorm | relu | maxpool2d(kernel_size=2) | "
              "conv2d(out_channels=4, kernel_size=3) | leaky_relu(negative_slope=0.1) | flatten | "
              "linear(out_features=4)", (1, 12, 12)),
    "maxstack": (" | ".join(["conv1d(out_channels=6, kernel_size=3, padding=1) | relu | maxpool1d(kernel_size=2)"] * 3),
                 (2, 32)),
    "narrow": (" | ".join(["linear(out_features=4) | relu"] * 5), (4,)),
}


#: Networks with trained weights: name -> (input shape, builder). Each is trained here, deterministically
#: (seeded, 200 Adam steps at learning rate 0.003), to regress a smooth random function of its input.
TRAINED = {
    "trained_mlp": ((8,), lambda: torch.nn.Sequential(
        torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 32), torch.nn.ReLU(),
        torch.nn.Linear(32, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1))),
    "trained_cnn1d": ((2, 32), lambda: torch.nn.Sequential(
        torch.nn.Conv1d(2, 8, 3), torch.nn.ReLU(), torch.nn.Conv1d(8, 8, 3), torch.nn.ReLU(),
        torch.nn.MaxPool1d(2), torch.nn.Flatten(), torch.nn.Linear(8 * 14, 1))),
    "trained_cnn2d": ((2, 16, 16), lambda: torch.nn.Sequential(
        torch.nn.Conv2d(2, 4, 3), torch.nn.LeakyReLU(0.1), torch.nn.MaxPool2d(2), torch.nn.Conv2d(4, 4, 3),
        torch.nn.PReLU(), torch.nn.Flatten(), torch.nn.Linear(4 * 5 * 5, 1))),
}


def trained_network(name: str) -> torch.nn.Module:
    shape, build = TRAINED[name]
    torch.manual_seed(0)
    net = build()
    proj = torch.randn(int(np.prod(shape)), 4)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(200):
        x = torch.randn(256, *shape)
        target = torch.sin(x.flatten(1) @ proj).sum(1, keepdim=True)
        loss = ((net(x) - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


def write_table(df: pd.DataFrame, stem: str) -> None:
    with atomic_write(OUT / f"{stem}.csv") as fh:
        fh.write(df.to_csv(index=False).encode())
    with atomic_write(OUT / f"{stem}.md") as fh:
        fh.write(df.to_markdown(index=False, floatfmt=".3g").encode())


def simulated(name: str, n_trials: int, module: torch.nn.Module | None = None) -> pd.DataFrame:
    spec, shape = (module, TRAINED[name][0]) if module is not None else ARCHITECTURES[name]
    tag = ""
    if module is not None:  # the cache is named by the weights
        weights = b"".join(p.detach().numpy().tobytes() for p in module.parameters())
        tag = "_" + hashlib.sha256(weights).hexdigest()[:10]
    path = CACHE / f"{name}_{n_trials}{tag}.parquet"
    if path.exists():
        return load_samples(path)
    t0 = time.perf_counter()
    sim = smpstats.simulate(spec, n_trials, seed=2026, input_shape=shape, n_points=N_POINTS, path=FAMILY,
                            method="exact", progress=True)
    print(f"  simulated {name}: {time.perf_counter() - t0:.0f} s")
    save_samples(sim, path)
    return sim


def point_forecast(pred: smpstats.ChainPrediction) -> smpstats.ChainPrediction:
    """The prediction's mean per stage as a single draw: a forecast without an uncertainty model (CRPS = MAE)."""
    from smpstats.predictive import Predictive

    points = tuple(Predictive(np.full((1, 1), p.mean()[0]), kind=p.kind) for p in pred.predictive)
    return dataclasses.replace(pred, predictive=points)


def predictions(name: str, sim: pd.DataFrame, model) -> dict[str, smpstats.ChainPrediction]:
    spec, shape = ARCHITECTURES[name]
    first = sim[sim["stage"] == 1]
    common = dict(input_shape=shape)  # the statistical models at their training resolution (the default)
    theory = smpstats.predict_chain(spec, path=FAMILY, n_draws=2000, seed=1, **common)
    return {
        "theory": theory,
        "theory, point": point_forecast(theory),
        "regression": smpstats.predict_chain(spec, path=FAMILY, model=model, n_draws=2000, seed=1, **common),
        "regression, no state": smpstats.predict_chain(spec, path=FAMILY, model=model, n_draws=2000, seed=1,
                                                       propagate=False, **common),
        "theory, matched inputs": smpstats.predict_chain(spec, path=first, **common),
    }


def checks(preds: dict[str, smpstats.ChainPrediction], sim: pd.DataFrame, key: str, name: str) -> list:
    """Per-stage checks of each method's prediction against the simulated networks, labelled."""
    tables = []
    for method, pred in preds.items():
        tab = pred.check(sim)
        tab.insert(0, "method", method)
        tab.insert(0, key, name)
        tables.append(tab)
    return tables


def side_by_side(name: str, sim: pd.DataFrame, panels: dict[str, smpstats.ChainPrediction]) -> None:
    """Two predictions (title -> prediction) against the simulated networks, saved as chain_<name>.png."""
    n_stages = len(next(iter(panels.values())).stages)
    fig, axes = plt.subplots(1, 2, figsize=(max(9, 1.5 * n_stages + 3), 4.2), sharey=True)
    for ax, (title, pred) in zip(axes, panels.items()):
        plot_chain_prediction(pred, sim, ax=ax)
        ax.set_title(f"{name}: {title}", fontsize=9)
    fig.tight_layout()
    save_figure(fig, OUT / f"chain_{name}.png")
    plt.close(fig)


def trained_weights(n_trials: int, model) -> pd.DataFrame:
    """Given (trained) weights: moments from points pushed through the module against mean-field moments."""
    tables = []
    for name, (shape, _) in TRAINED.items():
        print(name)
        net = trained_network(name)
        sim = simulated(name, n_trials, module=net)
        first = sim[sim["stage"] == 1]
        preds = {"theory, sampled moments": smpstats.predict_chain(net, input_shape=shape, path=first),
                 "theory, mean-field moments": smpstats.predict_chain(net, input_shape=shape, path=first,
                                                                      sample_module=False),
                 "regression, sampled moments": smpstats.predict_chain(net, input_shape=shape, path=first,
                                                                       model=model)}
        tables += checks(preds, sim, "network", name)
        side_by_side(name, sim, {"theory, moments from points through the network": preds["theory, sampled moments"],
                                 "theory, mean-field moments (independent units)":
                                     preds["theory, mean-field moments"]})
    out = pd.concat(tables, ignore_index=True)
    return out[out["simulated"] > 0].reset_index(drop=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=200, help="simulated networks per architecture")
    args = parser.parse_args()
    torch.set_num_threads(1)  # many small forward passes in the exact walk
    CACHE.mkdir(parents=True, exist_ok=True)
    model = smpstats.default_model("regression")
    tables = []
    for name, (spec, _) in ARCHITECTURES.items():
        print(name)
        sim = simulated(name, args.trials)
        preds = predictions(name, sim, model)
        tables += checks(preds, sim, "architecture", name)
        side_by_side(name, sim, {"theory (analytic mode)": preds["theory"],
                                 "default regression models, propagated state": preds["regression"]})
    write_table(trained_weights(args.trials, model), "trained")
    by_stage = pd.concat(tables, ignore_index=True)
    by_stage = by_stage[by_stage["simulated"] > 0].reset_index(drop=True)  # stages before the first kink
    write_table(by_stage, "by_stage")

    depth_bins = pd.cut(by_stage["stage"], [0, 2, 4, 6, 9, 12], labels=["1-2", "3-4", "5-6", "7-9", "10-12"])
    graded = by_stage.assign(depth=depth_bins, abs_log_ratio=np.abs(np.log(by_stage["ratio"])))
    broken = graded["architecture"] == "narrow"
    cover = (graded[~broken & graded["method"].isin(["theory", "regression", "regression, no state"])]
             .groupby(["method", "depth"], observed=True)
             .agg(stages=("coverage_90", "size"), coverage_50=("coverage_50", "mean"),
                  coverage_90=("coverage_90", "mean"), min_coverage_90=("coverage_90", "min"),
                  max_coverage_90=("coverage_90", "max"), median_abs_error=("abs_log_ratio", "median"))
             .reset_index())
    write_table(cover, "coverage_by_depth")

    crps = (graded.pivot_table(index=["architecture", "stage", "block"], columns="method", values="crps")
            .reset_index())
    summary = (graded[graded["method"] != "theory, matched inputs"]
               .groupby(["architecture", "method"]).agg(mean_crps=("crps", "mean")).reset_index()
               .pivot(index="architecture", columns="method", values="mean_crps").reset_index())
    # the two baselines: the theory without an uncertainty model, per-block regression without the state
    for method in ("regression", "theory"):
        summary[f"{method} better than both baselines"] = (summary[method] < summary["theory, point"]) & (
            summary[method] < summary["regression, no state"])
    write_table(summary, "crps")
    write_table(crps, "crps_by_stage")

    lines = ["# Mean SMP per stage: predicted / simulated", ""]
    for method in ("theory", "theory, matched inputs", "regression"):
        sub = graded[graded["method"] == method]
        lines.append(f"## {method}")
        for name, grp in sub.groupby("architecture", sort=False):
            cells = ", ".join(f"{s}. {b} {r:.2f}" for s, b, r in zip(grp["stage"], grp["block"], grp["ratio"]))
            lines.append(f"- **{name}**: {cells}")
        within = sub[~(sub["architecture"] == "narrow")]
        for limit, depth in ((0.10, 6), (0.20, 12)):
            part = within[within["stage"] <= depth]
            ok = (np.abs(part["ratio"] - 1) <= limit).mean()
            lines.append(f"- stages up to depth {depth} within {limit:.0%} (narrow excluded): {ok:.0%} of {len(part)}")
        lines.append("")
    with atomic_write(OUT / "means.md") as fh:
        fh.write("\n".join(lines).encode())
    print("\n".join(lines))
    print(cover.to_string())
    print(summary.to_string())


if __name__ == "__main__":
    main()
