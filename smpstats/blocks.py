"""Building blocks: the spec grammar, the block registry and chains of blocks.

A *spec* names a chain of blocks in one line of text::

    conv1d(out_channels=16, kernel_size=5) | relu | maxpool1d(kernel_size=2)

Each block is ``name`` or ``name(key=value, ...)``; values are ints, floats,
``true``/``false``, ``none``, identifiers (``kaiming``) or tuples such as
``(3, 3)``. Whitespace is free. :func:`parse_spec` turns the text into
:class:`BlockSpec` objects (validated against the registry), and
:func:`format_spec` / ``str(BlockSpec)`` give the canonical text back.

The registry (:data:`BLOCKS`) holds one :class:`BlockType` per block name,
with one table of allowed parameters (type, constraint, default, help). Every
error message about a parameter is made from that table.

:func:`build_chain` builds float64 torch modules for a spec on a given input
shape (no batch dimension), infers channels and features from the shapes,
checks every shape at build time, and draws the weights from a seeded
``torch.Generator``:

* ``kaiming``: He normal, weight std ``sqrt(2 / fan_in)``, bias 0;
* ``xavier``: Glorot normal, weight std ``sqrt(2 / (fan_in + fan_out))``, bias 0;
* ``normal``: weight std ``sigma_w / sqrt(fan_in)``, bias std ``sigma_b``.

Input shapes (no batch dimension): ``linear`` takes ``(features,)`` and
flattens anything else; ``conv1d`` and the 1-D pools take ``(channels,
length)``; ``conv2d`` and the 2-D pools ``(channels, height, width)``;
elementwise blocks take any shape; ``batchnorm`` normalises the first axis.

Modules built here give the same result for a sample whatever the batch it
is evaluated in (bit for bit): linear layers multiply each input row on
its own and conv layers each sample's unfolded patches, and the smooth
activations are compositions of elementwise torch functions that have no
separate scalar code path. :func:`smpstats.simulation.simulate` relies on
this for results that do not depend on ``chunk_size``.
"""

from __future__ import annotations

import copy
import difflib
import math
import numbers
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import BlockParameterError, InputError, SpecError, UnknownBlockError

__all__ = [
    "BlockParam",
    "BlockType",
    "BlockSpec",
    "BLOCKS",
    "INIT_FAMILIES",
    "Stage",
    "Chain",
    "parse_spec",
    "format_spec",
    "as_block_specs",
    "build_chain",
    "block_help",
]

#: Weight-init families accepted by ``init=``.
INIT_FAMILIES = ("kaiming", "xavier", "normal")

_REQUIRED = object()


# ---------------------------------------------------------------------------
# values: formatting and parameter tables
# ---------------------------------------------------------------------------


