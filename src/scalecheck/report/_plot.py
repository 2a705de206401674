"""Plots of a report (``report.plot(kind)``), drawn with matplotlib.

matplotlib is an optional dependency (``pip install "scalecheck[plot]"``), imported only
when a plot is asked for. Figures are built with :class:`matplotlib.figure.Figure`, not
pyplot: nothing is shown, nothing stays registered in pyplot's list of open figures, and
no backend is needed to save them (``fig.savefig("report.png")``).

Like every rendering, the plots read only the report (so a report loaded with
``Report.from_json`` plots the same):

- ``inputs``: each feature's range (line) and mean +- std (box) on a symmetric-log axis,
  with the unit band [-1, 1] where standardized features live;
- ``activations``: per nonlinearity call site, the distribution of its pre-activations
  (the report's histogram of ``asinh(z)``, drawn on an asinh axis so it reads in ``z``),
  with the bands where the derivative is exactly zero in the dtype computed in and where
  it is below 1% of its maximum;
- ``gradients``: each parameter's gradient norm on a log axis, the input layer's marked,
  with the weight norm for scale;
- ``trial``: the loss per optimizer step of each arm of the training trial, with the
  constant predictor's loss;
- ``summary``: the four in one figure, titled with the verdict.

Artists that carry meaning get a ``gid`` (``"unit-band"``, ``"exact-hi:<site>"``,
``"near-lo:<site>"``, ``"baseline"``, ...), so the figures can be checked by tests.

Example:
    >>> import scalecheck
    >>> from scalecheck.reference import interpolation as ref
    >>> report = scalecheck.diagnose(ref.make_model(), ref.make_loader(), trial=False)
    >>> fig = report.plot("activations")
    >>> fig.axes[0].get_xscale()
    'asinh'
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._format import num, pct, plural
from .._validation import check_choice, describe
from ..errors import InvalidArgumentError, MissingDependencyError
from ..findings import Verdict
from ._common import headline

if TYPE_CHECKING:
    from ..measurements import ActivationStats, FeatureStats
    from ._report import Report

__all__ = ["KINDS", "plot_report"]

KINDS = ("summary", "inputs", "activations", "gradients", "trial")

#: At most this many rows (features, call sites, parameters) per plot; the ones that
#: matter most are kept (highest condition number; input layer first).
MAX_ROWS = 30

INSTALL_HINT = 'pip install "scalecheck[plot]"'

_RED, _ORANGE, _GREEN, _BLUE, _GREY = "#c62828", "#ef6c00", "#2e7d32", "#1565c0", "#607d8b"
_ARM_COLORS = {"raw": _RED, "standardized": _GREEN, "log-standardized": _BLUE}
_VERDICT_COLORS = {Verdict.STALLING: _RED, Verdict.AT_RISK: _ORANGE, Verdict.OK: _GREEN}

_LEGEND_ABOVE: dict[str, Any] = {
    "loc": "lower center",
    "bbox_to_anchor": (0.5, 1.0),
    "ncols": 3,
    "fontsize": 8,
    "frameon": False,
}

#: Labels of the marked bands (the legend entries).
UNIT_BAND = "unit scale [-1, 1]"
EXACT_BAND = "derivative exactly 0"
NEAR_BAND = "derivative < 1% of its max"


def _matplotlib() -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise MissingDependencyError(
            f"report.plot() needs matplotlib, which is not installed: {INSTALL_HINT}"
        ) from exc
    return Figure


def plot_report(report: Report, kind: str, ax: Any) -> Any:
    """Draw *kind* for *report* (see :meth:`scalecheck.Report.plot`)."""
    check_choice("kind", kind, KINDS)
    if kind == "summary" and ax is not None:
        raise InvalidArgumentError(
            "ax must be None for kind='summary', which draws four panels in a new figure; "
            "pass kind='inputs', 'activations', 'gradients' or 'trial' to draw one into ax."
        )
    figure_cls = _matplotlib()
    if kind == "summary":
        return _summary(report, figure_cls)
    if ax is None:
        fig = figure_cls(figsize=(8.0, _height(report, kind)), layout="constrained")
        ax = fig.add_subplot()
    else:
        from matplotlib.axes import Axes

        if not isinstance(ax, Axes):
            raise InvalidArgumentError(
                f"ax must be a matplotlib Axes or None, got {describe(ax)}. Make one with "
                "fig.add_subplot() or plt.subplots()."
            )
    _DRAW[kind](report, ax)
    return ax.figure


def _rows(report: Report, kind: str) -> int:
    if kind == "inputs":
        return len(report.measurements.features)
    if kind == "activations":
        return len(report.layers)
    if kind == "gradients":
        return len(report.gradients)
    return 6


def _height(report: Report, kind: str) -> float:
    rows = min(_rows(report, kind), MAX_ROWS)
    per_row = 0.8 if kind == "activations" else 0.4
    return max(3.5, 1.8 + per_row * rows)


def _summary(report: Report, figure_cls: Any) -> Any:
    fig = figure_cls(figsize=(13.0, 8.5), layout="constrained")
    axes = fig.subplots(2, 2)
    _draw_inputs(report, axes[0][0])
    _draw_activations(report, axes[0][1])
    _draw_gradients(report, axes[1][0])
    _draw_trial(report, axes[1][1])
    fig.suptitle(
        f"scalecheck: {headline(report)}",
        color=_VERDICT_COLORS[report.verdict],
        fontweight="bold",
    )
    return fig


def _empty(ax: Any, title: str, message: str) -> None:
    ax.set_title(title)
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True, transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


# -- inputs --------------------------------------------------------------------------------
def _input_rows(report: Report) -> list[tuple[str, FeatureStats]]:
    """``(label, stats)`` per feature, worst-conditioned first. When the model rescales an
    input before its first layer, each feature shows twice: raw, and as that layer
    receives it (what the rules judge)."""
    groups: list[tuple[float, list[tuple[str, FeatureStats]]]] = []
    for inp in report.inputs:
        if inp.kind != "feature":
            continue
        seen = inp.seen_by_layer
        paired = len(seen) == len(inp.features)
        for i, f in enumerate(inp.features):
            judged = seen[i] if paired else f
            if not seen:
                group = [(f.name, f)]
            elif paired:
                group = [(f"{f.name} (raw)", f), (f"{f.name} at {inp.consumer}", judged)]
            else:
                group = [(f"{f.name} (raw)", f)]
            groups.append((judged.kappa or 0.0, group))
        if seen and not paired:  # the model reshaped the input: its own list
            groups += [(s.kappa or 0.0, [(f"{s.name} at {inp.consumer}", s)]) for s in seen]
    groups.sort(key=lambda g: -g[0])
    return [
        (label, f) for _, group in groups for label, f in group if _finite(f.min) and _finite(f.max)
    ]


def _draw_inputs(report: Report, ax: Any) -> None:
    from matplotlib.patches import Patch

    title = "Input features: range (line), mean ± std (box)"
    rows = _input_rows(report)
    if not rows:
        _empty(ax, title, "No feature inputs were measured.")
        return
    shown = rows[:MAX_ROWS]
    n = len(shown)
    for i, (_, f) in enumerate(shown):
        y = n - 1 - i  # the worst-conditioned feature on top
        ax.hlines(y, f.min, f.max, color=_GREY, linewidth=2)
        if _finite(f.mean) and _finite(f.std):
            ax.barh(
                y, 2 * f.std, left=f.mean - f.std, height=0.5, color=_BLUE, alpha=0.55, zorder=3
            )
            ax.plot([f.mean], [y], marker="|", markersize=14, color="black", zorder=4)
        ax.text(
            1.01,
            y,
            f"κ {num(f.kappa)}",
            transform=ax.get_yaxis_transform(),
            va="center",
            fontsize=8,
        )
    ax.set_xscale("symlog", linthresh=1.0)
    _plain_ticks(ax.xaxis)
    lowest = min(f.min for _, f in shown)
    highest = max(f.max for _, f in shown)
    lo = min(lowest * 3 if lowest < 0 else -3.0, -3.0)
    hi = max(highest * 3 if highest > 0 else 3.0, 3.0)
    ax.set_xlim(lo, hi)
    ax.axvspan(-1.0, 1.0, color=_GREEN, alpha=0.18, zorder=0, gid="unit-band")
    ax.set_yticks(range(n), [label for label, _ in reversed(shown)])
    ax.set_ylim(-0.7, n - 0.3)
    ax.set_xlabel("value (symmetric log scale, linear inside [-1, 1])")
    more = f" ({n} of {len(rows)}, highest κ first)" if len(rows) > n else ""
    ax.set_title(title + more, pad=20)
    ax.legend(
        handles=[
            Patch(color=_GREY, label="min to max"),
            Patch(color=_BLUE, alpha=0.55, label="mean ± std"),
            Patch(color=_GREEN, alpha=0.18, label=UNIT_BAND),
        ],
        **_LEGEND_ABOVE,
    )


# -- activations ---------------------------------------------------------------------------
def _edges_in_z(a: ActivationStats) -> list[float]:
    edges = a.histogram.edges()
    if a.histogram.transform == "asinh":
        return [math.sinh(e) for e in edges]
    return list(edges)


def _band(ax: Any, x0: float, x1: float, y: float, color: str, alpha: float, gid: str) -> None:
    from matplotlib.patches import Rectangle

    if x1 <= x0:
        return
    ax.add_patch(
        Rectangle((x0, y), x1 - x0, 0.9, color=color, alpha=alpha, zorder=0, gid=gid, lw=0)
    )


def _bands(ax: Any, a: ActivationStats, y: float, left: float, right: float) -> None:
    """The zero-derivative and near-saturated regions of one call site's function."""
    if a.family == "softmax":
        return
    exact_lo = a.exact_lo if _finite(a.exact_lo) else None
    exact_hi = a.exact_hi if _finite(a.exact_hi) else None
    near_lo = a.near_lo if _finite(a.near_lo) else None
    near_hi = a.near_hi if _finite(a.near_hi) else None
    if exact_hi is not None:
        _band(ax, exact_hi, right, y, _RED, 0.28, f"exact-hi:{a.site}")
    if exact_lo is not None:
        _band(ax, left, exact_lo, y, _RED, 0.28, f"exact-lo:{a.site}")
    if near_hi is not None:
        end = exact_hi if exact_hi is not None else right
        _band(ax, near_hi, end, y, _ORANGE, 0.16, f"near-hi:{a.site}")
    if near_lo is not None:
        start = exact_lo if exact_lo is not None else left
        _band(ax, start, near_lo, y, _ORANGE, 0.16, f"near-lo:{a.site}")


