"""Property: well-scaled inputs never get an input-scale finding; badly scaled ones always do.

Offsets and scales are drawn log-uniformly across 1e-3 .. 1e6, so hypothesis explores the
whole range and shrinks towards simple cases.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import scalecheck

log_uniform = st.floats(math.log10(1e-3), math.log10(1e6)).map(lambda e: 10.0**e)
signed = st.tuples(st.sampled_from([-1.0, 1.0]), log_uniform).map(lambda t: t[0] * t[1])
offsets = st.one_of(st.just(0.0), signed)


@st.composite
def features(draw, well: bool | None = None):
    n = draw(st.integers(1, 3))
    if well:
        means = [draw(st.floats(-1, 1)) for _ in range(n)]
        stds = [draw(st.floats(0.5, 2.0)) for _ in range(n)]
    else:
        means = [draw(offsets) for _ in range(n)]
        stds = [draw(log_uniform) for _ in range(n)]
    seed = draw(st.integers(0, 2**16))
    return np.array(means), np.array(stds), seed


def _report(means, stds, seed):
    rng = np.random.default_rng(seed)
    f = len(means)
    batches = []
    for _ in range(4):
        x = means + stds * rng.standard_normal((16, f))  # float64, like real data often is
        y = rng.standard_normal((16, 1))
        batches.append((x, y))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = torch.nn.Sequential(torch.nn.Linear(f, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    return scalecheck.diagnose(model, batches, trial=False, max_batches=4, strict=True)


def _scale_findings(report):
    return [f for f in report.findings if f.category == "input-scale"]


@settings(max_examples=40)
@given(features(well=True))
def test_well_scaled_draws_never_get_an_input_scale_finding(case):
    report = _report(*case)
    assert not _scale_findings(report), [f.message for f in report.findings]
    assert report.verdict == scalecheck.Verdict.OK


@settings(max_examples=60)
@given(features(well=False))
def test_badly_scaled_draws_always_get_one(case):
    means, stds, seed = case
    bad = (np.abs(means) / stds > 100) | (stds > 1e3)
    report = _report(means, stds, seed)
    flagged = _scale_findings(report)
    if bad.any():
        assert flagged, (means, stds)
        assert report.verdict in (scalecheck.Verdict.STALLING, scalecheck.Verdict.AT_RISK)
        names = " ".join(f.where + " " + f.message for f in flagged)
        for j in np.flatnonzero(bad):
            assert f"input[{j}]" in names or "features" in names
    if not flagged:
        assert report.verdict == scalecheck.Verdict.OK


def test_sc101_flags_exactly_the_features_whose_kappa_exceeds_the_warning_level():
    """The rule skips features on the bound kappa < trace^2 / det before computing kappa;
    on features whose kappa spans the warning level closely on both sides, what it flags
    is what the exact condition numbers say."""
    from scalecheck.rules.inputs import KAPPA_WARN

    g = torch.Generator().manual_seed(11)
    # kappa of a feature with std 1 is about (mean^2 + 2)^2: it crosses KAPPA_WARN near
    # |mean| = 5.44, where the offsets are dense; the larger ones test the bound far above
    offsets = torch.tensor([0.0, 1.0, 3.0, 5.3, 5.4, 5.45, 5.5, 5.6, 10.0, 31.6, 100.0, 1e3])
    offsets = torch.cat([offsets, -offsets[1:]])
    x = torch.randn(512, len(offsets), generator=g) + offsets
    model = torch.nn.Linear(len(offsets), 1)
    report = scalecheck.diagnose(model, [(x, torch.randn(512, 1, generator=g))], trial=False)
    features = report.measurements.inputs[0].features
    exact = {f.name for f in features if f.kappa is not None and f.kappa > KAPPA_WARN.value}
    assert 0 < len(exact) < len(features)  # the set straddles the level
    sc101 = [f for f in report.findings if f.code == "SC101"]
    flagged = {e["name"] for f in sc101 for e in f.evidence["features"]}
    assert flagged == exact


@settings(max_examples=30)
@given(offsets, st.integers(0, 2**16))
def test_a_constant_feature_is_an_input_scale_finding_exactly_beyond_the_warning_level(c, seed):
    """A feature that is the same value c in every sample, next to a well-scaled one, gets
    an input-scale finding (SC107) exactly when c^2 + 1 exceeds kappa_warn, and then the
    verdict is never ``ok``; below it, the constant is SC104's, as data, not scale."""
    from scalecheck.rules.inputs import KAPPA_WARN

    report = _report(np.array([c, 0.0]), np.array([0.0, 1.0]), seed)
    sc107 = [f for f in report.findings if f.code == "SC107"]
    sc104 = [f for f in report.findings if f.code == "SC104"]
    if c * c + 1.0 > KAPPA_WARN.value:
        assert [f.where for f in sc107] == ["input[0]"] and not sc104
        assert report.verdict in (scalecheck.Verdict.STALLING, scalecheck.Verdict.AT_RISK)
    else:
        assert not _scale_findings(report), [f.message for f in report.findings]
        assert [f.where for f in sc104] == ["input[0]"]
        assert report.verdict == scalecheck.Verdict.OK


