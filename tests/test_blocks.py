"""Tests of smpstats.blocks: spec grammar, registry messages, shapes, init, batch invariance."""

from __future__ import annotations

import copy
import math
import pickle
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch import nn

from smpstats.blocks import (
    BLOCKS,
    BlockSpec,
    Chain,
    as_block_specs,
    block_help,
    build_chain,
    format_spec,
    parse_spec,
)
from smpstats.errors import BlockParameterError, InputError, SpecError, UnknownBlockError

KNOWN = (
    "linear, conv1d, conv2d, relu, leaky_relu, prelu, maxpool1d, maxpool2d, avgpool1d, avgpool2d, "
    "batchnorm, gelu, silu, softplus, tanh, flatten"
)


def full(message: str) -> str:
    """Regex matching exactly ``message``."""
    return "^" + re.escape(message) + "$"


# ---------------------------------------------------------------------------
# grammar
# ---------------------------------------------------------------------------


def test_registry_lists_every_contract_block():
    assert ", ".join(BLOCKS) == KNOWN


def test_parse_bare_and_parametrised_blocks():
    blocks = parse_spec("conv1d(out_channels=16, kernel_size=5)|relu|maxpool1d(kernel_size=2)")
    assert [b.name for b in blocks] == ["conv1d", "relu", "maxpool1d"]
    assert dict(blocks[0].params) == {"out_channels": 16, "kernel_size": 5}
    assert blocks[1].params == {}


def test_parse_is_whitespace_tolerant_and_canonical():
    a = parse_spec("  conv2d ( kernel_size = ( 3 ,3 ) , out_channels=4, ) |gelu(approximate=tanh)|  flatten ")
    b = parse_spec("conv2d(out_channels=4, kernel_size=(3, 3)) | gelu(approximate=tanh) | flatten")
    assert a == b
    # canonical text: registry order, one space after commas, " | " between blocks
    assert format_spec(a) == "conv2d(out_channels=4, kernel_size=(3, 3)) | gelu(approximate=tanh) | flatten"


def test_values_are_typed():
    (b,) = parse_spec("linear(out_features=3, bias=false, init=normal, sigma_w=2, sigma_b=1e-1)")
    assert b.params["out_features"] == 3 and isinstance(b.params["out_features"], int)
    assert b.params["bias"] is False
    assert b.params["init"] == "normal"
    assert b.params["sigma_w"] == 2.0 and isinstance(b.params["sigma_w"], float)
    assert b.params["sigma_b"] == 0.1
    (p,) = parse_spec("maxpool1d(kernel_size=3, stride=none, ceil_mode=True)")
    assert p.params["stride"] is None and p.params["ceil_mode"] is True
    assert p.resolved()["stride"] == 3


def test_blockspec_pickles():
    a = BlockSpec("conv2d", out_channels=2, kernel_size=(3, 1))
    assert pickle.loads(pickle.dumps(a)) == a and copy.deepcopy(a) == a


def test_blockspec_equality_hash_and_kwargs():
    a = BlockSpec("conv1d", {"kernel_size": 3, "out_channels": 2})
    b = BlockSpec("conv1d", out_channels=2, kernel_size=3)
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert str(a) == "conv1d(out_channels=2, kernel_size=3)"
    assert repr(a) == "BlockSpec('conv1d(out_channels=2, kernel_size=3)')"
    with pytest.raises(TypeError):
        a.params["stride"] = 2  # read-only mapping
    with pytest.raises(AttributeError):
        a.name = "relu"


def test_as_block_specs_accepts_mixed_sequences():
    got = as_block_specs([BlockSpec("relu"), "maxpool1d(kernel_size=2) | tanh"])
    assert format_spec(got) == "relu | maxpool1d(kernel_size=2) | tanh"
    assert as_block_specs(BlockSpec("tanh")) == (BlockSpec("tanh"),)


