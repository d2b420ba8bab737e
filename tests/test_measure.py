"""Tests of smpstats.measure against closed-form kinks of one-hidden-layer ReLU nets."""

from __future__ import annotations

import copy
import logging
import re

import numpy as np
import pytest
import torch

from smpstats.errors import InputError, SignalError, SMPStatsError
from smpstats.measurement import MeasureResult, measure
from smpstats.paths import GaussianProcessPath, SegmentPath, SequencePath

#: Kink times of the hidden units whose pre-activation crosses zero inside (0, 1),
#: at least 0.15 apart: hundreds of samples on the grids used below.
KINK_TIMES = np.array([0.11, 0.29, 0.52, 0.71, 0.9])
#: Hidden units whose zero crossing falls outside the segment (no kink).
OUTSIDE_TIMES = np.array([-0.4, 1.7])


def make_relu_net(seed=0, n_in=6, n_out=3, dtype=torch.float32, dropout=False):
    """One-hidden-layer ReLU net and a segment with its kinks where we want them.

    Returns (module, start, end, exact) with ``exact`` of shape (n_out,): the exact
    SMP of each output along the segment, computed in closed form from the
    module's own (float64-converted) parameters.
    """
    rng = np.random.default_rng(seed)
    times = np.r_[KINK_TIMES, OUTSIDE_TIMES]
    n_hidden = times.size
    start, end = rng.normal(size=n_in), rng.normal(size=n_in)
    W = rng.normal(size=(n_hidden, n_in))
    z_dot = W @ (end - start)
    b = -(W @ start) - times * z_dot  # pre-activation z_i(t) = z_i(0) + t z'_i vanishes at times[i]
    layers = [torch.nn.Linear(n_in, n_hidden), torch.nn.ReLU()]
    if dropout:
        layers.append(torch.nn.Dropout(0.5))
    layers.append(torch.nn.Linear(n_hidden, n_out))
    net = torch.nn.Sequential(*layers).to(dtype)
    with torch.no_grad():
        net[0].weight.copy_(torch.from_numpy(W))
        net[0].bias.copy_(torch.from_numpy(b))
        net[-1].weight.copy_(torch.from_numpy(rng.normal(size=(n_out, n_hidden))))
        net[-1].bias.copy_(torch.from_numpy(rng.normal(size=n_out)))
    exact, t_kink = exact_relu_smp(net, start, end)
    return net, start, end, exact, t_kink


def exact_relu_smp(net, start, end):
    """Closed form: unit i kinks at t_i = -z_i(0) / z'_i, output k jumps by |V_ki z'_i|."""
    W = net[0].weight.detach().double().numpy()
    b = net[0].bias.detach().double().numpy()
    V = net[-1].weight.detach().double().numpy()
    z0 = W @ start + b
    z_dot = W @ (end - start)
    t_kink = -z0 / z_dot
    inside = (t_kink > 0) & (t_kink < 1)
    exact = np.abs(V[:, inside] * z_dot[inside]).sum(axis=1)
    return exact, np.sort(t_kink[inside])


@pytest.fixture(scope="module")
def relu_case():
    return make_relu_net()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_relu_net_matches_closed_form(seed):
    net, start, end, exact, t_kink = make_relu_net(seed=seed)
    np.testing.assert_allclose(t_kink, KINK_TIMES, atol=1e-5)  # the set-up put the kinks where wanted
    result = measure(net, SegmentPath(start, end), n_points=4001)
    assert isinstance(result, MeasureResult)
    assert result.out_shape == (3,) and result.input_shape == (6,)
    np.testing.assert_allclose(result.value, exact, rtol=1e-6)
    assert result.total == pytest.approx(exact.sum(), rel=1e-6)
    np.testing.assert_array_equal(result.smp.n_peaks, [KINK_TIMES.size] * 3)
    assert result.resolved
    np.testing.assert_array_equal(result.t, np.linspace(0, 1, 4001))
    assert result.dt == pytest.approx(1 / 4000, rel=1e-15)
    peaks = result.smp.peaks_frame()
    for k in range(3):  # each detected kink within one step of its closed-form position
        times = np.sort(peaks.loc[peaks["index_0"] == k, "time"].to_numpy())
        np.testing.assert_allclose(times, t_kink, atol=result.dt)


