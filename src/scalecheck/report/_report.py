"""The :class:`Report`: verdict, findings, measurements, and the fix as a module."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .._records import freeze, from_plain, to_plain
from .._validation import check_choice, describe
from ..errors import FindingsError, InvalidArgumentError
from ..findings import Finding, Severity, Verdict
from ..measurements import (
    ActivationStats,
    GradientStats,
    InputStats,
    LossStats,
    Measurements,
    TrialResult,
)
from ..standardizer import StandardizedModel, Standardizer, from_input_stats

__all__ = ["SCHEMA_VERSION", "Report"]

#: Version of the dict/JSON layout produced by :meth:`Report.to_dict`.
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Report:
    """What ``diagnose`` found.

    Attributes:
        verdict: ``stalling``, ``at_risk`` or ``ok`` (:class:`~scalecheck.Verdict`).
        summary: the verdict's reason in one or two sentences.
        findings: most severe first.
        measurements: every number measured (inputs, layers, gradients, loss).
        trial: the A/B training trial, when it ran.
        meta: versions, timing and the options used.

    Example:
        >>> import scalecheck
        >>> from scalecheck.reference import interpolation as ref
        >>> report = scalecheck.diagnose(ref.make_model(), ref.make_loader(), trial=False)
        >>> report.verdict
        <Verdict.STALLING: 'stalling'>
        >>> [f.code for f in report.findings][:3]
        ['SC101', 'SC201', 'SC301']
    """

    verdict: Verdict
    summary: str
    findings: tuple[Finding, ...]
    measurements: Measurements
    trial: TrialResult | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    # -- shortcuts -------------------------------------------------------------------------
    @property
    def inputs(self) -> tuple[InputStats, ...]:
        """Per-input, per-feature statistics."""
        return self.measurements.inputs

    @property
    def layers(self) -> tuple[ActivationStats, ...]:
        """Per-call-site nonlinearity statistics."""
        return self.measurements.layers

    @property
    def gradients(self) -> tuple[GradientStats, ...]:
        """Per-parameter gradient statistics."""
        return self.measurements.gradients

    @property
    def loss(self) -> LossStats | None:
        """The loss used and the constant-predictor baseline."""
        return self.measurements.loss

    def codes(self) -> list[str]:
        """The codes of the findings, in report order."""
        return [f.code for f in self.findings]

    def at_least(self, severity: Severity | str) -> tuple[Finding, ...]:
        """Findings at or above *severity*."""
        sev = Severity(severity) if isinstance(severity, str) else severity
        return tuple(f for f in self.findings if f.severity >= sev)

    # -- rendering -------------------------------------------------------------------------
    def __str__(self) -> str:
        from ._text import render_text

        return render_text(self)

    def __repr__(self) -> str:
        counts = {s: sum(1 for f in self.findings if f.severity == s) for s in Severity}
        return (
            f"<scalecheck.Report verdict={self.verdict.value} findings={len(self.findings)} "
            f"(errors={counts[Severity.ERROR]}, warnings={counts[Severity.WARNING]})>"
        )

    def _repr_html_(self) -> str:
        """The notebook rendering: static HTML with scoped styles and no scripts."""
        from ._html import render_html

        return render_html(self)

    def _repr_markdown_(self) -> str:
        """The Markdown rendering, for front ends without HTML."""
        from ._markdown import render_markdown

        return render_markdown(self)

    def to_html(self, *, standalone: bool = False) -> str:
        """The report as HTML: the fragment a notebook shows, or with ``standalone=True`` a
        complete document to save to a file."""
        from ._html import render_html

        return render_html(self, standalone=standalone)

    def to_markdown(self) -> str:
        """The report as Markdown (for an issue, a pull request or a CI summary)."""
        from ._markdown import render_markdown

        return render_markdown(self)

    def plot(self, kind: str = "summary", ax: Any = None) -> Any:
        """Draw the measurements with matplotlib (``pip install "scalecheck[plot]"``).

        Never calls ``show()``; the figure is built without pyplot, so nothing is
        displayed or kept open behind your back. In a notebook, the returned figure
        displays itself when it is the cell's last expression (with ``%matplotlib inline``,
        Jupyter's default once matplotlib is in use).

        Args:
            kind: ``"inputs"`` (per-feature ranges on a symmetric-log axis, the unit band
                marked), ``"activations"`` (pre-activation distributions per nonlinearity,
                the zero-derivative and near-saturated bands marked), ``"gradients"``
                (gradient norm per parameter), ``"trial"`` (loss per step of each arm of
                the training trial, the constant predictor's loss marked) or
                ``"summary"`` (all four in one figure).
            ax: a matplotlib ``Axes`` to draw into (not for ``"summary"``, which needs
                four); None makes a new figure.

        Returns:
            The ``matplotlib.figure.Figure`` (``ax.figure`` when *ax* is given).

        Raises:
            MissingDependencyError: matplotlib is not installed.
            InvalidArgumentError: an unknown *kind*, or *ax* with ``"summary"``.

        Example:
            >>> import scalecheck
            >>> from scalecheck.reference import interpolation as ref
            >>> report = scalecheck.diagnose(ref.make_model(), ref.make_loader(), trial=False)
            >>> fig = report.plot("inputs")
            >>> fig.axes[0].get_xscale()
            'symlog'
        """
        from ._plot import plot_report

        return plot_report(self, kind, ax)

    # -- serialization ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (``schema_version`` included, no NaN values)."""
        return to_plain(self)

    def to_json(self, indent: int | None = 2) -> str:
        """The report as JSON text (never containing NaN or Infinity tokens)."""
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        """Rebuild a report saved with :meth:`to_dict`."""
        if not isinstance(data, dict):
            raise InvalidArgumentError(
                f"data must be a dict from Report.to_dict(), got {describe(data)}."
            )
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise InvalidArgumentError(
                f"this report has schema_version {version!r}; this scalecheck reads "
                f"version {SCHEMA_VERSION}. Re-run diagnose() or upgrade scalecheck."
            )
        try:
            report = from_plain(cls, data)
        except (TypeError, ValueError, KeyError) as exc:
            raise InvalidArgumentError(f"data is not a valid report dict: {exc}") from exc
        return freeze_report(report)

    @classmethod
    def from_json(cls, text: str) -> Report:
        """Rebuild a report saved with :meth:`to_json`."""
        return cls.from_dict(json.loads(text))

    # -- acting on it ----------------------------------------------------------------------
    def raise_for_findings(self, severity: Severity | str = "error") -> None:
        """Raise :class:`~scalecheck.FindingsError` (an AssertionError) if any finding is
        at or above *severity*; its message is the full text report."""
        sev_name = severity.value if isinstance(severity, Severity) else severity
        check_choice("severity", sev_name, [s.value for s in Severity])
        hits = self.at_least(Severity(sev_name))
        if hits:
            raise FindingsError(
                f"{plural_findings(len(hits))} at or above {sev_name}: "
                f"{', '.join(sorted({f.code for f in hits}))}\n\n{self}"
            )

    def standardizer(self, input: str | None = None, *, log: bool = False) -> Standardizer:
        """An ``nn.Module`` that standardizes one input with the measured statistics.

        ``nn.Sequential(report.standardizer(), model)`` is the fix for a single-input model.

        Args:
            input: which input (needed when the model has several feature inputs).
            log: log-transform the positive features that span several decades (those
                flagged by SC103) before standardizing them.
        """
        inp = self._feature_input(input)
        return from_input_stats(inp, self.log_features() if log else ())

    def log_features(self) -> tuple[str, ...]:
        """Names of the features SC103 found spanning several decades (log candidates)."""
        return tuple(
            f.evidence.get("feature", {}).get("name", "")
            for f in self.findings
            if f.code == "SC103"
        )

    def wrap(self, model: Any, *, log: bool = False) -> StandardizedModel:
        """*model* with every measured feature input standardized (several inputs too)."""
        feats = [i for i in self.inputs if i.kind == "feature" and i.features]
        names = [i.name for i in self.inputs]
        return StandardizedModel(
            model, {i.name: self.standardizer(i.name, log=log) for i in feats}, positional=names
        )

    def _feature_input(self, name: str | None) -> InputStats:
        feats = [i for i in self.inputs if i.kind == "feature" and i.features]
        if name is None:
            if len(feats) == 1:
                return feats[0]
            if not feats:
                raise InvalidArgumentError(
                    "this report measured no feature inputs, so there is nothing to standardize."
                )
            raise InvalidArgumentError(
                f"the model has {len(feats)} feature inputs ({[i.name for i in feats]}); pass "
                "input='name' to standardizer(), or use report.wrap(model)."
            )
        for i in feats:
            if i.name == name:
                return i
        raise InvalidArgumentError(
            f"input must be one of {[i.name for i in feats]}, got {describe(name)}."
        )


def plural_findings(n: int) -> str:
    return f"{n} finding{'s' if n != 1 else ''}"


def freeze_report(report: Report) -> Report:
    """Evidence, fix values and meta with lists turned into tuples (hashable-ish, and equal
    to what :meth:`Report.from_dict` rebuilds)."""
    from dataclasses import replace

    findings = tuple(
        replace(
            f,
            evidence=freeze(f.evidence),
            fix=replace(f.fix, values=freeze(f.fix.values)) if f.fix is not None else None,
        )
        for f in report.findings
    )
    return replace(report, findings=findings, meta=freeze(report.meta))
