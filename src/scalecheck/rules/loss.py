"""SC4xx: rules about the loss and the targets (the trial's rules live beside the trial)."""

from __future__ import annotations

import math
from collections.abc import Iterator

from .._format import num, plural
from ..findings import Finding, Fix, Severity
from ..measurements import feature_kappa
from ._registry import Context, Threshold, rule
from .inputs import KAPPA_WARN

AT_BASELINE = Threshold(
    "baseline_margin",
    0.01,
    "A loss within 1% of the constant predictor's (or above it) means the model does no "
    "better than always answering the mean target.",
)
FLAT_OUTPUT = Threshold(
    "prediction_spread",
    1e-3,
    "Predictions whose spread across samples is below 1/1000 of the targets' spread are, "
    "for fitting purposes, the same answer for every input: a network whose first layer "
    "is saturated produces exactly this (spread 0), while a randomly initialized network "
    "on standardized inputs varies its outputs by 1% to 100% of the targets' spread.",
)


@rule(
    "SC401", "loss-at-baseline", Severity.WARNING, "plateau", thresholds=(AT_BASELINE, FLAT_OUTPUT)
)
def loss_at_baseline(ctx: Context) -> Iterator[Finding]:
    """The model's output ignores its input, and its loss is that of a constant predictor.

    What it does:
        Compares the measured loss with the loss of the best constant predictor (the
        targets' variance for squared error, the label entropy for cross-entropy) and the
        spread of the predictions across samples with the spread of the targets. Fires
        when the loss is not below the baseline and the predictions barely vary.

    Why it matters:
        A network that gives the same answer for every input can only learn the mean
        target. This is the plateau users see when inputs are badly scaled: every
        learning rate "trains" to the same loss, the targets' variance.

    Example:
        The reference interpolation network on raw inputs: loss 0.06, baseline 0.0527,
        predictions identical for every x.

    Fix:
        Standardize the input; see the input-layer findings for why the output is flat.

    Known problems:
        Needs a loss with a known baseline (inferred MSE or cross-entropy, or a torch
        MSELoss / CrossEntropyLoss / NLLLoss / BCELoss / BCEWithLogitsLoss as loss_fn; class
        weights and ``pos_weight`` are taken into account, a BCE loss's per-element
        ``weight`` is not, and it gets no baseline).
    """
    loss = ctx.measurements.loss
    if loss is None or loss.value is None or loss.baseline is None:
        return
    if loss.value < loss.baseline * (1 - AT_BASELINE.value):
        return
    if loss.prediction_spread is None or not loss.target_spread:
        return
    ratio = loss.prediction_spread / loss.target_spread
    if ratio >= FLAT_OUTPUT.value:
        return
    yield loss_at_baseline.finding(
        f"The model gives practically the same output for every input (prediction spread "
        f"{num(loss.prediction_spread)} vs target spread {num(loss.target_spread)}); its loss "
        f"{num(loss.value)} is no better than always predicting the mean target "
        f"({num(loss.baseline)}).",
        where="output",
        evidence={
            "loss": loss.value,
            "baseline": loss.baseline,
            "prediction_spread": loss.prediction_spread,
            "target_spread": loss.target_spread,
            "spread_ratio": ratio,
        },
        fix=Fix(
            summary="Make the input reach the output: standardize it.",
            code="model = torch.nn.Sequential(report.standardizer(), model)",
            applicability="retrain after applying",
        ),
    )


@rule("SC402", "non-finite-loss", Severity.ERROR, "other")
def non_finite_loss(ctx: Context) -> Iterator[Finding]:
    """The loss was NaN or infinite on some batches.

    What it does:
        Flags the run when any measured batch's loss is not finite.

    Why it matters:
        The gradients of a non-finite loss are non-finite; one optimizer step ruins the
        weights.

    Example:
        NaN in the inputs or targets; ``log(0)`` in a custom loss.

    Fix:
        Check the inputs and targets for NaN (SC105); compute losses from logits.

    Known problems:
        None known.
    """
    loss = ctx.measurements.loss
    if loss is None or not loss.nonfinite:
        return
    bad = [i for i, v in enumerate(loss.per_batch) if v is None]
    message = (
        f"The loss was NaN or inf on {len(bad)} of {len(loss.per_batch)} measured batches "
        f"(first: batch {bad[0]})"
    )
    # where the non-finite values came from, when scalecheck measured them
    targets = [f for f in loss.targets if f.nonfinite]
    inputs = sum(f.nonfinite for f in ctx.measurements.features)
    causes = []
    if targets:
        total = sum(f.nonfinite for f in targets)
        listed = ", ".join(f"{f.name}: {f.nonfinite}" for f in targets[:3])
        causes.append(f"the targets hold {plural(total, 'NaN or inf value')} ({listed})")
    if inputs:
        causes.append(f"the inputs hold {plural(inputs, 'NaN or inf value')} (SC105)")
    if causes:
        message += ": " + " and ".join(causes)
    summary = "Remove non-finite inputs or targets; compute the loss from logits."
    code = ""
    if targets:
        summary = (
            "Drop or impute the samples whose targets are NaN or inf before training "
            "(a NaN target makes the whole batch's loss and every gradient NaN)."
        )
        code = "keep = torch.isfinite(y).reshape(len(y), -1).all(1)\nx, y = x[keep], y[keep]"
    yield non_finite_loss.finding(
        message + ".",
        where="loss",
        evidence={
            "batches": bad[:64],
            "target_nonfinite": {f.name: f.nonfinite for f in targets[:64]},
            "input_nonfinite": inputs,
        },
        fix=Fix(summary=summary, code=code),
    )


