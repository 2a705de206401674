"""Which functions are nonlinearities, and where each one's derivative vanishes.

The table maps every spelling of a nonlinearity that a
:class:`torch.overrides.TorchFunctionMode` can see (``torch.tanh``, ``Tensor.tanh``,
``Tensor.tanh_``, ``F.tanh``, ``nn.Tanh`` which calls ``torch.tanh``, ...) to one
:class:`Nonlinearity`.

Saturation thresholds are *computed, not guessed*: :func:`zero_derivative_bounds` asks
autograd for the derivative of the real torch function in the dtype the network computes
in, and bisects over the dtype's bit patterns for the last value whose derivative is not
exactly zero. In float32 this gives ``|z| > 9.0108`` for tanh and ``z > 16.636`` /
``z < -88.72`` for sigmoid; in bfloat16, ``|z| > 3.453`` for tanh. The "near-saturated"
band is where the derivative is below :data:`NEAR_FRACTION` of its maximum (tanh:
``|z| > 2.993``), computed the same way in float64.

Example:
    >>> import torch
    >>> b = zero_derivative_bounds("tanh", torch.float32)
    >>> round(b.hi, 4), round(b.lo, 4)
    (9.0108, -9.0108)
    >>> round(near_zero_bounds("tanh").hi, 3)
    2.993
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "NEAR_FRACTION",
    "Bounds",
    "Nonlinearity",
    "lookup",
    "near_zero_bounds",
    "zero_derivative_bounds",
]

#: The near-saturated band: the derivative is below this fraction of its maximum over the
#: real line. 1% means a unit there learns at least 100 times slower than at its steepest
#: point (for tanh: |z| > 2.993, the classic "|z| > 3" rule of thumb).
NEAR_FRACTION = 0.01

#: How far out the bisection looks for a saturation point. Pre-activations beyond 1e4 are
#: counted as saturated when the derivative at 1e4 is already zero.
_FAR = 1e4


@dataclass(frozen=True, slots=True)
class Nonlinearity:
    """One nonlinearity and the facts needed to measure it.

    Attributes:
        name: canonical name used in reports (``"tanh"``).
        family: ``"saturating"`` (tanh, sigmoid, ...: the derivative vanishes for large
            ``|z|``), ``"rectifier"`` (relu, gelu, ...: it vanishes on the negative side) or
            ``"softmax"`` (measured per row).
        reference: out-of-place function used to compute the thresholds.
        params: names of the arguments after the input, in positional order.
    """

    name: str
    family: str
    reference: Callable[..., Tensor]
    params: tuple[str, ...] = ()

    def options(
        self, args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> tuple[tuple[str, Any], ...]:
        """The call's extra arguments as sorted ``(name, value)`` pairs, ``inplace`` dropped."""
        out: dict[str, Any] = {}
        for name, value in zip(self.params, args[1:], strict=False):
            out[name] = value
        for name, value in kwargs.items():
            if name in self.params:
                out[name] = value
        out.pop("inplace", None)
        out.pop("_stacklevel", None)
        return tuple(sorted((k, v) for k, v in out.items() if _hashable(v)))


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


_TABLE: dict[Any, Nonlinearity] = {}
_BY_NAME: dict[str, Nonlinearity] = {}


def _register(nl: Nonlinearity, *spellings: Any) -> None:
    _BY_NAME[nl.name] = nl
    for fn in spellings:
        if fn is not None:
            _TABLE[fn] = nl


def _attr(obj: Any, name: str) -> Any:
    return getattr(obj, name, None)


