"""Tests of smpstats.simulate and smpstats.inputs: table layout, seeds, known SMP values."""

from __future__ import annotations

import logging
import math
import re

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import norm
from torch import nn

from smpstats.errors import InputError, ResolutionWarning
from smpstats.inputs import InputDraw, InputFamily, KinkedInputs, SmoothInputs, as_input_family
from smpstats.simulation import STAT_COLUMNS, simulate, trial_seeds

SPEC = "conv1d(out_channels=4, kernel_size=3) | relu | maxpool1d(kernel_size=2)"
SMALL = dict(input_shape=(2, 24), n_points=256)


def full(message: str) -> str:
    return "^" + re.escape(message) + "$"


@pytest.fixture(scope="module")
def table():
    return simulate(SPEC, n_trials=3, seed=11, path="kinked", **SMALL)


# ---------------------------------------------------------------------------
# layout
# ---------------------------------------------------------------------------


def test_one_row_per_trial_and_stage(table):
    assert len(table) == 3 * 3
    assert list(table["trial"]) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert list(table["stage"]) == [1, 2, 3] * 3
    assert list(table["block"][:3]) == ["conv1d", "relu", "maxpool1d"]
    assert list(table["block_spec"][:3]) == ["conv1d(out_channels=4, kernel_size=3)", "relu", "maxpool1d(kernel_size=2)"]
    assert list(table["in_shape"][:3]) == ["(2, 24)", "(4, 22)", "(4, 22)"]
    assert list(table["out_shape"][:3]) == ["(4, 22)", "(4, 22)", "(4, 11)"]


def test_columns_follow_the_contract(table):
    expected = {
        "trial", "stage", "n_stages", "block", "block_spec", "piecewise_linear", "creates_kinks", "init", "sigma_w",
        "sigma_b", "fan_in", "out_channels", "kernel_size", "stride", "padding", "dilation", "bias", "ceil_mode",
        "window", "smp_in_true", "family", "path_length", "n_points", "dt", "trial_seed", "method",
        "family_mu", "family_sigma", "family_length_scale", "family_sigma_dot", "family_kink_rate", "family_jump_scale",
    } | {f"{s}_{side}" for s in STAT_COLUMNS for side in ("in", "out")}
    assert expected <= set(table.columns)
    first = table.iloc[0]
    assert first["init"] == "kaiming" and first["sigma_w"] == pytest.approx(math.sqrt(2)) and first["fan_in"] == 6
    assert first["kernel_size"] == 3 and first["out_channels"] == 4 and bool(first["bias"])
    pool = table.iloc[2]
    assert pool["stride"] == 2 and pool["window"] == 2 and pd.isna(pool["out_channels"]) and pd.isna(pool["init"])
    assert list(table["n_units_in"][:3]) == [48, 88, 88] and list(table["n_units_out"][:3]) == [88, 88, 44]
    assert table["dt"].iloc[0] == pytest.approx(1 / 255) and (table["path_length"] == 1.0).all()
    assert (table["method"] == "grid").all() and (table["family"] == "kinked").all()
    # the chain's stages hand their output statistics on
    for k in (0, 1):
        row, nxt = table.iloc[k], table.iloc[k + 1]
        for s in STAT_COLUMNS:
            assert nxt[f"{s}_in"] == row[f"{s}_out"]
    # the true input SMP is known at the chain's input only
    assert table.loc[table.stage == 1, "smp_in_true"].notna().all()
    assert table.loc[table.stage > 1, "smp_in_true"].isna().all()
    # one set of family parameters and seed per trial
    assert table.groupby("trial")[["family_mu", "trial_seed"]].nunique().eq(1).all().all()


def test_attrs_record_provenance(table):
    meta = table.attrs["smpstats"]
    assert meta["spec"] == SPEC and meta["seed"] == 11 and meta["n_trials"] == 3
    assert meta["input_shape"] == [2, 24] and meta["path"]["name"] == "kinked" and meta["n_points"] == 256
    assert isinstance(meta["package_version"], str) and meta["package_version"]
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00$", meta["created"])


