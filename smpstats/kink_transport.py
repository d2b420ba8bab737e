r"""SMP of a network with given weights: kinks counted where they are born, carried by the network's Jacobians.

For random weights :class:`smpstats.kink_state.KinkState` treats the
signs of the paths by which a kink reaches later units as random, so that
they partly cancel. Given (e.g. trained) weights have no random signs: in
a trained ReLU MLP the kinks reach the output nearly without cancelling,
and the random-sign rule predicts 0.4 of the output's SMP. For given
weights the transport can be computed instead.

A kink born at stage ``s`` in unit ``u`` (a ReLU unit crossing 0, a max-pool
switch) at time ``t`` is a jump ``|a_u'(t)| e_u`` of the stage's output
slopes; at a later stage ``k`` it is ``J_{s->k}(x(t)) e_u |a_u'(t)|``, with
``J`` the Jacobian of stages ``s+1..k`` (the ReLU masks and max-pool
selections of that time). With ``N_u`` the SMP unit ``u`` is born with
(Kac-Rice on its own moments) and the Jacobian independent of the slope,

.. math::

    S_k = \frac{1}{n_k} \sum_{s \le k} \sum_u N^{(s)}_u\,
          E\,\| J_{s \to k}(x)\, e_u \|_1
          \; + \; \frac{S_{in}}{n_k} \sum_i E\,\| J_{0 \to k}(x)\, e_i \|_1,

the expectations over points ``x`` of the input family (the second term:
kinks already in the input, ``S_in`` per input element). A kink travels
through the Jacobian of the moment it is born, when its unit crosses 0
(a max pool's two largest inputs tie), and in a trained network the other
units are not independent of that: the expectation for unit ``u`` weights
the points by a Gaussian kernel in the unit's pre-activation (the gap
between its window's two largest inputs) of width a quarter of its std
(unweighted, a trained ReLU MLP's output was predicted 13 % low with the
points of the paths themselves, 3 % low at its first ReLU; weighted, 3-5 %
low at every stage). A max pool's
units are born with the switches of their own window: Kac-Rice on each
pair's difference with its own moments (correlated neighbours, units' own
means), times the share of points near the tie where the window's other
inputs lie below it (after a rectifier, on its pre-activations, the tie
counting in full above 0 and times the rectifier's slope below). Both
parts scale as ``T sigma_dot^2`` and ``S_in`` at fixed input mean and
std, because the slopes are linear in the input slope; so they are
computed once per point of a small grid over the draws' input means and
log stds (512 points of the input each, shared by all grid points, with
exact sample moments: :func:`smpstats.sampled_moments.standard_points`)
and interpolated. Where a single finite path lies, which the pooled
points do not see, spreads it about this expectation
(:func:`path_location_factors`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from . import theory
from .blocks import Chain
from .sampled_moments import input_grid, interpolate, standard_points

__all__ = ["GivenWeightSMP", "given_weight_smp", "path_location_factors", "BIRTH_BLOCKS"]

#: Blocks whose units are born with kinks.
BIRTH_BLOCKS = ("relu", "leaky_relu", "prelu", "maxpool1d", "maxpool2d")
#: Birth units transported per stage at most (a random subset beyond, reweighted), and the input points their
#: Jacobians are averaged over (the first of the points; the births use all of them).
_MAX_BIRTH_UNITS = 48
_TRANSPORT_POINTS = 64
#: Width of the kernel that weights the points at a unit's kinks, in units of the std of its distance from them.
_KERNEL_WIDTH = 0.25
#: Rows (points x tangents) pushed through the network together.
_CHUNK_ROWS = 65536


@dataclass(frozen=True)
class GivenWeightSMP:
    """Expected SMP per unit after every stage, per draw.

    Attributes
    ----------
    new : ndarray, shape (n_stages, n_draws)
        Kinks born at the stage.
    total : ndarray, shape (n_stages, n_draws)
        Born there and carried from earlier stages and the input.
    """

    new: np.ndarray
    total: np.ndarray


def given_weight_smp(chain: Chain, mu: np.ndarray, sigma: np.ndarray, sigma_dot: np.ndarray, smp_in: np.ndarray,
                     length: float, *, n_points: int = 512, grid: int = 3, seed: int = 0) -> GivenWeightSMP:
    """Expected SMP per unit of every stage of a given-weight chain (module doc).

    Parameters
    ----------
    chain : Chain
        A chain with its modules (:func:`smpstats.chain_reading.read_chain`).
    mu, sigma, sigma_dot, smp_in : arrays, shape (n_draws,)
        Each draw's input mean, std, RMS slope (per time unit) and SMP per
        input element.
    length : float
        Path length (time units).
    n_points : int, default=512
        Input points per grid point.
    grid : int, default=3
        Grid points per axis (input mean, log input std) over the draws' range.
    seed : int
        Seed of the input points and of the subsets of birth units.

    Returns
    -------
    GivenWeightSMP
    """
    mu, sigma, sigma_dot, smp_in = (np.asarray(v, dtype=float) for v in (mu, sigma, sigma_dot, smp_in))
    axes = input_grid(mu, sigma, grid)
    rng = np.random.default_rng(seed)
    z = standard_points(rng, n_points, chain.input_shape)
    v = standard_points(rng, n_points, chain.input_shape)  # slopes: RMS 1 per element, independent of the values
    # per grid point and stage, at unit input RMS slope and unit time: SMP per unit of all births up to the
    # stage, of those at the stage, and the SMP per unit that one unit of input SMP per element becomes
    total = np.empty((len(axes[0]), len(axes[1]), len(chain)))
    born = np.empty_like(total)
    from_input = np.empty_like(total)
    for i, m in enumerate(axes[0]):
        for j, log_s in enumerate(axes[1]):
            total[i, j], born[i, j], from_input[i, j] = _at(chain, m + np.exp(log_s) * z, v, rng)
    total, born, from_input = (interpolate(axes, t, mu, sigma) for t in (total, born, from_input))
    scale = (length * sigma_dot**2)[None, :]
    return GivenWeightSMP(new=born * scale, total=total * scale + from_input * smp_in[None, :])


def path_location_factors(chain: Chain, paths: list[tuple[np.ndarray, np.ndarray]], mu: np.ndarray,
                          sigma: np.ndarray, sigma_dot: np.ndarray, rng: np.random.Generator,
                          n_points: int = 512) -> np.ndarray:
    """How much more (or less) SMP each of a few paths makes than the pooled formula says, mean 1 per stage.

    The pooled computation (:func:`given_weight_smp`) pushes points that are
    independent across input units, each with the path's pooled mean and
    std. A finite path instead keeps each unit near its own time mean with
    its own spread, and with given weights where the path lies decides
    which units of the network cross 0 along it: in a trained 8-input ReLU
    MLP the SMP of one path relative to the pooled formula has a log sd of
    0.21 at the first ReLU and 0.37 at the output, the spread between paths
    the pooled formula misses. Here each unit's births are computed at the
    path's own points and at the pooled points of the same path's moments,
    and both are carried to later stages by the same per-unit transport
    (:func:`_unit_transport`, at the paths' median mean and std): the
    ratio follows where along the network the path's kinks are born (the
    pooled births on a 3 x 3 grid over the paths' means and log stds,
    interpolated, as in :func:`given_weight_smp`). (With
    each path's own transport too, at five times the cost, the log ratios
    agree within a log sd of 0.03-0.07, correlation 0.985 or more, on that
    MLP.) The ratios are divided by their mean per stage, so that they
    spread the draws without moving their mean (the expectation over paths
    of a stationary family is the pooled one).

    Parameters
    ----------
    chain : Chain
        A chain with its modules.
    paths : list of (values, slopes)
        Arrays (n_points, n_units) per path, in the family's units (e.g.
        :func:`smpstats.inputs.realised_path_moments` with ``keep``).
    mu, sigma, sigma_dot : arrays, shape (n_paths,)
        Each path's pooled mean, std and RMS slope.
    rng : numpy.random.Generator
        Pooled points, subsets of birth units.
    n_points : int, default=512
        Pooled points per grid point.

    Returns
    -------
    ndarray, shape (n_stages, n_paths)
        Factors of mean 1 over the paths per stage (1 where no kinks are born up to the stage).
    """
    z = standard_points(rng, n_points, chain.input_shape)
    v = standard_points(rng, n_points, chain.input_shape)
    reference = _forward(chain, float(np.median(mu)) + float(np.median(sigma)) * z, v)
    transport = {}  # birth stage -> (n_out, n_stages - s + 1): per unit born, SMP per unit at each later stage
    for s, stage, born, distance in _births(chain, *reference):
        units = np.flatnonzero(born > 0)
        if len(units) > _MAX_BIRTH_UNITS:
            units = rng.choice(units, _MAX_BIRTH_UNITS, replace=False)
        later = np.zeros((born.size, len(chain) - s))
        if len(units):
            later[units] = _unit_transport(chain, s, reference[0][s], units, distance)
            later[np.setdiff1d(np.arange(born.size), units)] = later[units].mean(axis=0)
        transport[s] = np.hstack([np.full((born.size, 1), 1.0 / born.size), later])

    def carried(values: list, slopes: list) -> np.ndarray:
        out = np.zeros(len(chain))
        for s, _, born, _ in _births(chain, values, slopes):
            out[s - 1:] += born @ transport[s]
        return out

    # pooled: on the grid over the paths' means and log stds at unit RMS slope (as given_weight_smp), interpolated
    axes = input_grid(mu, sigma, 3)
    grid = np.empty((len(axes[0]), len(axes[1]), len(chain)))
    for i, m in enumerate(axes[0]):
        for j, log_s in enumerate(axes[1]):
            grid[i, j] = carried(*_forward(chain, m + np.exp(log_s) * z, v))
    pooled = interpolate(axes, grid, mu, sigma) * sigma_dot[None, :] ** 2
    own = np.empty_like(pooled)
    for k, (x, x_dot) in enumerate(paths):
        shape = (len(x), *chain.input_shape)
        own[:, k] = carried(*_forward(chain, x.reshape(shape), x_dot.reshape(shape)))
    ratio = np.divide(own, pooled, out=np.ones_like(own), where=pooled > 0)
    mean = ratio.mean(axis=1, keepdims=True)
    return np.divide(ratio, mean, out=np.ones_like(ratio), where=mean > 0)


def _forward(chain: Chain, x: np.ndarray, x_dot: np.ndarray) -> tuple[list, list]:
    """Values and slopes (forward-mode) of the input and of every stage's output at points ``x``."""
    with torch.no_grad():
        h = torch.from_numpy(np.ascontiguousarray(x))
        v = torch.from_numpy(np.ascontiguousarray(x_dot))
        values, slopes = [h], [v]
        for stage in chain.stages:
            h, v = torch.func.jvp(stage.module, (h,), (v,))
            values.append(h)
            slopes.append(v)
    return values, slopes


