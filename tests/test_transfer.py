"""Transfer models: theory terms, predictive objects, regression tier, interface, persistence, checks."""

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import smpstats
from smpstats import theory
from smpstats.checks import check
from smpstats.errors import DataFileError, InputError
from smpstats.predictive import Predictive, crps_from_draws
from smpstats.regression import RegressionTransfer, _design_matrix, _dispersion_glm
from smpstats.theory_terms import theory_terms
from smpstats.transfer import TheoryTransfer, fit, load_model
from smpstats.transfer_data import design_frame


def _rows(block, n, rng, **params):
    """A simulate-like table of one block with random input statistics (no smp_out)."""
    df = pd.DataFrame({
        "block": block,
        "block_spec": params.pop("spec", block),
        "mu_in": rng.uniform(-1, 1, n),
        "sigma_in": rng.uniform(0.5, 2, n),
        "sigma_dot_in": rng.uniform(3, 30, n),
        "smp_in": rng.uniform(0.0, 20.0, n),
        "path_length": 1.0,
        "dt": 1 / 511,
    })
    for k, v in params.items():
        df[k] = v
    return df


def _synthetic(n=400, seed=0, factor=1.2, shape=25.0, p_zero=0.0):
    """ReLU and max-pool rows whose smp_out is theory * factor * Gamma(shape)/shape, zeros with p_zero."""
    rng = np.random.default_rng(seed)
    df = pd.concat([_rows("relu", n, rng), _rows("maxpool1d", n, rng, spec="maxpool1d(kernel_size=2)", window=2)],
                   ignore_index=True)
    th = theory_terms(df)["theory"].to_numpy()
    y = th * factor * rng.gamma(shape, 1 / shape, size=len(df))
    y[rng.uniform(size=len(df)) < p_zero] = 0.0
    df["smp_out"] = y
    return df


# ---------------------------------------------------------------- theory terms


def test_theory_terms_match_the_closed_forms():
    rng = np.random.default_rng(1)
    df = pd.concat([
        _rows("relu", 5, rng),
        _rows("leaky_relu", 5, rng, negative_slope=0.2),
        _rows("prelu", 5, rng, alpha=0.3),
        _rows("maxpool2d", 5, rng, window=4),
        _rows("conv1d", 5, rng, fan_in=24, sigma_w=math.sqrt(2)),
        _rows("avgpool1d", 5, rng, window=3),
        _rows("gelu", 5, rng),
    ], ignore_index=True)
    t = theory_terms(df)
    a = [df[c].to_numpy() for c in ("mu_in", "sigma_in", "sigma_dot_in")]
    s_in = df["smp_in"].to_numpy()
    np.testing.assert_allclose(t["theory"][:5], theory.relu_expected_smp(*[x[:5] for x in a], 1.0, s_in[:5]), rtol=1e-12)
    np.testing.assert_allclose(t["theory_new"][:5], theory.relu_expected_smp(*[x[:5] for x in a], 1.0, 0.0), rtol=1e-12)
    np.testing.assert_allclose(t["theory"][5:10], theory.leaky_relu_expected_smp(
        *[x[5:10] for x in a], 1.0, s_in[5:10], negative_slope=0.2), rtol=1e-12)
    np.testing.assert_allclose(t["theory"][10:15], theory.prelu_expected_smp(
        *[x[10:15] for x in a], 1.0, s_in[10:15], weight=0.3), rtol=1e-12)
    np.testing.assert_allclose(t["theory"][15:20], theory.maxpool_expected_smp(
        4, *[x[15:20] for x in a], 1.0, s_in[15:20]), rtol=1e-12)
    # affine: E||w||_1 with w ~ N(0, 2 / fan_in) is sqrt(2) * sqrt(2 * 24 / pi)
    np.testing.assert_allclose(t["theory_carried"][20:25], math.sqrt(2) * math.sqrt(48 / math.pi) * s_in[20:25])
    assert (t["theory_new"][20:35] == 0).all()
    np.testing.assert_allclose(t["theory"][25:30], s_in[25:30])
    np.testing.assert_allclose(t["theory"][30:35], theory.smooth_activation_expected_smp(
        "gelu", a[0][30:35], a[1][30:35], s_in[30:35]), rtol=1e-12)
    assert set(t["family"]) == {"relu", "leaky_relu", "maxpool", "affine", "avgpool", "smooth"}


def test_theory_terms_use_the_pooled_sigma_when_present():
    rng = np.random.default_rng(2)
    df = _rows("relu", 4, rng)
    df["sigma_pool_in"] = df["sigma_in"] * 1.3
    t = theory_terms(df)["theory_new"]
    expected = theory.relu_expected_smp(df["mu_in"], df["sigma_pool_in"], df["sigma_dot_in"], 1.0, 0.0)
    np.testing.assert_allclose(t, expected, rtol=1e-12)


