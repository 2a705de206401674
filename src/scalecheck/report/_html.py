"""The HTML report (``Report._repr_html_``, ``scalecheck check --format html``).

Static HTML: one ``<div class="scalecheck-report">`` with its own ``<style>`` whose rules
all start with that class (so nothing leaks into the page around it), no JavaScript, and
every string that comes from the report (layer and feature names, messages, fix code)
escaped. It reads in JupyterLab, classic Notebook, VS Code and a plain browser, in light
and dark themes (colours are translucent over the inherited background).

Layout: the verdict first, then the fix to apply, then the findings grouped by severity
(each with its message, fix, evidence and how to silence it), then collapsible
``<details>`` sections with the per-feature, per-layer and per-parameter tables, the loss
and the training trial.

Example:
    >>> import scalecheck
    >>> from scalecheck.reference import interpolation as ref
    >>> report = scalecheck.diagnose(ref.make_model(seed=0), ref.make_loader(), trial=False)
    >>> html = render_html(report)
    >>> html.startswith('<div class="scalecheck-report"'), "<script" in html
    (True, False)
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from .._format import num, plural
from ..findings import Finding
from ._common import (
    ACTIVATION_COLUMNS,
    FEATURE_COLUMNS,
    GRADIENT_COLUMNS,
    MAX_TABLE_ROWS,
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
    from ..measurements import GradientStats, InputStats, TrialResult
    from ._report import Report

__all__ = ["render_html"]

_ROOT = "scalecheck-report"

# Every selector starts with the root class: the styles apply inside the report only.
_CSS = """
.scalecheck-report { font-family: var(--jp-content-font-family, system-ui, sans-serif);
  font-size: 13px; line-height: 1.45; max-width: 100ch; color: inherit; }
.scalecheck-report code, .scalecheck-report pre {
  font-family: var(--jp-code-font-family, ui-monospace, SFMono-Regular, Menlo, monospace);
  font-size: 12px; }
.scalecheck-report pre { background: rgba(127, 127, 127, 0.12); padding: 6px 8px;
  border-radius: 4px; margin: 4px 0; white-space: pre-wrap; overflow-x: auto; }
.scalecheck-report .sc-verdict { border-left: 6px solid; border-radius: 4px;
  padding: 8px 12px; margin: 0 0 10px 0; }
.scalecheck-report .sc-verdict-stalling { border-color: #c62828;
  background: rgba(198, 40, 40, 0.10); }
.scalecheck-report .sc-verdict-at_risk { border-color: #b26a00;
  background: rgba(230, 140, 0, 0.12); }
.scalecheck-report .sc-verdict-ok { border-color: #2e7d32;
  background: rgba(46, 125, 50, 0.10); }
