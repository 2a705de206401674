"""Run ``diagnose`` on every calibration case, score it, and render docs/calibration.md.

``tests/test_calibration.py`` uses this module: it runs every case once (default
settings, trial on), checks the recall and false-alarm bounds, and checks that the
committed docs/calibration.md is what the run renders (numbers compared to 3 significant
digits with a small tolerance, everything else exactly).

Regenerate the page after changing a case, a rule, the trial or the verdict::

    .venv/bin/python -m tests.calibration.table --write
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

import scalecheck

from .cases import CASES, Case
from .verified import BUDGET, VERIFIED

DOC = Path(__file__).resolve().parents[2] / "docs" / "calibration.md"
REGENERATE = ".venv/bin/python -m tests.calibration.table --write"
#: Numbers in the page are compared with this relative tolerance (the trial's losses are
#: deterministic on one machine; the tolerance absorbs summation-order differences).
REL_TOL = 0.05
ABS_TOL = 1e-4


@dataclass(frozen=True)
class Row:
    """One case, diagnosed."""

    case: Case
    verdict: str
    codes: tuple[str, ...]
    trial_baseline: float | None
    trial_raw: float | None
    trial_rescaled: float | None
    trial_rescaled_arm: str | None
    trial_steps: int | None
    budget_exhausted: bool
    seconds: float

    @property
    def hit(self) -> bool:
        """Whether the verdict counts as right (see :func:`score`)."""
        if self.case.expected == "stalling":
            return self.verdict == "stalling"
        if self.case.expected == "at_risk":
            return self.verdict != "ok"
        return self.verdict == "ok"


@dataclass(frozen=True)
class Score:
    """Recall on the scaling cases and false alarms on the others."""

    scaling: int
    found: int
    stalling: int
    stalling_found: int
    others: int
    false_alarms: int
    false_stalling: tuple[str, ...]
    missed: tuple[str, ...]
    wrong: tuple[str, ...]

    @property
    def recall(self) -> float:
        return self.found / self.scaling if self.scaling else 1.0

    @property
    def false_alarm_rate(self) -> float:
        return self.false_alarms / self.others if self.others else 0.0


def run_case(c: Case) -> Row:
    """``diagnose`` with default settings (trial on) on a fresh build of *c*."""
    setup = c.build()
    started = time.perf_counter()
    report = scalecheck.diagnose(setup.model, setup.loader, loss_fn=setup.loss_fn)
    seconds = time.perf_counter() - started
    trial = report.trial
    raw = rescaled = None
    arm_name = None
    if trial is not None:
        raw_arm = trial.arm("raw")
        raw = raw_arm.final if raw_arm is not None else None
        others = [a for a in trial.arms if a.name != "raw" and a.final is not None]
        if others:
            best = min(others, key=lambda a: a.final or 0.0)
            rescaled, arm_name = best.final, best.name
    return Row(
        case=c,
        verdict=report.verdict.value,
        codes=tuple(sorted({f.code for f in report.findings})),
        trial_baseline=trial.baseline if trial is not None else None,
        trial_raw=raw,
        trial_rescaled=rescaled,
        trial_rescaled_arm=arm_name,
        trial_steps=trial.steps if trial is not None else None,
        budget_exhausted=bool(trial is not None and trial.budget_exhausted),
        seconds=seconds,
    )


def run_all(cases: Sequence[Case] = CASES) -> list[Row]:
    """Every case, diagnosed, in corpus order, with one intra-op thread.

    The cases' tensors are tiny, so a second thread buys nothing; on a busy machine,
    OpenMP threads that spin while waiting for a core slow the trial several-fold, so
    that it runs out of its time budget after a few steps and its verdict changes. One
    thread keeps the run as deterministic as the trial's time budget allows.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return [run_case(c) for c in cases]
    finally:
        torch.set_num_threads(threads)


