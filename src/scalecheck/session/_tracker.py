"""Which module is running right now: the name call sites and errors are reported under.

Forward pre-hooks and forward hooks on every submodule keep a stack of qualified module
names (``encoder.0.mlp``). The hooks are created inside the caller's
:class:`contextlib.ExitStack`, so they are removed in its ``finally`` even when the model
raises. No attribute is ever set on the user's modules: per-module data lives here, keyed
by the qualified name.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from typing import Any

from torch import nn

ROOT = "<model>"

#: Calls of the same function inside the same module beyond this index share one call
#: site (``tanh#33+``), so an RNN unrolled in Python over 500 steps does not create 500 sites.
MAX_CALL_INDEX = 32


class ModuleTracker:
    """Keeps the stack of running modules and per-forward call counters.

    Args:
        model: the (unwrapped) user model.
        stack: the ExitStack that owns the hook handles.
    """

    def __init__(self, model: nn.Module, stack: contextlib.ExitStack) -> None:
        self._stack_names: list[str] = []
        self._calls: Counter[tuple[str, str]] = Counter()
        self.last_module: str | None = None
        self.module_types: dict[str, str] = {}
        for name, module in model.named_modules():
            self.module_types[name or ROOT] = type(module).__name__
            if not name:
                continue  # the root is entered explicitly by the session
            # prepend: the module is "entered" before the user's own pre-hooks run, so an
            # error raised by one of them is reported in the right module
            pre = module.register_forward_pre_hook(self._make_pre(name), prepend=True)
            stack.callback(pre.remove)
            post = module.register_forward_hook(self._post, always_call=True)
            stack.callback(post.remove)

    def _make_pre(self, name: str) -> Any:
        def pre(module: nn.Module, args: Any) -> None:
            self._stack_names.append(name)
            self.last_module = name

        return pre

    def _post(self, module: nn.Module, args: Any, output: Any) -> None:
        if self._stack_names:
            self._stack_names.pop()

    def begin_forward(self) -> None:
        """Reset the per-forward state (call counters, stack)."""
        self._stack_names.clear()
        self._calls.clear()
        self.last_module = ROOT

    @property
    def current(self) -> str:
        """Qualified name of the innermost running module (``<model>`` for the root)."""
        return self._stack_names[-1] if self._stack_names else ROOT

    def call_site(self, function: str) -> str:
        """Name the next call of *function* in the current module: ``path:function#k``."""
        path = self.current
        self._calls[(path, function)] += 1
        k = self._calls[(path, function)]
        index = f"{k}" if k <= MAX_CALL_INDEX else f"{MAX_CALL_INDEX + 1}+"
        return f"{path}:{function}#{index}"
