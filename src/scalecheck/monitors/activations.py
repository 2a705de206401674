"""Every nonlinearity call, module or functional, measured at its pre-activation.

Module hooks miss ``torch.tanh(x)`` written inside a ``forward``; a
:class:`torch.overrides.TorchFunctionMode` sees ``nn.Tanh``, ``torch.tanh``, ``F.tanh`` and
``x.tanh_()`` alike. :class:`ActivationMonitor` installs one such mode around each forward
pass and keeps, per *call site* (``module path:function#k``) and per unit, streaming
statistics of the values that go into the nonlinearity:

- moments, min and max (float64 state, float32 per-batch reductions);
- how many values lie where the derivative is *exactly* zero in the dtype computed in, and
  how many in the near-saturated band (:mod:`.nonlinearities`);
- for softmax, how many rows have a maximum probability of exactly 1 (and above 1 - 1e-6);
- a histogram of ``asinh(z)`` over a fixed random sample of the values of each site's
  first calls.

On the first batch only, the mode also traces how the model's inputs flow into the network
(:class:`Structure`): which parametrized operation consumes each input first (the *input
layer*), whether a normalization layer consumes it, whether an integer input is converted
to floating point (a feature) or fed to an embedding (ids), and which nonlinearity sites are
fed by the input layer. Later batches only pay for the nonlinearity lookups.

Counting uses the sign trick from ../shared/PERF_NOTES.md (``(z - t).relu_().sign_().sum()``)
rather than boolean reductions, which are 5-40x slower on CPU. Nothing here synchronizes
with the device: numbers reach the host once, in :meth:`ActivationMonitor.results`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

from ..measurements import ActivationStats, Histogram
from ..session._tracker import ModuleTracker
from . import nonlinearities as nls
from ._host import host_moments
from ._kernels import (
    FLUSH_ELEMENTS,
    Accumulator,
    Moments,
    Pending,
    Stash,
    Workspace,
    fused_mean_var,
    reads_free,
    shifted_sums,
    sum_over,
)
from ._transfer import to_device

__all__ = ["HIST_BINS", "HIST_CALLS", "HIST_RANGE", "ActivationMonitor", "Consumer", "Structure"]

#: Histogram of asinh(z) over [-HIST_RANGE, HIST_RANGE] in HIST_BINS bins
#: (asinh(16) covers |z| up to 4.4e6; values beyond land in the edge bins).
HIST_BINS = 64
HIST_RANGE = 16.0
#: Values sampled per call for the histogram (fixed random positions, seeded), over the
#: first HIST_CALLS calls of each site: enough for a picture of the distribution, at a
#: cost that stays flat however many batches are measured.
HIST_SAMPLE = 4096
HIST_CALLS = 8
#: Sites whose histograms are binned together (at most 16 x 8 x 4096 float32 values, 2 MiB).
_FOLD_SITES = 16
#: Per-unit statistics are kept for at most this many units per site; wider sites keep
#: site-level statistics only.
MAX_UNITS = 8192

_SOFTMAX_NEAR = 1e-6

# Parametrized operations that can be an "input layer", with the memory layout they imply
# for a following 3-D activation (channels first for convolutions and batch norm).
_LAYER_OPS: dict[Any, str] = {}
_NORM_OPS: dict[Any, str] = {}
_LAYOUT: dict[str, str] = {}


def _add(table: dict[Any, str], kind: str, layout: str | None, *fns: Any) -> None:
    for fn in fns:
        if fn is not None:
            table[fn] = kind
    if layout:
        _LAYOUT[kind] = layout


def _get(obj: Any, name: str) -> Any:
    return getattr(obj, name, None)


_add(_LAYER_OPS, "linear", "last", F.linear, F.bilinear)
_add(
    _LAYER_OPS,
    "conv",
    "first",
    F.conv1d,
    F.conv2d,
    F.conv3d,
    F.conv_transpose1d,
    F.conv_transpose2d,
    F.conv_transpose3d,
)
_add(
    _LAYER_OPS,
    "matmul",
    "last",
    torch.matmul,
    torch.Tensor.matmul,
    torch.Tensor.__matmul__,
    torch.Tensor.__rmatmul__,
    torch.mm,
    torch.Tensor.mm,
    torch.bmm,
    torch.addmm,
    torch.einsum,
    # torch.sparse.mm / addmm (a sparse input times a weight) reach the mode as these
    _get(torch._C._sparse, "_sparse_mm"),
    _get(torch._C._sparse, "_sparse_addmm"),
)
_add(_LAYER_OPS, "embedding", "last", F.embedding, F.embedding_bag)
_add(_LAYER_OPS, "one_hot", "last", F.one_hot)
_add(
    _LAYER_OPS,
    "rnn",
    "last",
    *(_get(torch, n) for n in ("lstm", "gru", "rnn_tanh", "rnn_relu")),
    *(_get(torch._VF, n) for n in ("lstm", "gru", "rnn_tanh", "rnn_relu")),
)
_add(
    _LAYER_OPS,
    "attention",
    "last",
    F.multi_head_attention_forward,
    _get(F, "scaled_dot_product_attention"),
)
_add(_NORM_OPS, "batch_norm", "first", F.batch_norm)
_add(_NORM_OPS, "instance_norm", "first", F.instance_norm)
_add(_NORM_OPS, "group_norm", "first", F.group_norm)
_add(_NORM_OPS, "layer_norm", "last", F.layer_norm, _get(F, "rms_norm"))

# Operations that only move, cast or copy values: an input that passes through them is
# still "the raw input" as far as scale is concerned.
_PASSTHROUGH = {
    "view",
    "reshape",
    "flatten",
    "unflatten",
    "unsqueeze",
    "squeeze",
    "permute",
    "transpose",
    "t",
    "T",
    "mT",
    "contiguous",
    "float",
    "double",
    "half",
    "bfloat16",
    "to",
    "type",
    "clone",
    "__getitem__",
    "expand",
    "expand_as",
    "narrow",
    "select",
    "cat",
    "concat",
    "concatenate",
    "stack",
    "hstack",
    "vstack",
    "detach",
    "requires_grad_",
    "movedim",
    "moveaxis",
    "repeat",
    "split",
    "chunk",
    "unbind",
    "view_as",
    "reshape_as",
    "cpu",
    "cuda",
    "__get__",
}

_CATEGORICAL = {"embedding", "one_hot"}


def _dims_of(
    src: Tensor, out: Tensor, dims: tuple[int | None, ...] | None
) -> tuple[int | None, ...] | None:
    """Which input dimension each dimension of *out* is, given *src*'s (*dims*), for *out*
    computed from *src*. A view of *src* (``permute``, ``transpose``, ``movedim``, ``.T``,
    slicing) is read from its sizes and strides: an output dimension is the source
    dimension with the same size and stride, when exactly one has them. Any other result
    of *src*'s shape (an elementwise operation, a copy, ``.float()``) keeps *src*'s
    dimensions; anything else gives None.

    Example:
        >>> x = torch.zeros(2, 5, 6, 3)
        >>> _dims_of(x, x.permute(0, 3, 1, 2), (0, 1, 2, 3))
        (0, 3, 1, 2)
        >>> _dims_of(x, x.float() / 255, (0, 1, 2, 3))
        (0, 1, 2, 3)
        >>> _dims_of(x, x.reshape(2, 90), (0, 1, 2, 3))  # the merged dimension is none
        (0, None)
        >>> _dims_of(x, x.sum(1), (0, 1, 2, 3)) is None
        True
        >>> s = x.reshape(10, 18).to_sparse()
        >>> _dims_of(s, s * 2, (0, 1))
        (0, 1)
    """
    if dims is None or len(dims) != src.dim():
        return None
    if out.layout != torch.strided or src.layout != torch.strided:
        return dims if out.shape == src.shape else None  # sparse: no strides to read
    try:
        shared = out.device == src.device and out.untyped_storage().data_ptr() == (
            src.untyped_storage().data_ptr()
        )
    except (RuntimeError, NotImplementedError):  # tensors without storage (subclasses)
        shared = False
    if not shared:
        return dims if out.shape == src.shape else None
    found: list[int | None] = []
    for size, stride in zip(out.shape, out.stride(), strict=True):
        same = [
            i
            for i in range(src.dim())
            if src.shape[i] == size and src.stride(i) == stride and size > 1
        ]
        found.append(dims[same[0]] if len(same) == 1 else None)
    if out.shape == src.shape and all(f is None for f in found):
        return dims  # e.g. an in-place result
    return tuple(found)


@dataclass
class Consumer:
    """The first operation that consumed one model input.

    ``raw_axis``: the input's dimension that became this layer's feature dimension (its
    channels for a convolution, its last dimension for a linear layer), followed through
    the permutes, transposes and elementwise operations before it; None where a reshape
    or another operation lost the correspondence. ``fed_shape``: the shape of the tensor
    the layer received (``[N, 784]`` for an ``[N, 1, 28, 28]`` batch flattened).
    """

    op: str
    module: str
    params: tuple[str, ...]
    raw_axis: int | None = None
    fed_shape: tuple[int, ...] = ()


@dataclass
class Structure:
    """How the inputs flow into the network, traced on the first batch."""

    consumers: dict[str, Consumer] = field(default_factory=dict)
    categorical: set[str] = field(default_factory=set)
    converted_to_float: set[str] = field(default_factory=set)
    transformed_by: dict[str, list[str]] = field(default_factory=dict)
    input_layer_sites: dict[str, str] = field(default_factory=dict)  # site -> fed-by module
    layer_params: set[str] = field(default_factory=set)
    normalized_by: dict[str, str] = field(default_factory=dict)  # input -> "module (op)"


@dataclass
class _Site:
    name: str
    module: str
    nl: nls.Nonlinearity
    dtype: torch.dtype
    axis: int | None
    units: int
    exact: nls.Bounds | None
    near: nls.Bounds | None
    moments: Accumulator
    exact_count: Tensor
    near_count: Tensor
    hist: Tensor
    calls: int = 0
    per_unit: bool = True
    rows: Tensor | None = None
    rows_exact: Tensor | None = None
    rows_near: Tensor | None = None
    pending: Pending = field(default_factory=Pending)
    pending_calls: int = 0
    top_pending: Pending = field(default_factory=Pending)
    counts: Stash = field(default_factory=Stash)  # per-call (exact, near), not yet folded
    samples: Tensor | None = None  # values kept for the histogram (see _sample)
    sampled: int = 0  # how many of them are filled and not yet folded
    _zeros: Tensor | None = None  # see no_counts

    def __post_init__(self) -> None:
        self.counts.fold = self.fold_counts

    def no_counts(self) -> Tensor:
        """Per-unit band counts of a call with no value in the band (zeros, cached)."""
        if self._zeros is None:
            self._zeros = torch.zeros(self.units, dtype=torch.float32, device=self.hist.device)
        return self._zeros

    def count(self, exact: Tensor, near: Tensor) -> None:
        """Stash one call's band counts; fold them once the stash is full."""
        if self.counts.push(exact, near):
            self.fold_counts()

    def fold_counts(self) -> None:
        """Add the stashed band counts to :attr:`exact_count` and :attr:`near_count`."""
        if self.counts:
            exact, near = self.counts.take()
            self.exact_count += exact.sum(0, dtype=torch.float64)
            self.near_count += near.sum(0, dtype=torch.float64)


