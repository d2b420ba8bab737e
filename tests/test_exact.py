"""Tests of smpstats.exact_smp: closed-form kinks, agreement with a fine grid, invariances, errors."""

from __future__ import annotations

import copy
import logging

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from smpstats.errors import (
    ExactSMPError,
    InputError,
    NotPiecewiseLinearError,
    SMPStatsError,
    TooManyEventsError,
)
from smpstats.exact import ExactSMPResult, exact_smp
from smpstats.grid import smp

@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """The walk runs many small forward passes: threads only add contention (and time) on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


SMOOTH_HINT = r"Use the grid estimator instead: smpstats\.measure\(model, smpstats\.SegmentPath\(start, end\), n_points=\.\.\.\)"


# ---------------------------------------------------------------------------
# one hidden layer: every kink in closed form
# ---------------------------------------------------------------------------


def one_layer(seed, n_in=5, n_hidden=30, n_out=3, act=None):
    """Linear -> act -> Linear in float64, and a segment; returns (net, start, end, a, b, V).

    Pre-activation of hidden unit i along the segment: z_i(t) = a_i + b_i t.
    """
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = nn.Sequential(nn.Linear(n_in, n_hidden), act if act is not None else nn.ReLU(), nn.Linear(n_hidden, n_out))
    net = net.double()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64))
    start, end = rng.normal(size=n_in), rng.normal(size=n_in)
    W = net[0].weight.detach().numpy()
    a = W @ start + net[0].bias.detach().numpy()
    b = W @ (end - start)
    V = net[2].weight.detach().numpy()
    return net, start, end, a, b, V


def closed_form(events):
    """events: list of (t, jump vector) -> sorted t, jumps (n, n_out)."""
    events = sorted(events, key=lambda e: e[0])
    return np.array([e[0] for e in events]), np.array([e[1] for e in events])


def relu_like_events(a, b, V, slope_neg):
    """ReLU-type unit with slope 1 above 0 and slope_neg[i] below: kink where z_i = 0."""
    out = []
    for i in range(a.size):
        t = -a[i] / b[i]
        if 0 < t < 1:
            # slope of the unit's output in t changes from (slope below or 1) * b_i to the other side
            out.append((t, V[:, i] * (1 - slope_neg[i]) * abs(b[i])))
    return closed_form(out)


def assert_matches(result, t_true, jumps_true):
    assert result.n_events == t_true.size
    np.testing.assert_allclose(result.t, t_true, rtol=0, atol=1e-10)
    np.testing.assert_allclose(result.jumps, jumps_true, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(result.value, np.abs(jumps_true).sum(axis=0), rtol=1e-10)
    np.testing.assert_array_equal(result.n_kinks, np.full(jumps_true.shape[1], t_true.size))


@pytest.mark.parametrize("seed", range(5))
def test_relu_one_layer_closed_form(seed):
    net, start, end, a, b, V = one_layer(seed)
    t_true, jumps_true = relu_like_events(a, b, V, np.zeros(a.size))
    assert 3 <= t_true.size  # the set-up has kinks inside the segment
    result = exact_smp(net, start, end)
    assert isinstance(result, ExactSMPResult)
    assert_matches(result, t_true, jumps_true)
    assert result.out_shape == (3,) and result.input_shape == (5,)
    assert result.value.shape == (3,) and result.total == pytest.approx(np.abs(jumps_true).sum(), rel=1e-10)
    # one evaluation per region plus the two end points
    assert result.n_evaluations == t_true.size + 3
    assert result.ops == {"relu": 1}
    assert result.complete and result.t_reached == 1.0


@pytest.mark.parametrize("seed", range(2))
def test_leaky_relu_and_prelu_closed_form(seed):
    net, start, end, a, b, V = one_layer(seed, act=nn.LeakyReLU(0.2))
    t_true, jumps_true = relu_like_events(a, b, V, np.full(a.size, 0.2))
    assert_matches(exact_smp(net, start, end), t_true, jumps_true)

    prelu = nn.PReLU(30).double()
    with torch.no_grad():
        prelu.weight.copy_(torch.linspace(-0.5, 0.9, 30, dtype=torch.float64))
    net, start, end, a, b, V = one_layer(seed, act=prelu)
    alpha = net[1].weight.detach().numpy()
    t_true, jumps_true = relu_like_events(a, b, V, alpha)
    assert_matches(exact_smp(net, start, end), t_true, jumps_true)


@pytest.mark.parametrize("seed", range(2))
def test_hardtanh_closed_form(seed):
    lo, hi = -0.7, 1.3
    net, start, end, a, b, V = one_layer(seed, act=nn.Hardtanh(lo, hi))
    events = []
    for i in range(a.size):
        for level, enters_when_rising in ((lo, True), (hi, False)):
            t = (level - a[i]) / b[i]
            if 0 < t < 1:
                rising = b[i] > 0
                entering = rising == enters_when_rising  # into the linear zone (slope b_i) or out of it
                events.append((t, V[:, i] * b[i] * (1.0 if entering else -1.0)))
    t_true, jumps_true = closed_form(events)
    assert t_true.size >= 3
    assert_matches(exact_smp(net, start, end), t_true, jumps_true)


def test_coincident_kinks_count_as_one_event():
    """Bias-free net on a segment through the origin: every unit switches at t = 1/2."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 10, bias=False), nn.ReLU(), nn.Linear(10, 2)).double()
    x = torch.randn(4, dtype=torch.float64)
    result = exact_smp(net, -x, x)
    b = net[0].weight.detach().numpy() @ (2 * x.numpy())
    V = net[2].weight.detach().numpy()
    assert result.n_events == 1
    np.testing.assert_allclose(result.t, [0.5], atol=1e-12)
    np.testing.assert_allclose(result.jumps[0], (V * np.abs(b)).sum(axis=1), rtol=1e-12)


