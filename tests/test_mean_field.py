"""Finite-width moment propagation (smpstats.finite_width.FiniteWidth) against random torch layers."""

import numpy as np
import pytest
import torch

import smpstats
from smpstats.inputs import SmoothInputs
from smpstats.finite_width import (FiniteWidth, affine_fluctuation, path_static_share, radial_after_affine,
                                   rectifier_units)
from smpstats.mean_field import propagate_moments
from smpstats.simulation import _stage_columns

FAMILY = SmoothInputs(mu=0.3, sigma=1.0, length_scale=0.15)
N_POINTS, N_IN = 257, 8


def _pooled(y: np.ndarray, dt: float) -> tuple[float, float]:
    """Pooled second moment and slope mean square of signals y, shape (n_points, units)."""
    return float(np.mean(y * y)), float(np.mean(np.diff(y, axis=0) ** 2) / dt**2)


def _torch_factors(width: int, trials: int, seed: int) -> dict[str, np.ndarray]:
    """Realised factors of random kaiming ``linear | relu`` layers on smooth inputs, one fresh layer per trial.

    ``fq``, ``fd``: second moment and slope mean square after the linear block over their expectation given the
    realised input; ``gq``, ``gd``: those after the ReLU over those of its realised input.
    """
    chain = smpstats.build_chain(f"linear(out_features={width}) | relu", (N_IN,), generator=seed)
    sw2 = _stage_columns(chain)[0]["sigma_w"] ** 2
    rng, gen = np.random.default_rng(seed), torch.Generator().manual_seed(seed)
    out = {k: np.empty(trials) for k in ("fq", "fd", "gq", "gd")}
    for i in range(trials):
        chain.reinitialize(gen)
        draw = FAMILY.draw(N_POINTS, N_IN, rng)
        with torch.no_grad():
            y = chain.module[0](torch.from_numpy(draw.x)).numpy()
        (q_x, d_x), (q_y, d_y), (q_r, d_r) = (_pooled(v, draw.dt) for v in (draw.x, y, np.maximum(y, 0)))
        out["fq"][i], out["fd"][i], out["gq"][i], out["gd"][i] = q_y / (sw2 * q_x), d_y / (sw2 * d_x), q_r / q_y, \
            d_r / d_y
    return out


def _model_factors(width: int, n_draws: int) -> dict[str, np.ndarray]:
    """The same factors from FiniteWidth, for the family's inputs."""
    cols = _stage_columns(smpstats.build_chain(f"linear(out_features={width}) | relu", (N_IN,)))
    mu, sigma, sigma_dot = np.full(n_draws, 0.3), np.ones(n_draws), np.full(n_draws, 1 / 0.15)
    width_state, rng = FiniteWidth.of_inputs(sigma, sigma_dot, 1.0, N_IN), np.random.default_rng(1)
    mean_field = propagate_moments("linear", cols[0], mu, sigma, sigma_dot)
    lin = width_state.step("linear", cols[0], (mu, sigma, sigma_dot), mean_field, rng, 1.0)[:3]
    rel = width_state.step("relu", cols[1], lin, propagate_moments("relu", cols[1], *lin), rng, 1.0)[:3]
    q = [m**2 + s**2 for m, s, _ in (mean_field, lin, rel)]
    return {"fq": q[1] / q[0], "fd": (lin[2] / mean_field[2]) ** 2, "gq": q[2] / q[1], "gd": (rel[2] / lin[2]) ** 2}


@pytest.mark.parametrize("width", [4, 16, 64])
def test_realised_moments_spread_like_random_torch_layers(width):
    """Mean and spread of the realised pooled second moment and slope mean square over random layers."""
    real, model = _torch_factors(width, trials=300, seed=width), _model_factors(width, n_draws=4000)
    for key in ("fq", "fd"):  # affine: exact chi-square-like factors of mean 1
        assert model[key].mean() == pytest.approx(1.0, abs=0.01)
        assert real[key].mean() == pytest.approx(1.0, abs=0.05)
        assert np.log(model[key]).std() == pytest.approx(np.log(real[key]).std(), rel=0.15)
    corr = [np.corrcoef(np.log(f["fq"]), np.log(f["fd"]))[0, 1] for f in (real, model)]
    assert corr[1] == pytest.approx(corr[0], abs=0.12)
    if width >= 16:  # the ReLU's finite number of units (width 4 has heavier tails than the model)
        for key, rel in (("gq", 0.15), ("gd", 0.3)):
            assert model[key].mean() == pytest.approx(real[key].mean(), rel=0.04)
            assert np.log(model[key]).std() == pytest.approx(np.log(real[key]).std(), rel=rel)
    # the spread shrinks like 1 / sqrt(width); the mean-field limit is deterministic
    assert np.log(model["fq"]).std() * np.sqrt(width) == pytest.approx(np.log(real["fq"]).std() * np.sqrt(width),
                                                                       rel=0.15)


def test_rank_one_input_gives_the_chi_square_of_the_rows():
    var_q, var_d, cov = affine_fluctuation(0.7, 0.0, 1.0, 0.0, 0.0, fan_in=9, rows=5, positions=1, sigma_w=1.3,
                                           sigma_b=0.0, length=1.0)
    assert float(var_q) == pytest.approx(2 / 5)  # Q = ||W m||^2 / rows ~ chi2_5 / 5 times its mean
    assert float(var_d) > 0 and float(cov) == pytest.approx(2 / 5 * 1.3**2 * 0.49 / 9 / (1.3**2 * 0.49))


def test_path_static_share_is_the_variance_of_the_time_mean():
    t = np.linspace(0, 1, 801)
    for l in (0.05, 0.2, 1.0):
        k = np.exp(-((t[:, None] - t[None, :]) ** 2) / (2 * l**2))
        assert float(path_static_share(2.0, 2.0 / l, 1.0)) == pytest.approx(k.mean(), rel=5e-3)
    assert float(path_static_share(1.0, 1e-6, 1.0)) == pytest.approx(1.0)


