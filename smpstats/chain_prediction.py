"""Predictive distributions of SMP for chains of blocks (DESIGN §7).

:func:`predict_chain` pushes the state of a layer (mean, pooled std and RMS
slope of its signals, and its SMP per unit) through a chain, block by block,
by Monte Carlo: each draw is one network of the init family on one input of
the input family (the input's parameters drawn as :func:`smpstats.simulate`
draws them per trial). The moments follow the mean-field rules of
:mod:`smpstats.mean_field`, realised per draw for one network of finite width
(:class:`smpstats.finite_width.FiniteWidth`); the SMP after each block comes from a transfer
model: the theory (fast analytic mode) or a fitted model from
:func:`smpstats.fit` (statistical mode, with parameter and trial-to-trial
uncertainty, one independent predictive draw per Monte Carlo draw).
Between blocks, :class:`smpstats.kink_state.KinkState` follows how kinks
spread over units and partly cancel when later affine maps sum them; the
kinks a network carries scale with that network's own gains (mean 1 over
networks), and in the analytic mode each draw is also one path, with its
own finite number of kink events (``path_noise``).
:func:`smpstats.default_model` provides fitted models of the standard
blocks (``model="regression"`` or ``"bayes"``).

A torch module (an ``nn.Sequential`` or a plain-chain ``forward``) is read
by :func:`smpstats.chain_reading.read_chain`; its weights are given, not
drawn: the moments come from points of the input family pushed through it
(:mod:`smpstats.sampled_moments`), and its kinks are counted per unit where
they are born and carried by its own Jacobians (:mod:`smpstats.kink_transport`).
With ``sample_module=False`` the mean-field rules and the kink state use the
weights' statistics (:func:`smpstats.chain_reading.given_weight_columns`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ._validation import check_bool, check_int
from .errors import InputError
from .kink_state import KinkState
from .predictive import Predictive

__all__ = ["predict_chain", "ChainPrediction"]


@dataclass(frozen=True)
class ChainPrediction:
    """Per-stage predictive distributions of output SMP per unit.

    Attributes
    ----------
    spec : str
        The chain.
    kind : str
        "theory" or the fitted model's tier.
    stages : pandas.DataFrame
        One row per stage: ``stage``, ``block``, ``block_spec``, and the mean
        predicted input moments ``mu_in``, ``sigma_pool_in``, ``sigma_dot_in``.
    predictive : tuple of Predictive
        One per stage, each with one row and ``n_draws`` draws.
    warnings : tuple of str
        Caveats of the model used.
    """

    spec: str
    kind: str
    stages: pd.DataFrame
    predictive: tuple[Predictive, ...]
    warnings: tuple[str, ...] = ()

    @property
    def draws(self) -> np.ndarray:
        """All stages' draws, shape (n_stages, n_draws)."""
        return np.vstack([p.draws for p in self.predictive])

    def to_frame(self, probs: tuple[float, ...] = (0.5, 0.9)) -> pd.DataFrame:
        """One row per stage: block and predictive mean, std, median and central intervals of SMP per unit."""
        frames = [p.to_frame(probs) for p in self.predictive]
        pred = pd.concat(frames, ignore_index=True)
        return pd.concat([self.stages[["stage", "block", "block_spec"]].reset_index(drop=True), pred], axis=1)

    def check(self, samples: pd.DataFrame, probs: tuple[float, ...] = (0.5, 0.9)) -> pd.DataFrame:
        """Compare with simulated networks of the same chain (a :func:`smpstats.simulate` table).

        Returns one row per stage: ``predicted`` and ``simulated`` mean SMP per
        unit, ``ratio`` (predicted / simulated), ``se_simulated`` (standard
        error of the simulated mean), ``coverage_<p>`` (share of simulated
        networks inside the central ``p`` interval), ``crps`` (mean CRPS of
        the networks' SMP under the predictive draws) and ``pit_ks_p``
        (Kolmogorov-Smirnov p-value of uniform PIT values).
        """
        from scipy import stats

        from .predictive import crps_from_draws, pit_from_draws

        if not isinstance(samples, pd.DataFrame) or not {"stage", "smp_out"} <= set(samples.columns):
            raise InputError("check needs a simulate table (columns 'stage' and 'smp_out') of the same chain.")
        stages = self.stages["stage"].to_numpy()
        if sorted(samples["stage"].unique()) != sorted(stages):
            raise InputError(f"the samples have stages {sorted(samples['stage'].unique())}, the prediction "
                             f"{stages.tolist()}: simulate the same chain ({self.spec}).")
        rows, rng = [], np.random.default_rng(0)
        for stage, pred in zip(stages, self.predictive):
            obs = samples.loc[samples["stage"] == stage, "smp_out"].to_numpy(dtype=float)
            draws = np.broadcast_to(pred.draws, (len(obs), pred.n_draws))
            mean_obs = obs.mean()
            row = {"stage": stage, "predicted": pred.mean()[0], "simulated": mean_obs,
                   "ratio": pred.mean()[0] / mean_obs if mean_obs > 0 else math.nan,
                   "se_simulated": obs.std(ddof=1) / math.sqrt(len(obs)) if len(obs) > 1 else math.nan}
            for p in probs:
                lo, hi = pred.interval(p)
                row[f"coverage_{int(round(100 * p))}"] = float(np.mean((obs >= lo[0]) & (obs <= hi[0])))
            row["crps"] = float(crps_from_draws(draws, obs).mean())
            row["pit_ks_p"] = float(stats.kstest(pit_from_draws(draws, obs, rng), "uniform").pvalue) \
                if mean_obs > 0 else math.nan
            rows.append(row)
        out = pd.DataFrame(rows)
        return pd.concat([self.stages[["block"]].reset_index(drop=True), out], axis=1)[
            ["stage", "block", *[c for c in out.columns if c != "stage"]]]

    def summary(self) -> str:
        head = f"Predicted SMP per unit along the path ({self.kind}) for {self.spec}:"
        lines = [head, self.to_frame().to_string(index=False, float_format=lambda v: f"{v:.4g}")]
        lines += [f"WARNING: {w}" for w in self.warnings]
        return "\n".join(lines)


