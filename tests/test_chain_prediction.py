"""Chain predictions: mean-field moments and per-stage SMP against fine-grid simulations."""

import numpy as np
import pandas as pd
import pytest

import smpstats
import torch
from smpstats.chain_prediction import predict_chain
from smpstats.errors import InputError
from smpstats.inputs import SmoothInputs
from smpstats.mean_field import propagate_moments, smooth_activation_moments

FAMILY = SmoothInputs(mu=0.3, sigma=1.0, length_scale=0.15)
SPEC = "linear(out_features=8) | relu | linear(out_features=8) | relu"


def test_smooth_activation_moments_match_monte_carlo():
    rng = np.random.default_rng(0)
    x = rng.normal(0.4, 1.3, 400000)
    m, s, d = smooth_activation_moments("tanh", 0.4, 1.3, 2.0)
    y = np.tanh(x)
    assert m == pytest.approx(y.mean(), abs=3e-3)
    assert s == pytest.approx(y.std(), abs=3e-3)
    assert d == pytest.approx(2.0 * np.sqrt(np.mean((1 - y**2) ** 2)), rel=3e-3)


def test_affine_moments_match_random_weights():
    rng = np.random.default_rng(1)
    fan_in, sw = 64, np.sqrt(2)
    x = rng.normal(0.5, 1.2, size=(20000, fan_in))
    w = rng.normal(0, sw / np.sqrt(fan_in), size=(fan_in, 200))
    y = x @ w
    mu, sigma, _ = propagate_moments("linear", {"sigma_w": sw, "sigma_b": 0.0}, 0.5, 1.2, 1.0)
    assert mu == 0.0
    assert sigma == pytest.approx(y.std(), rel=0.05)


def test_theory_mode_matches_a_fine_grid_simulation_for_one_hidden_layer():
    pred = predict_chain(SPEC, input_shape=(8,), path=FAMILY, n_draws=200)
    sim = smpstats.simulate(SPEC, n_trials=60, seed=3, input_shape=(8,), n_points=4096, path=FAMILY)
    observed = sim.groupby("stage")["smp_out"].mean().to_numpy()
    predicted = pred.to_frame()["mean"].to_numpy()
    assert predicted[0] == observed[0] == 0.0  # an affine map of smooth inputs: no kinks
    np.testing.assert_allclose(predicted[1:3], observed[1:3], rtol=0.1)  # relu (new kinks), linear (carried)
    # the mean-field moments of each stage's input
    np.testing.assert_allclose(pred.stages["sigma_pool_in"][:3], sim.groupby("stage")["sigma_pool_in"].mean()[:3],
                               rtol=0.08)


def test_statistical_mode_adds_uncertainty_and_keeps_the_mean():
    rng = np.random.default_rng(2)
    n = 80
    rows = pd.DataFrame({"block": "relu", "block_spec": "relu", "mu_in": rng.uniform(-1, 1, n),
                         "sigma_in": rng.uniform(0.5, 2, n), "sigma_dot_in": rng.uniform(3, 30, n),
                         "smp_in": rng.uniform(0, 20, n), "path_length": 1.0, "dt": 1 / 511})
    from smpstats.theory_terms import theory_terms

    rows["smp_out"] = theory_terms(rows)["theory"] * rng.gamma(50, 1 / 50, n)
    lin = rows.assign(block="linear", block_spec="linear(out_features=8)", fan_in=8, sigma_w=np.sqrt(2),
                      smp_in=rng.uniform(10, 50, n))
    lin["smp_out"] = theory_terms(lin)["theory"] * rng.gamma(50, 1 / 50, n)
    model = smpstats.fit(pd.concat([rows, lin], ignore_index=True), kind="regression")
    # the theory's expectation per draw: the regression adds its trial-to-trial spread
    theory = predict_chain(SPEC, input_shape=(8,), path=FAMILY, n_draws=400, seed=1, path_noise=False)
    stat = predict_chain(SPEC, input_shape=(8,), path=FAMILY, n_draws=400, seed=1, model=model)
    t, s = theory.to_frame(), stat.to_frame()
    assert s["mean"].iloc[1] == pytest.approx(t["mean"].iloc[1], rel=0.1)
    assert s["std"].iloc[1] > t["std"].iloc[1]
    assert stat.kind == "regression" and stat.draws.shape == (4, 400)