def test_a_weight_average_of_the_affine_formula_is_right():
    """The E||w||_1 factor against Monte Carlo weights of the kaiming family."""
    rng = np.random.default_rng(3)
    fan_in = 40
    w = rng.normal(0, math.sqrt(2 / fan_in), size=(20000, fan_in))
    df = _rows("linear", 1, rng, fan_in=fan_in, sigma_w=math.sqrt(2))
    factor = theory_terms(df)["theory"].iloc[0] / df["smp_in"].iloc[0]
    assert np.abs(w).sum(1).mean() == pytest.approx(factor, rel=0.01)


@pytest.mark.parametrize("spec, shape, path, tol", [
    ("relu", (4, 32), "smooth", 0.05),
    ("conv1d(out_channels=8, kernel_size=3) | relu", (4, 32), "smooth", 0.05),
    ("leaky_relu(negative_slope=0.1)", (4, 32), "kinked-default", 0.05),
    ("avgpool1d(kernel_size=2)", (4, 32), "kinked", 0.03),
    ("batchnorm", (4, 32), "kinked", 0.06),
    ("maxpool1d(kernel_size=2)", (8, 32), "smooth", 0.05),
])
def test_theory_terms_against_simulation(spec, shape, path, tol):
    from smpstats.inputs import KinkedInputs

    # kinks large and sparse enough for the grid to resolve them after an affine block
    family = KinkedInputs(kink_rate=(1, 3), jump_ratio=(2, 4), length_scale=(0.15, 0.25)) if path == "kinked" else path
    family = "kinked" if path == "kinked-default" else family
    df = smpstats.simulate(spec, n_trials=30, seed=5, input_shape=shape, path=family)
    df = df[df["stage"] == df["n_stages"]]
    t = theory_terms(df)
    assert df["smp_out"].mean() / t["theory"].mean() - 1 == pytest.approx(0.0, abs=tol)


def test_max_pooling_after_a_conv_switches_on_the_spread_within_channels():
    """The inputs of one pooling window share their channel's mean; the spread of the channels' means
    (input mean times each channel's weight sum) does not make them tie more often."""
    df = smpstats.simulate("conv1d(out_channels=8, kernel_size=5) | maxpool1d(kernel_size=3)", n_trials=30, seed=9,
                           input_shape=(8, 64), path="smooth", n_points=1024)
    pool = df[df["stage"] == 2]
    ratio = pool["smp_out"].mean() / theory_terms(pool)["theory"].mean()
    assert ratio - 1 == pytest.approx(0.0, abs=0.04)
    pooled = theory_terms(pool.drop(columns="sigma_chan_in"))["theory"].mean()  # the layer's pooled std
    assert pool["smp_out"].mean() / pooled - 1 > 0.05


def _last_max_pool_theory_errors(spec: str, n_trials: int) -> tuple[float, float]:
    """Relative error of the theory's mean SMP at the chain's last stage (a max pool after a ReLU) against exact
    SMP: with the rows before it (the ReLU's input), and with the pooled moments of the ReLU's output alone."""
    from smpstats.inputs import SmoothInputs

    family = SmoothInputs(mu=(-0.5, 0.5), sigma=(0.5, 1.5), length_scale=(0.1, 0.3))
    df = smpstats.simulate(spec, n_trials=n_trials, seed=5, input_shape=(2, 32), n_points=257, path=family,
                           method="exact")
    pool = df["stage"] == df["n_stages"]
    exact = df.loc[pool, "smp_out"].mean()
    pooled = theory_terms(df[pool].assign(prev_block_spec="relu"))["theory"].mean()  # without the rows before
    return theory_terms(df)["theory"][pool].mean() / exact - 1, pooled / exact - 1


def test_max_pooling_after_a_relu_switches_and_carries_within_channels():
    """The second max pool of a conv -> ReLU -> max pool stack, exact SMP: a window's units share their channel's
    mean, so all of them lie below 0 together more often than independent units would; the pooled moments of the
    ReLU's output let too many older kinks through."""
    spec = " | ".join(["conv1d(out_channels=6, kernel_size=3, padding=1) | relu | maxpool1d(kernel_size=2)"] * 2)
    channels, pooled = _last_max_pool_theory_errors(spec, 80)
    assert channels == pytest.approx(0.0, abs=0.035)
    assert pooled > 0.04


def test_max_pooling_after_a_batchnorm_relu_averages_over_the_batchnorm_channels():
    """conv -> batch norm -> ReLU -> max pool, exact SMP: each batch-norm channel has its own gain and shift, and
    a window switches within one channel; the pooled moments of the ReLU's output count too few kinks."""
    channels, pooled = _last_max_pool_theory_errors(
        "conv1d(out_channels=8, kernel_size=3) | batchnorm | relu | maxpool1d(kernel_size=4)", 60)
    assert channels == pytest.approx(0.0, abs=0.05)
    assert pooled < -0.05


