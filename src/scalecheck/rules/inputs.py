"""SC1xx: rules about the input features.

One yardstick runs through these rules: the condition number ``kappa`` of the
second-moment matrix of ``[x, 1]``, which for a linear unit under squared loss is the
Hessian, so that gradient descent needs about ``kappa`` times more steps than on a
perfectly conditioned problem (LeCun, Bottou, Orr & Mueller 1998, "Efficient BackProp",
sections 4.3 and 5). A standardized feature has ``kappa = 1``. For one feature with mean
``m`` and std ``s`` the matrix is ``[[m^2 + s^2, m], [m, 1]]`` and ``kappa`` is about
``(m^2 + s^2 + 1)^2 / s^2``: ``max(s^2, 1/s^2)`` for a centred feature and about
``(m^2 + 1)^2 / s^2`` when the offset dominates, so one number covers "far from unit
scale" and "large offset" alike.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import replace

from .._format import num, plural
from ..findings import Finding, Fix, Severity
from ..measurements import FeatureStats, InputStats, kappa_above
from ._registry import Context, Threshold, rule

#: Warning level. Well-scaled features (|mean| <= 1, std in [0.5, 2]) have kappa <= 21 and
#: binary flags with a prevalence of 0.1% or more have kappa < 1e3, so 1e3 separates them
#: from inputs that make gradient descent need a thousand times more steps than necessary.
KAPPA_WARN = Threshold(
    "kappa_warn",
    1e3,
    "Gradient descent on a linear unit needs ~kappa times more steps than on standardized "
    "inputs (LeCun et al. 1998). Features with |mean| <= 1 and std in [0.5, 2] have kappa <= "
    "21; binary flags with prevalence >= 0.1% stay below 1e3. Above 1e3 a run that converges "
    "in tens of steps on standardized inputs needs tens of thousands.",
)
#: Error level: a million-fold slowdown; the informative variation is 1/1000 of the
#: feature's magnitude (or its scale is 1000x off), beyond what any fixed learning rate
#: bridges for both the weights and the bias at once.
KAPPA_ERROR = Threshold(
    "kappa_error",
    1e6,
    "A thousand times the warning level: gradient descent on a linear unit needs a million "
    "times more steps than on standardized inputs. For a centred feature this is a scale "
    "1000x off unit scale (kappa = s^2 or 1/s^2); for a feature of magnitude about 1, a "
    "spread about 1/500 of its offset. No single learning rate then suits both the weight "
    "and the bias.",
)
#: Features whose stds differ by more than sqrt(1e3) ~ 31.6x give a diagonal Hessian
#: with condition number above KAPPA_WARN, by the same argument.
SCALE_RATIO = Threshold(
    "std_ratio",
    math.sqrt(1e3),
    "The Hessian of a linear unit has diagonal entries proportional to each feature's "
    "variance, so a std ratio r gives a condition number of at least r^2; r = 31.6 is "
    "the ratio at which r^2 reaches the kappa_warn level of 1e3.",
)
DECADES = Threshold(
    "decades",
    3.0,
    "A positive feature whose largest value is at least 1000x its smallest spans three "
    "orders of magnitude: the scale of interest is relative (prices, counts, durations).",
)
SPREAD = Threshold(
    "range_in_stds",
    10.0,
    "After standardizing, a feature whose range exceeds 10 standard deviations keeps "
    "extreme values that saturate units; a Gaussian sample needs about 2.7e5 values to "
    "span 10 stds, so short-tailed data never triggers this, heavy-tailed data does.",
)


def _feature_inputs(ctx: Context) -> Iterator[InputStats]:
    for i in ctx.measurements.inputs:
        if i.kind == "feature" and i.features:
            yield i


def _seen_note(inp: InputStats) -> str:
    if not inp.seen_by_layer:
        return ""
    return (
        f" (as {inp.consumer} receives it, after the model's own "
        f"{', '.join(_op(o) for o in inp.transformed_by)})"
    )


def _op(name: str) -> str:
    return {
        "__truediv__": "division",
        "__sub__": "subtraction",
        "__mul__": "multiplication",
        "__add__": "addition",
        "div": "division",
        "sub": "subtraction",
        "mul": "multiplication",
        "add": "addition",
    }.get(name, name)


def standardize_fix(inp: InputStats, feats: list[FeatureStats]) -> Fix:
    """The standardization fix for some features of one input, with the fitted numbers."""
    means = [f.mean for f in inp.features]
    stds = [f.std if f.std else 1.0 for f in inp.features]
    shown = _fitted(feats)
    single = len(inp.features) == 1
    if single:
        pipeline = f"x = (x - {_lit(means[0])}) / {_lit(stds[0])}"
    else:
        pipeline = "x = (x - mean) / std  # mean, std: report.standardizer().mean / .std"
    code = (
        "model = torch.nn.Sequential(report.standardizer(), model)\n"
        f"# or in your data pipeline:\n# {pipeline}"
    )
    return Fix(
        summary=f"Standardize '{inp.name}' with the measured statistics ({shown}).",
        code=code,
        applicability="changes what the model is trained on: retrain after applying, and "
        "apply the same standardizer at inference",
        values={"input": inp.name, "mean": means, "std": stds},
    )


def _fitted(feats: list[FeatureStats]) -> str:
    """The fitted statistics of (up to three of) *feats*, for a fix's summary."""
    return ", ".join(f"{f.name}: mean {num(f.mean, 6)}, std {num(f.std, 6)}" for f in feats[:3])


