"""Shared test setup: a deterministic hypothesis profile and small model builders."""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

# Deterministic and CI-friendly: derandomized (same examples every run, no example
# database), no deadline (a forward pass can take longer than hypothesis' default).
settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=60,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", deadline=None, max_examples=25)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# The test networks are tiny: one intra-op thread is faster for them, and far more stable
# when the machine is busy (two threads spin-wait on each other under load).
torch.set_num_threads(1)


@pytest.fixture
def tiny_mlp():
    """A builder for Linear(f, h) -> Tanh -> Linear(h, 1) with a fixed seed."""

    def build(features: int = 1, hidden: int = 8, seed: int = 0) -> torch.nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return torch.nn.Sequential(
                torch.nn.Linear(features, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 1)
            )

    return build