def test_statistics_are_what_the_docs_say():
    """mu, sigma and sigma_dot of a linear input ramp are known in closed form."""
    fam = SmoothInputs(mu=0.0, sigma=1.0, length_scale=0.2)
    df = simulate("tanh", 1, seed=3, input_shape=(5,), path=fam, n_points=300)
    # input statistics of a unit-variance SE GP: sigma near 1, derivative std near 1 / l = 5
    assert df["sigma_dot_in"].iloc[0] == pytest.approx(5.0, rel=0.25)
    assert df["family_sigma_dot"].iloc[0] == pytest.approx(5.0)
    assert df["n_units_in"].iloc[0] == 5


def test_statistics_of_every_stage_match_a_direct_computation():
    """Every measured column, recomputed from the trial's own inputs and weights (stages of several widths)."""
    from smpstats.blocks import build_chain
    from smpstats.grid import smp
    from smpstats.simulation import _trial_rngs

    spec, shape, n_points = "conv1d(out_channels=6, kernel_size=3) | relu | maxpool1d(kernel_size=2)", (2, 20), 200
    df = simulate(spec, 3, seed=8, input_shape=shape, n_points=n_points, path="kinked", max_units=None)
    chain = build_chain(spec, shape, generator=0)
    for trial, trial_seed in enumerate(trial_seeds(8, 3)):
        gen, rng = _trial_rngs(int(trial_seed))
        chain.reinitialize(gen)
        draw = KinkedInputs().draw(n_points, 40, rng)
        signals = [draw.x] + [y.numpy().reshape(n_points, -1) for y in chain.forward_stages(draw.x.reshape(-1, *shape))]
        rows = df[df.trial == trial]
        for k, y in enumerate(signals[1:]):
            y = y.T  # (units, t)
            r = smp(y, draw.dt)
            expected = {
                "mu_out": y.mean(), "sigma_out": y.std(axis=1).mean(), "sigma_pool_out": y.std(),
                "sigma_chan_out": np.sqrt(np.mean(y.reshape(6, -1, n_points).var(axis=(1, 2)))),
                "sigma_dot_out": np.sqrt(np.mean(np.diff(y, axis=1) ** 2)) / draw.dt,
                "smp_out": r.value.mean(), "kinks_out": r.n_peaks.mean(), "resolved_out": r.resolved.mean(),
            }
            for column, value in expected.items():
                assert rows[column].iloc[k] == pytest.approx(value, rel=1e-12, abs=1e-12), (trial, k, column)
            assert rows["n_measured_out"].iloc[k] == y.shape[0]
            if k > 0:
                assert rows["sigma_dot_in"].iloc[k] == rows["sigma_dot_out"].iloc[k - 1]


# ---------------------------------------------------------------------------
# seeds and chunking
# ---------------------------------------------------------------------------


def test_same_seed_same_table_other_seed_other_table():
    a = simulate(SPEC, 2, seed=5, **SMALL)
    b = simulate(SPEC, 2, seed=5, **SMALL)
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    c = simulate(SPEC, 2, seed=6, **SMALL)
    assert not np.array_equal(a["smp_out"], c["smp_out"])


def test_chunk_size_does_not_change_any_bit():
    spec = ("conv1d(out_channels=3, kernel_size=3) | batchnorm | gelu | maxpool1d(kernel_size=2) | flatten | "
            "linear(out_features=6) | silu | softplus | tanh | leaky_relu | prelu")
    kw = dict(input_shape=(2, 12), n_points=120, path=KinkedInputs(length_scale=(0.1, 0.2)))
    whole = simulate(spec, 2, seed=1, **kw)
    for chunk in (7, 50):
        pd.testing.assert_frame_equal(simulate(spec, 2, seed=1, chunk_size=chunk, **kw), whole, check_exact=True)


def test_trial_does_not_depend_on_n_trials():
    short = simulate(SPEC, 2, seed=9, **SMALL)
    long = simulate(SPEC, 4, seed=9, chunk_size=50, **SMALL)
    pd.testing.assert_frame_equal(long[long.trial < 2].reset_index(drop=True), short, check_exact=True)
    assert list(long.drop_duplicates("trial")["trial_seed"]) == list(trial_seeds(9, 4))
    assert list(trial_seeds(9, 2)) == list(trial_seeds(9, 4)[:2])


def test_input_parameters_vary_across_trials():
    df = simulate("relu", 12, seed=0, input_shape=(8,), n_points=256)
    for col in ("mu_in", "sigma_in", "sigma_dot_in", "family_length_scale"):
        assert df[col].std() > 0.1 * df[col].abs().mean()


