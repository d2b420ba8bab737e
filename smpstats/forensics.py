"""Forensic assessment of a trajectory: piecewise-linear network or smooth process plus noise?

:func:`assess` takes the output trajectory of some regressor (frames x
components) and weighs two hypotheses by their predictive distributions of
the multiscale roughness statistics of :mod:`smpstats.forensic_stats`:

* **smooth**: a smooth process plus white measurement noise;
* **network**: the output of a piecewise-linear (ReLU) network whose input
  moves smoothly, plus a smooth trend and white noise
  (:mod:`smpstats.forensic_models`).

The Bayes factor is estimated by the likelihood-ratio trick: a quadratic
logistic classifier trained on trajectories simulated from both hypotheses'
prior predictive distributions (equal numbers) estimates
``P(network | statistics)``, whose log odds are the log Bayes factor. Its
uncertainty comes from refitting on bootstrap resamples of the simulations.
The p-value is a parametric bootstrap: the null is fitted to the trajectory
(noise std, smooth std and length scale per component) and simulated; the
p-value is the share of simulated log Bayes factors (uncapped classifier log
odds) at least as large as the observed one. Everything is deterministic given ``seed``.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import logging
from dataclasses import dataclass, field

import numpy as np
import scipy.special

from ._validation import as_signal, check_int, check_real, check_step
from .errors import SignalError
from .forensic_models import prior_predictive, simulate_null
from .forensic_stats import SCALING_STEPS, STATISTIC_NAMES, difference_variance, fit_smooth_plus_noise, statistic_vector

__all__ = ["assess", "ForensicReport", "MIN_FRAMES", "LOG_BF_CAP"]

logger = logging.getLogger(__name__)

#: Fewest frames :func:`assess` accepts (the statistics use steps up to 8 frames).
MIN_FRAMES = 64
#: Simulated trajectories per hypothesis for the classifier.
_BANK_SIZE = 1500
#: Bootstrap refits of the classifier for the Bayes-factor interval.
_N_REFITS = 16
#: Largest |log Bayes factor| reported: beyond it the classifier extrapolates past its simulations.
LOG_BF_CAP = 10.0
#: Degree of the polynomial features of the classifier.
_DEGREE = 2
#: Ridge penalty of the logistic classifier (standardised quadratic features).
_RIDGE = 1e-5
#: Mahalanobis distance (in the hypothesis' own simulated spread) above which it does not predict the
#: data: sqrt of the 99.9 % quantile of chi-square with 6 degrees of freedom.
_ADEQUACY_LIMIT = 4.74


@dataclass(frozen=True)
class _Classifier:
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray          # (n_refits + 1, n_features); row 0 is the fit on the whole bank
    bank_stats: dict          # hypothesis -> (n_sims, n_stats) statistics
    bank_log_bf: dict         # hypothesis -> (n_sims,) log BF of the simulations (row-0 fit)

    def features(self, stats: np.ndarray) -> np.ndarray:
        z = (_transform(stats) - self.mean) / self.scale
        # All monomials of degree <= _DEGREE in the standardised statistics.
        terms = [np.ones(z.shape[:-1])]
        for degree in range(1, _DEGREE + 1):
            for idx in itertools.combinations_with_replacement(range(z.shape[-1]), degree):
                terms.append(np.prod([z[..., i] for i in idx], axis=0))
        return np.stack(terms, axis=-1)

    def log_bf(self, stats: np.ndarray, refits: bool = False, cap: bool = True) -> np.ndarray:
        """Log Bayes factor (network over smooth); with ``refits`` one column per bootstrap refit.

        ``cap=False`` returns the classifier's uncapped log odds: the test statistic of the p-value,
        which must not tie at the cap.
        """
        out = self.features(stats) @ (self.coef.T if refits else self.coef[0])
        return np.clip(out, -LOG_BF_CAP, LOG_BF_CAP) if cap else out


def _transform(stats: np.ndarray) -> np.ndarray:
    """Spread the correlations near +1 (smooth-dominated trajectories) with arctanh before standardising."""
    out = np.array(stats, dtype=np.float64, copy=True)
    for name in ("corr_lag1", "corr_lag2"):
        i = STATISTIC_NAMES.index(name)
        out[..., i] = np.arctanh(np.clip(out[..., i], -1 + 1e-6, 1 - 1e-6))
    return out


def _fit_logistic(x: np.ndarray, y: np.ndarray, ridge: float, start: np.ndarray | None = None) -> np.ndarray:
    """L2-penalised logistic regression by damped Newton steps (from ``start`` if given)."""
    coef = np.zeros(x.shape[1]) if start is None else start.copy()
    penalty = ridge * len(y) * np.r_[0.0, np.ones(x.shape[1] - 1)]

    def loss(c):
        eta = x @ c
        return np.sum(np.logaddexp(0.0, eta) - y * eta) + 0.5 * np.sum(penalty * c**2)

    current = loss(coef)
    for _ in range(100):
        p = scipy.special.expit(x @ coef)
        grad = x.T @ (p - y) + penalty * coef
        hess = (x * (p * (1 - p))[:, None]).T @ x + np.diag(penalty)
        step = np.linalg.solve(hess, grad)
        scale = 1.0
        while scale > 1e-4:
            trial = loss(coef - scale * step)
            if trial <= current:
                break
            scale *= 0.5
        coef -= scale * step
        improvement, current = current - trial, trial
        if improvement < 1e-7 * max(1.0, abs(current)):
            break
    return coef


@functools.lru_cache(maxsize=8)
def _classifier(n_times: int, n_components: int, bank_size: int, seed: int) -> _Classifier:
    """Simulate both hypotheses' prior predictive statistics and fit the classifier (cached)."""
    logger.info("simulating %d trajectories per hypothesis (%d frames, %d components)",
                bank_size, n_times, n_components)
    rng = np.random.default_rng([seed, n_times, n_components, 7])
    stats = {}
    for hypothesis in ("smooth", "network"):
        chunks = []
        for start in range(0, bank_size, 250):
            sims = prior_predictive(hypothesis, min(250, bank_size - start), n_times, n_components, rng)
            chunks.append(statistic_vector(sims))
        stats[hypothesis] = np.concatenate(chunks)
    x_all = np.concatenate([stats["smooth"], stats["network"]])
    y_all = np.r_[np.zeros(bank_size), np.ones(bank_size)]
    mean, scale = _transform(x_all).mean(axis=0), _transform(x_all).std(axis=0)
    clf = _Classifier(mean, scale, np.empty(0), stats, {})
    features = clf.features(x_all)
    coefs = [_fit_logistic(features, y_all, _RIDGE)]
    for _ in range(_N_REFITS):
        idx = np.r_[rng.integers(0, bank_size, bank_size), bank_size + rng.integers(0, bank_size, bank_size)]
        coefs.append(_fit_logistic(features[idx], y_all[idx], _RIDGE, start=coefs[0]))
    clf = _Classifier(mean, scale, np.stack(coefs), stats, {})
    return _Classifier(mean, scale, clf.coef, stats, {h: clf.log_bf(s) for h, s in stats.items()})


