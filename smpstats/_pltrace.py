"""Forward passes with every piecewise-linear op traced (private helper of :mod:`smpstats.exact`).

:class:`PLTracer` is a :class:`torch.overrides.TorchFunctionMode`. While it is
active, every torch function, ``torch.nn.functional`` function and tensor
method called by a model passes through :meth:`PLTracer.__torch_function__`,
whatever the route (``nn.ReLU``, ``F.relu``, ``torch.relu``, ``x.relu()``,
``x.clamp(min=0)``, ...). The model runs on forward-mode dual tensors
(``torch.autograd.forward_ad``): the primal is the input ``x(t)`` on the
segment, the tangent its t-derivative ``x1 - x0``.

* Affine ops (linear, conv, average pooling, batch norm in eval mode, sums,
  reshapes, concatenation, ...) run unchanged; forward AD carries the tangent.
* Piecewise-linear ops (ReLU and kin, clamp, max pooling, max/min, abs,
  comparisons) are evaluated here on the primal, their tangent is built from
  the same masks and argmax indices, and each one registers its *switching
  functions*: pairs ``(u, u')`` whose sign change is a region boundary.
  Inside a region ``u(t + s) = u + s u'`` exactly, so the boundary lies at
  ``s = -u / u'``.
* Smooth, discontinuous or random ops on an input-dependent tensor raise
  :class:`~smpstats.errors.NotPiecewiseLinearError` naming the op and the
  submodule that called it.

Every tensor that depends on the input is assumed to keep the segments of
the batch along its first dimension (as models that take a batch do).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from .errors import ExactSMPError, NotPiecewiseLinearError

__all__ = ["PLTracer", "Switches"]

_GRID_HINT = (
    "Use the grid estimator instead: smpstats.measure(model, smpstats.SegmentPath(start, end), "
    "n_points=...) samples the outputs and measures their kinks."
)

#: Smooth (nonlinear, differentiable) ops: no exact kinks to enumerate.
_SMOOTH = frozenset(
    """gelu sigmoid tanh softplus silu mish elu selu celu softmax log_softmax softmin logsigmoid
    softsign tanhshrink hardswish glu exp exp2 expm1 log log2 log10 log1p logit sqrt rsqrt square
    reciprocal sin cos tan asin acos atan arcsin arccos arctan sinh cosh asinh acosh atanh arcsinh
    arccosh arctanh atan2 arctan2 erf erfc erfinv lgamma digamma polygamma mvlgamma sinc i0 xlogy
    special_erf logsumexp logaddexp logaddexp2 layer_norm group_norm rms_norm local_response_norm
    normalize norm vector_norm matrix_norm frobenius_norm nuclear_norm dist cdist pdist
    cosine_similarity pairwise_distance var std var_mean std_mean prod cumprod
    scaled_dot_product_attention multi_head_attention_forward lstm gru rnn_tanh lstm_cell gru_cell
    rnn_tanh_cell lp_pool1d lp_pool2d lp_pool3d gaussian_nll_loss kl_div cross_entropy nll_loss
    mse_loss binary_cross_entropy cumulative_trapezoid""".split()
)
#: Reasons for ops of _SMOOTH that are not smooth everywhere.
_NOT_PL_REASON = {
    "hardswish": "it is piecewise quadratic, not piecewise linear, so its output bends between its kinks",
    "elu": "it is nonlinear (exponential) for negative inputs, not piecewise linear",
    "selu": "it is nonlinear (exponential) for negative inputs, not piecewise linear",
    "celu": "it is nonlinear (exponential) for negative inputs, not piecewise linear",
}
#: Reasons for ops of _DISCONTINUOUS.
_JUMP_REASON = {
    f"max_unpool{n}d": "it puts each pooled value back where its window's maximum was, so its output jumps "
    "whenever that position moves" for n in (1, 2, 3)
}
#: Ops whose output jumps (a kink needs a continuous output).
_DISCONTINUOUS = frozenset(
    "floor ceil round trunc fix frac fmod remainder hardshrink floor_divide max_unpool1d max_unpool2d max_unpool3d".split()
)
#: Piecewise-linear ops whose switching functions are not tracked.
_UNSUPPORTED_PL = frozenset(
    """sort argsort msort topk kthvalue median nanmedian cummax cummin quantile nanquantile mode
    unique unique_consecutive fractional_max_pool2d fractional_max_pool3d rnn_relu rnn_relu_cell""".split()
)
#: Ops that are linear in each tensor argument: two input-dependent arguments make a product.
_PRODUCT = frozenset(
    """mul multiply matmul mm bmm einsum outer ger dot vdot inner tensordot kron bilinear mv
    chain_matmul cross linalg_cross conv1d conv2d conv3d conv_transpose1d conv_transpose2d
    conv_transpose3d linear""".split()
)
#: Products added to their first argument (addcmul(input, t1, t2) = input + t1 * t2).
_ADD_PRODUCT = frozenset("addcmul addmm addbmm baddbmm addmv addr".split())
_DIVISION = frozenset("div divide true_divide".split())
_POWER = frozenset("pow float_power".split())
_DROPOUT = frozenset("dropout alpha_dropout feature_alpha_dropout dropout1d dropout2d dropout3d".split())
#: Calls that read metadata only.
_METADATA = frozenset(
    """__get__ dim size numel stride is_contiguous is_floating_point is_complex __len__ ndimension
    nelement element_size data_ptr storage_offset __format__ __repr__ __hash__ get_device
    untyped_storage is_sparse has_names""".split()
)
#: Ops known to be affine in their input-dependent argument (the rest is recorded as unknown).
_AFFINE = frozenset(
    """add sub rsub neg negative positive mul multiply div divide true_divide sum mean nansum cumsum
    diff linear conv1d conv2d conv3d conv_transpose1d conv_transpose2d conv_transpose3d avg_pool1d
    avg_pool2d avg_pool3d adaptive_avg_pool1d adaptive_avg_pool2d adaptive_avg_pool3d batch_norm
    instance_norm flatten unflatten view view_as reshape reshape_as permute transpose t swapaxes
    swapdims movedim moveaxis squeeze unsqueeze expand expand_as repeat repeat_interleave tile cat
    concat concatenate stack hstack vstack dstack split split_with_sizes tensor_split chunk unbind
    narrow select index_select gather take take_along_dim getitem setitem contiguous clone to type
    double float half bfloat16 pad constant_pad_nd interpolate upsample upsample_nearest
    upsample_bilinear pixel_shuffle pixel_unshuffle channel_shuffle native_channel_shuffle roll flip
    fliplr flipud rot90 tril triu diagonal diag diag_embed where masked_fill index_add index_copy
    index_put index_fill scatter scatter_add scatter_reduce masked_scatter put select_scatter
    slice_scatter diagonal_scatter matmul mm bmm einsum tensordot addmm baddbmm addbmm addmv mv
    dot outer kron trace fold unfold as_strided broadcast_to broadcast_tensors atleast_1d
    atleast_2d atleast_3d lerp nan_to_num copy zero fill new_zeros new_ones new_full new_empty
    new_tensor zeros_like ones_like empty_like full_like rand_like randn_like requires_grad
    detach item tolist numpy cpu cuda dropout alpha_dropout feature_alpha_dropout dropout1d
    dropout2d dropout3d identity embedding one_hot addcmul relu relu6 hardtanh leaky_relu prelu
    rrelu threshold hardsigmoid softshrink clamp clip clamp_min clamp_max abs absolute maximum
    minimum fmax fmin max min amax amin argmax argmin max_pool1d max_pool2d max_pool3d
    max_pool1d_with_indices max_pool2d_with_indices max_pool3d_with_indices adaptive_max_pool1d
    adaptive_max_pool2d adaptive_max_pool3d adaptive_max_pool1d_with_indices
    adaptive_max_pool2d_with_indices adaptive_max_pool3d_with_indices gt ge lt le greater
    greater_equal less less_equal sign sgn heaviside eq ne logical_not logical_and logical_or
    isnan isinf isfinite any all bitwise_and bitwise_or and or invert bool long int""".split()
)
_DUNDER_REFLECTED = frozenset("radd rsub rmul rmatmul rtruediv rdiv rpow rfloordiv rmod".split())
_DUNDER_INPLACE = frozenset("iadd isub imul imatmul itruediv idiv ipow ifloordiv imod".split())

_NAME_CACHE: dict[Any, tuple[str, bool, bool]] = {}


def _op_name(func: Callable) -> tuple[str, bool, bool]:
    """Return (base name, in place, reflected) of a torch function or tensor method."""
    try:
        return _NAME_CACHE[func]
    except (KeyError, TypeError):
        pass
    name = getattr(func, "__name__", None) or type(func).__name__
    inplace = reflected = False
    if name.startswith("__") and name.endswith("__") and name != "__get__":
        name = name[2:-2]
        if name in _DUNDER_REFLECTED:
            name, reflected = name[1:], True
        elif name in _DUNDER_INPLACE:
            name, inplace = name[1:], True
    elif name.endswith("_") and not name.startswith("_"):
        name, inplace = name[:-1], True
    if name.startswith("_") and name != "__get__":
        name = name.lstrip("_")  # F._max_pool2d and friends
    out = (name, inplace, reflected)
    try:
        _NAME_CACHE[func] = out
    except TypeError:
        pass
    return out


def _tangent(x: Any) -> torch.Tensor | None:
    if isinstance(x, torch.Tensor):
        return fwAD.unpack_dual(x).tangent
    return None


def _n_dual(items) -> int:
    leaves, _ = tree_flatten(items)
    return sum(1 for a in leaves if isinstance(a, torch.Tensor) and fwAD.unpack_dual(a).tangent is not None)


def _bind(args: tuple, kwargs: dict, names: tuple[str, ...], defaults: dict[str, Any]) -> dict[str, Any]:
    values = dict(defaults)
    values.update(zip(names, args))
    values.update(kwargs)
    return values


def _ntuple(v: Any, n: int) -> tuple[int, ...]:
    if isinstance(v, torch.Size):
        v = tuple(v)
    if isinstance(v, (tuple, list)):
        if len(v) == 1:
            return (int(v[0]),) * n
        return tuple(int(a) for a in v)
    return (int(v),) * n


class Switches:
    """Per-row summary of the switching functions of one forward pass.

    Attributes (numpy, shape (n_rows,))
    -----------------------------------
    forward, backward : distance in t from the evaluation point to the nearest
        region boundary ahead and behind (inf: none).
    ambiguous : a boundary lies within ``amb_tol`` of the evaluation point.
    """

    def __init__(self, forward, backward, ambiguous):
        self.forward = forward
        self.backward = backward
        self.ambiguous = ambiguous


class PLTracer(TorchFunctionMode):
    """Torch function mode that traces piecewise-linear ops on dual tensors.

    Parameters
    ----------
    n_rows : int
        Batch size of the forward pass (segments evaluated at once).
    rtol_tangent : float
        Switching functions whose derivative is below this fraction of the
        largest one of the same op (per row) are treated as constant.
    """

    def __init__(self, n_rows: int, rtol_tangent: float = 1e-13):
        super().__init__()
        self.n_rows = n_rows
        self.rtol_tangent = rtol_tangent
        self.pl_ops: dict[str, int] = {}
        self.unknown_ops: set[str] = set()
        self.module_stack: list[str] = []
        self.reset(n_rows, torch.device("cpu"))

    # ------------------------------------------------------------------ hooks
    def module_hooks(self, model: torch.nn.Module) -> list:
        """Register hooks that keep the name of the running submodule (for messages)."""
        handles = []
        for name, module in model.named_modules():
            label = f"'{name}' ({type(module).__name__})" if name else f"{type(module).__name__} (the model itself)"

            def pre(mod, inputs, label=label):
                self.module_stack.append(label)

            def post(mod, inputs, output):
                if self.module_stack:
                    self.module_stack.pop()

            handles.append(module.register_forward_pre_hook(pre))
            handles.append(module.register_forward_hook(post))
        return handles

    def where(self) -> str | None:
        return self.module_stack[-1] if self.module_stack else None

    # ------------------------------------------------------------- messages
    def _fail(self, op: str, why: str, fix: str = _GRID_HINT) -> None:
        where = self.where()
        place = f" in module {where}" if where else ""
        raise NotPiecewiseLinearError(
            f"exact_smp needs a piecewise-linear model, but the forward pass calls '{op}'{place} on a "
            f"tensor that depends on the input: {why}. {fix}",
            op=op,
            module=where,
        )

    # --------------------------------------------------------- bookkeeping
    def unpack(self, x: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Primal and tangent of a tensor (zero tangent for constants)."""
        if not isinstance(x, torch.Tensor):
            x = torch.as_tensor(x, dtype=torch.float64)
        primal, tangent = fwAD.unpack_dual(x)
        if tangent is None:
            tangent = torch.zeros_like(primal)
        return primal, tangent

    @staticmethod
    def finish(x: torch.Tensor, out_p: torch.Tensor, out_d: torch.Tensor, inplace: bool) -> torch.Tensor:
        if inplace and isinstance(x, torch.Tensor):
            primal, tangent = fwAD.unpack_dual(x)
            if tangent is not None and tangent.shape == out_d.shape:
                try:
                    primal.copy_(out_p)
                    tangent.copy_(out_d)
                    return x
                except RuntimeError:  # e.g. an expanded tangent: fall back to a new tensor
                    pass
        return fwAD.make_dual(out_p, out_d.expand_as(out_p).contiguous())

    def reset(self, n_rows: int, device: torch.device) -> None:
        """Prepare for a forward pass over ``n_rows`` segments."""
        self.n_rows = n_rows
        self.module_stack = []
        self.pl_ops = {}
        # Largest -1/s over switches ahead (s > 0) and 1/s behind, per row: the nearest switches.
        self._q_fwd = torch.zeros(n_rows, dtype=torch.float64, device=device)
        self._q_back = torch.zeros(n_rows, dtype=torch.float64, device=device)

    def add_switch(self, op: str, u: torch.Tensor, du: torch.Tensor) -> None:
        """Register switching functions ``u(t + s) = u + s du`` (any shape, rows first).

        Each switches at ``s = -u / du``; only the nearest one ahead and behind
        the evaluation point matter, kept as ``q = du / u = -1 / s``.
        """
        u, du = torch.broadcast_tensors(u, du)
        if u.dim() == 0 or u.shape[0] != self.n_rows:
            if self.n_rows == 1:
                u, du = u.reshape(1, -1), du.reshape(1, -1)
            else:
                where = self.where()
                raise ExactSMPError(
                    f"'{op}'{f' in module {where}' if where else ''} acts on a tensor of shape {tuple(u.shape)} "
                    f"whose first dimension is not the batch of {self.n_rows} inputs evaluated together (one or two per "
                    "segment); exact_smp needs every input-dependent tensor to keep the batch first. "
                    "Pass batch_size=1 to evaluate one segment at a time."
                )
        u = u.reshape(self.n_rows, -1)
        du = du.reshape(self.n_rows, -1)
        self.pl_ops[op] = self.pl_ops.get(op, 0) + 1
        if u.shape[1] == 0:
            return
        mag = du.abs()
        floor = mag.amax(dim=1, keepdim=True).mul_(self.rtol_tangent)
        q = du / u
        # Constant switching functions (tangent zero up to round-off; 0/0 included) never switch.
        q.masked_fill_(mag <= floor, 0.0)
        low, high = torch.aminmax(q, dim=1)
        torch.maximum(self._q_fwd, -low, out=self._q_fwd)
        torch.maximum(self._q_back, high, out=self._q_back)

    def switches(self, amb_tol: float) -> Switches:
        """Distances to the nearest switches of the forward pass just run, per row."""
        with torch.no_grad():
            q_fwd = self._q_fwd.to(device="cpu").numpy()
            q_back = self._q_back.to(device="cpu").numpy()
        with np.errstate(divide="ignore"):
            fwd = np.where(q_fwd > 0, 1.0 / q_fwd, np.inf)
            back = np.where(q_back > 0, 1.0 / q_back, np.inf)
        return Switches(fwd, back, (fwd <= amb_tol) | (back <= amb_tol))

    # --------------------------------------------------------------- the mode
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name, inplace, reflected = _op_name(func)
        if name in _METADATA:
            return func(*args, **kwargs)
        n_dual = _n_dual((args, kwargs))
        if n_dual == 0:
            return func(*args, **kwargs)
        handler = _HANDLERS.get(name)
        if handler is not None:
            return handler(self, func, name, args, kwargs, inplace)
        self._check_nonlinear(name, args, kwargs, n_dual, reflected)
        if name not in _AFFINE:
            self.unknown_ops.add(name)
        return func(*args, **kwargs)

    def _check_nonlinear(self, name, args, kwargs, n_dual, reflected) -> None:
        if name in _SMOOTH:
            self._fail(name, _NOT_PL_REASON.get(name, "it is smooth and nonlinear, so its output has no exact kinks to enumerate"))
        if name in _DISCONTINUOUS:
            self._fail(name, _JUMP_REASON.get(name, "its output jumps, so the model's output is not continuous along the path"))
        if name in _UNSUPPORTED_PL:
            self._fail(
                name,
                "exact_smp does not track where it switches (only ReLU-type activations, clamp, abs, "
                "max/min, max pooling and comparisons are tracked)",
            )
        if name in _PRODUCT and n_dual >= 2:
            self._fail(name, "it multiplies two input-dependent tensors, which is not piecewise linear")
        if name in _ADD_PRODUCT and _n_dual((args[1:], kwargs)) >= 2:
            self._fail(name, "it multiplies two input-dependent tensors, which is not piecewise linear")
        if name in _DIVISION:
            divisor = args[0] if reflected else (args[1] if len(args) > 1 else kwargs.get("other"))
            if _tangent(divisor) is not None:
                self._fail(name, "it divides by an input-dependent tensor, which is not piecewise linear")
        if name in _POWER:
            base = args[1] if reflected else args[0]
            exponent = args[0] if reflected else (args[1] if len(args) > 1 else kwargs.get("exponent"))
            if _tangent(exponent) is not None or not (
                isinstance(exponent, (int, float)) and exponent in (0, 1)
            ):
                if _tangent(base) is not None or _tangent(exponent) is not None:
                    self._fail(name, f"a power with exponent {exponent!r} is not piecewise linear")
        if name == "instance_norm":
            v = _bind(args, kwargs, ("input", "running_mean", "running_var", "weight", "bias", "use_input_stats"), {"use_input_stats": True})
            if v["use_input_stats"]:
                self._fail(name, "it normalises by input statistics, which is not piecewise linear")
        if name in _DROPOUT:
            v = _bind(args, kwargs, ("input", "p", "training"), {"p": 0.5, "training": True})
            if v["training"] and v["p"] > 0:
                self._fail(
                    name,
                    "it is called with training=True and drops units at random",
                    "Pass training=self.training to F.dropout in the model's forward (exact_smp runs it in eval mode).",
                )


