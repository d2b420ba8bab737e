"""Regression tier: Gamma GLMs with the theory as offset, a hurdle, quantile regression (statsmodels).

Per block family, on the rows with ``smp_out > 0``:

* mean: ``log E[y] = log(theory) + X beta`` (Gamma GLM, log link, the log
  theory as offset), ``X = [1, log_rel, log_res, chained]``
  (:data:`MEAN_COVARIATES`, columns constant in the family
  dropped), or rather the subset of these covariates that best predicts the
  rows of configurations left out one at a time (smallest mean squared
  ``log(y / predicted)``, leaving out one configuration after the other as
  for ``tau`` below): a slope that only tells the training configurations
  apart extrapolates badly to new ones, e.g. to the blocks of a chain;
  ``beta = 0`` is the theory itself;
* configuration effects (random effects): each seen configuration's log
  level relative to the mean fit, ``e_c = log(sum_i w_i y_i / mu_i / sum_i w_i)``
  over its rows (weights ``w = 1 / phi``, sampling variance ``1 / sum_i w_i``);
* dispersion (within configurations): a second Gamma GLM (log link, on
  all the family's varying covariates) on the squared Pearson residuals
  about each configuration's own level ``mu_i exp(e_c)`` (times
  ``n_c / (n_c - 1)`` for the level each configuration spends), alternated with the mean fit (a double GLM), so
  that blocks whose output varies less get narrower intervals and the
  differences between configurations are not counted as noise; plus
  ``-b (u - u_ref)`` with ``u`` the log number of output units the SMP per
  unit averages over (``log_units``; fewer units, more trial-to-trial
  variance: ``b = 1`` for independent units). The units vary between
  configurations only, so ``b`` is one slope for all families: a pooled
  Gamma GLM of all families' within-configuration squared Pearson
  residuals on their own columns and ``u`` (tables without unit counts
  leave the term out);
* dispersion effects (random effects): each configuration's log mean
  squared Pearson residual over the dispersion fit, ``e^phi_c``, with its
  sampling variance (delta method), and their spread ``tau_phi`` by leaving
  one configuration out as for ``tau`` below (the dispersion GLM refitted
  without it), moderated across families the same way: configurations
  differ in how much their output varies from trial to trial far beyond
  what the covariates say (log squared CV spread about 0.4-1.5);
* hurdle: ``P(y = 0)``, a logistic regression on ``[1, log_rel]`` when the
  family has at least 5 zeros and 5 positives, else a Beta(zeros + 1/2,
  positives + 1/2) probability;
* quantile regression of ``log(y / theory)`` on ``X`` at 5, 25, 50, 75 and
  95 % as a distribution-free check (:meth:`RegressionTransfer.predict_quantiles`);
* between-configuration spread ``tau``, by leave-one-configuration-out:
  the mean GLM is refitted without each configuration and the root mean
  square of the left-out configuration's mean ``log(y / predicted mean)``
  (less its within-configuration sampling variance) is ``tau``; it includes
  the error of the covariates' extrapolation, as a new configuration's
  prediction does. With 6-7 configurations per family that estimate is
  rough, so each family's is moderated towards the pool of all families
  (empirical Bayes, Smyth 2004: the families' squared spreads are scaled
  chi-square on as many degrees of freedom as
  configurations, their scale drawn from a scaled inverse chi-square whose
  centre and degrees of freedom are estimated from all families).

Prediction clips every covariate to the range it had in the family's fit,
so that no slope is extrapolated past the data (the blocks deep in a chain
have shares of new kinks far below any training block's), and splits the
variance as a random-effects model does: the log
effect of a seen configuration is its shrunken estimate (BLUP) ``m + k (e_c - m)``
with ``k = tau^2 / (tau^2 + v_c)``, ``m = -tau^2 / 2`` (the mean GLM
averages over configurations, so their median lies ``tau^2 / 2`` below
it) and variance ``k v_c``; a configuration the fit never saw draws its
log effect from ``N(m, tau^2)``, one per configuration and draw. Both then
get the within-configuration Gamma noise, whose log squared CV takes the
configuration's dispersion effect the same way (``tau_phi`` for ``tau``):
a new configuration gets a mixture of narrow and wide Gamma shapes, as the
configurations of its family have, rather than one shape of their mean
squared CV, whose central intervals would be too wide for most of them.

Predictive draws include parameter uncertainty: each draw takes the mean
coefficients from their asymptotic normal distribution (and the hurdle's)
and the configuration's mean and dispersion effects from their
distributions, then a Gamma variate with the row's dispersion.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .errors import InputError
from .transfer import TransferModel
from .transfer_data import COVARIATES

__all__ = ["RegressionTransfer", "FamilyRegression", "QUANTILES"]

#: Quantile levels of the distribution-free check.
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
_MIN_ROWS = 8
_HURDLE_MIN = 5
#: Version of the regression model's layout in model files; older files are refused (refit them).
REGRESSION_FORMAT = 5

#: Covariates the mean may use. Not ``share_new``: in the training blocks a small share of new kinks means
#: kinked inputs, whose new kinks the theory overcounts (by up to 7 %), but deep in a chain carried kinks pile
#: up and the share is small for another reason: with a slope on it the regression predicted 0.87 of the
#: simulated SMP at the last stage of a 12-block MLP, 1.14 without (the theory: 1.15).
MEAN_COVARIATES = ("log_rel", "log_res", "chained")


def _design_matrix(design: pd.DataFrame, columns: list[str], ranges: dict[str, tuple[float, float]] | None = None
                   ) -> np.ndarray:
    """``[1, covariates]`` per row; with ``ranges``, each covariate clipped to its ``(low, high)``."""
    cols = [np.ones(len(design)) if c == "const" else design[c].to_numpy(float) for c in columns]
    if ranges:
        cols = [np.clip(v, *ranges[c]) if c in ranges else v for c, v in zip(columns, cols)]
    return np.column_stack(cols)


def _ranges(design: pd.DataFrame, columns: list[str]) -> dict[str, tuple[float, float]]:
    """``(min, max)`` of each covariate among ``columns`` over the rows of ``design``."""
    return {c: (float(design[c].min()), float(design[c].max())) for c in columns if c != "const"}


def _varying(design: pd.DataFrame, candidates: tuple[str, ...] = COVARIATES) -> list[str]:
    return ["const"] + [c for c in candidates if np.ptp(design[c].to_numpy(float)) > 1e-9]


def _config_levels(configs: np.ndarray, ratio: np.ndarray, phi: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Log level of each configuration relative to a mean fit (module doc).

    Parameters
    ----------
    configs : ndarray of str, shape (n_rows,)
        Configuration of each row.
    ratio : ndarray, shape (n_rows,)
        ``y / mu``, the rows' output SMP over the mean fit's prediction.
    phi : ndarray, shape (n_rows,)
        Squared CV of each row within its configuration (the weights are ``1 / phi``).

    Returns
    -------
    names : ndarray of str, shape (n_configs,)
        The configurations, sorted.
    effect : ndarray, shape (n_configs,)
        ``log`` of the weighted mean ratio of each configuration.
    var : ndarray, shape (n_configs,)
        Sampling variance of ``effect``, ``1 / sum(1 / phi)``.
    code : ndarray of int, shape (n_rows,)
        Index of each row's configuration in ``names``.
    """
    names, code = np.unique(configs, return_inverse=True)
    w = 1.0 / phi
    den = np.bincount(code, w)
    return names, np.log(np.bincount(code, w * ratio) / den), 1.0 / den, code


