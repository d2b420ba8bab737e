"""Exact SMP of piecewise-linear torch models along straight input segments (DESIGN §3).

Along ``x(t) = start + t (end - start)``, ``t`` in [0, 1], a network built from
affine maps (linear, convolution, average pooling, batch norm in eval mode,
residual sums, concatenation) and piecewise-linear maps (ReLU, LeakyReLU,
PReLU, hard tanh, clamp, max pooling, max/min) is affine in ``t`` inside each
*activation region*: an interval on which no ReLU input changes sign and no
max-pool window changes its maximum. :func:`exact_smp` walks the segment
region by region and returns every kink of the output, with its position and
its slope jump, to float64 round-off.

How the walk works
------------------
1. One forward pass in float64 at a point ``tau`` with forward-mode AD dual
   tensors gives the output ``y``, its slope ``y' = dy/dt`` and, for every
   piecewise-linear op, its *switching functions* ``u`` and ``u'`` (a ReLU's
   input; the gap between a max-pool window's maximum and each other entry).
   The ops are intercepted by a :class:`torch.overrides.TorchFunctionMode`, so
   ``nn.ReLU``, ``F.relu``, ``torch.relu``, ``x.relu()`` and ``x.clamp(min=0)``
   are all seen, in custom ``forward`` methods too.
2. Inside the region ``u(tau + s) = u + s u'`` exactly, so the region around
   ``tau`` is ``[tau - s_back, tau + s_fwd]``, with ``s_fwd`` (``s_back``) the
   nearest sign change ``s = -u / u'`` ahead (behind).
3. The next evaluation point lies just beyond the region's end (1/16 of the
   last region's width past it). When its region starts where the previous
   one ended, the boundary between them is an *event*: the output slope jumps
   by ``y'_right - y'_left`` (zero when the switch is masked downstream). When
   it does not (the point overshot a shorter region), the region is kept and
   the gap is filled first. Every evaluation therefore finds a new region:
   the cost is one forward pass per region, plus two for the end points.
   A point that falls within ``t_tol / 8`` of a switch is moved (the masks
   there are ambiguous) at the cost of one more evaluation.
4. Values are checked for continuity at every event: the left and right
   affine pieces must meet. A model hiding an op that is not tracked fails
   this check and raises instead of returning a wrong answer.

Conventions
-----------
* SMP is per output component, in output units per unit of ``t`` (the whole
  segment has length 1 in ``t``); divide by ``segment_length`` for output
  units per unit of input distance.
* An *event* is a crossing of an activation-region boundary; a *kink* of a
  component is an event at which that component's slope jumps by more than
  ``jump_rtol`` times the largest slope magnitude it takes along the segment.
  Events with a zero jump (masked downstream) are kept in the result
  (``n_events``, ``kinks_frame(include_silent=True)``) but not counted as
  kinks.
* Switches closer than ``t_tol`` that cannot be separated by an evaluation
  point count as one event whose jump is their sum; events within ``t_tol``
  of the ends of the segment are not interior kinks and are not counted.
"""

from __future__ import annotations

import bisect
import copy
import logging
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
import torch.autograd.forward_ad as fwAD

from ._pltrace import PLTracer
from ._validation import check_bool, check_int, check_real
from .errors import (
    ExactSMPError,
    InputError,
    ModelEvaluationError,
    NotPiecewiseLinearError,
    SignalError,
    SMPStatsError,
    TooManyEventsError,
)
from .paths import _as_float_array

__all__ = ["exact_smp", "ExactSMPResult"]

logger = logging.getLogger(__name__)

#: Largest relative mismatch of the output values where two regions meet.
_CONTINUITY_RTOL = 1e-7
#: Evaluation points are kept this fraction of t_tol away from any switch.
_AMBIGUITY_FRACTION = 0.125
#: Tries to move an evaluation point off a switch before accepting it as is.
_MAX_NUDGES = 24
_GOLDEN = 0.6180339887498949
#: The next evaluation point goes this fraction of the last region's width past the covered part (times
#: the probe fraction 1/2): close enough to land in the next region most of the time, so that regions are
#: found in order (an overshoot costs no evaluation, only bookkeeping).
_STEP = 0.125


# ---------------------------------------------------------------------------
# result
# ---------------------------------------------------------------------------


