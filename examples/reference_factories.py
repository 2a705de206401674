"""Factories for ``scalecheck check``: the reference case, raw and standardized.

A factory is any function that returns what ``diagnose`` needs: ``(model, loader)``,
``(model, loader, loss_fn)``, or a dict with the keys ``model``, ``loader`` and optionally
``loss_fn`` and ``prepare``. Point the command at it by file path or by module name::

    scalecheck check examples/reference_factories.py:raw --fail-on error       # exit 1
    scalecheck check examples/reference_factories.py:standardized              # exit 0
    cd examples && scalecheck check reference_factories:original --format json

Exit codes: 0 clean, 1 findings at or above ``--fail-on``, 2 usage or loading error.
"""

from __future__ import annotations

from typing import Any

from torch import nn
from torch.utils.data import DataLoader

from scalecheck.reference import interpolation as ref


def raw() -> tuple[nn.Module, DataLoader, nn.Module]:
    """The original setup: ``x`` in [255, 200000] goes into ``Linear(1, 10) -> Tanh`` as is.

    ``scalecheck check`` finds it ``stalling`` (SC101, SC201, SC301 are errors).
    """
    return ref.make_model(seed=0), ref.make_loader(seed=0), ref.criterion()


def standardized() -> tuple[nn.Module, DataLoader, nn.Module]:
    """The same network and data, with ``x`` standardized: ``(x - MEAN_X) / STD_X``.

    ``scalecheck check`` finds it ``ok``, with no findings.
    """
    return ref.make_model(seed=0), ref.make_loader(seed=0, standardized=True), ref.criterion()


def original() -> dict[str, Any]:
    """The original DataLoader of ``(int x, y)`` pairs and its training loop's batch
    transform (``inputs.float().view(-1, 1)``), passed as ``prepare``."""
    return {
        "model": ref.make_model(seed=0),
        "loader": ref.make_original_loader(seed=0),
        "loss_fn": ref.criterion(),
        "prepare": ref.prepare,
    }
