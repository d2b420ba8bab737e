"""Checks of smpstats.theory against closed forms, quadrature and direct simulation.

Monte Carlo checks draw exact squared-exponential GP paths (smooth) with fixed
seeds and measure the SMP of the block's output *exactly* from the path:

* new kinks of ReLU-type blocks sit at zero crossings of the input (found
  between samples; the slope there is the secant slope over the bracketing
  step, off by O(h) per crossing with mean zero, O(h^2) on average);
* max-pool kinks sit where the argmax changes; the jump is |x_i' - x_j'|;
* inherited kinks come from :func:`sample_random_kinks`, located by the
  second difference of the kink signal itself (which is zero between kinks),
  and weighted by the block's slope at that time.

Tolerances are 2-4 % for sample sizes whose Monte Carlo standard error is
below ~1 %; every Monte Carlo test passed for 30 seed sweeps
(``SMPSTATS_TEST_SEED=1..30``).
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
from scipy import integrate, special

from smpstats import theory as th
from smpstats.errors import InputError
from smpstats.processes import sample_random_kinks, sample_se_gp

# ------------------------------------------------------------------------- helpers

#: Sweep the Monte Carlo seeds with e.g. SMPSTATS_TEST_SEED=1 (default 0: the seeds below).
SEED_OFFSET = int(os.environ.get("SMPSTATS_TEST_SEED", "0"))


def make_rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed + 1000 * SEED_OFFSET)


def crossing_slope_sum(x: np.ndarray, dt: float) -> np.ndarray:
    """Sum over zero crossings of |x'| (secant slope over the bracketing step)."""
    pos = x > 0
    cross = pos[..., 1:] != pos[..., :-1]
    return (np.abs(np.diff(x, axis=-1)) / dt * cross).sum(-1)


def argmax_switch_smp(x: np.ndarray, dt: float) -> np.ndarray:
    """Exact SMP of max over axis -2 of smooth x (..., k, n): sum of |x_i' - x_j'| at switches."""
    am = x.argmax(-2)
    dx = np.diff(x, axis=-1)
    i, j = am[..., :-1], am[..., 1:]
    di = np.take_along_axis(dx, i[..., None, :], -2)[..., 0, :]
    dj = np.take_along_axis(dx, j[..., None, :], -2)[..., 0, :]
    return (np.abs(di - dj) * (i != j)).sum(-1) / dt


def kink_mass(kinks: np.ndarray, dt: float) -> np.ndarray:
    """|second difference| / dt of a piecewise-linear signal, aligned with samples 1..n-2."""
    return np.abs(np.diff(kinks, 2, axis=-1)) / dt


def gp(n_paths, T, dt, length_scale, *, seed, mu=0.0, sigma=1.0, extra=()):
    rng = make_rng(seed)
    n = int(round(T / dt)) + 1
    size = (n_paths, *extra) if extra else n_paths
    return sample_se_gp(n, dt, length_scale, sigma=sigma, mu=mu, size=size, rng=rng), rng


def gp_with_tiny_kinks(n_paths, T, dt, length_scale, *, seed, extra=(), rate=2.0, jump_scale=1e-4):
    """Smooth GP paths plus independent random kinks too small to move the values.

    Returns the smooth part (mean 0, std 1), the kink signals and their kink mass
    (aligned with samples 1..n-2). The kinks' slope random walk and its integral stay
    far below the GP's slope and value scales (jump_scale * sqrt(rate T^3) << 1).
    """
    x, rng = gp(n_paths, T, dt, length_scale, seed=seed, extra=extra)
    size = (n_paths, *extra) if extra else n_paths
    kinks = sample_random_kinks(x.shape[-1], dt, rate=rate, jump_scale=jump_scale, size=size, rng=rng)
    assert np.abs(kinks.values).max() < 0.2
    return x, kinks, kink_mass(kinks.values, dt)


def rel(a, b):
    return abs(a / b - 1.0)


# ---------------------------------------------------------------- ReLU: closed forms


def test_relu_expected_smp_formula_values():
    # a = 0: T sigma_dot^2 / (sigma sqrt(2 pi)); inherited half.
    assert th.relu_expected_smp(0.0, 2.0, 3.0, 5.0, smp_in=4.0) == pytest.approx(
        5 * 9 / 2 / math.sqrt(2 * math.pi) + 2.0, rel=1e-14
    )
    a = 1.3
    val = th.relu_expected_smp(a * 0.5, 0.5, 0.7, 2.0, smp_in=1.5)
    new = 2.0 * 0.7**2 * math.exp(-a * a / 2) / math.sqrt(2 * math.pi) / 0.5
    assert val == pytest.approx(special.ndtr(a) * 1.5 + new)


def test_relu_limits():
    # a -> +inf: identity, no new kinks; a -> -inf: nothing; sigma_dot = 0: no new kinks.
    assert th.relu_expected_smp(60.0, 1.0, 5.0, 10.0, smp_in=3.0) == pytest.approx(3.0, rel=1e-12)
    assert th.relu_expected_smp(-60.0, 1.0, 5.0, 10.0, smp_in=3.0) == pytest.approx(0.0, abs=1e-300)
    assert th.relu_expected_smp(0.4, 1.0, 0.0, 10.0, smp_in=2.0) == pytest.approx(2.0 * special.ndtr(0.4))
    # a constant input (sigma = sigma_dot = 0): a step for the inherited kinks, no new kinks.
    np.testing.assert_allclose(th.relu_expected_smp([1.0, -1.0, 0.0], 0.0, 0.0, 3.0, smp_in=2.0), [2.0, 0.0, 1.0])