def test_evaluation_point_on_a_switch_is_moved():
    """Kinks at t = 1/2, 17/32, 7/8: the walk's second evaluation point, 1/16 of the last region's width
    past t = 1/2, falls exactly on t = 17/32 and must be moved off it (one extra evaluation)."""
    net = nn.Sequential(nn.Linear(1, 3), nn.ReLU(), nn.Linear(3, 1)).double()
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[-2.0], [-32.0], [8.0]]))
        net[0].bias.copy_(torch.tensor([1.0, 17.0, -7.0]))
        net[2].weight.copy_(torch.tensor([[1.0, 2.0, 3.0]]))
    result = exact_smp(net, np.zeros(1), np.ones(1))
    np.testing.assert_array_equal(result.t, [0.5, 17 / 32, 0.875])
    np.testing.assert_allclose(result.jumps[:, 0], [2.0, 64.0, 24.0], rtol=1e-14)
    assert result.n_evaluations == 3 + 3 + 1


def test_segment_of_zero_length_has_no_kinks():
    net, start, _, _, _, _ = one_layer(0)
    result = exact_smp(net, start, start)
    assert result.n_events == 0 and result.total == 0.0
    np.testing.assert_array_equal(result.n_kinks, [0, 0, 0])


# ---------------------------------------------------------------------------
# the same kinks whatever form the ops take
# ---------------------------------------------------------------------------


class Functional(nn.Module):
    def __init__(self, form):
        super().__init__()
        self.l1, self.l2, self.form = nn.Linear(5, 30), nn.Linear(30, 3), form

    def forward(self, x):
        h = self.l1(x)
        f = self.form
        if f == "F.relu":
            h = F.relu(h)
        elif f == "torch.relu":
            h = torch.relu(h)
        elif f == "method":
            h = h.relu()
        elif f == "clamp":
            h = h.clamp(min=0)
        elif f == "clamp_min":
            h = torch.clamp_min(h, 0.0)
        elif f == "inplace":
            h = h + 0.0
            F.relu(h, inplace=True)
        elif f == "where":
            h = torch.where(h > 0, h, torch.zeros_like(h))
        elif f == "mask":
            h = h * (h > 0)
        elif f == "maximum":
            h = torch.maximum(h, torch.zeros_like(h))
        elif f == "max_stack":
            h = torch.stack([h, 0 * h], dim=-1).max(dim=-1).values
        elif f == "amax":
            h = torch.stack([h, 0 * h], dim=-1).amax(dim=-1)
        elif f == "abs":
            h = 0.5 * (h + h.abs())
        elif f == "threshold":
            h = F.threshold(h, 0.0, 0.0)
        return self.l2(h)


