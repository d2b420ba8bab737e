"""Design data for transfer models: theory terms, block configuration and covariates per row.

:func:`design_frame` turns rows of a :func:`smpstats.simulate` table into the
columns that every transfer model reads:

* ``family`` and ``config``: the block family (:data:`~smpstats.theory_terms.FAMILIES`)
  and the block configuration, ``block_spec`` with the previous block as
  context (``"conv1d(...) -> maxpool1d(kernel_size=2)"`` when the block
  follows a conv), the unit of partial pooling;
* ``theory_new``, ``theory_carried``, ``theory``: the analytic expected SMP
  per unit (:func:`~smpstats.theory_terms.theory_terms`);
* ``share_new``: ``theory_new / theory``;
* ``log_rel``: ``log(theory / (sigma_dot_in T))``, the expected SMP relative
  to the input's slope scale (small relative kinks fall below the grid's
  detection limit);
* ``log_res``: ``log(sigma_in / (sigma_dot_in dt))``, grid points per input
  length scale (resolution);
* ``chained``: 1 when the block follows another block in the same trial
  (its input then comes from a block, with correlated neighbours), else 0;
* ``log_units``: log of the number of output units that the SMP per unit
  averages over (``n_measured_out``, else ``n_units_out``, else the product
  of ``out_shape``; NaN when the table says none of these): fewer units,
  more trial-to-trial variance of the per-unit mean;
* ``y``: the observed ``smp_out`` when present.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .errors import InputError
from .theory_terms import previous_specs, theory_terms

__all__ = ["design_frame", "COVARIATES", "units_averaged"]

#: Continuous covariates (besides the theory terms) used by the statistical tiers.
COVARIATES = ("share_new", "log_rel", "log_res", "chained")

#: Relative floor that keeps logs finite for (near-)constant inputs.
_TINY = 1e-300


def units_averaged(samples: pd.DataFrame) -> np.ndarray:
    """Number of output units the SMP per unit of each row averages over, shape (n_rows,); NaN where unknown.

    ``n_measured_out`` (simulations may measure a random subset of a large
    layer), else ``n_units_out``, else the product of ``out_shape`` (a
    tuple or its string, as :func:`smpstats.simulate` writes it).
    """
    out = np.full(len(samples), np.nan)
    for col in ("n_measured_out", "n_units_out"):
        if col in samples.columns:
            v = pd.to_numeric(samples[col], errors="coerce").to_numpy(float)
            out = np.where(np.isnan(out), v, out)
    if "out_shape" in samples.columns and np.isnan(out).any():
        def size(shape: object) -> float:
            dims = shape if isinstance(shape, tuple) else str(shape).strip("()[] ").replace(",", " ").split()
            try:
                return float(np.prod([int(d) for d in dims])) if len(dims) else np.nan
            except ValueError:
                return np.nan
        out = np.where(np.isnan(out), [size(s) for s in samples["out_shape"]], out)
    return np.where(out >= 1, out, np.nan)


def design_frame(samples: pd.DataFrame) -> pd.DataFrame:
    """Design columns of the transfer models for each row of ``samples`` (see module doc).

    Parameters
    ----------
    samples : pandas.DataFrame
        Rows of :func:`smpstats.simulate` tables (one block per row; several
        tables can be concatenated, with a ``source`` column telling them
        apart when their trial numbers overlap).

    Returns
    -------
    pandas.DataFrame
        Same index; ``family``, ``config``, the theory terms, covariates and
        ``y`` (NaN where ``smp_out`` is absent).
    """
    terms = theory_terms(samples)
    if "block_spec" in samples.columns:
        spec = samples["block_spec"].astype(str)
    else:
        spec = samples["block"].astype(str)
    prev = previous_specs(samples)
    config = np.where(prev == "", spec, prev + " -> " + spec)
    sd_in = samples["sigma_dot_in"].to_numpy(float)
    length = samples["path_length"].to_numpy(float)
    theory = terms["theory"].to_numpy()
    scale = np.maximum(sd_in * length, _TINY)
    out = pd.DataFrame(index=samples.index)
    out["family"] = terms["family"]
    out["config"] = config
    out["theory_new"] = terms["theory_new"]
    out["theory_carried"] = terms["theory_carried"]
    out["theory"] = theory
    with np.errstate(divide="ignore", invalid="ignore"):
        out["share_new"] = np.where(theory > 0, terms["theory_new"].to_numpy() / np.where(theory > 0, theory, 1.0), 0.0)
        out["log_rel"] = np.log(np.maximum(theory, _TINY) / scale)
        if "dt" in samples.columns:
            dt = samples["dt"].to_numpy(float)
        elif "n_points" in samples.columns:
            dt = length / (samples["n_points"].to_numpy(float) - 1)
        else:
            raise InputError("samples need a dt or n_points column (grid step) for the resolution covariate.")
        out["log_res"] = np.log(np.maximum(samples["sigma_in"].to_numpy(float), _TINY) / np.maximum(sd_in * dt, _TINY))
    out["chained"] = (prev != "").to_numpy(float)
    out["log_units"] = np.log(units_averaged(samples))
    out["y"] = samples["smp_out"].to_numpy(float) if "smp_out" in samples.columns else np.nan
    return out