_T = torch.Tensor
_register(
    Nonlinearity("tanh", "saturating", torch.tanh),
    torch.tanh,
    _T.tanh,
    _T.tanh_,
    F.tanh,
    _attr(torch, "tanh_"),
)
_register(
    Nonlinearity("sigmoid", "saturating", torch.sigmoid),
    torch.sigmoid,
    _T.sigmoid,
    _T.sigmoid_,
    F.sigmoid,
    _attr(torch, "sigmoid_"),
    torch.special.expit,
)
_register(
    Nonlinearity("hardtanh", "saturating", F.hardtanh, ("min_val", "max_val", "inplace")),
    F.hardtanh,
    _attr(F, "hardtanh_"),
)
_register(Nonlinearity("hardsigmoid", "saturating", F.hardsigmoid, ("inplace",)), F.hardsigmoid)
_register(Nonlinearity("softsign", "saturating", F.softsign), F.softsign)
_register(Nonlinearity("logsigmoid", "saturating", F.logsigmoid), F.logsigmoid)
_register(
    Nonlinearity("relu", "rectifier", torch.relu, ()),
    F.relu,
    torch.relu,
    _T.relu,
    _T.relu_,
    _attr(torch, "relu_"),
    _attr(F, "relu_"),
)
_register(Nonlinearity("relu6", "rectifier", F.relu6, ("inplace",)), F.relu6)
_register(
    Nonlinearity("leaky_relu", "rectifier", F.leaky_relu, ("negative_slope", "inplace")),
    F.leaky_relu,
    _attr(F, "leaky_relu_"),
)
_register(Nonlinearity("elu", "rectifier", F.elu, ("alpha", "inplace")), F.elu, _attr(F, "elu_"))
_register(Nonlinearity("celu", "rectifier", F.celu, ("alpha", "inplace")), F.celu)
_register(Nonlinearity("selu", "rectifier", F.selu, ("inplace",)), F.selu, torch.selu)
_register(Nonlinearity("gelu", "rectifier", F.gelu, ("approximate",)), F.gelu)
_register(Nonlinearity("silu", "rectifier", F.silu, ("inplace",)), F.silu)
_register(Nonlinearity("mish", "rectifier", F.mish, ("inplace",)), F.mish)
_register(Nonlinearity("softplus", "rectifier", F.softplus, ("beta", "threshold")), F.softplus)
_register(Nonlinearity("hardswish", "rectifier", F.hardswish, ("inplace",)), F.hardswish)
_register(
    Nonlinearity("softmax", "softmax", F.softmax, ("dim", "_stacklevel", "dtype")),
    F.softmax,
    torch.softmax,
    _T.softmax,
)
del _T


def lookup(func: Any) -> Nonlinearity | None:
    """The :class:`Nonlinearity` a function object stands for, or None."""
    try:
        return _TABLE.get(func)
    except TypeError:  # unhashable callables
        return None


def by_name(name: str) -> Nonlinearity:
    """The :class:`Nonlinearity` registered under *name* (``KeyError`` if none)."""
    return _BY_NAME[name]


def names() -> tuple[str, ...]:
    """All registered nonlinearity names."""
    return tuple(_BY_NAME)


@dataclass(frozen=True, slots=True)
class Bounds:
    """A region of the real line where a derivative vanishes: ``z < lo`` or ``z > hi``.

    ``lo``/``hi`` are the last values (representable in the dtype) whose derivative is not
    zero; ``-inf``/``inf`` when the derivative never vanishes on that side.
    """

    lo: float
    hi: float

    def to_dict(self) -> dict[str, float]:
        """The bounds as a plain dict."""
        return {"lo": self.lo, "hi": self.hi}


def _derivative(
    fn: Callable[..., Tensor], options: tuple[tuple[str, Any], ...], z: Tensor
) -> Tensor:
    z = z.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        y = fn(z, **dict(options))
        (g,) = torch.autograd.grad(y.sum(), z)
    return g


_INT_VIEW = {
    torch.float16: torch.int16,
    torch.bfloat16: torch.int16,
    torch.float32: torch.int32,
    torch.float64: torch.int64,
}