@pytest.mark.parametrize(
    "form", ["F.relu", "torch.relu", "method", "clamp", "clamp_min", "inplace", "where", "mask", "maximum",
             "max_stack", "amax", "abs", "threshold"]
)
def test_functional_forms_of_relu(form):
    ref, start, end, a, b, V = one_layer(3)
    model = Functional(form).double()
    model.l1.load_state_dict(ref[0].state_dict())
    model.l2.load_state_dict(ref[2].state_dict())
    t_true, jumps_true = relu_like_events(a, b, V, np.zeros(a.size))
    assert_matches(exact_smp(model, start, end), t_true, jumps_true)


# ---------------------------------------------------------------------------
# deep networks against a very fine grid
# ---------------------------------------------------------------------------


class ResidualConvNet(nn.Module):
    """Custom forward: conv, BatchNorm (eval), PReLU, residual sum, max pooling with padding and
    ceil_mode, functional ReLU, average pooling, Hardtanh, adaptive average pooling."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.act1 = nn.PReLU(6, init=0.1)
        self.conv2 = nn.Conv2d(6, 6, 3, padding=1)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)
        self.conv3 = nn.Conv2d(6, 5, 2)
        self.avg = nn.AvgPool2d(2)
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(5 * 2 * 2, 3)

    def forward(self, x):
        h = self.act1(self.bn(self.conv1(x)))
        h = F.relu(self.conv2(h) + h)  # residual sum
        h = self.pool(h)
        h = F.hardtanh(self.conv3(h), -1.5, 1.5)
        h = self.drop(self.avg(h))
        return self.head(torch.flatten(h, 1))


class ConvNet1d(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv1d(2, 6, 5, padding=2)
        self.conv2 = nn.Conv1d(6, 6, 3, dilation=2)
        self.head = nn.Linear(6 * 4, 2)

    def forward(self, x):
        h = F.max_pool1d(F.leaky_relu(self.conv1(x), 0.1), 3, stride=2, padding=1, ceil_mode=True)
        h = torch.relu(self.conv2(h))
        h = F.adaptive_max_pool1d(h, 4)
        return self.head(h.flatten(1))


class VolumeNet(nn.Module):
    """3-D convolution and pooling; adaptive max pooling with windows of unequal size."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(1, 3, 2)
        self.pool = nn.MaxPool3d(2, stride=(1, 2, 1), padding=1, ceil_mode=True)
        self.conv2 = nn.Conv2d(3, 3, 2)
        self.head = nn.Linear(3 * 3 * 2, 2)

    def forward(self, x):
        h = self.pool(torch.relu(self.conv(x)))  # (n, 3, 5, 3, 5)
        h = self.conv2(h.amax(dim=3))  # max over one spatial axis -> (n, 3, 4, 4)
        h = nn.functional.adaptive_max_pool2d(F.relu(h), (3, 2))
        return self.head(h.flatten(1))


