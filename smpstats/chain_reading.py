"""Chains read from torch modules with given weights, and the statistics of those weights (DESIGN §7).

:func:`read_chain` turns a torch module into a :class:`~smpstats.blocks.Chain`
of registered blocks: an ``nn.Sequential`` (nested ones flattened) or a
custom module whose ``forward`` is a plain chain. The module is traced with
``torch.fx``; the graph must be a straight line from the input to the output
in which every step is a registered torch module (``nn.Linear``,
``nn.Conv1d``, ``nn.ReLU``, ``nn.BatchNorm1d``, ...), a functional
activation or pooling (``F.relu``, ``torch.relu``, ``x.relu()``,
``F.max_pool1d``, ...) or a flatten (``torch.flatten(x, 1)``,
``x.flatten(1)``, ``x.view(x.size(0), -1)``, any reshape to
``(batch, features)``). Dropout and identities are skipped (eval mode).
Branching graphs (residual sums, concatenation), other operations and
modules that ``torch.fx`` cannot trace raise :class:`InputError` naming the
node or submodule.

:func:`given_weight_columns` summarises the weights of a chain's stages that
come from a module (given, e.g. trained, rather than drawn from an init
family) as scalar columns that the moment rules
(:func:`smpstats.mean_field.propagate_moments`) and the theory's carried SMP
(:func:`smpstats.theory_terms.theory_terms`) use in place of the init
family's expectations. Output unit ``j`` of an affine block is
``y_j = sum_i w_ji x_i + b_j`` (for a convolution, ``j`` is an output
channel and ``i`` runs over its ``C_in * k`` taps):

* ``sigma_w = sqrt(fan_in * mean(w**2))``: the RMS weight times
  ``sqrt(fan_in)`` (the init family's ``sigma_w`` of the same scale);
* ``w_l1 = mean_j sum_i |w_ji|``, ``w_sq = mean_j sum_i w_ji**2``;
* ``rowsum_mean = mean_j r_j``, ``rowsum_sq = mean_j r_j**2`` with row sums
  ``r_j = sum_i w_ji``; ``rowsum_bias = mean_j r_j b_j``;
* ``b_mean = mean_j b_j``, ``sigma_b = std_j b_j`` (population std).

A batch norm in eval mode is ``y_c = g_c x_c + s_c`` with gain
``g_c = gamma_c / sqrt(running_var_c + eps)`` and shift
``s_c = beta_c - g_c running_mean_c``: ``bn_gain_abs = mean_c |g_c|``,
``bn_gain_mean``, ``bn_gain_sq = mean_c g_c**2``, ``bn_shift_mean``,
``bn_shift_sq = mean_c s_c**2`` and ``bn_gain_shift = mean_c g_c s_c``.
"""

from __future__ import annotations

import copy
import math
import operator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

from .blocks import _MODULE_NAMES, Chain, build_chain
from .errors import InputError

__all__ = ["read_chain", "as_sequential", "given_weight_columns", "AFFINE_COLUMNS", "BATCHNORM_COLUMNS"]

#: Columns of :func:`given_weight_columns` for linear and conv stages.
AFFINE_COLUMNS = ("sigma_w", "sigma_b", "b_mean", "w_l1", "w_sq", "rowsum_mean", "rowsum_sq", "rowsum_bias")
#: Columns of :func:`given_weight_columns` for batch-norm stages.
BATCHNORM_COLUMNS = ("bn_gain_abs", "bn_gain_mean", "bn_gain_sq", "bn_shift_mean", "bn_shift_sq", "bn_gain_shift")

_LEAF_TYPES = tuple(cls for cls, _ in _MODULE_NAMES)
_SKIPPED_MODULES = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout)