def _lit(x: float | None) -> str:
    return "0.0" if x is None else repr(float(f"{x:.6g}"))


@rule(
    "SC101",
    "unscaled-input-feature",
    Severity.ERROR,
    "input-scale",
    thresholds=(KAPPA_WARN, KAPPA_ERROR),
)
def unscaled_input_feature(ctx: Context) -> Iterator[Finding]:
    """An input feature is far from unit scale or sits on a large offset.

    What it does:
        For every input feature, computes ``kappa``, the condition number of the
        second-moment matrix of ``[x, 1]`` (``[[m^2 + s^2, m], [m, 1]]`` for mean ``m`` and
        std ``s``), and flags features above ``kappa_warn`` (warning) or ``kappa_error``
        (error). When a normalization layer (BatchNorm, LayerNorm, GroupNorm) consumes the
        input directly, the finding is downgraded to info.

    Why it matters:
        For a linear unit under squared loss this matrix is the Hessian: gradient descent
        needs about ``kappa`` times more steps than on standardized data, and at default
        initialization a feature of magnitude 1e5 pushes every tanh or sigmoid unit it
        feeds far past the point where its derivative is exactly zero in float32.

    Example:
        ``x`` uniform in [255, 200000] fed to ``Linear(1, 10) -> Tanh``: mean 1.0e5, std
        5.8e4, ``kappa`` 5.4e10. Standardized, ``kappa`` is 1.

    Fix:
        Standardize the feature with the measured mean and std:
        ``model = nn.Sequential(report.standardizer(), model)``, or ``(x - mean) / std`` in
        the data pipeline. Retrain after applying.

    Known problems:
        Statistics come from ``max_batches`` batches; a feature whose range differs in the
        rest of the data is judged on what was seen.
    """
    for inp in _feature_inputs(ctx):
        flagged = []
        for f in inp.judged:
            if f.std == 0:
                continue  # constant features: SC104
            k = kappa_above(f.mean, f.std, KAPPA_WARN.value)
            if k is not None:
                flagged.append((k, f))
        if not flagged:
            continue
        worst_k, severity, feats = _ranked(flagged)
        worst = feats[0]
        parts = [_describe_feature(f) for f in feats[:3]]
        if len(feats) == 1:
            where = worst.name
            head = parts[0]
        else:
            where = f"{inp.name} ({len(feats)} of {len(inp.features)} features)"
            head = (
                f"{plural(len(feats), 'feature')} of {inp.name} are far from unit scale; "
                f"worst: "
                + "; ".join(parts)
                + (f"; and {len(feats) - 3} more" if len(feats) > 3 else "")
            )
        kappa = inp.seen_kappa if inp.seen_by_layer else inp.kappa
        conditioning = f"condition number of its [x, 1] second-moment matrix {num(worst_k)}"
        if kappa is not None and len(inp.judged) > 1:
            conditioning = (
                f"condition number of the inputs' [x, 1] second-moment matrix {num(kappa)}"
            )
        if inp.kappa_standardized is not None:
            conditioning += f"; {num(inp.kappa_standardized)} standardized"
        message = f"{head}{_seen_note(inp)} ({conditioning})."
        yield unscaled_input_feature.finding(
            message,
            where=where,
            severity=severity,
            evidence={
                "input": inp.name,
                "kappa": kappa if len(inp.judged) > 1 else worst_k,
                "kappa_standardized": inp.kappa_standardized,
                "normalized_by": inp.normalized_by,
                "transformed_by": list(inp.transformed_by),
                "features": [_feature_evidence(f) for f in feats[:64]],
                "flagged": len(feats),
            },
            fix=standardize_fix(inp, feats),
        )