def _init(model, seed):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "act" not in name:
                p.copy_(0.6 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(0.3 * torch.randn(m.num_features, generator=gen))
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
    return model.double().eval()


def _grid_outputs(model, start, end, n):
    t = np.linspace(0.0, 1.0, n)
    x = torch.from_numpy(start[None] + t.reshape((-1,) + (1,) * start.ndim) * (end - start)[None])
    with torch.no_grad():
        return model.double()(x).numpy()


@pytest.mark.parametrize(
    "make, shape, scale",
    [(ResidualConvNet, (2, 9, 9), 0.05), (ConvNet1d, (2, 21), 0.1), (VolumeNet, (1, 5, 4, 5), 0.1)],
)
def test_deep_nets_agree_with_a_grid_that_resolves_every_kink(make, shape, scale):
    model = _init(make(), 1)
    rng = np.random.default_rng(2)
    start = rng.normal(size=shape)
    end = start + scale * rng.normal(size=shape)
    result = exact_smp(model, start, end)
    kinks = result.kinks_frame()
    t_kink = np.unique(kinks["t"])
    assert 5 <= t_kink.size <= 200  # a segment with a fair number of kinks
    gaps = np.diff(np.r_[0.0, t_kink, 1.0])
    n = int(min(2**17, max(4097, 16 / gaps.min())))
    h = 1.0 / (n - 1)
    assert gaps.min() > 6 * h, "the grid cannot resolve this segment; pick another seed"
    grid = smp(_grid_outputs(model, start, end, n).T, dt=h)
    np.testing.assert_allclose(grid.value, result.value, rtol=1e-5, atol=1e-9 * np.abs(result.jumps).max())
    np.testing.assert_array_equal(grid.n_peaks, result.n_kinks)
    peaks = grid.peaks_frame()
    for k in range(result.value.size):
        np.testing.assert_allclose(np.sort(peaks.loc[peaks["index_0"] == k, "time"]),
                                   kinks.loc[kinks["component"] == k, "t"], atol=h)


def test_grid_bias_shrinks_with_the_step():
    """On a longer segment the grid estimator misses or merges close kinks; its error
    against the exact SMP shrinks as the step shrinks."""
    model = _init(ResidualConvNet(), 3)
    rng = np.random.default_rng(5)
    start = rng.normal(size=(2, 9, 9))
    end = start + 0.6 * rng.normal(size=(2, 9, 9))
    exact = exact_smp(model, start, end)
    assert exact.n_events > 100
    outputs = _grid_outputs(model, start, end, 2**14 + 1)
    errors = []
    for stride in (32, 8, 1):
        y = outputs[::stride]
        g = smp(y.T, dt=1.0 / (y.shape[0] - 1))
        errors.append(abs(g.total - exact.total) / exact.total)
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.05


# ---------------------------------------------------------------------------
# invariances
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def conv_case():
    model = _init(ResidualConvNet(), 7)
    rng = np.random.default_rng(11)
    start = rng.normal(size=(4, 2, 9, 9))
    end = start + 0.3 * rng.normal(size=(4, 2, 9, 9))
    return model, start, end, exact_smp(model, start, end, batched=True)


def test_reversing_the_segment(conv_case):
    model, start, end, forward = conv_case
    backward = exact_smp(model, end, start, batched=True)
    np.testing.assert_allclose(backward.value, forward.value, rtol=1e-9)
    np.testing.assert_array_equal(backward.n_kinks, forward.n_kinks)
    for s in range(4):
        np.testing.assert_allclose(1.0 - backward.t[s][::-1], forward.t[s], atol=1e-9)
        # y_rev(t) = y(1 - t): slopes change sign and order, the jumps stay the same
        np.testing.assert_allclose(backward.jumps[s][::-1], forward.jumps[s], rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("c", [-2.5, 0.3])
def test_scaling_the_last_layer(conv_case, c):
    model, start, end, base = conv_case
    scaled = copy.deepcopy(model)
    with torch.no_grad():
        scaled.head.weight.mul_(c)
        scaled.head.bias.mul_(c)
    result = exact_smp(scaled, start, end, batched=True)
    np.testing.assert_allclose(result.value, abs(c) * base.value, rtol=1e-9)
    np.testing.assert_array_equal(result.n_kinks, base.n_kinks)
    for s in range(4):
        np.testing.assert_allclose(result.jumps[s], c * base.jumps[s], rtol=1e-8, atol=1e-12)


def test_batched_equals_one_by_one(conv_case):
    model, start, end, batched = conv_case
    assert batched.value.shape == (4, 3) and batched.n_kinks.shape == (4, 3) and batched.n_events.shape == (4,)
    small_batches = exact_smp(model, start, end, batched=True, batch_size=3)
    for s in range(4):
        single = exact_smp(model, start[s], end[s])
        np.testing.assert_allclose(batched.value[s], single.value, rtol=1e-9)
        np.testing.assert_array_equal(batched.n_kinks[s], single.n_kinks)
        np.testing.assert_allclose(batched.t[s], single.t, atol=1e-10)
        np.testing.assert_allclose(small_batches.value[s], single.value, rtol=1e-9)


def test_model_is_not_modified(caplog):
    model = _init(ResidualConvNet(), 2).float().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = np.random.default_rng(0)
    start = rng.normal(size=(2, 9, 9))
    with caplog.at_level(logging.INFO, logger="smpstats.exact"):
        first = exact_smp(model, start, start + 0.1)
    assert any("float64 copy" in m for m in caplog.messages)
    second = exact_smp(model, start, start + 0.1)
    np.testing.assert_array_equal(first.value, second.value)
    assert model.training and all(m.training for m in model.modules())
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), name
        if tensor.is_floating_point():
            assert tensor.dtype == torch.float32
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())

    model64 = _init(ResidualConvNet(), 2).double().eval()
    exact_smp(model64, start, start + 0.1)  # run as is (already float64, eval): hooks are removed after
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model64.modules())


