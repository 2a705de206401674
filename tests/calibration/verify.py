"""Verify every calibration label by training, and regenerate :mod:`.verified`.

For each case, from the builder's own model (same initial weights) and loader:

- **raw**: Adam on the inputs as the loader yields them;
- **standardized**: the same, with every floating-point input standardized per feature
  (per channel for images) with the mean and std of the whole dataset, computed in
  float64 before the cast to the model's dtype (the fix a user applies in the pipeline);
- **log-standardized**: when some feature is positive and spans three decades or more,
  ``log`` first for those features, then standardize;
- for a case with a ``user_lr`` (a learning-rate bug), raw and standardized again at it.

Each arm is trained for ``--steps`` Adam steps (default 3000) at every learning rate of
``--lrs`` (default 1e-4, 1e-3, 1e-2, 1e-1), cycling through the batches (a DataLoader is
re-iterated every epoch, so it reshuffles as in real training). An arm's loss is the
mean loss over one full pass of the data after training; the arm keeps its best learning
rate. The constant predictor's loss is the targets' variance (float targets) or the label
entropy (class labels). :func:`.cases.label_from_training` turns the numbers into the
label; the script fails when that disagrees with a case's ``expected``.

Usage (slow: a few minutes on 2 cores; not part of the test suite)::

    .venv/bin/python -m tests.calibration.verify            # all cases, rewrite verified.py
    .venv/bin/python -m tests.calibration.verify --cases reference_tanh --dry-run
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import pprint
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .cases import CASES, Case, Setup, get_case, training_verdict

STEPS = 3000
LRS = (1e-4, 1e-3, 1e-2, 1e-1)
DECADES = 3.0
OUT = Path(__file__).with_name("verified.py")


# -- data handling -------------------------------------------------------------------------


def _split(batch: Any) -> tuple[Any, Tensor]:
    inputs, targets = batch
    return inputs, targets


def _float_inputs(inputs: Any) -> list[Tensor]:
    parts = list(inputs) if isinstance(inputs, (tuple, list)) else [inputs]
    return [t for t in parts if isinstance(t, Tensor) and t.is_floating_point()]


def _epoch(setup: Setup) -> list[Any]:
    return list(setup.loader)


def _columns(batches: Sequence[Any]) -> list[Tensor]:
    """Per float input, the whole dataset as float64 rows of features."""
    columns: list[list[Tensor]] = []
    for batch in batches:
        for i, t in enumerate(_float_inputs(_split(batch)[0])):
            flat = t.double().movedim(1, -1).reshape(-1, t.shape[1]) if t.dim() > 1 else t.double()
            if len(columns) <= i:
                columns.append([])
            columns[i].append(flat.reshape(flat.shape[0], -1))
    return [torch.cat(parts) for parts in columns]


def _fit(batches: Sequence[Any], log: bool) -> list[tuple[Tensor, Tensor, Tensor]]:
    """Per float input: (mean, std, log mask) over the whole dataset, in float64 (a
    constant feature's std is 1: it is centred, not scaled)."""
    stats = []
    for x in _columns(batches):
        mask = torch.zeros(x.shape[1], dtype=torch.bool)
        if log:
            lo, hi = x.min(0).values, x.max(0).values
            mask = (lo > 0) & (hi / lo.clamp_min(1e-300) >= 10**DECADES)
            x = torch.where(mask, x.clamp_min(1e-300).log(), x)
        std = x.std(0, unbiased=False)
        stats.append((x.mean(0), torch.where(std > 0, std, torch.ones_like(std)), mask))
    return stats


def _apply(t: Tensor, mean: Tensor, std: Tensor, mask: Tensor, dtype: torch.dtype) -> Tensor:
    shape = [1] * t.dim()
    if t.dim() > 1:
        shape[1] = t.shape[1]
    x = t.double()
    if bool(mask.any()):
        x = torch.where(mask.reshape(shape), x.clamp_min(1e-300).log(), x)
    return ((x - mean.reshape(shape)) / std.reshape(shape)).to(dtype)


def _transform(stats: list[tuple[Tensor, Tensor, Tensor]] | None, dtype: torch.dtype):
    def run(batch: Any) -> Any:
        inputs, targets = _split(batch)
        parts = list(inputs) if isinstance(inputs, (tuple, list)) else [inputs]
        out, k = [], 0
        for t in parts:
            if isinstance(t, Tensor) and t.is_floating_point():
                if stats is None:
                    out.append(t.to(dtype))
                else:
                    mean, std, mask = stats[k]
                    out.append(_apply(t, mean, std, mask, dtype))
                k += 1
            else:
                out.append(t)
        new = tuple(out) if isinstance(inputs, (tuple, list)) else out[0]
        return new, targets

    return run


def _spans_decades(batches: Sequence[Any]) -> bool:
    return any(bool(mask.any()) for _, _, mask in _fit(batches, log=True))


# -- loss and baseline ----------------------------------------------------------------------


def _loss_fn(setup: Setup) -> Callable[[Tensor, Tensor], Tensor]:
    if setup.loss_fn is not None:
        return setup.loss_fn

    def inferred(output: Tensor, targets: Tensor) -> Tensor:
        if targets.is_floating_point():
            return F.mse_loss(output, targets.reshape(output.shape).to(output.dtype))
        return F.cross_entropy(output, targets.long())

    return inferred


def baseline(c: Case, batches: Sequence[Any]) -> float:
    """The constant predictor's loss over the whole dataset."""
    y = torch.cat([_split(b)[1].reshape(_split(b)[1].shape[0], -1) for b in batches])
    if c.baseline == "mse-flat":
        return float(y.double().reshape(-1).var(unbiased=False))
    if not y.is_floating_point():
        counts = torch.bincount(y.reshape(-1).long()).double()
        p = counts[counts > 0] / counts.sum()
        return float(-(p * p.log()).sum())
    return float(y.double().var(0, unbiased=False).mean())


# -- scale yardstick ------------------------------------------------------------------------


def scale_numbers(batches: Sequence[Any]) -> dict[str, float]:
    """The largest per-feature kappa (condition number of the [x, 1] second-moment matrix;
    ``c^2 + 1`` for a constant feature ``c``) and the ratio of the largest to the smallest
    non-constant feature std, over all float inputs."""
    kappas, stds = [], []
    for x in _columns(batches):
        mean, std = x.mean(0), x.std(0, unbiased=False)
        for m, s in zip(mean.tolist(), std.tolist(), strict=True):
            if s == 0:
                # a constant: the matrix is singular (the feature duplicates the bias); its
                # one curved direction against a standardized feature's (rule SC107)
                kappas.append(m * m + 1.0)
                continue
            a = np.array([[m * m + s * s, m], [m, 1.0]])
            ev = np.linalg.eigvalsh(a)
            kappas.append(float(ev[-1] / ev[0]) if ev[0] > 0 else math.inf)
            stds.append(s)
    pos = [s for s in stds if s > 0]
    return {
        "kappa": max(kappas) if kappas else 1.0,
        "std_ratio": max(pos) / min(pos) if pos else 1.0,
    }


# -- training ---------------------------------------------------------------------------------


def _epochs(c: Case) -> Iterator[list[Any]]:
    setup = c.build()
    if isinstance(setup.loader, list):
        while True:
            yield setup.loader
    while True:
        yield list(setup.loader)


def train(
    c: Case,
    lr: float,
    transform: Callable[[Any], Any],
    eval_batches: Sequence[Any],
    steps: int,
) -> float | None:
    """Train a fresh build of *c* for *steps* Adam steps; mean loss over one full pass of
    *eval_batches* afterwards (None if it diverged)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # dropout-free models; only for completeness
        setup = c.build()
        model = setup.model
        loss_fn = _loss_fn(setup)
        data = _epochs(c)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.Adam(params, lr=lr)
        done = 0
        while done < steps:
            for batch in next(data):
                inputs, targets = transform(batch)
                args = inputs if isinstance(inputs, tuple) else (inputs,)
                loss = loss_fn(model(*args), targets)
                if not torch.isfinite(loss):
                    return None
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                done += 1
                if done >= steps:
                    break
        total, count = 0.0, 0
        with torch.no_grad():
            for batch in eval_batches:
                inputs, targets = transform(batch)
                args = inputs if isinstance(inputs, tuple) else (inputs,)
                n = targets.shape[0]
                value = float(loss_fn(model(*args), targets))
                if not math.isfinite(value):
                    return None
                total += value * n
                count += n
        return total / count


def _arm(
    c: Case,
    transform: Callable[[Any], Any],
    batches: Sequence[Any],
    lrs: Sequence[float],
    steps: int,
) -> dict[str, Any]:
    finals: dict[str, float | None] = {}
    for lr in lrs:
        finals[f"{lr:.0e}"] = train(c, lr, transform, batches, steps)
    done = {k: v for k, v in finals.items() if v is not None}
    best = min(done, key=done.__getitem__) if done else None
    return {
        "best": done[best] if best else None,
        "lr": float(best) if best else None,
        "finals": finals,
    }


def verify_case(c: Case, steps: int = STEPS, lrs: Sequence[float] = LRS) -> dict[str, Any]:
    """Train *c* on raw and rescaled inputs; the numbers and the label they justify."""
    started = time.perf_counter()
    setup = c.build()
    dtype = next(setup.model.parameters()).dtype
    batches = _epoch(setup)
    base = baseline(c, batches)
    out: dict[str, Any] = {"baseline": base, **scale_numbers(batches)}
    arms = {"raw": _transform(None, dtype), "standardized": _transform(_fit(batches, False), dtype)}
    if _spans_decades(batches):
        arms["log-standardized"] = _transform(_fit(batches, True), dtype)
    for name, transform in arms.items():
        out[name] = _arm(c, transform, batches, lrs, steps)
    if c.user_lr is not None:
        out["user_lr"] = {
            "lr": c.user_lr,
            **{
                name: train(c, c.user_lr, arms[name], batches, steps)
                for name in ("raw", "standardized")
            },
        }
    label, reason = training_verdict(c, out)
    out["label"] = label
    out["reason"] = reason
    out["seconds"] = round(time.perf_counter() - started, 1)
    return out


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return float(f"{value:.4g}") if math.isfinite(value) else value
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return value


def _worker(args: tuple[str, int, tuple[float, ...]]) -> tuple[str, dict[str, Any]]:
    torch.set_num_threads(1)
    name, steps, lrs = args
    return name, verify_case(get_case(name), steps, lrs)


def write(results: dict[str, dict[str, Any]], steps: int, lrs: Sequence[float]) -> None:
    """Write verified.py: the numbers to 4 significant digits, the label and its reason
    recomputed from those (so that relabeling reproduces the file), no timings."""
    recorded = {}
    for c in CASES:
        if c.name not in results:
            continue
        v = {k: val for k, val in _rounded(results[c.name]).items() if k != "seconds"}
        v["label"], v["reason"] = training_verdict(c, v)
        recorded[c.name] = v
    body = pprint.pformat(recorded, width=96, sort_dicts=False)
    text = (
        '"""Training numbers behind every calibration label (GENERATED: do not edit).\n\n'
        "Regenerate with ``.venv/bin/python -m tests.calibration.verify`` (see that module\n"
        "for the method). Per case: the constant predictor's loss (``baseline``), the\n"
        "largest per-feature condition number (``kappa``) and std ratio of the inputs, and\n"
        "per arm the best final loss after training (``best``), its learning rate and the\n"
        'final loss at every learning rate; ``label`` is what the numbers justify."""\n\n'
        "from typing import Any\n\n"
        f"BUDGET: dict[str, Any] = {{'optimizer': 'Adam', 'steps': {steps}, "
        f"'lrs': {list(lrs)!r}, 'torch': {torch.__version__.split('+')[0]!r}}}\n\n"
        f"VERIFIED: dict[str, dict[str, Any]] = {body}\n"
    )
    text = text.replace("inf,", "float('inf'),")
    OUT.write_text(text)
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    if Path(ruff).exists():
        subprocess.run([ruff, "format", "--quiet", str(OUT)], check=False)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="*", help="only these cases (merged into verified.py)")
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--lrs", type=float, nargs="*", default=list(LRS))
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--dry-run", action="store_true", help="print, do not write")
    parser.add_argument(
        "--relabel",
        action="store_true",
        help="no training: recompute every label from the recorded numbers",
    )
    args = parser.parse_args(argv)
    if args.relabel:
        from .verified import BUDGET, VERIFIED

        for c in CASES:
            if c.name in VERIFIED:
                label, reason = training_verdict(c, VERIFIED[c.name])
                print(f"{c.name:32s} {label} ({reason})")
        write(dict(VERIFIED), BUDGET["steps"], BUDGET["lrs"])
        return 0
    names = args.cases or [c.name for c in CASES]
    for n in names:
        get_case(n)
    results: dict[str, dict[str, Any]] = {}
    if args.cases and OUT.exists():
        from .verified import VERIFIED

        results.update(VERIFIED)
    jobs = [(n, args.steps, tuple(args.lrs)) for n in names]
    ctx = mp.get_context("spawn")
    with ctx.Pool(args.jobs) as pool:
        for name, res in pool.imap_unordered(_worker, jobs):
            results[name] = res
            expected = get_case(name).expected
            flag = "" if res["label"] == expected else f"   <-- expected {expected}"
            print(
                f"{name:32s} base {res['baseline']:.4g} raw {res['raw']['best']} "
                f"std {res['standardized']['best']} -> {res['label']} ({res['reason']}) "
                f"[{res['seconds']}s]{flag}",
                flush=True,
            )
    bad = [n for n in names if results[n]["label"] != get_case(n).expected]
    if not args.dry_run:
        write(results, args.steps, args.lrs)
        print(f"wrote {OUT}")
    if bad:
        print(f"labels not justified by training: {', '.join(bad)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