def _scale_number(f: FeatureStats) -> float:
    """:attr:`~scalecheck.measurements.FeatureStats.judged_kappa`, 0 when unknown."""
    return f.judged_kappa or 0.0


def _ranked(
    flagged: list[tuple[float, FeatureStats]],
) -> tuple[float, Severity, list[FeatureStats]]:
    """Features flagged with their kappa (or a constant's ``c^2 + 1``): the worst number,
    the severity it earns against ``kappa_error``, and the features, worst first."""
    flagged = sorted(flagged, key=lambda kf: -kf[0])
    worst = flagged[0][0]
    severity = Severity.ERROR if worst > KAPPA_ERROR.value else Severity.WARNING
    return worst, severity, [f for _, f in flagged]


def _describe_feature(f: FeatureStats) -> str:
    return f"{f.name} spans [{num(f.min)}, {num(f.max)}], mean {num(f.mean)}, std {num(f.std)}"


def _feature_evidence(f: FeatureStats) -> dict[str, object]:
    return {
        "name": f.name,
        "mean": f.mean,
        "std": f.std,
        "min": f.min,
        "max": f.max,
        "kappa": f.kappa,
        "count": f.count,
    }


@rule("SC102", "input-scales-differ", Severity.WARNING, "input-scale", thresholds=(SCALE_RATIO,))
def input_scales_differ(ctx: Context) -> Iterator[Finding]:
    """The features of one input have very different scales.

    What it does:
        Compares the standard deviations of the non-constant features of each input and
        flags inputs where the largest is more than ``std_ratio`` times the smallest.

    Why it matters:
        One learning rate serves all weights of a layer. When feature scales differ by a
        factor ``r``, the Hessian's diagonal differs by ``r^2``: the step that suits the
        large feature barely moves the small one's weight, and the step that suits the
        small one diverges on the large one.

    Example:
        Tabular data with ``age`` (std 12) next to ``income`` (std 3e4): ratio 2500.

    Fix:
        Standardize each feature separately (``report.standardizer()`` does).

    Known problems:
        One-hot or rare binary features have small stds by nature; standardizing them is
        still harmless.
    """
    for inp in _feature_inputs(ctx):
        varying = [f for f in inp.judged if f.std]
        if len(varying) < 2:
            continue
        big = max(varying, key=lambda f: f.std or 0.0)
        small = min(varying, key=lambda f: f.std or math.inf)
        assert big.std is not None and small.std is not None
        ratio = big.std / small.std
        if ratio <= SCALE_RATIO.value:
            continue
        yield input_scales_differ.finding(
            f"The features of {inp.name} differ in scale by a factor of {num(ratio)}: "
            f"{big.name} has std {num(big.std)}, {small.name} has std {num(small.std)}.",
            where=inp.name,
            evidence={
                "input": inp.name,
                "ratio": ratio,
                "largest": _feature_evidence(big),
                "smallest": _feature_evidence(small),
            },
            fix=standardize_fix(inp, [big, small]),
        )