# ---------------------------------------------------------------------------
# known SMP values
# ---------------------------------------------------------------------------


#: Smooth inputs whose curvature the grid resolves well at 512 points.
RESOLVED_SMOOTH = SmoothInputs(sigma=(0.5, 1.0), length_scale=(0.1, 0.25))


@pytest.mark.parametrize(
    "spec, shape",
    [
        ("conv1d(out_channels=4, kernel_size=5)", (3, 32)),
        ("avgpool1d(kernel_size=3)", (4, 30)),
        ("batchnorm", (4, 16)),
        ("linear(out_features=16)", (32,)),
        ("gelu", (64,)),
        ("tanh", (64,)),
        ("silu", (64,)),
        ("softplus", (64,)),
    ],
)
def test_smooth_blocks_create_no_smp(spec, shape):
    """Smooth inputs through smooth or affine blocks stay smooth: SMP ~ 0.

    The scale is the SMP a kink-making block creates from such inputs, of order
    sigma_dot * T (Kac-Rice: sigma_dot**2 / sigma * T * phi).
    """
    df = simulate(spec, 3, seed=2, input_shape=shape, n_points=512, path=RESOLVED_SMOOTH)
    scale = df["sigma_dot_out"] * df["path_length"]
    assert (df["smp_in"] < 0.01 * df["sigma_dot_in"] * df["path_length"]).all()
    assert (df["smp_out"] < 0.02 * scale).all(), df[["smp_out", "sigma_dot_out"]]


def test_strongly_curved_smooth_outputs_are_smooth():
    df = simulate("tanh", 3, seed=2, input_shape=(64,), n_points=512)
    assert (df["smp_out"] < 0.02 * df["sigma_dot_out"] * df["path_length"]).all()


@pytest.mark.parametrize(
    "spec, shape",
    [("relu", (64,)), ("leaky_relu(negative_slope=0.1)", (64,)), ("maxpool1d(kernel_size=2)", (4, 32)),
     ("maxpool2d(kernel_size=2)", (2, 8, 8))],
)
def test_kink_blocks_create_clearly_positive_smp(spec, shape):
    df = simulate(spec, 3, seed=2, input_shape=shape, n_points=512)
    assert (df["smp_out"] > 0.5 * df["sigma_dot_out"] * df["path_length"]).all()
    assert (df["kinks_out"] > 0.3).all()


def test_relu_matches_kac_rice():
    """E[SMP] of relu(x) for a stationary Gaussian x: T * sigma_dot**2 * phi(mu / sigma) / sigma (DESIGN 4)."""
    mu, sigma, ell = 0.3, 1.0, 0.1
    df = simulate("relu", 4, seed=0, input_shape=(64,), path=SmoothInputs(mu=mu, sigma=sigma, length_scale=ell))
    expected = (sigma / ell) ** 2 * norm.pdf(mu / sigma) / sigma
    assert df["smp_out"].mean() == pytest.approx(expected, rel=0.08)


def test_maxpool_of_two_iid_inputs_matches_theory():
    """k = 2: E[S_new] = T * 2 sigma_dot**2 / (sqrt(2) sigma sqrt(2 pi)) (DESIGN 4)."""
    sigma, ell = 1.0, 0.1
    fam = SmoothInputs(mu=0.0, sigma=sigma, length_scale=ell)
    df = simulate("maxpool1d(kernel_size=2)", 4, seed=0, input_shape=(1, 128), path=fam)
    expected = 2 * (sigma / ell) ** 2 / (math.sqrt(2) * sigma * math.sqrt(2 * math.pi))
    assert df["smp_out"].mean() == pytest.approx(expected, rel=0.08)


def test_kinked_inputs_are_measured_close_to_their_true_smp():
    fam = KinkedInputs(length_scale=(0.1, 0.25), kink_rate=(1.0, 5.0), jump_ratio=(0.5, 1.0))
    df = simulate("tanh", 6, seed=4, input_shape=(64,), path=fam, n_points=512)
    np.testing.assert_allclose(df["smp_in"], df["smp_in_true"], rtol=0.1)