@dataclass(repr=False)
class ExactSMPResult:
    """Exact SMP of a model's outputs along one or more straight segments.

    Shapes: ``batch`` is ``()`` for one segment and ``(n_segments,)`` for a
    batch; ``out_shape`` is the shape of one output.

    Attributes
    ----------
    value : float or array of shape batch + out_shape
        SMP of each output component: sum of the magnitudes of its slope
        jumps (output units per unit of t; t runs over [0, 1]).
    n_kinks : int or array of shape batch + out_shape
        Number of kinks of each component (events where its slope jumps).
    n_events : int or array of shape batch
        Activation-region boundaries crossed (kinks plus silent events).
    t : array of shape (n_events,), or tuple of such arrays (one per segment)
        Positions of the events in t, increasing.
    jumps : array of shape (n_events, *out_shape), or tuple of such arrays
        Signed slope jump of every output component at each event
        (right slope minus left slope, output units per unit of t).
    n_evaluations : int
        Model evaluations spent (inputs passed through the model with forward
        AD, summed over segments, the two end points of each segment included).
    n_forward_calls : int
        Batched forward calls made.
    segment_length : float or array of shape batch
        Euclidean length ``|end - start|`` of each segment (input units).
    t_reached : float or array of shape batch
        The segment was covered from 0 to here (1.0 when complete; less only
        in the partial result of :class:`~smpstats.errors.TooManyEventsError`).
    ops : dict
        Piecewise-linear ops traced in one forward pass and how often they ran.
    unknown_ops : tuple of str
        Ops on input-dependent tensors that exact_smp does not classify; they
        passed the continuity check (affine along the segment).
    input_shape, out_shape : tuple of int
    t_tol, jump_rtol : float
        Tolerances used (see :func:`exact_smp`).
    """

    value: Any
    n_kinks: Any
    n_events: Any
    t: Any
    jumps: Any
    n_evaluations: int
    n_forward_calls: int
    segment_length: Any
    t_reached: Any
    input_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    batch_shape: tuple[int, ...]
    t_tol: float
    jump_rtol: float
    ops: dict = field(default_factory=dict)
    unknown_ops: tuple[str, ...] = ()
    _kink_mask: Any = field(default=None, compare=False)

    # -- derived
    @property
    def n_segments(self) -> int:
        return int(np.prod(self.batch_shape, dtype=np.int64))

    @property
    def n_components(self) -> int:
        return int(np.prod(self.out_shape, dtype=np.int64))

    @property
    def total(self) -> Any:
        """SMP summed over output components: float, or array of shape batch."""
        v = np.asarray(self.value, dtype=np.float64).reshape(self.batch_shape + (-1,)).sum(axis=-1)
        return float(v) if not self.batch_shape else v

    @property
    def complete(self) -> bool:
        """Every segment was walked to t = 1."""
        return bool(np.all(np.asarray(self.t_reached) >= 1.0))

    def _segments(self):
        if self.batch_shape:
            return list(zip(self.t, self.jumps, self._kink_mask))
        return [(self.t, self.jumps, self._kink_mask)]

    # -- frames
    def kinks_frame(self, include_silent: bool = False):
        """One row per kink and output component.

        Columns: ``segment``, ``event`` (index of the event along its
        segment), ``t``, ``component`` (flat index into ``out_shape``),
        ``index`` (tuple index, for outputs with two or more dimensions),
        ``jump`` (signed slope jump, output units per unit of t) and
        ``kink`` (False for the zero jumps of silent events, listed only with
        ``include_silent=True``).
        """
        import pandas as pd

        cols: dict[str, list] = {k: [] for k in ("segment", "event", "t", "component", "jump", "kink")}
        n_comp = self.n_components
        for seg, (t, jumps, mask) in enumerate(self._segments()):
            j = jumps.reshape(t.shape[0], n_comp)
            m = mask.reshape(t.shape[0], n_comp)
            keep = np.ones_like(m) if include_silent else m
            ev, comp = np.nonzero(keep)
            cols["segment"].append(np.full(ev.size, seg, dtype=np.int64))
            cols["event"].append(ev.astype(np.int64))
            cols["t"].append(t[ev])
            cols["component"].append(comp.astype(np.int64))
            cols["jump"].append(j[ev, comp])
            cols["kink"].append(m[ev, comp])
        data = {k: (np.concatenate(v) if v else np.zeros(0)) for k, v in cols.items()}
        frame = pd.DataFrame(data)
        if len(self.out_shape) >= 2:
            frame.insert(4, "index", [tuple(int(i) for i in np.unravel_index(c, self.out_shape)) for c in frame["component"]])
        return frame

    def to_frame(self):
        """One row per segment and output component: ``segment``, ``component``, ``smp``, ``n_kinks``, ``n_events``."""
        import pandas as pd

        n_seg, n_comp = self.n_segments, self.n_components
        value = np.asarray(self.value, dtype=np.float64).reshape(n_seg, n_comp)
        kinks = np.asarray(self.n_kinks).reshape(n_seg, n_comp)
        events = np.asarray(self.n_events).reshape(n_seg)
        frame = pd.DataFrame(
            {
                "segment": np.repeat(np.arange(n_seg), n_comp),
                "component": np.tile(np.arange(n_comp), n_seg),
                "smp": value.ravel(),
                "n_kinks": kinks.ravel().astype(np.int64),
                "n_events": np.repeat(events, n_comp).astype(np.int64),
            }
        )
        if len(self.out_shape) >= 2:
            frame.insert(2, "index", [tuple(int(i) for i in np.unravel_index(c, self.out_shape)) for c in frame["component"]])
        return frame

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python summary (lists for arrays); kink positions are left to :meth:`kinks_frame`."""
        def plain(v):
            return v.tolist() if isinstance(v, np.ndarray) else v

        return {
            "value": plain(self.value),
            "total": plain(self.total),
            "n_kinks": plain(self.n_kinks),
            "n_events": plain(self.n_events),
            "n_evaluations": self.n_evaluations,
            "segment_length": plain(self.segment_length),
            "t_reached": plain(self.t_reached),
            "input_shape": list(self.input_shape),
            "out_shape": list(self.out_shape),
            "ops": dict(self.ops),
        }

    def summary(self) -> str:
        """Plain-words report, ending with a next step."""
        n_seg, n_comp = self.n_segments, self.n_components
        total = np.atleast_1d(np.asarray(self.total, dtype=np.float64))
        kinks = np.asarray(self.n_kinks).reshape(n_seg, n_comp)
        events = np.atleast_1d(np.asarray(self.n_events))
        seg_text = "one segment" if not self.batch_shape else f"{n_seg} segments"
        lines = [f"Exact SMP along {seg_text} (t in [0, 1]), output shape {self.out_shape}:"]
        if n_seg == 1:
            lines.append(
                f"  SMP {total[0]:.6g} output units per unit of t (summed over {n_comp} component(s)), "
                f"{int(events[0])} region boundaries crossed, {int(kinks.sum())} kink(s) over all components."
            )
        else:
            lines.append(
                f"  total SMP per segment: mean {total.mean():.6g} (min {total.min():.6g}, max {total.max():.6g}); "
                f"events per segment: mean {events.mean():.1f} (max {int(events.max())})."
            )
        silent = sum(int(np.sum(~m.reshape(m.shape[0], n_comp).any(axis=1))) for _, _, m in self._segments())
        if silent:
            lines.append(f"  {silent} event(s) change no output slope (switches masked downstream).")
        ops = ", ".join(f"{k} x{v}" for k, v in self.ops.items()) or "none"
        lines.append(f"  piecewise-linear ops traced: {ops}.")
        if self.unknown_ops:
            lines.append(f"  ops not classified (checked affine by continuity): {', '.join(self.unknown_ops)}.")
        lines.append(f"  cost: {self.n_evaluations} model evaluations in {self.n_forward_calls} batched forward calls.")
        if not self.complete:
            lines.append(f"  INCOMPLETE: walked up to t = {np.min(self.t_reached):.4g} only.")
            lines.append("Next: raise max_events, or use the grid estimator smpstats.measure for so many kinks.")
        else:
            lines.append("Next: .kinks_frame() lists every kink (t, component, jump); .to_frame() gives one row per component.")
        return "\n".join(lines)

    def __repr__(self) -> str:
        if not self.batch_shape:
            return (
                f"ExactSMPResult(total={self.total:.6g}, n_events={int(self.n_events)}, "
                f"n_kinks={int(np.sum(self.n_kinks))}, out_shape={self.out_shape}, "
                f"n_evaluations={self.n_evaluations}{'' if self.complete else ', incomplete'})"
            )
        total = np.asarray(self.total)
        return (
            f"ExactSMPResult(n_segments={self.n_segments}, mean total={total.mean():.6g}, "
            f"n_events={int(np.sum(self.n_events))}, n_kinks={int(np.sum(self.n_kinks))}, "
            f"out_shape={self.out_shape}, n_evaluations={self.n_evaluations}"
            f"{'' if self.complete else ', incomplete'})"
        )


# ---------------------------------------------------------------------------
# model preparation and evaluation
# ---------------------------------------------------------------------------


def _prepare_model(model: Any) -> tuple[Callable, torch.nn.Module | None, tuple[int, ...] | None, torch.device]:
    """Return (callable, module for hooks or None, known input shape or None, device)."""
    from .blocks import Chain

    input_shape = None
    if isinstance(model, Chain):
        input_shape = model.input_shape
        model = model.module
    if isinstance(model, torch.nn.Module):
        for name, sub in model.named_modules():
            if isinstance(sub, torch.jit.ScriptModule):
                raise ExactSMPError(
                    f"model holds a TorchScript module ({name or 'the model itself'}, {type(sub).__name__}); "
                    "its ops run in C++ where exact_smp cannot see them. Pass the original Python module."
                )
        floating = [p for p in list(model.parameters()) + list(model.buffers()) if p.is_floating_point()]
        if all(p.dtype == torch.float64 for p in floating) and not any(m.training for m in model.modules()):
            module = model
        else:
            try:
                module = copy.deepcopy(model)
            except Exception as exc:
                raise InputError(
                    f"model (a {type(model).__name__}) could not be copied to run it in float64 eval mode without "
                    f"changing it: {type(exc).__name__}: {exc}. Convert it yourself (model.double().eval()) and pass that."
                ) from exc
            logger.info("exact_smp: running a float64 copy of %s in eval mode (the model passed is left unchanged).",
                        type(model).__name__)
            module = module.to(torch.float64).eval()
        device = torch.device("cpu")
        for tensor in list(module.parameters()) + list(module.buffers()):
            device = tensor.device
            break
        return module, module, input_shape, device
    if callable(model):
        return model, None, input_shape, torch.device("cpu")
    raise InputError(
        f"model must be a torch.nn.Module, an smpstats Chain or a callable built from torch ops; "
        f"got an object of type {type(model).__name__}."
    )


class _Evaluator:
    """Batched forward passes with dual tensors and traced piecewise-linear ops."""

    def __init__(self, model, hook_module, x0, dx, batch_size, t_tol, amb_tol):
        self.model = model
        self.x0 = x0
        self.dx = dx
        self.batch_size = batch_size
        self.t_tol = t_tol
        self.amb_tol = amb_tol
        self.tracer = PLTracer(1)
        self.hook_module = hook_module
        self.n_calls = 0
        self.ops: dict[str, int] = {}
        self.out_shape: tuple[int, ...] | None = None

    def __call__(self, rows: np.ndarray, tau: np.ndarray):
        """Evaluate segments ``rows`` at ``tau``: y, y' of shape (m, n_out) and switch summaries."""
        ys, dys, fwd, back, amb = [], [], [], [], []
        for lo in range(0, rows.size, self.batch_size):
            r = rows[lo : lo + self.batch_size]
            idx = torch.as_tensor(r, device=self.x0.device)
            tt = torch.as_tensor(tau[lo : lo + self.batch_size], dtype=torch.float64, device=self.x0.device)
            x0, dx = self.x0[idx], self.dx[idx]
            x = x0 + tt.reshape((-1,) + (1,) * (x0.dim() - 1)) * dx
            y, dy, sw = self._forward(x, dx)
            ys.append(y)
            dys.append(dy)
            fwd.append(sw.forward)
            back.append(sw.backward)
            amb.append(sw.ambiguous)
        cat = np.concatenate
        return cat(ys), cat(dys), cat(fwd), cat(back), cat(amb)

    def _forward(self, x: torch.Tensor, dx: torch.Tensor):
        tr = self.tracer
        m = x.shape[0]
        tr.reset(m, x.device)
        self.n_calls += 1
        with torch.no_grad(), fwAD.dual_level():
            with warnings.catch_warnings():
                # torch loads its jvp decompositions with torch.jit.script on first use, which warns.
                warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=DeprecationWarning)
                xd = fwAD.make_dual(x, dx)
            try:
                with tr:
                    out = self.model(xd)
            except SMPStatsError:
                raise
            except Exception as exc:
                raise ModelEvaluationError(
                    f"model raised {type(exc).__name__} on a batch of {m} input(s) of shape {tuple(x.shape[1:])} "
                    f"(float64 dual tensors for forward-mode AD): {exc}"
                ) from exc
            if not isinstance(out, torch.Tensor):
                raise SignalError(
                    f"model returned a {type(out).__name__}; it must return one tensor of shape ({m}, ...). "
                    "Wrap it to pick the output to measure, e.g. lambda x: model(x)[0]."
                )
            if out.dim() == 0 or out.shape[0] != m:
                raise SignalError(
                    f"model returned shape {tuple(out.shape)} for a batch of {m} input(s); expected ({m}, ...). "
                    "The model must map a batch of inputs (first axis) to a batch of outputs."
                )
            primal, tangent = fwAD.unpack_dual(out)
            if tangent is None:
                tangent = torch.zeros_like(primal)
            y = primal.detach().to(device="cpu", dtype=torch.float64).reshape(m, -1).numpy().copy()
            dy = tangent.detach().to(device="cpu", dtype=torch.float64).reshape(m, -1).numpy().copy()
        if self.out_shape is None:
            self.out_shape = tuple(out.shape[1:])
            self.ops = dict(tr.pl_ops)
        if not (np.isfinite(y).all() and np.isfinite(dy).all()):
            raise SignalError(
                "model returned NaN or infinite outputs (or slopes) along the segment; exact SMP needs finite outputs."
            )
        return y, dy, tr.switches(self.amb_tol)


