"""Where diagnose's time goes, per batch: each monitor's work timed in place.

``overhead.py`` gives the end-to-end ratio; this script wraps the per-batch entry points of
the session (the model's forward with the activation monitor inside it, the recurrent gates,
the loss, the backward, the input and gradient monitors) with timers during real
``diagnose`` calls, and prints milliseconds per batch next to the plain loop's forward and
backward. Numbers are in place: each monitor reads data the model has just written or
evicted, which is what it costs in a run (a tight loop over the same tensor is 2-10x
faster on this machine).

Example::

    .venv/bin/python benchmarks/stages.py mlp784
    .venv/bin/python benchmarks/stages.py lstm --k 32 --repeats 5 --threads 1
"""

from __future__ import annotations

import argparse
import collections
import functools
import sys
import time
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


def _timed(fn: Any, label: str, totals: dict[str, float]) -> Any:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            totals[label] += time.perf_counter() - start

    return wrapper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workload", choices=list(overhead.WORKLOADS))
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, batches, loss_fn = overhead.WORKLOADS[args.workload](args.k)
    totals: dict[str, float] = collections.defaultdict(float)
    original = [getattr(owner, attr) for owner, attr, _ in STAGES]
    for (owner, attr, label), fn in zip(STAGES, original, strict=True):
        setattr(owner, attr, _timed(fn, label, totals))
    try:
        _measure(args, model, batches, loss_fn, totals)
    finally:  # the package is left as it was found
        for (owner, attr, _), fn in zip(STAGES, original, strict=True):
            setattr(owner, attr, fn)


def _measure(
    args: argparse.Namespace,
    model: torch.nn.Module,
    batches: list[Any],
    loss_fn: Any,
    totals: dict[str, float],
) -> None:
    params = [p for p in model.parameters() if p.requires_grad]
    plain: dict[str, float] = collections.defaultdict(float)

    def plain_loop() -> None:
        for x, y in batches:
            start = time.perf_counter()
            out = loss_fn(model(x), y)
            mid = time.perf_counter()
            torch.autograd.grad(out, params)
            plain["forward + loss"] += mid - start
            plain["backward"] += time.perf_counter() - mid

    overhead.run_diagnose(model, batches[:2], loss_fn)  # warm-up
    plain_loop()
    totals.clear()
    plain.clear()
    wall = collections.defaultdict(float)
    for _ in range(args.repeats):
        wall["plain"] += overhead._time(plain_loop)
        wall["diagnose"] += overhead._time(lambda: overhead.run_diagnose(model, batches, loss_fn))
    per_batch = 1e3 / (args.repeats * args.k)
    print(f"{args.workload}, K = {args.k}, {torch.get_num_threads()} threads, ms per batch")
    print(f"  plain loop total {wall['plain'] * per_batch:8.2f}")
    for label, seconds in plain.items():
        print(f"    {label:44s} {seconds * per_batch:8.2f}")
    print(f"  diagnose total   {wall['diagnose'] * per_batch:8.2f}")
    for _, _, label in STAGES:
        print(f"    {label:44s} {totals[label] * per_batch:8.2f}")


if __name__ == "__main__":
    main()
