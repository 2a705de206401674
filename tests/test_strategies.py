"""``scalecheck.strategies``: the draws are what they claim, and the headline property.

The property: ``assert_well_scaled(..., fail_on="warning", trial=False)`` passes for every
well-scaled draw and raises for every badly scaled one. ``trial=False`` keeps the check
about the data and the first layers (no training trial), and ``fail_on="warning"``
because with ``trial=False`` a feature whose condition number is above 1e3 yields an SC101
finding of warning (1e3 .. 1e6) or error (> 1e6) severity. So a badly scaled draw
(condition number >= 1e4) must raise because of input-scale findings naming its bad
features, and a well-scaled draw (condition number <= 21) must produce no warning at all,
of any rule.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from hypothesis import find, given, settings
from hypothesis import strategies as st

import scalecheck
from scalecheck import strategies as scs
from scalecheck.testing import assert_well_scaled


# -- the property ------------------------------------------------------------------------------
@settings(deadline=None, max_examples=30)
@given(scs.cases(scs.scalings(well=True)))
def test_assert_well_scaled_passes_for_every_well_scaled_draw(case):
    assert case.scaling.well_scaled
    report = assert_well_scaled(
        case.model, case.loader(), fail_on="warning", trial=False, strict=True
    )
    assert report.verdict is scalecheck.Verdict.OK


@settings(deadline=None, max_examples=30)
@given(scs.cases(scs.scalings(well=False)))
def test_assert_well_scaled_raises_for_every_badly_scaled_draw(case):
    bad = case.scaling.badly_scaled_features
    assert bad
    with pytest.raises(scalecheck.FindingsError) as info:
        assert_well_scaled(case.model, case.loader(), fail_on="warning", trial=False, strict=True)
    message = " ".join(str(info.value).split())  # the report wraps lines
    head = str(info.value).splitlines()[0]
    assert "SC101" in head, head  # raised because of the input's scale ...
    for j in bad:  # ... naming each badly scaled feature
        assert f"input[{j}] spans" in message, (j, case.scaling)
    assert "scalecheck: STALLING" in message or "scalecheck: AT RISK" in message


# -- the draws are what they claim -----------------------------------------------------------
@settings(max_examples=100)
@given(scs.scalings(well=True))
def test_well_scaled_scalings(s):
    assert s.well_scaled and not s.badly_scaled
    assert max(s.kappas) <= 21.1


@settings(max_examples=100)
@given(scs.scalings(well=False))
def test_badly_scaled_scalings(s):
    assert s.badly_scaled and not s.well_scaled
    assert max(s.kappas) >= scs.BAD_KAPPA


@settings(max_examples=100)
@given(scs.scalings(st.integers(1, 5)))
def test_any_scaling_stays_in_range(s):
    assert 1 <= s.features <= 5
    assert all(1e-3 <= x <= 1e6 for x in s.scales)
    assert all(m == 0 or 1e-3 <= abs(m) <= 1e6 for m in s.offsets)


@settings(max_examples=50)
@given(st.data())
def test_feature_matrices_have_exactly_the_drawn_offsets_and_scales(data):
    scaling = data.draw(scs.scalings())
    x = data.draw(scs.feature_matrices(scaling, samples=10))
    assert x.shape == (10, scaling.features) and x.dtype == np.float64
    offsets, scales = np.array(scaling.offsets), np.array(scaling.scales)
    assert np.all(np.abs(x.mean(axis=0) - offsets) <= 1e-9 * (np.abs(offsets) + scales))
    np.testing.assert_allclose(x.std(axis=0), scales, rtol=1e-6)


@settings(max_examples=30)
@given(scs.scaled_data(samples=40, batch_size=16))
def test_scaled_data_targets_and_loader(d):
    np.testing.assert_allclose([d.y.mean(), d.y.std()], [0.0, 1.0], atol=1e-9)
    batches = list(d.loader())
    assert [len(b[0]) for b in batches] == [16, 16, 8]
    assert batches[0][0].dtype == torch.float64
    torch.testing.assert_close(torch.cat([b[0] for b in batches]), torch.from_numpy(d.x))
    assert next(iter(d.loader(torch.float32)))[1].dtype == torch.float32


@settings(max_examples=20)
@given(scs.models(3, hidden=4, activation=st.sampled_from(["tanh", "sigmoid", "relu"])))
def test_models_take_the_features(model):
    assert model(torch.zeros(2, 3)).shape == (2, 1)
    assert model[0].weight.abs().max() <= 1 / 3**0.5


def test_log_uniform_and_offsets_shrink_to_simple_values():
    assert find(scs.log_uniform(1e-3, 1e6), lambda x: True) == 1.0
    assert find(scs.log_uniform(1e3, 1e6), lambda x: True) == 1e3
    assert find(scs.offsets(), lambda x: True) == 0.0
    assert 50 < find(scs.log_uniform(1e-3, 1e6), lambda x: x > 50) <= 100


def _draw_everything():
    case = find(scs.cases(scs.scalings(2, well=False)), lambda c: c.scaling.offsets[0] != 0)
    params = [p.detach().clone() for p in case.model.parameters()]
    return case.data.x.copy(), case.data.y.copy(), params


def test_draws_do_not_read_or_advance_the_global_generators():
    states = []
    results = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        np.random.seed(global_seed)
        random.seed(global_seed)
        before = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
        results.append(_draw_everything())
        after = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
        assert torch.equal(before[0], after[0])
        assert np.array_equal(before[1], after[1])
        assert before[2] == after[2]
        states.append(before)
    (x1, y1, p1), (x2, y2, p2) = results
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
    assert all(torch.equal(a, b) for a, b in zip(p1, p2, strict=True))


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: scs.log_uniform(0.0, 1.0), "0 < min_value <= max_value"),
        (lambda: scs.log_uniform(10.0, 1.0), "0 < min_value <= max_value"),
        (lambda: scs.Scaling((0.0,), (1.0, 2.0)), "same, non-zero length"),
        (lambda: scs.Scaling((0.0,), (-1.0,)), "scales must be positive"),
        (lambda: find(scs.scaled_data("wide"), lambda d: True), "scaling must be a Scaling"),
        (lambda: find(scs.feature_matrices(samples=1), lambda d: True), "samples must be >= 2"),
        (lambda: scs.build_model(2, activation="gelu"), "activation must be one of"),
    ],
)
def test_invalid_arguments(make, match):
    with pytest.raises(scalecheck.InvalidArgumentError, match=match):
        make()