# ----------------------------------------------------------------------------
# handlers of piecewise-linear ops: (tracer, func, name, args, kwargs, inplace)
# ----------------------------------------------------------------------------


def _h_relu(tr: PLTracer, func, name, args, kwargs, inplace):
    v = _bind(args, kwargs, ("input", "inplace"), {"inplace": False})
    x = v["input"]
    p, d = tr.unpack(x)
    tr.add_switch("relu", p, d)
    on = p > 0
    return tr.finish(x, torch.relu(p), torch.where(on, d, torch.zeros_like(d)), inplace or bool(v["inplace"]))


def _leaky(tr, x, slope, op, inplace):
    p, d = tr.unpack(x)
    tr.add_switch(op, p, d)
    on = p > 0
    return tr.finish(x, torch.where(on, p, slope * p), torch.where(on, d, slope * d), inplace)


def _h_leaky_relu(tr, func, name, args, kwargs, inplace):
    v = _bind(args, kwargs, ("input", "negative_slope", "inplace"), {"negative_slope": 0.01, "inplace": False})
    return _leaky(tr, v["input"], float(v["negative_slope"]), "leaky_relu", inplace or bool(v["inplace"]))


def _h_rrelu(tr, func, name, args, kwargs, inplace):
    v = _bind(args, kwargs, ("input", "lower", "upper", "training", "inplace"),
              {"lower": 1.0 / 8, "upper": 1.0 / 3, "training": False, "inplace": False})
    if v["training"]:
        tr._fail("rrelu", "it is called with training=True and draws random slopes",
                 "Call it with training=self.training (exact_smp runs the model in eval mode).")
    return _leaky(tr, v["input"], (float(v["lower"]) + float(v["upper"])) / 2, "rrelu", inplace or bool(v["inplace"]))