def _format_value(value: Any) -> str:
    """Spec text of one parameter value (inverse of the parser)."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        return repr(float(value))
    if isinstance(value, str):
        return value
    if isinstance(value, tuple):
        return "(" + ", ".join(_format_value(v) for v in value) + ")"
    return repr(value)


def _value_text(value: Any) -> str:
    """A value as quoted in an error message ("Got 0.", "Got 'abc'.")."""
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, (bool, numbers.Number, tuple)) or value is None:
        return _format_value(value)
    return repr(value)


@dataclass(frozen=True)
class BlockParam:
    """One allowed parameter of a block type.

    Attributes
    ----------
    name : str
    kind : {"int", "float", "bool", "choice", "size"}
        ``size`` is an int, or for 2-D blocks (``ndim=2``) also a tuple of
        two ints (height, width).
    default : object
        Value used when the parameter is not given; absent for required ones.
    minimum : float, optional
        Smallest allowed value (exclusive when ``strict``).
    choices : tuple of str
        Allowed identifiers for ``kind="choice"``.
    optional : bool
        ``none`` is allowed (e.g. a pool's ``stride``: none means kernel_size).
    ndim : int
        Number of spatial axes of a ``size`` parameter.
    help : str
        One line for :func:`block_help`.
    """

    name: str
    kind: str
    default: Any = _REQUIRED
    minimum: float | None = None
    strict: bool = False
    choices: tuple[str, ...] = ()
    optional: bool = False
    ndim: int = 1
    help: str = ""

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED

    def describe(self) -> str:
        """The expected value in words: "an int >= 1", "one of 'none', 'tanh'"."""
        bound = ""
        if self.minimum is not None:
            low = _format_value(self.minimum if self.kind == "float" else int(self.minimum))
            bound = f" {'>' if self.strict else '>='} {low}"
        if self.kind == "int":
            text = f"an int{bound}"
        elif self.kind == "size":
            text = f"an int{bound}"
            if self.ndim > 1:
                text += f" or a tuple of {self.ndim} ints{bound}"
        elif self.kind == "float":
            text = f"a float{bound}" if bound else "a finite float"
        elif self.kind == "bool":
            text = "true or false"
        else:
            text = "one of " + ", ".join(repr(c) for c in self.choices)
        if self.optional:
            text += " or none"
        return text

    def convert(self, value: Any, block: str) -> Any:
        """Return ``value`` in canonical form, or raise BlockParameterError."""
        if value is None and self.kind == "choice" and "none" in self.choices:
            return "none"  # the word none in a spec names the choice 'none'
        if value is None and self.optional:
            return None
        if isinstance(value, list):
            value = tuple(value)
        if isinstance(value, np.generic):
            value = value.item()
        ok = False
        if self.kind == "int":
            ok = self._is_int(value)
            value = int(value) if ok else value
        elif self.kind == "size":
            if self._is_int(value):
                ok, value = True, int(value)
            elif self.ndim > 1 and isinstance(value, tuple) and len(value) == self.ndim:
                ok = all(self._is_int(v) for v in value)
                value = tuple(int(v) for v in value) if ok else value
        elif self.kind == "float":
            ok = (
                isinstance(value, numbers.Real)
                and not isinstance(value, bool)
                and math.isfinite(float(value))
                and self._above_minimum(float(value))
            )
            value = float(value) if ok else value
        elif self.kind == "bool":
            ok = isinstance(value, bool)
        else:
            ok = isinstance(value, str) and value in self.choices
        if not ok:
            raise BlockParameterError(
                f"The '{self.name}' parameter of {block} must be {self.describe()}. Got {_value_text(value)}."
            )
        return value

    def _is_int(self, v: Any) -> bool:
        return isinstance(v, numbers.Integral) and not isinstance(v, bool) and self._above_minimum(int(v))

    def _above_minimum(self, v: float) -> bool:
        if self.minimum is None:
            return True
        return v > self.minimum if self.strict else v >= self.minimum


def _size_param(name: str, ndim: int, default: Any = _REQUIRED, minimum: int = 1, optional: bool = False, help: str = "") -> BlockParam:
    return BlockParam(name, "size", default=default, minimum=minimum, optional=optional, ndim=ndim, help=help)


def _init_params() -> tuple[BlockParam, ...]:
    return (
        BlockParam("init", "choice", default=None, choices=INIT_FAMILIES, optional=True,
                   help="weight init family; none: the chain-wide init of build_chain/simulate"),
        BlockParam("sigma_w", "float", default=None, minimum=0.0, optional=True,
                   help="init=normal: weight std is sigma_w / sqrt(fan_in) (default 1.0)"),
        BlockParam("sigma_b", "float", default=None, minimum=0.0, optional=True,
                   help="init=normal: bias std (default 0.0)"),
    )


# ---------------------------------------------------------------------------
# block types
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BlockType:
    """A registered kind of block.

    Attributes
    ----------
    name : str
        Name used in specs.
    params : tuple of BlockParam
        The one table of allowed parameters.
    piecewise_linear : bool
        The block is piecewise linear in its input (affine blocks included):
        exact SMP enumeration applies to chains of such blocks.
    creates_kinks : bool
        The block can create new kinks from smooth inputs (ReLU, max pool);
        blocks without it only carry (and scale) existing kinks.
    input_ndim : int or None
        Rank of the input shape the block needs (no batch dimension), or None
        for any rank.
    has_weights : bool
        The block holds weights drawn by an init family.
    description : str
        One line about the block.
    """

    name: str
    params: tuple[BlockParam, ...]
    piecewise_linear: bool
    creates_kinks: bool
    input_ndim: int | None
    has_weights: bool
    description: str
    _build: Callable = field(repr=False, compare=False, default=None)
    _check: Callable | None = field(repr=False, compare=False, default=None)

    def param(self, name: str) -> BlockParam:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    def help(self) -> str:
        """Plain-text description of the block and its parameter table."""
        lines = [f"{self.name}: {self.description}"]
        flags = []
        flags.append("piecewise linear" if self.piecewise_linear else "smooth (not piecewise linear)")
        flags.append("creates kinks" if self.creates_kinks else "creates no kinks")
        lines.append("  " + ", ".join(flags))
        if not self.params:
            lines.append("  no parameters")
        for p in self.params:
            default = "required" if p.required else f"default {_format_value(p.default)}"
            lines.append(f"  {p.name}: {p.describe()} ({default}) - {p.help}")
        return "\n".join(lines)


def block_help(name: str | None = None) -> str:
    """Return the description and parameter table of one block, or of all blocks."""
    if name is None:
        return "\n\n".join(t.help() for t in BLOCKS.values())
    return _block_type(name).help()


# ----- batch-invariant modules ----------------------------------------------
# Torch's vectorised CPU kernels treat the last few elements of a tensor with
# scalar code, and BLAS picks kernels by matrix size; both make a sample's
# result depend on the batch it is evaluated in. The modules below avoid the
# affected kernels (checked in tests/test_blocks.py).


#: Samples per unfolded block in conv blocks (bounds the memory of the unfolded patches; see _Conv).
_CONV_BLOCK = 256


def _rowwise_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``x @ weight.T + bias`` for x of shape (n, in), each row its own one-row product (batched).

    A matrix product's kernel can treat a row differently by its position
    in the block (on some CPUs rows at odd positions round differently), so
    the result of one row would depend on the rows beside it; one-row
    products do not.
    """
    out = torch.bmm(x.unsqueeze(1), weight.T.unsqueeze(0).expand(x.shape[0], -1, -1)).squeeze(1)
    return out if bias is None else out + bias


class _Linear(nn.Linear):
    """nn.Linear that flattens its input and gives batch-invariant results (:func:`_rowwise_linear`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _rowwise_linear(x.flatten(1), self.weight, self.bias)


class _Conv(nn.Module):
    """Forward of conv1d and conv2d as unfolded patches times the weights, one product per sample of the same
    shape whatever the batch (batch-invariant; zero padding and one group, what the spec grammar allows)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        one_d = x.dim() == 3
        xx = x.unsqueeze(2) if one_d else x
        kernel, dilation, stride = ((1, *v) if one_d else v for v in (self.kernel_size, self.dilation, self.stride))
        padding = (0, *self.padding) if one_d else self.padding
        out_hw = [(xx.shape[2 + i] + 2 * padding[i] - dilation[i] * (kernel[i] - 1) - 1) // stride[i] + 1
                  for i in range(2)]
        w = self.weight.reshape(self.out_channels, -1)
        parts = []
        for start in range(0, xx.shape[0], _CONV_BLOCK):
            cols = F.unfold(xx[start:start + _CONV_BLOCK], kernel, dilation=dilation, padding=padding, stride=stride)
            # one product per sample, all of the same shape: a sample's patches always sit at the same rows
            y = torch.bmm(cols.transpose(1, 2), w.T.unsqueeze(0).expand(cols.shape[0], -1, -1))
            parts.append((y if self.bias is None else y + self.bias).transpose(1, 2))
        y = torch.cat(parts) if len(parts) > 1 else parts[0]
        return y.reshape(x.shape[0], self.out_channels, *([out_hw[1]] if one_d else out_hw))


class _Conv1d(_Conv, nn.Conv1d):
    """nn.Conv1d with the batch-invariant forward of :class:`_Conv` (first in the MRO)."""


class _Conv2d(_Conv, nn.Conv2d):
    """nn.Conv2d with the batch-invariant forward of :class:`_Conv` (first in the MRO)."""


class _GELU(nn.GELU):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.approximate == "tanh":
            inner = math.sqrt(2.0 / math.pi) * (x + 0.044715 * (x * x * x))
            return 0.5 * x * (1.0 + torch.tanh(inner))
        return 0.5 * x * (1.0 + torch.erf(x * (1.0 / math.sqrt(2.0))))


class _SiLU(nn.SiLU):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # sigmoid(x) = (1 + tanh(x / 2)) / 2
        return x * (0.5 + 0.5 * torch.tanh(0.5 * x))


class _Softplus(nn.Softplus):
    """Softplus log(1 + exp(beta x)) / beta, smooth everywhere (no linear threshold)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.beta * x
        return (torch.relu(z) + torch.log1p(torch.exp(-torch.abs(z)))) / self.beta

    def extra_repr(self) -> str:
        return f"beta={self.beta}"


# ----- shape checks -----------------------------------------------------------


def _tuple(v: Any, n: int) -> tuple[int, ...]:
    return tuple(v) if isinstance(v, tuple) else (v,) * n


def _needs_rank(ctx: "_StageContext", rank: int, layout: str, hint: str) -> None:
    if len(ctx.in_shape) != rank:
        raise SpecError(
            f"Stage {ctx.index} ({ctx.label}) needs an input of shape {layout} but gets shape "
            f"{ctx.in_shape}. {hint}"
        )


def _spatial_rank_hint(name: str, shape: tuple[int, ...], rank: int) -> str:
    if rank == 2:
        if len(shape) == 1:
            return f"For one channel pass input_shape=(1, {shape[0]})."
        return f"For images use the 2-D block ({name.replace('1d', '2d')}), or put flatten before {name}."
    if len(shape) == 2:
        return f"For one channel pass input_shape=(1, {shape[0]}, {shape[1]}); for sequences use {name.replace('2d', '1d')}."
    if len(shape) == 1:
        return f"Pass an input_shape of the form (channels, height, width), e.g. (1, {shape[0]}, 1)."
    return "Pass an input_shape of the form (channels, height, width)."


def _check_window(ctx: "_StageContext", p: Mapping[str, Any], ndim: int, dilated: bool) -> None:
    names = ("length",) if ndim == 1 else ("height", "width")
    spatial = ctx.in_shape[1:]
    k = _tuple(p["kernel_size"], ndim)
    pad = _tuple(p["padding"], ndim)
    dil = _tuple(p.get("dilation", 1), ndim)
    for axis in range(ndim):
        span = dil[axis] * (k[axis] - 1) + 1
        room = spatial[axis] + 2 * pad[axis]
        if span > room:
            what = f"kernel_size={_format_value(p['kernel_size'])}"
            if dilated and dil[axis] != 1:
                what += f", dilation={_format_value(p['dilation'])}"
            raise SpecError(
                f"Stage {ctx.index} ({ctx.label}): the window spans {span} samples ({what}) but the input "
                f"of shape {ctx.in_shape} has {names[axis]} {spatial[axis]}"
                f"{f' ({room} with padding)' if pad[axis] else ''}. "
                f"Use a smaller kernel_size{' or dilation' if dilated else ''}, more padding, or a larger input."
            )


def _check_pool_params(block: str, p: Mapping[str, Any], ndim: int) -> None:
    k = _tuple(p["kernel_size"], ndim)
    pad = _tuple(p["padding"], ndim)
    if any(2 * pp > kk for pp, kk in zip(pad, k)):
        raise BlockParameterError(
            f"The 'padding' parameter of {block} must be at most half of kernel_size. "
            f"Got padding={_format_value(p['padding'])} with kernel_size={_format_value(p['kernel_size'])}."
        )


def _check_init_params(block: str, p: Mapping[str, Any]) -> None:
    init = p.get("init")
    if init in ("kaiming", "xavier"):
        for name in ("sigma_w", "sigma_b"):
            if p.get(name) is not None:
                raise BlockParameterError(
                    f"The '{name}' parameter of {block} only applies with init=normal. Got {name}="
                    f"{_format_value(p[name])} with init={init}; drop {name} or pass init=normal."
                )


# ----- builders -----------------------------------------------------------------


@dataclass
class _StageContext:
    index: int
    label: str
    in_shape: tuple[int, ...]


def _build_linear(ctx: _StageContext, p: Mapping[str, Any]) -> nn.Module:
    in_features = int(np.prod(ctx.in_shape, dtype=np.int64))
    return torch.nn.utils.skip_init(_Linear, in_features, p["out_features"], bias=p["bias"], dtype=torch.float64)


def _build_conv(ndim: int) -> Callable:
    cls = _Conv1d if ndim == 1 else _Conv2d

    def build(ctx: _StageContext, p: Mapping[str, Any]) -> nn.Module:
        _needs_rank(ctx, ndim + 1, "(channels, length)" if ndim == 1 else "(channels, height, width)",
                    _spatial_rank_hint(f"conv{ndim}d", ctx.in_shape, ndim + 1))
        _check_window(ctx, p, ndim, dilated=True)
        return torch.nn.utils.skip_init(
            cls, ctx.in_shape[0], p["out_channels"], p["kernel_size"], stride=p["stride"], padding=p["padding"],
            dilation=p["dilation"], bias=p["bias"], dtype=torch.float64,
        )

    return build


def _build_pool(kind: str, ndim: int) -> Callable:
    cls = {("max", 1): nn.MaxPool1d, ("max", 2): nn.MaxPool2d, ("avg", 1): nn.AvgPool1d, ("avg", 2): nn.AvgPool2d}[kind, ndim]

    def build(ctx: _StageContext, p: Mapping[str, Any]) -> nn.Module:
        name = f"{kind}pool{ndim}d"
        _needs_rank(ctx, ndim + 1, "(channels, length)" if ndim == 1 else "(channels, height, width)",
                    _spatial_rank_hint(name, ctx.in_shape, ndim + 1))
        _check_window(ctx, p, ndim, dilated=False)
        return cls(p["kernel_size"], stride=p["stride"], padding=p["padding"], ceil_mode=p["ceil_mode"])

    return build


def _build_batchnorm(ctx: _StageContext, p: Mapping[str, Any]) -> nn.Module:
    rank = len(ctx.in_shape)
    if rank not in (1, 2, 3):
        raise SpecError(
            f"Stage {ctx.index} ({ctx.label}) needs an input of shape (channels,), (channels, length) or "
            f"(channels, height, width) but gets shape {ctx.in_shape}. Put flatten before batchnorm."
        )
    cls = nn.BatchNorm2d if rank == 3 else nn.BatchNorm1d
    module = torch.nn.utils.skip_init(cls, ctx.in_shape[0], eps=p["eps"], affine=p["affine"], dtype=torch.float64)
    return module.eval()


def _simple(factory: Callable[[Mapping[str, Any]], nn.Module]) -> Callable:
    return lambda ctx, p: factory(p)


def _flatten_factory(p: Mapping[str, Any]) -> nn.Module:
    return nn.Flatten(1)


def _register(*types: BlockType) -> Mapping[str, BlockType]:
    return MappingProxyType({t.name: t for t in types})


def _conv_type(ndim: int) -> BlockType:
    return BlockType(
        name=f"conv{ndim}d",
        params=(
            BlockParam("out_channels", "int", minimum=1, help="number of output channels"),
            _size_param("kernel_size", ndim, help="window size"),
            _size_param("stride", ndim, default=1, help="step between windows"),
            _size_param("padding", ndim, default=0, minimum=0, help="zero padding on each side"),
            _size_param("dilation", ndim, default=1, help="spacing between window elements"),
            BlockParam("bias", "bool", default=True, help="add a bias per output channel"),
            *_init_params(),
        ),
        piecewise_linear=True,
        creates_kinks=False,
        input_ndim=ndim + 1,
        has_weights=True,
        description=f"{ndim}-D convolution; in_channels from the input shape",
        _build=_build_conv(ndim),
        _check=_check_init_params,
    )


def _pool_type(kind: str, ndim: int) -> BlockType:
    name = f"{kind}pool{ndim}d"
    return BlockType(
        name=name,
        params=(
            _size_param("kernel_size", ndim, help="window size"),
            _size_param("stride", ndim, default=None, optional=True, help="step between windows; none: kernel_size"),
            _size_param("padding", ndim, default=0, minimum=0, help="padding on each side (at most kernel_size / 2)"),
            BlockParam("ceil_mode", "bool", default=False, help="round the output length up"),
        ),
        piecewise_linear=True,
        creates_kinks=kind == "max",
        input_ndim=ndim + 1,
        has_weights=False,
        description=f"{ndim}-D {'max' if kind == 'max' else 'average'} pooling per channel",
        _build=_build_pool(kind, ndim),
        _check=lambda block, p, ndim=ndim: _check_pool_params(block, p, ndim),
    )


def _activation(name: str, factory, *, params=(), piecewise_linear: bool, creates_kinks: bool, description: str) -> BlockType:
    return BlockType(
        name=name, params=tuple(params), piecewise_linear=piecewise_linear, creates_kinks=creates_kinks,
        input_ndim=None, has_weights=False, description=description, _build=_simple(factory),
    )


#: The block registry: name -> BlockType.
BLOCKS: Mapping[str, BlockType] = _register(
    BlockType(
        name="linear",
        params=(
            BlockParam("out_features", "int", minimum=1, help="number of output features"),
            BlockParam("bias", "bool", default=True, help="add a bias per output feature"),
            *_init_params(),
        ),
        piecewise_linear=True,
        creates_kinks=False,
        input_ndim=None,
        has_weights=True,
        description="affine map; flattens its input, in_features from the input shape",
        _build=_build_linear,
        _check=_check_init_params,
    ),
    _conv_type(1),
    _conv_type(2),
    _activation("relu", lambda p: nn.ReLU(), piecewise_linear=True, creates_kinks=True, description="max(x, 0)"),
    _activation(
        "leaky_relu", lambda p: nn.LeakyReLU(p["negative_slope"]),
        params=(BlockParam("negative_slope", "float", default=0.01, help="slope for x < 0"),),
        piecewise_linear=True, creates_kinks=True, description="x for x >= 0, negative_slope * x otherwise",
    ),
    _activation(
        "prelu", lambda p: _prelu(p["alpha"]),
        params=(BlockParam("alpha", "float", default=0.25, help="slope for x < 0 (one shared parameter)"),),
        piecewise_linear=True, creates_kinks=True, description="parametric ReLU with one shared slope alpha",
    ),
    _pool_type("max", 1),
    _pool_type("max", 2),
    _pool_type("avg", 1),
    _pool_type("avg", 2),
    BlockType(
        name="batchnorm",
        params=(
            BlockParam("eps", "float", default=1e-5, minimum=0.0, strict=True, help="added to the running variance"),
            BlockParam("affine", "bool", default=True, help="learnable scale and shift"),
        ),
        piecewise_linear=True,
        creates_kinks=False,
        input_ndim=None,
        has_weights=True,
        description=(
            "batch normalisation in eval mode over the first axis (1-D or 2-D from the input shape); random "
            "running statistics (mean ~ N(0, 1), variance ~ exp(N(0, 0.5^2))) and affine (scale ~ N(1, 0.2^2), "
            "shift ~ N(0, 0.2^2))"
        ),
        _build=_build_batchnorm,
    ),
    _activation(
        "gelu", lambda p: _GELU(approximate=p["approximate"]),
        params=(BlockParam("approximate", "choice", default="none", choices=("none", "tanh"),
                           help="'tanh': the tanh approximation"),),
        piecewise_linear=False, creates_kinks=False, description="x * Phi(x)",
    ),
    _activation("silu", lambda p: _SiLU(), piecewise_linear=False, creates_kinks=False, description="x * sigmoid(x)"),
    _activation(
        "softplus", lambda p: _Softplus(beta=p["beta"]),
        params=(BlockParam("beta", "float", default=1.0, minimum=0.0, strict=True, help="sharpness"),),
        piecewise_linear=False, creates_kinks=False,
        description="log(1 + exp(beta x)) / beta, smooth everywhere (no linear threshold)",
    ),
    _activation("tanh", lambda p: nn.Tanh(), piecewise_linear=False, creates_kinks=False, description="tanh(x)"),
    _activation("flatten", _flatten_factory, piecewise_linear=True, creates_kinks=False,
                description="flatten to (features,)"),
)


def _prelu(alpha: float) -> nn.Module:
    module = torch.nn.utils.skip_init(nn.PReLU, 1, dtype=torch.float64)
    with torch.no_grad():
        module.weight.fill_(alpha)
    return module


def _block_type(name: Any) -> BlockType:
    if not isinstance(name, str):
        raise UnknownBlockError(f"A block name must be a string; got {name!r}. Known blocks: {', '.join(BLOCKS)}.")
    try:
        return BLOCKS[name]
    except KeyError:
        close = difflib.get_close_matches(name.lower(), BLOCKS, n=1, cutoff=0.6)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise UnknownBlockError(f"Unknown block '{name}'.{hint} Known blocks: {', '.join(BLOCKS)}.") from None


# ---------------------------------------------------------------------------
# BlockSpec
# ---------------------------------------------------------------------------


@dataclass(frozen=True, init=False, eq=True)
class BlockSpec:
    """One block of a spec: a registered name and validated parameters.

    Parameters
    ----------
    name : str
        A key of :data:`BLOCKS`.
    params : mapping, optional
        Parameter values; validated and put into canonical form (ints, floats,
        bools, tuples) and registry order. Parameters left out take their
        defaults at build time (see :meth:`resolved`).

    Examples
    --------
    >>> str(BlockSpec("maxpool1d", {"kernel_size": 2}))
    'maxpool1d(kernel_size=2)'
    """

    name: str
    params: Mapping[str, Any]

    def __init__(self, name: str, params: Mapping[str, Any] | None = None, **kwargs: Any):
        block = _block_type(name)
        given = dict(params or {})
        for key, value in kwargs.items():
            if key in given:
                raise BlockParameterError(f"The '{key}' parameter of {block.name} is given twice.")
            given[key] = value
        allowed = block.param_names
        for key in given:
            if key not in allowed:
                raise BlockParameterError(_unknown_param_message(block, key))
        clean = {}
        for p in block.params:
            if p.name in given:
                clean[p.name] = p.convert(given[p.name], block.name)
            elif p.required:
                example = "2" if p.kind in ("int", "size") else p.describe()
                raise BlockParameterError(
                    f"The '{p.name}' parameter of {block.name} is required: pass {p.describe()}, "
                    f"e.g. {block.name}({p.name}={example})."
                )
        if block._check is not None:
            block._check(block.name, {**_defaults(block), **clean})
        object.__setattr__(self, "name", block.name)
        object.__setattr__(self, "params", MappingProxyType(clean))

    @property
    def block_type(self) -> BlockType:
        return BLOCKS[self.name]

    @property
    def piecewise_linear(self) -> bool:
        return self.block_type.piecewise_linear

    @property
    def creates_kinks(self) -> bool:
        return self.block_type.creates_kinks

    def resolved(self) -> dict[str, Any]:
        """All parameters, defaults filled in (a pool's stride none -> kernel_size)."""
        out = {**_defaults(self.block_type), **self.params}
        if self.name.endswith(("pool1d", "pool2d")) and out["stride"] is None:
            out["stride"] = out["kernel_size"]
        return out

    def window(self) -> int | None:
        """Inputs per window of a conv or pooling block (kernel elements over its spatial dims); None without one."""
        k = self.resolved().get("kernel_size")
        if k is None:
            return None
        return int(np.prod(k)) if isinstance(k, tuple) else int(k) ** int(self.name[-2])

    def __str__(self) -> str:
        if not self.params:
            return self.name
        inner = ", ".join(f"{k}={_format_value(v)}" for k, v in self.params.items())
        return f"{self.name}({inner})"

    def __repr__(self) -> str:
        return f"BlockSpec({str(self)!r})"

    def __eq__(self, other: Any) -> bool:
        if not isinstance(other, BlockSpec):
            return NotImplemented
        return self.name == other.name and dict(self.params) == dict(other.params)

    def __hash__(self) -> int:
        return hash((self.name, tuple(self.params.items())))

    def __reduce__(self):
        return (_make_block_spec, (self.name, dict(self.params)))


def _make_block_spec(name: str, params: dict) -> BlockSpec:
    return BlockSpec(name, params)


def _defaults(block: BlockType) -> dict[str, Any]:
    return {p.name: p.default for p in block.params if not p.required}


def _unknown_param_message(block: BlockType, key: str) -> str:
    if not block.params:
        return f"Unknown parameter '{key}' for {block.name}: {block.name} takes no parameters."
    close = difflib.get_close_matches(key, block.param_names, n=1, cutoff=0.6)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return f"Unknown parameter '{key}' for {block.name}.{hint} Allowed parameters: {', '.join(block.param_names)}."


# ---------------------------------------------------------------------------
# parsing
# ---------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<number>[+-]?(?:\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?))
    | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<punct>[(),=|])
    )""",
    re.VERBOSE,
)
_INT = re.compile(r"[+-]?\d+")
_WORDS = {"true": True, "false": False, "none": None, "inf": math.inf, "nan": math.nan}


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.tokens: list[tuple[str, Any, int]] = []
        pos = 0
        while pos < len(text):
            if text[pos:].strip() == "":
                break
            m = _TOKEN.match(text, pos)
            if m is None or m.end() == pos:
                start = pos + (len(text[pos:]) - len(text[pos:].lstrip()))
                self.fail(start, f"unexpected character {text[start]!r}")
            kind = m.lastgroup
            start = m.start(kind)
            raw = m.group(kind)
            if kind == "number":
                value = int(raw) if _INT.fullmatch(raw) else float(raw)
            else:
                value = raw
            self.tokens.append((kind, value, start))
            pos = m.end()
        self.i = 0

    def fail(self, pos: int, what: str) -> None:
        raise SpecError(f"Cannot parse the spec at position {pos}: {what}.\n  {self.text}\n  {' ' * pos}^")

    def peek(self) -> tuple[str, Any, int]:
        return self.tokens[self.i] if self.i < len(self.tokens) else ("end", None, len(self.text))

    def take(self) -> tuple[str, Any, int]:
        tok = self.peek()
        self.i += 1
        return tok

    def chain(self) -> list[BlockSpec]:
        if not self.tokens:
            raise SpecError("The spec is empty: name at least one block, e.g. 'relu' or 'conv1d(out_channels=8, kernel_size=3) | relu'.")
        blocks = [self.block()]
        while True:
            kind, value, pos = self.take()
            if kind == "end":
                return blocks
            if kind == "punct" and value == "|":
                blocks.append(self.block())
            else:
                self.fail(pos, f"expected '|' between blocks or the end of the spec, found {_describe_token(kind, value)}")

    def block(self) -> BlockSpec:
        kind, name, pos = self.take()
        if kind != "ident":
            self.fail(pos, f"expected a block name, found {_describe_token(kind, name)}")
        params: dict[str, Any] = {}
        if self.peek()[:2] == ("punct", "("):
            self.take()
            while self.peek()[:2] != ("punct", ")"):
                kind, key, kpos = self.take()
                if kind != "ident":
                    self.fail(kpos, f"expected a parameter name (key=value), found {_describe_token(kind, key)}")
                if self.peek()[:2] != ("punct", "="):
                    k2, v2, p2 = self.peek()
                    self.fail(p2, f"expected '=' after '{key}' (parameters are given as key=value), found {_describe_token(k2, v2)}")
                self.take()
                if key in params:
                    raise BlockParameterError(f"The '{key}' parameter of {name} is given twice.")
                params[key] = self.value()
                if self.peek()[:2] == ("punct", ","):
                    self.take()
                elif self.peek()[:2] != ("punct", ")"):
                    k2, v2, p2 = self.peek()
                    self.fail(p2, f"expected ',' or ')' after the value of '{key}', found {_describe_token(k2, v2)}")
            self.take()
        return BlockSpec(name, params)

    def value(self) -> Any:
        kind, value, pos = self.take()
        if kind == "number":
            return value
        if kind == "ident":
            return _WORDS.get(value.lower(), value)
        if kind == "punct" and value == "(":
            items = []
            while self.peek()[:2] != ("punct", ")"):
                items.append(self.value())
                if self.peek()[:2] == ("punct", ","):
                    self.take()
                elif self.peek()[:2] != ("punct", ")"):
                    k2, v2, p2 = self.peek()
                    self.fail(p2, f"expected ',' or ')' in a tuple, found {_describe_token(k2, v2)}")
            self.take()
            return tuple(items)
        self.fail(pos, f"expected a value, found {_describe_token(kind, value)}")


def _describe_token(kind: str, value: Any) -> str:
    if kind == "end":
        return "the end of the spec"
    return f"'{value}'"


def parse_spec(text: str) -> tuple[BlockSpec, ...]:
    """Parse a spec string into validated blocks.

    Parameters
    ----------
    text : str
        Blocks ``name`` or ``name(key=value, ...)`` joined by ``|``.

    Returns
    -------
    tuple of BlockSpec

    Raises
    ------
    SpecError
        Syntax errors (with the position marked).
    UnknownBlockError, BlockParameterError
        Unknown names, unknown parameters, invalid values.
    """
    if not isinstance(text, str):
        raise SpecError(f"A spec must be a string such as 'conv1d(out_channels=8, kernel_size=3) | relu'; got {type(text).__name__}.")
    return tuple(_Parser(text).chain())


def format_spec(blocks: str | BlockSpec | Sequence[BlockSpec | str]) -> str:
    """Return the canonical text of a spec: blocks joined by ``' | '``."""
    return " | ".join(str(b) for b in as_block_specs(blocks))


def as_block_specs(spec: str | BlockSpec | Sequence[BlockSpec | str]) -> tuple[BlockSpec, ...]:
    """Coerce a spec string, a BlockSpec or a sequence of them (or of strings) to a tuple of BlockSpec."""
    if isinstance(spec, str):
        return parse_spec(spec)
    if isinstance(spec, BlockSpec):
        return (spec,)
    if isinstance(spec, Sequence):
        out: list[BlockSpec] = []
        for item in spec:
            if isinstance(item, BlockSpec):
                out.append(item)
            elif isinstance(item, str):
                out.extend(parse_spec(item))
            else:
                raise SpecError(
                    f"A spec sequence must hold BlockSpec objects or spec strings; got {type(item).__name__}."
                )
        if not out:
            raise SpecError("The spec is empty: name at least one block, e.g. 'relu'.")
        return tuple(out)
    raise SpecError(
        f"A spec must be a string, a BlockSpec, a sequence of them, or a torch nn.Module; got {type(spec).__name__}."
    )


# ---------------------------------------------------------------------------
# chains
# ---------------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class Stage:
    """One stage of a :class:`Chain`.

    Attributes
    ----------
    index : int
        1-based position in the chain (as in messages and simulate tables).
    name : str
        Block name (registry name, or the lower-cased class name of a module
        that is not in the registry).
    spec : BlockSpec or None
        The block spec (None for a module of a type not in the registry).
    module : torch.nn.Module
        The float64 module, in eval mode.
    in_shape, out_shape : tuple of int
        Input and output shapes without the batch dimension.
    piecewise_linear, creates_kinks : bool or None
        Flags of the block type (None: unknown, for unregistered modules).
    init : str or None
        Init family of the weights (None for blocks without drawn weights).
    sigma_w, sigma_b : float or None
        Effective init scales: weight std times sqrt(fan_in), and bias std.
    fan_in : int or None
        Inputs per output unit of a weight block (in_features, or in_channels
        times the kernel's size).
    from_module : bool
        The stage came from a user's torch module: its weights are kept.
    """

    index: int
    name: str
    spec: BlockSpec | None
    module: nn.Module
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    piecewise_linear: bool | None
    creates_kinks: bool | None
    init: str | None = None
    sigma_w: float | None = None
    sigma_b: float | None = None
    fan_in: int | None = None
    fan_out: int | None = None
    from_module: bool = False

    @property
    def label(self) -> str:
        """Canonical spec text, or the module's class name."""
        return str(self.spec) if self.spec is not None else type(self.module).__name__

    @property
    def n_units_in(self) -> int:
        return int(np.prod(self.in_shape, dtype=np.int64))

    @property
    def n_units_out(self) -> int:
        return int(np.prod(self.out_shape, dtype=np.int64))

    def __repr__(self) -> str:
        return f"Stage({self.index}: {self.label}, {self.in_shape} -> {self.out_shape})"


class Chain:
    """A chain of blocks built for one input shape; call it on a batch.

    Build with :func:`build_chain`. ``chain(x)`` takes ``x`` of shape
    ``(n, *input_shape)`` (array or tensor) and returns a float64 tensor of
    shape ``(n, *output_shape)``.

    Attributes
    ----------
    stages : tuple of Stage
    input_shape, output_shape : tuple of int
    """

    def __init__(self, stages: Sequence[Stage], input_shape: tuple[int, ...]):
        self.stages = tuple(stages)
        self.input_shape = tuple(input_shape)
        self.output_shape = self.stages[-1].out_shape

    # -- container protocol
    def __len__(self) -> int:
        return len(self.stages)

    def __iter__(self) -> Iterator[Stage]:
        return iter(self.stages)

    def __getitem__(self, i: int) -> Stage:
        return self.stages[i]

    @property
    def spec(self) -> str:
        """Canonical spec text of the chain (class names for unregistered modules)."""
        return " | ".join(s.label for s in self.stages)

    @property
    def blocks(self) -> tuple[BlockSpec | None, ...]:
        return tuple(s.spec for s in self.stages)

    @property
    def piecewise_linear(self) -> bool:
        """Every stage is piecewise linear (exact SMP applies)."""
        return all(s.piecewise_linear is True for s in self.stages)

    @property
    def module(self) -> nn.Sequential:
        """The stages as one ``nn.Sequential`` (sharing the modules)."""
        return nn.Sequential(*(s.module for s in self.stages))

    def _as_batch(self, x: Any) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            x = torch.as_tensor(np.asarray(x, dtype=np.float64))
        x = x.to(torch.float64)
        if tuple(x.shape[1:]) != self.input_shape:
            raise InputError(
                f"x must have shape (n, *input_shape) = (n, {', '.join(map(str, self.input_shape))}); got shape {tuple(x.shape)}."
            )
        return x

    def __call__(self, x: Any) -> torch.Tensor:
        x = self._as_batch(x)
        with torch.no_grad():
            for s in self.stages:
                x = s.module(x)
        return x

    def forward_stages(self, x: Any) -> list[torch.Tensor]:
        """Return the output of every stage for the batch ``x`` (n, *input_shape)."""
        x = self._as_batch(x)
        outs = []
        with torch.no_grad():
            for s in self.stages:
                x = s.module(x)
                outs.append(x)
        return outs

    def reinitialize(self, generator: Any = None) -> "Chain":
        """Draw fresh weights for every stage built from a spec (in place; returns self).

        Draws happen in stage order, weights before biases, so a chain built
        with ``generator`` has the same weights as one rebuilt and
        reinitialised with a generator in the same state. Stages from a user's
        module keep their weights.
        """
        gen = _torch_generator(generator)
        with torch.no_grad():
            for s in self.stages:
                if not s.from_module:
                    _draw_weights(s, gen)
        return self

    def to_frame(self):
        """One row per stage: index, name, spec, shapes, flags, init."""
        import pandas as pd

        return pd.DataFrame(
            {
                "stage": [s.index for s in self.stages],
                "block": [s.name for s in self.stages],
                "block_spec": [s.label for s in self.stages],
                "in_shape": [str(s.in_shape) for s in self.stages],
                "out_shape": [str(s.out_shape) for s in self.stages],
                "piecewise_linear": pd.array([s.piecewise_linear for s in self.stages], dtype="boolean"),
                "creates_kinks": pd.array([s.creates_kinks for s in self.stages], dtype="boolean"),
                "init": [s.init for s in self.stages],
                "sigma_w": [s.sigma_w for s in self.stages],
                "sigma_b": [s.sigma_b for s in self.stages],
            }
        )

    def summary(self) -> str:
        lines = [f"Chain of {len(self)} stage(s), input shape {self.input_shape} -> output shape {self.output_shape}:"]
        for s in self.stages:
            flags = []
            if s.creates_kinks:
                flags.append("creates kinks")
            if s.piecewise_linear is False:
                flags.append("smooth")
            if s.init:
                flags.append(f"init {s.init} (sigma_w {s.sigma_w:.3g}, sigma_b {s.sigma_b:.3g})")
            if s.from_module and any(True for _ in s.module.parameters()):
                flags.append("user weights")
            lines.append(f"  {s.index}. {s.label}: {s.in_shape} -> {s.out_shape}" + (f"  [{'; '.join(flags)}]" if flags else ""))
        lines.append("Next: smpstats.simulate(spec, input_shape=...) collects SMP samples for every stage.")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"Chain({self.spec!r}, input_shape={self.input_shape}, output_shape={self.output_shape})"


def _torch_generator(generator: Any) -> torch.Generator:
    if isinstance(generator, torch.Generator):
        return generator
    if generator is None:
        return torch.Generator().manual_seed(0)
    if isinstance(generator, np.random.SeedSequence):
        return torch.Generator().manual_seed(int(generator.generate_state(1, np.uint64)[0]))
    if isinstance(generator, numbers.Integral) and not isinstance(generator, bool) and generator >= 0:
        return torch.Generator().manual_seed(int(generator))
    raise InputError(
        f"generator must be a torch.Generator, a non-negative int seed, a numpy SeedSequence or None; got {generator!r}."
    )


def _weight_std(init: str, fan_in: int, fan_out: int, sigma_w: float) -> float:
    if init == "kaiming":
        return math.sqrt(2.0 / fan_in)
    if init == "xavier":
        return math.sqrt(2.0 / (fan_in + fan_out))
    return sigma_w / math.sqrt(fan_in)


def _draw_weights(stage: Stage, gen: torch.Generator) -> None:
    m = stage.module
    if stage.init is not None:
        std = stage.sigma_w / math.sqrt(stage.fan_in)
        lin = m
        lin.weight.normal_(0.0, std, generator=gen)
        if lin.bias is not None:
            lin.bias.normal_(0.0, stage.sigma_b, generator=gen)
    elif isinstance(m, nn.modules.batchnorm._BatchNorm):
        c = m.num_features
        m.running_mean.copy_(torch.randn(c, generator=gen, dtype=torch.float64))
        m.running_var.copy_(torch.exp(0.5 * torch.randn(c, generator=gen, dtype=torch.float64)))
        m.num_batches_tracked.zero_()
        if m.affine:
            m.weight.copy_(1.0 + 0.2 * torch.randn(c, generator=gen, dtype=torch.float64))
            m.bias.copy_(0.2 * torch.randn(c, generator=gen, dtype=torch.float64))


def _check_input_shape(input_shape: Any) -> tuple[int, ...]:
    if isinstance(input_shape, numbers.Integral) and not isinstance(input_shape, bool):
        input_shape = (int(input_shape),)
    try:
        shape = tuple(input_shape)
    except TypeError:
        shape = None
    if (
        shape is None
        or not shape
        or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) and s >= 1 for s in shape)
    ):
        raise InputError(
            f"input_shape must be a non-empty tuple of positive ints without the batch dimension, e.g. (32,) "
            f"for features, (8, 64) for (channels, length) or (3, 16, 16) for images; got {input_shape!r}."
        )
    return tuple(int(s) for s in shape)