# ---------------------------------------------------------------------------
# chains, shapes and result objects
# ---------------------------------------------------------------------------


def test_chain_from_spec_and_batched_default():
    from smpstats.blocks import build_chain

    chain = build_chain("conv1d(out_channels=4,kernel_size=3)|relu|maxpool1d(kernel_size=2)|linear(out_features=2)",
                        (2, 12), generator=0)
    rng = np.random.default_rng(0)
    start, end = rng.normal(size=(3, 2, 12)), rng.normal(size=(3, 2, 12))
    result = exact_smp(chain, start, end)  # batched decided from the chain's input shape
    assert result.batch_shape == (3,) and result.value.shape == (3, 2)
    np.testing.assert_allclose(exact_smp(chain.module, start, end, batched=True).value, result.value, rtol=1e-12)
    t = np.linspace(0, 1, 20001)
    grid = smp(chain(start[0] + t[:, None, None] * (end[0] - start[0])).numpy().T, dt=t[1])
    np.testing.assert_allclose(grid.value, result.value[0], rtol=1e-3)
    with pytest.raises(InputError, match=r"start and end must have shape \(n_segments, 2, 12\) for this chain; got \(3, 2, 13\)\."):
        exact_smp(chain, np.zeros((3, 2, 13)), np.ones((3, 2, 13)), batched=True)


def test_default_batched_is_logged(caplog):
    net, start, end, _, _, _ = one_layer(0)
    with caplog.at_level(logging.INFO, logger="smpstats.exact"):
        exact_smp(net, start, end)
    assert ("exact_smp: batched not given; treating start and end as one segment of shape (5,) "
            "(pass batched=True for a leading axis of segments).") in caplog.messages


def test_scalar_and_multidimensional_outputs():
    net, start, end, a, b, V = one_layer(1)
    t_true, jumps_true = relu_like_events(a, b, V, np.zeros(a.size))
    scalar = exact_smp(lambda x: net(x)[:, 1], start, end)
    assert scalar.out_shape == () and isinstance(scalar.value, float) and isinstance(scalar.n_kinks, int)
    assert scalar.value == pytest.approx(np.abs(jumps_true[:, 1]).sum(), rel=1e-10)
    grid = exact_smp(lambda x: torch.stack([net(x), -2 * net(x)], dim=1), start, end)
    assert grid.out_shape == (2, 3) and grid.value.shape == (2, 3) and grid.jumps.shape == (t_true.size, 2, 3)
    np.testing.assert_allclose(grid.value, [np.abs(jumps_true).sum(0), 2 * np.abs(jumps_true).sum(0)], rtol=1e-10)
    frame = grid.kinks_frame()
    assert list(frame.columns) == ["segment", "event", "t", "component", "index", "jump", "kink"]
    assert len(frame) == 6 * t_true.size


