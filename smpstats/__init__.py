"""smpstats: measure, model and predict the nonsmoothness (SMP) of neural networks.

The SMP of a signal y(t) is the sum of the magnitudes of the peaks of its second
derivative: the total size of all slope jumps along the path. Networks built
from ReLU and max pooling put kinks into their outputs when the input moves
smoothly; smooth processes do not.

Main entry points (imported lazily, so ``import smpstats`` is cheap):

- :func:`smp` — SMP of sampled signals (grid estimator with a resolution check).
- :func:`measure` — SMP of any callable or ``nn.Module`` along an input path.
- :func:`exact_smp` — every kink of a piecewise-linear torch model along straight segments.
- :class:`SegmentPath`, :class:`GaussianProcessPath`, :class:`SequencePath` — input paths.
- :func:`simulate` — SMP samples from torch simulations of building blocks.
- :func:`parse_spec`, :func:`build_chain` — block specifications.
- :class:`SmoothInputs`, :class:`KinkedInputs` — input families for simulations.
- :func:`save_samples`, :func:`load_samples` — Parquet tables with metadata.
- :mod:`theory` — expected SMP and moments of blocks (DESIGN §4).
- :func:`block_samples` — training and held-out samples of block families over configurations.
- :func:`fit`, :func:`load_model` — per-block transfer models (theory, regression, Bayesian) with ``predict``.
- :func:`check` — coverage, CRPS, PIT, LOO of a transfer model on held-out samples.
- :func:`predict_chain` — per-stage predictive SMP of a chain (mean-field moments, kink multiplicity,
  transfer models); :func:`default_model` — the fitted models of the standard blocks;
  :func:`read_chain` — a torch module as a chain of blocks with its given weights.
- :func:`assess` — forensic assessment of a trajectory: piecewise-linear network or smooth plus noise?
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("smpstats")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

_EXPORTS = {
    "smp": "grid",
    "SMPResult": "grid",
    "measure": "measurement",
    "MeasureResult": "measurement",
    "exact_smp": "exact",
    "ExactSMPResult": "exact",
    "InputPath": "paths",
    "PathStats": "paths",
    "SegmentPath": "paths",
    "GaussianProcessPath": "paths",
    "SequencePath": "paths",
    "as_path": "paths",
    "simulate": "simulation",
    "parse_spec": "blocks",
    "format_spec": "blocks",
    "build_chain": "blocks",
    "BlockSpec": "blocks",
    "Chain": "blocks",
    "block_help": "blocks",
    "InputFamily": "inputs",
    "SmoothInputs": "inputs",
    "KinkedInputs": "inputs",
    "block_samples": "training_data",
    "fit": "transfer",
    "load_model": "transfer",
    "TransferModel": "transfer",
    "Predictive": "predictive",
    "predict_chain": "chain_prediction",
    "ChainPrediction": "chain_prediction",
    "default_model": "default_models",
    "read_chain": "chain_reading",
    "check": "checks",
    "CheckReport": "checks",
    "assess": "forensics",
    "ForensicReport": "forensics",
    "read_metadata": "io",
    "save_samples": "io",
    "load_samples": "io",
    "theory": None,
    "studies": None,
    "errors": None,
    "processes": None,
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str):
    try:
        module = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'smpstats' has no attribute {name!r}") from None
    if module is None:
        return importlib.import_module(f".{name}", __name__)
    return getattr(importlib.import_module(f".{module}", __name__), name)


def __dir__():
    return __all__
