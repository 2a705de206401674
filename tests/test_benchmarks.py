"""The benchmark scripts still run against the package as it is.

Speed is measured by the scripts in ``benchmarks/``, never here: these tests run each script
once on the reference workload with two batches and one repeat, and check that it printed
its table, so a renamed function or argument breaks the suite instead of the next
measurement. (``ablate.py`` switches monitors off by patching their per-batch methods by
name, ``paired.py`` imports a second copy of the package: both depend on internals.)
"""

from __future__ import annotations

import importlib
import re
import runpy
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import scalecheck
from scalecheck.monitors import activations, gradients, inputs, loss, recurrent
from scalecheck.session import _run

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
SRC = Path(scalecheck.__file__).resolve().parent.parent


def _run_script(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *argv: str
) -> str:
    script = BENCHMARKS / argv[0]
    monkeypatch.setattr(sys, "argv", [str(script), *argv[1:]])
    # the scripts import their sibling overhead.py from the benchmarks folder
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    try:
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as exc:  # overhead.py ends with sys.exit(main())
        assert exc.code in (0, None), capsys.readouterr()
    return capsys.readouterr().out


def _import_script(name: str) -> Any:
    """A benchmark script as a module (for its functions)."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_overhead_prints_the_ratio_with_its_range(capsys, monkeypatch):
    out = _run_script(
        capsys,
        monkeypatch,
        "overhead.py",
        "--workloads",
        "reference",
        "--ks",
        "2",
        "--repeats",
        "1",
    )
    row = next(line for line in out.splitlines() if line.startswith("reference"))
    # workload, K, plain s, diagnose s, ratio, min-max, extra ms per batch, extra MB
    assert re.match(r"reference\s+2\s+[\d.]+\s+[\d.]+\s+[\d.]+x\s+[\d.]+-[\d.]+\s+-?[\d.]+", row)


def test_overhead_splits_fixed_and_marginal_cost(capsys, monkeypatch):
    # with two K values the extra time is fitted as fixed + marginal x K
    out = _run_script(
        capsys,
        monkeypatch,
        "overhead.py",
        *("--workloads", "reference", "--ks", "2", "3", "--repeats", "2"),
    )
    assert re.search(
        r"reference\s+fixed\s+-?[\d.]+ \+- [\d.]+ ms per call, marginal\s+-?[\d.]+ \+- [\d.]+ "
        r"ms per batch \(a batch at -?[\d.]+x the plain loop's\)",
        out,
    ), out


def test_split_recovers_a_known_line():
    overhead = _import_script("overhead")
    # extra seconds exactly 0.010 + 0.002 K, plain loop 0.004 s per batch
    rows = [
        {"k": k, "plain_s": 0.004 * k, "extra_s": [0.010 + 0.002 * k] * 3} for k in (8, 32, 128)
    ]
    f = overhead.split(rows)
    assert f is not None
    assert f["fixed_ms"] == pytest.approx(10.0) and f["marginal_ms"] == pytest.approx(2.0)
    assert f["marginal_ratio"] == pytest.approx(1.5)
    assert overhead.split(rows[:1]) is None  # one K: nothing to fit


def test_overhead_memory_and_trial(capsys, monkeypatch):
    # --memory measures each run's peak RSS in a child process running this script
    out = _run_script(
        capsys,
        monkeypatch,
        "overhead.py",
        *("--workloads", "reference", "--ks", "2", "--repeats", "1", "--memory", "--trial"),
    )
    row = next(line for line in out.splitlines() if line.startswith("reference"))
    assert len(row.split()) == 8  # the extra MB column
    assert re.search(r"the trial adds -?[\d.]+ s", out)


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("stages.py", "model backward"),
        ("ablate.py", "every monitor off"),
        ("opdiff.py", "extra self time"),
    ],
)
def test_profiling_scripts_run(capsys, monkeypatch, script, expected):
    out = _run_script(capsys, monkeypatch, script, "reference", "--k", "2", "--repeats", "1")
    assert expected in out


def test_fused_probe_runs_with_its_reference(capsys, monkeypatch):
    # the compiled kernel needs a compiler and a minute to build: the script's variants run
    # here with the torch reference in its place, and must leave the package as it was
    methods = [
        (activations.ActivationMonitor, "_update"),
        (inputs.InputMonitor, "update"),
        (gradients.GradientMonitor, "update"),
    ]
    before = [getattr(owner, name) for owner, name in methods]
    out = _run_script(
        capsys,
        monkeypatch,
        "fused_probe.py",
        *("reference", "--k", "2", "--repeats", "1", "--reference-kernel"),
    )
    assert "not a fused pass" in out
    assert re.search(r"every monitor as one call per tensor\s+[\d.]+ ms per batch\s+[\d.]+x", out)
    assert [getattr(owner, name) for owner, name in methods] == before


def test_fused_probe_reference_statistics_match_numpy():
    fused_probe = _import_script("fused_probe")
    z = torch.tensor([[1.5, -2.0, 0.0], [-0.5, 4.0, -1.0]])
    s1, s2, below, extremes = fused_probe.reference(z)
    a = z.double().numpy()
    np.testing.assert_array_equal(s1.numpy(), a.sum(0))
    np.testing.assert_array_equal(s2.numpy(), (a * a).sum(0))
    assert below.tolist() == [1.0, 1.0, 1.0] and extremes.tolist() == [-2.0, 4.0]


@pytest.mark.skipif(sys.platform == "win32", reason="getrusage is Unix only")
def test_stages_counts_page_faults(capsys, monkeypatch):
    out = _run_script(
        capsys, monkeypatch, "stages.py", "reference", "--k", "2", "--repeats", "1", "--faults"
    )
    assert "minor page faults per batch" in out
    backward = next(line for line in out.splitlines() if "model backward" in line)
    ms, faults = (float(v) for v in backward.split()[-2:])  # two columns: time and faults
    assert ms >= 0 and faults >= 0


@pytest.mark.parametrize("script", ["ablate.py", "stages.py"])
def test_patching_scripts_restore_the_package(capsys, monkeypatch, script):
    # ablate.py switches monitors off and stages.py wraps them with timers, both by
    # patching the package's methods: run in one process, they must put them back
    methods = [
        (activations.ActivationMonitor, "_update"),
        (gradients.GradientMonitor, "update"),
        (inputs.InputMonitor, "update"),
        (loss.LossMonitor, "compute"),
        (recurrent.RecurrentMonitor, "run"),
        (_run, "_forward"),
        (_run, "_gradients"),
    ]
    before = [getattr(owner, name) for owner, name in methods]
    _run_script(capsys, monkeypatch, script, "reference", "--k", "2", "--repeats", "1")
    assert [getattr(owner, name) for owner, name in methods] == before


def test_paired_compares_two_copies(capsys, monkeypatch):
    out = _run_script(
        capsys, monkeypatch, "paired.py", str(SRC), "reference", "--k", "2", "--repeats", "1"
    )
    assert "this - other, wall time" in out
    assert "this - other, CPU time" in out
