"""A monitor's running state read back to the host, once, when its results are frozen.

The results are per-feature and per-unit columns of Python numbers, so the state ends up
in numpy whatever happens; this module moves it there first and does the little
arithmetic left (means and sums of squared deviations from the shifted sums) in numpy. On
a few hundred features each torch operation's dispatch costs more than its arithmetic:
:meth:`~scalecheck.monitors._kernels.Accumulator.moments` and the conversions after it
took 0.35 ms per accumulator at the end of an MLP 784 call, and reading the six
accumulators of a reference-case call this way saved 1.0 ms (paired). The fold stays in
torch: it also runs between batches, on the state's device.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from ._kernels import Accumulator

__all__ = ["HostMoments", "host_moments"]


class HostMoments(NamedTuple):
    """:class:`~scalecheck.monitors._kernels.Moments` as float64 numpy arrays, with the
    population variance (0 where nothing was seen)."""

    n: np.ndarray
    mean: np.ndarray
    m2: np.ndarray
    var: np.ndarray
    min: np.ndarray
    max: np.ndarray
    nonfinite: np.ndarray
    zeros: np.ndarray


def host_moments(acc: Accumulator) -> HostMoments:
    """Fold *acc* and return its moments on the host (the values
    :meth:`~scalecheck.monitors._kernels.Accumulator.moments` gives, as numpy arrays).

    Example:
        >>> acc = Accumulator(2)
        >>> acc.add(torch.tensor([[1.0, 10.0], [3.0, 30.0]]), (0,))
        >>> m = host_moments(acc)
        >>> m.mean.tolist(), m.var.tolist(), m.max.tolist()
        ([2.0, 20.0], [1.0, 100.0], [3.0, 30.0])
    """
    acc.fold()
    # copies: a CPU float64 state would otherwise be handed out as views of itself
    n, s1, s2, lo, hi, nonfinite, zeros = (
        np.array(t.detach().to("cpu", torch.float64).numpy(), copy=True)
        for t in (acc.n, acc.s1, acc.s2, acc.lo, acc.hi, acc.nonfinite, acc.zeros)
    )
    shift = (
        acc.shift.detach().to("cpu", torch.float64).numpy()
        if acc.shift is not None
        else np.zeros_like(n)
    )
    # non-finite state is passed on as it is (the callers report it), not warned of
    with np.errstate(all="ignore"):
        seen = n > 0
        safe = np.where(seen, n, 1.0)
        mean = np.where(seen, shift + s1 / safe, 0.0)
        m2 = np.where(seen, np.maximum(s2 - s1 * s1 / safe, 0.0), 0.0)
        var = m2 / safe
    return HostMoments(
        n=n,
        mean=mean,
        m2=m2,
        var=var,
        min=np.broadcast_to(lo, n.shape),
        max=np.broadcast_to(hi, n.shape),
        nonfinite=nonfinite,
        zeros=zeros,
    )
