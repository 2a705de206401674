"""Pure statistics kernels: tensors in, tensors out, no state.

The monitors keep their state in the records defined here and update it with these
functions. Every state is a set of *sufficient statistics* (counts, means with M2 in the
parallel-variance form, minima, maxima, sums) and every state has an exact, associative
and commutative ``merge`` whose identity is the ``empty`` state, so that states from
several batches, several processes or several machines combine into the answer one pass
over all the data would give (Chan, Golub & LeVeque 1979, "Updating formulae and a pairwise
algorithm for computing sample variances").

Precision (see ../shared/PERF_NOTES.md): per-batch reductions run in at least float32
(float64 for float64 and wide integer inputs), around a per-feature shift close to the data;
the running state is always float64. Variances are computed with a second pass around the
batch mean, never as ``E[x^2] - E[x]^2``, which returns 0 for data with mean 1e4 and std 1
in float32.

Example:
    >>> import torch
    >>> x = torch.tensor([[1.0, 10.0], [3.0, 30.0]])
    >>> m = masked_moments(x, dims=(0,))
    >>> m.mean.tolist(), variance(m).tolist()
    ([2.0, 20.0], [1.0, 100.0])
"""

from __future__ import annotations

import inspect
import math
import weakref
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import Tensor

__all__ = [
    "DEFER_BATCHES",
    "FLUSH_ELEMENTS",
    "FUSED_MAX_OFFSET",
    "GRAM_ROWS",
    "WORKSPACE_MAX_BYTES",
    "Accumulator",
    "Gram",
    "GramAccumulator",
    "Moments",
    "Pending",
    "Stash",
    "Workspace",
    "batch_gram",
    "empty_gram",
    "empty_moments",
    "fast_moments",
    "fused_mean_var",
    "masked_moments",
    "merge_gram",
    "merge_moments",
    "reads_free",
    "shifted_sums",
    "sum_over",
    "variance",
]

_F64 = torch.float64


class Moments(NamedTuple):
    """Streaming per-feature moments (all float64 tensors of shape ``[F]``).

    Attributes:
        n: number of finite values seen per feature.
        mean: their mean.
        m2: sum of squared deviations from the mean (``n * variance``).
        min: smallest finite value (``+inf`` when ``n == 0``).
        max: largest finite value (``-inf`` when ``n == 0``).
        nonfinite: number of NaN or infinite values seen (always 0 for :func:`fast_moments`,
            which lets non-finite values propagate into ``mean`` instead).
        zeros: number of values exactly equal to zero.
    """

    n: Tensor
    mean: Tensor
    m2: Tensor
    min: Tensor
    max: Tensor
    nonfinite: Tensor
    zeros: Tensor


def empty_moments(features: int, device: torch.device | str = "cpu") -> Moments:
    """The identity of :func:`merge_moments` for *features* features."""
    zeros = torch.zeros(features, dtype=_F64, device=device)
    return Moments(
        n=zeros,
        mean=zeros.clone(),
        m2=zeros.clone(),
        min=torch.full((features,), float("inf"), dtype=_F64, device=device),
        max=torch.full((features,), float("-inf"), dtype=_F64, device=device),
        nonfinite=zeros.clone(),
        zeros=zeros.clone(),
    )


#: Dtypes whose values float32 holds exactly: per-batch reductions for them run in float32
#: (fast), the rest (float64, int32, int64) in float64. Running state is always float64.
_EXACT_IN_F32 = {
    torch.float32,
    torch.float16,
    torch.bfloat16,
    torch.uint8,
    torch.int8,
    torch.int16,
    torch.bool,
}