# ---------------------------------------------------------------------------
# the walk
# ---------------------------------------------------------------------------


class _Walk:
    """State of the region-by-region walk of all segments (numpy, one row per segment)."""

    def __init__(self, evaluate: _Evaluator, n_seg: int, t_tol: float, max_events: int):
        self.ev = evaluate
        self.n = n_seg
        self.t_tol = t_tol
        self.max_events = max_events
        self.records_seg: list[np.ndarray] = []
        self.records_t: list[np.ndarray] = []
        self.records_jump: list[np.ndarray] = []

    def run(self) -> None:
        n, tol = self.n, self.t_tol
        rows = np.arange(n)
        # End points: values for the continuity checks, and the first predicted switch.
        y, dy, fwd, _, _ = self.ev(np.r_[rows, rows], np.r_[np.zeros(n), np.ones(n)])
        y0, y1 = y[:n], y[n:]
        self.y1 = y1
        c = y.shape[1]
        self.cur = np.zeros(n)
        self.Lt = np.zeros(n)
        self.Ly = y0.copy()
        self.Ls = np.zeros((n, c))
        self.first = np.ones(n, dtype=bool)
        self.width = fwd[:n].copy()  # expected width of the next region (the last one's)
        self.frac = np.full(n, 0.5)
        self.n_nudge = np.zeros(n, dtype=np.int64)
        self.done = np.zeros(n, dtype=bool)
        self.n_events = np.zeros(n, dtype=np.int64)
        self.n_eval = np.full(n, 2, dtype=np.int64)
        self.scale_y = np.maximum(np.abs(y0).max(axis=1, initial=0.0), np.abs(y1).max(axis=1, initial=0.0))
        self.scale_s = np.zeros(n)
        self.max_slope = np.zeros((n, c))
        self.pending: list[list[tuple]] = [[] for _ in range(n)]
        max_evals = 4 * self.max_events + 64

        while True:
            # Pending regions that now touch the covered part.
            for b in [b for b in range(n) if self.pending[b] and not self.done[b]]:
                while self.pending[b] and self.pending[b][0][0] <= self.cur[b] + tol:
                    a, bnd, tau, yy, dd = self.pending[b].pop(0)
                    if bnd > self.cur[b] + tol:
                        self._accept(np.array([b]), np.array([a]), np.array([bnd]), np.array([tau]), yy[None], dd[None])
            finished = ~self.done & (self.cur >= 1.0 - tol)
            if finished.any():
                self._finish(np.flatnonzero(finished))
            active = np.flatnonzero(~self.done)
            if active.size == 0:
                break
            if (self.n_eval[active] > max_evals).any():
                b = int(active[np.argmax(self.n_eval[active])])
                self._too_many(b, f"segment {b} needed more than {max_evals} model evaluations")
            # Just past the covered part: a fraction of the last region's width, but never closer to a known
            # boundary than t_tol / 4 (pending regions and t = 1 are at least t_tol away).
            step = np.maximum(_STEP * self.width[active], 4 * tol)
            limit = np.minimum(self.cur[active] + step, 1.0)
            for i, b in enumerate(active):
                if self.pending[b]:
                    limit[i] = min(limit[i], self.pending[b][0][0])
            cur = self.cur[active]
            tau = cur + self.frac[active] * (limit - cur)
            y, dy, fwd, back, amb = self.ev(active, tau)
            self.n_eval[active] += 1
            self.scale_y[active] = np.maximum(self.scale_y[active], np.abs(y).max(axis=1, initial=0.0))
            self.scale_s[active] = np.maximum(self.scale_s[active], np.abs(dy).max(axis=1, initial=0.0))
            self.max_slope[active] = np.maximum(self.max_slope[active], np.abs(dy))

            nudge = amb & (self.n_nudge[active] < _MAX_NUDGES)
            if nudge.any():
                k = self.n_nudge[active[nudge]] + 1
                self.n_nudge[active[nudge]] = k
                self.frac[active[nudge]] = 0.25 + 0.5 * ((k * _GOLDEN) % 1.0)
            ok = ~nudge
            if not ok.any():
                continue
            if (amb & ok).any():
                logger.debug("exact_smp: accepting an evaluation point within %g of a switch after %d tries.",
                             _AMBIGUITY_FRACTION * tol, _MAX_NUDGES)
            sel = active[ok]
            self.frac[sel] = 0.5
            self.n_nudge[sel] = 0
            a = tau[ok] - back[ok]
            bnd = tau[ok] + fwd[ok]
            adjacent = a <= self.cur[sel] + tol
            if adjacent.any():
                j = adjacent
                self._accept(sel[j], a[j], bnd[j], tau[ok][j], y[ok][j], dy[ok][j])
            for i in np.flatnonzero(~adjacent):
                b = int(sel[i])
                entry = (float(a[i]), float(bnd[i]), float(tau[ok][i]), y[ok][i].copy(), dy[ok][i].copy())
                keys = [p[0] for p in self.pending[b]]
                self.pending[b].insert(bisect.bisect(keys, entry[0]), entry)

    def _accept(self, idx, a, bnd, tau, y, dy) -> None:
        """The regions found at ``tau`` start where the covered part of segments ``idx`` ends."""
        cur = self.cur[idx]
        tk = np.where(a > cur, 0.5 * (cur + a), cur)
        left = self.Ly[idx] + (tk - self.Lt[idx])[:, None] * self.Ls[idx]
        right = y + (tk - tau)[:, None] * dy
        self._check_continuity(idx, tk, left, right)
        rec = ~self.first[idx]
        if rec.any():
            self.records_seg.append(idx[rec])
            self.records_t.append(tk[rec])
            self.records_jump.append(dy[rec] - self.Ls[idx][rec])
            self.n_events[idx[rec]] += 1
        self.Ly[idx] = y
        self.Ls[idx] = dy
        self.Lt[idx] = tau
        self.width[idx] = bnd - np.maximum(a, cur)
        self.cur[idx] = bnd
        self.first[idx] = False
        over = self.n_events[idx] > self.max_events
        if over.any():
            b = int(idx[np.argmax(over)])
            self._too_many(b, f"segment {b} crossed more than max_events={self.max_events} region boundaries")

    def _finish(self, idx) -> None:
        left = self.Ly[idx] + (1.0 - self.Lt[idx])[:, None] * self.Ls[idx]
        self._check_continuity(idx, np.ones(idx.size), left, self.y1[idx])
        self.done[idx] = True

    def _check_continuity(self, idx, tk, left, right) -> None:
        err = np.abs(left - right).max(axis=1, initial=0.0)
        tol = _CONTINUITY_RTOL * (self.scale_y[idx] + self.scale_s[idx]) + 1e-300
        bad = err > tol
        if bad.any():
            i = int(np.argmax(bad))
            b = int(idx[i])
            unknown = sorted(self.ev.tracer.unknown_ops)
            extra = (f" Ops seen that exact_smp does not classify: {', '.join(unknown)}." if unknown else
                     " An op the tracer cannot see (a C++ extension, a custom autograd Function) may bend the "
                     "output, or tracked ops may combine into a jump (a comparison mask multiplying a constant).")
            raise NotPiecewiseLinearError(
                f"The model's output along segment {b} is not piecewise linear with the switches exact_smp tracks: "
                f"the affine pieces left and right of t = {tk[i]:.9g} miss each other by {err[i]:.3g} "
                f"(tolerance {tol[i]:.3g}).{extra} Use the grid estimator smpstats.measure for this model.",
                op=unknown[0] if len(unknown) == 1 else None,
            )

    def _too_many(self, b: int, what: str) -> None:
        t_reached = np.where(self.done, 1.0, np.clip(self.cur, 0.0, 1.0))
        self.partial_t_reached = t_reached
        raise _StopWalk(
            f"exact_smp stopped: {what} (reached t = {t_reached[b]:.6g} of 1). The model has very many "
            f"activation regions along this segment. Raise max_events (cost grows linearly with it), walk "
            f"shorter segments, or use the grid estimator smpstats.measure. The kinks found so far are in "
            f"err.partial."
        )

    def records(self):
        c = self.Ls.shape[1]
        if self.records_seg:
            seg = np.concatenate(self.records_seg)
            t = np.concatenate(self.records_t)
            jump = np.concatenate(self.records_jump)
        else:
            seg, t, jump = np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros((0, c))
        order = np.lexsort((t, seg))
        return seg[order], t[order], jump[order]