def _h_prelu(tr, func, name, args, kwargs, inplace):
    v = _bind(args, kwargs, ("input", "weight"), {})
    x, w = v["input"], v["weight"]
    if _tangent(w) is not None:
        tr._fail("prelu", "its slope depends on the input, which is not piecewise linear")
    p, d = tr.unpack(x)
    tr.add_switch("prelu", p, d)
    alpha = -torch.prelu(-torch.ones_like(p), w)
    on = p > 0
    return tr.finish(x, torch.prelu(p, w), torch.where(on, d, alpha * d), inplace)


def _clamp_scalar(tr, x, lo, hi, op, inplace, scale=1.0, shift=0.0):
    """y = clamp(scale * x + shift, lo, hi) with constant bounds (numbers, non-dual tensors or None)."""
    p, d = tr.unpack(x)
    z = p * scale + shift if (scale != 1.0 or shift != 0.0) else p
    dz = d * scale if scale != 1.0 else d
    inside = torch.ones_like(z, dtype=torch.bool)
    if lo is not None:
        lo_t = torch.as_tensor(lo, dtype=z.dtype, device=z.device)
        tr.add_switch(op, z - lo_t, dz)
        inside = inside & (z > lo_t)
    if hi is not None:
        hi_t = torch.as_tensor(hi, dtype=z.dtype, device=z.device)
        tr.add_switch(op, z - hi_t, dz)
        inside = inside & (z < hi_t)
    out_p = torch.clamp(z, lo, hi) if not (isinstance(lo, torch.Tensor) or isinstance(hi, torch.Tensor)) else _clamp_t(z, lo, hi)
    out_d = torch.where(inside, dz, torch.zeros_like(dz))
    return tr.finish(x, out_p, out_d, inplace)


