"""Per-block transfer models behind one interface (DESIGN §4-5).

``smpstats.fit(samples, kind=...)`` fits a model of how a block turns its
input statistics into output SMP per unit, and returns a
:class:`TransferModel` with a scikit-learn-like surface:

* ``model.predict(inputs, n_draws=1000, seed=0)`` -> :class:`~smpstats.predictive.Predictive`
  (``.draws``, ``.mean()``, ``.interval(prob)``, ``.to_frame()``);
* ``model.save(path)`` and :func:`load_model`;
* ``model.summary()`` and ``model.to_frame()`` (the fitted parameters).

Three tiers:

``"theory"`` (:class:`TheoryTransfer`)
    The analytic expectation (:mod:`smpstats.theory_terms`); no fitting, no
    spread: the draws all equal the theory mean.
``"regression"`` (:class:`smpstats.regression.RegressionTransfer`)
    Per family, a Gamma GLM with log link and the log theory as offset, a
    logistic hurdle for exact zeros, and quantile regression as a
    distribution-free check (statsmodels).
``"bayes"`` (:class:`smpstats.bayes.BayesTransfer`)
    Theory as the mean structure with multiplicative corrections (priors
    centred on 1), partial pooling across block configurations, a dispersion
    model and a hurdle (PyMC; nutpie when installed); keeps its ArviZ
    InferenceData.

Inputs to ``fit`` and ``predict`` are rows of :func:`smpstats.simulate`
tables (one block per row). Model files: JSON for the theory and regression
tiers, netCDF (the InferenceData) for the Bayesian tier; both carry a format
tag, so that :func:`load_model` recognises foreign or damaged files.
"""

from __future__ import annotations

import abc
import json
import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from .errors import DataFileError, InputError
from .io import atomic_write, package_version
from .predictive import Predictive
from .transfer_data import design_frame

__all__ = ["TransferModel", "TheoryTransfer", "fit", "load_model", "KINDS", "FORMAT"]

#: Format tag written into every model file.
FORMAT = "smpstats.transfer"
_FORMAT_VERSION = 1
#: Tiers accepted by :func:`fit`.
KINDS = ("theory", "regression", "bayes")


def check_samples(samples: Any, *, need_y: bool) -> pd.DataFrame:
    """Validate a samples table; return its design frame (rows with y <= 0 or NaN checked)."""
    if not isinstance(samples, pd.DataFrame):
        raise InputError(
            f"samples must be a pandas DataFrame (a table from smpstats.simulate or smpstats.load_samples); "
            f"got {type(samples).__name__}."
        )
    if len(samples) == 0:
        raise InputError("samples is empty; pass at least one row.")
    design = design_frame(samples)
    if need_y:
        y = design["y"].to_numpy()
        if not np.isfinite(y).all() or (y < 0).any():
            raise InputError("smp_out must be finite and >= 0 in every row to fit a transfer model.")
    return design


def _check_draws(n_draws: Any) -> int:
    if isinstance(n_draws, bool) or not isinstance(n_draws, (int, np.integer)) or n_draws < 1:
        raise InputError(f"n_draws must be an int >= 1; got {n_draws!r}.")
    return int(n_draws)


class TransferModel(abc.ABC):
    """A fitted transfer model: predictive distribution of output SMP per unit given a block's input.

    Attributes
    ----------
    kind : str
        "theory", "regression" or "bayes".
    families : tuple of str
        Block families the model knows (others raise on predict).
    warnings : tuple of str
        Problems found while fitting (failed diagnostics); copied into
        every prediction.
    """

    kind: ClassVar[str] = ""
    families: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    @abc.abstractmethod
    def _draws(self, design: pd.DataFrame, n_draws: int, rng: np.random.Generator) -> np.ndarray:
        """Predictive draws (n_rows, n_draws) for a design frame of known families."""

    @abc.abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready parameters (what :meth:`save` writes for the JSON tiers)."""

    @abc.abstractmethod
    def to_frame(self) -> pd.DataFrame:
        """Fitted parameters as a table."""

    def predict(self, inputs: pd.DataFrame, n_draws: int = 1000, seed: int = 0) -> Predictive:
        """Predictive distribution of ``smp_out`` for each row of ``inputs``.

        Parameters
        ----------
        inputs : pandas.DataFrame
            Rows with a block and its input statistics (simulate's columns;
            ``smp_out`` is not needed).
        n_draws : int, default=1000
            Monte Carlo draws per row.
        seed : int, default=0
            Seed of the draws (same seed, same draws, whatever the row order
            of other rows: draws are made family by family from one stream).

        Returns
        -------
        Predictive
        """
        n_draws = _check_draws(n_draws)
        design = check_samples(inputs, need_y=False)
        self._check_families(design)
        draws = self._draws(design, n_draws, np.random.default_rng(seed))
        return Predictive(draws, index=inputs.index, kind=self.kind, warnings=self.warnings)

    def _check_families(self, design: pd.DataFrame) -> None:
        unknown = sorted(set(design["family"]) - set(self.families))
        if unknown:
            raise InputError(
                f"This {self.kind} model was fitted on the block families {', '.join(self.families)}; "
                f"the inputs contain {', '.join(unknown)}. Fit on samples of those blocks too."
            )

    def save(self, path: str | os.PathLike) -> Path:
        """Write the model to ``path`` atomically (JSON); returns the path."""
        doc = {"format": FORMAT, "format_version": _FORMAT_VERSION, "kind": self.kind,
               "package_version": package_version(), "model": self.to_dict()}
        target = Path(os.fspath(path))
        with atomic_write(target) as fh:
            fh.write(json.dumps(doc, indent=1).encode())
        return target

    def summary(self) -> str:
        """Plain-text summary: tier, families, parameters, warnings."""
        lines = [f"{type(self).__name__} ({self.kind}) for block families: {', '.join(self.families)}"]
        lines.append(self.to_frame().to_string(float_format=lambda v: f"{v:.4g}"))
        lines += [f"WARNING: {w}" for w in self.warnings]
        return "\n".join(lines)

    def __repr__(self) -> str:
        warn = f", {len(self.warnings)} warning(s)" if self.warnings else ""
        return f"{type(self).__name__}(families={list(self.families)}{warn})"


class TheoryTransfer(TransferModel):
    """The analytic tier: predictive draws all equal the theory's expected SMP."""

    kind = "theory"

    def __init__(self, families: tuple[str, ...] | None = None):
        from .theory_terms import FAMILIES

        self.families = tuple(sorted(set(FAMILIES.values()))) if families is None else tuple(families)

    def _draws(self, design: pd.DataFrame, n_draws: int, rng: np.random.Generator) -> np.ndarray:
        return np.repeat(design["theory"].to_numpy()[:, None], n_draws, axis=1)

    def to_dict(self) -> dict[str, Any]:
        return {"families": list(self.families)}

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame({"family": list(self.families), "formula": "DESIGN section 4"})

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TheoryTransfer":
        return cls(tuple(d["families"]))