@functools.cache
def zero_derivative_bounds(
    name: str, dtype: torch.dtype, options: tuple[tuple[str, Any], ...] = ()
) -> Bounds:
    """Where the derivative of nonlinearity *name* is exactly zero when computed in *dtype*.

    Uses autograd on the real torch function, so the answer is whatever this torch build
    computes (float32 tanh: ``|z| > 9.0108``; float16: ``4.504``; bfloat16: ``3.453``).
    Bisection runs over the bit patterns of positive values of *dtype*, which are ordered
    like the values themselves, so the bounds are exact representable numbers.
    """
    nl = _BY_NAME[name]
    if nl.family == "softmax":
        raise ValueError("softmax saturation is measured per row, not by bounds")
    if dtype not in _INT_VIEW:
        dtype = torch.float32
    start = _steepest_point(nl, options)
    hi = _last_nonzero(nl, options, dtype, start, +1)
    lo = _last_nonzero(nl, options, dtype, start, -1)
    return Bounds(lo=lo, hi=hi)


def _steepest_point(nl: Nonlinearity, options: tuple[tuple[str, Any], ...]) -> float:
    grid = torch.linspace(-50.0, 50.0, 20001, dtype=torch.float64)
    g = _derivative(nl.reference, options, grid).abs()
    best = g.max()
    candidates = grid[g >= best * (1 - 1e-12)]
    # the candidate closest to zero: stable and central for flat-topped derivatives
    return float(candidates[candidates.abs().argmin()])


def _last_nonzero(
    nl: Nonlinearity,
    options: tuple[tuple[str, Any], ...],
    dtype: torch.dtype,
    start: float,
    side: int,
) -> float:
    """The last value on *side* of *start* whose derivative in *dtype* is non-zero."""
    int_dtype = _INT_VIEW[dtype]
    finfo = torch.finfo(dtype)
    far = min(_FAR, finfo.max / 4)

    def nonzero(magnitude_bits: int) -> bool:
        mag = torch.tensor([magnitude_bits], dtype=int_dtype).view(dtype)
        z = (mag * side).to(dtype)
        return bool(_derivative(nl.reference, options, z)[0] != 0)

    def bits(value: float) -> int:
        return int(torch.tensor([value], dtype=dtype).view(int_dtype)[0])

    def value(b: int) -> float:
        return float(torch.tensor([b], dtype=int_dtype).view(dtype)[0]) * side

    # the near end: the steepest point when it lies on this side, else the tiniest value
    near_mag = start * side if start * side > 0 else finfo.tiny
    lo_b, hi_b = bits(near_mag), bits(far)
    if not nonzero(lo_b):
        # the derivative is already zero right next to the steepest point on this side
        return value(lo_b) if start * side > 0 else 0.0
    if nonzero(hi_b):
        return math.inf * side
    while hi_b - lo_b > 1:  # invariant: nonzero(lo_b) and not nonzero(hi_b)
        mid = (lo_b + hi_b) // 2
        if nonzero(mid):
            lo_b = mid
        else:
            hi_b = mid
    return value(lo_b)


@functools.cache
def near_zero_bounds(name: str, options: tuple[tuple[str, Any], ...] = ()) -> Bounds:
    """Where the derivative of *name* is below :data:`NEAR_FRACTION` of its maximum.

    Computed in float64 by bisection to 1e-9; ``-inf``/``inf`` on a side where the
    derivative never falls that low (e.g. relu on the positive side).
    """
    nl = _BY_NAME[name]
    start = _steepest_point(nl, options)
    peak = float(_derivative(nl.reference, options, torch.tensor([start], dtype=torch.float64))[0])
    level = abs(peak) * NEAR_FRACTION

    def steep(z: float) -> bool:
        g = _derivative(nl.reference, options, torch.tensor([z], dtype=torch.float64))[0]
        return bool(g.abs() >= level)

    out = []
    for side in (-1, +1):
        a, b = start, start + side * _FAR
        if steep(b):
            out.append(math.inf * side)
            continue
        for _ in range(200):
            mid = (a + b) / 2
            if steep(mid):
                a = mid
            else:
                b = mid
            if abs(b - a) < 1e-9:
                break
        # a derivative that steps from steep to flat at 0 (relu) converges onto 0 itself
        out.append(0.0 if abs(a) < 1e-8 else a)
    return Bounds(lo=out[0], hi=out[1])