def _clamp_t(z, lo, hi):
    if lo is not None:
        z = torch.maximum(z, torch.as_tensor(lo, dtype=z.dtype, device=z.device))
    if hi is not None:
        z = torch.minimum(z, torch.as_tensor(hi, dtype=z.dtype, device=z.device))
    return z


def _h_hardtanh(tr, func, name, args, kwargs, inplace):
    v = _bind(args, kwargs, ("input", "min_val", "max_val", "inplace"), {"min_val": -1.0, "max_val": 1.0, "inplace": False})
    return _clamp_scalar(tr, v["input"], float(v["min_val"]), float(v["max_val"]), "hardtanh", inplace or bool(v["inplace"]))


def _h_relu6(tr, func, name, args, kwargs, inplace):
    v = _bind(args, kwargs, ("input", "inplace"), {"inplace": False})
    return _clamp_scalar(tr, v["input"], 0.0, 6.0, "relu6", inplace or bool(v["inplace"]))


def _h_hardsigmoid(tr, func, name, args, kwargs, inplace):
    v = _bind(args, kwargs, ("input", "inplace"), {"inplace": False})
    return _clamp_scalar(tr, v["input"], 0.0, 1.0, "hardsigmoid", inplace or bool(v["inplace"]), scale=1.0 / 6.0, shift=0.5)


