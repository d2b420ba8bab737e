"""Forensic assessment: statistics with known answers, calibration under the null, power, invariances, errors."""

import json

import numpy as np
import pytest
from scipy import stats

from smpstats.errors import InputError, SignalError
from smpstats.forensic_models import network_ripple, prior_predictive, simulate_null
from smpstats.forensic_stats import (
    STATISTIC_NAMES,
    difference_variance,
    fit_smooth_plus_noise,
    se_fourth_difference_variance,
    se_second_difference_variance,
    statistic_vector,
    white_noise_std,
)
from smpstats.forensics import LOG_BF_CAP, assess
from smpstats.processes import sample_random_kinks, sample_se_gp

N = 256  # frames of the trajectories assessed in these tests (one simulation bank per component count)


def _stat(vec, name):
    return vec[..., STATISTIC_NAMES.index(name)]


# --- statistics with known answers -------------------------------------------------------------


def test_statistics_of_white_noise_match_theory():
    y = np.random.default_rng(0).standard_normal((4, 50_000))
    s = statistic_vector(y)
    assert abs(_stat(s, "log_v2_over_v1")) < 0.01 and abs(_stat(s, "log_v4_over_v2")) < 0.01
    assert _stat(s, "corr_lag1") == pytest.approx(-2 / 3, abs=0.005)
    assert _stat(s, "corr_lag2") == pytest.approx(1 / 6, abs=0.005)
    assert _stat(s, "log_kurtosis") == pytest.approx(np.log(3.0), abs=0.02)


def test_statistics_of_dense_kinks_match_integrated_brownian_motion():
    # 40 kinks per frame with Gaussian slope jumps: the slope is a random walk, V(h) ~ h^3, corr +1/4.
    kinks = sample_random_kinks(20_000, 1.0, rate=40.0, jump_scale=1.0, size=4, rng=np.random.default_rng(1))
    s = statistic_vector(kinks.values)
    assert _stat(s, "log_v2_over_v1") == pytest.approx(3 * np.log(2), abs=0.03)
    assert _stat(s, "log_v4_over_v2") == pytest.approx(3 * np.log(2), abs=0.05)
    assert _stat(s, "corr_lag1") == pytest.approx(0.25, abs=0.02)


def test_statistics_of_a_smooth_signal_scale_as_h4():
    y = sample_se_gp(4000, 1.0, 60.0, size=3, rng=np.random.default_rng(2))
    s = statistic_vector(y)
    assert _stat(s, "log_v2_over_v1") == pytest.approx(4 * np.log(2), abs=0.01)
    assert _stat(s, "corr_lag1") > 0.99


def test_se_second_difference_variance_matches_simulation_and_small_step_limit():
    length = 5.0
    y = sample_se_gp(200_000, 1.0, length, rng=np.random.default_rng(3))
    for h in (1, 3, 8):
        assert difference_variance(y, h) == pytest.approx(se_second_difference_variance(h, length), rel=0.05)
    assert se_second_difference_variance(0.01, 7.0) == pytest.approx(3 * 0.01**4 / 7.0**4, rel=1e-4)


def test_fit_smooth_plus_noise_recovers_the_noise_level():
    rng = np.random.default_rng(4)
    y = sample_se_gp(2000, 1.0, 40.0, size=3, rng=rng) + np.array([[1e-3], [1e-2], [3e-2]]) * rng.standard_normal((3, 2000))
    sigma, s, length = fit_smooth_plus_noise(y)
    np.testing.assert_allclose(sigma, [1e-3, 1e-2, 3e-2], rtol=0.1)
    # Only s / l^2 is identified at these steps: it must match the truth (1 / 40^2).
    np.testing.assert_allclose(s / length**2, 1 / 40.0**2, rtol=0.3)
    np.testing.assert_allclose(white_noise_std(y)[1:], [1e-2, 3e-2], rtol=0.1)