def masked_moments(
    x: Tensor,
    dims: tuple[int, ...],
    valid: Tensor | None = None,
    shift: Tensor | None = None,
) -> Moments:
    """Moments of *x* reduced over *dims*, ignoring (and counting) NaN and inf.

    Per-batch reductions run in float32 for dtypes float32 holds exactly (float32, float16,
    bfloat16, small integers) and in float64 otherwise; the variance is always computed
    around the batch mean (two passes), never as ``E[x^2] - E[x]^2``. Masks are arithmetic
    (0/1 weights) rather than boolean reductions, which are several times slower on CPU.

    Args:
        x: any real tensor (integer, bool, float of any width).
        dims: the dimensions to reduce (at least one); the remaining dimension (at most
            one) indexes the features.
        valid: optional boolean mask broadcastable to *x*; positions where it is False
            (padding) are left out of every statistic, non-finite counts included.
        shift: optional per-feature value close to the data (``[F]``, e.g. an earlier
            batch's mean), subtracted before reducing. Float32 sums of data with a large
            offset lose precision in proportion to the offset; around a shift they do not.

    Returns:
        The batch's :class:`Moments`, shape ``[F]`` (float64).
    """
    work = torch.float32 if x.dtype in _EXACT_IN_F32 else _F64
    x = x.detach().to(work)
    # 1 where finite, 0 where NaN or +-inf: x - x is NaN exactly for non-finite x
    w = (x - x).add_(1.0).nan_to_num_(0.0)
    if valid is not None:
        w = w * valid.to(work)
    present = w > 0
    lo = torch.where(present, x, float("inf")).amin(dims)
    hi = torch.where(present, x, float("-inf")).amax(dims)
    if shift is not None:
        # x - shift is exact in float32 wherever x lies within a factor 2 of the shift
        # (Sterbenz), and small everywhere near it, so the sums below stay accurate
        x = x - _keep(shift.to(work), x, dims)
    xs = x.nan_to_num(0.0, 0.0, 0.0)
    if valid is not None:
        xs = xs * w
    n = w.sum(dims)
    mean = xs.sum(dims) / n.clamp_min(1.0)
    centred = (xs - _keep(mean, x, dims)).mul_(w)
    m2 = centred.square_().sum(dims)
    zeros = (w - xs.abs().sign_()).sum(dims)
    if valid is None:
        total = torch.full_like(n, float(x.numel() // max(1, _numel_kept(x, dims))))
    else:
        total = valid.to(work).expand_as(x).sum(dims)
    back = shift.to(work).to(_F64) if shift is not None else 0.0
    return Moments(
        n=n.to(_F64),
        mean=mean.to(_F64) + back,
        m2=m2.to(_F64),
        min=lo.to(_F64),
        max=hi.to(_F64),
        nonfinite=(total - n).to(_F64),
        zeros=zeros.to(_F64) if shift is None else _zeros(x, w, back, dims),
    )


def _zeros(shifted: Tensor, w: Tensor, shift: Tensor, dims: tuple[int, ...]) -> Tensor:
    """Count of original values equal to zero, from shifted values."""
    target = (-shift).to(shifted.dtype)
    hit = (shifted - _keep(target, shifted, dims)).nan_to_num_(1.0).abs_().sign_()
    return (w - hit * w).sum(dims).to(_F64)


def fast_moments(x: Tensor, dims: tuple[int, ...], weight: Tensor | None = None) -> Moments:
    """Moments of a large float tensor reduced over *dims*, computed in float32.

    No masking of non-finite values: a NaN or infinity anywhere in a feature makes that
    feature's mean and ``m2`` non-finite, which the caller reports. Zeros are not counted
    (``zeros`` is 0). Two passes (sum, then squared deviations around the batch mean) keep
    the variance exact for offset data.

    Args:
        x: the tensor.
        dims: the dimensions to reduce.
        weight: optional 0/1 float mask broadcastable to *x* (padding = 0); it keeps shapes
            static, so masking never synchronizes with the device.
    """
    x = x.detach()
    if x.dtype not in (torch.float32, torch.float64):
        x = x.float()
    if weight is None:
        count = x.numel() // max(1, _numel_kept(x, dims))
        mean = x.sum(dims) / count
        centred = x - _keep(mean, x, dims)
        m2 = centred.square_().sum(dims)
        n = torch.full_like(mean, float(count), dtype=_F64)
        lo, hi = _aminmax(x, dims)
    else:
        w = weight.to(x.dtype).expand_as(x)
        counts = w.sum(dims)
        mean = (x * w).sum(dims) / counts.clamp_min(1)
        centred = (x - _keep(mean, x, dims)) * w
        m2 = centred.square_().sum(dims)
        n = counts.to(_F64)
        lo = torch.where(w > 0, x, float("inf")).amin(dims)
        hi = torch.where(w > 0, x, float("-inf")).amax(dims)
    return Moments(
        n=n,
        mean=mean.to(_F64),
        m2=m2.to(_F64),
        min=lo.to(_F64),
        max=hi.to(_F64),
        nonfinite=torch.zeros_like(n),
        zeros=torch.zeros_like(n),
    )


def merge_moments(a: Moments, b: Moments) -> Moments:
    """Combine two states exactly (Chan et al.'s parallel update), in float64.

    Associative and commutative up to float64 rounding; ``empty_moments`` is the identity.
    """
    n = a.n + b.n
    safe_n = torch.where(n > 0, n, 1.0)
    delta = b.mean - a.mean
    # Where one side is empty its mean must not leak in (it is 0 by construction, but
    # a NaN mean from a non-finite batch must stay visible only where it was measured).
    mean = torch.where(b.n > 0, a.mean + delta * (b.n / safe_n), a.mean)
    mean = torch.where(a.n > 0, mean, b.mean)
    m2 = torch.where(
        (a.n > 0) & (b.n > 0),
        a.m2 + b.m2 + delta * delta * (a.n * b.n / safe_n),
        a.m2 + b.m2,
    )
    return Moments(
        n=n,
        mean=mean,
        m2=m2,
        min=torch.minimum(a.min, b.min),
        max=torch.maximum(a.max, b.max),
        nonfinite=a.nonfinite + b.nonfinite,
        zeros=a.zeros + b.zeros,
    )


def variance(m: Moments) -> Tensor:
    """Population variance per feature (0 where nothing was seen)."""
    return m.m2 / torch.where(m.n > 0, m.n, 1.0)


#: Small batches are reduced together once this many elements have been collected (per
#: stream): 64k float32 values, 256 KiB. On a tiny model each tensor operation's dispatch
#: costs more than its arithmetic, so reducing 16 batches of 4 rows at once is ~16x cheaper
#: than reducing each; memory stays bounded by this constant, whatever the batch count.
FLUSH_ELEMENTS = 1 << 16


class Pending:
    """Tensors of the same trailing shape waiting to be reduced together.

    ``push`` stores one batch's tensors (positionally: e.g. values and padding weights);
    ``take`` concatenates them along dimension 0 and empties the buffer. A tensor that is
    large by itself is never buffered (the caller reduces it at once), and batches whose
    companions differ in kind (a padding weight present or not) are never mixed.

    Example:
        >>> p = Pending()
        >>> p.accepts(torch.zeros(4, 3), None)
        True
        >>> p.push(torch.zeros(4, 3), None)
        >>> p.push(torch.ones(2, 3), None)
        >>> [tuple(t.shape) if t is not None else None for t in p.take()]
        [(6, 3), None]
    """

    def __init__(self) -> None:
        self.items: list[tuple[Tensor | None, ...]] = []
        self.numel = 0
        self.key: tuple[object, ...] | None = None

    @staticmethod
    def _key(x: Tensor, extra: tuple[Tensor | None, ...]) -> tuple[object, ...]:
        return (
            tuple(x.shape[1:]),
            x.dtype,
            tuple(None if e is None else (tuple(e.shape[1:]), e.dtype) for e in extra),
        )

    def accepts(self, x: Tensor, *extra: Tensor | None) -> bool:
        """Whether *x* (with *extra*) may join the buffer: small, and of the same kind."""
        return (
            x.dim() >= 1
            and x.numel() < FLUSH_ELEMENTS
            and (self.key is None or self._key(x, extra) == self.key)
        )

    @property
    def full(self) -> bool:
        """True once the buffer holds enough elements to be worth reducing."""
        return self.numel >= FLUSH_ELEMENTS

    def __bool__(self) -> bool:
        return bool(self.items)

    def push(self, x: Tensor, *extra: Tensor | None) -> None:
        """Store one batch (*x* and tensors that go with it, each of *x*'s length) that
        :meth:`accepts` accepted."""
        self.items.append((x, *extra))
        self.numel += x.numel()
        if self.key is None:  # later batches were checked against it by accepts
            self.key = self._key(x, extra)

    def take(self) -> list[Tensor | None]:
        """The buffered tensors concatenated along dimension 0 (empties the buffer)."""
        out: list[Tensor | None] = []
        for col in zip(*self.items, strict=True):
            if col[0] is None:
                out.append(None)
            else:
                out.append(col[0] if len(col) == 1 else torch.cat(col, 0))  # type: ignore[arg-type]
        self.items, self.numel, self.key = [], 0, None
        return out


#: Largest ``|mean| / std`` of a float32 feature for which :func:`fused_mean_var` trusts
#: the fused kernel. Its variance is taken around its own float32 mean, whose rounding
#: error (a few ulps of ``|mean|``) adds its square to the variance: measured against
#: float64 on 4 to 4096 rows, the relative error of the variance is at most 1.3e-6 up to
#: ``|mean| / std = 1e3``, 8e-5 at 1e4 and 1.7e-3 at 1e5. Features further from zero
#: take the shifted path, which is exact there.
FUSED_MAX_OFFSET = 1e3


def _fusable(x: Tensor, dims: tuple[int, ...]) -> bool:
    """Whether *dims* are the leading dimensions of a contiguous float CPU tensor and the
    last one is kept: the layout ``torch.batch_norm_update_stats`` reduces in one pass."""
    k = len(dims)
    return (
        x.device.type == "cpu"
        and x.dim() >= 2
        and k == x.dim() - 1
        and dims == tuple(range(k))
        and x.is_contiguous()
        and x.dtype in (torch.float32, torch.float64)
        and x.numel() > 0
    )


def _channels(x: Tensor, dims: tuple[int, ...]) -> bool:
    """Whether *x* is a contiguous float CPU tensor ``[N, C, *spatial]`` (at least two
    spatial positions) reduced over every dimension but the channels: the layout
    :func:`_channel_mean_var` serves."""
    return (
        x.device.type == "cpu"
        and x.dim() >= 3
        and dims == (0, *range(2, x.dim()))
        and x.is_contiguous()
        and x.dtype in (torch.float32, torch.float64)
        and x.numel() > 0
        and x[0, 0].numel() > 1
    )


def sum_over(x: Tensor, dims: tuple[int, ...], dtype: torch.dtype | None = None) -> Tensor:
    """``x.sum(dims)``; for ``[N, C, *spatial]`` reduced over all but the channels, as a
    sum over each row of contiguous positions and then over ``N``, which CPU reductions
    do twice as fast (measured on a ``[128, 32, 32, 32]`` float32 0/1 mask: 0.84 ms,
    against 1.64 ms reducing ``(0, 2, 3)`` at once).

    Example:
        >>> x = torch.arange(24.0).reshape(2, 3, 2, 2)
        >>> torch.equal(sum_over(x, (0, 2, 3)), x.sum((0, 2, 3)))
        True
    """
    if _channels(x, dims):
        return x.view(x.shape[0], x.shape[1], -1).sum(2, dtype=dtype).sum(0)
    return x.sum(dims, dtype=dtype)


def _channel_mean_var(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel mean and biased variance of ``[N, C, *spatial]``, in *x*'s dtype.

    ``torch.native_group_norm`` with one group per channel computes the moments of each
    ``(n, c)`` row of spatial positions in one vectorized pass (and writes the normalized
    tensor, dropped at once); the rows are combined per channel in float64 (``var =
    mean_n(var_nc) + mean_n((mean_nc - mean_c)^2)``: every row has the same count). A
    row's variance comes back as ``1 / rstd^2`` (``rstd = inf`` for a constant row:
    variance 0). Reducing ``[N, C, H, W]`` over ``(0, 2, 3)`` otherwise takes four passes
    and a scratch tensor the size of *x* (``x - shift``, its sum, its square, their sum),
    and ``torch.batch_norm_update_stats`` is slower still on that layout. Measured in
    place on the CNN benchmark's ``[128, 32, 32, 32]`` float32 ReLU input: 1.7 ms, against
    3.4 ms for the four passes (the ``out=`` variant of the group norm, which copies its
    result, took 6 ms).
    """
    n, c = x.shape[0], x.shape[1]
    _, rows_mean, rows_rstd = torch.native_group_norm(x, None, None, n, c, x[0, 0].numel(), c, 0.0)
    means = rows_mean.view(n, c).to(_F64)
    mean = means.mean(0)
    var = rows_rstd.view(n, c).to(_F64).pow_(-2).mean(0) + (means - mean).square_().mean(0)
    return mean.to(x.dtype), var.to(x.dtype)


def fused_mean_var(
    x: Tensor, dims: tuple[int, ...], lo: Tensor | None = None, hi: Tensor | None = None
) -> tuple[Tensor, Tensor] | None:
    """Per-feature mean and biased variance of *x* reduced over *dims*, from one fused
    kernel, or None where it does not apply.

    ``torch.batch_norm_update_stats`` computes the mean and then the variance around it
    (two reads, no writes, never ``E[x^2] - E[x]^2``) for the columns of ``[N, F]`` (and
    of ``[N, T, F]`` seen as ``[N*T, F]``), on CPU; the channels of ``[N, C, *spatial]``
    come from the row moments of ``torch.native_group_norm`` (see
    :func:`_channel_mean_var`). None is returned for other layouts, other devices, and
    float32 data where some feature's ``|mean|`` exceeds
    :data:`FUSED_MAX_OFFSET` times its standard deviation (there the variance would lose
    precision; reading that check is free on CPU). Given the per-feature range *lo*, *hi*,
    a constant feature (``lo == hi``) passes the check and gets its exact mean and a
    variance of 0. NaN and inf propagate.

    Example:
        >>> mean, var = fused_mean_var(torch.tensor([[1.0, 10.0], [3.0, 30.0]]), (0,))
        >>> mean.tolist(), var.tolist()
        ([2.0, 20.0], [1.0, 100.0])
    """
    fused = _fused(x, dims, lo, hi)
    return None if fused is None else (fused[0], fused[1])


#: The fast acceptance test of :func:`_fused`: ``var >= mean^2 * margin`` for every
#: feature. For float32 it is the precision limit ``1 / FUSED_MAX_OFFSET^2``; for float64
#: (precise at any offset) it only sends constant features, whose variance is a few ulps
#: of ``mean^2`` at most, to the exact treatment.
_ACCEPT_MARGIN = {torch.float32: FUSED_MAX_OFFSET**-2, torch.float64: 1e-24}


def _fused(
    x: Tensor, dims: tuple[int, ...], lo: Tensor | None = None, hi: Tensor | None = None
) -> tuple[Tensor, Tensor, bool] | None:
    """:func:`fused_mean_var`, plus whether the result is known to be finite.

    The common case costs one small operation and one read of a scalar: ``min(var -
    margin * mean^2) >= 0`` holds when every feature is precise, non-constant (or zero) and
    finite (NaN fails every comparison). Only a batch that fails it pays for the
    per-feature checks.
    """
    if _fusable(x, dims):
        mean, var = torch.batch_norm_update_stats(x.view(-1, x.shape[-1]), None, None, 0.0)
    elif _channels(x, dims):
        mean, var = _channel_mean_var(x)
    else:
        return None
    margin = torch.addcmul(var, mean, mean, value=-_ACCEPT_MARGIN[x.dtype])
    if float(margin.amin()) >= 0:
        return mean, var, True
    constant = None if lo is None or hi is None else torch.eq(lo, hi)
    if x.dtype == torch.float32:
        imprecise = torch.gt(mean * mean, var * FUSED_MAX_OFFSET**2)
        if constant is not None:
            imprecise &= ~constant
        if bool(imprecise.any()):
            return None
    if constant is not None:
        mean = torch.where(constant, lo.to(mean.dtype), mean)  # type: ignore[union-attr]
        var = var.masked_fill_(constant, 0.0)
    return mean, var, False


def shifted_sums(y: Tensor, dims: tuple[int, ...]) -> tuple[Tensor, Tensor]:
    """``(sum(y), sum(y^2))`` reduced over *dims*, in *y*'s float dtype. *y* is scratch
    (already shifted near the data): it may be overwritten.

    Where :func:`fused_mean_var`'s kernel applies, both come from it (``n * mean`` and
    ``n * (var + mean^2)``): measured on a 256x512 float32 tensor, 40 us against 71 us for
    sum, ``square_``, sum, which the other layouts and devices take.

    Example:
        >>> y = torch.tensor([[1.0, -2.0], [3.0, 4.0]])
        >>> s1, s2 = shifted_sums(y.clone(), (0,))
        >>> s1.tolist(), s2.tolist()
        ([4.0, 2.0], [10.0, 20.0])
    """
    if _fusable(y, dims):
        rows = y.view(-1, y.shape[-1])
        mean, var = torch.batch_norm_update_stats(rows, None, None, 0.0)
        n = float(rows.shape[0])
        return mean * n, var.addcmul_(mean, mean).mul_(n)
    return sum_over(y, dims), sum_over(y.square_(), dims)


#: The largest temporary a :class:`Workspace` keeps on a device other than the CPU
#: (bytes); larger ones are allocated per use there. On the CPU every size is kept.
WORKSPACE_MAX_BYTES = 4 << 20


class Workspace:
    """Scratch memory for per-batch temporaries, reused from batch to batch.

    A fresh multi-megabyte temporary per batch is expensive on CPU: the C allocator hands
    large blocks back to the kernel when they are freed, so every batch pays page faults
    to get them again (measured in ``benchmarks/``: taking ``abs`` of a 512x784 float32
    gradient cost 470 us into a fresh tensor, against 80 us for a 512x512 one). Kernels
    write their temporaries into named slots here instead, with ``out=``. Each slot is a
    flat buffer per device and dtype that only grows; :meth:`like` returns a contiguous
    view of it. Peak memory is what the temporaries would take anyway; the buffers are
    freed with the workspace, at the end of the session.

    A slot's contents are valid until the next :meth:`like` of the same slot, so one
    kernel uses distinct slot names for temporaries that are alive at the same time, and
    kernels whose temporaries never overlap share a slot (one buffer the size of the
    largest). On the CPU every size is kept: glibc hands blocks of several megabytes
    back to the kernel when they are freed, between the model's own large temporaries,
    and each batch faulted them in again (measured in place on the CNN benchmark: 2 700
    page faults per batch in the activation monitor, 359 with the 16 MB scratch kept;
    its three ReLU sites took 22 ms per batch with fresh temporaries, 12 ms with kept
    ones). A kept buffer is faulted in once per call instead. On other devices the
    caching allocator already reuses blocks, and temporaries above
    :data:`WORKSPACE_MAX_BYTES` are allocated per use, not held through the backward.

    Example:
        >>> ws = Workspace()
        >>> x = torch.tensor([[-1.0, 2.0], [0.0, -3.0]])
        >>> torch.abs(x, out=ws.like("abs", x)).sum().item()
        6.0
        >>> ws.like("abs", x).data_ptr() == ws.like("abs", x[0]).data_ptr()
        True
    """

    def __init__(self) -> None:
        self._buffers: dict[tuple[str, torch.device, torch.dtype], Tensor] = {}
        # the views handed out, per (slot, shape, dtype, device): a batch asks for the
        # same shapes again, and slicing and viewing a buffer costs more than the lookup
        self._views: dict[tuple[Any, ...], Tensor] = {}

    def like(self, slot: str, t: Tensor, dtype: torch.dtype | None = None) -> Tensor:
        """An uninitialized contiguous tensor with *t*'s shape and device (and *dtype*,
        default *t*'s), backed by slot *slot*."""
        dtype = t.dtype if dtype is None else dtype
        shape = t.shape
        view_key = (slot, shape, dtype, t.device)
        view = self._views.get(view_key)
        if view is not None:
            return view
        n = t.numel()
        if t.device.type != "cpu" and n * dtype.itemsize > WORKSPACE_MAX_BYTES:
            return torch.empty(shape, dtype=dtype, device=t.device)
        key = (slot, t.device, dtype)
        buf = self._buffers.get(key)
        if buf is None or buf.numel() < n:
            buf = torch.empty(n, dtype=dtype, device=t.device)
            self._buffers[key] = buf
            # views of the smaller buffer stay valid but would pin it: drop the slot's
            self._views = {k: v for k, v in self._views.items() if k[0] != slot}
        view = self._views[view_key] = buf[:n].view(shape)
        return view


#: Per-batch results wait in a :class:`Stash` and are folded into the running float64
#: state this many batches at a time: a few vectorized operations per fold, instead of
#: about ten small operations per batch. On CPU each small operation costs 5-10
#: us of dispatch, more than its arithmetic on a few hundred features; timed in place on
#: the MLP 784 benchmark, folding cut about 60 small operations per batch. Memory: this
#: many small per-feature tensors per statistic, whatever the number of batches.
DEFER_BATCHES = 16


class Stash:
    """Per-batch results of fixed shapes, waiting to be folded together.

    :meth:`push` writes one batch's tensors, flattened side by side, into one row of a
    buffer allocated at the first push (one ``torch.cat(..., out=row)``: 11 us for four
    512-wide results, against 26 us for four copies); Python numbers are listed. It
    returns True once :attr:`size` batches wait. :meth:`take` returns each position's rows
    (views of the buffer, shaped ``[batches, *shape]``, in the buffer's dtype: *dtype*, or
    else the items' common float dtype, float64 when an item is an integer) or the list of
    numbers, and empties the stash; items of another layout first call *fold* (which should
    take the waiting ones). Copying keeps the per-batch results short-lived: holding them
    instead pinned small blocks between the model's large temporaries, and the heap grew
    with every batch (on the CNN benchmark, 32 batches: 560 MB more resident memory with
    16 batches held, 143 MB with none).

    Example:
        >>> s = Stash(size=2)
        >>> s.push(torch.tensor([1.0, 2.0]), torch.tensor(0.5), 4.0)
        False
        >>> s.push(torch.tensor([3.0, 5.0]), torch.tensor(1.5), 6.0)
        True
        >>> rows, halves, counts = s.take()
        >>> rows.tolist(), halves.tolist(), counts, bool(s)
        ([[1.0, 2.0], [3.0, 5.0]], [0.5, 1.5], [4.0, 6.0], False)
    """

    def __init__(
        self,
        size: int = DEFER_BATCHES,
        dtype: torch.dtype | None = None,
        fold: Callable[[], None] | None = None,
    ) -> None:
        self.size = size
        self.dtype = dtype  # the buffer's dtype (None: from the first push's items)
        # empties the stash when items of another layout arrive. A bound method of the
        # stash's owner is held weakly: a strong reference would make owner -> stash ->
        # method -> owner a reference cycle, which keeps every tensor of the owner (its
        # state, its scratch buffers) alive after the call until the cyclic collector
        # runs (measured: ~0.7 ms per diagnose call in gen-0 collections, and the CNN's
        # 16 MB scratch held past the call)
        self._fold: Callable[[], Callable[[], None] | None] | None = None
        self.fold = fold
        self.filled = 0
        self._buffer: Tensor | None = None
        self._rows: tuple[Tensor, ...] = ()
        self._layout: list[tuple[int, tuple[int, ...]] | None] = []  # (offset, shape)
        self._key: tuple[Any, ...] | None = None
        self._numbers: list[list[Any]] = []
        self._tensor_items: list[tuple[int, bool]] = []  # (position, is 1-D) per tensor
        self._number_items: list[int] = []  # positions of the numbers

    @property
    def fold(self) -> Callable[[], None] | None:
        """What empties the stash when items of another layout arrive (None: nothing)."""
        return self._fold() if self._fold is not None else None

    @fold.setter
    def fold(self, fold: Callable[[], None] | None) -> None:
        if fold is None:
            self._fold = None
        elif inspect.ismethod(fold):
            self._fold = weakref.WeakMethod(fold)
        else:
            self._fold = lambda: fold

    def _key_of(self, items: tuple[Tensor | float, ...]) -> tuple[Any, ...]:
        if self.dtype is None:
            return tuple(
                (t.shape, t.dtype, t.device) if isinstance(t, Tensor) else None for t in items
            )
        return tuple((t.shape, t.device) if isinstance(t, Tensor) else None for t in items)

    def push(self, *items: Tensor | float) -> bool:
        """Store one batch's items (each tensor shaped as in the first push after the
        stash was last emptied); True when the stash is full."""
        key = self._key_of(items)
        if key != self._key:
            fold = self.fold
            if self.filled and fold is not None:
                fold()
            if self.filled:
                raise ValueError("a stash holds items of one layout; take() them first")
            self._allocate(items, key)
        assert self._buffer is not None
        # 1-D items as they are: even a no-op reshape is one more dispatched operation
        flat = [
            items[i] if one_dim else items[i].reshape(-1)  # type: ignore[union-attr]
            for i, one_dim in self._tensor_items
        ]
        if flat:
            torch.cat(flat, out=self._rows[self.filled])  # type: ignore[arg-type]
        for i in self._number_items:
            self._numbers[i].append(items[i])
        self.filled += 1
        return self.filled >= self.size

    def _allocate(self, items: tuple[Tensor | float, ...], key: tuple[Any, ...]) -> None:
        tensors = [t for t in items if isinstance(t, Tensor)]
        dtype = torch.float32 if self.dtype is None else self.dtype
        device = tensors[0].device if tensors else torch.device("cpu")
        for t in tensors if self.dtype is None else ():
            dtype = torch.promote_types(dtype, t.dtype if t.is_floating_point() else _F64)
        offset, self._layout = 0, []
        for t in items:
            if isinstance(t, Tensor):
                self._layout.append((offset, tuple(t.shape)))
                offset += t.numel()
            else:
                self._layout.append(None)
        self._buffer = torch.empty(self.size, offset, dtype=dtype, device=device)
        self._rows = self._buffer.unbind(0)  # one view per row, made once
        self._numbers = [[] for _ in items]
        self._tensor_items = [
            (i, t.dim() == 1) for i, t in enumerate(items) if isinstance(t, Tensor)
        ]
        self._number_items = [i for i, t in enumerate(items) if not isinstance(t, Tensor)]
        self._key = key

    def take(self) -> list[Any]:
        """The stored rows per position (valid until the next push); empties the stash."""
        assert self._buffer is not None
        n, self.filled = self.filled, 0
        out: list[Any] = []
        for i, place in enumerate(self._layout):
            if place is None:
                out.append(self._numbers[i])
                self._numbers[i] = []
            else:
                offset, shape = place
                size = math.prod(shape)
                out.append(self._buffer[:n, offset : offset + size].reshape(n, *shape))
        return out

    def __bool__(self) -> bool:
        return self.filled > 0

    def __len__(self) -> int:
        return self.filled


def reads_free(t: Tensor) -> bool:
    """Whether reading *t*'s values on the host costs nothing (it lives on the CPU). The
    per-batch paths read small results (a range, a few norms) only then; on another device
    a read waits for every queued kernel, a host sync per batch.

    Example:
        >>> reads_free(torch.zeros(2)), reads_free(torch.zeros(2, device="meta"))
        (True, False)
    """
    return t.device.type == "cpu"


def _plain(x: Tensor, valid: Tensor | None, weight: Tensor | None) -> bool:
    """A batch the accumulator's fast paths take from the first one on: float32 or
    float64 on the CPU, no mask, no padding weight, not empty."""
    return (
        valid is None
        and weight is None
        and x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.float64)
        and x.numel() > 0
    )


