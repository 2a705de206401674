"""Assertions for a project's own test suite: fail a test when the inputs are badly scaled.

:func:`assert_well_scaled` runs :func:`~scalecheck.diagnose` and raises
:class:`~scalecheck.FindingsError` (a :class:`~scalecheck.ScaleCheckError` and an
:class:`AssertionError`, so pytest and unittest count it as a failed check) whose message
is the full text report: the verdict, the fix with the fitted numbers, every finding and
the evidence.

What "well scaled" means here: no finding at or above the ``fail_on`` severity. Every
scalecheck rule reports a symptom of badly scaled data (input features far from unit
scale, saturated nonlinearities, vanished gradients at the input layer, a loss stuck at
the constant predictor's, badly scaled regression targets, non-finite values), so all of
them count; ``ignore=`` (a diagnose option) leaves out the ones a project accepts.

``fail_on`` chooses the strictness:

- ``"error"`` (default): fail on what stops training or yields garbage: a feature whose
  scale makes gradient descent need a million times more steps (SC101 at error level),
  exact saturation or exactly-zero gradients at the input layer, non-finite values, and a
  finding scalecheck could not compute (SC001), so that a check that could not run never
  passes silently;
- ``"warning"``: also fail on a feature a thousand times off unit scale, features whose
  scales differ by more than ~30x, features spanning decades, vanishing gradients and a
  flat output: use it to keep inputs standardized;
- ``"info"``: fail on anything reported, including notes such as a constant feature or
  few measured samples.

With ``trial=False`` an input feature whose second-moment condition number exceeds 1e3
always yields a finding of at least warning severity, so ``fail_on="warning",
trial=False`` is a fast check that depends only on the data's scale and the first layers
of the model, not on a training trial.

Example:
    >>> from scalecheck.reference import interpolation as ref
    >>> from scalecheck.testing import assert_well_scaled
    >>> loader = ref.make_loader(standardized=True)
    >>> assert_well_scaled(ref.make_model(seed=0), loader, trial=False).verdict.value
    'ok'
    >>> try:
    ...     assert_well_scaled(ref.make_model(seed=0), ref.make_loader(), trial=False)
    ... except AssertionError as e:
    ...     print(str(e).splitlines()[0])
    scalecheck: the inputs are not well scaled: 3 findings at or above error (SC101, SC201, SC301)
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping
from typing import Any

from torch import nn

from . import _validation as v
from .diagnose import diagnose
from .errors import FindingsError, InvalidArgumentError
from .findings import Severity
from .report import Report

__all__ = [
    "DIAGNOSE_OPTIONS",
    "assert_well_scaled",
    "check_diagnose_options",
    "check_fail_on",
    "failure_message",
]

#: The keyword options :func:`~scalecheck.diagnose` accepts (and so do the helpers here).
DIAGNOSE_OPTIONS: tuple[str, ...] = tuple(
    name
    for name, p in inspect.signature(diagnose).parameters.items()
    if p.kind is inspect.Parameter.KEYWORD_ONLY
)


def check_fail_on(fail_on: Any, name: str = "fail_on") -> Severity:
    """Check a ``fail_on`` value and return it as a :class:`~scalecheck.Severity`.

    Example:
        >>> check_fail_on("warning")
        <Severity.WARNING: 'warning'>
        >>> try:
        ...     check_fail_on("erorr")
        ... except ValueError as e:
        ...     print(e)
        fail_on must be one of 'info', 'warning', 'error', got 'erorr' (str). Did you mean 'error'?
    """
    if isinstance(fail_on, Severity):
        return fail_on
    value = v.check_choice(name, fail_on, [s.value for s in Severity])
    return Severity(value)


def check_diagnose_options(options: Mapping[str, Any], caller: str) -> dict[str, Any]:
    """Check that *options* only name options of :func:`~scalecheck.diagnose`.

    The values themselves are checked by ``diagnose``; this catches a misspelled name
    before anything runs, with the closest valid name.
    """
    for key in options:
        if key not in DIAGNOSE_OPTIONS:
            suggestion = v.closest(key, DIAGNOSE_OPTIONS)
            hint = f" Did you mean {suggestion!r}?" if suggestion else ""
            raise InvalidArgumentError(
                f"{caller} got an unknown diagnose option {key!r}; the options are "
                f"{', '.join(DIAGNOSE_OPTIONS)} (and fail_on).{hint}"
            )
    return dict(options)


def failure_message(report: Report, fail_on: Severity | str = "error") -> str | None:
    """The assertion message for *report* at the *fail_on* level, or None when it passes.

    The message starts with one line naming the verdict's problem and the codes at or
    above *fail_on*, followed by the full text report.

    Example:
        >>> from scalecheck import diagnose
        >>> from scalecheck.reference import interpolation as ref
        >>> loader = ref.make_loader(standardized=True)
        >>> failure_message(diagnose(ref.make_model(seed=0), loader, trial=False)) is None
        True
    """
    severity = check_fail_on(fail_on)
    hits = report.at_least(severity)
    if not hits:
        return None
    codes = ", ".join(sorted({f.code for f in hits}))
    count = f"{len(hits)} finding{'s' if len(hits) != 1 else ''}"
    return (
        f"scalecheck: the inputs are not well scaled: {count} at or above "
        f"{severity.value} ({codes})\n\n{report}"
    )


def assert_well_scaled(
    model: nn.Module,
    loader: Iterable[Any],
    *,
    fail_on: Severity | str = "error",
    **diagnose_options: Any,
) -> Report:
    """Assert that *model* trained on *loader* has well-scaled inputs; return the report.

    Runs :func:`~scalecheck.diagnose` and fails when any finding is at or above
    *fail_on* (see the module documentation for what each level catches). The model is
    borrowed, not changed, exactly as with ``diagnose``.

    Args:
        model: the ``torch.nn.Module`` to check.
        loader: any iterable of batches (a DataLoader, a list of ``(x, y)`` pairs ...).
        fail_on: ``"error"``, ``"warning"`` or ``"info"``: the lowest severity that fails.
        **diagnose_options: passed to :func:`~scalecheck.diagnose` (``loss_fn``,
            ``prepare``, ``max_batches``, ``seed``, ``ignore``, ``trial``, ``strict``).
            ``trial=False`` makes the check fast (about 0.1 s for a small model) when the
            A/B training trial is not what the test is about.

    Returns:
        The :class:`~scalecheck.Report`, for further assertions.

    Raises:
        FindingsError: some finding is at or above *fail_on*; the message is the full text
            report. It is an ``AssertionError`` and a ``ScaleCheckError``.
        InvalidArgumentError: *fail_on* or an option name is invalid (raised before
            anything runs), or ``diagnose`` rejected an argument.

    Example:
        >>> from scalecheck.reference import interpolation as ref
        >>> model = ref.make_model(seed=0)
        >>> loader = ref.make_loader(standardized=True)
        >>> report = assert_well_scaled(model, loader, fail_on="warning", trial=False)
        >>> report.findings
        ()
    """
    __tracebackhide__ = True
    severity = check_fail_on(fail_on)
    options = check_diagnose_options(diagnose_options, "assert_well_scaled()")
    report = diagnose(model, loader, **options)
    message = failure_message(report, severity)
    if message is not None:
        raise FindingsError(message)
    return report
