"""SC2xx: rules about what the nonlinearities receive."""

from __future__ import annotations

from collections.abc import Iterator

from .._format import num, pct
from ..findings import Finding, Fix, Severity
from ..measurements import ActivationStats
from ._registry import Context, Threshold, rule

MOST = Threshold(
    "fraction",
    0.5,
    "More than half of the pre-activations pass no gradient at all: the layer learns from "
    "a minority of its inputs, and the input layer's weights see most of their gradient "
    "vanish. A healthy, standardized layer at default initialization has none in the "
    "exactly-zero region.",
)
DEAD = Threshold(
    "dead_units",
    0.5,
    "More than half the units pass no gradient for any measured sample: the layer has "
    "lost most of its width. With standardized inputs and PyTorch's default initialization "
    "the expected dead fraction is about 14% even at fan-in 1 (a unit dies only when its "
    "bias outweighs its weight over the whole input range), so a majority of dead units "
    "at 10 units happens by chance with probability about 0.2%; an input with a large "
    "positive offset kills every unit whose weight is negative, about half of them.",
)
SOFTMAX = Threshold(
    "rows",
    0.5,
    "Rows whose largest probability is exactly 1.0 in the computed dtype pass exactly zero "
    "gradient through the softmax; when more than half the rows do, most samples "
    "contribute nothing to learning.",
)


def _where(site: ActivationStats) -> str:
    return site.site


def _scale_hint(site: ActivationStats, ctx: Context) -> str:
    if site.input_layer:
        return (
            f" It is fed by {ctx.measurements.label(site.fed_by)}, the layer that receives "
            "the model's input: the "
            "input's scale is driving these pre-activations."
        )
    return ""


@rule("SC201", "saturated-nonlinearity", Severity.ERROR, "blocked", thresholds=(MOST,))
def saturated_nonlinearity(ctx: Context) -> Iterator[Finding]:
    """Most inputs of a tanh/sigmoid-like nonlinearity sit where its derivative is zero.

    What it does:
        For every call site of a saturating nonlinearity (tanh, sigmoid, hardtanh,
        hardsigmoid, softsign, logsigmoid), measures the fraction of pre-activations
        beyond the point where the derivative is exactly zero in the dtype computed in
        (float32 tanh: ``|z| > 9.0108``; sigmoid: ``z > 16.64`` or ``z < -88.72``), and
        the fraction in the near-saturated band (derivative below 1% of its maximum;
        tanh: ``|z| > 2.993``). Exact saturation above ``fraction`` is an error at the
        layer fed by the input, a warning elsewhere; near saturation above ``fraction``
        is a warning at the input layer, info elsewhere.

    Why it matters:
        A saturated unit passes exactly zero gradient: no learning rate moves the weights
        in front of it. When the input layer's units are saturated, the network's output
        cannot depend on its input and only the output bias learns (the mean target).

    Example:
        ``Linear(1, 10) -> Tanh`` on raw x in [255, 200000]: pre-activations of order
        1e5, 99.9% beyond ``|z| = 9.01``.

    Fix:
        Standardize the input (``report.standardizer()``); for deeper layers, check the
        initialization and consider a normalization layer before the nonlinearity.

    Known problems:
        Counts are per call site; a site called with very different inputs (weight
        sharing) is judged on all its calls together.
    """
    for site in ctx.measurements.layers:
        if site.family != "saturating" or site.exact_fraction is None:
            continue
        exact, near = site.exact_fraction, site.near_fraction or 0.0
        bounds = (
            f"|z| > {num(site.exact_hi)}"
            if (
                site.exact_lo is not None
                and site.exact_hi is not None
                and site.exact_lo == -site.exact_hi
            )
            else f"z < {num(site.exact_lo)} or z > {num(site.exact_hi)}"
        )
        evidence = {
            "exact_fraction": exact,
            "near_fraction": near,
            "exact_lo": site.exact_lo,
            "exact_hi": site.exact_hi,
            "near_lo": site.near_lo,
            "near_hi": site.near_hi,
            "dtype": site.dtype,
            "mean": site.mean,
            "std": site.std,
            "min": site.min,
            "max": site.max,
            "input_layer": site.input_layer,
            "saturated_units": site.saturated_units,
            "units": site.units,
        }
        fix = Fix(
            summary="Standardize the model's input so pre-activations start near unit scale."
            if site.input_layer
            else "Rescale what feeds this layer (initialization, a normalization layer before "
            "the nonlinearity).",
            code="model = torch.nn.Sequential(report.standardizer(), model)"
            if site.input_layer
            else "",
            applicability="retrain after applying",
        )
        if exact > MOST.value:
            yield saturated_nonlinearity.finding(
                f"{pct(exact)} of the pre-activations of {site.function} at {site.site} lie "
                f"where its derivative is exactly 0 in {site.dtype} ({bounds}); they range "
                f"over [{num(site.min)}, {num(site.max)}] with std {num(site.std)}."
                + _scale_hint(site, ctx),
                where=_where(site),
                severity=Severity.ERROR if site.input_layer else Severity.WARNING,
                category="blocked" if site.input_layer else "other",
                evidence=evidence,
                fix=fix,
            )
        elif near > MOST.value:
            yield saturated_nonlinearity.finding(
                f"{pct(near)} of the pre-activations of {site.function} at {site.site} lie in "
                f"its near-saturated band (derivative below 1% of its peak; "
                f"|z| beyond {num(site.near_hi)}), {pct(exact)} where it is exactly 0."
                + _scale_hint(site, ctx),
                where=_where(site),
                severity=Severity.WARNING if site.input_layer else Severity.INFO,
                category="other",
                evidence=evidence,
                fix=fix,
            )


