r"""Bayesian tier: theory-centred hierarchical transfer model (PyMC; nutpie when installed).

For row ``i`` of block family ``f`` and configuration ``c`` (the unit of
partial pooling, e.g. ``maxpool1d(kernel_size=3)`` or
``conv1d(...) -> maxpool1d(kernel_size=2)``):

.. math::

    \mu_i = e^{\gamma^{new}_c}\, T^{new}_i + e^{\gamma^{car}_c}\, T^{car}_i, \qquad
    \gamma^{t}_c \sim N(a^{t}_f,\ (r_f \tau_{t})^2) \quad (t = new, car)

    y_i \mid y_i > 0 \sim \mathrm{Gamma}(\text{mean } \mu_i,\ \text{shape } e^{\delta_c + \eta_f^\top (x_i - \tilde x) + b (u_i - u_c)}), \quad
    \delta_c \sim N(d_f + g_f\, k_c + m_f\, j_c + b (u_c - \bar u), (s_f \tau_d)^2), \qquad \Pr(y_i = 0) = \mathrm{logit}^{-1}(h_f)

with ``T^new``, ``T^car`` the theory's new and carried kinks
(:mod:`smpstats.theory_terms`), ``x_i`` the row's :data:`DISPERSION_COVARIATES`
(``log_rel``, ``log_res``: the expected kinks per RMS slope and the grid's
resolution, which set how much the measured SMP varies from trial to
trial, within configurations as between them; ``\tilde x`` their medians in
the fit; ``eta ~ N(0, 1)`` per family), ``k_c = 1`` when the configuration's block
follows another block (its input comes from a layer: correlated neighbours,
coincident kinks; such blocks vary far less or far more from trial to
trial), else 0, ``j_c = 1`` when the block right before it is a conv or
linear layer (each of its kinks reaches several neighbouring units, whose
kinks then cancel or add from trial to trial: average pooling after a conv
has log shapes 6 against 9-13 for average pooling elsewhere, in the
training and in the held-out data; ``m_f ~ N(0, 2)``, ``g_mix`` in the
posterior, for the families whose chained configurations in the fit
include blocks after a mixing layer and blocks after others; 0 for the
other families, whose data cannot tell ``m_f`` from ``g_f``), and ``u_i``
the log number of output units the row's SMP per unit averages over
(``log_units`` of :func:`smpstats.transfer_data.design_frame`),
``u_c`` its mean over the configuration's rows in the fit and ``\bar u``
its median over all rows of the fit. The per-unit mean of ``n`` independent
units has ``1/n`` the variance of one unit's, so ``b = 1`` for independent
units and ``0 < b < 1`` when units share kinks: ``b ~ N(1, 0.5)``, one slope
for all families (the units vary between configurations only, so no single
family pins it down; in a configuration's centre rather than on its rows,
where it would make a ridge with the configuration effects). A row whose
unit count differs from its configuration's in the fit (a seen block in a
wider or narrower layer) moves its shape by ``b (u_i - u_c)``. Fits on tables
without unit counts leave the term out. The priors are centred on the
theory: ``a ~ N(0, 0.5)`` (corrections ``e^a`` with median 1),
``d ~ N(4, 2)``, ``h ~ N(-4, 2)``, ``g ~ N(0, 2)``; the scales are shared by
all families and have boundary-avoiding priors, ``tau_new, tau_car ~
Gamma(2, 10)`` (mean 0.2), ``tau_d ~ Gamma(2, 2)``, and each family's
configurations spread by ``r_f`` (corrections) and ``s_f`` (shapes) times
them: fixed ratios with geometric mean 1, from the spread of the family's
configurations in the data (:func:`relative_spreads`, empirical Bayes;
a shared spread gave the families whose configurations agree, affine
blocks and average pooling, 90 % intervals that held 99 % of new
configurations' trials). Config effects are
centred (every configuration has many rows); a family's only configuration
takes the family mean. The covariates ``x`` vary mostly between
configurations, so ``delta_c`` and ``eta_f`` trade off along a ridge; the
sampler therefore moves the level at the configuration's own mean
covariates, ``delta_c + eta_f^T (x_bar_c - x_tilde)`` (which its rows pin
down), and ``delta_c`` (``log_phi_c``) is derived from it: the same model,
with the bulk ESS of the default fit up from 255 to 850.

A configuration not seen in the fit is predicted with fresh corrections
``z ~ N(0, 1)`` per draw, i.e. from the population of configurations of its
family, and with its Gamma shape at the family's centre for its context
and covariates (``z = 0``): the family's typical trial-to-trial spread, as
the regression tier predicts it. Drawing the shape from the population too
mixed Gammas whose log shapes spread by 0.6-1.8 and gave the 66 held-out
configurations' rows wider tails than they have (90 % intervals holding
95.5 % for affine blocks, 96.2 % for ReLU and 98.4 % for smooth
activations, against 94.5 %, 93.9 % and 94.8 % at the centre; CRPS 3.136
against 3.130).

Diagnostics (R-hat, bulk and tail ESS, divergences) are computed after
sampling and stored with the fit; failures become the model's ``warnings``,
which every prediction carries. The saved artefact is the ArviZ
InferenceData (netCDF) with the training design in ``constant_data`` and
the model description in its attributes.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .errors import DataFileError, InputError
from .io import atomic_path, package_version
from .transfer import FORMAT, TransferModel

__all__ = ["BayesTransfer", "fit_bayes", "build_model", "relative_spreads", "DIAGNOSTIC_LIMITS"]

#: Thresholds of the convergence checks.
DIAGNOSTIC_LIMITS = {"r_hat_max": 1.01, "ess_bulk_min": 400.0, "ess_tail_min": 400.0, "divergences_max": 0}
_DESIGN_COLUMNS = ("family", "config", "theory_new", "theory_carried", "theory", "log_rel", "log_res", "chained",
                   "log_units", "y")
#: Version of the saved model (2: unit-count term in the dispersion; 3: row covariates in the dispersion;
#: 4: per-family ratios of the spreads, a shape shift after a conv or linear layer).
_BAYES_FORMAT_VERSION = 4
#: Row covariates of the log Gamma shape (:mod:`smpstats.transfer_data`), centred on their medians in the fit.
DISPERSION_COVARIATES = ("log_rel", "log_res")


def _quiet_arviz():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import arviz as az
    return az


_TERMS = ("new", "car")
#: The spreads between configurations: of the two corrections and of the Gamma shapes.
_SPREADS = ("new", "car", "d")


def _is_chained(config: str) -> bool:
    """Whether a configuration label names a block that follows another one (``"conv1d(...) -> relu"``)."""
    return " -> " in config


#: Blocks whose every output mixes several input units: a block after one sees kinks shared by neighbours.
_MIXING_BLOCKS = ("conv1d", "conv2d", "linear")


def _after_mixing(config: str) -> bool:
    """Whether the block right before the configuration's block is a conv or linear layer."""
    parts = config.split(" -> ")
    return len(parts) > 1 and parts[-2].split("(")[0].strip() in _MIXING_BLOCKS