def test_kinked_family_spans_a_wide_range_including_zero():
    df = simulate("relu", 30, seed=0, input_shape=(16,), path="kinked", n_points=256)
    true = df["smp_in_true"]
    assert true.min() < 0.02 * true.max()
    assert np.corrcoef(np.log1p(df["smp_in"]), np.log1p(true))[0, 1] > 0.9


def test_smooth_family_input_is_smooth_and_has_no_true_smp():
    df = simulate("tanh", 3, seed=1, input_shape=(32,), n_points=512)
    assert df["smp_in_true"].isna().all()
    assert (df["smp_in"] < 0.01 * df["sigma_dot_in"]).all()


# ---------------------------------------------------------------------------
# modules, defaults, progress, errors
# ---------------------------------------------------------------------------


def test_torch_module_keeps_its_weights():
    torch.manual_seed(0)
    user = nn.Sequential(nn.Linear(6, 4), nn.ReLU())
    df = simulate(user, 2, seed=0, n_points=128, path=SmoothInputs(length_scale=0.2))
    assert df.attrs["smpstats"]["input_shape"] == [6]
    assert list(df["block"][:2]) == ["linear", "relu"] and df["init"].isna().all()
    assert user[0].weight.dtype == torch.float32


def test_default_input_shape_is_logged(caplog):
    with caplog.at_level(logging.INFO, logger="smpstats.simulation"):
        df = simulate("conv2d(out_channels=2, kernel_size=3)", 1, n_points=64, path=SmoothInputs(length_scale=0.2))
    assert df["in_shape"].iloc[0] == "(3, 16, 16)"
    assert (
        "simulate: input_shape not given; using (3, 16, 16) ((channels, height, width) for conv2d). "
        "Pass input_shape= to choose."
    ) in caplog.messages


def test_progress_bar(capsys):
    simulate("relu", 2, input_shape=(4,), n_points=64, path=SmoothInputs(length_scale=0.2), progress=True)
    assert "simulate" in capsys.readouterr().err


def test_too_few_points_warn():
    msg = ("n_points=64 gives 3.2 grid points per shortest input length scale (0.05); curvature may be taken for "
           "kinks. Use n_points >= 161 or longer length scales.")
    with pytest.warns(ResolutionWarning, match=full(msg)):
        simulate("relu", 1, input_shape=(4,), n_points=64)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(method="fast"), "method must be 'grid' or 'exact'; got 'fast'."),
        (dict(n_trials=0), "n_trials must be an int >= 1; got 0."),
        (dict(seed=-1), "seed must be a non-negative int (or None for a fresh random seed); got -1."),
        (dict(chunk_size=0), "chunk_size must be an int >= 1; got 0."),
        (dict(n_points=4), "n_points must be an int >= 8; got 4."),
        (dict(init="he"), "init must be one of 'kaiming', 'xavier', 'normal'; got 'he'."),
        (dict(path="rough"), "path must be one of 'smooth', 'kinked', 'segment' or an InputFamily "
                             "(e.g. smpstats.inputs.KinkedInputs(kink_rate=(1, 10))); got 'rough'."),
    ],
)
def test_argument_errors(kwargs, message):
    with pytest.raises(InputError, match=full(message)):
        simulate("relu", **{"input_shape": (4,), **kwargs})


def test_module_without_known_input_shape_needs_one():
    with pytest.raises(InputError, match=full(
        "input_shape is required for a torch module that starts with ReLU: pass the shape of one input without "
        "the batch dimension, e.g. input_shape=(8, 64).")):
        simulate(nn.Sequential(nn.ReLU()), 1)


def test_family_range_errors():
    with pytest.raises(InputError, match=full(
        "length_scale must be a positive finite number or a (low, high) pair of positive finite numbers with "
        "low <= high; got (0.2, 0.1).")):
        SmoothInputs(length_scale=(0.2, 0.1))
    with pytest.raises(InputError, match=full(
        "mu must be a finite number or a (low, high) pair of finite numbers with low <= high; got 'a'.")):
        KinkedInputs(mu="a")
    fam = KinkedInputs(kink_rate=2.0)
    assert as_input_family(fam) is fam and fam.kink_rate == (2.0, 2.0)
    draw = fam.draw(100, 3, np.random.default_rng(0))
    assert draw.x.shape == (100, 3) and draw.smp_true.shape == (3,) and draw.params["kink_rate"] == 2.0


