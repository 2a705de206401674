"""Formatting numbers the way the reports print them.

Example:
    >>> num(200000.0), num(0.0527), num(255), num(1.0e-9), num(None)
    ('2.0e5', '0.0527', '255', '1.0e-9', 'n/a')
    >>> pct(0.9991), pct(1.0), pct(0.0), pct(0.00004), pct(0.99999)
    ('99.9%', '100%', '0%', '<0.01%', '>99.99%')
    >>> pct(0.99996)
    '>99.99%'
    >>> pct(0.9996)
    '99.9%'

"""

from __future__ import annotations

import math


def num(x: float | int | None, digits: int = 3) -> str:
    """A number in at most *digits* significant digits, scientific when large or small."""
    if x is None:
        return "n/a"
    x = float(x)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if x == 0:
        return "0"
    a = abs(x)
    if 100 <= a < 1e4:
        return f"{x:.0f}"
    if 1e-3 <= a < 100:
        return f"{x:.{digits}g}"
    mantissa, exponent = f"{x:.{max(digits - 2, 1)}e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def pct(fraction: float | None) -> str:
    """A fraction as a percentage with sensible precision."""
    if fraction is None:
        return "n/a"
    p = 100.0 * fraction
    if p == 0:
        return "0%"
    if p == 100:
        return "100%"
    if p < 0.01:
        return "<0.01%"
    if p > 99.99:
        return ">99.99%"
    if p < 1:
        return f"{p:.2f}%"
    if p > 99:
        return f"{math.floor(p * 10) / 10:.1f}%"  # never rounds up to a misleading 100%
    return f"{p:.0f}%"


def plural(n: int, word: str, many: str | None = None) -> str:
    """``1 feature``, ``3 features``."""
    return f"{n} {word if n == 1 else (many or word + 's')}"
