"""SC0xx: rules about the measurement itself."""

from __future__ import annotations

from collections.abc import Iterator

from .._format import plural
from ..findings import Finding, Fix, Severity
from ._registry import Context, Threshold, rule

FEW = Threshold(
    "samples",
    32,
    "The relative standard error of a measured std is about 1/sqrt(2n): 12.5% at n = 32. "
    "Below that, per-feature statistics and the fitted standardizer are noisy.",
)


@rule("SC001", "internal-error", Severity.ERROR, "meta")
def internal_error(ctx: Context) -> Iterator[Finding]:
    """Part of scalecheck itself failed; the rest of the report is still valid.

    What it does:
        Reports an exception raised inside one of scalecheck's monitors or rules. The
        failing part's results are missing; everything else ran.

    Why it matters:
        A diagnostic must never take the user's run down with it: a broken rule is
        reported, not fatal. ``diagnose(..., strict=True)`` re-raises instead.

    Example:
        A monitor meeting a tensor layout it does not understand.

    Fix:
        Report it with the message and the model's input shapes; meanwhile ignore the
        failing rule with ``ignore=``.

    Known problems:
        None known.
    """
    return iter(())


@rule("SC002", "few-samples-measured", Severity.INFO, "meta", thresholds=(FEW,))
def few_samples_measured(ctx: Context) -> Iterator[Finding]:
    """Fewer samples were measured than the statistics need.

    What it does:
        Flags runs that measured fewer than ``samples`` samples in total.

    Why it matters:
        Means, stds and the fitted standardizer come from the measured samples only.

    Example:
        ``diagnose(model, loader, max_batches=2)`` with a batch size of 4.

    Fix:
        Raise ``max_batches`` (or the loader's batch size).

    Known problems:
        None known.
    """
    n = ctx.measurements.samples
    if n >= FEW.value:
        return
    yield few_samples_measured.finding(
        f"Only {plural(n, 'sample')} {'was' if n == 1 else 'were'} measured "
        f"({plural(ctx.measurements.batches, 'batch', 'batches')}); statistics and the fitted "
        "standardizer are noisy.",
        where="loader",
        evidence={"samples": n, "batches": ctx.measurements.batches},
        fix=Fix(summary="Pass a larger max_batches= to diagnose()."),
    )


@rule("SC003", "no-numeric-features", Severity.INFO, "meta")
def no_numeric_features(ctx: Context) -> Iterator[Finding]:
    """The model receives no numeric features, so input scale cannot be the problem.

    What it does:
        Fires when every input is categorical (integer ids fed to an embedding) or ignored
        (masks, integer tensors never turned into numbers).

    Why it matters:
        Scale applies to numeric features. A language model fed token ids has nothing to
        standardize; the verdict is then ``ok`` and the other findings (activations,
        gradients, loss) still apply.

    Example:
        A transformer called with ``input_ids`` and ``attention_mask``.

    Fix:
        None needed.

    Known problems:
        An integer feature the model converts to float in a way the tracer does not see
        (a custom kernel) is treated as ids.
    """
    inputs = ctx.measurements.inputs
    if not inputs or any(i.kind == "feature" for i in inputs):
        return
    listed = ", ".join(f"{i.name} ({i.kind})" for i in inputs)
    yield no_numeric_features.finding(
        f"The model receives no numeric features ({listed}); input scale cannot stall it.",
        where="inputs",
        evidence={"inputs": {i.name: i.kind for i in inputs}},
    )
