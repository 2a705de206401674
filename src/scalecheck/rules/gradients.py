"""SC3xx: rules about the gradients."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import NamedTuple

from .._format import num, pct, plural
from ..findings import Finding, Fix, Severity
from ..measurements import GradientStats
from ._registry import Context, Threshold, rule

ZERO = Threshold(
    "zero_fraction",
    0.5,
    "More than half of the input layer's gradient entries are exactly zero on the measured "
    "batches: most of its weights receive no update from any optimizer, whatever the "
    "learning rate.",
)
ADAM_EPS = Threshold(
    "grad_rms",
    1e-8,
    "Adam's update is lr * m / (sqrt(v) + eps) with eps = 1e-8 by default (Kingma & Ba "
    "2015; torch.optim.Adam): gradients well below eps get steps shrunk in proportion, "
    "and plain SGD steps of that size are below float32 resolution for weights of order 1.",
)


class _InputLayer(NamedTuple):
    """The input layer's gradients as SC301 and SC302 judge them."""

    module: str
    numel: float  # gradient entries judged: those of always-zero input features left out
    zero: float  # entries of those exactly zero, summed as fractions over the batches
    rms: float | None  # RMS entry of the weight's gradient (over the columns judged)
    names: list[str]
    idle: int  # input features that were exactly 0 in every measured sample


def _input_layer(ctx: Context) -> _InputLayer:
    grads = ctx.measurements.input_layer_gradients()
    numel = float(sum(g.numel for g in grads if g.used))
    zero = sum(g.numel * (g.zero_fraction or 0.0) for g in grads if g.used)
    names = [g.name for g in grads]
    module = grads[0].module if grads else ""
    weight = next((g for g in grads if len(g.shape) >= 2), grads[0] if grads else None)
    rms = weight.grad_rms if weight is not None else None
    idle = _idle_features(ctx, module, weight)
    if idle and weight is not None and weight.used and weight.zero_fraction is not None:
        # a feature that is 0 in every sample gives its weight column a zero gradient in
        # every batch whatever the scale (dW[:, j] = sum_n delta_n x_nj): those entries
        # say nothing about the units, and SC104 reports the feature
        left_out = weight.numel * idle / weight.shape[1]
        numel -= left_out
        zero = max(0.0, zero - left_out)
        if rms is not None and weight.numel > left_out:
            # the RMS entry of the other columns (the left-out ones are all 0)
            rms *= math.sqrt(weight.numel / (weight.numel - left_out))
    return _InputLayer(module, numel, zero, rms, names, idle)


def _idle_features(ctx: Context, module: str, weight: GradientStats | None) -> int:
    """How many of the columns the input layer's weight consumes (``weight.shape[1]``: a
    linear layer's inputs, a convolution's channels) were fed 0 in every measured sample:
    features with a minimum and maximum of exactly 0, or, for an image flattened into a
    linear layer, its blank positions (0 when the columns and what was measured do not
    correspond)."""
    if weight is None or len(weight.shape) < 2:
        return 0
    for inp in ctx.measurements.inputs:
        if inp.consumer != module or inp.kind != "feature":
            continue
        features = inp.judged
        if len(features) == weight.shape[1]:
            return sum(1 for f in features if f.count and not f.nonfinite and f.min == 0 == f.max)
        if inp.blank_positions is not None and math.prod(inp.shape[1:]) == weight.shape[1]:
            return inp.blank_positions
        return 0
    return 0


@rule("SC301", "zero-gradient-at-input-layer", Severity.ERROR, "blocked", thresholds=(ZERO,))
def zero_gradient_at_input_layer(ctx: Context) -> Iterator[Finding]:
    """Most gradient entries of the layer that receives the input are exactly zero.

    What it does:
        Finds the layer that first consumes the model's input (traced through the
        forward) and measures, over all measured batches, the fraction of its
        parameters' gradient entries that are exactly zero. The weight columns fed 0 in
        every sample are left out: input features that never leave 0 (a one-hot column
        never seen; SC104 reports them) and the blank pixels of an image flattened into a
        linear layer (an MNIST digit's border). Their gradient is zero whatever the scale.

    Why it matters:
        Exactly-zero gradients mean no optimizer step changes those weights: the network
        cannot learn to use its input. Saturated units and saturated softmax outputs
        downstream produce them.

    Example:
        The reference interpolation network on raw inputs: 90% of the first layer's
        gradient entries are exactly zero.

    Fix:
        Standardize the input so that the units it feeds start in their active range.

    Known problems:
        Sparse inputs (most features zero in most samples, not all) also produce zero
        gradient columns in the batches where a feature is zero throughout; check the
        input findings first.
    """
    layer = _input_layer(ctx)
    if layer.numel <= 0:
        return
    frac = layer.zero / layer.numel
    if frac <= ZERO.value:
        return
    left_out = (
        f" (not counting the weights of the {plural(layer.idle, 'input')} that "
        f"{'is' if layer.idle == 1 else 'are'} 0 in every sample)"
        if layer.idle
        else ""
    )
    yield zero_gradient_at_input_layer.finding(
        f"{pct(frac)} of the gradient entries of the input layer "
        f"{ctx.measurements.label(layer.module)} "
        f"({', '.join(layer.names)}) are exactly zero over the measured batches{left_out}: "
        "those weights cannot learn at any learning rate.",
        where=layer.module,
        evidence={
            "zero_fraction": frac,
            "entries": round(layer.numel),
            "parameters": layer.names,
            "grad_rms": layer.rms,
            "idle_features": layer.idle,
        },
        fix=Fix(
            summary="Standardize the input so the first layer's units pass gradient.",
            code="model = torch.nn.Sequential(report.standardizer(), model)",
            applicability="retrain after applying",
        ),
    )