def test_relu_scaling_invariances():
    # Scaling x by c > 0 scales the SMP by c; a time change t -> t / c scales slopes by c and T by 1/c.
    base = th.relu_expected_smp(0.3, 1.2, 0.8, 4.0, smp_in=0.5)
    assert th.relu_expected_smp(3 * 0.3, 3 * 1.2, 3 * 0.8, 4.0, smp_in=3 * 0.5) == pytest.approx(3 * base)
    assert th.relu_expected_smp(0.3, 1.2, 2 * 0.8, 4.0 / 2, smp_in=2 * 0.5) == pytest.approx(2 * base)


def test_leaky_relu_reduces_to_relu_and_identity():
    args = (np.array([-1.0, 0.0, 0.7]), 1.3, 0.9, 6.0)
    np.testing.assert_allclose(th.leaky_relu_expected_smp(*args, smp_in=2.0, negative_slope=0.0),
                               th.relu_expected_smp(*args, smp_in=2.0))
    np.testing.assert_allclose(th.leaky_relu_expected_smp(*args, smp_in=2.0, negative_slope=1.0), 2.0)
    # alpha -> 1 - alpha mirror: leaky(x; alpha) = alpha x + (1 - alpha) relu(x).
    assert th.prelu_expected_smp(0.2, 1.0, 1.0, 3.0, smp_in=0.0, weight=0.25) == pytest.approx(
        0.75 * th.relu_expected_smp(0.2, 1.0, 1.0, 3.0)
    )


@pytest.mark.parametrize("a", [-1.0, 0.0, 1.5])
def test_relu_new_kinks_match_simulation(a):
    T, dt, ell = 40.0, 0.1, 1.0
    x, _ = gp(4000, T, dt, ell, seed=11, mu=a * 1.5, sigma=1.5)
    measured = crossing_slope_sum(x, dt)
    pred = th.relu_expected_smp(a * 1.5, 1.5, 1.5 / ell, T)
    se = measured.std() / math.sqrt(measured.size)
    assert se < 0.012 * pred
    assert rel(measured.mean(), pred) < 0.035


def test_relu_inherited_kinks_survive_with_probability_phi():
    T, dt = 40.0, 0.05
    g, kinks, mass = gp_with_tiny_kinks(1000, T, dt, 1.0, seed=5)
    # Sanity: the second difference recovers the kinks. A few % are lost where two kinks share a
    # sample with opposite signs (rate * dt = 0.1 here); survivors lose the same share, so the
    # survival ratio is unbiased.
    np.testing.assert_allclose(mass.sum(-1).mean(), kinks.smp.mean(), rtol=0.08)
    smp_in = mass.sum(-1).mean()
    for mu in (-0.5, 0.0, 1.2):
        x = mu + g + kinks.values
        survived = (mass * (x[:, 1:-1] > 0)).sum(-1).mean()
        pred = th.relu_expected_smp(mu, 1.0, 0.0, T, smp_in=smp_in)  # sigma_dot = 0: carried part only
        assert pred == pytest.approx(special.ndtr(mu) * smp_in)
        assert rel(survived, pred) < 0.04, mu


def test_leaky_relu_matches_simulation():
    T, dt, mu = 40.0, 0.05, 0.5
    g, kinks, mass = gp_with_tiny_kinks(1500, T, dt, 1.0, seed=8)
    x = mu + g + kinks.values
    smp_in = mass.sum(-1).mean()
    for alpha in (0.1, -0.5):
        slope = np.where(x[:, 1:-1] > 0, 1.0, abs(alpha))
        carried = (mass * slope).sum(-1).mean()
        new = abs(1 - alpha) * crossing_slope_sum(x, dt).mean()
        pred_carried = th.leaky_relu_expected_smp(mu, 1.0, 0.0, T, smp_in=smp_in, negative_slope=alpha)
        pred_new = th.leaky_relu_expected_smp(mu, 1.0, 1.0, T, negative_slope=alpha)
        assert rel(carried, pred_carried) < 0.04, alpha
        assert rel(new, pred_new) < 0.035, alpha
        total = th.leaky_relu_expected_smp(mu, 1.0, 1.0, T, smp_in=smp_in, negative_slope=alpha)
        assert total == pytest.approx(pred_new + pred_carried)


def test_relu_matches_grid_estimator():
    grid = pytest.importorskip("smpstats.grid")
    T, dt = 20.0, 0.02
    x, _ = gp(500, T, dt, 1.0, seed=3)
    measured = np.asarray(grid.smp(np.maximum(x, 0.0), dt).value)
    assert rel(measured.mean(), th.relu_expected_smp(0.0, 1.0, 1.0, T)) < 0.05


# --------------------------------------------------------------------- ReLU moments


def _rectified_by_quad(mu, sigma, alpha=0.0):
    """Mean and std of leaky_relu(x), x ~ N(mu, sigma^2), by adaptive quadrature."""
    pdf = lambda x: math.exp(-0.5 * ((x - mu) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))  # noqa: E731
    lo, hi = mu - 40 * sigma, mu + 40 * sigma
    m = []
    for p in (1, 2):
        pos = integrate.quad(lambda x: x**p * pdf(x), max(0.0, lo), max(0.0, hi), epsabs=0, epsrel=1e-13, limit=200,
                             points=None)[0] if hi > 0 else 0.0
        neg = integrate.quad(lambda x: (alpha * x) ** p * pdf(x), min(0.0, lo), min(0.0, hi), epsabs=0, epsrel=1e-13,
                             limit=200)[0] if lo < 0 else 0.0
        m.append(pos + neg)
    return m[0], math.sqrt(max(m[1] - m[0] ** 2, 0.0))


