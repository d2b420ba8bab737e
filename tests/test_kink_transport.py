"""SMP of given-weight networks: kinks by birth unit, carried by the module's Jacobians."""

import numpy as np
import pytest
import torch
from torch import nn

import smpstats
from smpstats import theory
from smpstats.chain_prediction import predict_chain
from smpstats.chain_reading import read_chain
from smpstats.inputs import SmoothInputs
from smpstats.kink_transport import given_weight_smp


def test_one_hidden_layer_is_exact():
    """relu(W1 x + b1) then W2: unit u is born with Kac-Rice N_u; W2 carries it with sum_i |W2_iu| exactly."""
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(5, 9), nn.ReLU(), nn.Linear(9, 4))
    W1, b1 = module[0].weight.detach().double().numpy(), module[0].bias.detach().double().numpy()
    W2 = module[2].weight.detach().double().numpy()
    mu, sigma, sd, length = np.array([0.3, -0.2]), np.array([1.1, 0.6]), np.array([4.0, 7.0]), 2.0
    got = given_weight_smp(read_chain(module, (5,)), mu, sigma, sd, np.zeros(2), length, grid=2)
    for d in range(2):
        m = W1.sum(1) * mu[d] + b1
        s = sigma[d] * np.sqrt((W1**2).sum(1))
        slope = sd[d] * np.sqrt((W1**2).sum(1))
        born = np.asarray(theory.relu_expected_smp(m, s, slope, length))
        np.testing.assert_allclose(got.new[:, d], [0.0, born.mean(), 0.0], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(got.total[:, d], [0.0, born.mean(), (np.abs(W2) * born).sum() / 4], rtol=1e-9)


def test_input_kinks_are_carried_by_the_weights():
    """Kinks in the input (S_in per element) reach a linear layer's units as sum_j |W_ij| S_in / n."""
    torch.manual_seed(1)
    module = nn.Sequential(nn.Linear(6, 3))
    W = module[0].weight.detach().double().numpy()
    got = given_weight_smp(read_chain(module, (6,)), np.zeros(3), np.ones(3), np.ones(3), np.array([0.0, 1.0, 2.5]),
                           1.0)
    np.testing.assert_allclose(got.total[0], np.abs(W).sum(1).mean() * np.array([0.0, 1.0, 2.5]), rtol=1e-12)


@pytest.mark.parametrize("sample_module, close", [(True, True), (False, False)])
def test_coherent_weights_carry_kinks_without_cancelling(sample_module, close):
    """Positive weights and biases after the first ReLU: its kinks add up at the output, where random-sign rules
    let them cancel (the second ReLU stays on: the transport is the weights' product, and the test exact)."""
    torch.manual_seed(3)
    module = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 1))
    with torch.no_grad():
        for k in (2, 4):
            module[k].weight.abs_()
            module[k].bias.fill_(0.1)
    family = SmoothInputs(mu=(-0.3, 0.3), sigma=(0.8, 1.2), length_scale=(0.15, 0.25))
    sim = smpstats.simulate(module, n_trials=40, seed=5, input_shape=(6,), path=family, n_points=513, method="exact")
    pred = predict_chain(module, input_shape=(6,), path=sim[sim["stage"] == 1], sample_module=sample_module)
    ratio = pred.check(sim)["ratio"].to_numpy()[1:]
    if close:
        np.testing.assert_allclose(ratio, 1.0, atol=0.15)
    else:
        assert ratio[-1] < 0.7


@pytest.mark.parametrize("rectifier", [None, nn.ReLU(), nn.LeakyReLU(0.2), nn.PReLU(init=0.3)])
def test_max_pooling_switches_window_by_window_match_the_iid_theory(rectifier):
    """Independent Gaussian units pooled in pairs: Kac-Rice on each pair's difference is the i.i.d. formula; after
    a rectifier, pairs switch where their pre-activations tie (``max(f(x)) = f(max(x))``), at full size above 0
    and times the slope below, and a unit's own kink passes only where the other unit is negative (the share
    ``pass_new``: averaged over all points instead of at the kinks, 1 per window, 14 % too much SMP)."""
    conv = nn.Conv1d(1, 1, kernel_size=1)
    with torch.no_grad():
        conv.weight.fill_(1.5)
        conv.bias.fill_(0.2)
    layers = [conv, nn.MaxPool1d(2)] if rectifier is None else [conv, rectifier, nn.MaxPool1d(2)]
    chain = read_chain(nn.Sequential(*layers), (1, 40))
    mu, sigma, sd, length = 0.1, 0.8, 5.0, 1.0
    got = given_weight_smp(chain, [mu], [sigma], [sd], [0.0], length, n_points=4096)
    pre = (1.5 * mu + 0.2, 1.5 * sigma, 1.5 * sd)
    if rectifier is None:
        assert got.new[-1, 0] == pytest.approx(float(theory.maxpool_expected_smp(2, *pre, length)), rel=1e-9)
        return
    slope = float(rectifier.weight.detach()) if isinstance(rectifier, nn.PReLU) else getattr(rectifier, "negative_slope", 0.0)
    new, pass_new, _ = theory.maxpool_after_relu_terms(2, *pre, length, negative_slope=slope)
    born = got.new[1, 0]
    assert born == pytest.approx(float(theory._leaky_relu_expected_smp(*(np.array(v) for v in pre), length, 0.0,
                                                                       slope)), rel=1e-6)
    assert got.new[-1, 0] == pytest.approx(float(new), rel=0.05)
    assert got.total[-1, 0] == pytest.approx(float(new + pass_new * born), rel=0.08)