def test_simulations_are_scaled_and_shaped_as_documented():
    rng = np.random.default_rng(5)
    for hypothesis in ("smooth", "network"):
        sims = prior_predictive(hypothesis, 6, 128, 3, rng)
        assert sims.shape == (6, 3, 128) and np.isfinite(sims).all()
    ripple = network_ripple(sample_se_gp(300, 1.0, 4.0, size=4, rng=rng), 2, 64, rng)
    assert ripple.shape == (2, 300)
    # A ReLU network of a smooth path has slope jumps: the roughness exponent sits between noise and smooth.
    s = statistic_vector(ripple[None])[0]
    assert 0.5 < _stat(s, "log_v2_over_v1") < 2.7
    null = simulate_null(np.array([0.1, 0.0]), np.array([1.0, 2.0]), np.array([30.0, 30.0]), 500, 4, rng)
    assert null.shape == (4, 2, 500)
    assert np.sqrt(difference_variance(null[:, 0], 1) / 6).mean() == pytest.approx(0.1, rel=0.05)


# --- calibration and power ---------------------------------------------------------------------


def _null_track(rng, n=N, components=1):
    length = np.exp(rng.uniform(np.log(10.0), np.log(150.0)))
    sigma = np.exp(rng.uniform(np.log(1e-4), np.log(1e-1)))
    return sample_se_gp(n, 1.0, length, size=components, rng=rng).T + sigma * rng.standard_normal((n, components))


def _network_track(rng, n=N, components=1):
    """A random ReLU network along a smooth path (dense kinks) on a smooth trend, with a little noise."""
    x = sample_se_gp(n, 1.0, np.exp(rng.uniform(np.log(2.0), np.log(8.0))), size=4, rng=rng)
    ripple = network_ripple(x, components, 256, rng).T
    trend = sample_se_gp(n, 1.0, 80.0, size=components, rng=rng).T
    return trend + 0.05 * ripple / ripple.std() + 1e-4 * rng.standard_normal((n, components))


def test_p_values_are_uniform_under_the_null():
    rng = np.random.default_rng(10)
    p = np.array([assess(_null_track(rng), n_null_sims=99).p_value_smooth for _ in range(80)])
    assert stats.kstest(p, "uniform").pvalue > 0.05
    assert 0.3 < p.mean() < 0.7


def test_dense_kinks_are_told_from_noise_matched_to_their_roughness():
    rng = np.random.default_rng(11)
    pos, neg = [], []
    for _ in range(15):
        y = _network_track(rng)
        pos.append(assess(y, n_null_sims=49).log_bayes_factor)
        # Smooth trend plus white noise with the same mean square of second differences.
        trend = sample_se_gp(N, 1.0, 80.0, size=1, rng=rng).T
        sigma = np.sqrt(difference_variance(y.T, 1) / 6.0)
        neg.append(assess(trend + sigma * rng.standard_normal(y.shape), n_null_sims=49).log_bayes_factor)
    pos, neg = np.array(pos), np.array(neg)
    auc = np.mean(pos[:, None] > neg[None, :])
    assert auc >= 0.95
    assert np.mean(pos > 0) >= 0.9 and np.mean(neg < 0) >= 0.9


def test_kinks_from_an_independent_generator_are_detected():
    # Poisson kinks (not the network model the classifier was trained on), 5 per frame, on a smooth trend.
    rng = np.random.default_rng(12)
    for _ in range(3):
        kinks = sample_random_kinks(N, 1.0, rate=5.0, jump_scale=1e-3, rng=rng).values
        y = sample_se_gp(N, 1.0, 60.0, rng=rng) + kinks + 1e-6 * rng.standard_normal(N)
        report = assess(y, n_null_sims=49)
        assert report.p_value_smooth <= 0.05 and report.posterior_nonsmooth > 0.9


