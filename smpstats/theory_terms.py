"""Theory-tier expected output SMP for the rows of a samples table (DESIGN §4).

:func:`theory_terms` evaluates, for every row of a table from
:func:`smpstats.simulate` (one block, one trial), the analytic expected output
SMP per unit, split into the part made of *new* kinks created by the block and
the part *carried* from the input's kinks. The split is what the statistical
tiers correct separately (:mod:`smpstats.regression`, :mod:`smpstats.bayes`).

The formulas take the row's measured input statistics (``mu_in``,
``sigma_in``, ``sigma_dot_in``, ``smp_in``, per unit, averaged over the
layer) as the statistics of every input unit, and the block's weights as
drawn from its init family:

* affine (linear, conv): ``carried = E||w||_1 S_in`` with normal weights of
  std ``sigma_w / sqrt(fan_in)``, i.e. ``sigma_w sqrt(2 fan_in / pi) S_in``;
  given weights (a finite ``w_l1`` column, see
  :func:`smpstats.chain_reading.given_weight_columns`): ``w_l1 S_in``;
* a ReLU or leaky one right after a batch norm with drawn statistics: the
  Kac-Rice rate and the survival of older kinks averaged over the channel
  draw (gains and shifts differ by channel);
* average pooling: ``carried = S_in``, right after a conv times the share
  that survives the signed sums of the kinks that neighbouring conv outputs
  share (``sum sqrt(r) / sum r`` over the overlaps ``r`` of their receptive
  fields; 0.80 for a kernel-3 conv and a 2-window); batch norm (eval mode, running
  statistics from :mod:`smpstats.blocks`' draw): ``E|gamma| E[var^-1/2] S_in``,
  or with given statistics (a finite ``bn_gain_abs`` column) ``bn_gain_abs S_in``;
* smooth activations: ``carried = E|g'(X)| S_in`` (no new kinks), ``X``
  Gaussian at the measured moments of the input's values at its kinks
  (``mu_kink_in``, ``sigma_kink_in``: kinks may sit at the signal's extremes,
  where a saturating ``g'`` is small), at the signal's own moments where the
  table lacks them; right
  after a ReLU, LeakyReLU or PReLU, whose kinks sit at the value 0, its
  share of the kinks is scaled by ``|g'(0)|`` instead, and the older kinks
  by ``g'`` where they sit (the positive side of the pre-activation, and
  for a leaky one its negative side times the slope);
* ReLU, LeakyReLU, PReLU and max pooling: Kac-Rice and pairwise switching for
  the new kinks, the surviving inherited kinks carried; max pooling right
  after a ReLU, LeakyReLU or PReLU as ``relu(max(x))`` (``leaky_relu(max(x))``)
  of the Gaussian pre-activations, recovered from the rectifier outputs'
  moments; a rectifier right after max pooling from the pooled Gaussian
  inputs, recovered from the max's moments (the max crosses 0 where its
  current unit does);
* right after a linear or conv block with drawn weights (a finite
  ``prev_fan_in``, see :func:`previous_fan_in`), the new kinks of a
  rectifier or max pool times :func:`smpstats.theory.random_affine_kink_factor`:
  the units' weight rows give them different scales, and their means come
  from the same rows (the share of the pooled variance in the units' means
  is ``static_in``, else ``1 - (sigma_in / sigma_pool_in)**2``).
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable

import numpy as np
import pandas as pd
from scipy import special

from . import theory
from .errors import InputError, SpecError

__all__ = ["FAMILIES", "block_family", "theory_terms", "previous_specs", "previous_fan_in", "REQUIRED_COLUMNS"]

#: Block name -> family: blocks in a family share one transfer model (and its pooling).
FAMILIES: dict[str, str] = {
    "relu": "relu",
    "leaky_relu": "leaky_relu",
    "prelu": "leaky_relu",
    "maxpool1d": "maxpool",
    "maxpool2d": "maxpool",
    "linear": "affine",
    "conv1d": "affine",
    "conv2d": "affine",
    "avgpool1d": "avgpool",
    "avgpool2d": "avgpool",
    "batchnorm": "batchnorm",
    "gelu": "smooth",
    "silu": "smooth",
    "softplus": "smooth",
    "tanh": "smooth",
    "flatten": "identity",
}

#: Columns of the previous stage that :func:`theory_terms` reads as ``prev_<column>`` (looked up by trial and
#: stage where the table lacks them): the input of a rectifier before a max pool, and what came before it.
RECTIFIER_INPUT_COLUMNS = ("mu_in", "sigma_pool_in", "sigma_chan_in", "sigma_dot_in", "prev_block_spec")

#: Columns every row needs (simulate's tables have them).
REQUIRED_COLUMNS = ("block", "mu_in", "sigma_in", "sigma_dot_in", "smp_in", "path_length")


def _batchnorm_gain() -> float:
    """E|gamma| E[(running_var)^-1/2] for the draw in ``blocks._draw_weights``.

    gamma ~ N(1, 0.2^2) (folded mean), running_var = exp(0.5 Z): E[var^-1/2] = exp(0.5^2 / 8).
    """
    m, s = 1.0, 0.2
    folded = s * math.sqrt(2 / math.pi) * math.exp(-m * m / (2 * s * s)) + m * math.erf(m / (s * math.sqrt(2)))
    return folded * math.exp(0.25**2 / 2)


_BATCHNORM_GAIN = _batchnorm_gain()


@functools.lru_cache(maxsize=None)
def _batchnorm_channels(affine: bool, n_nodes: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gauss-Hermite nodes of one channel of the batch-norm draw: gain ``g = gamma / sqrt(running_var)``,
    shift ``beta`` and their weights, each shape (n_nodes,) (``blocks._draw_weights``: gamma ~ N(1, 0.2^2),
    running_var = exp(0.5 Z), beta ~ N(0, 0.2^2); without ``affine`` gamma = 1, beta = 0), ``n_nodes`` per draw."""
    z, w = np.polynomial.hermite_e.hermegauss(n_nodes)
    w = w / w.sum()
    zg, zv, zb = (a.ravel() for a in np.meshgrid(z, z, z, indexing="ij"))
    weight = np.multiply.outer(np.multiply.outer(w, w), w).ravel()
    if not affine:
        return np.exp(-0.25 * z), np.zeros_like(z), w
    return (1.0 + 0.2 * zg) * np.exp(-0.25 * zv), 0.2 * zb, weight


