"""The notebook renderings: ``_repr_html_`` (parsed as HTML), ``_repr_markdown_``, ``__repr__``."""

from __future__ import annotations

import dataclasses
import re
from html.parser import HTMLParser

import markdown
import pytest
import torch

import scalecheck
from _reports import (
    SCRIPT,
    _one_thread,  # noqa: F401 (an autouse fixture)
    reference_report,
    scripted_report,
    standardized_report,
)
from scalecheck import Report, Severity
from scalecheck.report import _common, _markdown

VOID = {"meta", "br", "hr", "img", "input", "link", "col", "wbr"}


class Parsed(HTMLParser):
    """Elements (tag, attributes, classes of the open ancestors) and text, checking that the
    document is well nested."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.texts: list[tuple[str, tuple[str, ...]]] = []
        self.stack: list[tuple[str, dict[str, str | None]]] = []
        self.feed(text)
        self.close()
        assert not self.stack, f"unclosed elements: {[t for t, _ in self.stack]}"

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))
        if tag not in VOID:
            self.stack.append((tag, dict(attrs)))

    def handle_startendtag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1][0] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()

    def handle_data(self, data):
        classes = tuple(
            c for _, attrs in self.stack for c in (attrs.get("class") or "").split()
        ) + tuple(tag for tag, _ in self.stack)
        self.texts.append((data, classes))

    def text(self, within: str | None = None) -> str:
        """All text, or the text inside elements with class (or tag) *within*."""
        return "".join(t for t, classes in self.texts if within is None or within in classes)

    def with_class(self, cls: str) -> list[dict[str, str | None]]:
        return [a for _, a in self.elements if cls in (a.get("class") or "").split()]

    def first_index(self, cls: str) -> int:
        return next(
            i for i, (_, a) in enumerate(self.elements) if cls in (a.get("class") or "").split()
        )


@pytest.fixture(scope="module")
def report() -> Report:
    return reference_report()


@pytest.fixture(scope="module")
def page(report) -> Parsed:
    return Parsed(report._repr_html_())


def test_verdict_comes_first(report, page):
    assert report.verdict is scalecheck.Verdict.STALLING
    assert page.elements[0][0] == "div" and page.elements[0][1]["class"] == "scalecheck-report"
    assert page.elements[0][1]["data-verdict"] == "stalling"
    verdict = page.first_index("sc-verdict")
    assert verdict < page.first_index("sc-mainfix") < page.first_index("sc-finding")
    assert page.first_index("sc-finding") < page.first_index("sc-section")
    assert page.text("sc-badge") == "STALLING"
    assert "stopping this network from learning" in page.text("sc-headline")
    assert page.text("sc-summary") == report.summary
    assert "sc-verdict-stalling" in page.with_class("sc-verdict")[0]["class"]


def test_the_fix_is_shown_with_its_fitted_numbers(report, page):
    fix = report.findings[0].fix
    assert fix is not None and "report.standardizer()" in fix.code
    assert fix.code in page.text("sc-mainfix")
    mean = report.inputs[0].features[0].mean
    assert f"{mean:.1f}" in page.text("sc-mainfix")


def test_every_finding_is_rendered_by_severity_with_evidence_and_fix(report, page):
    rendered = [a["data-code"] for a in page.with_class("sc-finding")]
    assert rendered == report.codes() and set(rendered) >= {"SC101", "SC201", "SC301", "SC410"}
    assert [t for t, classes in page.texts if "sc-code" in classes] == report.codes()
    severities = [
        next(s for s in Severity if f"sc-{s.value}" in a["class"].split())
        for a in page.with_class("sc-finding")
    ]
    assert severities == sorted(severities, reverse=True)
    titles = [t for t, classes in page.texts if "h4" in classes and "sc-group" in classes]
    assert titles == ["Errors (4)", "Warnings (1)"]
    text = page.text()
    for f in report.findings:
        assert f.message in page.text("sc-msg")
        assert f.silence in page.text("sc-silence")
        assert f.fix is not None and f.fix.summary in page.text("sc-fix")
    # the evidence of SC101: the measured numbers and the thresholds they were judged by
    assert "kappa" in page.text("details") and "5.0e10" in page.text("details")
    assert "kappa_warn = 1000" in text and "kappa_error = 1.0e6" in text


def test_tables_are_collapsible_details(report, page):
    sections = [t for t, classes in page.texts if "summary" in classes and "sc-section" in classes]
    assert sections[0] == "Inputs: 1 input, 1 feature"
    assert sections[1] == "Nonlinearities: 2 call sites (pre-activations)"
    assert sections[2] == "Gradients: 4 parameters"
    assert sections[3] == "Loss and training trial"
    tables = page.text("sc-table")
    assert "input[0]" in tables and "5.0e10" in tables  # per-feature
    assert report.layers[0].site in tables and "99.8%" in tables  # per-layer
    assert all(g.name in tables for g in report.gradients)  # per-parameter
    assert "standardized" in tables and "raw" in tables  # trial arms


def test_styles_are_scoped_and_there_is_no_script(page, report):
    html = report._repr_html_()
    styles = [t for t, classes in page.texts if "style" in classes]
    assert len(styles) == 1
    selectors = [
        s.strip()
        for rule in styles[0].split("}")
        if "{" in rule
        for s in rule.split("{")[0].split(",")
    ]
    assert len(selectors) > 20
    assert all(s.startswith(".scalecheck-report") for s in selectors), selectors
    tags = {tag for tag, _ in page.elements}
    assert "script" not in tags and "iframe" not in tags
    assert not [k for _, a in page.elements for k in a if k.lower().startswith("on")]
    assert "javascript:" not in html.lower()


def test_user_strings_stay_text():
    report = scripted_report()
    assert SCRIPT in report.layers[0].site
    assert any(SCRIPT in f.where for f in report.findings)
    html = report._repr_html_()
    page = Parsed(html)
    assert "script" not in {tag for tag, _ in page.elements}
    assert SCRIPT in page.text("sc-where")  # the finding's location
    assert SCRIPT in page.text("sc-table")  # the per-layer table
    assert SCRIPT not in html  # only its escaped form is in the markup


def test_every_string_field_is_escaped_even_from_a_tampered_dict():
    payload = '</div><script>alert(1)</script><img src=x onerror="alert(2)">'
    base = reference_report()
    f0 = base.findings[0]
    assert f0.fix is not None
    finding = dataclasses.replace(
        f0,
        message=payload,
        where=payload,
        name=payload,
        fix=dataclasses.replace(f0.fix, summary=payload, code=payload, applicability=payload),
        evidence={payload: payload, "thresholds": {payload: 1.0}},
    )
    m = base.measurements
    report = dataclasses.replace(
        base,
        summary=payload,
        findings=(finding, *base.findings[1:]),
        measurements=dataclasses.replace(m, notes=(payload,), device=payload),
        meta={**base.meta, "torch": payload},
    )
    report = Report.from_dict(report.to_dict())
    html = report._repr_html_()
    page = Parsed(html)
    assert {tag for tag, _ in page.elements}.isdisjoint({"script", "img"})
    assert page.text().count(payload) >= 9
    md = report._repr_markdown_()
    rendered = Parsed(markdown.markdown(md, extensions=["tables"]))
    assert {tag for tag, _ in rendered.elements}.isdisjoint({"script", "img"})
    assert payload in rendered.text()


def test_html_is_a_function_of_the_saved_report(report):
    again = Report.from_json(report.to_json())
    assert again._repr_html_() == report._repr_html_()
    assert again._repr_markdown_() == report._repr_markdown_()


def test_standalone_document(report):
    doc = report.to_html(standalone=True)
    assert doc.startswith("<!DOCTYPE html>")
    page = Parsed(doc)
    assert [t for t, _ in page.elements[:4]] == ["html", "head", "meta", "meta"]
    assert page.text("title") == "scalecheck report: stalling"
    assert report._repr_html_() in doc


def test_ok_report_says_so():
    report = standardized_report()
    assert report.verdict is scalecheck.Verdict.OK and report.findings == ()
    page = Parsed(report._repr_html_())
    assert page.text("sc-badge") == "OK"
    assert "sc-verdict-ok" in page.with_class("sc-verdict")[0]["class"]
    assert page.text("sc-none") == "No findings."
    assert not page.with_class("sc-mainfix") and not page.with_class("sc-finding")
    assert "Loss" in [t for t, c in page.texts if "summary" in c and "sc-section" in c]


def test_long_tables_are_cut_with_a_pointer_to_the_rest():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 250, generator=gen) * torch.logspace(-3, 4, 250)
    model = torch.nn.Sequential(torch.nn.Linear(250, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    report = scalecheck.diagnose(model, [(x, torch.randn(64, 1, generator=gen))], trial=False)
    page = Parsed(report._repr_html_())
    rows = [
        t
        for t, classes in page.texts
        if "sc-section" in classes and "td" in classes and t.startswith("input[")
    ]
    assert len(rows) == _common.MAX_TABLE_ROWS == 200
    assert "... and 50 more (report.inputs)." in page.text("sc-note")
    md = report._repr_markdown_()
    assert md.count("| `input[") == _markdown.MAX_ROWS
    assert "230 more" in md


def test_markdown_fallback(report):
    md = report._repr_markdown_()
    lines = md.splitlines()
    assert lines[0] == (
        "### scalecheck: **STALLING**: badly scaled inputs are stopping this network from learning"
    )
    for f in report.findings:
        assert f"**{f.severity.value}** `{f.code}` {f.name}" in md
    assert "```python\nmodel = torch.nn.Sequential(report.standardizer(), model)" in md
    # every table row has as many (unescaped) cell separators as its header
    tables: list[list[str]] = []
    for i, line in enumerate(lines):
        if line.startswith("|"):
            if not lines[i - 1].startswith("|"):
                tables.append([])
            tables[-1].append(line)
    assert len(tables) == 4  # features, nonlinearities, gradients, trial
    for table in tables:
        widths = {len(re.findall(r"(?<!\\)\|", row)) for row in table}
        assert len(widths) == 1, table
    html = markdown.markdown(md, extensions=["tables"])
    page = Parsed(html)
    assert len([t for t, _ in page.elements if t == "table"]) == 4
    assert "x_to_hidden" in page.text("table")


def test_markdown_escapes_user_strings():
    md = scripted_report()._repr_markdown_()
    html = markdown.markdown(md, extensions=["tables"])
    page = Parsed(html)
    assert "script" not in {tag for tag, _ in page.elements}
    assert SCRIPT in page.text()


def test_repr_is_short(report):
    text = repr(report)
    assert "\n" not in text and len(text) < 120
    assert text == "<scalecheck.Report verdict=stalling findings=5 (errors=4, warnings=1)>"