@pytest.mark.parametrize("a", [-30.0, -8.0, -3.5, -3.0, -2.5, -0.4, 0.0, 1.0, 6.0, 40.0])
def test_relu_output_moments_match_quadrature(a):
    sigma = 0.7
    out = th.relu_output_moments(a * sigma, sigma, 2.0)
    mean, std = _rectified_by_quad(a * sigma, sigma)
    assert out.mu == pytest.approx(mean, rel=1e-9)
    assert out.sigma == pytest.approx(std, rel=1e-7)
    assert out.sigma_dot == pytest.approx(2.0 * math.sqrt(special.ndtr(a)), rel=1e-12)


@pytest.mark.parametrize("alpha", [0.01, 0.3, -0.5, 1.5])
def test_leaky_relu_output_moments_match_quadrature(alpha):
    for mu in (-2.0, 0.0, 0.8):
        out = th.leaky_relu_output_moments(mu, 1.3, 1.0, negative_slope=alpha)
        mean, std = _rectified_by_quad(mu, 1.3, alpha)
        assert out.mu == pytest.approx(mean, rel=1e-9, abs=1e-12)
        assert out.sigma == pytest.approx(std, rel=1e-8)
        P = special.ndtr(mu / 1.3)
        assert out.sigma_dot == pytest.approx(math.sqrt(P + alpha**2 * (1 - P)))


def test_leaky_relu_identity_moments():
    out = th.leaky_relu_output_moments([-1.0, 2.0], [0.5, 3.0], [1.0, 4.0], negative_slope=1.0)
    np.testing.assert_allclose(out.mu, [-1.0, 2.0])
    np.testing.assert_allclose(out.sigma, [0.5, 3.0])
    np.testing.assert_allclose(out.sigma_dot, [1.0, 4.0])


def test_relu_output_moments_match_simulation():
    mu, sigma, ell = 0.4, 1.5, 0.5
    out = th.relu_output_moments(mu, sigma, sigma / ell)
    y = np.maximum(make_rng(20).normal(mu, sigma, size=1_000_000), 0.0)
    assert rel(y.mean(), out.mu) < 0.005
    assert rel(y.std(), out.sigma) < 0.005
    # Slope RMS from the sampled output itself (secant slopes of relu(x) along GP paths).
    T, dt = 10.0, 0.025
    x, _ = gp(4000, T, dt, ell, seed=21, mu=mu, sigma=sigma)
    slope_rms = np.sqrt(np.mean((np.diff(np.maximum(x, 0.0), axis=-1) / dt) ** 2))
    assert rel(slope_rms, out.sigma_dot) < 0.02


def test_output_moments_constant_input_and_results_object():
    out = th.relu_output_moments([2.0, -1.0, 0.0], 0.0, 0.0)
    np.testing.assert_array_equal(out.mu, [2.0, 0.0, 0.0])
    np.testing.assert_array_equal(out.sigma, [0.0, 0.0, 0.0])
    mu, sigma, sigma_dot = th.relu_output_moments(0.0, 1.0)
    assert sigma_dot is None and isinstance(mu, float)
    assert mu == pytest.approx(1 / math.sqrt(2 * math.pi))
    assert sigma == pytest.approx(math.sqrt(0.5 - 1 / (2 * math.pi)))
    frame = th.relu_output_moments([0.0, 1.0], 1.0, 1.0).to_frame()
    assert list(frame.columns) == ["mu", "sigma", "sigma_dot"] and len(frame) == 2
    text = th.relu_output_moments(0.0, 1.0, 1.0).summary()
    assert text.startswith("Output moments: mean 0.3989, std 0.5838, slope RMS 0.7071.")
    assert "Next: " in text


# -------------------------------------------------------------------------- max pool


def test_maxpool_switch_factor_closed_forms():
    T, sigma, sigma_dot = 3.0, 0.8, 1.7
    unit = T * sigma_dot**2 / (sigma * math.sqrt(math.pi))  # one pair, nothing else to beat
    c = {2: 1.0, 3: 0.5, 4: 0.25 + math.asin(1 / 3) / (2 * math.pi), 5: 0.125 + 3 * math.asin(1 / 3) / (4 * math.pi)}
    got = th.maxpool_expected_smp(list(c), 0.0, sigma, sigma_dot, T)
    want = [math.comb(k, 2) * c[k] * unit for k in c]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    # k = 1 carries its input; mu does not matter (shift equivariance).
    assert th.maxpool_expected_smp(1, 0.0, 1.0, 1.0, 5.0, smp_in=0.7) == pytest.approx(0.7)
    assert th.maxpool_expected_smp(4, 3.0, 1.0, 1.0, 5.0) == th.maxpool_expected_smp(4, -2.0, 1.0, 1.0, 5.0)