def _value_strategy(p):
    if p.kind == "int":
        base = st.integers(int(p.minimum), int(p.minimum) + 40)
    elif p.kind == "size":
        one = st.integers(int(p.minimum), int(p.minimum) + 9)
        base = st.one_of(one, st.tuples(one, one)) if p.ndim == 2 else one
    elif p.kind == "float":
        low = p.minimum if p.minimum is not None else -1e6
        base = st.floats(low, 1e6, allow_nan=False, allow_infinity=False, exclude_min=p.strict)
    elif p.kind == "bool":
        base = st.booleans()
    else:
        base = st.sampled_from(p.choices)
    return st.one_of(st.none(), base) if p.optional else base


@st.composite
def block_specs(draw):
    block = BLOCKS[draw(st.sampled_from(list(BLOCKS)))]
    params = {}
    for p in block.params:
        if p.required or draw(st.booleans()):
            params[p.name] = draw(_value_strategy(p))
    try:
        return BlockSpec(block.name, params)
    except BlockParameterError:  # cross-parameter rules (pool padding, sigma_w with kaiming)
        assume(False)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(st.lists(block_specs(), min_size=1, max_size=4), st.lists(st.sampled_from(["", " ", "  ", "\t"]), min_size=8, max_size=8))
def test_grammar_round_trip(blocks, spaces):
    text = format_spec(blocks)
    parsed = parse_spec(text)
    assert parsed == tuple(blocks)
    assert format_spec(parsed) == text
    # the same text with whitespace moved around parses to the same blocks
    tokens = re.split(r"\s+", text)
    spaced = "".join(tok + spaces[i % len(spaces)] for i, tok in enumerate(tokens))
    assert parse_spec(spaced.replace(", ", ",")) == parsed
    assert parse_spec(spaces[0] + text.replace("|", spaces[1] + "|" + spaces[2]) + spaces[3]) == parsed


# ---------------------------------------------------------------------------
# messages (made from the parameter tables)
# ---------------------------------------------------------------------------

