"""Property: well-scaled inputs never get an input-scale finding; badly scaled ones always do.

Offsets and scales are drawn log-uniformly across 1e-3 .. 1e6, so hypothesis explores the
whole range and shrinks towards simple cases.
"""

from __future__ import annotations

import math

import numpy as np
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
    # kappa of a feature with std 1 grows like mean^2: offsets around sqrt(KAPPA_WARN)
    offsets = torch.tensor([0.0, 1.0, 3.0, 10.0, 30.0, 31.0, 31.6, 31.7, 32.0, 33.0, 100.0, 1e3])
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