@pytest.mark.parametrize("k", [7, 50, 1000])
def test_maxpool_and_max_moments_quadrature_for_large_k(k):
    # Independent adaptive quadrature of c_k = E[Phi(Z/sqrt 2)^(k-2)] and of E[M_k], E[M_k^2].
    phi = lambda z: math.exp(-z * z / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    c_k = integrate.quad(lambda z: phi(z) * special.ndtr(z / math.sqrt(2)) ** (k - 2), -12, 16,
                         points=[0, 2, 4], limit=200, epsabs=0, epsrel=1e-12)[0]
    unit = 2.0 / math.sqrt(math.pi)  # T sigma_dot^2 / (sigma sqrt(pi)) with T = 2, sigma = sigma_dot = 1
    assert th.maxpool_expected_smp(k, 0.0, 1.0, 1.0, 2.0) == pytest.approx(math.comb(k, 2) * c_k * unit, rel=1e-9)
    dens = lambda z: k * phi(z) * special.ndtr(z) ** (k - 1)  # noqa: E731
    e1 = integrate.quad(lambda z: z * dens(z), -12, 16, points=[0, 2, 4], limit=200, epsabs=0, epsrel=1e-12)[0]
    e2 = integrate.quad(lambda z: z * z * dens(z), -12, 16, points=[0, 2, 4], limit=200, epsabs=0, epsrel=1e-12)[0]
    out = th.max_output_moments(k, 0.0, 1.0)
    assert out.mu == pytest.approx(e1, rel=1e-9)
    assert out.sigma == pytest.approx(math.sqrt(e2 - e1**2), rel=1e-8)


def test_maxpool_two_inputs_equals_relu_of_difference():
    # max(x1, x2) = (x1 + x2)/2 + (relu(D) + relu(-D))/2, D = x1 - x2 ~ std sqrt(2) sigma.
    s, sd, T = 1.3, 0.6, 7.0
    assert th.maxpool_expected_smp(2, 0.0, s, sd, T) == pytest.approx(
        th.relu_expected_smp(0.0, math.sqrt(2) * s, math.sqrt(2) * sd, T), rel=1e-13
    )


@pytest.mark.parametrize("k, n_paths", [(2, 3000), (4, 1500), (9, 600)])
def test_maxpool_new_kinks_match_simulation(k, n_paths):
    T, dt, ell = 20.0, 0.05, 1.0
    x, _ = gp(n_paths, T, dt, ell, seed=100 + k, extra=(k,), mu=0.3, sigma=0.9)
    measured = argmax_switch_smp(x, dt)
    pred = th.maxpool_expected_smp(k, 0.3, 0.9, 0.9 / ell, T)
    assert measured.std() / math.sqrt(n_paths) < 0.01 * pred
    assert rel(measured.mean(), pred) < 0.03


def test_maxpool_correlated_inputs_match_simulation():
    # Factor model x_i = sqrt(rho) W + sqrt(1 - rho) u_i, all SE with one length scale.
    T, dt, ell, k, rho, n_paths = 20.0, 0.05, 1.0, 4, 0.6, 1500
    u, rng = gp(n_paths, T, dt, ell, seed=7, extra=(k,))
    w = sample_se_gp(u.shape[-1], dt, ell, size=(n_paths, 1), rng=rng)
    x = math.sqrt(rho) * w + math.sqrt(1 - rho) * u
    measured = argmax_switch_smp(x, dt).mean()
    pred = th.maxpool_expected_smp(k, 0.0, 1.0, 1.0 / ell, T, rho=rho)
    assert pred == pytest.approx(math.sqrt(1 - rho) * th.maxpool_expected_smp(k, 0.0, 1.0, 1.0 / ell, T))
    assert rel(measured, pred) < 0.03


@pytest.mark.parametrize("k", [2, 4, 9])
def test_maxpool_carries_each_units_kinks_while_it_is_the_max(k):
    T, dt = 40.0, 0.05
    g, kinks, mass = gp_with_tiny_kinks(1800 // k, T, dt, 1.0, seed=40 + k, extra=(k,))  # mass (paths, k, n - 2)
    x = g + kinks.values
    is_max = x.argmax(-2)[:, None, 1:-1] == np.arange(k)[None, :, None]
    carried = (mass * is_max).sum((-1, -2)).mean()
    smp_in = mass.sum(-1).mean()  # mean per input unit
    pred = th.maxpool_expected_smp(k, 0.0, 1.0, 0.0, T, smp_in=smp_in)  # sigma_dot = 0: carried part
    assert pred == pytest.approx(smp_in)
    assert rel(carried, pred) < 0.04


def test_maxpool_matches_grid_estimator():
    grid = pytest.importorskip("smpstats.grid")
    T, dt, k = 20.0, 0.02, 4
    x, _ = gp(300, T, dt, 1.0, seed=9, extra=(k,))
    measured = np.asarray(grid.smp(x.max(-2), dt).value)
    assert rel(measured.mean(), th.maxpool_expected_smp(k, 0.0, 1.0, 1.0, T)) < 0.05


# ----------------------------------------------------------------------- max moments


def test_max_output_moments_closed_forms():
    out = th.max_output_moments([1, 2, 3], 0.0, 1.0, 1.0)
    np.testing.assert_allclose(out.mu, [0.0, 1 / math.sqrt(math.pi), 1.5 / math.sqrt(math.pi)], atol=1e-13)
    e2_3 = 1 + math.sqrt(3) / (2 * math.pi)
    np.testing.assert_allclose(
        out.sigma, [1.0, math.sqrt(1 - 1 / math.pi), math.sqrt(e2_3 - 9 / (4 * math.pi))], rtol=1e-12
    )
    np.testing.assert_allclose(out.sigma_dot, 1.0)
    # Location-scale: max of N(mu, s^2) = mu + s M_k.
    o = th.max_output_moments(9, 2.0, 3.0)
    s = th.max_output_moments(9, 0.0, 1.0)
    assert o.mu == pytest.approx(2.0 + 3.0 * s.mu) and o.sigma == pytest.approx(3.0 * s.sigma)


def test_max_output_moments_match_simulation():
    rng = make_rng(2)
    for k in (4, 9, 49):
        z = rng.normal(0.5, 2.0, size=(200_000, k)).max(-1)
        out = th.max_output_moments(k, 0.5, 2.0)
        assert out.mu == pytest.approx(z.mean(), abs=0.01)
        assert rel(z.std(), out.sigma) < 0.01
    # Slope RMS of the running maximum of k GP paths equals the inputs' slope RMS.
    T, dt, ell = 10.0, 0.025, 0.5
    x, _ = gp(1500, T, dt, ell, seed=4, extra=(4,), sigma=1.2)
    slope_rms = np.sqrt(np.mean((np.diff(x.max(-2), axis=-1) / dt) ** 2))
    assert rel(slope_rms, th.max_output_moments(4, 0.0, 1.2, 1.2 / ell).sigma_dot) < 0.03


@pytest.mark.parametrize("alpha", [0.0, 0.2])
def test_max_after_rectifier_moments_match_simulation(alpha):
    # max pooling over k rectified GP paths: their moments in, the max's mean, std and RMS slope out
    T, dt, ell, k = 10.0, 0.025, 0.5, 4
    x, _ = gp(1500, T, dt, ell, seed=5, extra=(k,), mu=0.3, sigma=1.2)
    y = np.where(x > 0, x, alpha * x)
    slope_in = np.sqrt(np.mean((np.diff(y, axis=-1) / dt) ** 2))
    out = th.max_after_rectifier_moments(k, y.mean(), y.std(), slope_in, alpha)
    z = y.max(-2)
    assert rel(out.mu, z.mean()) < 0.01 and rel(out.sigma, z.std()) < 0.01
    assert rel(out.sigma_dot, np.sqrt(np.mean((np.diff(z, axis=-1) / dt) ** 2))) < 0.02
    # the Gaussian rule on the same moments keeps the slope and misses the max's std by far more
    gauss = th.max_output_moments(k, y.mean(), y.std(), slope_in)
    assert abs(gauss.sigma_dot / out.sigma_dot - 1) > 0.1 and abs(gauss.sigma / z.std() - 1) > 0.1


def test_clark_reduces_to_iid_max_and_is_symmetric():
    c = th.clark_max_moments(0.3, 1.4, 0.3, 1.4, 0.0, 1.0, 1.0)
    m = th.max_output_moments(2, 0.3, 1.4, 1.0)
    assert c.mu == pytest.approx(m.mu, rel=1e-12) and c.sigma == pytest.approx(m.sigma, rel=1e-12)
    assert c.sigma_dot == pytest.approx(1.0)
    a = th.clark_max_moments(1.0, 0.5, -0.2, 2.0, 0.3)
    b = th.clark_max_moments(-0.2, 2.0, 1.0, 0.5, 0.3)
    assert a.mu == pytest.approx(b.mu) and a.sigma == pytest.approx(b.sigma)
    # theta = 0 (perfectly correlated, equal std): the larger-mean input.
    d = th.clark_max_moments(1.0, 0.7, 0.2, 0.7, 1.0)
    assert d.mu == pytest.approx(1.0) and d.sigma == pytest.approx(0.7)


@pytest.mark.parametrize("mu1, s1, mu2, s2, rho", [(0.0, 1.0, 0.5, 2.0, 0.0), (1.0, 0.5, 0.2, 1.5, 0.7),
                                                   (-0.3, 1.2, 0.4, 0.8, -0.6)])
def test_clark_matches_simulation(mu1, s1, mu2, s2, rho):
    rng = make_rng(12)
    z1, z2 = rng.standard_normal((2, 400_000))
    x1 = mu1 + s1 * z1
    x2 = mu2 + s2 * (rho * z1 + math.sqrt(1 - rho**2) * z2)
    y = np.maximum(x1, x2)
    out = th.clark_max_moments(mu1, s1, mu2, s2, rho)
    assert out.mu == pytest.approx(y.mean(), abs=0.006)
    assert rel(y.std(), out.sigma) < 0.006


def test_clark_slope_rms_matches_simulation():
    T, dt, rho, ell1, ell2, n_paths = 10.0, 0.025, 0.5, 0.5, 1.0, 2000
    g1, rng = gp(n_paths, T, dt, ell1, seed=31)
    g2 = sample_se_gp(g1.shape[-1], dt, ell2, size=n_paths, rng=rng)
    x1 = 0.2 + g1
    x2 = -0.1 + 1.5 * (rho * g1 + math.sqrt(1 - rho**2) * g2)
    # Slope RMS of x2: 1.5 * sqrt(rho^2 / ell1^2 + (1 - rho^2) / ell2^2).
    sd2 = 1.5 * math.sqrt(rho**2 / ell1**2 + (1 - rho**2) / ell2**2)
    out = th.clark_max_moments(0.2, 1.0, -0.1, 1.5, rho, 1.0 / ell1, sd2)
    y = np.maximum(x1, x2)
    assert rel(np.sqrt(np.mean((np.diff(y, axis=-1) / dt) ** 2)), out.sigma_dot) < 0.02


# ------------------------------------------------------------------- affine blocks


def test_linear_and_avgpool_carry_kinks():
    T, dt, n_paths, n_in = 10.0, 0.02, 2000, 6
    n = int(round(T / dt)) + 1
    rng = make_rng(17)
    kinks = sample_random_kinks(n, dt, rate=0.1, jump_scale=1.0, size=(n_paths, n_in), rng=rng)
    w = rng.normal(size=n_in)
    smp_in = kinks.smp.mean()  # mean per input unit
    y = kinks.values.transpose(0, 2, 1) @ w
    measured = kink_mass(y, dt).sum(-1)
    # Where no two units kink next to the same sample, the output's SMP is sum |w_i| S_i exactly.
    unit_mass = kink_mass(kinks.values, dt)
    clean = ((unit_mass > 1e-9).sum(1) <= 1).all(-1)
    inside = kinks.smp - unit_mass.sum(-1) < 1e-9 * (1 + kinks.smp)  # no kink in the first/last step
    ok = clean & inside.all(-1)
    assert ok.mean() > 0.8
    np.testing.assert_allclose(measured[ok], (kinks.smp @ np.abs(w))[ok], rtol=1e-7, atol=1e-9)
    assert rel(measured.mean(), th.linear_expected_smp(np.abs(w).sum(), smp_in)) < 0.05
    # Average pool over k = n_in inputs.
    avg = kink_mass(kinks.values.mean(1), dt).sum(-1)
    np.testing.assert_allclose(avg[ok], kinks.smp.mean(-1)[ok], rtol=1e-7, atol=1e-9)
    assert rel(avg.mean(), th.avgpool_expected_smp(n_in, smp_in)) < 0.05
    assert th.avgpool_expected_smp([2, 4], 1.5).tolist() == [1.5, 1.5]


def test_linear_output_moments():
    rng = make_rng(3)
    W = rng.normal(size=(3, 5))
    b = np.array([0.1, -0.2, 0.3])
    mu = rng.normal(size=5)
    sigma = rng.uniform(0.5, 2.0, size=5)
    sd = rng.uniform(0.5, 2.0, size=5)
    out = th.linear_output_moments(W, b, mu, sigma, sd)
    np.testing.assert_allclose(out.mu, W @ mu + b)
    np.testing.assert_allclose(out.sigma, np.sqrt((W**2) @ sigma**2))
    np.testing.assert_allclose(out.sigma_dot, np.sqrt((W**2) @ sd**2))
    # Simulation: independent GP inputs with length scales ell = sigma / sigma_dot.
    ell = rng.uniform(0.5, 1.0, size=5)
    out = th.linear_output_moments(W, b, mu, sigma, sigma / ell)
    T, dt = 20.0, 0.025
    x = np.stack([sample_se_gp(int(T / dt) + 1, dt, ell[i], sigma=sigma[i], mu=mu[i], size=1000, rng=rng)
                  for i in range(5)], axis=-1)  # (paths, n, 5)
    y = x @ W.T + b
    assert (np.abs(y.mean((0, 1)) - out.mu) < 0.05 * out.sigma).all()
    np.testing.assert_allclose(y.std((0, 1)), out.sigma, rtol=0.03)
    slope_rms = np.sqrt(np.mean((np.diff(y, axis=1) / dt) ** 2, axis=(0, 1)))
    np.testing.assert_allclose(slope_rms, out.sigma_dot, rtol=0.03)
    # Batched weights broadcast: (2, 3, 5) -> (2, 3).
    assert th.linear_output_moments(np.stack([W, W]), 0.0, mu, sigma).mu.shape == (2, 3)


# --------------------------------------------------------------- smooth activations

_DERIV = {
    "gelu": lambda x: special.ndtr(x) + x * math.exp(-x * x / 2) / math.sqrt(2 * math.pi),
    "silu": lambda x: special.expit(x) * (1 + x * (1 - special.expit(x))),
    "softplus": lambda x: special.expit(x),
    "tanh": lambda x: 1 - math.tanh(x) ** 2,
    "sigmoid": lambda x: special.expit(x) * (1 - special.expit(x)),
}


@pytest.mark.parametrize("name", sorted(_DERIV))
@pytest.mark.parametrize("mu, sigma", [(0.0, 1.0), (-1.0, 0.3), (2.0, 3.0), (0.5, 40.0), (-0.8, 1e-3)])
def test_smooth_activation_gain_matches_quadrature(name, mu, sigma):
    f = _DERIV[name]
    pdf = lambda x: math.exp(-0.5 * ((x - mu) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))  # noqa: E731
    pts = sorted({-1.2785, -0.7518, 0.0, mu} | {mu + s * sigma for s in (-8, -3, -1, 1, 3, 8)})
    lo, hi = mu - 12 * sigma, mu + 12 * sigma
    pts = [p for p in pts if lo < p < hi]
    want = integrate.quad(lambda x: abs(f(x)) * pdf(x), lo, hi, points=pts, limit=500, epsabs=1e-14, epsrel=1e-11)[0]
    assert th.smooth_activation_gain(name, mu, sigma) == pytest.approx(want, rel=1e-8)
    # conditional on X > 0 (kinks that survived a ReLU)
    p_pos = special.ndtr(mu / sigma)
    if p_pos > 1e-300:
        want_pos = integrate.quad(lambda x: abs(f(x)) * pdf(x), 0.0, max(hi, 1.0), points=[p for p in pts if p > 0],
                                  limit=500, epsabs=1e-300, epsrel=1e-11)[0] / p_pos
    else:  # all mass below 0: the limit X -> 0+
        want_pos = abs(f(0.0))
    assert th.smooth_activation_gain(name, mu, sigma, positive=True) == pytest.approx(want_pos, rel=1e-6)


@pytest.mark.parametrize("name", ["gelu", "silu", "tanh", "softplus"])
@pytest.mark.parametrize("k, mu, sigma", [(2, 0.0, 1.0), (3, -0.7, 2.0), (4, 0.4, 0.5)])
def test_smooth_after_max_gains_match_quadrature_over_where_the_kinks_sit(name, k, mu, sigma):
    """Switch kinks at V ~ N(mu, sigma^2/2) weighted by Phi^(k-2); carried ones at the max (density k phi Phi^(k-1))."""
    f = _DERIV[name]
    z_pts = [(p - mu) / sigma for p in (-1.2785, -0.7518)]

    def mean_over(weight, scale):
        num = integrate.quad(lambda z: abs(f(mu + scale * z)) * weight(z), -12, 12, points=z_pts, limit=400)[0]
        return num / integrate.quad(weight, -12, 12, limit=400)[0]

    switch = mean_over(lambda z: special.ndtr(z / math.sqrt(2)) ** (k - 2) * math.exp(-z * z / 2), sigma / math.sqrt(2))
    carried = mean_over(lambda z: k * special.ndtr(z) ** (k - 1) * math.exp(-z * z / 2), sigma)
    got = th.smooth_after_max_gains(name, k, mu, sigma)
    np.testing.assert_allclose(got, [switch, carried], rtol=2e-4)
    # one input: no switching, and the max is the input itself
    assert th.smooth_after_max_gains(name, 1, mu, sigma)[1] == pytest.approx(
        th.smooth_activation_gain(name, mu, sigma), rel=2e-4)


def test_max_input_moments_invert_max_output_moments():
    k, mu, sigma = np.array([1, 2, 4, 9]), np.array([0.3, -1.0, 2.0, 0.0]), np.array([1.7, 0.2, 3.0, 0.0])
    out = th.max_output_moments(k, mu, sigma)
    np.testing.assert_allclose(th.max_input_moments(k, out[0], out[1]), (mu, sigma), atol=1e-12)


def test_smooth_activation_gain_limits():
    # sigma = 0: |g'(mu)|; gelu_tanh close to gelu; softplus beta rescales.
    np.testing.assert_allclose(th.smooth_activation_gain("tanh", [0.0, 1.0], 0.0), [1.0, 1 - math.tanh(1.0) ** 2])
    assert th.smooth_activation_gain("gelu_tanh", 0.3, 1.1) == pytest.approx(
        th.smooth_activation_gain("gelu", 0.3, 1.1), rel=2e-3)
    assert th.smooth_activation_gain("softplus", 0.4, 0.6, beta=3.0) == pytest.approx(
        th.smooth_activation_gain("softplus", 1.2, 1.8))
    # Huge sigma: E|tanh'| -> (int |tanh'|) phi(0) / sigma = 2 / (sigma sqrt(2 pi)).
    assert th.smooth_activation_gain("tanh", 0.0, 1e4) == pytest.approx(2 / (1e4 * math.sqrt(2 * math.pi)), rel=1e-6)


def test_smooth_activation_carries_scaled_kinks():
    # An input kink J at t_k leaves g(x) with the slope jump g'(x(t_k)) J (chain rule).
    T, dt, mu, sigma = 40.0, 0.05, 0.3, 1.4
    g, kinks, mass = gp_with_tiny_kinks(1000, T, dt, 1.0, seed=55)
    x = mu + sigma * g + kinks.values
    derivative = {
        "gelu": lambda v: special.ndtr(v) + v * np.exp(-v * v / 2) / math.sqrt(2 * math.pi),
        "tanh": lambda v: 1 - np.tanh(v) ** 2,
        "silu": lambda v: special.expit(v) * (1 + v * (1 - special.expit(v))),
        "softplus": special.expit,
    }
    for name, g1 in derivative.items():
        measured = (mass * np.abs(g1(x[:, 1:-1]))).sum(-1).mean()
        pred = th.smooth_activation_expected_smp(name, mu, sigma, mass.sum(-1).mean())
        assert rel(measured, pred) < 0.04, name


# ------------------------------------------------------------- broadcasting, errors


def test_random_affine_kink_factor_matches_its_definition_over_drawn_weight_rows():
    """K(n, rho) is the mean over normal weight rows w of a unit's Kac-Rice SMP relative to the pooled formula."""
    rng = np.random.default_rng(0)
    phi0 = 1 / math.sqrt(2 * math.pi)
    for n, rho in [(1, 0.5), (3, 0.0), (4, 0.6), (8, 0.3), (16, 0.5)]:
        w = rng.standard_normal((200_000, n))  # unit weight rows (the weight scale cancels)
        m = np.ones(n) * math.sqrt(rho)  # input time means: all equal (any direction gives the same law)
        v = (1 - rho) * (w**2).sum(axis=1) / n  # the unit's moving variance over the pooled one's
        c = w @ m / math.sqrt(n)  # its time mean, variance rho over the units
        # per unit: sigma_dot_j**2 phi(c / sqrt(v)) / sqrt(v) with sigma_dot_j**2 / v the same for all units
        per_unit = v / (1 - rho) * np.exp(-0.5 * c**2 / v) / math.sqrt(2 * math.pi) / np.sqrt(v)
        mc, se = per_unit.mean() / phi0, per_unit.std() / phi0 / math.sqrt(len(per_unit))
        assert th.random_affine_kink_factor(n, rho) == pytest.approx(mc, abs=4 * se + 1e-4)
    # rho = 0: E sqrt(chi2_n) / sqrt(n); tends to 1 for wide layers; decreases with the static share
    assert th.random_affine_kink_factor(1, 0.0) == pytest.approx(math.sqrt(2 / math.pi))
    assert th.random_affine_kink_factor(8, 0.0) == pytest.approx(0.96931, abs=1e-5)
    assert th.random_affine_kink_factor(100_000, 0.9) == pytest.approx(1.0, abs=1e-4)
    k = th.random_affine_kink_factor(8, np.linspace(0, 0.95, 20))
    assert np.all(np.diff(k) < 0) and k.shape == (20,)


def test_broadcasting_shapes_and_scalars():
    out = th.relu_expected_smp(np.zeros((2, 1)), np.ones(3), 1.0, 2.0)
    assert out.shape == (2, 3)
    assert isinstance(th.relu_expected_smp(0, 1, 1, 1), float)
    assert th.maxpool_expected_smp(np.array([[2], [4]]), 0.0, [1.0, 2.0], 1.0, 1.0).shape == (2, 2)
    assert th.smooth_activation_expected_smp("gelu", np.zeros(3000), 1.0, 1.0).shape == (3000,)
    assert th.max_output_moments([2, 4, 4, 2], 0.0, 1.0).mu.shape == (4,)


def test_extreme_inputs_give_finite_limits():
    # Huge |mu / sigma| (even beyond float range) gives the limits, without warnings.
    out = th.relu_output_moments([1e300, -1e300, 45.0, -45.0], [1e-300, 1e-300, 1.0, 1.0], 1.0)
    np.testing.assert_array_equal(out.mu, [1e300, 0.0, 45.0, 0.0])
    np.testing.assert_array_equal(out.sigma, [0.0, 0.0, 1.0, 0.0])
    np.testing.assert_array_equal(out.sigma_dot, [1.0, 0.0, 1.0, 0.0])
    assert th.relu_expected_smp(1e300, 1e-300, 1.0, 1.0, 2.0) == 2.0
    np.testing.assert_allclose(th.smooth_activation_gain("gelu_tanh", [1e200, -1e200, 3.0], [0.0, 0.0, 1e200]),
                               [1.0, 0.0, 0.5])
    c = th.clark_max_moments([1e300, 50.0], 1.0, 0.0, 2.0)
    np.testing.assert_array_equal(c.mu, [1e300, 50.0])
    np.testing.assert_array_equal(c.sigma, [1.0, 1.0])


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: th.relu_expected_smp(0.0, -1.0, 1.0, 1.0),
         r"^sigma must be finite real numbers >= 0; got -1\.0\.$"),
        (lambda: th.relu_expected_smp(0.0, 1.0, [1.0, np.nan], 1.0),
         r"^sigma_dot must be finite real numbers >= 0; got nan at index \(1,\)\.$"),
        (lambda: th.relu_expected_smp("a", 1.0, 1.0, 1.0),
         r"^mu must be a real number or an array of finite real numbers; got 'a' \(dtype <U1\)\.$"),
        (lambda: th.relu_expected_smp(0.0, [1.0, 0.0], [1.0, 2.0], 1.0),
         r"^sigma_dot must be 0 where sigma is 0 \(an input with zero variance is constant, so its slope is 0\); "
         r"got sigma_dot=2\.0 with sigma=0 at index \(1,\)\.$"),
        (lambda: th.relu_expected_smp([0.0, 1.0], [1.0, 1.0, 1.0], 1.0, 1.0),
         r"^The arguments cannot be broadcast together \(shapes: mu \(2,\), sigma \(3,\), sigma_dot \(\), "
         r"length \(\), smp_in \(\)\); give them equal shapes or shapes that numpy can broadcast\.$"),
        (lambda: th.maxpool_expected_smp(2.5, 0.0, 1.0, 1.0, 1.0),
         r"^k must be an int >= 1 \(or an array of them\); got 2\.5\.$"),
        (lambda: th.maxpool_expected_smp(0, 0.0, 1.0, 1.0, 1.0),
         r"^k must be an int >= 1 \(or an array of them\); got 0\.$"),
        (lambda: th.maxpool_expected_smp(4, 0.0, 0.0, 1.0, 1.0),
         r"^sigma must be finite real numbers > 0; got 0\.0\. Identical constant inputs never switch; "
         r"for a constant input the pooled SMP is smp_in\.$"),
        (lambda: th.maxpool_expected_smp(4, 0.0, 1.0, 1.0, 1.0, rho=1.0),
         r"^rho must be finite real numbers >= 0 and < 1; got 1\.0\. Identical inputs \(rho = 1\) never switch; "
         r"the pooled output is then one input\.$"),
        (lambda: th.clark_max_moments(0.0, 1.0, 0.0, 1.0, 1.5),
         r"^rho must be finite real numbers >= -1 and <= 1; got 1\.5\.$"),
        (lambda: th.clark_max_moments(0.0, 1.0, 0.0, 1.0, 0.0, sigma_dot1=1.0),
         r"^sigma_dot1 and sigma_dot2 must be given together; got only sigma_dot1\.$"),
        (lambda: th.linear_expected_smp(-1.0, 1.0),
         r"^weights_l1 must be finite real numbers >= 0; got -1\.0\. Pass the L1 norm sum\(\|w\|\), "
         r"e\.g\. np\.abs\(W\)\.sum\(-1\)\.$"),
        (lambda: th.linear_output_moments(2.0, 0.0, 0.0, 1.0),
         r"^weights must have a last axis over the inputs, shape \(\.\.\., n_in\); got a scalar\. For one input "
         r"pass \[w\]\.$"),
        (lambda: th.linear_output_moments(np.ones((3, 5)), np.zeros(2), 0.0, 1.0),
         r"^bias of shape \(2,\) cannot be broadcast to the output shape \(3,\) \(weights\.shape\[:-1\]\); "
         r"pass one bias per output unit or a scalar\.$"),
        (lambda: th.smooth_activation_gain("gleu", 0.0, 1.0),
         r"^activation must be one of 'gelu', 'gelu_tanh', 'silu', 'softplus', 'tanh', 'sigmoid'; got 'gleu'\. "
         r"Did you mean 'gelu'\?$"),
        (lambda: th.smooth_activation_gain("relu", 0.0, 1.0),
         r"^activation must be one of .*; got 'relu'\. relu is piecewise linear: use relu_expected_smp / "
         r"leaky_relu_expected_smp\.$"),
        (lambda: th.smooth_activation_gain("softplus", 0.0, 1.0, beta=0),
         r"^beta must be a finite real number > 0 \(softplus sharpness\); got 0\.$"),
        (lambda: th.random_affine_kink_factor(0, 0.5), r"^fan_in must be an int >= 1 \(or an array of them\); got 0\.$"),
        (lambda: th.random_affine_kink_factor(8, 1.5), r"^static must be finite real numbers >= 0 and <= 1; got 1\.5\.$"),
    ],
)
def test_error_messages(call, message):
    with pytest.raises(InputError, match=message):
        call()


def test_errors_are_value_errors():
    with pytest.raises(ValueError):
        th.avgpool_expected_smp(True, 1.0)
