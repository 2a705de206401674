"""The pytest plugin (``_scalecheck_pytestplugin``), exercised in isolated pytest runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import scalecheck

pytest_plugins = ["pytester"]

USER_TESTS = """
    import pytest
    from scalecheck.reference import interpolation as ref

    def test_standardized(scalecheck):
        loader = ref.make_loader(batch_size=16, n=64, standardized=True)
        report = scalecheck.check(ref.make_model(seed=0), loader, trial=False)
        assert report.verdict.value == "ok"

    def test_raw(scalecheck):
        scalecheck.check(ref.make_model(seed=0), ref.make_loader(16, n=64), trial=False)
"""

#: Mean 0, std 100: kappa ~1e4, between scalecheck's warning (1e3) and error (1e6) levels;
#: with small first-layer weights the tanh units still pass gradient: a warning-only case.
WARNING_ONLY = """
    import torch

    def mild():
        g = torch.Generator().manual_seed(0)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = torch.nn.Sequential(
                torch.nn.Linear(1, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)
            )
        x = 100.0 * torch.randn(64, 1, generator=g)
        model[0].weight.data.mul_(1e-3)
        y = torch.randn(64, 1, generator=g)
        return model, [(x[i : i + 16], y[i : i + 16]) for i in range(0, 64, 16)]
"""


def test_fixture_passes_standardized_and_fails_raw_with_the_report(pytester):
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    out = result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "*test_raw*",
            "*scalecheck: the inputs are not well scaled: 3 findings at or above error "
            "(SC101, SC201, SC301)*",
        ]
    )
    # The full text report is the message: verdict, fix, findings, evidence.
    for part in (
        "scalecheck: STALLING",
        "The fix:",
        "SC101 unscaled-input-feature  at input[0]",
        "SC201 saturated-nonlinearity",
        "Evidence:",
    ):
        assert part in out, part
    # __tracebackhide__: the traceback ends at the user's line, not inside scalecheck.
    assert "scalecheck.check(ref.make_model(seed=0), ref.make_loader(16, n=64), trial=False)" in out
    assert "_scalecheck_pytestplugin.py" not in out
    assert "scalecheck/testing.py" not in out


def test_assert_well_scaled_hides_its_frame(pytester):
    pytester.makepyfile(
        test_helper="""
        from scalecheck.reference import interpolation as ref
        from scalecheck.testing import assert_well_scaled

        def test_raw():
            assert_well_scaled(ref.make_model(seed=0), ref.make_loader(n=64), trial=False)
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "assert_well_scaled(ref.make_model(seed=0), ref.make_loader(n=64), trial=False)" in out
    assert "scalecheck/testing.py" not in out
    assert "FindingsError: scalecheck: the inputs are not well scaled" in out


def test_marker_sets_defaults_and_the_closest_wins(pytester):
    pytester.makepyfile(
        test_marked=WARNING_ONLY
        + """
    import pytest

    pytestmark = pytest.mark.scalecheck(fail_on="warning", trial=False)

    def test_module_marker_is_strict(scalecheck):
        scalecheck.check(*mild())

    @pytest.mark.scalecheck(fail_on="error")
    def test_closer_marker_relaxes(scalecheck):
        report = scalecheck.check(*mild())
        assert report.meta["max_batches"] == 16
        assert report.trial is None  # trial=False still comes from the module marker
        assert [f.severity.value for f in report.findings if f.code == "SC101"] == ["warning"]

    def test_call_argument_wins(scalecheck):
        scalecheck.check(*mild(), fail_on="error", max_batches=2)
        assert scalecheck.reports[-1].meta["max_batches"] == 2

    def test_diagnose_never_fails(scalecheck):
        report = scalecheck.diagnose(*mild())
        assert report.verdict.value == "at_risk"
        assert scalecheck.options == {"fail_on": "warning", "trial": False}
    """
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "-v")
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*test_module_marker_is_strict FAILED*",
            "*test_closer_marker_relaxes PASSED*",
            "*test_call_argument_wins PASSED*",
            "*test_diagnose_never_fails PASSED*",
        ]
    )
    result.stdout.fnmatch_lines(["*1 finding at or above warning (SC101)*"])


