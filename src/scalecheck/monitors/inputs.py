"""Per-feature statistics of the tensors the model receives.

For each input tensor that carries features (see :class:`~scalecheck.measurements.InputStats`
for how that is decided) the monitor keeps, per feature: float64 moments (each batch
reduced in float32 for float32 data, to about 1e-6 relative, see
:func:`~scalecheck.monitors._kernels.fused_mean_var`; in float64 when the first batch's
ranges say the variances would leave float32's range, see :data:`FLOAT32_RANGE`) with
non-finite values excluded and counted, exact min, max and zero count, the moments of
``ln x`` over the positive values (for the log-transform fix), and a shifted Gram matrix of
``[x_1 .. x_k]`` for up to :data:`MAX_GRAM_FEATURES` features (of a wider input, the first
that vary in the first batch: see :func:`_gram_columns`), from which the condition number of
the second-moment matrix of ``[x, 1]`` is computed raw and standardized.

Features are the columns of ``[N, F]``, the channels of ``[N, C, ...]`` (when the model's first
layer is a convolution or batch norm, or a linear layer that receives an image ``[N, C, H,
W]`` flattened whole, as ``torchvision.transforms.Normalize`` takes them) and the last
dimension of ``[N, T, F]`` otherwise. When
the model permutes its input before that layer (``[N, H, W, C]`` images permuted for a
convolution, ``[N, F, T]`` sequences transposed for a linear layer), the features are the
input dimension that becomes the layer's own (``Consumer.raw_axis``, traced on the first
batch).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .._records import from_columns
from ..errors import BatchError
from ..measurements import FeatureStats, InputStats, feature_kappa
from ._host import HostMoments, host_moments
from ._kernels import Accumulator, Gram, GramAccumulator, Pending, Workspace
from ._transfer import to_device

__all__ = ["MAX_GRAM_FEATURES", "InputMonitor", "InputPlan", "feature_axis", "kappa_from_gram"]

#: The second-moment matrix is kept for at most this many features per input (memory and
#: time grow with the square); per-feature statistics are kept for all features.
MAX_GRAM_FEATURES = 64

#: A float32 input whose first batch has some feature spanning a range beyond these bounds
#: is reduced in float64 from then on. Each batch's variance comes out of the fused kernel
#: in the data's dtype, and a batch of ``n`` values spanning ``r`` has a variance between
#: ``r^2 / (2 n)`` and ``r^2 / 4``: float32 holds it from 2^-126 (normal numbers) to 2^127.
#: Above 2^60 it would overflow to inf for a range 2^4 times the first batch's; below 2^-40
#: it would lose precision or underflow to 0 (a varying feature read as constant) for a
#: batch of 2^20 rows at a range 2^3 times smaller. Values at either scale are far outside
#: anything SC101 calls well scaled, so the float64 copy is paid only by inputs it flags.
FLOAT32_RANGE = (2.0**-40, 2.0**60)


@dataclass
class InputPlan:
    """What to measure for one input tensor, decided on the first batch."""

    name: str
    kind: str
    axis: int | None
    features: int
    dtype: str
    shape: tuple[int, ...]
    #: count the positions of each sample (C x H x W of an image flattened into a linear
    #: layer) that are 0 in every sample
    count_blank: bool = False
    #: the per-sample shape each batch is viewed in first (what a layer receives as an
    #: image flattened whole, viewed as the image); None: as it comes
    view: tuple[int, ...] | None = None


def feature_axis(x: Tensor, channels_first: bool) -> int | None:
    """The dimension that indexes features in *x* (None: the tensor is one feature).

    Example:
        >>> feature_axis(torch.zeros(8, 3), channels_first=False)
        1
        >>> feature_axis(torch.zeros(8, 3, 32, 32), channels_first=True)
        1
        >>> feature_axis(torch.zeros(8, 50, 6), channels_first=False)
        2
    """
    if x.dim() <= 1:
        return None
    if x.dim() == 2:
        return 1
    return 1 if channels_first else x.dim() - 1


class _State:
    def __init__(self, plan: InputPlan, device: torch.device, workspace: Workspace) -> None:
        f = plan.features
        self.moments = Accumulator(f, device, workspace=workspace)
        self.log_moments = Accumulator(f, device, workspace=workspace)
        self.gram_features = min(f, MAX_GRAM_FEATURES)
        self.gram: GramAccumulator | None = None
        # the features the Gram matrix is kept for (None: the first gram_features)
        self.gram_index: Tensor | None = None
        self.samples = 0
        self.reductions = 0
        self.log_wanted = True
        self.pending = Pending()
        self.nonzero_positions: Tensor | None = None  # [C x H x W] bool: ever non-zero
        self.wide: bool | None = None  # reduced in float64 (see FLOAT32_RANGE); None: unknown


def _gram_columns(state: _State) -> Tensor | None:
    """The features the second-moment matrix is kept for, when an input has more than
    :data:`MAX_GRAM_FEATURES`: the first that vary in the first reduction (minimum below
    maximum), then, if fewer vary, the first constant ones (which the condition number
    leaves out). None: the first ``gram_features``, when those are the ones.

    The first 64 features of a flattened image are its top rows, blank in every sample:
    the matrix of those alone has no varying feature, and the input's condition number
    read ``inf``. Called once, at the first reduction: one read of ``[F]`` flags, on any
    device.

    Example:
        >>> plan = InputPlan("input", "feature", 1, 70, "float32", (4, 70))
        >>> state = _State(plan, torch.device("cpu"), Workspace())
        >>> x = torch.zeros(4, 70)
        >>> x[:, 3:] = torch.arange(4.0).unsqueeze(1)  # features 0-2 never change
        >>> state.moments.add(x, (0,))
        >>> _gram_columns(state).tolist()[:5], len(_gram_columns(state))
        ([3, 4, 5, 6, 7], 64)
    """
    features = int(state.moments.n.shape[0])
    wanted = state.gram_features
    if features <= wanted:
        return None
    varying = (state.moments.hi > state.moments.lo).tolist()
    chosen = [i for i, v in enumerate(varying) if v][:wanted]
    if len(chosen) < wanted:
        constant = [i for i, v in enumerate(varying) if not v]
        chosen = sorted(chosen + constant[: wanted - len(chosen)])
    if chosen == list(range(wanted)):
        return None
    return to_device(torch.tensor(chosen), state.moments.n.device)


def _gram_part(state: _State, t: Tensor, dim: int) -> Tensor:
    """The Gram matrix's features of *t* along *dim*: a view of the first
    ``gram_features``, or those of ``state.gram_index``."""
    if state.gram_index is None:
        return t.narrow(dim, 0, state.gram_features)
    return t.index_select(dim, state.gram_index)


class InputMonitor:
    """Streams the statistics of every feature input.

    Args:
        device: where the state lives (the model's device).
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.workspace = Workspace()
        self.plans: dict[str, InputPlan] = {}
        self._states: dict[str, _State] = {}
        self._seen_plans: dict[str, InputPlan] = {}
        self._seen: dict[str, _State] = {}

    def add(self, plan: InputPlan) -> None:
        """Start measuring one input (only ``kind == "feature"`` inputs get statistics)."""
        self.plans[plan.name] = plan
        if plan.kind == "feature":
            self._states[plan.name] = _State(plan, self.device, self.workspace)

    def add_seen(
        self,
        name: str,
        x: Tensor,
        channels_first: bool,
        image: tuple[tuple[int, ...], int] | None = None,
    ) -> None:
        """Also measure what the first layer receives from input *name* (the model
        transforms that input before its first layer, e.g. ``x / 255``).

        *image*: the input's shape and channel dimension when the layer receives it as an
        image flattened whole: what it receives is then viewed in that shape, measured per
        channel, and its blank positions are counted."""
        if image is not None:
            shape, axis = image
        else:
            shape, axis = tuple(x.shape), feature_axis(x, channels_first)
        plan = InputPlan(
            name=name,
            kind="feature",
            axis=axis,
            features=1 if axis is None else int(shape[axis]),
            dtype=str(x.dtype).replace("torch.", ""),
            shape=shape,
            count_blank=image is not None,
            view=shape[1:] if image is not None else None,
        )
        self._seen_plans[name] = plan
        self._seen[name] = _State(plan, self.device, self.workspace)

    def update_seen(self, name: str, x: Tensor, batch_index: int) -> None:
        """Add one batch of what the first layer receives from input *name*."""
        state = self._seen.get(name)
        if state is not None:
            with torch.no_grad():
                self._update_state(self._seen_plans[name], state, x.detach(), batch_index)

    def update(
        self, tensors: dict[str, Tensor], batch_index: int, valid: Tensor | None = None
    ) -> None:
        """Add one batch (*valid*: optional ``[N, T]`` padding mask, True = real)."""
        for name, state in self._states.items():
            x = tensors.get(name)
            if x is None:
                continue
            self._update_state(self.plans[name], state, x, batch_index, valid)

    def _update_state(
        self,
        plan: InputPlan,
        state: _State,
        x: Tensor,
        batch_index: int,
        valid: Tensor | None = None,
    ) -> None:
        if x.layout != torch.strided:
            # a sparse batch (bag-of-words, one-hot ids): its implicit zeros are values too
            x = x.to_dense()
        rows, dims = self._layout(plan, x, batch_index)
        mask = None
        if (
            valid is not None
            and plan.axis is not None
            and rows.dim() >= 3
            and plan.axis == rows.dim() - 1
            and tuple(rows.shape[:2]) == tuple(valid.shape)
        ):
            mask = valid.reshape(*valid.shape, *([1] * (rows.dim() - 2)))
        state.samples += x.shape[0] if x.dim() > 0 else 1
        if plan.count_blank:
            hit = x.reshape(x.shape[0], -1).ne(0).any(0)  # NaN and inf count as non-zero
            if state.nonzero_positions is None:
                state.nonzero_positions = hit
            else:
                state.nonzero_positions.logical_or_(hit)
        if state.pending.accepts(rows, mask):
            # small batches are copied (the loader may reuse its buffers) and reduced
            # together: see Pending
            state.pending.push(rows.clone(), mask)
            if state.pending.full:
                self._flush(plan, state)
            return
        self._flush(plan, state)
        self._reduce(plan, state, rows, dims, mask)

    def _flush(self, plan: InputPlan, state: _State) -> None:
        if state.pending:
            rows, mask = state.pending.take()
            assert rows is not None
            dims = (
                (0,) if plan.axis is None else tuple(d for d in range(rows.dim()) if d != plan.axis)
            )
            self._reduce(plan, state, rows, dims, mask)

    def _reduce(
        self,
        plan: InputPlan,
        state: _State,
        rows: Tensor,
        dims: tuple[int, ...],
        mask: Tensor | None,
    ) -> None:
        if state.wide is None:
            state.wide = _beyond_float32(rows, dims)
        if state.wide:
            rows = rows.double()
        state.moments.add(rows, dims, mask)
        if state.log_wanted:
            self._add_log(state, rows, dims, mask)
        if state.gram is None:
            assert state.moments.shift is not None
            state.gram_index = _gram_columns(state)
            shift = _gram_part(state, state.moments.shift, 0).clone()
            state.gram = GramAccumulator(state.gram_features, shift)
        if (
            state.gram_index is None
            and mask is None
            and plan.axis == 1
            and rows.dim() >= 3
            and rows.is_contiguous()
        ):
            # channels first ([N, C, H, W]): no channels-last copy of the rows
            state.gram.add_channels(rows)
        else:
            g_rows = rows.movedim(plan.axis, -1) if plan.axis is not None else rows
            if mask is not None:
                g_rows = torch.where(mask, g_rows.double(), math.nan)  # padded rows left out
            state.gram.add(_gram_part(state, g_rows.reshape(-1, plan.features), 1))
        state.reductions += 1

    @staticmethod
    def _add_log(state: _State, rows: Tensor, dims: tuple[int, ...], mask: Tensor | None) -> None:
        """Moments of ``ln x`` (for the log-transform fix), while some feature may still be
        strictly positive. Whether any is gets checked on the first batch (one read of one
        value, on any device) and, on CPU where reading is free, after every batch; once
        every feature has shown a value <= 0, the log moments are no longer computed."""
        # the first batch folds its minimum; later ones read the folded one, which lags
        # by a few batches at most (the log moments are then dropped a little later)
        lowest = state.moments.lo if state.reductions == 0 else state.moments.settled_lo
        checkable = state.reductions == 0 or rows.device.type == "cpu"
        if checkable and not bool((lowest > 0).any()):
            state.log_wanted = False
            return
        positive = rows > 0
        if rows.device.type == "cpu" and mask is None and bool(positive.all()):
            state.log_moments.add(rows.double().log(), dims)
            return
        logx = torch.where(positive, rows.double().clamp_min(1e-300).log(), math.nan)
        state.log_moments.add(logx, dims, mask)

    def _layout(
        self, plan: InputPlan, x: Tensor, batch_index: int
    ) -> tuple[Tensor, tuple[int, ...]]:
        if plan.view is not None:
            x = x.reshape(x.shape[0], *plan.view)
        if plan.axis is None:
            return x.reshape(-1, 1), (0,)
        if x.dim() <= plan.axis or x.shape[plan.axis] != plan.features:
            raise BatchError(
                f"batch {batch_index}: input {plan.name!r} has shape {tuple(x.shape)}, but the "
                f"first batch had {plan.features} features along dimension {plan.axis} "
                f"(shape {plan.shape}). Every batch must have the same number of features; "
                "pad or crop them in your Dataset, or pass prepare= to reshape batches."
            )
        return x, tuple(d for d in range(x.dim()) if d != plan.axis)

    def results(
        self,
        consumers: dict[str, tuple[str | None, str | None]],
        normalized_by: dict[str, str],
        transformed_by: dict[str, list[str]],
    ) -> tuple[InputStats, ...]:
        """Move the state to the host once and freeze it."""
        for name, state in self._states.items():
            self._flush(self.plans[name], state)
        for name, state in self._seen.items():
            self._flush(self._seen_plans[name], state)
        out = []
        for name, plan in self.plans.items():
            module, op = consumers.get(name, (None, None))
            state = self._states.get(name)
            features: tuple[FeatureStats, ...] = ()
            seen: tuple[FeatureStats, ...] = ()
            kappa = kappa_std = seen_kappa = None
            if state is not None:
                features = _features(
                    name, host_moments(state.moments), host_moments(state.log_moments)
                )
                if state.gram is not None:
                    kappa, kappa_std = kappa_from_gram(state.gram.gram())
                seen_state = self._seen.get(name)
                if seen_state is not None and seen_state.reductions > 0:
                    seen = _features(
                        name, host_moments(seen_state.moments), host_moments(seen_state.log_moments)
                    )
                    if seen_state.gram is not None:
                        seen_kappa = kappa_from_gram(seen_state.gram.gram())[0]
            out.append(
                InputStats(
                    name=name,
                    kind=plan.kind,
                    dtype=plan.dtype,
                    shape=plan.shape,
                    feature_axis=plan.axis,
                    samples=state.samples if state is not None else 0,
                    features=features,
                    kappa=kappa,
                    kappa_standardized=kappa_std,
                    gram_features=state.gram_features if state is not None else 0,
                    consumer=module,
                    consumer_op=op,
                    normalized_by=normalized_by.get(name),
                    transformed_by=tuple(transformed_by.get(name, ())),
                    seen_by_layer=seen,
                    seen_kappa=seen_kappa,
                    blank_positions=_blank_positions(self._seen.get(name), state),
                )
            )
        return tuple(out)


def _blank_positions(*states: _State | None) -> int | None:
    """How many positions were 0 in every sample, from the first of *states* (what the
    first layer receives, then the raw input) that counts them (None: none does)."""
    for state in states:
        if state is not None and state.nonzero_positions is not None:
            return int(state.nonzero_positions.logical_not().sum())
    return None


def _beyond_float32(rows: Tensor, dims: tuple[int, ...]) -> bool:
    """Whether some feature of this float32 (or bfloat16) batch spans a range outside
    :data:`FLOAT32_RANGE` (ranges of 0 and non-finite ones do not count). One read, on the
    first batch of each input only (0.14 ms per call on the reference case, 0.28 ms on the
    MLP 784 benchmark's 256 x 784 input, in place; taking the range the accumulator
    computes anyway saved no measurable time: the read is most of it).

    Example:
        >>> _beyond_float32(torch.tensor([[1.0, 1e-30], [2.0, 3e-30]]), (0,))
        True
        >>> _beyond_float32(torch.tensor([[1.0, 5.0], [2.0, 5.0]]), (0,))
        False
    """
    if rows.dtype not in (torch.float32, torch.bfloat16) or rows.numel() == 0:
        return False
    span = rows.amax(dims).double() - rows.amin(dims).double()
    small, large = FLOAT32_RANGE
    beyond = ((span > large) & torch.isfinite(span)) | ((span > 0) & (span < small))
    return bool(beyond.any())


def _features(name: str, m: HostMoments, lm: HostMoments) -> tuple[FeatureStats, ...]:
    """One record per feature (*lm*: the moments of ``ln x``). The values are computed
    column-wise on the host (numpy) and the records built from the columns (an input can
    have thousands of features: per-element Python arithmetic cost three times the records
    themselves on 784 features)."""
    n, mean, var, lo, hi, nonfinite, zeros = m.n, m.mean, m.var, m.min, m.max, m.nonfinite, m.zeros
    ln, lmean, lvar = lm.n, lm.mean, lm.var
    with np.errstate(all="ignore"):  # non-finite state is reported as it is, not warned of
        std, log_std = np.sqrt(np.maximum(var, 0.0)), np.sqrt(np.maximum(lvar, 0.0))
        seen = n > 0
        total = n + nonfinite
        positive = seen & (lo > 0) & (ln == n)
        zero_fraction = zeros / np.maximum(total, 1.0)
    features = len(n)
    columns = (
        [f"{name}[{j}]" for j in range(features)],
        [name] * features,
        range(features),
        n.astype(np.int64).tolist(),
        _where(seen, mean),
        _where(seen, std),
        _where(seen, lo),
        _where(seen, hi),
        nonfinite.astype(np.int64).tolist(),
        _where(total > 0, zero_fraction),
        _where(positive, lmean),
        _where(positive, log_std),
    )
    return from_columns(FeatureStats, columns)


def _where(keep: np.ndarray, values: np.ndarray) -> list[float | None]:
    """*values* as Python floats, None where *keep* is False."""
    out: list[float | None] = values.tolist()
    if not keep.all():
        for i in np.flatnonzero(~keep).tolist():
            out[i] = None
    return out


def kappa_from_gram(gram: Gram) -> tuple[float | None, float | None]:
    """Condition numbers of the second-moment matrix of ``[x, 1]``: raw and standardized.

    Constant features (zero variance) are left out: they make the raw matrix singular, and
    they are reported by their own rule. The standardized matrix is
    ``blockdiag(correlation, 1)``, computed exactly from the same state.

    The linear algebra (at most 65 x 65, float64) runs in ``torch.linalg`` on the CPU,
    not in SciPy: right after the model's own operations torch's OpenMP workers are still
    spinning, and SciPy's BLAS threads then compete with them for the cores. Measured on 2
    cores after one torch reduction, ``scipy.linalg.eigvalsh`` of a 64 x 64 matrix took 9 ms
    and ``torch.linalg.eigvalsh`` 0.5 ms (LAPACK underneath both).

    Example:
        >>> import torch
        >>> from scalecheck.monitors._kernels import batch_gram
        >>> x = torch.linspace(255, 200000, 1001, dtype=torch.float64).reshape(-1, 1)
        >>> raw, std = kappa_from_gram(batch_gram(x, x.mean(0)))
        >>> f"{raw:.1e}", round(std, 6)
        ('5.4e+10', 1.0)
    """
    n = float(gram.n.cpu())
    if n <= 0:
        return None, None
    # non-finite intermediate values (squares of features beyond ~1e154 overflow float64)
    # are handled below, explicitly; numpy's warnings about them would only be noise
    with np.errstate(all="ignore"):
        return _kappas(gram, n)


def _kappas(gram: Gram, n: float) -> tuple[float | None, float | None]:
    # assembled in numpy (matrices of at most 65 x 65: each torch operation's dispatch
    # costs more than its arithmetic) and decomposed by torch.linalg, the three symmetric
    # eigenproblems in one batched call (they take most of the 1.3 ms this costs)
    s, g, shift = (
        t.detach().to("cpu", torch.float64).numpy() for t in (gram.s, gram.g, gram.shift)
    )
    centred_mean = s / n
    cov = g / n - np.outer(centred_mean, centred_mean)
    cov = (cov + cov.T) / 2
    mu = shift + centred_mean
    sd = np.sqrt(np.clip(np.diagonal(cov), 0.0, None))
    # constant features (sd 0) are left out; a NaN sd (squared deviations beyond ~1e154
    # overflowed: inf - inf) is kept, and the check below then reports the matrix as
    # beyond every threshold
    keep = np.flatnonzero(~(sd <= 0))
    if keep.size == 0:
        return math.inf, None
    cov, mu, sd = cov[np.ix_(keep, keep)], mu[keep], sd[keep]
    if not (np.isfinite(cov).all() and np.isfinite(mu).all()):
        return math.inf, None
    if keep.size == 1:
        # one feature: the 2 x 2 matrix has a closed form, and its correlation is [1]
        return feature_kappa(float(mu[0]), float(sd[0])), 1.0
    matrices = _second_moment_pair(cov, mu)
    k = keep.size
    # the standardized matrix blockdiag(corr, 1): its extreme eigenvalues are those of corr
    # clamped by 1, and its size matches the others', so one batched call decomposes all
    standard = np.zeros((k + 1, k + 1))
    standard[:k, :k] = cov / np.outer(sd, sd)
    standard[k, k] = 1.0
    if matrices is None or not all(np.isfinite(m).all() for m in matrices):
        # collinear features (the raw matrix is singular), or features so far out (|mean|
        # or spread beyond ~1e154) that mu mu^T overflows: the raw condition number lies
        # beyond any threshold; the standardized one is still computed
        eig = torch.linalg.eigvalsh(torch.from_numpy(standard)).numpy()
        return math.inf, float(eig[-1]) / float(eig[0]) if eig[0] > 0 else math.inf
    second, inverse = matrices
    eig = torch.linalg.eigvalsh(torch.from_numpy(np.stack([second, inverse, standard]))).numpy()
    raw = float(eig[0, -1]) * float(eig[1, -1])
    big, small = float(eig[2, -1]), float(eig[2, 0])
    standardized = big / small if small > 0 else math.inf
    return raw, standardized


def _second_moment_pair(cov: np.ndarray, mu: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """``M = [[cov + mu mu^T, mu], [mu^T, 1]]`` and ``M^-1``, from which the condition number
    of ``M`` is ``lambda_max(M) * lambda_max(M^-1)``, accurately (None: *cov* is singular).

    Forming ``M`` and taking its smallest eigenvalue loses everything to cancellation when
    the offset dominates (the reference input has ``kappa`` about 5e10). Instead use the
    factorization ``M = L blockdiag(cov, 1) L^T`` with ``L = [[I, mu], [0, 1]]``, which gives
    ``M^-1`` exactly from ``cov^-1``; both largest eigenvalues are computed to full relative
    precision.
    """
    k = cov.shape[0]
    factor, info = torch.linalg.cholesky_ex(torch.from_numpy(cov))
    if int(info) != 0:
        return None
    mu_t = torch.from_numpy(mu)
    cinv_mu = torch.cholesky_solve(mu_t.unsqueeze(1), factor).squeeze(1).numpy()
    cinv = torch.cholesky_inverse(factor).numpy()
    second = np.empty((k + 1, k + 1))
    second[:k, :k] = cov + np.outer(mu, mu)
    second[:k, k] = second[k, :k] = mu
    second[k, k] = 1.0
    inverse = np.empty((k + 1, k + 1))
    inverse[:k, :k] = cinv
    inverse[:k, k] = inverse[k, :k] = -cinv_mu
    inverse[k, k] = 1.0 + float(mu @ cinv_mu)
    return second, (inverse + inverse.T) / 2