#: Functions and tensor methods with a module equivalent: the module is built from the call's other arguments.
_FUNCTIONS: dict[Any, type] = {
    F.relu: nn.ReLU, torch.relu: nn.ReLU, F.leaky_relu: nn.LeakyReLU, F.gelu: nn.GELU, F.silu: nn.SiLU,
    F.softplus: nn.Softplus, torch.tanh: nn.Tanh, F.tanh: nn.Tanh,
    F.max_pool1d: nn.MaxPool1d, F.max_pool2d: nn.MaxPool2d, F.avg_pool1d: nn.AvgPool1d, F.avg_pool2d: nn.AvgPool2d,
}
_METHODS: dict[str, type] = {"relu": nn.ReLU, "tanh": nn.Tanh}
_RESHAPES = {torch.flatten, torch.reshape, "flatten", "view", "reshape"}
_IDENTITIES = {"contiguous", F.dropout}
#: Operations that compute the batch size or shape from a tensor (not steps of the chain).
_SHAPE_OPS = {"size", "dim", operator.getitem, getattr}

_SUPPORTED = ("registered torch modules (" + ", ".join(sorted({c.__name__ for c in _LEAF_TYPES})) +
              "), F.relu / torch.relu / x.relu(), F.leaky_relu, F.gelu, F.silu, F.softplus, torch.tanh, "
              "F.max_pool1d/2d, F.avg_pool1d/2d, flatten or view to (batch, features), dropout and identities")


class _Tracer(fx.Tracer):
    """fx tracer that keeps every registered block type as one step (subclasses of nn.Linear included)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, _LEAF_TYPES + _SKIPPED_MODULES) or super().is_leaf_module(m, qualname)


def _describe(node: fx.Node) -> str:
    target = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", repr(node.target))
    return f"node {node.name!r} ({node.op} {target})"


def _trace(module: nn.Module) -> fx.GraphModule:
    try:
        graph = _Tracer().trace(module)
    except Exception as exc:  # fx's own message says which construct it cannot trace
        raise InputError(
            f"read_chain cannot trace {type(module).__name__} with torch.fx: {exc}. It reads an nn.Sequential or a "
            "module whose forward is a plain chain without data-dependent control flow; write the model as an "
            "nn.Sequential of registered blocks instead."
        ) from exc
    return fx.GraphModule(module, graph)


class _ShapeRecorder(fx.Interpreter):
    """Runs the graph and keeps every node's output shape (None for values that are not tensors)."""

    def __init__(self, gm: fx.GraphModule):
        super().__init__(gm)
        self.shapes: dict[str, tuple[int, ...] | None] = {}
        self.failed_at: fx.Node | None = None

    def run_node(self, n: fx.Node) -> Any:
        self.failed_at = n
        value = super().run_node(n)
        self.shapes[n.name] = tuple(value.shape) if isinstance(value, torch.Tensor) else None
        return value


def _shapes(gm: fx.GraphModule, input_shape: tuple[int, ...]) -> dict[str, tuple[int, ...] | None]:
    """Every node's output shape for a batch of two zero inputs of ``input_shape`` (None: not a tensor)."""
    param = next(iter(gm.parameters()), None)
    x = torch.zeros((2, *input_shape), dtype=param.dtype if param is not None else torch.float32)
    recorder = _ShapeRecorder(gm)
    try:
        with torch.no_grad():
            recorder.run(x)
    except Exception as exc:  # torch's message (fx appends the graph to it: first line only)
        raise InputError(f"The module fails on inputs of shape {input_shape} at {_describe(recorder.failed_at)}: "
                         f"{str(exc).splitlines()[0]}") from exc
    return recorder.shapes


def _constant_args(node: fx.Node) -> tuple[tuple, dict]:
    """The call's arguments after the tensor; an error if any of them is computed from the graph."""
    args, kwargs = node.args[1:], dict(node.kwargs)
    if _has_node((args, kwargs)):
        raise InputError(f"read_chain cannot read {_describe(node)}: its parameters are computed in the forward; "
                         "only constant parameters can be read.")
    return args, kwargs


def _has_node(value: Any) -> bool:
    found = []
    fx.node.map_arg(value, lambda n: found.append(n) or n)
    return bool(found)


