"""Training and held-out SMP samples of block families, over several block configurations.

:func:`block_samples` runs :func:`smpstats.simulate` for each configuration of
the requested block families and keeps the rows of the block of interest (the
last stage; a configuration may put a block in front, e.g. a conv before a max
pool, so that the pooling windows see correlated neighbours as in real
networks). The ``"train"`` and ``"holdout"`` splits use different
configurations (kernel sizes, slopes, widths, input shapes, contexts) and
different seeds, so that held-out checks test generalisation to unseen
configurations, as a user predicting a new architecture needs.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np
import pandas as pd

from ._validation import check_int
from .errors import InputError
from .inputs import InputFamily, KinkedInputs, SmoothInputs

__all__ = ["BlockConfig", "CONFIGS", "block_samples", "BLOCK_FAMILIES", "configs_digest"]


@dataclass(frozen=True)
class BlockConfig:
    """One configuration: a spec whose last block is the block of interest, an input shape and family."""

    spec: str
    input_shape: tuple[int, ...]
    path: str  # "smooth" or "kinked"

    def family(self) -> InputFamily:
        # Kinks large and sparse enough to stay above the grid's detection limit after a block.
        return SmoothInputs() if self.path == "smooth" else KinkedInputs(kink_rate=(0.5, 10.0), jump_ratio=(0.3, 2.0))

    @property
    def label(self) -> str:
        return f"{self.spec} [{self.path}, input {self.input_shape}]"


_C = BlockConfig
_CONV3 = "conv1d(out_channels=8, kernel_size=3)"
_CONV5 = "conv1d(out_channels=8, kernel_size=5)"
_CONV2D = "conv2d(out_channels=4, kernel_size=3)"
_LIN = "linear(out_features=16)"

#: Configurations per family and split. Each family's training split mixes blocks on their own and after
#: another block (``chained``), smooth and kinked inputs, 1-D and 2-D layers, so that the spread between
#: configurations, which a new configuration draws from, is learnt from 6-8 of them. The held-out split has 9-10
#: per family, new blocks and new contexts (a leaky ReLU or batch norm before, a conv before a pooling, a max pool
#: before a ReLU), so that a family's per-trial coverage is not decided by 4-5 configurations whose trials fall
#: inside or outside their intervals together.
CONFIGS: dict[str, dict[str, tuple[BlockConfig, ...]]] = {
    "relu": {
        "train": (_C("relu", (8, 64), "smooth"), _C("relu", (8, 64), "kinked"), _C(f"{_CONV3} | relu", (8, 64), "smooth"),
                  _C(f"{_LIN} | relu", (16,), "smooth"), _C(f"{_CONV2D} | relu", (2, 16, 16), "smooth"),
                  _C("batchnorm | relu", (8, 64), "kinked"), _C("avgpool1d(kernel_size=2) | relu", (8, 64), "kinked"),
                  _C("relu | linear(out_features=24) | relu", (16,), "smooth")),
        "holdout": (_C("relu", (16, 32), "smooth"), _C("relu", (4, 64), "kinked"), _C(f"{_CONV5} | relu", (8, 64), "smooth"),
                    _C("linear(out_features=32) | relu", (8,), "smooth"), _C("conv1d(out_channels=4, kernel_size=3) | relu",
                                                                             (8, 64), "kinked"),
                    _C("avgpool1d(kernel_size=3) | relu", (8, 64), "kinked"),
                    _C("conv2d(out_channels=8, kernel_size=3) | relu", (3, 16, 16), "smooth"),
                    _C("linear(out_features=8) | relu", (32,), "kinked"), _C("maxpool2d(kernel_size=2) | relu", (3, 16, 16), "smooth"),
                    _C("conv1d(out_channels=16, kernel_size=3) | relu", (4, 64), "kinked")),
    },
    "leaky_relu": {
        "train": (_C("leaky_relu(negative_slope=0.01)", (8, 64), "smooth"), _C("leaky_relu(negative_slope=0.1)", (8, 64), "kinked"),
                  _C("leaky_relu(negative_slope=0.3)", (8, 64), "smooth"), _C("prelu(alpha=0.25)", (8, 64), "kinked"),
                  _C(f"{_CONV3} | leaky_relu(negative_slope=0.1)", (8, 64), "smooth"),
                  _C(f"{_LIN} | leaky_relu(negative_slope=0.02)", (16,), "kinked"),
                  _C(f"{_CONV2D} | prelu(alpha=0.25)", (2, 16, 16), "smooth"),
                  _C("leaky_relu(negative_slope=0.1) | linear(out_features=24) | leaky_relu(negative_slope=0.1)", (16,),
                     "smooth")),
        "holdout": (_C("leaky_relu(negative_slope=0.05)", (8, 64), "kinked"), _C("leaky_relu(negative_slope=0.2)", (8, 64), "smooth"),
                    _C("prelu(alpha=0.15)", (8, 64), "smooth"), _C(f"{_CONV5} | leaky_relu(negative_slope=0.05)", (8, 64), "smooth"),
                    _C("linear(out_features=32) | leaky_relu(negative_slope=0.2)", (8,), "kinked"),
                    _C("leaky_relu(negative_slope=0.02)", (16, 32), "kinked"), _C("prelu(alpha=0.05)", (3, 16, 16), "smooth"),
                    _C("conv2d(out_channels=8, kernel_size=3) | leaky_relu(negative_slope=0.1)", (2, 16, 16), "kinked"),
                    _C("batchnorm | leaky_relu(negative_slope=0.3)", (8, 64), "smooth"),
                    _C("avgpool1d(kernel_size=2) | prelu(alpha=0.1)", (8, 64), "kinked")),
    },
    "maxpool": {
        "train": (_C("maxpool1d(kernel_size=2)", (8, 64), "smooth"), _C("maxpool1d(kernel_size=3)", (8, 64), "kinked"),
                  _C("maxpool2d(kernel_size=2)", (3, 16, 16), "smooth"), _C(f"{_CONV3} | maxpool1d(kernel_size=2)", (8, 64), "smooth"),
                  _C("relu | maxpool1d(kernel_size=2)", (8, 64), "smooth"), _C(f"{_CONV2D} | maxpool2d(kernel_size=2)", (2, 16, 16), "smooth"),
                  _C(f"{_CONV3} | relu | maxpool1d(kernel_size=3)", (4, 64), "smooth")),
        "holdout": (_C("maxpool1d(kernel_size=4)", (8, 64), "smooth"), _C("maxpool2d(kernel_size=2)", (3, 16, 16), "kinked"),
                    _C(f"{_CONV5} | maxpool1d(kernel_size=3)", (8, 64), "smooth"),
                    _C("relu | maxpool2d(kernel_size=2)", (3, 16, 16), "smooth"),
                    _C("conv1d(out_channels=4, kernel_size=3) | relu | maxpool1d(kernel_size=4)", (4, 64), "kinked"),
                    _C("maxpool1d(kernel_size=6)", (8, 64), "kinked"), _C("maxpool1d(kernel_size=5)", (8, 64), "smooth"),
                    _C(f"{_CONV2D} | relu | maxpool2d(kernel_size=2)", (2, 16, 16), "smooth"),
                    _C("leaky_relu(negative_slope=0.1) | maxpool1d(kernel_size=2)", (8, 64), "smooth"),
                    _C("batchnorm | maxpool1d(kernel_size=3)", (8, 64), "kinked")),
    },
    "affine": {
        "train": (_C(_CONV3, (4, 64), "kinked"), _C(_LIN, (16,), "kinked"), _C(f"relu | {_CONV3}", (4, 64), "smooth"),
                  _C(f"relu | {_LIN}", (16,), "smooth"), _C(_CONV2D, (2, 16, 16), "kinked"),
                  _C("maxpool1d(kernel_size=2) | conv1d(out_channels=4, kernel_size=5)", (4, 64), "smooth"),
                  _C("linear(out_features=8)", (32,), "kinked")),
        "holdout": (_C("conv1d(out_channels=16, kernel_size=5)", (2, 64), "kinked"), _C("linear(out_features=32)", (24,), "kinked"),
                    _C(f"relu | {_CONV2D}", (2, 16, 16), "smooth"), _C("relu | linear(out_features=8)", (32,), "smooth"),
                    _C("maxpool1d(kernel_size=2) | conv1d(out_channels=8, kernel_size=3)", (4, 64), "smooth"),
                    _C("conv1d(out_channels=4, kernel_size=7)", (8, 64), "kinked"),
                    _C("leaky_relu(negative_slope=0.1) | linear(out_features=16)", (16,), "smooth"),
                    _C("relu | conv1d(out_channels=16, kernel_size=3)", (4, 64), "smooth"),
                    _C("avgpool1d(kernel_size=2) | conv1d(out_channels=8, kernel_size=3)", (4, 64), "kinked"),
                    _C("conv2d(out_channels=8, kernel_size=3)", (3, 16, 16), "kinked")),
    },
    "avgpool": {
        "train": (_C("avgpool1d(kernel_size=2)", (8, 64), "kinked"), _C("avgpool1d(kernel_size=3)", (8, 64), "kinked"),
                  _C("relu | avgpool1d(kernel_size=2)", (8, 64), "smooth"), _C("relu | avgpool2d(kernel_size=2)", (3, 16, 16), "smooth"),
                  _C("avgpool1d(kernel_size=5)", (8, 64), "kinked"), _C("maxpool1d(kernel_size=2) | avgpool1d(kernel_size=2)", (8, 64), "smooth"),
                  _C("conv1d(out_channels=4, kernel_size=5) | avgpool1d(kernel_size=3)", (8, 64), "kinked")),
        "holdout": (_C("avgpool1d(kernel_size=4)", (8, 64), "kinked"), _C("avgpool2d(kernel_size=2)", (3, 16, 16), "kinked"),
                    _C("relu | avgpool1d(kernel_size=3)", (8, 64), "smooth"),
                    _C("leaky_relu(negative_slope=0.1) | avgpool1d(kernel_size=2)", (8, 64), "smooth"),
                    _C("avgpool1d(kernel_size=8)", (8, 64), "kinked"),
                    _C("maxpool2d(kernel_size=2) | avgpool2d(kernel_size=2)", (3, 16, 16), "smooth"),
                    _C("prelu(alpha=0.25) | avgpool1d(kernel_size=4)", (8, 64), "smooth"),
                    _C("relu | avgpool1d(kernel_size=5)", (4, 64), "smooth"),
                    _C("conv1d(out_channels=8, kernel_size=3) | avgpool1d(kernel_size=2)", (4, 64), "kinked")),
    },
    "batchnorm": {
        "train": (_C("batchnorm", (8, 64), "kinked"), _C("relu | batchnorm", (8, 64), "smooth"),
                  _C(f"{_CONV3} | batchnorm", (4, 64), "kinked"), _C("leaky_relu(negative_slope=0.1) | batchnorm", (8, 64), "smooth"),
                  _C("maxpool1d(kernel_size=2) | batchnorm", (8, 64), "smooth"), _C("batchnorm", (3, 16, 16), "kinked")),
        "holdout": (_C("batchnorm", (16, 32), "kinked"), _C("relu | batchnorm", (4, 64), "smooth"),
                    _C(f"{_CONV5} | batchnorm", (4, 64), "kinked"), _C("prelu(alpha=0.2) | batchnorm", (8, 64), "smooth"),
                    _C("avgpool1d(kernel_size=2) | batchnorm", (8, 64), "kinked"),
                    _C("leaky_relu(negative_slope=0.05) | batchnorm", (16, 32), "smooth"),
                    _C("maxpool1d(kernel_size=3) | batchnorm", (8, 64), "smooth"), _C("maxpool2d(kernel_size=2) | batchnorm", (3, 16, 16), "smooth"),
                    _C(f"{_CONV2D} | batchnorm", (2, 16, 16), "kinked")),
    },
    "smooth": {
        "train": (_C("gelu", (8, 64), "kinked"), _C("tanh", (8, 64), "kinked"), _C("relu | silu", (8, 64), "smooth"),
                  _C("relu | tanh", (8, 64), "smooth"), _C("softplus(beta=2)", (8, 64), "kinked"),
                  _C("maxpool1d(kernel_size=2) | gelu", (8, 64), "smooth"), _C("relu | softplus", (3, 16, 16), "smooth")),
        "holdout": (_C("softplus", (8, 64), "kinked"), _C("silu", (8, 64), "kinked"), _C("relu | gelu", (8, 64), "smooth"),
                    _C("maxpool1d(kernel_size=3) | silu", (8, 64), "smooth"), _C("relu | softplus(beta=2)", (8, 64), "smooth"),
                    _C("gelu(approximate=tanh)", (8, 64), "kinked"), _C("softplus(beta=0.5)", (8, 64), "kinked"),
                    _C("maxpool1d(kernel_size=2) | tanh", (8, 64), "smooth"),
                    _C("leaky_relu(negative_slope=0.1) | gelu", (8, 64), "smooth"), _C("leaky_relu(negative_slope=0.2) | softplus", (3, 16, 16), "smooth")),
    },
}

#: Families with configurations, in a stable order.
BLOCK_FAMILIES = tuple(CONFIGS)
_SPLITS = ("train", "holdout")

#: Columns that :func:`block_samples` adds about the stage before the block of interest.
CONTEXT_COLUMNS = ("prev_block_spec", "prev_fan_in")


def configs_digest(split: str) -> str:
    """Short hex digest of a split's configurations and of the measured and context columns.

    It names cached samples and models built from them, so that other
    configurations or a table that measures other statistics
    (:data:`smpstats.simulation.STAT_COLUMNS`, :data:`CONTEXT_COLUMNS`) never reuse stale files.
    """
    from .simulation import STAT_COLUMNS

    if split not in _SPLITS:
        raise InputError(f"split must be 'train' or 'holdout'; got {split!r}.")
    key = repr(({f: c[split] for f, c in CONFIGS.items()}, STAT_COLUMNS, CONTEXT_COLUMNS))
    return hashlib.sha256(key.encode()).hexdigest()[:10]


def _families(families: Any) -> tuple[str, ...]:
    if families is None:
        return BLOCK_FAMILIES
    if isinstance(families, str):
        families = (families,)
    out = tuple(families)
    unknown = [f for f in out if f not in CONFIGS]
    if unknown or not out:
        raise InputError(f"Unknown block families {unknown or out!r}; choose from {', '.join(BLOCK_FAMILIES)}.")
    return out


def block_samples(
    families: str | Iterable[str] | None = None,
    split: str = "train",
    n_trials: int = 200,
    seed: int = 0,
    *,
    n_points: int = 512,
    method: str = "grid",
    progress: bool = False,
) -> pd.DataFrame:
    """Simulated SMP samples of block families over their configurations.

    Parameters
    ----------
    families : str or iterable of str, optional
        Families from :data:`BLOCK_FAMILIES` (default all).
    split : {"train", "holdout"}, default="train"
        Which configurations (see :data:`CONFIGS`); the two splits share none
        and use different seeds.
    n_trials : int >= 1, default=200
        Trials per configuration.
    seed : int >= 0, default=0
        Root seed; each (split, family, configuration) gets its own stream.
    n_points : int, default=512
        Grid points per path.
    method : {"grid", "exact"}, default="grid"
        SMP measurement (:func:`smpstats.simulate`); "exact" measures every
        configuration whose blocks are all piecewise linear exactly (no
        grid losses of dense kinks) and the others (smooth activations) on
        the grid; the ``method`` column says which.
    progress : bool, default=False
        Show a progress bar over configurations.

    Returns
    -------
    pandas.DataFrame
        simulate's columns for the block of interest, plus ``source`` (the
        configuration label), the previous stage's ``prev_block_spec`` and
        ``prev_fan_in`` (:func:`smpstats.theory_terms.previous_fan_in`), and ``split``.
    """
    from tqdm.auto import tqdm

    from .blocks import build_chain
    from .simulation import simulate
    from .theory_terms import previous_fan_in, previous_specs

    fams = _families(families)
    if method not in ("grid", "exact"):
        raise InputError(f"method must be 'grid' or 'exact'; got {method!r}.")
    if split not in _SPLITS:
        raise InputError(f"split must be 'train' or 'holdout'; got {split!r}.")
    n_trials = check_int(n_trials, "n_trials", minimum=1)
    seed = check_int(seed, "seed", minimum=0)
    jobs = [(f, i, c) for f in fams for i, c in enumerate(CONFIGS[f][split])]
    tables = []
    for fam, i, cfg in tqdm(jobs, desc=f"block samples ({split})", disable=not progress):
        fam_code = BLOCK_FAMILIES.index(fam)
        config_seed = int(np.random.SeedSequence([seed, _SPLITS.index(split), fam_code, i]).generate_state(1)[0])
        exact = method == "exact" and all(st.piecewise_linear for st in build_chain(cfg.spec, cfg.input_shape).stages)
        df = simulate(cfg.spec, n_trials=n_trials, seed=config_seed, input_shape=cfg.input_shape,
                      path=cfg.family(), n_points=n_points, method="exact" if exact else "grid")
        df["prev_block_spec"] = previous_specs(df).to_numpy()
        df["prev_fan_in"] = previous_fan_in(df).to_numpy()
        df = df[df["stage"] == df["n_stages"]].copy()
        df["source"] = cfg.label
        df["split"] = split
        tables.append(df)
    return pd.concat(tables, ignore_index=True)