def score(rows: Sequence[Row]) -> Score:
    """Recall: a ``stalling`` case is found when diagnosed ``stalling``, an ``at_risk`` case
    when diagnosed anything but ``ok``. A false alarm: an ``ok`` case diagnosed anything
    but ``ok``. A false ``stalling``: any case diagnosed ``stalling`` whose training says
    otherwise (an ``at_risk`` case whose raw inputs train, or an ``ok`` case)."""
    scaling = [r for r in rows if r.case.expected in ("stalling", "at_risk")]
    stalling = [r for r in rows if r.case.expected == "stalling"]
    others = [r for r in rows if r.case.expected == "ok"]
    return Score(
        scaling=len(scaling),
        found=sum(r.hit for r in scaling),
        stalling=len(stalling),
        stalling_found=sum(r.verdict == "stalling" for r in stalling),
        others=len(others),
        false_alarms=sum(r.verdict != "ok" for r in others),
        false_stalling=tuple(
            r.case.name for r in rows if r.verdict == "stalling" and r.case.expected != "stalling"
        ),
        missed=tuple(r.case.name for r in scaling if not r.hit),
        wrong=tuple(r.case.name for r in rows if r.verdict != r.case.expected),
    )


# -- rendering ------------------------------------------------------------------------------


def _num(x: float | None) -> str:
    if x is None:
        return "-"
    if not math.isfinite(x):
        return "diverged"
    return f"{x:.3g}"


def _ratio(x: float | None, base: float | None) -> str:
    if x is None or base is None or base <= 0:
        return "-"
    return f"{x / base:.3g}"


def _training(c: Case) -> str:
    v = VERIFIED[c.name]
    base = v["baseline"]
    arms = ["standardized", "log-standardized"]
    rescaled = [(v[a]["best"], a) for a in arms if a in v and v[a]["best"] is not None]
    best, arm = min(rescaled) if rescaled else (None, "standardized")
    text = f"raw {_ratio(v['raw']['best'], base)}, {_short(arm)} {_ratio(best, base)}"
    if "user_lr" in v:
        u = v["user_lr"]
        raw, std = _ratio(u["raw"], base), _ratio(u["standardized"], base)
        text += f"; at lr {u['lr']:g}: raw {raw}, std {std}"
    return text


def _short(arm: str | None) -> str:
    return {"standardized": "std", "log-standardized": "log-std"}.get(arm or "", arm or "-")


def _trial(r: Row) -> str:
    if r.trial_steps is None:
        return "not run (no input-scale finding)"
    base = r.trial_baseline
    if base is not None and base > 0:
        text = (
            f"raw {_ratio(r.trial_raw, base)}, {_short(r.trial_rescaled_arm)} "
            f"{_ratio(r.trial_rescaled, base)}"
        )
    else:
        text = f"raw {_num(r.trial_raw)}, {_short(r.trial_rescaled_arm)} {_num(r.trial_rescaled)}"
    text += f" ({r.trial_steps} steps)"
    if r.budget_exhausted:
        text += " (time budget ran out)"
    return text