ERRORS = [
    ("maxpool1d(kernel_size=0)", BlockParameterError, "The 'kernel_size' parameter of maxpool1d must be an int >= 1. Got 0."),
    (
        "maxpool2d(kernel_size=0)",
        BlockParameterError,
        "The 'kernel_size' parameter of maxpool2d must be an int >= 1 or a tuple of 2 ints >= 1. Got 0.",
    ),
    (
        "conv2d(out_channels=2, kernel_size=(1, 2, 3))",
        BlockParameterError,
        "The 'kernel_size' parameter of conv2d must be an int >= 1 or a tuple of 2 ints >= 1. Got (1, 2, 3).",
    ),
    ("linear(out_features=2.5)", BlockParameterError, "The 'out_features' parameter of linear must be an int >= 1. Got 2.5."),
    ("conv1d(out_channels=2, kernel_size=3, bias=1)", BlockParameterError,
     "The 'bias' parameter of conv1d must be true or false. Got 1."),
    ("conv1d(out_channels=2, kernel_size=3, padding=-1)", BlockParameterError,
     "The 'padding' parameter of conv1d must be an int >= 0. Got -1."),
    ("softplus(beta=0)", BlockParameterError, "The 'beta' parameter of softplus must be a float > 0.0. Got 0."),
    ("leaky_relu(negative_slope=nan)", BlockParameterError,
     "The 'negative_slope' parameter of leaky_relu must be a finite float. Got nan."),
    ("gelu(approximate=exact)", BlockParameterError,
     "The 'approximate' parameter of gelu must be one of 'none', 'tanh'. Got 'exact'."),
    ("linear(out_features=2, init=he)", BlockParameterError,
     "The 'init' parameter of linear must be one of 'kaiming', 'xavier', 'normal' or none. Got 'he'."),
    ("linear(out_features=2, sigma_w=-1)", BlockParameterError,
     "The 'sigma_w' parameter of linear must be a float >= 0.0 or none. Got -1."),
    (
        "linear(out_features=3, init=kaiming, sigma_w=1.0)",
        BlockParameterError,
        "The 'sigma_w' parameter of linear only applies with init=normal. Got sigma_w=1.0 with init=kaiming; "
        "drop sigma_w or pass init=normal.",
    ),
    (
        "maxpool1d(kernel_size=2, padding=2)",
        BlockParameterError,
        "The 'padding' parameter of maxpool1d must be at most half of kernel_size. Got padding=2 with kernel_size=2.",
    ),
    ("conv1d(out_channels=2)", BlockParameterError,
     "The 'kernel_size' parameter of conv1d is required: pass an int >= 1, e.g. conv1d(kernel_size=2)."),
    ("maxpool1d(kernel_size=2, kernel_size=3)", BlockParameterError,
     "The 'kernel_size' parameter of maxpool1d is given twice."),
    ("rleu", UnknownBlockError, f"Unknown block 'rleu'. Did you mean 'relu'? Known blocks: {KNOWN}."),
    ("Conv1d(out_channels=2, kernel_size=3)", UnknownBlockError,
     f"Unknown block 'Conv1d'. Did you mean 'conv1d'? Known blocks: {KNOWN}."),
    ("sigmoid", UnknownBlockError, f"Unknown block 'sigmoid'. Known blocks: {KNOWN}."),
    (
        "conv1d(out_channels=2, kernel=3)",
        BlockParameterError,
        "Unknown parameter 'kernel' for conv1d. Did you mean 'kernel_size'? Allowed parameters: out_channels, "
        "kernel_size, stride, padding, dilation, bias, init, sigma_w, sigma_b.",
    ),
    ("batchnorm(momentum=0.1)", BlockParameterError,
     "Unknown parameter 'momentum' for batchnorm. Allowed parameters: eps, affine."),
    ("relu(inplace=true)", BlockParameterError, "Unknown parameter 'inplace' for relu: relu takes no parameters."),
    ("", SpecError, "The spec is empty: name at least one block, e.g. 'relu' or "
                    "'conv1d(out_channels=8, kernel_size=3) | relu'."),
    ("relu |", SpecError, "Cannot parse the spec at position 6: expected a block name, found the end of the spec.\n"
                          "  relu |\n        ^"),
    ("relu relu", SpecError, "Cannot parse the spec at position 5: expected '|' between blocks or the end of the "
                             "spec, found 'relu'.\n  relu relu\n       ^"),
    ("conv1d(out_channels 2)", SpecError,
     "Cannot parse the spec at position 20: expected '=' after 'out_channels' (parameters are given as key=value), "
     "found '2'.\n  conv1d(out_channels 2)\n                      ^"),
    ("conv1d(16, 3)", SpecError,
     "Cannot parse the spec at position 7: expected a parameter name (key=value), found '16'.\n"
     "  conv1d(16, 3)\n         ^"),
    ("maxpool1d(kernel_size=2", SpecError,
     "Cannot parse the spec at position 23: expected ',' or ')' after the value of 'kernel_size', found the end "
     "of the spec.\n  maxpool1d(kernel_size=2\n                         ^"),
    ("relu$", SpecError, "Cannot parse the spec at position 4: unexpected character '$'.\n  relu$\n      ^"),
]


@pytest.mark.parametrize("text, error, message", ERRORS, ids=[e[0] or "empty" for e in ERRORS])
def test_spec_error_messages(text, error, message):
    with pytest.raises(error, match=full(message)):
        parse_spec(text)


def test_error_classes_are_value_errors():
    assert issubclass(UnknownBlockError, SpecError) and issubclass(BlockParameterError, ValueError)