class Accumulator:
    """Running per-feature moments as shifted sums, folded from per-batch results.

    The running state is ``n``, ``s1 = sum(x - K)`` and ``s2 = sum((x - K)^2)`` around a
    per-feature shift ``K`` fixed at the first batch (its mean), plus min, max and counts,
    all float64. Around a shift close to the mean the shifted sums are as accurate as a
    two-pass variance. Each batch is reduced at once (its means and variances, or its
    shifted sums, its range and zero counts), but those small per-feature results wait in a
    :class:`Stash` and are folded into the state :data:`DEFER_BATCHES` batches at a time
    (on a tiny model each tensor operation's dispatch costs more than its arithmetic).
    :meth:`moments` folds what waits and converts the state to :class:`Moments`, whose
    exact :func:`merge_moments` combines processes.

    On CPU a batch without NaN or inf takes a fast path (one check read from a reduced
    value: reading a CPU value costs nothing, unlike a device synchronization on a GPU);
    masked batches, and every batch on other devices, take the masked path, which never
    synchronizes.

    With ``unit_range=False`` the minimum and maximum are kept for the whole tensor rather
    than per feature: a full reduction is several times cheaper than one along a strided
    dimension, and activation sites only report their overall range.

    Example:
        >>> acc = Accumulator(2)
        >>> acc.add(torch.tensor([[1.0, 10.0], [3.0, 30.0]]), (0,))
        >>> acc.add(torch.tensor([[5.0, 50.0]]), (0,))
        >>> m = acc.moments()
        >>> m.mean.tolist(), [round(v, 6) for v in variance(m).tolist()]
        ([3.0, 30.0], [2.666667, 266.666667])
    """

    def __init__(
        self,
        features: int,
        device: torch.device | str = "cpu",
        masked: bool = True,
        unit_range: bool = True,
        workspace: Workspace | None = None,
    ) -> None:
        zeros = torch.zeros(features, dtype=_F64, device=device)
        self.workspace = workspace if workspace is not None else Workspace()
        self.masked = masked
        self.unit_range = unit_range
        self.shift: Tensor | None = None
        self._shift_cast: Tensor | None = None
        self.n = zeros
        self.s1 = zeros.clone()
        self.s2 = zeros.clone()
        ranges = features if unit_range else 1
        self._lo = torch.full((ranges,), float("inf"), dtype=_F64, device=device)
        self._hi = torch.full((ranges,), float("-inf"), dtype=_F64, device=device)
        self.nonfinite = zeros.clone()
        self.zeros = zeros.clone()
        # waiting for the next fold: (count, mean, var, lo, hi) and (s1, s2, lo, hi) per
        # batch, counts of non-zero values, and per-feature counts of weighted batches
        self._mean_var = Stash(fold=self.fold)
        self._sums = Stash(fold=self.fold)
        self._nonzero = Stash(fold=self.fold)
        self._weights = Stash(fold=self.fold)
        # per-feature counts of finite and of non-zero values, from the device path of a
        # masked accumulator (_add_finite), and the values per feature in those batches
        self._finite = Stash(fold=self.fold)
        self._finite_count = 0.0
        self._count = 0.0  # values per feature in the stashed unweighted batches
        self._zero_count = 0.0  # values per feature in the batches of _nonzero
        #: the range of the batch added last by the fast path (None: not known), for
        #: callers that can skip work when no value lies beyond a bound
        self.last_range: tuple[Tensor, Tensor] | None = None

    @property
    def lo(self) -> Tensor:
        """Smallest value seen, per feature (or one value with ``unit_range=False``)."""
        self.fold()
        return self._lo

    @property
    def hi(self) -> Tensor:
        """Largest value seen, per feature (or one value with ``unit_range=False``)."""
        self.fold()
        return self._hi

    @property
    def settled_lo(self) -> Tensor:
        """:attr:`lo` over the batches folded so far, without folding: an upper bound of
        the smallest value seen, at most :data:`DEFER_BATCHES` - 1 batches behind."""
        return self._lo

    def add(
        self,
        x: Tensor,
        dims: tuple[int, ...],
        valid: Tensor | None = None,
        weight: Tensor | None = None,
    ) -> None:
        """Add one batch: *x* reduced over *dims* (see :func:`masked_moments` for *valid*;
        *weight* is a 0/1 padding mask for the unmasked, activation path)."""
        x = x.detach()
        self.last_range = None
        if self.shift is None and not _plain(x, valid, weight):
            self._add_first(x, dims, valid, weight)
        elif self.masked:
            self._add_masked(x, dims, valid)
        else:
            self._add_fast(x, dims, weight)

    def _set_shift(self, x: Tensor, dims: tuple[int, ...]) -> bool:
        """Set the shift to the mean of a plain first batch the fused kernel declined (its
        shifted sums then follow, exact around any shift), if every feature's is finite;
        False otherwise. Its own moments, computed in float32, would lose the variance of
        features far from zero (1e-4 relative at 3e4 std)."""
        mean = x.sum(dims) / float(x.numel() // max(1, _numel_kept(x, dims)))
        if not bool(torch.isfinite(mean).all()):
            return False
        self.shift = mean.to(_F64)
        return True

    def _add_first(
        self, x: Tensor, dims: tuple[int, ...], valid: Tensor | None, weight: Tensor | None
    ) -> None:
        """Add a first batch that is not plain (a mask or padding, a device or dtype the
        fast paths do not take) or has non-finite values: the shift is the batch's mean (0
        where not finite), and the batch is added from its own moments, one pass over it,
        not two.

        A plain float batch on the CPU goes the way every later batch goes, and the fused
        kernel's per-feature mean becomes the shift when its result is stashed
        (:meth:`add_mean_var`): no pass of its own (a separate mean pass and the read of its
        finiteness cost 0.1-0.5 ms per accumulator and call; ``masked_moments`` costs 3.7
        ms on a [256, 784] batch, most of it faulting in fresh temporaries). Where the
        kernel declines the batch, :meth:`_set_shift` takes its mean."""
        first = masked_moments(x, dims, valid) if self.masked else fast_moments(x, dims, weight)
        self.shift = torch.where(torch.isfinite(first.mean), first.mean, 0.0)
        self._add_moments(first)

    def _add_moments(self, b: Moments) -> None:
        """Add a batch's :class:`Moments` around this accumulator's shift (at once: sums,
        minima and maxima do not depend on the order batches are added in)."""
        assert self.shift is not None
        d = b.mean - self.shift  # the batch's mean around this accumulator's shift
        self.n.add_(b.n)
        self.s1.add_(b.n * d)
        self.s2.add_(b.m2 + b.n * d * d)
        lo, hi = b.min, b.max
        if not self.unit_range:
            lo, hi = lo.amin().reshape(1), hi.amax().reshape(1)
        torch.minimum(self._lo, lo, out=self._lo)
        torch.maximum(self._hi, hi, out=self._hi)
        self.nonfinite.add_(b.nonfinite)
        self.zeros.add_(b.zeros)

    def _add_fast(self, x: Tensor, dims: tuple[int, ...], weight: Tensor | None) -> None:
        """No masking of non-finite values: they propagate into the sums (and are reported
        as non-finite statistics)."""
        if x.dtype not in (torch.float32, torch.float64):
            x = x.float()
        count: float | Tensor
        if weight is None:
            count = float(x.numel() // max(1, _numel_kept(x, dims)))
            lo, hi = _aminmax(x, dims) if self.unit_range else torch.aminmax(x)
            self.last_range = (lo, hi)
            fused = _fused(x, dims)
            if fused is not None:
                self.add_mean_var(count, fused[0], fused[1], lo, hi)
                return
        if self.shift is None and not self._set_shift(x, dims):
            # a first batch the fused kernel declined, with a non-finite mean
            self._add_first(x, dims, None, weight)
            return
        y = torch.sub(x, _keep(self._shift_as(x.dtype), x, dims), out=self.workspace.like("y", x))
        if weight is not None:
            w = weight.to(x.dtype).expand_as(x)
            y.mul_(w)
            count = w.sum(dims)
            over = dims if self.unit_range else tuple(range(x.dim()))
            lo = torch.where(w > 0, x, float("inf")).amin(over)
            hi = torch.where(w > 0, x, float("-inf")).amax(over)
            self.last_range = (lo, hi)
        self.add_sums(count, *shifted_sums(y, dims), lo, hi)

    def add_sums(
        self, count: float | Tensor, s1: Tensor, s2: Tensor, lo: Tensor, hi: Tensor
    ) -> None:
        """Add a batch already reduced around :attr:`shift`: its *count* of values (a
        number, or per feature), sums ``s1 = sum(x - shift)`` and ``s2 = sum((x -
        shift)^2)``, and its range (per unit, or 0-dim tensors when ``unit_range`` is
        False). For callers that reduce several accumulators' data in one pass."""
        if isinstance(count, Tensor):
            full = self._weights.push(count)
        else:
            self._count += count
            full = False
        if self._sums.push(s1, s2, lo, hi) or full:
            self.fold()

    def add_mean_var(self, count: float, mean: Tensor, var: Tensor, lo: Tensor, hi: Tensor) -> None:
        """Add a batch of *count* values per feature given its per-feature *mean* and
        biased variance *var* (see :func:`fused_mean_var`) and its range (shaped as for
        :meth:`add_sums`). At the next fold its sums around :attr:`shift` become ``count *
        d`` and ``count * (var + d^2)`` with ``d = mean - shift``, in float64."""
        if self.shift is None:
            # the first batch's means are the shift (0 where not finite)
            first = mean.to(_F64)
            self.shift = torch.where(torch.isfinite(first), first, 0.0)
        if self._mean_var.push(float(count), mean, var, lo, hi):
            self.fold()

    def fold(self) -> None:
        """Fold the stashed per-batch results into the running state."""
        if self._mean_var:
            counts, mean, var, lo, hi = self._mean_var.take()
            assert self.shift is not None
            w = torch.tensor(counts, dtype=_F64, device=self.n.device).unsqueeze(1)
            d = mean.to(_F64) - self.shift
            self.n.add_(sum(counts))
            self.s1.add_((d * w).sum(0))
            self.s2.add_(var.to(_F64).addcmul_(d, d).mul_(w).sum(0))
            self._add_range(lo, hi)
        if self._sums:
            s1, s2, lo, hi = self._sums.take()
            self.s1.add_(s1.sum(0, dtype=_F64))
            self.s2.add_(s2.sum(0, dtype=_F64))
            self._add_range(lo, hi)
        if self._count:
            self.n.add_(self._count)
            self._count = 0.0
        if self._weights:
            (weights,) = self._weights.take()
            self.n.add_(weights.sum(0, dtype=_F64))
        if self._nonzero:
            (nonzero,) = self._nonzero.take()
            self.zeros.add_(self._zero_count - nonzero.sum(0, dtype=_F64))
            self._zero_count = 0.0
        if self._finite:
            finite, nonzero = self._finite.take()
            counted = finite.sum(0, dtype=_F64)
            self.n.add_(counted)
            self.nonfinite.sub_(counted).add_(self._finite_count)
            self.zeros.add_(self._finite_count - nonzero.sum(0, dtype=_F64))
            self._finite_count = 0.0

    def _add_range(self, lo: Tensor, hi: Tensor) -> None:
        torch.minimum(self._lo, lo.amin(0), out=self._lo)
        torch.maximum(self._hi, hi.amax(0), out=self._hi)

    def _shift_as(self, dtype: torch.dtype) -> Tensor:
        """The shift in *dtype*, converted once (not once per batch)."""
        assert self.shift is not None
        cached = self._shift_cast
        if cached is None or cached.dtype != dtype:
            cached = self._shift_cast = self.shift.to(dtype)
        return cached

    def _add_masked(self, x: Tensor, dims: tuple[int, ...], valid: Tensor | None) -> None:
        # the shift is None only on a plain first batch (see add), which the fused kernel
        # sets it from or _add_first takes
        work = torch.float32 if x.dtype in _EXACT_IN_F32 else _F64
        xw = x.to(work)
        if valid is None and xw.device.type == "cpu":
            count = float(xw.numel() // max(1, _numel_kept(xw, dims)))
            lo, hi = _aminmax(xw, dims)
            fused = _fused(xw, dims, lo, hi)
            # a finite mean (or sum) means no NaN or inf in the batch (an overflowing sum
            # takes the masked path below, which is exact); reading it is free on CPU
            if fused is not None:
                mean, var, finite = fused
                if finite or math.isfinite(float(mean.sum(dtype=_F64))):
                    self.add_mean_var(count, mean, var, lo, hi)
                    self._add_zeros(count, xw, dims)
                    return
            if self.shift is None and (fused is not None or not self._set_shift(xw, dims)):
                # a first batch with non-finite values
                self._add_first(x, dims, None, None)
                return
            if fused is None:
                y = torch.sub(
                    xw, _keep(self._shift_as(work), xw, dims), out=self.workspace.like("y", xw)
                )
                s1, s2 = shifted_sums(y, dims)
                if math.isfinite(float(s1.sum(dtype=_F64))):
                    self.add_sums(count, s1, s2, lo, hi)
                    self._add_zeros(count, xw, dims)
                    return
        assert self.shift is not None
        if valid is None and not reads_free(xw):
            self._add_finite(xw, dims)
            return
        self._add_moments(masked_moments(xw, dims, valid, shift=self.shift))

    def _add_finite(self, x: Tensor, dims: tuple[int, ...]) -> None:
        """Add a batch on a device where reading a value back costs a synchronization (a
        GPU): one pass masks the non-finite values, the sums around :attr:`shift`, the
        range and the counts of finite and non-zero values are stashed, and nothing is
        read. About 17 operations, each a kernel launch on a GPU, where
        :func:`masked_moments` and adding its result take about 100: on an H200 the MLP
        784 benchmark's input (values and logs) cost 2.9 ms per batch more than the plain
        loop's 0.7 ms, almost all of it launching kernels (benchmarks/README.md).

        The sums are the CPU path's (:func:`shifted_sums` of ``x - shift``, non-finite
        values as 0); ``zeros`` counts exact zeros (a NaN or inf is not one)."""
        assert self.shift is not None
        count = float(x.numel() // max(1, _numel_kept(x, dims)))
        finite = torch.isfinite(x)
        y = torch.where(finite, x - _keep(self._shift_as(x.dtype), x, dims), 0.0)
        s1, s2 = shifted_sums(y, dims)
        lo = torch.where(finite, x, math.inf).amin(dims)
        hi = torch.where(finite, x, -math.inf).amax(dims)
        # counts in float64: float32 stops counting exactly at 2^24 values per feature
        # (a [256, 3, 299, 299] batch has 2.3e7 per channel), and the fold subtracts them
        # from exact totals
        full = self._finite.push(
            sum_over(finite, dims, dtype=_F64), sum_over(x != 0, dims, dtype=_F64)
        )
        self._finite_count += count
        if self._sums.push(s1, s2, lo, hi) or full:
            self.fold()

    def _add_zeros(self, count: float, x: Tensor, dims: tuple[int, ...]) -> None:
        """Count each feature's exact zeros (a CPU batch, see :meth:`_add_masked`)."""
        if int(torch.count_nonzero(x)) == x.numel():
            # no zero anywhere: one read, nothing written (most continuous data); on the
            # MLP 784 benchmark's [256, 784] input this saves writing 0.8 MB per batch
            return
        # zeros as count - sum(x != 0): a comparison written as 0/1 into scratch and a
        # float sum, several times cheaper than (x == 0).sum() on CPU
        self._zero_count += count
        if self._nonzero.push(sum_over(torch.ne(x, 0, out=self.workspace.like("y", x)), dims)):
            self.fold()

    @classmethod
    def from_moments(cls, m: Moments, masked: bool = True) -> Accumulator:
        """An accumulator holding the state *m* (shifted around its own mean)."""
        acc = cls(int(m.n.shape[0]), m.n.device, masked=masked, unit_range=True)
        acc.shift = m.mean.clone()
        acc.n, acc.s2 = m.n.clone(), m.m2.clone()
        acc._lo, acc._hi = m.min.clone(), m.max.clone()
        acc.nonfinite, acc.zeros = m.nonfinite.clone(), m.zeros.clone()
        return acc

    def moments(self) -> Moments:
        """The state as :class:`Moments` (mean and M2 recovered from the shifted sums)."""
        self.fold()
        shift = self.shift if self.shift is not None else torch.zeros_like(self.n)
        safe = self.n.clamp_min(1.0)
        mean = torch.where(self.n > 0, shift + self.s1 / safe, 0.0)
        m2 = (self.s2 - self.s1 * self.s1 / safe).clamp_min(0.0)
        return Moments(
            self.n,
            mean,
            torch.where(self.n > 0, m2, 0.0),
            self._lo.expand_as(self.n),
            self._hi.expand_as(self.n),
            self.nonfinite,
            self.zeros,
        )


def _aminmax(x: Tensor, dims: tuple[int, ...]) -> tuple[Tensor, Tensor]:
    # amin and amax separately: on CPU torch.aminmax along a strided dimension is 4x slower
    # than the two reductions (measured: 329 vs 73 us on a [256, 784] float32 tensor)
    return x.amin(dims), x.amax(dims)


class Gram(NamedTuple):
    """Streaming second-moment matrix of a feature vector, kept around a fixed shift.

    The state holds, over the ``n`` rows whose features were all finite, the sums
    ``s = sum(x - shift)`` and ``g = sum((x - shift)(x - shift)^T)``. Keeping it around a
    shift close to the mean (the first batch's mean) avoids the cancellation that
    ``sum(x x^T)`` suffers for offset data. :func:`merge_gram` re-expresses one state
    around the other's shift exactly, so states with different shifts still merge.
    """

    n: Tensor  # float64 scalar
    shift: Tensor  # float64 [F]
    s: Tensor  # float64 [F]
    g: Tensor  # float64 [F, F]


def empty_gram(features: int, device: torch.device | str = "cpu") -> Gram:
    """The identity of :func:`merge_gram` (shift 0)."""
    return Gram(
        n=torch.zeros((), dtype=_F64, device=device),
        shift=torch.zeros(features, dtype=_F64, device=device),
        s=torch.zeros(features, dtype=_F64, device=device),
        g=torch.zeros(features, features, dtype=_F64, device=device),
    )


def batch_gram(rows: Tensor, shift: Tensor) -> Gram:
    """The Gram state of one batch of *rows* (``[N, F]``) around *shift* (``[F]``).

    Rows with any non-finite feature are left out (and not counted).
    """
    rows = rows.detach().to(_F64)
    finite_rows = torch.isfinite(rows).all(dim=1, keepdim=True)
    centred = torch.where(finite_rows, rows - shift, 0.0)
    return Gram(
        n=finite_rows.sum(dtype=_F64),
        shift=shift,
        s=centred.sum(0),
        g=centred.T @ centred,
    )


def _add_centred(state: Gram, centred: Tensor) -> None:
    """Add float64 data already centred on ``state.shift``: rows ``[R, F]``, or
    ``[N, F, positions]`` whose rows are its ``(n, position)`` pairs (multiplied per
    sample). Rows with a non-finite feature are left out. On CPU a batch whose centred
    sums are finite (so it holds no NaN or inf) takes a fast path with no masking; reading
    that check is free there, unlike a device synchronization."""
    channels = centred.dim() == 3
    s = centred.sum((0, 2)) if channels else centred.sum(0)
    if centred.device.type == "cpu" and math.isfinite(float(s.sum())):
        state.n.add_(float(centred.shape[0] * (centred.shape[2] if channels else 1)))
        state.s.add_(s)
        if channels:
            state.g.add_(torch.bmm(centred, centred.transpose(1, 2)).sum(0))
        else:
            state.g.addmm_(centred.T, centred)
        return
    if channels:
        centred = centred.transpose(1, 2).reshape(-1, centred.shape[1])
    finite_rows = torch.isfinite(centred).all(dim=1, keepdim=True)
    centred = torch.where(finite_rows, centred, 0.0)
    state.n.add_(finite_rows.sum(dtype=_F64))
    state.s.add_(centred.sum(0))
    state.g.addmm_(centred.T, centred)


#: Rows a :class:`GramAccumulator` buffers before adding them to its Gram matrix in one
#: product (1 MiB for 64 float64 features).
GRAM_ROWS = 2048


class GramAccumulator:
    """A :class:`Gram` state fed by batches of rows, centred into a buffer as they come
    and added to the matrix :data:`GRAM_ROWS` rows at a time: one subtraction per batch,
    and one column sum, finiteness check and matrix product per buffer, whatever the batch
    size. Batches of at least :data:`GRAM_ROWS` rows are added at once.

    Example:
        >>> acc = GramAccumulator(2, shift=torch.tensor([1.0, 0.0], dtype=torch.float64))
        >>> acc.add(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
        >>> acc.add(torch.tensor([[float("nan"), 1.0]]))  # left out: a feature is NaN
        >>> g = acc.gram()
        >>> float(g.n), g.s.tolist(), g.g.tolist()
        (2.0, [2.0, 6.0], [[4.0, 8.0], [8.0, 20.0]])
    """

    def __init__(self, features: int, shift: Tensor, rows: int = GRAM_ROWS) -> None:
        self.state = empty_gram(features, shift.device)._replace(shift=shift.to(_F64))
        self.capacity = rows
        self.filled = 0
        self._buffer: Tensor | None = None

    def add(self, rows: Tensor) -> None:
        """Add one batch of rows (``[N, F]``, any float dtype; NaN rows are left out)."""
        rows = rows.detach()
        n = rows.shape[0]
        if n >= self.capacity:
            self._flush()
            # centred into a new features x rows tensor, handed on as its transpose: the
            # product in _add_centred then reads both operands along their contiguous
            # dimension (measured on the LSTM benchmark's 3200 x 32 rows: 265 us against
            # 385 us for a rows x features copy; a buffered batch's rows are not transposed,
            # their strided copy costs more than it saves)
            centred = torch.empty(rows.shape[1], n, dtype=_F64, device=rows.device)
            centred.copy_(rows.T).sub_(self.state.shift.unsqueeze(1))
            _add_centred(self.state, centred.T)
            return
        if self.filled + n > self.capacity:
            self._flush()
        if self._buffer is None:
            shape = (self.capacity, self.state.shift.shape[0])
            self._buffer = torch.empty(shape, dtype=_F64, device=self.state.shift.device)
        torch.sub(rows, self.state.shift, out=self._buffer[self.filled : self.filled + n])
        self.filled += n

    def add_channels(self, x: Tensor) -> None:
        """Add a batch laid out ``[N, C, *spatial]`` whose rows are its ``(n, position)``
        pairs and whose features are its first channels (as many as this accumulator
        has), without moving the channels last: centred in float64 and multiplied per
        sample (``bmm`` of ``[N, F, positions]`` by its transpose). Measured on the CNN
        benchmark's ``[128, 3, 32, 32]`` input: 0.5 ms, against 5.2 ms through a
        channels-last copy of its 131 072 rows."""
        self._flush()
        x = x.detach()
        f = self.state.shift.shape[0]
        # a new float64 tensor, never a view of x (the loader's batch is not written)
        centred = torch.sub(x[:, :f].reshape(x.shape[0], f, -1), self.state.shift.view(1, f, 1))
        _add_centred(self.state, centred)

    def _flush(self) -> None:
        if self.filled and self._buffer is not None:
            _add_centred(self.state, self._buffer[: self.filled])
        self.filled = 0

    def gram(self) -> Gram:
        """The state, every buffered row added."""
        self._flush()
        self._buffer = None
        return self.state


def merge_gram(a: Gram, b: Gram) -> Gram:
    """Combine two Gram states exactly, expressing *b* around *a*'s shift.

    With ``d = b.shift - a.shift``: ``sum(y + d)(y + d)^T = g + s d^T + d s^T + n d d^T``.
    The result keeps *a*'s shift unless *a* is empty, in which case it keeps *b*'s.
    """
    d = b.shift - a.shift
    s_b = b.s + b.n * d
    g_b = b.g + torch.outer(b.s, d) + torch.outer(d, b.s) + b.n * torch.outer(d, d)
    merged = Gram(n=a.n + b.n, shift=a.shift, s=a.s + s_b, g=a.g + g_b)
    empty_a = a.n == 0
    return Gram(
        n=merged.n,
        shift=torch.where(empty_a, b.shift, merged.shift),
        s=torch.where(empty_a, b.s, merged.s),
        g=torch.where(empty_a, b.g, merged.g),
    )


def _keep(reduced: Tensor, like: Tensor, dims: tuple[int, ...]) -> Tensor:
    """Reshape a reduced tensor so that it broadcasts against the original *like*."""
    shape = [1 if d in {dd % like.dim() for dd in dims} else s for d, s in enumerate(like.shape)]
    return reduced.reshape(shape)


def _numel_kept(x: Tensor, dims: tuple[int, ...]) -> int:
    kept = {d % x.dim() for d in dims}
    out = 1
    for d, size in enumerate(x.shape):
        if d not in kept:
            out *= size
    return out
