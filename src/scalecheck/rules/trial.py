"""SC41x: rules about the A/B training trial (see :mod:`scalecheck.trial`)."""

from __future__ import annotations

from collections.abc import Iterator

from .._format import plural
from ..findings import Finding, Fix, Severity
from ..measurements import TrialArm, TrialResult
from ..trial import LEARNS, STUCK
from ._registry import Context, Threshold, rule

STUCK_T = Threshold(
    "stuck",
    STUCK,
    "The raw arm ends at 90% or more of the constant predictor's loss (without a baseline: "
    "of its own initial loss): after the same steps that let a rescaled arm learn, it has "
    "learned no more than the mean target.",
)
LEARNS_T = Threshold(
    "learns",
    LEARNS,
    "A rescaled arm at least halves the loss relative to both the raw arm and the constant "
    "predictor. Both arms start from the same weights and are averaged over the same full "
    "pass of batches, so a factor of two is far outside run-to-run noise.",
)


def _arms_text(trial: TrialResult) -> str:
    return f"{trial.arms_text()}, in {plural(trial.steps, 'step')}"


def _best(trial: TrialResult) -> TrialArm | None:
    rescaled = [a for a in trial.arms if a.name != "raw" and a.final is not None]
    return min(rescaled, key=lambda a: a.final or 0.0) if rescaled else None


def _evidence(trial: TrialResult) -> dict[str, object]:
    return {
        "arms": {
            a.name: {"initial": a.initial, "final": a.final, "lr": a.lr, "finals": a.finals}
            for a in trial.arms
        },
        "baseline": trial.baseline,
        "steps": trial.steps,
        "seconds": trial.seconds,
        "budget_exhausted": trial.budget_exhausted,
    }


def _fix(arm: TrialArm) -> Fix:
    log = arm.name == "log-standardized"
    return Fix(
        summary=f"Apply the {arm.name} transform to the inputs and retrain.",
        code=f"model = torch.nn.Sequential(report.standardizer({'log=True' if log else ''}), "
        "model)",
        applicability="changes what the model is trained on: retrain after applying",
    )


@rule("SC410", "rescaling-fixes-training", Severity.ERROR, "trial", thresholds=(STUCK_T, LEARNS_T))
def rescaling_fixes_training(ctx: Context) -> Iterator[Finding]:
    """A short training trial: raw inputs learn nothing, rescaled inputs learn.

    What it does:
        Reads the A/B trial (same model, same batches, same initial weights, a few
        optimizer steps per arm, best of a small learning-rate grid). Fires when the raw
        arm is stuck (``stuck``) while a rescaled arm (standardized, or log-standardized)
        reaches a loss below ``learns`` times both the raw arm's and the baseline.

    Why it matters:
        This is the causal evidence: the only difference between the arms is the input
        scale, so the scale is what stops the network from learning.

    Example:
        The reference interpolation network: raw 0.137 -> 0.052 (the baseline, 0.052);
        standardized 0.060 -> 0.004 in 200 steps.

    Fix:
        Put the standardizer in front of the model and retrain.

    Known problems:
        The trial fits the measured batches only; it shows that learning starts, not how
        well the model generalizes.
    """
    trial = ctx.trial
    if trial is None or not trial.rescaled_helps or trial.raw_trains:
        return
    best = _best(trial)
    if best is None:
        return
    yield rescaling_fixes_training.finding(
        f"raw inputs learn nothing, {best.name} inputs do: {_arms_text(trial)}.",
        where=f"trial ({best.name})",
        evidence=_evidence(trial),
        fix=_fix(best),
    )


@rule("SC411", "rescaling-speeds-training", Severity.WARNING, "other", thresholds=(LEARNS_T,))
def rescaling_speeds_training(ctx: Context) -> Iterator[Finding]:
    """A short training trial: raw inputs learn, but rescaled inputs learn much faster.

    What it does:
        Fires when the trial's raw arm does learn (it is not stuck) but a rescaled arm
        reaches less than ``learns`` times its loss in the same steps.

    Why it matters:
        The network trains on raw inputs, only slower and to a worse loss within the same
        budget: training is at risk rather than stalled.

    Example:
        A ReLU network on features with std 100: Adam copes, but standardized inputs
        converge several times faster.

    Fix:
        Standardize the inputs.

    Known problems:
        A few hundred steps say little about the final loss of a long training run.
    """
    trial = ctx.trial
    if trial is None or not trial.rescaled_helps or not trial.raw_trains:
        return
    best = _best(trial)
    if best is None:
        return
    yield rescaling_speeds_training.finding(
        f"raw inputs learn, but {best.name} inputs learn much faster: {_arms_text(trial)}.",
        where=f"trial ({best.name})",
        evidence=_evidence(trial),
        fix=_fix(best),
    )
