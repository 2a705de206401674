"""The Report: serialization, raising, the standardizer."""

from __future__ import annotations

import json
import math
import re
import warnings

import pytest
import torch

import scalecheck
from scalecheck import Report
from scalecheck.reference import interpolation as ref


@pytest.fixture(scope="module")
def report():
    return scalecheck.diagnose(ref.make_model(seed=0), ref.make_loader(), strict=True)


def test_round_trip_through_dict_and_json(report):
    again = Report.from_dict(report.to_dict())
    assert again == report
    assert Report.from_json(report.to_json()) == report
    assert again.verdict is scalecheck.Verdict.STALLING
    assert again.trial is not None and again.trial.arm("standardized") is not None


def test_json_has_schema_version_and_no_nan_tokens():
    # a NaN input makes non-finite statistics: they must still serialize cleanly
    x = torch.randn(8, 2)
    x[0, 0] = float("nan")
    model = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    report = scalecheck.diagnose(model, [(x, torch.randn(8, 1))], strict=True, trial=False)
    text = report.to_json()

    def no_constants(token):
        raise AssertionError(f"bare {token} token in the JSON report")

    data = json.loads(text, parse_constant=no_constants)
    assert data["schema_version"] == 1
    assert "SC105" in report.codes()
    assert Report.from_json(text).codes() == report.codes()


def test_from_dict_rejects_other_versions_and_garbage(report):
    data = report.to_dict()
    data["schema_version"] = 99
    with pytest.raises(scalecheck.InvalidArgumentError, match="schema_version 99"):
        Report.from_dict(data)
    with pytest.raises(scalecheck.InvalidArgumentError, match="must be a dict"):
        Report.from_dict([])  # type: ignore[arg-type]


def test_raise_for_findings(report):
    with pytest.raises(scalecheck.FindingsError) as info:
        report.raise_for_findings("error")
    assert isinstance(info.value, AssertionError)
    assert "SC101" in str(info.value) and "scalecheck: STALLING" in str(info.value)
    with pytest.raises(scalecheck.InvalidArgumentError, match="Did you mean 'error'"):
        report.raise_for_findings("eror")
    ok = scalecheck.diagnose(ref.make_model(seed=0), ref.make_loader(standardized=True))
    ok.raise_for_findings("warning")


def test_standardizer_buffers_hold_the_measured_statistics(report):
    s = report.standardizer()
    feature = report.inputs[0].features[0]
    assert s.mean.tolist() == pytest.approx([feature.mean])
    assert s.std.tolist() == pytest.approx([feature.std])
    assert set(dict(s.named_buffers())) == {"mean", "std", "log_mask"}
    state = s.state_dict()
    clone = scalecheck.Standardizer([0.0], [1.0], axis=1, ndim=2)
    clone.load_state_dict(state)
    x = torch.tensor([[feature.mean + feature.std]])
    assert clone(x).item() == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(scalecheck.InvalidArgumentError, match="input must be one of"):
        report.standardizer("nope")


def test_standardizer_handles_channels_and_constant_features():
    s = scalecheck.Standardizer([1.0, 2.0, 3.0], [1.0, 0.0, 2.0], axis=1, ndim=4)
    x = torch.ones(2, 3, 4, 4)
    out = s(x)
    assert out[:, 0].abs().max() == 0 and out[:, 1].eq(-1).all() and out[:, 2].eq(-1).all()
    with pytest.raises(scalecheck.InvalidArgumentError, match="3 features"):
        s(torch.ones(2, 5, 4, 4))


