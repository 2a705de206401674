"""Stage 2: run up to ``max_batches`` batches through the model with the monitors attached.

For each batch: adapt it (:mod:`scalecheck.batches`), run the forward inside the activation
monitor's TorchFunctionMode, compute the loss, take gradients with
:func:`torch.autograd.grad` (never ``.backward()``), and feed the monitors. The model is
borrowed: the caller (``diagnose``) holds a :class:`~scalecheck.session._borrow.Borrowed`
snapshot and gives it back in a ``finally``.

Errors raised by the user's loader, ``prepare``, model or loss are re-raised as
:class:`~scalecheck.errors.ScaleCheckError` subclasses that name the batch index and the
last module reached, chained to the original. Errors inside scalecheck's own monitors do not
stop the run: they are collected and become an ``SC001 internal-error`` finding (``strict``
re-raises them).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from .._validation import describe
from ..batches._adapter import BatchAdapter, ModelCall, describe_batch
from ..errors import LoaderError, ModelError, ScaleCheckError
from ..measurements import Measurements
from ..monitors.activations import ActivationMonitor, Consumer
from ..monitors.gradients import GradientMonitor
from ..monitors.inputs import InputMonitor, InputPlan, feature_axis
from ..monitors.loss import LossMonitor
from ..monitors.recurrent import RecurrentMonitor
from ._borrow import seed_rngs
from ._tracker import ModuleTracker

__all__ = ["SessionResult", "run_session"]

log = logging.getLogger("scalecheck")

_CHANNELS_FIRST_OPS = {"conv", "batch_norm", "instance_norm", "group_norm"}
_NORM_OPS = {"batch_norm", "instance_norm", "group_norm", "layer_norm"}


@dataclass
class SessionResult:
    """What one session produced."""

    measurements: Measurements
    batches: list[ModelCall] = field(default_factory=list)
    internal_errors: list[tuple[str, BaseException]] = field(default_factory=list)


def placement(model: nn.Module) -> tuple[torch.device, torch.dtype | None]:
    """The model's device and floating dtype (from its first parameter or buffer)."""
    device = torch.device("cpu")
    float_dtype = None
    for t in (*model.parameters(), *model.buffers()):
        device = t.device
        break
    for t in (*model.parameters(), *model.buffers()):
        if t.is_floating_point():
            float_dtype = t.dtype
            break
    return device, float_dtype