def test_result_frames_summary_and_repr():
    net, start, end, a, b, V = one_layer(0)
    t_true, jumps_true = relu_like_events(a, b, V, np.zeros(a.size))
    result = exact_smp(net, np.stack([start, start]), np.stack([end, start]), batched=True)
    frame = result.kinks_frame()
    assert list(frame.columns) == ["segment", "event", "t", "component", "jump", "kink"]
    assert len(frame) == 3 * t_true.size and (frame["segment"] == 0).all()
    np.testing.assert_allclose(frame["jump"].to_numpy().reshape(-1, 3), jumps_true, rtol=1e-10)
    table = result.to_frame()
    assert list(table.columns) == ["segment", "component", "smp", "n_kinks", "n_events"]
    np.testing.assert_allclose(table["smp"], np.r_[np.abs(jumps_true).sum(0), 0, 0, 0], rtol=1e-10)
    assert table["n_events"].tolist() == [t_true.size] * 3 + [0] * 3
    d = result.to_dict()
    assert d["n_events"] == [t_true.size, 0] and d["out_shape"] == [3]
    text = result.summary()
    assert text.startswith("Exact SMP along 2 segments (t in [0, 1]), output shape (3,):")
    assert "piecewise-linear ops traced: relu x1." in text
    assert text.splitlines()[-1].startswith("Next: .kinks_frame() lists every kink")
    assert repr(result).startswith(f"ExactSMPResult(n_segments=2, mean total={result.total.mean():.6g}, n_events={t_true.size}")
    single = exact_smp(net, start, end)
    assert repr(single) == (
        f"ExactSMPResult(total={single.total:.6g}, n_events={t_true.size}, n_kinks={3 * t_true.size}, "
        f"out_shape=(3,), n_evaluations={t_true.size + 3})"
    )


def test_silent_events_are_reported_but_not_counted():
    """A unit whose output weights are zero switches without moving the output."""
    net, start, end, a, b, V = one_layer(4)
    with torch.no_grad():
        net[2].weight[:, 0] = 0.0
    t0 = -a[0] / b[0]
    assert 0 < t0 < 1
    result = exact_smp(net, start, end)
    t_true, jumps_true = relu_like_events(a, b, net[2].weight.detach().numpy(), np.zeros(a.size))
    assert result.n_events == t_true.size
    np.testing.assert_array_equal(result.n_kinks, [t_true.size - 1] * 3)
    silent = result.kinks_frame(include_silent=True)
    assert len(silent) == 3 * t_true.size and (~silent["kink"]).sum() == 3
    np.testing.assert_allclose(silent.loc[~silent["kink"], "t"], t0, atol=1e-10)
    assert "1 event(s) change no output slope" in result.summary()


# ---------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------


class HiddenGelu(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = nn.Sequential(nn.Linear(4, 8), nn.ReLU())
        self.out = nn.Linear(8, 2)

    def forward(self, x):
        return self.out(F.gelu(self.inner(x)))


@pytest.mark.parametrize(
    "model, op, where",
    [
        (nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Linear(8, 2)), "gelu", "'1' (GELU)"),
        (HiddenGelu(), "gelu", "HiddenGelu (the model itself)"),
        (nn.Sequential(nn.Linear(4, 8), nn.Sigmoid()), "sigmoid", "'1' (Sigmoid)"),
        (lambda x: torch.sigmoid(x).sum(1, keepdim=True), "sigmoid", None),
        (nn.Sequential(nn.Linear(4, 8), nn.Softmax(dim=1)), "softmax", "'1' (Softmax)"),
        (nn.Sequential(nn.Linear(4, 8), nn.SiLU()), "silu", "'1' (SiLU)"),
    ],
)
def test_smooth_ops_raise_a_clear_error(model, op, where):
    place = rf" in module {where}".replace("(", r"\(").replace(")", r"\)") if where else ""
    with pytest.raises(NotPiecewiseLinearError, match=(
        rf"^exact_smp needs a piecewise-linear model, but the forward pass calls '{op}'{place} on a tensor that "
        rf"depends on the input: it is smooth and nonlinear, so its output has no exact kinks to enumerate\. {SMOOTH_HINT}"
    )) as info:
        exact_smp(model, np.zeros(4), np.ones(4))
    assert info.value.op == op
    assert isinstance(info.value, ValueError) and isinstance(info.value, SMPStatsError)


