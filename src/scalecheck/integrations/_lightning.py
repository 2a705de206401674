"""The PyTorch Lightning callback's behaviour, shared by the ``lightning.pytorch`` and the
standalone ``pytorch_lightning`` flavours (their ``Callback`` classes are distinct, and each
``Trainer`` accepts only its own)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, TextIO

from torch import nn

from ..errors import InvalidArgumentError
from ..report import Report
from ._common import CallbackCore

__all__ = ["LightningScaleCheck", "train_loader_of"]


def train_loader_of(trainer: Any) -> Iterable[Any]:
    """The trainer's training loader (as Lightning set it up: on several processes, with
    its distributed sampler, so each process sees its own shard)."""
    loader = getattr(trainer, "train_dataloader", None)
    if loader is None:
        raise InvalidArgumentError(
            "the trainer has no training loader at on_train_start; pass "
            "ScaleCheckCallback(loader=...) to say which batches to diagnose."
        )
    if isinstance(loader, (Mapping, list, tuple)):
        raise InvalidArgumentError(
            f"the trainer has {len(loader)} training loaders ({type(loader).__name__}); "
            "scalecheck diagnoses one stream of batches. Pass ScaleCheckCallback(loader=...) "
            "with the one to diagnose."
        )
    return loader


class LightningScaleCheck:
    """Diagnoses the LightningModule on the training loader at ``on_train_start``.

    Every process (rank) diagnoses its own shard and keeps its report in :attr:`report`;
    only global rank zero prints. With ``stop_on_stalling=True``, training stops before
    the first step on every rank when any rank finds the verdict ``stalling``.
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
        super().__init__()
        self._core = CallbackCore(
            stop_on_stalling=stop_on_stalling,
            show=show,
            stream=stream,
            loader=loader,
            get_model=get_model,
            diagnose_options=diagnose_options,
            caller=f"{type(self).__name__}()",
        )

    @property
    def report(self) -> Report | None:
        """This process's report (None until training starts)."""
        return self._core.report

    @property
    def stopped(self) -> bool:
        """Whether this callback stopped training."""
        return self._core.stopped

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        """Diagnose, print on rank zero, and stop when asked to and stalling."""
        core = self._core
        model = core.model_of(pl_module)
        loader = core.loader if core.loader is not None else train_loader_of(trainer)
        report = core.run(model, loader)
        stop = False
        if core.stop_on_stalling:
            stop = bool(trainer.strategy.reduce_boolean_decision(core.stalling(report), all=False))
        if trainer.is_global_zero:
            core.emit(report, stopping=stop, where=f"global step {trainer.global_step}")
        if stop:
            trainer.should_stop = True
            core.stopped = True

    def __repr__(self) -> str:
        core = self._core
        options = ", ".join(f"{k}={val!r}" for k, val in core.diagnose_options.items())
        return (
            f"{type(self).__name__}(stop_on_stalling={core.stop_on_stalling}, "
            f"show={core.show!r}{', ' + options if options else ''})"
        )
