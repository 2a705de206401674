"""examples/test_project_inputs.py, a project's own test file, runs and passes as shipped."""

from __future__ import annotations

from pathlib import Path

# Imported here, before pytester's in-process runs: pytester removes the modules a run
# imported when it ends, and numpy's and scipy's C extensions cannot be loaded twice.
import scalecheck.strategies
import scalecheck.testing  # noqa: F401

pytest_plugins = ["pytester"]

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "test_project_inputs.py"


def test_project_example_passes(pytester):
    pytester.makepyfile(test_project_inputs=EXAMPLE.read_text(encoding="utf-8"))
    result = pytester.runpytest("-p", "no:cacheprovider", "-v", "--scalecheck-report-dir=reports")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(
        [
            "*test_training_inputs_are_well_scaled PASSED*",
            "*test_training_inputs_are_standardized_strictly PASSED*",
            "*test_raw_features_would_be_caught PASSED*",
            "*test_preprocessing_handles_any_input_range PASSED*",
            "scalecheck: wrote 2 JSON reports to *reports",
        ]
    )


def test_project_example_catches_a_broken_pipeline(pytester):
    # The same file with the preprocessing step broken (an identity): the checks fail, with
    # the report as the message. (The property is left out: hypothesis would shrink its
    # failure through dozens of diagnoses; tests/test_strategies.py shows it can fail.)
    source = EXAMPLE.read_text(encoding="utf-8").replace(
        "return lambda data: (data - mean) / std", "return lambda data: data"
    )
    assert source != EXAMPLE.read_text(encoding="utf-8")
    pytester.makepyfile(test_project_inputs=source)
    result = pytester.runpytest("-p", "no:cacheprovider", "-v", "-k", "not any_input_range")
    result.assert_outcomes(passed=1, failed=2, deselected=1)
    result.stdout.fnmatch_lines(
        [
            "*test_training_inputs_are_well_scaled FAILED*",
            "*test_training_inputs_are_standardized_strictly FAILED*",
            "*test_raw_features_would_be_caught PASSED*",
            "*scalecheck: the inputs are not well scaled*",
        ]
    )