def test_sc107_levels_and_evidence_follow_the_kappa_thresholds():
    """Constants straddling sqrt(kappa_warn) ~ 31.6 and sqrt(kappa_error) ~ 1000: what SC107
    flags, at which severity, and the curvature c^2 + 1 it reports."""
    from scalecheck.rules.inputs import KAPPA_ERROR, KAPPA_WARN

    g = torch.Generator().manual_seed(5)
    values = torch.tensor([0.0, 1.0, 31.0, 31.6, 31.7, 100.0, 999.0, 1001.0, -1.7e9])
    x = torch.randn(64, len(values) + 1, generator=g)
    x[:, : len(values)] = values
    for warn_only in (True, False):
        cols = [i for i, v in enumerate(values.tolist()) if not warn_only or abs(v) < 1000]
        cols.append(len(values))  # the varying feature
        xs = x[:, cols]
        model = torch.nn.Linear(len(cols), 1)
        report = scalecheck.diagnose(model, [(xs, torch.randn(64, 1, generator=g))], trial=False)
        (finding,) = [f for f in report.findings if f.code == "SC107"]
        flagged = {e["mean"] for e in finding.evidence["features"]}
        expected = {v for i, v in enumerate(values.tolist()) if i in cols and v * v + 1 > 1e3}
        assert flagged == expected
        worst = max(v * v + 1 for v in expected)
        assert finding.evidence["curvature"] == pytest.approx(worst)
        severity = scalecheck.Severity
        want = severity.ERROR if worst > KAPPA_ERROR.value else severity.WARNING
        assert finding.severity == want and KAPPA_WARN.value < worst
        assert "x -1.7e9" in finding.message or warn_only
        (sc104,) = [f for f in report.findings if f.code == "SC104"]
        assert {e["mean"] for e in sc104.evidence["features"]} == {
            v for i, v in enumerate(values.tolist()) if i in cols and v * v + 1 <= 1e3
        }


def test_a_constant_timestamp_column_is_stalling_not_ok():
    """The bug this rule closes: a float32 timestamp column that is 1.7e9 in every row
    saturated every tanh unit while the verdict read "OK: the input features are well
    scaled"."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(512, 2, generator=g)
    x[:, 0] = 1.7e9
    y = torch.randn(512, 1, generator=g)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    loader = [(x[i : i + 64], y[i : i + 64]) for i in range(0, 512, 64)]
    report = scalecheck.diagnose(model, loader, trial=False)
    assert report.verdict == scalecheck.Verdict.STALLING, report.summary
    assert "(input[0] = 1.7e9 in every sample)" in report.summary
    (finding,) = [f for f in report.findings if f.code == "SC107"]
    assert finding.severity == scalecheck.Severity.ERROR and finding.where == "input[0]"
    assert finding.fix is not None and "standardizer()" in finding.fix.code
    # the fix centres the constant to 0: the standardized input's first column is gone
    assert report.standardizer()(x[:8]).select(1, 0).abs().max() == 0


def test_a_large_constant_that_batchnorm_removes_is_sc106_not_sc107():
    """Behind a BatchNorm the first layer receives 0 for the constant: no SC107, but the
    raw constant is noted as a scale the model's normalization takes care of (SC106,
    ``at_risk``), as for a varying feature at that scale."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(256, 2, generator=g)
    x[:, 0] = -4.2e6
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        model = torch.nn.Sequential(
            torch.nn.BatchNorm1d(2), torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)
        )
    loader = [(x[i : i + 64], torch.randn(64, 1, generator=g)) for i in range(0, 256, 64)]
    report = scalecheck.diagnose(model, loader, trial=False)
    codes = {f.code for f in report.findings}
    assert "SC107" not in codes and "SC106" in codes
    (sc106,) = [f for f in report.findings if f.code == "SC106"]
    assert "input[0] is -4.2e6 in every measured sample" in sc106.message
    assert report.verdict == scalecheck.Verdict.AT_RISK


