"""What the HTML and Markdown renderings share: grouping, evidence rows, table rows.

Everything here reads a :class:`~scalecheck.Report` and returns plain strings; escaping
for the target format is left to the caller.

Example:
    >>> evidence_rows({"kappa": 5.0e10, "features": [{"name": "x", "std": 0.5}],
    ...                "thresholds": {"kappa_warn": 1000.0}})
    [('kappa', '5.0e10'), ('features[0].name', 'x'), ('features[0].std', '0.5')]
    >>> threshold_text({"thresholds": {"kappa_warn": 1000.0, "kappa_error": 1e6}})
    'kappa_warn = 1000, kappa_error = 1.0e6'
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .._format import num, pct, plural
from ..findings import Finding, Fix, Severity, Verdict

if TYPE_CHECKING:
    from ..measurements import (
        ActivationStats,
        FeatureStats,
        GradientStats,
        InputStats,
    )
    from ._report import Report

__all__ = [
    "MAX_TABLE_ROWS",
    "SEVERITY_TITLES",
    "activation_row",
    "evidence_rows",
    "feature_row",
    "findings_by_severity",
    "gradient_row",
    "gradient_shares",
    "headline",
    "main_fix",
    "measured_line",
    "ranked_features",
    "severity_counts",
    "threshold_text",
]

#: Rows shown per table; the rest is summarised in a line that says where to find it.
MAX_TABLE_ROWS = 200
#: Longest sequence shown in full in the evidence.
_MAX_SEQUENCE = 8

SEVERITY_TITLES = {Severity.ERROR: "Errors", Severity.WARNING: "Warnings", Severity.INFO: "Info"}

FEATURE_COLUMNS = (
    "feature",
    "mean",
    "std",
    "min",
    "max",
    "kappa",
    "zeros",
    "non-finite",
    "grad share",
)
ACTIVATION_COLUMNS = (
    "site",
    "function",
    "dtype",
    "units",
    "zero-grad",
    "near-sat",
    "dead",
    "mean",
    "std",
    "range",
    "fed by",
)
GRADIENT_COLUMNS = (
    "parameter",
    "shape",
    "grad norm",
    "weight norm",
    "ratio",
    "exact zeros",
    "layer",
)


_HEADLINE = {
    Verdict.STALLING: "STALLING: badly scaled inputs are stopping this network from learning",
    Verdict.AT_RISK: "AT RISK: badly scaled inputs, but no stall measured",
    Verdict.OK: "OK: the inputs are well scaled",
}


def ranked_features(features: Sequence[FeatureStats]) -> list[FeatureStats]:
    """Features worst first, by what the rules judge (:attr:`FeatureStats.judged_kappa`):
    a constant column of zeros (``kappa`` infinite, harmless) comes last, not first."""
    return sorted(features, key=lambda f: -(f.judged_kappa or 0.0))


def headline(report: Report) -> str:
    """``STALLING: badly scaled inputs are stopping this network from learning``."""
    return _HEADLINE[report.verdict]


def main_fix(report: Report) -> Fix | None:
    """The fix of the first input-scale finding that carries code (the one to apply)."""
    for f in report.findings:
        if f.category == "input-scale" and f.fix is not None and f.fix.code:
            return f.fix
    return None


def severity_counts(findings: tuple[Finding, ...]) -> str:
    """``4 errors, 1 warning`` (empty when there are no findings)."""
    return ", ".join(
        plural(n, s.value, s.value + "s")
        for s in (Severity.ERROR, Severity.WARNING, Severity.INFO)
        if (n := sum(1 for f in findings if f.severity == s))
    )


def findings_by_severity(findings: tuple[Finding, ...]) -> list[tuple[Severity, list[Finding]]]:
    """Findings grouped most severe first, each group in report order."""
    groups = []
    for sev in (Severity.ERROR, Severity.WARNING, Severity.INFO):
        members = [f for f in findings if f.severity == sev]
        if members:
            groups.append((sev, members))
    return groups


def _value(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, (int, float)):
        return num(value)
    return str(value)


def _flatten(prefix: str, value: Any) -> Iterator[tuple[str, str]]:
    if isinstance(value, Mapping):
        for key, sub in value.items():
            yield from _flatten(f"{prefix}.{key}" if prefix else str(key), sub)
    elif isinstance(value, (list, tuple)):
        if any(isinstance(v, (Mapping, list, tuple)) for v in value):
            for i, sub in enumerate(value[:_MAX_SEQUENCE]):
                yield from _flatten(f"{prefix}[{i}]", sub)
            if len(value) > _MAX_SEQUENCE:
                yield f"{prefix}[...]", f"{len(value) - _MAX_SEQUENCE} more"
        else:
            shown = ", ".join(_value(v) for v in value[:_MAX_SEQUENCE])
            more = f", ... ({len(value)} values)" if len(value) > _MAX_SEQUENCE else ""
            yield prefix, f"[{shown}{more}]"
    else:
        yield prefix, _value(value)


def evidence_rows(evidence: Mapping[str, Any]) -> list[tuple[str, str]]:
    """A finding's evidence as ``(key, value)`` rows (nested keys dotted, numbers formatted,
    the thresholds left out: see :func:`threshold_text`)."""
    rows: list[tuple[str, str]] = []
    for key, value in evidence.items():
        if key != "thresholds":
            rows.extend(_flatten(str(key), value))
    return rows


def threshold_text(evidence: Mapping[str, Any]) -> str:
    """The thresholds a finding was judged by: ``kappa_warn = 1.0e3, ...`` (or empty)."""
    thresholds = evidence.get("thresholds")
    if not isinstance(thresholds, Mapping):
        return ""
    return ", ".join(f"{k} = {_value(v)}" for k, v in thresholds.items())


def feature_row(f: FeatureStats, shares: Mapping[int, float] | None = None) -> list[str]:
    """One row of the per-feature table (see ``FEATURE_COLUMNS``); *shares* maps feature
    indices to their share of the input layer's gradient (see :func:`gradient_shares`)."""
    share = shares.get(f.index) if shares else None
    return [
        f.name,
        num(f.mean),
        num(f.std),
        num(f.min),
        num(f.max),
        num(f.kappa),
        pct(f.zero_fraction),
        str(f.nonfinite),
        pct(share) if share is not None else "",
    ]