def test_programmatic_blockspec_errors():
    with pytest.raises(BlockParameterError, match=full("Unknown parameter 'x' for relu: relu takes no parameters.")):
        BlockSpec("relu", {"x": 1})
    with pytest.raises(BlockParameterError, match=full("The 'kernel_size' parameter of maxpool1d is given twice.")):
        BlockSpec("maxpool1d", {"kernel_size": 2}, kernel_size=2)
    with pytest.raises(UnknownBlockError, match=r"^A block name must be a string; got 3\. Known blocks: linear, "):
        BlockSpec(3)
    with pytest.raises(SpecError, match=full("A spec must be a string such as 'conv1d(out_channels=8, kernel_size=3) | relu'; got int.")):
        parse_spec(3)
    with pytest.raises(SpecError, match=full("A spec must be a string, a BlockSpec, a sequence of them, or a torch nn.Module; got float.")):
        build_chain(1.5, (4,))
    # numpy and list values are accepted and normalised
    assert BlockSpec("conv2d", out_channels=np.int64(2), kernel_size=[3, 3]).params["kernel_size"] == (3, 3)


SHAPE_ERRORS = [
    (
        "conv1d(out_channels=2, kernel_size=5)",
        (8, 3),
        "Stage 1 (conv1d(out_channels=2, kernel_size=5)): the window spans 5 samples (kernel_size=5) but the input "
        "of shape (8, 3) has length 3. Use a smaller kernel_size or dilation, more padding, or a larger input.",
    ),
    (
        "conv1d(out_channels=2, kernel_size=3, padding=1, dilation=4)",
        (1, 5),
        "Stage 1 (conv1d(out_channels=2, kernel_size=3, padding=1, dilation=4)): the window spans 9 samples "
        "(kernel_size=3, dilation=4) but the input of shape (1, 5) has length 5 (7 with padding). Use a smaller "
        "kernel_size or dilation, more padding, or a larger input.",
    ),
    (
        "relu | maxpool2d(kernel_size=(2, 20))",
        (3, 8, 8),
        "Stage 2 (maxpool2d(kernel_size=(2, 20))): the window spans 20 samples (kernel_size=(2, 20)) but the input "
        "of shape (3, 8, 8) has width 8. Use a smaller kernel_size, more padding, or a larger input.",
    ),
    (
        "conv2d(out_channels=2, kernel_size=3)",
        (32,),
        "Stage 1 (conv2d(out_channels=2, kernel_size=3)) needs an input of shape (channels, height, width) but gets "
        "shape (32,). Pass an input_shape of the form (channels, height, width), e.g. (1, 32, 1).",
    ),
    (
        "conv2d(out_channels=2, kernel_size=3)",
        (8, 30),
        "Stage 1 (conv2d(out_channels=2, kernel_size=3)) needs an input of shape (channels, height, width) but gets "
        "shape (8, 30). For one channel pass input_shape=(1, 8, 30); for sequences use conv1d.",
    ),
    (
        "maxpool1d(kernel_size=3)",
        (30,),
        "Stage 1 (maxpool1d(kernel_size=3)) needs an input of shape (channels, length) but gets shape (30,). "
        "For one channel pass input_shape=(1, 30).",
    ),
    (
        "conv2d(out_channels=2, kernel_size=3) | avgpool1d(kernel_size=2)",
        (1, 8, 8),
        "Stage 2 (avgpool1d(kernel_size=2)) needs an input of shape (channels, length) but gets shape (2, 6, 6). "
        "For images use the 2-D block (avgpool2d), or put flatten before avgpool1d.",
    ),
    (
        "batchnorm",
        (2, 3, 4, 5),
        "Stage 1 (batchnorm) needs an input of shape (channels,), (channels, length) or (channels, height, width) "
        "but gets shape (2, 3, 4, 5). Put flatten before batchnorm.",
    ),
]


@pytest.mark.parametrize("spec, shape, message", SHAPE_ERRORS)
def test_shape_errors_at_build_time(spec, shape, message):
    with pytest.raises(SpecError, match=full(message)):
        build_chain(spec, shape)