@dataclass(frozen=True, repr=False)
class ForensicReport:
    """Result of :func:`assess`: how strongly a trajectory supports "a piecewise-linear network produced it".

    Attributes
    ----------
    posterior_nonsmooth : float
        Posterior probability of the network hypothesis under ``prior_odds``.
    posterior_interval : (float, float)
        90 % interval of the posterior from the Bayes factor's interval.
    log_bayes_factor : float
        Natural log of the Bayes factor, network over smooth-plus-noise, within +-``LOG_BF_CAP``
        (10): the simulations do not resolve stronger evidence, so the cap means "at least".
    log_bayes_factor_interval : (float, float)
        90 % bootstrap interval of the log Bayes factor (simulation and classifier uncertainty).
    p_value_smooth : float
        Parametric-bootstrap p-value under the smooth-plus-noise null fitted to the data (small: the
        roughness is unlike white noise on a smooth signal).
    prior_odds : float
        Prior odds network : smooth used for the posterior.
    statistics : dict
        Observed multiscale statistics (:data:`smpstats.forensic_stats.STATISTIC_NAMES`), with
        ``statistics_null_mean`` and ``statistics_null_std`` their mean and std under the fitted null.
    noise : array of shape (n_components,)
        White-noise std per component under the null fit (y units): an upper bound on the
        measurement noise if the network hypothesis holds.
    smooth_std, smooth_length_scale : arrays of shape (n_components,)
        Fitted smooth part of the null: std (y units) and length scale (time units).
    smp, smp_interval : arrays of shape (n_components,) and (n_components, 2)
        SMP per component from the grid estimator (y units per time unit) and a 90 % interval
        from the noise; the upper end is infinite where the estimate is not resolved (dense kinks).
    smp_resolved : array of bool, shape (n_components,)
    detection_limit : array of shape (n_components,)
        Smallest single slope jump the grid estimator detects at this noise level.
    kinks : pandas.DataFrame
        Kinks resolved by the grid estimator (columns ``component``, ``time``, ``jump``, ``snr``).
    fits_smooth, fits_network : bool
        Whether each hypothesis predicts statistics like the observed ones: Mahalanobis distance to
        the 100 nearest of its prior-predictive simulations, in their spread, below 4.74 (the
        99.9 % point for 6 statistics). When both are false the conclusion is unreliable.
    null_log_bf, network_log_bf : arrays
        Predictive distributions of the log Bayes factor: under the fitted null (parametric
        bootstrap) and under the network hypothesis (prior predictive simulations).
    """

    posterior_nonsmooth: float
    posterior_interval: tuple[float, float]
    log_bayes_factor: float
    log_bayes_factor_interval: tuple[float, float]
    p_value_smooth: float
    prior_odds: float
    statistics: dict
    statistics_null_mean: dict
    statistics_null_std: dict
    noise: np.ndarray
    smooth_std: np.ndarray
    smooth_length_scale: np.ndarray
    smp: np.ndarray
    smp_interval: np.ndarray
    smp_resolved: np.ndarray
    detection_limit: np.ndarray
    kinks: object
    fits_smooth: bool
    fits_network: bool
    n_frames: int
    n_components: int
    dt: float
    seed: int
    null_log_bf: np.ndarray = field(repr=False)
    network_log_bf: np.ndarray = field(repr=False)
    trajectory: np.ndarray = field(repr=False)

    def __repr__(self) -> str:
        return (f"ForensicReport(verdict={self.verdict!r}, posterior_nonsmooth={self.posterior_nonsmooth:.4g}, "
                f"log_bayes_factor={self.log_bayes_factor:.3f}, p_value_smooth={self.p_value_smooth:.3g}, "
                f"n_frames={self.n_frames}, n_components={self.n_components})")

    @property
    def bayes_factor(self) -> float:
        """Bayes factor network : smooth-plus-noise."""
        return float(np.exp(np.clip(self.log_bayes_factor, -700, 700)))

    @property
    def bayes_factor_interval(self) -> tuple[float, float]:
        lo, hi = self.log_bayes_factor_interval
        return float(np.exp(np.clip(lo, -700, 700))), float(np.exp(np.clip(hi, -700, 700)))

    @property
    def verdict(self) -> str:
        """One of 'network', 'smooth' or 'undecided' (posterior above 0.95, below 0.05, or between)."""
        if self.posterior_nonsmooth >= 0.95:
            return "network"
        if self.posterior_nonsmooth <= 0.05:
            return "smooth"
        return "undecided"

    def to_dict(self) -> dict:
        """Plain-Python dictionary (JSON-serialisable) of every reported number."""
        def arr(x):
            return np.asarray(x, dtype=float).tolist()

        return {
            "verdict": self.verdict,
            "posterior_nonsmooth": float(self.posterior_nonsmooth),
            "posterior_interval": arr(self.posterior_interval),
            "prior_odds": float(self.prior_odds),
            "bayes_factor": self.bayes_factor,
            "log_bayes_factor": float(self.log_bayes_factor),
            "log_bayes_factor_interval": arr(self.log_bayes_factor_interval),
            "p_value_smooth": float(self.p_value_smooth),
            "statistics": {k: float(v) for k, v in self.statistics.items()},
            "statistics_null_mean": {k: float(v) for k, v in self.statistics_null_mean.items()},
            "statistics_null_std": {k: float(v) for k, v in self.statistics_null_std.items()},
            "noise": arr(self.noise),
            "smooth_std": arr(self.smooth_std),
            "smooth_length_scale": arr(self.smooth_length_scale),
            "smp": arr(self.smp),
            "smp_interval": [[float(a), float(b) if np.isfinite(b) else None] for a, b in self.smp_interval],
            "smp_resolved": [bool(v) for v in self.smp_resolved],
            "detection_limit": arr(self.detection_limit),
            "n_kinks_resolved": int(len(self.kinks)),
            "fits_smooth": bool(self.fits_smooth),
            "fits_network": bool(self.fits_network),
            "n_frames": int(self.n_frames),
            "n_components": int(self.n_components),
            "dt": float(self.dt),
            "seed": int(self.seed),
        }

    def to_frame(self):
        """The statistics as a :class:`pandas.DataFrame`: observed, null mean and std, z-score."""
        import pandas as pd

        rows = []
        for name in STATISTIC_NAMES:
            obs, mu, sd = self.statistics[name], self.statistics_null_mean[name], self.statistics_null_std[name]
            rows.append({"statistic": name, "observed": obs, "null_mean": mu, "null_std": sd,
                         "z": (obs - mu) / sd if sd > 0 else np.nan})
        return pd.DataFrame(rows)

    def summary(self) -> str:
        """Plain-words report with the assumptions and what would change the conclusion."""
        lo, hi = self.bayes_factor_interval
        plo, phi = self.posterior_interval
        strength = _strength(self.log_bayes_factor)
        lines = [
            f"Forensic assessment of {self.n_components} component(s) x {self.n_frames} frames (dt={self.dt:g})",
            f"  verdict: {self.verdict}  (posterior P(network) = {_fmt_prob(self.posterior_nonsmooth)}, "
            f"90% interval {_fmt_prob(plo)} to {_fmt_prob(phi)}, prior odds {self.prior_odds:g})",
            f"  Bayes factor network:smooth = {_fmt(self.bayes_factor)} (90% interval {_fmt(lo)} to {_fmt(hi)}): "
            f"{strength}" + (" (at the cap of the simulations: at least this strong)"
                             if abs(self.log_bayes_factor) >= LOG_BF_CAP else ""),
            f"  p-value under smooth + white noise = {self.p_value_smooth:.3g}",
            f"  noise std (if smooth + noise) = {_fmt_arr(self.noise)}; smooth length scale = "
            f"{_fmt_arr(self.smooth_length_scale)} time units",
            f"  SMP (grid) = {_fmt_arr(self.smp)} y/time units; resolved: {_fmt_arr(self.smp_resolved)}; "
            f"single-kink detection limit = {_fmt_arr(self.detection_limit)} (counts only kinks resolved one "
            "by one; kinks denser than the frames show in the statistics instead, and make the SMP a lower bound)",
            "  statistics, observed (fitted null mean +- std): "
            + ", ".join(f"{k} {self.statistics[k]:.3f} ({self.statistics_null_mean[k]:.3f} +- "
                        f"{self.statistics_null_std[k]:.3f})" for k in STATISTIC_NAMES),
            "  (white noise: log V ratios 0, corr_lag1 -0.667; dense kinks: log ratios 2.08, corr_lag1 +0.25; "
            "smooth: log ratios 2.77, corr_lag1 ~1)",
        ]
        if not (self.fits_smooth or self.fits_network):
            lines.append("  WARNING: neither hypothesis predicts statistics like these; the Bayes factor "
                         "extrapolates and should not be reported.")
        elif not self.fits_smooth and self.verdict != "network":
            lines.append("  note: the smooth-plus-noise model does not predict these statistics well either.")
        lines += [
            "Assumed: measurement noise is white (independent frame to frame) and independent of the "
            "signal; the smooth alternative is analytic at the frame scale (squared-exponential-like); "
            "the network's input moved smoothly (no resampling with linear interpolation, no dropped "
            "or repeated frames); components are treated as exchangeable.",
            "Would change the conclusion: noise that is filtered or correlated between frames (e.g. a "
            "Kalman-smoothed tracker, motion blur, video compression) produces rough slopes that look "
            "like dense kinks; a smooth network sampled too coarsely (less than ~1 frame per feature "
            "length) looks rough; a piecewise-linear network whose kinks are much finer than a frame "
            "looks like white noise and cannot be detected at this frame rate.",
            "Next: report.to_frame() for the statistics, report.to_dict() for JSON, "
            "smpstats.forensic_plots.plot_report(report) for the figure.",
        ]
        return "\n".join(lines)