def test_theory_terms_of_a_row_do_not_depend_on_the_other_rows_of_the_table():
    parts = []
    for spec in ("leaky_relu(negative_slope=0.1) | maxpool1d(kernel_size=2)", "batchnorm | leaky_relu(negative_slope=0.3)",
                 "maxpool1d(kernel_size=2) | prelu(alpha=0.2)", "prelu(alpha=0.25) | gelu", "relu | silu"):
        df = smpstats.simulate(spec, n_trials=3, seed=1, input_shape=(4, 32), n_points=256)
        parts.append(df[df["stage"] == 2].assign(prev_block_spec=spec.split(" | ")[0]))
    alone = pd.concat([theory_terms(p) for p in parts], ignore_index=True)
    together = theory_terms(pd.concat(parts, ignore_index=True))
    np.testing.assert_allclose(together["theory"], alone["theory"], rtol=1e-12)


def test_theory_terms_look_the_previous_block_up_in_a_chain_table():
    """A simulate table of a chain has no prev_block_spec column: the block before is found by trial and stage."""
    from smpstats.theory_terms import RECTIFIER_INPUT_COLUMNS

    df = smpstats.simulate("relu | maxpool1d(kernel_size=3)", n_trials=4, seed=2, input_shape=(4, 32), n_points=256)
    pool = df["stage"] == 2
    relu = df[df["stage"] == 1].set_index("trial").loc[df.loc[pool, "trial"]].assign(prev_block_spec="")
    given = {f"prev_{c}": relu[c].to_numpy() for c in RECTIFIER_INPUT_COLUMNS}  # the ReLU's input, for the max pool
    np.testing.assert_allclose(theory_terms(df)["theory"][pool],
                               theory_terms(df[pool].assign(prev_block_spec="relu", **given))["theory"], rtol=1e-12)
    assert not np.allclose(theory_terms(df)["theory"][pool], theory_terms(df[pool])["theory"], rtol=0.01)


@pytest.mark.parametrize("spec, path", [("relu | silu", "smooth"), ("relu | tanh", "smooth"),
                                        ("relu | gelu", "kinked"), ("leaky_relu(negative_slope=0.1) | gelu", "smooth"),
                                        ("prelu(alpha=0.25) | tanh", "smooth"),
                                        ("leaky_relu(negative_slope=0.2) | softplus", "kinked")])
def test_smooth_activation_after_relu_scales_the_relus_kinks_by_the_slope_at_zero(spec, path):
    """silu(relu(x)): the ReLU's kinks sit at 0, where silu' = 1/2 (tanh' = 1); a fine grid resolves them.
    A leaky ReLU's too, and its older kinks sit on both sides of 0, at the slope times the pre-activation."""
    df = smpstats.simulate(spec, n_trials=30, seed=6, input_shape=(4, 32), path=path, n_points=4096)
    act = df[df["stage"] == 2].assign(prev_block_spec=spec.split(" | ")[0])
    assert act["smp_out"].mean() / theory_terms(act)["theory"].mean() - 1 == pytest.approx(0.0, abs=0.03)
    if path == "smooth":  # the value-distribution gain E|g'(X)| misses the ReLU's zeros by far ...
        generic = theory_terms(act.assign(prev_block_spec="").drop(columns=_KINK_VALUE_COLUMNS))["theory"].mean()
        assert abs(act["smp_out"].mean() / generic - 1) > 0.15
        # ... while the gain at the measured values of the kinks finds them without knowing the block before
        at_kinks = theory_terms(act.assign(prev_block_spec=""))["theory"].mean()
        assert act["smp_out"].mean() / at_kinks - 1 == pytest.approx(0.0, abs=0.03)


@pytest.mark.parametrize("spec", ["maxpool1d(kernel_size=2) | gelu", "maxpool1d(kernel_size=3) | silu"])
def test_smooth_activation_after_max_pooling_weights_switches_where_two_inputs_tie(spec):
    """gelu(max): switching kinks sit where two inputs tie, below the max's typical value, where gelu' is smaller."""
    df = smpstats.simulate(spec, n_trials=30, seed=7, input_shape=(8, 64), path="smooth", n_points=2048)
    act = df[df["stage"] == 2].assign(prev_block_spec=spec.split(" | ")[0])
    assert act["smp_out"].mean() / theory_terms(act)["theory"].mean() - 1 == pytest.approx(0.0, abs=0.04)
    generic = theory_terms(act.assign(prev_block_spec="").drop(columns=_KINK_VALUE_COLUMNS))["theory"].mean()
    assert act["smp_out"].mean() / generic - 1 < -0.15  # E|g'| at the max's own moments
    at_kinks = theory_terms(act.assign(prev_block_spec=""))["theory"].mean()  # at the values of its kinks
    assert act["smp_out"].mean() / at_kinks - 1 == pytest.approx(0.0, abs=0.06)


#: The measured moments of a signal's values at its kinks (``smpstats.simulate``).
_KINK_VALUE_COLUMNS = ["mu_kink_in", "sigma_kink_in"]


