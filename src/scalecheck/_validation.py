"""One place for checking the arguments users pass in.

Every check raises :class:`~scalecheck.errors.InvalidArgumentError` with a message that
names the argument, shows the value received (and its type) and says what to do.
``assert`` is never used on user input.
"""

from __future__ import annotations

import difflib
import numbers
from collections.abc import Callable, Iterable
from typing import Any

from .errors import InvalidArgumentError

_REPR_LIMIT = 80


def describe(value: object) -> str:
    """Return a short ``repr`` of *value* with its type, for error messages.

    Example:
        >>> describe("abc")
        "'abc' (str)"
        >>> describe(list(range(100)))[:20]
        '[0, 1, 2, 3, 4, 5, 6'
    """
    try:
        text = repr(value)
    except Exception:  # a user object whose __repr__ raises
        text = f"<{type(value).__name__} object>"
    if len(text) > _REPR_LIMIT:
        text = text[: _REPR_LIMIT - 3] + "..."
    return f"{text} ({type(value).__name__})"


def closest(name: str, choices: Iterable[str]) -> str | None:
    """Return the valid choice closest to a mistyped *name*, or None."""
    matches = difflib.get_close_matches(str(name), list(choices), n=1, cutoff=0.6)
    return matches[0] if matches else None


def check_int(name: str, value: Any, *, minimum: int | None = None) -> int:
    """Check that *value* is an int (not a bool) and at least *minimum*."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidArgumentError(
            f"{name} must be an int, got {describe(value)}; pass a whole number"
            + (f" >= {minimum}" if minimum is not None else "")
            + "."
        )
    value = int(value)
    if minimum is not None and value < minimum:
        raise InvalidArgumentError(f"{name} must be >= {minimum}, got {value}.")
    return value


def check_number(
    name: str,
    value: Any,
    *,
    minimum: float | None = None,
    allow_none: bool = False,
) -> float | None:
    """Check that *value* is a real number (not a bool), optionally at least *minimum*."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidArgumentError(
            f"{name} must be a number{' or None' if allow_none else ''}, got {describe(value)}."
        )
    value = float(value)
    if value != value:  # NaN
        raise InvalidArgumentError(f"{name} must be a number, got nan.")
    if minimum is not None and value < minimum:
        raise InvalidArgumentError(f"{name} must be >= {minimum}, got {value}.")
    return value


def check_callable(name: str, value: Any, *, allow_none: bool = True, hint: str = "") -> Any:
    """Check that *value* is callable (or None when allowed)."""
    if value is None and allow_none:
        return None
    if not callable(value):
        raise InvalidArgumentError(
            f"{name} must be a callable{' or None' if allow_none else ''}, got {describe(value)}"
            + (f"; {hint}" if hint else ".")
        )
    return value


def check_choice(name: str, value: Any, choices: Iterable[str]) -> str:
    """Check that *value* is one of *choices*, suggesting the closest one on a typo."""
    choices = list(choices)
    if not isinstance(value, str) or value not in choices:
        suggestion = closest(value, choices) if isinstance(value, str) else None
        hint = f" Did you mean {suggestion!r}?" if suggestion else ""
        raise InvalidArgumentError(
            f"{name} must be one of {', '.join(map(repr, choices))}, got {describe(value)}.{hint}"
        )
    return value


def check_bool(name: str, value: Any) -> bool:
    """Check that *value* is a bool."""
    if not isinstance(value, bool):
        raise InvalidArgumentError(f"{name} must be True or False, got {describe(value)}.")
    return value


def check_str_list(name: str, value: Any) -> tuple[str, ...]:
    """Accept a string or an iterable of strings and return a tuple of strings."""
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    try:
        items = tuple(value)
    except TypeError:
        raise InvalidArgumentError(
            f"{name} must be a string or a list of strings, got {describe(value)}."
        ) from None
    for item in items:
        if not isinstance(item, str):
            raise InvalidArgumentError(
                f"{name} must contain only strings, got {describe(item)} in {describe(value)}."
            )
    return items


def check_type(name: str, value: Any, expected: type | tuple[type, ...], hint: str) -> Any:
    """Check ``isinstance(value, expected)`` and explain the way out when it fails."""
    if not isinstance(value, expected):
        raise InvalidArgumentError(f"{name} must be {hint}, got {describe(value)}.")
    return value


def call_description(fn: Callable[..., Any]) -> str:
    """A readable name for a user callable (for messages)."""
    return getattr(fn, "__qualname__", None) or type(fn).__name__
