"""A PyTorch Lightning callback: diagnose the inputs when training starts.

Needs the ``lightning`` extra (``pip install "scalecheck[lightning]"``). For the
standalone ``pytorch_lightning`` package use
:mod:`scalecheck.integrations.pytorch_lightning` (same callback, that package's base class).

At ``on_train_start`` the callback runs :func:`scalecheck.diagnose` on the LightningModule
(or ``get_model(pl_module)``) with the trainer's training loader (or ``loader=``). Every
process (rank) computes its own report, on its own shard, and keeps it as
``callback.report``; only global rank zero prints it (to ``stream``, default stderr), by
default only when there is a problem. With ``stop_on_stalling=True`` training stops
before the first optimizer step when the verdict is ``stalling`` on any rank (the ranks
agree through the strategy, so none is left waiting).

The LightningModule's ``forward`` must take the batch's inputs; the loss is inferred from
its output and the targets like ``diagnose`` does (pass ``loss_fn=`` or ``prepare=`` when
``training_step`` does something else). An error in the diagnosis (a batch or loss
scalecheck cannot understand) is raised, with the message saying which option fixes it.

Example:
    >>> import lightning.pytorch as pl
    >>> from scalecheck.integrations.lightning import ScaleCheckCallback
    >>> callback = ScaleCheckCallback(stop_on_stalling=True, trial=False)
    >>> trainer = pl.Trainer(callbacks=[callback], max_epochs=1)  # doctest: +SKIP
    >>> trainer.fit(module, loader)  # doctest: +SKIP
    >>> callback.report.verdict  # doctest: +SKIP
    <Verdict.STALLING: 'stalling'>
"""

from __future__ import annotations

from ..errors import MissingDependencyError

try:
    from lightning.pytorch import Callback
except ImportError as exc:
    raise MissingDependencyError(
        "scalecheck.integrations.lightning needs PyTorch Lightning: "
        'pip install "scalecheck[lightning]" (or use scalecheck.integrations.pytorch_lightning '
        "with the standalone pytorch_lightning package)"
    ) from exc

from ._lightning import LightningScaleCheck

__all__ = ["ScaleCheckCallback"]


class ScaleCheckCallback(LightningScaleCheck, Callback):
    """Diagnose the inputs at ``on_train_start`` (a ``lightning.pytorch.Callback``).

    Args:
        stop_on_stalling: stop training before the first step when the verdict is
            ``stalling`` (on any rank).
        show: when rank zero prints the report: ``"problems"`` (verdict not ``ok`` or a
            finding at warning level or above), ``"always"`` or ``"never"``.
        stream: where to print (default ``sys.stderr``).
        loader: batches to diagnose instead of ``trainer.train_dataloader``.
        get_model: ``pl_module -> nn.Module`` when the module to diagnose is not the
            LightningModule itself (e.g. ``lambda m: m.net``).
        **diagnose_options: passed to :func:`scalecheck.diagnose` (``trial=False`` skips
            the few-second A/B trial).

    Attributes:
        report: this rank's :class:`~scalecheck.Report` (None before training starts).
        stopped: whether the callback stopped training.
    """
