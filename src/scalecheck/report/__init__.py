"""Stage 6: the :class:`Report` and its renderings (text; HTML and plots in their modules)."""

from ._report import SCHEMA_VERSION, Report

__all__ = ["SCHEMA_VERSION", "Report"]