@pytest.mark.parametrize("spec", ["tanh", "silu", "softplus"])
def test_smooth_activation_on_kinked_inputs_takes_the_slope_at_the_kinks_values(spec):
    """Kinked inputs bend at the extremes of their piecewise-linear part: a saturating g' is smaller there than
    at typical values. The gain at the measured values of the kinks follows every trial; the signal's own
    moments miss by a trial-dependent amount (tanh: +4 % on average, ratios spread twice as wide)."""
    df = smpstats.simulate(spec, n_trials=40, seed=11, input_shape=(8, 64), path="kinked", n_points=2048)
    y = df["smp_out"].to_numpy()
    at_kinks = theory_terms(df)["theory"].to_numpy()
    pooled = theory_terms(df.drop(columns=_KINK_VALUE_COLUMNS))["theory"].to_numpy()
    assert y.mean() / at_kinks.mean() - 1 == pytest.approx(0.0, abs=0.04)
    assert np.std(np.log(y / at_kinks)) < 0.6 * np.std(np.log(y / pooled))


def test_theory_terms_errors():
    with pytest.raises(InputError, match="DataFrame"):
        theory_terms({"block": ["relu"]})
    with pytest.raises(InputError, match="lack the column"):
        theory_terms(pd.DataFrame({"block": ["relu"]}))
    rng = np.random.default_rng(0)
    df = _rows("relu", 2, rng)
    df.loc[1, "sigma_in"] = np.nan
    with pytest.raises(InputError, match="non-finite input statistics"):
        theory_terms(df)
    with pytest.raises(InputError, match="No transfer theory for block 'dropout'"):
        theory_terms(_rows("dropout", 1, rng))


def test_the_dispersion_glm_recovers_known_coefficients_from_squared_residuals():
    """d2 = phi * chi2_1 with log phi = X gamma: heavy-tailed, with strong covariates (where IRLS can fail)."""
    rng = np.random.default_rng(8)
    n = 6000
    X = np.column_stack([np.ones(n), rng.uniform(0, 1, n), rng.normal(2, 0.5, n), rng.integers(0, 2, n)])
    gamma = np.array([1.1, 0.8, -1.6, 2.2])
    offset = rng.normal(0, 0.3, n)
    d2 = np.maximum(np.exp(X @ gamma + offset) * rng.chisquare(1, n), 1e-12)
    np.testing.assert_allclose(_dispersion_glm(d2, X, offset), gamma, atol=0.15)


def test_design_frame_configs_follow_the_previous_stage():
    df = smpstats.simulate("conv1d(out_channels=4, kernel_size=3) | relu", n_trials=2, seed=0, input_shape=(2, 16))
    d = design_frame(df)
    assert list(d["config"]) == ["conv1d(out_channels=4, kernel_size=3)",
                                 "conv1d(out_channels=4, kernel_size=3) -> relu"] * 2
    assert list(d["chained"]) == [0.0, 1.0, 0.0, 1.0]


# ---------------------------------------------------------------- predictive


def test_crps_of_draws_matches_the_normal_closed_form():
    rng = np.random.default_rng(0)
    draws = rng.standard_normal((1, 200000))
    for y in (-1.0, 0.0, 2.5):
        exact = y * (2 * stats.norm.cdf(y) - 1) + 2 * stats.norm.pdf(y) - 1 / math.sqrt(math.pi)
        assert crps_from_draws(draws, np.array([y]))[0] == pytest.approx(exact, abs=3e-3)


def test_predictive_intervals_coverage_and_pit():
    rng = np.random.default_rng(1)
    mu = rng.uniform(1, 10, 2000)
    p = Predictive(mu[:, None] + rng.standard_normal((2000, 4000)))
    y = mu + rng.standard_normal(2000)
    lo, hi = p.interval(0.9)
    assert np.mean(hi - lo) == pytest.approx(2 * 1.6449, rel=0.01)
    assert p.coverage(y, 0.9) == pytest.approx(0.9, abs=0.02)
    assert stats.kstest(p.pit(y), "uniform").pvalue > 0.01
    # a forecast that is too narrow is caught
    narrow = Predictive(mu[:, None] + 0.3 * rng.standard_normal((2000, 500)))
    assert narrow.coverage(y, 0.9) < 0.5
    frame = p.to_frame()
    assert list(frame.columns) == ["mean", "std", "median", "lower_50", "upper_50", "lower_90", "upper_90"]
    with pytest.raises(InputError, match="strictly between 0 and 1"):
        p.interval(1.0)
    with pytest.raises(InputError, match="one entry per row"):
        p.coverage(y[:5])


def test_randomised_pit_is_uniform_with_point_masses():
    rng = np.random.default_rng(2)
    n = 3000
    zero = rng.uniform(size=(n, 1000)) < 0.3
    draws = np.where(zero, 0.0, rng.exponential(size=(n, 1000)))
    y = np.where(rng.uniform(size=n) < 0.3, 0.0, rng.exponential(size=n))
    assert stats.kstest(Predictive(draws).pit(y), "uniform").pvalue > 0.01


# ---------------------------------------------------------------- regression tier


