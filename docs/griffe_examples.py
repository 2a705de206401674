"""A griffe extension for the API reference: read scalecheck's docstrings as written.

- scalecheck's docstrings follow the Google style with a singular ``Example:`` heading;
  griffe reads only the plural ``Examples:`` as an examples section (the ``>>>`` lines
  rendered as code), the singular one would become an admonition whose doctest lines render
  as prose. The heading is renamed before griffe parses the docstring.
- Sphinx roles (``:class:`~scalecheck.Report```, ``:mod:`scalecheck.trial```) become code
  spans (``Report``, ``scalecheck.trial``): Markdown has no roles.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_HEADING = re.compile(r"^(\s*)Example:\s*$", re.MULTILINE)
_ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|exc|obj):`(~?)([^`]+)`")


def _role(match: re.Match[str]) -> str:
    short, target = match.groups()
    return f"`{target.rsplit('.', 1)[-1] if short else target}`"


class DoctestExamples(griffe.Extension):
    """Rename ``Example:`` headings to ``Examples:`` and turn Sphinx roles into code."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            text = _HEADING.sub(r"\1Examples:", obj.docstring.value)
            obj.docstring.value = _ROLE.sub(_role, text)