def _step(node: fx.Node, gm: fx.GraphModule, shapes: dict[str, Any]) -> nn.Module | None:
    """The module doing a straight-line node's work (None: the node changes nothing)."""
    if node.op == "call_module":
        sub = gm.get_submodule(node.target)
        if isinstance(sub, _SKIPPED_MODULES):
            return None
        if isinstance(sub, _LEAF_TYPES):
            return sub
        raise InputError(
            f"read_chain cannot read submodule {node.target!r} ({type(sub).__name__}): it is not a block smpstats "
            f"knows. Supported: {_SUPPORTED}."
        )
    fn = node.target
    if node.op in ("call_function", "call_method") and fn in _IDENTITIES:
        if fn is F.dropout and (node.kwargs.get("training", node.args[2] if len(node.args) > 2 else True)):
            raise InputError(f"read_chain cannot read {_describe(node)}: dropout with training=True is random.")
        return None
    if fn in _RESHAPES:
        shape_in, shape_out = shapes[node.args[0].name], shapes[node.name]
        if shape_in is not None and shape_out == (shape_in[0], int(np.prod(shape_in[1:], dtype=np.int64))):
            return nn.Flatten()
        raise InputError(
            f"read_chain cannot read {_describe(node)}: it reshapes {shape_in} to {shape_out} (batch of 2); only "
            "a flatten to (batch, features) is a block (e.g. torch.flatten(x, 1) or x.view(x.size(0), -1))."
        )
    cls = _FUNCTIONS.get(fn) if node.op == "call_function" else _METHODS.get(fn) if node.op == "call_method" else None
    if cls is None:
        raise InputError(f"read_chain cannot read {_describe(node)}: unsupported operation. Supported: {_SUPPORTED}.")
    args, kwargs = _constant_args(node)
    kwargs.pop("inplace", None)
    try:
        return cls(*args, **kwargs)
    except TypeError as exc:
        raise InputError(f"read_chain cannot read {_describe(node)}: {exc}") from exc


def as_sequential(module: nn.Module, input_shape: Any) -> nn.Sequential:
    """The steps of a straight-line module as an ``nn.Sequential`` of registered torch modules.

    Parameters
    ----------
    module : torch.nn.Module
        An ``nn.Sequential`` (nested ones flattened) or a module whose
        forward is a plain chain (see the module docstring). It is copied and
        put in eval mode; the returned modules are the copy's (weights kept).
    input_shape : tuple of int
        Shape of one input, without the batch dimension.

    Returns
    -------
    torch.nn.Sequential

    Raises
    ------
    InputError
        The module cannot be traced, its graph branches (residual sums,
        concatenation, a tensor used twice), or a node is not a supported
        operation; the message names the node or submodule.
    """
    if not isinstance(module, nn.Module):
        raise InputError(f"read_chain needs a torch.nn.Module; got {type(module).__name__}.")
    input_shape = tuple(int(s) for s in input_shape)
    gm = _trace(copy.deepcopy(module).eval())
    shapes = _shapes(gm, input_shape)
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise InputError(f"read_chain reads modules whose forward takes one tensor; {type(module).__name__}.forward "
                         f"takes {len(placeholders)} ({', '.join(n.name for n in placeholders)}).")
    current = placeholders[0]
    steps: list[nn.Module] = []
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            continue
        if node.op == "output":
            if node.args[0] is not current:
                raise InputError(f"read_chain reads modules that return the last tensor of a straight chain; "
                                 f"{type(module).__name__}.forward returns {node.args[0]!r}.")
            break
        if shapes[node.name] is None and node.op in ("call_method", "call_function") and node.target in _SHAPE_OPS:
            continue  # a batch size or shape, used by a reshape
        if node.op == "get_attr":
            raise InputError(f"read_chain cannot read {_describe(node)}: the forward uses the parameter or buffer "
                             f"{node.target!r} directly; put it in a registered module (nn.Linear, ...) instead.")
        data = [a for a in node.all_input_nodes if shapes[a.name] is not None]
        if data != [current]:
            names = ", ".join(repr(a.name) for a in data) or "no tensor"
            raise InputError(
                f"read_chain cannot read {_describe(node)}: it takes {names} where a straight chain passes only "
                f"{current.name!r} on. Branching graphs (residual sums, concatenation, a tensor used twice) are "
                "not chains of blocks."
            )
        step = _step(node, gm, shapes)
        if step is not None:
            steps.append(step)
        current = node
    if not steps:
        raise InputError(f"{type(module).__name__} has no blocks to read (its forward returns its input).")
    return nn.Sequential(*steps)