def _h_threshold(tr, func, name, args, kwargs, inplace):
    v = _bind(args, kwargs, ("input", "threshold", "value", "inplace"), {"inplace": False})
    th, value = float(v["threshold"]), float(v["value"])
    if th != value:
        tr._fail("threshold", f"threshold={th} with value={value} makes the output jump at the threshold",
                 "Use value equal to threshold (a continuous piecewise-linear map), or the grid estimator smpstats.measure.")
    return _clamp_scalar(tr, v["input"], th, None, "threshold", inplace or bool(v["inplace"]))


def _h_softshrink(tr, func, name, args, kwargs, inplace):
    v = _bind(args, kwargs, ("input", "lambd"), {"lambd": 0.5})
    x, lam = v["input"], float(v["lambd"])
    p, d = tr.unpack(x)
    tr.add_switch("softshrink", p - lam, d)
    tr.add_switch("softshrink", p + lam, d)
    active = p.abs() > lam
    return tr.finish(x, F.softshrink(p, lam), torch.where(active, d, torch.zeros_like(d)), inplace)


def _h_clamp(tr, func, name, args, kwargs, inplace):
    if name == "clamp_min":
        v = _bind(args, kwargs, ("input", "min"), {})
        v["max"] = None
    elif name == "clamp_max":
        v = _bind(args, kwargs, ("input", "max"), {})
        v["min"] = None
    else:
        v = _bind(args, kwargs, ("input", "min", "max"), {"min": None, "max": None})
    x, lo, hi = v["input"], v["min"], v["max"]
    if _tangent(lo) is not None or _tangent(hi) is not None:
        out = x
        if lo is not None:
            out = _binary_extremum(tr, out, lo, "max", name)
        if hi is not None:
            out = _binary_extremum(tr, out, hi, "min", name)
        if inplace:
            return tr.finish(x, *tr.unpack(out), True)
        return out
    return _clamp_scalar(tr, x, lo, hi, name, inplace)


