"""Simulation engine: SMP samples of blocks and chains (DESIGN section 6).

One *trial* draws fresh weights for a chain (from an init family), draws an
input signal for every input unit along a t-grid (from an input family with
per-trial parameters), runs the whole grid through the chain as one batched
forward pass, and measures, per unit, the SMP and the moments of the signal at
the input and after every stage. Each trial gives one row per stage of a
tidy :class:`pandas.DataFrame`.

Seeds: the trials' seeds are ``numpy.random.SeedSequence(seed).spawn(n_trials)``,
so trial ``i`` is the same whatever ``n_trials``, and its results are the same
bit for bit whatever ``chunk_size`` (the blocks of :mod:`smpstats.blocks` are
batch invariant; modules passed by the user are run as they are).
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
import numbers
import warnings
from typing import Any

import numpy as np
import pandas as pd
import torch

from ._validation import check_int
from .blocks import INIT_FAMILIES, Chain, Stage, as_block_specs, build_chain
from .errors import InputError, ResolutionWarning
from .inputs import InputDraw, InputFamily, SegmentInputs, SmoothInputs, as_input_family

__all__ = ["simulate", "trial_seeds", "STAT_COLUMNS"]

logger = logging.getLogger(__name__)

#: Per-signal statistics recorded with suffix ``_in`` and ``_out``.
#: ``sigma`` is the mean over units of each unit's std over t; ``sigma_pool`` the std over all units
#: and t together (it adds the spread of the units' means; the theory's sigma for a layer);
#: ``sigma_chan`` the std within a channel (units of one channel and t, about the channel's own
#: mean; channels are the first axis of a (channels, ...) shape, a 1-D shape is one channel): the
#: spread that max pooling sees inside its windows, which the channels' different means do not enter;
#: ``mu_kink`` and ``sigma_kink`` the mean and std of the signals' values at their grid-detected kinks,
#: weighted by |slope jump| (NaN without kinks, and with ``method="exact"``).
STAT_COLUMNS = ("mu", "sigma", "sigma_pool", "sigma_chan", "sigma_dot", "smp", "kinks", "resolved", "mu_kink",
                "sigma_kink", "n_units", "n_measured")

#: Entropy word that separates the unit-subset stream from the trial's other streams.
_UNIT_STREAM = 0x756E697473

#: Smallest number of grid points per shortest input length scale before a warning.
_MIN_POINTS_PER_SCALE = 8.0

#: Default per-t input shape, by the kind of the first block.
_DEFAULT_SHAPES = {1: (32,), 2: (8, 64), 3: (3, 16, 16)}
_SHAPE_WORDS = {1: "(features,)", 2: "(channels, length)", 3: "(channels, height, width)"}


def _package_version() -> str:
    from .io import package_version

    return package_version()


def trial_seeds(seed: int, n_trials: int) -> np.ndarray:
    """Return the 63-bit seed of each trial (the ``trial_seed`` column).

    Trial ``i``'s seed depends only on ``seed`` and ``i``.
    """
    children = np.random.SeedSequence(seed).spawn(n_trials)
    return np.array([int(c.generate_state(1, np.uint64)[0] >> np.uint64(1)) for c in children], dtype=np.int64)


def _trial_rngs(trial_seed: int) -> tuple[torch.Generator, np.random.Generator]:
    weights, inputs = np.random.SeedSequence(int(trial_seed)).spawn(2)
    gen = torch.Generator().manual_seed(int(weights.generate_state(1, np.uint64)[0]))
    return gen, np.random.default_rng(inputs)


def _default_input_shape(spec: Any) -> tuple[int, ...]:
    if isinstance(spec, torch.nn.Module):
        first = next(iter(spec.children()), spec) if isinstance(spec, torch.nn.Sequential) else spec
        if isinstance(first, torch.nn.Linear):
            shape, why = (first.in_features,), f"in_features of {type(first).__name__}"
        elif isinstance(first, torch.nn.Conv1d):
            shape, why = (first.in_channels, 64), f"in_channels of {type(first).__name__}, length 64"
        elif isinstance(first, torch.nn.Conv2d):
            shape, why = (first.in_channels, 16, 16), f"in_channels of {type(first).__name__}, 16 x 16"
        else:
            raise InputError(
                f"input_shape is required for a torch module that starts with {type(first).__name__}: pass the "
                "shape of one input without the batch dimension, e.g. input_shape=(8, 64)."
            )
    else:
        first_block = as_block_specs(spec)[0]
        rank = first_block.block_type.input_ndim or (2 if first_block.name == "batchnorm" else 1)
        shape, why = _DEFAULT_SHAPES[rank], f"{_SHAPE_WORDS[rank]} for {first_block.name}"
    logger.info("simulate: input_shape not given; using %s (%s). Pass input_shape= to choose.", shape, why)
    return shape


def _check_seed(seed: Any) -> int:
    if seed is None:
        seed = int(np.random.SeedSequence().entropy)
        logger.info("simulate: seed=None; drew seed %d (stored in df.attrs['smpstats']['seed']).", seed)
        return seed
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise InputError(f"seed must be a non-negative int (or None for a fresh random seed); got {seed!r}.")
    return int(seed)


class _Scratch:
    """A float64 buffer reused for the temporaries of every measurement of a ``simulate`` call.

    Measuring a stage needs two temporaries the size of its signals (centred
    values, finite differences); one buffer grown to the largest stage saves
    allocating (and page-faulting) them anew for every stage and trial.
    """

    def __init__(self) -> None:
        self._buffer = np.empty(0)

    def array(self, shape: tuple[int, int]) -> np.ndarray:
        """A C-contiguous array of ``shape`` on the buffer (contents undefined; valid until the next call)."""
        size = shape[0] * shape[1]
        if self._buffer.size < size:
            self._buffer = np.empty(size)
        return self._buffer[:size].reshape(shape)


def _within_channel_variance(mean: np.ndarray, variance: np.ndarray, channel: np.ndarray) -> float:
    """Mean over units of the variance about their channel's mean: each unit's variance over t plus
    its mean's squared distance from the mean of its channel's (measured) units.

    With one channel this is ``sigma_pool ** 2``.
    """
    _, code = np.unique(channel, return_inverse=True)
    centre = np.bincount(code, mean) / np.bincount(code)
    return float(np.mean(variance + (mean - centre[code]) ** 2))


def _signal_stats(y: np.ndarray, channel: np.ndarray, n_units: int, dt: float, scratch: _Scratch, *,
                  grid: bool = True) -> dict[str, float]:
    """Statistics of signals ``y`` of shape (n_measured, n_points), time along the last axis (C-contiguous).

    ``y`` holds all ``n_units`` units of a stage or a random subset of them;
    ``channel`` (shape (n_measured,)) is each one's channel.
    ``grid=False`` leaves out the grid SMP (``smp``, ``kinks`` and ``resolved``
    are NaN), for callers that measure it another way.
    """
    n_measured, n = y.shape
    mean = y.mean(axis=1)
    centered = np.subtract(y, mean[:, None], out=scratch.array((n_measured, n)))
    variance = np.einsum("ij,ij->i", centered, centered) / n  # per unit, over t
    dy = np.subtract(y[:, 1:], y[:, :-1], out=scratch.array((n_measured, n - 1)))
    mu = mean.mean()
    stats = {
        "mu": float(mu),
        "sigma": float(np.sqrt(variance).mean()),
        "sigma_pool": float(np.sqrt(np.mean(variance + (mean - mu) ** 2))),
        "sigma_chan": float(np.sqrt(_within_channel_variance(mean, variance, channel))),
        "sigma_dot": float(np.sqrt(np.einsum("ij,ij->", dy, dy) / dy.size) / dt),
        "smp": math.nan,
        "kinks": math.nan,
        "resolved": math.nan,
        "mu_kink": math.nan,
        "sigma_kink": math.nan,
        "n_units": int(n_units),
        "n_measured": int(n_measured),
    }
    if grid:
        from .grid import smp

        r = smp(y, dt, axis=-1)
        stats.update(smp=float(np.mean(r.value)), kinks=float(np.mean(r.n_peaks)), resolved=float(np.mean(r.resolved)),
                     **_kink_value_moments(y, r._peaks, dt))
    return stats


def _kink_value_moments(y: np.ndarray, peaks, dt: float) -> dict[str, float]:
    """Mean and std of the signals' values at their detected kinks, weighted by |slope jump| (NaN without kinks).

    A later block acts on a kink through the signal's value there (a smooth
    activation scales it by ``|g'(x)|``): where kinks sit at the signal's
    extremes (the vertex of a bend) these moments differ from the signal's own.
    """
    weight = np.abs(peaks.jump)
    if weight.sum() <= 0:
        return {"mu_kink": math.nan, "sigma_kink": math.nan}
    sample = np.clip(np.rint(peaks.time / dt).astype(np.int64), 0, y.shape[1] - 1)
    value = y[peaks.series, sample]
    mean = float(np.average(value, weights=weight))
    return {"mu_kink": mean, "sigma_kink": float(np.sqrt(np.average((value - mean) ** 2, weights=weight)))}


def _units_by_time(y: torch.Tensor | np.ndarray, shape: tuple[int, ...], max_units: int | None,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int]:
    """(n_points, *shape) -> (contiguous float64 array (n_measured, n_points), channels (n_measured,), n_units).

    At most ``max_units`` units are kept: a random subset drawn from ``rng``
    (the per-unit means stay unbiased). The subset is gathered and transposed
    in one copy. A unit's channel is its index on the first axis of a shape
    of two or more axes; a 1-D shape is one channel.
    """
    a = y.numpy() if isinstance(y, torch.Tensor) else y
    a = a.reshape(a.shape[0], -1)
    n_units = a.shape[1]
    per_channel = int(np.prod(shape[1:])) if len(shape) >= 2 else n_units
    if max_units is not None and n_units > max_units:
        keep = np.sort(rng.choice(n_units, size=max_units, replace=False))
        return np.ascontiguousarray(a.T[keep]), keep // per_channel, n_units
    return np.ascontiguousarray(a.T), np.arange(n_units) // per_channel, n_units


def _forward(chain: Chain, x: torch.Tensor, chunk_size: int | None) -> list[torch.Tensor]:
    """Outputs of every stage for the batch ``x``, evaluated in chunks of ``chunk_size`` rows."""
    n = x.shape[0]
    with torch.inference_mode():
        if chunk_size is None or chunk_size >= n:
            outs = []
            h = x
            for s in chain.stages:
                h = s.module(h)
                outs.append(h)
            return outs
        outs = [torch.empty((n, *s.out_shape), dtype=torch.float64) for s in chain.stages]
        for start in range(0, n, chunk_size):
            h = x[start:start + chunk_size]
            for k, s in enumerate(chain.stages):
                h = s.module(h)
                outs[k][start:start + chunk_size] = h
        return outs


def _param_columns(stage: Stage) -> dict[str, Any]:
    """Block parameters as scalar columns (tuples: the value if isotropic, else NaN)."""
    if stage.spec is None:
        return {}
    cols: dict[str, Any] = {}
    for key, value in stage.spec.resolved().items():
        if key in ("init", "sigma_w", "sigma_b"):
            continue
        if isinstance(value, tuple):
            value = value[0] if len(set(value)) == 1 else math.nan
        cols[key] = value
    if stage.spec.window() is not None:
        cols["window"] = stage.spec.window()
    return cols


def _stage_columns(chain: Chain) -> list[dict[str, Any]]:
    """The per-stage columns that do not change between trials."""
    out = []
    for s in chain.stages:
        out.append({
            "stage": s.index,
            "n_stages": len(chain),
            "block": s.name,
            "block_spec": s.label,
            "in_shape": str(s.in_shape),
            "out_shape": str(s.out_shape),
            "piecewise_linear": s.piecewise_linear,
            "creates_kinks": s.creates_kinks,
            "init": s.init,
            "sigma_w": s.sigma_w,
            "sigma_b": s.sigma_b,
            "fan_in": s.fan_in,
            **_param_columns(s),
        })
    return out


def _run_trial(chain: Chain, family: InputFamily, trial: int, trial_seed: int, n_points: int,
               chunk_size: int | None, max_units: int | None, stage_cols: list[dict[str, Any]],
               common: dict[str, Any], scratch: _Scratch) -> list[dict[str, Any]]:
    gen, rng = _trial_rngs(trial_seed)
    chain.reinitialize(gen)
    n_units = int(np.prod(chain.input_shape))
    draw: InputDraw = family.draw(n_points, n_units, rng)
    if not isinstance(draw, InputDraw) or draw.x.shape != (n_points, n_units) or draw.x.dtype != np.float64:
        got = f"x of shape {draw.x.shape} and dtype {draw.x.dtype}" if isinstance(draw, InputDraw) else type(draw).__name__
        raise InputError(
            f"{type(family).__name__}.draw must return an InputDraw whose x is a float64 array of shape "
            f"(n_points, n_units) = ({n_points}, {n_units}); got {got}."
        )
    dt = draw.dt
    x = torch.from_numpy(draw.x.reshape(n_points, *chain.input_shape))
    outs = _forward(chain, x, chunk_size)

    head = {"trial": trial, "trial_seed": trial_seed, **common, "dt": dt}
    family_cols = {f"family_{k}": v for k, v in draw.params.items()}
    # Units to measure are drawn from their own stream, so that they never change the inputs or weights.
    unit_rng = np.random.default_rng([trial_seed, _UNIT_STREAM])
    exact = _exact_stage_stats(chain, draw, family) if common["method"] == "exact" else None
    grid = exact is None  # the exact walk replaces the grid SMP (the moments come from the grid either way)
    stats_in = _signal_stats(*_units_by_time(draw.x, chain.input_shape, max_units, unit_rng), dt, scratch,
                             grid=grid)
    if exact is not None:  # a segment or a smooth path has no kinks of its own; kinked inputs know theirs
        known = draw.kinks is not None
        stats_in.update(smp=float(np.mean(draw.smp_true)) if known else 0.0,
                        kinks=float(np.mean(draw.n_kinks_true)) if known else 0.0, resolved=1.0)
    rows = []
    for k, out in enumerate(outs):
        if isinstance(chain.stages[k].module, torch.nn.Flatten):
            stats_out = stats_in  # the same signals, reshaped
        else:
            stats_out = _signal_stats(*_units_by_time(out, chain.stages[k].out_shape, max_units, unit_rng), dt,
                                      scratch, grid=grid)
            if exact is not None:
                stats_out.update(exact[k])
        row = {**head, **stage_cols[k], **family_cols}
        row.update({f"{name}_in": v for name, v in stats_in.items()})
        row.update({f"{name}_out": v for name, v in stats_out.items()})
        row["smp_in_true"] = float(np.mean(draw.smp_true)) if (k == 0 and draw.smp_true is not None) else math.nan
        rows.append(row)
        stats_in = stats_out
    return rows


_FIRST_COLUMNS = (
    "trial", "stage", "n_stages", "block", "block_spec", "in_shape", "out_shape", "piecewise_linear",
    "creates_kinks", "init", "sigma_w", "sigma_b", "fan_in",
)


def _tidy(rows: list[dict[str, Any]], chain: Chain) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    param_cols = []
    kinds: dict[str, str] = {}
    for s in chain.stages:
        if s.spec is None:
            continue
        for p in s.spec.block_type.params:
            if p.name in ("init", "sigma_w", "sigma_b") or p.name in kinds:
                continue
            kinds[p.name] = p.kind
            param_cols.append(p.name)
    if "window" in df.columns:
        param_cols.append("window")
        kinds["window"] = "int"
    stats = [f"{n}_{side}" for side in ("in", "out") for n in STAT_COLUMNS] + ["smp_in_true"]
    family_cols = [c for c in df.columns if c.startswith("family_")]
    tail = ["family", "path_length", "n_points", "dt", *family_cols, "trial_seed", "method"]
    order = [*_FIRST_COLUMNS, *param_cols, *stats, *tail]
    df = df[[c for c in order if c in df.columns]]
    for c in param_cols:
        if kinds[c] in ("int", "size"):
            df[c] = df[c].astype("Float64").round().astype("Int64") if df[c].isna().any() else df[c].astype("int64")
        elif kinds[c] == "bool":
            df[c] = df[c].astype("boolean")
        elif kinds[c] == "float":
            df[c] = df[c].astype("float64")
    for c in ("piecewise_linear", "creates_kinks"):
        df[c] = df[c].astype("boolean")
    for c in ("sigma_w", "sigma_b", "smp_in_true"):
        df[c] = df[c].astype("float64")
    df["fan_in"] = df["fan_in"].astype("Float64").round().astype("Int64")
    for c in ("n_units_in", "n_units_out", "trial", "stage", "n_stages", "n_points", "trial_seed"):
        df[c] = df[c].astype("int64")
    return df


def simulate(
    spec: Any,
    n_trials: int = 100,
    seed: int | None = 0,
    *,
    input_shape: Any = None,
    path: str | InputFamily = "smooth",
    n_points: int = 512,
    chunk_size: int | None = None,
    init: str = "kaiming",
    sigma_w: float | None = None,
    sigma_b: float | None = None,
    progress: bool = False,
    method: str = "grid",
    max_units: int | None = 2048,
) -> pd.DataFrame:
    """Collect SMP samples of a block or chain of blocks from torch simulations.

    Parameters
    ----------
    spec : str, BlockSpec, sequence of BlockSpec, or torch.nn.Module
        The chain, e.g. ``"conv1d(out_channels=16, kernel_size=5) | relu |
        maxpool1d(kernel_size=2)"`` (see :mod:`smpstats.blocks`). Blocks
        from a spec get fresh weights every trial; a module's weights are
        kept, so only its inputs vary.
    n_trials : int >= 1, default=100
        Number of trials (one weight draw and one input draw each).
    seed : int >= 0 or None, default=0
        Root seed; trial seeds come from ``SeedSequence(seed).spawn``. None
        draws a fresh seed (logged and stored in the attrs).
    input_shape : tuple of int, optional
        Shape of one input at one t, without the batch dimension:
        ``(features,)`` for linear and elementwise blocks, ``(channels,
        length)`` for conv1d and 1-D pools, ``(channels, height, width)`` for
        conv2d and 2-D pools. Default from the first block: (32,), (8, 64) or
        (3, 16, 16) (logged).
    path : {"smooth", "kinked", "segment"} or InputFamily, default="smooth"
        Input family (:mod:`smpstats.inputs`): smooth SE Gaussian processes,
        the same plus random kinks of known SMP, or straight segments between
        random inputs.
    n_points : int >= 8, default=512
        Grid points along the path (t over ``[0, family.length]``).
    chunk_size : int >= 1, optional
        Largest number of grid points per forward pass (bounds memory);
        None runs each trial's grid in one pass. Results do not depend on it.
    init : {"kaiming", "xavier", "normal"}, default="kaiming"
        Chain-wide weight init (blocks may set their own).
    sigma_w, sigma_b : float >= 0, optional
        Chain-wide scales for ``init="normal"``.
    progress : bool, default=False
        Show a tqdm progress bar over trials.
    method : {"grid", "exact"}, default="grid"
        SMP measurement: the grid estimator :func:`smpstats.grid.smp`, or
        :func:`smpstats.exact.exact_smp` (every kink, exactly; piecewise-linear
        blocks only): along the segment for ``path="segment"``, along the
        polyline through the grid points for ``path="smooth"`` (the network's
        kinks, not the polyline's corners; the grid sets how closely the
        polyline follows the smooth path), and for ``path="kinked"`` along
        the same polyline plus the input's own kinks where they are, each
        carried by the network's Jacobian there (``smp_in`` is then the
        inputs' exact SMP). Moments come from the grid either way.
    max_units : int >= 1 or None, default=2048
        Largest number of units whose signals are measured per stage: wider
        stages are measured on a random subset (fixed by the trial seed), which
        keeps the per-unit means unbiased and bounds the cost of measurement
        against the forward pass. None measures every unit. The columns
        ``n_units_*`` and ``n_measured_*`` record both counts.

    Returns
    -------
    pandas.DataFrame
        One row per trial and stage. Columns: ``trial``, ``stage`` (1-based),
        ``n_stages``, ``block``, ``block_spec``, ``in_shape``, ``out_shape``,
        ``piecewise_linear``, ``creates_kinks``, ``init``, ``sigma_w`` and
        ``sigma_b`` (effective: weight std times sqrt(fan_in), bias std),
        ``fan_in``; the block parameters (``out_channels``, ``kernel_size``,
        ... with defaults filled in; a tuple value that is not the same on
        every axis is NaN, see ``block_spec``; ``window`` is the number of
        positions a kernel covers); for the signal entering (``_in``) and
        leaving (``_out``) the stage: ``mu`` (mean over t and units),
        ``sigma`` (std over t, averaged over units), ``sigma_dot`` (rms
        finite-difference derivative, per time unit), ``smp`` (SMP over the
        path, averaged over units), ``kinks`` (detected kinks per unit),
        ``resolved`` (fraction of units whose estimate is resolved),
        ``n_units``; ``smp_in_true`` (exact mean input SMP, stage 1 of the
        kinked family, else NaN); ``family``, ``path_length``, ``n_points``,
        ``dt``, the trial's family parameters ``family_*``, ``trial_seed``
        and ``method``. ``df.attrs["smpstats"]`` holds the spec, seed,
        settings, package version and creation time.
    """
    n_trials = check_int(n_trials, "n_trials", minimum=1)
    seed = _check_seed(seed)
    n_points = check_int(n_points, "n_points", minimum=8)
    if chunk_size is not None:
        chunk_size = check_int(chunk_size, "chunk_size", minimum=1)
    if max_units is not None:
        max_units = check_int(max_units, "max_units", minimum=1)
    if init not in INIT_FAMILIES:
        raise InputError(f"init must be one of {', '.join(repr(c) for c in INIT_FAMILIES)}; got {init!r}.")
    family = as_input_family(path)
    method = _check_method(method, family)
    if input_shape is None:
        input_shape = _default_input_shape(spec)
    chain = build_chain(spec, input_shape, init=init, sigma_w=sigma_w, sigma_b=sigma_b, generator=0)

    dt = family.length / (n_points - 1)
    shortest = family.min_length_scale()
    if shortest is not None and shortest / dt < _MIN_POINTS_PER_SCALE:
        warnings.warn(
            f"n_points={n_points} gives {shortest / dt:.1f} grid points per shortest input length scale "
            f"({shortest:g}); curvature may be taken for kinks. Use n_points >= "
            f"{int(np.ceil(_MIN_POINTS_PER_SCALE * family.length / shortest)) + 1} or longer length scales.",
            ResolutionWarning,
            stacklevel=2,
        )

    seeds = trial_seeds(seed, n_trials)
    stage_cols = _stage_columns(chain)
    common = {"family": family.name, "path_length": float(family.length), "n_points": n_points, "method": method}
    trials = range(n_trials)
    if progress:
        from tqdm.auto import tqdm

        trials = tqdm(trials, desc="simulate", unit="trial")
    rows: list[dict[str, Any]] = []
    scratch = _Scratch()
    for i in trials:
        rows.extend(_run_trial(chain, family, i, int(seeds[i]), n_points, chunk_size, max_units, stage_cols, common,
                               scratch))
    df = _tidy(rows, chain)
    df.attrs["smpstats"] = {
        "kind": "simulate",
        "spec": chain.spec,
        "seed": seed,
        "n_trials": n_trials,
        "input_shape": list(chain.input_shape),
        "path": family.to_dict(),
        "n_points": n_points,
        "chunk_size": chunk_size,
        "init": init,
        "sigma_w": sigma_w,
        "sigma_b": sigma_b,
        "method": method,
        "max_units": max_units,
        "package_version": _package_version(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    return df


class _AllStages(torch.nn.Module):
    """The chain with every stage's output, flattened and concatenated (one exact walk for all stages)."""

    def __init__(self, chain: Chain):
        super().__init__()
        self.stages = torch.nn.ModuleList(s.module for s in chain.stages)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = []
        for module in self.stages:
            x = module(x)
            outs.append(x.flatten(1))
        return torch.cat(outs, dim=1)


