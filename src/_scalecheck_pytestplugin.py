"""scalecheck's pytest plugin: the ``scalecheck`` fixture, marker and ``--scalecheck-report-dir``.

Registered through the ``pytest11`` entry point, so every pytest run in an environment
where scalecheck is installed loads this module. It is a top-level module (not
``scalecheck.something``) on purpose: importing a submodule imports the ``scalecheck``
package, which imports torch, and that would add seconds to every pytest run of every
project that merely has scalecheck installed. scalecheck (and torch) are imported only
when a test requests the fixture. Disable the plugin with ``-p no:scalecheck``.

In a test::

    def test_inputs_are_well_scaled(scalecheck):
        report = scalecheck.check(model, loader, trial=False)   # fails with the report

    @pytest.mark.scalecheck(fail_on="warning", trial=False, max_batches=4)
    def test_strict(scalecheck):
        scalecheck.check(model, loader)

- ``scalecheck.check(model, loader, *, fail_on=None, **diagnose_options)`` diagnoses and
  fails the test (``scalecheck.FindingsError``, an ``AssertionError`` whose message is the
  full text report) when a finding is at or above ``fail_on`` (default ``"error"``; see
  :mod:`scalecheck.testing`); it returns the report.
- ``scalecheck.diagnose(model, loader, **diagnose_options)`` only diagnoses.
- ``@pytest.mark.scalecheck(fail_on=..., **diagnose_options)`` sets the defaults of both
  for one test, a class or a module (the closest marker wins, per option); arguments of
  the call win over the marker.
- Inside a test that takes the fixture, the name ``scalecheck`` is the fixture, not the
  package: import what else you need by name (``from scalecheck import Verdict``).
- ``pytest --scalecheck-report-dir=DIR`` writes every report made through the fixture to
  ``DIR/<test id>.json`` (``-2``, ``-3`` ... appended when a test makes several), also
  when the check fails. The verdict is added to the test's ``user_properties`` (and so to
  JUnit XML).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:  # pragma: no cover - typing only; never imported at run time here
    from scalecheck import Report

__all__ = ["ScaleCheckFixture", "scalecheck"]

MARKER = "scalecheck"
REPORT_DIR_OPTION = "--scalecheck-report-dir"
_REPORT_DIR = pytest.StashKey["Path | None"]()
_WRITTEN = pytest.StashKey["list[Path]"]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("scalecheck", "scalecheck (badly scaled inputs)")
    group.addoption(
        REPORT_DIR_OPTION,
        dest="scalecheck_report_dir",
        metavar="DIR",
        default=None,
        help="write the JSON report of every scalecheck diagnosis made through the "
        "'scalecheck' fixture to DIR, one file per test (created if missing).",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(fail_on='error', **diagnose_options): defaults for the 'scalecheck' "
        "fixture in this test, class or module (e.g. trial=False, max_batches=4).",
    )
    value = config.getoption("scalecheck_report_dir", default=None)
    config.stash[_REPORT_DIR] = (
        Path(config.invocation_params.dir, value).resolve() if value else None
    )
    config.stash[_WRITTEN] = []


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    written = config.stash.get(_WRITTEN, [])
    folder = config.stash.get(_REPORT_DIR, None)
    if written and folder is not None:
        n = len(written)
        terminalreporter.write_line(
            f"scalecheck: wrote {n} JSON report{'s' if n != 1 else ''} to {folder}"
        )


@pytest.fixture
def scalecheck(request: pytest.FixtureRequest) -> ScaleCheckFixture:
    """Diagnose a model and its loader inside a test; ``.check`` fails on bad scaling.

    See the module documentation of ``_scalecheck_pytestplugin`` for the marker and the
    report folder option.
    """
    return ScaleCheckFixture(request.node, request.config)


def _safe_name(nodeid: str) -> str:
    """A file name for a test id (``t/test_a.py::test_b[1]`` -> ``t_test_a.py__test_b_1``)."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid.replace("::", "__")).strip("._")
    return name[:200] or "test"


class ScaleCheckFixture:
    """What the ``scalecheck`` fixture returns.

    Attributes:
        options: the defaults from the closest ``@pytest.mark.scalecheck`` markers
            (``fail_on`` and diagnose options).
        reports: every report made in this test, in order.
    """

    def __init__(self, node: pytest.Item, config: pytest.Config) -> None:
        from scalecheck.errors import InvalidArgumentError
        from scalecheck.testing import check_diagnose_options, check_fail_on

        self._node = node
        self._config = config
        self.reports: list[Report] = []
        options: dict[str, Any] = {}
        for marker in node.iter_markers(MARKER):  # closest first
            if marker.args:
                raise InvalidArgumentError(
                    f"@pytest.mark.{MARKER} takes keyword arguments only (fail_on= and "
                    f"diagnose options), got positional {marker.args!r} on {node.nodeid}."
                )
            for key, value in marker.kwargs.items():
                options.setdefault(key, value)
        fail_on = options.pop("fail_on", "error")
        check_fail_on(fail_on, f"@pytest.mark.{MARKER}(fail_on=...)")
        check_diagnose_options(options, f"@pytest.mark.{MARKER}(...)")
        self.options: dict[str, Any] = {"fail_on": fail_on, **options}

    def _options(self, overrides: dict[str, Any], caller: str) -> dict[str, Any]:
        from scalecheck.testing import check_diagnose_options

        merged = {k: val for k, val in self.options.items() if k != "fail_on"}
        merged.update(check_diagnose_options(overrides, caller))
        return merged

    def diagnose(self, model: Any, loader: Iterable[Any], **diagnose_options: Any) -> Report:
        """Run :func:`scalecheck.diagnose` with the marker's defaults and record the report.

        Returns:
            The report (also appended to :attr:`reports` and written to the report folder
            when ``--scalecheck-report-dir`` is given).
        """
        __tracebackhide__ = True
        import scalecheck

        options = self._options(diagnose_options, "scalecheck.diagnose()")
        report = scalecheck.diagnose(model, loader, **options)
        self._record(report)
        return report

    def check(
        self,
        model: Any,
        loader: Iterable[Any],
        *,
        fail_on: str | None = None,
        **diagnose_options: Any,
    ) -> Report:
        """Diagnose and fail the test when a finding is at or above *fail_on*.

        Args:
            model: the ``torch.nn.Module``.
            loader: any iterable of batches.
            fail_on: ``"error"``, ``"warning"`` or ``"info"``; None takes the marker's value
                (default ``"error"``).
            **diagnose_options: passed to :func:`scalecheck.diagnose`, over the marker's.

        Returns:
            The report, when the check passes.

        Raises:
            scalecheck.FindingsError: an ``AssertionError`` whose message is the full text
                report.
        """
        __tracebackhide__ = True
        from scalecheck.errors import FindingsError
        from scalecheck.testing import check_fail_on, failure_message

        severity = check_fail_on(self.options["fail_on"] if fail_on is None else fail_on)
        report = self.diagnose(model, loader, **diagnose_options)
        message = failure_message(report, severity)
        if message is not None:
            raise FindingsError(message)
        return report

    def _record(self, report: Report) -> None:
        self.reports.append(report)
        self._node.user_properties.append(("scalecheck_verdict", report.verdict.value))
        folder = self._config.stash.get(_REPORT_DIR, None)
        if folder is None:
            return
        folder.mkdir(parents=True, exist_ok=True)
        k = len(self.reports)
        path = folder / f"{_safe_name(self._node.nodeid)}{'' if k == 1 else f'-{k}'}.json"
        path.write_text(report.to_json(), encoding="utf-8")
        self._config.stash[_WRITTEN].append(path)