def _context(configs) -> np.ndarray:
    """Per configuration label, (chained, after a mixing layer) as floats, shape (n, 2)."""
    return np.array([[_is_chained(c), _after_mixing(c)] for c in configs], dtype=float).reshape(-1, 2)


_TERM_COLUMN = {"new": "theory_new", "car": "theory_carried"}


class _Index:
    """Family and configuration codes, fixed at fit time.

    ``term_configs[t]`` lists the configurations whose rows have a nonzero
    theory term ``t`` ("new" or "car"): only those get a correction for it
    (a correction of a term that is always 0 is not identified, and its
    prior-only ridge slows the sampler down).
    """

    def __init__(self, families: list[str], configs: list[str], config_family: list[str],
                 term_configs: dict[str, list[str]], units_ref: float | None = None,
                 config_units: list[float] | None = None, disp_ref: list[float] | None = None,
                 spread_ratio: dict[str, list[float]] | None = None):
        self.families, self.configs, self.config_family = families, configs, config_family
        self.disp_ref = disp_ref  # medians of the dispersion covariates in the fit
        # per spread ("new", "car", "d") and family, how far its configurations spread relative to the other
        # families' (empirical Bayes, :func:`relative_spreads`)
        self.spread_ratio = spread_ratio if spread_ratio is not None else {k: [1.0] * len(families) for k in _SPREADS}
        self.term_configs = term_configs
        self.units_ref = units_ref  # median log unit count of the fit; None: no unit-count term
        self.config_units = config_units  # per config, mean log unit count of its rows in the fit
        fam_of = dict(zip(configs, config_family))
        self.term_families = {t: sorted({fam_of[c] for c in cs}) for t, cs in term_configs.items()}

    @classmethod
    def from_design(cls, design: pd.DataFrame) -> "_Index":
        families = sorted(set(design["family"]))
        pairs = design[["config", "family"]].drop_duplicates().sort_values(["family", "config"])
        configs = pairs["config"].tolist()
        term_configs = {t: [c for c in configs if (design.loc[design["config"] == c, _TERM_COLUMN[t]] > 0).any()]
                        for t in _TERMS}
        units = _log_units(design)
        if units is not None and np.isnan(units).any():
            raise InputError(
                f"{int(np.isnan(units).sum())} of {len(units)} rows say how many units their SMP per unit averages "
                "over (n_measured_out, n_units_out or out_shape) and the others do not; fit on tables that all "
                "have one of these columns, or none."
            )
        ref = cfg_units = None
        if units is not None:
            ref = float(np.median(units))
            mean_units = pd.Series(units, index=design.index).groupby(design["config"].to_numpy()).mean()
            cfg_units = [float(mean_units[c]) for c in configs]
        disp_ref = [float(np.median(design[c].to_numpy(float))) for c in DISPERSION_COVARIATES]
        return cls(families, configs, pairs["family"].tolist(), term_configs, ref, cfg_units, disp_ref,
                   relative_spreads(design, families))

    def to_dict(self) -> dict[str, Any]:
        return {"families": self.families, "configs": self.configs, "config_family": self.config_family,
                "term_configs": self.term_configs, "units_ref": self.units_ref, "config_units": self.config_units,
                "disp_ref": self.disp_ref, "spread_ratio": self.spread_ratio}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "_Index":
        return cls(d["families"], d["configs"], d["config_family"], d["term_configs"], d["units_ref"],
                   d["config_units"], d["disp_ref"], d["spread_ratio"])

    def term_spread_ratio(self, t: str) -> np.ndarray:
        """:attr:`spread_ratio` of spread ``t``: for "new", "car" of the families that have the term in the fit
        (shape (n_term_families,)), for "d" (the Gamma shapes) of all families (shape (n_families,))."""
        r = dict(zip(self.families, self.spread_ratio[t]))
        return np.array([r[f] for f in (self.term_families[t] if t in _TERMS else self.families)], dtype=float)

    def dispersion_covariates(self, design: pd.DataFrame) -> np.ndarray:
        """:data:`DISPERSION_COVARIATES` less their medians in the fit, shape (n_rows, n_covariates).

        Rows whose theory is 0 (no kinks in, none made: their draws are exact
        zeros whatever the shape) get 0, not the huge negative ``log_rel`` of
        a zero theory, which would overflow the shape.
        """
        x = design[list(DISPERSION_COVARIATES)].to_numpy(float) - np.asarray(self.disp_ref)
        return np.where((design["theory"].to_numpy(float) > 0)[:, None], x, 0.0)

    def units(self, design: pd.DataFrame) -> np.ndarray:
        """Log unit counts less the fit's median, shape (n_rows,); zeros for a model without the term."""
        if self.units_ref is None:
            return np.zeros(len(design))
        u = _log_units(design)
        if u is None or np.isnan(u).any():
            raise InputError(
                "This Bayesian model was fitted with the number of units per row (its dispersion depends on it); "
                "the inputs need n_measured_out, n_units_out or out_shape in every row."
            )
        return u - self.units_ref

    def seen_units(self, cfg: np.ndarray) -> np.ndarray:
        """Per row (config codes ``cfg``, -1 unseen): its config's mean log unit count in the fit less the
        median, 0 for unseen configs and for a model without the term."""
        if self.units_ref is None:
            return np.zeros(len(cfg))
        uc = np.asarray(self.config_units, float) - self.units_ref
        return np.where(cfg >= 0, uc[np.maximum(cfg, 0)], 0.0)

    def arrays(self, design: pd.DataFrame) -> dict[str, np.ndarray]:
        """Codes per row (-1 where unknown): family, config, and per term its config and family."""
        fam = design["family"].map({f: i for i, f in enumerate(self.families)}).to_numpy().astype(np.int64)
        cfgs = design["config"].astype(str).to_numpy()
        code = {c: i for i, c in enumerate(self.configs)}
        out = {"fam": fam, "cfg": np.array([code.get(c, -1) for c in cfgs], dtype=np.int64),
               "new": design["theory_new"].to_numpy(float), "car": design["theory_carried"].to_numpy(float)}
        fams = design["family"].to_numpy()
        for t in _TERMS:
            cs = {c: i for i, c in enumerate(self.term_configs[t])}
            fs = {f: i for i, f in enumerate(self.term_families[t])}
            out[f"cfg_{t}"] = np.array([cs.get(c, -1) for c in cfgs], dtype=np.int64)
            out[f"fam_{t}"] = np.array([fs.get(f, -1) for f in fams], dtype=np.int64)
        return out