@rule("SC103", "input-spans-decades", Severity.WARNING, "input-scale", thresholds=(DECADES, SPREAD))
def input_spans_decades(ctx: Context) -> Iterator[Finding]:
    """A positive feature spans several orders of magnitude with a heavy tail.

    What it does:
        Flags strictly positive features whose max/min ratio is at least ``10**decades``
        and whose range exceeds ``range_in_stds`` standard deviations.

    Why it matters:
        Standardizing such a feature still leaves most samples squeezed together and a
        few far out; the far ones saturate units and dominate the gradient. Prices,
        counts and durations are usually meaningful in ratios: their logarithm is the
        well-behaved feature.

    Example:
        Transaction amounts from 0.5 to 2e6, mostly below 100.

    Fix:
        Take the logarithm, then standardize: ``(log(x) - log_mean) / log_std`` with the
        measured ``log_mean`` and ``log_std``. ``report.standardizer(log=True)`` does it.

    Known problems:
        Needs every measured value to be positive.
    """
    for inp in _feature_inputs(ctx):
        for f in inp.judged:
            if not (f.positive and f.std and f.max is not None and f.min):
                continue
            decades = math.log10(f.max / f.min)
            spread = (f.max - f.min) / f.std
            if decades < DECADES.value or spread < SPREAD.value:
                continue
            log_code = ""
            if f.log_mean is not None and f.log_std:
                log_code = f"x = (torch.log(x) - {_lit(f.log_mean)}) / {_lit(f.log_std)}"
            yield input_spans_decades.finding(
                f"{f.name} is positive and spans {decades:.1f} decades "
                f"([{num(f.min)}, {num(f.max)}]) with a range of {spread:.0f} standard "
                "deviations: a log transform will serve it better than standardizing alone.",
                where=f.name,
                evidence={
                    "feature": _feature_evidence(f),
                    "decades": decades,
                    "range_in_stds": spread,
                    "log_mean": f.log_mean,
                    "log_std": f.log_std,
                },
                fix=Fix(
                    summary=f"Log-transform {f.name}, then standardize it.",
                    code="model = torch.nn.Sequential(report.standardizer(log=True), model)"
                    + (f"\n# or in your data pipeline:\n# {log_code}" if log_code else ""),
                    applicability="changes what the model is trained on: retrain after applying",
                    values={"feature": f.name, "log_mean": f.log_mean, "log_std": f.log_std},
                ),
            )


def _large_constant(f: FeatureStats) -> bool:
    """Whether *f* is SC107's: the same value ``c`` in every measured sample (or measured
    once) with ``c^2 + 1`` (:attr:`~scalecheck.measurements.FeatureStats.judged_kappa`,
    the curved eigenvalue of its singular ``[x, 1]`` matrix) above ``kappa_warn``."""
    return f.std == 0 and _scale_number(f) > KAPPA_WARN.value