@pytest.mark.parametrize("n_points, n_units", [(16, 33000), (40, 100), (300, 7)])
def test_smooth_draw_is_the_scaled_and_shifted_fourier_sum(n_points, n_units):
    """x = basis @ z * sigma + mu: the Fourier sum of the family's modes, for few and many units."""
    from smpstats.processes import se_fourier_modes

    family = SmoothInputs(mu=-0.3, sigma=1.7, length_scale=0.15)
    draw = family.draw(n_points, n_units, np.random.default_rng(2))
    modes = se_fourier_modes(1.0, 0.15)
    z = np.random.default_rng(2).standard_normal((2 * modes.omega.shape[0], n_units))  # fixed parameters: no draws
    np.testing.assert_array_equal(draw.x, modes.basis(np.linspace(0.0, 1.0, n_points)) @ z * 1.7 + -0.3)


def test_custom_family_is_used_and_checked():
    class Ramp(InputFamily):
        name = "ramp"

        def draw(self, n_points, n_units, rng):
            t = self.grid(n_points)
            slope = rng.uniform(1, 2)
            x = np.abs(t - 0.5)[:, None] * slope * np.ones(n_units)  # one kink of size 2 * slope at t = 0.5
            return InputDraw(t=t, x=x, params={"slope": slope}, smp_true=np.full(n_units, 2 * slope))

    df = simulate("tanh", 2, input_shape=(3,), n_points=101, path=Ramp())
    assert (df["family"] == "ramp").all()
    np.testing.assert_allclose(df["smp_in"], 2 * df["family_slope"], rtol=1e-9)
    np.testing.assert_allclose(df["smp_in_true"], df["smp_in"], rtol=1e-9)
    # moments of |t - 1/2| on the grid, in closed form
    grid = np.abs(np.linspace(0, 1, 101) - 0.5)
    np.testing.assert_allclose(df["mu_in"], df["family_slope"] * 25.5 / 101, rtol=1e-12)
    np.testing.assert_allclose(df["sigma_in"], df["family_slope"] * grid.std(), rtol=1e-12)
    np.testing.assert_allclose(df["sigma_dot_in"], df["family_slope"], rtol=1e-12)
    assert (df["kinks_in"] == 1).all() and (df["resolved_in"] == 1).all() and (df["n_units_in"] == 3).all()

    class Broken(Ramp):
        def draw(self, n_points, n_units, rng):
            d = super().draw(n_points, n_units, rng)
            return InputDraw(t=d.t, x=d.x[:, :1], params={})

    with pytest.raises(InputError, match=full(
        "Broken.draw must return an InputDraw whose x is a float64 array of shape (n_points, n_units) = (101, 3); "
        "got x of shape (101, 1) and dtype float64.")):
        simulate("tanh", 1, input_shape=(3,), n_points=101, path=Broken())
    with pytest.raises(InputError, match=full(
            "method='exact' needs straight-segment inputs (path='segment'), smooth Gaussian-process inputs "
            "(path='smooth', walked along the polyline through the grid points, whose corners are not counted) or "
            "those with random kinks (path='kinked', whose kinks are known); got path family 'ramp'. Use "
            "method='grid' for other inputs.")):
        simulate("relu", 1, input_shape=(3,), n_points=101, path=Ramp(), method="exact")


def test_simulate_leaves_global_random_state_alone():
    torch_state = torch.random.get_rng_state()
    np_state = np.random.get_state()[1].copy()
    simulate("linear(out_features=3) | relu", 2, input_shape=(4,), n_points=128, path=RESOLVED_SMOOTH)
    assert torch.equal(torch_state, torch.random.get_rng_state())
    assert np.array_equal(np_state, np.random.get_state()[1])