def _exact_stage_stats(chain: Chain, draw: InputDraw, family: InputFamily) -> list[dict[str, float]]:
    """Exact mean SMP and kinks per unit after every stage, in one walk of all stages' outputs.

    Straight-segment inputs are walked as one segment (``u`` in [0, 1] over
    ``t = u * length``: SMP in t is SMP in u over ``length``). Smooth inputs
    are walked along the polyline through their grid points, segment by
    segment (SMP in t is the segments' SMP in u over ``dt``): the network's
    kinks exactly, to O(dt**2) in their positions, without the polyline's
    own corners, which are not the network's. Kinked inputs are walked the
    same way, and their own kinks are added where they are
    (:func:`_input_kinks_carried`).
    """
    from .exact import exact_smp

    if isinstance(family, SegmentInputs):
        start, end = draw.start.reshape(1, *chain.input_shape), draw.end.reshape(1, *chain.input_shape)
        scale = 1.0 / family.length
    else:
        x = draw.x.reshape(-1, *chain.input_shape)
        start, end, scale = x[:-1], x[1:], 1.0 / draw.dt
    network = _AllStages(chain)
    result = exact_smp(network, start, end, batched=True)
    smp = np.asarray(result.value).reshape(len(start), -1).sum(axis=0) * scale
    kinks = np.asarray(result.n_kinks).reshape(len(start), -1).sum(axis=0)
    if draw.kinks is not None:  # the input's own kinks, carried by the network's Jacobians
        carried_smp, carried_kinks = _input_kinks_carried(network, draw, chain.input_shape)
        smp, kinks = smp + carried_smp, kinks + carried_kinks
    stats, offset = [], 0
    for stage in chain.stages:
        n = int(np.prod(stage.out_shape))
        stats.append({"smp": float(smp[offset:offset + n].mean()), "kinks": float(kinks[offset:offset + n].mean()),
                      "resolved": 1.0, "n_measured": n})
        offset += n
    return stats


