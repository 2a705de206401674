"""The terminal report: verdict first, then the fix, then the findings, then the evidence.

Rendering only reads the report (or the dict it was saved as): it never measures.
"""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING

from .._format import num, pct, plural
from ..findings import Finding
from ._common import headline, main_fix, measured_line, ranked_features, severity_counts

if TYPE_CHECKING:
    from ._report import Report

__all__ = ["render_text"]

WIDTH = 92
MAX_ROWS = 12


def _wrap(text: str, indent: str = "", first: str | None = None) -> str:
    return textwrap.fill(
        text,
        WIDTH,
        initial_indent=first if first is not None else indent,
        subsequent_indent=indent,
        break_on_hyphens=False,
    )


def render_text(report: Report) -> str:
    """The full plain-text report."""
    out: list[str] = []
    out.append(f"scalecheck: {headline(report)}")
    out.append("=" * min(WIDTH, len(out[0])))
    out.append(_wrap(report.summary))
    fix = main_fix(report)
    if fix:
        out.append("")
        out.append("The fix:")
        out.extend("    " + line for line in fix.code.splitlines())
        if fix.applicability:
            out.append(_wrap(f"({fix.applicability})", "    "))
    out.append("")
    out.extend(_findings(report.findings))
    out.append("")
    out.extend(_evidence(report))
    m = report.measurements
    out.append("")
    out.append(_wrap(measured_line(report)))
    for note in m.notes:
        out.append(_wrap(f"note: {note}", "      ", "  "))
    return "\n".join(out)


def _findings(findings: tuple[Finding, ...]) -> list[str]:
    if not findings:
        return ["No findings."]
    lines = [f"Findings ({severity_counts(findings)}):"]
    for f in findings:
        lines.append(
            f"  {f.severity.value:<8}{f.code} {f.name}" + (f"  at {f.where}" if f.where else "")
        )
        lines.append(_wrap(f.message, " " * 10))
        if f.fix is not None and f.fix.summary:
            lines.append(_wrap(f"fix: {f.fix.summary}", " " * 15, " " * 10))
    lines.append(
        _wrap(
            f'To silence a rule: diagnose(..., ignore=["{findings[0].code}"]) (codes, prefixes '
            'such as "SC2", or names).',
            "  ",
            "  ",
        )
    )
    return lines


def _table(rows: list[list[str]], indent: str = "    ") -> list[str]:
    if not rows:
        return []
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [
        indent + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in rows
    ]


def _evidence(report: Report) -> list[str]:
    m = report.measurements
    lines = ["Evidence:"]
    for inp in m.inputs:
        if inp.kind != "feature":
            lines.append(
                f"  input '{inp.name}': {inp.kind} ({inp.dtype}, shape {list(inp.shape)}),"
                " not measured as features"
            )
            continue
        desc = f"  input '{inp.name}': {plural(len(inp.features), 'feature')}"
        if inp.kappa is not None:
            desc += f", condition number {num(inp.kappa)} raw"
            if inp.kappa_standardized is not None:
                desc += f", {num(inp.kappa_standardized)} standardized"
        if inp.consumer:
            desc += f"; first layer {inp.consumer} ({inp.consumer_op})"
        lines.append(_wrap(desc, "    ", ""))
        rows = [["feature", "mean", "std", "min", "max", "kappa"]]
        ranked = ranked_features(inp.features)
        for f in ranked[:MAX_ROWS]:
            rows.append([f.name, num(f.mean), num(f.std), num(f.min), num(f.max), num(f.kappa)])
        lines.extend(_table(rows))
        if len(ranked) > MAX_ROWS:
            lines.append(f"    ... {len(ranked) - MAX_ROWS} more features (report.inputs)")
    if m.layers:
        lines.append("  nonlinearities (pre-activations):")
        rows = [["site", "dtype", "zero-grad", "near-sat", "dead", "range", ""]]
        for a in m.layers[:MAX_ROWS]:
            if a.family == "softmax":
                zero = pct(a.softmax_saturated_fraction)
                near = pct(a.softmax_near_fraction)
            else:
                zero, near = pct(a.exact_fraction), pct(a.near_fraction)
            dead = f"{a.dead_units}/{a.units}" if a.family == "rectifier" else ""
            rows.append(
                [
                    a.site,
                    a.dtype,
                    zero,
                    near,
                    dead,
                    f"[{num(a.min)}, {num(a.max)}]",
                    "<- input layer" if a.input_layer else "",
                ]
            )
        lines.extend(_table(rows))
        if len(m.layers) > MAX_ROWS:
            lines.append(f"    ... {len(m.layers) - MAX_ROWS} more sites (report.layers)")
    if m.gradients:
        lines.append("  gradients:")
        rows = [["parameter", "grad norm", "weight norm", "ratio", "exact zeros", ""]]
        grads = sorted(m.gradients, key=lambda g: not g.input_layer)
        for g in grads[:MAX_ROWS]:
            rows.append(
                [
                    g.name,
                    num(g.grad_norm),
                    num(g.weight_norm),
                    num(g.ratio),
                    "unused"
                    if not g.used
                    else (pct(g.zero_fraction) if g.zero_fraction is not None else ""),
                    "<- input layer" if g.input_layer else "",
                ]
            )
        lines.extend(_table(rows))
        if len(grads) > MAX_ROWS:
            lines.append(f"    ... {len(grads) - MAX_ROWS} more parameters (report.gradients)")
    if m.loss is not None:
        loss = m.loss
        text = f"  loss: {num(loss.value)} ({loss.description})"
        if loss.baseline is not None:
            text += f"; constant predictor: {num(loss.baseline)} ({loss.baseline_description})"
        lines.append(_wrap(text, "    ", ""))
    trial = report.trial
    if trial is not None:
        cut = "; stopped by the time budget: inconclusive" if not trial.conclusive else ""
        lines.append(
            _wrap(
                f"  trial ({plural(trial.steps, 'step')}, {trial.optimizer}, "
                f"{trial.seconds:.2f} s{cut}): " + trial.arms_text(),
                "    ",
                "",
            )
        )
    return lines