def block_family(block: str) -> str:
    """Family of a block name (see :data:`FAMILIES`); clear error when unknown."""
    try:
        return FAMILIES[block]
    except KeyError:
        raise InputError(
            f"No transfer theory for block {block!r}; known blocks: {', '.join(sorted(FAMILIES))}."
        ) from None


class _Rows:
    """Uniform column access for a DataFrame or a mapping of per-row arrays and per-table scalars."""

    def __init__(self, data, n: int, labels=None):
        self.data, self.n, self.labels = data, n, labels

    def has(self, name: str) -> bool:
        return name in self.data

    def num(self, name: str, default: float = math.nan) -> np.ndarray:
        if name not in self.data:
            return np.full(self.n, default)
        col = self.data[name]
        if not isinstance(col, pd.Series):
            arr = np.asarray(col)
            if arr.dtype.kind in "fiub":
                return np.broadcast_to(arr.astype(np.float64), (self.n,))
            col = pd.Series(np.broadcast_to(arr, (self.n,)))
        return pd.to_numeric(col, errors="coerce").astype("float64").to_numpy(na_value=math.nan)

    def text(self, name: str, default: str = "") -> np.ndarray:
        if name not in self.data:
            return np.full(self.n, default, dtype=object)
        col = self.data[name]
        if isinstance(col, pd.Series):
            return col.astype(str).to_numpy(dtype=object)
        if np.ndim(col) == 0:  # one value for the table
            return np.full(self.n, str(col), dtype=object)
        return np.broadcast_to(np.asarray(col, dtype=object), (self.n,)).astype(str).astype(object)

    def label(self, i: int):
        return self.labels[i] if self.labels is not None else i


def _window(rows: _Rows, blocks: np.ndarray) -> np.ndarray:
    """Inputs per pooling window (the ``window`` column, else kernel_size**rank)."""
    w = rows.num("window")
    if np.isnan(w).any():
        k = rows.num("kernel_size")
        rank = np.where(np.char.endswith(blocks.astype(str), "2d"), 2, 1)
        w = np.where(np.isnan(w), k**rank, w)
    return w


def _previous(rows: _Rows, column: str = "prev_block_spec") -> tuple[list, np.ndarray]:
    """The distinct ``prev_block_spec`` values (or another column's), parsed (None for no block), and each
    row's index into them."""
    from .blocks import parse_spec

    def parsed(text: str):
        try:
            return parse_spec(text)[-1] if text.strip() else None
        except SpecError:  # a block the grammar does not know: no rule for it
            return None

    values, inverse = np.unique(rows.text(column).astype(str), return_inverse=True)
    return [parsed(v) for v in values], inverse.reshape(-1)


def _per_previous(previous: tuple[list, np.ndarray], value: Callable[[Any], float | None]) -> np.ndarray:
    """``value(block)`` of the block right before each row's block (:func:`_previous`), NaN where none or None."""
    blocks, inverse = previous
    out = np.array([math.nan if b is None or value(b) is None else float(value(b)) for b in blocks] or [math.nan])
    return out[inverse]


def _rectifier_slope(block) -> float | None:
    """Negative slope of a ReLU (0), LeakyReLU or PReLU; None for other blocks."""
    if block.name not in ("relu", "leaky_relu", "prelu"):
        return None
    p = block.resolved()
    return 0.0 if block.name == "relu" else float(p["negative_slope"] if block.name == "leaky_relu" else p["alpha"])


def _batchnorm_affine(block) -> float | None:
    """1.0 for a batch norm with affine parameters, 0.0 for one without; None for other blocks."""
    return float(bool(block.resolved().get("affine", True))) if block.name == "batchnorm" else None


def _maxpool_window(block) -> float | None:
    """Inputs per window of a max pooling; None for other blocks."""
    return block.window() if block.name.startswith("maxpool") else None