def _h_abs(tr, func, name, args, kwargs, inplace):
    x = args[0] if args else kwargs["input"]
    p, d = tr.unpack(x)
    tr.add_switch("abs", p, d)
    return tr.finish(x, p.abs(), torch.where(p >= 0, d, -d), inplace)


def _binary_extremum(tr, a, b, kind, op):
    pa, da = tr.unpack(a)
    pb, db = tr.unpack(b)
    tr.add_switch(op, pa - pb, da - db)
    take_a = pa >= pb if kind == "max" else pa <= pb
    out_p = torch.where(take_a, pa, pb)
    out_d = torch.where(take_a, da, db)
    return fwAD.make_dual(out_p, out_d.expand_as(out_p).contiguous())


def _h_maximum(tr, func, name, args, kwargs, inplace):
    v = _bind(args, kwargs, ("input", "other"), {})
    kind = "max" if name in ("maximum", "fmax") else "min"
    out = _binary_extremum(tr, v["input"], v["other"], kind, name)
    if inplace:
        return tr.finish(v["input"], *tr.unpack(out), True)
    return out


def _h_max(tr, func, name, args, kwargs, inplace):
    """max/min (full, along dim, or elementwise), amax/amin, argmax/argmin."""
    kind = "max" if name in ("max", "amax", "argmax") else "min"
    if name in ("max", "min"):
        other = args[1] if len(args) > 1 else kwargs.get("other", kwargs.get("dim"))
        if isinstance(other, torch.Tensor):
            return _binary_extremum(tr, args[0], other, kind, name)
        v = _bind(args, kwargs, ("input", "dim", "keepdim"), {"dim": None, "keepdim": False})
        dims = None if v["dim"] is None else (v["dim"],)
        with_indices = v["dim"] is not None
    elif name in ("amax", "amin"):
        v = _bind(args, kwargs, ("input", "dim", "keepdim"), {"dim": (), "keepdim": False})
        dims = v["dim"]
        dims = None if dims is None or (isinstance(dims, (tuple, list)) and len(dims) == 0) else (
            tuple(dims) if isinstance(dims, (tuple, list)) else (dims,))
        with_indices = False
    else:  # argmax / argmin
        v = _bind(args, kwargs, ("input", "dim", "keepdim"), {"dim": None, "keepdim": False})
        dims = None if v["dim"] is None else (v["dim"],)
        with_indices = False
    x, keepdim = v["input"], bool(v["keepdim"])
    p, d = tr.unpack(x)
    nd = p.dim()
    if dims is None:
        dims = tuple(range(nd))
    dims = tuple(sorted(dd % nd for dd in dims)) if nd else ()
    if 0 in dims and tr.n_rows > 1 and nd > 0:
        tr_where = tr.where()
        raise ExactSMPError(
            f"'{name}'{f' in module {tr_where}' if tr_where else ''} reduces over the first (batch) dimension, "
            f"mixing the {tr.n_rows} segments evaluated together. Pass batch_size=1 to evaluate one segment at a time."
        )
    keep_shape = [1 if i in dims else s for i, s in enumerate(p.shape)]
    wp = p.movedim(dims, tuple(range(nd - len(dims), nd))).flatten(nd - len(dims)) if dims else p.unsqueeze(-1)
    wd = d.movedim(dims, tuple(range(nd - len(dims), nd))).flatten(nd - len(dims)) if dims else d.unsqueeze(-1)
    idx = wp.argmax(-1, keepdim=True) if kind == "max" else wp.argmin(-1, keepdim=True)
    val_p = wp.gather(-1, idx)
    val_d = wd.gather(-1, idx)
    u = val_p - wp if kind == "max" else wp - val_p
    du = val_d - wd if kind == "max" else wd - val_d
    tr.add_switch(name, u, du)
    out_p = val_p.squeeze(-1).reshape(keep_shape)
    out_d = val_d.squeeze(-1).reshape(keep_shape)
    if name in ("argmax", "argmin"):
        return func(p, *args[1:], **{k: val for k, val in kwargs.items() if k != "input"})
    if not keepdim:
        out_p = out_p.reshape([s for i, s in enumerate(p.shape) if i not in dims])
        out_d = out_d.reshape(out_p.shape)
    out = fwAD.make_dual(out_p.contiguous(), out_d.contiguous())
    if with_indices:
        _, indices = (torch.max if kind == "max" else torch.min)(p, v["dim"], keepdim)
        return torch.return_types.max((out, indices)) if kind == "max" else torch.return_types.min((out, indices))
    return out