def _centre_columns(context: np.ndarray) -> np.ndarray:
    """``[1, chained, after mixing]`` of a family's configurations (``context``, shape (n, 2)), without the
    columns its configurations cannot tell apart (constant, or the same as another) or that would leave no
    residual degree of freedom."""
    X = np.ones((len(context), 1))
    for col in context.T:
        Y = np.column_stack([X, col])
        if np.linalg.matrix_rank(Y) > X.shape[1] and len(context) > Y.shape[1]:
            X = Y
    return X


#: Families (with at least two configurations each) that :func:`relative_spreads` needs to give them ratios.
_MIN_SPREAD_FAMILIES = 3


def _config_corrections(g: pd.DataFrame) -> tuple[float, float]:
    """Log corrections ``(new, car)`` of one configuration's rows (NaN for a term it lacks).

    The new kinks' is the configuration's level ``log(mean(y / theory))``;
    the carried kinks' is fitted by least squares, ``y ~ e^new T_new + e^car
    T_car`` with residuals relative to the theory, where both terms are
    present (the level where only the carried kinks are).
    """
    from scipy.optimize import least_squares

    tn, tc, y = (g[c].to_numpy(float) for c in ("theory_new", "theory_carried", "y"))
    level = float(np.log(np.mean(y / (tn + tc))))
    if tn.sum() > 0 and tc.sum() > 0:
        fit = least_squares(lambda p: (y - np.exp(p[0]) * tn - np.exp(p[1]) * tc) / (tn + tc), [0.0, 0.0])
        return level, float(fit.x[1])
    return (level, math.nan) if tn.sum() > 0 else (math.nan, level)


