"""User-facing errors: what a user can fix raises a :class:`TlbenchError` whose message says what was
wrong and how to fix it, printed by the CLI as one line; anything else is a bug and keeps its traceback."""

from __future__ import annotations


class TlbenchError(Exception):
    """Base class for errors whose message is meant for the user."""


class ConfigError(TlbenchError, ValueError):
    """A configuration value or combination is invalid."""


class DataError(TlbenchError):
    """A dataset is missing, unreadable or too small for the request."""


class ModelError(TlbenchError):
    """A backbone, weight source or freeze plan cannot be built."""


class TrackingError(TlbenchError):
    """The tracking store (MLflow) or study storage cannot be reached or used."""


class TrialFailed(TlbenchError):
    """A trial ended without a result (divergence, out of memory); ``reason`` is logged."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class DivergedError(TrialFailed):
    """The training loss became NaN or infinite."""


class TrialPruned(Exception):
    """Raised by a pruning callback: the trial stops early, its cost is still recorded."""

    def __init__(self, message: str = "pruned", *, epoch: int | None = None) -> None:
        super().__init__(message)
        self.epoch = epoch