@rule(
    "SC107",
    "large-constant-input-feature",
    Severity.ERROR,
    "input-scale",
    thresholds=(KAPPA_WARN, KAPPA_ERROR),
)
def large_constant_input_feature(ctx: Context) -> Iterator[Finding]:
    """An input feature is the same large value in every sample.

    What it does:
        For every feature that never changes over the measured samples, with value ``c``,
        compares ``c^2 + 1`` with ``kappa_warn`` (warning) and ``kappa_error`` (error):
        a constant beyond about 31.6 in magnitude warns, beyond about 1000 is an error.
        Smaller constants are left to SC104.

    Why it matters:
        A constant feature is a second bias, whose input is ``c`` instead of 1. At
        initialization it shifts every pre-activation it feeds by ``w c`` (``|w|`` about
        ``1/sqrt(fan_in)``), far past where tanh and sigmoid pass any gradient once ``c``
        is in the thousands. For a linear unit the second-moment matrix of ``[x, 1]`` is
        ``[[c^2, c], [c, 1]]``: the loss curves ``c^2 + 1`` times more steeply along the
        weight and the bias than along a standardized feature's weight, so a learning
        rate stable for it moves the informative features ``c^2`` times too slowly, the
        same yardstick as SC101's ``kappa`` (its own ``kappa`` is infinite: the feature
        duplicates the bias exactly). SC101 cannot see it, because a constant has no
        spread to compare with its offset.

    Example:
        A timestamp column of 1.7e9 (seconds since 1970) that is the same in a training
        split, next to standardized features: 100% of the first tanh layer's
        pre-activations saturated, the input layer's gradient exactly zero.

    Fix:
        Drop the feature (it carries no information), or standardize the input with the
        measured statistics: ``report.standardizer()`` centres a constant feature to 0,
        which removes it. Retrain after applying.

    Known problems:
        A feature that varies only outside the measured batches is judged as constant:
        raise ``max_batches`` if it should vary. With a single measured sample every
        feature is judged this way: its magnitude is all one sample shows (SC002 says
        so too).
    """
    for inp in _feature_inputs(ctx):
        flagged = [(_scale_number(f), f) for f in inp.judged if _large_constant(f)]
        if not flagged:
            continue
        worst_c, severity, feats = _ranked(flagged)
        worst = feats[0]
        values = ", ".join(f"{f.name} = {num(f.mean)}" for f in feats[:3])
        more = f" and {len(feats) - 3} more" if len(feats) > 3 else ""
        layer = (
            f" of the first layer {ctx.measurements.label(inp.consumer)}" if inp.consumer else ""
        )
        # one measured sample shows a feature's magnitude, not its spread: judged the same
        seen = "in every measured sample" if worst.count > 1 else "in the only measured sample"
        if len(feats) == 1:
            where, head = worst.name, f"{worst.name} is {num(worst.mean)} {seen}"
        else:
            where = f"{inp.name} ({len(feats)} of {len(inp.features)} features)"
            head = (
                f"{len(feats)} features of {inp.name} are the same large value {seen}: "
                f"{values}{more}"
            )
        message = (
            f"{head}{_seen_note(inp)}. A constant acts as a second bias whose input is "
            f"{num(worst.mean)} instead of 1: {worst.name} shifts each pre-activation{layer} "
            f"by that unit's weight x {num(worst.mean)}, and the loss curves {num(worst_c)} "
            "times more steeply along its weight and the bias than along a standardized "
            "feature's weight."
        )
        if worst.count > 1:
            summary = (
                f"Drop the constant {'feature' if len(feats) == 1 else 'features'} "
                f"({values}{more}), or standardize '{inp.name}' with the measured "
                "statistics: the standardizer centres a constant feature to 0."
            )
        else:
            summary = (
                f"Standardize '{inp.name}', with statistics from more than one sample (one "
                "shows no spread): pass more or larger batches to diagnose()."
            )
        yield large_constant_input_feature.finding(
            message,
            where=where,
            severity=severity,
            evidence={
                "input": inp.name,
                "curvature": worst_c,
                "transformed_by": list(inp.transformed_by),
                "features": [_feature_evidence(f) for f in feats[:64]],
                "flagged": len(feats),
            },
            fix=replace(standardize_fix(inp, feats), summary=summary),
        )


