"""Two versions of scalecheck, timed against each other in one process.

On a noisy machine the end-to-end ratio of ``overhead.py`` moves by 10-30% between runs
(the plain loop's own speed moves too), which hides changes of a few percent. This script
imports another checkout's package under another name next to this one and times, per
repeat and in alternating order, the other version's ``diagnose``, this one's, and the plain
loop, on the same model and batches. It prints both ratios and the paired median of the
difference (this minus other), per call and per batch, in wall time and in the process's
CPU time (all threads; on a virtual machine CPU time leaves out the time the host lends
the cores to others, which moves wall times by 10-30% here).

Example::

    git worktree add /tmp/before HEAD~3
    .venv/bin/python benchmarks/paired.py /tmp/before/src cnn --k 8 --repeats 9
"""

from __future__ import annotations

import argparse
import gc
import importlib
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import overhead

import scalecheck


def _import_other(src: Path, into: Path) -> Any:
    """The package under *src*/scalecheck, imported as ``scalecheck_other`` (its own
    imports are relative, so it runs from a renamed copy)."""
    shutil.copytree(src / "scalecheck", into / "scalecheck_other")
    sys.path.insert(0, str(into))
    return importlib.import_module("scalecheck_other")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("other_src", type=Path, help="the other checkout's src/ folder")
    parser.add_argument("workload", choices=list(overhead.WORKLOADS))
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if not (args.other_src / "scalecheck" / "__init__.py").is_file():
        parser.error(f"{args.other_src} has no scalecheck package: pass a checkout's src/")
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        other = _import_other(args.other_src, Path(tmp))
        model, batches, loss_fn = overhead.WORKLOADS[args.workload](args.k)

        def run(package: Any) -> None:
            package.diagnose(model, batches, trial=False, max_batches=args.k, strict=True)

        fns = {
            "other": lambda: run(other),
            "this": lambda: run(scalecheck),
            "plain": lambda: overhead.plain(model, batches, loss_fn),
        }
        for fn in fns.values():  # warm-up: first-call costs, thresholds
            fn()
            fn()
        gc.collect()
        times: dict[str, list[float]] = {name: [] for name in fns}
        cpu: dict[str, list[float]] = {name: [] for name in fns}
        order = list(fns)
        for r in range(args.repeats):
            for name in order if r % 2 == 0 else order[::-1]:
                start, start_cpu = time.perf_counter(), time.process_time()
                fns[name]()
                times[name].append(time.perf_counter() - start)
                cpu[name].append(time.process_time() - start_cpu)
                # each call starts from a collected heap: a version whose calls leave
                # reference cycles (scalecheck before 0.1's sixth round did, holding its
                # scratch buffers) would otherwise have them collected, and their memory
                # freed, inside the next call, which is often the other version's
                gc.collect()
    plain = statistics.median(times["plain"])
    print(
        f"{args.workload}, K = {args.k}, {args.repeats} repeats, {torch.get_num_threads()} threads"
    )
    for name in ("other", "this"):
        extra = [a - b for a, b in zip(times[name], times["plain"], strict=True)]
        print(
            f"  {name:5s} {statistics.median(times[name]) * 1e3:8.1f} ms  "
            f"ratio {statistics.median(times[name]) / plain:.3f}  "
            f"extra {statistics.median(extra) / args.k * 1e3:.2f} ms/batch (paired median)"
        )
    for label, values in (("wall", times), ("CPU", cpu)):
        diff = [a - b for a, b in zip(values["this"], values["other"], strict=True)]
        print(
            f"  this - other, {label} time: {statistics.median(diff) * 1e3:+.2f} ms per call, "
            f"{statistics.median(diff) / args.k * 1e3:+.3f} ms per batch (paired median; "
            f"min {min(diff) * 1e3:+.1f}, max {max(diff) * 1e3:+.1f} ms)"
        )


if __name__ == "__main__":
    main()
