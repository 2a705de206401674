"""Every docstring example in the package runs (conventions: examples are doctests)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import scalecheck

OPTIONAL = {"scalecheck.strategies": "hypothesis"}


def _modules() -> list[str]:
    names = ["scalecheck"]
    for info in pkgutil.walk_packages(scalecheck.__path__, "scalecheck."):
        names.append(info.name)
    return sorted(n for n in names if not n.endswith("__main__"))


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples_run(name):
    if name in OPTIONAL:
        pytest.importorskip(OPTIONAL[name])
    module = importlib.import_module(name)
    result = doctest.testmod(
        module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False
    )
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"
