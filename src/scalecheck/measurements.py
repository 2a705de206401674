"""Measurements: the frozen numbers the monitors hand to the rules.

Every record here is an immutable dataclass of plain Python numbers and strings (no
tensors, no numpy arrays), so a report holds no device memory, compares with ``==`` and
round-trips through JSON. ``None`` stands for "not defined" (the std of an empty feature),
never NaN.

The rules read only these records; rendering reads only these records and the findings.

Example:
    >>> f = FeatureStats(name="input[0]", input="input", index=0, count=4, mean=2.5, std=1.1,
    ...                  min=1.0, max=4.0, nonfinite=0, zero_fraction=0.0)
    >>> f.rms
    2.731...
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = [
    "ActivationStats",
    "FeatureStats",
    "GradientStats",
    "Histogram",
    "InputStats",
    "LossStats",
    "Measurements",
    "TrialArm",
    "TrialResult",
    "feature_kappa",
    "kappa_above",
]


def feature_kappa(mean: float | None, std: float | None) -> float | None:
    """Condition number of the second-moment matrix of ``[x, 1]`` for one feature.

    For a linear unit ``w x + b`` under squared loss this 2x2 matrix,
    ``[[mean^2 + std^2, mean], [mean, 1]]``, is the Hessian, and gradient descent needs
    about ``kappa`` times more steps than on a perfectly conditioned problem (LeCun,
    Bottou, Orr & Mueller 1998, "Efficient BackProp", section 5). A standardized feature
    has ``kappa == 1``. Returns ``inf`` for a constant feature, None when undefined.

    Example:
        >>> round(feature_kappa(0.0, 1.0), 6)
        1.0
        >>> f"{feature_kappa(100127.5, 57661.7):.2e}"
        '5.36e+10'
    """
    if mean is None or std is None:
        return None
    var, trace = _var_trace(mean, std)
    if var == 0:
        return math.inf
    disc = max(trace * trace - 4.0 * var, 0.0)
    big = (trace + math.sqrt(disc)) / 2.0
    small = var / big  # det / big eigenvalue: no cancellation
    return big / small if small > 0 else math.inf


def _var_trace(mean: float, std: float) -> tuple[float, float]:
    """The determinant (the variance) and the trace of ``[[mean^2 + std^2, mean], [mean,
    1]]``."""
    var = std * std
    return var, mean * mean + var + 1.0


def kappa_above(mean: float | None, std: float | None, level: float) -> float | None:
    """:func:`feature_kappa` when it exceeds *level*, else None.

    The larger eigenvalue of the 2x2 matrix is below its trace, so ``kappa < trace^2 /
    det``; a feature under *level* on that bound is cleared without the exact value (a
    rule judging 784 features spent 1 ms computing them all).

    Example:
        >>> kappa_above(0.0, 1.0, 1e3) is None
        True
        >>> f"{kappa_above(100127.5, 57661.7, 1e3):.2e}"
        '5.36e+10'
    """
    if mean is None or std is None:
        return None
    var, trace = _var_trace(mean, std)
    # (a trace or variance that overflowed, beyond ~1e154, clears nothing: inf <= inf)
    if math.isfinite(trace) and var > 0 and trace * trace <= level * var:
        return None
    k = feature_kappa(mean, std)
    return k if k is not None and k > level else None


@dataclass(frozen=True, slots=True)
class FeatureStats:
    """Streaming statistics of one input feature (a column, a channel, a last-dim entry)."""

    name: str
    input: str
    index: int
    count: int
    mean: float | None
    std: float | None
    min: float | None
    max: float | None
    nonfinite: int
    zero_fraction: float | None
    log_mean: float | None = None
    log_std: float | None = None

    @property
    def rms(self) -> float | None:
        """Root mean square of the values: ``sqrt(mean^2 + std^2)``."""
        if self.mean is None or self.std is None:
            return None
        return math.sqrt(self.mean * self.mean + self.std * self.std)

    @property
    def kappa(self) -> float | None:
        """:func:`feature_kappa` of this feature."""
        return feature_kappa(self.mean, self.std)

    @property
    def judged_kappa(self) -> float | None:
        """The number the rules hold against their ``kappa`` thresholds: :attr:`kappa` for
        a feature that varies; for one that is the same value ``c`` in every measured
        sample (or was measured once), ``c^2 + 1``, the curved eigenvalue of its singular
        ``[x, 1]`` matrix (rule SC107; its :attr:`kappa` is infinite whatever ``c``).

        Example:
            >>> f = FeatureStats("x[0]", "x", 0, 8, 1000.0, 0.0, 1000.0, 1000.0, 0, 0.0)
            >>> f.kappa, f.judged_kappa
            (inf, 1000001.0)
        """
        if self.std:
            return self.kappa
        if self.std == 0 and self.count >= 1 and self.mean is not None:
            return self.mean * self.mean + 1.0
        return None

    @property
    def positive(self) -> bool:
        """True when every measured value is strictly positive."""
        return self.min is not None and self.min > 0


@dataclass(frozen=True, slots=True)
class InputStats:
    """One tensor the model receives, and its per-feature statistics.

    Attributes:
        name: ``"input"`` for a single-input model, else the forward's parameter name or
            the batch key.
        kind: ``"feature"`` (measured), ``"categorical"`` (ids fed to an embedding) or
            ``"ignored"`` (an integer/bool tensor the model never turns into numbers,
            such as a mask).
        feature_axis: the dimension that indexes features (None: the whole tensor is one).
        kappa: condition number of the second-moment matrix of ``[x, 1]`` over
            ``gram_features`` features, as measured (all of them up to 64; of a wider
            input, the first 64 that vary in the first batch).
        kappa_standardized: the same after standardizing each feature (computed exactly
            from the same state).
        consumer: module that first consumes the input (the *input layer*), and its op.
        normalized_by: set when that consumer is a normalization layer.
        transformed_by: value-changing operations applied between the model's input and
            its first layer (e.g. ``["__truediv__"]`` for ``x / 255``).
        seen_by_layer: when the model transforms the input before its first layer, the
            per-feature statistics of what that layer really receives (the rules judge
            these; the fix is still fitted on the raw input).
        seen_kappa: condition number of ``[x, 1]`` for what the first layer receives.
        blank_positions: for an image flattened whole into the first linear layer (its
            features are then its channels), how many of its ``C x H x W`` positions were
            exactly 0 in every sample (their weight columns never get a gradient; SC301
            leaves them out); None for other inputs.
    """

    name: str
    kind: str
    dtype: str
    shape: tuple[int, ...]
    feature_axis: int | None
    samples: int
    features: tuple[FeatureStats, ...]
    kappa: float | None
    kappa_standardized: float | None
    gram_features: int
    consumer: str | None = None
    consumer_op: str | None = None
    normalized_by: str | None = None
    transformed_by: tuple[str, ...] = ()
    seen_by_layer: tuple[FeatureStats, ...] = ()
    seen_kappa: float | None = None
    blank_positions: int | None = None

    @property
    def judged(self) -> tuple[FeatureStats, ...]:
        """The features the rules judge: what the first layer receives."""
        return self.seen_by_layer or self.features


@dataclass(frozen=True, slots=True)
class Histogram:
    """Counts of ``transform(z)`` in equal bins over ``[lo, hi]`` (values beyond: edge bins)."""

    lo: float
    hi: float
    transform: str
    counts: tuple[int, ...]

    def edges(self) -> tuple[float, ...]:
        """Bin edges in the transformed space."""
        n = len(self.counts)
        return tuple(self.lo + (self.hi - self.lo) * i / n for i in range(n + 1))


@dataclass(frozen=True, slots=True)
class ActivationStats:
    """Pre-activation statistics of one nonlinearity call site.

    ``exact_fraction`` is the fraction of measured values where the derivative is exactly
    zero in ``dtype`` (beyond ``exact_lo`` / ``exact_hi``); ``near_fraction`` the fraction
    where it is below 1% of its maximum. ``input_layer`` marks sites fed (through
    elementwise operations only) by the layer that first consumes the model's input.
    """

    site: str
    module: str
    function: str
    family: str
    dtype: str
    input_layer: bool
    fed_by: str | None
    calls: int
    count: int
    units: int
    exact_lo: float | None
    exact_hi: float | None
    near_lo: float | None
    near_hi: float | None
    exact_fraction: float | None
    near_fraction: float | None
    dead_units: int
    saturated_units: int
    mean: float | None
    std: float | None
    min: float | None
    max: float | None
    unit_mean: tuple[float | None, ...]
    unit_std: tuple[float | None, ...]
    unit_exact_fraction: tuple[float | None, ...]
    histogram: Histogram
    nonfinite: bool
    softmax_rows: int | None = None
    softmax_saturated_fraction: float | None = None
    softmax_near_fraction: float | None = None


@dataclass(frozen=True, slots=True)
class GradientStats:
    """Gradient of the loss with respect to one trainable parameter, over the batches.

    ``grad_norm`` is the root mean square over batches of the per-batch gradient norm;
    ``ratio`` is ``grad_norm / weight_norm``; ``zero_fraction`` the fraction of gradient
    entries that were exactly zero over all batches. ``feature_share`` is, for the input
    layer's weight, each input feature's share of the squared gradient.
    """

    name: str
    module: str
    shape: tuple[int, ...]
    numel: int
    used: bool
    grad_norm: float | None
    grad_rms: float | None
    weight_norm: float | None
    weight_rms: float | None
    ratio: float | None
    zero_fraction: float | None
    nonfinite: bool
    input_layer: bool
    feature_share: tuple[float, ...] = ()


@dataclass(frozen=True, slots=True)
class LossStats:
    """The loss the measurement used and the best constant predictor's loss next to it.

    Attributes:
        kind: ``"mse"``, ``"cross_entropy"``, ``"model"`` (the model's own ``.loss``),
            ``"custom"`` (a ``loss_fn``) or ``"surrogate"`` (no targets).
        value: mean loss over the measured batches, at the model's current weights.
        baseline: loss of the best constant predictor (mean target for MSE, label prior for
            cross-entropy), None when not defined for this loss.
        prediction_spread: mean over output columns of the std of the predictions across
            samples; ``target_spread`` the same for the targets.
        targets: per-column statistics of float targets (at most 64 columns).
        broadcast: for an elementwise criterion (``MSELoss``, ``L1Loss``, ``SmoothL1Loss``,
            ``HuberLoss`` and their functional forms) given an output and targets whose
            shapes broadcast to a larger one on the first batch: ``(output shape, targets
            shape, the shape the criterion compared)``; None otherwise.
        squashed_by: ``(function, criterion, classes)`` when the model's output came out
            of ``"softmax"`` or ``"sigmoid"`` on the first batch and the criterion expects
            logits (``"cross_entropy"``, ``"bce_with_logits"``) or log-probabilities
            (``"nll"``); *classes* is the size of the output's dimension 1 (1 for a 1-D
            output). None otherwise.
    """

    kind: str
    description: str
    value: float | None
    per_batch: tuple[float | None, ...]
    baseline: float | None
    baseline_description: str | None
    prediction_spread: float | None
    target_spread: float | None
    targets: tuple[FeatureStats, ...] = ()
    nonfinite: bool = False
    broadcast: tuple[tuple[int, ...], ...] | None = None
    squashed_by: tuple[str, str, int] | None = None


@dataclass(frozen=True, slots=True)
class Measurements:
    """Everything measured by one ``diagnose`` run."""

    inputs: tuple[InputStats, ...]
    layers: tuple[ActivationStats, ...]
    gradients: tuple[GradientStats, ...]
    loss: LossStats | None
    batches: int
    samples: int
    device: str
    dtype: str
    training: bool
    notes: tuple[str, ...] = ()
    module_types: dict[str, str] = field(default_factory=dict)

    def label(self, module: str | None) -> str:
        """A module path with its type, for messages: ``x_to_hidden (Linear)``."""
        if not module:
            return "?"
        kind = self.module_types.get(module)
        return f"{module} ({kind})" if kind else module

    @property
    def features(self) -> tuple[FeatureStats, ...]:
        """All measured features of all inputs of kind ``"feature"``."""
        return tuple(f for i in self.inputs if i.kind == "feature" for f in i.features)

    def input_layer_sites(self) -> tuple[ActivationStats, ...]:
        """Nonlinearity sites fed by the input layer."""
        return tuple(a for a in self.layers if a.input_layer)

    def input_layer_gradients(self) -> tuple[GradientStats, ...]:
        """Gradients of the input layer's parameters."""
        return tuple(g for g in self.gradients if g.input_layer)


