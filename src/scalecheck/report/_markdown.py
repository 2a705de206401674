"""The Markdown report (``Report._repr_markdown_``): for front ends that show Markdown but
not HTML, and for pasting into an issue or a pull request.

The same order as the HTML report (verdict, fix, findings by severity with their evidence
and fix, then the tables), in CommonMark with GitHub tables. Strings from the report are
escaped: punctuation with backslashes and ``&<>`` as entities (so ``<script>`` or ``*`` stay
literal characters), names in code spans whose fence is longer than any backtick run inside.

Example:
    >>> print(md_text("<script>*x*</script> & a|b"))
    &lt;script&gt;\\*x\\*&lt;/script&gt; &amp; a\\|b
    >>> print(md_code("a`b"), md_code("a|b", table=True))
    ``a`b`` `a\\|b`
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from .._format import num, plural
from ..findings import Finding
from ._common import (
    ACTIVATION_COLUMNS,
    FEATURE_COLUMNS,
    GRADIENT_COLUMNS,
    SEVERITY_TITLES,
    activation_row,
    evidence_rows,
    feature_row,
    findings_by_severity,
    gradient_row,
    gradient_shares,
    headline,
    main_fix,
    measured_line,
    ranked_features,
    severity_counts,
    threshold_text,
)

if TYPE_CHECKING:
    from ._report import Report

__all__ = ["md_code", "md_text", "render_markdown"]

#: Rows per table in Markdown (it cannot fold a long table away like the HTML report).
MAX_ROWS = 20

_SPECIAL = re.compile(r"([\\`*_\[\]|#~!{}])")
_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_TICKS = re.compile(r"`+")


def md_text(text: object) -> str:
    """Markdown-escape plain text (one line): punctuation with a meaning in Markdown gets a
    backslash, ``&``, ``<`` and ``>`` become entities (raw HTML is never formed, in any
    Markdown dialect)."""
    escaped = _SPECIAL.sub(r"\\\1", " ".join(str(text).split()))
    return "".join(_ENTITIES.get(c, c) for c in escaped)


def md_code(text: object, *, table: bool = False) -> str:
    """*text* as an inline code span (``|`` escaped too inside a table cell)."""
    s = " ".join(str(text).split())
    longest = max((len(m) for m in _TICKS.findall(s)), default=0)
    fence = "`" * (longest + 1)
    if s.startswith("`") or s.endswith("`"):
        s = f" {s} "
    if table:
        s = s.replace("|", "\\|")
    return f"{fence}{s}{fence}"


def _block(code: str, lang: str = "python") -> list[str]:
    longest = max((len(m) for m in _TICKS.findall(code)), default=0)
    fence = "`" * max(3, longest + 1)
    return [f"{fence}{lang}", *code.splitlines(), fence]


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], code_first: bool) -> list[str]:
    lines = ["| " + " | ".join(md_text(h) for h in header) + " |"]
    lines.append("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        cells = [
            md_code(c, table=True) if i == 0 and code_first else md_text(c)
            for i, c in enumerate(row)
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def render_markdown(report: Report) -> str:
    """The report as Markdown."""
    label, _, rest = headline(report).partition(": ")
    out = [f"### scalecheck: **{md_text(label)}**: {md_text(rest)}", "", md_text(report.summary)]
    fix = main_fix(report)
    if fix is not None:
        out += ["", "**The fix:**", "", *_block(fix.code)]
        if fix.applicability:
            out += ["", f"*{md_text(fix.applicability)}*"]
    out += ["", *_findings(report)]
    out += _evidence(report)
    out += ["", f"*{md_text(measured_line(report))}*"]
    out += [f"- note: {md_text(n)}" for n in report.measurements.notes]
    return "\n".join(out) + "\n"


def _findings(report: Report) -> list[str]:
    if not report.findings:
        return ["#### Findings", "", "No findings."]
    main = main_fix(report)
    out = [f"#### Findings ({md_text(severity_counts(report.findings))})"]
    for severity, members in findings_by_severity(report.findings):
        out += ["", f"**{SEVERITY_TITLES[severity]}**", ""]
        for f in members:
            out += _finding(f, main.code if main else "")
    return out


def _finding(f: Finding, main_code: str) -> list[str]:
    """One list item; its lines are joined with hard line breaks."""
    where = f" at {md_code(f.where)}" if f.where else ""
    head = [
        f"**{md_text(f.severity.value)}** {md_code(f.code)} {md_text(f.name)}{where}",
        md_text(f.message),
    ]
    code: list[str] = []
    if f.fix is not None and f.fix.summary:
        head.append(f"*Fix:* {md_text(f.fix.summary)}")
        if f.fix.code and f.fix.code != main_code:
            code = ["", *("  " + line for line in _block(f.fix.code)), ""]
    tail = []
    rows = evidence_rows(f.evidence)
    if rows:
        shown = "; ".join(f"{k} {v}" for k, v in rows[:12])
        more = f"; ... ({len(rows) - 12} more)" if len(rows) > 12 else ""
        tail.append(f"*Evidence:* {md_text(shown + more)}")
    limits = threshold_text(f.evidence)
    if limits:
        tail.append(f"*Thresholds:* {md_text(limits)}")
    tail.append(f"*Silence:* {md_code(f.silence)}")
    if code:
        return ["- " + "  \n  ".join(head), *code, "  " + "  \n  ".join(tail)]
    return ["- " + "  \n  ".join(head + tail)]


def _more(shown: int, total: int, where: str) -> list[str]:
    return [f"*... and {total - shown} more ({md_code(where)}).*"] if total > shown else []


def _evidence(report: Report) -> list[str]:
    m = report.measurements
    out: list[str] = []
    for inp in m.inputs:
        if inp.kind != "feature":
            out += [
                "",
                f"Input {md_code(inp.name)}: {md_text(inp.kind)}, not measured as features.",
            ]
            continue
        head = f"#### Input {md_code(inp.name)}: {md_text(plural(len(inp.features), 'feature'))}"
        if inp.kappa is not None:
            head += f", condition number {md_text(num(inp.kappa))}"
        ranked = ranked_features(inp.features)
        shares = gradient_shares(m.gradients, inp)
        rows = [feature_row(f, shares) for f in ranked[:MAX_ROWS]]
        out += ["", head, "", *_table(FEATURE_COLUMNS, rows, True)]
        out += _more(min(len(ranked), MAX_ROWS), len(ranked), "report.inputs")
    if m.layers:
        out += ["", "#### Nonlinearities (pre-activations)", ""]
        out += _table(ACTIVATION_COLUMNS, map(activation_row, m.layers[:MAX_ROWS]), True)
        out += _more(min(len(m.layers), MAX_ROWS), len(m.layers), "report.layers")
    grads = sorted(m.gradients, key=lambda g: not g.input_layer)
    if grads:
        out += ["", "#### Gradients", ""]
        out += _table(GRADIENT_COLUMNS, map(gradient_row, grads[:MAX_ROWS]), True)
        out += _more(min(len(grads), MAX_ROWS), len(grads), "report.gradients")
    if m.loss is not None:
        text = f"Loss {num(m.loss.value)} ({m.loss.description})"
        if m.loss.baseline is not None:
            text += f"; constant predictor {num(m.loss.baseline)}"
        out += ["", "#### Loss", "", md_text(text + ".")]
    trial = report.trial
    if trial is not None:
        steps = plural(trial.steps, "step")
        out += ["", f"#### Training trial ({steps}, {md_text(trial.optimizer)})", ""]
        rows = [
            [a.name, num(a.lr), num(a.initial), num(a.final), str(len(a.losses))]
            for a in trial.arms
        ]
        out += _table(("arm", "lr", "initial", "final", "steps"), rows, True)
    return out
