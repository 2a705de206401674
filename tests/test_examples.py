"""The examples run: the reference case as a script, and as a notebook executed headless."""

from __future__ import annotations

import json
import re
import runpy
import sys
from pathlib import Path

import pytest

from _reports import _one_thread  # noqa: F401 (an autouse fixture)

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SCRIPT = EXAMPLES / "reference_case.py"
NOTEBOOK = EXAMPLES / "reference_case.ipynb"


def test_reference_case_script(tmp_path, monkeypatch, capsys):
    plot, html, report = tmp_path / "summary.png", tmp_path / "report.html", tmp_path / "r.json"
    argv = ["--steps", "200", "--trial-steps", "20", "--plot", str(plot), "--html", str(html)]
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), *argv, "--json", str(report)])
    with pytest.raises(SystemExit) as info:
        runpy.run_path(str(SCRIPT), run_name="__main__")
    out = capsys.readouterr().out
    assert info.value.code == 0, out  # raw: stalling; fixed: ok
    assert out.startswith("scalecheck: STALLING")
    assert "With the fix, nn.Sequential(report.standardizer(), model): ok" in out
    finals = dict(
        re.findall(r"^  (raw inputs|standardized inputs|constant predictor) +([\d.]+)$", out, re.M)
    )
    raw, fixed, baseline = (
        float(finals[k]) for k in ("raw inputs", "standardized inputs", "constant predictor")
    )
    assert fixed < 0.5 * baseline and fixed < 0.5 * raw
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert 'data-verdict="stalling"' in html.read_text(encoding="utf-8")
    assert json.loads(report.read_text(encoding="utf-8"))["verdict"] == "stalling"


def test_reference_case_notebook(tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")  # jupyter_core's path migration warning
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the kernel inherits it: tiny networks
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "commit it clean"
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()

    def outputs(source_start: str) -> list[dict]:
        (cell,) = [c for c in code if c.source.startswith(source_start)]
        assert not [o for o in cell.outputs if o.output_type == "error"]
        return cell.outputs

    def data(source_start: str, mime: str) -> str:
        found = [o.data[mime] for o in outputs(source_start) if mime in o.get("data", {})]
        assert len(found) == 1, (source_start, mime, outputs(source_start))
        return found[0]

    assert 'data-verdict="stalling"' in data("report = scalecheck.diagnose", "text/html")
    assert data("report = scalecheck.diagnose", "text/markdown").startswith(
        "### scalecheck: **STALLING**"
    )
    verdict = data("report.verdict", "text/plain")
    assert "Verdict.STALLING" in verdict and "'SC101'" in verdict
    for cell in ("report.plot()", 'report.plot("activations")', 'after.plot("activations")'):
        assert data(cell, "image/png")  # the figure itself, displayed once
    assert 'data-verdict="ok"' in data("fixed = torch.nn.Sequential", "text/html")
    stdout = "".join(
        o.text for o in outputs("text = report.to_json()") if o.get("name") == "stdout"
    )
    assert stdout.strip().endswith("same report: True")