def test_max_units_measures_a_fixed_random_subset():
    spec, shape = "relu", (256,)
    full = simulate(spec, 12, seed=4, input_shape=shape, max_units=None)
    sub = simulate(spec, 12, seed=4, input_shape=shape, max_units=32)
    assert (full["n_measured_out"] == 256).all() and (sub["n_measured_out"] == 32).all()
    assert (sub["n_units_out"] == 256).all()
    # the subset does not change the inputs or weights: same family draws, same input moments in expectation
    np.testing.assert_array_equal(full["family_sigma"], sub["family_sigma"])
    # unbiased: per-trial means of a 32-unit subset scatter around the full mean
    rel = (sub["smp_out"] - full["smp_out"]) / full["smp_out"]
    assert abs(rel.mean()) < 3 * rel.std(ddof=1) / np.sqrt(len(rel)) + 0.02
    assert rel.abs().max() < 0.6
    # the subset is fixed by the trial seed, whatever the chunking
    again = simulate(spec, 12, seed=4, input_shape=shape, max_units=32, chunk_size=100)
    pd.testing.assert_frame_equal(sub, again, check_like=True)


def test_max_units_is_validated():
    with pytest.raises(InputError, match=r"max_units must be an int >= 1; got 0\."):
        simulate("relu", 1, input_shape=(4,), max_units=0)


def test_segment_inputs_are_straight_and_exact_matches_grid():
    from smpstats.inputs import SegmentInputs

    draw = SegmentInputs().draw(64, 5, np.random.default_rng(0))
    np.testing.assert_allclose(draw.x[0], draw.start)
    np.testing.assert_allclose(draw.x[-1], draw.end)
    np.testing.assert_allclose(np.diff(draw.x, 2, axis=0), 0.0, atol=1e-12)
    spec, shape = "conv1d(out_channels=4,kernel_size=3)|relu|maxpool1d(kernel_size=2)", (2, 24)
    exact = simulate(spec, 3, seed=1, input_shape=shape, path="segment", method="exact", n_points=8192)
    grid = simulate(spec, 3, seed=1, input_shape=shape, path="segment", n_points=8192)
    assert (exact["method"] == "exact").all()
    assert (exact.loc[exact.stage == 1, "smp_out"] == 0).all()  # conv of a segment is a segment
    assert (exact.loc[exact.stage > 1, "smp_out"] > 0).any()
    # the grid resolves these few kinks at 8192 points: the two methods agree
    np.testing.assert_allclose(grid["smp_out"], exact["smp_out"], rtol=1e-3, atol=1e-9)
    np.testing.assert_allclose(grid["mu_out"], exact["mu_out"])


def test_exact_method_on_smooth_paths_converges_and_matches_a_fine_grid():
    # along the polyline through the grid points: the network's kinks exactly, not the polyline's corners
    spec, shape = "linear(out_features=6)|relu|linear(out_features=6)|relu|linear(out_features=3)", (4,)
    family = SmoothInputs(mu=0.2, sigma=1.0, length_scale=0.2)
    coarse = simulate(spec, 3, seed=2, input_shape=shape, path=family, method="exact", n_points=257)
    fine = simulate(spec, 3, seed=2, input_shape=shape, path=family, method="exact", n_points=1025)
    grid = simulate(spec, 3, seed=2, input_shape=shape, path=family, n_points=16384)
    assert (coarse.loc[coarse.stage == 1, "smp_out"] == 0).all()  # an affine map of a smooth path: no kinks
    assert (fine["smp_out"] > 0).sum() >= 9
    np.testing.assert_allclose(coarse["smp_out"], fine["smp_out"], rtol=0.01, atol=1e-9)
    np.testing.assert_allclose(grid["smp_out"], fine["smp_out"], rtol=0.02, atol=1e-6)


def test_exact_method_reports_every_measured_column():
    """The exact walk replaces the grid SMP at every stage (also past a flatten); the moments come from the grid."""
    spec, shape = "conv1d(out_channels=3, kernel_size=3) | relu | flatten | linear(out_features=4) | relu", (2, 10)
    exact = simulate(spec, 2, seed=3, input_shape=shape, path="segment", method="exact", n_points=64)
    grid = simulate(spec, 2, seed=3, input_shape=shape, path="segment", n_points=64)
    columns = [f"{name}_{side}" for side in ("in", "out") for name in ("smp", "kinks", "resolved", "n_measured")]
    assert exact[columns].notna().all().all()
    first = exact[exact.stage == 1]
    assert (first["smp_in"] == 0).all() and (first["kinks_in"] == 0).all() and (first["resolved_in"] == 1).all()
    for _, rows in exact.groupby("trial"):  # each stage's input is the previous stage's output
        np.testing.assert_array_equal(rows["smp_in"].iloc[1:].to_numpy(), rows["smp_out"].iloc[:-1].to_numpy())
    moments = [f"{name}_{side}" for side in ("in", "out") for name in ("mu", "sigma", "sigma_pool", "sigma_dot")]
    pd.testing.assert_frame_equal(exact[moments], grid[moments], check_exact=True)