@dataclass(frozen=True, slots=True)
class TrialArm:
    """One arm of the A/B training trial (raw, standardized, or log-standardized inputs).

    Attributes:
        name: ``"raw"``, ``"standardized"`` or ``"log-standardized"``.
        lr: the learning rate of the best run of this arm.
        losses: the loss after each optimizer step of that run (None where not finite).
        initial: loss before the first step.
        final: mean loss over the last steps (see ``TrialResult.tail``).
        finals: final loss for each learning rate tried (``"1e-03" -> 0.05``).
    """

    name: str
    lr: float | None
    losses: tuple[float | None, ...]
    initial: float | None
    final: float | None
    finals: dict[str, float | None]


@dataclass(frozen=True, slots=True)
class TrialResult:
    """Result of the trial: a few optimizer steps per arm on copies of the model.

    ``conclusive`` is False when the time budget stopped the trial before
    ``scalecheck.trial.MIN_STEPS`` steps: its curves are reported, but ``raw_trains`` and
    ``rescaled_helps`` are then both False and no trial finding is drawn from it.
    """

    arms: tuple[TrialArm, ...]
    steps: int
    tail: int
    seconds: float
    baseline: float | None
    loss_kind: str
    optimizer: str
    lrs: tuple[float, ...]
    budget_exhausted: bool
    raw_trains: bool
    rescaled_helps: bool
    conclusive: bool = True

    def arm(self, name: str) -> TrialArm | None:
        """The arm called *name*, if it ran."""
        return next((a for a in self.arms if a.name == name), None)

    def arms_text(self) -> str:
        """``raw 0.149 -> 0.0522 (lr 0.001); standardized ... , baseline 0.0521``."""
        from ._format import num

        parts = [
            f"{a.name} {num(a.initial)} -> {num(a.final)}"
            + (f" (lr {num(a.lr)})" if a.lr is not None else "")
            for a in self.arms
        ]
        base = f", baseline {num(self.baseline)}" if self.baseline is not None else ""
        return "; ".join(parts) + base