def gradient_shares(gradients: Sequence[GradientStats], inp: InputStats) -> dict[int, float]:
    """Each feature of *inp*'s share of the squared gradient of the layer it feeds, by
    feature index (empty when that was not measured: several feature inputs, or a first
    layer whose weight does not have one column per feature).

    A feature with almost no share barely moves the first layer's weights: with a badly
    scaled neighbour, the large feature takes nearly all of it.
    """
    for g in gradients:
        if (
            g.input_layer
            and g.feature_share
            and len(g.feature_share) == len(inp.features)
            and (inp.consumer is None or g.module == inp.consumer)
        ):
            return dict(enumerate(g.feature_share))
    return {}


def activation_row(a: ActivationStats) -> list[str]:
    """One row of the per-layer table (see ``ACTIVATION_COLUMNS``)."""
    if a.family == "softmax":
        zero, near = pct(a.softmax_saturated_fraction), pct(a.softmax_near_fraction)
    else:
        zero, near = pct(a.exact_fraction), pct(a.near_fraction)
    fed = a.fed_by or ""
    if a.input_layer:
        fed = f"{fed} (input layer)" if fed else "input layer"
    return [
        a.site,
        a.function,
        a.dtype,
        str(a.units),
        zero,
        near,
        f"{a.dead_units}/{a.units}" if a.family == "rectifier" else "",
        num(a.mean),
        num(a.std),
        f"[{num(a.min)}, {num(a.max)}]",
        fed,
    ]


def gradient_row(g: GradientStats) -> list[str]:
    """One row of the per-parameter table (see ``GRADIENT_COLUMNS``)."""
    return [
        g.name,
        "x".join(str(d) for d in g.shape) or "scalar",
        num(g.grad_norm),
        num(g.weight_norm),
        num(g.ratio),
        ("unused" if not g.used else pct(g.zero_fraction) if g.zero_fraction is not None else ""),
        "input layer" if g.input_layer else "",
    ]


def measured_line(report: Report) -> str:
    """``Measured 16 batches (64 samples) on cpu (float32), train mode, in 0.52 s. ...``"""
    m = report.measurements
    seconds = report.meta.get("seconds")
    return (
        f"Measured {plural(m.batches, 'batch', 'batches')} ({plural(m.samples, 'sample')}) "
        f"on {m.device} ({m.dtype}), {'train' if m.training else 'eval'} mode"
        + (f", in {seconds:.2f} s" if isinstance(seconds, (int, float)) else "")
        + f". scalecheck {report.meta.get('scalecheck', '?')}, "
        f"torch {report.meta.get('torch', '?')}."
    )
