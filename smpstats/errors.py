"""Exception hierarchy of smpstats.

Every error raised on bad user input derives from :class:`SMPStatsError`, and
also from the built-in class a Python user would expect (``ValueError`` for bad
values, ``OSError`` for unreadable files), so that both ``except
smpstats.errors.SMPStatsError`` and ``except ValueError`` work.
"""

from __future__ import annotations

__all__ = [
    "SMPStatsError",
    "InputError",
    "SignalError",
    "TimeGridError",
    "SpecError",
    "UnknownBlockError",
    "BlockParameterError",
    "DataFileError",
    "ModelEvaluationError",
    "ExactSMPError",
    "NotPiecewiseLinearError",
    "TooManyEventsError",
    "ResolutionWarning",
]


class SMPStatsError(Exception):
    """Base class of every error raised by smpstats."""


class InputError(SMPStatsError, ValueError):
    """An argument has a wrong value, type or shape."""


class SignalError(InputError):
    """A signal is unusable: NaN/inf, too few samples, wrong shape or dtype."""


class TimeGridError(InputError):
    """Time stamps or step are invalid: non-uniform, decreasing, non-positive."""


class SpecError(SMPStatsError, ValueError):
    """A block specification string or object cannot be understood."""


class UnknownBlockError(SpecError):
    """A block name is not in the registry."""


class BlockParameterError(SpecError):
    """A block parameter is unknown or has an invalid value."""


class DataFileError(SMPStatsError, OSError):
    """A file cannot be read as the expected smpstats artefact."""


class ModelEvaluationError(SMPStatsError, RuntimeError):
    """A user's model or callable raised while being evaluated along a path."""


class ExactSMPError(SMPStatsError):
    """The exact SMP of a model along a segment cannot be computed (see :func:`smpstats.exact.exact_smp`)."""


class NotPiecewiseLinearError(ExactSMPError, ValueError):
    """A model is not piecewise linear along the path: it calls a smooth, discontinuous,
    random or unsupported op on an input-dependent tensor, or its outputs fail the
    continuity check between regions.

    Attributes
    ----------
    op : str or None
        Name of the offending torch op, when one was identified.
    module : str or None
        Qualified name and class of the submodule that called it, when known.
    """

    def __init__(self, message: str, *, op: str | None = None, module: str | None = None):
        super().__init__(message)
        self.op = op
        self.module = module


class TooManyEventsError(ExactSMPError, RuntimeError):
    """A segment crosses more activation-region boundaries than ``max_events`` allows.

    Attributes
    ----------
    partial : ExactSMPResult
        Kinks found so far: each segment is covered from t = 0 to
        ``partial.t_reached`` (1.0 for the segments that were completed).
    """

    def __init__(self, message: str, *, partial=None):
        super().__init__(message)
        self.partial = partial


class ResolutionWarning(UserWarning):
    """An SMP estimate is not resolved by the sampling step (see ``SMPResult.resolved``)."""
