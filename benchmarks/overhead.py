"""Overhead of ``scalecheck.diagnose`` against a plain forward + loss + autograd.grad loop.

For each workload and each K (batches measured), the two are timed interleaved in one
process (A B, B A, A B, ...) over the same K batches, and the script prints the median
ratio with its min-max, the extra milliseconds per batch, and (with ``--memory``) the peak
resident memory of each run measured in a fresh subprocess. With two or more K values it
then splits each workload's extra time into a fixed cost per call and a marginal cost per
batch (a least-squares line over every repeat; see :func:`split`).

    python benchmarks/overhead.py                       # all workloads, K = 8 32 128
    python benchmarks/overhead.py --workloads cnn --ks 8 --repeats 3
    python benchmarks/overhead.py --memory              # adds peak RSS per run
    python benchmarks/overhead.py --trial               # the trial's cost on the reference
    python benchmarks/overhead.py --threads 1           # one intra-op thread
    python benchmarks/overhead.py --device cuda         # model and batches on a GPU

On a GPU each timed run ends with ``torch.cuda.synchronize()`` (the kernels it queued have
run), and ``--memory`` reads the device's peak allocation (``torch.cuda.max_memory_allocated``)
in the same process instead of the resident memory.

The floor is 1.0x: diagnose needs one forward and one backward per batch, plus one read of
each activation it measures. Results and profile notes: benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import scalecheck

Workload = tuple[nn.Module, list[tuple[torch.Tensor, torch.Tensor]], Callable[..., torch.Tensor]]

#: Where the workloads run (``--device``); the data is made on the CPU and moved there.
DEVICE = torch.device("cpu")


def build(name: str, k: int) -> Workload:
    """Workload *name* with *k* batches, model and batches on :data:`DEVICE`."""
    model, batches, loss_fn = WORKLOADS[name](k)
    batches = [(x.to(DEVICE), y.to(DEVICE)) for x, y in batches]
    return model.to(DEVICE), batches, loss_fn


def _sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def reference_mlp(k: int) -> Workload:
    from scalecheck.reference import interpolation as ref

    model = ref.make_model(seed=0)
    loader = ref.make_loader(n=4 * k, seed=0)
    return model, list(loader), F.mse_loss


def mlp784(k: int) -> Workload:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10)
    )
    g = _gen(1)
    batches = [
        (torch.randn(256, 784, generator=g), torch.randint(0, 10, (256,), generator=g))
        for _ in range(k)
    ]
    return model, batches, F.cross_entropy


def cnn(k: int) -> Workload:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 32, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 10),
    )
    g = _gen(2)
    batches = [
        (torch.randn(128, 3, 32, 32, generator=g), torch.randint(0, 10, (128,), generator=g))
        for _ in range(k)
    ]
    return model, batches, F.cross_entropy


class _LSTMRegressor(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.LSTM(32, 128, batch_first=True)
        self.head = nn.Linear(128, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


def lstm(k: int) -> Workload:
    torch.manual_seed(0)
    model = _LSTMRegressor()
    g = _gen(3)
    batches = [
        (torch.randn(32, 50, 32, generator=g), torch.randn(32, 1, generator=g)) for _ in range(k)
    ]
    return model, batches, F.mse_loss


class _Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(128, 4, 256, dropout=0.1, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(128, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x).mean(1))


def transformer(k: int) -> Workload:
    torch.manual_seed(0)
    model = _Encoder()
    g = _gen(4)
    batches = [
        (torch.randn(32, 64, 128, generator=g), torch.randn(32, 1, generator=g)) for _ in range(k)
    ]
    return model, batches, F.mse_loss


WORKLOADS: dict[str, Callable[[int], Workload]] = {
    "reference": reference_mlp,
    "mlp784": mlp784,
    "cnn": cnn,
    "lstm": lstm,
    "transformer": transformer,
}


def plain(model: nn.Module, batches: list[Any], loss_fn: Callable[..., torch.Tensor]) -> None:
    """The floor: what diagnose must do anyway (forward, loss, gradients) per batch."""
    params = [p for p in model.parameters() if p.requires_grad]
    for x, y in batches:
        loss = loss_fn(model(x), y)
        torch.autograd.grad(loss, params)


def run_diagnose(model: nn.Module, batches: list[Any], loss_fn: Any) -> None:
    # strict: an internal error must fail the benchmark, not make diagnose look cheap
    scalecheck.diagnose(model, batches, trial=False, max_batches=len(batches), strict=True)


def _time(fn: Callable[[], None]) -> float:
    _sync()
    start = time.perf_counter()
    fn()
    _sync()
    return time.perf_counter() - start


def measure(name: str, k: int, repeats: int) -> dict[str, Any]:
    model, batches, loss_fn = build(name, k)
    run_diagnose(model, batches[:2], loss_fn)  # warm-up: thresholds, first-call costs
    plain(model, batches[:2], loss_fn)
    ratios, plains, diags = [], [], []
    for rep in range(repeats):
        order = (("plain", "diag"), ("diag", "plain"))[rep % 2]
        times: dict[str, float] = {}
        for which in order:
            if which == "plain":
                times[which] = _time(lambda: plain(model, batches, loss_fn))
            else:
                times[which] = _time(lambda: run_diagnose(model, batches, loss_fn))
        plains.append(times["plain"])
        diags.append(times["diag"])
        ratios.append(times["diag"] / times["plain"])
    return {
        "workload": name,
        "k": k,
        "plain_s": statistics.median(plains),
        "diagnose_s": statistics.median(diags),
        "ratio": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "extra_ms_per_batch": 1000 * (statistics.median(diags) - statistics.median(plains)) / k,
        # each repeat's diagnose minus plain, for the fixed and marginal cost (see split)
        "extra_s": [d - p for d, p in zip(diags, plains, strict=True)],
    }


def split(rows: list[dict[str, Any]]) -> dict[str, float] | None:
    """A workload's extra time as ``fixed + marginal * K``: the least-squares line
    (``scipy.stats.linregress``) through every repeat's extra seconds at every K, with
    the standard errors, and the marginal cost as a ratio to the plain loop's time per
    batch (at the largest K). None with fewer than two distinct K values."""
    from scipy import stats

    ks = [row["k"] for row in rows for _ in row["extra_s"]]
    if len(set(ks)) < 2:
        return None
    fit = stats.linregress(ks, [e for row in rows for e in row["extra_s"]])
    largest = max(rows, key=lambda row: row["k"])
    plain_per_batch = largest["plain_s"] / largest["k"]
    return {
        "fixed_ms": 1000 * fit.intercept,
        "fixed_ms_stderr": 1000 * fit.intercept_stderr,
        "marginal_ms": 1000 * fit.slope,
        "marginal_ms_stderr": 1000 * fit.stderr,
        "marginal_ratio": 1 + fit.slope / plain_per_batch,
    }


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _memory_child(name: str, k: int, mode: str) -> None:
    """Peak resident memory during one run, above the memory held before it (a thread
    samples /proc/self/statm every 0.5 ms: ru_maxrss cannot be reset after the setup)."""
    import threading

    model, batches, loss_fn = WORKLOADS[name](k)
    if mode == "plain":
        plain(model, batches[:1], loss_fn)  # first-call allocations, as for diagnose below
    else:
        run_diagnose(model, batches[:1], loss_fn)
    base = _rss_bytes()
    peak = [base]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(0.0005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    if mode == "plain":
        plain(model, batches, loss_fn)
    else:
        run_diagnose(model, batches, loss_fn)
    done.set()
    sampler.join()
    print(json.dumps({"base_kb": base // 1024, "peak_kb": peak[0] // 1024}))


def _device_memory(name: str, k: int) -> dict[str, float]:
    """Peak device memory of one run above what was allocated before it (MB)."""
    model, batches, loss_fn = build(name, k)
    out = {}
    for mode, fn in (("plain", plain), ("diagnose", run_diagnose)):
        fn(model, batches[:1], loss_fn)  # first-call allocations
        _sync()
        base = torch.cuda.memory_allocated(DEVICE)
        torch.cuda.reset_peak_memory_stats(DEVICE)
        fn(model, batches, loss_fn)
        _sync()
        out[mode] = (torch.cuda.max_memory_allocated(DEVICE) - base) / 2**20
    return {
        "plain_mb": out["plain"],
        "diagnose_mb": out["diagnose"],
        "extra_mb": out["diagnose"] - out["plain"],
    }


def memory(name: str, k: int) -> dict[str, float]:
    if DEVICE.type == "cuda":
        return _device_memory(name, k)
    out = {}
    for mode in ("plain", "diagnose"):
        proc = subprocess.run(
            [
                sys.executable,
                __file__,
                "--threads",
                str(torch.get_num_threads()),
                "--memory-child",
                name,
                str(k),
                mode,
            ],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ},
        )
        data = json.loads(proc.stdout.strip().splitlines()[-1])
        out[mode] = (data["peak_kb"] - data["base_kb"]) / 1024
    return {
        "plain_mb": out["plain"],
        "diagnose_mb": out["diagnose"],
        "extra_mb": out["diagnose"] - out["plain"],
    }


def trial_cost(repeats: int) -> dict[str, float]:
    from scalecheck.reference import interpolation as ref

    loader = [(x.to(DEVICE), y.to(DEVICE)) for x, y in ref.make_loader(n=64, seed=0)]
    model = ref.make_model(seed=0).to(DEVICE)
    scalecheck.diagnose(model, loader)  # warm-up
    without, with_trial = [], []
    for rep in range(repeats):
        order = (False, True) if rep % 2 == 0 else (True, False)
        for trial in order:
            t = _time(lambda trial=trial: scalecheck.diagnose(model, loader, trial=trial))
            (with_trial if trial else without).append(t)
    return {
        "without_trial_s": statistics.median(without),
        "with_trial_s": statistics.median(with_trial),
        "trial_adds_s": statistics.median(with_trial) - statistics.median(without),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", nargs="*", default=list(WORKLOADS), choices=list(WORKLOADS))
    parser.add_argument("--ks", nargs="*", type=int, default=[8, 32, 128])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument(
        "--threads", type=int, help="torch intra-op threads (default: torch's own choice)"
    )
    parser.add_argument("--memory", action="store_true", help="also measure peak RSS")
    parser.add_argument("--trial", action="store_true", help="also time the trial")
    parser.add_argument("--json", type=str, help="write all results to this file")
    parser.add_argument("--device", default="cpu", help="where model and batches live")
    parser.add_argument("--memory-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    global DEVICE
    DEVICE = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        name, k, mode = args.memory_child
        _memory_child(name, int(k), mode)
        return 0
    where = torch.cuda.get_device_name(DEVICE) if DEVICE.type == "cuda" else "cpu"
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"scalecheck {scalecheck.__version__}, device {DEVICE} ({where})"
    )
    header = (
        f"{'workload':<12}{'K':>5}{'plain s':>10}{'diagnose s':>12}{'ratio':>8}"
        f"{'min-max':>14}{'extra ms/batch':>16}"
    )
    if args.memory:
        header += f"{'extra MB':>10}"
    print(header)
    results = []
    splits: dict[str, dict[str, float]] = {}
    for name in args.workloads:
        rows = []
        for k in args.ks:
            row = measure(name, k, args.repeats)
            rows.append(row)
            if args.memory:
                row.update(memory(name, k))
            results.append(row)
            line = (
                f"{name:<12}{k:>5}{row['plain_s']:>10.3f}{row['diagnose_s']:>12.3f}"
                f"{row['ratio']:>7.2f}x{row['ratio_min']:>7.2f}-{row['ratio_max']:<5.2f}"
                f"{row['extra_ms_per_batch']:>16.2f}"
            )
            if args.memory:
                line += f"{row['extra_mb']:>10.1f}"
            print(line, flush=True)
        fitted = split(rows)
        if fitted is not None:
            splits[name] = fitted
    if splits:
        print(
            "extra time = fixed + marginal x K (least squares over every repeat, "
            "+- standard error):"
        )
        for name, f in splits.items():
            print(
                f"  {name:<12} fixed {f['fixed_ms']:7.1f} +- {f['fixed_ms_stderr']:.1f} ms per "
                f"call, marginal {f['marginal_ms']:6.2f} +- {f['marginal_ms_stderr']:.2f} ms "
                f"per batch (a batch at {f['marginal_ratio']:.2f}x the plain loop's)"
            )
        results.append({"split": splits})
    if args.trial:
        cost = trial_cost(args.repeats)
        results.append({"trial": cost})
        print(
            f"trial on the reference case: diagnose {cost['without_trial_s']:.3f} s without, "
            f"{cost['with_trial_s']:.3f} s with; the trial adds {cost['trial_adds_s']:.3f} s"
        )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
