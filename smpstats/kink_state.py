"""Kink multiplicity in a chain: how one kink reaches later layers through many paths (DESIGN §7).

A kink created at some layer (a ReLU unit crossing zero, a max-pool switch)
happens at one time ``t``; after the next affine map it shows in many units
at that same ``t``, and after the affine map after that, each unit's slope
jump at ``t`` is a weighted *sum* of those units' jumps, whose random signs
partly cancel. The per-unit rule of the theory (``E||w||_1 S_in``) adds
their magnitudes, which is exact for a kink that sits in one input unit and
over-predicts for a kink spread over many: by about ``sqrt(r)`` for ``r``
spread components in a receptive field.

:class:`KinkState` therefore describes the kinks of a layer by
*generation* (the block that created them): the SMP per unit they make up
(``amount``, one value per Monte Carlo draw) and, for an event born at each
position of its birth layer (its *origin*), its footprint now: the positions
it touches (per spatial dimension, exactly, boundaries and strides
included), the channels it touches (one at birth, all after a conv), the
share ``fill`` of touched units whose jump is nonzero (ReLU masks, max-pool
selection) and the relative mean jump ``m1`` of a nonzero unit.

Rules per block, from weights of the init family (entry std ``sigma_e``):

* affine (linear, conv): an output unit whose window holds ``n`` touched
  units has ``r ~ Binomial(n, fill)`` nonzero components, and its jump is
  ``N(0, sigma_e**2 sum J_i**2)`` given them: it is nonzero with
  probability ``1 - (1 - fill)**n`` and then ``E|J'| = sigma_e m1
  E sqrt(chi2_r)``. A one-hot event gives the theory's L1 rule exactly.
  Given weights (a ``w_l1`` column: mean L1 norm of a unit's weights) set
  the one-tap term to their mean ``|w|``, blending into the Gaussian rule
  as ``1/r``.
* average pooling: the same with fixed weights ``1/window`` within a
  channel (``E|J'| = m1 sqrt(r) / window``).
* max pooling: the output carries the selected input's jump (each input of
  a window selected with probability ``1/window``).
* ReLU masks the inactive units (``fill *= P(x > 0)``); every elementwise
  block, batch norm and max pooling scale the amount by the theory's
  carried share (``P(x > 0)``, ``E|g'|``, gains).
* LeakyReLU and PReLU scale a unit's jump by 1 or by the slope ``a``: the
  mean ``|jump|`` falls by ``E M = p + a (1 - p)`` (``p = P(x > 0)``), its
  mean square by ``E M**2 = p + a**2 (1 - p)``. A later affine map adds the
  jumps of many units, and such a sum's size follows their root mean
  square, not their mean: each generation keeps ``q2``, the mean square of
  its nonzero jumps over a Gaussian's with the same mean ``|jump|`` (1 after
  an affine map; times ``E M**2 / (E M)**2`` after a leaky unit), and a
  window of ``r`` nonzero components gets ``sqrt(1 + (q2 - 1)(1 - 1/r))``
  times the Gaussian rule (exact for ``r = 1``, the root-mean-square rule
  for large ``r``). Without it the 8-block leaky MLP of the chain study
  fell 10 % per linear block after a leaky one.
* flatten keeps every footprint, as features.

One path holds a finite number of kink events, so its SMP scatters about
the expectation (path-to-path spread, beside the network-to-network spread
of :mod:`smpstats.finite_width`). Each generation keeps ``events``, the
expected number of its events along the path (over the whole layer), and
``size2 = E s**2 / (E s)**2`` of an event's contribution ``s`` to the SMP
(``4/pi`` at birth: the slope jumps at the zero crossings of a Gaussian
process are Rayleigh distributed). Its SMP, a sum over a Poisson number of
events, has relative variance ``size2 / events``. Every later block makes
an event's size a random multiple of what it was: an affine map sums ``n``
nonzero units of Gaussian jumps (relative variance ``(pi/2 - 1) / n`` of a
sum of ``n`` half-normal magnitudes), a ReLU or max pool keeps a random
subset of them (``q (1/n_after - 1/n_before)``, ``q`` the mean square of a
unit's jump over its squared mean), a LeakyReLU scales them unevenly; so
``size2`` grows with depth, fastest in narrow layers. With a random
generator, :meth:`KinkState.add_new` and :meth:`KinkState.carry` realise
this for one path per draw: a Gamma factor of mean 1 at birth and one per
block for the growth of ``size2``, kept by the generation from then on,
so that a path rich in kinks at one stage stays so downstream.

Spread jumps are treated as Gaussian and independent of the masks (mean
field); what this misses is reported by the chain study.
"""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
from scipy.special import gammaln