@rule(
    "SC302",
    "vanishing-gradient-at-input-layer",
    Severity.WARNING,
    "blocked",
    thresholds=(ADAM_EPS,),
)
def vanishing_gradient_at_input_layer(ctx: Context) -> Iterator[Finding]:
    """The input layer's gradient is non-zero but vanishingly small.

    What it does:
        Flags the input layer when the root-mean-square entry of its weight gradient is
        below ``grad_rms`` (and the entries are not mostly exactly zero, which SC301
        reports).

    Why it matters:
        Below Adam's epsilon the update shrinks with the gradient; with SGD, steps of
        that size do not change float32 weights of order 1 at all.

    Example:
        A sigmoid network on raw inputs whose units sit at ``z`` of a few tens: the
        derivative is about ``e^-z``, not yet exactly zero.

    Fix:
        Standardize the input.

    Known problems:
        A model whose loss is already near zero also has tiny gradients; this rule is
        meant for a model before training.
    """
    layer = _input_layer(ctx)
    rms = layer.rms
    if layer.numel <= 0 or rms is None or layer.zero / layer.numel > ZERO.value:
        return
    if rms >= ADAM_EPS.value:
        return
    yield vanishing_gradient_at_input_layer.finding(
        f"The weight gradient of the input layer {ctx.measurements.label(layer.module)} has "
        f"an RMS entry of {num(rms)}, below "
        f"Adam's epsilon {num(ADAM_EPS.value)}: its updates are vanishingly small.",
        where=layer.module,
        evidence={"grad_rms": rms, "parameters": layer.names},
        fix=Fix(
            summary="Standardize the input.",
            code="model = torch.nn.Sequential(report.standardizer(), model)",
            applicability="retrain after applying",
        ),
    )


@rule("SC303", "non-finite-gradient", Severity.ERROR, "other")
def non_finite_gradient(ctx: Context) -> Iterator[Finding]:
    """Some gradients are NaN or infinite.

    What it does:
        Flags parameters whose gradient norm over the measured batches is not finite.

    Why it matters:
        One optimizer step with a NaN gradient writes NaN into the weights.

    Example:
        ``log`` of a zero probability in a custom loss; float16 overflow.

    Fix:
        Find the first non-finite activation or loss (SC204, SC402); use ``log_softmax``
        / ``cross_entropy`` on logits instead of ``log(softmax)``.

    Known problems:
        None known.
    """
    bad = [g for g in ctx.measurements.gradients if g.nonfinite]
    if not bad:
        return
    yield non_finite_gradient.finding(
        f"{plural(len(bad), 'parameter')} received NaN or inf gradients: "
        + ", ".join(g.name for g in bad[:5])
        + ("..." if len(bad) > 5 else "")
        + ".",
        where=bad[0].name,
        evidence={"parameters": [g.name for g in bad[:64]]},
        fix=Fix(summary="Remove the source of non-finite values (inputs, log of zero, overflow)."),
    )


@rule("SC304", "parameter-without-gradient", Severity.INFO, "other")
def parameter_without_gradient(ctx: Context) -> Iterator[Finding]:
    """Trainable parameters that the loss does not depend on.

    What it does:
        Lists parameters with ``requires_grad=True`` that received no gradient at all
        (autograd found no path from the loss to them).

    Why it matters:
        They are not used in the forward pass (or not in the path to the loss): dead
        code, a branch that was never taken, or a module defined but not called.

    Example:
        ``self.layer_norm = nn.LayerNorm(10)`` defined but commented out in ``forward``.

    Fix:
        Remove unused modules, or set ``requires_grad_(False)`` on them.

    Known problems:
        Parameters used only on some batches (mixture of experts) may be listed.
    """
    unused = [g for g in ctx.measurements.gradients if not g.used]
    if not unused:
        return
    yield parameter_without_gradient.finding(
        f"{plural(len(unused), 'trainable parameter')} got no gradient from the loss: "
        + ", ".join(g.name for g in unused[:5])
        + ("..." if len(unused) > 5 else "")
        + ".",
        where=unused[0].module,
        evidence={"parameters": [g.name for g in unused[:64]]},
        fix=Fix(summary="Remove unused modules or freeze them with requires_grad_(False)."),
    )