def run_session(
    model: nn.Module,
    loader: Iterable[Any],
    *,
    loss_fn: Callable[..., Tensor] | None,
    prepare: Callable[[Any], Any] | None,
    max_batches: int,
    seed: int,
    strict: bool,
    keep_batches: bool,
    tick: Callable[[], None] | None = None,
) -> SessionResult:
    """Measure *model* on up to *max_batches* batches of *loader* (see module docs).

    *tick* is called once per measured batch (the progress bar)."""
    internal: list[tuple[str, BaseException]] = []

    def on_error(stage: str, exc: BaseException) -> None:
        if strict:
            raise exc
        log.debug("internal error in %s: %r", stage, exc, exc_info=exc)
        internal.append((stage, exc))

    iterator: Iterator[Any] | None = None
    notes: list[str] = []
    try:
        device, float_dtype = placement(model)
        seed_rngs(seed, device)
        with contextlib.ExitStack() as stack:
            tracker = ModuleTracker(model, stack)
            adapter = BatchAdapter(model, prepare, device, float_dtype)
            trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
            param_names = {id(p): n for n, p in model.named_parameters(remove_duplicate=False)}
            activations = ActivationMonitor(tracker, param_names, device, seed, on_error)
            recurrent = RecurrentMonitor(model, activations, stack, seed)
            inputs = InputMonitor(device)
            gradients = GradientMonitor(trainable, device)
            losses = LossMonitor(loss_fn, device)
            iterator, one_shot = _iterate(loader)
            cached: list[ModelCall] = []
            samples = 0
            index = -1
            for index in range(max_batches):
                batch = _next_batch(iterator, index)
                if batch is _END:
                    index -= 1
                    break
                call = adapter.adapt(batch, index)
                valid = _padding_mask(call)
                activations.valid = valid
                if index > 0:
                    # the inputs are measured before the forward reads them: as the loader
                    # gave them, and warm in the cache for the model's first layer (the
                    # first batch is measured once the forward has said what its inputs are)
                    _guard(on_error, "input monitor", inputs.update, call.measured(), index, valid)
                tracker.begin_forward()
                if index == 0:
                    # what the first batch's inputs were before the forward (a model may
                    # change its input in place): one copy, once per call
                    first_inputs = {k: v.clone() for k, v in call.measured().items()}
                with torch.enable_grad():
                    with activations.watch(call.inputs, trace=index == 0, batch_index=index):
                        output = _forward(model, call, index, tracker)
                    recurrent.run()
                    activations.end_forward()
                    if index == 0:
                        _plan(call, activations, inputs, gradients, index)
                    loss = losses.compute(output, call.targets, index)
                    grads = _gradients(loss, [p for _, p in trainable], index, tracker)
                if index == 0:
                    _guard(on_error, "input monitor", inputs.update, first_inputs, index, valid)
                _guard(on_error, "gradient monitor", gradients.update, grads)
                samples += _samples(call)
                if keep_batches:
                    cached.append(call.detached())
                del output, loss, grads
                if tick is not None:
                    tick()
            batches = index + 1
            if batches == 0:
                raise LoaderError(
                    f"the loader yielded no batches ({describe(loader)}). Pass a loader with "
                    "at least one batch; check the Dataset's length and drop_last."
                )
            if one_shot:
                notes.append(
                    f"the loader is a one-shot iterator: {batches} batch(es) were consumed "
                    "from it; iterating it again continues after them"
                )
            if not model.training:
                notes.append(
                    "the model was in eval mode and was measured that way (dropout off, "
                    "batch norm using running statistics)"
                )
            notes.extend(adapter.notes)
            structure = activations.structure
            consumers = {k: (c.module, c.op) for k, c in structure.consumers.items()}
            normalized = dict(structure.normalized_by)
            measurements = Measurements(
                inputs=_results(
                    on_error,
                    "input monitor",
                    inputs.results,
                    (),
                    consumers,
                    normalized,
                    structure.transformed_by,
                ),
                layers=_results(on_error, "activation monitor", activations.results, ()),
                gradients=_results(on_error, "gradient monitor", gradients.results, ()),
                loss=_results(on_error, "loss monitor", losses.results, None),
                batches=batches,
                samples=samples,
                device=str(device),
                dtype=str(float_dtype).replace("torch.", "") if float_dtype else "none",
                training=model.training,
                notes=tuple(notes),
                module_types=dict(tracker.module_types),
            )
    finally:
        _close(iterator, loader)
    return SessionResult(measurements=measurements, batches=cached, internal_errors=internal)


_END = object()


def _iterate(loader: Iterable[Any]) -> tuple[Iterator[Any], bool]:
    try:
        iterator = iter(loader)
    except Exception as exc:
        raise LoaderError(
            f"loader could not be iterated: iter() raised {type(exc).__name__}: {exc}"
        ) from exc
    return iterator, iterator is loader


def _next_batch(iterator: Iterator[Any], index: int) -> Any:
    try:
        return next(iterator)
    except StopIteration:
        return _END
    except ScaleCheckError:
        raise
    except Exception as exc:
        raise LoaderError(
            f"the loader raised {type(exc).__name__} while producing batch {index}: {exc}"
        ) from exc


def _forward(model: nn.Module, call: ModelCall, index: int, tracker: ModuleTracker) -> Any:
    try:
        return model(*call.args, **call.kwargs)
    except ScaleCheckError:
        raise
    except Exception as exc:
        where = tracker.last_module or "<model>"
        module_type = tracker.module_types.get(where, "")
        shapes = describe_batch(call.kwargs if call.kwargs else call.args)
        hint = ""
        if "Expected more than 1 value per channel when training" in str(exc):
            hint = (
                " A batch norm in train mode needs at least 2 samples per batch: pass larger "
                "batches (a last batch of one sample: drop_last=True in the DataLoader), or "
                "call model.eval() first to measure it with its running statistics."
            )
        elif index == 0:
            hint = (
                " If the batches need converting first (e.g. inputs.float().view(-1, 1) as "
                "in your training loop), pass prepare=lambda batch: (inputs, targets) to "
                "diagnose()."
            )
        raise ModelError(
            f"the model raised {type(exc).__name__} on batch {index} in module {where!r}"
            f"{f' ({module_type})' if module_type else ''}: {exc}\n"
            f"It was called with {shapes}.{hint}"
        ) from exc