@rule("SC202", "dead-relu-units", Severity.WARNING, "other", thresholds=(DEAD,))
def dead_relu_units(ctx: Context) -> Iterator[Finding]:
    """Many rectifier units are inactive on every measured sample.

    What it does:
        For relu-like nonlinearities (relu, relu6, elu, selu, celu, gelu, silu, mish,
        softplus, hardswish), counts units whose every measured pre-activation lies where
        the derivative is exactly zero, and flags sites where more than ``dead_units`` of
        the units are dead (at least two units).

    Why it matters:
        A dead unit passes no gradient for any sample, so its incoming weights never
        change: the layer is effectively narrower. At the input layer, a positive input
        with a large offset kills every unit whose weight is negative.

    Example:
        ``Linear(1, 10) -> ReLU`` on x in [255, 200000]: about half the units are dead
        (negative weight times a large positive input).

    Fix:
        Centre and scale the input (``report.standardizer()``); for deeper layers,
        check the initialization or use a leaky variant.

    Known problems:
        Sparse inputs (mostly zeros) can leave units inactive on a few batches by
        chance; raise ``max_batches`` to measure more samples.
    """
    for site in ctx.measurements.layers:
        if site.family != "rectifier" or site.units < 2:
            continue
        frac = site.dead_units / site.units
        if frac <= DEAD.value:
            continue
        yield dead_relu_units.finding(
            f"{site.dead_units} of {site.units} {site.function} units at {site.site} are "
            f"inactive (zero derivative) on all {num(site.count // max(site.units, 1))} "
            "measured samples." + _scale_hint(site, ctx),
            where=_where(site),
            severity=Severity.WARNING,
            evidence={
                "dead_units": site.dead_units,
                "units": site.units,
                "fraction": frac,
                "input_layer": site.input_layer,
                "mean": site.mean,
                "std": site.std,
            },
            fix=Fix(
                summary="Centre and scale the input; check the initialization.",
                code="model = torch.nn.Sequential(report.standardizer(), model)"
                if site.input_layer
                else "",
                applicability="retrain after applying",
            ),
        )


@rule("SC203", "saturated-softmax", Severity.ERROR, "blocked", thresholds=(SOFTMAX,))
def saturated_softmax(ctx: Context) -> Iterator[Finding]:
    """Most softmax rows put probability exactly 1.0 on one class.

    What it does:
        For every softmax call, counts rows whose largest probability is exactly 1.0 in
        the computed dtype (and above ``1 - 1e-6``), and flags sites where more than
        ``rows`` of the rows are exactly saturated (error) or nearly so (warning).

    Why it matters:
        The softmax Jacobian ``diag(p) - p p^T`` is exactly zero for a one-hot ``p``:
        nothing upstream receives a gradient. Huge logits, typically from unscaled inputs
        multiplied through the network, cause it.

    Example:
        ``Linear(1, 10) -> ReLU -> Linear(10, 3) -> Softmax`` on x in [255, 200000]:
        logits of order 1e4, every row one-hot.

    Fix:
        Standardize the inputs; feed logits to ``CrossEntropyLoss`` instead of
        probabilities to ``MSELoss`` where the task is classification.

    Known problems:
        A fully trained classifier can be legitimately confident; this rule is meant for
        a model before training.
    """
    for site in ctx.measurements.layers:
        if site.family != "softmax" or site.softmax_saturated_fraction is None:
            continue
        exact = site.softmax_saturated_fraction
        near = site.softmax_near_fraction or 0.0
        evidence = {
            "rows": site.softmax_rows,
            "exact_fraction": exact,
            "near_fraction": near,
            "logit_min": site.min,
            "logit_max": site.max,
            "logit_std": site.std,
        }
        fix = Fix(
            summary="Standardize the inputs so the logits start small.",
            code="model = torch.nn.Sequential(report.standardizer(), model)",
            applicability="retrain after applying",
        )
        if exact > SOFTMAX.value:
            yield saturated_softmax.finding(
                f"{pct(exact)} of the rows of {site.site} put probability exactly 1.0 on one "
                f"class (logits span [{num(site.min)}, {num(site.max)}]): the softmax passes "
                "exactly zero gradient for them.",
                where=_where(site),
                severity=Severity.ERROR,
                evidence=evidence,
                fix=fix,
            )
        elif near > SOFTMAX.value:
            yield saturated_softmax.finding(
                f"{pct(near)} of the rows of {site.site} have a largest probability above "
                f"1 - 1e-6 (logits span [{num(site.min)}, {num(site.max)}]).",
                where=_where(site),
                severity=Severity.WARNING,
                category="other",
                evidence=evidence,
                fix=fix,
            )


@rule("SC204", "non-finite-activation", Severity.ERROR, "other")
def non_finite_activation(ctx: Context) -> Iterator[Finding]:
    """A nonlinearity received NaN or infinite values.

    What it does:
        Flags call sites whose pre-activation statistics are not finite.

    Why it matters:
        NaN propagates to the loss and every gradient; training cannot proceed.

    Example:
        An input with NaN values, or an overflow in float16.

    Fix:
        Find the first layer whose output is not finite (the earliest site listed);
        check the inputs (SC105) and the dtype.

    Known problems:
        Only nonlinearity inputs are checked, not every tensor.
    """
    sites = [s for s in ctx.measurements.layers if s.nonfinite]
    if not sites:
        return
    first = sites[0]
    yield non_finite_activation.finding(
        f"{len(sites)} nonlinearity site(s) received NaN or inf, first {first.site}.",
        where=first.site,
        evidence={"sites": [s.site for s in sites[:32]]},
        fix=Fix(summary="Remove non-finite inputs; check for overflow in low precision."),
    )
