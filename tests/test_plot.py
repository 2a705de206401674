"""``report.plot(kind)``: every kind for the reference report, checked artist by artist."""

from __future__ import annotations

import ast
import io
import math
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import pytest
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle, StepPatch

import scalecheck
from _reports import (
    SCRIPT,
    _one_thread,  # noqa: F401 (an autouse fixture)
    fixed_report,
    reference_report,
    scripted_report,
    standardized_report,
)
from scalecheck import Report
from scalecheck.report import _plot


@pytest.fixture(scope="module")
def report() -> Report:
    return reference_report()


def by_gid(ax, gid: str):
    found = [a for a in (*ax.patches, *ax.lines) if a.get_gid() == gid]
    assert len(found) == 1, f"{gid}: {len(found)} artists"
    return found[0]


def xspan(patch) -> tuple[float, float]:
    if isinstance(patch, Rectangle):
        return patch.get_x(), patch.get_x() + patch.get_width()
    xs = [x for x, _ in patch.get_xy()]
    return min(xs), max(xs)


def legend_labels(ax) -> list[str]:
    legend = ax.get_legend()
    assert legend is not None
    return [t.get_text() for t in legend.get_texts()]


def test_inputs(report):
    fig = report.plot("inputs")
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    ax = fig.axes[0]
    feature = report.inputs[0].features[0]
    assert ax.get_xscale() == "symlog"
    assert ax.get_title().startswith("Input features")
    assert "symmetric log" in ax.get_xlabel()
    assert [t.get_text() for t in ax.get_yticklabels()] == ["input[0]"]
    assert xspan(by_gid(ax, "unit-band")) == pytest.approx((-1.0, 1.0))
    assert _plot.UNIT_BAND in legend_labels(ax)
    # the mean +- std box and the min..max line, in data coordinates
    (box,) = [p for p in ax.patches if isinstance(p, Rectangle) and p.get_gid() is None]
    assert xspan(box) == pytest.approx((feature.mean - feature.std, feature.mean + feature.std))
    (segment,) = ax.collections[0].get_segments()
    assert [x for x, _ in segment] == pytest.approx([feature.min, feature.max])
    assert "κ 5.0e10" in [t.get_text() for t in ax.texts]
    lo, hi = ax.get_xlim()
    assert lo < -1 and hi > feature.max
    fig.draw_without_rendering()  # plain-text decade labels, no mathtext
    assert {"0", "1", "100", "1e4", "1e5"} <= {t.get_text() for t in ax.get_xticklabels()}


def test_inputs_rescaled_by_the_model_show_raw_and_received():
    report = fixed_report()
    inp = report.inputs[0]
    assert inp.seen_by_layer and report.verdict is scalecheck.Verdict.OK
    ax = report.plot("inputs").axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]  # bottom to top
    assert labels == [f"input[0] at {inp.consumer}", "input[0] (raw)"]
    boxes = [p for p in ax.patches if isinstance(p, Rectangle) and p.get_gid() is None]
    seen = inp.seen_by_layer[0]
    assert any(
        xspan(b) == pytest.approx((seen.mean - seen.std, seen.mean + seen.std)) for b in boxes
    )