def _static_share(rows: _Rows, sigma_pool: np.ndarray) -> np.ndarray:
    """Share of the pooled input variance that is the spread of the units' time means, per row, in [0, 1]:
    the ``static_in`` column, else ``1 - (sigma_in / sigma_pool_in)**2`` (``sigma_in`` being the mean of
    the units' own stds), else 0."""
    static = rows.num("static_in")
    if np.isnan(static).all() and rows.has("sigma_pool_in"):
        static = 1.0 - (rows.num("sigma_in") / sigma_pool) ** 2
    return np.clip(np.nan_to_num(static, nan=0.0), 0.0, 1.0)


def _groups(mask: np.ndarray, *keys: np.ndarray):
    """The rows of ``mask`` split by the distinct values of ``keys`` (one array per key, a value per row):
    yields ``(values, rows)`` with ``values`` a tuple of floats and ``rows`` a boolean mask."""
    if not mask.any():
        return
    for values in np.unique(np.column_stack([k[mask] for k in keys]), axis=0):
        rows = mask.copy()
        for key, v in zip(keys, values):
            rows &= key == v
        yield tuple(float(v) for v in values), rows


def _pool_after_conv_factor(previous: tuple[list, np.ndarray], pool_kernel: np.ndarray,
                            rank: np.ndarray) -> np.ndarray:
    """Share of the per-unit rule's carried SMP that an average pooling right after a conv keeps, per row.

    One input kink of the conv reaches ``r`` outputs of a pooling window
    (neighbouring positions whose receptive fields overlap), and the pooled
    jump is ``(1/window) sum of r`` Gaussian weights times the kink: ``sqrt(r)``
    rather than ``r`` times ``E|w|``. Per dimension, over the input positions
    that a window of ``k`` consecutive conv outputs reads (conv stride and
    dilation included; windows away from padded borders), the factor is
    ``sum sqrt(r_i) / sum r_i``; over dimensions, the product. 1 for rows
    not right after a conv (``pool_kernel``, ``rank``: the pooling's kernel
    size per dimension and its number of spatial dimensions).
    """
    from collections import Counter

    def per_dim(value, j: int) -> int:
        return int(value[j]) if isinstance(value, (tuple, list)) else int(value)

    blocks, inverse = previous
    out = np.ones(len(inverse))
    for i, conv in enumerate(blocks):
        if conv is None or conv.name not in ("conv1d", "conv2d"):
            continue
        p = conv.resolved()
        for (k, d), rows in _groups(inverse == i, pool_kernel.astype(float), rank.astype(float)):
            factor = 1.0
            for j in range(int(d)):
                reads = Counter(m * per_dim(p["stride"], j) + t * per_dim(p["dilation"], j)
                                for m in range(int(k)) for t in range(per_dim(p["kernel_size"], j)))
                r = np.array(list(reads.values()), dtype=float)
                factor *= np.sqrt(r).sum() / r.sum()
            out[rows] = factor
    return out


def _relu_kinks(mu, sigma, sigma_dot, length, smp_in, slope):
    """The Gaussian pre-activations behind ReLU (``slope = 0``) or LeakyReLU outputs of these moments, and the
    activation's own share of ``smp_in``.

    Returns ``(pre, relu_new)``: ``pre = (mu, sigma, sigma_dot)`` of the
    pre-activations (:func:`smpstats.theory.relu_preactivation`) and the
    activation's new kinks per unit (Kac-Rice on them, at most ``smp_in``);
    the rest of ``smp_in`` are older kinks that survived it.
    """
    pre = theory.relu_preactivation(mu, sigma, sigma_dot, slope)
    own = theory._leaky_relu_expected_smp(*pre, length, 0.0, slope)
    return pre, np.minimum(np.asarray(own, dtype=float), smp_in)


def _maxpool_after_relu(k, mu, sigma, sigma_dot, length, smp_in, slope):
    """(new, carried) of max pooling over ReLU (LeakyReLU) outputs, from the pre-activations behind them.

    The activation's new kinks and the older kinks that survived it pass in
    different shares (see :func:`smpstats.theory.maxpool_after_relu_terms`).
    """
    pre, relu_new = _relu_kinks(mu, sigma, sigma_dot, length, smp_in, slope)
    new, pass_new, pass_old = theory.maxpool_after_relu_terms(k, *pre, length, slope)
    return new, pass_new * relu_new + pass_old * (smp_in - relu_new)


def _smooth_after_relu(name, beta, mu, sigma, sigma_dot, length, smp_in, slope):
    """Carried SMP of a smooth activation ``g`` right after a ReLU (``slope = 0``) or LeakyReLU.

    The rectifier's own kinks sit where its output is 0, so ``g`` scales
    them by ``|g'(0)|``. An older kink that survived it sits at ``X`` (the
    Gaussian pre-activation) at full size where ``X > 0`` and at ``slope X``
    times the slope where ``X < 0``: gain ``(E[|g'(X)|; X > 0] + s E[|g'(s X)|; X < 0])
    / (P(X > 0) + s P(X < 0))``.
    """
    pre, relu_new = _relu_kinks(mu, sigma, sigma_dot, length, smp_in, slope)
    at_zero = float(theory.smooth_activation_gain(name, 0.0, 0.0, beta=beta))
    p_pos = special.ndtr(pre[0] / pre[1])
    pos = p_pos * np.asarray(theory.smooth_activation_gain(name, pre[0], pre[1], beta=beta, positive=True), dtype=float)
    # E[|g'(Y)|; Y < 0] for Y = s X: all of E|g'(Y)| less its positive part (P(Y > 0) = P(X > 0))
    neg = 0.0
    if slope > 0:
        y_mu, y_sigma = slope * pre[0], slope * pre[1]
        neg = (np.asarray(theory.smooth_activation_gain(name, y_mu, y_sigma, beta=beta), dtype=float)
               - p_pos * np.asarray(theory.smooth_activation_gain(name, y_mu, y_sigma, beta=beta, positive=True),
                                    dtype=float))
    survivors = (pos + slope * np.maximum(neg, 0.0)) / (p_pos + slope * (1.0 - p_pos))
    return at_zero * relu_new + survivors * (smp_in - relu_new)