def read_chain(module: nn.Module, input_shape: Any) -> Chain:
    """Read a torch module as a chain of registered blocks with its own (given) weights.

    Parameters
    ----------
    module : torch.nn.Module
        An ``nn.Sequential`` or a module whose forward is a plain chain (see
        :func:`as_sequential`).
    input_shape : tuple of int
        Shape of one input, without the batch dimension.

    Returns
    -------
    Chain
        Float64 stages in eval mode, ``from_module=True``, weights kept.

    Raises
    ------
    InputError
        What cannot be read (see :func:`as_sequential`), or a module whose
        settings the block registry cannot express (e.g. grouped convolutions).
    """
    from .blocks import _check_input_shape

    input_shape = _check_input_shape(input_shape)
    chain = build_chain(as_sequential(module, input_shape), input_shape)
    for s in chain.stages:
        if s.spec is None:
            raise InputError(
                f"read_chain cannot read stage {s.index} ({type(s.module).__name__}: {s.module!r}): its settings "
                "have no block spec (e.g. grouped or 'same'-padded convolutions, dilated max pooling, flatten of "
                "other axes)."
            )
    return chain


def _affine_columns(module: nn.Module) -> dict[str, float]:
    w = module.weight.detach().to(torch.float64).cpu().numpy()
    rows = w.reshape(w.shape[0], -1)  # output units (channels) x their fan_in taps
    b = module.bias.detach().to(torch.float64).cpu().numpy() if module.bias is not None else np.zeros(len(rows))
    rowsum = rows.sum(axis=1)
    return {
        "sigma_w": math.sqrt(rows.shape[1] * float(np.mean(rows**2))),
        "sigma_b": float(b.std()),
        "b_mean": float(b.mean()),
        "w_l1": float(np.abs(rows).sum(axis=1).mean()),
        "w_sq": float((rows**2).sum(axis=1).mean()),
        "rowsum_mean": float(rowsum.mean()),
        "rowsum_sq": float(np.mean(rowsum**2)),
        "rowsum_bias": float(np.mean(rowsum * b)),
    }


def _batchnorm_columns(module: nn.modules.batchnorm._BatchNorm, label: str) -> dict[str, float]:
    if module.running_mean is None or module.running_var is None:
        raise InputError(f"Stage {label}: a batch norm without running statistics (track_running_stats=False) "
                         "normalises with the statistics of each batch; only eval-mode running statistics are read.")
    mean = module.running_mean.detach().to(torch.float64).cpu().numpy()
    var = module.running_var.detach().to(torch.float64).cpu().numpy()
    gamma = module.weight.detach().to(torch.float64).cpu().numpy() if module.affine else np.ones_like(mean)
    beta = module.bias.detach().to(torch.float64).cpu().numpy() if module.affine else np.zeros_like(mean)
    gain = gamma / np.sqrt(var + module.eps)
    shift = beta - gain * mean
    return {
        "bn_gain_abs": float(np.abs(gain).mean()),
        "bn_gain_mean": float(gain.mean()),
        "bn_gain_sq": float(np.mean(gain**2)),
        "bn_shift_mean": float(shift.mean()),
        "bn_shift_sq": float(np.mean(shift**2)),
        "bn_gain_shift": float(np.mean(gain * shift)),
    }


def given_weight_columns(chain: Chain) -> list[dict[str, float]]:
    """Statistics of the given weights of each stage, to merge into its simulate columns.

    Parameters
    ----------
    chain : Chain
        A chain whose stages came from a module (``from_module``); stages
        whose weights are drawn from an init family get no columns.

    Returns
    -------
    list of dict
        One dict per stage: :data:`AFFINE_COLUMNS` for linear and conv
        stages, :data:`BATCHNORM_COLUMNS` for batch norms, empty otherwise
        (definitions in the module docstring; weights in the module's units).
    """
    out = []
    for s in chain.stages:
        cols: dict[str, float] = {}
        if s.from_module and s.name in ("linear", "conv1d", "conv2d"):
            cols = _affine_columns(s.module)
        elif s.from_module and s.name == "batchnorm":
            cols = _batchnorm_columns(s.module, f"{s.index} ({s.label})")
        out.append(cols)
    return out
