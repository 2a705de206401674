"""``scalecheck.testing.assert_well_scaled``: passes on well-scaled inputs, fails with a report."""

from __future__ import annotations

import re

import pytest
import torch

import scalecheck
from scalecheck import testing
from scalecheck.reference import interpolation as ref
from scalecheck.testing import assert_well_scaled


def _warning_only_case():
    """Mean 0, std 100 (kappa ~1e4: SC101 at warning level, not error), small first-layer
    weights so that tanh still passes gradient: the only finding is a warning."""
    g = torch.Generator().manual_seed(0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(1, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    with torch.no_grad():
        model[0].weight.mul_(1e-3)
    x = 100.0 * torch.randn(64, 1, generator=g)
    y = torch.randn(64, 1, generator=g)
    return model, [(x[i : i + 16], y[i : i + 16]) for i in range(0, 64, 16)]


def _without_timing(text: str) -> str:
    return re.sub(r"in \d+\.\d+ s\.", "in <t> s.", text)


def test_passes_on_standardized_inputs_and_returns_the_report():
    report = assert_well_scaled(
        ref.make_model(seed=0), ref.make_loader(n=256, standardized=True), trial=False
    )
    assert isinstance(report, scalecheck.Report)
    assert report.verdict is scalecheck.Verdict.OK


def test_fails_on_raw_inputs_with_the_full_text_report():
    with pytest.raises(scalecheck.FindingsError) as info:
        assert_well_scaled(ref.make_model(seed=0), ref.make_loader(n=256), trial=False)
    err = info.value
    assert isinstance(err, AssertionError) and isinstance(err, scalecheck.ScaleCheckError)
    head, body = str(err).split("\n\n", 1)
    assert head == (
        "scalecheck: the inputs are not well scaled: 3 findings at or above error "
        "(SC101, SC201, SC301)"
    )
    expected = scalecheck.diagnose(ref.make_model(seed=0), ref.make_loader(n=256), trial=False)
    assert _without_timing(body) == _without_timing(str(expected))


def test_fail_on_chooses_the_severity():
    model, batches = _warning_only_case()
    report = assert_well_scaled(model, batches, trial=False)  # fail_on="error"
    assert [(f.code, f.severity.value) for f in report.findings] == [("SC101", "warning")]
    with pytest.raises(AssertionError, match=r"1 finding at or above warning \(SC101\)"):
        assert_well_scaled(model, batches, fail_on="warning", trial=False)
    with pytest.raises(AssertionError, match="at or above warning"):
        assert_well_scaled(model, batches, fail_on=scalecheck.Severity.WARNING, trial=False)


def test_info_level_fails_on_notes():
    # 8 samples: SC002 few-samples-measured, an info finding, and nothing else.
    loader = ref.make_loader(n=8, standardized=True)
    report = assert_well_scaled(ref.make_model(seed=0), loader, fail_on="warning", trial=False)
    assert {f.severity.value for f in report.findings} == {"info"}
    with pytest.raises(AssertionError, match="at or above info"):
        assert_well_scaled(ref.make_model(seed=0), loader, fail_on="info", trial=False)


def test_diagnose_options_are_passed_through():
    loader = ref.make_loader(n=256)
    report = assert_well_scaled(
        ref.make_model(seed=0), loader, trial=False, ignore=["SC1", "SC2", "SC3"], max_batches=3
    )
    assert report.meta["max_batches"] == 3
    assert not any(c.startswith(("SC1", "SC2", "SC3")) for c in report.codes())


class _Untouchable:
    def __iter__(self):
        raise AssertionError("the loader must not be read when an argument is invalid")


@pytest.mark.parametrize(
    ("fail_on", "match"),
    [
        (
            "erorr",
            r"fail_on must be one of 'info', 'warning', 'error', got 'erorr' \(str\)\. "
            r"Did you mean 'error'\?",
        ),
        ("ERROR", r"got 'ERROR' \(str\)"),
        (2, r"got 2 \(int\)"),
        (None, r"got None \(NoneType\)"),
    ],
)
def test_invalid_fail_on_is_rejected_before_anything_runs(fail_on, match):
    with pytest.raises(scalecheck.InvalidArgumentError, match=match):
        assert_well_scaled(ref.make_model(seed=0), _Untouchable(), fail_on=fail_on)


def test_unknown_option_names_the_closest():
    with pytest.raises(scalecheck.InvalidArgumentError, match="Did you mean 'max_batches'") as e:
        assert_well_scaled(ref.make_model(seed=0), _Untouchable(), max_batch=2)
    assert "unknown diagnose option 'max_batch'" in str(e.value)
    assert not isinstance(e.value, AssertionError)  # a usage error, not a failed check


def test_diagnose_errors_propagate_unchanged():
    with pytest.raises(scalecheck.LoaderError):
        assert_well_scaled(ref.make_model(seed=0), [], trial=False)


def test_every_documented_diagnose_option_is_accepted():
    documented = {"loss_fn", "prepare", "max_batches", "seed", "ignore", "trial", "strict"}
    assert documented <= set(testing.DIAGNOSE_OPTIONS)
    assert "fail_on" not in testing.DIAGNOSE_OPTIONS
