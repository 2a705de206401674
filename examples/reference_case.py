"""The reference case end to end: the network that learned nothing, diagnosed and fixed.

``Linear(1, 10) -> Tanh -> Linear(10, 3) -> Softmax`` trained with MSE and Adam on raw
``x`` in [255, 200000] learns nothing at any learning rate. This script diagnoses it,
applies the fix the report hands over, checks the fix with a second diagnosis, and trains
both versions from the same initial weights on the same batches::

    python examples/reference_case.py
    python examples/reference_case.py --steps 500 --plot scalecheck.png --html report.html

It exits 0 when the raw setup is diagnosed ``stalling`` and the fixed one ``ok``.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch

import scalecheck
from scalecheck.reference import interpolation as ref
from scalecheck.trial import TrialOptions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2500, help="training steps per version")
    parser.add_argument("--lr", type=float, default=1e-2, help="Adam learning rate")
    parser.add_argument("--trial-steps", type=int, default=200, help="steps per trial arm")
    parser.add_argument("--plot", type=Path, help="save the summary figure here (matplotlib)")
    parser.add_argument("--html", type=Path, help="save the HTML report here")
    parser.add_argument("--json", type=Path, help="save the JSON report here")
    args = parser.parse_args(argv)

    # 1. The original setup, and the diagnosis.
    model = ref.make_model(seed=0)  # Linear(1, 10) -> Tanh -> Linear(10, 3) -> Softmax
    loader = ref.make_loader(seed=0)  # (x [4, 1], y [4, 3]), x in [255, 200000]
    report = scalecheck.diagnose(model, loader, trial=TrialOptions(steps=args.trial_steps))
    print(report)

    # 2. Keep it: as HTML for a browser, JSON for a script, a figure for a slide.
    if args.html:
        args.html.write_text(report.to_html(standalone=True), encoding="utf-8")
        print(f"\nwrote {args.html}")
    if args.json:
        args.json.write_text(report.to_json(), encoding="utf-8")
        print(f"wrote {args.json}")
    if args.plot:
        try:
            report.plot("summary").savefig(args.plot, dpi=100)
        except scalecheck.MissingDependencyError as exc:
            print(f"no plot: {exc}")
        else:
            print(f"wrote {args.plot}")

    # 3. The fix the report hands over, checked with a second diagnosis.
    fixed = torch.nn.Sequential(report.standardizer(), copy.deepcopy(model))
    after = scalecheck.diagnose(fixed, loader, trial=False)
    print(f"\nWith the fix, nn.Sequential(report.standardizer(), model): {after.verdict.value}")
    print(f"  {after.summary}")

    # 4. Train both from the same initial weights on the same batches.
    raw_losses = ref.train(copy.deepcopy(model), ref.make_loader(seed=1), args.steps, args.lr)
    fixed_losses = ref.train(fixed, ref.make_loader(seed=1), args.steps, args.lr)
    tail = max(1, args.steps // 10)
    raw_final = sum(raw_losses[-tail:]) / tail
    fixed_final = sum(fixed_losses[-tail:]) / tail
    baseline = report.loss.baseline if report.loss is not None else None
    print(f"\nAfter {args.steps} Adam steps (lr {args.lr:g}), mean MSE over the last {tail}:")
    print(f"  raw inputs             {raw_final:.5f}")
    print(f"  standardized inputs    {fixed_final:.5f}")
    if baseline is not None:
        print(f"  constant predictor     {baseline:.5f}")

    ok = report.verdict is scalecheck.Verdict.STALLING and after.verdict is scalecheck.Verdict.OK
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
