"""Tests of smpstats.paths: exact statistics, determinism, validation messages."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from smpstats.errors import InputError, SignalError, TimeGridError
from smpstats.paths import (
    GaussianProcessPath,
    InputPath,
    PathStats,
    SegmentPath,
    SequencePath,
    as_path,
)


# --------------------------------------------------------------------------
# GaussianProcessPath
# --------------------------------------------------------------------------

N_COORDS = 20_000  # independent coordinates: relative std error of a std ~ 1 / sqrt(2 N) = 0.5 %


@pytest.fixture(scope="module")
def wide_gp():
    return GaussianProcessPath((N_COORDS,), center=0.7, length_scale=0.2, sigma=1.5, length=2.0, seed=11)


def test_gp_stats_are_the_exact_parameters(wide_gp):
    stats = wide_gp.stats
    assert isinstance(stats, PathStats)
    np.testing.assert_array_equal(stats.mu, np.full(N_COORDS, 0.7))
    np.testing.assert_array_equal(stats.sigma, np.full(N_COORDS, 1.5))
    np.testing.assert_allclose(stats.sigma_dot, np.full(N_COORDS, 1.5 / 0.2), rtol=1e-15)
    assert stats.length == 2.0 and stats.length_scale == 0.2
    frame = stats.to_frame()
    assert list(frame.columns) == ["coordinate", "mu", "sigma", "sigma_dot", "length", "length_scale"]
    assert len(frame) == N_COORDS


def test_gp_empirical_moments_match_exact_stats(wide_gp):
    t = np.array([0.0, 0.13, 0.5, 1.01, 1.6, 2.0])
    x = wide_gp.evaluate(t)  # (6, N): one independent draw per coordinate and time
    assert x.shape == (t.size, N_COORDS)
    # mean within 5 standard errors, std within 3 %
    np.testing.assert_allclose(x.mean(axis=1), 0.7, atol=5 * 1.5 / np.sqrt(N_COORDS))
    np.testing.assert_allclose(x.std(axis=1), 1.5, rtol=0.03)
    xdot = wide_gp.derivative(t)
    np.testing.assert_allclose(xdot.std(axis=1), 1.5 / 0.2, rtol=0.03)
    np.testing.assert_allclose(xdot.mean(axis=1), 0.0, atol=5 * 7.5 / np.sqrt(N_COORDS))


def test_gp_derivative_matches_finite_differences(wide_gp):
    t = np.array([0.3, 1.2])
    h = 1e-5
    numeric = (wide_gp.evaluate(t + h) - wide_gp.evaluate(t - h)) / (2 * h)
    np.testing.assert_allclose(wide_gp.derivative(t), numeric, rtol=1e-5, atol=1e-5 * 7.5)


def test_gp_covariance_is_squared_exponential(wide_gp):
    tau = np.array([0.0, 0.1, 0.2, 0.4])
    t0 = 0.5
    x = (wide_gp.evaluate(np.r_[t0, t0 + tau]) - 0.7) / 1.5
    corr = (x[0] * x[1:]).mean(axis=1)
    np.testing.assert_allclose(corr, np.exp(-(tau**2) / (2 * 0.2**2)), atol=0.03)


def test_gp_per_coordinate_sigma_and_center_broadcast():
    path = GaussianProcessPath((2, 5000), center=np.array([[-1.0], [2.0]]), sigma=[[0.5], [3.0]],
                               length_scale=0.1, seed=3)
    x = path.evaluate(np.linspace(0, 1, 4))  # (4, 2, 5000)
    np.testing.assert_allclose(x.std(axis=-1), np.broadcast_to([0.5, 3.0], (4, 2)), rtol=0.05)
    np.testing.assert_allclose(x.mean(axis=-1), np.broadcast_to([-1.0, 2.0], (4, 2)), atol=0.2)
    np.testing.assert_allclose(path.stats.sigma_dot[:, 0], [5.0, 30.0])


def test_gp_same_seed_same_path_other_seed_other_path():
    t = np.linspace(0, 1, 50)
    a = GaussianProcessPath((3, 4), seed=5).evaluate(t)
    b = GaussianProcessPath((3, 4), seed=5).evaluate(t)
    c = GaussianProcessPath((3, 4), seed=6).evaluate(t)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    d = GaussianProcessPath((3, 4), seed=np.random.SeedSequence(5)).evaluate(t)
    np.testing.assert_array_equal(a, d)


def test_gp_evaluate_at_any_t_agrees_with_grid():
    path = GaussianProcessPath((7,), length_scale=0.3, seed=2)
    t, x = path.grid(101)
    np.testing.assert_array_equal(t, np.linspace(0, 1, 101))
    assert x.shape == (101, 7)
    picked = [0, 3, 50, 77, 100]
    np.testing.assert_allclose(path.evaluate(t[picked]), x[picked], rtol=1e-13, atol=1e-13)
    one_by_one = np.concatenate([path.evaluate(ti) for ti in t])
    np.testing.assert_allclose(one_by_one, x, rtol=1e-13, atol=1e-13)
    assert path.evaluate(torch.tensor(0.25)).shape == (1, 7)


def test_gp_input_shape_from_center_and_torch_center():
    path = GaussianProcessPath(center=torch.ones(2, 3), seed=0)
    assert path.input_shape == (2, 3)
    np.testing.assert_array_equal(path.stats.mu, np.ones((2, 3)))
    assert GaussianProcessPath(4, seed=0).input_shape == (4,)


@pytest.mark.parametrize(
    "kwargs, err, message",
    [
        ({}, InputError,
         "GaussianProcessPath needs the shape of one input: pass input_shape=(...) "
         "(e.g. input_shape=(3, 32, 32)) or an array center=... of that shape."),
        ({"input_shape": (3, 0)}, InputError,
         "input_shape must be a tuple of ints >= 1 (the shape of one input, no batch dimension); got (3, 0)."),
        ({"input_shape": (3,), "center": np.zeros(4)}, InputError,
         "center of shape (4,) cannot be broadcast to input_shape (3,); pass a scalar or an array of shape input_shape."),
        ({"input_shape": (3,), "sigma": -1.0}, InputError,
         "sigma must be >= 0 (std of each coordinate); got a minimum of -1.0."),
        ({"input_shape": (3,), "length_scale": 0.0}, InputError,
         "length_scale must be a finite real number > 0.0; got 0.0."),
        ({"input_shape": (3,), "center": [0.0, np.nan, 1.0]}, InputError,
         "center contains NaN or infinite values (first at index (1,)); pass finite values."),
        ({"input_shape": (3,), "seed": "abc"}, InputError,
         "seed must be None, an int >= 0, a numpy SeedSequence or a numpy Generator; got 'abc'."),
    ],
)
def test_gp_argument_errors(kwargs, err, message):
    with pytest.raises(err, match=f"^{re.escape(message)}$"):
        GaussianProcessPath(**kwargs)


def test_times_outside_span_are_refused():
    path = GaussianProcessPath((2,), length=2.0, seed=0)
    with pytest.raises(TimeGridError, match=re.escape("t must lie in [0, 2] (the path's time span); got values from 0.5 to 2.5.")):
        path.evaluate([0.5, 2.5])
    with pytest.raises(TimeGridError, match=re.escape("t contains NaN or infinite times; pass finite times in [0, length].")):
        path.evaluate([np.nan])
    with pytest.raises(InputError, match=re.escape(
            "n_points must be an int >= 3 (samples along the path; SMP needs at least 3); got 2.")):
        path.grid(2)


# --------------------------------------------------------------------------
# SegmentPath
# --------------------------------------------------------------------------

def test_segment_endpoints_and_linearity():
    start = np.array([[1.0, -2.0], [0.5, 3.0]])
    end = torch.tensor([[3.0, 2.0], [0.5, -1.0]], dtype=torch.float32)
    path = SegmentPath(start, end)
    assert path.input_shape == (2, 2) and path.length == 1.0 and path.stats is None
    x = path.evaluate([0.0, 0.25, 1.0])
    np.testing.assert_array_equal(x[0], start)
    np.testing.assert_array_equal(x[2], end.double().numpy())
    np.testing.assert_allclose(x[1], 0.75 * start + 0.25 * end.double().numpy(), rtol=1e-15)
    t, xg = path.grid(5)
    np.testing.assert_array_equal(t, [0, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(np.diff(xg, 2, axis=0), 0.0, atol=1e-15)  # straight: no curvature
    np.testing.assert_array_equal(path.direction, end.double().numpy() - start)


def test_segment_keeps_its_own_copy():
    start = np.zeros(3)
    path = SegmentPath(start, np.ones(3))
    start[:] = 5.0
    np.testing.assert_array_equal(path.evaluate(0.0)[0], np.zeros(3))


def test_segment_scalar_inputs():
    path = SegmentPath(0.0, 2.0)
    assert path.input_shape == ()
    np.testing.assert_array_equal(path.evaluate([0.0, 0.5]), [0.0, 1.0])


@pytest.mark.parametrize(
    "start, end, message",
    [
        (np.zeros(3), np.zeros(4),
         "start and end must have the same shape (one input each, no batch dimension); "
         "got start of shape (3,) and end of shape (4,)."),
        (np.zeros(3), np.array([0.0, np.inf, 0.0]),
         "end contains NaN or infinite values (first at index (1,)); pass finite values."),
        (np.array(["a", "b"]), np.zeros(2),
         "start must be a numeric array or torch tensor; got dtype <U1."),
        (np.zeros(2), np.array([1 + 1j, 0]),
         "end must be real-valued; got complex dtype complex128."),
    ],
)
def test_segment_errors(start, end, message):
    with pytest.raises(InputError, match=f"^{re.escape(message)}$"):
        SegmentPath(start, end)


# --------------------------------------------------------------------------
# SequencePath
# --------------------------------------------------------------------------

def test_sequence_with_time_stamps():
    points = np.arange(12.0).reshape(6, 2)
    stamps = 10.0 + 0.5 * np.arange(6)
    path = SequencePath(points, t=stamps)
    assert path.dt == 0.5 and path.origin == 10.0 and path.length == 2.5
    assert path.input_shape == (2,) and path.n_points == 6 and path.stats is None
    t, x = path.grid()
    np.testing.assert_array_equal(t, 0.5 * np.arange(6))
    np.testing.assert_array_equal(x, points)
    np.testing.assert_array_equal(path.evaluate([0.0, 1.5]), points[[0, 3]])
    t2, _ = path.grid(6)
    np.testing.assert_array_equal(t2, t)


def test_sequence_with_dt_and_torch_points():
    points = torch.linspace(0, 1, 8, dtype=torch.float32).reshape(4, 2)
    path = SequencePath(points, dt=0.25)
    assert path.dt == 0.25 and path.origin == 0.0 and path.length == 0.75
    np.testing.assert_array_equal(path.grid()[1], points.double().numpy())
    assert SequencePath(np.zeros(5)).dt == 1.0  # scalar inputs, default step


@pytest.mark.parametrize(
    "points, kwargs, err, message",
    [
        (np.zeros((2, 4)), {}, SignalError,
         "points must hold at least 3 inputs along its first axis (time); got 2 (shape (2, 4)). "
         "Pass the inputs as an array of shape (n_points, *input_shape)."),
        (np.float64(1.0), {}, SignalError,
         "points must hold at least 3 inputs along its first axis (time); got a scalar. "
         "Pass the inputs as an array of shape (n_points, *input_shape)."),
        (np.array([[0.0, 1.0], [np.nan, 2.0], [0.0, 0.0]]), {}, SignalError,
         "points contains NaN or infinite values (first at index (1, 0)); pass finite values."),
        ([[0.0, 1.0], [2.0], [3.0, 4.0]], {}, SignalError,
         "points could not be converted to a numeric array:"),
        (np.zeros((4, 2)), {"t": [0.0, 1.0, 2.0]}, TimeGridError,
         "t has 3 time stamps but the signal has 4 samples along its time axis."),
        pytest.param(
            np.zeros((4, 2)), {"t": [0.0, 1.0, 2.5, 3.0]}, TimeGridError,
            "t must be uniformly spaced; steps range from 0.5 to 1.5 (relative deviation 0.5 > 1e-06). "
            "Resample onto a uniform grid first.",
        ),
        pytest.param(
            np.zeros((4, 2)), {"t": [0.0, 1.0, 1.0, 3.0]}, TimeGridError,
            "t must be strictly increasing; t[2] = 1.0 <= t[1] = 1.0. "
            "Sort the samples by time (and reverse both y and t for a path run backwards).",
        ),
        (np.zeros((4, 2)), {"t": [0.0, 1.0, 2.0, 3.0], "dt": 1.0}, TimeGridError,
         "Pass either t (time stamps) or dt (time step) to SequencePath, not both."),
        (np.zeros((4, 2)), {"dt": 0.0}, TimeGridError,
         "dt must be a positive finite number (time units per sample); got 0.0."),
    ],
)
def test_sequence_errors(points, kwargs, err, message):
    pattern = f"^{re.escape(message)}" + ("" if message.endswith(":") else "$")
    with pytest.raises(err, match=pattern):
        SequencePath(points, **kwargs)


def test_sequence_is_known_only_at_its_samples():
    path = SequencePath(np.zeros((5, 1)), dt=0.1)
    with pytest.raises(InputError, match="^" + re.escape(
            "n_points=7 does not match the 5 points of this SequencePath; a sequence is known only at its "
            "own samples: pass n_points=None (or resample the sequence).") + "$"):
        path.grid(7)
    with pytest.raises(TimeGridError, match="^" + re.escape(
            "A SequencePath is known only at its sample times k * dt (dt = 0.1); got t = 0.15, between samples. "
            "Evaluate at path.times() instead.") + "$"):
        path.evaluate([0.1, 0.15])


# --------------------------------------------------------------------------
# as_path
# --------------------------------------------------------------------------

def test_as_path_coercions():
    gp = GaussianProcessPath((2,), seed=0)
    assert as_path(gp) is gp
    seg = as_path((np.zeros(3), torch.ones(3)))
    assert isinstance(seg, SegmentPath) and seg.input_shape == (3,)
    seq = as_path(np.zeros((6, 2, 2)))
    assert isinstance(seq, SequencePath) and seq.input_shape == (2, 2) and seq.dt == 1.0
    assert isinstance(as_path(torch.zeros(4, 3)), SequencePath)
    assert isinstance(as_path([[0.0], [1.0], [3.0]]), SequencePath)
    assert all(isinstance(p, InputPath) for p in (gp, seg, seq))


def test_as_path_rejects_other_objects():
    message = (
        "path must be an InputPath (SegmentPath, GaussianProcessPath, SequencePath), a tuple (start, end) "
        "or an array of inputs of shape (n_points, *input_shape); got an object of type dict."
    )
    with pytest.raises(InputError, match=f"^{re.escape(message)}$"):
        as_path({"start": 0})
