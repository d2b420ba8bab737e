"""Studies shared by ``smpstats demo`` and ``analyses/`` (numerics only, no I/O).

:func:`sources_of_nonsmoothness` is the first claim of the work: from smooth
inputs, linear maps, convolutions, average pooling, batch norm and smooth
activations create no SMP, while ReLU, LeakyReLU/PReLU and max pooling do,
in the amounts that the theory of DESIGN §4 predicts (Kac-Rice for the
rectifiers, pairwise switching for max pooling over i.i.d. inputs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from . import theory
from .blocks import parse_spec
from .errors import InputError

__all__ = ["STANDARD_BLOCKS", "SourcesStudy", "sources_of_nonsmoothness", "block_theory"]

#: Output SMP above this fraction of the input slope scale (sigma_dot * T) counts as created.
_CREATES_SMP = 0.01

#: (spec, input shape) of the blocks in the study: smooth blocks first.
STANDARD_BLOCKS: tuple[tuple[str, tuple[int, ...]], ...] = (
    ("linear(out_features=64)", (8, 64)),
    ("conv1d(out_channels=8,kernel_size=5)", (8, 64)),
    ("conv2d(out_channels=4,kernel_size=3)", (3, 16, 16)),
    ("avgpool1d(kernel_size=2)", (8, 64)),
    ("batchnorm", (8, 64)),
    ("gelu", (8, 64)),
    ("silu", (8, 64)),
    ("softplus", (8, 64)),
    ("tanh", (8, 64)),
    ("relu", (8, 64)),
    ("leaky_relu(negative_slope=0.1)", (8, 64)),
    ("prelu(alpha=0.25)", (8, 64)),
    ("maxpool1d(kernel_size=2)", (8, 64)),
    ("maxpool1d(kernel_size=4)", (8, 64)),
    ("maxpool2d(kernel_size=2)", (3, 16, 16)),
)


def block_theory(spec: str, mu, sigma, sigma_dot, length, smp_in=0.0):
    """Expected output SMP per unit of one block on stationary Gaussian inputs.

    ``mu``, ``sigma``, ``sigma_dot`` describe each input unit (i.i.d. units
    for max pooling); ``smp_in`` is the mean input SMP per unit. Blocks
    without new kinks (affine maps, smooth activations) return NaN: their
    output SMP from smooth inputs is 0 and from kinked inputs depends on
    weights (see :mod:`smpstats.theory`).
    """
    blocks = parse_spec(spec)
    if len(blocks) != 1:
        raise InputError(f"block_theory takes one block; got a chain of {len(blocks)}: {spec!r}.")
    (block,) = blocks
    p = block.params
    if block.name == "relu":
        return theory.relu_expected_smp(mu, sigma, sigma_dot, length, smp_in)
    if block.name == "leaky_relu":
        return theory.leaky_relu_expected_smp(mu, sigma, sigma_dot, length, smp_in, negative_slope=p.get("negative_slope", 0.01))
    if block.name == "prelu":
        return theory.prelu_expected_smp(mu, sigma, sigma_dot, length, smp_in, weight=p.get("alpha", 0.25))
    if block.name in ("maxpool1d", "maxpool2d"):
        ks = p["kernel_size"]
        k = int(np.prod(ks)) if isinstance(ks, tuple) else ks ** (1 if block.name == "maxpool1d" else 2)
        return theory.maxpool_expected_smp(k, mu, sigma, sigma_dot, length, smp_in)
    shape = np.broadcast_shapes(*(np.shape(v) for v in (mu, sigma, sigma_dot, length, smp_in)))
    # validates the statistics as the theory functions do
    theory.relu_expected_smp(mu, sigma, sigma_dot, length, smp_in)
    return np.full(shape, np.nan) if shape else float("nan")


@dataclass(frozen=True)
class SourcesStudy:
    """Result of :func:`sources_of_nonsmoothness`.

    Attributes
    ----------
    samples : pandas.DataFrame
        One row per block and trial (simulate's columns plus ``theory_smp``).
    table : pandas.DataFrame
        One row per block: mean output SMP per unit and its standard error,
        kinks per unit, the theory's mean and the relative error, and the
        verdict ``creates SMP`` (mean above zero by more than 4 standard
        errors), ``smp_out_rel`` (SMP over the input slope scale sigma_dot * T)
        and the verdict ``creates_smp``: in most trials the output SMP exceeds
        1 % of the input slope scale.
    """

    samples: pd.DataFrame
    table: pd.DataFrame

    def summary(self) -> str:
        lines = ["Sources of nonsmoothness from smooth inputs (per output unit, path length 1):"]
        for _, r in self.table.iterrows():
            th = "" if np.isnan(r.theory_smp) else f"  theory {r.theory_smp:9.4g}  rel. error {r.rel_error:+.1%}"
            lines.append(f"  {r.block_spec:38s} SMP {r.smp_out:9.4g} +- {r.smp_out_sem:.2g}{th}")
        lines.append("Next: smpstats.simulate(...) on other input families; see analyses/ for the full study.")
        return "\n".join(lines)


def sources_of_nonsmoothness(
    n_trials: int = 40,
    seed: int = 0,
    *,
    n_points: int = 512,
    blocks: Sequence[tuple[str, tuple[int, ...]]] = STANDARD_BLOCKS,
    progress: bool = False,
) -> SourcesStudy:
    """Simulate each block on smooth Gaussian-process inputs; compare with theory.

    Parameters
    ----------
    n_trials : int, default=40
        Trials per block (fresh weights and inputs each).
    seed : int, default=0
        Root seed; block ``i`` uses ``seed + i``.
    n_points : int, default=512
        Grid points along each path.
    blocks : sequence of (spec, input_shape)
        Blocks to study.
    progress : bool, default=False
        Show a progress bar per block.

    Returns
    -------
    SourcesStudy
    """
    from .simulation import simulate

    frames = []
    labels = [spec if [b[0] for b in blocks].count(spec) == 1 else f"{spec} on {tuple(shape)}" for spec, shape in blocks]
    for i, ((spec, shape), label) in enumerate(zip(blocks, labels)):
        df = simulate(spec, n_trials=n_trials, seed=seed + i, input_shape=shape, path="smooth",
                      n_points=n_points, progress=progress)
        # The theory uses the family's exact process parameters (the inputs are smooth: smp_in = 0).
        df["theory_smp"] = block_theory(spec, df["family_mu"].to_numpy(), df["family_sigma"].to_numpy(),
                                        df["family_sigma_dot"].to_numpy(), df["path_length"].to_numpy())
        df["study_spec"] = label
        # SMP relative to the input's slope scale: a block that creates kinks gives O(1)
        df["smp_out_rel"] = df["smp_out"] / (df["family_sigma_dot"] * df["path_length"])
        frames.append(df)
    samples = pd.concat(frames, ignore_index=True)
    grouped = samples.groupby("study_spec", sort=False)
    table = pd.DataFrame({
        "block_spec": list(grouped.groups),
        "block": grouped["block"].first().to_numpy(),
        "creates_kinks_declared": grouped["creates_kinks"].first().to_numpy(),
        "n_trials": grouped.size().to_numpy(),
        "smp_in": grouped["smp_in"].mean().to_numpy(),
        "smp_out": grouped["smp_out"].mean().to_numpy(),
        "smp_out_sem": (grouped["smp_out"].std(ddof=1) / np.sqrt(grouped.size())).to_numpy(),
        "kinks_out": grouped["kinks_out"].mean().to_numpy(),
        "theory_smp": grouped["theory_smp"].mean().to_numpy(),
        "smp_out_rel": grouped["smp_out_rel"].mean().to_numpy(),
        "resolved_out": grouped["resolved_out"].mean().to_numpy(),
        "frac_trials_with_smp": grouped["smp_out_rel"].apply(lambda r: float(np.mean(r > _CREATES_SMP))).to_numpy(),
    })
    table["rel_error"] = (table["smp_out"] - table["theory_smp"]) / table["theory_smp"]
    table["creates_smp"] = table["frac_trials_with_smp"] > 0.5
    return SourcesStudy(samples=samples, table=table)
