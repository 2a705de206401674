"""The rule registry: every rule is data (code, name, severity, thresholds, docs).

A rule is a pure function ``check(context) -> iterable of Finding`` registered with
:func:`rule`. Its docstring holds the documented sections (*What it does*, *Why it matters*,
*Example*, *Fix*, *Known problems*); its thresholds are :class:`Threshold` objects that carry
the reason for their value. ``docs/rules/`` is generated from this registry.
"""

from __future__ import annotations

import inspect
import re
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._validation import closest
from ..errors import InvalidArgumentError
from ..findings import Finding, Severity
from ..measurements import Measurements

__all__ = [
    "REGISTRY",
    "Context",
    "Rule",
    "Threshold",
    "all_rules",
    "get_rule",
    "rule",
    "run_rules",
    "select_rules",
]

_SECTIONS = ("What it does", "Why it matters", "Example", "Fix", "Known problems")


@dataclass(frozen=True, slots=True)
class Threshold:
    """A named threshold and the reason for its value."""

    name: str
    value: float
    reason: str


@dataclass
class Context:
    """What a rule may read: the measurements, the trial result, the options."""

    measurements: Measurements
    trial: Any = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Rule:
    """One rule: a code, a name, a default severity, thresholds, docs and a check."""

    code: str
    name: str
    severity: Severity
    category: str
    summary: str
    thresholds: tuple[Threshold, ...]
    check: Callable[[Context], Iterable[Finding]]
    sections: dict[str, str]

    def finding(
        self,
        message: str,
        *,
        where: str = "",
        severity: Severity | None = None,
        evidence: dict[str, Any] | None = None,
        fix: Any = None,
        category: str | None = None,
    ) -> Finding:
        """Build a finding of this rule (thresholds are added to the evidence)."""
        ev = dict(evidence or {})
        if self.thresholds:
            ev.setdefault("thresholds", {t.name: t.value for t in self.thresholds})
        return Finding(
            code=self.code,
            name=self.name,
            severity=severity or self.severity,
            category=category or self.category,
            message=message,
            where=where,
            evidence=ev,
            fix=fix,
        )


REGISTRY: dict[str, Rule] = {}
_CODE = re.compile(r"^SC\d{3}$")
_NAME = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")


def rule(
    code: str,
    name: str,
    severity: Severity,
    category: str,
    thresholds: Sequence[Threshold] = (),
) -> Callable[[Callable[[Context], Iterable[Finding]]], Rule]:
    """Register a rule check function (used as a decorator).

    The decorator returns the :class:`Rule`, so inside its own check a rule refers to
    itself by the function's name (``my_rule.finding(...)``).
    """
    if not _CODE.match(code):
        raise ValueError(f"rule code {code!r} must look like SC101")
    if not _NAME.match(name):
        raise ValueError(f"rule name {name!r} must be kebab-case")

    def register(fn: Callable[[Context], Iterable[Finding]]) -> Rule:
        if code in REGISTRY:
            raise ValueError(f"rule code {code} registered twice")
        doc = inspect.getdoc(fn) or ""
        summary, sections = _parse_doc(doc)
        REGISTRY[code] = Rule(
            code, name, severity, category, summary, tuple(thresholds), fn, sections
        )
        return REGISTRY[code]

    return register


def _parse_doc(doc: str) -> tuple[str, dict[str, str]]:
    lines = doc.splitlines()
    summary = lines[0].strip() if lines else ""
    sections: dict[str, str] = {}
    current = None
    buf: list[str] = []
    for line in lines[1:]:
        header = line.strip().rstrip(":")
        if header in _SECTIONS and line.strip().endswith(":"):
            if current:
                sections[current] = "\n".join(buf).strip()
            current, buf = header, []
        elif current:
            buf.append(line[4:] if line.startswith("    ") else line)
    if current:
        sections[current] = "\n".join(buf).strip()
    return summary, sections


def all_rules() -> tuple[Rule, ...]:
    """Every registered rule, by code."""
    _load()
    return tuple(REGISTRY[c] for c in sorted(REGISTRY))


def get_rule(key: str) -> Rule:
    """A rule by code (``SC101``) or name (``unscaled-input-feature``)."""
    _load()
    key_up = key.upper()
    if key_up in REGISTRY:
        return REGISTRY[key_up]
    for r in REGISTRY.values():
        if r.name == key:
            return r
    options = [*REGISTRY, *(r.name for r in REGISTRY.values())]
    hint = closest(key, options)
    raise InvalidArgumentError(
        f"no rule {key!r}."
        + (f" Did you mean {hint!r}?" if hint else "")
        + " `scalecheck rules` lists them all."
    )


def select_rules(ignore: Iterable[str]) -> tuple[Rule, ...]:
    """The rules left after *ignore* (codes, code prefixes like ``SC2``, or names)."""
    rules = all_rules()
    dropped: set[str] = set()
    for key in ignore:
        matched = {
            r.code
            for r in rules
            if r.code == key.upper()
            or r.name == key
            or (key.upper().startswith("SC") and r.code.startswith(key.upper()))
        }
        if not matched:
            options = [*(r.code for r in rules), *(r.name for r in rules)]
            hint = closest(key, options)
            raise InvalidArgumentError(
                f"ignore= contains {key!r}, which matches no rule code, code prefix or name."
                + (f" Did you mean {hint!r}?" if hint else "")
                + " `scalecheck rules` lists them all."
            )
        dropped |= matched
    return tuple(r for r in rules if r.code not in dropped)


def run_rules(context: Context, rules: Iterable[Rule], *, strict: bool) -> list[Finding]:
    """Run each rule; a rule that raises becomes an SC001 finding (unless *strict*)."""
    findings: list[Finding] = []
    for r in rules:
        if r.code == "SC001":
            continue
        try:
            findings.extend(r.check(context))
        except Exception as exc:
            if strict:
                raise
            findings.append(internal_error(f"rule {r.code} {r.name}", exc))
    return findings


def internal_error(stage: str, exc: BaseException) -> Finding:
    """The SC001 finding for an exception raised inside scalecheck itself."""
    _load()
    r = REGISTRY["SC001"]
    tb = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    return r.finding(
        f"scalecheck's {stage} failed ({tb}); its results are missing from this report, "
        "the other rules still ran. Please report this at the project's issue tracker with "
        "the model and batch shapes.",
        where=stage,
        evidence={"exception": type(exc).__name__, "detail": str(exc)[:500]},
    )


def _load() -> None:
    # Importing the rule modules registers their rules.
    from . import activations, gradients, inputs, loss, meta, trial  # noqa: F401