__all__ = ["KinkState", "Generation", "expected_chi"]


def expected_chi(r) -> np.ndarray:
    """``E sqrt(chi2_r)`` for real ``r >= 1`` (``sqrt(2/pi)`` at 1, about ``sqrt(r)`` for large ``r``)."""
    r = np.maximum(np.asarray(r, dtype=float), 1.0)
    return math.sqrt(2.0) * np.exp(gammaln((r + 1) / 2) - gammaln(r / 2))


def _shape(text: Any) -> tuple[int, ...]:
    return tuple(int(v) for v in (ast.literal_eval(text) if isinstance(text, str) else text))


def _per_dim(value: Any, rank: int, default: int = 1) -> tuple[int, ...]:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return (default,) * rank
    if isinstance(value, str):
        value = ast.literal_eval(value)
    if isinstance(value, (tuple, list)):
        return tuple(int(v) for v in value)
    return (int(value),) * rank


def window_matrix(length_in: int, length_out: int, kernel: int, stride: int, padding: int = 0,
                  dilation: int = 1) -> np.ndarray:
    """Taps of a sliding window along one dimension: ``W[i, b] = 1`` when output ``b`` reads input ``i``.

    Shape (length_in, length_out); padded taps (outside the input) are left out.
    """
    w = np.zeros((length_in, length_out), dtype=np.int64)
    for b in range(length_out):
        for j in range(kernel):
            i = b * stride - padding + j * dilation
            if 0 <= i < length_in:
                w[i, b] += 1
    return w


@dataclass
class Generation:
    """Kinks of one origin layer, seen in the current layer.

    Attributes
    ----------
    amount : ndarray, shape (n_draws,)
        Their SMP per unit.
    touched : list of ndarray of bool, each (n_origins_d, length_d)
        Per spatial dimension, the positions an event born at each origin
        position touches (empty for a layer of features).
    channels : ndarray, shape (n_origins,)
        Channels (features, once flattened) an event touches at each touched position.
    fill : ndarray, shape (n_draws, n_origins)
        Share of the touched units with a nonzero jump.
    m1 : ndarray, shape (n_draws, n_origins)
        Mean |jump| of a nonzero unit, relative (only ratios between origins matter).
    born : int
        Index of the stage that created them (-1: the input).
    q2 : ndarray, shape (n_draws, n_origins), optional
        Mean square of the nonzero jumps over a Gaussian's with the same mean
        ``|jump|`` (None: 1, Gaussian).
    events : ndarray, shape (n_draws,), optional
        Expected number of events along the path, over the whole layer (None: not tracked).
    size2 : ndarray, shape (n_draws,), optional
        ``E s**2 / (E s)**2`` of an event's contribution ``s`` to the SMP.
    mixed : bool
        The generation has passed a random affine map (its units' jumps are Gaussian).
    """

    amount: np.ndarray
    touched: list[np.ndarray]
    channels: np.ndarray
    fill: np.ndarray
    m1: np.ndarray
    born: int = -1
    q2: np.ndarray | None = None
    events: np.ndarray | None = None
    size2: np.ndarray | None = None
    mixed: bool = False

    def positions(self) -> np.ndarray:
        """Touched positions per origin, shape (n_origins,)."""
        out = np.ones(1)
        for t in self.touched:
            out = np.multiply.outer(out, t.sum(axis=1)).reshape(-1)
        return out

    def nonzero_units(self) -> np.ndarray:
        """Units with a nonzero jump per event, averaged over origins, shape (n_draws,)."""
        return (self.channels * self.positions() * np.clip(self.fill, 0.0, None)).mean(axis=1)

    def relative_variance(self) -> np.ndarray:
        """Relative variance of the generation's SMP over paths, ``size2 / events``, shape (n_draws,)."""
        if self.events is None:
            return np.zeros_like(self.amount)
        return np.divide(self.size2, self.events, out=np.zeros_like(self.amount), where=self.events > 0)

    def mass(self) -> np.ndarray:
        """Sum of |jumps| over the units of one event, summed over origins (relative), shape (n_draws,)."""
        return (self.channels * self.positions() * self.fill * self.m1).sum(axis=1)


