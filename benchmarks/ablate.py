"""What each monitor costs end to end: ``diagnose`` with monitors switched off, one at a time.

``stages.py`` times each monitor in place; this script removes it instead, so what it
measures includes the effects a monitor has on everything around it (cache, allocator,
threads). Per repeat, in alternating order, it times the plain loop, the full ``diagnose``,
``diagnose`` without the activation sites, without the gradient monitor, without the input
monitor, without the recurrent gates, and with every monitor off (what the session loop,
the loss, the hooks and the fixed cost per call take by themselves). A switched-off monitor
does nothing per batch; its results are then empty, so the rules and the report see less.

Example::

    .venv/bin/python benchmarks/ablate.py mlp784 --k 32 --repeats 9
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import overhead

from scalecheck.monitors import activations, gradients, inputs, recurrent

#: What each variant switches off: (class, per-batch entry point).
MONITORS: dict[str, tuple[Any, str]] = {
    "sites": (activations.ActivationMonitor, "_update"),
    "gradients": (gradients.GradientMonitor, "update"),
    "inputs": (inputs.InputMonitor, "update"),
    "recurrent": (recurrent.RecurrentMonitor, "run"),
}

VARIANTS: dict[str, tuple[str, ...]] = {
    "diagnose": (),
    "  without the activation sites": ("sites",),
    "  without the gradient monitor": ("gradients",),
    "  without the input monitor": ("inputs",),
    "  without the recurrent gates": ("recurrent",),
    "  every monitor off": tuple(MONITORS),
}


def nothing(*args: Any, **kwargs: Any) -> None:
    """A monitor's per-batch method switched off."""
    return None


def time_variants(
    workload: overhead.Workload,
    variants: dict[str, dict[str, Any]],
    repeats: int,
    after_each: Callable[[], None] | None = None,
) -> dict[str, list[float]]:
    """Seconds per call of the plain loop (``"plain"``) and of ``diagnose`` under each
    variant, interleaved in one process (alternating order, a first round to warm up).

    A variant maps monitor names of :data:`MONITORS` to what replaces their per-batch
    method during its calls; the others keep theirs. The package's methods are put back
    afterwards, also when a call raises. *after_each* runs after every timed call.
    """
    model, batches, loss_fn = workload
    original = {name: getattr(owner, attr) for name, (owner, attr) in MONITORS.items()}
    names = ["plain", *variants]
    times: dict[str, list[float]] = {name: [] for name in names}
    try:
        for repeat in range(repeats + 1):
            for name in names if repeat % 2 == 0 else reversed(names):
                for monitor, (owner, attr) in MONITORS.items():
                    replaced = variants.get(name, {}).get(monitor, original[monitor])
                    setattr(owner, attr, replaced)
                start = time.perf_counter()
                if name == "plain":
                    overhead.plain(model, batches, loss_fn)
                else:
                    overhead.run_diagnose(model, batches, loss_fn)
                if repeat:
                    times[name].append(time.perf_counter() - start)
                if after_each is not None:
                    after_each()
    finally:  # the package is left as it was found
        for monitor, (owner, attr) in MONITORS.items():
            setattr(owner, attr, original[monitor])
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workload", choices=list(overhead.WORKLOADS))
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    workload = overhead.WORKLOADS[args.workload](args.k)
    variants = {name: dict.fromkeys(off, nothing) for name, off in VARIANTS.items()}
    times = time_variants(workload, variants, args.repeats)
    plain = statistics.median(times["plain"])
    print(f"{args.workload}, K = {args.k}, {torch.get_num_threads()} threads, medians")
    print(f"  {'plain loop':34s} {plain * 1e3 / args.k:7.2f} ms per batch")
    for name in VARIANTS:
        t = statistics.median(times[name])
        extra = (t - plain) * 1e3 / args.k
        print(f"  {name:34s} {t * 1e3 / args.k:7.2f} ms per batch  {t / plain:5.2f}x  {extra:+.2f}")


if __name__ == "__main__":
    main()
