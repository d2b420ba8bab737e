"""Tests of smpstats.studies: dispatch to the theory, and the sources-of-nonsmoothness study."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

import smpstats
from smpstats import theory
from smpstats.blocks import build_chain
from smpstats.errors import UnknownBlockError
from smpstats.studies import STANDARD_BLOCKS, SourcesStudy, block_theory, sources_of_nonsmoothness

# Input statistics of a few trials (broadcast together) and a path length.
MU = np.array([-0.7, 0.0, 0.4, 1.1])
SIGMA = np.array([0.6, 1.0, 1.7, 2.0])
SIGMA_DOT = np.array([3.0, 4.0, 9.0, 2.5])
LENGTH = 1.5
SMP_IN = np.array([0.0, 0.5, 2.0, 7.0])


# ----------------------------------------------------------------------------- block_theory

@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("relu", lambda *a: theory.relu_expected_smp(*a)),
        ("leaky_relu(negative_slope=0.2)", lambda *a: theory.leaky_relu_expected_smp(*a, negative_slope=0.2)),
        ("prelu(alpha=0.3)", lambda *a: theory.prelu_expected_smp(*a, weight=0.3)),
        ("maxpool1d(kernel_size=3)", lambda *a: theory.maxpool_expected_smp(3, *a)),
        ("maxpool2d(kernel_size=2)", lambda *a: theory.maxpool_expected_smp(4, *a)),
        ("maxpool2d(kernel_size=(2,3))", lambda *a: theory.maxpool_expected_smp(6, *a)),
        ("maxpool1d(kernel_size=2, stride=1)", lambda *a: theory.maxpool_expected_smp(2, *a)),
    ],
)
def test_block_theory_dispatches_to_the_theory(spec, expected):
    got = block_theory(spec, MU, SIGMA, SIGMA_DOT, LENGTH, SMP_IN)
    np.testing.assert_allclose(got, expected(MU, SIGMA, SIGMA_DOT, LENGTH, SMP_IN), rtol=1e-12)
    assert np.all(got > 0)
    # smp_in defaults to 0 (smooth inputs)
    np.testing.assert_allclose(block_theory(spec, MU, SIGMA, SIGMA_DOT, LENGTH),
                               expected(MU, SIGMA, SIGMA_DOT, LENGTH, 0.0), rtol=1e-12)


def test_block_theory_scalar_inputs_give_a_float():
    got = block_theory("relu", 0.0, 1.0, 4.0, 1.0)
    assert np.ndim(got) == 0
    assert float(got) == pytest.approx(16.0 / math.sqrt(2.0 * math.pi), rel=1e-12)


def test_block_theory_uses_the_blocks_default_slopes():
    """Without parameters, leaky_relu and prelu use the slopes that build_chain gives the modules."""
    leaky, prelu = (stage.module for stage in build_chain("leaky_relu | prelu", (4,)).stages)
    np.testing.assert_allclose(
        block_theory("leaky_relu", MU, SIGMA, SIGMA_DOT, LENGTH, SMP_IN),
        theory.leaky_relu_expected_smp(MU, SIGMA, SIGMA_DOT, LENGTH, SMP_IN, negative_slope=leaky.negative_slope),
        rtol=1e-12)
    np.testing.assert_allclose(
        block_theory("prelu", MU, SIGMA, SIGMA_DOT, LENGTH, SMP_IN),
        theory.prelu_expected_smp(MU, SIGMA, SIGMA_DOT, LENGTH, SMP_IN, weight=prelu.weight.detach().item()),
        rtol=1e-12)


def test_block_theory_identity_limits():
    """leaky_relu with slope 1 is the identity (no new kinks, input kinks kept); slope 0 is relu."""
    np.testing.assert_allclose(block_theory("leaky_relu(negative_slope=1.0)", MU, SIGMA, SIGMA_DOT, LENGTH, SMP_IN),
                               SMP_IN, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(block_theory("leaky_relu(negative_slope=0.0)", MU, SIGMA, SIGMA_DOT, LENGTH, SMP_IN),
                               block_theory("relu", MU, SIGMA, SIGMA_DOT, LENGTH, SMP_IN), rtol=1e-12)


@pytest.mark.parametrize("spec", ["linear(out_features=3)", "conv1d(out_channels=2,kernel_size=3)",
                                  "conv2d(out_channels=2,kernel_size=3)", "avgpool1d(kernel_size=2)",
                                  "avgpool2d(kernel_size=2)", "batchnorm", "gelu", "silu", "softplus", "tanh",
                                  "flatten"])
def test_block_theory_is_nan_for_blocks_without_new_kinks(spec):
    got = block_theory(spec, MU, SIGMA, SIGMA_DOT, LENGTH)
    assert got.shape == MU.shape and np.isnan(got).all()
    scalar = block_theory(spec, 0.0, 1.0, 4.0, 1.0)
    assert isinstance(scalar, float) and math.isnan(scalar)


def test_block_theory_nan_has_the_broadcast_shape():
    relu = block_theory("relu", 0.0, SIGMA, SIGMA_DOT, LENGTH)
    tanh = block_theory("tanh", 0.0, SIGMA, SIGMA_DOT, LENGTH)
    assert np.shape(tanh) == np.shape(relu) == SIGMA.shape


def test_block_theory_unknown_block():
    with pytest.raises(UnknownBlockError, match=r"^Unknown block 'reluu'\. Did you mean 'relu'\? Known blocks: "):
        block_theory("reluu", 0.0, 1.0, 1.0, 1.0)


def test_block_theory_rejects_chains_with_a_clear_message():
    with pytest.raises(ValueError, match=r"one block"):
        block_theory("relu | tanh", 0.0, 1.0, 1.0, 1.0)


# ----------------------------------------------------------------------------- sources_of_nonsmoothness

SUBSET = (("relu", (8, 64)), ("tanh", (8, 64)), ("maxpool1d(kernel_size=2)", (8, 64)))
N_TRIALS = 6


@pytest.fixture(scope="module")
def study():
    return sources_of_nonsmoothness(n_trials=N_TRIALS, seed=0, blocks=SUBSET)


def test_study_result_type(study):
    assert isinstance(study, SourcesStudy)
    assert isinstance(study.samples, pd.DataFrame) and isinstance(study.table, pd.DataFrame)


def test_samples_have_one_row_per_trial_and_block(study):
    s = study.samples
    assert len(s) == N_TRIALS * len(SUBSET)
    assert s["study_spec"].tolist() == [spec for spec, _ in SUBSET for _ in range(N_TRIALS)]
    for spec, _ in SUBSET:
        assert sorted(s.loc[s["study_spec"] == spec, "trial"]) == list(range(N_TRIALS))
    assert (s["stage"] == 1).all()
    assert (s["smp_in"] == 0).all()  # smooth inputs


def test_samples_carry_the_theory_at_each_trials_input_statistics(study):
    s = study.samples
    # the family is a squared-exponential process: sigma_dot = sigma / length scale
    np.testing.assert_allclose(s["family_sigma_dot"], s["family_sigma"] / s["family_length_scale"], rtol=1e-12)
    relu = s[s["study_spec"] == "relu"]
    np.testing.assert_allclose(
        relu["theory_smp"],
        theory.relu_expected_smp(relu["family_mu"], relu["family_sigma"], relu["family_sigma_dot"],
                                 relu["path_length"]),
        rtol=1e-12)
    pool = s[s["study_spec"] == "maxpool1d(kernel_size=2)"]
    np.testing.assert_allclose(
        pool["theory_smp"],
        theory.maxpool_expected_smp(2, pool["family_mu"], pool["family_sigma"], pool["family_sigma_dot"],
                                    pool["path_length"]),
        rtol=1e-12)
    assert s.loc[s["study_spec"] == "tanh", "theory_smp"].isna().all()
    np.testing.assert_allclose(s["smp_out_rel"], s["smp_out"] / (s["family_sigma_dot"] * s["path_length"]))


def test_block_i_is_simulated_with_seed_plus_i(study):
    """The documented seeding: block i of the study is simulate(spec, seed=seed + i)."""
    spec, shape = SUBSET[2]
    alone = smpstats.simulate(spec, n_trials=N_TRIALS, seed=2, input_shape=shape, path="smooth", n_points=512)
    mine = study.samples[study.samples["study_spec"] == spec]
    np.testing.assert_array_equal(mine["smp_out"].to_numpy(), alone["smp_out"].to_numpy())


def test_table_has_one_row_per_block_in_order(study):
    t = study.table
    assert t["block_spec"].tolist() == [spec for spec, _ in SUBSET]
    assert t["block"].tolist() == ["relu", "tanh", "maxpool1d"]
    assert (t["n_trials"] == N_TRIALS).all()


def test_table_aggregates_the_samples(study):
    s, t = study.samples, study.table.set_index("block_spec")
    for spec, _ in SUBSET:
        rows = s[s["study_spec"] == spec]
        assert t.loc[spec, "smp_out"] == pytest.approx(rows["smp_out"].mean(), rel=1e-12, abs=1e-15)
        assert t.loc[spec, "smp_out_sem"] == pytest.approx(rows["smp_out"].std(ddof=1) / np.sqrt(N_TRIALS),
                                                           rel=1e-12, abs=1e-15)
        assert t.loc[spec, "kinks_out"] == pytest.approx(rows["kinks_out"].mean(), rel=1e-12, abs=1e-15)
    kinky = t["theory_smp"].notna()
    np.testing.assert_allclose(t.loc[kinky, "rel_error"],
                               (t.loc[kinky, "smp_out"] - t.loc[kinky, "theory_smp"]) / t.loc[kinky, "theory_smp"])


def test_rectifier_and_max_pooling_create_smp_as_the_theory_predicts(study):
    t = study.table.set_index("block_spec")
    for spec in ("relu", "maxpool1d(kernel_size=2)"):
        assert bool(t.loc[spec, "creates_smp"]) is True
        assert bool(t.loc[spec, "creates_kinks_declared"]) is True
        assert t.loc[spec, "frac_trials_with_smp"] == 1.0
        assert t.loc[spec, "smp_out_rel"] > 1.0  # O(1) of the input slope scale
        assert abs(t.loc[spec, "rel_error"]) < 0.10


def test_smooth_activation_creates_no_smp(study):
    t = study.table.set_index("block_spec")
    tanh = t.loc["tanh"]
    assert bool(tanh["creates_smp"]) is False
    assert bool(tanh["creates_kinks_declared"]) is False
    assert np.isnan(tanh["theory_smp"]) and np.isnan(tanh["rel_error"])
    assert tanh["smp_out_rel"] < 0.01  # below the study's threshold for "creates SMP"
    assert tanh["smp_out"] < 1e-3 * t.loc["relu", "smp_out"]


def test_summary_mentions_every_block(study):
    text = study.summary()
    lines = text.splitlines()
    assert lines[0].startswith("Sources of nonsmoothness from smooth inputs")
    assert lines[-1].startswith("Next: ")
    for spec, _ in SUBSET:
        (line,) = [ln for ln in lines if ln.strip().startswith(spec + " ")]
        assert ("theory" in line) == (spec != "tanh"), line


def test_standard_blocks_are_valid_specs_with_matching_input_shapes():
    for spec, shape in STANDARD_BLOCKS:
        (block,) = smpstats.parse_spec(spec)
        chain = build_chain(spec, shape)
        assert chain.stages[0].in_shape == shape, spec
    specs = [spec for spec, _ in STANDARD_BLOCKS]
    assert len(set(specs)) == len(specs)


def test_same_spec_on_two_input_shapes_gives_two_rows():
    s = sources_of_nonsmoothness(n_trials=2, seed=0, blocks=(("relu", (8, 64)), ("relu", (3, 16, 16))))
    assert len(s.samples) == 4
    assert len(s.table) == 2
