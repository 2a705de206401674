"""Reports shared by the rendering tests (HTML, Markdown, plots, CLI), built once per run.

The trial runs a fixed number of steps with a generous time budget, so the reports do not
depend on the machine's speed.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import pytest
import torch
from torch import nn

import scalecheck
from scalecheck.reference import interpolation as ref
from scalecheck.trial import TrialOptions

#: A fixed-length trial: 40 Adam steps at lr 1e-2 per arm, never cut short by the clock.
TRIAL = TrialOptions(steps=40, budget_s=600.0, lrs=(1e-2,))


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one thread: for these tiny networks, waking a second thread for every
    small operation costs more than the operation (ten times more on a busy machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Import this into a test module to run its tests on one torch thread."""
    with one_thread():
        yield


#: A module name that is also markup: it must reach every rendering as text.
SCRIPT = "<script>alert('pwned')</script>"


@functools.cache
def reference_report() -> scalecheck.Report:
    """The reference case on raw inputs, with the trial: ``stalling``."""
    with one_thread():
        return scalecheck.diagnose(
            ref.make_model(seed=0), ref.make_loader(), trial=TRIAL, strict=True
        )


@functools.cache
def standardized_report() -> scalecheck.Report:
    """The reference case on standardized inputs: ``ok``, no findings, no trial."""
    with one_thread():
        return scalecheck.diagnose(
            ref.make_model(seed=0), ref.make_loader(standardized=True), trial=TRIAL, strict=True
        )


class Scripted(nn.Module):
    """Linear(1, 4) -> Tanh -> Linear(4, 1), with the tanh registered under :data:`SCRIPT`."""

    def __init__(self) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            self.inp = nn.Linear(1, 4)
            self.add_module(SCRIPT, nn.Tanh())
            self.out = nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(getattr(self, SCRIPT)(self.inp(x)))


@functools.cache
def scripted_report() -> scalecheck.Report:
    """Raw inputs of order 1e5 through :class:`Scripted`: its tanh saturates (SC201 at the
    site named after :data:`SCRIPT`)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(32, 1, generator=gen) * 2e5
    y = torch.rand(32, 1, generator=gen)
    with one_thread():
        return scalecheck.diagnose(Scripted(), [(x, y)], trial=False, strict=True)


@functools.cache
def fixed_report() -> scalecheck.Report:
    """The raw reference case with the fix in the model: ``Sequential(standardizer, model)``.
    The first layer receives standardized values (SC106, ``ok``)."""
    model = nn.Sequential(reference_report().standardizer(), ref.make_model(seed=0))
    with one_thread():
        return scalecheck.diagnose(model, ref.make_loader(), trial=False, strict=True)