def _asinh_ticks(limit: float) -> list[float]:
    """0 and every second decade from 10 up to *limit*: readable on an asinh axis."""
    ticks = [0.0]
    k = 1
    while 10.0**k <= limit:
        ticks.append(10.0**k)
        k += 2
    return sorted([-t for t in ticks if t > 0] + ticks)


def _tick_label(t: float, _position: Any = None) -> str:
    """``0``, ``0.01``, ``100``, ``1e5``, ``−1e-6``: plain text, no mathtext to typeset."""
    if t == 0:
        return "0"
    exponent = math.log10(abs(t))
    sign = "−" if t < 0 else ""
    if exponent != round(exponent) or -2 <= exponent < 3:
        return f"{sign}{abs(t):g}"
    return f"{sign}1e{round(exponent)}"


def _plain_ticks(axis: Any) -> None:
    """Label a log or symlog axis at its decades with :func:`_tick_label`."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    axis.set_major_formatter(FuncFormatter(_tick_label))
    axis.set_minor_formatter(NullFormatter())


def _draw_activations(report: Report, ax: Any) -> None:
    from matplotlib.patches import Patch

    title = "Pre-activations per nonlinearity"
    layers = list(report.layers)
    if not layers:
        _empty(ax, title, "No nonlinearity was called in the measured forward passes.")
        return
    shown = sorted(layers, key=lambda a: not a.input_layer)[:MAX_ROWS]
    n = len(shown)
    span = max(abs(a.histogram.lo) for a in shown), max(abs(a.histogram.hi) for a in shown)
    left = -math.sinh(span[0]) if shown[0].histogram.transform == "asinh" else -span[0]
    right = math.sinh(span[1]) if shown[0].histogram.transform == "asinh" else span[1]
    ax.set_xscale("asinh", linear_width=1.0)
    labels = []
    for i, a in enumerate(shown):
        y = n - 1 - i
        _bands(ax, a, y, left, right)
        counts = a.histogram.counts
        peak = max(counts) if counts else 0
        if peak > 0:
            heights = [y + 0.85 * c / peak for c in counts]
            ax.stairs(heights, _edges_in_z(a), baseline=y, fill=True, color=_BLUE, alpha=0.75)
        if a.family == "softmax":
            stat = f"saturated rows {pct(a.softmax_saturated_fraction)}"
        else:
            stat = f"zero-grad {pct(a.exact_fraction)}"
        ax.text(1.01, y + 0.45, stat, transform=ax.get_yaxis_transform(), va="center", fontsize=8)
        marker = " (input layer)" if a.input_layer else ""
        labels.append(f"{a.site}{marker}\n{a.function}, {a.dtype}")
    ax.set_xlim(left, right)
    ticks = _asinh_ticks(right)
    ax.set_xticks(ticks, [_tick_label(t) for t in ticks])
    ax.set_ylim(-0.1, n)
    ax.set_yticks([n - 1 - i + 0.45 for i in range(n)], labels, fontsize=8)
    ax.axvline(0.0, color="black", linewidth=0.5, alpha=0.4)
    ax.set_xlabel("pre-activation z (asinh scale: linear near 0, logarithmic beyond)")
    more = f" ({n} of {len(layers)})" if len(layers) > n else ""
    ax.set_title(title + more, pad=20)
    ax.legend(
        handles=[
            Patch(color=_BLUE, alpha=0.75, label="share of values"),
            Patch(color=_RED, alpha=0.28, label=EXACT_BAND),
            Patch(color=_ORANGE, alpha=0.16, label=NEAR_BAND),
        ],
        **_LEGEND_ABOVE,
    )


# -- gradients -----------------------------------------------------------------------------
def _draw_gradients(report: Report, ax: Any) -> None:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    title = "Gradient norm per parameter"
    grads = list(report.gradients)
    if not grads:
        _empty(ax, title, "No trainable parameter received a gradient.")
        return
    shown = sorted(grads, key=lambda g: not g.input_layer)[:MAX_ROWS]
    n = len(shown)
    values = [g.grad_norm for g in shown if _finite(g.grad_norm) and g.grad_norm > 0]
    weights = [g.weight_norm for g in shown if _finite(g.weight_norm) and g.weight_norm > 0]
    positive = values + weights
    floor = min(positive) / 10 if positive else 1e-12
    top = max(positive) * 10 if positive else 1.0
    ax.set_xscale("log")
    _plain_ticks(ax.xaxis)
    ax.set_xlim(floor, top)
    for i, g in enumerate(shown):
        y = n - 1 - i
        color = _RED if g.input_layer else _GREY
        if not g.used:
            ax.text(floor, y, " unused", va="center", fontsize=8)
        elif _finite(g.grad_norm) and g.grad_norm > 0:
            ax.barh(y, g.grad_norm - floor, left=floor, height=0.6, color=color, alpha=0.8)
        else:
            ax.text(floor, y, " exactly 0", va="center", fontsize=8, color=color)
        if _finite(g.weight_norm) and g.weight_norm > 0:
            ax.plot([g.weight_norm], [y], marker="|", markersize=14, color="black")
    ax.set_yticks(range(n), [g.name for g in reversed(shown)], fontsize=8)
    ax.set_ylim(-0.7, n - 0.3)
    ax.set_xlabel("norm (log scale): gradient RMS over batches; weight norm for scale")
    more = f" ({n} of {len(grads)})" if len(grads) > n else ""
    ax.set_title(title + more, pad=20)
    ax.legend(
        handles=[
            Patch(color=_RED, alpha=0.8, label="input layer"),
            Patch(color=_GREY, alpha=0.8, label="other layers"),
            Line2D(
                [], [], marker="|", markersize=14, color="black", ls="none", label="weight norm"
            ),
        ],
        **_LEGEND_ABOVE,
    )


# -- trial ---------------------------------------------------------------------------------
def _draw_trial(report: Report, ax: Any) -> None:
    title = "Training trial: loss per step"
    trial = report.trial
    if trial is None or not trial.arms:
        _empty(
            ax,
            title,
            "No training trial in this report.\nIt runs when the inputs are badly scaled\n"
            "and diagnose() is called with trial=True (the default).",
        )
        return
    values: list[float] = []
    for arm in trial.arms:
        ys = [v if v is not None and math.isfinite(v) else math.nan for v in arm.losses]
        values += [v for v in ys if not math.isnan(v)]
        lr = f" (lr {num(arm.lr)})" if arm.lr is not None else ""
        ax.plot(
            range(1, len(ys) + 1),
            ys,
            label=f"{arm.name} inputs{lr}",
            color=_ARM_COLORS.get(arm.name, _GREY),
            linewidth=1.4,
            gid=f"arm:{arm.name}",
        )
    if trial.baseline is not None and math.isfinite(trial.baseline):
        values.append(trial.baseline)
        ax.axhline(
            trial.baseline,
            color="black",
            linestyle="--",
            linewidth=1,
            label=f"constant predictor ({num(trial.baseline)})",
            gid="baseline",
        )
    if values and min(values) > 0 and max(values) >= 10 * min(values):
        ax.set_yscale("log")  # a decade or more: each has its labelled tick
        _plain_ticks(ax.yaxis)
    ax.set_xlabel("optimizer step (on the measured batches)")
    ax.set_ylabel(f"loss ({trial.loss_kind})")
    budget = ", time budget reached" if trial.budget_exhausted else ""
    ax.set_title(f"{title} ({trial.optimizer}, {plural(trial.steps, 'step')}{budget})", pad=20)
    ax.legend(**_LEGEND_ABOVE)


_DRAW: dict[str, Callable[[Report, Any], None]] = {
    "inputs": _draw_inputs,
    "activations": _draw_activations,
    "gradients": _draw_gradients,
    "trial": _draw_trial,
}
