"""Bayesian transfer tier: numpy predictions from a posterior, persistence, diagnostics, and (slow) real fits."""

import json
import warnings

import numpy as np
import pandas as pd
import pytest

from smpstats.bayes import BayesTransfer, _design_dataset, _Index, relative_spreads
from smpstats.checks import check
from smpstats.errors import DataFileError, InputError
from smpstats.transfer import fit, load_model
from smpstats.transfer_data import design_frame

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az


def _table(n, seed, configs=(("relu", "relu", None), ("maxpool1d", "maxpool1d(kernel_size=2)", 2))):
    rng = np.random.default_rng(seed)
    parts = []
    for block, spec, window in configs:
        df = pd.DataFrame({"block": block, "block_spec": spec, "mu_in": rng.uniform(-1, 1, n),
                           "sigma_in": rng.uniform(0.5, 2, n), "sigma_dot_in": rng.uniform(3, 30, n),
                           "smp_in": rng.uniform(0, 20, n), "path_length": 1.0, "dt": 1 / 511})
        if window is not None:
            df["window"] = window
        parts.append(df)
    return pd.concat(parts, ignore_index=True)


def _model(design, *, c_new=(0.1, -0.2), shape=400.0, r_hat=1.001, chains=2, draws=100, tau=0.3, b_units=None,
           eta=(0.0, 0.0), g_mix=0.0, tau_d=0.01):
    """A BayesTransfer whose posterior sits tightly (sd 0.005) at known values (configs in index order).

    ``eta``: slopes of the log Gamma shape on (log_rel, log_res), the same for every family.

    ``b_units`` (needs unit counts in ``design``): the slope of the log Gamma shape on the log unit count.
    """
    index = _Index.from_design(design)
    nf, nc = len(index.families), len(index.configs)

    def const(value, dims=()):
        return np.full((chains, draws, *dims), value, dtype=float)

    jitter = np.random.default_rng(1).normal(0.0, 0.005, size=(2, chains, draws, nc))
    log_c_new = np.asarray(c_new, float) + jitter[0]
    post = {"a_new": const(0.0, (nf,)), "a_car": const(0.0, (nf,)), "tau_new": const(tau), "tau_car": const(tau),
            "log_c_new": log_c_new, "log_c_car": const(0.0, (nc,)), "d": const(np.log(shape), (nf,)),
            "tau_d": const(tau_d), "log_phi_c": np.log(shape) + 10 * jitter[1], "h0": const(-30.0, (nf,)),
            "g": const(0.0, (nf,)), "g_mix": const(g_mix, (nf,)), "eta_d": const(eta, (nf, 2))}
    if b_units is not None:
        post["b_units"] = const(b_units)
    assert index.term_configs["new"] == index.term_configs["car"] == index.configs
    dims = {"a_new": ["family_new"], "a_car": ["family_car"], "d": ["family"], "h0": ["family"],
            "g": ["family"], "g_mix": ["family"], "eta_d": ["family", "dispersion_covariate"],
            "log_c_new": ["config_new"], "log_c_car": ["config_car"], "log_phi_c": ["config"]}
    rng = np.random.default_rng(0)
    stats = {"diverging": np.zeros((chains, draws), bool), "lp": rng.normal(size=(chains, draws))}
    idata = az.from_dict(posterior=post, sample_stats=stats, dims=dims,
                         coords={"family": index.families, "config": index.configs, "family_new": index.families,
                                 "family_car": index.families, "config_new": index.configs,
                                 "config_car": index.configs, "dispersion_covariate": ["log_rel", "log_res"]})
    idata.add_groups(constant_data=_design_dataset(design))
    info = {"sampler": "test", "draws": draws, "tune": 0, "chains": chains, "seed": 0, "compile_seconds": 0.0,
            "sampling_seconds": 0.0, "n_rows": len(design), "r_hat_max": r_hat, "ess_bulk_min": 1000.0,
            "ess_tail_min": 1000.0, "divergences": 0}
    return BayesTransfer(idata, index, info)