def test_smooth_networks_are_not_called_piecewise_linear():
    # GELU and tanh networks of a smooth path are smooth: the smooth hypothesis must win.
    from scipy.special import erf

    rng = np.random.default_rng(13)
    for act in (lambda z: 0.5 * z * (1 + erf(z / np.sqrt(2))), np.tanh):
        x = sample_se_gp(N, 1.0, 25.0, size=4, rng=rng)
        w, b, a = rng.standard_normal((64, 4)) / 2, rng.standard_normal((64, 1)), rng.standard_normal(64) / 8
        y = a @ act(w @ x + b) + 1e-9 * rng.standard_normal(N)
        report = assess(y, n_null_sims=49)
        assert report.verdict != "network" and report.posterior_nonsmooth < 0.5


def test_posterior_follows_bayes_rule_with_prior_odds():
    y = _network_track(np.random.default_rng(14))
    even, skeptic = assess(y), assess(y, prior_odds=0.01)
    assert even.log_bayes_factor == skeptic.log_bayes_factor
    expected = 1 / (1 + np.exp(-(even.log_bayes_factor + np.log(0.01))))
    assert skeptic.posterior_nonsmooth == pytest.approx(expected, rel=1e-12)
    lo, hi = even.log_bayes_factor_interval
    assert lo <= even.log_bayes_factor <= hi and -LOG_BF_CAP <= lo and hi <= LOG_BF_CAP


# --- invariances, determinism, report ----------------------------------------------------------


def test_invariant_to_scale_offset_and_linear_trend():
    rng = np.random.default_rng(15)
    y = _network_track(rng, components=2)
    t = np.arange(N)[:, None]
    a = assess(y, seed=3)
    b = assess(-250.0 * y + 7.0 + 0.3 * t, seed=3)
    assert b.log_bayes_factor == pytest.approx(a.log_bayes_factor, abs=1e-9)
    assert b.p_value_smooth == a.p_value_smooth
    np.testing.assert_allclose(b.noise, 250.0 * a.noise, rtol=1e-6)
    for k in STATISTIC_NAMES:
        assert b.statistics[k] == pytest.approx(a.statistics[k], abs=1e-9)


def test_same_seed_same_report_and_dt_only_sets_units():
    y = _null_track(np.random.default_rng(16))
    a, b = assess(y, seed=1), assess(y, seed=1)
    assert a.to_dict() == b.to_dict()
    c = assess(y, dt=0.04, seed=1)
    assert c.log_bayes_factor == a.log_bayes_factor and c.p_value_smooth == a.p_value_smooth
    np.testing.assert_allclose(c.smooth_length_scale, 0.04 * a.smooth_length_scale)


def test_report_dict_is_json_and_summary_states_assumptions():
    report = assess(_network_track(np.random.default_rng(17), components=2))
    d = json.loads(json.dumps(report.to_dict()))
    for key in ("posterior_nonsmooth", "bayes_factor", "log_bayes_factor_interval", "p_value_smooth", "noise",
                "detection_limit", "smp", "smp_interval", "statistics", "verdict", "prior_odds"):
        assert key in d
    assert len(d["noise"]) == 2 and len(d["smp_interval"]) == 2
    assert 0 <= d["posterior_nonsmooth"] <= 1 and d["bayes_factor"] > 0
    text = report.summary()
    assert "Assumed: measurement noise is white" in text and "Would change the conclusion" in text
    assert report.to_frame().shape == (len(STATISTIC_NAMES), 5)


# --- bad input ---------------------------------------------------------------------------------


def test_bad_input_gets_clear_errors():
    y = _null_track(np.random.default_rng(18))
    bad = y.copy()
    bad[5, 0] = np.nan
    with pytest.raises(SignalError, match=r"trajectory contains NaN or infinite values \(first at index \(5, 0\)\)"):
        assess(bad)
    with pytest.raises(SignalError, match="trajectory needs at least 64 samples along axis 0; got 20"):
        assess(y[:20])
    with pytest.raises(SignalError, match=r"trajectory must have shape \(n_frames,\) or \(n_frames, n_components\)"):
        assess(np.zeros((N, 2, 2)))
    with pytest.raises(SignalError, match=r"component\(s\) \[1\] are constant or exactly linear"):
        assess(np.c_[y[:, 0], np.arange(N) * 2.0])
    with pytest.raises(InputError, match="prior_odds must be a finite real number > 0"):
        assess(y, prior_odds=0)
    with pytest.raises(InputError, match="n_null_sims must be an int >= 19"):
        assess(y, n_null_sims=5)