def test_same_seed_same_prediction_and_errors():
    a = predict_chain("relu", input_shape=(4,), n_draws=50, seed=5)
    b = predict_chain("relu", input_shape=(4,), n_draws=50, seed=5)
    np.testing.assert_array_equal(a.draws, b.draws)
    assert "relu" in a.summary()
    with pytest.raises(InputError, match="model must be 'theory', 'regression', 'bayes' or a fitted TransferModel"):
        predict_chain("relu", model="glm")
    with pytest.raises(InputError, match="Gaussian-process inputs"):
        predict_chain("relu", path="segment")
    rows = pd.DataFrame({"block": ["relu"] * 10, "mu_in": 0.0, "sigma_in": 1.0, "sigma_dot_in": 5.0, "smp_in": 0.0,
                         "path_length": 1.0, "dt": 0.002, "smp_out": np.linspace(1, 2, 10)})
    with pytest.raises(InputError, match="fitted on the block families relu; the inputs contain affine"):
        predict_chain("linear(out_features=4) | relu", input_shape=(4,), model=smpstats.fit(rows, kind="regression"))


def test_statistical_stage_draws_follow_the_models_predictive_distribution():
    """With fixed input statistics every Monte Carlo draw sees the same row: the draws must be the model's predictive."""
    rng = np.random.default_rng(4)
    n = 120
    rows = pd.DataFrame({"block": "relu", "block_spec": "relu", "mu_in": rng.uniform(-1, 1, n),
                         "sigma_in": rng.uniform(0.5, 2, n), "sigma_dot_in": rng.uniform(3, 30, n),
                         "smp_in": 0.0, "path_length": 1.0, "dt": 1 / 511})
    from smpstats.theory_terms import theory_terms

    rows["smp_out"] = theory_terms(rows)["theory"] * rng.gamma(20, 1 / 20, n)
    model = smpstats.fit(rows, kind="regression")
    fixed = SmoothInputs(mu=0.3, sigma=1.0, length_scale=0.15)
    chain = predict_chain("relu", input_shape=(4,), path=fixed, n_draws=3000, model=model, seed=2, n_points=512)
    one = rows.iloc[:1].assign(mu_in=0.3, sigma_in=1.0, sigma_dot_in=1.0 / 0.15, sigma_pool_in=1.0)
    direct = model.predict(one, n_draws=20000, seed=3)
    got = chain.predictive[0]
    assert got.mean()[0] == pytest.approx(direct.mean()[0], rel=0.02)
    assert got.std()[0] == pytest.approx(direct.std()[0], rel=0.08)


@pytest.mark.parametrize("spec, shape", [("batchnorm", (2048, 4)), ("avgpool1d(kernel_size=4)", (8, 256)),
                                         ("maxpool1d(kernel_size=2)", (8, 256))])
def test_moment_rules_match_the_torch_blocks(spec, shape):
    """Mean-field output moments against the real blocks (random init) on i.i.d. Gaussian units."""
    import torch

    from smpstats.simulation import _stage_columns

    chain = smpstats.build_chain(spec, shape, generator=0)
    cols = _stage_columns(chain)[0]
    rng = np.random.default_rng(0)
    mu, sigma, sigma_dot, dt = 0.4, 1.3, 2.0, 1e-3
    x = rng.normal(mu, sigma, size=(400, *shape))
    step = x + dt * rng.normal(0, sigma_dot, size=x.shape)  # a slope per unit, independent of the value
    with torch.no_grad():
        y0 = chain.module(torch.from_numpy(x)).numpy()
        y1 = chain.module(torch.from_numpy(step)).numpy()
    m, s, d = propagate_moments(cols["block"], cols, mu, sigma, sigma_dot)
    assert float(m) == pytest.approx(y0.mean(), abs=0.05 * sigma)
    assert float(s) == pytest.approx(y0.std(), rel=0.06)
    assert float(d) == pytest.approx(np.sqrt(np.mean(((y1 - y0) / dt) ** 2)), rel=0.06)


def test_default_regression_model_ships_with_the_package():
    from smpstats.default_models import default_model
    from smpstats.theory_terms import FAMILIES

    model = default_model("regression")
    assert model.kind == "regression"
    assert set(model.families) >= set(FAMILIES.values()) - {"identity"}
    pred = predict_chain(SPEC, input_shape=(8,), path=FAMILY, model="regression", n_draws=200, seed=0)
    assert pred.kind == "regression" and np.all(pred.draws[1:] > 0)
    with pytest.raises(InputError, match="default models exist for kind 'regression' or 'bayes'; got 'glm'"):
        default_model("glm")