def _smooth_after_maxpool(name, beta, k, mu, sigma, sigma_dot, length, smp_in):
    """Carried SMP of a smooth activation ``g`` right after max pooling over ``k`` i.i.d. Gaussian inputs.

    The pooling's switching kinks sit where two inputs tie, its carried ones
    at the maximum; each kind gets its own gain
    (:func:`smpstats.theory.smooth_after_max_gains`), with the pooled inputs'
    moments recovered from the max's.
    """
    pre_mu, pre_sigma = theory.max_input_moments(k, mu, sigma)
    switches = np.minimum(np.asarray(theory.maxpool_expected_smp(k, pre_mu, np.maximum(pre_sigma, 1e-300),
                                                                 sigma_dot, length), dtype=float), smp_in)
    switch_gain, max_gain = theory.smooth_after_max_gains(name, k, pre_mu, pre_sigma, beta=beta)
    return switch_gain * switches + max_gain * (smp_in - switches)


def _batchnorm_input(mu, sigma_pool, sigma_chan, sigma_dot, g, shift, w):
    """The input of a batch norm with drawn statistics, recovered from its output's pooled moments.

    ``g``, ``shift``, ``w``: the channel draw (:func:`_batchnorm_channels`).
    Returns ``(m, q2, slope2, u)``, each shape (n_rows,): the input's mean,
    its variance within a channel, its slope mean square, and ``u``, the
    realised variance over the channels of the input's channel means less
    the running means (a layer of few channels realises less than their
    variance 1).
    """
    e_g, e_g2 = w @ g, w @ g**2
    m = mu / e_g
    between = sigma_pool**2 - sigma_chan**2  # realised spread of the output channels' means
    u = np.maximum((between - (e_g2 - e_g**2) * m**2 - w @ shift**2) / e_g2, 0.0)
    return m, sigma_chan**2 / e_g2, sigma_dot**2 / e_g2, u


#: Gauss-Hermite nodes and normalised weights of the channel offsets in :func:`maxpool_after_rectifier_channels`
#: (False: 8 on their own; True: 6 beside the batch norm's 6 x 6 x 6).
_OFFSET_NODES = {bn: (z, w / w.sum()) for bn, (z, w) in ((False, np.polynomial.hermite_e.hermegauss(8)),
                                                        (True, np.polynomial.hermite_e.hermegauss(6)))}

#: Rows per block of :func:`maxpool_after_rectifier_channels` (its grid has up to 1,296 nodes x 64 points per row).
_ROW_CHUNK = 128


