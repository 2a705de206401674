"""The ``scalecheck`` command.

- ``scalecheck demo``: the reference case, diagnosed, fixed, and trained both ways.
- ``scalecheck check MODULE:FACTORY``: diagnose the model and loader a factory returns
  (``pkg.module:factory`` or ``path/to/file.py:factory``), as text, JSON or HTML.
- ``scalecheck rules``: the table of rules.
- ``scalecheck explain SC101``: one rule's documentation.

Exit codes: 0 clean, 1 findings at or above ``--fail-on``, 2 usage or loading error, 141
when the reader of the output closed it early (``scalecheck rules | head``).
"""

from __future__ import annotations

import argparse
import copy
import importlib
import importlib.util
import os
import sys
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._version import __version__
from .errors import ScaleCheckError

__all__ = ["main"]

EXIT_OK, EXIT_FINDINGS, EXIT_USAGE = 0, 1, 2
#: The reader of the output went away (``scalecheck rules | head``): the shell's code for a
#: process ended by SIGPIPE, 128 + 13, and nothing on stderr.
EXIT_PIPE = 141


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="scalecheck",
        description="Is badly scaled input why your PyTorch network will not learn?",
    )
    p.add_argument("--version", action="version", version=f"scalecheck {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser("demo", help="diagnose, fix and train the reference case")
    demo.add_argument("--steps", type=int, default=2500, help="training steps per arm")
    demo.add_argument("--activation", choices=("tanh", "sigmoid", "relu"), default="tanh")
    demo.add_argument("--lr", type=float, default=1e-2, help="Adam learning rate")
    _trial_arguments(demo)

    check = sub.add_parser("check", help="diagnose a model and loader from a factory")
    check.add_argument(
        "target",
        help="pkg.module:factory or path/to/file.py:factory; the factory returns "
        "(model, loader) or (model, loader, loss_fn) or a dict with those keys",
    )
    check.add_argument("--max-batches", type=int, default=16)
    check.add_argument("--seed", type=int, default=0)
    _trial_arguments(check)
    check.add_argument("--ignore", action="append", default=[], help="rule code/prefix/name")
    check.add_argument(
        "--format",
        choices=("text", "json", "html", "markdown"),
        default="text",
        help="markdown suits CI job summaries ($GITHUB_STEP_SUMMARY) and review comments",
    )
    check.add_argument("--output", type=Path, help="write the report here instead of stdout")
    check.add_argument(
        "--fail-on",
        choices=("error", "warning", "never"),
        default="error",
        help="exit 1 when findings reach this severity (default: error)",
    )

    sub.add_parser("rules", help="list all rules")
    explain = sub.add_parser("explain", help="show a rule's documentation")
    explain.add_argument("rule", help="code (SC101) or name (unscaled-input-feature)")
    return p


def _trial_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-trial", action="store_true", help="skip the A/B training trial")
    parser.add_argument(
        "--trial-steps",
        type=int,
        default=None,
        metavar="N",
        help="optimizer steps per arm of the trial (default: 200, within a 5 s budget)",
    )


def _trial(args: argparse.Namespace) -> Any:
    from .trial import TrialOptions

    if args.no_trial:
        return False
    if args.trial_steps is None:
        return True
    return TrialOptions(steps=args.trial_steps)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        if args.command == "demo":
            code = _demo(args)
        elif args.command == "check":
            code = _check(args)
        elif args.command == "rules":
            code = _rules()
        else:
            code = _explain(args.rule)
        sys.stdout.flush()  # here, where a closed pipe is caught, not at exit
        return code
    except ScaleCheckError as exc:
        print(f"scalecheck: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        # what is still buffered would raise again when Python flushes stdout at exit
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_PIPE


# -- demo ----------------------------------------------------------------------------------
def _demo(args: argparse.Namespace) -> int:
    import torch

    from . import diagnose
    from .reference import interpolation as ref

    started = time.perf_counter()
    print(
        "The reference case: Linear(1, 10) -> Tanh -> Linear(10, 3) -> Softmax, MSE, Adam,\n"
        f"learning a piecewise-linear map of x in [{ref.LOW_X}, {ref.HIGH_X}]. "
        "It learned nothing at any learning rate.\n"
    )
    model = ref.make_model(args.activation, seed=0)
    raw_loader = ref.make_loader(seed=0)
    report = diagnose(model, raw_loader, trial=_trial(args))
    print(report)
    print()
    fixed = torch.nn.Sequential(report.standardizer(), copy.deepcopy(model))
    after = diagnose(fixed, raw_loader, trial=_trial(args))
    print("-" * 80)
    print("After the fix, model = nn.Sequential(report.standardizer(), model):")
    print(f"  verdict: {after.verdict.value}: {after.summary}")
    print()
    raw_model = copy.deepcopy(model)  # same initial weights in both arms
    steps = args.steps
    print(f"Training both for {steps} Adam steps (lr {args.lr:g}, batch 4) on the same data...")
    raw_losses = ref.train(raw_model, ref.make_loader(seed=1), steps, args.lr)
    fixed_losses = ref.train(fixed, ref.make_loader(seed=1), steps, args.lr)
    tail = max(1, steps // 10)
    raw_final = sum(raw_losses[-tail:]) / tail
    fixed_final = sum(fixed_losses[-tail:]) / tail
    baseline = report.loss.baseline if report.loss is not None else None
    print()
    print(f"  {'':<34}{'final MSE (last 10% of steps)':>30}")
    print(f"  {'raw inputs':<34}{raw_final:>30.5f}")
    print(f"  {'standardized (report.standardizer)':<34}{fixed_final:>30.5f}")
    if baseline is not None:
        print(f"  {'constant predictor (mean target)':<34}{baseline:>30.5f}")
    print()
    if baseline is not None and raw_final >= 0.9 * baseline and fixed_final < 0.5 * baseline:
        print(
            "Raw inputs: stuck at the constant predictor's loss. Standardized: "
            f"{baseline / max(fixed_final, 1e-12):.0f}x lower. One line fixed it."
        )
    print(f"(demo took {time.perf_counter() - started:.1f} s)")
    return EXIT_OK


# -- check ---------------------------------------------------------------------------------
def _load_factory(target: str) -> Any:
    if ":" not in target:
        raise _UsageError(
            f"target must look like pkg.module:factory or path/to/file.py:factory, got {target!r}."
        )
    module_part, _, attr = target.rpartition(":")
    try:
        if module_part.endswith(".py") or "/" in module_part or "\\" in module_part:
            path = Path(module_part)
            if not path.is_file():
                raise _UsageError(f"no such file: {path}")
            _on_path(str(path.resolve().parent))  # as `python path/to/file.py` would
            # a private module name: a factory file called e.g. `torch.py` or `data.py`
            # must not shadow, or be shadowed by, an importable module of that name
            name = f"_scalecheck_factory_{path.stem}"
            spec = importlib.util.spec_from_file_location(name, path)
            if spec is None or spec.loader is None:
                raise _UsageError(f"cannot import {path}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module  # dataclasses and pickling look modules up here
            spec.loader.exec_module(module)
        else:
            _on_path(os.getcwd())  # as `python -m` would; the console script does not
            module = importlib.import_module(module_part)
    except _UsageError:
        raise
    except Exception as exc:
        raise _UsageError(f"importing {module_part!r} failed: {type(exc).__name__}: {exc}") from exc
    factory = getattr(module, attr, None)
    if factory is None:
        raise _UsageError(f"{module_part!r} has no attribute {attr!r}.")
    return factory


def _on_path(directory: str) -> None:
    if directory not in sys.path:
        sys.path.insert(0, directory)


class _UsageError(Exception):
    pass


def _check(args: argparse.Namespace) -> int:
    from . import diagnose
    from .findings import Severity

    try:
        factory = _load_factory(args.target)
        made = factory() if callable(factory) else factory
    except _UsageError as exc:
        print(f"scalecheck: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:
        print(f"scalecheck: error: the factory raised {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if isinstance(made, dict):
        model, loader, loss_fn = made.get("model"), made.get("loader"), made.get("loss_fn")
        prepare = made.get("prepare")
    elif isinstance(made, (tuple, list)) and len(made) in (2, 3):
        model, loader = made[0], made[1]
        loss_fn = made[2] if len(made) == 3 else None
        prepare = None
    else:
        print(
            "scalecheck: error: the factory must return (model, loader), (model, loader, "
            f"loss_fn) or a dict with those keys; got {type(made).__name__}.",
            file=sys.stderr,
        )
        return EXIT_USAGE
    report = diagnose(
        model,
        loader,
        loss_fn=loss_fn,
        prepare=prepare,
        max_batches=args.max_batches,
        seed=args.seed,
        ignore=args.ignore,
        trial=_trial(args),
    )
    if args.format == "json":
        text = report.to_json()
    elif args.format == "html":
        text = report.to_html(standalone=True)  # _repr_html_ in a complete document
    elif args.format == "markdown":
        text = report.to_markdown()
    else:
        text = str(report)
    if args.output is not None:
        try:
            args.output.write_text(text + "\n", encoding="utf-8")
        except OSError as exc:
            print(f"scalecheck: error: cannot write --output {args.output}: {exc}", file=sys.stderr)
            return EXIT_USAGE
    else:
        print(text)
    if args.fail_on == "never":
        return EXIT_OK
    return EXIT_FINDINGS if report.at_least(Severity(args.fail_on)) else EXIT_OK


# -- rules / explain ------------------------------------------------------------------------
def _rules() -> int:
    from .rules import all_rules

    rows = [("code", "name", "severity", "summary")]
    rows += [(r.code, r.name, r.severity.value, r.summary) for r in all_rules()]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row[:3], widths, strict=True)) + "  " + row[3])
    return EXIT_OK


def _explain(key: str) -> int:
    from .rules import get_rule

    r = get_rule(key)
    print(f"{r.code} {r.name} (default severity: {r.severity.value})")
    print()
    print(textwrap.fill(r.summary, 88))
    for section, body in r.sections.items():
        print()
        print(section)
        print(textwrap.indent(body, "    "))
    if r.thresholds:
        print()
        print("Thresholds")
        for t in r.thresholds:
            print(f"    {t.name} = {t.value:g}")
            print(textwrap.indent(textwrap.fill(t.reason, 80), "        "))
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