def test_check_against_simulated_networks():
    sim = smpstats.simulate(SPEC, n_trials=30, seed=3, input_shape=(8,), n_points=513, path=FAMILY, method="exact")
    pred = predict_chain(SPEC, input_shape=(8,), path=FAMILY, n_draws=500, seed=2)
    table = pred.check(sim)
    assert list(table["stage"]) == [1, 2, 3, 4]
    observed = sim[sim.stage == 3]["smp_out"].to_numpy()
    lo, hi = pred.predictive[2].interval(0.9)
    row = table.iloc[2]
    assert row["coverage_90"] == pytest.approx(np.mean((observed >= lo[0]) & (observed <= hi[0])))
    assert row["ratio"] == pytest.approx(pred.predictive[2].mean()[0] / observed.mean())
    # a prediction that is off by 3x scores a worse CRPS than the real one
    scaled = smpstats.ChainPrediction(pred.spec, pred.kind, pred.stages,
                                      tuple(smpstats.Predictive(p.draws * 3.0, kind="theory") for p in pred.predictive))
    assert scaled.check(sim)["crps"].iloc[2] > 1.5 * row["crps"]
    with pytest.raises(InputError, match="simulate the same chain"):
        pred.check(sim[sim.stage < 3])


def test_unpropagated_baseline_keeps_the_input_moments():
    spec = "linear(out_features=16) | relu | linear(out_features=16) | relu"
    full = predict_chain(spec, input_shape=(8,), path=FAMILY, n_draws=300, seed=4)
    naive = predict_chain(spec, input_shape=(8,), path=FAMILY, n_draws=300, seed=4, propagate=False)
    # the naive chain applies ReLU to the raw input moments (mean 0.3, std 1), not the linear map's output,
    # with the spread of the drawn weight rows (fan-in 8; no static share known without the state)
    from smpstats import theory

    expected = theory.relu_expected_smp(0.3, 1.0, 1 / 0.15, 1.0) * theory.random_affine_kink_factor(8, 0.0)
    assert naive.predictive[1].mean()[0] == pytest.approx(expected, rel=1e-9)
    assert full.predictive[1].mean()[0] != pytest.approx(expected, rel=0.05)


def test_theory_on_column_arrays_matches_the_table_version():
    from smpstats.theory_terms import RECTIFIER_INPUT_COLUMNS, previous_fan_in, theory_term_arrays, theory_terms

    sim = smpstats.simulate("conv1d(out_channels=4,kernel_size=3)|relu|maxpool1d(kernel_size=2)|leaky_relu"
                            "|avgpool1d(kernel_size=2)|batchnorm|tanh", n_trials=4, seed=1, input_shape=(2, 32),
                            path="kinked")
    sim["prev_block_spec"] = sim.groupby("trial")["block_spec"].shift(fill_value="")
    sim["prev_fan_in"] = previous_fan_in(sim)
    for c in RECTIFIER_INPUT_COLUMNS:  # the max pool reads its ReLU's input
        sim[f"prev_{c}"] = sim.groupby("trial")[c].shift(fill_value="" if c == "prev_block_spec" else np.nan)
    assert sim["prev_fan_in"].notna().sum() == 4  # the ReLU after the conv, in each trial
    table = theory_terms(sim)
    arrays = theory_term_arrays({c: sim[c].to_numpy() for c in sim.columns}, len(sim))
    for name in ("theory_new", "theory_carried", "theory"):
        np.testing.assert_array_equal(arrays[name], table[name].to_numpy())
    assert list(arrays["family"]) == list(table["family"])


