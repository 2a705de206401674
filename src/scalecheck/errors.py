"""The exceptions scalecheck raises.

Every error scalecheck raises on purpose is a :class:`ScaleCheckError`. Its message names
the argument (or the batch), shows the value that was received and says what to do.
Errors raised by the user's own model, loss or loader are re-raised as a
:class:`ModelError` / :class:`LoaderError` chained to the original (``raise ... from``),
after the model has been restored.

Example:
    >>> import scalecheck
    >>> try:
    ...     scalecheck.diagnose("not a model", [])
    ... except scalecheck.ScaleCheckError as e:
    ...     print(type(e).__name__)
    InvalidArgumentError
"""

from __future__ import annotations

__all__ = [
    "BatchError",
    "FindingsError",
    "InvalidArgumentError",
    "LoaderError",
    "LossError",
    "MissingDependencyError",
    "ModelError",
    "ScaleCheckError",
    "UnsupportedModelError",
]


class ScaleCheckError(Exception):
    """Base class of every error scalecheck raises on purpose."""


class InvalidArgumentError(ScaleCheckError, ValueError):
    """An argument to a scalecheck function has the wrong type or value."""


class LoaderError(ScaleCheckError):
    """The loader could not be iterated, was empty, or raised while producing a batch."""


class BatchError(ScaleCheckError, ValueError):
    """A batch could not be turned into model inputs and targets."""


class ModelError(ScaleCheckError):
    """The model raised while scalecheck ran it (the original exception is chained)."""


class LossError(ScaleCheckError):
    """No loss could be inferred or the given ``loss_fn`` returned something unusable."""


class UnsupportedModelError(ScaleCheckError, TypeError):
    """The model is of a kind scalecheck cannot measure (e.g. a sharded FSDP model)."""


class MissingDependencyError(ScaleCheckError, ImportError):
    """An optional dependency is needed for this feature (the message says which extra)."""


class FindingsError(ScaleCheckError, AssertionError):
    """Raised by ``Report.raise_for_findings`` when findings reach the given severity.

    It is an :class:`AssertionError` too, so test runners report it as a failed check.
    """