def relative_spreads(design: pd.DataFrame, families: list[str]) -> dict[str, list[float]]:
    """Per family, how far its configurations spread, relative to the other families.

    From each configuration's rows with ``y > 0`` (at least 3): its log
    corrections of the new and of the carried kinks (least squares,
    ``y ~ e^new T_new + e^car T_car``; one term: ``log(mean(y / theory))``)
    and its log Gamma shape ``-log(CV(y / theory)^2)``. A family's squared
    spread of each is the residual variance of its configurations' values
    about their mean (the shape: about the centre's context terms,
    ``chained`` and after a mixing layer, where the family's configurations
    tell them apart), sampling error included (it is small against the
    spreads that matter, and a family whose configurations differ by no
    more than it keeps a spread of that size), moderated towards the pool
    of all families (:func:`smpstats.regression.moderated_spreads`; a
    family with fewer than two configurations with the term takes the
    pool's; with fewer than three such families every ratio is 1: a
    spread from one or two families' configurations cannot be moderated,
    and unmoderated ratios of 30 between two families made the sampler
    crawl and fail simulation-based calibration). Returned as ratios with
    geometric mean 1 over the families,
    ``{"new": [...], "car": [...], "d": [...]}`` (lists of length
    ``n_families``): the model multiplies its sampled spreads ``tau_new``,
    ``tau_car``, ``tau_d`` by them. So the families whose configurations
    agree with the theory and with each other (average pooling, batch
    norm: carried-kink corrections within 1-2 %, shapes within a factor
    1.2) predict a new configuration more narrowly than those that do not
    (ReLU: carried-kink corrections -15 to +20 %; shapes of average pooling
    after a conv 150 times smaller than elsewhere). Fixing the ratios
    before sampling (empirical Bayes) keeps one sampled spread per kind:
    sampled per-family spreads made the sampler diverge (129 divergences
    with per-family ``tau_d``: the configurations of batch norm vary about
    as much as their sampling error, a funnel).
    """
    from .regression import moderated_spreads

    values = {t: {f: [] for f in families} for t in _SPREADS}
    context = {f: [] for f in families}
    for (fam, config), g in design[design["y"] > 0].groupby(["family", "config"], sort=True):
        if fam not in context or len(g) < 3:
            continue
        r = g["y"].to_numpy(float) / g["theory"].to_numpy(float)
        log_shape = -np.log(max(r.var(ddof=1), 1e-300) / r.mean() ** 2)
        for t, v in zip(_SPREADS, (*_config_corrections(g), log_shape)):
            values[t][fam].append(v)
        context[fam].append(_context([config])[0])
    out = {}
    for t in _SPREADS:
        sd, df = [], []
        for fam in families:
            v = np.asarray(values[t][fam])
            keep = np.isfinite(v)
            X = _centre_columns(np.asarray(context[fam]).reshape(-1, 2)[keep]) if t == "d" else np.ones((keep.sum(), 1))
            dof = int(keep.sum()) - X.shape[1]
            resid = v[keep] - X @ np.linalg.lstsq(X, v[keep], rcond=None)[0] if dof > 0 else np.zeros(1)
            sd.append(np.sqrt(max(resid @ resid / max(dof, 1), 1e-12)))
            df.append(max(dof, 0))
        if np.count_nonzero(df) < _MIN_SPREAD_FAMILIES:  # too few families to moderate: one shared spread
            out[t] = [1.0] * len(families)
            continue
        mod = moderated_spreads(np.array(sd), np.array(df))
        out[t] = [float(x) for x in mod / np.exp(np.log(mod).mean())]
    return out


def _log_units(design: pd.DataFrame) -> np.ndarray | None:
    """The design's ``log_units`` (shape (n_rows,)), or None when no row has a unit count."""
    if "log_units" not in design.columns:
        return None
    u = design["log_units"].to_numpy(float)
    return None if np.isnan(u).all() else u


def _config_effects(name: str, mean, scale, pooled: np.ndarray, dims: str):
    """Config effects ~ N(mean, scale^2) (centred; the family mean for a lone config), kept as ``name``."""
    import pymc as pm

    # lone configs get a standard-normal placeholder that nothing uses (it samples trivially)
    raw = pm.Normal(f"{name}_raw", pm.math.where(pooled, mean, 0.0), pm.math.where(pooled, scale, 1.0), dims=dims)
    return pm.Deterministic(name, pm.math.where(pooled, raw, mean), dims=dims)


def _pooled(family_of_config: np.ndarray) -> np.ndarray:
    """Which configs get their own effect: those whose family has at least two configs."""
    counts = np.bincount(family_of_config)
    return counts[family_of_config] >= 2