def _births(chain: Chain, values: list, slopes: list) -> list:
    """Per kink-making stage ``s`` (1-based): ``(s, stage, born, distance)``, the SMP per unit (unit time) each
    output unit is born with (:func:`_born`) and how far it is from its kink at each point
    (:func:`_birth_distance`)."""
    out = []
    for s, stage in enumerate(chain.stages, start=1):
        pre = pre_dot = None
        pre_slope = 0.0
        if s >= 2 and chain.stages[s - 2].name in ("relu", "leaky_relu", "prelu"):
            pre, pre_dot, pre_slope = values[s - 2], slopes[s - 2], _negative_slope(chain.stages[s - 2])
        born = _born(stage, values[s - 1], slopes[s - 1], pre, pre_dot, pre_slope)
        if born is not None:
            out.append((s, stage, born, _birth_distance(stage, values[s - 1], pre, pre_slope)))
    return out


def _at(chain: Chain, x: np.ndarray, x_dot: np.ndarray, rng: np.random.Generator
        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """At one input distribution (points ``x``, slopes ``x_dot`` of RMS 1; unit time): per stage the SMP per
    unit of births (all stages up to it, carried), of births at it, and per unit input SMP carried to it."""
    values, slopes = _forward(chain, x, x_dot)
    total = np.zeros(len(chain))
    new = np.zeros(len(chain))
    for s, _, born, distance in _births(chain, values, slopes):
        new[s - 1] = born.mean()
        total[s - 1:] += _carry(chain, s, values[s], born, rng, distance)
    carried_in = _carry(chain, 0, values[0], np.ones(int(np.prod(chain.input_shape))), rng)
    return total, new, carried_in


def _born(stage, a: torch.Tensor, a_dot: torch.Tensor, pre: torch.Tensor | None = None,
          pre_dot: torch.Tensor | None = None, pre_slope: float = 0.0) -> np.ndarray | None:
    """SMP per unit (unit time) each output unit of a kink-making stage is born with, or None.

    ``pre``, ``pre_dot``: the pre-activations of a rectifier right before, whose slope below 0 is ``pre_slope``
    (max pooling of its outputs switches where two pre-activations tie: ``max(f(x)) = f(max(x))``, a jump
    scaled by ``pre_slope`` where they tie below 0).
    """
    if stage.name not in BIRTH_BLOCKS:
        return None
    if stage.name.startswith("maxpool"):
        per_window = _switches(stage, a, a_dot) if pre is None else _switches(stage, pre, pre_dot, pre_slope)
        if per_window is not None:
            return per_window
        # windows torch lays out otherwise (ceil_mode): the pooled formula
        x, x_dot = a.numpy(), a_dot.numpy()
        per_out = theory.maxpool_expected_smp(stage.spec.window(), x.mean(), max(x.std(), 1e-12),
                                              np.sqrt((x_dot**2).mean()), 1.0)
        return np.full(int(np.prod(stage.out_shape)), float(per_out))
    a, a_dot = a.reshape(a.shape[0], -1).numpy(), a_dot.reshape(a_dot.shape[0], -1).numpy()
    m, s, sd = a.mean(0), a.std(0), np.sqrt((a_dot**2).mean(0))
    live = s > 1e-12
    out = np.zeros_like(m)
    out[live] = theory._leaky_relu_expected_smp(m[live], s[live], sd[live], 1.0, 0.0, _negative_slope(stage))
    return out


def _negative_slope(stage) -> float:
    """Slope of a rectifier stage below 0 (a PReLU's mean slope)."""
    if stage.name == "leaky_relu":
        return float(stage.module.negative_slope)
    if stage.name == "prelu":
        return float(stage.module.weight.detach().mean())
    return 0.0


def _windows(stage, in_shape: tuple[int, ...]) -> np.ndarray:
    """Flat input indices of each output unit's pooling window, shape (n_out, k); -1 for padding."""
    p = stage.module
    rank = 2 if stage.name.endswith("2d") else 1
    idx = torch.arange(1, int(np.prod(in_shape)) + 1, dtype=torch.float64).reshape(1, *in_shape)
    if rank == 1:
        idx = idx[:, :, None, :]

    def pair(v, fill: int):
        v = tuple(v) if isinstance(v, (tuple, list)) else (v,) * rank
        return (fill, *v) if rank == 1 else v

    cols = torch.nn.functional.unfold(idx, pair(p.kernel_size, 1), dilation=pair(p.dilation, 1),
                                      padding=pair(p.padding, 0), stride=pair(p.stride or p.kernel_size, 1))
    channels = in_shape[0]
    k = cols.shape[1] // channels
    cols = cols.reshape(channels, k, -1).permute(0, 2, 1).reshape(-1, k)  # (channels x positions, k)
    return cols.numpy().astype(np.int64) - 1


def _switches(stage, a: torch.Tensor, a_dot: torch.Tensor, below_zero: float | None = None
              ) -> np.ndarray | None:
    """Switching SMP per output unit of max pooling (unit time), window by window (None: windows unknown).

    For each pair ``i, j`` of a window, Kac-Rice on ``d = a_i - a_j`` with
    its own mean, std and RMS slope (correlated neighbours, units' own
    means), times the share of points near the tie where the window's other
    inputs lie below ``(a_i + a_j) / 2``. With ``below_zero`` (``a`` the
    pre-activations of a rectifier of that slope below 0), ties below 0
    count that much (a ReLU's outputs tied at 0 do not switch).
    """
    win = _windows(stage, tuple(a.shape[1:]))
    if win.shape[0] != int(np.prod(stage.out_shape)):
        return None
    x, v = a.reshape(a.shape[0], -1).numpy(), a_dot.reshape(a_dot.shape[0], -1).numpy()
    out = np.zeros(win.shape[0])
    k = win.shape[1]
    for i in range(k):
        for j in range(i + 1, k):
            ok = (win[:, i] >= 0) & (win[:, j] >= 0)
            d = x[:, win[ok, i]] - x[:, win[ok, j]]
            d_dot = v[:, win[ok, i]] - v[:, win[ok, j]]
            m, sd_d, slope = d.mean(0), d.std(0), np.sqrt((d_dot**2).mean(0))
            rate = theory._kac_rice_density(m / np.where(sd_d > 0, sd_d, 1.0), sd_d, slope)
            if k > 2 or below_zero is not None:  # the others below the tie value, near the tie (kernel in d)
                tie = (x[:, win[ok, i]] + x[:, win[ok, j]]) / 2
                others = [c for c in range(k) if c not in (i, j)]
                rest = np.where(win[ok][:, others] >= 0, win[ok][:, others], 0)
                below = np.all((x[:, rest] < tie[:, :, None]) | (win[ok][:, others] < 0)[None], axis=2).astype(float)
                if below_zero is not None:
                    below *= np.where(tie > 0, 1.0, below_zero)
                w = np.exp(-0.5 * (d / (0.25 * np.where(sd_d > 0, sd_d, 1.0))) ** 2)
                rate = rate * (w * below).sum(0) / np.maximum(w.sum(0), 1e-300)
            out[ok] += rate
    return out


def _birth_distance(stage, a: torch.Tensor, pre: torch.Tensor | None = None, pre_slope: float = 0.0
                    ) -> np.ndarray | None:
    """How far each output unit of a kink-making stage is from its kink at each point, (n_points, n_out).

    A rectifier's pre-activation; a max pool's gap between its window's two largest inputs (None where torch
    lays the windows out otherwise), with ``pre`` (the pre-activations of a rectifier right before, of slope
    ``pre_slope`` below 0) between the two largest of those, infinite where a ReLU's tie below 0 makes no kink.
    """
    if not stage.name.startswith("maxpool"):
        return a.reshape(a.shape[0], -1).numpy()
    win = _windows(stage, tuple(a.shape[1:]))
    if win.shape[0] != int(np.prod(stage.out_shape)):
        return None
    x = (a if pre is None else pre).reshape(a.shape[0], -1).numpy()
    top = np.sort(np.where(win[None] >= 0, x[:, np.maximum(win, 0)], -np.inf), axis=2)[:, :, -2:]
    gap = top[:, :, 1] - top[:, :, 0]
    return gap if pre is None or pre_slope != 0 else np.where(top.sum(axis=2) > 0, gap, np.inf)


def _carry(chain: Chain, s: int, h: torch.Tensor, born: np.ndarray, rng: np.random.Generator,
           distance: np.ndarray | None = None) -> np.ndarray:
    """Per stage ``k >= s``: ``sum_u born_u E||J_{s->k} e_u||_1 / n_k``, shape (n_stages - s + 1,) (stage s
    itself first, where the Jacobian is the identity); ``s = 0``: from the input, shape (n_stages,).

    ``distance`` (n_points, n_units): each birth unit's distance from its kink per point; the expectation
    weights the points by a Gaussian kernel in it (module doc). None: all points alike.
    """
    units = np.flatnonzero(born > 0)
    weight = np.ones(len(units))
    if len(units) > _MAX_BIRTH_UNITS:
        weight = np.full(_MAX_BIRTH_UNITS, len(units) / _MAX_BIRTH_UNITS)
        units = rng.choice(units, _MAX_BIRTH_UNITS, replace=False)
    first = [] if s == 0 else [born.sum() / born.size]
    if len(units) == 0:
        return np.array(first + [0.0] * (len(chain) - s))
    later = (born[units] * weight) @ _unit_transport(chain, s, h, units, distance)
    return np.array(first + list(later))


def _unit_transport(chain: Chain, s: int, h: torch.Tensor, units: np.ndarray,
                    distance: np.ndarray | None = None) -> np.ndarray:
    """``E||J_{s->k} e_u||_1 / n_k`` for each unit ``u`` of stage ``s``'s output (``s = 0``: the input) and each
    later stage ``k``, shape (len(units), n_stages - s), over the first points of ``h`` (weighted near each
    unit's kink with ``distance``, as in :func:`_carry`)."""
    stages = chain.stages[s:]
    out = np.zeros((len(units), len(stages)))
    h = h[:_TRANSPORT_POINTS]
    n_pts = h.shape[0]
    # per unit, the points' weights at its kinks (rows: units, summing to 1)
    at_kink = np.full((len(units), n_pts), 1.0 / n_pts)
    if distance is not None:
        d = distance[:n_pts, units]
        finite = np.isfinite(d)
        count = np.maximum(finite.sum(axis=0), 1)
        d0 = np.where(finite, d, 0.0)
        scale = _KERNEL_WIDTH * np.sqrt(np.maximum((d0**2).sum(axis=0) / count - (d0.sum(axis=0) / count) ** 2, 0))
        near = np.exp(-0.5 * (d / np.where(scale > 0, scale, 1.0)) ** 2).T  # 0 where infinitely far
        total = near.sum(axis=1, keepdims=True)
        at_kink = np.where((scale[:, None] > 0) & (total > 0), near / np.maximum(total, 1e-300), at_kink)
    at_kink = torch.from_numpy(at_kink)
    per_chunk = max(1, _CHUNK_ROWS // n_pts)
    flat = h.reshape(n_pts, -1)
    with torch.no_grad():
        for start in range(0, len(units), per_chunk):
            u = units[start:start + per_chunk]
            hb = flat.repeat(len(u), 1).reshape(-1, *h.shape[1:])
            tb = torch.zeros(len(u) * n_pts, flat.shape[1], dtype=flat.dtype)
            tb[torch.arange(len(u) * n_pts), torch.from_numpy(np.repeat(u, n_pts))] = 1.0
            tb = tb.reshape(hb.shape)
            for k, stage in enumerate(stages):
                hb, tb = torch.func.jvp(stage.module, (hb,), (tb,))
                # E||J e_u||_1 per unit, at its kinks
                g = (tb.reshape(len(u), n_pts, -1).abs().sum(-1) * at_kink[start:start + per_chunk]).sum(1)
                out[start:start + len(u), k] = g.numpy() / int(np.prod(stage.out_shape))
    return out