def test_relu_net_as_callables_and_numpy_input(relu_case):
    net, start, end, exact, _ = relu_case
    W, b = net[0].weight.detach().double(), net[0].bias.detach().double()
    V, c = net[-1].weight.detach().double(), net[-1].bias.detach().double()

    def torch_f(x):
        assert isinstance(x, torch.Tensor) and x.dtype == torch.float64
        return torch.relu(x @ W.T + b) @ V.T + c

    Wn, bn, Vn, cn = (a.numpy() for a in (W, b, V, c))

    def numpy_f(x):
        assert isinstance(x, np.ndarray) and x.dtype == np.float64
        return np.maximum(x @ Wn.T + bn, 0.0) @ Vn.T + cn

    path = SegmentPath(start, end)
    for f, kind in ((torch_f, "torch"), (numpy_f, "numpy")):
        result = measure(f, path, 3001, input_type=kind)
        np.testing.assert_allclose(result.value, exact, rtol=1e-6)


def test_chunk_size_does_not_change_the_result(relu_case):
    net, start, end, _, _ = relu_case
    path = SegmentPath(start, end)
    small = measure(net, path, 1001, chunk_size=7, keep_outputs=True)
    large = measure(net, path, 1001, chunk_size=4096, keep_outputs=True)
    np.testing.assert_allclose(small.outputs, large.outputs, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(small.value, large.value, rtol=1e-10)
    np.testing.assert_array_equal(small.smp.n_peaks, large.smp.n_peaks)

    gp = GaussianProcessPath((6,), length_scale=0.3, seed=4)
    a = measure(net, gp, 999, chunk_size=13, keep_outputs=True)
    b = measure(net, gp, 999, keep_outputs=True)
    np.testing.assert_allclose(a.outputs, b.outputs, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(a.value, b.value, rtol=1e-10)


def test_module_is_not_modified():
    net, start, end, exact, _ = make_relu_net(seed=1, dropout=True)
    net.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    first = measure(net, SegmentPath(start, end), 2001)
    second = measure(net, SegmentPath(start, end), 2001)
    # dropout is off (eval copy): deterministic and equal to the closed form
    np.testing.assert_allclose(first.value, exact, rtol=1e-6)
    np.testing.assert_array_equal(first.value, second.value)
    assert net.training and all(m.training for m in net.modules())
    for name, tensor in net.state_dict().items():
        assert tensor.dtype == torch.float32, name
        assert torch.equal(tensor, before[name]), name


def test_float64_eval_module_runs_as_is(caplog):
    net64, start, end, exact, _ = make_relu_net(dtype=torch.float64)
    net64.eval()
    calls = []
    net64.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    with caplog.at_level(logging.INFO, logger="smpstats.measurement"):
        result = measure(net64, SegmentPath(start, end), 2001, chunk_size=1000)
    assert calls == [1000, 1000, 1]  # the module itself ran: no copy was needed
    assert not any("copy" in m for m in caplog.messages)
    np.testing.assert_allclose(result.value, exact, rtol=1e-6)
    assert not net64.training and net64[0].weight.dtype == torch.float64


def test_smooth_model_has_no_kinks():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))
    rng = np.random.default_rng(0)
    start, end = 2 * rng.normal(size=6), 2 * rng.normal(size=6)
    result = measure(net, SegmentPath(start, end), 2001, keep_outputs=True)
    slope_scale = np.abs(np.diff(result.outputs, axis=0)).max() / result.dt
    assert result.total <= 1e-6 * slope_scale
    assert result.resolved


def test_identity_on_gaussian_process_path_is_smooth():
    path = GaussianProcessPath((4,), length_scale=0.2, seed=8)
    result = measure(lambda x: x, path, 2001)
    assert result.total <= 1e-6 * 4 * 1 / 0.2  # ~0 against slopes of size sigma / length_scale