def test_build_chain_argument_errors():
    with pytest.raises(InputError, match=r"^input_shape must be a non-empty tuple of positive ints without the batch dimension, .*got \(8, 0\)\.$"):
        build_chain("relu", (8, 0))
    with pytest.raises(InputError, match=full("init must be one of 'kaiming', 'xavier', 'normal'; got 'he'.")):
        build_chain("relu", (4,), init="he")
    with pytest.raises(InputError, match=full("sigma_w only applies with init='normal'; got init='kaiming'. Pass init='normal' or drop sigma_w.")):
        build_chain("linear(out_features=2)", (4,), sigma_w=1.0)
    with pytest.raises(InputError, match=full("sigma_b must be a finite float >= 0; got -1.0.")):
        build_chain("linear(out_features=2)", (4,), init="normal", sigma_b=-1.0)
    with pytest.raises(InputError, match=r"^generator must be a torch.Generator, a non-negative int seed, a numpy SeedSequence or None; got 'x'\.$"):
        build_chain("relu", (4,), generator="x")


# ---------------------------------------------------------------------------
# shapes (torch's formulas written out independently)
# ---------------------------------------------------------------------------


def _conv_len(n, k, s=1, p=0, d=1):
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


def _pool_len(n, k, s, p=0, ceil=False):
    num = n + 2 * p - k
    out = (-(-num // s) if ceil else num // s) + 1
    if ceil and (out - 1) * s >= n + p:
        out -= 1
    return out


SHAPES = [
    ("linear(out_features=7)", (5,), (7,)),
    ("linear(out_features=7)", (3, 4, 5), (7,)),
    ("conv1d(out_channels=4, kernel_size=3, stride=2, padding=1, dilation=2)", (2, 17), (4, _conv_len(17, 3, 2, 1, 2))),
    ("conv2d(out_channels=5, kernel_size=(3, 2), stride=(1, 2))", (2, 9, 10), (5, _conv_len(9, 3), _conv_len(10, 2, 2))),
    ("maxpool1d(kernel_size=3)", (2, 10), (2, _pool_len(10, 3, 3))),
    ("maxpool1d(kernel_size=3, stride=2, padding=1, ceil_mode=true)", (2, 10), (2, _pool_len(10, 3, 2, 1, True))),
    ("avgpool1d(kernel_size=4, ceil_mode=true)", (3, 10), (3, _pool_len(10, 4, 4, 0, True))),
    ("maxpool2d(kernel_size=2)", (3, 7, 8), (3, 3, 4)),
    ("avgpool2d(kernel_size=(2, 3), stride=1)", (3, 7, 8), (3, 6, 6)),
    ("batchnorm", (6,), (6,)),
    ("batchnorm", (6, 5), (6, 5)),
    ("batchnorm", (6, 5, 4), (6, 5, 4)),
    ("relu | leaky_relu | prelu | gelu | silu | softplus | tanh", (3, 4), (3, 4)),
    ("flatten", (3, 4, 5), (60,)),
    ("conv2d(out_channels=4, kernel_size=3) | relu | maxpool2d(kernel_size=2) | flatten | linear(out_features=3)",
     (1, 10, 10), (3,)),
]


@pytest.mark.parametrize("spec, in_shape, out_shape", SHAPES)
def test_output_shapes(spec, in_shape, out_shape):
    chain = build_chain(spec, in_shape)
    assert chain.input_shape == in_shape and chain.output_shape == out_shape
    for a, b in zip(chain.stages[:-1], chain.stages[1:]):
        assert a.out_shape == b.in_shape
    y = chain(torch.randn(3, *in_shape, dtype=torch.float64))
    assert y.dtype == torch.float64 and tuple(y.shape) == (3, *out_shape)
    assert all(p.dtype == torch.float64 for p in chain.module.parameters())


def test_chain_accepts_numpy_and_checks_shape():
    chain = build_chain("linear(out_features=2)", (4,))
    assert tuple(chain(np.zeros((5, 4))).shape) == (5, 2)
    with pytest.raises(InputError, match=full("x must have shape (n, *input_shape) = (n, 4); got shape (5, 3).")):
        chain(np.zeros((5, 3)))
    outs = chain.forward_stages(np.zeros((5, 4)))
    assert len(outs) == 1 and tuple(outs[0].shape) == (5, 2)


# ---------------------------------------------------------------------------
# init families
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec, shape, init, kw, w_std, b_std",
    [
        ("linear(out_features=400)", (300,), "kaiming", {}, math.sqrt(2 / 300), 0.0),
        ("linear(out_features=400)", (300,), "xavier", {}, math.sqrt(2 / 700), 0.0),
        ("linear(out_features=400)", (300,), "normal", dict(sigma_w=1.5, sigma_b=0.5), 1.5 / math.sqrt(300), 0.5),
        ("linear(out_features=400)", (300,), "normal", {}, 1 / math.sqrt(300), 0.0),
        ("linear(out_features=400, init=normal, sigma_w=3, sigma_b=2)", (300,), "kaiming", {}, 3 / math.sqrt(300), 2.0),
        ("linear(out_features=400, sigma_b=1)", (300,), "kaiming", {}, 1 / math.sqrt(300), 1.0),
        ("conv1d(out_channels=400, kernel_size=5)", (16, 32), "kaiming", {}, math.sqrt(2 / 80), 0.0),
        ("conv2d(out_channels=400, kernel_size=3)", (4, 8, 8), "xavier", {}, math.sqrt(2 / (36 + 3600)), 0.0),
    ],
)
def test_init_std_matches_formula(spec, shape, init, kw, w_std, b_std):
    chain = build_chain(spec, shape, init=init, generator=1, **kw)
    stage = chain[0]
    w = stage.module.weight.detach().numpy().ravel()
    b = stage.module.bias.detach().numpy()
    assert w.size > 10_000
    assert abs(w.mean()) < 4 * w_std / math.sqrt(w.size)
    assert w.std() == pytest.approx(w_std, rel=4 / math.sqrt(2 * w.size))
    if b_std == 0:
        assert np.all(b == 0)
    else:
        assert b.std() == pytest.approx(b_std, rel=4 / math.sqrt(2 * b.size))
    # recorded effective scales: weight std times sqrt(fan_in), bias std
    assert stage.sigma_w == pytest.approx(w_std * math.sqrt(stage.fan_in))
    assert stage.sigma_b == pytest.approx(b_std)


def test_weights_are_deterministic_and_reinitialise_like_a_fresh_build():
    spec = "conv1d(out_channels=4, kernel_size=3) | batchnorm | relu | flatten | linear(out_features=2)"
    a = build_chain(spec, (2, 9), generator=7)
    b = build_chain(spec, (2, 9), generator=torch.Generator().manual_seed(7))
    c = build_chain(spec, (2, 9), generator=8)
    sa = a.module.state_dict()
    assert all(torch.equal(v, b.module.state_dict()[k]) for k, v in sa.items())
    assert not torch.equal(sa["0.weight"], c.module.state_dict()["0.weight"])
    c.reinitialize(7)
    assert all(torch.equal(v, c.module.state_dict()[k]) for k, v in sa.items())
    # building does not touch torch's global random state
    state = torch.random.get_rng_state()
    build_chain(spec, (2, 9))
    assert torch.equal(state, torch.random.get_rng_state())


def test_batchnorm_is_eval_mode_affine_with_random_statistics():
    chain = build_chain("batchnorm", (3, 5), generator=2)
    bn = chain[0].module
    assert not bn.training and isinstance(bn, nn.BatchNorm1d)
    assert torch.all(bn.running_var > 0)
    x = torch.randn(4, 3, 5, dtype=torch.float64)
    expect = (x - bn.running_mean[:, None]) / torch.sqrt(bn.running_var[:, None] + bn.eps) * bn.weight[:, None] + bn.bias[:, None]
    torch.testing.assert_close(chain(x), expect, rtol=1e-12, atol=1e-12)
    assert isinstance(build_chain("batchnorm(affine=false)", (3, 4, 4))[0].module, nn.BatchNorm2d)


def test_activations_compute_their_formulas():
    x = torch.linspace(-30, 30, 2001, dtype=torch.float64)[:, None]

    def run(spec):
        return build_chain(spec, (1,))(x)

    torch.testing.assert_close(run("gelu"), F.gelu(x), rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(run("gelu(approximate=tanh)"), F.gelu(x, approximate="tanh"), rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(run("silu"), F.silu(x), rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(run("softplus(beta=2)"), torch.log1p(torch.exp(2 * x)) / 2, rtol=1e-13, atol=1e-300)
    torch.testing.assert_close(run("prelu(alpha=0.3)"), torch.where(x > 0, x, 0.3 * x))
    torch.testing.assert_close(run("leaky_relu(negative_slope=0.2)"), torch.where(x > 0, x, 0.2 * x))
    lin = build_chain("linear(out_features=3)", (2, 2), generator=3)
    xx = torch.randn(5, 2, 2, dtype=torch.float64)
    m = lin[0].module
    torch.testing.assert_close(lin(xx), xx.flatten(1) @ m.weight.T + m.bias, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("spec, shape", [
    ("conv1d(out_channels=3, kernel_size=3)", (5, 27)),
    ("conv1d(out_channels=4, kernel_size=5, stride=2, padding=3, dilation=2)", (2, 40)),
    ("conv2d(out_channels=3, kernel_size=3)", (2, 9, 8)),
    ("conv2d(out_channels=2, kernel_size=3, stride=2, padding=1, dilation=2, bias=false)", (3, 11, 12)),
])
def test_convolutions_match_torch(spec, shape):
    """The row-by-row convolutions (batch-invariant) compute what torch's do."""
    chain = build_chain(spec, shape, generator=2)
    m = chain[0].module
    x = torch.randn(7, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    conv = F.conv1d if len(shape) == 2 else F.conv2d
    ref = conv(x, m.weight, m.bias, stride=m.stride, padding=m.padding, dilation=m.dilation)
    torch.testing.assert_close(chain(x), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", list(BLOCKS))
def test_every_block_is_batch_invariant(name):
    """A sample's output is the same bit for bit whatever batch it is evaluated in."""
    spec = {
        "linear": "linear(out_features=5, init=normal, sigma_b=1)",
        "conv1d": "conv1d(out_channels=3, kernel_size=3)",
        "conv2d": "conv2d(out_channels=3, kernel_size=3)",
        "maxpool1d": "maxpool1d(kernel_size=2)",
        "maxpool2d": "maxpool2d(kernel_size=2)",
        "avgpool1d": "avgpool1d(kernel_size=3)",
        "avgpool2d": "avgpool2d(kernel_size=2)",
    }.get(name, name)
    shape = (3, 6, 7) if "2d" in name else (5, 27)
    chain = build_chain(spec, shape, generator=4)
    x = 3 * torch.randn(150, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    whole = chain(x)
    for size in (3, 7, 65):
        parts = torch.cat([chain(x[i:i + size]) for i in range(0, x.shape[0], size)])
        assert torch.equal(parts, whole), f"{name} differs with batches of {size}"


@pytest.mark.parametrize("in_features, out_features", [(3, 500), (1000, 37), (300, 300)])
def test_linear_is_batch_invariant_for_any_row_position(in_features, out_features):
    chain = build_chain(f"linear(out_features={out_features}, init=normal, sigma_b=1)", (in_features,), generator=5)
    x = torch.randn(200, in_features, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    whole = chain(x)
    for size in (1, 63, 64, 65, 130):
        assert torch.equal(torch.cat([chain(x[i:i + size]) for i in range(0, 200, size)]), whole)
    for shift in (1, 29):
        assert torch.equal(chain(torch.roll(x, shift, 0)), torch.roll(whole, shift, 0))


# ---------------------------------------------------------------------------
# flags, modules, help
# ---------------------------------------------------------------------------


def test_flags():
    kinks = {n for n, t in BLOCKS.items() if t.creates_kinks}
    smooth = {n for n, t in BLOCKS.items() if not t.piecewise_linear}
    assert kinks == {"relu", "leaky_relu", "prelu", "maxpool1d", "maxpool2d"}
    assert smooth == {"gelu", "silu", "softplus", "tanh"}
    assert build_chain("conv1d(out_channels=2, kernel_size=3) | relu | avgpool1d(kernel_size=2)", (1, 8)).piecewise_linear
    assert not build_chain("linear(out_features=2) | tanh", (3,)).piecewise_linear


def test_chain_from_sequential_keeps_weights_and_leaves_module_alone():
    torch.manual_seed(0)
    user = nn.Sequential(nn.Conv1d(2, 3, 3), nn.ReLU(), nn.MaxPool1d(2), nn.Flatten(), nn.Linear(9, 2), nn.Sigmoid())
    user.train()
    chain = build_chain(user, (2, 8))
    assert [s.name for s in chain] == ["conv1d", "relu", "maxpool1d", "flatten", "linear", "sigmoid"]
    assert chain.spec == (
        "conv1d(out_channels=3, kernel_size=3) | relu | maxpool1d(kernel_size=2) | flatten | linear(out_features=2) | Sigmoid"
    )
    assert chain[5].piecewise_linear is None and chain[5].spec is None
    assert all(s.from_module for s in chain) and chain[0].init is None
    # the user's module is untouched: float32, training mode
    assert user[0].weight.dtype == torch.float32 and user.training
    torch.testing.assert_close(chain[0].module.weight, user[0].weight.double())
    chain.reinitialize(5)  # user weights are kept
    torch.testing.assert_close(chain[0].module.weight, user[0].weight.double())
    x = torch.randn(4, 2, 8)
    torch.testing.assert_close(chain(x), user.double()(x.double()))


def test_chain_from_single_module_and_shape_failure():
    chain = build_chain(nn.Linear(4, 3), (4,))
    assert len(chain) == 1 and chain.output_shape == (3,) and str(chain[0].spec) == "linear(out_features=3)"
    with pytest.raises(SpecError, match=r"^Stage 2 \(linear\(out_features=3\)\) fails on an input of shape \(5,\): "):
        build_chain(nn.Sequential(nn.ReLU(), nn.Linear(4, 3)), (5,))


def test_reports():
    chain = build_chain("conv1d(out_channels=2, kernel_size=3) | relu", (1, 8))
    assert repr(chain) == "Chain('conv1d(out_channels=2, kernel_size=3) | relu', input_shape=(1, 8), output_shape=(2, 6))"
    text = chain.summary()
    assert "2. relu: (2, 6) -> (2, 6)  [creates kinks]" in text and text.splitlines()[-1].startswith("Next:")
    frame = chain.to_frame()
    assert list(frame["block"]) == ["conv1d", "relu"] and list(frame["creates_kinks"]) == [False, True]
    assert isinstance(chain, Chain) and len(chain) == 2 and repr(chain[1]) == "Stage(2: relu, (2, 6) -> (2, 6))"
    assert "kernel_size: an int >= 1 or a tuple of 2 ints >= 1 (required)" in block_help("maxpool2d")
    assert block_help().count("\n\n") == len(BLOCKS) - 1


def test_window_counts_kernel_elements_over_the_spatial_dimensions():
    from smpstats.blocks import parse_spec

    windows = [b.window() for b in parse_spec(
        "conv2d(out_channels=2, kernel_size=3) | maxpool1d(kernel_size=4) | maxpool2d(kernel_size=(2, 3)) | relu")]
    assert windows == [9, 4, 6, None]