def _strength(log_bf: float) -> str:
    """Kass & Raftery's scale for the Bayes factor in words."""
    a = abs(log_bf)
    side = "network" if log_bf > 0 else "smooth + noise"
    if a < 1.0:
        return "not worth more than a bare mention"
    if a < 3.0:
        return f"positive evidence for {side}"
    if a < 5.0:
        return f"strong evidence for {side}"
    return f"very strong evidence for {side}"


def _fmt_prob(p: float) -> str:
    """Probability with enough digits to tell 0.9999 from 1."""
    if 0.001 <= p <= 0.999:
        return f"{p:.3f}"
    return f"{p:.2e}" if p < 0.001 else f"1 - {1 - p:.1e}"


def _fmt(x: float) -> str:
    return f"{x:.3g}" if 1e-3 <= abs(x) < 1e4 or x == 0 else f"{x:.2e}"


def _fmt_arr(x) -> str:
    x = np.atleast_1d(np.asarray(x))
    if x.dtype == bool:
        return ", ".join(str(bool(v)) for v in x)
    return ", ".join(_fmt(float(v)) for v in x)


def _mahalanobis(stats: np.ndarray, sample: np.ndarray, n_neighbours: int | None = None) -> float:
    """Mahalanobis distance of ``stats`` to ``sample`` in its covariance.

    With ``n_neighbours``, only the nearest simulations (in the global metric) are used, for
    samples drawn over a broad prior whose conditional spread is much narrower than the whole.
    """
    if n_neighbours is not None:
        cov = np.cov(sample, rowvar=False) + 1e-12 * np.eye(sample.shape[1])
        diff = sample - stats
        d2 = np.einsum("ij,jk,ik->i", diff, np.linalg.inv(cov), diff)
        sample = sample[np.argsort(d2)[:n_neighbours]]
    cov = np.cov(sample, rowvar=False)
    cov += 1e-9 * np.trace(cov) / cov.shape[0] * np.eye(cov.shape[0]) + 1e-300 * np.eye(cov.shape[0])
    diff = stats - sample.mean(axis=0)
    return float(np.sqrt(diff @ np.linalg.solve(cov, diff)))


