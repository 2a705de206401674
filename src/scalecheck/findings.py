"""Findings: what a rule concluded, with the numbers that prove it and the fix.

A :class:`Finding` is an immutable record: a stable code (``SC101``), a readable name
(``unscaled-input-feature``), a severity, a message that states the measurement first,
where it was measured, an evidence dict with the numbers and thresholds, and a
:class:`Fix` with the fitted values and code to apply them.

Example:
    >>> f = Finding(code="SC104", name="constant-input-feature", severity=Severity.INFO,
    ...             category="input-data", message="input[2] is 0.0 in every sample",
    ...             where="input[2]")
    >>> f.silence
    'diagnose(..., ignore=["SC104"])'
    >>> Severity.ERROR > Severity.WARNING
    True
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Finding", "Fix", "Severity", "Verdict"]


class Severity(str, enum.Enum):
    """How serious a finding is. Ordered: ``INFO < WARNING < ERROR``."""

    INFO = "info"
    WARNING = "warning"
    ERROR = "error"

    @property
    def rank(self) -> int:
        """0 for info, 1 for warning, 2 for error."""
        return _RANK[self.value]

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Severity):
            return NotImplemented
        return self.rank < other.rank

    def __le__(self, other: object) -> bool:
        if not isinstance(other, Severity):
            return NotImplemented
        return self.rank <= other.rank

    def __gt__(self, other: object) -> bool:
        if not isinstance(other, Severity):
            return NotImplemented
        return self.rank > other.rank

    def __ge__(self, other: object) -> bool:
        if not isinstance(other, Severity):
            return NotImplemented
        return self.rank >= other.rank

    def __str__(self) -> str:
        return self.value


_RANK = {"info": 0, "warning": 1, "error": 2}


class Verdict(str, enum.Enum):
    """Whether unnormalized inputs are stalling training.

    - ``STALLING``: the inputs are badly scaled and the measurements show it blocks learning.
    - ``AT_RISK``: the inputs are badly scaled, but no stall was shown.
    - ``OK``: the inputs are well scaled (other findings may still be listed).
    """

    STALLING = "stalling"
    AT_RISK = "at_risk"
    OK = "ok"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class Fix:
    """How to fix a finding.

    Attributes:
        summary: one sentence.
        code: Python code that applies the fix, with the fitted numbers filled in.
        applicability: how safe it is to apply (e.g. "changes what the model is trained
            on: retrain after applying").
        values: the fitted numbers (``{"mean": [...], "std": [...]}``).
    """

    summary: str
    code: str = ""
    applicability: str = ""
    values: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Finding:
    """One conclusion of one rule.

    Attributes:
        code: stable rule code, ``SC`` + three digits.
        name: kebab-case name of the problem.
        severity: :class:`Severity`.
        category: what the finding is evidence of (``input-scale``, ``blocked``,
            ``plateau``, ``trial``, ``input-data``, ``target``, ``other``, ``meta``); the
            verdict reads these.
        message: the measurement, in words and numbers.
        where: the feature, layer or parameter it concerns.
        evidence: the numbers (and the thresholds they were compared with).
        fix: how to fix it, or None.
    """

    code: str
    name: str
    severity: Severity
    category: str
    message: str
    where: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)
    fix: Fix | None = None

    @property
    def silence(self) -> str:
        """The ``diagnose`` argument that silences exactly this rule."""
        return f'diagnose(..., ignore=["{self.code}"])'
