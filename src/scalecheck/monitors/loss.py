"""The loss used for the gradients, and the best constant predictor's loss next to it.

Without a ``loss_fn`` the loss is inferred from the output and the targets, and the report
says which one was used:

================================================  ===================================
model output / targets                            loss
================================================  ===================================
output carries ``.loss`` (Hugging Face style)     the model's own loss
no targets                                        surrogate ``0.5 * mean(output^2)``
float targets, as many values as the prediction   mean squared error
integer labels, one output per sample             binary cross-entropy with logits
integer class targets ``[N, ...]`` or an          cross-entropy (class dimension 1)
``[N, 1]`` column, output ``[N, C, ...]``
integer targets, as many values as the prediction mean squared error on float targets
================================================  ===================================

When the model's output comes out of a softmax (over the class dimension) or a sigmoid,
the inferred cross-entropy takes the log of those probabilities rather than applying a
second softmax or sigmoid.

The constant-predictor baseline is what a network that ignores its input can reach at
best: the mean target for squared error (its loss is the targets' variance), the label
prior for cross-entropy (its loss is the label entropy; with class-probability targets, the
mean target distribution and its entropy). A network stuck at that loss has learned nothing
from its input.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from .._validation import call_description, describe
from ..errors import LossError
from ..measurements import FeatureStats, LossStats
from ._host import HostMoments, host_moments
from ._kernels import DEFER_BATCHES, Accumulator, Pending

__all__ = ["LossMonitor", "prediction_of"]

#: Target and prediction columns tracked for the baseline and spreads.
MAX_COLUMNS = 4096
#: Per-column target statistics reported (for the unscaled-target rule).
MAX_REPORTED_COLUMNS = 64


def prediction_of(output: Any) -> Tensor | None:
    """The prediction tensor inside a model output (tensor, tuple, dict, ModelOutput)."""
    if isinstance(output, Tensor):
        return output
    logits = getattr(output, "logits", None)
    if isinstance(logits, Tensor):
        return logits
    if isinstance(output, dict):
        if isinstance(output.get("logits"), Tensor):
            return output["logits"]
        for v in output.values():
            if isinstance(v, Tensor) and v.dim() > 0:
                return v
    if isinstance(output, (tuple, list)):
        for v in output:
            if isinstance(v, Tensor):
                return v
    return None


def _own_loss(output: Any) -> Tensor | None:
    loss = getattr(output, "loss", None)
    if loss is None and isinstance(output, dict):
        loss = output.get("loss")
    return loss if isinstance(loss, Tensor) and loss.dim() == 0 else None


class LossMonitor:
    """Computes the loss of each batch and streams what the baseline needs.

    Args:
        loss_fn: the user's ``loss_fn(output, targets)`` or None to infer one.
        device: where the state lives.
        track: stream the statistics the baseline needs (off for the trial, which only
            needs the loss).
    """

    def __init__(
        self, loss_fn: Callable[..., Tensor] | None, device: torch.device, *, track: bool = True
    ) -> None:
        self.loss_fn = loss_fn
        self.track = track
        self.device = device
        self.kind: str | None = None
        self.description = ""
        self._baseline_kind: str | None = None  # "mse", "mse_sum", "ce", "bce"
        self._values: list[Tensor] = []
        self._pending = Pending()
        self._targets: Accumulator | None = None
        self._preds: Accumulator | None = None
        self._labels: Tensor | None = None
        self._classes = 0
        self._label_buffer: Tensor | None = None  # labels not yet counted
        self._label_fill = 0
        self._soft = False  # class-probability targets: _labels holds probability mass
        self._reshaped = False
        #: (output shape, targets shape, compared shape) when an elementwise criterion
        #: broadcast them on the first batch (see LossStats.broadcast)
        self.broadcast: tuple[tuple[int, ...], ...] | None = None
        #: (function, criterion, classes) when the output was squashed before a criterion
        #: that expects logits (see LossStats.squashed_by)
        self.squashed_by: tuple[str, str, int] | None = None
        self._probed: tuple[tuple[int, ...], ...] | None = None  # see _BroadcastProbe
        # an inferred classification loss on an output that already is probabilities (the
        # model ends in softmax / sigmoid): take their log, not a second softmax / sigmoid
        self._probabilities = False
        self._class_column = False  # class ids given as an [N, 1] column

    # -- choosing and computing the loss ---------------------------------------------------
    def compute(self, output: Any, targets: Any, batch_index: int) -> Tensor:
        """The scalar loss of one batch (raises :class:`LossError` when impossible)."""
        pred = prediction_of(output)
        if self.kind is None:
            self._choose(output, pred, targets, batch_index)
        loss = self._loss(output, pred, targets, batch_index)
        if batch_index == 0 and self.kind == "custom":
            self.broadcast = _broadcast(self.loss_fn, pred, targets) or self._probed
            self.squashed_by = _squashed_by(self.loss_fn, pred)
        if self.track:
            self._track(pred, targets)
            self._values.append(loss.detach())
        return loss

    def value(self, output: Any, targets: Any, batch_index: int) -> Tensor:
        """The loss of one batch without gradients (no tracking, no requires-grad check)."""
        pred = prediction_of(output)
        if self.kind is None:
            self._choose(output, pred, targets, batch_index)
        return self._loss(output, pred, targets, batch_index, need_grad=False).detach()

    def _choose(self, output: Any, pred: Tensor | None, targets: Any, batch_index: int) -> None:
        if self.loss_fn is not None:
            self.kind = "custom"
            self.description = f"your loss_fn ({call_description(self.loss_fn)})"
            self._baseline_kind = _baseline_for(self.loss_fn)
            return
        if _own_loss(output) is not None:
            self.kind = "model"
            self.description = "the model's own loss (output.loss)"
            if pred is not None and isinstance(targets, Tensor):
                # its baseline: what the labels say the loss is (class ids: cross-entropy)
                probe = LossMonitor(None, self.device, track=False)
                try:
                    probe._choose(None, pred, targets, batch_index)
                except LossError:
                    return
                self._baseline_kind = probe._baseline_kind
                if self._baseline_kind is not None:
                    self.description += (
                        f"; its baseline assumes {probe.description.split(' (')[0]}, as the "
                        "labels suggest"
                    )
            return
        if pred is None:
            raise LossError(
                f"batch {batch_index}: the model returned {describe(output)}, with no tensor "
                "to compute a loss on. Return a tensor (or an object with .loss or .logits), "
                "or pass loss_fn=lambda output, targets: ... to diagnose()."
            )
        if targets is None:
            self.kind = "surrogate"
            self.description = (
                "surrogate 0.5 * mean(output^2): the batches carry no targets, so gradients "
                "show how signal flows, not how well the model fits"
            )
            return
        if not isinstance(targets, Tensor):
            raise LossError(
                f"batch {batch_index}: targets are {describe(targets)}, not a tensor; pass "
                "loss_fn= to diagnose() to say how the loss is computed."
            )
        if targets.is_floating_point() and targets.numel() == pred.numel():
            self.kind = "mse"
            self._baseline_kind = "mse"
            self.description = "mean squared error (inferred: float targets shaped like the output)"
            self._reshaped = tuple(targets.shape) != tuple(pred.shape)
            if self._reshaped:
                self.description += (
                    f"; targets of shape {tuple(targets.shape)} were viewed as the output's "
                    f"shape {tuple(pred.shape)}"
                )
            return
        integer = not targets.is_floating_point() and not targets.is_complex()
        if (
            integer
            and targets.numel() == pred.numel()
            and (pred.dim() == 1 or (pred.dim() == 2 and pred.shape[1] == 1))
        ):
            self.kind = "bce"
            self._baseline_kind = "bce"
            self._probabilities = _squashed(pred) == ("sigmoid", None)
            self.description = (
                "binary cross-entropy of the output's probabilities (inferred: integer "
                "labels, one output per sample, which comes out of a sigmoid)"
                if self._probabilities
                else "binary cross-entropy with logits (inferred: integer labels, one output "
                "per sample)"
            )
            return
        # class ids as a column ([N, 1] next to [N, C] scores) are class ids all the same
        column = pred.dim() == 2 and pred.shape[1] >= 2 and targets.dim() == 2
        column = column and tuple(targets.shape) == (pred.shape[0], 1)
        if (
            integer
            and targets.dtype != torch.bool
            and pred.dim() >= 2
            and (tuple(targets.shape) == (pred.shape[0], *pred.shape[2:]) or column)
        ):
            self.kind = "cross_entropy"
            self._baseline_kind = "ce"
            self._class_column = column
            self._probabilities = _squashed(pred) == ("softmax", 1)
            self.description = (
                "cross-entropy of the output's probabilities (inferred: integer class "
                "targets; the output comes out of a softmax over dimension 1, so its log is "
                "taken, not a second softmax)"
                if self._probabilities
                else "cross-entropy (inferred: integer class targets, class scores in dimension 1)"
            )
            if column:
                self.description += (
                    f"; targets of shape {tuple(targets.shape)} were read as class ids of "
                    f"shape ({pred.shape[0]},)"
                )
            return
        if targets.numel() == pred.numel() and not targets.is_complex():
            self.kind = "mse"
            self._baseline_kind = "mse"
            self._reshaped = tuple(targets.shape) != tuple(pred.shape)
            self.description = "mean squared error on targets converted to float (inferred)"
            return
        raise LossError(
            f"batch {batch_index}: cannot infer a loss for output shape {tuple(pred.shape)} "
            f"({pred.dtype}) and targets shape {tuple(targets.shape)} ({targets.dtype}). "
            "Pass loss_fn=your_criterion (e.g. nn.MSELoss()) to diagnose()."
        )

    def _loss(
        self,
        output: Any,
        pred: Tensor | None,
        targets: Any,
        batch_index: int,
        need_grad: bool = True,
    ) -> Tensor:
        if self.kind == "custom":
            assert self.loss_fn is not None
            if targets is None:
                raise LossError(
                    f"batch {batch_index}: loss_fn={call_description(self.loss_fn)} needs "
                    "targets, but the batch has none. Return (inputs, targets) from your "
                    "loader or from prepare=."
                )
            probe = (
                _BroadcastProbe(pred, targets)
                if batch_index == 0
                and self.track
                and isinstance(pred, Tensor)
                and isinstance(targets, Tensor)
                else None
            )
            try:
                if probe is None:
                    loss = self.loss_fn(output, targets)
                else:
                    try:
                        with probe:
                            loss = self.loss_fn(output, targets)
                        self._probed = probe.found
                    except Exception:
                        # again without the probe (a loss that cannot run under a
                        # TorchFunctionMode, e.g. a compiled one): an error now is the loss's
                        loss = self.loss_fn(output, targets)
            except Exception as exc:
                hint = ""
                if "multi-target not supported" in str(exc):
                    hint = (
                        " Cross-entropy takes class ids of shape [N] (a column of ids, [N, 1], "
                        "reads as several targets): give it targets.view(-1), e.g. "
                        "loss_fn=lambda out, y: F.cross_entropy(out, y.view(-1))."
                    )
                raise LossError(
                    f"batch {batch_index}: loss_fn={call_description(self.loss_fn)} raised "
                    f"{type(exc).__name__}: {exc}. It is called as loss_fn(model_output, "
                    f"targets) with output {_shape(output)} and targets {_shape(targets)}."
                    f"{hint}"
                ) from exc
        elif self.kind == "model":
            loss = _own_loss(output)
            if loss is None:
                raise LossError(f"batch {batch_index}: the model output has no scalar .loss.")
        else:
            if pred is None:
                raise LossError(
                    f"batch {batch_index}: the model returned {describe(output)} with no tensor."
                )
            try:
                loss = self._inferred(pred, targets)
            except Exception as exc:
                raise LossError(
                    f"batch {batch_index}: the inferred loss ({self.description.split(' (')[0]}) "
                    f"failed on output {_shape(pred)} and targets {_shape(targets)}: "
                    f"{type(exc).__name__}: {exc}. Pass loss_fn= to diagnose() to say how "
                    "the loss is computed."
                ) from exc
        if not isinstance(loss, Tensor):
            raise LossError(
                f"batch {batch_index}: the loss is {describe(loss)}; it must be a scalar tensor."
            )
        if loss.dim() != 0:
            raise LossError(
                f"batch {batch_index}: the loss has shape {tuple(loss.shape)}; it must be a "
                "scalar. Reduce it (e.g. reduction='mean' or .mean()) in your loss_fn."
            )
        if need_grad and not loss.requires_grad:
            raise LossError(
                f"batch {batch_index}: the loss does not depend on any trainable parameter "
                "(it does not require grad). Is the model frozen, or is the loss computed "
                "under torch.no_grad() or from detached outputs?"
            )
        return loss

    def _inferred(self, pred: Tensor, targets: Any) -> Tensor:
        if self.kind == "surrogate":
            return 0.5 * pred.float().square().mean()
        if self.kind == "mse":
            return F.mse_loss(pred, targets.reshape(pred.shape).to(pred.dtype))
        if self.kind == "bce":
            t = targets.reshape(pred.shape).to(pred.dtype)
            if self._probabilities:
                return F.binary_cross_entropy(pred, t)  # (torch clamps its logs at -100)
            return F.binary_cross_entropy_with_logits(pred, t)
        labels = targets.reshape(-1).long() if self._class_column else targets.long()
        if self._probabilities:
            tiny = torch.finfo(pred.dtype).tiny
            return F.nll_loss(pred.clamp_min(tiny).log(), labels)
        return F.cross_entropy(pred, labels)

    # -- streaming what the baseline needs ---------------------------------------------------
    def _track(self, pred: Tensor | None, targets: Any) -> None:
        if not isinstance(targets, Tensor) or targets.numel() == 0:
            return
        with torch.no_grad():
            if self._baseline_kind in ("mse", "mse_sum", "bce") and pred is not None:
                n = targets.shape[0] if targets.dim() > 0 else 1
                t = targets.detach().reshape(n, -1)
                if t.shape[1] > MAX_COLUMNS:
                    return
                if self._targets is None:
                    self._targets = Accumulator(t.shape[1], self.device)
                p = pred.detach().reshape(n, -1) if pred.numel() == targets.numel() else None
                if p is not None and self._preds is None:
                    self._preds = Accumulator(p.shape[1], self.device, masked=False)
                fits = self._pending.accepts(t, p)
                if not fits:
                    self._flush()
                    fits = self._pending.accepts(t, p)
                if fits:
                    self._pending.push(t.clone(), p.clone() if p is not None else None)
                    if self._pending.full:
                        self._flush()
                else:
                    self._reduce(t, p)
            elif self._baseline_kind == "ce" and pred is not None and pred.dim() >= 2:
                if self._labels is None:
                    self._classes = pred.shape[1]
                    self._labels = torch.zeros(
                        self._classes, dtype=torch.float64, device=self.device
                    )
                    self._soft = targets.is_floating_point() and targets.shape == pred.shape
                if self._soft:
                    # class probabilities ([N, C, ...], as F.cross_entropy takes them): their
                    # mass per class, summed over every dimension but the class dimension
                    dims = tuple(d for d in range(targets.dim()) if d != 1)
                    if targets.shape == pred.shape:
                        self._labels += targets.detach().sum(dims, dtype=torch.float64)
                    return
                # copied into a buffer (the loader may reuse its own), counted with the next
                labels = targets.detach().reshape(-1)
                n = labels.numel()
                if self._label_buffer is None:
                    self._label_buffer = torch.empty(
                        DEFER_BATCHES * n, dtype=torch.long, device=labels.device
                    )
                if self._label_fill + n > self._label_buffer.numel():
                    self._count_labels()
                if n > self._label_buffer.numel():
                    self._count(labels.long())
                else:
                    self._label_buffer[self._label_fill : self._label_fill + n].copy_(labels)
                    self._label_fill += n

    def _count_labels(self) -> None:
        """Add the buffered labels to the class counts."""
        if self._label_fill and self._label_buffer is not None:
            self._count(self._label_buffer[: self._label_fill])
            self._label_fill = 0

    def _count(self, labels: Tensor) -> None:
        """Add *labels* to the class counts (ids outside the classes are ignored)."""
        if self._labels is not None:
            labels = labels.to(self._labels.device)
            valid = (labels >= 0) & (labels < self._classes)
            # scatter_add, not bincount: no output size to read back from a device
            safe = torch.where(valid, labels, 0)
            self._labels.scatter_add_(0, safe, valid.to(torch.float64))

    def _flush(self) -> None:
        if self._pending:
            t, p = self._pending.take()
            assert t is not None
            self._reduce(t, p)

    def _reduce(self, t: Tensor, p: Tensor | None) -> None:
        assert self._targets is not None
        self._targets.add(t, (0,))
        if p is not None and self._preds is not None:
            self._preds.add(p, (0,))

    def results(self) -> LossStats | None:
        """Move the state to the host once and freeze it."""
        self._flush()
        self._count_labels()
        if self.kind is None:
            return None
        values = torch.stack(self._values).double().cpu().tolist() if self._values else []
        per_batch = tuple(v if math.isfinite(v) else None for v in values)
        finite = [v for v in values if math.isfinite(v)]
        nonfinite = len(finite) < len(values)
        value = sum(finite) / len(finite) if finite and not nonfinite else None
        target_moments = host_moments(self._targets) if self._targets is not None else None
        baseline, baseline_description = self._baseline(len(values), target_moments)
        pred_spread = target_spread = None
        targets: tuple[FeatureStats, ...] = ()
        if target_moments is not None:
            target_spread = _mean_std(target_moments)
            targets = _columns(target_moments)
        if self._preds is not None:
            pred_spread = _mean_std(host_moments(self._preds))
        return LossStats(
            kind=self.kind,
            description=self.description,
            value=value,
            per_batch=per_batch,
            baseline=baseline,
            baseline_description=baseline_description,
            prediction_spread=pred_spread,
            target_spread=target_spread,
            targets=targets,
            nonfinite=nonfinite,
            broadcast=self.broadcast,
            squashed_by=self.squashed_by,
        )

    def _baseline(self, batches: int, m: HostMoments | None) -> tuple[float | None, str | None]:
        """The loss of the best constant prediction (*m*: the targets' moments)."""
        if self._baseline_kind in ("mse", "mse_sum") and m is not None:
            n = float(m.n.sum())
            if n <= 0:
                return None, None
            total_m2 = float(m.m2.sum())
            if self._baseline_kind == "mse_sum":
                return total_m2 / max(batches, 1), "always predicting the mean target (sum)"
            return total_m2 / n, "always predicting the mean target (the targets' variance)"
        if self._baseline_kind == "bce" and m is not None:
            y = np.clip(m.mean, 1e-12, 1 - 1e-12)
            pos = _weight(self.loss_fn, "pos_weight")
            if pos is None:
                h = -(y * np.log(y) + (1 - y) * np.log(1 - y))
                return float(h.mean()), "always predicting the mean label (its binary entropy)"
            # BCEWithLogitsLoss(pos_weight=w): -(w y log q + (1 - y) log(1 - q)) is least at
            # q = w y / (w y + 1 - y)
            try:
                wy = np.broadcast_to(pos.numpy(), y.shape) * y
            except ValueError:  # weights shaped for other targets than the tracked columns
                return None, None
            q = np.clip(wy / (wy + 1 - y), 1e-12, 1 - 1e-12)
            h = -(wy * np.log(q) + (1 - y) * np.log(1 - q))
            return float(h.mean()), "always predicting the best constant for the positive weights"
        if self._baseline_kind == "ce" and self._labels is not None:
            mass = self._labels.cpu().double()
            ignored = getattr(self.loss_fn, "ignore_index", -100)
            if not self._soft and 0 <= ignored < len(mass):
                mass[ignored] = 0.0  # the criterion leaves those targets out of its mean
            weight = _weight(self.loss_fn, "weight")
            if weight is not None:
                # CrossEntropyLoss(weight=w): the best constant prediction is proportional
                # to w * mass; class ids average by the total weight, probabilities by N
                mass = mass * weight
            total = float(mass.sum())
            if total <= 0:
                return None, None
            p = mass[mass > 0] / total
            entropy = float(-(p * p.log()).sum())
            if self._soft:
                scale = total / float(self._labels.sum()) if weight is not None else 1.0
                return entropy * scale, (
                    "always predicting the mean target distribution (its entropy)"
                    if weight is None
                    else "always predicting the best constant for the class weights"
                )
            if weight is not None:
                return entropy, "always predicting the weighted label frequencies (entropy)"
            return entropy, "always predicting the label frequencies (entropy)"
        return None, None


#: Criteria that compare output and targets element by element after broadcasting them
#: (torch warns "Using a target size ... different to the input size" and goes on).
_ELEMENTWISE_CRITERIA = (nn.MSELoss, nn.L1Loss, nn.SmoothL1Loss, nn.HuberLoss)
_ELEMENTWISE_FUNCTIONS = (F.mse_loss, F.l1_loss, F.smooth_l1_loss, F.huber_loss)


def _broadcast(
    loss_fn: Any, pred: Tensor | None, targets: Any
) -> tuple[tuple[int, ...], ...] | None:
    """``(output shape, targets shape, compared shape)`` when *loss_fn* is an elementwise
    criterion and the two shapes broadcast to more elements than either has (``[N, 1]``
    against ``[N]`` gives ``[N, N]``: every prediction compared with every target).

    Example:
        >>> _broadcast(nn.MSELoss(), torch.zeros(8, 1), torch.zeros(8))
        ((8, 1), (8,), (8, 8))
        >>> _broadcast(nn.MSELoss(), torch.zeros(8, 1), torch.zeros(8, 1)) is None
        True
    """
    elementwise = isinstance(loss_fn, _ELEMENTWISE_CRITERIA) or any(
        loss_fn is f for f in _ELEMENTWISE_FUNCTIONS
    )
    if not (elementwise and isinstance(pred, Tensor) and isinstance(targets, Tensor)):
        return None
    if pred.shape == targets.shape:
        return None
    try:
        shape = torch.broadcast_shapes(pred.shape, targets.shape)
    except RuntimeError:
        return None
    if math.prod(shape) <= max(pred.numel(), targets.numel()):
        return None
    return tuple(pred.shape), tuple(targets.shape), tuple(shape)


class _BroadcastProbe(TorchFunctionMode):
    """Watches the first call of a user's loss function for an operation between the
    output and the targets whose result has more elements than both: a hand-written
    ``((output - y) ** 2).mean()`` with output ``[N, 1]`` and ``y`` of shape ``[N]`` takes
    the difference as ``[N, N]``. Values of the output's (or the targets') shape computed
    from them (``output.float()``, ``y * 2``) count as the output (the targets).
    ``found`` is ``(output shape, targets shape, result shape)`` or None. It only reads
    shapes, and never lets its own bookkeeping fail the user's loss.

    Example:
        >>> out, y = torch.zeros(4, 1), torch.zeros(4)
        >>> with _BroadcastProbe(out, y) as probe:
        ...     _ = ((out.float() - y) ** 2).mean()
        >>> probe.found
        ((4, 1), (4,), (4, 4))
    """

    def __init__(self, pred: Tensor, targets: Tensor) -> None:
        super().__init__()
        self._sides: dict[int, tuple[str, Tensor]] = {
            id(pred): ("pred", pred),
            id(targets): ("targets", targets),
        }
        self.found: tuple[tuple[int, ...], ...] | None = None

    def __torch_function__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None
    ) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        # bookkeeping only: an error in it must not fail the user's loss
        with contextlib.suppress(Exception):
            self._see(args, kwargs, out)
        return out

    def _see(self, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> None:
        if not isinstance(out, Tensor) or self.found is not None:
            return
        sides: dict[str, Tensor] = {}
        for a in (*args, *kwargs.values()):
            if isinstance(a, Tensor) and id(a) in self._sides:
                side, t = self._sides[id(a)]
                sides.setdefault(side, t)
        if len(sides) == 2:
            p, t = sides["pred"], sides["targets"]
            if p.shape != t.shape and out.numel() > max(p.numel(), t.numel()):
                self.found = (tuple(p.shape), tuple(t.shape), tuple(out.shape))
        elif len(sides) == 1:
            ((side, t),) = sides.items()
            if out.shape == t.shape:
                self._sides[id(out)] = (side, out)  # kept alive: its id stays its own


#: Criteria that take logits (they apply log_softmax or a log-sigmoid themselves) or, for
#: NLLLoss, log-probabilities: an output that went through softmax or sigmoid is wrong for
#: each of them. Modules and functions, by the name SC405 uses.
_LOGIT_CRITERIA: tuple[tuple[Any, str], ...] = (
    (nn.CrossEntropyLoss, "cross_entropy"),
    (nn.BCEWithLogitsLoss, "bce_with_logits"),
    (nn.NLLLoss, "nll"),
)
_LOGIT_FUNCTIONS: tuple[tuple[Any, str], ...] = (
    (F.cross_entropy, "cross_entropy"),
    (F.binary_cross_entropy_with_logits, "bce_with_logits"),
    (F.nll_loss, "nll"),
)
#: autograd node names of the squashing functions (softmax as a module, a function or a
#: method all record this node)
_SQUASHING_NODES = {"SoftmaxBackward0": "softmax", "SigmoidBackward0": "sigmoid"}


def _squashed(pred: Tensor | None) -> tuple[str, int | None] | None:
    """``("softmax", dim)`` or ``("sigmoid", None)`` when *pred* is the direct output of
    that function (read from its autograd node; *dim* made non-negative), else None.

    Example:
        >>> z = torch.zeros(4, 3, requires_grad=True)
        >>> _squashed(z.softmax(-1)), _squashed(z.sigmoid()), _squashed(z * 2)
        (('softmax', 1), ('sigmoid', None), None)
    """
    if not isinstance(pred, Tensor) or pred.grad_fn is None:
        return None
    function = _SQUASHING_NODES.get(pred.grad_fn.name())
    if function != "softmax":
        return (function, None) if function else None
    dim = getattr(pred.grad_fn, "_saved_dim", None)
    if not isinstance(dim, int) or pred.dim() == 0:
        return None
    if dim >= 2**63:  # a negative dim reads back as an unsigned 64-bit number
        dim -= 2**64
    return function, dim % pred.dim()


def _squashed_by(loss_fn: Any, pred: Tensor | None) -> tuple[str, str, int] | None:
    """``(function, criterion, classes)`` when *pred* is the direct output of softmax or
    sigmoid (read from its autograd node) and *loss_fn* expects logits or
    log-probabilities.

    Example:
        >>> z = torch.zeros(4, 3, requires_grad=True)
        >>> _squashed_by(nn.CrossEntropyLoss(), z.softmax(1))
        ('softmax', 'cross_entropy', 3)
        >>> _squashed_by(nn.CrossEntropyLoss(), z.log_softmax(1)) is None
        True
    """
    criterion = next((n for cls, n in _LOGIT_CRITERIA if isinstance(loss_fn, cls)), None)
    if criterion is None:
        criterion = next((n for f, n in _LOGIT_FUNCTIONS if loss_fn is f), None)
    squashed = _squashed(pred)
    if criterion is None or squashed is None:
        return None
    assert pred is not None
    return squashed[0], criterion, int(pred.shape[1]) if pred.dim() >= 2 else 1


def _weight(loss_fn: Any, name: str) -> Tensor | None:
    """A torch criterion's class weights (``weight``, ``pos_weight``) as float64 on the
    CPU, or None."""
    w = getattr(loss_fn, name, None)
    return w.detach().to("cpu", torch.float64) if isinstance(w, Tensor) else None


def _baseline_for(loss_fn: Any) -> str | None:
    """Which baseline applies to a user loss (recognized torch criteria only; a BCE loss's
    per-element ``weight`` depends on the batch, so it has none)."""
    if isinstance(loss_fn, nn.MSELoss):
        return {"mean": "mse", "sum": "mse_sum"}.get(loss_fn.reduction)
    if loss_fn is F.mse_loss:
        return "mse"
    if (
        isinstance(loss_fn, nn.CrossEntropyLoss)
        and loss_fn.reduction == "mean"
        and (loss_fn.label_smoothing == 0)
    ):
        return "ce"
    if isinstance(loss_fn, nn.NLLLoss) and loss_fn.reduction == "mean":
        return "ce"  # on log-probabilities: the same best constant, the label frequencies
    if loss_fn is F.cross_entropy or loss_fn is F.nll_loss:
        return "ce"
    if (
        isinstance(loss_fn, (nn.BCELoss, nn.BCEWithLogitsLoss))
        and loss_fn.reduction == "mean"
        and loss_fn.weight is None
    ):
        return "bce"
    return None


def _mean_std(m: HostMoments) -> float | None:
    with np.errstate(all="ignore"):  # a non-finite state gives None, not a warning
        value = float(np.sqrt(np.maximum(m.var, 0.0)).mean())
    return value if math.isfinite(value) else None


def _columns(m: HostMoments) -> tuple[FeatureStats, ...]:
    k = min(m.n.shape[0], MAX_REPORTED_COLUMNS)
    n, mean, var, lo, hi, nonfinite, zeros = (
        a[:k].tolist() for a in (m.n, m.mean, m.var, m.min, m.max, m.nonfinite, m.zeros)
    )
    out = []
    for j in range(k):
        seen = n[j] > 0
        total = n[j] + nonfinite[j]
        out.append(
            FeatureStats(
                name=f"target[{j}]",
                input="target",
                index=j,
                count=int(n[j]),
                mean=mean[j] if seen else None,
                std=math.sqrt(max(var[j], 0.0)) if seen else None,
                min=lo[j] if seen else None,
                max=hi[j] if seen else None,
                nonfinite=int(nonfinite[j]),
                zero_fraction=zeros[j] / total if total > 0 else None,
            )
        )
    return tuple(out)


def _shape(value: Any) -> str:
    if isinstance(value, Tensor):
        return f"shape {tuple(value.shape)} ({str(value.dtype).replace('torch.', '')})"
    return describe(value)
