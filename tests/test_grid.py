"""Tests of the grid SMP estimator (smpstats.grid.smp) against known truths.

Every expected value comes from the signal's construction, never from the
estimator's own output: piecewise-linear signals with known kinks (exact SMP
= sum of |slope jumps|), the same with smooth components and noise of known
std, ReLU of Gaussian-process paths whose zero crossings are found on a much
finer grid, invariances (scaling, offsets and trends, time reversal,
additivity, refinement, the time unit), and the exact error messages.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smpstats.errors import InputError, SignalError, SMPStatsError, TimeGridError
from smpstats.grid import SMPResult, smp
from smpstats.processes import sample_random_kinks, sample_se_gp, se_fourier_modes

EPS = np.finfo(np.float64).eps
#: Round-off allowance per kink, in units of eps * (largest term of y) / dt.
ROUNDOFF_PER_KINK = 256.0
#: Default detection threshold of smp (noise std of d) and the std of d for unit white noise.
Z_DEFAULT = 5.0
SQRT6 = np.sqrt(6.0)

HYPOTHESIS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --------------------------------------------------------------------------
# Known-truth signals
# --------------------------------------------------------------------------


def pl_values(t, times, jumps, offset=0.0, slope=0.0):
    """Exact y(t) = offset + slope t + sum_k jumps[k] (t - times[k])_+ (broadcast over leading axes).

    ``times`` and ``jumps`` have shape (..., k); ``t`` shape (n,). Returns (..., n).
    """
    t = np.asarray(t, dtype=np.float64)
    times = np.asarray(times, dtype=np.float64)
    jumps = np.asarray(jumps, dtype=np.float64)
    ramps = np.maximum(t - times[..., :, None], 0.0)
    offset = np.asarray(offset, dtype=np.float64)[..., None]
    slope = np.asarray(slope, dtype=np.float64)[..., None]
    return offset + slope * t + np.sum(jumps[..., :, None] * ramps, axis=-2)


def term_scale(t, times, jumps, offset=0.0, slope=0.0):
    """Largest magnitude of the terms summed by pl_values: the scale of y's own round-off."""
    t = np.asarray(t, dtype=np.float64)
    ramps = np.maximum(t - np.asarray(times, dtype=np.float64)[..., :, None], 0.0)
    terms = np.abs(offset) + np.abs(slope) * np.abs(t) + np.sum(np.abs(jumps)[..., :, None] * ramps, axis=-2)
    return float(np.max(terms))


def separated_positions(rng, n, k, gap=3.0, lo=1.0, hi=None):
    """k sorted kink positions in sample units, in [lo, hi] (default [1, n - 2]), at least ``gap`` apart.

    Kinks in the first or last sampling step are only partly visible in second
    differences, hence the default range.
    """
    hi = n - 2.0 if hi is None else hi
    room = (hi - lo) - gap * (k - 1)
    if room < 0:
        raise ValueError("too many kinks for the range")
    u = np.sort(rng.uniform(0.0, room, size=k))
    return lo + u + gap * np.arange(k)


def random_pl_case(rng, n, k, *, gap=3.0):
    """Random piecewise-linear case: any step, scale, offset and slope, jumps within 1.5 decades."""
    dt = float(10.0 ** rng.uniform(-3, 2))
    scale = float(10.0 ** rng.uniform(-3, 3))
    pos = separated_positions(rng, n, k, gap=gap)
    jumps = rng.choice([-1.0, 1.0], size=k) * scale * 10.0 ** rng.uniform(0.0, 1.5, size=k)
    span = (n - 1) * dt
    offset = rng.normal() * scale * span * 10.0 ** rng.uniform(-2, 2)
    slope = rng.normal() * scale * 10.0 ** rng.uniform(-2, 2)
    return dt, pos * dt, jumps, offset, slope


def assert_exact(result, t, times, jumps, offset=0.0, slope=0.0):
    """Value, count, signed jumps and positions of the kinks equal the construction (to round-off)."""
    dt = t[1] - t[0]
    k = len(jumps)
    scale = term_scale(t, times, jumps, offset, slope)
    tol = ROUNDOFF_PER_KINK * EPS * scale / dt
    assert result.n_peaks == k
    assert abs(result.value - np.abs(jumps).sum()) <= tol * (k + 1)
    peaks = result.peaks_frame()
    assert len(peaks) == k
    np.testing.assert_allclose(peaks["jump"].to_numpy(), jumps, rtol=0, atol=tol)
    # centroid of the split mass is exact for a single kink
    np.testing.assert_allclose(peaks["time"].to_numpy(), times, rtol=0, atol=1e-9 * len(t) * dt)