def test_finite_width_draws_are_reproducible_and_spread_with_depth():
    spec = " | ".join(["linear(out_features=8) | relu"] * 4)
    a = predict_chain(spec, input_shape=(8,), path=FAMILY, n_draws=400, seed=3, path_noise=False)
    b = predict_chain(spec, input_shape=(8,), path=FAMILY, n_draws=400, seed=3, path_noise=False)
    np.testing.assert_array_equal(a.draws, b.draws)
    assert not np.array_equal(a.draws, predict_chain(spec, input_shape=(8,), path=FAMILY, n_draws=400, seed=4,
                                                     path_noise=False).draws)
    infinite = predict_chain(spec, input_shape=(8,), path=FAMILY, n_draws=400, seed=3, finite_width=False,
                             path_noise=False)
    # one input family point: the infinite-width draws do not spread at all, the finite networks do, more with depth
    assert np.ptp(infinite.draws[-1]) < 1e-9 * infinite.draws[-1].mean()
    cv = a.draws.std(axis=1)[1:] / a.draws.mean(axis=1)[1:]
    assert cv[-1] > cv[0] > 0.05
    assert a.stages["sigma_pool_in"].iloc[-1] < infinite.stages["sigma_pool_in"].iloc[-1]  # E sqrt(q) < sqrt(E q)


def test_given_weights_stay_deterministic():
    from torch import nn

    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(6, 10), nn.ReLU(), nn.Linear(10, 10), nn.ReLU())
    fixed = SmoothInputs(mu=0.2, sigma=1.0, length_scale=0.2)
    finite = predict_chain(module, input_shape=(6,), path=fixed, n_draws=50, seed=1)
    infinite = predict_chain(module, input_shape=(6,), path=fixed, n_draws=50, seed=1, finite_width=False)
    np.testing.assert_array_equal(finite.draws, infinite.draws)  # one network: nothing about its width is drawn
    expected = predict_chain(module, input_shape=(6,), path=fixed, n_draws=400, seed=1, path_noise=False)
    assert np.ptp(expected.draws[-1]) < 1e-9 * expected.draws[-1].mean()
    # its paths still differ in their number of kinks and where they lie: a spread about the same expectation
    # (up to the Monte Carlo error of 400 draws, log sd about 0.4, and of the 64 paths' location factors)
    paths = predict_chain(module, input_shape=(6,), path=fixed, n_draws=400, seed=1).draws
    assert np.all(paths[1:].std(axis=1) > 0.05 * expected.draws[1:, 0])
    np.testing.assert_allclose(paths[1:].mean(axis=1), expected.draws[1:, 0], rtol=0.06)


def test_strided_pooling_that_skips_positions_predicts_without_invalid_values():
    """A window of 3 with stride 2 over 22 positions never reaches the last one: its kinks end there, no 0/0."""
    import warnings

    spec = ("conv1d(out_channels=4,kernel_size=3,padding=1) | relu | avgpool1d(kernel_size=2) | "
            "conv1d(out_channels=4,kernel_size=3) | relu | maxpool1d(kernel_size=3, stride=2)")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        pred = predict_chain(spec, input_shape=(2, 24), n_draws=50)
    assert np.isfinite(pred.draws).all() and (pred.draws[-1] > 0).all()


def test_max_pooling_right_after_a_conv_switches_on_the_spread_within_channels():
    """The channels of a random conv differ in mean; the propagated share of that spread keeps it out of the
    pooling windows (with the pooled std the prediction was 11 % low here)."""
    spec, shape = "conv1d(out_channels=8, kernel_size=5) | maxpool1d(kernel_size=3)", (8, 64)
    sim = smpstats.simulate(spec, n_trials=30, seed=4, input_shape=shape, path="smooth", n_points=1024)
    pred = smpstats.predict_chain(spec, input_shape=shape, path="smooth", n_draws=1000, seed=1, n_points=1024)
    assert pred.predictive[1].mean().mean() / sim.loc[sim["stage"] == 2, "smp_out"].mean() == pytest.approx(1.0,
                                                                                                          abs=0.05)


