"""Command-line interface: ``smpstats measure | simulate | samples | fit | check | predict | forensic | blocks | demo``.

Only argument parsing, file reading and printing live here; the work is done
by the library functions, which the messages name so that users can move to
the Python API.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import DataFileError, InputError, SMPStatsError

_DESCRIPTION = """\
Measure and model the nonsmoothness (SMP) of neural networks.

SMP is the sum of the magnitudes of the slope jumps (kinks) of a signal y(t):
piecewise-linear networks (ReLU, max pooling) put kinks into their outputs when
their input moves smoothly; smooth processes do not.
"""

_EPILOG = """\
examples:
  smpstats demo                                   # default study, writes a report folder
  smpstats measure track.csv --dt 0.04            # SMP of each column of a CSV file
  smpstats measure --spec "conv1d(out_channels=8,kernel_size=3)|relu|maxpool1d(kernel_size=2)" \\
                   --input-shape 4,64             # SMP of a random network along a smooth path
  smpstats simulate "relu" --trials 200 --out relu.parquet
  smpstats samples --split train --out train.parquet   # samples of all block families
  smpstats fit train.parquet --kind bayes --out fit.nc  # per-block transfer model
  smpstats check fit.nc --holdout holdout.parquet --figures checks
  smpstats predict "linear(out_features=8)|relu|linear(out_features=8)" --input-shape 8 --figure p.png
  smpstats forensic landmarks.csv --figure f.png  # network or smooth track plus noise?
  smpstats blocks maxpool2d                       # parameters of a block