def test_radial_share_climbs_towards_one():
    g = np.array([0.0])
    shares = []
    for _ in range(6):
        g = radial_after_affine(g, 16)
        shares.append(float(g[0]))
    assert shares[0] == pytest.approx(1 / 16) and all(b > a for a, b in zip(shares, shares[1:])) and shares[-1] < 1


def test_rectifier_kinks_follow_the_pooled_formula_without_radial_motion():
    n = 2000
    rng = np.random.default_rng(0)
    args = (np.zeros(n), np.full(n, 1.3), np.full(n, 5.0), np.full(n, 0.7), np.zeros(n))
    *_, kinks = rectifier_units(rng, *args, np.zeros(n), channels=10**6, positions=1)
    assert kinks.mean() == pytest.approx(1.0, abs=0.01)  # the mixture identity
    *_, kinks = rectifier_units(rng, *args, np.full(n, 0.5), channels=10**6, positions=1)
    assert kinks.mean() == pytest.approx(0.808, abs=0.02)  # units far from zero move with their mean
    mu, sigma, sigma_dot, _, _ = rectifier_units(rng, *args, np.zeros(n), channels=10**6, positions=1)
    from smpstats.theory import relu_output_moments

    m, s, d = relu_output_moments(0.0, 1.3, 5.0)
    assert mu.mean() == pytest.approx(m, rel=0.01) and sigma.mean() == pytest.approx(s, rel=0.01)
    assert sigma_dot.mean() == pytest.approx(d, rel=0.01)


@pytest.mark.parametrize("spec, shape", [
    ("conv1d(out_channels=8, kernel_size=3)", (4, 48)),
    ("conv1d(out_channels=8, kernel_size=3) | batchnorm", (4, 48)),
    ("conv1d(out_channels=8, kernel_size=3) | maxpool1d(kernel_size=2)", (4, 48)),
    ("conv1d(out_channels=8, kernel_size=3) | gelu | linear(out_features=5)", (4, 48)),
])
def test_between_channel_share_matches_simulated_within_channel_spread(spec, shape):
    """The variance within and between channels (share of the pooled variance) against sigma_chan and
    sigma_pool of simulations, averaged over random networks; a linear layer's output is one channel."""
    from smpstats.mean_field import between_channel_share

    family = SmoothInputs(mu=(0.5, 1.5), sigma=(0.5, 1.0), length_scale=0.15)
    sim = smpstats.simulate(spec, n_trials=40, seed=3, input_shape=shape, n_points=257, path=family)
    cols = _stage_columns(smpstats.build_chain(spec, shape))
    first = sim[sim["stage"] == 1]
    mu, sigma, sigma_dot = (first[c].to_numpy() for c in ("mu_in", "sigma_pool_in", "sigma_dot_in"))
    share = np.zeros_like(mu)
    for c in cols:
        mu_in, sigma_in = mu, sigma
        mu, sigma, sigma_dot = propagate_moments(c["block"], c, mu, sigma, sigma_dot, share)
        share = between_channel_share(c["block"], c, mu_in, sigma_in, share)
    last = sim[sim["stage"] == len(cols)]
    within, pooled = last["sigma_chan_out"].to_numpy() ** 2, last["sigma_pool_out"].to_numpy() ** 2
    assert np.mean((1 - share) * sigma**2) == pytest.approx(within.mean(), rel=0.15)
    if spec.endswith("linear(out_features=5)"):
        assert (share == 0).all() and np.allclose(within, pooled)
    else:  # a case where the split matters
        assert np.mean(pooled - within) > 0.3 * pooled.mean()
        # the simulated spread is about the realised layer mean, which itself varies by 1/8 of it (8 channels)
        assert np.mean(share * sigma**2) * 7 / 8 == pytest.approx(np.mean(pooled - within), rel=0.15)


def test_a_networks_gain_on_carried_kinks_has_mean_one_and_follows_its_slopes():
    """A slope jump is mapped like a slope: after a random linear block the carried kinks scale with the square
    root of the realised slope factor, after a ReLU with its realised share of slope; over networks the mean is 1."""
    n = 20_000
    cols = _stage_columns(smpstats.build_chain("linear(out_features=16) | relu | softplus", (N_IN,)))
    mu, sigma, sigma_dot = np.full(n, 0.3), np.ones(n), np.full(n, 1 / 0.15)
    width_state, rng = FiniteWidth.of_inputs(sigma, sigma_dot, 1.0, N_IN), np.random.default_rng(4)
    mean_field = propagate_moments("linear", cols[0], mu, sigma, sigma_dot)
    *lin, _, lin_gain = width_state.step("linear", cols[0], (mu, sigma, sigma_dot), mean_field, rng, 1.0)
    relu_mf = propagate_moments("relu", cols[1], *lin)
    *rel, _, relu_gain = width_state.step("relu", cols[1], tuple(lin), relu_mf, rng, 1.0)
    *_, smooth_gain = width_state.step("softplus", cols[2], tuple(rel), propagate_moments("softplus", cols[2], *rel),
                                       rng, 1.0)
    for gain in (lin_gain, relu_gain):
        assert gain.mean() == pytest.approx(1.0, abs=0.01) and np.log(gain).std() > 0.05
    slope_factor = lin[2] / mean_field[2]
    np.testing.assert_allclose(lin_gain / slope_factor, (lin_gain / slope_factor)[0])  # one constant: its mean
    np.testing.assert_allclose(relu_gain, (rel[2] / relu_mf[2]) ** 2)
    np.testing.assert_array_equal(smooth_gain, 1.0)