class _StopWalk(Exception):
    pass


# ---------------------------------------------------------------------------
# public function
# ---------------------------------------------------------------------------


def exact_smp(
    model: Any,
    start: Any,
    end: Any,
    *,
    batched: bool | None = None,
    max_events: int = 100_000,
    batch_size: int = 128,
    t_tol: float = 1e-9,
    jump_rtol: float = 1e-9,
) -> ExactSMPResult:
    """Exact SMP of a piecewise-linear torch model along straight segments.

    Walks ``x(t) = start + t (end - start)``, ``t`` in [0, 1], region by
    region and returns every kink of every output component: its position
    in ``t`` and its slope jump, exactly up to float64 round-off.

    Parameters
    ----------
    model : torch.nn.Module, smpstats Chain or callable
        Maps a batch of inputs, shape (n, *input_shape), to a batch of outputs
        (n, *out_shape). Any module whose forward uses affine maps (Linear,
        Conv1d/2d/3d, AvgPool, AdaptiveAvgPool, BatchNorm in eval mode,
        Flatten, reshapes, residual sums, concatenation, Dropout in eval
        mode) and piecewise-linear maps (ReLU, LeakyReLU, PReLU, RReLU in eval
        mode, Hardtanh, ReLU6, Hardsigmoid, Softshrink, clamp, abs,
        max/min/maximum/minimum, MaxPool1d/2d/3d with any padding, dilation
        and ceil_mode, AdaptiveMaxPool; modules, functional forms and tensor
        methods alike). Comparisons on the input path (``x > 0`` in
        ``torch.where``) are tracked too. A module runs as a float64 copy in
        eval mode on the device of its parameters; the model passed is not
        changed. A plain callable is run as given, on float64 CPU tensors.
    start, end : array-like or torch.Tensor of shape input_shape, or (n_segments, *input_shape)
        End points of the segment(s) (input units). Same shape.
    batched : bool, optional
        Whether ``start`` and ``end`` carry a leading axis of segments. Default:
        decided from a Chain's ``input_shape``, else False (one segment; logged).
    max_events : int >= 1, default=100_000
        Most region boundaries one segment may cross; beyond it
        :class:`~smpstats.errors.TooManyEventsError` is raised with the
        partial result.
    batch_size : int >= 1, default=128
        Largest number of segments evaluated in one forward pass (memory).
        Use 1 for models that mix the batch (e.g. sequence-first layouts).
    t_tol : float in (0, 1e-3], default=1e-9
        Switches closer than this (in t) that no evaluation point separates
        count as one event; events within it of the ends are not counted.
    jump_rtol : float >= 0, default=1e-9
        A component's slope jump counts as a kink when it exceeds this
        fraction of the largest |slope| the component takes on the segment
        (smaller jumps are round-off of switches masked downstream).

    Returns
    -------
    ExactSMPResult
        ``value`` (SMP per output component, output units per unit of t),
        ``n_kinks``, ``n_events``, ``t`` and ``jumps`` (every event),
        ``n_evaluations``; ``kinks_frame()``, ``to_frame()``, ``summary()``.

    Raises
    ------
    InputError
        Bad arguments: shapes of ``start`` and ``end`` differ, NaN or inf.
    NotPiecewiseLinearError
        The forward pass applies a smooth op (GELU, sigmoid, tanh, softplus,
        SiLU, softmax, ELU, exp, normalisation layers, ...), a discontinuous
        or random op, or a product of two input-dependent tensors to an
        input-dependent tensor; or the output fails the continuity check.
        The message names the op and the submodule and points to
        :func:`smpstats.measure`, the grid estimator.
    TooManyEventsError
        A segment crossed more than ``max_events`` boundaries; ``err.partial``
        holds the kinks found up to ``err.partial.t_reached``.
    ModelEvaluationError, SignalError
        The model raised, or returned something other than one finite tensor
        with the batch first.

    Notes
    -----
    The cost is one forward pass with forward-mode AD (about 3 plain passes)
    per activation region, batched over segments. The passes are small: on a
    busy CPU, ``torch.set_num_threads(1)`` avoids thread contention that can
    slow them down many times over. Expected region
    counts grow linearly with the number of neurons at initialisation
    (Hanin and Rolnick, 2019). Every input-dependent tensor must keep the
    batch along its first dimension (or pass ``batch_size=1``).

    Examples
    --------
    >>> import torch, smpstats.exact as ex  # doctest: +SKIP
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    >>> r = ex.exact_smp(net, torch.zeros(4), torch.ones(4))
    >>> r.value, r.n_kinks, r.kinks_frame()
    """
    callable_model, hook_module, chain_shape, device = _prepare_model(model)
    start_a = _as_float_array(start, "start")
    end_a = _as_float_array(end, "end")
    if start_a.shape != end_a.shape:
        raise InputError(
            f"start and end must have the same shape; got start of shape {start_a.shape} and end of shape "
            f"{end_a.shape}. For many segments from one start point, pass np.broadcast_to(start, end.shape)."
        )
    if batched is None:
        if chain_shape is not None:
            batched = start_a.ndim == len(chain_shape) + 1
        else:
            batched = False
            logger.info("exact_smp: batched not given; treating start and end as one segment of shape %s "
                        "(pass batched=True for a leading axis of segments).", start_a.shape)
    batched = check_bool(batched, "batched")
    if batched and start_a.ndim == 0:
        raise InputError("batched=True needs start and end of shape (n_segments, *input_shape); got scalars.")
    if chain_shape is not None:
        expected = ((start_a.shape[0],) if batched else ()) + tuple(chain_shape)
        if start_a.shape != expected:
            raise InputError(
                f"start and end must have shape {'(n_segments, ' if batched else '('}"
                f"{', '.join(map(str, chain_shape))}) for this chain; got {start_a.shape}."
            )
    max_events = check_int(max_events, "max_events", minimum=1)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    t_tol = check_real(t_tol, "t_tol", minimum=0.0, maximum=1e-3, strict_minimum=True)
    jump_rtol = check_real(jump_rtol, "jump_rtol", minimum=0.0)

    x0 = start_a if batched else start_a[None]
    x1 = end_a if batched else end_a[None]
    n_seg = x0.shape[0]
    batch_shape = (n_seg,) if batched else ()
    input_shape = tuple(x0.shape[1:])
    if n_seg == 0:
        raise InputError("start and end hold no segments (leading axis of length 0).")
    x0_t = torch.from_numpy(np.ascontiguousarray(x0)).to(device)
    dx_t = torch.from_numpy(np.ascontiguousarray(x1 - x0)).to(device)

    evaluator = _Evaluator(callable_model, hook_module, x0_t, dx_t, batch_size, t_tol, _AMBIGUITY_FRACTION * t_tol)
    walk = _Walk(evaluator, n_seg, t_tol, max_events)
    handles = evaluator.tracer.module_hooks(hook_module) if hook_module is not None else []
    stopped: str | None = None
    try:
        walk.run()
    except _StopWalk as stop:
        stopped = str(stop)
    finally:
        for h in handles:
            h.remove()

    t_reached = walk.partial_t_reached if stopped else np.ones(n_seg)
    result = _build_result(walk, evaluator, batch_shape, input_shape, np.linalg.norm((x1 - x0).reshape(n_seg, -1), axis=1),
                           t_reached, t_tol, jump_rtol)
    if stopped:
        raise TooManyEventsError(stopped, partial=result)
    return result