@rule("SC104", "constant-input-feature", Severity.INFO, "input-data")
def constant_input_feature(ctx: Context) -> Iterator[Finding]:
    """An input feature has the same value in every measured sample.

    What it does:
        Flags features with zero variance over the measured batches.

    Why it matters:
        A constant feature carries no information, acts as a second bias, and cannot be
        standardized (its std is 0; the standardizer leaves it centred, unscaled).

    Example:
        A column of a tabular dataset that is always 0 in the training split.

    Fix:
        Drop the feature, or check the data pipeline if it should vary.

    Known problems:
        A rare category can look constant in a few batches: raise ``max_batches``.
        Constants that the first layer receives at a magnitude beyond about 31.6 are
        reported by SC107 instead, with their effect on the scale.
    """
    for inp in _feature_inputs(ctx):
        const = [f for f in inp.features if f.std == 0 and f.count >= 2]
        if not const:
            continue
        large = {f.name for f in inp.judged if _large_constant(f)}
        const = [f for f in const if f.name not in large]
        if not const:
            continue
        names = ", ".join(f"{f.name} = {num(f.mean)}" for f in const[:5])
        more = f" and {len(const) - 5} more" if len(const) > 5 else ""
        yield constant_input_feature.finding(
            f"{plural(len(const), 'feature')} of {inp.name} "
            f"{'never changes' if len(const) == 1 else 'never change'} in the measured "
            f"samples: {names}{more}.",
            where=const[0].name if len(const) == 1 else inp.name,
            evidence={"features": [_feature_evidence(f) for f in const[:64]]},
            fix=Fix(summary="Drop constant features, or check why they do not vary."),
        )


@rule("SC105", "non-finite-input", Severity.ERROR, "input-data")
def non_finite_input(ctx: Context) -> Iterator[Finding]:
    """An input feature contains NaN or infinite values.

    What it does:
        Counts NaN and +-inf values per feature (they are left out of every other
        statistic).

    Why it matters:
        One NaN in a batch makes the loss and every gradient NaN; the optimizer then
        writes NaN into the weights.

    Example:
        Missing values read as NaN from a CSV file.

    Fix:
        Impute or drop them in the data pipeline (``torch.nan_to_num`` with a deliberate
        value, or a missing-value indicator feature).

    Known problems:
        None known.
    """
    for inp in _feature_inputs(ctx):
        bad = [f for f in inp.features if f.nonfinite > 0]
        if not bad:
            continue
        total = sum(f.nonfinite for f in bad)
        names = ", ".join(f"{f.name} ({f.nonfinite})" for f in bad[:5])
        yield non_finite_input.finding(
            f"{plural(total, 'non-finite value')} (NaN or inf) in {inp.name}: {names}.",
            where=bad[0].name if len(bad) == 1 else inp.name,
            evidence={"counts": {f.name: f.nonfinite for f in bad[:64]}},
            fix=Fix(
                summary="Impute or drop non-finite values before training.",
                code="x = torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)  # or impute",
            ),
        )


@rule("SC106", "input-rescaled-in-model", Severity.INFO, "input-scale", thresholds=(KAPPA_WARN,))
def input_rescaled_in_model(ctx: Context) -> Iterator[Finding]:
    """The raw input is badly scaled, but the model rescales it before its first layer.

    What it does:
        For inputs that pass through value-changing operations before the first
        parametrized layer (a normalization layer, ``x / 255``, a prepended standardizer),
        compares the raw features (``kappa`` above ``kappa_warn``; for a constant
        feature ``c``, ``c^2 + 1`` as in SC107) with what the first layer receives (below
        it), and notes the difference.

    Why it matters:
        The network does not see the raw scale, so training should not stall. When the
        rescaling is a normalization layer (BatchNorm, LayerNorm, GroupNorm) the verdict is
        still ``at_risk``: it depends on batch statistics during training and on running
        statistics that must converge for inference, and a LayerNorm normalizes across
        features, not per feature. A fixed standardization (``x / 255``, a standardizer)
        is the fix itself and leaves the verdict ``ok``.

    Example:
        ``nn.Sequential(nn.BatchNorm1d(3), nn.Linear(3, 16), ...)`` on features in the
        thousands.

    Fix:
        None needed; standardizing in the data pipeline is still good practice.

    Known problems:
        A feature the rescaling turns into a constant is not well scaled but gone: that
        input is left to SC108.
    """
    for inp in _feature_inputs(ctx):
        if not inp.seen_by_layer or _erased(inp):
            continue  # erased features: SC108 (the layer receives constants, not values)
        raw_bad = [f for f in inp.features if _scale_number(f) > KAPPA_WARN.value]
        seen_bad = [f for f in inp.seen_by_layer if _scale_number(f) > KAPPA_WARN.value]
        if not raw_bad or seen_bad:
            continue
        worst = max(raw_bad, key=_scale_number)
        how = inp.normalized_by or ", ".join(_op(o) for o in inp.transformed_by)
        if worst.std:
            described = f"{_describe_feature(worst)} (condition number {num(worst.kappa)})"
        else:
            described = f"{worst.name} is {num(worst.mean)} in every measured sample"
        yield input_rescaled_in_model.finding(
            f"{described}, but the model rescales it before its first layer {inp.consumer} "
            f"({how}); that layer receives well-scaled values.",
            where=worst.name if len(raw_bad) == 1 else inp.name,
            category="input-scale" if inp.normalized_by else "other",
            evidence={
                "input": inp.name,
                "normalized_by": inp.normalized_by,
                "transformed_by": list(inp.transformed_by),
                "raw": [_feature_evidence(f) for f in raw_bad[:64]],
            },
        )