def _gradients(
    loss: Tensor, params: list[Tensor], index: int, tracker: ModuleTracker
) -> tuple[Tensor | None, ...]:
    if not params:
        return ()
    try:
        return torch.autograd.grad(loss, params, allow_unused=True)
    except Exception as exc:
        raise ModelError(
            f"computing gradients failed on batch {index} ({type(exc).__name__}: {exc}). "
            "This usually comes from a custom autograd function in the model or an in-place "
            "operation on a tensor autograd still needs."
        ) from exc


def _plan(
    call: ModelCall,
    activations: ActivationMonitor,
    inputs: InputMonitor,
    gradients: GradientMonitor,
    index: int,
) -> None:
    """Decide, from the traced first batch, which inputs are features and along which axis."""
    structure = activations.structure
    for name, seen in activations.pending_seen.items():
        consumer = structure.consumers.get(name)
        channels_first = consumer is not None and consumer.op in _CHANNELS_FIRST_OPS
        raw = call.inputs.get(name)
        image_axis = _flattened_image(consumer, raw)
        # a transformed image flattened into the layer ((x / 255).flatten(1)): what the
        # layer receives is measured per channel too, viewed in the input's layout
        image = (tuple(raw.shape), image_axis) if raw is not None and image_axis else None
        inputs.add_seen(name, seen, channels_first, image=image)
        inputs.update_seen(name, seen, index)
    activations.pending_seen.clear()
    activations.on_capture = inputs.update_seen
    feature_counts = []
    layer_params: set[str] = set()
    for name, t in call.inputs.items():
        consumer = structure.consumers.get(name)
        if _is_mask_or_ids(name):
            ids = name in structure.categorical or name.endswith("ids")
            kind = "categorical" if ids else "ignored"
        elif t.is_floating_point():
            kind = "feature"
        elif name in structure.categorical:
            kind = "categorical"
        elif name in structure.converted_to_float:
            kind = "feature"
        else:
            kind = "ignored"
        image_axis = _flattened_image(consumer, t)
        channels_first = image_axis == 1 or (
            consumer is not None and consumer.op in _CHANNELS_FIRST_OPS
        )
        axis = feature_axis(t, channels_first)
        if consumer is not None and consumer.raw_axis is not None and axis is not None:
            # the model permutes its input before the first layer (an image batch
            # [N, H, W, C] permuted for a convolution): the features are the dimension
            # that layer takes as its own
            axis = consumer.raw_axis
        features = 1 if axis is None else int(t.shape[axis])
        inputs.add(
            InputPlan(
                name=name,
                kind=kind,
                axis=axis,
                features=features,
                dtype=str(t.dtype).replace("torch.", ""),
                shape=tuple(t.shape),
                # blank positions, counted where the layer receives the input unchanged
                # (else on what it receives, see add_seen)
                count_blank=bool(image_axis)
                and kind == "feature"
                and name not in structure.transformed_by,
            )
        )
        if kind == "feature":
            feature_counts.append(features)
            if consumer is not None and consumer.op not in _NORM_OPS:
                layer_params.update(consumer.params)
    share_features = feature_counts[0] if len(feature_counts) == 1 else 0
    gradients.watch_input_layer(layer_params, share_features)