def build_model(design: pd.DataFrame, index: "_Index"):
    """The PyMC model of the module doc for a design frame with ``y`` (all configs known)."""
    import pymc as pm
    import pytensor.tensor as pt

    a = index.arrays(design)
    y = design["y"].to_numpy(float)
    pos = y > 0
    cfam = np.array([index.families.index(f) for f in index.config_family])
    coords = {"family": index.families, "config": index.configs, "dispersion_covariate": list(DISPERSION_COVARIATES)}
    for t in _TERMS:
        coords[f"family_{t}"] = index.term_families[t]
        coords[f"config_{t}"] = index.term_configs[t]
    with pm.Model(coords=coords) as model:
        # Centred config effects: every config has many rows, so the data pin them down. The scales
        # are shared across families (~20 configurations inform them) and have boundary-avoiding
        # Gamma priors (no funnel at tau -> 0 with few configurations).
        mu = 0.0
        for t in _TERMS:
            if not index.term_configs[t]:
                continue
            fam_of_cfg = np.array([index.term_families[t].index(index.config_family[index.configs.index(c)])
                                   for c in index.term_configs[t]])
            a_t = pm.Normal(f"a_{t}", 0.0, 0.5, dims=f"family_{t}")
            tau_t = pm.Gamma(f"tau_{t}", alpha=2.0, beta=10.0)
            sd_of_cfg = tau_t * index.term_spread_ratio(t)[fam_of_cfg]
            log_c = _config_effects(f"log_c_{t}", a_t[fam_of_cfg], sd_of_cfg, _pooled(fam_of_cfg), f"config_{t}")
            # configs without this term have it 0 in every row: any index gives a zero product
            mu = mu + pm.math.exp(log_c[np.maximum(a[f"cfg_{t}"][pos], 0)]) * a[t][pos]
        chained, mixed = _context(index.configs).T
        tau_d = pm.Gamma("tau_d", alpha=2.0, beta=2.0)
        d = pm.Normal("d", 4.0, 2.0, dims="family")
        g = pm.Normal("g", 0.0, 2.0, dims="family")
        # the shift after a mixing layer, for the families whose chained configurations have both kinds
        # (otherwise it is the chained shift g again: a ridge that halved the bulk ESS); 0 for the others
        mix_fams = [i for i, _ in enumerate(index.families)
                    if _centre_columns(np.column_stack([chained, mixed])[cfam == i]).shape[1] == 3]
        g_mix = np.zeros(len(index.families))
        if mix_fams:
            coords_mix = [index.families[i] for i in mix_fams]
            model.add_coord("family_mix", coords_mix)
            m_f = pm.Normal("m_mix", 0.0, 2.0, dims="family_mix")
            g_mix = pm.Deterministic("g_mix", pt.set_subtensor(pt.zeros(len(index.families))[mix_fams], m_f),
                                     dims="family")
        centre = d[cfam] + g[cfam] * chained + g_mix[cfam] * mixed
        if index.units_ref is not None:
            # the slope enters the configs' centre (a config's rows share its unit count: on the rows it
            # would make a ridge with the config effects) and the rows whose count differs from their config's
            b = pm.Normal("b_units", 1.0, 0.5)
            centre = centre + b * (np.asarray(index.config_units) - index.units_ref)
        h0 = pm.Normal("h0", -4.0, 2.0, dims="family")
        # row covariates (the expected kinks per RMS slope and the grid's resolution vary within configs too)
        eta_d = pm.Normal("eta_d", 0.0, 1.0, dims=("family", "dispersion_covariate"))
        x = index.dispersion_covariates(design)[pos]
        # The covariates vary mostly between configurations, so a config's level and its family's slopes
        # trade off (a ridge). Sampled instead: the level at the config's own mean covariates, which its rows
        # pin down; the same model, with log_phi_c = level - eta (x_bar_c - x_ref) kept as before.
        cfg_pos = a["cfg"][pos]
        counts = np.bincount(cfg_pos, minlength=len(index.configs))
        x_bar = np.stack([np.bincount(cfg_pos, x[:, j], minlength=len(index.configs)) for j in range(x.shape[1])],
                         axis=1) / np.maximum(counts, 1)[:, None]
        shift = (x_bar * eta_d[cfam]).sum(axis=1)
        shape_sd = tau_d * index.term_spread_ratio("d")[cfam]
        level = _config_effects("log_phi_level", centre + shift, shape_sd, _pooled(cfam), "config")
        pm.Deterministic("log_phi_c", level - shift, dims="config")
        log_phi = level[cfg_pos] + ((x - x_bar[cfg_pos]) * eta_d[a["fam"][pos]]).sum(axis=1)
        if index.units_ref is not None:
            log_phi = log_phi + b * (index.units(design) - index.seen_units(a["cfg"]))[pos]
        phi = pm.math.exp(log_phi)
        # Observations as data containers, so that a compiled model can be refitted to new data (SBC).
        y_obs = pm.Data("y_pos_obs", y[pos])
        zero_obs = pm.Data("is_zero_obs", (~pos).astype(np.int64))
        pm.Gamma("y_pos", alpha=phi, beta=phi / mu, observed=y_obs)
        pm.Bernoulli("is_zero", logit_p=h0[a["fam"]], observed=zero_obs)
    return model


def _diagnostics(idata) -> tuple[pd.DataFrame, dict[str, float]]:
    az = _quiet_arviz()
    summ = az.summary(idata, kind="diagnostics")
    div = int(idata.sample_stats["diverging"].sum()) if "diverging" in idata.sample_stats else 0
    overall = {"r_hat_max": float(summ["r_hat"].max()), "ess_bulk_min": float(summ["ess_bulk"].min()),
               "ess_tail_min": float(summ["ess_tail"].min()), "divergences": div}
    return summ, overall


def _warnings_from(overall: dict[str, float]) -> tuple[str, ...]:
    lim = DIAGNOSTIC_LIMITS
    out = []
    if not overall["r_hat_max"] <= lim["r_hat_max"]:
        out.append(f"R-hat up to {overall['r_hat_max']:.3f} (> {lim['r_hat_max']}): chains disagree; predictions unreliable.")
    if not overall["ess_bulk_min"] >= lim["ess_bulk_min"]:
        out.append(f"bulk ESS down to {overall['ess_bulk_min']:.0f} (< {lim['ess_bulk_min']:.0f}): run more draws.")
    if not overall["ess_tail_min"] >= lim["ess_tail_min"]:
        out.append(f"tail ESS down to {overall['ess_tail_min']:.0f} (< {lim['ess_tail_min']:.0f}): intervals unreliable.")
    if overall["divergences"] > lim["divergences_max"]:
        out.append(f"{overall['divergences']} divergent transitions: the posterior may be biased.")
    return tuple(out)