def _input_draws(family: Any, n_draws: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    from .inputs import KinkedInputs, SmoothInputs

    if not isinstance(family, SmoothInputs):
        raise InputError(
            f"predict_chain needs a smooth or kinked input family (Gaussian-process inputs); got {type(family).__name__}."
        )
    p = [family._draw_params(rng) for _ in range(n_draws)]
    out = {k: np.array([d[k] for d in p]) for k in ("mu", "sigma", "sigma_dot")}
    out["smp"] = np.zeros(n_draws)
    out["events"] = np.zeros(n_draws)  # kinks per unit along the path
    if isinstance(family, KinkedInputs):
        rate = np.array([np.exp(rng.uniform(*np.log(family.kink_rate))) for _ in range(n_draws)])
        jump = np.array([np.exp(rng.uniform(*np.log(family.jump_ratio))) for _ in range(n_draws)]) * out["sigma_dot"]
        out["smp"] = rate * family.length * jump * np.sqrt(2 / np.pi)  # E sum |J| over the path
        out["events"] = rate * family.length
    return out


_GIVEN_COLUMNS = ("mu", "sigma", "sigma_dot")


def _given_inputs(inputs: pd.DataFrame) -> tuple[dict[str, np.ndarray], float]:
    """Per-draw input parameters from a table: ``mu``, ``sigma``, ``sigma_dot`` (or simulate's ``family_*``
    columns), optional ``smp``, and one ``path_length``."""
    out = {}
    for name in _GIVEN_COLUMNS:
        col = name if name in inputs.columns else f"family_{name}"
        if col not in inputs.columns:
            raise InputError(
                f"path as a table needs the column {name!r} (or {'family_' + name!r}, as in simulate's tables): one "
                f"row per draw with the input's mean, std and RMS slope; got columns {list(inputs.columns)}."
            )
        out[name] = pd.to_numeric(inputs[col], errors="coerce").to_numpy(dtype=float)
    out["smp"] = pd.to_numeric(inputs["smp"], errors="coerce").to_numpy(dtype=float) if "smp" in inputs.columns \
        else np.zeros(len(inputs))
    if len(inputs) == 0 or not all(np.isfinite(v).all() for v in out.values()):
        raise InputError("path as a table needs at least one row and finite mu, sigma, sigma_dot and smp.")
    if (out["sigma"] <= 0).any() or (out["sigma_dot"] < 0).any() or (out["smp"] < 0).any():
        raise InputError("path as a table needs sigma > 0, sigma_dot >= 0 and smp >= 0 in every row.")
    lengths = np.unique(inputs["path_length"]) if "path_length" in inputs.columns else np.array([1.0])
    if len(lengths) != 1 or not lengths[0] > 0:
        raise InputError(f"path as a table needs one positive path_length for all rows; got {lengths.tolist()}.")
    return out, float(lengths[0])


#: Rows predicted together by :func:`_one_draw_per_row` (cost grows with rows x block).
_PAIR_BLOCK = 64


def _one_draw_per_row(model: Any, rows: pd.DataFrame, rng: np.random.Generator) -> np.ndarray:
    """One predictive draw per row, each with its own parameter draw.

    ``predict`` shares each parameter draw across rows; taking row i's draw i
    within blocks of rows gives every row an independent one at a cost of
    ``len(rows) * _PAIR_BLOCK`` draws rather than ``len(rows)**2``.
    """
    out = np.empty(len(rows))
    for start in range(0, len(rows), _PAIR_BLOCK):
        block = rows.iloc[start:start + _PAIR_BLOCK]
        draws = model.predict(block, n_draws=len(block), seed=int(rng.integers(2**63))).draws
        out[start:start + len(block)] = np.diagonal(draws)
    return out


def _new_events(cols: dict[str, Any], rows: dict[str, Any], new: np.ndarray) -> np.ndarray:
    """Expected number of kink events a stage creates along the path over its layer, shape (n_draws,).

    A ReLU's slope jump at a zero crossing of a Gaussian pre-activation of RMS slope ``sigma_dot`` has mean
    ``sqrt(pi/2) sigma_dot`` (Rayleigh); a LeakyReLU's is ``1 - a`` times that, a max pool's switch between two
    units sees the difference of two slopes (``sqrt(2)`` times).
    """
    block = cols["block"]
    scale = {"leaky_relu": 1.0 - float(cols.get("negative_slope", 0.01) or 0.0),
             "prelu": 1.0 - float(cols.get("alpha", 0.25) or 0.0),
             "maxpool1d": math.sqrt(2.0), "maxpool2d": math.sqrt(2.0)}.get(block, 1.0)
    mean_jump = abs(scale) * math.sqrt(math.pi / 2) * np.asarray(rows["sigma_dot_in"], dtype=float)
    n_units = float(np.prod(KinkState.shape_of(cols["out_shape"])))
    return np.divide(n_units * new, mean_jump, out=np.zeros_like(new), where=mean_jump > 0)


def _random_fan_in(prev_cols: dict[str, Any] | None) -> float:
    """Fan-in of the block before this one when it is a linear or conv block with drawn weights, else NaN
    (:func:`smpstats.theory.random_affine_kink_factor` then scales the new kinks of a ReLU or max pool)."""
    if prev_cols is None or prev_cols["block"] not in ("linear", "conv1d", "conv2d") or \
            np.isfinite(float(prev_cols.get("w_l1", math.nan) or math.nan)):
        return math.nan
    return float(prev_cols["fan_in"])


def _move_kinks(kinks: KinkState, cols: dict[str, Any], rows: dict[str, Any], terms: dict[str, np.ndarray]
                ) -> np.ndarray:
    """Move the kinks through the stage's block; return its carried SMP per unit, shape (n_draws,).

    ``terms`` are the stage's theory terms (:func:`smpstats.theory_terms.theory_term_arrays`): its
    ``theory_carried`` is the carried SMP by per-unit rules (``E||w||_1 S_in`` for an affine map), of
    which the kink state knows how much cancels because one kink reaches a unit through many paths.
    """
    from . import theory

    per_unit = terms["theory_carried"]
    smp_in = np.asarray(rows["smp_in"], dtype=float)
    factor = np.divide(per_unit, smp_in, out=np.zeros_like(smp_in), where=smp_in > 0)
    if cols["block"] in ("maxpool1d", "maxpool2d") and str(rows["prev_block_spec"]).strip() == "relu":
        # max(relu(x)) = relu(max(x)): the ReLU's own kinks and the older ones pass in different shares
        # (where the ReLU's output varies at all: a dead layer is 0 throughout)
        live = (np.asarray(rows["mu_in"]) > 0) & (np.asarray(rows["sigma_pool_in"]) > 0)
        # channel by channel from the ReLU's input, as the theory computed them (NaN in dead rows)
        pass_new, pass_old = terms["pass_new"], terms["pass_old"]
        if not np.all(np.isfinite(pass_new[live])):  # no channel statistics: the pooled rule
            pre = theory.relu_preactivation(np.where(live, rows["mu_in"], 1.0),
                                            np.where(live, rows["sigma_pool_in"], 1.0), rows["sigma_dot_in"])
            _, pass_new, pass_old = theory.maxpool_after_relu_terms(float(cols["window"]), *pre, rows["path_length"])
        pass_new, pass_old = np.where(live, pass_new, factor), np.where(live, pass_old, factor)
        factor = [pass_new if g.born == cols["stage"] - 1 else pass_old for g in kinks.generations]
        for g in kinks.generations:
            if g.born != cols["stage"] - 1:
                # an older kink shows in the selected unit, active whenever the window's maximum is positive
                # (P(max > 0), not the ReLU's P(x > 0)): pass_old = P(max > 0) / P(x > 0) of the touched units
                g.fill = np.minimum(g.fill * np.where(live, pass_old, 1.0)[:, None], 1.0)
    return kinks.carry(cols["block"], cols, cols["out_shape"], factor)


def predict_chain(
    spec: Any,
    *,
    input_shape: Any = None,
    path: Any = "smooth",
    model: Any = "theory",
    n_draws: int = 1000,
    seed: int = 0,
    n_points: int = 2048,
    init: str = "kaiming",
    propagate: bool = True,
    finite_width: bool = True,
    sample_module: bool = True,
    path_noise: bool = True,
    path_templates: int = 64,
) -> ChainPrediction:
    """Predict the SMP per unit after every stage of a chain, with its predictive distribution.

    Parameters
    ----------
    spec : str or torch.nn.Module
        Chain spec, as for :func:`smpstats.simulate`, or a module with given
        (e.g. trained) weights: an ``nn.Sequential`` or a module whose
        forward is a plain chain (:func:`smpstats.chain_reading.read_chain`).
    input_shape : tuple of int, optional
        Shape of one input (default as in simulate).
    path : {"smooth", "kinked"}, InputFamily or pandas.DataFrame, default="smooth"
        Input family; its per-trial parameters are drawn per Monte Carlo
        draw. A table gives the draws' inputs instead, one row per draw
        (``n_draws`` is then its length): columns ``mu``, ``sigma``,
        ``sigma_dot`` (or the ``family_*`` columns of a simulate table, e.g.
        its stage-1 rows, for predictions matched to simulated trials),
        optional ``smp`` (input SMP per unit) and ``path_length``.
    model : {"theory", "regression", "bayes"} or TransferModel, default="theory"
        "theory": analytic mode (mean-field moments, kink multiplicity and
        the theory's SMP; the spread comes from the input family, the
        finite width of each draw's network and, with ``path_noise``, its
        path's finite number of kinks).
        "regression" / "bayes": the default fitted models of the standard
        blocks (:func:`smpstats.default_model`: shipped, or built on first
        use and cached). A model from :func:`smpstats.fit` or
        :func:`smpstats.load_model` likewise adds its parameter and
        trial-to-trial uncertainty.
    n_draws : int, default=1000
        Monte Carlo draws.
    seed : int, default=0
        Seed of the draws.
    n_points : int, default=2048
        Grid points per path that the statistical models' resolution
        covariate assumes: the default models were fitted at 2048
        (:data:`smpstats.default_models.DEFAULT_TRAINING`), where the grid
        resolves nearly all kinks of single blocks.
    init : {"kaiming", "xavier", "normal"}, default="kaiming"
        Chain-wide weight init family.
    propagate : bool, default=True
        False chains the per-block models naively, as a baseline: every
        block sees the chain input's moments and the previous block's SMP
        per unit, with neither mean-field moments nor kink multiplicity.
    finite_width : bool, default=True
        Each draw is one finite network of the family: after every block with
        random weights its pooled moments are the realised ones of that
        network (:class:`smpstats.finite_width.FiniteWidth`: chi-square-like
        factors from the finite number of weight rows and inputs, and the
        finite number of units a ReLU averages over), so that they walk
        randomly with depth as in real networks of finite width. False keeps
        the deterministic mean-field moments (the infinite-width limit).
        Stages with given weights draw no network either way.
    path_noise : bool, default=True
        Each draw is also one path: its SMP scatters about the expectation
        because a path holds a finite number of kink events of random sizes
        (:class:`smpstats.kink_state.KinkState`: a Poisson number of events
        per generation, whose sizes grow more uneven with every block they
        pass). In the analytic mode only: a fitted model's predictive draw
        has the trial-to-trial spread of its training blocks. With given
        weights (a module) each draw's input has one finite path's
        realised std and RMS slope
        (:func:`smpstats.inputs.realised_path_moments`), where the path lies
        spreads the SMP (``path_templates``), and the new events of each
        stage are counted per path and carried on. False gives the expected
        SMP of each draw's network and input parameters.
    path_templates : int, default=64
        With given weights and ``path_noise``: draws whose path is drawn in
        full, and the module's births computed at its own points
        (:func:`smpstats.kink_transport.path_location_factors`, carried by
        one shared per-unit transport), so that the draws spread as paths
        through the network do; the other draws take their factors in
        equal shares. 0: none.
    sample_module : bool, default=True
        For a module with given weights: push points of the input family
        through the module for each stage's moments
        (:func:`smpstats.sampled_moments.sampled_stage_moments`) and for how
        its Jacobians carry the kinks born in each unit
        (:func:`smpstats.kink_transport.given_weight_smp`): exact up to
        Monte Carlo error whatever the units' correlations, means and
        weight signs. False applies the mean-field moments and the
        random-sign kink rules to the weights' statistics (faster for large
        layers; they assume independent units and random signs, which
        trained networks do not have). Ignored for chain specs.

    Returns
    -------
    ChainPrediction
    """
    from torch import nn

    from .blocks import build_chain, format_spec
    from .chain_reading import given_weight_columns, read_chain
    from .inputs import as_input_family, realised_path_moments
    from .finite_width import FiniteWidth
    from .mean_field import between_channel_share, propagate_moments
    from .kink_transport import given_weight_smp, path_location_factors
    from .sampled_moments import sampled_stage_moments
    from .simulation import _default_input_shape, _stage_columns
    from .theory_terms import RECTIFIER_INPUT_COLUMNS, _rectifier_slope, theory_term_arrays
    from .transfer import TransferModel

    n_draws = check_int(n_draws, "n_draws", minimum=1)
    seed = check_int(seed, "seed", minimum=0)
    path_templates = check_int(path_templates, "path_templates", minimum=0)
    propagate, finite_width, sample_module, path_noise = (check_bool(v, name) for v, name in (
        (propagate, "propagate"), (finite_width, "finite_width"), (sample_module, "sample_module"),
        (path_noise, "path_noise")))
    if isinstance(model, str) and model in ("regression", "bayes"):
        from .default_models import default_model

        model = default_model(model)
    if not (isinstance(model, str) and model == "theory") and not isinstance(model, TransferModel):
        raise InputError(
            f"model must be 'theory', 'regression', 'bayes' or a fitted TransferModel (smpstats.fit); got {model!r}.")
    if input_shape is None:
        input_shape = _default_input_shape(spec)
    given = isinstance(spec, nn.Module)
    chain = read_chain(spec, input_shape) if given else build_chain(spec, input_shape, init=init)
    rng = np.random.default_rng(seed)
    if isinstance(path, pd.DataFrame):
        state, length = _given_inputs(path)
        n_draws = len(path)
    else:
        family = as_input_family(path)
        state, length = _input_draws(family, n_draws, rng), float(family.length)
    mu, sigma, sigma_dot, smp = state["mu"], state["sigma"], state["sigma_dot"], state["smp"]
    dt = length / (n_points - 1)
    # given weights: every stage's moments from points of the input family pushed through the module
    sampled = transported = location = None
    templates, paths = np.arange(0), {}
    if given and propagate and sample_module and path_noise and isinstance(model, str):
        # one network: what varies from draw to draw is the path, and a finite path does not realise its family's
        # moments (the theory's draws of random networks already spread for it), nor does it lie where they do
        path_rng = np.random.default_rng([seed, 2])
        templates = np.sort(path_rng.choice(n_draws, min(path_templates, n_draws), replace=False))
        mu, sigma, sigma_dot, paths = realised_path_moments(mu, sigma, sigma_dot, length,
                                                            int(np.prod(chain.input_shape)), path_rng, keep=templates)
    if given and propagate and sample_module:
        sampled = sampled_stage_moments(chain, mu, sigma, sigma_dot, seed=seed)
        transported = given_weight_smp(chain, mu, sigma, sigma_dot, smp, length, seed=seed)
        if len(templates):
            factors = path_location_factors(chain, [paths[i] for i in templates], mu[templates], sigma[templates],
                                            sigma_dot[templates], np.random.default_rng([seed, 3]))
            # each template keeps its own; the other draws take the templates' in equal shares, in random order
            pick = np.empty(n_draws, dtype=int)
            pick[templates] = np.arange(len(templates))
            others = np.setdiff1d(np.arange(n_draws), templates)
            pick[others] = path_rng.permutation(np.resize(np.arange(len(templates)), len(others)))
            location = factors[:, pick]  # (n_stages, n_draws)
    width = FiniteWidth.of_inputs(sigma, sigma_dot, length, int(np.prod(chain.input_shape))) \
        if finite_width and propagate and not given else None
    # one path per draw: a separate stream, so that the networks drawn do not change with path_noise
    kinks = KinkState(tuple(chain.input_shape), n_draws,
                      rng=np.random.default_rng([seed, 1]) if path_noise and isinstance(model, str) else None)
    input_events = state.get("events")
    kinks.add_new(smp, events=None if input_events is None else input_events * np.prod(chain.input_shape),
                  size2=math.pi / 2)  # the family's jumps are normal: |J| half-normal
    stage_rows, predictive = [], []
    prev_spec, prev_cols, prev_rows = "", None, {}
    nan = np.full(n_draws, math.nan)
    share = np.zeros(n_draws)  # of the pooled variance, the spread of the channels' means (inputs: none)
    stage_columns = [{**c, **g} for c, g in zip(_stage_columns(chain), given_weight_columns(chain))]
    for k, cols in enumerate(stage_columns, start=1):
        rows = {**cols, "mu_in": mu, "sigma_in": sigma, "sigma_pool_in": sigma,
                "sigma_chan_in": sigma * np.sqrt(1.0 - share), "sigma_dot_in": sigma_dot, "smp_in": smp,
                "path_length": length, "dt": dt, "prev_block_spec": prev_spec, "prev_fan_in": _random_fan_in(prev_cols),
                **{f"prev_{c}": prev_rows.get(c, "" if c == "prev_block_spec" else nan) for c in RECTIFIER_INPUT_COLUMNS}}
        if width is not None:
            rows["static_in"] = width.static
        terms = theory_term_arrays(rows, n_draws)
        new = terms["theory_new"]
        if propagate:
            if sampled is not None:
                out = sampled[k]
            else:
                out = propagate_moments(cols["block"], cols, mu, sigma, sigma_dot, share,
                                        after_rectifier=_rectifier_slope(chain.stages[k - 2].spec) if k > 1 else None)
            carried_gain = None
            if width is not None:  # the realised output of this draw's finite network, its units' new kinks
                *out, kink_factor, carried_gain = width.step(cols["block"], cols, (mu, sigma, sigma_dot), out, rng,
                                                             length)
                new = new * kink_factor
        theory_out = new + terms["theory_carried"]
        if propagate:
            per_unit = terms["theory_carried"]
            if transported is None:
                carried = _move_kinks(kinks, cols, rows, terms)
                if carried_gain is not None:  # and the older kinks this network carries (mean 1 over networks)
                    kinks.scale(carried_gain)
                    carried = kinks.total
            else:  # given weights: kinks by birth unit, carried by the module's Jacobians
                new = transported.new[k - 1]
                before = transported.total[k - 2] if k > 1 else state["smp"]
                # carried in proportion to this draw's input SMP (a statistical model's draw, or the theory's)
                carried = (transported.total[k - 1] - new) * np.divide(smp, before, out=np.ones_like(smp),
                                                                       where=before > 0)
                if location is not None:  # where the path lies: the smp above carries the stage before's factor
                    before_factor = location[k - 2] if k > 1 else np.ones(n_draws)
                    new = new * location[k - 1]
                    carried = carried * np.divide(location[k - 1], before_factor, out=location[k - 1].copy(),
                                                  where=before_factor > 0)
            theory_out = new + carried
            # the input SMP for which the per-unit rules of the statistical models give the carried SMP
            rows["smp_in"] = np.divide(carried * smp, per_unit, out=np.zeros_like(smp), where=per_unit > 0)
        if isinstance(model, TransferModel) and cols["block"] != "flatten":
            smp_out = _one_draw_per_row(model, pd.DataFrame(rows), rng)
            kinks.add_new(new, born=cols["stage"])
            kinks.rescale(smp_out)
        elif propagate and transported is None:  # the kink state's own total: new and carried, realised per path
            kinks.add_new(new, born=cols["stage"], events=_new_events(cols, rows, new))
            smp_out = kinks.total
        else:
            if cols["block"] == "flatten":
                smp_out = np.asarray(rows["smp_in"], dtype=float)
            elif transported is not None:  # given weights: the path's count of new events; older ones as carried
                events = _new_events(cols, rows, new)
                new = new * kinks.path_factor(np.divide(4 / math.pi, events, out=np.zeros_like(new), where=events > 0))
                smp_out = new + carried
            else:
                smp_out = theory_out
            kinks.add_new(new, born=cols["stage"])
            kinks.rescale(smp_out)
        stage_rows.append({"stage": cols["stage"], "block": cols["block"], "block_spec": cols["block_spec"],
                           "mu_in": mu.mean(), "sigma_pool_in": sigma.mean(), "sigma_dot_in": sigma_dot.mean()})
        predictive.append(Predictive(smp_out[None, :], kind="theory" if isinstance(model, str) else model.kind))
        if propagate:
            share = between_channel_share(cols["block"], cols, mu, sigma, share)
            mu, sigma, sigma_dot = out
        smp = smp_out
        prev_spec, prev_cols, prev_rows = cols["block_spec"], cols, rows
    warnings = tuple(getattr(model, "warnings", ()))
    return ChainPrediction(format_spec([s.spec for s in chain.stages]), "theory" if isinstance(model, str) else model.kind, pd.DataFrame(stage_rows),
                           tuple(predictive), warnings)