@settings(max_examples=30)
@given(st.floats(-35.0, 35.0), st.integers(0, 2**16))
def test_float32_features_are_measured_at_any_scale_float32_holds(exponent, seed):
    """A float32 feature of std 10^exponent is measured to float32 precision wherever its
    values fit in float32, although its squares leave float32's range beyond about 1e19
    and below 1e-19 (its variance read inf, or 0: "constant"); and it gets an SC101
    finding whenever its scale is off by more than 100x either way."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((256, 2)) * [10.0**exponent, 1.0]).astype(np.float32)
    y = rng.standard_normal((256, 1)).astype(np.float32)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    loader = [
        (torch.from_numpy(x[i : i + 64]), torch.from_numpy(y[i : i + 64]))
        for i in range(0, 256, 64)
    ]
    report = scalecheck.diagnose(model, loader, trial=False, strict=True)
    f0 = report.measurements.inputs[0].features[0]
    true = x[:, 0].astype(np.float64)
    assert f0.std == pytest.approx(true.std(), rel=1e-5)
    assert f0.mean == pytest.approx(true.mean(), rel=1e-5, abs=1e-5 * true.std())
    assert (f0.min, f0.max) == (true.min(), true.max())
    codes = {f.code for f in report.findings}
    assert "SC104" not in codes
    if abs(exponent) > 2:  # kappa ~ max(s^2, 1/s^2) > 1e4
        assert "SC101" in codes and report.verdict != scalecheck.Verdict.OK


@pytest.mark.parametrize("bad", [None, math.inf, math.nan])
def test_sc204_names_sites_that_received_nan_or_inf_not_overflowed_statistics(bad):
    """Pre-activations of order 1e20 in float32 are finite though their squares overflow:
    no SC204 for them. One inf or NaN in the input reaches the tanh: SC204 names it."""
    g = torch.Generator().manual_seed(8)
    x = torch.randn(256, 2, generator=g) * torch.tensor([1e20, 1.0])
    if bad is not None:
        x[70, 1] = bad
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(8)
        model = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    loader = [(x[i : i + 64], torch.randn(64, 1, generator=g)) for i in range(0, 256, 64)]
    report = scalecheck.diagnose(model, loader, trial=False)
    sc204 = [f for f in report.findings if f.code == "SC204"]
    (site,) = report.measurements.layers[:1]
    if bad is None:
        assert not sc204 and not site.nonfinite
        assert site.min is not None and site.max is not None and site.max > 1e19
    else:
        assert [list(f.evidence["sites"]) for f in sc204] == [[site.site]] and site.nonfinite


def test_one_measured_sample_is_judged_by_its_magnitude_not_called_well_scaled():
    """``max_batches=1`` over a loader of batch size 1: one sample of the reference case's
    x shows its magnitude, not its spread. It was 'OK: well scaled' next to SC201 and SC301
    errors; SC107 now judges the value as it judges a constant, and SC002 says how little
    was measured."""
    x = torch.tensor([[99251.3]])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(1, 10), torch.nn.Tanh(), torch.nn.Linear(10, 3))
    report = scalecheck.diagnose(model, [(x, torch.randn(1, 3))], trial=False)
    codes = {f.code for f in report.findings}
    assert {"SC107", "SC002"} <= codes and report.verdict != scalecheck.Verdict.OK
    (sc107,) = [f for f in report.findings if f.code == "SC107"]
    assert "in the only measured sample" in sc107.message
    assert sc107.fix is not None and "more than one sample" in sc107.fix.summary
    assert "= 9.9e4 in the only sample" in report.summary
    (sc002,) = [f for f in report.findings if f.code == "SC002"]
    assert sc002.message.startswith("Only 1 sample was measured (1 batch)")
