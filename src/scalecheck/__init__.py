"""scalecheck: is badly scaled input why your PyTorch network will not learn?

One call measures per-feature input ranges, the pre-activations of every nonlinearity and
the gradients, and tells whether unnormalized features are stalling training, with the
numbers that prove it and the fix with the fitted statistics.

Example:
    >>> import scalecheck
    >>> from scalecheck.reference import interpolation as ref
    >>> report = scalecheck.diagnose(ref.make_model(), ref.make_loader(), trial=False)
    >>> report.verdict.value
    'stalling'
    >>> fixed = ref.make_model()
    >>> import torch
    >>> model = torch.nn.Sequential(report.standardizer(), fixed)
"""

from ._version import __version__
from .diagnose import diagnose
from .errors import (
    BatchError,
    FindingsError,
    InvalidArgumentError,
    LoaderError,
    LossError,
    MissingDependencyError,
    ModelError,
    ScaleCheckError,
    UnsupportedModelError,
)
from .findings import Finding, Fix, Severity, Verdict
from .measurements import (
    ActivationStats,
    FeatureStats,
    GradientStats,
    InputStats,
    LossStats,
    Measurements,
    TrialArm,
    TrialResult,
)
from .report import Report
from .standardizer import StandardizedModel, Standardizer

__all__ = [
    "ActivationStats",
    "BatchError",
    "FeatureStats",
    "Finding",
    "FindingsError",
    "Fix",
    "GradientStats",
    "InputStats",
    "InvalidArgumentError",
    "LoaderError",
    "LossError",
    "LossStats",
    "Measurements",
    "MissingDependencyError",
    "ModelError",
    "Report",
    "ScaleCheckError",
    "Severity",
    "StandardizedModel",
    "Standardizer",
    "TrialArm",
    "TrialResult",
    "UnsupportedModelError",
    "Verdict",
    "__version__",
    "diagnose",
]