@rule("SC403", "unscaled-regression-target", Severity.ERROR, "target", thresholds=(KAPPA_WARN,))
def unscaled_regression_target(ctx: Context) -> Iterator[Finding]:
    """Regression targets far from unit scale under a squared-error loss.

    What it does:
        For squared-error losses, computes the same ``kappa`` as for input features
        (condition number of ``[[m^2 + s^2, m], [m, 1]]``) for each target column and
        flags columns above ``kappa_warn``.

    Why it matters:
        The output layer must produce values of the targets' scale from unit-scale
        activations: its weights have to grow by orders of magnitude, the loss and its
        gradients are huge at the start, and the bias must learn a large offset slowly.
        House prices in the hundreds of thousands are the classic case.

    Example:
        Targets with mean 2.1e5 and std 9e4 under MSELoss.

    Fix:
        Standardize the targets, train on ``(y - mean) / std``, and invert the transform
        at prediction time: ``y_hat = prediction * std + mean``.

    Known problems:
        Only inferred MSE and torch MSELoss are recognized.
    """
    loss = ctx.measurements.loss
    if loss is None or not loss.targets:
        return
    flagged = [
        t for t in loss.targets if t.std and (feature_kappa(t.mean, t.std) or 0) > KAPPA_WARN.value
    ]
    if not flagged:
        return
    worst = max(flagged, key=lambda t: feature_kappa(t.mean, t.std) or 0)
    means = [t.mean for t in loss.targets]
    stds = [t.std or 1.0 for t in loss.targets]
    yield unscaled_regression_target.finding(
        f"Regression targets are far from unit scale: {worst.name} spans "
        f"[{num(worst.min)}, {num(worst.max)}], mean {num(worst.mean)}, std {num(worst.std)} "
        f"(kappa {num(feature_kappa(worst.mean, worst.std))}).",
        where=worst.name if len(flagged) == 1 else "targets",
        evidence={
            "targets": [
                {"name": t.name, "mean": t.mean, "std": t.std, "min": t.min, "max": t.max}
                for t in flagged[:64]
            ]
        },
        fix=Fix(
            summary="Standardize the targets for training and invert at prediction.",
            code=f"y_scaled = (y - {means[0]!r}) / {stds[0]!r}  # train on this\n"
            f"prediction = model(x) * {stds[0]!r} + {means[0]!r}  # to get back to units",
            applicability="changes the training targets: retrain, and invert predictions",
            values={"mean": means, "std": stds},
        ),
        severity=Severity.ERROR,
    )


@rule("SC404", "loss-broadcasts-targets", Severity.ERROR, "other")
def loss_broadcasts_targets(ctx: Context) -> Iterator[Finding]:
    """The loss compared outputs and targets of different shapes by broadcasting them.

    What it does:
        For elementwise criteria (``MSELoss``, ``L1Loss``, ``SmoothL1Loss``, ``HuberLoss``
        and their functional forms), checks on the first batch whether the model's output
        and the targets have shapes that broadcast to a larger one, such as ``[N, 1]``
        against ``[N]``, which becomes ``[N, N]``. A loss function written by hand is
        watched on its first call for an operation between the output and the targets
        (or values of their shapes computed from them) whose result is larger than both,
        such as ``((output - y) ** 2).mean()``.

    Why it matters:
        The criterion then compares every prediction with every target of the batch, not
        with its own. The mean of ``(p_i - y_j)^2`` over all pairs is least when every
        prediction is the batch's mean target, so the best the network can learn is a
        constant: a stall that looks like a learning-rate or scaling problem. torch only
        warns ("Using a target size ... different to the input size").

    Example:
        ``nn.Linear(8, 1)`` outputs ``[N, 1]`` and the loader yields targets of shape
        ``[N]``; ``nn.MSELoss()(output, y)`` compares ``[N, N]`` pairs.

    Fix:
        Give the targets the output's shape (``y.view_as(output)``, or ``y.unsqueeze(1)``),
        or squeeze the output; then retrain.

    Known problems:
        An intended broadcast (one target row for a whole batch) is flagged too. In a
        hand-written loss, only operations torch dispatches are seen (not numpy), and a
        value derived from the output or the targets is followed only while it keeps
        their shape.
    """
    loss = ctx.measurements.loss
    if loss is None or not loss.broadcast:
        return
    out, tgt, compared = (tuple(s) for s in loss.broadcast)
    yield loss_broadcasts_targets.finding(
        f"The loss compared the output of shape {out} with targets of shape {tgt} by "
        f"broadcasting them to {compared}: every prediction is compared with every target "
        "of the batch, so the best the model can learn is the mean target.",
        where="loss",
        evidence={"output_shape": list(out), "target_shape": list(tgt), "compared": list(compared)},
        fix=Fix(
            summary="Give the targets the output's shape before the loss.",
            code="loss = loss_fn(output, y.view_as(output))",
            applicability="retrain after applying",
        ),
    )