def _flattened_image(consumer: Consumer | None, t: Tensor | None) -> int | None:
    """The channel dimension of *t*, an image batch (``[N, C, H, W]`` or a volume ``[N, C,
    D, H, W]``) that reaches its first linear layer flattened whole (``nn.Flatten()``
    then ``nn.Linear``, the MNIST classifier's layout); None for other inputs (and
    without a consumer or a tensor).

    Its features are then its channels, as for a convolution and as
    ``torchvision.transforms.Normalize`` takes them: measured along the last dimension,
    they were the image's columns (28 "features" of a 28 x 28 image, and a standardizer
    per column). The channels are dimension 1 (torch's layout) unless the last dimension
    is the smaller one (numpy's and PIL's ``[N, H, W, C]``), which is then measured as
    before.

    Example:
        >>> c = Consumer("linear", "1", ("1.weight",), None, (8, 784))
        >>> _flattened_image(c, torch.zeros(8, 1, 28, 28)), _flattened_image(c, torch.zeros(8, 784))
        (1, None)
        >>> _flattened_image(c, torch.zeros(8, 28, 28, 1))
        3
    """
    if consumer is None or t is None:
        return None
    fed = consumer.fed_shape
    if not (
        consumer.op == "linear"
        and t.dim() in (4, 5)
        and len(fed) == 2
        and fed[0] == t.shape[0]
        and fed[1] == math.prod(t.shape[1:])
    ):
        return None
    return 1 if t.shape[1] <= t.shape[-1] else t.dim() - 1


#: Inputs that are never features, whatever their dtype: masks and ids by name (Hugging
#: Face and torch.nn.Transformer conventions). A float attention mask is not a feature.
_NON_FEATURE_NAMES = {
    "attention_mask",
    "token_type_ids",
    "position_ids",
    "input_ids",
    "src_key_padding_mask",
    "key_padding_mask",
    "padding_mask",
    "mask",
    "src_mask",
    "tgt_mask",
    "memory_mask",
    "head_mask",
    "lengths",
}


def _padding_mask(call: ModelCall) -> Tensor | None:
    """The batch's ``[N, T]`` padding mask (True = a real position), if it carries one.

    ``attention_mask`` follows the Hugging Face convention (non-zero = keep);
    ``*key_padding_mask`` / ``padding_mask`` follow torch.nn.Transformer's (True, or an
    additive -inf, = padding).
    """
    for name, t in call.inputs.items():
        if t.dim() != 2:
            continue
        if name == "attention_mask":
            return t != 0
        if name in ("src_key_padding_mask", "key_padding_mask", "padding_mask"):
            return ~t if t.dtype == torch.bool else t == 0
    return None


def _is_mask_or_ids(name: str) -> bool:
    return name in _NON_FEATURE_NAMES or name.endswith(("_mask", "_ids"))


def _guard(
    on_error: Callable[[str, BaseException], None], stage: str, fn: Callable[..., Any], *args: Any
) -> None:
    try:
        with torch.no_grad():
            fn(*args)
    except ScaleCheckError:
        raise
    except Exception as exc:
        on_error(stage, exc)


def _results(
    on_error: Callable[[str, BaseException], None],
    stage: str,
    fn: Callable[..., Any],
    default: Any,
    *args: Any,
) -> Any:
    """A monitor's frozen results, or *default* (and an SC001 finding) if it fails."""
    try:
        return fn(*args)
    except ScaleCheckError:
        raise
    except Exception as exc:
        on_error(stage, exc)
        return default


def _samples(call: ModelCall) -> int:
    """How many samples a batch holds: its first input's leading dimension, or the
    second when that is the targets' leading dimension and the first is not (a
    sequence-first ``[T, N, F]`` batch for an RNN without ``batch_first``)."""
    for t in call.inputs.values():
        if t.dim() == 0:
            return 1
        y = call.targets
        if (
            t.dim() >= 3
            and isinstance(y, Tensor)
            and y.dim() >= 1
            and y.shape[0] != t.shape[0]
            and y.shape[0] == t.shape[1]
        ):
            return int(t.shape[1])
        return int(t.shape[0])
    return 0


def _close(iterator: Iterator[Any] | None, loader: Any) -> None:
    """Shut down DataLoader worker processes started for this iteration."""
    if iterator is None or iterator is loader:
        return
    if getattr(loader, "persistent_workers", False):
        return  # the DataLoader reuses these workers for the user's next epoch
    shutdown = getattr(iterator, "_shutdown_workers", None)
    if callable(shutdown):
        with contextlib.suppress(Exception):
            shutdown()