def test_exact_method_rejects_smooth_blocks():
    from smpstats.errors import NotPiecewiseLinearError

    with pytest.raises(NotPiecewiseLinearError, match="gelu|GELU"):
        simulate("gelu", 1, input_shape=(4,), path="segment", method="exact")


def test_sigma_chan_leaves_out_the_spread_of_the_channel_means():
    """A conv's channels have different means (input mean times their weight sums): sigma_chan is the spread
    inside a channel; one channel (a 1-D shape) makes it the pooled std."""
    conv = simulate("conv1d(out_channels=8, kernel_size=3)", 4, seed=2, input_shape=(2, 40), n_points=256,
                    path=SmoothInputs(mu=2.0))
    assert (conv["sigma_chan_out"] < 0.9 * conv["sigma_pool_out"]).all()
    assert (conv["sigma_chan_out"] > conv["sigma_out"]).all()  # it keeps the spread of units' means in a channel
    dense = simulate("linear(out_features=16)", 3, seed=2, input_shape=(12,), n_points=256)
    np.testing.assert_allclose(dense["sigma_chan_out"], dense["sigma_pool_out"], rtol=1e-12)
    np.testing.assert_allclose(dense["sigma_chan_in"], dense["sigma_pool_in"], rtol=1e-12)


def test_exact_method_on_kinked_inputs_counts_their_own_kinks_where_they_are():
    """A linear layer has no kinks of its own: its exact SMP is every input kink's jump times the weights' column
    (no grid loss); through a ReLU, exact SMP at 513 points matches a 16385-point grid of the same inputs."""
    from smpstats.blocks import build_chain
    from smpstats.simulation import _exact_stage_stats

    family = KinkedInputs(kink_rate=(1, 10), length_scale=(0.15, 0.25))
    chain = build_chain("linear(out_features=5)", (6,), generator=0)
    draw = family.draw(257, 6, np.random.default_rng(1))
    (stats,) = _exact_stage_stats(chain, draw, family)
    w = chain.stages[0].module.weight.detach().numpy()  # (5, 6)
    k = draw.kinks
    expected = np.abs(w[:, k.owner] * k.jumps).sum(axis=1).mean()
    assert len(k.times) > 10 and stats["smp"] == pytest.approx(expected, rel=1e-12)
    assert stats["kinks"] == pytest.approx(len(k.times))  # every kink reaches every output (no zero weights)

    spec, shape = "linear(out_features=16) | relu", (8,)
    exact = simulate(spec, 4, seed=3, input_shape=shape, path=family, n_points=513, method="exact")
    fine = simulate(spec, 4, seed=3, input_shape=shape, path=family, n_points=16385)
    first = exact[exact.stage == 1]
    np.testing.assert_allclose(first["smp_in"], first["smp_in_true"], rtol=1e-12)
    assert (first["kinks_in"] > 0).all()
    np.testing.assert_allclose(exact["smp_out"], fine["smp_out"], rtol=0.01)


def test_kink_value_moments_find_where_the_kinks_sit():
    """A ReLU's kinks all sit at the value 0 (mu_kink_out ~ 0, sigma_kink_out tiny next to the signal's spread); a
    smooth input has no kinks (NaN)."""
    df = simulate("relu", 6, seed=4, input_shape=(4, 32), path="smooth", n_points=2048)
    assert df["mu_kink_in"].isna().all() and df["sigma_kink_in"].isna().all()
    scale = df["sigma_pool_out"].to_numpy()
    # within the half sample step of the nearest sample, far inside the signal's spread
    assert (np.abs(df["mu_kink_out"]) < 0.05 * scale).all()
    assert (df["sigma_kink_out"] < 0.1 * scale).all() and (df["sigma_kink_out"] > 0).all()
    # the exact walk measures no kink values: NaN rather than a grid estimate
    exact = simulate("relu", 2, seed=4, input_shape=(4, 8), path="segment", method="exact", n_points=64)
    assert exact["mu_kink_out"].isna().all() and exact["sigma_kink_out"].isna().all()