@pytest.mark.slow
def test_calibration_over_many_tracks():
    """Null tracks: uniform p-values on one smooth family, a valid test over a broad one; fresh draws
    of both hypotheses: posterior calibrated."""
    rng = np.random.default_rng(20)
    # 210 tracks of one smooth process (length scale 60 frames) at three noise levels: uniform p-values.
    p = [assess(3.0 * sample_se_gp(400, 1.0, 60.0, size=2, rng=rng).T
                + sigma * rng.standard_normal((400, 2))).p_value_smooth
         for sigma in (3e-4, 1e-3, 3e-3) for _ in range(70)]
    assert stats.kstest(p, "uniform").pvalue > 0.05
    # A broad family (length scales 10-150 frames, noise over three decades): p-values are somewhat
    # conservative there, but the test keeps its level.
    p = np.array([assess(_null_track(rng, n=400, components=2)).p_value_smooth for _ in range(200)])
    assert np.mean(p <= 0.05) <= 0.08 and np.mean(p <= 0.2) <= 0.25
    prob, label = [], []
    for hypothesis, truth in (("smooth", 0), ("network", 1)):
        for y in prior_predictive(hypothesis, 200, 400, 2, rng):
            prob.append(assess(y.T, n_null_sims=19).posterior_nonsmooth)
            label.append(truth)
    prob, label = np.array(prob), np.array(label)
    which = np.clip((prob * 10).astype(int), 0, 9)
    ece = sum(abs(prob[which == b].mean() - label[which == b].mean()) * (which == b).mean()
              for b in range(10) if (which == b).any())
    assert ece <= 0.05


@pytest.mark.slow
def test_demo_forensic_section_separates_the_network_from_its_smooth_twin(tmp_path):
    from smpstats.demo import _DEMO_INPUT_SHAPE, _forensic_section
    from smpstats.paths import GaussianProcessPath

    table = _forensic_section(GaussianProcessPath(_DEMO_INPUT_SHAPE, length_scale=0.25, seed=0), 0, tmp_path)
    verdicts = dict(zip(table["trajectory"], table["verdict"]))
    assert verdicts["ReLU network"] == "network" and verdicts["GELU twin"] == "smooth"
    assert verdicts["GELU twin + matched noise"] != "network"
    assert (tmp_path / "forensic.png").read_bytes()[:4] == b"\x89PNG"


def test_fourth_difference_variance_of_the_se_process():
    length = 3.0
    y = sample_se_gp(200_000, 1.0, length, rng=np.random.default_rng(30))
    for h in (1, 2):
        d = y[4 * h:] - 4 * y[3 * h:-h] + 6 * y[2 * h:-2 * h] - 4 * y[h:-3 * h] + y[:-4 * h]
        assert np.mean(d**2) == pytest.approx(se_fourth_difference_variance(h, length), rel=0.05)
    # Small steps: 105 (h / l)^8 without cancellation; large steps: 70 (white-noise limit).
    assert se_fourth_difference_variance(1.0, 100.0) == pytest.approx(105e-16, rel=1e-3)
    assert se_fourth_difference_variance(50.0, 1.0) == pytest.approx(70.0)


def test_noise_is_recovered_under_a_dominant_smooth_part():
    # The smooth part carries ~3000 times the noise power in the frame-step second differences.
    rng = np.random.default_rng(31)
    y = 3.0 * sample_se_gp(400, 1.0, 60.0, size=(20, 2), rng=rng) + 1e-5 * rng.standard_normal((20, 2, 400))
    sigma, _, _ = fit_smooth_plus_noise(y)
    assert np.median(sigma) == pytest.approx(1e-5, rel=0.1)