def _two_sided(b: nls.Bounds) -> bool:
    return not math.isinf(b.lo) and not math.isinf(b.hi)


@dataclass
class _Joint:
    """Per-column constants for measuring adjacent sites together: the sites' shifts and
    the centre and half-width of each band, concatenated in column order."""

    shift: Tensor
    exact_centre: Tensor | None  # None: every band is symmetric about 0
    exact_half: Tensor
    near_centre: Tensor | None
    near_half: Tensor

    @classmethod
    def of(cls, sites: list[_Site], z: Tensor) -> _Joint:
        def column(values: list[float]) -> Tensor:
            per_site = torch.tensor(values, dtype=torch.float64)
            return to_device(per_site.repeat_interleave(sites[0].units).to(z.dtype), z.device)

        def centre(bands: list[nls.Bounds]) -> Tensor | None:
            # a centre below 1e-12 of the half-width (a symmetric band computed
            # numerically) changes no comparison: |z| is then used directly
            if all(abs(b.lo + b.hi) <= 1e-12 * (b.hi - b.lo) for b in bands):
                return None
            return column([(b.lo + b.hi) / 2 for b in bands])

        exact = [s.exact for s in sites if s.exact is not None]
        near = [s.near for s in sites if s.near is not None]
        shift = torch.cat([s.moments.shift for s in sites if s.moments.shift is not None])
        return cls(
            shift=shift.to(z.dtype),
            exact_centre=centre(exact),
            exact_half=column([(b.hi - b.lo) / 2 for b in exact]),
            near_centre=centre(near),
            near_half=column([(b.hi - b.lo) / 2 for b in near]),
        )


