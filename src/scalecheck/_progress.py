"""A small progress bar for long work: many batches, the training trial.

It writes one line to stderr and redraws it with ``\\r``, at most every ``min_interval``
seconds. Left to itself (``enabled=None``) it is on only where someone watches: stderr is
a terminal, or the stream of a Jupyter kernel (whose front ends redraw ``\\r`` lines too);
and it is off in CI (the ``CI`` environment variable is set) and when stderr goes to a
file or a pipe. ``enabled=True`` or ``False`` forces it. It also waits ``delay`` seconds
before drawing anything, so quick runs print nothing at all.

In a terminal the line is erased when the work is done (the report follows); elsewhere the
final state is left on its own line.

Example:
    >>> import io
    >>> out = io.StringIO()
    >>> with Progress(3, "measuring", unit="batches", enabled=True, stream=out) as bar:
    ...     for _ in range(3):
    ...         bar.update()
    >>> print(out.getvalue().split("\\r")[-1], end="")
    measuring [########################] 3/3 batches
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import TextIO

__all__ = ["Progress", "auto_enabled", "expected_batches"]

#: Seconds an automatic progress bar waits before it draws: runs shorter than this print
#: nothing.
AUTO_DELAY = 0.5


def in_ci() -> bool:
    """True when the ``CI`` environment variable is set to something other than false."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _is_jupyter_stream(stream: object) -> bool:
    return type(stream).__module__.split(".")[0] == "ipykernel"


def _isatty(stream: object) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except Exception:  # a closed or exotic stream
        return False


def auto_enabled(stream: object) -> bool:
    """Whether a progress bar on *stream* is on by default: a terminal or a Jupyter kernel's
    stream, and not in CI."""
    return not in_ci() and (_isatty(stream) or _is_jupyter_stream(stream))


class Progress:
    """One progress line: ``label [#####-----] 5/10 unit``.

    Args:
        total: how many steps make it complete (None or 0: unknown, count only).
        label: what is being done.
        unit: what a step is (``"batches"``).
        enabled: True or False to force it on or off; None decides with
            :func:`auto_enabled`.
        stream: where to write (default: ``sys.stderr`` at creation).
        min_interval: seconds between redraws.
        delay: seconds to wait before the first draw (None: 0 when forced on,
            :data:`AUTO_DELAY` otherwise).
        clock: a monotonic clock in seconds (tests pass a fake one).
    """

    width = 24

    def __init__(
        self,
        total: int | None,
        label: str,
        *,
        unit: str = "",
        enabled: bool | None = None,
        stream: TextIO | None = None,
        min_interval: float = 0.1,
        delay: float | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.total = total if total and total > 0 else None
        self.label = label
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = auto_enabled(self.stream) if enabled is None else bool(enabled)
        self.min_interval = min_interval
        self.delay = (0.0 if enabled else AUTO_DELAY) if delay is None else delay
        self.clock = clock
        self.count = 0
        self.started = clock()
        self._last_draw: float | None = None
        self._drawn = 0  # length of the line on screen
        self._drawn_count = -1  # the count it shows
        self._closed = False

    def render(self) -> str:
        """The progress line as text (without ``\\r``)."""
        unit = f" {self.unit}" if self.unit else ""
        if self.total is None:
            return f"{self.label} {self.count}{unit}"
        fraction = min(self.count / self.total, 1.0)
        filled = round(fraction * self.width)
        bar = "#" * filled + "-" * (self.width - filled)
        return f"{self.label} [{bar}] {self.count}/{self.total}{unit}"

    def update(self, steps: int = 1) -> None:
        """Count *steps* more steps and redraw when it is time to."""
        self.count += steps
        if not self.enabled or self._closed:
            return
        now = self.clock()
        if now - self.started < self.delay:
            return
        done = self.total is not None and self.count >= self.total
        if done or self._last_draw is None or now - self._last_draw >= self.min_interval:
            self._draw(now)

    def _draw(self, now: float) -> None:
        line = self.render()
        pad = " " * max(0, self._drawn - len(line))
        self.stream.write("\r" + line + pad)
        self.stream.flush()
        self._drawn = len(line)
        self._drawn_count = self.count
        self._last_draw = now

    def close(self) -> None:
        """Finish the line: erased in a terminal, left on its own line elsewhere."""
        if self._closed:
            return
        self._closed = True
        if not self.enabled or self._last_draw is None:
            return  # nothing on screen (off, or finished within the delay)
        if _isatty(self.stream):
            self.stream.write("\r" + " " * self._drawn + "\r")
        else:
            if self._drawn_count != self.count:
                self._draw(self.clock())
            self.stream.write("\n")
        self.stream.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def expected_batches(loader: object, limit: int) -> int:
    """How many batches a run over *loader* will take: ``min(len(loader), limit)`` when the
    loader knows its length, else *limit*."""
    try:
        n = len(loader)  # type: ignore[arg-type]
    except Exception:  # no __len__, or a user __len__ that raises
        return limit
    return min(n, limit) if isinstance(n, int) and n > 0 else limit
