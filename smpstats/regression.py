"""Regression tier: Gamma GLMs with the theory as offset, a hurdle, quantile regression (statsmodels).

Per block family, on the rows with ``smp_out > 0``:

* mean: ``log E[y] = log(theory) + X beta`` (Gamma GLM, log link, the log
  theory as offset), ``X = [1, share_new, log_rel, log_res, chained]``
  (:data:`smpstats.transfer_data.COVARIATES`, columns constant in the family
  dropped); ``beta = 0`` is the theory itself;
* dispersion: a second Gamma GLM (log link, same ``X``) on the squared
  Pearson residuals, alternated with the mean fit (a double GLM), so that
  blocks whose output varies less get narrower intervals;
* hurdle: ``P(y = 0)``, a logistic regression on ``[1, log_rel]`` when the
  family has at least 5 zeros and 5 positives, else a Beta(zeros + 1/2,
  positives + 1/2) probability;
* quantile regression of ``log(y / theory)`` on ``X`` at 5, 25, 50, 75 and
  95 % as a distribution-free check (:meth:`RegressionTransfer.predict_quantiles`);
* between-configuration spread, by leave-one-configuration-out: the mean
  GLM is refitted without each configuration and the root mean square of
  the left-out configuration's mean ``log(y / predicted mean)`` (less its
  within-configuration sampling variance) is the spread of a new
  configuration's effect. Rows of a configuration the fit never saw get a
  log-normal factor with that spread (one per configuration and draw), so
  that predictions for new architectures admit that configurations differ.
  (Seen configurations have no effect of their own: differences the
  covariates cannot explain widen the dispersion of every row.)

Predictive draws include parameter uncertainty: each draw takes the mean
coefficients from their asymptotic normal distribution (and the hurdle's),
then a Gamma variate with the row's dispersion.
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


def _design_matrix(design: pd.DataFrame, columns: list[str]) -> np.ndarray:
    cols = [np.ones(len(design)) if c == "const" else design[c].to_numpy(float) for c in columns]
    return np.column_stack(cols)


def _varying(design: pd.DataFrame) -> list[str]:
    return ["const"] + [c for c in COVARIATES if np.ptp(design[c].to_numpy(float)) > 1e-9]


@dataclass
class FamilyRegression:
    """Fitted regressions of one block family (arrays as in statsmodels' results)."""

    family: str
    columns: list[str]
    beta: np.ndarray
    beta_cov: np.ndarray
    gamma: np.ndarray  # dispersion coefficients (log link)
    hurdle_kind: str  # "logit" or "beta"
    hurdle: np.ndarray  # logit: coefficients on [1, log_rel]; beta: [a, b]
    hurdle_cov: np.ndarray
    quantiles: np.ndarray  # (len(QUANTILES), n_columns)
    n_rows: int
    n_zero: int
    configs: list[str]
    config_sd: float

    @classmethod
    def fit(cls, family: str, design: pd.DataFrame) -> "FamilyRegression":
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
        columns = _varying(d)
        X = _design_matrix(d, columns)
        yp, offset = d["y"].to_numpy(float), np.log(d["theory"].to_numpy(float))
        gamma_family = sm.families.Gamma(sm.families.links.Log())
        weights = np.ones(len(d))
        gamma = np.zeros(len(columns))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for _ in range(3):  # double GLM: mean with weights, then dispersion on Pearson residuals
                mean_fit = sm.GLM(yp, X, family=gamma_family, offset=offset, var_weights=weights).fit()
                mu = mean_fit.fittedvalues
                d2 = np.maximum(((yp - mu) / mu) ** 2, 1e-12)
                disp_fit = sm.GLM(d2, X, family=sm.families.Gamma(sm.families.links.Log())).fit()
                gamma = disp_fit.params
                weights = 1.0 / np.exp(X @ gamma)
            mean_fit = sm.GLM(yp, X, family=gamma_family, offset=offset, var_weights=weights).fit(scale=1.0)
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
        config_sd = _leave_one_config_out_sd(d)
        return cls(family, columns, np.asarray(mean_fit.params), np.asarray(mean_fit.cov_params()), np.asarray(gamma),
                   hurdle_kind, hurdle, hurdle_cov, qs, len(design), n_zero, sorted(set(design["config"])), config_sd)

    def draws(self, design: pd.DataFrame, n_draws: int, rng: np.random.Generator) -> np.ndarray:
        X = _design_matrix(design, self.columns)
        theory = design["theory"].to_numpy(float)
        beta = rng.multivariate_normal(self.beta, self.beta_cov, size=n_draws, method="eigh")  # (n_draws, p)
        mu = theory[:, None] * np.exp(X @ beta.T)  # (n_rows, n_draws)
        configs = design["config"].astype(str).to_numpy()
        unseen = ~np.isin(configs, self.configs)
        if unseen.any() and self.config_sd > 0:
            _, code = np.unique(configs, return_inverse=True)
            shift = self.config_sd * rng.standard_normal((code.max() + 1, n_draws))[code]
            mu = mu * np.where(unseen[:, None], np.exp(shift), 1.0)
        phi = np.exp(X @ self.gamma)[:, None]  # squared coefficient of variation
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
        X = _design_matrix(design, self.columns)
        q = np.exp(X @ self.quantiles.T) * design["theory"].to_numpy(float)[:, None]
        return np.sort(q, axis=1)  # quantile crossing is rare; sorting keeps them monotone

    def to_dict(self) -> dict[str, Any]:
        return {"family": self.family, "columns": self.columns, "beta": self.beta.tolist(),
                "beta_cov": self.beta_cov.tolist(), "gamma": self.gamma.tolist(), "hurdle_kind": self.hurdle_kind,
                "hurdle": self.hurdle.tolist(), "hurdle_cov": self.hurdle_cov.tolist(),
                "quantiles": self.quantiles.tolist(), "n_rows": self.n_rows, "n_zero": self.n_zero,
                "configs": self.configs, "config_sd": self.config_sd}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FamilyRegression":
        arr = {k: np.asarray(d[k], dtype=float) for k in ("beta", "beta_cov", "gamma", "hurdle", "hurdle_cov", "quantiles")}
        p = len(d["columns"])
        if arr["beta"].shape != (p,) or arr["beta_cov"].shape != (p, p) or arr["quantiles"].shape != (len(QUANTILES), p):
            raise ValueError(f"coefficient shapes do not match the {p} columns of family {d['family']!r}")
        return cls(d["family"], list(d["columns"]), arr["beta"], arr["beta_cov"], arr["gamma"], d["hurdle_kind"],
                   arr["hurdle"], arr["hurdle_cov"], arr["quantiles"], int(d["n_rows"]), int(d["n_zero"]),
                   [str(c) for c in d["configs"]], float(d["config_sd"]))


def _leave_one_config_out_sd(d: pd.DataFrame) -> float:
    """Spread (log scale) of a new configuration's effect: refit without each config, score it (see module doc)."""
    import statsmodels.api as sm

    configs = d["config"].to_numpy()
    if len(set(configs)) < 2:
        return 0.0
    family = sm.families.Gamma(sm.families.links.Log())
    sq = []
    for c in sorted(set(configs)):
        rest, left = d[configs != c], d[configs == c]
        cols = _varying(rest)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = sm.GLM(rest["y"].to_numpy(float), _design_matrix(rest, cols), family=family,
                         offset=np.log(rest["theory"].to_numpy(float))).fit()
        pred = _design_matrix(left, cols) @ res.params + np.log(left["theory"].to_numpy(float))
        r = np.log(left["y"].to_numpy(float)) - pred
        sq.append(r.mean() ** 2 - r.var(ddof=1) / len(r) if len(r) > 1 else r.mean() ** 2)
    return float(np.sqrt(max(np.mean(sq), 0.0)))


class RegressionTransfer(TransferModel):
    """Regression tier: one :class:`FamilyRegression` per block family (see the module doc)."""

    kind = "regression"

    def __init__(self, fits: dict[str, FamilyRegression]):
        self.fits = dict(sorted(fits.items()))
        self.families = tuple(self.fits)

    @classmethod
    def fit_design(cls, design: pd.DataFrame) -> "RegressionTransfer":
        return cls({f: FamilyRegression.fit(f, g) for f, g in design.groupby("family", sort=True)})

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
        return {"families": {f: r.to_dict() for f, r in self.fits.items()}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RegressionTransfer":
        return cls({f: FamilyRegression.from_dict(r) for f, r in d["families"].items()})

    def to_frame(self) -> pd.DataFrame:
        rows = []
        for f, r in self.fits.items():
            se = np.sqrt(np.diag(r.beta_cov))
            for c, b, s, g in zip(r.columns, r.beta, se, r.gamma):
                rows.append({"family": f, "term": c, "mean_coef": b, "mean_se": s, "dispersion_coef": g,
                             "config_sd": r.config_sd, "n_rows": r.n_rows, "n_zero": r.n_zero})
        return pd.DataFrame(rows)
