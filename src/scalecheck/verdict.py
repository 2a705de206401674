"""Stage 5: from findings to one verdict, with the reason in a sentence.

- ``stalling``: an input-scale finding (SC1xx, warning or error) **and** evidence that it
  blocks learning: a ``blocked`` finding (exact saturation at the input layer, exactly-zero
  or vanishing input-layer gradients, a saturated softmax; without one, an input whose
  every varying feature the model turns into a constant, SC108), confirmed by a trial in which
  rescaling the inputs trains clearly better than the raw inputs, or, without a
  conclusive trial, while the loss is not below the constant predictor's.
- ``at_risk``: an input-scale finding without that evidence (including inputs a
  normalization layer takes care of, a trial in which the raw inputs train fine, and a
  trial in which they learn nothing while nothing blocks their gradient: the calibration
  corpus, docs/calibration.md, has raw inputs that learn nothing in the trial's 200 steps
  yet learn in a few thousand, features of order 1e-4 and a ReLU classifier on raw
  penguin measurements, so a short trial alone shows slow training, not a block).
- ``ok``: no input-scale finding. Other findings may still be listed: a verdict is a
  statement about the input features only, and its reason names the errors of other kinds
  (non-finite values, a broken loss) so that it never reads as "all is well" beside them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ._format import num
from .findings import Finding, Severity, Verdict
from .measurements import Measurements

__all__ = ["decide"]

#: Loss within this fraction of the constant predictor's loss counts as "not learning"
#: (the same margin as rule SC401).
PLATEAU_MARGIN = 0.01


def decide(
    findings: Sequence[Finding], measurements: Measurements, trial: Any = None
) -> tuple[Verdict, str]:
    """The verdict and a one-sentence reason."""
    scale = [f for f in findings if f.category == "input-scale"]
    serious = [f for f in scale if f.severity >= Severity.WARNING]
    blocked = [f for f in findings if f.category == "blocked"]
    if not blocked:
        # an input whose every varying feature the model erases (SC108) blocks learning
        # too, with no gradient to show it: the output cannot depend on that input
        blocked = [f for f in scale if f.code == "SC108" and f.evidence.get("every")]
    trial_says = [f for f in findings if f.category == "trial"]
    loss = measurements.loss
    plateau = True
    if loss is not None and loss.value is not None and loss.baseline is not None:
        plateau = loss.value >= loss.baseline * (1 - PLATEAU_MARGIN)
    if not scale:
        return Verdict.OK, _well_scaled(findings)
    what = _scale_phrase(serious or scale)
    erased = [
        e["name"]
        for f in scale
        if f.code == "SC108"
        for e in f.evidence.get("erased", ())
        if isinstance(e, dict) and e.get("name")
    ]
    if erased:
        # the model's own normalization did not deal with the scale: it removed features
        named = ", ".join(erased[:3]) + (f" and {len(erased) - 3} more" if len(erased) > 3 else "")
        what += (
            f"; the model turns {named} into "
            f"{'a constant' if len(erased) == 1 else 'constants'} before its first layer"
        )
    if serious and trial_says and blocked:
        return Verdict.STALLING, (
            f"{what}, and a short training trial shows it: {trial_says[0].message}"
        )
    if serious and blocked and plateau and not _trial_trains(trial):
        evidence = "; ".join(_short(f) for f in blocked[:3])
        return Verdict.STALLING, f"{what}, and it is blocking learning: {evidence}."
    if not serious:
        return Verdict.AT_RISK, (
            f"{what}, but the model normalizes it before any nonlinearity; training "
            "should not stall, though standardizing is still good practice."
        )
    if trial_says:
        return Verdict.AT_RISK, (
            f"{what}; in a short trial the raw inputs learned nothing while rescaled ones "
            f"did ({trial_says[0].message.rstrip('.')}), but nothing blocks the input layer's "
            "gradient, so expect much slower training rather than a stall. Standardize the "
            "inputs."
        )
    if _trial_trains(trial):
        return Verdict.AT_RISK, (
            f"{what}, but a short trial on the raw inputs trained about as well as on "
            "standardized ones; standardizing is still recommended."
        )
    return Verdict.AT_RISK, (
        f"{what}, but no stall was measured: the input layer still passes gradient. "
        "Expect slower, less stable training until the inputs are standardized."
    )


def _well_scaled(findings: Sequence[Finding]) -> str:
    """The ``ok`` reason: the inputs are well scaled, and which errors of another kind
    stand in the way (a verdict about the inputs must not read as "all is well" next to
    them)."""
    errors: list[str] = []
    for f in findings:
        label = f"{f.code} {f.name}"
        if f.severity >= Severity.ERROR and label not in errors:
            errors.append(label)
    if not errors:
        return "The input features are well scaled."
    more = f" and {len(errors) - 3} more" if len(errors) > 3 else ""
    which = (
        "an error of another kind stands" if len(errors) == 1 else "errors of another kind stand"
    )
    listed = ", ".join(errors[:3])
    return f"The input features are well scaled, but {which} in the way: {listed}{more}."


def _scale_phrase(scale: Sequence[Finding]) -> str:
    names: list[str] = []
    unlisted = 0  # flagged features beyond those a finding's evidence lists (64 at most)
    kappa = None
    for f in scale:
        features = f.evidence.get("features", ()) or ()
        flagged = f.evidence.get("flagged")
        if isinstance(flagged, int) and flagged > len(features):
            unlisted = max(unlisted, flagged - len(features))
        for feature in features:
            name = feature.get("name") if isinstance(feature, dict) else None
            if name and feature.get("std") == 0 and feature.get("mean") is not None:
                # a constant (SC107), or the only sample measured
                only = feature.get("count") == 1
                name += f" = {num(feature['mean'])} in {'the only' if only else 'every'} sample"
            if name and name not in names:
                names.append(name)
        covered = any(n == f.where or n.startswith(f"{f.where}[") for n in names)
        if not f.evidence.get("features") and f.where and not covered:
            names.append(f.where)  # e.g. SC102's whole input, unless its features are listed
        k = f.evidence.get("kappa")
        if isinstance(k, (int, float)):
            kappa = k if kappa is None else max(kappa, k)
    more = len(names) - 3 + unlisted if len(names) > 3 else unlisted
    listed = ", ".join(names[:3]) + (f" and {more} more" if more > 0 else "")
    text = f"The input is badly scaled ({listed}"
    if kappa is not None:
        text += f"; condition number {num(kappa)}"
    return text + ")"


def _short(f: Finding) -> str:
    if f.code == "SC108":
        return f"nothing the first layer receives from '{f.evidence.get('input')}' varies"
    first = f.message.split(": ")[0] if f.code == "SC301" else f.message.split(";")[0]
    return first.rstrip(".")


def _trial_trains(trial: Any) -> bool:
    """True when a trial ran and the raw arm trained as well as the rescaled ones."""
    if trial is None:
        return False
    return bool(getattr(trial, "raw_trains", False))