def maxpool_after_rectifier_channels(k, mu, sigma_pool, sigma_chan, sigma_dot, length, slope=0.0, batchnorm=None):
    """Max pooling right after a ReLU (``slope = 0``) or LeakyReLU, from the rectifier's input, channel by channel.

    ``mu``, ``sigma_pool``, ``sigma_chan``, ``sigma_dot`` are the moments of
    the rectifier's input, arrays of shape (n_rows,). A pooling window lies
    in one channel, whose units share the channel's mean: the
    pre-activations of a window are ``N(mu + o_c, sigma_chan**2)`` with the
    channel offsets ``o_c ~ N(0, sigma_pool**2 - sigma_chan**2)``, and
    :func:`smpstats.theory.maxpool_after_relu_terms` is averaged over them
    rather than applied to the pooled moments, with which the units of a
    window would be independent in their means too: all ``k`` of them lie
    below 0 more often in a channel of low mean, so fewer older kinks pass
    (the pooled rule was 5-10 % high at the second and third max pool of
    conv -> ReLU -> max pool stacks, exact SMP). ``batchnorm`` (True / False:
    with or without affine parameters) says that the rectifier follows a
    batch norm with drawn statistics, whose channels also differ in gain
    and shift: the moments are then the batch norm's output, its input is
    recovered (:func:`_batchnorm_input`) and the average runs over the
    batch norm's channel draw too.

    Returns
    -------
    (new, pass_new, pass_old, rectifier_new) : arrays, shape (n_rows,)
        The switching kinks per output unit; the shares of the rectifier's
        own new kinks and of the older kinks that the pooling carries; and
        the rectifier's new kinks per unit, to which ``pass_new`` applies.
    """
    rows = len(np.atleast_1d(mu))
    if rows > _ROW_CHUNK:  # the node grid is large: bound the memory
        parts = [maxpool_after_rectifier_channels(
            *(np.broadcast_to(np.asarray(v, dtype=float), (rows,))[i:i + _ROW_CHUNK]
              for v in (k, mu, sigma_pool, sigma_chan, sigma_dot, length)), slope, batchnorm)
            for i in range(0, rows, _ROW_CHUNK)]
        return tuple(np.concatenate(p) for p in zip(*parts))
    if batchnorm is None:
        g, shift, w = np.ones(1), np.zeros(1), np.ones(1)
        m, q2, slope2 = (np.asarray(v, dtype=float) for v in (mu, sigma_chan**2, sigma_dot**2))
        u = np.maximum(np.asarray(sigma_pool, dtype=float)**2 - q2, 0.0)
    else:
        g, shift, w = _batchnorm_channels(bool(batchnorm), 6)
        m, q2, slope2, u = _batchnorm_input(mu, sigma_pool, sigma_chan, sigma_dot, g, shift, w)
    m, q2, slope2, u = (np.asarray(v, dtype=float)[:, None, None] for v in (m, q2, slope2, u))
    z, wz = _OFFSET_NODES[batchnorm is not None]
    weight = np.multiply.outer(w, wz)  # (batch-norm nodes, channel-offset nodes)
    g3, shift3 = g[:, None], shift[:, None]
    centre = g3 * (m + np.sqrt(u) * z) + shift3  # (n_rows, nodes, offsets)
    scale = np.maximum(np.abs(g3) * np.sqrt(q2), 1e-300)
    sdot = np.abs(g3) * np.sqrt(slope2)
    k, length = (np.asarray(v, dtype=float)[..., None, None] for v in (k, length))
    new, pass_new, _ = theory.maxpool_after_relu_terms(k, centre, scale, sdot, length, slope)
    own = np.asarray(theory._leaky_relu_expected_smp(centre, scale, sdot, length, 0.0, slope), dtype=float)
    below = special.ndtr(-centre / scale)
    # older kinks: scaled by |g_c| in a batch norm, kept where the unit is positive (times the slope where
    # not), then where the window's maximum is
    kept_max = np.abs(g3) * (1.0 - below**k + slope * below**k)
    kept_unit = np.abs(g3) * (1.0 - below + slope * below)

    def avg(v):
        return (v * weight).sum(axis=(-2, -1))

    rectifier_new = avg(own)
    pass_new = np.divide(avg(pass_new * own), rectifier_new, out=np.zeros_like(rectifier_new),
                         where=rectifier_new > 0)
    return avg(new), pass_new, avg(kept_max) / np.maximum(avg(kept_unit), 1e-300), rectifier_new


def _rectifier_after_batchnorm(mu, sigma_pool, sigma_chan, sigma_dot, length, smp_in, slope, affine=True):
    """(new, carried) of a ReLU (``slope = 0``) or LeakyReLU right after a batch norm with drawn statistics.

    Channel ``c`` of the batch norm maps its input by ``g_c (x - m_c) + beta_c``
    (running mean ``m_c`` ~ N(0, 1), gain ``g_c``, shift ``beta_c`` as drawn by
    :mod:`smpstats.blocks`): the channels differ in scale as well as in mean,
    and the pooled formula, exact for a spread of means at one scale, counts
    about 8 % too many new kinks. Here the input's mean ``m``, its std within
    a channel ``Q`` and its RMS slope are recovered from the output's pooled
    moments, and the Kac-Rice rate and the survival of older kinks (which
    the batch norm scaled by ``|g_c|``) are averaged over the channel draw:
    channel ``c`` has mean ``g_c m + beta_c``
    and std ``|g_c| sqrt(Q^2 + U)``, ``U`` the realised variance over the
    channels of the input's mean less ``m_c``, recovered from the output's
    pooled std (a layer of few channels realises less than the running
    means' variance 1).
    Exact SMP: +1 to +5 % where the pooled formula is +8 to +11 %.
    """
    g, shift, w = _batchnorm_channels(bool(affine))
    m, q2, slope2, u = _batchnorm_input(mu, sigma_pool, sigma_chan, sigma_dot, g, shift, w)
    e_abs = w @ np.abs(g)
    centre = g * m[:, None] + shift  # (n_rows, n_nodes)
    scale = np.abs(g) * np.sqrt(q2 + u)[:, None]
    z = centre / scale
    rate = (g**2 * np.exp(-0.5 * z**2) / (math.sqrt(2 * math.pi) * scale)) @ w
    new = (1.0 - slope) * length * slope2 * rate
    up = special.ndtr(z)
    survive = ((np.abs(g) * (up + slope * (1.0 - up))) @ w) / e_abs
    return new, survive * smp_in