def assess(
    trajectory,
    dt: float = 1.0,
    *,
    prior_odds: float = 1.0,
    n_null_sims: int = 199,
    seed: int = 0,
) -> ForensicReport:
    """Weigh "a piecewise-linear network produced this trajectory" against "smooth process plus noise".

    Parameters
    ----------
    trajectory : array-like of shape (n_frames,) or (n_frames, n_components)
        One series, or one column per component (e.g. x and y of a landmark), sampled at
        ``n_frames >= 64`` uniformly spaced frames while the input moved smoothly. Finite values.
    dt : float, default=1.0
        Time between frames (time units); sets the units of SMP and length scales only.
    prior_odds : float > 0, default=1.0
        Prior odds network : smooth for the posterior probability (1 = even).
    n_null_sims : int >= 19, default=199
        Parametric-bootstrap simulations of the fitted null for the p-value (the smallest
        attainable p-value is ``1 / (n_null_sims + 1)``).
    seed : int, default=0
        Seed of every simulation; same seed, same report.

    Returns
    -------
    ForensicReport

    Notes
    -----
    The first call for a given number of frames, components and seed simulates 1,500
    trajectories per hypothesis and fits the classifier (a few seconds); later calls reuse them
    (up to 8 such settings are kept in memory).
    """
    dt = check_step(dt)
    prior_odds = check_real(prior_odds, "prior_odds", minimum=0.0, strict_minimum=True)
    n_null_sims = check_int(n_null_sims, "n_null_sims", minimum=19)
    seed = check_int(seed, "seed", minimum=0)
    y = as_signal(trajectory, axis=0, name="trajectory", min_length=MIN_FRAMES)  # (n_components?, n_frames)
    if y.ndim == 1:
        y = y[None, :]
    elif y.ndim > 2:
        raise SignalError(
            f"trajectory must have shape (n_frames,) or (n_frames, n_components); got {y.ndim} dimensions "
            f"(shape {np.moveaxis(y, -1, 0).shape}). Reshape to one column per component."
        )
    n_components, n_frames = y.shape
    v1 = difference_variance(y, 1)
    flat = np.flatnonzero(v1 <= 1e-24 * np.maximum(np.mean(y**2, axis=-1), 1e-300))
    if flat.size:
        raise SignalError(
            f"trajectory component(s) {flat.tolist()} are constant or exactly linear (zero second differences); "
            "there is no roughness to assess. Drop these columns."
        )
    logger.info("assess: %d frames x %d components, prior odds %g, %d null simulations, seed %d",
                n_frames, n_components, prior_odds, n_null_sims, seed)
    clf = _classifier(n_frames, n_components, _BANK_SIZE, seed)
    stats = statistic_vector(y)
    log_bf_all = clf.log_bf(stats, refits=True)
    log_bf = float(log_bf_all[0])
    log_bf_interval = (float(np.quantile(log_bf_all, 0.05)), float(np.quantile(log_bf_all, 0.95)))

    # The bootstrap stream depends on the seed and on the trajectory's (scale- and trend-free)
    # statistics: different trajectories get independent bootstrap draws, the same one the same.
    fingerprint = int.from_bytes(hashlib.sha256(np.round(stats, 6).tobytes()).digest()[:8], "little")
    rng = np.random.default_rng([seed, n_frames, n_components, 11, fingerprint])
    sigma, s, length = fit_smooth_plus_noise(y)
    # Condition the bootstrap on the fitted power of the smooth part at the largest step used by
    # the statistics, where the smooth part is best measured.
    null_sims = simulate_null(sigma, s, length, n_frames, n_null_sims, rng, reference_step=max(SCALING_STEPS))
    null_stats = statistic_vector(null_sims)
    null_log_bf = clf.log_bf(null_stats)
    null_statistic = clf.log_bf(null_stats, cap=False)
    p_value = float((1 + np.sum(null_statistic >= clf.log_bf(stats, cap=False))) / (n_null_sims + 1))

    def posterior(lbf):
        return float(1.0 / (1.0 + np.exp(-np.clip(lbf + np.log(prior_odds), -700, 700))))

    fits_smooth = _mahalanobis(stats, clf.bank_stats["smooth"], n_neighbours=100) < _ADEQUACY_LIMIT
    fits_network = _mahalanobis(stats, clf.bank_stats["network"], n_neighbours=100) < _ADEQUACY_LIMIT

    smp_value, smp_interval, resolved, limit, kinks = _grid_smp(y, dt, sigma)
    names = list(STATISTIC_NAMES)
    return ForensicReport(
        posterior_nonsmooth=posterior(log_bf),
        posterior_interval=(posterior(log_bf_interval[0]), posterior(log_bf_interval[1])),
        log_bayes_factor=log_bf,
        log_bayes_factor_interval=log_bf_interval,
        p_value_smooth=p_value,
        prior_odds=prior_odds,
        statistics=dict(zip(names, stats.tolist())),
        statistics_null_mean=dict(zip(names, null_stats.mean(axis=0).tolist())),
        statistics_null_std=dict(zip(names, null_stats.std(axis=0, ddof=1).tolist())),
        noise=sigma,
        smooth_std=s,
        smooth_length_scale=length * dt,
        smp=smp_value,
        smp_interval=smp_interval,
        smp_resolved=resolved,
        detection_limit=limit,
        kinks=kinks,
        fits_smooth=bool(fits_smooth),
        fits_network=bool(fits_network),
        n_frames=n_frames,
        n_components=n_components,
        dt=dt,
        seed=seed,
        null_log_bf=null_log_bf,
        network_log_bf=clf.bank_log_bf["network"],
        trajectory=y.T.copy(),
    )


def _grid_smp(y: np.ndarray, dt: float, noise: np.ndarray):
    """Grid SMP per component with a 90 % noise interval (infinite upper end when unresolved)."""
    import pandas as pd

    from .grid import smp

    noise = np.maximum(noise, 1e-300)
    result = smp(y, dt=dt, noise=noise)
    value = np.atleast_1d(np.asarray(result.value, dtype=float))
    n_peaks = np.atleast_1d(np.asarray(result.n_peaks))
    resolved = np.atleast_1d(np.asarray(result.resolved, dtype=bool))
    # Each resolved jump is estimated from about two second differences: std 2 * noise / dt.
    half = 1.645 * np.sqrt(np.maximum(n_peaks, 1)) * 2.0 * noise / dt
    interval = np.stack([np.maximum(value - half, 0.0), np.where(resolved, value + half, np.inf)], axis=1)
    peaks = result.peaks_frame()
    if "index_0" in peaks:
        peaks = peaks.rename(columns={"index_0": "component"})
    else:
        peaks.insert(0, "component", 0)
    return value, interval, resolved, np.atleast_1d(np.asarray(result.detection_limit, dtype=float)), \
        pd.DataFrame(peaks)
