"""Where diagnose's time goes, per batch: each monitor's work timed in place.

``overhead.py`` gives the end-to-end ratio; this script wraps the per-batch entry points of
the session (the model's forward with the activation monitor inside it, the recurrent gates,
the loss, the backward, the input and gradient monitors) with timers during real
``diagnose`` calls, and prints milliseconds per batch next to the plain loop's forward and
backward. Numbers are in place: each monitor reads data the model has just written or
evicted, which is what it costs in a run (a tight loop over the same tensor is 2-10x
faster on this machine).

With ``--faults`` each stage also counts the minor page faults it takes per batch (the
process's ``ru_minflt``, Linux and macOS): memory the C allocator gave back to the kernel
and a later stage touches again (benchmarks/README.md, item 55).

Example::

    .venv/bin/python benchmarks/stages.py mlp784
    .venv/bin/python benchmarks/stages.py lstm --k 32 --repeats 5 --threads 1
    .venv/bin/python benchmarks/stages.py mlp784 --faults
"""

from __future__ import annotations

import argparse
import collections
import functools
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import overhead

from scalecheck.monitors import (
    activations,
    gradients,
    inputs,
    loss,
    recurrent,
)
from scalecheck.session import _run

STAGES: list[tuple[Any, str, str]] = [
    (_run, "_forward", "model forward (with the activation monitor)"),
    (activations.ActivationMonitor, "_update", "  activation sites"),
    (recurrent.RecurrentMonitor, "run", "recurrent gates"),
    (loss.LossMonitor, "compute", "loss"),
    (_run, "_gradients", "model backward (autograd.grad)"),
    (inputs.InputMonitor, "update", "input monitor"),
    (gradients.GradientMonitor, "update", "gradient monitor"),
]


def _minor_faults() -> int:
    """Minor page faults this process has taken so far."""
    import resource  # Unix only: imported when --faults asks for it

    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _no_faults() -> int:
    return 0


def _timed(
    fn: Any,
    label: str,
    totals: dict[str, float],
    faults: dict[str, int],
    count: Callable[[], int],
) -> Any:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        before = count()
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            totals[label] += time.perf_counter() - start
            faults[label] += count() - before

    return wrapper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workload", choices=list(overhead.WORKLOADS))
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--faults", action="store_true", help="also count minor page faults per batch"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    count = _minor_faults if args.faults else _no_faults
    count()  # fail here, before any patching, where the platform has no getrusage
    model, batches, loss_fn = overhead.WORKLOADS[args.workload](args.k)
    totals: dict[str, float] = collections.defaultdict(float)
    faults: dict[str, int] = collections.defaultdict(int)
    original = [getattr(owner, attr) for owner, attr, _ in STAGES]
    for (owner, attr, label), fn in zip(STAGES, original, strict=True):
        setattr(owner, attr, _timed(fn, label, totals, faults, count))
    try:
        _measure(args, model, batches, loss_fn, totals, faults, count)
    finally:  # the package is left as it was found
        for (owner, attr, _), fn in zip(STAGES, original, strict=True):
            setattr(owner, attr, fn)


def _measure(
    args: argparse.Namespace,
    model: torch.nn.Module,
    batches: list[Any],
    loss_fn: Any,
    totals: dict[str, float],
    faults: dict[str, int],
    count: Callable[[], int],
) -> None:
    params = [p for p in model.parameters() if p.requires_grad]
    plain: dict[str, float] = collections.defaultdict(float)
    plain_faults: dict[str, int] = collections.defaultdict(int)

    def plain_loop() -> None:
        for x, y in batches:
            before = count()
            start = time.perf_counter()
            out = loss_fn(model(x), y)
            mid = time.perf_counter()
            middle = count()
            torch.autograd.grad(out, params)
            plain["forward + loss"] += mid - start
            plain["backward"] += time.perf_counter() - mid
            plain_faults["forward + loss"] += middle - before
            plain_faults["backward"] += count() - middle

    overhead.run_diagnose(model, batches[:2], loss_fn)  # warm-up
    plain_loop()
    for table in (totals, faults, plain, plain_faults):
        table.clear()
    wall: dict[str, float] = collections.defaultdict(float)
    wall_faults: dict[str, int] = collections.defaultdict(int)
    for _ in range(args.repeats):
        for name, run in (
            ("plain", plain_loop),
            ("diagnose", lambda: overhead.run_diagnose(model, batches, loss_fn)),
        ):
            before = count()
            wall[name] += overhead._time(run)
            wall_faults[name] += count() - before
    per_batch = 1e3 / (args.repeats * args.k)
    columns = "ms per batch, minor page faults per batch" if args.faults else "ms per batch"
    print(f"{args.workload}, K = {args.k}, {torch.get_num_threads()} threads, {columns}")

    def row(label: str, seconds: float, faulted: int) -> str:
        text = f"{label} {seconds * per_batch:8.2f}"
        if args.faults:
            text += f" {faulted / (args.repeats * args.k):10.1f}"
        return text

    print("  " + row("plain loop total", wall["plain"], wall_faults["plain"]))
    for label, seconds in plain.items():
        print("    " + row(f"{label:44s}", seconds, plain_faults[label]))
    print("  " + row("diagnose total  ", wall["diagnose"], wall_faults["diagnose"]))
    for _, _, label in STAGES:
        print("    " + row(f"{label:44s}", totals[label], faults[label]))


if __name__ == "__main__":
    main()