def _rectifier_after_maxpool(k, mu, sigma, sigma_dot, length, smp_in, slope):
    """(new, carried) of a ReLU (``slope = 0``) or LeakyReLU right after max pooling over ``k`` i.i.d. Gaussian
    inputs, whose moments are recovered from the max's.

    The max crosses 0 where its current unit does while the other ``k - 1``
    lie below: Kac-Rice on one input unit times ``k Phi(-a)**(k-1)`` (the
    units' slopes are independent of all values at the same time). The
    pooling's switching kinks sit where two inputs tie and survive at full
    size where that common value is positive (else times the slope); its
    carried kinks sit at the max, which is positive with probability
    ``1 - Phi(-a)**k`` (:func:`smpstats.theory.maxpool_after_relu_terms` has
    both shares).
    """
    pre_mu, pre_sigma = theory.max_input_moments(k, mu, sigma)
    pre_sigma = np.maximum(pre_sigma, 1e-300)
    switches_all = np.asarray(theory.maxpool_expected_smp(k, pre_mu, pre_sigma, sigma_dot, length), dtype=float)
    switches_kept, pass_new, _ = theory.maxpool_after_relu_terms(k, pre_mu, pre_sigma, sigma_dot, length, slope)
    switch_share = np.divide(switches_kept, switches_all, out=np.ones_like(switches_all), where=switches_all > 0)
    switches = np.minimum(switches_all, smp_in)
    below = special.ndtr(-pre_mu / pre_sigma) ** k  # the whole window below 0
    own = pass_new * np.asarray(theory._leaky_relu_expected_smp(pre_mu, pre_sigma, sigma_dot, length, 0.0, slope))
    return own, switch_share * switches + (1.0 - below + slope * below) * (smp_in - switches)


def _previous_stage(samples: pd.DataFrame, column: str) -> np.ndarray | None:
    """``column`` of the previous stage of the same trial, looked up by ``(source, trial, stage - 1)``
    (missing for stage 1: NaN, or None as an object); None when the table cannot say."""
    if not {"trial", "stage", column} <= set(samples.columns):
        return None
    keys = (["source"] if "source" in samples.columns else []) + ["trial", "stage"]
    lookup = samples.set_index(keys)[column]
    lookup = lookup[~lookup.index.duplicated()]
    prev_index = pd.MultiIndex.from_frame(samples[keys].assign(stage=samples["stage"] - 1))
    return lookup.reindex(prev_index).to_numpy()


def previous_specs(samples: pd.DataFrame) -> pd.Series:
    """block_spec of the previous stage of the same trial ("" for stage 1).

    Uses the ``prev_block_spec`` column when present (tables that keep only
    some stages, as :func:`smpstats.block_samples` makes),
    else looks the previous stage up by ``(source, trial, stage - 1)``.
    """
    if "prev_block_spec" in samples.columns:
        return samples["prev_block_spec"].fillna("").astype(str)
    prev = _previous_stage(samples, "block_spec")
    if prev is None:
        return pd.Series("", index=samples.index)
    return pd.Series(pd.Series(prev, dtype=object).fillna("").astype(str).to_numpy(), index=samples.index)


def previous_fan_in(samples: pd.DataFrame) -> pd.Series:
    """Fan-in of the previous stage's block where it is a linear or conv block whose weights were drawn
    from an init family (NaN elsewhere: other blocks, given weights, stage 1).

    Uses the ``prev_fan_in`` column when present, else looks the previous
    stage up like :func:`previous_specs`.
    """
    from .blocks import INIT_FAMILIES

    if "prev_fan_in" in samples.columns:
        return pd.to_numeric(samples["prev_fan_in"], errors="coerce").astype(float)
    fan_in, init = _previous_stage(samples, "fan_in"), _previous_stage(samples, "init")
    if fan_in is None or init is None:
        return pd.Series(math.nan, index=samples.index)
    drawn = pd.Series(init, dtype=object).isin(INIT_FAMILIES).to_numpy()
    fan_in = pd.to_numeric(pd.Series(fan_in, dtype=object), errors="coerce").to_numpy(dtype=float, na_value=math.nan)
    return pd.Series(np.where(drawn, fan_in, math.nan), index=samples.index)


def theory_terms(samples: pd.DataFrame) -> pd.DataFrame:
    """Expected output SMP per unit of each row's block: new and carried parts.

    Parameters
    ----------
    samples : pandas.DataFrame
        Rows of a :func:`smpstats.simulate` table (any stages, any blocks);
        needs :data:`REQUIRED_COLUMNS` and the block-parameter columns of its
        blocks (``negative_slope``, ``alpha``, ``window``/``kernel_size``,
        ``fan_in``, ``sigma_w``, ``beta``, ``approximate``).

    Returns
    -------
    pandas.DataFrame
        Same index; columns ``family``, ``theory_new`` (new kinks),
        ``theory_carried`` (inherited kinks) and ``theory`` (their sum), SMP
        per unit over the path (input units x time units^-1).
    """
    if not isinstance(samples, pd.DataFrame):
        raise InputError(f"samples must be a pandas DataFrame from smpstats.simulate; got {type(samples).__name__}.")
    missing = [c for c in REQUIRED_COLUMNS if c not in samples.columns]
    if missing:
        raise InputError(
            f"samples lack the column(s) {', '.join(missing)}; pass a table from smpstats.simulate "
            f"(needs {', '.join(REQUIRED_COLUMNS)} and the block parameters)."
        )
    if "prev_block_spec" not in samples.columns:
        samples = samples.assign(prev_block_spec=previous_specs(samples))
    if "prev_fan_in" not in samples.columns:
        samples = samples.assign(prev_fan_in=previous_fan_in(samples))
    for column in RECTIFIER_INPUT_COLUMNS:  # a max pool after a rectifier reads the rectifier's input
        if f"prev_{column}" not in samples.columns:
            prev = _previous_stage(samples, column)
            if prev is not None:
                samples = samples.assign(**{f"prev_{column}": prev})
    terms = theory_term_arrays(samples, len(samples), labels=samples.index)
    return pd.DataFrame({c: terms[c] for c in ("family", "theory_new", "theory_carried", "theory")},
                        index=samples.index)


