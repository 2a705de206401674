"""SC108: a varying input feature that the model turns into a constant before its first layer.

The usual cause is a ``LayerNorm`` put in front of a network to take care of input scale: it
normalizes each sample across its features, so over one feature it outputs its bias for
every sample, and next to a much larger feature the small ones' variation falls below float
precision. Before SC108, SC106 read such an input as "rescaled; that layer receives
well-scaled values" and the verdict said training should not stall.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch import nn

import scalecheck
from scalecheck.reference import interpolation as ref
from scalecheck.rules.inputs import KAPPA_WARN


def _codes(report: scalecheck.Report) -> set[str]:
    return {f.code for f in report.findings}


def _sc108(report: scalecheck.Report) -> scalecheck.Finding:
    (finding,) = [f for f in report.findings if f.code == "SC108"]
    return finding


def _tanh_mlp(features: int, first: nn.Module | None, seed: int = 0) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layers = [first] if first is not None else []
        layers += [nn.Linear(features, 8), nn.Tanh(), nn.Linear(8, 1)]
        return nn.Sequential(*layers)


def _loader(x: torch.Tensor, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    y = torch.randn(x.shape[0], 1, generator=g)
    return [(x[i : i + 32], y[i : i + 32]) for i in range(0, x.shape[0], 32)]


def test_a_layernorm_over_the_reference_input_is_flagged_not_called_harmless():
    """The reference case with ``nn.LayerNorm(1)`` in front (a user's attempt to fix the
    scale): the first layer receives 0 in every sample. It used to read ``at_risk``,
    "training should not stall" (SC106)."""
    model = nn.Sequential(nn.LayerNorm(1), ref.make_model(seed=0))
    report = scalecheck.diagnose(model, ref.make_loader(), trial=False, strict=True)
    finding = _sc108(report)
    assert finding.severity == scalecheck.Severity.ERROR
    assert finding.category == "input-scale"  # the raw input is badly scaled
    assert finding.where == "input[0]"
    assert "receives it as 0 in every sample" in finding.message
    assert "over a single feature it outputs its bias" in finding.message
    assert "SC106" not in _codes(report)
    assert report.verdict == scalecheck.Verdict.STALLING, report.summary
    assert "turns input[0] into a constant before its first layer" in report.summary
    assert finding.fix is not None
    assert "remove the layer_norm of module 0 (LayerNorm)" in finding.fix.code
    assert "report.standardizer()" in finding.fix.code
    # the fix's statistics are the raw input's, fitted on the measured batches
    (erased,) = finding.evidence["erased"]
    assert erased["received"] == 0.0
    assert list(finding.fix.values["mean"]) == [pytest.approx(erased["mean"])]


def test_erasing_a_well_scaled_input_is_an_error_of_another_kind():
    """A standardized input behind ``LayerNorm(1)`` is erased all the same; its scale is
    fine, so the verdict stays ``ok`` and its reason names the error."""
    x = torch.randn(256, 1, generator=torch.Generator().manual_seed(1))
    report = scalecheck.diagnose(
        _tanh_mlp(1, nn.LayerNorm(1)), _loader(x), trial=False, strict=True
    )
    finding = _sc108(report)
    assert finding.category == "other" and finding.severity == scalecheck.Severity.ERROR
    assert report.verdict == scalecheck.Verdict.OK
    assert "SC108 input-erased-in-model" in report.summary


def test_a_layernorm_across_a_large_constant_erases_the_small_features():
    """A constant 1.7e9 next to three standardized features, behind ``LayerNorm(4)``: the
    constant's deviation is each sample's whole spread, so the three reach the first layer
    as constants. Nothing blocks a gradient (the constants are not 0), but the output
    cannot depend on the input: ``stalling``. Standardizing first keeps them."""
    g = torch.Generator().manual_seed(2)
    x = torch.cat([torch.full((256, 1), 1.7e9), torch.randn(256, 3, generator=g)], 1)
    report = scalecheck.diagnose(
        _tanh_mlp(4, nn.LayerNorm(4)), _loader(x), trial=False, strict=True
    )
    finding = _sc108(report)
    assert [e["name"] for e in finding.evidence["erased"]] == ["input[1]", "input[2]", "input[3]"]
    assert finding.evidence["every"] is True
    assert finding.category == "input-scale"
    assert "below float precision" in finding.message
    assert report.verdict == scalecheck.Verdict.STALLING, report.summary
    assert "input[0] = 1.7e9 in every sample" in report.summary
    assert "nothing the first layer receives from 'input' varies" in report.summary

    fixed = nn.Sequential(report.standardizer(), _tanh_mlp(4, nn.LayerNorm(4)))
    after = scalecheck.diagnose(fixed, _loader(x), trial=False, strict=True)
    assert "SC108" not in _codes(after)


def test_an_erasure_outside_a_normalization_layer_names_the_operation():
    """Centering each sample across its one feature inside ``forward`` erases it too; the
    finding names the operations."""

    class Centered(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = _tanh_mlp(1, None)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.body(x - x.mean(1, keepdim=True))

    x = torch.rand(128, 1, generator=torch.Generator().manual_seed(3)) * 2e5
    report = scalecheck.diagnose(Centered(), _loader(x), trial=False, strict=True)
    finding = _sc108(report)
    assert "the model's mean and subtraction erase it" in finding.message
    assert "LayerNorm" not in finding.message


def test_a_normalization_that_keeps_the_features_is_not_sc108():
    """BatchNorm normalizes each feature over the batch: the features still vary (SC106,
    ``at_risk``), and a LayerNorm over many comparable features keeps them too."""
    x = torch.rand(256, 1, generator=torch.Generator().manual_seed(4)) * 2e5
    report = scalecheck.diagnose(
        _tanh_mlp(1, nn.BatchNorm1d(1)), _loader(x), trial=False, strict=True
    )
    assert "SC108" not in _codes(report) and "SC106" in _codes(report)
    z = torch.randn(256, 8, generator=torch.Generator().manual_seed(5))
    report = scalecheck.diagnose(_tanh_mlp(8, nn.LayerNorm(8)), _loader(z), trial=False)
    assert "SC108" not in _codes(report)


@settings(max_examples=20)
@given(
    offset=st.one_of(
        st.just(0.0),
        st.tuples(st.sampled_from([-1.0, 1.0]), st.floats(-3.0, 6.0)).map(
            lambda t: t[0] * 10.0 ** t[1]
        ),
    ),
    scale=st.floats(-3.0, 5.0).map(lambda e: 10.0**e),
    seed=st.integers(0, 2**16),
)
def test_one_feature_behind_a_layernorm_is_always_erased(offset, scale, seed):
    """Whatever its scale, a single feature behind ``LayerNorm(1)`` reaches the first layer
    as a constant: SC108 fires every time, as an input-scale finding exactly when the raw
    feature is badly scaled (its ``kappa`` above ``kappa_warn``), and the verdict is ``ok``
    exactly when it is not."""
    g = torch.Generator().manual_seed(seed)
    x = (offset + scale * torch.randn(128, 1, generator=g, dtype=torch.float64)).float()
    report = scalecheck.diagnose(
        _tanh_mlp(1, nn.LayerNorm(1), seed=seed % 7), _loader(x, seed), trial=False, strict=True
    )
    (raw,) = report.measurements.inputs[0].features
    assume(raw.min < raw.max)  # float32 can round a narrow spread far out to one value
    finding = _sc108(report)
    badly_scaled = (raw.judged_kappa or 0.0) > KAPPA_WARN.value
    assert finding.category == ("input-scale" if badly_scaled else "other")
    assert (report.verdict == scalecheck.Verdict.OK) == (not badly_scaled), report.summary


def test_sc104_says_one_feature_never_changes():
    x = torch.cat([torch.full((64, 1), 3.0), torch.randn(64, 1)], 1)
    report = scalecheck.diagnose(_tanh_mlp(2, None), _loader(x), trial=False, strict=True)
    (finding,) = [f for f in report.findings if f.code == "SC104"]
    assert "1 feature of input never changes in the measured samples" in finding.message