def test_scalar_and_multidimensional_outputs(relu_case):
    net, start, end, exact, _ = relu_case
    net64 = copy.deepcopy(net).double()
    path = SegmentPath(start, end)
    scalar = measure(lambda x: net64(x)[:, 1], path, 2001)
    assert scalar.out_shape == () and isinstance(scalar.value, float)
    assert scalar.value == pytest.approx(exact[1], rel=1e-6)
    grid = measure(lambda x: torch.stack([net64(x), -2 * net64(x)], dim=1), path, 2001)
    assert grid.out_shape == (2, 3) and grid.value.shape == (2, 3)
    np.testing.assert_allclose(grid.value, [exact, 2 * exact], rtol=1e-6)
    frame = grid.to_frame()
    assert list(frame.columns) == ["component", "index", "smp", "n_peaks", "resolved", "reason"]
    assert frame["index"].tolist() == [(i, j) for i in range(2) for j in range(3)]
    np.testing.assert_allclose(frame["smp"], np.r_[exact, 2 * exact], rtol=1e-6)
    flat = measure(net, path, 2001).to_frame()
    assert list(flat.columns) == ["component", "smp", "n_peaks", "resolved", "reason"]
    assert flat["reason"].tolist() == ["", "", ""]


def test_sequence_path_uses_its_stamps():
    stamps = 10.0 + 0.01 * np.arange(200)
    points = np.abs(stamps - 10.4037)[:, None]  # one input coordinate: |t - t*|, slope jump 2 at t*
    result = measure(lambda x: x[:, 0], SequencePath(points, t=stamps))
    assert result.n_points == 200
    np.testing.assert_allclose(result.t, stamps, rtol=1e-14)
    assert result.dt == pytest.approx(0.01, rel=1e-12)
    assert result.value == pytest.approx(2.0, rel=1e-6)
    peak_time = result.smp.peaks_frame()["time"].to_numpy()
    np.testing.assert_allclose(peak_time, 0.4037, atol=0.01)  # grid time counts from the first sample


def test_default_points_are_logged(caplog):
    with caplog.at_level(logging.INFO, logger="smpstats.measurement"):
        result = measure(lambda x: x[:, 0] ** 2, SegmentPath([0.0], [1.0]))
    assert result.n_points == 1024
    assert "measure: n_points not given; using 1024 points along the path." in caplog.messages


def test_copy_of_module_is_logged(caplog, relu_case):
    net, start, end, _, _ = relu_case
    with caplog.at_level(logging.INFO, logger="smpstats.measurement"):
        measure(net, SegmentPath(start, end), 101)
    assert ("measure: running a float64 copy of Sequential in eval mode (the module passed is left unchanged)."
            in caplog.messages)


def test_progress_bar_and_summary(capsys, relu_case):
    net, start, end, _, _ = relu_case
    result = measure(net, SegmentPath(start, end), 1001, chunk_size=100, progress=True)
    err = capsys.readouterr().err
    assert "measure" in err and "11/11" in err
    text = result.summary()
    assert text.splitlines()[-1].startswith("Next:")
    assert "3 components" in text
    assert repr(result).startswith("MeasureResult(total=")
    assert result.outputs is None


def test_unresolved_result_says_so():
    # Alternating kinks 1.3 steps apart: they share sampling steps and cancel.
    t_kinks = np.arange(0.1, 0.9, 0.0013)
    signs = torch.from_numpy((-1.0) ** np.arange(t_kinks.size))

    def f(x):
        return (torch.relu(x - torch.from_numpy(t_kinks)) * signs).sum(dim=1)

    result = measure(f, SegmentPath([0.0], [1.0]), 1001)
    assert not result.resolved
    assert "NOT resolved" in result.summary()
    assert "n_points=2001" in result.summary().splitlines()[-1]


# --------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------

def _full(message):
    return f"^{re.escape(message)}$"


def test_error_when_f_raises():
    def f(x):
        raise ValueError("boom")

    with pytest.raises(SMPStatsError, match=_full(
            "f raised ValueError on chunk 1 of 3 (samples 0 to 3), given a torch.float64 tensor of shape (4, 2) "
            "on cpu: boom. Check that f accepts a batch of inputs of shape (batch, *(2,)) as given by the path.")) as info:
        measure(f, SegmentPath([0.0, 0.0], [1.0, 1.0]), 10, chunk_size=4)
    assert isinstance(info.value.__cause__, ValueError)


def test_error_when_f_raises_later_chunk_numpy():
    def f(x):
        if x.shape[0] < 4:
            raise RuntimeError("short batch")
        return x

    with pytest.raises(SMPStatsError, match=_full(
            "f raised RuntimeError on chunk 3 of 3 (samples 8 to 9), given a float64 numpy array of shape (2, 2): "
            "short batch. Check that f accepts a batch of inputs of shape (batch, *(2,)) as given by the path.")):
        measure(f, SegmentPath([0.0, 0.0], [1.0, 1.0]), 10, chunk_size=4, input_type="numpy")