def fit(samples: pd.DataFrame, kind: str = "regression", **options: Any) -> TransferModel:
    """Fit a per-block transfer model to simulated samples.

    Parameters
    ----------
    samples : pandas.DataFrame
        Rows of :func:`smpstats.simulate` tables (any mix of blocks; several
        tables concatenated with :func:`pandas.concat`), with ``smp_out``.
    kind : {"theory", "regression", "bayes"}, default="regression"
        The tier (see the module doc).
    **options
        Passed to the tier: :class:`smpstats.regression.RegressionTransfer`
        (none needed) or :func:`smpstats.bayes.fit_bayes` (``draws``, ``tune``,
        ``chains``, ``seed``, ``sampler``, ``progress``).

    Returns
    -------
    TransferModel
    """
    if kind not in KINDS:
        raise InputError(f"kind must be one of {', '.join(repr(k) for k in KINDS)}; got {kind!r}.")
    design = check_samples(samples, need_y=kind != "theory")
    families = tuple(sorted(set(design["family"])))
    if kind == "theory":
        if options:
            raise InputError(f"kind='theory' takes no options; got {', '.join(options)}.")
        return TheoryTransfer(families)
    if kind == "regression":
        from .regression import RegressionTransfer

        if options:
            raise InputError(f"kind='regression' takes no options; got {', '.join(options)}.")
        return RegressionTransfer.fit_design(design)
    from .bayes import fit_bayes

    return fit_bayes(design, **options)


def _read_json_model(p: Path, raw: bytes) -> TransferModel:
    try:
        doc = json.loads(raw.decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataFileError(f"'{p}' is not a smpstats model file: not valid JSON ({exc}).") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise DataFileError(f"'{p}' is JSON but not a smpstats model file (no format tag {FORMAT!r}).")
    if doc.get("format_version", 0) > _FORMAT_VERSION:
        raise DataFileError(f"'{p}' was written by a newer smpstats (format version {doc['format_version']}); upgrade.")
    kind = doc.get("kind")
    try:
        if kind == "theory":
            return TheoryTransfer.from_dict(doc["model"])
        if kind == "regression":
            from .regression import RegressionTransfer

            return RegressionTransfer.from_dict(doc["model"])
    except (KeyError, TypeError, ValueError) as exc:
        raise DataFileError(f"'{p}' is a damaged {kind} model file: {type(exc).__name__}: {exc}.") from None
    raise DataFileError(f"'{p}' holds an unknown model kind {kind!r}; expected 'theory' or 'regression'.")


def load_model(path: str | os.PathLike) -> TransferModel:
    """Load a model written by ``model.save`` (JSON or netCDF); clear errors for other files."""
    p = Path(os.fspath(path))
    if not p.exists():
        raise DataFileError(f"No model file at '{p}'.")
    if not p.is_file():
        raise DataFileError(f"'{p}' is not a file; pass the path that model.save wrote.")
    try:
        head = p.read_bytes()[:8]
    except OSError as exc:
        raise DataFileError(f"Cannot read '{p}': {exc.strerror}.") from None
    if head.startswith(b"\x89HDF") or head.startswith(b"CDF"):
        from .bayes import BayesTransfer

        return BayesTransfer.load(p)
    return _read_json_model(p, p.read_bytes())