.scalecheck-report .sc-headline { font-size: 15px; font-weight: 600; }
.scalecheck-report .sc-badge { display: inline-block; padding: 0 6px; border-radius: 3px;
  font-weight: 700; letter-spacing: 0.03em; color: #fff; margin-right: 6px; }
.scalecheck-report .sc-verdict-stalling .sc-badge { background: #c62828; }
.scalecheck-report .sc-verdict-at_risk .sc-badge { background: #b26a00; }
.scalecheck-report .sc-verdict-ok .sc-badge { background: #2e7d32; }
.scalecheck-report .sc-summary { margin: 4px 0 0 0; }
.scalecheck-report h3, .scalecheck-report h4 { margin: 12px 0 4px 0; }
.scalecheck-report .sc-finding { border-left: 4px solid rgba(127, 127, 127, 0.5);
  padding: 4px 10px; margin: 6px 0; }
.scalecheck-report .sc-finding.sc-error { border-left-color: #c62828; }
.scalecheck-report .sc-finding.sc-warning { border-left-color: #b26a00; }
.scalecheck-report .sc-finding.sc-info { border-left-color: #1565c0; }
.scalecheck-report .sc-sev { font-weight: 700; text-transform: uppercase; font-size: 11px; }
.scalecheck-report .sc-error .sc-sev { color: #c62828; }
.scalecheck-report .sc-warning .sc-sev { color: #b26a00; }
.scalecheck-report .sc-info .sc-sev { color: #1565c0; }
.scalecheck-report .sc-finding p { margin: 3px 0; }
.scalecheck-report .sc-note, .scalecheck-report .sc-meta,
.scalecheck-report .sc-silence { opacity: 0.75; font-size: 12px; }
.scalecheck-report details { margin: 4px 0; }
.scalecheck-report details > summary { cursor: pointer; }
.scalecheck-report details.sc-section { border-top: 1px solid rgba(127, 127, 127, 0.3);
  padding-top: 4px; }
.scalecheck-report details.sc-section > summary { font-weight: 600; }
.scalecheck-report table.sc-table { border-collapse: collapse; margin: 4px 0;
  font-size: 12px; }
.scalecheck-report table.sc-table th, .scalecheck-report table.sc-table td {
  padding: 2px 8px; border-bottom: 1px solid rgba(127, 127, 127, 0.25); text-align: left;
  vertical-align: top; }
.scalecheck-report table.sc-table td.sc-num { text-align: right;
  font-variant-numeric: tabular-nums; }
.scalecheck-report table.sc-table th { font-weight: 600; }
"""

_NUMERIC = {
    "mean",
    "std",
    "min",
    "max",
    "kappa",
    "zeros",
    "non-finite",
    "grad share",
    "units",
    "zero-grad",
    "near-sat",
    "dead",
    "grad norm",
    "weight norm",
    "ratio",
    "exact zeros",
    "initial",
    "final",
    "lr",
}


def _e(text: object) -> str:
    """Escape any text for HTML content and attribute values."""
    return html.escape(str(text), quote=True)


def render_html(report: Report, *, standalone: bool = False) -> str:
    """The report as HTML.

    Args:
        report: the report to render.
        standalone: a complete ``<!DOCTYPE html>`` document (for a file) instead of the
            fragment a notebook embeds.
    """
    verdict = report.verdict
    parts = [
        f'<div class="{_ROOT}" data-verdict="{_e(verdict.value)}">',
        f"<style>{_CSS}</style>",
        _verdict(report),
        _fix(report),
        _findings(report),
        _inputs(report.measurements.inputs, report.measurements.gradients),
        _layers(report),
        _gradients(report),
        _loss_and_trial(report),
        _meta(report),
        "</div>",
    ]
    body = "\n".join(p for p in parts if p)
    if not standalone:
        return body
    title = f"scalecheck report: {verdict.value}"
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(title)}</title>\n</head>\n<body>\n{body}\n</body>\n</html>"
    )


def _verdict(report: Report) -> str:
    label, _, rest = headline(report).partition(": ")
    return (
        f'<div class="sc-verdict sc-verdict-{_e(report.verdict.value)}" role="status">'
        f'<div class="sc-headline"><span class="sc-badge">{_e(label)}</span>{_e(rest)}</div>'
        f'<p class="sc-summary">{_e(report.summary)}</p></div>'
    )


def _code(text: str) -> str:
    return f"<pre><code>{_e(text)}</code></pre>"


def _fix(report: Report) -> str:
    fix = main_fix(report)
    if fix is None:
        return ""
    out = ['<div class="sc-mainfix"><h4>The fix</h4>', _code(fix.code)]
    if fix.applicability:
        out.append(f'<p class="sc-note">{_e(fix.applicability)}</p>')
    out.append("</div>")
    return "".join(out)


def _findings(report: Report) -> str:
    if not report.findings:
        return '<h3>Findings</h3><p class="sc-none">No findings.</p>'
    shown_fix = main_fix(report)
    out = [f"<h3>Findings ({_e(severity_counts(report.findings))})</h3>"]
    for severity, members in findings_by_severity(report.findings):
        out.append(f'<section class="sc-group sc-{severity.value}">')
        out.append(f"<h4>{SEVERITY_TITLES[severity]} ({len(members)})</h4>")
        out.extend(_finding(f, shown_fix.code if shown_fix else "") for f in members)
        out.append("</section>")
    out.append(
        '<p class="sc-silence">To silence a rule: <code>diagnose(..., '
        f'ignore=["{_e(report.findings[0].code)}"])'
        "</code> (codes, prefixes such as <code>SC2</code>, or names).</p>"
    )
    return "\n".join(out)


def _finding(f: Finding, main_code: str) -> str:
    sev = _e(f.severity.value)
    where = f' <span class="sc-where">at <code>{_e(f.where)}</code></span>' if f.where else ""
    out = [
        f'<div class="sc-finding sc-{sev}" data-code="{_e(f.code)}">',
        f'<div class="sc-fhead"><span class="sc-sev">{sev}</span> '
        f'<code class="sc-code">{_e(f.code)}</code> '
        f'<span class="sc-name">{_e(f.name)}</span>{where}</div>',
        f'<p class="sc-msg">{_e(f.message)}</p>',
    ]
    if f.fix is not None and (f.fix.summary or f.fix.code):
        out.append(f'<div class="sc-fix"><p><b>Fix:</b> {_e(f.fix.summary)}</p>')
        if f.fix.code and f.fix.code != main_code:
            out.append(_code(f.fix.code))
        if f.fix.applicability:
            out.append(f'<p class="sc-note">{_e(f.fix.applicability)}</p>')
        out.append("</div>")
    rows = evidence_rows(f.evidence)
    limits = threshold_text(f.evidence)
    if rows or limits:
        out.append("<details><summary>Evidence</summary>")
        if rows:
            out.append(_table(("measured", "value"), rows, numeric=set()))
        if limits:
            out.append(f'<p class="sc-note">Thresholds: {_e(limits)}</p>')
        out.append("</details>")
    out.append(f'<p class="sc-silence">Silence: <code>{_e(f.silence)}</code></p>')
    out.append("</div>")
    return "".join(out)


def _table(
    header: Sequence[str],
    rows: Iterable[Sequence[str]],
    *,
    numeric: set[str] | None = None,
) -> str:
    numeric = _NUMERIC if numeric is None else numeric
    cols = [h in numeric for h in header]
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="sc-num">{_e(c)}</td>' if is_num else f"<td>{_e(c)}</td>"
            for c, is_num in zip(row, cols, strict=True)
        )
        body.append(f"<tr>{cells}</tr>")
    return (
        f'<table class="sc-table"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def _more(shown: int, total: int, where: str) -> str:
    if total <= shown:
        return ""
    return f'<p class="sc-note">... and {total - shown} more ({_e(where)}).</p>'


def _inputs(inputs: tuple[InputStats, ...], gradients: tuple[GradientStats, ...]) -> str:
    if not inputs:
        return ""
    n_features = sum(len(i.features) for i in inputs if i.kind == "feature")
    out = [
        '<details class="sc-section"><summary>Inputs: '
        f"{_e(plural(len(inputs), 'input'))}, {_e(plural(n_features, 'feature'))}</summary>"
    ]
    for inp in inputs:
        if inp.kind != "feature":
            out.append(
                f"<p><code>{_e(inp.name)}</code>: {_e(inp.kind)} ({_e(inp.dtype)}, shape "
                f"{_e(list(inp.shape))}), not measured as features.</p>"
            )
            continue
        desc = [f"<code>{_e(inp.name)}</code>: {_e(plural(len(inp.features), 'feature'))}"]
        if inp.kappa is not None:
            desc.append(f"condition number {_e(num(inp.kappa))} raw")
            if inp.kappa_standardized is not None:
                desc.append(f"{_e(num(inp.kappa_standardized))} standardized")
        if inp.consumer:
            desc.append(
                f"first layer <code>{_e(inp.consumer)}</code> ({_e(inp.consumer_op or '?')})"
            )
        if inp.transformed_by:
            desc.append(f"rescaled in the model by {_e(', '.join(inp.transformed_by))}")
        out.append(f"<p>{', '.join(desc)}</p>")
        ranked = ranked_features(inp.features)
        shown = ranked[:MAX_TABLE_ROWS]
        shares = gradient_shares(gradients, inp)
        out.append(_table(FEATURE_COLUMNS, [feature_row(f, shares) for f in shown]))
        out.append(_more(len(shown), len(ranked), "report.inputs"))
        if inp.seen_by_layer:
            out.append(
                f"<p>As the first layer receives it (condition number "
                f"{_e(num(inp.seen_kappa))}):</p>"
            )
            seen = inp.seen_by_layer[:MAX_TABLE_ROWS]
            out.append(_table(FEATURE_COLUMNS, [feature_row(f, shares) for f in seen]))
            out.append(_more(len(seen), len(inp.seen_by_layer), "report.inputs"))
    out.append("</details>")
    return "\n".join(out)


def _layers(report: Report) -> str:
    layers = report.measurements.layers
    if not layers:
        return ""
    shown = layers[:MAX_TABLE_ROWS]
    return "\n".join(
        [
            '<details class="sc-section"><summary>Nonlinearities: '
            f"{_e(plural(len(layers), 'call site'))} (pre-activations)</summary>",
            _table(ACTIVATION_COLUMNS, [activation_row(a) for a in shown]),
            _more(len(shown), len(layers), "report.layers"),
            '<p class="sc-note">zero-grad: the derivative is exactly 0 in the dtype computed '
            "in; near-sat: below 1% of its maximum; for softmax, rows with one probability "
            "at 1.</p>",
            "</details>",
        ]
    )


def _gradients(report: Report) -> str:
    grads = sorted(report.measurements.gradients, key=lambda g: not g.input_layer)
    if not grads:
        return ""
    shown = grads[:MAX_TABLE_ROWS]
    return "\n".join(
        [
            '<details class="sc-section"><summary>Gradients: '
            f"{_e(plural(len(grads), 'parameter'))}</summary>",
            _table(GRADIENT_COLUMNS, [gradient_row(g) for g in shown]),
            _more(len(shown), len(grads), "report.gradients"),
            "</details>",
        ]
    )


def _loss_and_trial(report: Report) -> str:
    loss, trial = report.measurements.loss, report.trial
    if loss is None and trial is None:
        return ""
    title = "Loss and training trial" if trial is not None else "Loss"
    out = [f'<details class="sc-section" open><summary>{title}</summary>']
    if loss is not None:
        text = f"Loss {_e(num(loss.value))} ({_e(loss.description)})"
        if loss.baseline is not None:
            text += (
                f"; constant predictor {_e(num(loss.baseline))} "
                f"({_e(loss.baseline_description or '')})"
            )
        out.append(f"<p>{text}.</p>")
    if trial is not None:
        out.append(_trial(trial))
    out.append("</details>")
    return "\n".join(out)


def _trial(trial: TrialResult) -> str:
    rows = [
        [arm.name, num(arm.lr), num(arm.initial), num(arm.final), str(len(arm.losses))]
        for arm in trial.arms
    ]
    budget = " (time budget reached)" if trial.budget_exhausted else ""
    base = f", baseline {num(trial.baseline)}" if trial.baseline is not None else ""
    return (
        f"<p>Training trial: {_e(plural(trial.steps, 'step'))} of {_e(trial.optimizer)} per "
        "arm on the "
        f"measured batches, {_e(f'{trial.seconds:.2f}')} s{_e(budget)}{_e(base)}.</p>"
        + _table(("arm", "lr", "initial", "final", "steps"), rows, numeric=_NUMERIC | {"steps"})
    )


def _meta(report: Report) -> str:
    notes = "".join(f"<li>{_e(n)}</li>" for n in report.measurements.notes)
    return f'<p class="sc-meta">{_e(measured_line(report))}</p>' + (
        f'<ul class="sc-meta">{notes}</ul>' if notes else ""
    )