def render(rows: Sequence[Row]) -> str:
    """The page: summary figures, then one row per case."""
    s = score(rows)
    lines = [
        "# Calibration: does the verdict match what training shows?",
        "",
        "<!-- GENERATED by tests/calibration/table.py from the calibration corpus; do not edit.",
        f"     Regenerate: {REGENERATE} -->",
        "",
        "`tests/calibration/` holds known-answer cases: small models and loaders whose label "
        "(`stalling`, `at_risk`, `ok`) was **verified by training**, not assumed. For each case "
        "`tests/calibration/verify.py` trains the model from its initial weights on raw and on "
        f"rescaled inputs ({BUDGET['optimizer']}, {BUDGET['steps']} steps at learning rates "
        f"{', '.join(f'{lr:g}' for lr in BUDGET['lrs'])}, best of the grid; torch "
        f"{BUDGET['torch']}) and records the numbers in `tests/calibration/verified.py`:",
        "",
        "- `stalling`: the inputs are badly scaled (some feature's `[x, 1]` condition number "
        "above 1e3, `c^2 + 1` for a feature that is the constant `c`, or stds differing by "
        "more than 31.6x), raw training ends at >= 0.9x the "
        "constant predictor's loss, rescaled training at <= 0.5x;",
        "- `at_risk`: badly scaled, but raw training reaches <= 0.5x the constant predictor's "
        "loss (a normalization layer after the input, a scale Adam tolerates);",
        "- `ok`: the first trainable layer receives well-scaled inputs; either training learns, "
        "or it fails for another reason that rescaling does not fix.",
        "",
        "`tests/test_calibration.py` runs `scalecheck.diagnose(model, loader, loss_fn=...)` with "
        "default settings (trial on) on every case and holds recall >= 0.9 and zero false "
        "`stalling` verdicts. A `stalling` case counts as found only when diagnosed "
        "`stalling`; an `at_risk` case when diagnosed anything but `ok`.",
        "",
        "## Figures",
        "",
        f"- cases: {len(rows)} ({s.scaling} with badly scaled inputs, {s.others} without)",
        f"- recall on the scaling cases: {s.found}/{s.scaling} = {s.recall:.2f}"
        + (f" (missed: {', '.join(s.missed)})" if s.missed else ""),
        f"- `stalling` cases diagnosed `stalling`: {s.stalling_found}/{s.stalling}",
        f"- false `stalling` verdicts: {len(s.false_stalling)}"
        + (f" ({', '.join(s.false_stalling)})" if s.false_stalling else ""),
        f"- false alarms on the `ok` cases (any verdict but `ok`): {s.false_alarms}/{s.others}",
        f"- verdict different from the label: {len(s.wrong)}"
        + (f" ({', '.join(s.wrong)})" if s.wrong else ""),
        "",
        "## Cases",
        "",
        "Losses are shown as multiples of the constant predictor's loss (the baseline): "
        "1 means nothing learned. *Training* is the verification (best of the grid after "
        f"{BUDGET['steps']} steps); *trial* is `report.trial` (best of its grid after its "
        "steps, on the measured batches).",
        "",
        "| case | group | expected | verdict | training: loss / baseline | trial: loss / baseline "
        "| findings |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        c = r.case
        mark = "" if r.verdict == c.expected else (" (counts)" if r.hit else " **(miss)**")
        lines.append(
            f"| `{c.name}` | {c.group} | {c.expected} | {r.verdict}{mark} | {_training(c)} "
            f"| {_trial(r)} | {' '.join(r.codes) or '-'} |"
        )
    lines += ["", "## Why each label", ""]
    for r in rows:
        c = r.case
        v = VERIFIED[c.name]
        lines.append(
            f"- `{c.name}` ({c.expected}): {c.why} Training: {v['reason']}; largest feature "
            f"kappa {_num(v['kappa'])}, std ratio {_num(v['std_ratio'])}."
            + (f" *Watch:* {c.suspect}" if c.suspect else "")
        )
    return "\n".join(lines) + "\n"


# -- comparing with the committed page ------------------------------------------------------

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e[+-]?\d+)?")


def _shape(line: str) -> tuple[str, list[float]]:
    numbers = [float(m) for m in _NUMBER.findall(line)]
    return _NUMBER.sub("#", line), numbers


def differences(committed: str, generated: str) -> list[str]:
    """Lines that differ, beyond a small numeric tolerance (empty: the same page)."""
    a, b = committed.splitlines(), generated.splitlines()
    out = []
    if len(a) != len(b):
        out.append(f"the page has {len(a)} lines, the run renders {len(b)}")
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x == y:
            continue
        (tx, nx), (ty, ny) = _shape(x), _shape(y)
        same = (
            tx == ty
            and len(nx) == len(ny)
            and all(
                math.isclose(p, q, rel_tol=REL_TOL, abs_tol=ABS_TOL)
                for p, q in zip(nx, ny, strict=True)
            )
        )
        if not same:
            out.append(f"line {i + 1}:\n  committed: {x}\n  this run:  {y}")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Render docs/calibration.md from the corpus.")
    parser.add_argument("--write", action="store_true", help="write docs/calibration.md")
    args = parser.parse_args(argv)
    rows = run_all()
    for r in rows:
        print(
            f"{r.case.name:30s} expected {r.case.expected:9s} verdict {r.verdict:9s} "
            f"{r.seconds:5.2f}s  {_trial(r)}"
        )
    page = render(rows)
    if args.write:
        DOC.write_text(page)
        print(f"wrote {DOC}")
        return 0
    diff = differences(DOC.read_text() if DOC.exists() else "", page)
    print("\n".join(diff) if diff else "docs/calibration.md is current")
    return 1 if diff else 0


if __name__ == "__main__":
    sys.exit(main())