def test_invalid_marker_and_call_arguments_are_clear_errors(pytester):
    pytester.makepyfile(
        test_bad="""
        import pytest
        from scalecheck.reference import interpolation as ref

        @pytest.mark.scalecheck(fail_on="eror")
        def test_bad_fail_on(scalecheck):
            pass

        @pytest.mark.scalecheck(trail=False)
        def test_bad_option(scalecheck):
            pass

        @pytest.mark.scalecheck("warning")
        def test_positional(scalecheck):
            pass

        def test_bad_call(scalecheck):
            scalecheck.check(ref.make_model(), ref.make_loader(n=8), max_batch=1)
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(errors=3, failed=1)
    out = result.stdout.str()
    assert "fail_on=...) must be one of 'info', 'warning', 'error', got 'eror'" in out
    assert "Did you mean 'error'?" in out
    assert "unknown diagnose option 'trail'" in out and "Did you mean 'trial'?" in out
    assert "takes keyword arguments only" in out
    assert "unknown diagnose option 'max_batch'" in out


def test_report_dir_option_writes_each_report(pytester):
    pytester.makepyfile(
        test_user=USER_TESTS
        + """
    def test_two_reports(scalecheck):
        loader = ref.make_loader(n=64, standardized=True)
        scalecheck.diagnose(ref.make_model(seed=0), loader, trial=False)
        scalecheck.diagnose(ref.make_model(seed=1), loader, trial=False, max_batches=2)

    def test_without_fixture():
        pass
    """
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "--scalecheck-report-dir=out/reports")
    result.assert_outcomes(passed=3, failed=1)
    folder = pytester.path / "out" / "reports"
    result.stdout.fnmatch_lines([f"scalecheck: wrote 4 JSON reports to {folder}"])
    names = sorted(p.name for p in folder.iterdir())
    assert names == [
        "test_user.py__test_raw.json",
        "test_user.py__test_standardized.json",
        "test_user.py__test_two_reports-2.json",
        "test_user.py__test_two_reports.json",
    ]
    raw = scalecheck.Report.from_json((folder / "test_user.py__test_raw.json").read_text())
    assert raw.verdict is scalecheck.Verdict.STALLING  # written although the test failed
    second = json.loads((folder / "test_user.py__test_two_reports-2.json").read_text())
    assert second["meta"]["max_batches"] == 2


def test_without_the_option_nothing_is_written_and_the_verdict_reaches_junit_xml(pytester):
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest("-p", "no:cacheprovider", "--junitxml=junit.xml")
    result.assert_outcomes(passed=1, failed=1)
    assert "JSON report" not in result.stdout.str()
    assert sorted(p.name for p in pytester.path.iterdir()) == ["junit.xml", "test_user.py"]
    xml = (pytester.path / "junit.xml").read_text()
    assert '<property name="scalecheck_verdict" value="ok"' in xml
    assert '<property name="scalecheck_verdict" value="stalling"' in xml


def test_plugin_is_registered_through_its_entry_point(pytester):
    pytester.makepyfile(test_nothing="def test_nothing():\n    pass\n")
    result = pytester.runpytest("-p", "no:cacheprovider", "--trace-config")
    result.stdout.fnmatch_lines(
        [
            "*PLUGIN registered: <module '_scalecheck_pytestplugin'*",
            "registered third-party plugins:",
            f"*scalecheck-{scalecheck.__version__} at *_scalecheck_pytestplugin.py*",
        ]
    )


def test_option_and_marker_are_documented(pytester):
    help_text = pytester.runpytest("--help").stdout.str()
    assert "--scalecheck-report-dir=DIR" in help_text
    markers = pytester.runpytest("--markers").stdout.str()
    assert "@pytest.mark.scalecheck(fail_on='error', **diagnose_options)" in markers


def test_plugin_can_be_disabled(pytester):
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest("-p", "no:cacheprovider", "-p", "no:scalecheck")
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(["*fixture 'scalecheck' not found*"])


def _run_python(code: str, cwd) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_importing_the_plugin_does_not_import_torch(tmp_path):
    out = _run_python(
        """
        import sys
        import _scalecheck_pytestplugin
        print(sorted(m for m in ("torch", "numpy", "scalecheck") if m in sys.modules))
        """,
        tmp_path,
    )
    assert out.strip() == "[]"


def test_a_pytest_run_that_does_not_use_the_fixture_does_not_import_torch(tmp_path):
    (tmp_path / "test_plain.py").write_text("def test_plain():\n    assert True\n")
    out = _run_python(
        """
        import sys
        import pytest
        code = pytest.main(["-q", "-p", "no:cacheprovider", "test_plain.py"])
        loaded = "_scalecheck_pytestplugin" in sys.modules
        print(int(code), loaded, "torch" in sys.modules)
        """,
        tmp_path,
    )
    assert out.strip().splitlines()[-1] == "0 True False"
