"""Per-parameter gradient statistics from ``torch.autograd.grad``.

Gradients are computed with :func:`torch.autograd.grad`, never ``.backward()``, so the
user's ``.grad`` fields are untouched. Per batch and per trainable parameter the monitor
adds the squared gradient norm and the count of exactly-zero entries (foreach kernels where
available: one launch for all parameters); for the input layer's weight it also adds each
input feature's squared gradient (the columns of a linear weight, the input channels of a
convolution weight).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..measurements import GradientStats
from ._kernels import DEFER_BATCHES, Stash, Workspace, reads_free

__all__ = ["NORM_SAFE_MIN", "SMALL_GRADIENTS", "GradientMonitor"]

#: A batch whose gradients total at most this many entries (a small model) is copied,
#: flattened side by side, into one row of a float32 buffer, and its statistics are taken
#: a buffer at a time; the squares in float64 at the fold, where no float32 entry's square
#: underflows. Per batch, the per-batch path takes a dozen small operations (a norm and a
#: count per parameter, the input layer's squares), the buffered one a copy. Measured in
#: place during ``diagnose`` (monitor and results, ms per batch, per-batch -> buffered):
#: reference case (53 entries) 0.40 -> 0.08, CNN benchmark (14.7 k) 0.63 -> 0.34, LSTM
#: benchmark (83 k) 0.61 -> 0.38. Without a model, on gradients already in cache, the
#: buffered path is slower from 2^16 entries (2^17: 0.29 against 0.40 ms), so the bound
#: is the smallest power of two above the largest size measured in place, not higher.
SMALL_GRADIENTS = 1 << 17

#: The small path's buffer holds at most this many entries (4 MiB): fewer batches wait
#: when a batch's gradients are larger.
_SMALL_BUFFER = 1 << 20

#: Gradient dtypes the small path copies into float32 exactly.
_SMALL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


class GradientMonitor:
    """Streams gradient statistics for the trainable parameters of a model.

    Args:
        params: ``(qualified name, parameter)`` pairs, trainable ones only.
        device: where the state lives.
    """

    def __init__(self, params: Sequence[tuple[str, nn.Parameter]], device: torch.device) -> None:
        self.names = [n for n, _ in params]
        self.params = [p for _, p in params]
        self.device = device
        k = len(self.params)
        self._norm2 = torch.zeros(k, dtype=torch.float64, device=device)
        self._nonzero = torch.zeros(k, dtype=torch.float64, device=device)
        self._used = [False] * k
        self._batches = 0
        self.input_layer: set[str] = set()
        self._share_name: str | None = None
        self._share_index: int | None = None
        self._share_features = 0
        self._share: Tensor | None = None
        self._index_cache: dict[tuple[int, ...], Tensor] = {}
        # per batch: the others' norms (float32 or, repaired, float64), the counts
        self._stash = Stash(dtype=torch.float64, fold=self._fold)
        self._stash_key: tuple[tuple[int, ...], tuple[int, ...]] = ((), ())
        self._none = torch.zeros(0, device=device)
        # float64: squares of g / max|g| scaled back can lie far below float32's range
        self._share_stash = Stash(dtype=torch.float64, fold=self._fold)
        self.workspace = Workspace()
        # small gradients: whole batches waiting (see SMALL_GRADIENTS), and which
        # parameters each row holds
        self._small: Stash | None = None
        self._small_key: tuple[int, ...] = ()

    def watch_input_layer(self, names: set[str], features: int) -> None:
        """Mark the input layer's parameters; track per-feature gradient shares when the
        weight's input dimension matches the *features* of the (single) feature input."""
        self.input_layer = set(names)
        for name, p in zip(self.names, self.params, strict=True):
            if name in names and p.dim() >= 2 and p.shape[1] == features and features > 0:
                self._share_name = name
                self._share_index = self.names.index(name)
                self._share_features = features
                self._share = torch.zeros(features, dtype=torch.float64, device=self.device)
                break

    def update(self, grads: Sequence[Tensor | None]) -> None:
        """Add one batch of gradients (``None`` for parameters the loss does not reach).

        The per-batch reductions run at once (one foreach norm, a count of non-zero entries
        per parameter, the input layer's per-feature squares); their small results are
        stashed and folded into the float64 state a few batches at a time (see
        :class:`~scalecheck.monitors._kernels.Stash`)."""
        # gradients from autograd.grad (no create_graph) need no detaching
        present = [
            (i, g.detach() if g.requires_grad else g) for i, g in enumerate(grads) if g is not None
        ]
        self._batches += 1
        if not present:
            return
        for i, _ in present:
            self._used[i] = True
        sparse = any(g.layout != torch.strided for _, g in present)
        if not sparse and _small(present):
            self._push_small(present)
            return
        share = self._share_index
        if sparse:
            present = [(i, _stored(g, dense=i == share)) for i, g in present]
        with torch.no_grad():
            # the input layer's weight gets its squared norm from its per-feature squares
            # (one read fewer, and free of float32 underflow); the others from one foreach
            # norm
            others = [(i, g) for i, g in present if i != share]
            counts = torch.stack([_nonzero(g) for _, g in present])
            # the others' counts tell an all-zero gradient (an exact zero norm) from one
            # whose float32 squares underflowed; read only where reading is free, as one
            # host list (on the CPU a small tensor operation costs 15-30 us right after
            # the backward, a list read and a comparison in Python a few)
            nonzero = None
            if reads_free(counts):
                found = counts.tolist()
                nonzero = [c for c, (i, _) in zip(found, present, strict=True) if i != share]
            norms = _safe_norms([g for _, g in others], nonzero)
            for i, g in present:
                if i == share:
                    self._add_share(g)
            key = (tuple(i for i, _ in others), tuple(i for i, _ in present))
            if self._stash and key != self._stash_key:
                self._fold()  # another set of parameters got gradients: fold the others
            self._stash_key = key
            # stacked and copied into the stash's buffers (the stacks are freed at once)
            full = self._stash.push(norms if norms is not None else self._none, counts)
        if full:
            self._fold()

    def _push_small(self, present: list[tuple[int, Tensor]]) -> None:
        """Copy one batch's small gradients into the buffer (see :data:`SMALL_GRADIENTS`)."""
        key = tuple(i for i, _ in present)
        if self._small is not None and key != self._small_key:
            # another set of parameters got gradients: fold the waiting rows, and size the
            # buffer anew for the new set (sized for a small set, it would hold too many
            # rows of a larger one)
            self._fold()
            self._small = None
        if self._small is None:
            total = sum(g.numel() for _, g in present)
            rows = max(1, min(DEFER_BATCHES, _SMALL_BUFFER // max(total, 1)))
            self._small = Stash(size=rows, dtype=torch.float32, fold=self._fold)
        self._small_key = key
        full = self._small.push(*(g for _, g in present))  # detached: no graph is recorded
        if full:
            self._fold()

    def _fold_small(self) -> None:
        """Add the waiting small gradients' statistics to the state: squares in float64
        (exact for any float32 entry), counts of non-zero entries, and the input layer's
        per-feature squares (summed over the batches and every dimension but the weight's
        input dimension)."""
        if self._small is None or not self._small:
            return
        for i, rows in zip(self._small_key, self._small.take(), strict=True):
            squares = rows.double().square_()
            self._norm2[i] += squares.sum()
            self._nonzero[i] += torch.count_nonzero(rows)
            if i == self._share_index and self._share is not None:
                # rows are [batches, *shape]: the weight's input dimension is dimension 2
                self._share += squares.sum(tuple(d for d in range(rows.dim()) if d != 2))

    def _fold(self) -> None:
        """Add the stashed per-batch results to the float64 state."""
        with torch.no_grad():
            self._fold_small()
            if self._stash:
                norms, counts = self._stash.take()
                norm_index, count_index = self._stash_key
                if norm_index:
                    squares = norms.double().square().sum(0)
                    self._norm2.index_add_(0, self._indices(list(norm_index)), squares)
                found = counts.double().sum(0)
                self._nonzero.index_add_(0, self._indices(list(count_index)), found)
            if self._share_stash and self._share is not None:
                assert self._share_index is not None
                columns, factors = self._share_stash.take()
                if any(f != 1.0 for f in factors):  # CPU only: elsewhere they are all 1
                    weight = torch.tensor(factors, dtype=torch.float64, device=self.device)
                    columns = columns.double() * weight.unsqueeze(1)
                columns = columns.sum(0, dtype=torch.float64)
                self._share += columns
                self._norm2[self._share_index] += columns.sum()

    def _indices(self, index: list[int]) -> Tensor:
        key = tuple(index)
        cached = self._index_cache.get(key)
        if cached is None:
            cached = self._index_cache[key] = torch.tensor(index, device=self.device)
        return cached

    def _add_share(self, g: Tensor) -> None:
        """Stash each input feature's squared gradient (the sums over every dimension but
        the weight's input dimension); at the fold they are added to the shares, and their
        total to the weight's squared gradient norm.

        Squaring float32 entries underflows exactly where shares matter most: on the raw
        reference case the first layer's few non-zero gradient entries are so small that
        their float32 squares are 0. On CPU the squares are taken directly (for a linear
        weight ``[out, in]``, as ``rows * (var + mean^2)`` of its columns from one fused
        read, with no squares written to memory), and kept when their total lies in
        ``[2^-60, inf)``: entries whose squares underflow (below 2^-126 each) then change it
        by less than 2^-26 relative for up to 2^40 entries, and nothing overflowed. Other
        gradients (and every gradient on other devices, where reading the total would
        synchronize) are squared as ``g / max|g|``, in [0, 1], with the scale put back in
        float64.
        """
        assert self._share is not None
        dims = tuple(d for d in range(g.dim()) if d != 1)
        if g.dtype not in (torch.float32, torch.float64):
            g = g.float()
        if g.device.type == "cpu":
            if g.dim() == 2 and g.is_contiguous():
                mean, var = torch.batch_norm_update_stats(g, None, None, 0.0)
                columns, factor = var.addcmul_(mean, mean), float(g.shape[0])
            else:
                square = self.workspace.like("square", g)
                columns, factor = torch.mul(g, g, out=square).sum(dims), 1.0
            total = float(columns.sum(dtype=torch.float64)) * factor
            if _DIRECT_MIN <= total < math.inf:
                self._share_stash.push(columns, factor)
                return
        # max|g| from the extremes, exact (no squares); NaN propagates. One aminmax costs a
        # tenth of ``vector_norm(g, inf)``, which is not vectorized on CPU
        lo, hi = torch.aminmax(g)
        top = torch.maximum(hi, -lo)
        scale = torch.where(top > 0, top, 1.0).double()  # a zero gradient adds zeros
        scaled = torch.div(g, scale.to(g.dtype), out=self.workspace.like("square", g))
        self._share_stash.push(scaled.square_().sum(dims).double() * scale.square(), 1.0)

    def results(self) -> tuple[GradientStats, ...]:
        """Move the state to the host once and freeze it."""
        self._fold()
        norm2 = self._norm2.cpu().tolist()
        nonzero = self._nonzero.cpu().tolist()
        with torch.no_grad():
            norms = _safe_norms([p.detach() for p in self.params])
            weights = norms.double().cpu().tolist() if norms is not None else []
        share: tuple[float, ...] = ()
        if self._share is not None:
            s = self._share.cpu().double()
            total = float(s.sum())
            if math.isfinite(total) and total > 0:
                share = tuple(float(v) for v in (s / total).tolist())
        out = []
        b = max(self._batches, 1)
        for i, (name, p) in enumerate(zip(self.names, self.params, strict=True)):
            used = self._used[i]
            numel = p.numel()
            gnorm = math.sqrt(norm2[i] / b) if used else None
            finite = gnorm is None or math.isfinite(gnorm)
            wnorm = weights[i]
            out.append(
                GradientStats(
                    name=name,
                    module=name.rsplit(".", 1)[0] if "." in name else "<model>",
                    shape=tuple(p.shape),
                    numel=numel,
                    used=used,
                    grad_norm=gnorm if finite else None,
                    grad_rms=gnorm / math.sqrt(numel)
                    if (gnorm is not None and finite and numel)
                    else None,
                    weight_norm=wnorm,
                    weight_rms=wnorm / math.sqrt(numel) if numel else None,
                    ratio=gnorm / wnorm if (gnorm is not None and finite and wnorm > 0) else None,
                    zero_fraction=(1.0 - nonzero[i] / (numel * b))
                    if used and finite and numel
                    else None,
                    nonfinite=not finite,
                    input_layer=name in self.input_layer,
                    feature_share=share if name == self._share_name else (),
                )
            )
        return tuple(out)


#: The smallest total of the input layer's float32 squared gradient kept as computed
#: directly (see :meth:`GradientMonitor._add_share`).
_DIRECT_MIN = 2.0**-60


def _stored(g: Tensor, dense: bool = False) -> Tensor:
    """A gradient with the same squared norm and the same non-zero entries as *g*, for the
    per-batch statistics: a sparse COO gradient (``nn.Embedding(sparse=True)``) is
    represented by its coalesced values (the entries it does not store are zeros, and the
    statistics count them against the parameter's size), other sparse layouts and the
    input layer's weight (whose shares need its shape) are made dense. On a GPU,
    coalescing reads the number of distinct indices back (a synchronization per batch, for
    sparse gradients only); the dense alternative would allocate the whole table's
    gradient every batch, which is what sparse embeddings exist to avoid.

    Example:
        >>> indices, values = torch.tensor([[0, 0, 2]]), torch.tensor([1.0, 2.0, 0.0])
        >>> with torch.sparse.check_sparse_tensor_invariants():
        ...     g = torch.sparse_coo_tensor(indices, values, (4,))
        >>> _stored(g).tolist(), _stored(g, dense=True).tolist()
        ([3.0, 0.0], [3.0, 0.0, 0.0, 0.0])
    """
    if g.layout == torch.strided:
        return g
    if g.layout == torch.sparse_coo and not dense:
        return g.coalesce().values()
    return g.to_dense()


def _small(present: list[tuple[int, Tensor]]) -> bool:
    """Whether a batch's gradients take the small path (see :data:`SMALL_GRADIENTS`):
    float32 or narrower floats on one device, at most that many entries in all."""
    device = present[0][1].device
    total = 0
    for _, g in present:
        if g.dtype not in _SMALL_DTYPES or g.device != device:
            return False
        total += g.numel()
    return total <= SMALL_GRADIENTS


def _nonzero(g: Tensor) -> Tensor:
    """How many entries of *g* are not exactly zero (an int64 scalar, exact at any size).

    ``count_nonzero`` reads *g* once and writes nothing. Timed per batch right after the
    backward of the MLP 784 benchmark, it took 160 us on the 512x784 input-layer gradient,
    against 358 us for a comparison written as 0/1 into scratch and summed (faster in a
    tight loop, but writing 1.6 MB to memory the backward has just evicted costs more
    than it saves). A NaN entry counts as non-zero; the caller reports non-finite
    gradients from their norm.
    """
    return torch.count_nonzero(g)


def _norm_list(
    tensors: list[Tensor], ord: float = 2.0, dtype: torch.dtype | None = None
) -> list[Tensor]:
    """One norm per tensor (foreach kernel where the tensors allow it), accumulated and
    returned in *dtype* when given."""
    if not tensors:
        return []
    try:
        if dtype is None:
            return list(torch._foreach_norm(tensors, ord))
        return list(torch._foreach_norm(tensors, ord, dtype=dtype))
    except (RuntimeError, TypeError, AttributeError):  # mixed devices, old torch
        return [torch.linalg.vector_norm(t, ord, dtype=dtype) for t in tensors]


#: Float32 gradient norms from ``[NORM_SAFE_MIN, inf)`` are kept as computed: their float32
#: sum of squares is at least 2^-60, and entries whose squares underflow (below 2^-126
#: each) then change it by less than 2^-26 relative for up to 2^40 entries (the bound
#: :meth:`GradientMonitor._add_share` uses). Below it, or where the squares overflowed
#: (entries around 1e18 and larger: inf), the norm is taken again in float64.
NORM_SAFE_MIN = 2.0**-30


def _safe_norms(tensors: list[Tensor], nonzero: Sequence[int] | None = None) -> Tensor | None:
    """Each tensor's 2-norm, free of float32 underflow and overflow, stacked (None for no
    tensors). *nonzero*: their counts of non-zero entries, when known (an all-zero
    tensor's norm is then known to be exactly 0).

    One foreach norm in float32 (half precision too: a bfloat16 accumulation was 2e-3
    off); on the CPU, where the read costs nothing, the few norms below
    :data:`NORM_SAFE_MIN` (but not those of all-zero tensors) or at inf are taken again in
    float64. On other devices the foreach norm accumulates in float64 at once: deciding
    which to redo would be a host read per batch. Measured on the MLP 784 benchmark's six
    gradients after its backward: 210 us in float32, 467 us in float64. The CPU's check
    reads the norms as one list and compares them in Python: as five tensor operations
    (compare, combine, ``any``) it took 165 us per batch in place, each small operation
    15-40 us on code and data the backward has just evicted from the cache.

    Example:
        >>> norms = _safe_norms([torch.full((4,), 1e-30), torch.full((4,), 1e30)])
        >>> [f"{v:.3g}" for v in norms.tolist()]  # float32 squares: 0 and inf
        ['2e-30', '2e+30']
    """
    if not tensors:
        return None
    if not reads_free(tensors[0]):
        return torch.stack(_norm_list(tensors, dtype=torch.float64))
    dtype = None
    if any(t.dtype in (torch.float16, torch.bfloat16) for t in tensors):
        # one dtype for the foreach kernel, never narrower than a tensor's own
        wide = any(t.dtype == torch.float64 for t in tensors)
        dtype = torch.float64 if wide else torch.float32
    norms = torch.stack(_norm_list(tensors, dtype=dtype))
    values = norms.tolist()
    counts = nonzero if nonzero is not None else [1] * len(values)
    # NaN compares false both ways: a NaN norm is reported as it is
    redo = [
        i
        for i, (v, c) in enumerate(zip(values, counts, strict=True))
        if v == math.inf or (v < NORM_SAFE_MIN and c > 0)
    ]
    if not redo:
        return norms
    norms = norms.double()
    for i in redo:
        if tensors[i].dtype != torch.float64 and dtype != torch.float64:
            # (a norm accumulated in float64 is right as it is)
            norms[i] = torch.linalg.vector_norm(tensors[i], dtype=torch.float64)
    return norms