def _sample(model, *, draws: int, tune: int, chains: int, seed: int, sampler: str, progress: bool):
    """Sample with nutpie or PyMC; returns (idata, compile_seconds, sampling_seconds, sampler used)."""
    if sampler == "auto":
        import importlib.util

        sampler = "nutpie" if importlib.util.find_spec("nutpie") is not None else "pymc"
    t0 = time.perf_counter()
    if sampler == "nutpie":
        import nutpie

        compiled = nutpie.compile_pymc_model(model)
        t1 = time.perf_counter()
        idata = nutpie.sample(compiled, draws=draws, tune=tune, chains=chains, seed=seed, progress_bar=progress,
                              save_warmup=False, target_accept=0.9)
    else:
        import pymc as pm

        with model:
            fn = model.compile_logp()  # compile before timing the sampling
            fn(model.initial_point())
            t1 = time.perf_counter()
            idata = pm.sample(draws=draws, tune=tune, chains=chains, cores=min(chains, os.cpu_count() or 1),
                              random_seed=seed, progressbar=progress, compute_convergence_checks=False,
                              target_accept=0.9)
    t2 = time.perf_counter()
    return idata, t1 - t0, t2 - t1, sampler


def fit_bayes(design: pd.DataFrame, *, draws: int = 1500, tune: int = 500, chains: int = 4, seed: int = 0,
              sampler: str = "auto", progress: bool = False) -> "BayesTransfer":
    """Fit the Bayesian tier to a design frame (use :func:`smpstats.fit` with ``kind="bayes"``).

    Parameters
    ----------
    draws, tune, chains : int
        Posterior draws per chain, tuning steps, chains. The spread of the
        new-kink corrections, which the theory leaves at under 1 %, mixes
        slowest: on 2,000 rows of the default training samples its bulk ESS
        was 353 with 4 x 1000 draws (307 with 1000 tuning steps) and 505 with
        4 x 1500; with 4 x 500 on 6,000 rows, 280-350.
    seed : int
        Sampler seed.
    sampler : {"auto", "nutpie", "pymc"}
        "auto" uses nutpie when installed. Both run with
        ``target_accept=0.9`` (at the default 0.8 a fit of 2,000 rows of
        the default training samples had 8 divergences and R-hat 1.04 with
        PyMC, 20 divergences and R-hat 1.12 with nutpie).
    progress : bool
        Show the sampler's progress bar.
    """
    for name, v, lo in (("draws", draws, 50), ("tune", tune, 50), ("chains", chains, 1), ("seed", seed, 0)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise InputError(f"{name} must be an int >= {lo}; got {v!r}.")
    if sampler not in ("auto", "nutpie", "pymc"):
        raise InputError(f"sampler must be 'auto', 'nutpie' or 'pymc'; got {sampler!r}.")
    if (design["theory"] <= 0).any():
        bad = sorted(set(design.loc[design["theory"] <= 0, "config"]))
        raise InputError(
            f"Rows of {', '.join(bad)} have theory SMP 0 (smooth blocks on smooth inputs: output SMP 0 by "
            "construction); fit on inputs with kinks (path='kinked') or drop those rows."
        )
    index = _Index.from_design(design)
    model = build_model(design, index)
    idata, t_compile, t_sample, used = _sample(model, draws=draws, tune=tune, chains=chains, seed=seed,
                                               sampler=sampler, progress=progress)
    keep = [v for v in ("a_new", "a_car", "tau_new", "tau_car", "log_c_new", "log_c_car", "d", "g", "g_mix",
                        "tau_d", "log_phi_c", "eta_d", "b_units", "h0") if v in idata.posterior]
    az = _quiet_arviz()
    post = idata.posterior[keep]
    idata = az.InferenceData(posterior=post, sample_stats=idata.sample_stats,
                             constant_data=_design_dataset(design))
    summ, overall = _diagnostics(idata)
    info = {"sampler": used, "draws": draws, "tune": tune, "chains": chains, "seed": seed,
            "compile_seconds": t_compile, "sampling_seconds": t_sample, "n_rows": len(design), **overall}
    return BayesTransfer(idata, index, info)


def _design_dataset(design: pd.DataFrame):
    import xarray as xr

    data = {c: ("row", design[c].to_numpy().astype(str if c in ("family", "config") else float)) for c in _DESIGN_COLUMNS}
    return xr.Dataset(data)


class BayesTransfer(TransferModel):
    """Bayesian tier (see the module doc). ``idata`` is the ArviZ InferenceData of the fit."""

    kind = "bayes"

    def __init__(self, idata, index: _Index, info: dict[str, Any]):
        self.idata, self.index, self.info = idata, index, dict(info)
        self.families = tuple(index.families)
        self.warnings = _warnings_from(info)

    # ------------------------------------------------------------ posterior access
    def _posterior(self) -> dict[str, np.ndarray]:
        """Posterior arrays with chains and draws stacked on the first axis."""
        post = self.idata.posterior
        return {k: post[k].values.reshape(-1, *post[k].shape[2:]) for k in post.data_vars}

    def diagnostics(self) -> pd.DataFrame:
        """R-hat, ESS bulk/tail per parameter (ArviZ), with the overall checks in ``attrs``."""
        summ, overall = _diagnostics(self.idata)
        summ.attrs.update(overall)
        return summ

    def training_design(self) -> pd.DataFrame:
        cd = self.idata.constant_data
        return pd.DataFrame({c: cd[c].values for c in _DESIGN_COLUMNS})

    def _n_posterior(self) -> int:
        return self.idata.posterior.sizes["chain"] * self.idata.posterior.sizes["draw"]

    def _params_for(self, design: pd.DataFrame, n_draws: int, rng: np.random.Generator, pick: np.ndarray | None = None):
        """(mu, shape phi, P(zero)), each (n_rows, n_draws), for posterior draws ``pick`` (random if None).

        A configuration not seen in the fit gets fresh corrections from its
        family's population (one per configuration and draw, shared by its
        rows) and its family's centre shape; a term whose family had no such
        term in the fit gets the prior's correction (a ~ N(0, 0.5), plus the
        configuration spread).
        """
        p = self._posterior()
        if pick is None:
            pick = rng.choice(self._n_posterior(), size=n_draws, replace=n_draws > self._n_posterior())
        n_draws = len(pick)
        a = self.index.arrays(design)
        _, config_code = np.unique(design["config"].astype(str) + "\0" + design["family"].astype(str),
                                   return_inverse=True)
        # log unit count relative to the config's in the fit (seen) or to the median (unseen: population)
        units = (self.index.units(design) - self.index.seen_units(a["cfg"]))[:, None]
        context = _context(design["config"].astype(str))

        def effect(t: str, fitted: str, mean: str, slopes: tuple[str, ...], cfg: np.ndarray, fam: np.ndarray,
                   spread: bool = True):
            """log effect (n_rows, n_draws): fitted, else the family's population (its centre without
            ``spread``), else the prior."""
            z = rng.standard_normal((config_code.max() + 1, n_draws))[config_code]
            f = np.maximum(fam, 0)
            tau = p.get(f"tau_{t}")  # (n_posterior,)
            if tau is None:
                sd = 0.2
            else:  # one sampled spread, times the family's ratio (1 for a family without the term in the fit)
                ratio = self.index.term_spread_ratio(t)[f]
                sd = tau[pick][None, :] * np.where(fam >= 0, ratio, 1.0)[:, None]
            if mean in p:
                centre = p[mean][pick][:, f].T
                for j, slope in enumerate(slopes):  # on the context: chained, after a mixing layer
                    if slope in p:
                        centre = centre + p[slope][pick][:, f].T * context[:, j : j + 1]
                population = np.where(fam[:, None] >= 0, centre + sd * z if spread else centre,
                                      np.sqrt(0.5**2 + sd**2) * z)
            else:  # the fit never saw this term in any family: the prior
                population = np.sqrt(0.5**2 + sd**2) * z
            if fitted not in p:
                return population
            return np.where(cfg[:, None] >= 0, p[fitted][pick][:, np.maximum(cfg, 0)].T, population)

        mu = np.zeros((len(design), n_draws))
        for t in _TERMS:
            log_c = effect(t, f"log_c_{t}", f"a_{t}", (), a[f"cfg_{t}"], a[f"fam_{t}"])
            mu += np.exp(log_c) * a[t][:, None]
        # a new configuration's trial-to-trial spread is its family's typical one (see the class doc)
        log_phi = effect("d", "log_phi_c", "d", ("g", "g_mix"), a["cfg"], a["fam"], spread=False)
        eta_d = p["eta_d"][pick][:, a["fam"], :]  # (n_draws, n_rows, n_covariates)
        log_phi = log_phi + np.einsum("drk,rk->rd", eta_d, self.index.dispersion_covariates(design))
        if "b_units" in p:
            log_phi = log_phi + p["b_units"][pick][None, :] * units
        p0 = 1.0 / (1.0 + np.exp(-p["h0"][pick][:, a["fam"]].T))
        return mu, np.exp(log_phi), p0

    def _draws(self, design: pd.DataFrame, n_draws: int, rng: np.random.Generator) -> np.ndarray:
        mu, phi, p0 = self._params_for(design, n_draws, rng)
        y = rng.gamma(phi, mu / phi)
        return np.where(rng.uniform(size=y.shape) < p0, 0.0, y)

    def check_idata(self, design: pd.DataFrame | None = None, max_draws: int = 1000, seed: int = 0):
        """InferenceData for checks: posterior predictive, pointwise log likelihood and observed ``y``.

        For ``design`` (default: the training rows), from the same ``max_draws``
        posterior draws (evenly thinned), so that ``arviz.loo``, ``arviz.loo_pit``
        and ``arviz.plot_ppc`` work on it.
        """
        from scipy import special

        az = _quiet_arviz()
        design = self.training_design() if design is None else design
        n_post = self._n_posterior()
        pick = np.unique(np.linspace(0, n_post - 1, min(max_draws, n_post)).round().astype(int))
        rng = np.random.default_rng(seed)
        mu, phi, p0 = self._params_for(design, len(pick), rng, pick)
        y = design["y"].to_numpy(float)[:, None]
        with np.errstate(divide="ignore"):
            pos_ll = (np.log1p(-p0) + phi * np.log(phi / mu) + (phi - 1) * np.log(np.where(y > 0, y, 1.0))
                      - phi * y / mu - special.gammaln(phi))
            ll = np.where(y > 0, pos_ll, np.log(p0))
        y_rep = np.where(rng.uniform(size=mu.shape) < p0, 0.0, rng.gamma(phi, mu / phi))
        post = self._posterior()
        return az.from_dict(posterior={"d": post["d"][pick][None]}, posterior_predictive={"smp_out": y_rep.T[None]},
                            log_likelihood={"smp_out": ll.T[None]}, observed_data={"smp_out": y[:, 0]})

    # ------------------------------------------------------------ persistence
    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index.to_dict(), "info": self.info}

    def to_frame(self) -> pd.DataFrame:
        """Posterior means and 90 % intervals of the family-level corrections (e^a), dispersions and spreads.

        Spreads (``tau``, family "all": shared) are on the log scale of the
        configuration effects; per family, its configurations' spread (the
        shared one times the family's fixed ratio, :func:`relative_spreads`);
        ``b_units`` (family "all") is the slope of the log Gamma shape on
        the log unit count.
        """
        post = self.idata.posterior
        rows = []

        def add(family: str, label: str, v: np.ndarray) -> None:
            rows.append({"family": family, "parameter": label, "mean": v.mean(),
                         "q05": np.quantile(v, 0.05), "q95": np.quantile(v, 0.95)})

        for name, label, transform in (("a_new", "new-kink factor e^a_new", np.exp),
                                       ("a_car", "carried-kink factor e^a_car", np.exp),
                                       ("d", "Gamma shape e^d", np.exp),
                                       ("tau_new", "config spread tau_new", None),
                                       ("tau_car", "config spread tau_car", None),
                                       ("tau_d", "config spread tau_d", None)):
            if name not in post:
                continue
            if post[name].ndim == 2:  # one for all families
                v = post[name].values.ravel()
                add("all", label, transform(v) if transform else v)
                continue
            dim = post[name].dims[-1]
            for fam in post[name][dim].values:
                v = post[name].sel({dim: fam}).values.ravel()
                add(str(fam), label, transform(v) if transform else v)
        for t in _SPREADS:
            name = f"tau_{t}"
            if name not in post:
                continue
            fams = self.index.term_families[t] if t in _TERMS else self.index.families
            for fam, r in zip(fams, self.index.term_spread_ratio(t)):
                add(fam, f"config spread {name} x ratio {r:.3g}", r * post[name].values.ravel())
        for k in DISPERSION_COVARIATES:
            for fam in post["eta_d"]["family"].values:
                add(str(fam), f"shape slope on {k}", post["eta_d"].sel(family=fam, dispersion_covariate=k).values.ravel())
        if "b_units" in post:
            add("all", "unit-count slope b_units", post["b_units"].values.ravel())
        return pd.DataFrame(rows).sort_values(["family", "parameter"], kind="stable", ignore_index=True)

    def summary(self) -> str:
        i = self.info
        head = (f"BayesTransfer for block families: {', '.join(self.families)}\n"
                f"  {i['n_rows']} rows; sampler {i['sampler']}, {i['chains']} chains x {i['draws']} draws "
                f"(compile {i['compile_seconds']:.1f} s, sampling {i['sampling_seconds']:.1f} s)\n"
                f"  diagnostics: max R-hat {i['r_hat_max']:.4f}, min bulk ESS {i['ess_bulk_min']:.0f}, "
                f"min tail ESS {i['ess_tail_min']:.0f}, divergences {i['divergences']}")
        status = "  all convergence checks passed" if not self.warnings else "\n".join(
            f"  WARNING: {w}" for w in self.warnings)
        return "\n".join([head, status, self.to_frame().to_string(float_format=lambda v: f"{v:.4g}")])

    def save(self, path: str | os.PathLike) -> Path:
        """Write the InferenceData (netCDF) with the model description in its attributes, atomically."""
        target = Path(os.fspath(path))
        meta = {"format": FORMAT, "format_version": _BAYES_FORMAT_VERSION, "kind": self.kind, "package_version": package_version(),
                "model": self.to_dict()}
        idata = self.idata.copy()
        idata.posterior.attrs["smpstats"] = json.dumps(meta)
        with atomic_path(target) as tmp:
            idata.to_netcdf(str(tmp))
        return target

    @classmethod
    def load(cls, path: Path) -> "BayesTransfer":
        az = _quiet_arviz()
        try:
            idata = az.from_netcdf(str(path))
            meta = json.loads(idata.posterior.attrs["smpstats"])
        except Exception as exc:  # netCDF/HDF5 libraries raise many types for damaged files
            raise DataFileError(
                f"'{path}' is not a readable smpstats Bayesian model (netCDF InferenceData with smpstats "
                f"attributes): {type(exc).__name__}: {exc}."
            ) from None
        if meta.get("format") != FORMAT or meta.get("kind") != "bayes":
            raise DataFileError(f"'{path}' is a netCDF file but not a smpstats Bayesian model.")
        version = meta.get("format_version", 0)
        if version != _BAYES_FORMAT_VERSION:
            newer = "a newer smpstats; upgrade" if version > _BAYES_FORMAT_VERSION else (
                "an older smpstats (no unit-count term); refit it with smpstats.fit "
                "(or delete it from the cache so that it is rebuilt)")
            raise DataFileError(f"'{path}' holds a Bayesian model of format version {version}, written by {newer}; "
                                f"this smpstats reads version {_BAYES_FORMAT_VERSION}.")
        idx = meta["model"]["index"]
        index = _Index.from_dict(idx)
        idata.posterior.attrs.pop("smpstats", None)
        return cls(idata, index, meta["model"]["info"])
