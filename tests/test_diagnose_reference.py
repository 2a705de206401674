"""Issue 2 and 3 acceptance on the reference case."""

from __future__ import annotations

import pytest
import torch

import scalecheck
from scalecheck import Severity, Verdict
from scalecheck.reference import interpolation as ref


@pytest.fixture(scope="module")
def raw_report():
    return scalecheck.diagnose(ref.make_model(seed=0), ref.make_loader(), strict=True)


@pytest.fixture(scope="module")
def static_report():
    return scalecheck.diagnose(ref.make_model(seed=0), ref.make_loader(), trial=False, strict=True)


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "relu"])
def test_raw_reference_is_stalling_and_standardized_is_ok(activation):
    raw = scalecheck.diagnose(ref.make_model(activation, seed=1), ref.make_loader(), strict=True)
    assert raw.verdict == Verdict.STALLING
    ok = scalecheck.diagnose(
        ref.make_model(activation, seed=1), ref.make_loader(standardized=True), strict=True
    )
    assert ok.verdict == Verdict.OK
    assert not [f for f in ok.findings if f.category == "input-scale"]


def test_original_dataset_with_prepare_is_stalling():
    report = scalecheck.diagnose(
        ref.make_model(seed=0),
        ref.make_original_loader(),
        prepare=ref.prepare,
        trial=False,
        strict=True,
    )
    assert report.verdict == Verdict.STALLING


def test_original_batches_without_prepare_explain_the_way_out():
    with pytest.raises(scalecheck.ModelError, match="prepare=") as info:
        scalecheck.diagnose(ref.make_model(seed=0), ref.make_original_loader(), strict=True)
    message = str(info.value)
    assert "batch 0" in message and "x_to_hidden" in message and "Tensor[4] int64" in message
    assert isinstance(info.value.__cause__, RuntimeError)


def test_findings_come_from_inputs_activations_and_gradients(static_report):
    report = static_report
    by_code = {f.code: f for f in report.findings}
    assert {"SC101", "SC201", "SC301"} <= set(by_code)
    sc101 = by_code["SC101"]
    assert sc101.where == "input[0]" and sc101.severity == Severity.ERROR
    assert "input[0] spans [" in sc101.message
    assert 3e10 < sc101.evidence["kappa"] < 8e10
    assert sc101.evidence["kappa_standardized"] == pytest.approx(1.0)
    sc201 = by_code["SC201"]
    assert sc201.where == "activation:tanh#1" and "x_to_hidden" in sc201.message
    assert sc201.evidence["exact_fraction"] > 0.95 and sc201.evidence["input_layer"]
    assert sc201.evidence["exact_hi"] == pytest.approx(9.0108, abs=1e-3)
    sc301 = by_code["SC301"]
    assert sc301.where == "x_to_hidden" and sc301.evidence["zero_fraction"] > 0.5
    # the fix carries the fitted numbers
    assert sc101.fix is not None and "report.standardizer()" in sc101.fix.code
    mean, std = sc101.fix.values["mean"][0], sc101.fix.values["std"][0]
    assert mean == pytest.approx(ref.MEAN_X, rel=0.1) and std == pytest.approx(ref.STD_X, rel=0.15)


def test_static_evidence_alone_says_stalling(static_report):
    assert static_report.verdict == Verdict.STALLING
    assert static_report.trial is None
    ok = scalecheck.diagnose(
        ref.make_model(seed=0), ref.make_loader(standardized=True), trial=False, strict=True
    )
    assert ok.verdict == Verdict.OK


def test_measurements_match_the_reference_numbers(static_report):
    (inp,) = static_report.inputs
    assert inp.kind == "feature" and inp.consumer == "x_to_hidden" and inp.consumer_op == "linear"
    (feature,) = inp.features
    assert feature.count == 64 and ref.LOW_X <= feature.min < feature.max <= ref.HIGH_X
    loss = static_report.loss
    assert loss.kind == "mse"
    assert loss.baseline == pytest.approx(0.0527, abs=0.006)
    assert loss.prediction_spread < 1e-3 * loss.target_spread
    tanh = next(a for a in static_report.layers if a.function == "tanh")
    assert tanh.input_layer and tanh.fed_by == "x_to_hidden" and tanh.units == 10


def test_trial_shows_raw_stuck_and_standardized_learning(raw_report):
    trial = raw_report.trial
    assert trial is not None and trial.steps > 0
    raw, std = trial.arm("raw"), trial.arm("standardized")
    assert raw.final >= 0.9 * trial.baseline
    assert std.final < 0.5 * trial.baseline
    assert not trial.raw_trains and trial.rescaled_helps
    sc410 = next(f for f in raw_report.findings if f.code == "SC410")
    assert "raw" in sc410.message and "standardized" in sc410.message
    assert f"{raw.final:.3g}"[:4] in sc410.message or "raw" in sc410.message
    assert raw_report.verdict == Verdict.STALLING
    assert "trial" in raw_report.summary


def test_standardizer_is_the_fix(static_report):
    model = ref.make_model(seed=0)
    fixed = torch.nn.Sequential(static_report.standardizer(), model)
    x, _ = next(iter(ref.make_loader()))
    z = static_report.standardizer()(x)
    assert float(z.abs().max()) < 3.0
    after = scalecheck.diagnose(fixed, ref.make_loader(), strict=True)
    assert after.verdict == Verdict.OK
    assert after.inputs[0].transformed_by  # the model standardizes its own input now
    losses = ref.train(fixed, ref.make_loader(seed=1), 400, 1e-2)
    assert sum(losses[-50:]) / 50 < 0.02


def test_text_report_reads_verdict_first_then_fix_then_findings(raw_report):
    text = str(raw_report)
    assert text.startswith("scalecheck: STALLING")
    assert text.index("The fix:") < text.index("Findings (") < text.index("Evidence:")
    assert "report.standardizer()" in text and "input[0]" in text
    assert "nan" not in text.lower()
    assert repr(raw_report).startswith("<scalecheck.Report verdict=stalling")
