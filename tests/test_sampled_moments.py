"""Layer moments of given-weight networks by Monte Carlo over input points, and what they fix in predictions."""

import numpy as np
import pytest
import torch
from torch import nn

import smpstats
from smpstats import sampled_moments
from smpstats.chain_reading import read_chain
from smpstats.chain_prediction import predict_chain
from smpstats.errors import InputError
from smpstats.inputs import SmoothInputs
from smpstats.sampled_moments import sampled_stage_moments


def _module(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 12), nn.ReLU(), nn.Linear(12, 7), nn.ReLU())


def test_first_linear_layer_moments_are_exact():
    """y = W x + b, x ~ N(mu, s^2) i.i.d.: unit means W 1 mu + b, variances s^2 |w_i|^2, slopes sd^2 |w_i|^2."""
    module = _module()
    chain = read_chain(module, (5,))
    mu, sigma, sd = np.array([0.3, -1.0]), np.array([1.2, 0.4]), np.array([5.0, 2.0])
    got = sampled_stage_moments(chain, mu, sigma, sd, n_samples=64)
    W, b = module[0].weight.detach().double().numpy(), module[0].bias.detach().double().numpy()
    means = W.sum(1)[None] * mu[:, None] + b  # (draws, units)
    var = sigma[:, None] ** 2 * (W**2).sum(1)[None]
    pooled_mean = means.mean(1)
    pooled_std = np.sqrt(var.mean(1) + means.var(1))
    rms_slope = sd * np.sqrt((W**2).sum(1).mean())
    np.testing.assert_allclose(got[0], [mu, sigma, sd], rtol=1e-12)  # the (standardised) input points
    np.testing.assert_allclose(got[1], [pooled_mean, pooled_std, rms_slope], rtol=2e-2, atol=1e-12)


def test_relu_moments_match_a_large_monte_carlo_and_are_reproducible(monkeypatch):
    module = _module(1)
    chain = read_chain(module, (5,))
    args = (np.array([0.2, 0.2, 0.5]), np.array([1.0, 1.0, 0.7]), np.array([3.0, 3.0, 6.0]))
    got = sampled_stage_moments(chain, *args, n_samples=512, seed=3)
    # equal input parameters give equal moments (common random numbers), whatever the chunking (to rounding)
    np.testing.assert_array_equal(got[:, :, 0], got[:, :, 1])
    monkeypatch.setattr(sampled_moments, "_CHUNK_VALUES", 5 * 512)  # one draw per chunk
    np.testing.assert_allclose(sampled_stage_moments(chain, *args, n_samples=512, seed=3), got, rtol=1e-12)
    # against 400k independent points through the torch module (values and finite-difference slopes)
    rng = np.random.default_rng(9)
    x = torch.from_numpy(rng.normal(0.5, 0.7, (400000, 5)))
    v = torch.from_numpy(rng.normal(0.0, 6.0, (400000, 5)))
    m = module.double()
    with torch.no_grad():
        y, eps = m(x), 1e-7
        slope = (m(x + eps * v) - m(x - eps * v)) / (2 * eps)
    want = [y.mean().item(), y.std().item(), slope.pow(2).mean().sqrt().item()]
    np.testing.assert_allclose(got[4, :, 2], want, rtol=0.05)


def test_correlated_units_break_mean_field_but_not_the_sampled_moments():
    """Twelve copies of one ReLU unit into same-sign sums: mean field (independent units) misses the variance."""
    torch.manual_seed(2)
    first = nn.Linear(4, 12)
    with torch.no_grad():
        first.weight.copy_(first.weight[:1].repeat(12, 1))
        first.bias.zero_()
    second = nn.Linear(12, 6)
    with torch.no_grad():
        second.weight.copy_(second.weight.abs())
    module = nn.Sequential(first, nn.ReLU(), second, nn.ReLU())
    # a path of 50 length scales: its time averages are close to the ensemble moments that the prediction gives
    family = SmoothInputs(mu=0.0, sigma=1.0, length_scale=0.02)
    sim = smpstats.simulate(module, n_trials=20, seed=4, input_shape=(4,), path=family, n_points=1025,
                            method="exact")
    true = sim[sim["stage"] == 4][["sigma_pool_in", "sigma_dot_in"]].mean().to_numpy()
    sampled = predict_chain(module, input_shape=(4,), path=family, n_draws=20).stages
    mean_field = predict_chain(module, input_shape=(4,), path=family, n_draws=20, sample_module=False).stages
    np.testing.assert_allclose(sampled[["sigma_pool_in", "sigma_dot_in"]].iloc[3], true, rtol=0.1)
    assert (mean_field[["sigma_pool_in", "sigma_dot_in"]].iloc[3].to_numpy() < 0.7 * true).all()