def _erased(inp: InputStats) -> list[tuple[FeatureStats, FeatureStats]]:
    """The features of *inp* that vary in the data but reach the first layer as one
    value in every sample: ``(raw, seen)`` pairs. Compared only when what the layer
    receives has the raw input's features (the same count, by index), and on exact ranges
    (``min == max`` is exact; a std computed from float sums is not)."""
    if not inp.seen_by_layer or len(inp.seen_by_layer) != len(inp.features):
        return []
    out = []
    for raw, seen in zip(inp.features, inp.seen_by_layer, strict=True):
        value = seen.min
        constant = seen.count > 1 and value is not None and value == seen.max
        if _varies(raw) and constant and value is not None and math.isfinite(value):
            out.append((raw, seen))
    return out


def _varies(f: FeatureStats) -> bool:
    """Whether *f* took more than one value over the measured samples (exact range)."""
    lo, hi = f.min, f.max
    return f.count > 1 and lo is not None and hi is not None and lo < hi


@rule("SC108", "input-erased-in-model", Severity.ERROR, "input-scale", thresholds=(KAPPA_WARN,))
def input_erased_in_model(ctx: Context) -> Iterator[Finding]:
    """The model turns a varying input feature into a constant before its first layer.

    What it does:
        For inputs the model transforms before its first parametrized layer (see SC106),
        compares each feature as the data holds it with what that layer receives, and
        flags features that vary in the data but reach the layer as the same value in
        every measured sample. It counts as an input-scale finding when some raw feature
        of the input is badly scaled (``kappa``, or ``c^2 + 1`` for a constant, above
        ``kappa_warn``, as in SC101 and SC107): the model's normalization was there for
        that scale and does not deal with it; otherwise it is an error of another kind.

    Why it matters:
        Nothing can be learned from a feature the first layer receives as a constant:
        its weight acts as a second bias, and the prediction cannot depend on the
        feature's value. The usual cause is a ``LayerNorm`` put in front of the network to
        handle scale: it normalizes each sample across its features, not each feature
        across samples. Over a single feature it outputs its bias for every sample; next
        to a feature orders of magnitude larger, a small feature's variation falls below
        float precision (a near-constant result is SC101's, judged on what the layer
        receives).

    Example:
        ``nn.Sequential(nn.LayerNorm(1), nn.Linear(1, 10), nn.Tanh(), ...)`` on ``x`` in
        [255, 200000]: the first layer receives 0 in every sample.

    Fix:
        Normalize each feature over the data instead: ``report.standardizer()`` (fitted
        on the measured batches) in place of the layer, or ``nn.BatchNorm1d(F)``, and
        remove the operation that erases the feature. Retrain after applying.

    Known problems:
        Compared feature by feature only when the first layer receives as many features
        as the input has. A feature that varies only outside the measured batches is not
        flagged.
    """
    for inp in _feature_inputs(ctx):
        erased = _erased(inp)
        if not erased:
            continue
        how, several = _erasing(ctx, inp)
        scaled = sorted(
            (f for f in inp.features if _scale_number(f) > KAPPA_WARN.value),
            key=lambda f: -_scale_number(f),
        )
        varying = [f for f in inp.features if _varies(f)]
        layer = ctx.measurements.label(inp.consumer)
        parts = [
            f"{raw.name} ({_spread(raw)}, received as {num(seen.min)})" for raw, seen in erased[:3]
        ]
        more = f" and {len(erased) - 3} more" if len(erased) > 3 else ""
        if len(erased) == 1:
            raw, seen = erased[0]
            where = raw.name
            head = (
                f"{raw.name} varies in the data ({_spread(raw)}) but the first layer {layer} "
                f"receives it as {num(seen.min)} in every sample"
            )
        else:
            where = f"{inp.name} ({len(erased)} of {len(inp.features)} features)"
            head = (
                f"{len(erased)} features of {inp.name} vary in the data but the first layer "
                f"{layer} receives each as one value in every sample: {'; '.join(parts)}{more}"
            )
        why = ""
        if (inp.normalized_by or "").endswith("(layer_norm)"):
            why = (
                " A LayerNorm normalizes each sample across its features, not each feature "
                "across samples"
                + (
                    ": over a single feature it outputs its bias for every sample."
                    if len(inp.features) == 1
                    else "; next to much larger features a small one's variation falls below "
                    "float precision."
                )
            )
        message = (
            f"{head}: {how} {'erase' if several else 'erases'} "
            f"{'it' if len(erased) == 1 else 'them'}, so nothing can be learned from "
            f"{'it' if len(erased) == 1 else 'them'}.{why}"
        )
        feats = [raw for raw, _ in erased]
        fix = standardize_fix(inp, feats)
        fix = replace(
            fix,
            summary=f"Remove {how} before the first layer and normalize each feature over the "
            f"data instead: standardize '{inp.name}' with the measured statistics "
            f"({_fitted(feats)}), or use nn.BatchNorm1d in its place.",
            code=f"# first remove {how} from the model, then:\n{fix.code}",
        )
        yield input_erased_in_model.finding(
            message,
            where=where,
            category="input-scale" if scaled else "other",
            evidence={
                "input": inp.name,
                "normalized_by": inp.normalized_by,
                "transformed_by": list(inp.transformed_by),
                # the badly scaled raw features (what the verdict names), then the erased
                "features": [_feature_evidence(f) for f in scaled[:64]],
                "erased": [
                    {**_feature_evidence(raw), "received": seen.min} for raw, seen in erased[:64]
                ],
                "erased_total": len(erased),
                # every varying feature erased: the output cannot depend on this input
                "every": len(erased) >= len(varying),
            },
            fix=fix,
        )


def _erasing(ctx: Context, inp: InputStats) -> tuple[str, bool]:
    """What the model does to *inp* before its first layer, for SC108's messages
    (``the layer_norm of module 0 (LayerNorm)``, or the operations applied), and whether
    that names several operations."""
    if inp.normalized_by:
        module, _, kind = inp.normalized_by.rpartition(" (")
        return f"the {kind.rstrip(')')} of module {ctx.measurements.label(module)}", False
    ops = list(dict.fromkeys(_op(o) for o in inp.transformed_by))
    if not ops:
        return "the model", False
    listed = ops[0] if len(ops) == 1 else ", ".join(ops[:-1]) + " and " + ops[-1]
    return f"the model's {listed}", len(ops) > 1


def _spread(f: FeatureStats) -> str:
    return f"spans [{num(f.min)}, {num(f.max)}], std {num(f.std)}"