def test_error_when_batch_size_differs():
    with pytest.raises(SignalError, match=_full(
            "f returned shape (9, 2) on chunk 1 of 1 (input of shape (10, 2)); expected a batch of 10 outputs, "
            "shape (10, ...). f must map a batch of inputs (first axis) to a batch of outputs of the same length; "
            "for a function of one input, pass a batched wrapper such as "
            "lambda x: torch.stack([g(xi) for xi in x]).")):
        measure(lambda x: x[:-1], SegmentPath([0.0, 0.0], [1.0, 1.0]), 10)
    with pytest.raises(SignalError, match="^f returned a scalar on chunk 1 of 1"):
        measure(lambda x: x.sum(), SegmentPath([0.0, 0.0], [1.0, 1.0]), 10)


def test_error_when_output_is_nan():
    # sqrt(1 - 2 t) is NaN from t = 0.6 on the grid of 11 points
    with pytest.raises(SignalError, match=_full(
            "f returned NaN or infinite outputs, first at sample 6 (t = 0.6); SMP needs finite outputs. "
            "Check the model and the inputs along the path.")):
        measure(lambda x: torch.sqrt(x[:, 0]), SegmentPath([1.0], [-1.0]), 11, chunk_size=4)
    with pytest.raises(SignalError, match=_full(
            "f returned NaN or infinite outputs, first at sample 6 (t = 0.6), component (1,); SMP needs finite "
            "outputs. Check the model and the inputs along the path.")):
        measure(lambda x: torch.stack([x[:, 0], torch.sqrt(x[:, 0])], 1), SegmentPath([1.0], [-1.0]), 11)


def test_error_when_output_shape_changes_or_is_a_tuple():
    calls = []

    def f(x):
        calls.append(1)
        return x if len(calls) == 1 else x[:, :1]

    with pytest.raises(SignalError, match=_full(
            "f returned outputs of shape (4, 1) on chunk 2 of 3, but per-input shape (2,) before; "
            "every output must have the same shape.")):
        measure(f, SegmentPath([0.0, 0.0], [1.0, 1.0]), 10, chunk_size=4)
    with pytest.raises(SignalError, match=_full(
            "f returned a tuple on chunk 1 of 1 (input of shape (10, 2)); it must return one array or tensor of "
            "shape (10, ...). Wrap f to pick the output to measure, e.g. lambda x: f(x)[0].")):
        measure(lambda x: (x, x), SegmentPath([0.0, 0.0], [1.0, 1.0]), 10)


@pytest.mark.parametrize(
    "f, kwargs, message",
    [
        (3, {}, "f must be a torch.nn.Module or a callable mapping a batch of inputs to a batch of outputs; "
                "got an object of type int."),
        (torch.nn.ReLU(), {"input_type": "numpy"},
         "input_type='numpy' cannot be used with a torch.nn.Module, which needs tensors; leave input_type='torch'."),
        (torch.nn.ReLU(), {"input_type": "jax"}, "input_type must be one of 'torch', 'numpy'; got 'jax'."),
        (torch.nn.ReLU(), {"chunk_size": 0}, "chunk_size must be an int >= 1; got 0."),
        (torch.nn.ReLU(), {"n_points": 2},
         "n_points must be an int >= 3 (samples along the path; SMP needs at least 3); got 2."),
    ],
)
def test_argument_errors(f, kwargs, message):
    with pytest.raises(InputError, match=_full(message)):
        measure(f, SegmentPath([0.0], [1.0]), **kwargs)


def test_sequence_path_refuses_other_n_points():
    with pytest.raises(InputError, match="^n_points=50 does not match the 20 points of this SequencePath"):
        measure(lambda x: x, np.zeros((20, 3)), n_points=50)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_module_on_cuda_stays_there():
    net, start, end, exact, _ = make_relu_net(seed=2)
    net = net.cuda()
    result = measure(net, SegmentPath(start, end), 4001)
    np.testing.assert_allclose(result.value, exact, rtol=1e-6)
    assert net[0].weight.is_cuda and net[0].weight.dtype == torch.float32