@pytest.mark.parametrize("log", [None, [True, False]])
def test_the_standardized_model_exports_traces_and_scripts(log):
    """The fix is a module users deploy with their model: ``torch.export`` (with a dynamic
    batch), ``torch.jit.trace`` (no TracerWarning: the suite turns warnings into errors)
    and ``torch.jit.script`` give the eager outputs. ``torch.export`` used to stop on the
    log flag read from a buffer in ``forward`` (GuardOnDataDependentSymNode)."""
    s = scalecheck.Standardizer([2.0, 1e4], [0.5, 3e3], axis=1, ndim=2, log=log)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = torch.nn.Sequential(s, torch.nn.Linear(2, 3)).eval()
    x = torch.rand(8, 2) * torch.tensor([10.0, 2e4]) + 0.5
    want = model(x)
    batch = torch.export.Dim("batch")
    exported = torch.export.export(model, (x,), dynamic_shapes=({0: batch},)).module()
    assert torch.equal(exported(x), want) and torch.equal(exported(x[:3]), model(x[:3]))
    with warnings.catch_warnings():
        # torch 2.13 deprecates both in favour of torch.export; a TracerWarning still fails
        warnings.simplefilter("ignore", DeprecationWarning)
        traced = torch.jit.trace(model, x)
        scripted = torch.jit.script(model)
    assert torch.equal(traced(x), want)
    assert torch.equal(scripted(x), want)
    with pytest.raises(Exception, match="this Standardizer has 2 features"):
        scripted(torch.ones(4, 3))


