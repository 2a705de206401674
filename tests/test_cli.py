"""The ``scalecheck`` command: every command, every exit code, every format."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

import scalecheck
from _reports import _one_thread  # noqa: F401 (an autouse fixture)
from scalecheck import Report
from scalecheck.cli import EXIT_FINDINGS, EXIT_OK, EXIT_PIPE, EXIT_USAGE, main
from scalecheck.rules import all_rules

ROOT = Path(__file__).resolve().parents[1]
FACTORIES = ROOT / "examples" / "reference_factories.py"
RAW = f"{FACTORIES}:raw"
STANDARDIZED = f"{FACTORIES}:standardized"


@pytest.fixture(autouse=True)
def _restore_sys_path(monkeypatch):
    # `check` puts the factory's directory (or the working directory) on sys.path, as
    # `python file.py` would; keep that from leaking into other tests.
    monkeypatch.setattr(sys, "path", list(sys.path))


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


# -- usage ---------------------------------------------------------------------------------
def test_no_command_prints_help_and_exits_2(capsys):
    code, out, _ = run(capsys)
    assert code == EXIT_USAGE == 2
    assert "usage: scalecheck" in out and "{demo,check,rules,explain}" not in out
    for command in ("demo", "check", "rules", "explain"):
        assert command in out


@pytest.mark.parametrize(
    "argv",
    [
        ["frobnicate"],
        ["check"],
        ["check", RAW, "--format", "yaml"],
        ["check", RAW, "--fail-on", "sometimes"],
        ["check", RAW, "--max-batches", "many"],
        ["explain"],
    ],
)
def test_argparse_errors_exit_2(capsys, argv):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"scalecheck {scalecheck.__version__}"


# -- rules / explain -----------------------------------------------------------------------
def test_rules_lists_every_rule(capsys):
    code, out, _ = run(capsys, "rules")
    assert code == EXIT_OK
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["code", "name", "severity"]
    rules = all_rules()
    assert len(lines) == len(rules) + 1
    for line, rule in zip(lines[1:], rules, strict=True):
        assert line.split()[:3] == [rule.code, rule.name, rule.severity.value]
        assert line.endswith(rule.summary)


@pytest.mark.parametrize("key", ["SC101", "sc101", "unscaled-input-feature"])
def test_explain_shows_the_rules_page(capsys, key):
    code, out, _ = run(capsys, "explain", key)
    assert code == EXIT_OK
    rule = scalecheck.rules.get_rule("SC101")
    assert out.startswith("SC101 unscaled-input-feature (default severity: error)")
    for section in rule.sections:
        assert f"\n{section}\n" in out
    assert "kappa_warn = 1000" in out and "kappa_error = 1e+06" in out
    assert rule.thresholds[0].reason.split()[0] in out


def test_explain_unknown_rule_exits_2_with_a_suggestion(capsys):
    code, out, err = run(capsys, "explain", "unscaled-input-featur")
    assert code == EXIT_USAGE and out == ""
    assert "no rule 'unscaled-input-featur'" in err
    assert "Did you mean 'unscaled-input-feature'?" in err


# -- check: exit codes ---------------------------------------------------------------------
def test_check_raw_reference_case_fails_on_error(capsys):
    code, out, err = run(capsys, "check", RAW, "--no-trial", "--fail-on", "error")
    assert code == EXIT_FINDINGS == 1
    assert out.startswith("scalecheck: STALLING")
    assert "SC101 unscaled-input-feature" in out and err == ""


def test_check_standardized_reference_case_passes(capsys):
    code, out, _ = run(capsys, "check", STANDARDIZED, "--no-trial", "--fail-on", "error")
    assert code == EXIT_OK == 0
    assert out.startswith("scalecheck: OK")
    # nothing at all to report: clean even at the strictest level
    assert run(capsys, "check", STANDARDIZED, "--no-trial", "--fail-on", "warning")[0] == 0


@pytest.mark.parametrize(("fail_on", "expected"), [("error", 1), ("warning", 1), ("never", 0)])
def test_fail_on_levels(capsys, fail_on, expected):
    code, _, _ = run(capsys, "check", RAW, "--no-trial", "--max-batches", "4", "--fail-on", fail_on)
    assert code == expected


def test_fail_on_warning_counts_warnings_only(capsys):
    # without the error-level rules, the raw case leaves SC401 (a warning)
    argv = ["check", RAW, "--no-trial", "--ignore", "SC1", "--ignore", "SC2", "--ignore", "SC3"]
    code, out, _ = run(capsys, *argv, "--fail-on", "error")
    assert code == EXIT_OK and "SC401" in out
    assert run(capsys, *argv, "--fail-on", "warning")[0] == EXIT_FINDINGS


def test_module_form_and_dict_factories(capsys, monkeypatch):
    monkeypatch.chdir(FACTORIES.parent)  # `pkg.module:factory` is found from the cwd
    sys.modules.pop("reference_factories", None)
    code, out, _ = run(capsys, "check", "reference_factories:original", "--no-trial")
    assert code == EXIT_FINDINGS and out.startswith("scalecheck: STALLING")
    sys.modules.pop("reference_factories", None)


# -- check: formats ------------------------------------------------------------------------
def test_json_format_round_trips(capsys):
    code, out, _ = run(capsys, "check", RAW, "--no-trial", "--format", "json")
    assert code == EXIT_FINDINGS
    data = json.loads(out)
    assert data["schema_version"] == 1 and data["verdict"] == "stalling"
    report = Report.from_dict(data)
    assert report.codes()[:3] == ["SC101", "SC201", "SC301"]
    assert report.trial is None and report.meta["max_batches"] == 16


def test_html_format_is_a_document_with_the_report(capsys, tmp_path):
    target = tmp_path / "report.html"
    code, out, _ = run(
        capsys, "check", RAW, "--format", "html", "--output", str(target), "--trial-steps", "8"
    )
    assert code == EXIT_FINDINGS and out == ""
    html = target.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and html.endswith("</html>\n")

    codes: list[str] = []

    class Codes(HTMLParser):
        def handle_starttag(self, tag, attrs):
            if dict(attrs).get("data-code"):
                codes.append(dict(attrs)["data-code"])

    Codes().feed(html)
    assert {"SC101", "SC201", "SC301"} <= set(codes)
    assert 'data-verdict="stalling"' in html
    assert "Training trial: 8 steps of Adam per arm" in html  # --trial-steps reached it


def test_markdown_format_is_the_reports_markdown(capsys):
    """For CI job summaries: ``--format markdown`` prints ``report.to_markdown()``."""
    code, out, _ = run(capsys, "check", RAW, "--no-trial", "--format", "markdown")
    assert code == EXIT_FINDINGS
    assert out.startswith("### scalecheck: **STALLING**")
    assert "`SC101` unscaled-input-feature" in out and "```python" in out


def test_text_format_to_a_file(capsys, tmp_path):
    target = tmp_path / "report.txt"
    code, out, _ = run(capsys, "check", STANDARDIZED, "--no-trial", "--output", str(target))
    assert code == EXIT_OK and out == ""
    assert target.read_text(encoding="utf-8").startswith("scalecheck: OK")


# -- check: loading and usage errors exit 2 -------------------------------------------------
def test_loading_errors_exit_2(capsys, tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("def oops(:\n", encoding="utf-8")
    raising = tmp_path / "raising.py"
    raising.write_text(
        "def make():\n    raise RuntimeError('no GPU here')\n"
        "def wrong():\n    return 42\n"
        "def not_a_model():\n    return 'model', [1, 2]\n",
        encoding="utf-8",
    )
    cases = {
        "no-colon-here": "must look like pkg.module:factory",
        f"{tmp_path / 'missing.py'}:make": "no such file",
        f"{broken}:oops": "importing",
        "scalecheck_no_such_module:make": "No module named 'scalecheck_no_such_module'",
        f"{raising}:nothing": "has no attribute 'nothing'",
        f"{raising}:make": "the factory raised RuntimeError: no GPU here",
        f"{raising}:wrong": "must return (model, loader)",
        f"{raising}:not_a_model": "model must be a torch.nn.Module",
    }
    for target, message in cases.items():
        code, out, err = run(capsys, "check", target, "--no-trial")
        assert code == EXIT_USAGE, target
        assert err.startswith("scalecheck: error: ") and message in err, (target, err)
        assert out == ""


def test_invalid_option_values_exit_2(capsys, tmp_path):
    code, _, err = run(capsys, "check", RAW, "--no-trial", "--max-batches", "0")
    assert code == EXIT_USAGE and "max_batches must be >= 1" in err
    code, _, err = run(capsys, "check", RAW, "--no-trial", "--ignore", "SC999")
    assert code == EXIT_USAGE and "matches no rule" in err
    code, _, err = run(capsys, "check", RAW, "--trial-steps", "0")
    assert code == EXIT_USAGE and "trial.steps must be >= 1" in err
    unwritable = tmp_path / "no" / "such" / "dir" / "report.json"
    code, _, err = run(capsys, "check", RAW, "--no-trial", "--output", str(unwritable))
    assert code == EXIT_USAGE and "cannot write --output" in err


# -- demo ----------------------------------------------------------------------------------
def test_demo(capsys):
    code, out, _ = run(capsys, "demo", "--steps", "20", "--trial-steps", "3")
    assert code == EXIT_OK
    assert out.startswith("The reference case: Linear(1, 10) -> Tanh")
    assert "scalecheck: STALLING" in out
    assert "verdict: ok" in out
    assert "Training both for 20 Adam steps" in out
    rows = {line.split("  ")[1].strip() for line in out.splitlines() if line.startswith("  ")}
    assert {"raw inputs", "standardized (report.standardizer)"} <= rows


# -- the real process: entry point and exit status -------------------------------------------
def test_the_command_runs_as_a_process():
    done = subprocess.run(
        [sys.executable, "-m", "scalecheck", "check", RAW, "--no-trial", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == EXIT_FINDINGS, done.stderr
    assert json.loads(done.stdout)["verdict"] == "stalling"


@pytest.mark.parametrize("argv", [["rules"], ["explain", "SC107"]])
def test_a_reader_that_went_away_ends_the_command_quietly(argv):
    """``scalecheck rules | head -1``: the pipe is closed before the output is written;
    the command stops with the shell's SIGPIPE code and no traceback."""
    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "scalecheck", *argv],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=300,
            cwd=ROOT,
        )
    finally:
        os.close(write)
    assert done.returncode == EXIT_PIPE, done.stderr
    assert done.stderr == ""