@pytest.mark.parametrize(
    "module, op, reason",
    [
        (nn.ELU(), "elu", r"it is nonlinear \(exponential\) for negative inputs, not piecewise linear"),
        (nn.Hardswish(), "hardswish", r"it is piecewise quadratic, not piecewise linear, so its output bends between its kinks"),
    ],
)
def test_kinked_but_curved_activations_raise(module, op, reason):
    with pytest.raises(NotPiecewiseLinearError, match=rf"calls '{op}' in module '1' \({type(module).__name__}\) on a "
                                                        rf"tensor that depends on the input: {reason}\. {SMOOTH_HINT}"):
        exact_smp(nn.Sequential(nn.Linear(4, 8), module), np.zeros(4), np.ones(4))


def test_smooth_blocks_of_a_chain_raise():
    from smpstats.blocks import build_chain

    chain = build_chain("linear(out_features=6) | gelu", (4,), generator=0)  # smpstats's GELU calls torch.erf
    with pytest.raises(NotPiecewiseLinearError, match=r"calls 'erf' in module '1' \(_GELU\)"):
        exact_smp(chain, np.zeros(4), np.ones(4))


def test_smooth_op_on_parameters_only_is_allowed():
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.log_scale = nn.Parameter(torch.tensor(0.5))
            self.lin = nn.Linear(4, 2)

        def forward(self, x):
            return torch.relu(self.lin(x)) * torch.exp(self.log_scale)  # exp of a constant: fine

    result = exact_smp(Scaled(), np.zeros(4), np.ones(4))
    assert result.complete


def test_products_and_random_ops_raise():
    with pytest.raises(NotPiecewiseLinearError, match=r"calls 'mul' .* it multiplies two input-dependent tensors"):
        exact_smp(lambda x: x * x, np.zeros(3), np.ones(3))
    with pytest.raises(NotPiecewiseLinearError, match=r"calls 'dropout' .* called with training=True and drops units "
                                                        r"at random\. Pass training=self\.training"):
        exact_smp(lambda x: F.dropout(x, 0.5), np.zeros(3), np.ones(3))
    with pytest.raises(NotPiecewiseLinearError, match=r"calls 'floor' .* its output jumps"):
        exact_smp(lambda x: torch.floor(x), np.zeros(3), np.ones(3))

    def unpool(x):
        values, indices = F.max_pool1d(x[:, None], 2, return_indices=True)
        return F.max_unpool1d(values, indices, 2).flatten(1)

    with pytest.raises(NotPiecewiseLinearError, match=r"calls 'max_unpool1d' .* it puts each pooled value back where "
                                                        r"its window's maximum was, so its output jumps"):
        exact_smp(unpool, np.zeros(4), np.ones(4))


def test_jumps_built_from_tracked_ops_fail_the_continuity_check():
    with pytest.raises(NotPiecewiseLinearError, match=(
        r"The model's output along segment 0 is not piecewise linear with the switches exact_smp tracks: the "
        r"affine pieces left and right of t = 0\.5 miss each other by 1 .* tracked ops may combine into a jump"
    )):
        exact_smp(lambda x: x + (x > 0), -np.ones(1), np.ones(1))  # a step of height 1 at t = 1/2


