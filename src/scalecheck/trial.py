"""The A/B training trial: does rescaling the inputs make this network learn?

Static evidence says the inputs are badly scaled and the first layer is saturated; the
trial asks the causal question directly. On *copies* of the model's parameters and buffers
(``torch.func.functional_call`` over cloned tensors, private optimizers), over the batches
already measured, from the *same* initial weights, it runs a few optimizer steps per arm:

- ``raw``: the inputs as the loader yields them;
- ``standardized``: the report's own standardizer applied first;
- ``log-standardized``: log, then standardize, for positive features spanning decades
  (only when rule SC103 found such a feature).

Each arm runs for every learning rate of a small grid (default Adam at 1e-3, 1e-2, 1e-1;
or one run with a user ``optimizer`` factory) and keeps its best run. The default Adam is
:class:`FunctionalAdam`: the same update as ``torch.optim.Adam`` with its defaults (a test
checks they agree step for step), written as foreach updates because the first
construction of any ``torch.optim`` optimizer in a process imports ``torch._dynamo``,
which takes about 2.4 s on a 2-core machine, longer than the whole trial. Arms advance in
lock-step, so when the time budget runs out they have all taken the same number of steps.
An arm's final loss is the mean over the last full pass over the measured batches, so
arms are compared on exactly the same batches.

The user's model, its ``.grad``, hooks and buffers are never written (the caller also
holds a :class:`~scalecheck.session._borrow.Borrowed` snapshot), and the global RNG is
reseeded from ``seed`` inside and restored afterwards by the caller.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from .batches._adapter import ModelCall
from .errors import LossError, ModelError, ScaleCheckError
from .measurements import Measurements, TrialArm, TrialResult
from .monitors.loss import LossMonitor
from .session._borrow import seed_rngs
from .standardizer import from_input_stats

__all__ = [
    "DEFAULT_LRS",
    "LEARNS",
    "MIN_STEPS",
    "STUCK",
    "TrialOptions",
    "run_trial",
]

#: Adam learning rates tried per arm (a decade apart around Adam's usual range).
DEFAULT_LRS = (1e-3, 1e-2, 1e-1)
#: The raw arm is "stuck" when its final loss is at least this fraction of the constant
#: predictor's loss (it learned no more than the mean target), or, without a baseline, of
#: its own initial loss.
STUCK = 0.9
#: A rescaled arm "learns" when its final loss is below this fraction of both the raw
#: arm's final loss and the baseline: it at least halves the loss, on the same batches.
LEARNS = 0.5
#: A trial stopped by its time budget before this many steps is inconclusive. Measured on
#: the reference case (seeds 0-2): the standardized arm's loss, averaged over a pass of 16
#: batches, halves within 16 to 20 steps; 50 steps leaves a margin of about 2.5x for
#: networks that start more slowly, while the raw arm has had as many chances to move.
MIN_STEPS = 50


@dataclass
class TrialOptions:
    """How the trial runs (``diagnose(trial=...)`` accepts True, False, or this)."""

    steps: int = 200
    budget_s: float = 5.0
    lrs: Sequence[float] = DEFAULT_LRS
    optimizer: Callable[[list[Tensor]], torch.optim.Optimizer] | None = None
    arms: Sequence[str] = field(default_factory=lambda: ("raw", "standardized", "log-standardized"))


class FunctionalAdam:
    """Adam (Kingma & Ba 2015) with torch.optim.Adam's defaults, for tensors with ``.grad``.

    ``betas=(0.9, 0.999)``, ``eps=1e-8``, no weight decay, bias-corrected moments, the
    update ``p -= lr * m_hat / (sqrt(v_hat) + eps)`` exactly as ``torch.optim.Adam``
    computes it (``foreach`` variant).

    Example:
        >>> import torch
        >>> p = torch.zeros(2, requires_grad=True)
        >>> opt = FunctionalAdam([p], lr=0.1)
        >>> p.grad = torch.tensor([1.0, -2.0])
        >>> opt.step()
        >>> [round(v, 4) for v in p.tolist()]
        [-0.1, 0.1]
    """

    def __init__(
        self,
        params: list[Tensor],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        self.params = params
        self.lr, self.betas, self.eps = lr, betas, eps
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]
        self.t = 0

    @torch.no_grad()
    def step(self) -> None:
        """One update of every parameter that has a gradient."""
        idx = [i for i, p in enumerate(self.params) if p.grad is not None]
        if not idx:
            return
        self.t += 1
        b1, b2 = self.betas
        params = [self.params[i] for i in idx]
        grads = [self.params[i].grad for i in idx]
        m = [self.m[i] for i in idx]
        v = [self.v[i] for i in idx]
        torch._foreach_lerp_(m, grads, 1 - b1)
        torch._foreach_mul_(v, b2)
        torch._foreach_addcmul_(v, grads, grads, 1 - b2)
        bias1 = 1 - b1**self.t
        bias2 = 1 - b2**self.t
        step_size = self.lr / bias1
        denom = torch._foreach_sqrt(v)
        torch._foreach_div_(denom, bias2**0.5)
        torch._foreach_add_(denom, self.eps)
        torch._foreach_addcdiv_(params, m, denom, -step_size)


@dataclass
class _Run:
    arm: str
    lr: float | None
    params: dict[str, Tensor]
    buffers: dict[str, Tensor]
    optimizer: Any
    loss: LossMonitor
    losses: list[float] = field(default_factory=list)
    diverged: bool = False


def run_trial(
    model: nn.Module,
    batches: Sequence[ModelCall],
    measurements: Measurements,
    log_features: Iterable[str],
    *,
    loss_fn: Callable[..., Tensor] | None,
    seed: int,
    options: TrialOptions,
    tick: Callable[[], None] | None = None,
) -> TrialResult | None:
    """Run the trial (see the module docs). Returns None when it cannot be meaningful:
    no batches, no targets (a surrogate loss), or no feature input to rescale. *tick* is
    called once per step (the progress bar)."""
    loss_stats = measurements.loss
    if not batches or loss_stats is None or loss_stats.kind == "surrogate":
        return None
    feature_inputs = [i for i in measurements.inputs if i.kind == "feature" and i.features]
    if not feature_inputs:
        return None
    log_features = tuple(log_features)
    transforms: dict[str, dict[str, nn.Module]] = {"raw": {}}
    transforms["standardized"] = {i.name: from_input_stats(i) for i in feature_inputs}
    if log_features:
        transforms["log-standardized"] = {
            i.name: from_input_stats(i, log_features) for i in feature_inputs
        }
    arms = [a for a in options.arms if a in transforms]
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    for mods in transforms.values():
        for mod in mods.values():
            mod.to(device)
    prepared = {arm: [_transformed(call, transforms[arm]) for call in batches] for arm in arms}

    lrs: list[float | None] = [None] if options.optimizer is not None else list(options.lrs)
    runs = [_new_run(model, arm, lr, options.optimizer, loss_fn) for arm in arms for lr in lrs]
    seed_rngs(seed, device)
    started = time.perf_counter()
    initial = {
        arm: _evaluate(model, runs[[r.arm for r in runs].index(arm)], prepared[arm]) for arm in arms
    }
    steps_done = 0
    exhausted = False
    n_batches = len(batches)
    for step in range(options.steps):
        call_index = step % n_batches
        for run in runs:
            if run.diverged:
                run.losses.append(math.nan)
                continue
            _step(model, run, prepared[run.arm][call_index], step)
        steps_done = step + 1
        if tick is not None:
            tick()
        if time.perf_counter() - started > options.budget_s and steps_done >= 1:
            exhausted = steps_done < options.steps
            break
    seconds = time.perf_counter() - started
    # A trial the time budget cut short before MIN_STEPS steps (on a slow or busy machine)
    # says nothing either way: its numbers are reported, no conclusion is drawn from them.
    conclusive = not exhausted or steps_done >= MIN_STEPS
    tail = min(n_batches, steps_done)
    result_arms = tuple(
        _best_arm(arm, [r for r in runs if r.arm == arm], tail, initial[arm]) for arm in arms
    )
    baseline = loss_stats.baseline
    raw = next(a for a in result_arms if a.name == "raw")
    rescaled = [a for a in result_arms if a.name != "raw" and a.final is not None]
    raw_stuck = _stuck(raw, baseline)
    best = min((a.final for a in rescaled if a.final is not None), default=None)
    learns = (
        best is not None
        and raw.final is not None
        and best < LEARNS * raw.final
        and (baseline is None or best < LEARNS * baseline)
    )
    return TrialResult(
        arms=result_arms,
        steps=steps_done,
        tail=tail,
        seconds=round(seconds, 4),
        baseline=baseline,
        loss_kind=loss_stats.kind,
        optimizer="custom optimizer" if options.optimizer is not None else "Adam",
        lrs=tuple(x for x in lrs if x is not None),
        budget_exhausted=exhausted,
        raw_trains=conclusive and not raw_stuck and raw.final is not None,
        rescaled_helps=conclusive and bool(learns),
        conclusive=conclusive,
    )


def _stuck(raw: TrialArm, baseline: float | None) -> bool:
    if raw.final is None:
        return True  # diverged or non-finite: it certainly did not learn
    if baseline is not None and baseline > 0:
        return raw.final >= STUCK * baseline
    if raw.initial is None:
        return False
    return raw.final >= STUCK * raw.initial


def _new_run(
    model: nn.Module,
    arm: str,
    lr: float | None,
    factory: Callable[[list[Tensor]], torch.optim.Optimizer] | None,
    loss_fn: Callable[..., Tensor] | None,
) -> _Run:
    with torch.no_grad():
        params = {
            n: p.detach().clone().requires_grad_(p.requires_grad)
            for n, p in model.named_parameters()
        }
        buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
    trainable = [p for p in params.values() if p.requires_grad]
    if factory is not None:
        try:
            optimizer = factory(trainable)
        except Exception as exc:
            raise ModelError(
                f"the trial's optimizer factory raised {type(exc).__name__}: {exc}. It is "
                "called with a list of parameter tensors and must return a torch optimizer."
            ) from exc
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise ModelError(
                f"the trial's optimizer factory returned {type(optimizer).__name__}, not a "
                "torch.optim.Optimizer."
            )
    else:
        optimizer = FunctionalAdam(trainable, lr=lr if lr is not None else 1e-3)
    monitor = LossMonitor(loss_fn, torch.device("cpu"), track=False)
    return _Run(arm, lr, params, buffers, optimizer, monitor)


def _transformed(call: ModelCall, mods: dict[str, nn.Module]) -> ModelCall:
    if not mods:
        return call
    with torch.no_grad():
        new = {name: mods[name](t) for name, t in call.inputs.items() if name in mods}
    return call.replace_inputs(new)


def _step(model: nn.Module, run: _Run, call: ModelCall, step: int) -> None:
    trainable = [p for p in run.params.values() if p.requires_grad]
    with torch.enable_grad():
        try:
            output = functional_call(
                model,
                {**run.params, **run.buffers},
                call.args,
                call.kwargs,
                tie_weights=True,
                strict=False,
            )
        except ScaleCheckError:
            raise
        except Exception as exc:
            raise ModelError(
                f"the model raised {type(exc).__name__} during the training trial "
                f"({run.arm} inputs, step {step}): {exc}"
            ) from exc
        try:
            loss = run.loss.compute(output, call.targets, step)
        except LossError as exc:
            raise LossError(f"during the training trial ({run.arm} inputs): {exc}") from exc
        value = float(loss.detach())
        run.losses.append(value)
        if not math.isfinite(value):
            run.diverged = True
            return
        grads = torch.autograd.grad(loss, trainable, allow_unused=True)
    dense = isinstance(run.optimizer, FunctionalAdam)
    for p, g in zip(trainable, grads, strict=True):
        # the built-in Adam takes dense gradients: a sparse one (nn.Embedding(sparse=True))
        # is made dense for it, as if the embedding were (both arms alike); a user's
        # optimizer (SparseAdam) gets what it gets in training
        sparse = g is not None and g.layout != torch.strided
        p.grad = g.to_dense() if dense and sparse else g
    try:
        run.optimizer.step()
    except ScaleCheckError:
        raise
    except Exception as exc:
        raise ModelError(
            f"the training trial's optimizer raised {type(exc).__name__} on its step "
            f"{step} ({run.arm} inputs): {exc}"
        ) from exc


def _evaluate(model: nn.Module, run: _Run, calls: Sequence[ModelCall]) -> float | None:
    """Mean loss over *calls* at the run's current (initial) weights, without updates."""
    buffers = {n: b.clone() for n, b in run.buffers.items()}  # batch norm would update them
    values = []
    with torch.no_grad():
        for i, call in enumerate(calls):
            try:
                output = functional_call(
                    model,
                    {**run.params, **buffers},
                    call.args,
                    call.kwargs,
                    tie_weights=True,
                    strict=False,
                )
            except Exception as exc:
                raise ModelError(
                    f"the model raised {type(exc).__name__} during the training trial "
                    f"({run.arm} inputs, initial loss, batch {i}): {exc}"
                ) from exc
            values.append(float(run.loss.value(output, call.targets, i)))
    return _mean(values)


def _best_arm(arm: str, runs: list[_Run], tail: int, initial: float | None) -> TrialArm:
    finals: dict[str, float | None] = {}
    best: _Run | None = None
    best_final = math.inf
    for run in runs:
        final = _final(run.losses, tail)
        key = f"{run.lr:.0e}" if run.lr is not None else "custom"
        finals[key] = final
        if final is not None and final < best_final:
            best, best_final = run, final
    chosen = best if best is not None else runs[0]
    losses = tuple(v if math.isfinite(v) else None for v in chosen.losses)
    return TrialArm(
        name=arm,
        lr=chosen.lr,
        losses=losses,
        initial=initial,
        final=_final(chosen.losses, tail),
        finals=finals,
    )


def _final(losses: list[float], tail: int) -> float | None:
    return _mean(losses[-tail:]) if losses and tail > 0 else None


def _mean(values: list[float]) -> float | None:
    if not values or not all(math.isfinite(v) for v in values):
        return None
    return sum(values) / len(values)