def build_chain(
    spec: Any,
    input_shape: Any,
    *,
    init: str = "kaiming",
    sigma_w: float | None = None,
    sigma_b: float | None = None,
    generator: Any = None,
) -> Chain:
    """Build a chain of float64 modules for a spec on an input shape.

    Parameters
    ----------
    spec : str, BlockSpec, sequence of BlockSpec, or torch.nn.Module
        A spec string (``"conv1d(out_channels=8, kernel_size=3) | relu"``),
        parsed blocks, or a module: an ``nn.Sequential`` splits into one stage
        per child, any other module is one stage. Modules are copied, cast to
        float64 and put in eval mode; their weights are kept.
    input_shape : tuple of int
        Shape of one input, without the batch dimension.
    init : {"kaiming", "xavier", "normal"}, default="kaiming"
        Chain-wide weight init, for blocks that do not set their own.
    sigma_w, sigma_b : float >= 0, optional
        Chain-wide scales for ``init="normal"`` (defaults 1.0 and 0.0): weight
        std ``sigma_w / sqrt(fan_in)``, bias std ``sigma_b``.
    generator : torch.Generator, int, numpy.random.SeedSequence or None
        Source of the weights; None means seed 0 (deterministic).

    Returns
    -------
    Chain

    Raises
    ------
    SpecError
        Bad spec, or a shape mismatch (the message names the stage and shapes).
    InputError
        Bad input_shape, init or scales.
    """
    input_shape = _check_input_shape(input_shape)
    if init not in INIT_FAMILIES:
        raise InputError(f"init must be one of {', '.join(repr(c) for c in INIT_FAMILIES)}; got {init!r}.")
    for name, value in (("sigma_w", sigma_w), ("sigma_b", sigma_b)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
            raise InputError(f"{name} must be a finite float >= 0; got {value!r}.")
        if init != "normal":
            raise InputError(f"{name} only applies with init='normal'; got init={init!r}. Pass init='normal' or drop {name}.")
    gen = _torch_generator(generator)
    if isinstance(spec, nn.Module):
        chain = _chain_from_module(spec, input_shape)
    else:
        chain = _chain_from_specs(as_block_specs(spec), input_shape, init, sigma_w, sigma_b)
    return chain.reinitialize(gen)


def _chain_from_specs(blocks, input_shape, init, sigma_w, sigma_b) -> Chain:
    stages = []
    shape = input_shape
    for i, b in enumerate(blocks, start=1):
        bt = b.block_type
        p = b.resolved()
        ctx = _StageContext(index=i, label=str(b), in_shape=shape)
        module = bt._build(ctx, p)
        module.eval()
        out_shape = _probe(module, ctx)
        extra = {}
        if bt.has_weights and bt.name != "batchnorm":
            fan_in, fan_out = _fans(module)
            block_init = p["init"]
            if block_init is None:
                block_init = "normal" if (p["sigma_w"] is not None or p["sigma_b"] is not None) else init
            if block_init == "normal":
                sw = p["sigma_w"] if p["sigma_w"] is not None else (sigma_w if sigma_w is not None else 1.0)
                sb = p["sigma_b"] if p["sigma_b"] is not None else (sigma_b if sigma_b is not None else 0.0)
            else:
                sw = _weight_std(block_init, fan_in, fan_out, 1.0) * math.sqrt(fan_in)
                sb = 0.0
            extra = dict(init=block_init, sigma_w=float(sw), sigma_b=float(sb), fan_in=fan_in, fan_out=fan_out)
        stages.append(
            Stage(index=i, name=b.name, spec=b, module=module, in_shape=shape, out_shape=out_shape,
                  piecewise_linear=bt.piecewise_linear, creates_kinks=bt.creates_kinks, **extra)
        )
        shape = out_shape
    return Chain(stages, input_shape)


def _fans(module: nn.Module) -> tuple[int, int]:
    w = module.weight
    receptive = int(np.prod(w.shape[2:], dtype=np.int64)) if w.dim() > 2 else 1
    return int(w.shape[1]) * receptive, int(w.shape[0]) * receptive


def _probe(module: nn.Module, ctx: _StageContext) -> tuple[int, ...]:
    """Output shape of ``module`` for one input of ``ctx.in_shape`` (runs it on zeros)."""
    x = torch.zeros((1, *ctx.in_shape), dtype=torch.float64)
    try:
        with torch.no_grad():
            y = module(x)
    except Exception as exc:  # torch's own message, with the stage named
        raise SpecError(
            f"Stage {ctx.index} ({ctx.label}) fails on an input of shape {ctx.in_shape}: {exc}"
        ) from exc
    if not isinstance(y, torch.Tensor):
        raise SpecError(f"Stage {ctx.index} ({ctx.label}) must return one tensor; got {type(y).__name__}.")
    out = tuple(int(s) for s in y.shape[1:])
    if int(np.prod(out, dtype=np.int64)) == 0 or y.shape[0] != 1:
        raise SpecError(
            f"Stage {ctx.index} ({ctx.label}) maps an input of shape {ctx.in_shape} to an empty or "
            f"batch-changing output of shape {tuple(y.shape[1:])}; use a larger input."
        )
    return out


# ----- chains from user modules ------------------------------------------------

_MODULE_NAMES: tuple[tuple[type, str], ...] = (
    (nn.Linear, "linear"), (nn.Conv1d, "conv1d"), (nn.Conv2d, "conv2d"), (nn.ReLU, "relu"),
    (nn.LeakyReLU, "leaky_relu"), (nn.PReLU, "prelu"), (nn.MaxPool1d, "maxpool1d"), (nn.MaxPool2d, "maxpool2d"),
    (nn.AvgPool1d, "avgpool1d"), (nn.AvgPool2d, "avgpool2d"), (nn.BatchNorm1d, "batchnorm"),
    (nn.BatchNorm2d, "batchnorm"), (nn.GELU, "gelu"), (nn.SiLU, "silu"), (nn.Softplus, "softplus"),
    (nn.Tanh, "tanh"), (nn.Flatten, "flatten"),
)


def _spec_from_module(m: nn.Module, name: str) -> BlockSpec | None:
    """The BlockSpec describing a standard torch module, where one exists (defaults left out)."""
    spec = _full_spec_from_module(m, name)
    if spec is None:
        return None
    defaults = _defaults(spec.block_type)
    if name.endswith(("pool1d", "pool2d")) and spec.params.get("stride") == spec.params["kernel_size"]:
        defaults["stride"] = spec.params["kernel_size"]
    return BlockSpec(name, {k: v for k, v in spec.params.items() if k not in defaults or defaults[k] != v})


def _full_spec_from_module(m: nn.Module, name: str) -> BlockSpec | None:
    def one(v):
        v = tuple(v) if isinstance(v, (tuple, list)) else v
        return v[0] if isinstance(v, tuple) and len(set(v)) == 1 else v

    try:
        if name == "linear":
            return BlockSpec(name, out_features=m.out_features, bias=m.bias is not None)
        if name in ("conv1d", "conv2d"):
            if m.groups != 1 or isinstance(m.padding, str) or m.padding_mode != "zeros":
                return None
            return BlockSpec(name, out_channels=m.out_channels, kernel_size=one(m.kernel_size), stride=one(m.stride),
                             padding=one(m.padding), dilation=one(m.dilation), bias=m.bias is not None)
        if name == "leaky_relu":
            return BlockSpec(name, negative_slope=m.negative_slope)
        if name == "prelu":
            return BlockSpec(name, alpha=float(m.weight.detach().reshape(-1)[0])) if m.weight.numel() == 1 else None
        if name.startswith(("maxpool", "avgpool")):
            if name.startswith("maxpool") and one(m.dilation) not in (1, (1, 1)):
                return None
            if name.startswith("avgpool") and (not m.count_include_pad or getattr(m, "divisor_override", None)):
                return None
            return BlockSpec(name, kernel_size=one(m.kernel_size), stride=one(m.stride), padding=one(m.padding),
                             ceil_mode=m.ceil_mode)
        if name == "batchnorm":
            return BlockSpec(name, eps=m.eps, affine=m.affine)
        if name == "gelu":
            return BlockSpec(name, approximate=m.approximate)
        if name == "softplus":
            return BlockSpec(name, beta=float(m.beta))
        if name == "flatten":
            return BlockSpec(name) if m.start_dim == 1 and m.end_dim == -1 else None
        return BlockSpec(name)
    except Exception:  # a module setting that the registry cannot express
        return None


def _chain_from_module(module: nn.Module, input_shape: tuple[int, ...]) -> Chain:
    module = copy.deepcopy(module).to(torch.float64).eval()
    children = list(module.children()) if isinstance(module, nn.Sequential) else [module]
    if not children:
        raise SpecError("The nn.Sequential is empty: give it at least one module.")
    stages = []
    shape = input_shape
    for i, child in enumerate(children, start=1):
        name = next((n for cls, n in _MODULE_NAMES if type(child) is cls or isinstance(child, cls)), None)
        spec = _spec_from_module(child, name) if name else None
        ctx = _StageContext(index=i, label=str(spec) if spec is not None else type(child).__name__, in_shape=shape)
        out_shape = _probe(child, ctx)
        bt = BLOCKS.get(name) if name else None
        fans = _fans(child) if name in ("linear", "conv1d", "conv2d") else (None, None)
        stages.append(
            Stage(index=i, name=name or type(child).__name__.lower(), spec=spec, module=child, in_shape=shape,
                  out_shape=out_shape, piecewise_linear=bt.piecewise_linear if bt else None,
                  creates_kinks=bt.creates_kinks if bt else None, fan_in=fans[0], fan_out=fans[1], from_module=True)
        )
        shape = out_shape
    return Chain(stages, input_shape)