@pytest.mark.parametrize("sample_module", [False, True])
def test_given_conv_then_max_pooling_is_predicted_within_channels(sample_module):
    """Given weights: the rows' sums and biases spread the channels' means (mean-field rules, 0.93 with the
    pooled std), or the windows are followed one by one (sampled)."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Conv1d(8, 8, 5), torch.nn.MaxPool1d(3)).double()
    sim = smpstats.simulate(module, n_trials=30, seed=4, input_shape=(8, 64), path="smooth", n_points=1024)
    pred = smpstats.predict_chain(module, input_shape=(8, 64), path="smooth", n_draws=500, seed=1, n_points=1024,
                                  sample_module=sample_module)
    ratio = pred.predictive[1].mean().mean() / sim.loc[sim["stage"] == 2, "smp_out"].mean()
    assert ratio == pytest.approx(1.0, abs=0.04)


def test_max_pooling_after_a_relu_takes_the_rectified_units_moments():
    """max(relu(x_i)) = relu(max(x_i)): the pooled layer's std and RMS slope against simulation (the rule for
    Gaussian units keeps the ReLU's slope, which the max's active share exceeds)."""
    spec, shape = "relu | maxpool1d(kernel_size=4) | flatten", (8, 64)
    sim = smpstats.simulate(spec, 40, seed=3, input_shape=shape, n_points=257, path=FAMILY)
    pred = predict_chain(spec, input_shape=shape, path=FAMILY, n_draws=200, seed=0)
    after = sim[sim["stage"] == 3]
    for column in ("mu_in", "sigma_pool_in", "sigma_dot_in"):
        assert pred.stages[column].iloc[2] == pytest.approx(after[column].mean(), rel=0.04), column
    assert after["sigma_dot_in"].mean() > 1.15 * sim.loc[sim["stage"] == 2, "sigma_dot_in"].mean()


def test_max_pooling_after_a_batchnorm_relu_keeps_the_relus_ratio_to_simulation():
    """conv -> batch norm -> ReLU -> max pool: the pooling's kinks per batch-norm channel. The simulated networks
    vary a lot (few channels), so the check is on the pooling's SMP relative to the ReLU's (pooled moments of the
    ReLU's output: 0.90 of the simulated ratio)."""
    spec = "conv1d(out_channels=8, kernel_size=3) | batchnorm | relu | maxpool1d(kernel_size=4)"
    family = SmoothInputs(mu=(-0.5, 0.5), sigma=(0.5, 1.5), length_scale=(0.1, 0.3))
    sim = smpstats.simulate(spec, 60, seed=5, input_shape=(2, 32), n_points=257, path=family, method="exact")
    check = predict_chain(spec, path=sim[sim["stage"] == 1], input_shape=(2, 32)).check(sim).set_index("stage")
    assert check.loc[4, "ratio"] / check.loc[3, "ratio"] == pytest.approx(1.0, abs=0.05)


FIXED = SmoothInputs(mu=(0.0, 0.0), sigma=(1.0, 1.0), length_scale=(0.2, 0.2))  # one input family point


@pytest.mark.parametrize("spec, shape", [("relu", (16,)),
                                         pytest.param("linear(out_features=16) | relu", (8,), marks=pytest.mark.slow)])
def test_path_noise_gives_the_spread_of_single_paths(spec, shape):
    """At one input family point a ReLU's SMP still scatters from path to path: a path holds a few dozen kinks
    (Poisson count, Rayleigh jumps). Simulated per-path CV: 0.18 (bare ReLU on 16 units), 0.26 (linear | relu);
    the event model predicts 0.23 and 0.28 (zero crossings of a smooth process are a little sub-Poisson)."""
    sim = smpstats.simulate(spec, 300, seed=3, input_shape=shape, n_points=513, path=FIXED, method="exact")
    obs = sim.loc[sim["stage"] == sim["stage"].max(), "smp_out"].to_numpy()
    noisy = predict_chain(spec, input_shape=shape, path=FIXED, n_draws=4000, seed=1).draws[-1]
    quiet = predict_chain(spec, input_shape=shape, path=FIXED, n_draws=4000, seed=1, path_noise=False).draws[-1]
    assert noisy.mean() == pytest.approx(quiet.mean(), rel=0.02)  # mean-1 factors: the expectation is kept
    assert noisy.mean() == pytest.approx(obs.mean(), rel=0.06)
    ratio = (noisy.std() / noisy.mean()) / (obs.std() / obs.mean())
    assert 0.8 < ratio < 1.35
    if spec == "relu":  # no random weights: without path noise every draw is the same expectation
        assert np.ptp(quiet) < 1e-9 * quiet.mean()


def test_path_noise_is_reproducible_and_leaves_the_networks_drawn_alone():
    spec = " | ".join(["linear(out_features=8) | relu"] * 3)
    a = predict_chain(spec, input_shape=(8,), path=FAMILY, n_draws=300, seed=5)
    np.testing.assert_array_equal(a.draws, predict_chain(spec, input_shape=(8,), path=FAMILY, n_draws=300, seed=5).draws)
    quiet = predict_chain(spec, input_shape=(8,), path=FAMILY, n_draws=300, seed=5, path_noise=False)
    # the same networks and inputs (their moments), each draw's SMP scattered about its expectation
    pd.testing.assert_frame_equal(a.stages, quiet.stages)
    log_ratio = np.log(a.draws[1:] / quiet.draws[1:])
    assert np.all(np.abs(log_ratio.mean(axis=1)) < 0.05) and np.all(log_ratio.std(axis=1) > 0.05)


@pytest.mark.slow
def test_spread_of_a_deep_mlp_grows_with_depth_like_simulated_networks():
    """At one input family point the SMP of random 16-unit ReLU MLPs spreads more with depth (log sd 0.28 at the
    first ReLU, 0.33 at the third); each network's gain on the kinks it carries, multiplied block by block, is what
    grows it (without it the prediction's log sd stays at 0.23)."""
    spec = " | ".join(["linear(out_features=16) | relu"] * 3)
    sim = smpstats.simulate(spec, 240, seed=11, input_shape=(8,), n_points=513, path=FIXED, method="exact")
    pred = predict_chain(spec, input_shape=(8,), path=FIXED, n_draws=4000, seed=1)
    for stage in (2, 6):
        obs = np.log(sim.loc[sim["stage"] == stage, "smp_out"].to_numpy())
        assert np.log(pred.draws[stage - 1]).std() == pytest.approx(obs.std(), rel=0.2)
    spread = np.log(pred.draws).std(axis=1)
    assert spread[5] > 1.1 * spread[1]
    lo, hi = pred.predictive[5].interval(0.9)
    assert 0.82 <= np.mean((np.exp(obs) >= lo[0]) & (np.exp(obs) <= hi[0])) <= 0.97


def test_path_noise_counts_the_kinks_of_a_kinked_input():
    """Kinked inputs hold a Poisson number of kinks with normal jumps (|J| half-normal: E J**2 / (E|J|)**2 = pi/2);
    a linear block carries them, so each path's SMP scatters by that count on top of the family's parameters."""
    from smpstats.inputs import KinkedInputs

    family = KinkedInputs(mu=(0.0, 0.0), sigma=(1.0, 1.0), length_scale=(0.2, 0.2), kink_rate=(3.0, 3.0),
                          jump_ratio=(0.5, 0.5))
    sim = smpstats.simulate("linear(out_features=8)", 300, seed=2, input_shape=(4,), n_points=513, path=family,
                            method="exact")
    obs = sim["smp_out"].to_numpy()
    noisy = predict_chain("linear(out_features=8)", input_shape=(4,), path=family, n_draws=4000, seed=1).draws[0]
    quiet = predict_chain("linear(out_features=8)", input_shape=(4,), path=family, n_draws=4000, seed=1,
                          path_noise=False).draws[0]
    assert noisy.mean() == pytest.approx(obs.mean(), rel=0.1)
    cv = [d.std() / d.mean() for d in (noisy, quiet, obs)]
    assert cv[0] == pytest.approx(cv[2], rel=0.3) and cv[1] < 0.7 * cv[2]


def test_given_weight_paths_spread_by_where_they_lie():
    """With few input units the paths' locations spread a given network's SMP beyond their counts of kinks; the
    spread leaves the mean where it was, and ``path_templates=0`` turns it off."""
    from torch import nn

    torch.manual_seed(4)
    module = nn.Sequential(nn.Linear(3, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 1))
    fixed = SmoothInputs(mu=0.2, sigma=1.0, length_scale=0.25)
    located = predict_chain(module, input_shape=(3,), path=fixed, n_draws=1000, seed=2).draws[-1]
    counted = predict_chain(module, input_shape=(3,), path=fixed, n_draws=1000, seed=2, path_templates=0).draws[-1]
    # 300 exactly simulated paths of this network: log sd 0.48 at the output; predicted 0.50 with the locations
    # (90 % intervals hold 90-94 % of the paths per stage), 0.43 without (85-89 %)
    assert np.std(np.log(located)) > 1.12 * np.std(np.log(counted))
    assert located.mean() == pytest.approx(counted.mean(), rel=0.06)
    with pytest.raises(InputError, match="path_templates"):
        predict_chain(module, input_shape=(3,), path=fixed, n_draws=10, path_templates=-1)