#: What each criterion computes first from its input, and what it expects that input to be.
_CRITERIA = {
    "cross_entropy": ("CrossEntropyLoss", "logits (it applies log_softmax itself)"),
    "bce_with_logits": ("BCEWithLogitsLoss", "logits (it applies a log-sigmoid itself)"),
    "nll": ("NLLLoss", "log-probabilities (log_softmax)"),
}


@rule("SC405", "probabilities-into-logit-loss", Severity.WARNING, "other")
def probabilities_into_logit_loss(ctx: Context) -> Iterator[Finding]:
    """The model's output went through softmax or sigmoid, and the loss expects logits.

    What it does:
        On the first batch, reads the autograd node that produced the output given to
        ``CrossEntropyLoss``, ``BCEWithLogitsLoss`` or ``NLLLoss`` (or their functional
        forms), and flags a softmax or a sigmoid.

    Why it matters:
        ``CrossEntropyLoss`` applies ``log_softmax`` to what it gets; fed probabilities in
        ``[0, 1]`` it cannot go below ``log(1 + (C - 1) / e)`` for ``C`` classes (0.55 for
        3 classes, 1.46 for 10, against 0 for logits), so the model can never be confident
        and its gradients shrink. ``BCEWithLogitsLoss`` on sigmoid outputs cannot go below
        ``log(1 + 1/e) = 0.31`` for a positive label and ``log 2 = 0.69`` for a negative
        one. ``NLLLoss`` on probabilities minimizes ``-p`` instead of ``-log p``: a badly
        classified sample pulls with a gradient of at most 1 instead of ``1/p``. Training
        still moves, slowly and to a worse optimum, which reads like a learning-rate or
        scaling problem.

    Example:
        ``nn.Sequential(..., nn.Linear(64, 10), nn.Softmax(dim=1))`` trained with
        ``nn.CrossEntropyLoss()``.

    Fix:
        Return the logits (remove the final Softmax or Sigmoid) and apply softmax or
        sigmoid only where probabilities are needed, at inference; for ``NLLLoss``, end
        the model with ``LogSoftmax``.

    Known problems:
        Only the operation that produced the output is read: a softmax followed by another
        operation (a scaling, a log) is not flagged.
    """
    loss = ctx.measurements.loss
    if loss is None or not loss.squashed_by:
        return
    function, criterion, classes = loss.squashed_by
    name, expects = _CRITERIA.get(criterion, (criterion, "logits"))
    if criterion == "cross_entropy" and classes >= 2:
        floor = math.log(1 + (classes - 1) / math.e)
        cost = (
            f"with probabilities in [0, 1] as logits the loss cannot go below "
            f"log(1 + (C - 1)/e) = {floor:.3g} for C = {classes} classes, so the model can "
            "never be confident and its gradients shrink"
        )
    elif criterion == "bce_with_logits":
        cost = (
            "with probabilities in [0, 1] as logits the loss cannot go below 0.313 for a "
            "positive label and 0.693 for a negative one"
        )
    elif criterion == "nll":
        cost = (
            "given probabilities it minimizes -p instead of -log p, so a badly classified "
            "sample pulls with a gradient of at most 1 instead of 1/p"
        )
    else:
        cost = "probabilities in [0, 1] are not what it expects"
    fix_code = (
        "# end the model with nn.LogSoftmax(dim=1) instead of nn.Softmax"
        if criterion == "nll"
        else f"# remove the final {function} from the model; apply it at inference only"
    )
    yield probabilities_into_logit_loss.finding(
        f"The model's output comes out of a {function}, and {name} expects {expects}: {cost}.",
        where="loss",
        evidence={"function": function, "criterion": criterion, "classes": classes},
        fix=Fix(
            summary=(
                "End the model with LogSoftmax for NLLLoss."
                if criterion == "nll"
                else f"Return the logits: remove the final {function} (the loss applies it)."
            ),
            code=fix_code,
            applicability="retrain after applying",
        ),
    )