#: Input kinks pushed through the network together.
_KINK_CHUNK = 2048


def _input_kinks_carried(network: torch.nn.Module, draw: InputDraw, input_shape: tuple[int, ...]
                         ) -> tuple[np.ndarray, np.ndarray]:
    """SMP (per time unit) and kink count that the input's own kinks give every output element of ``network``.

    A slope jump ``d`` of input unit ``u`` at time ``t`` is a jump
    ``J(x(t)) d e_u`` of the outputs' slopes (``J`` the network's Jacobian
    there, ``x(t)`` on the polyline through the grid points): summed
    ``|.|`` over the kinks, and the kinks whose jump reaches an element.
    Returns two arrays of shape (n_outputs,).
    """
    k = draw.kinks
    n = np.minimum(np.floor(k.times / draw.dt).astype(np.int64), len(draw.t) - 2)
    frac = (k.times - draw.t[n]) / draw.dt
    smp = kinks = 0.0
    with torch.no_grad():
        for start in range(0, len(k.times), _KINK_CHUNK):
            sl = slice(start, start + _KINK_CHUNK)
            x = draw.x[n[sl]] + frac[sl, None] * (draw.x[n[sl] + 1] - draw.x[n[sl]])
            tangent = np.zeros_like(x)
            tangent[np.arange(len(x)), k.owner[sl]] = k.jumps[sl]
            _, jump = torch.func.jvp(network, (torch.from_numpy(x.reshape(-1, *input_shape)),),
                                     (torch.from_numpy(tangent.reshape(-1, *input_shape)),))
            jump = jump.abs().numpy()
            smp = smp + jump.sum(axis=0)
            kinks = kinks + (jump > 0).sum(axis=0)
    return np.asarray(smp, dtype=float), np.asarray(kinks, dtype=float)


def _check_method(method: Any, family: InputFamily) -> str:
    if method == "grid":
        return method
    if method == "exact":
        if not isinstance(family, (SegmentInputs, SmoothInputs)):
            raise InputError(
                "method='exact' needs straight-segment inputs (path='segment'), smooth Gaussian-process inputs "
                "(path='smooth', walked along the polyline through the grid points, whose corners are not "
                "counted) or those with random kinks (path='kinked', whose kinks are known); got path family "
                f"{family.name!r}. Use method='grid' for other inputs."
            )
        return method
    raise InputError(f"method must be 'grid' or 'exact'; got {method!r}.")
