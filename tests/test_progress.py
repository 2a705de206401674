"""The progress bar: when it shows, what it draws, and its hook into diagnose."""

from __future__ import annotations

import io

import pytest

import scalecheck
from _reports import _one_thread  # noqa: F401 (an autouse fixture)
from scalecheck import _progress
from scalecheck._progress import Progress, auto_enabled, expected_batches
from scalecheck.reference import interpolation as ref
from scalecheck.trial import TrialOptions


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def frames(text: str) -> list[str]:
    """The lines drawn, in order (each draw starts with a carriage return)."""
    return [f for f in text.split("\r") if f.strip()]


def test_render_with_and_without_a_total():
    bar = Progress(8, "work", unit="steps", enabled=False)
    assert bar.render() == "work [------------------------] 0/8 steps"
    bar.update(2)
    assert bar.render() == "work [######------------------] 2/8 steps"
    bar.update(100)  # overshoot stays a full bar
    assert bar.render().startswith("work [" + "#" * 24 + "] 102/8")
    unknown = Progress(None, "work", enabled=False)
    unknown.update(5)
    assert unknown.render() == "work 5"


def test_forced_off_writes_nothing():
    out = TTY()
    with Progress(3, "work", enabled=False, stream=out) as bar:
        for _ in range(3):
            bar.update()
    assert out.getvalue() == ""


def test_redraws_are_throttled_and_the_last_state_is_always_drawn():
    out, clock = io.StringIO(), FakeClock()
    bar = Progress(10, "work", enabled=True, stream=out, min_interval=1.0, clock=clock)
    bar.update()  # first draw
    clock.now += 0.5
    bar.update()  # too soon: not drawn
    clock.now += 0.6
    bar.update()  # drawn (1.1 s after the first)
    for _ in range(7):
        bar.update()  # the last one completes the bar: drawn at once
    bar.close()
    drawn = frames(out.getvalue())
    assert [f.split("] ")[1].strip() for f in drawn] == ["1/10", "3/10", "10/10"]
    assert out.getvalue().endswith("10/10\n")  # not a terminal: the final state stays


def test_in_a_terminal_the_line_is_erased_at_the_end():
    out = TTY()
    with Progress(2, "work", enabled=True, stream=out) as bar:
        bar.update(2)
    text = out.getvalue()
    assert "2/2" in text
    assert text.endswith("\r") and text.rsplit("\r", 2)[-2].strip() == ""


def test_automatic_bars_wait_before_drawing(monkeypatch):
    monkeypatch.delenv("CI", raising=False)  # CI machines set it, which turns bars off
    out, clock = TTY(), FakeClock()
    bar = Progress(100, "work", enabled=None, stream=out, clock=clock)
    assert bar.enabled and bar.delay == _progress.AUTO_DELAY
    clock.now += 0.1
    bar.update()
    assert out.getvalue() == ""
    clock.now += 1.0
    bar.update()
    assert "2/100" in out.getvalue()


def test_quick_work_prints_nothing_at_all(monkeypatch):
    monkeypatch.delenv("CI", raising=False)  # so the bar is on and its delay is what hides it
    out, clock = TTY(), FakeClock()
    with Progress(5, "work", stream=out, clock=clock) as bar:
        bar.update(5)
    assert out.getvalue() == ""


def test_auto_enabled_only_in_a_terminal_or_notebook_and_not_in_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    assert auto_enabled(TTY())
    assert not auto_enabled(io.StringIO())  # a file or a pipe

    class Broken:
        def isatty(self) -> bool:
            raise ValueError("I/O operation on closed file")

    assert not auto_enabled(Broken())
    notebook_stream = type("OutStream", (io.StringIO,), {"__module__": "ipykernel.iostream"})
    assert auto_enabled(notebook_stream())
    for value, on in [("true", False), ("1", False), ("false", True), ("0", True), ("", True)]:
        monkeypatch.setenv("CI", value)
        assert auto_enabled(TTY()) is on, value
    monkeypatch.setenv("CI", "true")
    assert Progress(3, "work", enabled=True, stream=TTY()).enabled  # forcing wins


def test_expected_batches():
    assert expected_batches([1, 2, 3], 16) == 3
    assert expected_batches(list(range(40)), 16) == 16
    assert expected_batches(iter([1, 2]), 16) == 16
    assert expected_batches([], 16) == 16

    class LyingLoader:
        def __len__(self) -> int:
            raise TypeError("IterableDataset has no len()")

    assert expected_batches(LyingLoader(), 7) == 7


def test_diagnose_shows_progress_when_forced(capsys):
    options = TrialOptions(steps=5, budget_s=60.0, lrs=(1e-2,))
    report = scalecheck.diagnose(
        ref.make_model(seed=0), ref.make_loader(), max_batches=6, progress=True, trial=options
    )
    err = capsys.readouterr().err
    assert report.trial is not None
    assert "scalecheck: measuring" in err and "6/6 batches" in err
    assert "scalecheck: training trial" in err and "5/5 steps" in err
    assert err.count("\n") == 2  # stderr is not a terminal: each bar ends on its own line


def test_diagnose_is_quiet_by_default_when_not_in_a_terminal(capsys):
    scalecheck.diagnose(ref.make_model(seed=0), ref.make_loader(), max_batches=2, trial=False)
    assert capsys.readouterr().err == ""
    scalecheck.diagnose(
        ref.make_model(seed=0), ref.make_loader(), max_batches=2, trial=False, progress=False
    )
    assert capsys.readouterr().err == ""


def test_diagnose_rejects_a_non_bool_progress():
    with pytest.raises(scalecheck.InvalidArgumentError, match="progress must be True or False"):
        scalecheck.diagnose(ref.make_model(seed=0), ref.make_loader(), progress="yes")
