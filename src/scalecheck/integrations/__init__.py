"""Callbacks for training frameworks; each submodule imports its framework only when imported.

- :mod:`scalecheck.integrations.lightning`: ``ScaleCheckCallback`` for PyTorch Lightning
  (``lightning.pytorch``; :mod:`scalecheck.integrations.pytorch_lightning` for the
  standalone ``pytorch_lightning`` package).
- :mod:`scalecheck.integrations.transformers`: ``ScaleCheckCallback`` for the Hugging Face
  ``transformers.Trainer``.

Both diagnose the model on its training batches when training starts, on every process
(rank), print the report on the main process only, keep it as ``callback.report``, and can
stop training when the verdict is ``stalling``.
"""
