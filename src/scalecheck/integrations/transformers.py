"""A Hugging Face ``transformers.TrainerCallback``: diagnose the inputs when training begins.

Needs the ``transformers`` extra (``pip install "scalecheck[transformers]"``, which brings
``accelerate``, needed by ``Trainer``).

At ``on_train_begin`` the callback runs :func:`scalecheck.diagnose` on the Trainer's model
(or ``get_model(model)``) with the training loader the Trainer built (or ``loader=``).
Batches are the collator's dicts: keys that name a parameter of the model's ``forward``
(``labels`` included) are passed by keyword, and the loss is the model's own ``.loss``,
exactly as the Trainer computes it. The model is diagnosed in training mode (the mode it
trains in; a model from ``from_pretrained`` starts in eval mode) and every module's mode
is restored afterwards.

Every process computes its own report on its own shard and keeps it as
``callback.report``; only the main process (``state.is_world_process_zero``) prints it.
With ``stop_on_stalling=True`` the callback sets ``control.should_training_stop`` when the
verdict is ``stalling`` on any process (the processes agree through
``torch.distributed``). The Trainer checks that flag only after a step, so training stops
after its first optimizer step.

The Trainer's loader is accelerate's ``DataLoaderShard``, which registers itself in
accelerate's shared gradient state when an iteration starts and unregisters only when
the iteration runs to the end; the callback iterates the loader it wraps
(``base_dataloader``: the same dataset, sampler shard and collator) so that a diagnosis
that reads only ``max_batches`` batches leaves that state untouched.

Example:
    >>> from transformers import Trainer, TrainingArguments
    >>> from scalecheck.integrations.transformers import ScaleCheckCallback
    >>> callback = ScaleCheckCallback(stop_on_stalling=True, trial=False)
    >>> trainer = Trainer(model, args, train_dataset=data, callbacks=[callback])  # doctest: +SKIP
    >>> trainer.train()  # doctest: +SKIP
    >>> callback.report.verdict  # doctest: +SKIP
    <Verdict.STALLING: 'stalling'>
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TextIO

from torch import nn

from ..errors import InvalidArgumentError, MissingDependencyError
from ..report import Report
from ._common import CallbackCore, any_process

try:
    from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
except ImportError as exc:
    raise MissingDependencyError(
        "scalecheck.integrations.transformers needs transformers: "
        'pip install "scalecheck[transformers]"'
    ) from exc

__all__ = ["ScaleCheckCallback"]


class ScaleCheckCallback(TrainerCallback):
    """Diagnose the inputs at ``on_train_begin`` (a ``transformers.TrainerCallback``).

    Args:
        stop_on_stalling: stop training (after the first step: see the module
            documentation) when the verdict is ``stalling`` on any process.
        show: when the main process prints the report: ``"problems"`` (verdict not ``ok``
            or a finding at warning level or above), ``"always"`` or ``"never"``.
        stream: where to print (default ``sys.stderr``).
        loader: batches to diagnose instead of the Trainer's training loader.
        get_model: ``model -> nn.Module`` when the module to diagnose is not the Trainer's
            model itself.
        **diagnose_options: passed to :func:`scalecheck.diagnose` (``trial=False`` skips
            the few-second A/B trial).

    Attributes:
        report: this process's :class:`~scalecheck.Report` (None before training begins).
        stopped: whether the callback stopped training.
    """

    def __init__(
        self,
        *,
        stop_on_stalling: bool = False,
        show: str = "problems",
        stream: TextIO | None = None,
        loader: Iterable[Any] | None = None,
        get_model: Callable[[Any], nn.Module] | None = None,
        **diagnose_options: Any,
    ) -> None:
        self._core = CallbackCore(
            stop_on_stalling=stop_on_stalling,
            show=show,
            stream=stream,
            loader=loader,
            get_model=get_model,
            diagnose_options=diagnose_options,
            caller="ScaleCheckCallback()",
        )

    @property
    def report(self) -> Report | None:
        """This process's report (None until training begins)."""
        return self._core.report

    @property
    def stopped(self) -> bool:
        """Whether this callback stopped training."""
        return self._core.stopped

    def on_train_begin(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        **kwargs: Any,
    ) -> TrainerControl:
        """Diagnose, print on the main process, and stop when asked to and stalling."""
        core = self._core
        model = core.model_of(kwargs.get("model"))
        loader = core.loader if core.loader is not None else _train_loader(kwargs)
        flags = {m: m.training for m in model.modules()}
        model.train()
        try:
            report = core.run(model, loader)
        finally:
            for module, training in flags.items():
                module.training = training
        stop = False
        if core.stop_on_stalling:
            stop = any_process(core.stalling(report), getattr(args, "device", None))
        if state.is_world_process_zero:
            core.emit(report, stopping=stop, where=f"global step {state.global_step}")
        if stop:
            control.should_training_stop = True
            core.stopped = True
        return control

    def __repr__(self) -> str:
        core = self._core
        options = ", ".join(f"{k}={val!r}" for k, val in core.diagnose_options.items())
        return (
            f"ScaleCheckCallback(stop_on_stalling={core.stop_on_stalling}, "
            f"show={core.show!r}{', ' + options if options else ''})"
        )


def _train_loader(kwargs: dict[str, Any]) -> Iterable[Any]:
    loader = kwargs.get("train_dataloader")
    if loader is None:
        raise InvalidArgumentError(
            "the Trainer passed no train_dataloader to on_train_begin; pass "
            "ScaleCheckCallback(loader=...) to say which batches to diagnose."
        )
    # accelerate's DataLoaderShard: iterate the DataLoader it wraps (see the module docs).
    return getattr(loader, "base_dataloader", loader)