def test_untracked_nonlinearity_fails_the_continuity_check():
    # torch.special.expit is the logistic function under a name the tracer does not know
    model = lambda x: torch.special.expit(3 * x)  # noqa: E731
    with pytest.raises(NotPiecewiseLinearError, match=(
        r"The model's output along segment 0 is not piecewise linear with the switches exact_smp tracks: .* "
        r"Ops seen that exact_smp does not classify: special_expit\. Use the grid estimator smpstats\.measure"
    )):
        exact_smp(model, -np.ones(2), np.ones(2))


def test_non_finite_outputs_raise():
    from smpstats.errors import SignalError

    with pytest.raises(SignalError, match=r"^model returned NaN or infinite outputs \(or slopes\) along the segment"):
        exact_smp(lambda x: torch.relu(x) * float("nan"), np.zeros(3), np.ones(3))
    with pytest.raises(SignalError, match=r"^model returned a tuple; it must return one tensor of shape \(2, \.\.\.\)"):
        exact_smp(lambda x: (x, x), np.zeros(3), np.ones(3))


def test_bad_inputs():
    net = one_layer(0)[0]
    with pytest.raises(InputError, match=r"^start and end must have the same shape; got start of shape \(5,\) and end "
                                         r"of shape \(4,\)\. For many segments from one start point, pass "
                                         r"np\.broadcast_to\(start, end\.shape\)\.$"):
        exact_smp(net, np.zeros(5), np.zeros(4))
    bad = np.zeros(5)
    bad[2] = np.nan
    with pytest.raises(InputError, match=r"^end contains NaN or infinite values \(first at index \(2,\)\); pass finite values\.$"):
        exact_smp(net, np.zeros(5), bad)
    with pytest.raises(InputError, match=r"^max_events must be an int >= 1; got 0\.$"):
        exact_smp(net, np.zeros(5), np.ones(5), max_events=0)
    with pytest.raises(InputError, match=r"^batched must be True or False; got 'yes'\.$"):
        exact_smp(net, np.zeros(5), np.ones(5), batched="yes")
    with pytest.raises(InputError, match=r"^model must be a torch\.nn\.Module, an smpstats Chain or a callable"):
        exact_smp("relu", np.zeros(5), np.ones(5))


def test_max_events_exceeded_carries_the_partial_result():
    net, start, end, a, b, V = one_layer(0, n_hidden=60)
    full = exact_smp(net, start, end)
    assert full.n_events > 10
    with pytest.raises(TooManyEventsError, match=(
        r"^exact_smp stopped: segment 0 crossed more than max_events=5 region boundaries \(reached t = [0-9.]+ of 1\)\. "
        r"The model has very many activation regions along this segment\. Raise max_events"
    )) as info:
        exact_smp(net, start, end, max_events=5)
    partial = info.value.partial
    assert isinstance(partial, ExactSMPResult) and not partial.complete
    assert partial.n_events == 6 and 0 < partial.t_reached < 1
    np.testing.assert_allclose(partial.t, full.t[:6], atol=1e-12)
    np.testing.assert_allclose(partial.jumps, full.jumps[:6], rtol=1e-12)
    assert "INCOMPLETE" in partial.summary() and "incomplete" in repr(partial)
    assert isinstance(info.value, ExactSMPError)


def test_model_that_mixes_the_batch_needs_batch_size_one():
    def seq_first(x):  # puts a feature axis first, so rows are not segments
        return torch.relu(x.T).T

    rng = np.random.default_rng(0)
    start, end = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    with pytest.raises(ExactSMPError, match=r"'relu' acts on a tensor of shape \(4, 6\) whose first dimension is not "
                                            r"the batch of 6 inputs evaluated together \(one or two per segment\); "
                                            r"exact_smp needs every input-dependent tensor to keep the batch first\. "
                                            r"Pass batch_size=1 to evaluate one segment at a time\."):
        exact_smp(seq_first, start, end, batched=True)
    result = exact_smp(seq_first, start, end, batched=True, batch_size=1)
    expected = [np.abs(end[s] - start[s])[(start[s] * end[s]) < 0].sum() for s in range(3)]
    np.testing.assert_allclose(result.total, expected, rtol=1e-12)