Run 'smpstats COMMAND --help' for the options of each command.
"""


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(part) for part in text.replace("x", ",").split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a shape as comma-separated positive ints, e.g. 4,64 or 3,16,16; got {text!r}"
        ) from None
    if not shape or any(s < 1 for s in shape):
        raise argparse.ArgumentTypeError(f"expected positive ints, e.g. 4,64; got {text!r}")
    return shape


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number; got {text!r}") from None
    if not np.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number; got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """Return the ``smpstats`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="smpstats",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"smpstats {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    m = sub.add_parser(
        "measure",
        help="SMP of signals in a file, or of a network along an input path",
        description=(
            "Measure SMP. With FILE: each column of a CSV (or each column of a 2-D .npy array; "
            "rows are time samples) is one signal. With --spec: a network with random weights "
            "is evaluated along a smooth Gaussian-process path (or a straight segment) and the "
            "SMP of every output component is measured."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    m.add_argument("file", nargs="?", help="CSV or NPY file of signals (rows = time samples)")
    m.add_argument("--dt", type=_positive_float, default=1.0, help="time step between rows (time units)")
    m.add_argument("--noise", type=float, default=None,
                   help="std of the measurement noise (signal units); estimated when omitted")
    m.add_argument("--spec", help="block chain to evaluate instead of a file, e.g. 'linear(out_features=16)|relu'")
    m.add_argument("--input-shape", type=_shape, help="input shape of the network without batch, e.g. 4,64")
    m.add_argument("--path", choices=("gp", "segment"), default="gp",
                   help="input path: smooth Gaussian process or straight segment between two random inputs")
    m.add_argument("--length-scale", type=_positive_float, default=0.25,
                   help="length scale of the Gaussian-process path (t runs over [0, 1])")
    m.add_argument("--n-points", type=int, default=2048, help="grid points along the path")
    m.add_argument("--seed", type=int, default=0, help="seed of the weights and of the path")
    m.add_argument("--exact", action="store_true",
                   help="with --spec and --path segment: every kink exactly (smpstats.exact_smp) instead of the grid")
    m.add_argument("--json", action="store_true", help="print machine-readable JSON instead of a table")
    m.set_defaults(subparser=m)

    s = sub.add_parser(
        "simulate",
        help="collect SMP samples from torch simulations of blocks into a Parquet table",
        description=(
            "Simulate a block or a chain of blocks (SPEC, e.g. "
            "'conv2d(out_channels=8,kernel_size=3)|relu|maxpool2d(kernel_size=2)') with random "
            "weights on random input paths, and record input and output statistics (mu, sigma, "
            "sigma_dot, SMP, kink counts) per trial and stage. Run 'smpstats blocks' for the blocks."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    s.add_argument("spec", help="block chain, blocks joined by '|'")
    s.add_argument("--trials", type=int, default=100, help="number of trials (weight and input draws)")
    s.add_argument("--seed", type=int, default=0, help="root seed; results do not depend on chunking")
    s.add_argument("--input-shape", type=_shape, default=None,
                   help="input shape without batch (default chosen from the first block)")
    s.add_argument("--path", choices=("smooth", "kinked", "segment"), default="smooth",
                   help="input family: smooth Gaussian processes, the same plus random kinks, "
                        "or straight segments between random inputs")
    s.add_argument("--exact", action="store_true",
                   help="measure SMP exactly (piecewise-linear blocks; --path segment, or smooth and kinked: along the "
                        "polyline through the grid points, kinked inputs' own kinks where they are) instead of on the grid")
    s.add_argument("--n-points", type=int, default=512, help="grid points along each path")
    s.add_argument("--chunk-size", type=int, default=None, help="largest number of points per forward pass")
    s.add_argument("--init", choices=("kaiming", "xavier", "normal"), default="kaiming", help="weight init family")
    s.add_argument("--out", "-o", required=True, help="output Parquet file (written atomically)")
    s.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    s.set_defaults(subparser=s)

    b = sub.add_parser("blocks", help="list the building blocks and their parameters",
                       description="Show the building blocks usable in specs, or the parameters of one.")
    b.add_argument("name", nargs="?", help="block name, e.g. conv2d")

    f = sub.add_parser(
        "forensic",
        help="assess whether a trajectory came from a piecewise-linear network or a smooth process plus noise",
        description=(
            "Forensic assessment of a trajectory (smpstats.assess): each column of a CSV (or of a 2-D "
            ".npy array; rows are frames, at least 64) is one component of the output of some regressor "
            "recorded while its input moved smoothly. Prints the posterior probability that a "
            "piecewise-linear network produced it (against a smooth process plus white noise), the "
            "Bayes factor with its interval, a calibrated p-value under the smooth-plus-noise null, the "
            "noise level and the SMP, with the assumptions behind them."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    f.add_argument("file", help="CSV or NPY file (rows = frames, one column per component)")
    f.add_argument("--dt", type=_positive_float, default=1.0, help="time between frames (time units)")
    f.add_argument("--prior-odds", type=_positive_float, default=1.0,
                   help="prior odds network : smooth for the posterior (1 = even)")
    f.add_argument("--null-sims", type=int, default=199, help="parametric-bootstrap simulations for the p-value")
    f.add_argument("--seed", type=int, default=0, help="seed of the simulations (same seed, same report)")
    f.add_argument("--json", action="store_true", help="print machine-readable JSON instead of the text report")
    f.add_argument("--figure", metavar="PNG", default=None,
                   help="write a figure (trajectory, kinks, the statistic against both hypotheses) to this file")

    sp = sub.add_parser(
        "samples",
        help="simulate training or held-out samples of block families for transfer models",
        description=(
            "Simulate SMP samples of block families over several block configurations "
            "(smpstats.block_samples). The 'train' and 'holdout' splits use different configurations "
            "and seeds, so that 'smpstats check' measures how well a fit generalises."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    sp.add_argument("--families", nargs="+", default=None,
                    help="block families (default all: relu leaky_relu maxpool affine avgpool batchnorm smooth)")
    sp.add_argument("--split", choices=("train", "holdout"), default="train", help="which configurations")
    sp.add_argument("--trials", type=int, default=200, help="trials per configuration")
    sp.add_argument("--seed", type=int, default=0, help="root seed")
    sp.add_argument("--n-points", type=int, default=2048,
                    help="grid points per path (the default models' training resolution)")
    sp.add_argument("--exact", action="store_true",
                    help="measure SMP exactly where every block is piecewise linear (smooth activations: grid)")
    sp.add_argument("--out", "-o", required=True, help="output Parquet file (written atomically)")
    sp.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    ft = sub.add_parser(
        "fit",
        help="fit a per-block transfer model (theory, regression or Bayesian) to samples",
        description=(
            "Fit a transfer model of output SMP given a block's input statistics (smpstats.fit) to one "
            "or more Parquet tables from 'smpstats samples' or 'smpstats simulate'. Writes the model: "
            "JSON for theory and regression, netCDF (ArviZ InferenceData) for bayes. A Bayesian fit "
            "that fails its convergence checks (R-hat, ESS, divergences) says so loudly."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ft.add_argument("samples", nargs="+", help="Parquet sample tables")
    ft.add_argument("--kind", choices=("theory", "regression", "bayes"), default="regression", help="model tier")
    ft.add_argument("--out", "-o", required=True, help="model file to write (atomically)")
    ft.add_argument("--draws", type=int, default=500, help="bayes: posterior draws per chain")
    ft.add_argument("--tune", type=int, default=500, help="bayes: tuning steps per chain")
    ft.add_argument("--chains", type=int, default=4, help="bayes: chains")
    ft.add_argument("--sampler", choices=("auto", "nutpie", "pymc"), default="auto",
                    help="bayes: NUTS implementation (auto: nutpie when installed)")
    ft.add_argument("--seed", type=int, default=0, help="bayes: sampler seed")
    ft.add_argument("--no-progress", action="store_true", help="hide the sampler's progress bar")

    ck = sub.add_parser(
        "check",
        help="check a fitted transfer model on held-out samples (coverage, CRPS, PIT, LOO)",
        description=(
            "Score a fitted transfer model (smpstats.check) on held-out samples: error of the mean, "
            "coverage of 50/90/95 % predictive intervals, CRPS and PIT per block family, and the coverage of "
            "each held-out configuration's mean SMP (the check of the spread between configurations); for Bayesian "
            "fits also R-hat, ESS, divergences, PSIS-LOO and LOO-PIT. Prints a table (or JSON) and "
            "writes figures. Exit status 1 when a family's 90 % coverage is outside 85-95 % or the fit "
            "failed its diagnostics."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ck.add_argument("model", help="model file from 'smpstats fit'")
    ck.add_argument("--holdout", nargs="+", required=True, help="Parquet sample tables not used in the fit")
    ck.add_argument("--figures", metavar="DIR", default=None, help="folder for the figures (created if missing)")
    ck.add_argument("--draws", type=int, default=1000, help="predictive draws per row")
    ck.add_argument("--seed", type=int, default=0, help="seed of the predictive draws")
    ck.add_argument("--json", action="store_true", help="print machine-readable JSON instead of the table")

    pr = sub.add_parser(
        "predict",
        help="predict the SMP after every stage of a chain, with intervals",
        description=(
            "Predict the SMP per unit after every stage of a chain of blocks (smpstats.predict_chain): "
            "mean-field moments and kink multiplicity (a kink reaching a layer through many paths partly "
            "cancels) through the blocks, each Monte Carlo draw one random network of the init family on one input "
            "path, and, per stage, the theory's SMP or a fitted transfer model's "
            "predictive distribution (--model: 'regression' and 'bayes' are the default models of the standard "
            "blocks, or a file from 'smpstats fit'). Prints the per-stage table (or JSON) and can write a figure "
            "of the intervals per stage; --compare N also simulates N networks of the chain (exact SMP along "
            "smooth paths) and adds predicted/simulated, coverage and CRPS per stage."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    pr.add_argument("spec", help="block chain, blocks joined by '|'")
    pr.add_argument("--input-shape", type=_shape, default=None, help="input shape without batch")
    pr.add_argument("--path", choices=("smooth", "kinked"), default="smooth", help="input family")
    pr.add_argument("--model", default="theory",
                    help="'theory' (analytic), 'regression' or 'bayes' (default fitted models), or a file from "
                         "'smpstats fit'")
    pr.add_argument("--compare", type=int, metavar="N", default=0,
                    help="simulate N networks of the chain and compare (0: no simulation)")
    pr.add_argument("--draws", type=int, default=1000, help="Monte Carlo draws")
    pr.add_argument("--seed", type=int, default=0, help="seed of the draws")
    pr.add_argument("--figure", metavar="PNG", default=None, help="write a figure of the intervals per stage")
    pr.add_argument("--json", action="store_true", help="print machine-readable JSON instead of the table")

    d = sub.add_parser(
        "demo",
        help="run the default study and write a report (markdown + figures)",
        description=(
            "Run the default study on this machine (a few minutes): which building blocks create "
            "nonsmoothness from smooth inputs, simulated against theory, and the SMP of a small "
            "network along a smooth path. Writes report.md, figures and tables into a folder."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    d.add_argument("--out", "-o", default="smpstats-demo", help="folder for the report")
    d.add_argument("--trials", type=int, default=40, help="trials per block")
    d.add_argument("--seed", type=int, default=0, help="root seed")
    d.add_argument("--no-progress", action="store_true", help="hide progress bars")
    d.add_argument("--bayes", action="store_true",
                   help="also fit and check the Bayesian transfer models (PyMC compiles on first use: minutes)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``smpstats`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return _COMMANDS[args.command](args, parser)
    except SMPStatsError as exc:
        message = str(exc)
        for python_name, option in _OPTION_NAMES.get(args.command, {}).items():
            message = message.replace(python_name, option)
        print(f"smpstats {args.command}: error: {message}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into e.g. head: stop quietly
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print(f"smpstats {args.command}: interrupted; nothing partial was written.", file=sys.stderr)
        return 130


def _read_signals(path: str) -> tuple[np.ndarray, list[str]]:
    """Read a CSV or NPY file into an array of shape (n_times, n_components) and column names."""
    import pandas as pd

    p = Path(path)
    if not p.is_file():
        raise DataFileError(f"cannot read {path!r}: no such file.")
    if p.suffix.lower() == ".npy":
        with open(p, "rb") as fh:
            if fh.read(6) != b"\x93NUMPY":
                raise DataFileError(f"cannot read {path!r}: it is not a .npy array file (no NumPy header).")
        try:
            arr = np.load(p, allow_pickle=False)
        except Exception as exc:
            raise DataFileError(f"cannot read {path!r} as a numeric .npy array: {exc}") from None
        if arr.dtype == object or not np.issubdtype(arr.dtype, np.number):
            raise DataFileError(f"{path!r} holds an array of dtype {arr.dtype}; expected numbers.")
        arr = arr[:, None] if arr.ndim == 1 else arr
        if arr.ndim != 2:
            raise DataFileError(
                f"{path!r} holds an array of shape {arr.shape}; expected (n_times,) or (n_times, n_components)."
            )
        return arr, [str(i) for i in range(arr.shape[1])]
    try:
        first = pd.read_csv(p, header=None, dtype=str, nrows=1)
        has_header = not all(_is_number(c) for c in first.iloc[0])
        frame = pd.read_csv(p, header=0 if has_header else None)
    except Exception as exc:
        raise DataFileError(f"cannot read {path!r} as CSV (one column per signal, one row per time sample): {exc}") from None
    bad = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    if bad:
        raise DataFileError(
            f"{path!r}: column(s) {', '.join(map(str, bad))} are not numeric; expected one numeric column per "
            "signal and one row per time sample (a header row is allowed)."
        )
    return frame.to_numpy(dtype=np.float64), [str(c) for c in frame.columns]


def _save_png(fig, path):
    """Write a figure atomically (Agg backend: the CLI never opens windows); returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    from .io import save_figure

    return save_figure(fig, path)


def _json_default(value):
    """JSON for numpy scalars and arrays (full float64 precision)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _is_number(text) -> bool:
    try:
        float(text)
    except (TypeError, ValueError):
        return False
    return True


def _cmd_measure(args, parser) -> int:
    if (args.file is None) == (args.spec is None):
        args.subparser.error("measure needs either FILE or --spec (not both)")
    if args.file is not None:
        from .grid import smp

        signals, names = _read_signals(args.file)
        result = smp(signals, dt=args.dt, axis=0, noise=args.noise)
        table = result.to_frame().drop(columns=["index_0"]).rename(columns={"value": "smp"})
        table.insert(0, "signal", names)
        title = f"SMP of {len(names)} signal(s) in {args.file} ({signals.shape[0]} samples, dt={args.dt:g})"
    else:
        if args.input_shape is None:
            args.subparser.error("--spec needs --input-shape (e.g. --input-shape 4,64)")
        from .blocks import build_chain
        from .measurement import measure
        from .paths import GaussianProcessPath, SegmentPath

        chain = build_chain(args.spec, args.input_shape, generator=args.seed)
        if args.exact:
            if args.path != "segment":
                args.subparser.error("--exact needs --path segment (exact SMP is computed along straight segments)")
            from .exact import exact_smp

            rng = np.random.default_rng(args.seed)
            start, end = rng.standard_normal(args.input_shape), rng.standard_normal(args.input_shape)
            result = exact_smp(chain, start, end, batched=False)
            table = result.to_frame()
            title = (f"Exact SMP of {chain.spec} with random weights (seed {args.seed}) along a straight segment "
                     f"({result.n_evaluations} model evaluations)")
            return _print_measure(args, title, table, result)
        if args.path == "gp":
            path = GaussianProcessPath(args.input_shape, length_scale=args.length_scale, seed=args.seed)
        else:
            rng = np.random.default_rng(args.seed)
            path = SegmentPath(rng.standard_normal(args.input_shape), rng.standard_normal(args.input_shape))
        result = measure(chain, path, args.n_points, noise=args.noise, progress=not args.json)
        table = result.to_frame()
        title = (
            f"SMP of {chain.spec} with random weights (seed {args.seed}) along a "
            f"{'Gaussian-process path' if args.path == 'gp' else 'straight segment'}, {args.n_points} points"
        )
        result = result.smp
    return _print_measure(args, title, table, result)


def _print_measure(args, title: str, table, result) -> int:
    import pandas as pd

    if args.json:
        out = {"title": title, "total": float(np.sum(result.value)), "rows": table.to_dict(orient="records")}
        print(json.dumps(out, indent=2, default=_json_default))
        return 0
    print(title)
    with pd.option_context("display.max_rows", 40, "display.width", 120, "display.max_colwidth", 60):
        print(table.to_string(index=False, max_rows=40))
    print()
    print(result.summary())
    return 0


def _cmd_simulate(args, parser) -> int:
    from .io import save_samples
    from .simulation import simulate

    table = simulate(
        args.spec,
        n_trials=args.trials,
        seed=args.seed,
        input_shape=args.input_shape,
        path=args.path,
        n_points=args.n_points,
        chunk_size=args.chunk_size,
        init=args.init,
        progress=not args.no_progress,
        method="exact" if args.exact else "grid",
    )
    out = save_samples(table, args.out)
    cols = [c for c in ("stage", "block", "smp_in", "smp_out", "kinks_out", "resolved_out") if c in table]
    print(f"wrote {len(table)} rows ({args.trials} trials x {table['stage'].nunique()} stage(s)) to {out}")
    print(table[cols].groupby(["stage", "block"], sort=False).mean().to_string())
    print("Next: smpstats.load_samples(path) reads the table back with its metadata.")
    return 0


def _cmd_forensic(args, parser) -> int:
    from .forensics import assess

    signals, names = _read_signals(args.file)
    report = assess(signals, dt=args.dt, prior_odds=args.prior_odds, n_null_sims=args.null_sims, seed=args.seed)
    if args.figure is not None:
        from .forensic_plots import plot_report

        _save_png(plot_report(report), args.figure)
    if args.json:
        out = {"file": args.file, "components": names, **report.to_dict()}
        if args.figure is not None:
            out["figure"] = args.figure
        print(json.dumps(out, indent=2, default=_json_default))
        return 0
    print(f"{args.file}: components {', '.join(names)}")
    print(report.summary())
    if args.figure is not None:
        print(f"figure written to {args.figure}")
    return 0


def _read_tables(paths: Sequence[str]):
    import pandas as pd

    from .io import load_samples

    tables = []
    for path in paths:
        t = load_samples(path)
        if "source" not in t.columns:
            t["source"] = str(path)
        tables.append(t)
    return tables[0] if len(tables) == 1 else pd.concat(tables, ignore_index=True)


def _cmd_samples(args, parser) -> int:
    from .training_data import block_samples
    from .io import save_samples

    table = block_samples(args.families, split=args.split, n_trials=args.trials, seed=args.seed,
                          n_points=args.n_points, method="exact" if args.exact else "grid",
                          progress=not args.no_progress)
    out = save_samples(table, args.out, metadata={"kind": "block_samples", "split": args.split,
                                                  "families": args.families, "seed": args.seed})
    print(f"wrote {len(table)} rows to {out}")
    print(table.groupby("source")["smp_out"].agg(["size", "mean"]).to_string())
    print(f"Next: smpstats fit {out} --kind regression --out model.json")
    return 0


def _cmd_fit(args, parser) -> int:
    from .transfer import fit

    samples = _read_tables(args.samples)
    options = {}
    if args.kind == "bayes":
        options = dict(draws=args.draws, tune=args.tune, chains=args.chains, sampler=args.sampler, seed=args.seed,
                       progress=not args.no_progress)
    model = fit(samples, kind=args.kind, **options)
    path = model.save(args.out)
    print(model.summary())
    print(f"model written to {path}")
    if model.warnings:
        print("WARNING: this fit failed its convergence checks; predictions built on it say so.", file=sys.stderr)
    print(f"Next: smpstats check {path} --holdout HOLDOUT.parquet --figures check-figures")
    return 0


def _cmd_check(args, parser) -> int:
    from .checks import check
    from .transfer import load_model

    model = load_model(args.model)
    holdout = _read_tables(args.holdout)
    report = check(model, holdout, n_draws=args.draws, seed=args.seed)
    written = []
    if args.figures is not None:
        from .transfer_plots import check_figures

        folder = Path(args.figures)
        folder.mkdir(parents=True, exist_ok=True)
        for stem, fig in check_figures(report, model).items():
            written.append(str(_save_png(fig, folder / f"{stem}.png")))
    if args.json:
        print(json.dumps({"model": args.model, **report.to_dict(), "figures": written}, indent=2,
                         default=_json_default))
    else:
        print(report.summary())
        if written:
            print(f"{len(written)} figures written to {args.figures}")
    return 0 if report.passed else 1


def _cmd_predict(args, parser) -> int:
    from .chain_prediction import predict_chain

    model = args.model
    if model not in ("theory", "regression", "bayes"):
        from .transfer import load_model

        model = load_model(model)
    if args.compare < 0:
        raise InputError(f"--compare must be >= 0 (simulated networks; 0 for none); got {args.compare}.")
    pred = predict_chain(args.spec, input_shape=args.input_shape, path=args.path, model=model, n_draws=args.draws,
                         seed=args.seed)
    sim = None
    if args.compare:
        from .simulation import simulate

        method = "exact" if args.path == "smooth" and all(s.piecewise_linear for s in _chain_stages(args)) else "grid"
        sim = simulate(args.spec, args.compare, seed=args.seed + 1, input_shape=args.input_shape, path=args.path,
                       n_points=513 if method == "exact" else 2048, method=method, progress=not args.json)
    if args.figure is not None:
        from .plotting import plot_chain_prediction

        _save_png(plot_chain_prediction(pred, sim), args.figure)
    frame = pred.to_frame()
    checked = pred.check(sim) if sim is not None else None
    if args.json:
        doc = {"spec": pred.spec, "kind": pred.kind, "warnings": list(pred.warnings),
               "stages": frame.to_dict(orient="records"), "figure": args.figure}
        if checked is not None:
            doc["comparison"] = checked.to_dict(orient="records")
        print(json.dumps(doc, indent=2, default=_json_default))
        return 0
    print(pred.summary())
    if checked is not None:
        print(f"\nAgainst {args.compare} simulated networks:")
        print(checked.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    if args.figure is not None:
        print(f"figure written to {args.figure}")
    return 0


def _chain_stages(args):
    from .blocks import build_chain
    from .simulation import _default_input_shape

    shape = args.input_shape if args.input_shape is not None else _default_input_shape(args.spec)
    return build_chain(args.spec, shape).stages


def _cmd_blocks(args, parser) -> int:
    from .blocks import block_help

    print(block_help(args.name))
    return 0


def _cmd_demo(args, parser) -> int:
    from .demo import run_demo

    report = run_demo(args.out, n_trials=args.trials, seed=args.seed, progress=not args.no_progress, bayes=args.bayes)
    print(f"report written to {report}")
    return 0


#: Python parameter names in library messages -> the options a CLI user typed.
_OPTION_NAMES = {
    "simulate": {"n_trials": "--trials", "n_points": "--n-points", "chunk_size": "--chunk-size",
                 "input_shape": "--input-shape"},
    "measure": {"n_points": "--n-points", "input_shape": "--input-shape"},
    "demo": {"n_trials": "--trials"},
    "samples": {"n_trials": "--trials"},
    "fit": {"n_draws": "--draws"},
    "check": {"n_draws": "--draws"},
    "predict": {"n_draws": "--draws", "input_shape": "--input-shape"},
    "forensic": {"n_null_sims": "--null-sims", "prior_odds": "--prior-odds"},
}

_COMMANDS = {
    "measure": _cmd_measure,
    "simulate": _cmd_simulate,
    "forensic": _cmd_forensic,
    "blocks": _cmd_blocks,
    "demo": _cmd_demo,
    "samples": _cmd_samples,
    "fit": _cmd_fit,
    "check": _cmd_check,
    "predict": _cmd_predict,
}


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
