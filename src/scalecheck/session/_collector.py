"""Python's cyclic garbage collector, paused while ``diagnose`` runs.

A diagnosis allocates thousands of small, short-lived Python objects (one record per input
feature, per-unit tuples, per-batch bookkeeping). Each allocation counts towards the
collector's thresholds, and every so many collections Python runs a *full* collection,
which walks every tracked object of the process: torch, numpy and the user's session
included. Measured on the MLP 784 benchmark (2-core VM, 169 000 tracked objects after
importing torch and scalecheck): one full collection took 75-100 ms, and one came every
five ``diagnose`` calls, 20 ms per call on average, more than the rest of the fixed cost
of a call. Paused, the objects a call drops are freed by reference counting as before;
a cycle made during the call (none of ours) waits for the next collection after it.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

__all__ = ["paused_collector"]


@contextlib.contextmanager
def paused_collector() -> Iterator[None]:
    """Disable the cyclic garbage collector inside the block, and re-enable it afterwards
    if (and only if) it was enabled before, also when the block raises.

    Example:
        >>> import gc
        >>> with paused_collector():
        ...     gc.isenabled()
        False
        >>> gc.isenabled()
        True
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