def theory_term_arrays(columns, n: int, labels=None) -> dict[str, np.ndarray]:
    """:func:`theory_terms` on a mapping of columns (arrays of length ``n`` or scalars), without pandas tables.

    Returns a dict with ``family``, ``theory_new``, ``theory_carried`` and
    ``theory``, and ``pass_new``, ``pass_old``: the shares of the ReLU's own
    and of older kinks that a max pool after a rectifier passes, channel by
    channel (:func:`maxpool_after_rectifier_channels`; NaN in other rows);
    ``labels`` name the rows in error messages (default: positions).
    """
    table = _Rows(columns, n, labels)
    missing = [c for c in REQUIRED_COLUMNS if not table.has(c)]
    if missing:
        raise InputError(f"rows lack the column(s) {', '.join(missing)}; need {', '.join(REQUIRED_COLUMNS)}.")
    blocks = table.text("block")
    names, inverse = np.unique(blocks.astype(str), return_inverse=True)
    families = np.array([block_family(str(b)) for b in names], dtype=object)[inverse.reshape(-1)]
    mu = table.num("mu_in")
    # The pooled std (over units and t) is the right sigma for a layer whose units' means differ:
    # averaging phi(m/s)/s over m ~ N(mu, tau^2) gives phi(mu/S)/S with S^2 = s^2 + tau^2.
    sigma = table.num("sigma_pool_in") if table.has("sigma_pool_in") else table.num("sigma_in")
    sigma_dot, length = table.num("sigma_dot_in"), table.num("path_length")
    smp_in = table.num("smp_in")
    bad = ~np.isfinite(np.c_[mu, sigma, sigma_dot, length, smp_in]).all(axis=1)
    if bad.any():
        raise InputError(
            f"{int(bad.sum())} row(s) have missing or non-finite input statistics (first: row "
            f"{table.label(int(np.argmax(bad)))!r}); every row needs finite mu_in, sigma_in, sigma_dot_in, smp_in, "
            "path_length."
        )
    new = np.zeros(n)
    carried = np.full(n, math.nan)
    pass_shares = np.full((2, n), math.nan)
    # Constant inputs (sigma 0) have no crossings: use a tiny sigma so the formulas stay finite.
    sig = np.maximum(sigma, 1e-12 * np.maximum(1.0, np.abs(mu)))
    sdot = np.maximum(sigma_dot, 0.0)

    def is_block(*wanted: str) -> np.ndarray:
        return np.isin(names, wanted)[inverse.reshape(-1)]

    def split(fn, m: np.ndarray, *extra, sigma: np.ndarray = sig) -> None:
        """new = fn(smp_in=0); carried = fn(smp_in) - new."""
        if not m.any():
            return
        args = [a[m] for a in extra]
        n0 = np.asarray(fn(*args, mu[m], sigma[m], sdot[m], length[m], 0.0), dtype=float)
        n1 = np.asarray(fn(*args, mu[m], sigma[m], sdot[m], length[m], smp_in[m]), dtype=float)
        new[m], carried[m] = n0, np.maximum(n1 - n0, 0.0)

    split(lambda *a: theory.relu_expected_smp(*a), is_block("relu"))
    slope = np.where(blocks == "prelu", table.num("alpha", 0.25), table.num("negative_slope", 0.01))
    split(lambda s, *a: theory._leaky_relu_expected_smp(*a, s), is_block("leaky_relu", "prelu"), slope)
    rectifier = is_block("relu", "leaky_relu", "prelu")
    own_slope = np.where(is_block("relu"), 0.0, slope)  # of the rows' own rectifiers
    k = _window(table, blocks)
    pool = is_block("maxpool1d", "maxpool2d")
    # A window's inputs share their channel's mean, so switching sees the spread within the channel
    # (sigma_chan_in where the table has it), not the spread of the channels' means.
    chan = table.num("sigma_chan_in")
    sig_window = np.where(np.isfinite(chan), np.maximum(chan, 1e-12 * np.maximum(1.0, np.abs(mu))), sig)
    split(lambda kk, *a: theory.maxpool_expected_smp(kk.astype(int), *a), pool, k, sigma=sig_window)
    previous = _previous(table)
    rect_slope = _per_previous(previous, _rectifier_slope)
    # after a rectifier (a ReLU's outputs have a positive mean where the layer is alive)
    after_rect = np.isfinite(rect_slope) & ((rect_slope > 0) | (mu > 0)) & (sigma > 0)
    m = is_block("maxpool1d", "maxpool2d") & after_rect
    # channel by channel, from the rectifier's input where the table has it (and its batch norm's channels
    # where the rectifier follows one with drawn statistics); from the pooled moments elsewhere
    rect_in = [table.num(f"prev_{c}") for c in ("mu_in", "sigma_pool_in", "sigma_chan_in", "sigma_dot_in")]
    by_channel = m & np.all([np.isfinite(c) for c in rect_in], axis=0) & (rect_in[2] > 0)
    for (before,), r in _groups(m & ~by_channel, rect_slope):
        new[r], carried[r] = _maxpool_after_relu(k[r], mu[r], sig[r], sdot[r], length[r], smp_in[r], before)
    bn_two_back = _per_previous(_previous(table, "prev_prev_block_spec"), _batchnorm_affine)
    for (before, bn), r in _groups(by_channel, rect_slope, np.nan_to_num(bn_two_back, nan=-1.0)):
        switch, pass_new, pass_old, own = maxpool_after_rectifier_channels(
            k[r], *(c[r] for c in rect_in), length[r], before, None if bn < 0 else bool(bn))
        own = np.minimum(own, smp_in[r])
        new[r], carried[r] = switch, pass_new * own + pass_old * (smp_in[r] - own)
        pass_shares[:, r] = pass_new, pass_old

    m = is_block("linear", "conv1d", "conv2d")
    if m.any():
        fan_in, sigma_w = table.num("fan_in"), table.num("sigma_w")
        carried[m] = sigma_w[m] * np.sqrt(2.0 * fan_in[m] / math.pi) * smp_in[m]
        w_l1 = table.num("w_l1")
        m &= np.isfinite(w_l1)
        carried[m] = w_l1[m] * smp_in[m]
    m = is_block("avgpool1d", "avgpool2d", "flatten")
    carried[m] = smp_in[m]
    m = is_block("avgpool1d", "avgpool2d")
    if m.any():
        rank = np.where(np.char.endswith(blocks.astype(str), "2d"), 2, 1)
        pool_kernel = np.rint(np.where(np.isfinite(k), k, 1.0) ** (1.0 / rank)).astype(int)
        carried[m] *= _pool_after_conv_factor(previous, pool_kernel, rank)[m]
    m = is_block("batchnorm")
    if m.any():
        gain = np.where(np.isfinite(table.num("bn_gain_abs")), table.num("bn_gain_abs"), _BATCHNORM_GAIN)
        carried[m] = gain[m] * smp_in[m]
    betas = table.num("beta", 1.0)
    approx = table.text("approximate", "none")
    pooled_before = _per_previous(previous, _maxpool_window)
    bn_before = _per_previous(previous, _batchnorm_affine)
    for (affine, s_), r in _groups(rectifier & np.isfinite(bn_before) & np.isfinite(chan) & (sigma > 0),
                                   bn_before, own_slope):
        new[r], carried[r] = _rectifier_after_batchnorm(mu[r], sig[r], np.maximum(chan[r], 1e-12 * sig[r]), sdot[r],
                                                        length[r], smp_in[r], s_, affine=bool(affine))
    for (window, s_), r in _groups(rectifier & np.isfinite(pooled_before) & (sigma > 0), pooled_before, own_slope):
        new[r], carried[r] = _rectifier_after_maxpool(int(window), mu[r], sig[r], sdot[r], length[r], smp_in[r], s_)
    # a smooth activation scales each kink by |g'| at the signal's value there: the measured moments of the
    # values at the kinks where the table has them (kinks may sit at the signal's extremes), the signal's otherwise
    kink_mu, kink_sigma = table.num("mu_kink_in"), table.num("sigma_kink_in")
    at_kinks = np.isfinite(kink_mu) & np.isfinite(kink_sigma) & (kink_sigma > 0)
    kink_mu, kink_sigma = np.where(at_kinks, kink_mu, mu), np.where(at_kinks, kink_sigma, sig)
    for act in ("gelu", "silu", "softplus", "tanh"):
        for beta in np.unique(np.nan_to_num(betas[is_block(act)], nan=1.0)):
            for tanh_form in (False, True):
                m = is_block(act) & (np.nan_to_num(betas, nan=1.0) == beta) & ((approx == "tanh") == tanh_form)
                if m.any():
                    name = "gelu_tanh" if (act == "gelu" and tanh_form) else act
                    carried[m] = np.asarray(theory.smooth_activation_expected_smp(
                        name, kink_mu[m], kink_sigma[m], smp_in[m], beta=float(beta)), dtype=float)
                    for (before,), r in _groups(m & after_rect, rect_slope):
                        carried[r] = _smooth_after_relu(name, float(beta), mu[r], sig[r], sdot[r], length[r],
                                                        smp_in[r], before)
                    p = m & np.isfinite(pooled_before)
                    if p.any():
                        carried[p] = _smooth_after_maxpool(name, float(beta), pooled_before[p].astype(int), mu[p],
                                                           sig[p], sdot[p], length[p], smp_in[p])
    # right after a random linear or conv block the units' weight norms spread their scales, and the
    # spread of their means comes from the same weights: fewer new kinks than the pooled formula's
    fan_in = table.num("prev_fan_in")
    m = (rectifier | pool) & np.isfinite(fan_in) & (fan_in >= 1)
    if m.any():
        static = np.where(rectifier, _static_share(table, sig), 0.0)  # a window's units share their channel's mean
        new[m] *= theory.random_affine_kink_factor(np.rint(fan_in[m]).astype(int), static[m])
    if np.isnan(carried).any():
        raise InputError(f"theory_terms: missing block parameters for rows of {sorted(set(blocks[np.isnan(carried)]))}.")
    return {"family": families, "theory_new": new, "theory_carried": carried, "theory": new + carried,
            "pass_new": pass_shares[0], "pass_old": pass_shares[1]}