def _with_y(df, design, c_new, shape, seed):
    rng = np.random.default_rng(seed)
    codes = {"maxpool1d(kernel_size=2)": 0, "relu": 1}
    factor = np.exp(np.array([c_new[codes[c]] for c in design["config"]]))
    mu = factor * design["theory_new"] + design["theory_carried"]
    out = df.copy()
    out["smp_out"] = rng.gamma(shape, mu / shape)
    return out


def test_posterior_predictions_follow_the_model():
    df = _table(200, 0)
    design = design_frame(df.assign(smp_out=1.0))
    model = _model(design, c_new=(0.1, -0.2))
    assert model.index.configs == ["maxpool1d(kernel_size=2)", "relu"]
    pred = model.predict(df, n_draws=4000, seed=1)
    factor = np.where(design["config"] == "relu", np.exp(-0.2), np.exp(0.1))
    expected = factor * design["theory_new"] + design["theory_carried"]
    np.testing.assert_allclose(pred.mean(), expected, rtol=0.01)
    np.testing.assert_allclose(pred.std() / pred.mean(), 1 / np.sqrt(400), rtol=0.1)
    # data drawn from the same model are covered at the nominal rate
    y = _with_y(df, design, (0.1, -0.2), 400.0, seed=2)["smp_out"]
    assert pred.coverage(y, 0.9) == pytest.approx(0.9, abs=0.04)


def test_unseen_configurations_draw_from_the_population():
    df = _table(100, 1)
    model = _model(design_frame(df.assign(smp_out=1.0)), tau=0.3)
    new = _table(100, 2, configs=(("maxpool1d", "maxpool1d(kernel_size=3)", 3),))
    pred = model.predict(new, n_draws=4000, seed=0)
    cv = pred.std() / pred.mean()
    # new-kink share ~ 1 here: the spread of log effects is about tau = 0.3
    assert np.median(cv) == pytest.approx(np.sqrt(np.exp(0.09) - 1), rel=0.15)
    # one shared effect per unseen configuration and draw: rows move together
    r = np.corrcoef(np.log(pred.draws[0]), np.log(pred.draws[1]))[0, 1]
    assert r > 0.9
    # a family whose configurations spread twice as far (its fixed ratio) draws new ones twice as far
    index = model.index
    index.spread_ratio["new"] = [2.0 if f == "maxpool" else 0.5 for f in index.families]
    cv2 = model.predict(new, n_draws=4000, seed=0).std() / pred.mean()
    assert np.median(cv2) == pytest.approx(np.sqrt(np.exp(0.36) - 1), rel=0.15)


def test_a_new_configuration_takes_its_family_s_centre_shape():
    """Shapes spread by tau_d = 1 between configurations; a new one's rows vary as the centre's Gamma, not as a
    mixture over the population's shapes (whose CV would be e^(1/4) = 1.28 times larger)."""
    df = _table(100, 1)
    model = _model(design_frame(df.assign(smp_out=1.0)), tau=1e-4, tau_d=1.0)
    new = _table(100, 2, configs=(("maxpool1d", "maxpool1d(kernel_size=3)", 3),))
    pred = model.predict(new, n_draws=4000, seed=0)
    assert np.median(pred.std() / pred.mean()) == pytest.approx(1 / np.sqrt(400), rel=0.08)
    # seen configurations keep their own fitted shapes
    seen = model.predict(df, n_draws=4000, seed=0)
    assert np.median(seen.std() / seen.mean()) == pytest.approx(1 / np.sqrt(400), rel=0.08)


def test_a_new_configuration_after_a_conv_or_linear_layer_takes_the_shape_shift():
    """log shape + g_mix for a block right after a conv or linear layer (not after a ReLU, not further back)."""
    df = _table(100, 1)
    model = _model(design_frame(df.assign(smp_out=1.0)), tau=1e-4, g_mix=-2.0)
    cvs = {}
    for prefix in ("", "conv1d(out_channels=4, kernel_size=3) -> ", "relu -> ",
                   "linear(out_features=8) -> relu -> "):
        new = _table(100, 2, configs=(("maxpool1d", prefix + "maxpool1d(kernel_size=3)", 3),))
        cvs[prefix] = np.median(model.predict(new, n_draws=2000, seed=0).std() / model.predict(new, n_draws=2000,
                                                                                                seed=0).mean())
    plain = cvs[""]
    assert plain == pytest.approx(1 / np.sqrt(400), rel=0.1)
    assert cvs["conv1d(out_channels=4, kernel_size=3) -> "] == pytest.approx(plain * np.e, rel=0.1)
    assert cvs["relu -> "] == pytest.approx(plain, rel=0.1)
    assert cvs["linear(out_features=8) -> relu -> "] == pytest.approx(plain, rel=0.1)