def _pool_windows(p: torch.Tensor, index: list[torch.Tensor], valid: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Gather pooling windows of the last len(index) dims: (..., O1..On, K) and a validity mask (O1..On, K)."""
    nd = len(index)
    views, masks = [], []
    for j, (ix, ok) in enumerate(zip(index, valid)):
        shape = [1] * (2 * nd)
        shape[j], shape[nd + j] = ix.shape
        views.append(ix.reshape(shape))
        masks.append(ok.reshape(shape))
    windows = p[(Ellipsis, *views)]
    mask = masks[0]
    for m in masks[1:]:
        mask = mask & m
    out_dims = windows.shape[: windows.dim() - nd]
    return windows.reshape(*out_dims, -1), mask.reshape(*mask.shape[:nd], -1)


def _adaptive_index(length, out, device):
    i = torch.arange(out, device=device)
    start = torch.div(i * length, out, rounding_mode="floor")
    end = torch.div((i + 1) * length + out - 1, out, rounding_mode="floor")
    k = int((end - start).max())
    ix = start[:, None] + torch.arange(k, device=device)[None, :]
    return ix.clamp(max=length - 1), ix < end[:, None]


def _unfold_windows(x, nd, k, s, pad, dil, out_sizes, fill):
    """Max-pool windows of the last ``nd`` dims as a view: shape (..., O1..Ond, K1..Knd).

    Padding and the overhang of ``ceil_mode`` are filled with ``fill`` (-inf for
    values: they never win; 0 for tangents).
    """
    pads = []
    for j in reversed(range(nd)):
        length = x.shape[x.dim() - nd + j]
        span = dil[j] * (k[j] - 1) + 1
        need = (out_sizes[j] - 1) * s[j] + span
        pads += [pad[j], max(0, need - pad[j] - length)]
    if any(pads):
        x = F.pad(x, pads, value=fill)
    base = x.dim() - nd
    for j in range(nd):
        span = dil[j] * (k[j] - 1) + 1
        x = x.unfold(base + j, span, s[j])
        if dil[j] > 1:
            x = x[..., :: dil[j]]
        x = x.narrow(base + j, 0, out_sizes[j])
    return x


def _max_pool_switches(tr, name, nd, out_p, out_d, wp, wd):
    """Switches of max pooling: each window entry against the window's maximum."""
    shape = tuple(out_p.shape) + (1,) * nd
    # Contiguous results (the windows are strided views): the per-row reduction needs no copy.
    u = torch.sub(out_p.reshape(shape), wp, out=torch.empty(wp.shape, dtype=wp.dtype, device=wp.device))
    du = torch.sub(out_d.reshape(shape), wd, out=torch.empty(wd.shape, dtype=wd.dtype, device=wd.device))
    tr.add_switch(name, u, du)


def _pool_tangent(d, indices, out_p, nd):
    return d.flatten(-nd).gather(-1, indices.flatten(-nd)).reshape(out_p.shape)


def _h_max_pool(tr, func, name, args, kwargs, inplace):
    nd = int(name[len("max_pool")])
    v = _bind(args, kwargs, ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"),
              {"stride": None, "padding": 0, "dilation": 1, "ceil_mode": False, "return_indices": False})
    x = v["input"]
    p, d = tr.unpack(x)
    k = _ntuple(v["kernel_size"], nd)
    stride = v["stride"]
    s = k if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0) else _ntuple(stride, nd)
    pad, dil = _ntuple(v["padding"], nd), _ntuple(v["dilation"], nd)
    pool = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[nd]
    out_p, indices = pool(p, k, s, pad, dil, bool(v["ceil_mode"]), True)
    out_d = _pool_tangent(d, indices, out_p, nd)
    out_sizes = tuple(out_p.shape[-nd:])
    wp = _unfold_windows(p, nd, k, s, pad, dil, out_sizes, -math.inf)
    wd = _unfold_windows(d, nd, k, s, pad, dil, out_sizes, 0.0)
    _max_pool_switches(tr, f"max_pool{nd}d", nd, out_p, out_d, wp, wd)
    out = fwAD.make_dual(out_p, out_d)
    return (out, indices) if (bool(v["return_indices"]) or name.endswith("with_indices")) else out


def _h_adaptive_max_pool(tr, func, name, args, kwargs, inplace):
    nd = int(name[len("adaptive_max_pool")])
    v = _bind(args, kwargs, ("input", "output_size", "return_indices"), {"return_indices": False})
    x = v["input"]
    p, _ = tr.unpack(x)
    pool = {1: F.adaptive_max_pool1d, 2: F.adaptive_max_pool2d, 3: F.adaptive_max_pool3d}[nd]
    out_p, indices = pool(p, v["output_size"], True)
    p, d = tr.unpack(x)
    out_d = _pool_tangent(d, indices, out_p, nd)
    spatial_in, spatial_out = p.shape[-nd:], out_p.shape[-nd:]
    index, valid = zip(*(_adaptive_index(spatial_in[j], spatial_out[j], p.device) for j in range(nd)))
    wp, mask = _pool_windows(p, list(index), list(valid))
    wd, _ = _pool_windows(d, list(index), list(valid))
    wp = wp.masked_fill(~mask, -math.inf)
    wd = wd.masked_fill(~mask, 0.0)
    tr.add_switch(f"adaptive_max_pool{nd}d", out_p.unsqueeze(-1) - wp, out_d.unsqueeze(-1) - wd)
    out = fwAD.make_dual(out_p, out_d)
    return (out, indices) if (bool(v["return_indices"]) or name.endswith("with_indices")) else out


