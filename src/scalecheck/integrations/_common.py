"""What the training-framework callbacks share: options, running, showing, deciding to stop."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TextIO

import torch
from torch import nn

from .. import _validation as v
from ..diagnose import diagnose
from ..errors import InvalidArgumentError
from ..findings import Severity, Verdict
from ..report import Report
from ..testing import check_diagnose_options

__all__ = ["SHOW", "CallbackCore", "any_process"]

#: When the main process prints the report: ``"problems"`` (verdict not ``ok``, or a
#: finding at warning level or above), ``"always"``, or ``"never"``.
SHOW = ("problems", "always", "never")


class CallbackCore:
    """The framework-independent part of a scalecheck training callback.

    Args:
        stop_on_stalling: stop training when the verdict is ``stalling`` (decided jointly:
            when any process finds it stalling, every process stops).
        show: ``"problems"``, ``"always"`` or ``"never"`` (see :data:`SHOW`).
        stream: where the main process writes the report (default: ``sys.stderr`` at the
            time of writing).
        loader: the batches to diagnose on, instead of the trainer's training loader.
        get_model: ``get_model(model) -> nn.Module``: the module to diagnose, when it is
            not the trainer's model itself (e.g. ``lambda m: m.net``).
        diagnose_options: passed to :func:`scalecheck.diagnose` (``loss_fn``,
            ``prepare``, ``max_batches``, ``seed``, ``ignore``, ``trial``, ``strict``).
    """

    def __init__(
        self,
        *,
        stop_on_stalling: bool,
        show: str,
        stream: TextIO | None,
        loader: Iterable[Any] | None,
        get_model: Callable[[Any], nn.Module] | None,
        diagnose_options: Mapping[str, Any],
        caller: str,
    ) -> None:
        self.stop_on_stalling = v.check_bool("stop_on_stalling", stop_on_stalling)
        self.show = v.check_choice("show", show, SHOW)
        if stream is not None and not callable(getattr(stream, "write", None)):
            raise InvalidArgumentError(
                f"stream must be a text stream with .write() (e.g. sys.stdout) or None, got "
                f"{v.describe(stream)}."
            )
        self.stream = stream
        if loader is not None and isinstance(loader, (str, bytes)):
            raise InvalidArgumentError(
                f"loader must be an iterable of batches or None, got {v.describe(loader)}."
            )
        self.loader = loader
        self.get_model = v.check_callable(
            "get_model", get_model, hint="pass a function model -> nn.Module, or None."
        )
        self.diagnose_options = check_diagnose_options(diagnose_options, caller)
        #: The report of the last diagnosis on this process (None before training starts).
        self.report: Report | None = None
        #: Whether this callback asked the trainer to stop.
        self.stopped = False

    def model_of(self, model: Any) -> nn.Module:
        """The module to diagnose."""
        chosen = self.get_model(model) if self.get_model is not None else model
        if not isinstance(chosen, nn.Module):
            raise InvalidArgumentError(
                f"the model to diagnose must be a torch.nn.Module, got {v.describe(chosen)}"
                + ("; check get_model=." if self.get_model is not None else ".")
            )
        return chosen

    def run(self, model: nn.Module, loader: Iterable[Any]) -> Report:
        """Diagnose and keep the report."""
        self.report = diagnose(model, loader, **self.diagnose_options)
        return self.report

    def stalling(self, report: Report) -> bool:
        """Whether this process's report asks to stop (before agreeing with the others)."""
        return self.stop_on_stalling and report.verdict is Verdict.STALLING

    def wants_shown(self, report: Report) -> bool:
        """Whether the main process should print *report*."""
        if self.show == "always":
            return True
        if self.show == "never":
            return False
        return report.verdict is not Verdict.OK or bool(report.at_least(Severity.WARNING))

    def emit(self, report: Report, *, stopping: bool, where: str) -> None:
        """Write the report (and the decision to stop) to the stream, when asked to."""
        if not (self.wants_shown(report) or stopping):
            return
        stream = self.stream if self.stream is not None else sys.stderr
        text = str(report)
        if stopping:
            text += f"\n\nscalecheck: stopping training at {where} (stop_on_stalling=True): "
            if report.verdict is Verdict.STALLING:
                text += (
                    "the inputs are badly scaled and that is blocking learning; apply the fix "
                    "above and train again."
                )
            else:
                text += (
                    "another process found the verdict stalling on its share of the batches "
                    "(the report above is this process's)."
                )
        stream.write(text + "\n")
        flush = getattr(stream, "flush", None)
        if callable(flush):
            flush()


def any_process(flag: bool, device: torch.device | str | None = None) -> bool:
    """True on every process when *flag* is True on any (``torch.distributed``, when it is
    initialized with more than one process; otherwise *flag* itself).

    Every process must call it (it is a collective operation).
    """
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return flag
    t = torch.tensor([1 if flag else 0], device=device if device is not None else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())