def test_relative_spreads_follow_how_far_each_family_s_configurations_differ():
    """Four families of 8 configurations: the mean ratio follows the levels' spread, the shape ratio the CVs'."""
    rng = np.random.default_rng(4)
    level_sd = {"a": 0.2, "b": 0.01, "c": 0.05, "d": 0.05}
    shape_sd = {"a": 0.05, "b": 1.5, "c": 0.5, "d": 0.5}
    parts = []
    for fam in level_sd:
        for k in range(8):
            theory = rng.uniform(5, 50, 150)
            shape = np.exp(5 + shape_sd[fam] * rng.standard_normal())
            level = np.exp(level_sd[fam] * rng.standard_normal())
            parts.append(pd.DataFrame({"family": fam, "config": f"{fam}{k}", "theory": theory,
                                       "theory_new": 0.0, "theory_carried": theory,
                                       "y": rng.gamma(shape, level * theory / shape)}))
    design = pd.concat(parts, ignore_index=True)
    ratios = relative_spreads(design, list("abcd"))
    mean_ratio, shape_ratio = (dict(zip("abcd", ratios[t])) for t in ("car", "d"))
    assert np.exp(np.mean(np.log(list(mean_ratio.values())))) == pytest.approx(1.0)
    assert mean_ratio["a"] > 3 * mean_ratio["c"] > 3 * mean_ratio["b"]
    assert shape_ratio["b"] > 2 * shape_ratio["c"] > 2 * shape_ratio["a"]
    # two families cannot be moderated towards a pool: one shared spread; so do terms that two families have
    for t, r in relative_spreads(design[design["family"].isin(["a", "b"])], ["a", "b"]).items():
        assert r == [1.0, 1.0], t
    assert relative_spreads(design, list("abcd"))["new"] == [1.0] * 4  # no family makes new kinks


def test_carried_kink_spread_ratios_come_from_each_configuration_s_own_carried_correction():
    """New and carried kinks in every row; only the carried-kink corrections spread, by family: least squares
    separates them, where the levels dilute the spread by the carried share (family a: 10 % carried)."""
    rng = np.random.default_rng(5)
    car_sd = {"a": 0.3, "b": 0.01, "c": 0.1, "d": 0.05}
    parts = []
    for fam in car_sd:
        for k in range(8):
            tn = rng.uniform(5, 50, 150)
            tc = tn * rng.uniform(0.08, 0.14, 150) if fam == "a" else rng.uniform(5, 50, 150)
            mu = tn + np.exp(car_sd[fam] * rng.standard_normal()) * tc
            parts.append(pd.DataFrame({"family": fam, "config": f"{fam}{k}", "theory_new": tn, "theory_carried": tc,
                                       "theory": tn + tc, "y": rng.gamma(2000.0, mu / 2000.0)}))
    ratios = relative_spreads(pd.concat(parts, ignore_index=True), list("abcd"))
    car = dict(zip("abcd", ratios["car"]))
    assert car["a"] > 2 * car["c"] > 4 * car["b"]
    # the levels (behind the new-kink ratios) see a tenth of family a's carried-kink corrections, half of c's
    level = dict(zip("abcd", ratios["new"]))
    assert level["a"] < level["c"]


