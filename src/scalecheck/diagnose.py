"""``diagnose(model, loader)``: the one entry point, wiring the pipeline's stages together.

batches -> session (monitors) -> measurements -> [trial] -> rules -> verdict -> Report
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from . import _validation as v
from ._format import plural
from ._progress import Progress, expected_batches
from ._version import __version__
from .errors import InvalidArgumentError, ScaleCheckError, UnsupportedModelError
from .findings import Finding
from .report._report import Report, freeze_report
from .rules._registry import Context, internal_error, run_rules, select_rules
from .session._borrow import Borrowed
from .session._collector import paused_collector
from .session._run import run_session
from .trial import TrialOptions, run_trial
from .verdict import decide

__all__ = ["diagnose"]


def diagnose(
    model: nn.Module,
    loader: Iterable[Any],
    *,
    loss_fn: Callable[..., Tensor] | None = None,
    prepare: Callable[[Any], Any] | None = None,
    max_batches: int = 16,
    seed: int = 0,
    ignore: Iterable[str] | str = (),
    trial: bool | TrialOptions = True,
    strict: bool = False,
    progress: bool | None = None,
) -> Report:
    """Tell whether badly scaled inputs are why *model* will not learn, with evidence.

    Runs up to *max_batches* batches of *loader* through *model* (forward, loss and
    ``torch.autograd.grad``), measuring per-feature input statistics, the pre-activations
    of every nonlinearity, and the gradients, then applies the rules and returns a
    :class:`~scalecheck.Report`. The model is borrowed: its parameters, buffers, ``.grad``,
    ``training`` flags, hooks and the global RNG states are exactly as before afterwards,
    also when something raises.

    Args:
        model: any ``torch.nn.Module``.
        loader: any iterable of batches: a DataLoader, a list, a generator (consumed once).
        loss_fn: ``loss_fn(model_output, targets) -> scalar tensor``; inferred when None
            (MSE for float targets shaped like the output, cross-entropy for integer class
            targets, the model's own ``.loss``, or a stated surrogate without targets).
        prepare: ``prepare(batch) -> (inputs, targets)`` for loops that transform batches
            (the reference case's ``inputs.float().view(-1, 1)``).
        max_batches: how many batches to measure.
        seed: seeds everything random inside (dropout, sampling); the caller's RNG states
            are restored afterwards.
        ignore: rule codes (``"SC101"``), code prefixes (``"SC2"``) or names to skip.
        trial: run the A/B training trial when the inputs are badly scaled (raw vs
            standardized inputs, a few optimizer steps on copies of the model, same
            batches, same initial weights; see :mod:`scalecheck.trial`). False skips it;
            a :class:`~scalecheck.trial.TrialOptions` sets its steps, time budget,
            learning rates or optimizer factory.
        strict: re-raise errors inside scalecheck's own monitors and rules instead of
            reporting them as ``SC001 internal-error``.
        progress: show a progress bar on stderr over the batches and the trial. None (the
            default) shows it in a terminal or a notebook, and not in CI (``CI`` set) or
            when stderr is redirected; True or False forces it.

    Returns:
        The :class:`~scalecheck.Report`.

    Raises:
        InvalidArgumentError: an argument has the wrong type or value.
        LoaderError, BatchError, ModelError, LossError: the loader, a batch, the model or
            the loss could not be used; the message says which batch and what to do.

    Example:
        >>> import scalecheck
        >>> from scalecheck.reference import interpolation as ref
        >>> scalecheck.diagnose(ref.make_model(), ref.make_loader(), trial=False).verdict.value
        'stalling'
        >>> loader = ref.make_loader(standardized=True)
        >>> scalecheck.diagnose(ref.make_model(), loader, trial=False).verdict.value
        'ok'
    """
    model, wrapper_note = _unwrap(_check_model(model))
    _check_loader(loader)
    v.check_callable("loss_fn", loss_fn, hint="pass e.g. torch.nn.MSELoss() or None to infer.")
    v.check_callable(
        "prepare", prepare, hint="pass a function batch -> (inputs, targets), or None."
    )
    max_batches = v.check_int("max_batches", max_batches, minimum=1)
    seed = v.check_int("seed", seed, minimum=0)
    ignored = v.check_str_list("ignore", ignore)
    trial_options = _trial_options(trial)
    v.check_bool("strict", strict)
    if progress is not None:
        v.check_bool("progress", progress)
    rules = select_rules(ignored)
    if torch.is_inference_mode_enabled():
        raise InvalidArgumentError(
            "diagnose() needs autograd, but it was called inside torch.inference_mode(). "
            "Call it outside that context."
        )
    with paused_collector():  # see scalecheck.session._collector
        started = time.perf_counter()
        borrowed = Borrowed(model)
        try:
            total = expected_batches(loader, max_batches)
            with Progress(total, "scalecheck: measuring", unit="batches", enabled=progress) as bar:
                session = run_session(
                    model,
                    loader,
                    loss_fn=loss_fn,
                    prepare=prepare,
                    max_batches=max_batches,
                    seed=seed,
                    strict=strict,
                    keep_batches=trial_options is not None,
                    tick=bar.update,
                )
            measurements = session.measurements
            findings: list[Finding] = [
                internal_error(stage, exc) for stage, exc in session.internal_errors
            ]
            findings += run_rules(Context(measurements), rules, strict=strict)
            trial_result = None
            if trial_options is not None and any(f.category == "input-scale" for f in findings):
                log_features = [
                    f.evidence["feature"]["name"] for f in findings if f.code == "SC103"
                ]
                bar = Progress(
                    trial_options.steps,
                    "scalecheck: training trial",
                    unit="steps",
                    enabled=progress,
                )
                try:
                    trial_result = run_trial(
                        model,
                        session.batches,
                        measurements,
                        log_features,
                        loss_fn=loss_fn,
                        seed=seed,
                        options=trial_options,
                        tick=bar.update,
                    )
                except ScaleCheckError:
                    raise
                except Exception as exc:  # a bug of ours inside the trial: report, carry on
                    if strict:
                        raise
                    findings.append(internal_error("training trial", exc))
                finally:
                    bar.close()
                if trial_result is not None:
                    trial_rules = [
                        r for r in rules if r.category == "trial" or r.code.startswith("SC41")
                    ]
                    findings += run_rules(
                        Context(measurements, trial_result), trial_rules, strict=strict
                    )
            del session
        finally:
            repaired = borrowed.restore()
        extra_notes = ([wrapper_note] if wrapper_note else []) + repaired
        if extra_notes:
            measurements = replace(measurements, notes=(*measurements.notes, *extra_notes))
        findings.sort(key=lambda f: (-f.severity.rank, f.code, f.where))
        verdict, summary = decide(findings, measurements, trial_result)
        report = Report(
            verdict=verdict,
            summary=summary,
            findings=tuple(findings),
            measurements=measurements,
            trial=trial_result,
            meta={
                "scalecheck": __version__,
                "torch": torch.__version__.split("+")[0],
                "numpy": np.__version__,
                "seconds": round(time.perf_counter() - started, 4),
                "seed": seed,
                "max_batches": max_batches,
                "ignore": list(ignored),
                "model": type(model).__name__,
            },
        )
        return freeze_report(report)


def _check_model(model: Any) -> nn.Module:
    if not isinstance(model, nn.Module):
        hint = ""
        if isinstance(model, dict):
            hint = " It looks like a state_dict: load it into the model first."
        elif isinstance(model, Tensor):
            hint = " It is a tensor: pass the network itself, not its output."
        raise InvalidArgumentError(
            f"model must be a torch.nn.Module, got {v.describe(model)}.{hint}"
        )
    params = list(model.parameters())
    if not params:
        raise InvalidArgumentError(
            f"model ({type(model).__name__}) has no parameters, so there is nothing to train "
            "and nothing to diagnose. Pass the network whose training stalls."
        )
    meta = [n for n, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    if meta:
        shown = ", ".join(meta[:3]) + (f" and {len(meta) - 3} more" if len(meta) > 3 else "")
        raise InvalidArgumentError(
            f"model ({type(model).__name__}) has {plural(len(meta), 'tensor')} on the 'meta' "
            f"device ({shown}): they hold no values to run or measure. Materialize the model "
            "first: model.to_empty(device='cpu') and then load its weights "
            "(model.load_state_dict(...))."
        )
    if not any(p.requires_grad for p in params):
        raise InvalidArgumentError(
            f"model ({type(model).__name__}) has no trainable parameters (every parameter has "
            "requires_grad=False). Unfreeze the part you train, or pass that part."
        )
    return model


def _unwrap(model: nn.Module) -> tuple[nn.Module, str]:
    """The module to measure, and a note when a wrapper was taken off.

    DataParallel and DistributedDataParallel are unwrapped (their forward is never run:
    it would scatter, broadcast or synchronize); a ``torch.compile``d module is measured
    through its original module, eagerly. Sharded models (FSDP) are refused: their
    parameters live in shards, and a forward would need every rank.
    """
    names = {cls.__name__ for cls in type(model).__mro__}
    if names & {"FullyShardedDataParallel", "FSDPModule"}:
        raise UnsupportedModelError(
            f"model is a sharded {type(model).__name__} (FSDP): its parameters are split "
            "across ranks, so scalecheck cannot run it alone. Diagnose the unwrapped model "
            "on one process before sharding it (e.g. build it, diagnose(model, loader), "
            "then wrap it)."
        )
    notes = []
    for _ in range(4):  # compile(DDP(model)) and the like
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            notes.append(f"{type(model).__name__}: measured its .module")
            model = model.module
        elif type(model).__name__ == "OptimizedModule" and isinstance(
            getattr(model, "_orig_mod", None), nn.Module
        ):
            notes.append("torch.compile: measured the original module, eagerly")
            model = model._orig_mod
        else:
            break
    note = ""
    if notes:
        note = "the model was wrapped (" + "; ".join(notes) + "); the wrapper was not run"
    return model, note


def _check_loader(loader: Any) -> None:
    if isinstance(loader, (str, bytes)):
        raise InvalidArgumentError(
            f"loader must be an iterable of batches, got {v.describe(loader)}."
        )
    if isinstance(loader, (Tensor, np.ndarray)):
        raise InvalidArgumentError(
            f"loader must be an iterable of batches, got a single {type(loader).__name__} "
            f"of shape {tuple(loader.shape)}. To diagnose on one batch, pass [x] or [(x, y)]."
        )
    if isinstance(loader, dict):
        raise InvalidArgumentError(
            "loader must be an iterable of batches, got a dict (iterating it yields its "
            "keys). To diagnose on one dict batch, pass [batch]."
        )
    if not (hasattr(loader, "__iter__") or hasattr(loader, "__getitem__")):
        raise InvalidArgumentError(
            f"loader must be an iterable of batches (a DataLoader, a list of batches, a "
            f"generator), got {v.describe(loader)}."
        )


def _trial_options(trial: Any) -> TrialOptions | None:
    if isinstance(trial, TrialOptions):
        v.check_int("trial.steps", trial.steps, minimum=1)
        v.check_number("trial.budget_s", trial.budget_s, minimum=0.0)
        v.check_callable(
            "trial.optimizer",
            trial.optimizer,
            hint="pass a function params -> torch.optim.Optimizer.",
        )
        for lr in trial.lrs:
            v.check_number("trial.lrs", lr, minimum=0.0)
        return trial
    v.check_bool("trial", trial)
    return TrialOptions() if trial else None
