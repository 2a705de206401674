"""The documentation: generated pages up to date, a page per rule, a strict mkdocs build."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from _reports import _one_thread  # noqa: F401 (an autouse fixture)
from scalecheck.rules import all_rules

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"scalecheck_docs_{name}", DOCS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gen_pages():
    return _load("gen_pages")


def test_generated_pages_are_up_to_date(gen_pages):
    assert gen_pages.stale() == [], "run: python docs/gen_pages.py"


def test_every_rule_has_a_complete_page(gen_pages):
    index = (DOCS / "rules" / "index.md").read_text(encoding="utf-8")
    for rule in all_rules():
        page = (DOCS / "rules" / f"{rule.code}.md").read_text(encoding="utf-8")
        assert page.startswith(f"# {rule.code} {rule.name}\n")
        assert rule.summary in page
        for section, body in rule.sections.items():
            assert f"\n## {section}\n\n{body.strip()}" in page, (rule.code, section)
        for t in rule.thresholds:
            row = next(line for line in page.splitlines() if line.startswith(f"| `{t.name}` |"))
            assert gen_pages._number(t.value) in row and " ".join(t.reason.split())[:40] in row
        assert f'ignore=["{rule.code}"]' in page
        assert f"| [{rule.code}]({rule.code}.md) | `{rule.name}` |" in index
    # a stale page for a rule that no longer exists is reported too
    ghost = DOCS / "rules" / "SC999.md"
    ghost.write_text("# SC999\n", encoding="utf-8")
    try:
        assert "rules/SC999.md (no such rule)" in gen_pages.stale()
    finally:
        ghost.unlink()


def test_thresholds_table_matches_the_monitors(gen_pages):
    import torch

    from scalecheck.monitors.nonlinearities import zero_derivative_bounds

    math_page = (DOCS / "math.md").read_text(encoding="utf-8")
    row = next(line for line in math_page.splitlines() if line.startswith("| `tanh` |"))
    hi = zero_derivative_bounds("tanh", torch.float32).hi
    assert f"\\|z\\| > {hi:.6g}" in row and f"{hi:.6g}".startswith("9.01")
    assert "| `softmax` |" not in math_page  # measured per row, not by bounds


def test_docs_build_strictly(tmp_path):
    site = tmp_path / "site"
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    log = done.stdout + done.stderr
    assert done.returncode == 0, log
    assert "WARNING" not in log and "Documentation built" in log

    def page(path: str) -> str:
        return (site / path / "index.html").read_text(encoding="utf-8")

    # the tutorial: generated report text and figures drawn from the reference case
    tutorial = page("tutorial")
    assert "scalecheck: STALLING" in tutorial and "scalecheck: OK" in tutorial
    assert "<!-- generated:" not in tutorial
    images = re.findall(r'<img alt="[^"]+" src="([^"]+)"', tutorial)
    assert len(images) == 7
    for src in images:
        figure = (site / "tutorial" / src).resolve()
        assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", src
    assert (site / "figures" / "reference-summary.png").is_file()
    # a page per rule, all in the navigation
    home = page("")
    for rule in all_rules():
        assert f"{rule.code} {rule.name}" in page(f"rules/{rule.code}")
        assert f'href="rules/{rule.code}/"' in home
    # the API reference is rendered from the docstrings, examples as code
    api = page("api")
    assert 'id="scalecheck.diagnose.diagnose"' in api and 'id="scalecheck.Report.plot"' in api
    assert "&gt;&gt;&gt;" in api and "Examples" in api
    # the math page carries the generated thresholds table
    assert "9.01084" in page("math")
    for how in ("notebook", "ci", "json", "cost"):
        assert page(f"howto/{how}")