def test_many_features_are_cut_to_the_worst_conditioned():
    gen = torch.Generator().manual_seed(0)
    scales = torch.logspace(-3, 4, 50)
    x = torch.randn(64, 50, generator=gen) * scales
    model = torch.nn.Sequential(torch.nn.Linear(50, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    report = scalecheck.diagnose(model, [(x, torch.randn(64, 1, generator=gen))], trial=False)
    ax = report.plot("inputs").axes[0]
    assert ax.get_title().endswith(f"({_plot.MAX_ROWS} of 50, highest κ first)")
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert len(labels) == _plot.MAX_ROWS
    assert labels[-1] == "input[49]"  # std 1e4: the worst, on top
    assert "input[20]" not in labels  # std ~ 1: well scaled, left out


def test_activations_mark_the_saturation_bands(report):
    fig = report.plot("activations")
    ax = fig.axes[0]
    assert ax.get_xscale() == "asinh"
    assert ax.get_xlabel().startswith("pre-activation z")
    tanh, softmax = report.layers
    assert tanh.function == "tanh" and tanh.input_layer and softmax.family == "softmax"
    left, right = ax.get_xlim()
    assert right == pytest.approx(math.sinh(16.0)) and left == pytest.approx(-right)
    # exact zero-derivative bands beyond +-9.0108 (float32 tanh), near bands inside them
    assert tanh.exact_hi == pytest.approx(9.0108, abs=1e-4)
    assert xspan(by_gid(ax, f"exact-hi:{tanh.site}")) == pytest.approx((tanh.exact_hi, right))
    assert xspan(by_gid(ax, f"exact-lo:{tanh.site}")) == pytest.approx((left, tanh.exact_lo))
    assert xspan(by_gid(ax, f"near-hi:{tanh.site}")) == pytest.approx((tanh.near_hi, tanh.exact_hi))
    assert xspan(by_gid(ax, f"near-lo:{tanh.site}")) == pytest.approx((tanh.exact_lo, tanh.near_lo))
    assert not [p for p in ax.patches if (p.get_gid() or "").endswith(softmax.site)]
    labels = legend_labels(ax)
    assert _plot.EXACT_BAND in labels and _plot.NEAR_BAND in labels
    ticks = [t.get_text() for t in ax.get_yticklabels()]
    assert ticks[0] == f"{tanh.site} (input layer)\ntanh, float32"
    assert ticks[1].startswith(softmax.site)
    # one histogram per site, drawn over the report's bins mapped back from asinh(z)
    steps = [p for p in ax.patches if isinstance(p, StepPatch)]
    assert len(steps) == 2
    edges = steps[0].get_data().edges
    assert edges == pytest.approx([math.sinh(e) for e in tanh.histogram.edges()])
    assert "zero-grad 99.8%" in [t.get_text() for t in ax.texts]


def test_gradients(report):
    ax = report.plot("gradients").axes[0]
    assert ax.get_xscale() == "log"
    assert ax.get_title() == "Gradient norm per parameter"
    names = [t.get_text() for t in ax.get_yticklabels()]
    grads = sorted(report.gradients, key=lambda g: not g.input_layer)
    assert names == [g.name for g in reversed(grads)]
    bars = [p for p in ax.patches if isinstance(p, Rectangle)]
    assert len(bars) == 4
    tops = sorted(b.get_x() + b.get_width() for b in bars)
    assert tops == pytest.approx(sorted(g.grad_norm for g in report.gradients))
    input_bars = [b for b in bars if b.get_facecolor()[:3] == matplotlib.colors.to_rgb("#c62828")]
    assert len(input_bars) == 2  # x_to_hidden.weight and .bias
    assert legend_labels(ax) == ["input layer", "other layers", "weight norm"]


def test_trial_curves_and_baseline(report):
    ax = report.plot("trial").axes[0]
    trial = report.trial
    assert trial is not None and trial.steps == 40
    for arm in trial.arms:
        line = by_gid(ax, f"arm:{arm.name}")
        assert list(line.get_ydata()) == pytest.approx(list(arm.losses))
        assert list(line.get_xdata()) == list(range(1, 41))
    baseline = by_gid(ax, "baseline")
    assert list(baseline.get_ydata()) == pytest.approx([trial.baseline] * 2)
    assert ax.get_ylabel() == "loss (mse)" and ax.get_yscale() == "log"
    assert ax.get_xlabel().startswith("optimizer step")
    labels = legend_labels(ax)
    assert labels[:2] == ["raw inputs (lr 0.01)", "standardized inputs (lr 0.01)"]
    assert labels[2].startswith("constant predictor (0.05")


def test_summary_has_all_four(report):
    fig = report.plot()  # the default kind
    assert len(fig.axes) == 4
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0].startswith("Input features")
    assert titles[1].startswith("Pre-activations")
    assert titles[2].startswith("Gradient norm")
    assert titles[3].startswith("Training trial")
    assert fig.get_suptitle().startswith("scalecheck: STALLING")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=40)
    assert buffer.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"


def test_draws_into_a_given_axes(report):
    fig = Figure()
    ax = fig.add_subplot()
    assert report.plot("gradients", ax=ax) is fig
    assert ax.get_xscale() == "log" and len(fig.axes) == 1


def test_without_a_trial_the_panel_says_why():
    report = standardized_report()
    assert report.trial is None
    ax = report.plot("trial").axes[0]
    assert ax.texts and ax.texts[0].get_text().startswith("No training trial in this report")
    fig = report.plot("summary")
    assert fig.get_suptitle() == "scalecheck: OK: the inputs are well scaled"


def test_saved_reports_plot_the_same(report):
    again = Report.from_json(report.to_json())
    for kind in ("inputs", "activations", "gradients", "trial"):
        a, b = report.plot(kind).axes[0], again.plot(kind).axes[0]
        assert a.get_title() == b.get_title()
        assert [p.get_gid() for p in a.patches] == [p.get_gid() for p in b.patches]


def test_user_strings_are_plotted_as_text():
    ax = scripted_report().plot("activations").axes[0]
    first = ax.get_yticklabels()[0]
    assert first.get_text().startswith(SCRIPT)


def test_invalid_arguments(report):
    with pytest.raises(scalecheck.InvalidArgumentError, match="Did you mean 'inputs'"):
        report.plot("input")
    with pytest.raises(scalecheck.InvalidArgumentError, match="ax must be None for kind='summary'"):
        report.plot("summary", ax=Figure().add_subplot())
    with pytest.raises(scalecheck.InvalidArgumentError, match="ax must be a matplotlib Axes"):
        report.plot("inputs", ax="not an axes")


def test_missing_matplotlib_says_how_to_install(report, monkeypatch):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)
    hint = r'pip install "scalecheck\[plot\]"'
    with pytest.raises(scalecheck.MissingDependencyError, match=hint):
        report.plot("inputs")
    with pytest.raises(ImportError):  # it is an ImportError too
        report.plot("summary")
    # the check comes after the argument check, which needs no matplotlib
    with pytest.raises(scalecheck.InvalidArgumentError):
        report.plot("nope")
    # and every other rendering works without it
    assert 'data-verdict="stalling"' in report._repr_html_()
    assert report._repr_markdown_().startswith("### scalecheck: **STALLING**")
    assert str(report).startswith("scalecheck: STALLING")


def test_matplotlib_is_imported_lazily():
    """No rendering module imports matplotlib (or IPython) at module level: the plots import
    it inside ``plot()``, the other renderings never."""
    folder = Path(_plot.__file__).parent
    for path in sorted(folder.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        names = {a.name for n in top if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module for n in top if isinstance(n, ast.ImportFrom) and n.module}
        assert not {m for m in names if m.split(".")[0] in ("matplotlib", "IPython")}, path
    assert len(list(folder.glob("*.py"))) >= 7
