"""A project's own test file: scalecheck as a pre-training sanity check in a test suite.

Copy this into your project's ``tests/`` (with ``pip install "scalecheck[hypothesis]"``)
and replace the "project code" section by imports of your own data pipeline and model.
It shows the three ways to use scalecheck in tests:

1. the ``scalecheck`` fixture, from scalecheck's pytest plugin (loaded automatically when
   scalecheck is installed), with the ``@pytest.mark.scalecheck`` marker for defaults and
   ``pytest --scalecheck-report-dir=reports`` to keep every report as JSON;
2. :func:`scalecheck.testing.assert_well_scaled`, usable in any test;
3. a hypothesis property over random input ranges with :mod:`scalecheck.strategies`:
   whatever the units of the raw columns, the pipeline hands the model well-scaled inputs.

A failing check fails the test with the full scalecheck report as its message: the
verdict, the fix with the fitted mean and std, and the measurements behind each finding.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from torch.utils.data import DataLoader, TensorDataset

from scalecheck import strategies as scs
from scalecheck.testing import assert_well_scaled

# -- project code (in a real project: from myproject.data import ...) ----------------------


def load_raw_features(n: int = 256, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """House data in natural units: floor area (m^2), year built, distance to centre (m)."""
    rng = np.random.default_rng(seed)
    area = rng.uniform(30, 300, n)
    year = rng.integers(1900, 2021, n).astype(np.float64)
    distance = rng.uniform(100, 50_000, n)
    x = np.stack([area, year, distance], axis=1)
    price = 3_000 * area - 500 * (2020 - year) - 2 * distance
    return x, (price - price.mean()) / price.std()


def fit_preprocessing(x: np.ndarray):
    """The pipeline's scaling step, fitted on the training data: standardize each column."""
    mean, std = x.mean(axis=0), x.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return lambda data: (data - mean) / std


def make_loader(x: np.ndarray, y: np.ndarray, batch_size: int = 32) -> DataLoader:
    data = TensorDataset(
        torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.float32).view(-1, 1)
    )
    return DataLoader(data, batch_size=batch_size, shuffle=False)


def make_model(features: int = 3) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return torch.nn.Sequential(
            torch.nn.Linear(features, 16),
            torch.nn.Tanh(),
            torch.nn.Linear(16, 16),
            torch.nn.Tanh(),
            torch.nn.Linear(16, 1),
        )


# -- tests ------------------------------------------------------------------------------------


def test_training_inputs_are_well_scaled(scalecheck):
    x, y = load_raw_features()
    preprocess = fit_preprocessing(x)
    # trial=False: skip the few-second A/B training trial; the check is about the inputs.
    report = scalecheck.check(make_model(), make_loader(preprocess(x), y), trial=False)
    assert report.verdict.value == "ok"


@pytest.mark.scalecheck(fail_on="warning", trial=False, max_batches=8)
def test_training_inputs_are_standardized_strictly(scalecheck):
    # The marker makes warnings fail too (e.g. features whose scales differ ~30x).
    x, y = load_raw_features()
    scalecheck.check(make_model(), make_loader(fit_preprocessing(x)(x), y))


def test_raw_features_would_be_caught():
    # Without the preprocessing the model would be fed year ~2000 and distances ~1e4: the
    # check fails, and its message carries the fitted fix.
    x, y = load_raw_features()
    with pytest.raises(AssertionError, match="SC101 unscaled-input-feature") as failure:
        assert_well_scaled(make_model(), make_loader(x, y), trial=False)
    assert "The fix:" in str(failure.value)


# deadline=None: diagnosing a model takes longer than hypothesis' default 200 ms deadline
# the first time (lazy imports), which hypothesis would report as a flaky failure.
@settings(deadline=None, max_examples=10)
@given(scs.feature_matrices(scs.scalings(3), samples=64))
def test_preprocessing_handles_any_input_range(x_raw):
    # Raw columns with any offset (0 or +-1e-3 .. 1e6) and scale (1e-3 .. 1e6):
    # the fitted preprocessing must hand the model well-scaled inputs every time.
    x = fit_preprocessing(x_raw)(x_raw)
    y = np.tanh(x.sum(axis=1))
    assert_well_scaled(
        make_model(), make_loader(x, (y - y.mean()) / y.std()), fail_on="warning", trial=False
    )