def test_regression_recovers_a_known_correction_and_dispersion():
    train = _synthetic(n=600, seed=0, factor=1.2, shape=25.0)
    model = fit(train, kind="regression")
    assert set(model.to_frame()["family"]) == {"relu", "maxpool"}
    holdout = _synthetic(n=600, seed=1, factor=1.2, shape=25.0)
    pred = model.predict(holdout, n_draws=2000, seed=0)
    ratio = pred.mean() / (theory_terms(holdout)["theory"] * 1.2)
    assert np.median(ratio) == pytest.approx(1.0, abs=0.03)
    assert pred.coverage(holdout["smp_out"], 0.9) == pytest.approx(0.9, abs=0.03)
    # predictive CV matches the Gamma shape 25 (CV 0.2)
    assert np.median(pred.std() / pred.mean()) == pytest.approx(0.2, rel=0.15)


def test_regression_hurdle_predicts_the_zero_fraction():
    train = _synthetic(n=800, seed=2, p_zero=0.2)
    model = fit(train, kind="regression")
    assert model.fits["relu"].hurdle_kind == "logit"
    pred = model.predict(_synthetic(n=300, seed=3, p_zero=0.2), n_draws=1000)
    assert (pred.draws == 0).mean() == pytest.approx(0.2, abs=0.03)


def test_regression_quantiles_bracket_the_data():
    train = _synthetic(n=600, seed=4)
    model = fit(train, kind="regression")
    hold = _synthetic(n=600, seed=5)
    q = model.predict_quantiles(hold)
    inside = ((hold["smp_out"] >= q["q05"]) & (hold["smp_out"] <= q["q95"])).mean()
    assert inside == pytest.approx(0.9, abs=0.04)


def test_regression_rejects_rows_without_theory_and_too_few_rows():
    rng = np.random.default_rng(0)
    df = _rows("gelu", 20, rng)
    df["smp_in"] = 0.0
    df["smp_out"] = 0.0
    with pytest.raises(InputError, match="theory SMP is 0"):
        fit(df, kind="regression")
    with pytest.raises(InputError, match="at least 8"):
        fit(_synthetic(n=3), kind="regression")


# ---------------------------------------------------------------- interface and persistence


def test_theory_tier_predicts_the_theory_without_spread():
    df = _synthetic(n=10)
    pred = fit(df, kind="theory").predict(df, n_draws=3)
    np.testing.assert_allclose(pred.draws, np.repeat(theory_terms(df)["theory"].to_numpy()[:, None], 3, axis=1))


def test_fit_and_predict_errors():
    df = _synthetic(n=20)
    with pytest.raises(InputError, match="kind must be one of"):
        fit(df, kind="gp")
    with pytest.raises(InputError, match="DataFrame"):
        fit(df.to_numpy())
    bad = df.copy()
    bad.loc[0, "smp_out"] = -1.0
    with pytest.raises(InputError, match="smp_out must be finite and >= 0"):
        fit(bad)
    model = fit(df, kind="regression")
    rng = np.random.default_rng(0)
    with pytest.raises(InputError, match="fitted on the block families maxpool, relu; the inputs contain affine"):
        model.predict(_rows("linear", 2, rng, fan_in=4, sigma_w=1.0))
    with pytest.raises(InputError, match="n_draws must be an int >= 1"):
        model.predict(df, n_draws=0)
    with pytest.raises(InputError, match="takes no options"):
        fit(df, kind="regression", draws=10)