def test_correlated_neighbours_switch_as_the_correlated_pair_formula_says():
    """A two-tap conv makes neighbours correlated (rho = w1 w2 / |w|^2): fewer switches than i.i.d. units."""
    conv = nn.Conv1d(1, 1, kernel_size=2, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[[1.0, 0.6]]]))
    chain = read_chain(nn.Sequential(conv, nn.MaxPool1d(2)), (1, 41))
    got = given_weight_smp(chain, [0.0], [1.0], [4.0], [0.0], 1.0, n_points=4096).new[-1, 0]
    norm = np.sqrt(1.0 + 0.36)
    want = theory.maxpool_expected_smp(2, 0.0, norm, 4.0 * norm, 1.0, rho=0.6 / 1.36)
    assert got == pytest.approx(float(want), rel=1e-6)
    assert got < 0.9 * float(theory.maxpool_expected_smp(2, 0.0, norm, 4.0 * norm, 1.0))


def _gate_network() -> nn.Sequential:
    """relu(0.5 - relu(x) - relu(-x)) = relu(0.5 - |x|) of one input: the kinks born at x = 0 pass the last ReLU
    only while |x| < 0.5, which holds whenever they are born."""
    first, second = nn.Linear(1, 2), nn.Linear(2, 1)
    with torch.no_grad():
        first.weight.copy_(torch.tensor([[1.0], [-1.0]]))
        first.bias.zero_()
        second.weight.copy_(torch.tensor([[-1.0, -1.0]]))
        second.bias.fill_(0.5)
    return nn.Sequential(first, nn.ReLU(), second, nn.ReLU())


def test_kinks_travel_through_the_jacobian_of_their_birth():
    """A kink goes through the masks of the moment it is born: the first ReLU's kinks (x = 0, one per unit, slope
    jump |x'|) all reach the output, 2 phi(0) sigma_dot^2 per unit time at x ~ N(0, 1); averaging the Jacobian over
    all points would pass only P(|x| < 0.5) = 0.38 of them."""
    from scipy.stats import norm

    from smpstats import kink_transport

    chain = read_chain(_gate_network(), (1,))
    x = np.random.default_rng(0).standard_normal((4096, 1))
    values = [torch.from_numpy(x)]
    for stage in chain.stages:
        values.append(stage.module(values[-1]).detach())
    born = np.full(2, norm.pdf(0.0))  # Kac-Rice per unit at unit RMS slope
    at_kinks = kink_transport._carry(chain, 2, values[2], born, np.random.default_rng(1),
                                     kink_transport._birth_distance(chain.stages[1], values[1]))
    everywhere = kink_transport._carry(chain, 2, values[2], born, np.random.default_rng(1))
    assert at_kinks[-1] == pytest.approx(2 * norm.pdf(0.0), rel=0.08)
    assert everywhere[-1] == pytest.approx(2 * norm.pdf(0.0) * (2 * norm.cdf(0.5) - 1), rel=0.15)
    np.testing.assert_allclose(at_kinks[:2], everywhere[:2])  # the affine map passes them the same either way


def test_path_location_factors_follow_the_exact_smp_of_each_path():
    """With few input units, where a path lies decides which units cross 0: the factors computed at each path's
    own points follow the exact SMP of the same paths (relative to the pooled expectation), and have mean 1."""
    from smpstats.kink_transport import path_location_factors
    from smpstats.simulation import _trial_rngs

    torch.manual_seed(4)
    module = nn.Sequential(nn.Linear(3, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 1))
    family = SmoothInputs(mu=0.2, sigma=1.0, length_scale=0.25)
    sim = smpstats.simulate(module, n_trials=40, seed=3, input_shape=(3,), path=family, n_points=513, method="exact")
    paths = []
    for seed in sim.loc[sim["stage"] == 1, "trial_seed"]:
        draw = family.draw(513, 3, _trial_rngs(int(seed))[1])
        paths.append((draw.x, np.gradient(draw.x, draw.dt, axis=0)))
    chain = read_chain(module, (3,))
    ones = np.ones(len(paths))
    sigma = np.array([x.std() for x, _ in paths])
    sigma_dot = np.array([np.sqrt(np.mean(v**2)) for _, v in paths])
    pooled = given_weight_smp(chain, 0.2 * ones, sigma, sigma_dot, 0 * ones, 1.0).total
    factors = path_location_factors(chain, paths, 0.2 * ones, sigma, sigma_dot, np.random.default_rng(0))
    np.testing.assert_allclose(factors.mean(axis=1), 1.0)
    exact = sim[sim["stage"] == 5].sort_values("trial")["smp_out"].to_numpy() / pooled[-1]
    assert np.std(np.log(factors[-1])) > 0.2
    assert np.corrcoef(np.log(factors[-1]), np.log(exact))[0, 1] > 0.75