def test_sample_module_must_be_a_bool():
    with pytest.raises(InputError, match="sample_module must be True or False"):
        predict_chain(_module(), input_shape=(5,), n_draws=5, sample_module="yes")


def test_interpolated_moments_match_each_draw_computed_alone():
    """The grid over (mu, log sigma) and the slopes' proportionality to sigma_dot against one draw at a time."""
    module = _module(4)
    chain = read_chain(module, (5,))
    rng = np.random.default_rng(0)
    mu, sigma, sd = rng.uniform(-0.5, 0.5, 6), rng.uniform(0.5, 1.5, 6), rng.uniform(2.0, 9.0, 6)
    together = sampled_stage_moments(chain, mu, sigma, sd)
    alone = np.stack([sampled_stage_moments(chain, mu[[d]], sigma[[d]], sd[[d]])[..., 0] for d in range(6)], axis=-1)
    np.testing.assert_allclose(together, alone, rtol=0.03, atol=1e-3)


@pytest.mark.parametrize("length_scale, n_units", [(0.2, 8), (0.05, 4)])
def test_realised_path_moments_scatter_like_drawn_paths(length_scale, n_units):
    """A finite path does not realise its family's moments: the relative variance of its pooled second moment
    is about 2 / (n K), K = T / (l sqrt(pi)); drawn paths of SmoothInputs scatter the same way."""
    from smpstats.finite_width import path_static_share
    from smpstats.inputs import SmoothInputs, realised_path_moments

    n = 1500
    family = SmoothInputs(mu=(0.3, 0.3), sigma=(1.0, 1.0), length_scale=(length_scale, length_scale))
    rng = np.random.default_rng(0)
    drawn = np.empty((3, n))
    for i in range(n):
        x = family.draw(513, n_units, rng).x  # (n_points, n_units)
        dt = 1.0 / 512
        drawn[:, i] = x.mean(), x.std(), np.sqrt(np.mean(np.gradient(x, dt, axis=0)[1:-1] ** 2))
    ones = np.ones(n)
    real = np.array(realised_path_moments(0.3 * ones, ones, ones / length_scale, 1.0, n_units,
                                         np.random.default_rng(1))[:3])
    np.testing.assert_array_equal(real[0], 0.3)  # the family's mean: where a path lies is not a pooled moment
    # squares of mean sigma**2 and sigma_dot**2 (drawn paths: the variance about their own mean falls short by s / n)
    static = path_static_share(1.0, 1 / length_scale, 1.0)
    assert np.mean(real[1] ** 2) == pytest.approx(np.mean(drawn[1] ** 2) / (1 - static / n_units), rel=0.02)
    assert np.mean(real[2] ** 2) == pytest.approx(np.mean(drawn[2] ** 2), rel=0.02)
    assert np.mean(real[2] ** 2) == pytest.approx(1 / length_scale**2, rel=0.02)
    for a, b in zip(real[1:], drawn[1:]):  # and their relative spread
        assert np.std(a**2) / np.mean(a**2) == pytest.approx(np.std(b**2) / np.mean(b**2), rel=0.12)
    k = 1.0 / (length_scale * np.sqrt(np.pi))
    assert np.var(real[1] ** 2) / np.mean(real[1] ** 2) ** 2 == pytest.approx(2 / (n_units * k), rel=0.25)
    assert np.corrcoef(np.log(real[1]), np.log(real[2]))[0, 1] == pytest.approx(
        np.corrcoef(np.log(drawn[1]), np.log(drawn[2]))[0, 1], abs=0.1)
    # the rows kept return the very paths behind their moments, in the family's units
    kept = realised_path_moments(0.3 * ones[:5], ones[:5], ones[:5] / length_scale, 1.0, n_units,
                                 np.random.default_rng(2), keep=[1, 3])
    assert sorted(kept.paths) == [1, 3]
    for row, (values, slopes) in kept.paths.items():
        assert values.shape == slopes.shape == (257, n_units)
        assert np.mean(values) == pytest.approx(0.3, abs=1.0)
        assert np.var(values) / (1 - static / n_units) == pytest.approx(kept.sigma[row] ** 2, rel=1e-9)
        assert np.mean(slopes**2) == pytest.approx(kept.sigma_dot[row] ** 2, rel=1e-9)