class ActivationMonitor:
    """Measures every nonlinearity call during the forwards run inside :meth:`watch`.

    Args:
        tracker: names the module running when a nonlinearity is called.
        param_names: ``id(parameter) -> qualified name`` for the user's model.
        device: where the state lives (the model's device).
        seed: seeds the histogram's sample positions.
        on_error: called with an exception raised inside the monitor; the monitor then
            stops measuring (the user's forward is never disturbed).
    """

    def __init__(
        self,
        tracker: ModuleTracker,
        param_names: dict[int, str],
        device: torch.device,
        seed: int,
        on_error: Any,
    ) -> None:
        self.tracker = tracker
        self.param_names = param_names
        self.device = device
        self.workspace = Workspace()  # scratch for per-call temporaries, shared by sites
        self.seed = seed
        self.on_error = on_error
        self.sites: dict[str, _Site] = {}
        self.structure = Structure()
        self.enabled = True
        self.tracing = False
        self._raw: dict[int, tuple[Tensor, str]] = {}
        # for each tensor of _raw: which input dimension each of its dimensions is (None:
        # not one input dimension), see _dims_of
        self._dims: dict[int, tuple[int | None, ...]] = {}
        self._first: dict[int, tuple[Tensor, str]] = {}
        self._layout = "last"
        self._sample_idx: dict[tuple[int, torch.device], Tensor] = {}
        # inputs the model transforms before its first layer: where to capture the tensor
        # that layer really receives, (module, func, call index) -> (input name, position)
        self.captures: dict[tuple[str, Any, int], tuple[str, int]] = {}
        self.pending_seen: dict[str, Tensor] = {}
        self.on_capture: Any = None
        self.batch_index = 0
        #: the batch's padding mask (True = a real position), ``[N, T]``, or None
        self.valid: Tensor | None = None
        self._layer_calls: dict[tuple[str, Any], int] = {}
        self._joint: dict[tuple[str, ...], _Joint] = {}

    # -- the mode -----------------------------------------------------------------------
    def watch(self, inputs: dict[str, Tensor], *, trace: bool, batch_index: int = 0) -> _Mode:
        """A context manager that measures one forward pass.

        Args:
            inputs: the model's input tensors by name (traced when *trace* is true).
            trace: follow the inputs into the network (the first batch).
            batch_index: the batch being measured (passed on to ``on_capture``).
        """
        self.batch_index = batch_index
        self.tracing = trace and self.enabled
        self._raw = {id(t): (t, name) for name, t in inputs.items()} if self.tracing else {}
        self._dims = {key: tuple(range(t.dim())) for key, (t, _) in self._raw.items()}
        self._first = {}
        self._layout = "last"
        self._layer_calls = {}
        return _Mode(self)

    def end_forward(self) -> None:
        """Drop the references the tracer kept during the forward pass."""
        self.tracing = False
        self._layer_calls = {}
        self._raw.clear()
        self._dims.clear()
        self._first.clear()

    def observe_blocks(
        self, z: Tensor, blocks: Sequence[tuple[str, str, str]], fed_by: str | None = None
    ) -> None:
        """Measure several sites whose units are equal, adjacent column blocks of one
        ``[samples, units * len(blocks)]`` tensor (an LSTM's four gates): *blocks* lists
        ``(site name, module, function)`` in column order.

        Once every site has been set up by its first call, the statistics of all blocks
        are computed together: one subtraction, one comparison per band and a few column
        reductions over the whole contiguous tensor, instead of those operations on each
        strided block. The result equals measuring each block on its own, up to rounding.
        """
        width = z.shape[-1] // len(blocks)
        parts = [z[..., i * width : (i + 1) * width] for i in range(len(blocks))]
        sites = []
        for (name, module, function), part in zip(blocks, parts, strict=True):
            nl = nls.by_name(function)
            site = self.sites.get(name)
            if site is None:
                site = self._new_site(name, nl, part, (), dim=part.dim() - 1)
                site.module = module
            if fed_by is not None:
                self.structure.input_layer_sites.setdefault(name, fed_by)
            sites.append(site)
        if not self._joint_ready(sites, z, width):
            for site, part in zip(sites, parts, strict=True):
                self._update(site, part)
            return
        with torch.no_grad(), _no_autocast(z):
            self._process_blocks(sites, z.detach())

    def _joint_ready(self, sites: list[_Site], z: Tensor, width: int) -> bool:
        """Whether *sites* can be measured jointly from *z* (see :meth:`observe_blocks`)."""
        return (
            z.dim() == 2
            and z.dtype in (torch.float32, torch.float64)
            and z.is_contiguous()
            and z.shape[1] == width * len(sites)
            and z.numel() >= FLUSH_ELEMENTS  # smaller calls are buffered instead
            and all(
                s.per_unit
                and s.units == width
                and s.axis == 1
                and s.moments.shift is not None
                and not s.pending
                and s.exact is not None
                and s.near is not None
                and all(_two_sided(b) for b in (s.exact, s.near))
                and s.dtype == z.dtype
                for s in sites
            )
        )

    def _process_blocks(self, sites: list[_Site], z: Tensor) -> None:
        key = tuple(s.name for s in sites)
        joint = self._joint.get(key)
        if joint is None:
            joint = _Joint.of(sites, z)
            self._joint[key] = joint
        g, width = len(sites), sites[0].units
        rows = float(z.shape[0])
        # float32 sums around the shifts, widened when added into the float64 state
        fused = fused_mean_var(z, (0,))
        if fused is None:
            y = torch.sub(z, joint.shift, out=self.workspace.like("y", z))
            first, second = shifted_sums(y, (0,))
        else:
            first, second = fused
        # one unbind per statistic gives every site its view (not one select per site)
        firsts, seconds = first.view(g, width).unbind(0), second.view(g, width).unbind(0)
        blocks = z.view(z.shape[0], g, width)
        # per column, then per block: reducing dims (0, 2) of the [rows, g, width] view at
        # once is nearly twice as slow (81 vs 46 us on [512, 512])
        lo, hi = z.amin(0).view(g, width).amin(1), z.amax(0).view(g, width).amax(1)
        bands = ((joint.exact_centre, joint.exact_half), (joint.near_centre, joint.near_half))
        # a band no block's range crosses holds no value: its counts are zero, no pass.
        # The ranges are read on the CPU only (elsewhere the read would be a host sync per
        # batch): every band is counted there
        crossed = [True, True]
        if reads_free(z):
            ranges = list(zip(lo.tolist(), hi.tolist(), strict=True))
            crossed = [
                any(
                    not (b.lo <= low and high <= b.hi)
                    for b, (low, high) in zip(kind, ranges, strict=True)
                )
                for kind in ([s.exact for s in sites], [s.near for s in sites])
            ]
        counts = []
        distance = None
        for (centre, half), cross in zip(bands, crossed, strict=True):
            if not cross:
                counts.append(z.new_zeros(g, width))
            elif centre is None:
                # a band symmetric about 0 (sigmoid's near band, tanh): |z| once for both
                if distance is None:
                    distance = torch.abs(z, out=self.workspace.like("abs", z))
                flags = torch.gt(distance, half, out=self.workspace.like("beyond", z))
                counts.append(flags.sum(0, dtype=torch.float32).view(g, width))
            else:
                flags = _outside(z, centre, half, self.workspace.like("beyond", z))
                counts.append(flags.sum(0, dtype=torch.float32).view(g, width))
        los, his = lo.unbind(0), hi.unbind(0)
        exact, near = (c.unbind(0) for c in counts)
        for i, site in enumerate(sites):
            if site.calls < HIST_CALLS:
                self._sample(site, blocks[:, i])
            if fused is not None:
                site.moments.add_mean_var(rows, firsts[i], seconds[i], los[i], his[i])
            else:
                site.moments.add_sums(rows, firsts[i], seconds[i], los[i], his[i])
            site.count(exact[i], near[i])
            site.calls += 1

    def _fail(self, exc: BaseException) -> None:
        self.enabled = False
        self.tracing = False
        self.on_error("activation monitor", exc)

    # -- observation ----------------------------------------------------------------------
    def before(
        self,
        nl: nls.Nonlinearity,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> str | None:
        """Measure the input of an elementwise nonlinearity; returns the site name."""
        z = args[0]
        name = self.tracker.call_site(nl.name)
        if self.tracing and id(z) in self._first:
            self.structure.input_layer_sites.setdefault(name, self._first[id(z)][1])
        if nl.family == "softmax":
            return name  # measured after the call, from its output
        site = self.sites.get(name)
        if site is None:
            site = self._new_site(name, nl, z, nl.options(args, kwargs), dim=None)
        self._update(site, z)
        return name

    def after(
        self,
        nl: nls.Nonlinearity,
        name: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        out: Any,
    ) -> None:
        """Measure a softmax call from its input (logits) and output (probabilities)."""
        if not isinstance(out, Tensor):
            return
        z = args[0]
        options = dict(nl.options(args, kwargs))
        dim = options.get("dim")
        if dim is None:
            dim = 0 if z.dim() in (0, 1, 3) else 1
        site = self.sites.get(name)
        if site is None:
            site = self._new_site(name, nl, z, (), dim=dim)
        self._update(site, z)
        with torch.no_grad():
            probs = out.detach()
            top = probs.amax(dim) if probs.dim() > 0 else probs.reshape(1)
            if top.dim() == 0:
                top = top.reshape(1)
            if not site.top_pending.accepts(top.reshape(-1)):
                self._flush(site)
            site.top_pending.push(top.reshape(-1))
            if site.top_pending.full:
                self._flush(site)

    def layer_call(self, func: Any) -> tuple[str, Any, int] | None:
        """Count a call of a layer operation; returns its key ``(module, func, index)``."""
        try:
            if func not in _LAYER_OPS and func not in _NORM_OPS:
                return None
        except TypeError:
            return None
        path = self.tracker.current
        k = self._layer_calls.get((path, func), 0) + 1
        self._layer_calls[(path, func)] = k
        return (path, func, k)

    def capture(
        self, key: tuple[str, Any, int], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        """Hand the tensor a transformed input's first layer receives to ``on_capture``."""
        name, pos = self.captures[key]
        ins = list(_tensors(args, kwargs))
        if pos < len(ins) and self.on_capture is not None:
            self.on_capture(name, ins[pos], self.batch_index)

    def trace(
        self,
        func: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        out: Any,
        layer_key: tuple[str, Any, int] | None = None,
    ) -> None:
        """Follow the inputs one operation further (first batch only)."""
        kind = _LAYER_OPS.get(func) or _NORM_OPS.get(func) if _hashable(func) else None
        ins = list(_tensors(args, kwargs))
        raw = [self._raw[id(t)] for t in ins if id(t) in self._raw]
        params = tuple(self.param_names[id(t)] for t in ins if id(t) in self.param_names)
        is_norm = kind is not None and func in _NORM_OPS
        is_layer = kind is not None and (is_norm or params or kind in _CATEGORICAL)
        if is_layer and kind in _LAYOUT:
            self._layout = _LAYOUT[kind]
        outs = list(_tensors(out, {}))
        module = self.tracker.current
        if raw:
            input_names = {name for _, name in raw}
            if is_norm:
                # A normalization layer right after the input is a transformation for scale
                # purposes: what matters is what the next parametrized layer receives.
                for _src, name in raw:
                    self.structure.normalized_by.setdefault(name, f"{module} ({kind})")
            if is_layer and not is_norm:
                assert kind is not None
                for src, name in raw:
                    if name not in self.structure.consumers:
                        self.structure.consumers[name] = Consumer(
                            kind, module, params, self._raw_axis(src, kind), tuple(src.shape)
                        )
                        self.structure.layer_params.update(params)
                        if (
                            name in self.structure.transformed_by
                            and layer_key is not None
                            and kind not in _CATEGORICAL
                            and src.is_floating_point()
                        ):
                            pos = next(i for i, t in enumerate(ins) if t is src)
                            self.captures[layer_key] = (name, pos)
                            self.pending_seen[name] = src
                    if kind in _CATEGORICAL:
                        self.structure.categorical.add(name)
                for t in outs:
                    self._first[id(t)] = (t, module)
                return
            if not outs:
                return  # .dim(), .is_floating_point(): reads, not transformations
            op_name = _op_name(func)
            for src, name in raw:
                if not src.is_floating_point() and any(t.is_floating_point() for t in outs):
                    self.structure.converted_to_float.add(name)
            if op_name not in _PASSTHROUGH:
                for name in input_names:
                    self.structure.transformed_by.setdefault(name, [])
                    if op_name not in self.structure.transformed_by[name]:
                        self.structure.transformed_by[name].append(op_name)
            first_name = raw[0][1]
            src = raw[0][0]
            for t in outs:
                self._raw[id(t)] = (t, first_name)
                self._dims[id(t)] = _dims_of(src, t, self._dims.get(id(src)))
            return
        fed = [self._first[id(t)] for t in ins if id(t) in self._first]
        if fed and not is_layer:
            for t in outs:
                self._first[id(t)] = (t, fed[0][1])

    def _raw_axis(self, src: Tensor, kind: str) -> int | None:
        """The input dimension that is *src*'s feature dimension for a layer of *kind*
        (channels first for convolutions and batch norm, else the last), or None."""
        dims = self._dims.get(id(src))
        if not dims or src.dim() < 2:
            return None
        axis = dims[1] if _LAYOUT.get(kind) == "first" else dims[-1]
        return axis if axis else None  # 0 is the batch dimension: not features

    # -- state --------------------------------------------------------------------------
    def _new_site(
        self,
        name: str,
        nl: nls.Nonlinearity,
        z: Tensor,
        options: tuple[tuple[str, Any], ...],
        dim: int | None,
    ) -> _Site:
        axis = dim if dim is not None else self._unit_axis(z)
        units = 1 if axis is None else z.shape[axis]
        per_unit = units <= MAX_UNITS
        if not per_unit:
            axis, units = None, 1
        exact = near = None
        if nl.family != "softmax":
            exact = nls.zero_derivative_bounds(nl.name, z.dtype, options)
            near = nls.near_zero_bounds(nl.name, options)
        zeros = torch.zeros(units, dtype=torch.float64, device=self.device)
        site = _Site(
            name=name,
            module=name.split(":", 1)[0],
            nl=nl,
            dtype=z.dtype,
            axis=axis,
            units=units,
            exact=exact,
            near=near,
            moments=Accumulator(
                units, self.device, masked=False, unit_range=False, workspace=self.workspace
            ),
            exact_count=zeros,
            near_count=zeros.clone(),
            hist=torch.zeros(HIST_BINS, dtype=torch.float64, device=self.device),
            per_unit=per_unit,
        )
        if nl.family == "softmax":
            site.rows = torch.zeros((), dtype=torch.float64, device=self.device)
            site.rows_exact = site.rows.clone()
            site.rows_near = site.rows.clone()
        self.sites[name] = site
        return site

    def _unit_axis(self, z: Tensor) -> int | None:
        if z.dim() <= 1:
            return None
        if z.dim() == 2:
            return 1
        if z.dim() >= 4:
            return 1
        return 1 if self._layout == "first" else z.dim() - 1

    def _update(self, site: _Site, z: Tensor) -> None:
        """Add one call's pre-activations to *site*.

        Small calls are copied into a buffer (:class:`~scalecheck.monitors._kernels.Pending`)
        and reduced together; a large one is reduced at once. Either way the values are
        taken before the call runs, so an in-place nonlinearity cannot overwrite them.
        """
        if z.numel() == 0:
            return
        with torch.no_grad():
            zd = z.detach()
            weight = self._padding_weight(zd, site.axis)
            if site.pending.accepts(zd, weight):
                # a copy: the model may still overwrite this tensor in place (an in-place
                # nonlinearity is about to); copying a small tensor is cheap
                site.pending.push(zd.clone(), weight)
                site.pending_calls += 1
                if site.pending.full:
                    self._flush(site)
                return
            self._flush(site)
            self._process(site, zd, weight, 1)

    def _flush(self, site: _Site) -> None:
        with torch.no_grad():
            if site.pending:
                zd, weight = site.pending.take()
                assert zd is not None
                calls, site.pending_calls = site.pending_calls, 0
                self._process(site, zd, weight, calls)
            if site.top_pending:
                (top,) = site.top_pending.take()
                assert top is not None and site.rows is not None
                below_one = 1.0 - torch.finfo(top.dtype).eps / 2  # the largest value below 1
                exact = (top - below_one).clamp_(min=0).sign_().sum(dtype=torch.float64)
                near = (top - (1.0 - _SOFTMAX_NEAR)).clamp_(min=0).sign_().sum(dtype=torch.float64)
                site.rows += top.numel()
                site.rows_exact += exact  # type: ignore[operator]
                site.rows_near += near  # type: ignore[operator]

    def _process(self, site: _Site, zd: Tensor, weight: Tensor | None, calls: int) -> None:
        with _no_autocast(zd):
            axis = site.axis
            if axis is not None and (zd.dim() <= axis or zd.shape[axis] != site.units):
                _collapse(site)
                axis = None
            if axis is None:
                zd_flat = zd.reshape(-1, 1)
                dims: tuple[int, ...] = (0,)
                if weight is not None:
                    weight = weight.expand_as(zd).reshape(-1, 1)
            else:
                zd_flat = zd
                dims = tuple(d for d in range(zd.dim()) if d != axis)
            site.moments.add(zd_flat, dims, weight=weight)
            if site.exact is not None and site.near is not None:
                # reading the range is free on the CPU only; elsewhere it would wait for
                # the device (a host sync per site and batch), and every band is counted
                free = reads_free(zd)
                lowest, highest = _extremes(site.moments.last_range if free else None)
                counts = []
                for band in (site.exact, site.near):
                    if counts and band == site.exact:
                        # piecewise-linear functions (relu, hardtanh) have one band
                        counts.append(counts[0])
                    elif band.lo <= lowest and highest <= band.hi:
                        # nothing beyond the band: the batch's range says so, no pass
                        counts.append(site.no_counts())
                    else:
                        counts.append(_beyond(zd_flat, band, dims, weight, self.workspace))
                site.count(*counts)
            if site.calls < HIST_CALLS:
                self._sample(site, zd, weight)
            site.calls += calls

    def _padding_weight(self, z: Tensor, axis: int | None) -> Tensor | None:
        """A 0/1 weight leaving out padded positions, when this batch has a padding mask
        whose shape matches the leading ``[N, T]`` (or ``[T, N]``) dims of *z* and the
        units run along the last dimension."""
        valid = self.valid
        if valid is None or z.dim() < 3 or (axis is not None and axis != z.dim() - 1):
            return None
        shape = [*valid.shape] + [1] * (z.dim() - 2)
        if tuple(z.shape[:2]) == tuple(valid.shape):
            return valid.to(z.dtype if z.is_floating_point() else torch.float32).reshape(shape)
        if tuple(z.shape[:2]) == tuple(valid.shape[::-1]):
            return valid.T.to(torch.float32).reshape(
                [valid.shape[1], valid.shape[0]] + [1] * (z.dim() - 2)
            )
        return None

    def _sample(self, site: _Site, z: Tensor, weight: Tensor | None = None) -> None:
        """Keep up to HIST_SAMPLE of this call's values for the site's histogram (copied,
        float32, padded positions NaN, which the binning leaves out). The histogram itself is
        taken once, over all kept samples, when the site's results are read
        (:meth:`_fold_histograms`): one gather per call instead of six operations.

        The values go into one buffer per site, sized at its first call for HIST_CALLS calls
        like it and grown if a larger call comes: a list of small per-call tensors pinned
        blocks between the model's large temporaries, and the CNN benchmark's backward then
        faulted in 3 000 more fresh pages per batch."""
        source = z
        if weight is not None:
            source = torch.where(weight.expand_as(z) > 0, z.float(), math.nan)
        n = source.numel()
        wanted = min(n, HIST_SAMPLE)
        if site.samples is None or site.samples.numel() - site.sampled < wanted:
            # room for HIST_CALLS calls of this size (a small site keeps a small buffer:
            # 128 KiB per site would be mapped and unmapped with every call); a larger call
            # later grows it, up to HIST_CALLS full samples
            size = min(HIST_CALLS * HIST_SAMPLE, max(HIST_CALLS * wanted, 2 * site.sampled))
            grown = torch.empty(
                max(size, site.sampled + wanted), dtype=torch.float32, device=z.device
            )
            if site.samples is not None and site.sampled:
                grown[: site.sampled].copy_(site.samples[: site.sampled])
            site.samples = grown
        dest = site.samples[site.sampled : site.sampled + wanted]
        if n > HIST_SAMPLE:
            # the same positions for every site of this size (they would be drawn alike
            # from the seeded generator anyway): drawn once per size and device
            key = (n, z.device)
            idx = self._sample_idx.get(key)
            if idx is None:
                gen = torch.Generator().manual_seed(self.seed)
                idx = to_device(torch.randint(n, (HIST_SAMPLE,), generator=gen), z.device)
                self._sample_idx[key] = idx
            if source.dtype == torch.float32:
                torch.take(source, idx, out=dest)
            else:
                dest.copy_(torch.take(source, idx))
        else:
            # a copy: the model may still overwrite z in place
            dest.copy_(source.reshape(-1))
        site.sampled += wanted

    def _fold_histograms(self) -> None:
        """Add the histogram of asinh of each site's kept samples to its ``hist``.

        Up to ``_FOLD_SITES`` sites of one device are binned together: their samples are
        concatenated, each site's asinh values are clamped to ``[-R, R - w/2]`` (R =
        HIST_RANGE, w the bin width: the same edge bins as clamping to ``[-R, R]``), each
        value's bin index ``floor(u / w) + B / 2`` is computed and moved by ``HIST_BINS``
        per site, and one ``bincount`` counts them all. The arithmetic is exact for float32
        ``u`` (``w`` is 1/2), so each value lands in the bin its asinh lies in. (``histc``
        computes ``floor((u + R) / w)``, which rounds ``u + R``: a float32 ``histc`` put
        every value in (-9.5e-7, 0) in the bin above 0, a float64 one those in [-2^-50,
        0).) Measured on the LSTM benchmark's four gate sites (131 072 values): 0.34 ms for
        the indices and the count, against 1.1 ms for a ``histc`` over shifted values and
        1.3 ms for the ``repeat_interleave`` that shifted them. A call's results read all
        sites at once.
        """
        ready = [site for site in self.sites.values() if site.sampled]
        while ready:
            device = ready[0].samples.device  # type: ignore[union-attr]
            group = [s for s in ready if s.samples.device == device][:_FOLD_SITES]  # type: ignore[union-attr]
            ready = [site for site in ready if all(site is not g for g in group)]
            values = torch.cat([site.samples[: site.sampled] for site in group])  # type: ignore[index]
            half = HIST_RANGE / HIST_BINS  # half a bin
            u = _asinh(values).clamp_(-HIST_RANGE, HIST_RANGE - half)  # NaN stays
            # each value's bin, floor(u / w) + B / 2, then moved by B bins per site; a NaN
            # (padding) goes to one more bin, dropped. Exact in float32: w = 2R / B = 1/2,
            # so u / w only doubles u, and the floors are small integers. (floor((u + R) /
            # w), as histc computes it, rounds u + R to R for u in [-2^-50, 0) even in
            # float64, and puts those tiny negative values in the bin above 0)
            index = u.div_(2 * HIST_RANGE / HIST_BINS).floor_().add_(HIST_BINS // 2)
            start = 0
            for k, site in enumerate(group):
                if k:
                    index[start : start + site.sampled] += k * HIST_BINS
                start += site.sampled
            total = HIST_BINS * len(group)
            hist = torch.bincount(index.nan_to_num_(total).long(), minlength=total + 1)
            for site, counts in zip(group, hist[:total].view(len(group), HIST_BINS), strict=True):
                site.hist += counts.to(site.hist.device)
                site.sampled = 0

    # -- results ------------------------------------------------------------------------
    def results(self) -> tuple[ActivationStats, ...]:
        """Move the state to the host once and freeze it into measurement records."""
        for site in self.sites.values():
            self._flush(site)
            site.fold_counts()
        self._fold_histograms()
        # non-finite state (an inf or NaN activation) is turned into None or a flag below,
        # explicitly; numpy's warnings about it would only reach the user as noise
        with np.errstate(all="ignore"):
            out = []
            for site in self.sites.values():
                if site.calls == 0:
                    continue
                m = host_moments(site.moments)
                n, mean, var, lo, hi = m.n, m.mean, m.var, m.min, m.max
                exact, near, hist = (
                    t.detach().to("cpu", torch.float64).numpy()
                    for t in (site.exact_count, site.near_count, site.hist)
                )
                total = float(n.sum())
                collapsed = _collapse_numpy(n, mean, var)
                # units whose every measured value lies where the derivative is exactly zero:
                # "dead" for rectifiers, "saturated" for tanh-like functions
                dead = stuck = 0
                if site.exact is not None:
                    all_flat = int(((exact >= n) & (n > 0)).sum())
                    if site.nl.family == "rectifier":
                        dead = all_flat
                    elif site.nl.family == "saturating":
                        stuck = all_flat
                rows = rows_exact = rows_near = None
                if site.rows is not None:
                    rows = float(site.rows.cpu())
                    rows_exact = (
                        float(site.rows_exact.cpu()) if site.rows_exact is not None else None
                    )
                    rows_near = float(site.rows_near.cpu()) if site.rows_near is not None else None
                fed_by = self.structure.input_layer_sites.get(site.name)
                out.append(
                    ActivationStats(
                        site=site.name,
                        module=site.module,
                        function=site.nl.name,
                        family=site.nl.family,
                        dtype=str(site.dtype).replace("torch.", ""),
                        input_layer=fed_by is not None,
                        fed_by=fed_by,
                        calls=site.calls,
                        count=int(total),
                        units=site.units if site.per_unit else 0,
                        exact_lo=site.exact.lo if site.exact else None,
                        exact_hi=site.exact.hi if site.exact else None,
                        near_lo=site.near.lo if site.near else None,
                        near_hi=site.near.hi if site.near else None,
                        exact_fraction=_ratio(exact.sum(), total) if site.exact else None,
                        near_fraction=_ratio(near.sum(), total) if site.near else None,
                        dead_units=dead,
                        saturated_units=stuck,
                        mean=collapsed[0],
                        std=collapsed[1],
                        min=_finite_or_none(lo.min()) if lo.size else None,
                        max=_finite_or_none(hi.max()) if hi.size else None,
                        unit_mean=_finite_tuple(mean) if site.per_unit else (),
                        unit_std=_finite_tuple(np.sqrt(np.where(var >= 0, var, np.nan)))
                        if site.per_unit
                        else (),
                        unit_exact_fraction=_finite_tuple(exact / np.where(n > 0, n, 1.0), n > 0)
                        if site.per_unit and site.exact
                        else (),
                        histogram=Histogram(
                            lo=-HIST_RANGE,
                            hi=HIST_RANGE,
                            transform="asinh",
                            counts=tuple(int(c) for c in hist),
                        ),
                        nonfinite=_received_nonfinite(n, mean, lo, hi),
                        softmax_rows=int(rows) if rows is not None else None,
                        softmax_saturated_fraction=_ratio(rows_exact, rows) if rows else None,
                        softmax_near_fraction=_ratio(rows_near, rows) if rows else None,
                    )
                )
            return tuple(out)


class _Mode(TorchFunctionMode):
    """The TorchFunctionMode that feeds :class:`ActivationMonitor`.

    Inside ``__torch_function__`` torch disables the mode, so the monitor's own tensor
    operations are not intercepted, and nested calls made by ``func`` (``F.relu`` calling
    ``torch.relu``) are seen once, under the outermost name.
    """

    def __init__(self, monitor: ActivationMonitor) -> None:
        super().__init__()
        self.monitor = monitor

    def __torch_function__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        mon = self.monitor
        nl = nls.lookup(func) if mon.enabled else None
        site = None
        if (
            nl is not None
            and args
            and isinstance(args[0], Tensor)
            and (args[0].is_floating_point())
        ):
            try:
                site = mon.before(nl, args, kwargs)
            except Exception as exc:  # never let the monitor break the user's forward
                mon._fail(exc)
        layer_key = None
        if mon.enabled and (mon.tracing or mon.captures):
            try:
                layer_key = mon.layer_call(func)
                if layer_key is not None and layer_key in mon.captures:
                    mon.capture(layer_key, args, kwargs)
            except Exception as exc:
                mon._fail(exc)
        out = func(*args, **kwargs)
        if mon.enabled:
            try:
                if site is not None and nl is not None and nl.family == "softmax":
                    mon.after(nl, site, args, kwargs, out)
                if mon.tracing:
                    mon.trace(func, args, kwargs, out, layer_key)
            except Exception as exc:
                mon._fail(exc)
        return out


def _asinh(z: Tensor) -> Tensor:
    """``asinh(z)`` from vectorized operations, for the histogram (a new tensor).

    ``torch.asinh`` is not vectorized on CPU: 290-410 us for 32 768 float32 values, against
    about 100 us for ``copysign(log1p(a + a^2 / (1 + sqrt(1 + a^2))), z)`` with ``a = |z|``,
    which keeps its relative precision near 0: within 1.2e-7 of numpy's float64 ``arcsinh``
    on 200 000 float32 values spread over 10^-38..10^38 (subnormals become a signed zero,
    binned with 0, in the bin above it). ``a`` is capped at 1e7 first (``a^2`` stays
    finite; asinh(1e7) = 16.8 lies beyond HIST_RANGE anyway); NaN stays NaN.
    """
    a = z.abs().clamp_(max=1e7)
    a2 = a * a
    u = torch.log1p(a2.div_(torch.sqrt(a2 + 1.0).add_(1.0)).add_(a))
    return torch.copysign(u, z)


def _extremes(pair: tuple[Tensor, Tensor] | None) -> tuple[float, float]:
    """The smallest and largest value of a batch's range (per-unit or site-level tensors);
    NaN (so that no band test passes) when unknown."""
    if pair is None:
        return math.nan, math.nan
    lo, hi = pair
    # a site-level range is one value: read it without a reduction
    return float(lo.min() if lo.dim() else lo), float(hi.max() if hi.dim() else hi)


def _beyond(
    z: Tensor,
    bounds: nls.Bounds,
    dims: tuple[int, ...],
    weight: Tensor | None = None,
    workspace: Workspace | None = None,
) -> Tensor:
    """Per-unit count of values with ``z < bounds.lo`` or ``z > bounds.hi`` (float32: exact
    up to 2^24 values per unit and call; callers add counts up in float64).

    Each count is one comparison written as 0/1 into a scratch tensor the size of *z*
    (from *workspace* when given) and one sum: a two-sided region ``[lo, hi]`` is
    ``|z - centre| > half-width``. NaN is never counted (comparisons with NaN are false):
    non-finite pre-activations are reported by their own statistic.
    """
    lo, hi = bounds.lo, bounds.hi
    if math.isinf(lo) and math.isinf(hi):
        reduced = {d % z.dim() for d in dims}
        kept = [size for d, size in enumerate(z.shape) if d not in reduced]
        return torch.zeros(kept, dtype=torch.float32, device=z.device)
    # the scratch slot the site's moments use too: they are done with it by now, and on a
    # large activation one buffer of its size is kept, not two
    buf = (workspace if workspace is not None else Workspace()).like("y", z)
    if lo == -hi:
        flags = _outside(z, None, hi, buf)
    elif not math.isinf(lo) and not math.isinf(hi):
        flags = _outside(z, (lo + hi) / 2, (hi - lo) / 2, buf)
    elif not math.isinf(hi):
        flags = torch.gt(z, hi, out=buf)
    else:
        flags = torch.lt(z, lo, out=buf)
    if weight is not None:
        flags = flags.mul_(weight)
    return sum_over(flags, dims, torch.float32)


def _outside(z: Tensor, centre: Tensor | float | None, half: Tensor | float, out: Tensor) -> Tensor:
    """1 where ``|z - centre| > half`` (outside a two-sided band; *centre* None means 0),
    else 0, written into *out* (a scratch tensor shaped like *z*). *centre* and *half*
    may be per-column tensors."""
    distance = torch.abs(z, out=out) if centre is None else torch.sub(z, centre, out=out).abs_()
    return torch.gt(distance, half, out=out)


def _collapse(site: _Site) -> None:
    """Turn per-unit state into site-level state (the unit count changed between calls)."""
    m = site.moments.moments()
    site.fold_counts()
    n_total = m.n.sum()
    safe = torch.where(n_total > 0, n_total, 1.0)
    mean = (m.n * m.mean).sum() / safe
    m2 = m.m2.sum() + (m.n * (m.mean - mean) ** 2).sum()
    site.moments = Accumulator.from_moments(
        Moments(
            n=n_total.reshape(1),
            mean=mean.reshape(1),
            m2=m2.reshape(1),
            min=m.min.amin().reshape(1),
            max=m.max.amax().reshape(1),
            nonfinite=m.nonfinite.sum().reshape(1),
            zeros=m.zeros.sum().reshape(1),
        ),
        masked=False,
    )
    site.exact_count = site.exact_count.sum().reshape(1)
    site.near_count = site.near_count.sum().reshape(1)
    site.axis = None
    site.units = 1
    site.per_unit = False
    site._zeros = None


def _collapse_numpy(n: Any, mean: Any, var: Any) -> tuple[float | None, float | None]:
    total = float(n.sum())
    if total <= 0:
        return None, None
    mu = float((n * mean).sum() / total)
    v = float((n * var).sum() / total + (n * (mean - mu) ** 2).sum() / total)
    return _finite_or_none(mu), _finite_or_none(math.sqrt(v)) if v >= 0 else None


def _ratio(a: Any, b: Any) -> float | None:
    if b is None:
        return None
    a, b = float(a), float(b)
    if b <= 0 or not math.isfinite(a):
        return None
    return a / b


def _received_nonfinite(n: np.ndarray, mean: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> bool:
    """Whether a site received NaN or inf: its range (NaN propagates through every
    minimum and maximum) or its mean is not finite. Not its variance: the squares of
    finite values beyond about 1e19 overflow float32 (1e154 float64), and such a site
    has a variance of inf although every value it received was finite.

    Example:
        >>> one = np.ones(1)
        >>> _received_nonfinite(one, one, np.array([-3e20]), np.array([2e20]))
        False
        >>> _received_nonfinite(one, one, np.array([-1.0]), np.array([np.inf]))
        True
    """
    if lo.shape == n.shape:  # per unit: units that saw no value keep +-inf
        lo, hi = lo[n > 0], hi[n > 0]
    elif not (n > 0).any():
        return False
    return not (
        bool(np.isfinite(lo).all() and np.isfinite(hi).all()) and math.isfinite(float(mean.sum()))
    )


def _finite_tuple(values: np.ndarray, keep: np.ndarray | None = None) -> tuple[float | None, ...]:
    """*values* as Python floats, None where not finite (or where *keep* is False):
    column-wise, not one Python call per unit."""
    ok = np.isfinite(values) if keep is None else np.isfinite(values) & keep
    if ok.all():  # the common case: no per-unit Python
        return tuple(values.tolist())
    return tuple(v if k else None for v, k in zip(values.tolist(), ok.tolist(), strict=True))


def _finite_or_none(v: Any) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


def _hashable(obj: Any) -> bool:
    try:
        hash(obj)
    except TypeError:
        return False
    return True


def _op_name(func: Any) -> str:
    return getattr(func, "__name__", None) or type(func).__name__


def _tensors(args: Any, kwargs: dict[str, Any]) -> Iterator[Tensor]:
    """Tensors among the arguments, looking one level into lists, tuples and dicts."""
    for a in (*args, *kwargs.values()) if isinstance(args, (tuple, list)) else (args,):
        if isinstance(a, Tensor):
            yield a
        elif isinstance(a, (list, tuple)):
            for b in a:
                if isinstance(b, Tensor):
                    yield b
                elif isinstance(b, (list, tuple)):
                    yield from (c for c in b if isinstance(c, Tensor))
        elif isinstance(a, dict):
            yield from (b for b in a.values() if isinstance(b, Tensor))


class _no_autocast:
    """Disable autocast for the monitor's own reductions (doubles must stay doubles)."""

    def __init__(self, z: Tensor) -> None:
        self.device_type = z.device.type
        self.ctx: Any = None

    def __enter__(self) -> None:
        try:
            enabled = torch.is_autocast_enabled(self.device_type)
        except TypeError:  # torch < 2.4 takes no device type
            enabled = torch.is_autocast_enabled()
        except RuntimeError:  # a device type autocast does not know (meta): never enabled
            enabled = False
        if enabled:
            self.ctx = torch.autocast(self.device_type, enabled=False)
            self.ctx.__enter__()

    def __exit__(self, *exc: Any) -> None:
        if self.ctx is not None:
            self.ctx.__exit__(*exc)