def test_a_wrapped_two_input_model_exports():
    """``report.wrap(model)`` (one standardizer per named input) exports too."""

    class Two(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = torch.nn.Linear(2, 4), torch.nn.Linear(3, 4)

        def forward(self, num: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
            return torch.tanh(self.a(num) + self.b(other))

    g = torch.Generator().manual_seed(0)
    batches = [
        ((torch.rand(32, 2, generator=g) * 1e4, torch.rand(32, 3, generator=g)), torch.randn(32, 4))
        for _ in range(4)
    ]
    report = scalecheck.diagnose(Two(), batches, trial=False, strict=True)
    wrapped = report.wrap(Two()).eval()
    inputs = batches[0][0]
    exported = torch.export.export(wrapped, inputs).module()
    assert torch.equal(exported(*inputs), wrapped(*inputs))


def test_the_log_flag_follows_a_loaded_state_dict_and_old_pickles():
    """``forward`` reads a Python flag, not the ``log_mask`` buffer: loading a state_dict
    updates it, and a Standardizer pickled before the flag existed gets it back."""
    logged = scalecheck.Standardizer([0.0], [1.0], log=[True])
    plain = scalecheck.Standardizer([0.0], [1.0])
    x = torch.tensor([[math.e]])
    assert plain(x).item() == pytest.approx(math.e)
    plain.load_state_dict(logged.state_dict())
    assert plain(x).item() == pytest.approx(1.0)
    state = dict(logged.__dict__)
    del state["_features"], state["_logs"]
    old = scalecheck.Standardizer.__new__(scalecheck.Standardizer)
    old.__setstate__(state)
    assert old(x).item() == pytest.approx(1.0) and old.features == 1
    with pytest.raises(scalecheck.InvalidArgumentError, match="has 1 feature "):
        old(torch.ones(2, 2))


def test_records_built_from_columns_equal_the_dataclass_constructor():
    from dataclasses import dataclass
    from dataclasses import field as dataclass_field

    from scalecheck._records import from_columns
    from scalecheck.measurements import FeatureStats, GradientStats

    columns = (
        ["x[0]", "x[1]"],
        ["x", "x"],
        [0, 1],
        [4, 0],
        [2.5, None],
        [1.1, None],
        [1.0, None],
        [4.0, None],
        [0, 3],
        [0.0, float("nan")],
        [0.8, None],
        [0.4, None],
    )
    built = from_columns(FeatureStats, columns)
    expected = tuple(FeatureStats(*row) for row in zip(*columns, strict=True))
    assert [repr(r) for r in built] == [repr(r) for r in expected]  # NaN != NaN under ==
    assert built[0] == expected[0] and type(built[1]) is FeatureStats
    with pytest.raises(AttributeError):
        built[0].mean = 3.0  # still frozen
    with pytest.raises(ValueError):
        from_columns(FeatureStats, (*columns[:-1], [0.4]))  # a short column
    assert from_columns(GradientStats, [[]] * 14) == ()

    @dataclass
    class Plain:
        a: int

    @dataclass(slots=True)
    class Mutable:
        a: int

    @dataclass(frozen=True, slots=True)
    class Base:
        a: int

    @dataclass(frozen=True)
    class Unslotted(Base):  # its own fields would live in a __dict__
        b: int = 0

    @dataclass(frozen=True, slots=True)
    class KeywordOnly:
        a: int = dataclass_field(kw_only=True)

    for cls in (Plain, Mutable, Unslotted, KeywordOnly):
        with pytest.raises(TypeError, match="frozen, slotted"):
            from_columns(cls, [[1]])

    @dataclass(frozen=True, slots=True)
    class Child(Base):  # inherited slots are written too
        b: int

    assert from_columns(Child, [[1], [2]]) == (Child(1, 2),)


def test_the_verdict_names_features_once_and_the_whole_input_only_when_no_feature_is_named():
    from scalecheck.findings import Finding, Severity
    from scalecheck.verdict import _scale_phrase

    def finding(code, where, features=None):
        evidence = {"features": [{"name": n, "mean": 1e5, "std": 1.0} for n in features or ()]}
        return Finding(code, "x", Severity.WARNING, "input-scale", "m", where, evidence)

    sc101 = finding("SC101", "input (2 of 2 features)", ["input[1]", "input[0]"])
    sc102 = finding("SC102", "input")
    assert _scale_phrase([sc101, sc102]) == "The input is badly scaled (input[1], input[0])"
    assert _scale_phrase([sc102]) == "The input is badly scaled (input)"
    other = finding("SC102", "mask")
    assert _scale_phrase([sc101, other]).endswith("(input[1], input[0], mask)")


def test_an_ok_verdict_names_the_errors_of_another_kind_beside_it():
    """NaN in well-scaled data: the verdict is about the inputs' scale (``ok``), but its
    reason must not read as "all is well" next to four errors."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 3, generator=g)
    x[5, 1] = float("nan")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    batches = [(x[i : i + 64], torch.randn(64, 1, generator=g)) for i in range(0, 256, 64)]
    report = scalecheck.diagnose(model, batches, trial=False)
    assert report.verdict == scalecheck.Verdict.OK
    assert report.summary.startswith("The input features are well scaled, but errors of another")
    assert "SC105 non-finite-input" in report.summary
    clean = [(torch.randn(64, 3, generator=g), torch.randn(64, 1, generator=g))]
    assert scalecheck.diagnose(model, clean).summary == "The input features are well scaled."


def test_evidence_tables_and_the_verdict_lead_with_the_features_the_rules_flag():
    """Pixels 0-255 with a zero border (60 columns that never change, kappa infinite but
    harmless): the tables of every rendering start with the badly scaled pixels, not the
    border, and the verdict counts every flagged feature, not just those its evidence
    lists."""
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(256, 200, generator=g) ** 4 * 255).round()
    x[:, :60] = 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = torch.nn.Sequential(
            torch.nn.Linear(200, 16), torch.nn.Sigmoid(), torch.nn.Linear(16, 3)
        )
    batches = [(x[i : i + 64], torch.randint(0, 3, (64,), generator=g)) for i in range(0, 256, 64)]
    report = scalecheck.diagnose(model, batches, trial=False)
    (sc101,) = [f for f in report.findings if f.code == "SC101"]
    assert sc101.evidence["flagged"] == 140 and len(sc101.evidence["features"]) == 64
    assert "and 137 more" in report.summary
    border = {f"input[{j}]" for j in range(60)}
    lines = str(report).splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["feature", "mean"])
    shown = [line.split()[0] for line in lines[header + 1 : header + 13]]
    assert all(name.startswith("input[") for name in shown) and not border & set(shown)
    for rendering, header in (
        (report.to_markdown(), "| feature |"),
        (report.to_html(), ">feature<"),
    ):
        table = rendering[rendering.index(header) :]
        rows = re.findall(r"input\[\d+\]", table)[:12]
        assert len(rows) == 12 and not border & set(rows)