def test_the_gamma_shape_follows_the_row_covariates():
    """log shape = log 400 - 1 * (log_rel - its median in the fit): rows with more expected kinks vary less."""
    df = _table(200, 5)
    design = design_frame(df.assign(smp_out=1.0))
    model = _model(design, shape=400.0, eta=(-1.0, 0.0))
    pred = model.predict(df, n_draws=4000, seed=3)
    x = design["log_rel"].to_numpy() - np.median(design["log_rel"])
    np.testing.assert_allclose(pred.std() / pred.mean(), np.sqrt(np.exp(x) / 400), rtol=0.08)
    assert "shape slope on log_rel" in set(model.to_frame()["parameter"])
    # a row with theory 0 (no kinks in, none made) predicts exact zeros, not an overflow
    still = df.iloc[:1].assign(mu_in=100.0, sigma_in=0.5, smp_in=0.0)  # never crosses 0
    for eta in ((-3.0, 0.0), (3.0, 0.0)):  # a huge or a vanishing shape
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            draws = _model(design, eta=eta).predict(still, n_draws=50, seed=0).draws
        assert (draws == 0).all()


def test_save_load_round_trip_and_damaged_files(tmp_path):
    df = _table(50, 3)
    model = _model(design_frame(df.assign(smp_out=1.0)))
    path = model.save(tmp_path / "fit.nc")
    again = load_model(path)
    assert isinstance(again, BayesTransfer)
    assert again.index.configs == model.index.configs
    np.testing.assert_array_equal(again.predict(df, n_draws=100, seed=4).draws, model.predict(df, n_draws=100, seed=4).draws)
    data = path.read_bytes()
    (tmp_path / "truncated.nc").write_bytes(data[: len(data) // 3])
    with pytest.raises(DataFileError, match="not a readable smpstats Bayesian model"):
        load_model(tmp_path / "truncated.nc")
    # a netCDF file of someone else's
    az.from_dict(posterior={"x": np.zeros((1, 5))}).to_netcdf(str(tmp_path / "other.nc"))
    with pytest.raises(DataFileError, match="not a readable smpstats Bayesian model"):
        load_model(tmp_path / "other.nc")


def test_failed_diagnostics_are_flagged_everywhere():
    df = _table(60, 4)
    model = _model(design_frame(df.assign(smp_out=1.0)), r_hat=1.08)
    assert any("R-hat" in w for w in model.warnings)
    assert "WARNING" in model.summary()
    assert model.predict(df, n_draws=10).warnings == model.warnings
    good = _model(design_frame(df.assign(smp_out=1.0)))
    assert good.warnings == ()
    assert "all convergence checks passed" in good.summary()


def test_check_of_a_bayes_model_reports_loo_and_coverage():
    df = _table(150, 5)
    design = design_frame(df.assign(smp_out=1.0))
    train = _with_y(df, design, (0.1, -0.2), 400.0, seed=6)
    model = _model(design_frame(train), c_new=(0.1, -0.2))
    hold = _with_y(_table(150, 7), design_frame(_table(150, 7).assign(smp_out=1.0)), (0.1, -0.2), 400.0, seed=8)
    report = check(model, hold, n_draws=800)
    assert 0.85 <= report.table.set_index("family").loc["all", "coverage_90"] <= 0.95
    assert report.diagnostics["pareto_k_bad"] == 0
    assert np.isfinite(report.diagnostics["elpd_loo"])
    assert report.loo_pit is not None and len(report.loo_pit) == len(train)
    json.dumps(report.to_dict())


@pytest.mark.slow
def test_a_real_fit_recovers_the_corrections_and_passes_diagnostics():
    """PyMC + nutpie on data simulated from the model: posterior contains the truth, diagnostics pass."""
    df = _table(150, 9)
    design = design_frame(df.assign(smp_out=1.0))
    train = _with_y(df, design, (0.15, -0.1), 200.0, seed=10)
    model = fit(train, kind="bayes", seed=1)
    assert model.warnings == (), model.summary()
    post = model.idata.posterior["log_c_new"]
    for cfg, truth in (("maxpool1d(kernel_size=2)", 0.15), ("relu", -0.1)):
        draws = post.sel(config_new=cfg).values.ravel()
        lo, hi = np.quantile(draws, [0.005, 0.995])
        assert lo < truth < hi
    hold = _with_y(_table(150, 11), design_frame(_table(150, 11).assign(smp_out=1.0)), (0.15, -0.1), 200.0, seed=12)
    assert 0.85 <= model.predict(hold, n_draws=1000).coverage(hold["smp_out"], 0.9) <= 0.95


@pytest.mark.slow
def test_sbc_ranks_are_in_range_and_not_grossly_non_uniform():
    from smpstats.sbc import plot_sbc_ranks, sbc

    df = _table(40, 13)
    design = design_frame(df.assign(smp_out=1.0))
    train = _with_y(df, design, (0.0, 0.0), 100.0, seed=14)
    res = sbc(train, n_sims=20, n_ranks=19, tune=200, seed=3)
    assert res.ranks.shape[0] == 20
    # one column per family and dispersion covariate for the shape slopes
    assert {"eta_d[maxpool, log_rel]", "eta_d[relu, log_res]"} <= set(res.ranks.columns)
    assert ((res.ranks >= 0) & (res.ranks <= 19)).all().all()
    u = res.uniformity(bins=4)
    assert (u["p_value"] > 1e-4).all(), res.summary()
    plot_sbc_ranks(res)


def test_the_gamma_shape_follows_the_number_of_units():
    df = _table(200, 20).assign(n_units_out=128)
    model = _model(design_frame(df.assign(smp_out=1.0)), shape=400.0, b_units=1.0)
    assert model.index.units_ref == pytest.approx(np.log(128))
    # the same (seen) blocks in layers with 4x fewer and 4x more units: CV x2 and x1/2
    cv = {}
    for n in (32, 128, 512):
        pred = model.predict(df.assign(n_units_out=n), n_draws=4000, seed=2)
        cv[n] = np.median(pred.std() / pred.mean())
    assert cv[128] == pytest.approx(1 / np.sqrt(400), rel=0.1)
    assert cv[32] / cv[128] == pytest.approx(2.0, rel=0.1)
    assert cv[512] / cv[128] == pytest.approx(0.5, rel=0.1)
    with pytest.raises(InputError, match="number of units"):
        model.predict(df.drop(columns="n_units_out"))
    with pytest.raises(InputError, match="and the others do not"):
        _Index.from_design(design_frame(pd.concat([df, _table(5, 21)], ignore_index=True).assign(smp_out=1.0)))


def test_models_of_an_older_format_are_refused_clearly(tmp_path):
    df = _table(50, 22)
    path = _model(design_frame(df.assign(smp_out=1.0))).save(tmp_path / "fit.nc")
    idata = az.from_netcdf(str(path))
    meta = json.loads(idata.posterior.attrs["smpstats"])
    meta["format_version"] = 1
    idata.posterior.attrs["smpstats"] = json.dumps(meta)
    idata.to_netcdf(str(tmp_path / "old.nc"))
    with pytest.raises(DataFileError, match="format version 1.*older smpstats.*refit"):
        load_model(tmp_path / "old.nc")


@pytest.mark.slow
def test_a_real_fit_learns_how_the_dispersion_scales_with_the_number_of_units():
    """Configurations of different widths whose Gamma shape is proportional to their unit count: b ~ 1.

    Each configuration's shape and mean also have their own factors (log sd 0.3 and 0.15), as real
    configurations do.
    """
    rng = np.random.default_rng(23)
    parts = []
    for k, n_units in enumerate((16, 32, 64, 128, 256, 512)):
        spec = f"relu(variant={k})" if k % 2 else f"maxpool1d(kernel_size={k + 2})"
        block, window = ("relu", None) if k % 2 else ("maxpool1d", k + 2)
        part = _table(120, 30 + k, configs=((block, spec, window),)).assign(n_units_out=n_units)
        design = design_frame(part.assign(smp_out=1.0))
        shape = 2.0 * n_units * np.exp(rng.normal(0.0, 0.3))  # configs differ beyond their width too
        part["smp_out"] = rng.gamma(shape, design["theory"].to_numpy() * np.exp(rng.normal(0.0, 0.15)) / shape)
        parts.append(part)
    model = fit(pd.concat(parts, ignore_index=True), kind="bayes", seed=2, draws=1000, tune=1000)
    # six configurations only: a few divergences may occur here; the chains must agree
    assert model.info["r_hat_max"] <= 1.01, model.summary()
    b = model.idata.posterior["b_units"].values.ravel()
    lo, hi = np.quantile(b, [0.005, 0.995])
    assert 0.0 < lo < 1.0 < hi  # the dispersion depends on the width, at the rate of independent units