def test_save_load_round_trip_and_bad_files(tmp_path):
    df = _synthetic(n=50)
    for kind in ("theory", "regression"):
        model = fit(df, kind=kind)
        path = model.save(tmp_path / f"{kind}.json")
        again = load_model(path)
        assert type(again) is type(model)
        np.testing.assert_array_equal(again.predict(df, n_draws=50, seed=3).draws, model.predict(df, n_draws=50, seed=3).draws)
    with pytest.raises(DataFileError, match="No model file"):
        load_model(tmp_path / "missing.json")
    (tmp_path / "foreign.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(DataFileError, match="not a smpstats model file"):
        load_model(tmp_path / "foreign.json")
    text = (tmp_path / "regression.json").read_text()
    (tmp_path / "truncated.json").write_text(text[: len(text) // 2])
    with pytest.raises(DataFileError, match="not valid JSON"):
        load_model(tmp_path / "truncated.json")
    doc = json.loads(text)
    doc["model"]["families"]["relu"]["beta"] = [1.0]
    (tmp_path / "damaged.json").write_text(json.dumps(doc))
    with pytest.raises(DataFileError, match="damaged regression model"):
        load_model(tmp_path / "damaged.json")
    (tmp_path / "fake.nc").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
    with pytest.raises(DataFileError, match="not a readable smpstats Bayesian model"):
        load_model(tmp_path / "fake.nc")


def test_a_failed_save_keeps_the_old_file(tmp_path, monkeypatch):
    df = _synthetic(n=50)
    model = fit(df, kind="regression")
    path = model.save(tmp_path / "m.json")
    before = path.read_bytes()

    def boom(self):
        raise RuntimeError("disk full")

    monkeypatch.setattr(RegressionTransfer, "to_dict", boom)
    with pytest.raises(RuntimeError):
        model.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


# ---------------------------------------------------------------- checks


def test_check_reports_calibrated_and_miscalibrated_models():
    train = _synthetic(n=500, seed=6)
    hold = _synthetic(n=500, seed=7)
    report = check(fit(train, kind="regression"), hold, n_draws=800)
    row = report.table.set_index("family").loc["all"]
    assert 0.86 <= row["coverage_90"] <= 0.94
    assert abs(row["mean_rel_error"]) < 0.03
    assert report.passed
    json.dumps(report.to_dict())
    # the theory tier has no spread: its intervals cover (almost) nothing, and the report says so
    theory_report = check(TheoryTransfer(("maxpool", "relu")), hold)
    assert theory_report.table["coverage_90"].max() < 0.1
    assert not theory_report.passed
    assert any("90 % intervals cover" in w for w in theory_report.warnings)
    assert "NOT met" in theory_report.summary()


def test_regression_spread_for_unseen_configurations_is_learnt_from_left_out_ones():
    rng = np.random.default_rng(8)
    true_sd = 0.25
    parts = []
    for k in range(10):
        df = _rows("relu", 60, rng, spec=f"relu(variant={k})")
        df["smp_out"] = (theory_terms(df)["theory"] * np.exp(rng.normal(0, true_sd))
                         * rng.gamma(400, 1 / 400, len(df)))
        parts.append(df)
    model = fit(pd.concat(parts[:8], ignore_index=True), kind="regression")
    assert 0.12 < model.fits["relu"].config_sd < 0.4
    seen, unseen = parts[0].head(50), parts[9].head(50)
    width = {}
    for name, rows in (("seen", seen), ("unseen", unseen)):
        lo, hi = model.predict(rows, n_draws=2000, seed=1).interval(0.9)
        width[name] = np.median(np.log(hi / lo))
    assert width["unseen"] > 1.2 * width["seen"]


def _config_table(n_configs, n_rows, seed, between_sd=0.3, shape=25.0, disp_sd=0.0, start=0):
    """ReLU rows of n_configs configurations: theory * exp(N(0, between_sd^2)) per configuration * Gamma/shape noise.

    The Gamma shape is ``shape``, or with ``disp_sd`` each configuration's own: its log squared CV is
    ``-log(shape) + N(0, disp_sd^2)`` (``log_cv2``). The true effects are columns, not model inputs.
    """
    rng = np.random.default_rng(seed)
    parts = []
    for k in range(start, start + n_configs):
        df = _rows("relu", n_rows, rng, spec=f"relu(variant={k})")
        df["log_effect"] = rng.normal(0, between_sd) if between_sd else 0.0
        df["log_cv2"] = -np.log(shape) + (rng.normal(0, disp_sd) if disp_sd else 0.0)
        k_shape = float(np.exp(-df["log_cv2"].iloc[0]))
        df["smp_out"] = theory_terms(df)["theory"] * np.exp(df["log_effect"]) * rng.gamma(k_shape, 1 / k_shape, n_rows)
        parts.append(df)
    return pd.concat(parts, ignore_index=True)


def test_regression_splits_between_and_within_configuration_spread():
    # 30 seen configurations with a log effect of sd 0.3 and Gamma noise of CV 0.2 within each
    table = _config_table(30, 50, seed=20)
    train = table.groupby("block_spec").head(40)
    model = fit(train, kind="regression")
    r = model.fits["relu"]
    d = design_frame(train)
    cv = np.sqrt(np.exp(_design_matrix(d, r.disp_columns) @ r.gamma))
    assert np.median(cv) == pytest.approx(0.2, rel=0.1)  # within, not sqrt(0.2^2 + 0.3^2) = 0.36
    assert r.config_sd == pytest.approx(0.3, rel=0.25)
    # seen configurations: their own level (the effects are recovered) and calibrated intervals
    truth = train.groupby("block_spec")["log_effect"].first()[r.configs].to_numpy()
    np.testing.assert_allclose(r.config_effect - r.config_effect.mean(), truth - truth.mean(), atol=0.1)
    seen = table.drop(train.index)  # 10 more rows of each seen configuration
    assert model.predict(seen, n_draws=1000, seed=0).coverage(seen["smp_out"], 0.9) == pytest.approx(0.9, abs=0.05)
    # 200 new configurations: calibrated 90 % intervals (Monte Carlo error about 3 %)
    new = _config_table(200, 10, seed=21, start=100)
    y = new["smp_out"].to_numpy()
    assert 0.85 <= model.predict(new, n_draws=1000, seed=0).coverage(y, 0.9) <= 0.95
    # counting the configurations' differences in the dispersion as well (total squared CV about the mean fit)
    # and adding the spread of a new configuration on top over-covers
    rng = np.random.default_rng(0)
    dn = design_frame(new)
    mu_train = d["theory"].to_numpy() * np.exp(_design_matrix(d, r.columns) @ r.beta)
    phi_total = np.mean((d["y"].to_numpy() / mu_train - 1) ** 2)
    effect = r.config_sd * rng.standard_normal((200, 1000))[np.unique(dn["config"], return_inverse=True)[1]]
    mu_new = dn["theory"].to_numpy() * np.exp(_design_matrix(dn, r.columns) @ r.beta)
    old = mu_new[:, None] * np.exp(effect) * rng.gamma(1 / phi_total, phi_total, (len(dn), 1000))
    lo, hi = np.quantile(old, [0.05, 0.95], axis=1)
    assert np.mean((y >= lo) & (y <= hi)) > 0.95


def test_regression_gives_each_configuration_its_own_dispersion():
    # 30 configurations whose log squared CV scatters with sd 0.8 about log(0.15^2)
    table = _config_table(30, 60, seed=30, between_sd=0.0, shape=0.15**-2, disp_sd=0.8)
    train = table.groupby("block_spec").head(50)
    model = fit(train, kind="regression")
    r = model.fits["relu"]
    truth = train.groupby("block_spec")["log_cv2"].first()[r.configs].to_numpy()
    assert r.disp_sd == pytest.approx(truth.std(ddof=1), rel=0.2)  # the spread these 30 configurations have
    assert np.corrcoef(r.disp_effect, truth)[0, 1] > 0.9
    # seen configurations use their own dispersion: the rows of the narrow ones get narrow intervals
    seen = table.drop(train.index)
    pred = model.predict(seen, n_draws=1000, seed=0)
    lo, hi = pred.interval(0.9)
    width = pd.Series((hi - lo) / pred.mean(), index=seen.index).groupby(seen["block_spec"]).mean()
    assert np.corrcoef(np.log(width[r.configs].to_numpy()), truth)[0, 1] > 0.9
    assert pred.coverage(seen["smp_out"], 0.9) == pytest.approx(0.9, abs=0.05)
    # 200 new configurations draw their dispersion from the population: calibrated at 50 % and 90 %
    new = _config_table(200, 10, seed=31, between_sd=0.0, shape=0.15**-2, disp_sd=0.8, start=100)
    y = new["smp_out"].to_numpy()
    pred = model.predict(new, n_draws=2000, seed=0)
    assert 0.86 <= pred.coverage(y, 0.9) <= 0.94
    assert 0.45 <= pred.coverage(y, 0.5) <= 0.55
    # one dispersion for every new configuration (the fit's mean squared CV) is too wide in the centre
    r.disp_sd = 0.0
    assert model.predict(new, n_draws=2000, seed=0).coverage(y, 0.5) > 0.56


def test_regression_keeps_the_covariates_that_predict_left_out_configurations():
    # log_rel has a true slope 0.3 within and between configurations; half the configurations follow a
    # linear block ("chained", constant within each), which does nothing; configuration effects sd 0.15
    rng = np.random.default_rng(1)
    parts = []
    for k in range(10):
        df = _rows("relu", 60, rng, spec=f"relu(variant={k})")
        df["prev_block_spec"] = "linear(out_features=16)" if k % 2 else ""
        parts.append(df)
    table = pd.concat(parts, ignore_index=True)
    d = design_frame(table)
    effect = rng.normal(0, 0.15, 10)[np.repeat(np.arange(10), 60)]
    log_rel = d["log_rel"].to_numpy()
    table["smp_out"] = (d["theory"].to_numpy() * np.exp(0.3 * (log_rel - log_rel.mean()) + effect)
                        * rng.gamma(50, 1 / 50, len(table)))
    model = fit(table, kind="regression")
    r = model.fits["relu"]
    assert "log_rel" in r.columns and "chained" not in r.columns
    assert r.beta[r.columns.index("log_rel")] == pytest.approx(0.3, abs=0.05)
    assert set(r.disp_columns) >= {"log_rel", "chained", "share_new"}  # the dispersion keeps every varying one
    assert "share_new" not in r.columns  # never a candidate for the mean (see regression.MEAN_COVARIATES)
    # predictions clip the covariates to their range in the fit: no slope is extrapolated past the data
    lo, hi = r.ranges["log_rel"]
    assert (lo, hi) == (pytest.approx(log_rel.min()), pytest.approx(log_rel.max()))
    row = table.iloc[[int(np.argmax(log_rel))]].copy()
    edge = model.predict(row, n_draws=4000, seed=2).mean()[0]
    row["smp_in"] *= 1e4  # far more input SMP: log_rel far above the range of the fit
    far = design_frame(row)
    assert far["log_rel"].iloc[0] > hi + 1.0
    scale = far["theory"].iloc[0] / d["theory"].iloc[int(np.argmax(log_rel))]
    assert model.predict(row, n_draws=4000, seed=2).mean()[0] / scale == pytest.approx(edge, rel=0.03)


def _units_table(n, seed, units=(32, 128, 512), ref_shape=50.0):
    """ReLU and max-pool rows whose Gamma shape is ref_shape * n_units / 128 (independent units)."""
    rng = np.random.default_rng(seed)
    df = pd.concat([_rows("relu", n, rng), _rows("maxpool1d", n, rng, spec="maxpool1d(kernel_size=2)", window=2)],
                   ignore_index=True)
    df["n_units_out"] = rng.choice(units, size=len(df))
    shape = ref_shape * df["n_units_out"].to_numpy() / 128
    df["smp_out"] = theory_terms(df)["theory"].to_numpy() * rng.gamma(shape, 1 / shape)
    return df


def test_design_frame_counts_the_units_averaged():
    rng = np.random.default_rng(0)
    df = _rows("relu", 3, rng, out_shape=["(8, 64)", "(4, 16)", "(16,)"])
    np.testing.assert_allclose(np.exp(design_frame(df)["log_units"]), [512, 64, 16])
    df["n_measured_out"] = [100, 64, 16]  # a measured subset of a large layer counts, not the layer
    np.testing.assert_allclose(np.exp(design_frame(df)["log_units"]), [100, 64, 16])
    assert design_frame(_rows("relu", 2, rng))["log_units"].isna().all()


def test_regression_dispersion_follows_the_number_of_units():
    model = fit(_units_table(600, 0), kind="regression")
    # squared CV ~ 1 / n_units: slope -1 on the log unit count, one for both families
    assert model.fits["relu"].units_coef == pytest.approx(-1.0, abs=0.15)
    assert model.fits["maxpool"].units_coef == model.fits["relu"].units_coef
    # a seen block in a layer with 16x fewer units: 4x the CV, and calibrated intervals
    hold = _units_table(600, 1, units=(32, 512))
    pred = model.predict(hold, n_draws=2000, seed=0)
    cv = pd.Series(pred.std() / pred.mean()).groupby(hold["n_units_out"].to_numpy()).median()
    assert cv[32] / cv[512] == pytest.approx(4.0, rel=0.2)
    lo, hi = pred.interval(0.9)
    y = hold["smp_out"].to_numpy()
    for n in (32, 512):
        rows = (hold["n_units_out"] == n).to_numpy()
        assert np.mean((y[rows] >= lo[rows]) & (y[rows] <= hi[rows])) == pytest.approx(0.9, abs=0.05)
    with pytest.raises(InputError, match="number of units"):
        model.predict(hold.drop(columns="n_units_out"))
    # tables without unit counts fit without the term
    assert fit(_synthetic(n=200), kind="regression").fits["relu"].units_ref is None


def test_new_configuration_spreads_are_moderated_towards_the_pool():
    from smpstats.regression import moderated_spreads

    # spreads that differ no more than their sampling error explains: one pooled value
    same = moderated_spreads(np.array([0.08, 0.12, 0.1, 0.11, 0.09]), np.array([3, 3, 4, 2, 3]))
    assert np.ptp(same) < 1e-12 and 0.08 < same[0] < 0.13
    # spreads that truly differ (well-estimated): each keeps close to its own
    far = moderated_spreads(np.array([0.01, 0.3, 0.012, 0.28]), np.full(4, 200))
    np.testing.assert_allclose(far, [0.01, 0.3, 0.012, 0.28], rtol=0.15)
    # a lone configuration (df 0) takes the pool; a rough estimate moves towards it
    mixed = moderated_spreads(np.array([0.05, 0.2, 0.1, 0.1, 0.5]), np.array([2, 3, 3, 0, 2]))
    assert mixed[3] > 0 and abs(mixed[4] - mixed[3]) < abs(0.5 - mixed[3])


def test_old_regression_files_are_refused_clearly(tmp_path):
    model = fit(_synthetic(n=200), kind="regression")
    doc = json.loads(model.save(tmp_path / "m.json").read_text())
    del doc["model"]["regression_format"]  # as written before configuration effects
    for fam in doc["model"]["families"].values():
        del fam["config_effect"], fam["config_var"]
    (tmp_path / "old.json").write_text(json.dumps(doc))
    with pytest.raises(DataFileError, match="older smpstats.*refit the model"):
        load_model(tmp_path / "old.json")
    doc["model"]["regression_format"] = 99
    (tmp_path / "new.json").write_text(json.dumps(doc))
    with pytest.raises(DataFileError, match="newer smpstats"):
        load_model(tmp_path / "new.json")


def test_check_scores_the_spread_between_configurations():
    """New configurations with a between spread of 0.3 (log) and a within CV of 0.05: each configuration's trials
    fall in or out together. The configurations' means are covered at about 90 % by the model that learnt the
    spread, and far less by one fitted where configurations hardly differed."""
    new = _config_table(60, 20, seed=31, start=200, shape=400.0)
    honest = check(fit(_config_table(30, 40, seed=30, shape=400.0), kind="regression"), new, n_draws=1000)
    assert len(honest.configs) == 60 and set(honest.configs["n"]) == {20}
    assert 0.8 <= honest.table.set_index("family").loc["all", "config_coverage_90"] <= 0.98
    np.testing.assert_allclose(honest.configs["observed_mean"].to_numpy(),
                               new.groupby("block_spec", sort=False)["smp_out"].mean()
                               .loc[[c for c in honest.configs["config"]]].to_numpy(), rtol=1e-12)
    narrow = check(fit(_config_table(30, 40, seed=30, between_sd=0.02, shape=400.0), kind="regression"), new,
                   n_draws=1000)
    assert narrow.table.set_index("family").loc["all", "config_coverage_90"] < 0.4
    assert "Configurations: the 90 % intervals of their mean SMP hold" in narrow.summary()
    json.dumps(narrow.to_dict())