def _h_compare(tr, func, name, args, kwargs, inplace):
    v = _bind(args, kwargs, ("input", "other"), {})
    pa, da = tr.unpack(v["input"])
    pb, db = tr.unpack(v["other"])
    tr.add_switch(name, pa - pb, da - db)
    return func(pa, pb)


def _h_step(tr, func, name, args, kwargs, inplace):
    x = args[0] if args else kwargs["input"]
    p, d = tr.unpack(x)
    tr.add_switch(name, p, d)
    rest = [fwAD.unpack_dual(a).primal if isinstance(a, torch.Tensor) else a for a in args[1:]]
    return func(p, *rest, **{k: val for k, val in kwargs.items() if k != "input"})


def _h_weighted(tr, func, name, args, kwargs, inplace):
    """conv*, conv_transpose*, linear: primal with bias, tangent without (faster than forward AD's jvp)."""
    v = _bind(args, kwargs, ("input", "weight", "bias"), {"bias": None})
    if _tangent(v["weight"]) is not None or _tangent(v["bias"]) is not None:
        if _tangent(v["input"]) is not None:
            tr._fail(name, "it multiplies two input-dependent tensors, which is not piecewise linear")
        return func(*args, **kwargs)
    rest_args = args[3:]
    rest_kwargs = {k: val for k, val in kwargs.items() if k not in ("input", "weight", "bias")}
    p, d = tr.unpack(v["input"])
    out_p = func(p, v["weight"], v["bias"], *rest_args, **rest_kwargs)
    out_d = func(d, v["weight"], None, *rest_args, **rest_kwargs)
    return fwAD.make_dual(out_p, out_d)


def _h_batch_norm(tr, func, name, args, kwargs, inplace):
    names = ("input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps")
    v = _bind(args, kwargs, names, {"weight": None, "bias": None, "training": False, "momentum": 0.1, "eps": 1e-5})
    if v["training"] or v["running_mean"] is None or v["running_var"] is None:
        tr._fail(
            name,
            "it normalises with the statistics of the batch (training mode, or track_running_stats=False), "
            "which is not piecewise linear and mixes the segments",
            "Use running statistics (module.eval() with track_running_stats=True), or the grid estimator "
            "smpstats.measure.",
        )
    if any(_tangent(v[k]) is not None for k in ("running_mean", "running_var", "weight", "bias")):
        tr._fail(name, "its statistics or affine parameters depend on the input, which is not piecewise linear")
    p, d = tr.unpack(v["input"])
    out_p = F.batch_norm(p, v["running_mean"], v["running_var"], v["weight"], v["bias"], False, 0.0, v["eps"])
    out_d = F.batch_norm(d, torch.zeros_like(v["running_mean"]), v["running_var"], v["weight"], None, False, 0.0, v["eps"])
    return fwAD.make_dual(out_p, out_d)


_HANDLERS: dict[str, Callable] = {
    "relu": _h_relu,
    "leaky_relu": _h_leaky_relu,
    "rrelu": _h_rrelu,
    "prelu": _h_prelu,
    "hardtanh": _h_hardtanh,
    "relu6": _h_relu6,
    "hardsigmoid": _h_hardsigmoid,
    "threshold": _h_threshold,
    "softshrink": _h_softshrink,
    "clamp": _h_clamp,
    "clip": _h_clamp,
    "clamp_min": _h_clamp,
    "clamp_max": _h_clamp,
    "abs": _h_abs,
    "absolute": _h_abs,
    "maximum": _h_maximum,
    "minimum": _h_maximum,
    "fmax": _h_maximum,
    "fmin": _h_maximum,
    "max": _h_max,
    "min": _h_max,
    "amax": _h_max,
    "amin": _h_max,
    "argmax": _h_max,
    "argmin": _h_max,
    "gt": _h_compare,
    "ge": _h_compare,
    "lt": _h_compare,
    "le": _h_compare,
    "greater": _h_compare,
    "greater_equal": _h_compare,
    "less": _h_compare,
    "less_equal": _h_compare,
    "sign": _h_step,
    "sgn": _h_step,
    "heaviside": _h_step,
    "linear": _h_weighted,
    "batch_norm": _h_batch_norm,
}
for _nd in (1, 2, 3):
    _HANDLERS[f"conv{_nd}d"] = _h_weighted
    _HANDLERS[f"conv_transpose{_nd}d"] = _h_weighted
    _HANDLERS[f"max_pool{_nd}d"] = _h_max_pool
    _HANDLERS[f"max_pool{_nd}d_with_indices"] = _h_max_pool
    _HANDLERS[f"adaptive_max_pool{_nd}d"] = _h_adaptive_max_pool
    _HANDLERS[f"adaptive_max_pool{_nd}d_with_indices"] = _h_adaptive_max_pool
