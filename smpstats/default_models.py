"""Fitted transfer models for the standard blocks: shipped, or built on first use and cached.

:func:`default_model` returns the model that :func:`smpstats.predict_chain`
uses for ``model="regression"`` or ``model="bayes"``:

* ``"regression"`` ships with the package (``smpstats/models/regression.json``,
  a few kB), fitted to :func:`smpstats.block_samples` ``(split="train",
  n_trials=120, seed=0, n_points=2048)`` — all seven block families;
* ``"bayes"`` is built on first use from the same samples (a few minutes:
  simulation, then a NUTS fit) and cached as netCDF in the cache folder
  (``$SMPSTATS_CACHE``, else ``~/.cache/smpstats``); later calls load it.
  The cached file's name carries a digest of the package version and the
  training samples' definition, so that another version or other training
  configurations build their own.

:func:`build_default_model` rebuilds either (it is how the shipped file was
made); pass ``path`` to write it elsewhere.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

from .errors import DataFileError, InputError

__all__ = ["default_model", "build_default_model", "DEFAULT_TRAINING", "cache_dir", "cached_path"]

logger = logging.getLogger(__name__)

#: The training samples of the default models (arguments of :func:`smpstats.block_samples`). 2048 points per
#: path: at 512 the grid misses 10-45 % of the dense, small kinks after an affine block (1-9 % at 2048), and
#: the fitted corrections would learn the grid's losses instead of the blocks' SMP.
DEFAULT_TRAINING = {"split": "train", "n_trials": 120, "seed": 0, "n_points": 2048}

_SHIPPED = Path(__file__).resolve().parent / "models"
_FILES = {"regression": "regression.json", "bayes": "bayes.nc"}


def cache_dir() -> Path:
    """Folder for models built on first use: ``$SMPSTATS_CACHE``, else ``~/.cache/smpstats``."""
    return Path(os.environ.get("SMPSTATS_CACHE") or Path.home() / ".cache" / "smpstats")


def cached_path(kind: str) -> Path:
    """Where a default model of ``kind`` built on first use is cached (see the module doc)."""
    from .io import package_version
    from .training_data import configs_digest

    key = repr((package_version(), sorted(DEFAULT_TRAINING.items()), configs_digest(DEFAULT_TRAINING["split"])))
    name = Path(_FILES[_check_kind(kind)])
    return cache_dir() / f"{name.stem}-{hashlib.sha256(key.encode()).hexdigest()[:10]}{name.suffix}"


def _check_kind(kind: Any) -> str:
    if kind not in _FILES:
        raise InputError(f"default models exist for kind 'regression' or 'bayes'; got {kind!r}.")
    return kind


def build_default_model(kind: str = "regression", path: str | os.PathLike | None = None, *,
                        progress: bool = True, **fit_options: Any):
    """Simulate the default training samples, fit a model of ``kind`` and save it (atomically).

    Parameters
    ----------
    kind : {"regression", "bayes"}
    path : path-like, optional
        Where to write it; default the cache folder (:func:`cache_dir`).
    progress : bool, default=True
        Progress bar over the simulations.
    **fit_options
        Passed to :func:`smpstats.fit`.

    Returns
    -------
    TransferModel
    """
    from .training_data import block_samples
    from .transfer import fit

    kind = _check_kind(kind)
    target = Path(path) if path is not None else cached_path(kind)
    logger.info("Building the default %s transfer model: simulating %s, then fitting (once; cached at %s).",
                kind, DEFAULT_TRAINING, target)
    samples = block_samples(**DEFAULT_TRAINING, progress=progress)
    model = fit(samples, kind=kind, **fit_options)
    target.parent.mkdir(parents=True, exist_ok=True)
    model.save(target)
    return model


def default_model(kind: str = "regression", *, progress: bool = True):
    """The default fitted transfer model of ``kind`` for all standard blocks (shipped, cached or built now)."""
    from .transfer import load_model

    kind = _check_kind(kind)
    shipped, cached = _SHIPPED / _FILES[kind], cached_path(kind)
    if shipped.is_file():
        return load_model(shipped)
    if cached.is_file():
        try:
            return load_model(cached)
        except DataFileError as exc:  # written by another smpstats version, or damaged: rebuild it
            logger.warning("The cached default %s model at %s cannot be used (%s); building it again.", kind, cached,
                           exc)
    return build_default_model(kind, progress=progress)