# --------------------------------------------------------------------------
# 1. Exactness on piecewise-linear signals
# --------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_piecewise_linear_exact_random_offgrid_kinks(seed):
    rng = np.random.default_rng(seed)
    for _ in range(40):
        n = int(rng.integers(8, 400))
        k = int(rng.integers(1, (n - 3) // 3 + 1))  # up to the densest packing 3 samples apart
        dt, times, jumps, offset, slope = random_pl_case(rng, n, k)
        t = np.arange(n) * dt
        y = pl_values(t, times, jumps, offset, slope)
        assert_exact(smp(y, dt), t, times, jumps, offset, slope)


def test_piecewise_linear_exact_sparse_kinks_long_signal():
    rng = np.random.default_rng(100)
    n, k = 5000, 60
    dt, times, jumps, offset, slope = random_pl_case(rng, n, k, gap=20.0)
    t = np.arange(n) * dt
    y = pl_values(t, times, jumps, offset, slope)
    result = smp(y, dt)
    assert_exact(result, t, times, jumps, offset, slope)
    assert result.resolved is True and result.reason == ""


@pytest.mark.parametrize("frac", [0.0, 0.4])
def test_kinks_exactly_three_samples_apart_alternating_signs(frac):
    n, dt = 200, 0.25
    t = np.arange(n) * dt
    times = (np.array([50.0, 53.0, 56.0, 59.0, 62.0]) + frac) * dt
    jumps = np.array([1.0, -2.0, 2.0, -1.5, 0.75])
    y = pl_values(t, times, jumps, 0.3, -0.2)
    assert_exact(smp(y, dt), t, times, jumps, 0.3, -0.2)


@pytest.mark.parametrize("frac", [0.0, 0.4])
def test_zigzag_with_a_kink_every_three_samples(frac):
    # |slope| = 1, a kink every 3 samples all along the signal: the densest separation allowed
    n, dt = 301, 1.0
    t = np.arange(n) * dt
    times = np.arange(3.0 + frac, n - 2, 3.0)
    jumps = 2.0 * (-1.0) ** np.arange(times.size)
    y = pl_values(t, times, jumps, 0.0, -1.0)
    assert_exact(smp(y, dt), t, times, jumps, 0.0, -1.0)


def test_kinks_exactly_on_samples():
    rng = np.random.default_rng(7)
    n, dt = 300, 0.1
    t = np.arange(n) * dt
    pos = 1.0 + 3.0 * np.arange(40) + np.cumsum(rng.integers(0, 4, size=40))  # integers, >= 3 apart
    pos = pos[pos <= n - 2]
    times = pos * dt
    jumps = rng.choice([-1.0, 1.0], size=pos.size) * (0.5 + np.abs(rng.normal(size=pos.size)))
    y = pl_values(t, times, jumps, 2.0, 0.5)
    result = smp(y, dt)
    assert_exact(result, t, times, jumps, 2.0, 0.5)
    # a kink on a sample puts all of its mass there: its position is that sample
    np.testing.assert_allclose(result.peaks_frame()["time"].to_numpy() / dt, pos, rtol=0, atol=1e-9)


def test_single_kink_at_every_position_within_a_step():
    n, dt = 50, 0.5
    t = np.arange(n) * dt
    for frac in np.linspace(0.0, 1.0, 21):
        times = np.array([20.0 + frac]) * dt
        jumps = np.array([-3.0])
        y = pl_values(t, times, jumps, 1.0, 2.0)
        assert_exact(smp(y, dt), t, times, jumps, 1.0, 2.0)


def test_straight_line_has_zero_smp():
    t = np.arange(100) * 0.1
    result = smp(3.0 - 7.0 * t, 0.1)
    assert result.value == 0.0 and result.n_peaks == 0
    assert result.peaks_frame().empty


# --------------------------------------------------------------------------
# 2. Kinks on a smooth background; purely smooth signals
# --------------------------------------------------------------------------


def well_separated_kinks(rng, n, k, dt, gap=20.0, margin=10.0, size=()):
    out_t, out_j = [], []
    for _ in range(int(np.prod(size, dtype=int))):
        out_t.append(separated_positions(rng, n, k, gap=gap, lo=margin, hi=n - 1 - margin) * dt)
        out_j.append(rng.choice([-1.0, 1.0], size=k) * rng.uniform(0.5, 2.0, size=k))
    return np.reshape(out_t, (*size, k)), np.reshape(out_j, (*size, k))


def test_kinks_plus_sinusoids_within_one_percent():
    # curvature small against kinks: max|y_smooth''| dt <= 0.1 min|jump|
    rng = np.random.default_rng(20)
    n, dt, k, batch = 2000, 0.01, 12, 40
    t = np.arange(n) * dt
    times, jumps = well_separated_kinks(rng, n, k, dt, size=(batch,))
    amp = rng.uniform(0.3, 1.0, size=(batch, 3, 1))
    omega = rng.uniform(0.3, 1.2, size=(batch, 3, 1))
    phase = rng.uniform(0, 2 * np.pi, size=(batch, 3, 1))
    smooth = np.sum(amp * np.sin(omega * t + phase), axis=1)
    assert np.max(np.sum(amp * omega**2, axis=1)) * dt <= 0.1 * 0.5
    result = smp(pl_values(t, times, jumps) + smooth, dt)
    true = np.abs(jumps).sum(axis=-1)
    np.testing.assert_allclose(result.value, true, rtol=0.01)
    np.testing.assert_array_equal(result.n_peaks, k)


def test_kinks_plus_gaussian_process_within_one_percent():
    rng = np.random.default_rng(21)
    n, dt, k, batch = 2000, 0.01, 12, 40
    t = np.arange(n) * dt
    times, jumps = well_separated_kinks(rng, n, k, dt, size=(batch,))
    gp = sample_se_gp(n, dt, 1.0, sigma=2.0, mu=1.0, size=batch, rng=rng)  # curvature ~ sigma / l**2 = 2
    result = smp(pl_values(t, times, jumps) + gp, dt)
    true = np.abs(jumps).sum(axis=-1)
    np.testing.assert_allclose(result.value, true, rtol=0.01)
    np.testing.assert_array_equal(result.n_peaks, k)
    peaks = result.peaks_frame()
    for i in range(batch):
        np.testing.assert_allclose(peaks.loc[peaks.index_0 == i, "time"].to_numpy(), times[i], atol=0.5 * dt)


@pytest.mark.parametrize("h_over_l", [0.005, 0.01, 0.02, 0.05, 0.1])
def test_smooth_gaussian_process_has_no_kinks(h_over_l):
    rng = np.random.default_rng(int(h_over_l * 1000))
    length_scale, sigma = 1.0, 1.5
    y = sample_se_gp(1000, h_over_l * length_scale, length_scale, sigma=sigma, mu=3.0, size=300, rng=rng)
    result = smp(y, h_over_l * length_scale)
    slope_scale = sigma / length_scale
    assert np.max(result.value) < 1e-6 * slope_scale
    np.testing.assert_array_equal(result.n_peaks, 0)


def test_undersampled_smooth_process_is_never_called_resolved_with_kinks():
    # 5 samples per length scale: curvature and kinks cannot be told apart; any
    # kink reported must come with resolved=False and a reason.
    rng = np.random.default_rng(200)
    y = sample_se_gp(1000, 0.2, 1.0, sigma=1.5, mu=3.0, size=300, rng=rng)
    result = smp(y, 0.2)
    with_peaks = result.n_peaks > 0
    assert not result.resolved[with_peaks].any()
    assert all(result.reason[i] for i in np.flatnonzero(with_peaks))


@pytest.mark.parametrize("omega", [0.01, 0.1, 0.5, 1.0])
def test_smooth_sinusoids_have_no_kinks(omega):
    rng = np.random.default_rng(3)
    t = np.arange(1000.0)
    phase = rng.uniform(0, 2 * np.pi, size=(100, 1))
    y = 2.0 * np.sin(omega * t + phase) + 0.5 * np.cos(0.37 * omega * t + 2 * phase) + 10.0
    result = smp(y)
    assert np.max(result.value) < 1e-6 * 2.0 * omega
    np.testing.assert_array_equal(result.n_peaks, 0)


# --------------------------------------------------------------------------
# 3. ReLU of Gaussian-process paths
# --------------------------------------------------------------------------


class FourierGP:
    """A batch of SE-GP paths evaluable (with their derivative) at any time."""

    def __init__(self, span, length_scale, batch, rng, mu=0.0):
        self.modes = se_fourier_modes(span, length_scale)
        self.z = rng.standard_normal((2 * self.modes.omega.size, batch))
        self.mu = mu

    def __call__(self, t):
        return self.mu + self.modes.basis(t) @ self.z  # (n_t, batch)

    def derivative(self, t):
        phase = np.multiply.outer(np.asarray(t, dtype=np.float64), self.modes.omega)
        w = self.modes.amplitude * self.modes.omega
        return np.concatenate([-np.sin(phase) * w, np.cos(phase) * w], axis=-1) @ self.z

    def exact_relu_smp(self, span, n_fine, edge=0.0):
        """Sum over zero crossings of |x'|: crossings bracketed on a fine grid, refined by Newton.

        Also returns, per path, whether a crossing falls within ``edge`` of either end (a kink
        in the first or last sampling step is only partly visible on the grid).
        """
        tf = np.linspace(0.0, span, n_fine)
        xf = self(tf)
        out = np.zeros(self.z.shape[1])
        near_edge = np.zeros(self.z.shape[1], dtype=bool)
        for b in range(self.z.shape[1]):
            i = np.flatnonzero(np.sign(xf[:-1, b]) != np.sign(xf[1:, b]))
            lo, hi = tf[i], tf[i + 1]
            tc = lo - xf[i, b] * (hi - lo) / (xf[i + 1, b] - xf[i, b])
            for _ in range(4):
                basis = self.modes.basis(tc)
                tc = np.clip(tc - (self.mu + basis @ self.z[:, b]) / self.derivative(tc)[:, b], lo, hi)
            out[b] = np.abs(self.derivative(tc)[:, b]).sum()
            near_edge[b] = np.any((tc <= edge) | (tc >= span - edge))
        return out, near_edge


@pytest.fixture(scope="module")
def relu_gp():
    rng = np.random.default_rng(30)
    span, length_scale, batch, n = 20.0, 0.5, 16, 4001  # h = l / 100
    gp = FourierGP(span, length_scale, batch, rng)
    t = np.linspace(0.0, span, n)
    y = np.maximum(gp(t), 0.0).T  # (batch, n)
    exact, near_edge = gp.exact_relu_smp(span, 10 * (n - 1) + 1, edge=t[1] - t[0])
    return y, t[1] - t[0], exact, near_edge


def test_relu_of_gp_matches_zero_crossings(relu_gp):
    y, dt, exact, near_edge = relu_gp
    assert near_edge.sum() <= 2
    result = smp(y, dt)
    np.testing.assert_allclose(result.value[~near_edge], exact[~near_edge], rtol=0.01)
    assert np.all(result.resolved)


def test_naive_second_difference_sum_overcounts_relu_of_gp(relu_gp):
    # why the estimator exists: smooth curvature does not vanish when summed (DESIGN §2)
    y, dt, exact, _ = relu_gp
    naive = np.abs(np.diff(y, 2, axis=-1)).sum(axis=-1) / dt
    ratio = naive.sum() / exact.sum()
    assert 2.0 < ratio < 3.5
    assert np.all(naive > 1.5 * exact)


def test_exact_zero_stretches_on_relu_output_are_harmless(relu_gp):
    # short flat stretches (about half the samples): the value is the zero-crossing truth (test above)
    # and does not change when moderate zero stretches are added at both ends
    y, dt, _, _ = relu_gp
    n = y.shape[-1]
    for b in range(y.shape[0]):
        flat = np.flatnonzero((y[b, :-1] == 0) & (y[b, 1:] == 0))
        core = y[b, flat[0] : flat[-1] + 2]  # starts and ends in a flat stretch: padding adds no kink
        padded = np.concatenate([np.zeros(n // 4), core, np.zeros(n // 4)])
        r_core, r_padded = smp(core, dt), smp(padded, dt)
        assert r_padded.n_peaks == r_core.n_peaks
        assert r_padded.value == pytest.approx(r_core.value, rel=1e-3)



def test_long_exact_zero_stretches_do_not_change_relu_smp():
    n, dt, length_scale = 4001, 0.005, 0.5
    changed = []
    for seed in range(3):
        rng = np.random.default_rng([70, seed])
        y = np.maximum(sample_se_gp(n, dt, length_scale, size=16, rng=rng), 0.0)
        for b in range(y.shape[0]):
            flat = np.flatnonzero((y[b, :-1] == 0) & (y[b, 1:] == 0))
            if flat.size < 2:
                continue
            core = y[b, flat[0] : flat[-1] + 2]
            padded = np.concatenate([np.zeros(3 * n), core, np.zeros(3 * n)])
            r_core, r_padded = smp(core, dt), smp(padded, dt)
            if r_padded.n_peaks != r_core.n_peaks or abs(r_padded.value / r_core.value - 1) > 1e-3:
                changed.append((seed, b, r_core.value, r_padded.value))
    assert changed == []



def test_zero_padding_of_a_relu_bump_train():
    # minimal case: ReLU(sin t - 0.2) has 6 kinks of |slope jump| sqrt(0.96) on this span
    dt = 0.01
    t = np.arange(np.pi + 0.5, 7 * np.pi + 0.5, dt)
    y = np.maximum(np.sin(t) - 0.2, 0.0)
    exact = 6 * np.sqrt(0.96)
    for pad in (0, 20_000, 50_000, 100_000):
        r = smp(np.concatenate([np.zeros(pad), y, np.zeros(pad)]), dt)
        assert r.n_peaks == 6
        assert r.value == pytest.approx(exact, rel=0.01)



def test_relu_of_gp_with_mostly_zero_output():
    # ReLU(x - 1.5 sigma): about 93 % exact zeros
    rng = np.random.default_rng(33)
    span, length_scale, batch, n = 50.0, 0.5, 24, 10001
    gp = FourierGP(span, length_scale, batch, rng, mu=-1.5)
    t = np.linspace(0.0, span, n)
    y = np.maximum(gp(t), 0.0).T
    exact, near_edge = gp.exact_relu_smp(span, 4 * (n - 1) + 1, edge=t[1] - t[0])
    assert np.mean(y == 0) > 0.9
    result = smp(y, t[1] - t[0])
    # few kinks per series (93 % zeros): the O(h / l) curvature error of single kinks does not average out
    np.testing.assert_allclose(result.value[~near_edge], exact[~near_edge], rtol=0.02, atol=1e-6 / length_scale)


# --------------------------------------------------------------------------
# 4. Noise
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def white_noise():
    rng = np.random.default_rng(40)
    sd = 0.3
    return rng.normal(5.0, sd, size=(200, 2000)), sd


def test_white_noise_gives_no_false_kinks(white_noise):
    y, sd = white_noise
    result = smp(y, 0.1)
    assert result.n_peaks.sum() <= 2


def test_white_noise_std_is_estimated(white_noise):
    y, sd = white_noise
    noise = smp(y, 0.1).noise
    assert np.median(noise) == pytest.approx(sd, rel=0.03)
    assert np.mean(noise) == pytest.approx(sd, rel=0.05)
    lo, hi = np.percentile(noise / sd, [5, 95])
    assert 0.8 < lo and hi < 1.2


def test_white_noise_std_of_each_long_series_is_precise():
    # 1024 independent third differences per series: about 3.5 % scatter per series.
    rng = np.random.default_rng(45)
    sd = 0.3
    noise = smp(rng.normal(0.0, sd, size=(50, 20_000))).noise
    np.testing.assert_allclose(noise, sd, rtol=0.12)
    assert np.std(noise / sd) < 0.05


def test_noise_std_is_estimated_under_kinks_and_curvature():
    rng = np.random.default_rng(41)
    n, dt, sd, batch = 2000, 0.01, 1e-3, 100
    t = np.arange(n) * dt
    times, jumps = well_separated_kinks(rng, n, 12, dt, size=(batch,))
    y = pl_values(t, times, jumps) + np.sin(1.3 * t) + rng.normal(0, sd, size=(batch, n))
    noise = smp(y, dt).noise
    assert np.median(noise) == pytest.approx(sd, rel=0.05)


def test_given_noise_is_used(white_noise):
    y, sd = white_noise
    r = smp(y[:3], 0.1, noise=0.25)
    np.testing.assert_array_equal(r.noise, [0.25, 0.25, 0.25])
    per_series = np.array([0.1, 0.2, 0.4])
    r = smp(y[:3], 0.1, noise=per_series)
    np.testing.assert_array_equal(r.noise, per_series)
    r1 = smp(y[0], 0.1, noise=0.125)
    assert r1.noise == 0.125 and isinstance(r1.noise, float)
    # broadcasting over a 2-D batch
    r = smp(np.stack([y[:4], y[4:8]]), 0.1, noise=np.array([[0.1], [0.2]]))
    np.testing.assert_array_equal(r.noise, np.repeat([[0.1], [0.2]], 4, axis=1))


def test_big_kinks_in_noise_are_found():
    rng = np.random.default_rng(42)
    n, dt, k, sd, batch = 1000, 0.1, 10, 1e-3, 50
    t = np.arange(n) * dt
    times = np.stack([separated_positions(rng, n, k, gap=20.0, lo=10, hi=n - 11) * dt for _ in range(batch)])
    jumps = rng.choice([-1.0, 1.0], size=(batch, k)) * rng.uniform(3.0, 6.0, size=(batch, k))  # jump*dt >= 300 sd
    y = pl_values(t, times, jumps, 1.0, 0.5) + rng.normal(0, sd, size=(batch, n))
    result = smp(y, dt)
    assert np.all(np.abs(jumps).min(axis=-1) > 4 * result.detection_limit)
    np.testing.assert_array_equal(result.n_peaks, k)
    np.testing.assert_allclose(result.value, np.abs(jumps).sum(axis=-1), rtol=0.03)
    peaks = result.peaks_frame()
    for i in range(batch):
        rows = peaks[peaks.index_0 == i]
        np.testing.assert_allclose(rows["time"].to_numpy(), times[i], atol=0.5 * dt)
        np.testing.assert_array_equal(np.sign(rows["jump"].to_numpy()), np.sign(jumps[i]))


def detection_limit_for(noise, dt, z=Z_DEFAULT):
    """Smallest kink whose mass clears z noise stds of d on both samples when split evenly."""
    return 2.0 * z * SQRT6 * noise / dt


def test_detection_limit_scales_linearly_with_noise(white_noise):
    y, sd = white_noise
    y = y[:5]
    r1, r2 = smp(y, 0.1, noise=0.01), smp(y, 0.1, noise=0.02)
    np.testing.assert_allclose(r2.detection_limit, 2 * r1.detection_limit, rtol=1e-12)
    np.testing.assert_allclose(r1.detection_limit, detection_limit_for(0.01, 0.1), rtol=1e-12)
    # with the noise estimated: scaling y by 2 doubles noise and limit
    e1, e2 = smp(y, 0.1), smp(2 * y, 0.1)
    np.testing.assert_allclose(e2.noise, 2 * e1.noise, rtol=1e-12)
    np.testing.assert_allclose(e2.detection_limit, 2 * e1.detection_limit, rtol=1e-12)
    # a threshold in noise stds: the limit scales with it too
    np.testing.assert_allclose(smp(y, 0.1, noise=0.01, threshold=10.0).detection_limit, 2 * r1.detection_limit)


def test_kinks_far_below_detection_limit_are_not_counted():
    rng = np.random.default_rng(43)
    n, dt, k, sd, batch = 1000, 0.1, 10, 0.01, 100
    t = np.arange(n) * dt
    times = np.stack([separated_positions(rng, n, k, gap=20.0, lo=10, hi=n - 11) * dt for _ in range(batch)])
    jumps = rng.choice([-1.0, 1.0], size=(batch, k)) * 0.1 * detection_limit_for(sd, dt)
    y = pl_values(t, times, jumps, 1.0, 0.5) + rng.normal(0, sd, size=(batch, n))
    assert smp(y, dt).n_peaks.sum() <= 2
    assert smp(y, dt, noise=sd).n_peaks.sum() <= 2


def test_kinks_below_half_the_limit_never_counted_noise_free():
    # noise given, signal noise-free: no sample can carry more than jump * dt < half the limit * dt
    n, dt, sd = 200, 0.5, 0.01
    t = np.arange(n) * dt
    lim = smp(t.copy(), dt, noise=sd).detection_limit
    for frac in np.linspace(0.0, 1.0, 11):
        y = pl_values(t, np.array([100.0 + frac]) * dt, np.array([0.45 * lim]), 0.2, 0.1)
        assert smp(y, dt, noise=sd).n_peaks == 0


@pytest.mark.parametrize("factor", [2.0, 5.0, 50.0])
def test_detected_kinks_keep_their_whole_mass(factor):
    # noise given, signal noise-free: the small share of a split kink (below the threshold on its own
    # sample) must still be merged into the peak
    n, dt, sd = 200, 0.5, 0.01
    t = np.arange(n) * dt
    lim = smp(t.copy(), dt, noise=sd).detection_limit
    for frac in np.linspace(0.0, 1.0, 41):
        times, jumps = np.array([100.0 + frac]) * dt, np.array([-factor * lim])
        y = pl_values(t, times, jumps, 0.2, 0.1)
        assert_exact(smp(y, dt, noise=sd), t, times, jumps, 0.2, 0.1)


def test_kinks_above_detection_limit_always_counted_noise_free():
    n, dt, sd = 200, 0.5, 0.01
    t = np.arange(n) * dt
    lim = smp(t.copy(), dt, noise=sd).detection_limit
    missed = []
    for factor in (1.05, 1.2, 1.5):
        for frac in np.linspace(0.0, 1.0, 21):
            y = pl_values(t, np.array([100.0 + frac]) * dt, np.array([factor * lim]), 0.2, 0.1)
            if smp(y, dt, noise=sd).n_peaks != 1:
                missed.append((factor, round(frac, 2)))
    assert missed == []


def test_kinks_just_below_limit_are_counted_or_flagged_noise_free():
    n, dt, sd = 200, 0.5, 0.01
    t = np.arange(n) * dt
    lim = smp(t.copy(), dt, noise=sd).detection_limit
    # each half of an evenly split kink at 0.85x the limit is > 4 sigma of d (_WEAK_SIGMA)
    unreported = []
    for factor in (0.85, 0.95):
        for frac in np.linspace(0.0, 1.0, 11):
            y = pl_values(t, np.array([100.0 + frac]) * dt, np.array([factor * lim]), 0.2, 0.1)
            r = smp(y, dt, noise=sd)
            if r.n_peaks + r.n_below_limit != 1:
                unreported.append((factor, round(frac, 2)))
    assert unreported == []


def test_kinks_just_below_limit_raise_n_below_limit():
    rng = np.random.default_rng(44)
    n, dt, k, sd, batch = 1000, 0.1, 10, 0.01, 100
    t = np.arange(n) * dt
    times = np.stack([separated_positions(rng, n, k, gap=20.0, lo=10, hi=n - 11) * dt for _ in range(batch)])
    jumps = rng.choice([-1.0, 1.0], size=(batch, k)) * 0.7 * detection_limit_for(sd, dt)
    noise = rng.normal(0, sd, size=(batch, n))
    with_kinks = smp(pl_values(t, times, jumps, 1.0, 0.5) + noise, dt)
    without = smp(pl_values(t, times, 0 * jumps, 1.0, 0.5) + noise, dt)
    assert np.mean(with_kinks.n_below_limit > 0) >= 0.9
    # beyond the rate at which noise alone makes 3-sigma candidates
    assert with_kinks.n_below_limit.mean() - without.n_below_limit.mean() >= 0.2 * k


# --------------------------------------------------------------------------
# 5. Resolution
# --------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [0.5, 1.0, 3.0, 5.0, 10.0])
def test_dense_kinks_are_not_resolved(rate):
    rng = np.random.default_rng(50)
    kinks = sample_random_kinks(1000, 1.0, rate=rate, jump_scale=1.0, size=20, rng=rng)
    result = smp(kinks.values, 1.0)
    assert not np.any(result.resolved)
    assert all("dense" in reason for reason in result.reason)
    assert np.all(result.value <= kinks.smp)  # cancellation within a step only loses mass


def test_dense_kinks_never_reported_resolved_regression():
    # one of the ~0.1 % of rows (rate 3 per step) that slip through the dense-kink check
    rng = np.random.default_rng((50, 3))
    kinks = sample_random_kinks(1000, 1.0, rate=3.0, jump_scale=1.0, size=20, rng=rng)
    result = smp(kinks.values[7], 1.0)
    assert kinks.n_kinks[7] > 2000
    assert result.resolved is False and "dense" in result.reason


def test_well_separated_kinks_on_fine_grid_are_resolved():
    rng = np.random.default_rng(51)
    n, dt, k, batch = 4000, 0.001, 15, 20
    t = np.arange(n) * dt
    times, jumps = well_separated_kinks(rng, n, k, dt, gap=40.0, size=(batch,))
    result = smp(pl_values(t, times, jumps, -1.0, 3.0), dt)
    assert np.all(result.resolved)
    assert all(reason == "" for reason in result.reason)
    np.testing.assert_allclose(result.value, np.abs(jumps).sum(axis=-1), rtol=1e-9)


def test_fewer_than_five_samples_cannot_be_resolved():
    r = smp([0.0, 1.0, 0.0, 1.0], 1.0)
    assert r.resolved is False
    assert "fewer than 5 samples" in r.reason


# --------------------------------------------------------------------------
# 6. Batching, axes, input types, result object
# --------------------------------------------------------------------------


def mixed_signals(rng, shape, n, dt):
    """Kinks + curvature + noise of varying size: every code path of the estimator."""
    t = np.arange(n) * dt
    size = int(np.prod(shape))
    times, jumps = well_separated_kinks(rng, n, 6, dt, gap=15.0, size=(size,))
    sd = 10.0 ** rng.uniform(-6, -2, size=(size, 1))
    y = pl_values(t, times, jumps) + np.sin(rng.uniform(0.1, 2, (size, 1)) * t) + rng.normal(size=(size, n)) * sd
    y[::3] = np.maximum(y[::3], 0.0)  # some ReLU-like flat stretches
    return y.reshape(*shape, n)


FIELDS = ("value", "n_peaks", "resolved", "reason", "value_coarse", "noise", "detection_limit", "n_below_limit")


def test_batch_and_axis_equal_per_series_results():
    rng = np.random.default_rng(60)
    n, dt = 300, 0.05
    series = mixed_signals(rng, (3, 4), n, dt)  # (3, 4, n)
    y = np.moveaxis(series, -1, 1)  # (3, n, 4)
    result = smp(y, dt, axis=1)
    assert result.batch_shape == (3, 4)
    peaks = result.peaks_frame()
    for i in range(3):
        for j in range(4):
            single = smp(series[i, j], dt)
            for name in FIELDS:
                got, want = getattr(result, name)[i, j], getattr(single, name)
                if name == "reason":
                    assert got == want
                else:
                    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)
            rows = peaks[(peaks.index_0 == i) & (peaks.index_1 == j)]
            single_peaks = single.peaks_frame()
            np.testing.assert_allclose(rows["time"].to_numpy(), single_peaks["time"].to_numpy(), rtol=1e-12)
            np.testing.assert_allclose(rows["jump"].to_numpy(), single_peaks["jump"].to_numpy(), rtol=1e-12)
    # negative axis counts from the end
    result_neg = smp(y, dt, axis=-2)
    np.testing.assert_array_equal(result_neg.value, result.value)


def test_large_batch_is_independent_of_row_order():
    # enough rows to be processed in several blocks internally
    rng = np.random.default_rng(61)
    n, dt = 1000, 0.01
    y = mixed_signals(rng, (700,), n, dt)
    forward, backward = smp(y, dt), smp(y[::-1], dt)
    for name in FIELDS:
        a, b = getattr(forward, name), getattr(backward, name)[::-1]
        if name == "reason":
            assert list(a) == list(b)
        else:
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=0)
    peaks = forward.peaks_frame()
    assert len(peaks) == forward.n_peaks.sum()
    for i in (0, 261, 262, 263, 524, 699):
        single = smp(y[i], dt).peaks_frame()
        rows = peaks[peaks.index_0 == i]
        np.testing.assert_allclose(rows["time"].to_numpy(), single["time"].to_numpy(), rtol=1e-12)
        np.testing.assert_allclose(rows["jump"].to_numpy(), single["jump"].to_numpy(), rtol=1e-12)


def test_torch_tensor_input_equals_numpy():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(62)
    y = mixed_signals(rng, (5,), 400, 0.1)
    r_np = smp(y, 0.1)
    r_t = smp(torch.from_numpy(y).requires_grad_(True), 0.1)
    for name in ("value", "n_peaks", "noise", "detection_limit"):
        np.testing.assert_array_equal(getattr(r_t, name), getattr(r_np, name))
    y32 = torch.from_numpy(y).float()
    np.testing.assert_array_equal(smp(y32, 0.1).value, smp(y32.numpy().astype(np.float64), 0.1).value)


def test_time_stamps_give_the_same_as_dt():
    rng = np.random.default_rng(63)
    n, dt = 400, 0.037
    y = mixed_signals(rng, (4,), n, dt)
    by_dt = smp(y, dt)
    by_t = smp(y, t=12.5 + dt * np.arange(n))
    assert by_t.dt == pytest.approx(dt, rel=1e-12)
    np.testing.assert_allclose(by_t.value, by_dt.value, rtol=1e-12)
    np.testing.assert_array_equal(by_t.n_peaks, by_dt.n_peaks)
    # dt is ignored when t is given
    np.testing.assert_allclose(smp(y, 99.0, t=dt * np.arange(n)).value, by_dt.value, rtol=1e-12)


def test_one_dimensional_input_gives_scalars():
    t = np.arange(50) * 0.2
    y = pl_values(t, np.array([3.3]), np.array([2.0]))
    r = smp(list(y), 0.2)  # plain lists work too
    assert type(r.value) is float and r.value == pytest.approx(2.0, rel=1e-12)
    assert type(r.n_peaks) is int and r.n_peaks == 1
    assert type(r.resolved) is bool
    assert type(r.reason) is str
    assert type(r.noise) is float and type(r.detection_limit) is float
    assert type(r.n_below_limit) is int
    assert r.dt == 0.2 and r.n_times == 50 and r.batch_shape == ()
    assert r.total == r.value


def test_result_reports():
    rng = np.random.default_rng(64)
    y = mixed_signals(rng, (2, 3), 300, 0.1)
    r = smp(y, 0.1)
    assert isinstance(r, SMPResult)
    frame = r.to_frame()
    assert len(frame) == 6
    assert {"index_0", "index_1", *FIELDS} <= set(frame.columns)
    np.testing.assert_array_equal(frame["value"].to_numpy(), r.value.ravel())
    np.testing.assert_array_equal(frame[["index_0", "index_1"]].to_numpy(), np.indices((2, 3)).reshape(2, -1).T)
    d = r.to_dict()
    assert d["value"] == r.value.tolist() and d["dt"] == 0.1 and d["n_times"] == 300
    assert r.total == pytest.approx(r.value.sum())
    text = r.summary()
    assert text.startswith("SMP of 6 series of 300 samples")
    assert text.splitlines()[-1].startswith("Next:")
    assert repr(r).startswith("SMPResult(batch_shape=(2, 3)")
    peaks = r.peaks_frame()
    assert list(peaks.columns) == ["index_0", "index_1", "time", "jump", "snr"]
    assert len(peaks) == r.n_peaks.sum()
    # 1-D
    r1 = smp(y[0, 0], 0.1)
    assert len(r1.to_frame()) == 1
    assert list(r1.peaks_frame().columns) == ["time", "jump", "snr"]
    assert re.match(r"SMPResult\(value=[0-9.e+-]+, n_peaks=\d+, resolved=(True|False)", repr(r1))
    assert r1.to_dict()["value"] == r1.value
    assert r1.summary().splitlines()[-1].startswith("Next:")


# --------------------------------------------------------------------------
# 7. Invariances (property tests)
# --------------------------------------------------------------------------


@st.composite
def pl_cases(draw, min_n=12, max_n=200):
    """A random piecewise-linear case with kinks >= 3 samples apart (sparse enough for the property)."""
    n = draw(st.integers(min_n, max_n))
    k = draw(st.integers(1, max(1, (n - 3) // 6)))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    dt, times, jumps, offset, slope = random_pl_case(rng, n, k)
    return n, dt, times, jumps, offset, slope


def tolerance(n, dt, times, jumps, offset, slope):
    t = np.arange(n) * dt
    return ROUNDOFF_PER_KINK * EPS * term_scale(t, times, jumps, offset, slope) / dt * (len(jumps) + 1)


@HYPOTHESIS
@given(case=pl_cases(), a=st.floats(1e-3, 1e3), negative=st.booleans())
def test_property_scaling(case, a, negative):
    n, dt, times, jumps, offset, slope = case
    a = -a if negative else a
    y = pl_values(np.arange(n) * dt, times, jumps, offset, slope)
    r, ra = smp(y, dt), smp(a * y, dt)
    tol = tolerance(n, dt, times, jumps, offset, slope)
    assert ra.n_peaks == r.n_peaks == len(jumps)
    assert abs(ra.value - abs(a) * r.value) <= 2 * abs(a) * tol


@HYPOTHESIS
@given(seed=st.integers(0, 2**32 - 1), power=st.integers(-20, 20), negative=st.booleans())
def test_property_scaling_by_power_of_two_is_exact_on_any_signal(seed, power, negative):
    rng = np.random.default_rng(seed)
    y = mixed_signals(rng, (3,), 200, 0.1)
    a = (-1.0 if negative else 1.0) * 2.0**power
    r, ra = smp(y, 0.1), smp(a * y, 0.1)
    np.testing.assert_array_equal(ra.value, 2.0**power * r.value)
    np.testing.assert_array_equal(ra.n_peaks, r.n_peaks)
    np.testing.assert_array_equal(ra.noise, 2.0**power * r.noise)
    np.testing.assert_array_equal(ra.resolved, r.resolved)


@HYPOTHESIS
@given(case=pl_cases(), b=st.floats(-1e3, 1e3), c=st.floats(-1e3, 1e3))
def test_property_offset_and_trend(case, b, c):
    n, dt, times, jumps, offset, slope = case
    t = np.arange(n) * dt
    y = pl_values(t, times, jumps, offset, slope)
    scale = np.abs(jumps).max()
    b, c = b * scale * n * dt, c * scale  # comparable to the signal
    r, rbc = smp(y, dt), smp(y + b + c * t, dt)
    tol = tolerance(n, dt, times, jumps, abs(offset) + abs(b), abs(slope) + abs(c))
    assert rbc.n_peaks == r.n_peaks == len(jumps)
    assert abs(rbc.value - r.value) <= 2 * tol
    assert abs(rbc.value - np.abs(jumps).sum()) <= tol


@HYPOTHESIS
@given(case=pl_cases())
def test_property_time_reversal(case):
    n, dt, times, jumps, offset, slope = case
    y = pl_values(np.arange(n) * dt, times, jumps, offset, slope)
    r, rr = smp(y, dt), smp(y[::-1], dt)
    tol = tolerance(n, dt, times, jumps, offset, slope)
    assert rr.n_peaks == r.n_peaks == len(jumps)
    assert abs(rr.value - r.value) <= 2 * tol
    p, pr = r.peaks_frame(), rr.peaks_frame()
    np.testing.assert_allclose(pr["time"].to_numpy()[::-1], (n - 1) * dt - p["time"].to_numpy(), atol=1e-9 * n * dt)
    # reversing time keeps each slope jump's sign (the slope on both sides flips)
    np.testing.assert_allclose(pr["jump"].to_numpy()[::-1], p["jump"].to_numpy(), rtol=0, atol=2 * tol)


@HYPOTHESIS
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(40, 300))
def test_property_additivity_over_separated_kinks(seed, n):
    rng = np.random.default_rng(seed)
    half = n // 2
    dt = float(10.0 ** rng.uniform(-2, 1))
    t = np.arange(n) * dt
    k1, k2 = int(rng.integers(1, max(2, half // 8))), int(rng.integers(1, max(2, half // 8)))
    t1 = separated_positions(rng, n, k1, lo=1.0, hi=half - 3.0) * dt
    t2 = separated_positions(rng, n, k2, lo=half + 3.0, hi=n - 2.0) * dt
    j1 = rng.choice([-1.0, 1.0], k1) * rng.uniform(0.1, 3.0, k1)
    j2 = rng.choice([-1.0, 1.0], k2) * rng.uniform(0.1, 3.0, k2)
    y1, y2 = pl_values(t, t1, j1, 0.5, -1.0), pl_values(t, t2, j2, -2.0, 0.25)
    r1, r2, r12 = smp(y1, dt), smp(y2, dt), smp(y1 + y2, dt)
    tol = tolerance(n, dt, np.r_[t1, t2], np.r_[j1, j2], 2.5, 1.25)
    assert r12.n_peaks == r1.n_peaks + r2.n_peaks == k1 + k2
    assert abs(r12.value - (r1.value + r2.value)) <= 3 * tol
    assert abs(r12.value - (np.abs(j1).sum() + np.abs(j2).sum())) <= tol


@HYPOTHESIS
@given(case=pl_cases())
def test_property_refinement(case):
    n, dt, times, jumps, offset, slope = case
    coarse_t = np.arange(n) * dt
    fine_t = np.arange(2 * n - 1) * (dt / 2)
    rc = smp(pl_values(coarse_t, times, jumps, offset, slope), dt)
    rf = smp(pl_values(fine_t, times, jumps, offset, slope), dt / 2)
    tol = tolerance(2 * n - 1, dt / 2, times, jumps, offset, slope)
    assert rf.n_peaks == rc.n_peaks == len(jumps)
    assert abs(rf.value - rc.value) <= 2 * tol
    np.testing.assert_allclose(rf.peaks_frame()["time"], rc.peaks_frame()["time"], atol=2e-9 * n * dt)


@HYPOTHESIS
@given(seed=st.integers(0, 2**32 - 1), c=st.floats(1e-4, 1e4))
def test_property_time_unit(seed, c):
    rng = np.random.default_rng(seed)
    y = mixed_signals(rng, (3,), 200, 0.1)
    r1, rc = smp(y, 1.0), smp(y, c)
    np.testing.assert_allclose(rc.value, r1.value / c, rtol=1e-12)
    np.testing.assert_allclose(rc.detection_limit, r1.detection_limit / c, rtol=1e-12)
    np.testing.assert_array_equal(rc.n_peaks, r1.n_peaks)
    np.testing.assert_array_equal(rc.noise, r1.noise)  # y units: the time unit does not enter
    np.testing.assert_allclose(rc.peaks_frame()["time"], c * r1.peaks_frame()["time"], rtol=1e-12)


# --------------------------------------------------------------------------
# 8. Bad input
# --------------------------------------------------------------------------


def test_errors_derive_from_value_error():
    for cls in (InputError, SignalError, TimeGridError):
        assert issubclass(cls, ValueError) and issubclass(cls, SMPStatsError)
    with pytest.raises(ValueError):
        smp([1.0, 2.0])


@pytest.mark.parametrize("bad, index", [(np.nan, 4), (np.inf, 7), (-np.inf, 0)])
def test_nan_and_inf_rejected(bad, index):
    y = np.arange(10.0)
    y[index] = bad
    with pytest.raises(
        SignalError,
        match=re.escape(
            f"y contains NaN or infinite values (first at index ({index},)); "
            "remove or interpolate them before measuring SMP."
        ),
    ):
        smp(y)


def test_nan_position_reported_in_original_axes():
    y = np.zeros((10, 3))
    y[6, 2] = np.nan
    with pytest.raises(SignalError, match=re.escape("(first at index (6, 2))")):
        smp(y, axis=0)


def test_too_few_samples():
    with pytest.raises(SignalError, match=r"^y needs at least 3 samples along axis -1; got 2 \(shape \(2,\)\)\.$"):
        smp([1.0, 2.0])
    with pytest.raises(
        SignalError,
        match=re.escape(
            "y needs at least 3 samples along axis -1; got 2 (shape (50, 2)). If time runs along another axis, "
            "pass axis= accordingly (e.g. axis=0 for one series per column)."
        ),
    ):
        smp(np.zeros((50, 2)))
    with pytest.raises(SignalError, match=r"^y needs at least 3 samples along axis -1; got 2 \(shape \(2, 2\)\)\.$"):
        smp(np.zeros((2, 2)))
    with pytest.raises(SignalError, match=r"^y must have a time axis with at least 3 samples; got a scalar\.$"):
        smp(1.0)


def test_non_uniform_time_stamps():
    t = np.arange(10.0)
    t[5] += 0.25
    with pytest.raises(
        TimeGridError,
        match=r"^t must be uniformly spaced; steps range from 0\.75 to 1\.25 \(relative deviation 0\.25 > 1e-06\)\. "
        r"Resample onto a uniform grid first\.$",
    ):
        smp(np.zeros(10), t=t)


def test_decreasing_time_stamps():
    with pytest.raises(
        TimeGridError,
        match=re.escape(
            "t must be strictly increasing; t[1] = 8.0 <= t[0] = 9.0. "
            "Sort the samples by time (and reverse both y and t for a path run backwards)."
        ),
    ):
        smp(np.zeros(10), t=np.arange(10.0)[::-1])
    with pytest.raises(TimeGridError, match=re.escape("t must be strictly increasing; t[3] = 2.0 <= t[2] = 2.0.")):
        smp(np.zeros(5), t=[0.0, 1.0, 2.0, 2.0, 3.0])


def test_time_stamps_of_wrong_length_or_shape():
    with pytest.raises(
        TimeGridError, match=r"^t has 5 time stamps but the signal has 10 samples along its time axis\.$"
    ):
        smp(np.zeros(10), t=np.arange(5.0))
    with pytest.raises(TimeGridError, match=re.escape("t must be a 1-D array of time stamps; got shape (2, 5).")):
        smp(np.zeros(10), t=np.zeros((2, 5)))
    with pytest.raises(TimeGridError, match=r"^t contains NaN or infinite time stamps\.$"):
        smp(np.zeros(3), t=[0.0, np.nan, 2.0])


@pytest.mark.parametrize("dt", [0.0, -1.0, np.inf, np.nan])
def test_bad_step_value(dt):
    with pytest.raises(
        TimeGridError,
        match=r"^dt must be a positive finite number \(time units per sample\); got "
        + re.escape(repr(float(dt)))
        + r"\.$",
    ):
        smp(np.zeros(10), dt)


@pytest.mark.parametrize("dt", ["0.1", None, True, [0.1], 1j])
def test_bad_step_type(dt):
    with pytest.raises(
        TimeGridError,
        match=r"^dt must be a positive real number \(time units per sample\); got " + re.escape(repr(dt)) + r"\.$",
    ):
        smp(np.zeros(10), dt)


def test_complex_input_rejected():
    with pytest.raises(SignalError, match=r"^y must be real-valued; got complex dtype complex128\.$"):
        smp(np.zeros(10, dtype=complex))
    torch = pytest.importorskip("torch")
    with pytest.raises(
        SignalError, match=r"^y must be real-valued; got a complex torch tensor of dtype torch\.complex64\.$"
    ):
        smp(torch.zeros(10, dtype=torch.complex64))


@pytest.mark.parametrize(
    "y, dtype_text",
    [
        (np.array(["a", "b", "c"]), "<U1"),
        (np.array([1.0, "x", None], dtype=object), "object"),
        (np.array([1.0, 2.0, 3.0], dtype=object), "object"),
    ],
)
def test_non_numeric_input_rejected(y, dtype_text):
    text = f"y must be a numeric array (float or int); got dtype {dtype_text}."
    with pytest.raises(SignalError, match="^" + re.escape(text) + "$"):
        smp(y)


def test_ragged_input_rejected():
    with pytest.raises(SignalError, match=r"^y could not be converted to a numeric array: "):
        smp([[1.0, 2.0, 3.0], [1.0, 2.0]])


@pytest.mark.parametrize("axis", [2, -3, 1.0])
def test_axis_out_of_range(axis):
    with pytest.raises(
        SignalError,
        match=re.escape(
            f"axis={axis!r} is out of range for y with 2 dimension(s) (shape (3, 10)); pass an int in [-2, 1]."
        ),
    ):
        smp(np.zeros((3, 10)), axis=axis)


@pytest.mark.parametrize("noise", [-1.0, np.nan, [0.1, -0.1, 0.2]])
def test_negative_or_nonfinite_noise(noise):
    with pytest.raises(
        InputError,
        match=r"^noise must be finite and >= 0 \(std of the measurement noise, y units\); got "
        + re.escape(repr(noise))
        + r"\.$",
    ):
        smp(np.zeros((3, 10)), noise=noise)


def test_noise_message_shows_numpy_scalars_as_numbers():
    with pytest.raises(InputError, match=r"got -1\.0\.$"):
        smp(np.zeros(10), noise=np.float64(-1.0))


def test_non_numeric_noise():
    with pytest.raises(InputError, match=r"^noise must be a non-negative number or array \(y units\); got 'loud'\.$"):
        smp(np.zeros(10), noise="loud")


def test_noise_of_wrong_shape():
    with pytest.raises(
        InputError,
        match=re.escape(
            "noise of shape (3,) does not broadcast to the batch shape (2,) (the shape of y without its time axis)."
        ),
    ):
        smp(np.zeros((2, 10)), noise=[0.1, 0.2, 0.3])
    with pytest.raises(InputError, match=re.escape("noise of shape (2,) does not broadcast to the batch shape ()")):
        smp(np.zeros(10), noise=[0.1, 0.2])


@pytest.mark.parametrize(
    "kwargs, text",
    [
        ({"threshold": 0.0}, "threshold must be a finite real number > 0.0; got 0.0."),
        ({"threshold": "high"}, "threshold must be a finite real number > 0.0; got 'high'."),
        ({"background_factor": -1.0}, "background_factor must be a finite real number >= 0.0; got -1.0."),
        ({"resolution_rtol": np.inf}, "resolution_rtol must be a finite real number >= 0.0; got inf."),
    ],
)
def test_bad_tuning_parameters(kwargs, text):
    with pytest.raises(InputError, match="^" + re.escape(text) + "$"):
        smp(np.zeros(10), **kwargs)


# --------------------------------------------------------------------------
# Compiled kernel against the vectorised numpy estimator
# --------------------------------------------------------------------------


def _kernel_cases(rng):
    """Signals that reach every branch: noise, flat stretches, ties, dense and sparse kinks, curvature."""
    out = []
    for n in (3, 4, 5, 6, 7, 11, 64, 257, 2048):
        dt = 1.0 / n
        kinks = sample_random_kinks(n, dt, rate=30, jump_scale=1.0, size=(6,), rng=rng).values
        out += [
            (f"white n={n}", rng.standard_normal((6, n)), dt),
            (f"relu(GP) n={n}", np.maximum(sample_se_gp(n, dt, 0.05, size=(6,), rng=rng), 0.0), dt),
            (f"mostly flat n={n}", np.maximum(sample_se_gp(n, dt, 0.05, size=(6,), rng=rng) - 1.5, 0.0), dt),
            (f"GP + kinks n={n}", sample_se_gp(n, dt, 0.1, size=(6,), rng=rng) + kinks, dt),
            (f"kinks + noise n={n}", kinks + 1e-4 * rng.standard_normal(kinks.shape), dt),
            (f"integers n={n}", rng.integers(0, 3, (6, n)).astype(np.float64), dt),
            (f"constant, quadratic n={n}", np.stack([np.zeros(n), np.full(n, 2.5), np.arange(n) ** 2.0]), dt),
        ]
    t = np.arange(4096) / 4096
    out.append(("relu(sin) mixtures", np.maximum(np.sin(np.outer([3.0, 40.0, 400.0], t * 2 * np.pi)), 0.0), t[1]))
    return out


def _assert_same_estimates(a, b, label):
    noise_a, fine_a, coarse_a, dense_a = a
    noise_b, fine_b, coarse_b, dense_b = b

    def close(x, y, what):
        x, y = np.asarray(x), np.asarray(y)
        assert x.shape == y.shape, f"{label}: {what} shapes {x.shape} != {y.shape}"
        if x.dtype.kind in "biu":
            np.testing.assert_array_equal(x, y, err_msg=f"{label}: {what}")
        else:
            scale = np.max(np.abs(x[np.isfinite(x)]), initial=0.0)
            np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-12 * scale, err_msg=f"{label}: {what}")

    close(noise_a, noise_b, "noise")
    if coarse_a is None:
        assert coarse_b is None
    else:
        close(coarse_a, coarse_b, "value at 2 dt")
    close(dense_a, dense_b, "dense")
    for name in ("value", "n_peaks", "n_below_limit", "detection_limit", "peak_fraction", "n_wide", "roughness"):
        close(getattr(fine_a, name), getattr(fine_b, name), name)
    for name in ("series", "time", "jump", "snr"):
        close(getattr(fine_a.peaks, name), getattr(fine_b.peaks, name), f"peaks.{name}")


def test_compiled_kernel_matches_numpy_estimator():
    from smpstats import grid

    assert grid._kernel() is not None, "the compiled kernel (numba) should be importable"
    rng = np.random.default_rng(20)
    n_peaks = 0
    for label, y, dt in _kernel_cases(rng):
        for noise in (None, np.full(y.shape[0], 1e-3)):
            args = (y, dt, noise, Z_DEFAULT, 2.0)
            compiled = grid._measure_compiled(*args)
            _assert_same_estimates(grid._measure_numpy(*args), compiled, f"{label}, noise={noise is not None}")
            n_peaks += compiled[1].peaks.series.size
    assert n_peaks > 1000  # the comparison covered many kinks


def test_compiled_kernel_grows_its_peak_buffers():
    """More peaks than the first buffers hold (a kink every 8 samples): the kernel resumes where it stopped."""
    from smpstats import grid

    rng = np.random.default_rng(23)
    n = 8192
    t = np.arange(n) / n
    times = (np.arange(8, n - 8, 8) + rng.random((2, n // 8 - 2))) / n
    jumps = rng.choice([-1.0, 1.0], times.shape) * rng.uniform(0.5, 1.5, times.shape)
    y = pl_values(t, times, jumps)
    compiled = grid._measure_compiled(y, t[1], None, Z_DEFAULT, 2.0)
    assert compiled[1].peaks.series.size > 1900  # the first buffers hold 1024
    _assert_same_estimates(grid._measure_numpy(y, t[1], None, Z_DEFAULT, 2.0), compiled, "kink every 4 samples")


def test_smp_without_compiled_kernel_gives_the_same_result(monkeypatch):
    """The numpy fallback (numba missing) and the kernel agree through smp, for a non-contiguous time axis too."""
    from smpstats import grid

    rng = np.random.default_rng(21)
    n = 1000
    y = sample_se_gp(n, 1.0 / n, 0.1, size=(3,), rng=rng) + sample_random_kinks(
        n, 1.0 / n, rate=20, jump_scale=1.0, size=(3,), rng=rng).values
    y = np.ascontiguousarray(y.T)  # time along axis 0
    compiled = smp(y, dt=1.0 / n, axis=0)
    monkeypatch.setattr(grid, "_KERNEL", False)
    reference = smp(y, dt=1.0 / n, axis=0)
    for name in ("value", "n_peaks", "resolved", "reason", "value_coarse", "noise", "detection_limit", "n_below_limit"):
        a, b = getattr(reference, name), getattr(compiled, name)
        if a.dtype == object:
            assert list(a) == list(b), name
        else:
            np.testing.assert_allclose(a, b, rtol=1e-12, err_msg=name)
    pd_a, pd_b = reference.peaks_frame(), compiled.peaks_frame()
    assert len(pd_a) == len(pd_b) > 30
    np.testing.assert_allclose(pd_a.to_numpy(float), pd_b.to_numpy(float), rtol=1e-12)


@pytest.mark.parametrize("kind", ["normal", "ties", "fills", "sorted", "reversed", "constant"])
def test_kernel_selection_is_the_order_statistic(kind):
    from smpstats._smp_kernel import _select

    rng = np.random.default_rng(22)
    for n in (1, 2, 3, 10, 257, 1024):
        a = {
            "normal": rng.standard_normal(n),
            "ties": rng.integers(0, 4, n).astype(np.float64),
            "fills": np.where(rng.random(n) < 0.6, np.where(np.arange(n) % 2 == 0, -1.0, np.inf), rng.random(n)),
            "sorted": np.sort(rng.standard_normal(n)),
            "reversed": np.sort(rng.standard_normal(n))[::-1].copy(),
            "constant": np.zeros(n),
        }[kind]
        for k in sorted({0, n // 10, n // 2, n - 1}):
            work = np.full((3, n + 3), np.nan)
            work[0, :n] = a
            assert _select(work, n, k) == np.partition(a, k)[k], (kind, n, k)
            assert np.isnan(work[:, n:]).all()  # entries past n are never touched


def test_compiled_kernel_results_do_not_depend_on_the_thread_count(monkeypatch):
    from smpstats import grid

    rng = np.random.default_rng(24)
    n = 4096
    y = np.concatenate([
        sample_se_gp(n, 1.0 / n, 0.1, size=(40,), rng=rng)
        + sample_random_kinks(n, 1.0 / n, rate=40, jump_scale=1.0, size=(40,), rng=rng).values,
        np.maximum(sample_se_gp(n, 1.0 / n, 0.05, size=(40,), rng=rng), 0.0),
    ])
    assert y.size >= grid._BLOCK_ELEMENTS  # large enough to be split over threads
    results = []
    for threads in (1, 3):
        monkeypatch.setattr(grid, "_thread_count", lambda: threads)
        results.append(grid._measure_compiled(y, 1.0 / n, None, Z_DEFAULT, 2.0))
    (noise_1, fine_1, coarse_1, dense_1), (noise_3, fine_3, coarse_3, dense_3) = results
    assert fine_1.peaks.series.size > 1000
    for a, b in [(noise_1, noise_3), (coarse_1, coarse_3), (dense_1, dense_3)] + [
        (getattr(fine_1, f), getattr(fine_3, f)) for f in ("value", "n_peaks", "n_below_limit", "roughness")
    ] + [(getattr(fine_1.peaks, f), getattr(fine_3.peaks, f)) for f in ("series", "time", "jump", "snr")]:
        np.testing.assert_array_equal(a, b)
