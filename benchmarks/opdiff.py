"""Which operators ``diagnose`` adds to a plain loop, with their self time per batch.

Each repeat profiles one plain loop and one ``diagnose`` call (``torch.profiler``, CPU,
in alternating order) and takes, per operator, ``diagnose``'s self time minus the plain
loop's; the script prints the median of those differences per batch with their min-max,
and the calls per batch. Paired and interleaved like this, the model's own operators
(``mm``, ``addmm``) come out near zero; one profile of each, one after the other, showed
them 1.85 ms per batch slower on the MLP 784, an effect of the order on this machine
(benchmarks/README.md, item 51).

Example::

    .venv/bin/python benchmarks/opdiff.py mlp784 --k 32 --repeats 8
    python benchmarks/opdiff.py mlp784 --device cuda   # adds the kernels' time on the GPU

On a GPU the operators' self CPU time is what launching them costs the host; the script
then also prints the extra time the GPU spent in kernels per batch.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))

import overhead


def _profile(run: Callable[[], None]) -> tuple[dict[str, float], dict[str, int], float]:
    """Self CPU time and calls per operator, and the device's total kernel time (us)."""
    cuda = overhead.DEVICE.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with warnings.catch_warnings():
        # torch 2.11 warns that a profiler clears its events after each cycle, also for
        # a fresh one (each repeat here is one): nothing is lost
        warnings.filterwarnings("ignore", message="Warning: Profiler clears events")
        with profile(activities=activities) as prof:
            run()
            overhead._sync()
    events = prof.key_averages()
    device = sum(getattr(e, "self_device_time_total", 0.0) for e in events) if cuda else 0.0
    return (
        {e.key: e.self_cpu_time_total for e in events},
        {e.key: e.count for e in events},
        device,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workload", choices=list(overhead.WORKLOADS))
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--device", default="cpu", help="where model and batches live")
    args = parser.parse_args()
    overhead.DEVICE = torch.device(args.device)
    model, batches, loss_fn = overhead.build(args.workload, args.k)

    def plain() -> None:
        overhead.plain(model, batches, loss_fn)

    def diagnose() -> None:
        overhead.run_diagnose(model, batches, loss_fn)

    for _ in range(2):  # warm-up
        diagnose()
        plain()
    extra: dict[str, list[float]] = {}
    calls: dict[str, list[float]] = {}
    totals, device_totals = [], []
    for repeat in range(args.repeats):
        order: list[Any] = [diagnose, plain] if repeat % 2 == 0 else [plain, diagnose]
        results = {fn: _profile(fn) for fn in order}
        (d_time, d_count, d_dev), (p_time, p_count, p_dev) = results[diagnose], results[plain]
        totals.append((sum(d_time.values()) - sum(p_time.values())) / 1e3 / args.k)
        device_totals.append((d_dev - p_dev) / 1e3 / args.k)
        for key in set(d_time) | set(p_time):
            extra.setdefault(key, []).append(
                (d_time.get(key, 0.0) - p_time.get(key, 0.0)) / 1e3 / args.k
            )
            calls.setdefault(key, []).append((d_count.get(key, 0) - p_count.get(key, 0)) / args.k)
    print(
        f"{args.workload}, K = {args.k}, {args.repeats} paired profiles: extra self time "
        f"{statistics.median(totals):.3f} ms per batch (median; all operators)"
    )
    if overhead.DEVICE.type == "cuda":
        print(
            f"  extra kernel time on {overhead.DEVICE}: "
            f"{statistics.median(device_totals):.3f} ms per batch (median)"
        )
    rows = sorted(((statistics.median(v), key) for key, v in extra.items()), reverse=True)[
        : args.top
    ]
    for median, key in rows:
        lo, hi = min(extra[key]), max(extra[key])
        per = statistics.median(calls[key])
        print(f"  {median:7.3f} ms  [{lo:7.3f}, {hi:7.3f}]  {per:6.1f} calls  {key}")


if __name__ == "__main__":
    main()