def _dispersion_glm(d2: np.ndarray, X: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """Coefficients of a Gamma GLM (log link) of squared Pearson residuals ``d2`` on ``X``, shape (n_columns,).

    Newton's method from a least-squares fit of ``log d2`` (plus 1.27, minus
    the mean of ``log`` of a chi-square on one degree of freedom): on
    heavy-tailed, chi-square-like responses with a few strong covariates,
    statsmodels' default IRLS can overshoot to infinite means and fail,
    whereas the Gamma log-link likelihood is concave in the coefficients.
    The constant must lie in the span of ``X``.
    """
    import statsmodels.api as sm

    start = np.linalg.lstsq(X, np.log(d2) - offset + 1.27, rcond=None)[0]
    res = sm.GLM(d2, X, family=sm.families.Gamma(sm.families.links.Log()), offset=offset).fit(
        method="newton", start_params=start, maxiter=200)
    if not res.mle_retvals.get("converged", False) or not np.isfinite(res.params).all():
        raise InputError("The dispersion regression did not converge; the training table may have too few rows "
                         "per configuration or covariates that are constant within the family.")
    return np.asarray(res.params)


def _within_squared_pearson(y: np.ndarray, mu: np.ndarray, effect: np.ndarray, code: np.ndarray) -> np.ndarray:
    """Squared Pearson residuals about each configuration's own level, shape (n_rows,) (module doc)."""
    n = np.bincount(code).astype(float)
    spent = np.where(n > 1, n / np.maximum(n - 1, 1), 1.0)[code]  # each configuration spends one level
    level = mu * np.exp(effect[code])
    return np.maximum(((y - level) / level) ** 2 * spent, 1e-12)


@dataclass
class FamilyRegression:
    """Fitted regressions of one block family (arrays as in statsmodels' results)."""

    family: str
    columns: list[str]  # of the mean (and quantile) regressions
    beta: np.ndarray
    beta_cov: np.ndarray
    disp_columns: list[str]  # of the dispersion regression: all covariates that vary in the family
    gamma: np.ndarray  # dispersion coefficients (log link)
    hurdle_kind: str  # "logit" or "beta"
    hurdle: np.ndarray  # logit: coefficients on [1, log_rel]; beta: [a, b]
    hurdle_cov: np.ndarray
    quantiles: np.ndarray  # (len(QUANTILES), n_columns)
    n_rows: int
    n_zero: int
    configs: list[str]  # configurations with rows y > 0, sorted
    config_effect: np.ndarray  # (n_configs,) their log levels relative to the mean fit, unshrunken
    config_var: np.ndarray  # (n_configs,) sampling variances of config_effect
    config_sd: float  # spread tau of a configuration's log effect, moderated across families
    loco_sd: float  # the family's own leave-one-configuration-out estimate of it
    loco_df: int  # its degrees of freedom (configurations scored)
    units_coef: float  # slope of the log squared CV on the log unit count (shared by all families)
    units_ref: float | None  # log unit count at which the slope is 0; None: no unit-count term
    disp_effect: np.ndarray  # (n_configs,) their log squared CVs relative to the dispersion fit
    disp_var: np.ndarray  # (n_configs,) sampling variances of disp_effect
    disp_sd: float  # spread of a configuration's log squared CV, moderated across families
    disp_loco_sd: float  # the family's own leave-one-configuration-out estimate of it
    disp_loco_df: int  # its degrees of freedom
    ranges: dict[str, tuple[float, float]]  # of the covariates in the fit: predictions clip them (no extrapolation)

    @classmethod
    def fit(cls, family: str, design: pd.DataFrame, units_coef: float = 0.0,
            units_ref: float | None = None, selection: tuple[list[str], float, int] | None = None
            ) -> "FamilyRegression":
        """Fit one family's regressions; ``units_coef`` (fixed) enters the dispersion as ``coef (u - units_ref)``.

        ``selection``: the mean's columns with their left-out spread and its
        degrees of freedom (:func:`_select_columns`) from an earlier fit of the
        same rows, which the unit term does not change; chosen here if None.
        """
        import statsmodels.api as sm

        if len(design) < _MIN_ROWS:
            raise InputError(f"Family {family!r} has {len(design)} rows; the regression needs at least {_MIN_ROWS}.")
        y = design["y"].to_numpy(float)
        pos = y > 0
        if (design["theory"].to_numpy() <= 0).any():
            raise InputError(
                f"Family {family!r} has rows whose theory SMP is 0 (smooth blocks on smooth inputs): their output "
                "SMP is 0 by construction; fit on inputs with kinks (path='kinked') or drop those rows."
            )
        if pos.sum() < _MIN_ROWS:
            raise InputError(f"Family {family!r} has {int(pos.sum())} rows with smp_out > 0; need at least {_MIN_ROWS}.")
        d = design[pos]
        columns, loco_sd, loco_df = _select_columns(d) if selection is None else selection
        X = _design_matrix(d, columns)
        disp_columns = _varying(d)
        Xd = _design_matrix(d, disp_columns)
        yp, offset = d["y"].to_numpy(float), np.log(d["theory"].to_numpy(float))
        gamma_family = sm.families.Gamma(sm.families.links.Log())
        disp_offset = units_coef * _units_term(d, units_ref)
        cfg = d["config"].astype(str).to_numpy()
        weights = np.ones(len(d))
        gamma = np.zeros(len(disp_columns))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for _ in range(3):  # double GLM: mean with weights, then dispersion within configurations
                mean_fit = sm.GLM(yp, X, family=gamma_family, offset=offset, var_weights=weights).fit()
                mu = mean_fit.fittedvalues
                _, effect, _, code = _config_levels(cfg, yp / mu, 1.0 / weights)
                d2 = _within_squared_pearson(yp, mu, effect, code)
                gamma = _dispersion_glm(d2, Xd, disp_offset)
                weights = 1.0 / np.exp(Xd @ gamma + disp_offset)
            mean_fit = sm.GLM(yp, X, family=gamma_family, offset=offset, var_weights=weights).fit(scale=1.0)
            names, effect, var, code = _config_levels(cfg, yp / mean_fit.fittedvalues, 1.0 / weights)
            d2 = _within_squared_pearson(yp, mean_fit.fittedvalues, effect, code)
            disp_effect, disp_var = _config_dispersions(d2 * weights, code)
            disp_sd, disp_df = _leave_one_config_out_dispersion_sd(d2, Xd, disp_offset, code)
            log_ratio = np.log(yp) - offset
            qs = np.array([sm.QuantReg(log_ratio, X).fit(q=q, max_iter=5000).params for q in QUANTILES])
        n_zero = int((~pos).sum())
        if n_zero >= _HURDLE_MIN and pos.sum() >= _HURDLE_MIN:
            Z = np.column_stack([np.ones(len(design)), design["log_rel"].to_numpy(float)])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                h = sm.Logit((~pos).astype(float), Z).fit(disp=0)
            hurdle_kind, hurdle, hurdle_cov = "logit", np.asarray(h.params), np.asarray(h.cov_params())
        else:
            hurdle_kind, hurdle, hurdle_cov = "beta", np.array([n_zero + 0.5, pos.sum() + 0.5]), np.zeros((2, 2))
        return cls(family, columns, np.asarray(mean_fit.params), np.asarray(mean_fit.cov_params()), disp_columns,
                   np.asarray(gamma),
                   hurdle_kind, hurdle, hurdle_cov, qs, len(design), n_zero, [str(c) for c in names], effect, var,
                   loco_sd, loco_sd, loco_df, float(units_coef), units_ref, disp_effect, disp_var, disp_sd, disp_sd,
                   disp_df, _ranges(d, disp_columns))

    def squared_pearson(self, design: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Within-configuration squared Pearson residuals on the training rows with ``y > 0`` and their
        dispersion columns.

        ``design`` must be the table the family was fitted on (its
        configurations are looked up in :attr:`configs`).
        """
        d = design[design["y"].to_numpy(float) > 0]
        X = _design_matrix(d, self.columns)
        mu = d["theory"].to_numpy(float) * np.exp(X @ self.beta)
        code = np.searchsorted(self.configs, d["config"].astype(str).to_numpy())
        return (_within_squared_pearson(d["y"].to_numpy(float), mu, self.config_effect, code),
                _design_matrix(d, self.disp_columns))

    def config_draws(self, configs: np.ndarray, n_draws: int, rng: np.random.Generator) -> np.ndarray:
        """Log configuration effects on the mean per row and draw, shape (n_rows, n_draws) (module doc).

        Seen configurations draw from their shrunken estimate, unseen ones
        from ``N(-tau^2 / 2, tau^2)``; rows of one configuration share a draw.
        """
        return self._effect_draws(configs, self.config_sd, self.config_effect, self.config_var, n_draws, rng)

    def dispersion_draws(self, configs: np.ndarray, n_draws: int, rng: np.random.Generator) -> np.ndarray:
        """Log configuration effects on the squared CV per row and draw, shape (n_rows, n_draws) (module doc)."""
        return self._effect_draws(configs, self.disp_sd, self.disp_effect, self.disp_var, n_draws, rng)

    def _effect_draws(self, configs: np.ndarray, sd: float, effect: np.ndarray, effect_var: np.ndarray,
                      n_draws: int, rng: np.random.Generator) -> np.ndarray:
        """Random effects of spread ``sd`` (log scale, mean over configurations 0 on the natural scale)."""
        names, code = np.unique(configs, return_inverse=True)
        tau2 = sd**2
        centre = np.full(len(names), -tau2 / 2)
        var = np.full(len(names), tau2)
        index = {c: i for i, c in enumerate(self.configs)}
        at = np.array([index.get(c, -1) for c in names], dtype=int)
        seen = at >= 0
        if seen.any():
            e, v = effect[at[seen]], effect_var[at[seen]]
            k = tau2 / (tau2 + v)
            centre[seen] = centre[seen] + k * (e - centre[seen])
            var[seen] = k * v
        return (centre[:, None] + np.sqrt(var)[:, None] * rng.standard_normal((len(names), n_draws)))[code]

    def draws(self, design: pd.DataFrame, n_draws: int, rng: np.random.Generator) -> np.ndarray:
        X = _design_matrix(design, self.columns, self.ranges)
        theory = design["theory"].to_numpy(float)
        beta = rng.multivariate_normal(self.beta, self.beta_cov, size=n_draws, method="eigh")  # (n_draws, p)
        mu = theory[:, None] * np.exp(X @ beta.T + self.config_draws(design["config"].astype(str).to_numpy(),
                                                                        n_draws, rng))  # (n_rows, n_draws)
        # log squared CV: the dispersion fit, the unit count and the configuration's dispersion effect
        log_phi = (_design_matrix(design, self.disp_columns, self.ranges) @ self.gamma
                   + self.units_coef * _units_term(design, self.units_ref))
        phi = np.exp(log_phi[:, None] + self.dispersion_draws(design["config"].astype(str).to_numpy(), n_draws, rng))
        shape = 1.0 / phi
        y = rng.gamma(shape, mu / shape, size=mu.shape)
        if self.hurdle_kind == "logit":
            h = rng.multivariate_normal(self.hurdle, self.hurdle_cov, size=n_draws, method="eigh")
            Z = np.column_stack([np.ones(len(design)), design["log_rel"].to_numpy(float)])
            p0 = 1.0 / (1.0 + np.exp(-(Z @ h.T)))
        else:
            p0 = rng.beta(*self.hurdle, size=n_draws)[None, :]
        zero = rng.uniform(size=mu.shape) < p0
        return np.where(zero, 0.0, y)

    def quantile_frame(self, design: pd.DataFrame) -> np.ndarray:
        X = _design_matrix(design, self.columns, self.ranges)
        q = np.exp(X @ self.quantiles.T) * design["theory"].to_numpy(float)[:, None]
        return np.sort(q, axis=1)  # quantile crossing is rare; sorting keeps them monotone

    def to_dict(self) -> dict[str, Any]:
        return {"family": self.family, "columns": self.columns, "beta": self.beta.tolist(),
                "beta_cov": self.beta_cov.tolist(), "disp_columns": self.disp_columns, "gamma": self.gamma.tolist(),
                "hurdle_kind": self.hurdle_kind,
                "hurdle": self.hurdle.tolist(), "hurdle_cov": self.hurdle_cov.tolist(),
                "quantiles": self.quantiles.tolist(), "n_rows": self.n_rows, "n_zero": self.n_zero,
                "configs": self.configs, "config_effect": self.config_effect.tolist(),
                "config_var": self.config_var.tolist(), "config_sd": self.config_sd, "loco_sd": self.loco_sd,
                "loco_df": self.loco_df, "units_coef": self.units_coef, "units_ref": self.units_ref,
                "disp_effect": self.disp_effect.tolist(), "disp_var": self.disp_var.tolist(), "disp_sd": self.disp_sd,
                "disp_loco_sd": self.disp_loco_sd, "disp_loco_df": self.disp_loco_df,
                "ranges": {c: list(r) for c, r in self.ranges.items()}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FamilyRegression":
        keys = ("beta", "beta_cov", "gamma", "hurdle", "hurdle_cov", "quantiles", "config_effect", "config_var",
                "disp_effect", "disp_var")
        arr = {k: np.asarray(d[k], dtype=float) for k in keys}
        p = len(d["columns"])
        if arr["beta"].shape != (p,) or arr["beta_cov"].shape != (p, p) or arr["quantiles"].shape != (len(QUANTILES), p):
            raise ValueError(f"coefficient shapes do not match the {p} columns of family {d['family']!r}")
        if arr["gamma"].shape != (len(d["disp_columns"]),):
            raise ValueError(f"dispersion coefficients do not match the dispersion columns of family {d['family']!r}")
        configs = [str(c) for c in d["configs"]]
        n = len(configs)
        if configs != sorted(configs) or any(arr[k].shape != (n,) for k in ("config_effect", "config_var",
                                                                              "disp_effect", "disp_var")):
            raise ValueError(f"configuration effects do not match the {n} sorted configurations of family "
                             f"{d['family']!r}")
        ref = d["units_ref"]
        ranges = {str(c): (float(lo), float(hi)) for c, (lo, hi) in d["ranges"].items()}
        if set(ranges) != set(d["disp_columns"]) - {"const"} or any(not lo <= hi for lo, hi in ranges.values()):
            raise ValueError(f"covariate ranges do not match the dispersion columns of family {d['family']!r}")
        return cls(d["family"], list(d["columns"]), arr["beta"], arr["beta_cov"], list(d["disp_columns"]), arr["gamma"],
                   d["hurdle_kind"],
                   arr["hurdle"], arr["hurdle_cov"], arr["quantiles"], int(d["n_rows"]), int(d["n_zero"]),
                   configs, arr["config_effect"], arr["config_var"], float(d["config_sd"]), float(d["loco_sd"]),
                   int(d["loco_df"]), float(d["units_coef"]), None if ref is None else float(ref),
                   arr["disp_effect"], arr["disp_var"], float(d["disp_sd"]), float(d["disp_loco_sd"]),
                   int(d["disp_loco_df"]), ranges)


def _select_columns(d: pd.DataFrame) -> tuple[list[str], float, int]:
    """The mean GLM's columns, with the spread of a new configuration's effect and its degrees of freedom.

    Every subset of the family's varying covariates (the constant always
    in) is scored by :func:`_leave_one_config_out_sd` (the left-out rows'
    mean squared log error, averaged over configurations); the smallest
    score wins, the fewer columns on ties. A family with one configuration
    keeps all its varying covariates (nothing to score them on).
    """
    import itertools

    varying = _varying(d, MEAN_COVARIATES)
    if d["config"].nunique() < 2:
        return varying, 0.0, 0
    best = None
    for k in range(len(varying)):
        for subset in itertools.combinations(varying[1:], k):
            columns = ["const", *subset]
            score, sd, df = _leave_one_config_out_sd(d, columns)
            if best is None or score < best[0] - 1e-12:
                best = (score, columns, sd, df)
    return best[1], best[2], best[3]


def _leave_one_config_out_sd(d: pd.DataFrame, columns: list[str]) -> tuple[float, float, int]:
    """Score, spread (log scale) of a new configuration's effect and its degrees of freedom (see module doc).

    Each configuration is left out in turn, the mean GLM on ``columns``
    (less those constant without it) refitted without it, and its mean
    ``log(y / predicted)`` scored. The spread is the root of the mean
    squared scores less their sampling variance, floored at the mean
    sampling variance of a configuration's mean (no spread below it can be
    resolved). The score is the left-out rows' mean squared
    ``log(y / predicted)``, averaged over configurations (the error of the
    configuration's level and of the rows within it).
    """
    import statsmodels.api as sm

    configs = d["config"].to_numpy()
    family = sm.families.Gamma(sm.families.links.Log())
    sq, resolution, rows = [], [], []
    for c in sorted(set(configs)):
        rest, left = d[configs != c], d[configs == c]
        cols = [k for k in columns if k == "const" or np.ptp(rest[k].to_numpy(float)) > 1e-9]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = sm.GLM(rest["y"].to_numpy(float), _design_matrix(rest, cols), family=family,
                         offset=np.log(rest["theory"].to_numpy(float))).fit()
        # as a prediction does: the left-out configuration's covariates clipped to the fit's ranges
        pred = _design_matrix(left, cols, _ranges(rest, cols)) @ res.params + np.log(left["theory"].to_numpy(float))
        r = np.log(left["y"].to_numpy(float)) - pred
        sampling = r.var(ddof=1) / len(r) if len(r) > 1 else 0.0
        sq.append(r.mean() ** 2 - sampling)
        resolution.append(sampling)
        rows.append(np.mean(r**2))
    return float(np.mean(rows)), float(np.sqrt(max(np.mean(sq), np.mean(resolution), 1e-12))), len(sq)


def _config_dispersions(ratio: np.ndarray, code: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Log mean of ``ratio`` (squared Pearson residuals over the dispersion fit) per configuration and its
    sampling variance (delta method), each shape (n_configs,); ``code`` indexes the sorted configurations."""
    n = np.bincount(code).astype(float)
    mean = np.bincount(code, ratio) / n
    second = np.bincount(code, ratio**2) / n
    var = np.maximum(second - mean**2, 0.0) * n / np.maximum(n - 1, 1)
    return np.log(mean), var / (n * mean**2)


def _leave_one_config_out_dispersion_sd(d2: np.ndarray, X: np.ndarray, offset: np.ndarray, code: np.ndarray
                                        ) -> tuple[float, int]:
    """Spread (log scale) of a new configuration's squared CV and its degrees of freedom (module doc).

    As :func:`_leave_one_config_out_sd` for the dispersion GLM: each
    configuration is left out, the GLM refitted on the others (columns
    constant there dropped), and the log of the left-out rows' mean ``d2``
    over its prediction scored; ``(0.0, 0)`` for one configuration.
    """
    n_configs = int(code.max()) + 1
    if n_configs < 2:
        return 0.0, 0
    sq, resolution = [], []
    for c in range(n_configs):
        rest, left = code != c, code == c
        cols = [j for j in range(X.shape[1]) if j == 0 or np.ptp(X[rest, j]) > 1e-9]
        gamma = _dispersion_glm(d2[rest], X[rest][:, cols], offset[rest])
        ratio = d2[left] / np.exp(X[left][:, cols] @ gamma + offset[left])
        score, sampling = _config_dispersions(ratio, np.zeros(int(left.sum()), dtype=int))
        sq.append(score[0] ** 2 - sampling[0])
        resolution.append(sampling[0])
    return float(np.sqrt(max(np.mean(sq), np.mean(resolution), 1e-12))), len(sq)


def _units_term(design: pd.DataFrame, units_ref: float | None) -> np.ndarray:
    """``log_units - units_ref`` per row, shape (n_rows,); zeros for a model without the unit-count term."""
    if units_ref is None:
        return np.zeros(len(design))
    u = design["log_units"].to_numpy(float) if "log_units" in design.columns else np.full(len(design), np.nan)
    if np.isnan(u).any():
        raise InputError(
            "This regression model was fitted with the number of units per row (its dispersion depends on it); "
            "the inputs need n_measured_out, n_units_out or out_shape in every row."
        )
    return u - units_ref


def _units_ref(design: pd.DataFrame) -> float | None:
    """Median log unit count of a training design; None when no row has one (the term is left out)."""
    u = design["log_units"].to_numpy(float) if "log_units" in design.columns else np.full(len(design), np.nan)
    if np.isnan(u).all():
        return None
    if np.isnan(u).any():
        raise InputError(
            f"{int((~np.isnan(u)).sum())} of {len(u)} rows say how many units their SMP per unit averages over "
            "(n_measured_out, n_units_out or out_shape) and the others do not; fit on tables that all have one "
            "of these columns, or none."
        )
    return float(np.median(u))


def _pooled_units_coef(fits: dict[str, "FamilyRegression"], groups: dict[str, pd.DataFrame], ref: float) -> float:
    """Slope of the log squared CV on the log unit count, one for all families (module doc).

    A Gamma GLM (log link) of all families' squared Pearson residuals on
    each family's own dispersion columns (block diagonal) and the shared
    ``log_units - ref``.
    """
    blocks, units, d2s = [], [], []
    for f, r in fits.items():
        d2, X = r.squared_pearson(groups[f])
        blocks.append(X)
        d2s.append(d2)
        units.append(_units_term(groups[f][groups[f]["y"].to_numpy(float) > 0], ref))
    n = sum(len(b) for b in blocks)
    X = np.zeros((n, sum(b.shape[1] for b in blocks) + 1))
    row = col = 0
    for b in blocks:
        X[row:row + len(b), col:col + b.shape[1]] = b
        row, col = row + len(b), col + b.shape[1]
    X[:, -1] = np.concatenate(units)
    if np.ptp(X[:, -1]) < 1e-9:
        return 0.0  # every row has the same unit count: no slope to learn
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        params = _dispersion_glm(np.concatenate(d2s), X, np.zeros(n))
    return float(params[-1])


def _trigamma_inverse(x: float) -> float:
    """``y`` with ``trigamma(y) = x`` (x > 0), by Newton's method as in Smyth (2004)."""
    from scipy import special

    y = 0.5 + 1.0 / x
    for _ in range(50):
        tri = special.polygamma(1, y)
        step = tri * (1.0 - tri / x) / special.polygamma(2, y)
        y += step
        if -step / y < 1e-8:
            break
    return float(y)


def moderated_spreads(sd: np.ndarray, df: np.ndarray) -> np.ndarray:
    """Spreads moderated towards their pool by empirical Bayes (Smyth 2004), shape as ``sd``.

    Each squared spread ``sd^2`` is taken as scaled chi-square on ``df``
    degrees of freedom around its true value, and the true values as scaled
    inverse chi-square with centre ``s0^2`` and ``d0`` degrees of freedom,
    both estimated by moments of ``log sd^2`` over all entries. The result
    is the posterior mean ``(d0 s0^2 + df sd^2) / (d0 + df)``: close to
    ``s0`` when the entries scatter no more than their own sampling error
    explains, close to ``sd`` when they truly differ. Entries with
    ``df = 0`` (one configuration) take ``s0``; with fewer than two entries
    of ``df > 0`` the spreads are returned unchanged.
    """
    from scipy import special

    sd, df = np.asarray(sd, float), np.asarray(df, float)
    ok = df > 0
    if ok.sum() < 2:
        return sd.copy()
    half = df[ok] / 2
    e = np.log(sd[ok] ** 2) - special.digamma(half) + np.log(half)
    excess = e.var(ddof=1) - special.polygamma(1, half).mean()
    if excess > 0:
        d0 = 2 * _trigamma_inverse(excess)
        s02 = np.exp(e.mean() + special.digamma(d0 / 2) - np.log(d0 / 2))
        post = (d0 * s02 + df * sd**2) / (d0 + df)
    else:  # the spreads differ no more than chance: one pooled value
        s02 = np.exp(e.mean())
        post = np.full_like(sd, s02)
    return np.sqrt(np.where(ok, post, s02))


class RegressionTransfer(TransferModel):
    """Regression tier: one :class:`FamilyRegression` per block family (see the module doc)."""

    kind = "regression"

    def __init__(self, fits: dict[str, FamilyRegression]):
        self.fits = dict(sorted(fits.items()))
        self.families = tuple(self.fits)

    @classmethod
    def fit_design(cls, design: pd.DataFrame) -> "RegressionTransfer":
        """Fit every family; the unit-count slope and the new-configuration spreads are pooled (module doc)."""
        groups = {f: g for f, g in design.groupby("family", sort=True)}
        ref = _units_ref(design)
        coef, first = 0.0, {}
        if ref is not None:
            first = {f: FamilyRegression.fit(f, g) for f, g in groups.items()}
            coef = _pooled_units_coef(first, groups, ref)
        fits = {f: FamilyRegression.fit(f, g, units_coef=coef, units_ref=ref,
                                        selection=(first[f].columns, first[f].loco_sd, first[f].loco_df)
                                        if f in first else None)
                for f, g in groups.items()}
        sds = moderated_spreads(np.array([r.loco_sd for r in fits.values()]),
                                np.array([r.loco_df for r in fits.values()]))
        disp = moderated_spreads(np.array([r.disp_loco_sd for r in fits.values()]),
                                 np.array([r.disp_loco_df for r in fits.values()]))
        for r, sd, ds in zip(fits.values(), sds, disp):
            r.config_sd, r.disp_sd = float(sd), float(ds)
        return cls(fits)

    def _draws(self, design: pd.DataFrame, n_draws: int, rng: np.random.Generator) -> np.ndarray:
        out = np.empty((len(design), n_draws))
        fam = design["family"].to_numpy()
        for f in self.families:
            m = fam == f
            if m.any():
                out[m] = self.fits[f].draws(design[m], n_draws, rng)
        return out

    def predict_quantiles(self, inputs: pd.DataFrame) -> pd.DataFrame:
        """Quantile-regression predictions (no distributional assumption), columns ``q05`` ... ``q95``."""
        from .transfer import check_samples

        design = check_samples(inputs, need_y=False)
        self._check_families(design)
        out = np.empty((len(design), len(QUANTILES)))
        fam = design["family"].to_numpy()
        for f in self.families:
            m = fam == f
            if m.any():
                out[m] = self.fits[f].quantile_frame(design[m])
        return pd.DataFrame(out, index=inputs.index, columns=[f"q{round(100 * q):02d}" for q in QUANTILES])

    def to_dict(self) -> dict[str, Any]:
        return {"regression_format": REGRESSION_FORMAT, "families": {f: r.to_dict() for f, r in self.fits.items()}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RegressionTransfer":
        version = d.get("regression_format", 0)
        if version < REGRESSION_FORMAT:
            raise ValueError(f"the regression model was written by an older smpstats (regression format {version}, "
                             f"this one reads {REGRESSION_FORMAT}: configuration effects on the mean since format 3, "
                             "on the dispersion since format 4, covariate ranges since format 5); refit the model")
        if version > REGRESSION_FORMAT:
            raise ValueError(f"the regression model was written by a newer smpstats (regression format {version}, "
                             f"this one reads {REGRESSION_FORMAT}); upgrade smpstats")
        return cls({f: FamilyRegression.from_dict(r) for f, r in d["families"].items()})

    def to_frame(self) -> pd.DataFrame:
        """Per family and term: mean coefficient and its se (NaN: not in the selected mean columns), dispersion
        coefficient, spreads of a new configuration's mean (``config_sd``, ``loco_sd``) and log squared CV
        (``disp_sd``)."""
        rows = []
        for f, r in self.fits.items():
            se = dict(zip(r.columns, np.sqrt(np.diag(r.beta_cov))))
            beta, gamma = dict(zip(r.columns, r.beta)), dict(zip(r.disp_columns, r.gamma))
            if r.units_ref is not None:
                gamma["log_units"] = r.units_coef
            for c in gamma:
                rows.append({"family": f, "term": c, "mean_coef": beta.get(c, np.nan), "mean_se": se.get(c, np.nan),
                             "dispersion_coef": gamma[c], "config_sd": r.config_sd, "loco_sd": r.loco_sd,
                             "disp_sd": r.disp_sd, "n_rows": r.n_rows, "n_zero": r.n_zero})
        return pd.DataFrame(rows)