def _build_result(walk: _Walk, ev: _Evaluator, batch_shape, input_shape, lengths, t_reached, t_tol, jump_rtol) -> ExactSMPResult:
    n_seg = walk.n
    out_shape = ev.out_shape
    seg, t, jump = walk.records()
    scale = walk.max_slope[seg] if seg.size else np.zeros((0, jump.shape[1]))
    mask = np.abs(jump) > jump_rtol * scale
    value = np.zeros((n_seg, jump.shape[1]))
    n_kinks = np.zeros((n_seg, jump.shape[1]), dtype=np.int64)
    np.add.at(value, seg, np.where(mask, np.abs(jump), 0.0))
    np.add.at(n_kinks, seg, mask.astype(np.int64))
    n_events = np.bincount(seg, minlength=n_seg).astype(np.int64)
    bounds = np.searchsorted(seg, np.arange(n_seg + 1))
    ts = tuple(t[bounds[i]:bounds[i + 1]] for i in range(n_seg))
    js = tuple(jump[bounds[i]:bounds[i + 1]].reshape((-1,) + out_shape) for i in range(n_seg))
    ms = tuple(mask[bounds[i]:bounds[i + 1]].reshape((-1,) + out_shape) for i in range(n_seg))
    if batch_shape:
        value_o = value.reshape(batch_shape + out_shape)
        kinks_o = n_kinks.reshape(batch_shape + out_shape)
        result_t, result_j, result_m = ts, js, ms
        events_o, length_o, reached_o = n_events, lengths, np.asarray(t_reached, dtype=np.float64)
    else:
        value_o = value[0].reshape(out_shape) if out_shape else float(value[0, 0])
        kinks_o = n_kinks[0].reshape(out_shape) if out_shape else int(n_kinks[0, 0])
        result_t, result_j, result_m = ts[0], js[0], ms[0]
        events_o, length_o, reached_o = int(n_events[0]), float(lengths[0]), float(t_reached[0])
    return ExactSMPResult(
        value=value_o,
        n_kinks=kinks_o,
        n_events=events_o,
        t=result_t,
        jumps=result_j,
        n_evaluations=int(walk.n_eval.sum()),
        n_forward_calls=ev.n_calls,
        segment_length=length_o,
        t_reached=reached_o,
        input_shape=input_shape,
        out_shape=out_shape,
        batch_shape=batch_shape,
        t_tol=t_tol,
        jump_rtol=jump_rtol,
        ops=dict(ev.ops),
        unknown_ops=tuple(sorted(ev.tracer.unknown_ops)),
        _kink_mask=result_m,
    )