def _leaky_q2_factor(block: str, params: Mapping[str, Any], factor: np.ndarray) -> np.ndarray:
    """``E M**2 / (E M)**2`` of a leaky unit's jump multiplier ``M`` (1 or the slope ``a``), shape (n_draws,).

    ``factor`` is the theory's carried share ``E M = p + a (1 - p)``, from which ``p = P(x > 0)`` follows.
    """
    a = float(params.get("alpha", 0.25) if block == "prelu" else params.get("negative_slope", 0.01))
    if not 0.0 <= a < 1.0:
        return np.ones_like(factor)
    p = np.clip((factor - a) / (1.0 - a), 0.0, 1.0)
    mean = p + a * (1.0 - p)
    return np.divide(p + a * a * (1.0 - p), mean**2, out=np.ones_like(mean), where=mean > 0)


@dataclass
class KinkState:
    """The kinks of a layer, by generation (see the module docstring).

    With ``rng`` set, the amounts are those of one path per draw (path-to-path
    spread of the number and sizes of kink events); without it, expectations.
    """

    shape: tuple[int, ...]
    n_draws: int
    generations: list[Generation] = field(default_factory=list)
    rng: np.random.Generator | None = None

    @staticmethod
    def shape_of(text: Any) -> tuple[int, ...]:
        """A layer shape from a tuple or its text (``"(8, 16)"``)."""
        return _shape(text)

    @property
    def total(self) -> np.ndarray:
        """SMP per unit summed over generations, shape (n_draws,)."""
        out = np.zeros(self.n_draws)
        for g in self.generations:
            out = out + g.amount
        return out

    def add_new(self, amount, born: int = -1, events=None, size2=4 / math.pi) -> None:
        """Add kinks created in the current layer by stage ``born`` (each event in one unit).

        Parameters
        ----------
        amount : array, shape (n_draws,)
            Their expected SMP per unit.
        born : int
            Stage that created them (-1: the input).
        events : array, shape (n_draws,), optional
            Expected number of events along the path over the layer; needed for the path-to-path spread.
        size2 : float or array
            ``E s**2 / (E s)**2`` of an event's jump (``4/pi``: Rayleigh, zero crossings of a Gaussian process).
        """
        amount = np.broadcast_to(np.asarray(amount, dtype=float), (self.n_draws,))
        if not np.any(amount > 0):
            return
        touched = [np.eye(n, dtype=bool) for n in self.shape[1:]]
        n_origins = int(np.prod(self.shape[1:])) if len(self.shape) > 1 else 1
        g = Generation(amount.copy(), touched, np.ones(n_origins), np.ones((self.n_draws, n_origins)),
                       np.ones((self.n_draws, n_origins)), born)
        if events is not None:
            g.events = np.broadcast_to(np.asarray(events, dtype=float), (self.n_draws,)).copy()
            g.size2 = np.broadcast_to(np.asarray(size2, dtype=float), (self.n_draws,)).copy()
            g.amount = g.amount * self.path_factor(g.relative_variance())
        self.generations.append(g)

    def path_factor(self, variance) -> np.ndarray:
        """One path's factor on an expected SMP, per draw: mean-1 Gamma of the given relative variance, shape
        (n_draws,) (1 without a generator, or where the variance is 0)."""
        out = np.ones(self.n_draws)
        if self.rng is None:
            return out
        variance = np.broadcast_to(np.asarray(variance, dtype=float), (self.n_draws,))
        noisy = variance > 0
        shape = 1.0 / variance[noisy]
        out[noisy] = self.rng.gamma(shape) / shape
        return out

    def _grow_size2(self, g: Generation, v: np.ndarray) -> None:
        """Events' sizes became random multiples (relative variance ``v``) of what they were: grow ``size2``
        and, with a generator, draw the factor that takes the realised amount to the new relative variance."""
        if g.events is None:
            return
        before = g.relative_variance()
        g.size2 = g.size2 * (1.0 + np.maximum(v, 0.0))
        g.amount = g.amount * self.path_factor((1.0 + g.relative_variance()) / (1.0 + before) - 1.0)

    def scale(self, factor) -> None:
        """Multiply every generation's SMP by ``factor`` (per draw), e.g. one network's gain on its carried kinks."""
        for g in self.generations:
            g.amount = g.amount * np.asarray(factor, dtype=float)

    def rescale(self, target) -> None:
        """Scale all generations so that their total is ``target`` per draw (e.g. a fitted model's draw)."""
        total = self.total
        ratio = np.divide(target, total, out=np.zeros_like(total), where=total > 0)
        for g in self.generations:
            g.amount = g.amount * ratio

    def carry(self, block: str, params: Mapping[str, Any], out_shape: Any, factor=None) -> np.ndarray:
        """Move the kinks through one block; returns the carried SMP per unit of its output, shape (n_draws,).

        Parameters
        ----------
        block : str
            Block name.
        params : mapping
            The stage's columns (``sigma_w``, ``fan_in``, ``kernel_size``,
            ``stride``, ``padding``, ``dilation``).
        out_shape : tuple or str
            Shape of the block's output (without batch).
        factor : array or list of arrays, optional
            Carried share per draw from the theory (``theory_carried /
            smp_in``), or one such array per generation; needed by the
            blocks that do not mix units.
        """
        out_shape = _shape(out_shape)
        n_in, n_out = float(np.prod(self.shape)), float(np.prod(out_shape))
        if block == "linear" and len(self.shape) > 1 and len(out_shape) == 1:
            self._flatten()  # a linear block on a multi-dimensional layer reads it flattened
            self.shape = (int(n_in),)
        if block in ("linear", "conv1d", "conv2d", "avgpool1d", "avgpool2d"):
            for g in self.generations:
                before = g.mass()
                self._mix(g, block, params, out_shape)
                g.amount = g.amount * np.divide(g.mass() / n_out, before / n_in, out=np.zeros_like(before),
                                                where=before > 0)
                if not block.startswith("avgpool"):  # the event's size: a sum of n half-normal magnitudes
                    g.mixed = True
                    n = g.nonzero_units()
                    self._grow_size2(g, np.divide(math.pi / 2 - 1.0, n, out=np.zeros_like(n), where=n > 0))
        elif block == "flatten":
            self._flatten()
        else:
            if factor is None:
                raise ValueError(f"carry({block!r}) needs the theory's carried factor")
            factors = factor if isinstance(factor, list) else [factor] * len(self.generations)
            for g, factor in zip(self.generations, factors):
                factor = np.asarray(factor, dtype=float)
                g.amount = g.amount * factor
                n_before, q = g.nonzero_units(), (math.pi / 2 if g.mixed else 1.0)
                if block in ("maxpool1d", "maxpool2d"):
                    self._maxpool(g, params, out_shape)
                elif block == "relu":
                    g.fill = g.fill * factor[:, None]  # the surviving share is P(x > 0): inactive units drop out
                elif block in ("leaky_relu", "prelu"):
                    uneven = _leaky_q2_factor(block, params, factor)
                    g.q2 = (1.0 if g.q2 is None else g.q2) * uneven[:, None]
                    self._grow_size2(g, np.divide(q * (uneven - 1.0), n_before, out=np.zeros_like(n_before),
                                                  where=n_before > 0))
                if block in ("maxpool1d", "maxpool2d", "relu"):  # a random subset of the event's units kept
                    n_after = g.nonzero_units()
                    self._grow_size2(g, q * (np.divide(1.0, n_after, out=np.zeros_like(n_after), where=n_after > 0)
                                             - np.divide(1.0, n_before, out=np.zeros_like(n_before),
                                                         where=n_before > 0)))
        self.shape = out_shape
        return self.total

    # -- the rules that change the footprint ---------------------------------------------------------------

    def _flatten(self) -> None:
        """Every footprint as features: the channels an event touches times its touched positions."""
        for g in self.generations:
            g.channels = g.channels * g.positions()
            g.touched = []

    def _windows(self, params: Mapping[str, Any], out_shape: tuple[int, ...], pooling: bool) -> list[np.ndarray]:
        rank = len(self.shape) - 1
        k = _per_dim(params.get("kernel_size"), rank)
        stride = _per_dim(params.get("stride"), rank, default=k[0] if pooling else 1)
        pad = _per_dim(params.get("padding"), rank, default=0)
        dil = _per_dim(params.get("dilation"), rank)
        return [window_matrix(l_in, l_out, kk, st, p, d)
                for l_in, l_out, kk, st, p, d in zip(self.shape[1:], out_shape[1:], k, stride, pad, dil)]

    @staticmethod
    def _overlap_histogram(g: Generation, windows: list[np.ndarray]):
        """``([(taps, count)], touched)``: per origin, how many outputs hold ``taps`` touched positions in their
        window (``count``, shape (n_origins,)), and the positions touched after the windows, per dimension."""
        overlaps = [t.astype(np.int64) @ w for t, w in zip(g.touched, windows)]  # (n_origins_d, length_out_d)
        hists = [np.stack([(o == v).sum(axis=1) for v in range(int(o.max()) + 1)], axis=1) for o in overlaps]
        combos = [(1, np.ones(1))]
        for h in hists:
            combos = [(taps * v, np.multiply.outer(count, h[:, v]).reshape(-1))
                      for taps, count in combos for v in range(1, h.shape[1])]
        return [(taps, count) for taps, count in combos if count.any()], [o > 0 for o in overlaps]

    def _mix(self, g: Generation, block: str, params: Mapping[str, Any], out_shape: tuple[int, ...]) -> None:
        """Affine maps (weights of std ``sigma_w / sqrt(fan_in)``) and average pooling (weights ``1/window``)."""
        pooling = block.startswith("avgpool")
        along_last = block == "linear" and len(self.shape) > 1  # torch's Linear on (..., L) maps the last axis
        if block == "linear" and not along_last:
            combos, touched = [(1, np.ones(len(g.channels)))], []
        elif along_last:
            windows = [np.eye(n, dtype=np.int64) for n in self.shape[1:-1]]
            windows.append(np.ones((self.shape[-1], out_shape[-1]), dtype=np.int64))
            combos, touched = self._overlap_histogram(g, windows)
        else:
            combos, touched = self._overlap_histogram(g, self._windows(params, out_shape, pooling))
        mass = np.zeros_like(g.fill)
        nonzero = np.zeros_like(g.fill)
        if pooling:
            window = float(np.prod(_per_dim(params.get("kernel_size"), len(self.shape) - 1)))
            channels_out, taps_per_channel = g.channels, 1.0
        else:
            sigma_e = float(params["sigma_w"]) / math.sqrt(float(params["fan_in"]))
            if along_last:
                channels_out, taps_per_channel = g.channels, 1.0
            else:
                channels_out, taps_per_channel = np.full(len(g.channels), float(out_shape[0])), g.channels
            # given weights: E|w| (one tap) need not be the Gaussian sqrt(2/pi) sigma_e; sums of many taps are Gaussian
            w_l1 = params.get("w_l1")
            abs_ratio = (float(w_l1) / float(params["fan_in"]) / (sigma_e * math.sqrt(2 / math.pi))
                         if w_l1 is not None and np.isfinite(float(w_l1)) and sigma_e > 0 else 1.0)
        fill = np.clip(g.fill, 0.0, 1.0)
        for taps, count in combos:
            n = taps * taps_per_channel  # touched units in one output's window, per origin
            fill_new = 1.0 - (1.0 - fill) ** n
            r = np.divide(n * fill, fill_new, out=np.ones_like(fill_new), where=fill_new > 0)
            jump = np.sqrt(r) / window if pooling else sigma_e * expected_chi(r) * (1.0 + (abs_ratio - 1.0) / r)
            if g.q2 is not None:  # jumps spread unevenly over the units: the sum follows their root mean square
                jump = jump * np.sqrt(np.maximum(1.0 + (g.q2 - 1.0) * (1.0 - 1.0 / np.maximum(r, 1.0)), 0.0))
            mass += count * fill_new * jump * g.m1
            nonzero += count * fill_new
        g.touched = touched
        positions = g.positions()
        g.channels = channels_out
        # an origin no output window reaches (strided windows that skip positions) keeps no kink
        g.fill = np.divide(nonzero, positions, out=np.zeros(np.broadcast(nonzero, positions).shape),
                           where=positions > 0)
        g.m1 = np.divide(mass, nonzero, out=np.zeros_like(mass), where=nonzero > 0)
        if not pooling:
            g.q2 = None  # Gaussian weights: the new jumps are Gaussian across the units an event touches

    def _maxpool(self, g: Generation, params: Mapping[str, Any], out_shape: tuple[int, ...]) -> None:
        """Each output carries the jump of the selected input (any input of its window, equally likely)."""
        windows = self._windows(params, out_shape, pooling=True)
        window = float(np.prod([w.sum(axis=0).max() for w in windows]))
        combos, touched = self._overlap_histogram(g, windows)
        selected = sum(count * taps for taps, count in combos) / window  # expected touched selections per origin
        g.touched = touched
        positions = g.positions()
        g.fill = np.divide(g.fill * selected, positions, out=np.zeros(np.broadcast(g.fill * selected, positions).shape),
                           where=positions > 0)
