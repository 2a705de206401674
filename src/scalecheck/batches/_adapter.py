"""From whatever the loader yields to ``model(*args, **kwargs)`` and targets.

Understood without help:

- a tensor or numpy array: the model's only input, no targets;
- a tuple or list ``(inputs, targets[, extra...])``; ``inputs`` may itself be a tuple of
  tensors (several positional inputs) or a dict (keyword inputs); when the forward takes
  ``k`` required positional inputs, ``(x1, ..., xk, targets)`` works too;
- a Mapping (dict, UserDict, Hugging Face ``BatchEncoding``): keys that name a parameter of
  ``forward`` are passed by keyword (``labels`` included, when the model takes it); the
  first of ``y``, ``label``, ``labels``, ``target``, ``targets`` is the target (also when
  the model takes it: then it is passed, and still never measured as an input feature); a
  one-input model is fed from ``x``, ``input``, ``inputs``, ``features``,
  ``image``, ``images``, ``data`` or ``pixel_values`` (or the only other key).

Anything else, or a loop that transforms its batches, is handled by
``prepare(batch) -> (inputs, targets)``. Floating-point inputs are cast to the model's
floating dtype when they differ (a float64 numpy batch for a float32 model) and moved to the
model's device; the model is never moved.
"""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .._validation import call_description, describe
from ..errors import BatchError

__all__ = ["INPUT_KEYS", "TARGET_KEYS", "BatchAdapter", "ModelCall", "describe_batch"]

TARGET_KEYS = ("y", "label", "labels", "target", "targets")
INPUT_KEYS = ("x", "input", "inputs", "features", "image", "images", "data", "pixel_values")


@dataclass
class ModelCall:
    """One batch, ready for ``model(*args, **kwargs)``.

    Attributes:
        args: positional inputs.
        kwargs: keyword inputs.
        targets: the targets (a tensor, a tuple of tensors, or None).
        inputs: every input tensor by name (``"input"`` for a single positional input, the
            forward's parameter names for several, the keys for keyword inputs).
        originals: for inputs that were cast to the model's dtype, the values before the
            cast (statistics are measured on these: a float64 feature with mean 1e6 and std
            1e-3 is still measurable, though float32 cannot hold its variation).
    """

    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    targets: Any
    inputs: dict[str, Tensor] = field(default_factory=dict)
    originals: dict[str, Tensor] = field(default_factory=dict)

    def detached(self) -> ModelCall:
        """A copy that holds no autograd history (for caching batches)."""
        memo: dict[int, Any] = {}
        return ModelCall(
            args=tuple(_detach(a, memo) for a in self.args),
            kwargs={k: _detach(v, memo) for k, v in self.kwargs.items()},
            targets=_detach(self.targets, memo),
            inputs={k: _detach(v, memo) for k, v in self.inputs.items()},
        )

    def replace_inputs(self, new: Mapping[str, Tensor]) -> ModelCall:
        """The same call with some named input tensors replaced."""
        by_id = {id(t): name for name, t in self.inputs.items()}
        args = tuple(
            new.get(by_id.get(id(a), ""), a) if isinstance(a, Tensor) else a for a in self.args
        )
        kwargs = {
            k: (new.get(by_id.get(id(v), ""), v) if isinstance(v, Tensor) else v)
            for k, v in self.kwargs.items()
        }
        inputs = {k: new.get(k, v) for k, v in self.inputs.items()}
        return ModelCall(args=args, kwargs=kwargs, targets=self.targets, inputs=inputs)

    def measured(self) -> dict[str, Tensor]:
        """The tensors to measure: the originals where a cast happened, else the inputs."""
        return {k: self.originals.get(k, v) for k, v in self.inputs.items()}


def _detach(value: Any, memo: dict[int, Any]) -> Any:
    """Detach tensors inside *value*; the same tensor always maps to the same copy."""
    if isinstance(value, Tensor):
        if id(value) not in memo:
            memo[id(value)] = value.detach()
        return memo[id(value)]
    if isinstance(value, tuple):
        return tuple(_detach(v, memo) for v in value)
    if isinstance(value, list):
        return [_detach(v, memo) for v in value]
    if isinstance(value, dict):
        return {k: _detach(v, memo) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class _Signature:
    positional: tuple[str, ...]
    required: int
    keywords: frozenset[str]
    var_positional: bool
    var_keyword: bool


def _signature(model: nn.Module) -> _Signature:
    try:
        sig = inspect.signature(model.forward)
    except (TypeError, ValueError):
        return _Signature(("input",), 1, frozenset(), True, True)
    positional: list[str] = []
    required = 0
    keywords = set()
    var_pos = var_kw = False
    for p in sig.parameters.values():
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            positional.append(p.name)
            if p.default is p.empty:
                required += 1
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            keywords.add(p.name)
        var_pos |= p.kind == p.VAR_POSITIONAL
        var_kw |= p.kind == p.VAR_KEYWORD
    return _Signature(tuple(positional), required, frozenset(keywords), var_pos, var_kw)


def describe_batch(batch: Any, depth: int = 0) -> str:
    """Shapes and dtypes of a batch, for error messages.

    Example:
        >>> import torch
        >>> describe_batch((torch.zeros(4), torch.zeros(4, 3)))
        '(Tensor[4] float32, Tensor[4, 3] float32)'
    """
    if isinstance(batch, Tensor):
        return f"Tensor{list(batch.shape)} {str(batch.dtype).replace('torch.', '')}"
    if isinstance(batch, np.ndarray):
        return f"ndarray{list(batch.shape)} {batch.dtype}"
    if depth > 2:
        return "..."
    if isinstance(batch, Mapping):
        inner = ", ".join(
            f"{k!r}: {describe_batch(v, depth + 1)}" for k, v in list(batch.items())[:8]
        )
        return "{" + inner + "}"
    if isinstance(batch, (tuple, list)):
        inner = ", ".join(describe_batch(v, depth + 1) for v in list(batch)[:8])
        more = ", ..." if len(batch) > 8 else ""
        return (
            ("(" + inner + more + ")") if isinstance(batch, tuple) else ("[" + inner + more + "]")
        )
    return describe(batch)


class BatchAdapter:
    """Turns loader batches into :class:`ModelCall` objects for one model.

    Args:
        model: the model (its ``forward`` signature decides how batches are split).
        prepare: optional ``prepare(batch) -> (inputs, targets)``.
        device: the model's device; inputs are moved there.
        float_dtype: the model's floating dtype; floating inputs are cast to it.
    """

    def __init__(
        self,
        model: nn.Module,
        prepare: Callable[[Any], Any] | None,
        device: torch.device,
        float_dtype: torch.dtype | None,
    ) -> None:
        self.sig = _signature(model)
        self.prepare = prepare
        self.device = device
        self.float_dtype = float_dtype
        self.notes: list[str] = []
        self._originals: dict[int, Tensor] = {}

    def _note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def adapt(self, batch: Any, index: int) -> ModelCall:
        """Split and convert one batch."""
        if self.prepare is not None:
            try:
                prepared = self.prepare(batch)
            except Exception as exc:
                raise BatchError(
                    f"batch {index}: prepare={call_description(self.prepare)} raised "
                    f"{type(exc).__name__}: {exc} (the batch was {describe_batch(batch)})."
                ) from exc
            if not isinstance(prepared, (tuple, list)) or len(prepared) != 2:
                raise BatchError(
                    f"batch {index}: prepare={call_description(self.prepare)} returned "
                    f"{describe_batch(prepared)}; it must return a pair (inputs, targets) "
                    "(targets may be None)."
                )
            inputs, targets = prepared
            return self._build(inputs, targets, index, "prepare's inputs")
        return self._split(batch, index)

    # -- splitting ---------------------------------------------------------------------------
    def _split(self, batch: Any, index: int) -> ModelCall:
        if isinstance(batch, (Tensor, np.ndarray)):
            return self._build(batch, None, index, "the batch")
        if isinstance(batch, Mapping):
            return self._from_mapping(batch, index)
        if isinstance(batch, (tuple, list)):
            if len(batch) == 0:
                raise BatchError(
                    f"batch {index} is an empty {type(batch).__name__}; the loader must "
                    "yield tensors, (inputs, targets) pairs or dicts."
                )
            if len(batch) == 1:
                return self._build(batch[0], None, index, "batch[0]")
            k = self.sig.required
            if k >= 2 and len(batch) >= k and all(_leaf(b) for b in batch[:k]):
                targets = batch[k] if len(batch) > k else None
                if len(batch) > k + 1:
                    self._note(
                        f"batches have {len(batch)} elements: the first {k} were used as the "
                        f"model's inputs, element {k} as targets, the rest ignored"
                    )
                return self._build(tuple(batch[:k]), targets, index, "the batch")
            if len(batch) > 2:
                self._note(
                    f"batches have {len(batch)} elements: element 0 was used as the input, "
                    "element 1 as targets, the rest ignored (pass prepare= to choose)"
                )
            return self._build(batch[0], batch[1], index, "batch[0]")
        raise BatchError(
            f"batch {index} is {describe(batch)}; scalecheck understands a tensor, an "
            "(inputs, targets) tuple, or a dict of tensors. Pass "
            "prepare=lambda batch: (inputs, targets) to diagnose() to convert it."
        )

    def _from_mapping(self, batch: Mapping[Any, Any], index: int) -> ModelCall:
        keys = [k for k in batch if isinstance(k, str)]
        sig = self.sig
        accepted = set(sig.keywords)
        kwargs = {k: batch[k] for k in keys if k in accepted}
        target_key = next((k for k in TARGET_KEYS if k in batch and k not in accepted), None)
        targets = batch[target_key] if target_key is not None else None
        if not kwargs:
            if sig.required > 1:
                raise BatchError(
                    f"batch {index} is a dict with keys {keys}, but the model's forward takes "
                    f"{list(sig.positional)} and none of those keys match. Rename the keys, or "
                    "pass prepare=lambda b: ((b['a'], b['b']), b['y']) to diagnose()."
                )
            others = [k for k in keys if k != target_key]
            chosen = next((k for k in INPUT_KEYS if k in batch), None)
            if chosen is None and len(others) == 1:
                chosen = others[0]
            if chosen is None:
                raise BatchError(
                    f"batch {index} is a dict with keys {keys}; scalecheck cannot tell which "
                    f"one is the model's input (the forward takes {list(sig.positional)}). Use "
                    f"one of the keys {list(INPUT_KEYS)}, or pass prepare=lambda b: "
                    "(b['your_input'], b['your_target']) to diagnose()."
                )
            used = {chosen, target_key}
            self._ignored(keys, used)
            return self._build(batch[chosen], targets, index, f"batch[{chosen!r}]")
        missing = [p for p in sig.positional[: sig.required] if p not in kwargs]
        if missing:
            raise BatchError(
                f"batch {index} is a dict with keys {keys}, but the model's forward also "
                f"needs {missing}. Add them to the batch or pass prepare= to diagnose()."
            )
        self._ignored(keys, set(kwargs) | {target_key})
        call = self._build(kwargs, targets, index, "the batch")
        if call.targets is None:
            # labels the model takes itself (Hugging Face style): passed by keyword, and the
            # targets for the baseline, never an input feature
            label = next((k for k in TARGET_KEYS if k in call.kwargs), None)
            if label is not None:
                call.targets = call.kwargs[label]
        for key in TARGET_KEYS:
            call.inputs.pop(key, None)
            call.originals.pop(key, None)
        return call

    def _ignored(self, keys: list[str], used: set[Any]) -> None:
        rest = [k for k in keys if k not in used]
        if rest:
            self._note(f"batch keys not passed to the model: {rest}")

    # -- converting --------------------------------------------------------------------------
    def _build(self, inputs: Any, targets: Any, index: int, where: str) -> ModelCall:
        if isinstance(inputs, Mapping):
            kwargs = {str(k): self._input(v, index, f"{where}[{k!r}]") for k, v in inputs.items()}
            named = {k: v for k, v in kwargs.items() if isinstance(v, Tensor)}
            call = ModelCall(args=(), kwargs=kwargs, targets=None, inputs=named)
        elif isinstance(inputs, (tuple, list)) and not _numeric_list(inputs):
            if len(inputs) == 0:
                raise BatchError(f"batch {index}: {where} is empty; there is nothing to feed.")
            args = tuple(self._input(v, index, f"{where}[{i}]") for i, v in enumerate(inputs))
            names = self._positional_names(len(args))
            named = {n: a for n, a in zip(names, args, strict=True) if isinstance(a, Tensor)}
            call = ModelCall(args=args, kwargs={}, targets=None, inputs=named)
        else:
            x = self._input(inputs, index, where)
            call = ModelCall(args=(x,), kwargs={}, targets=None, inputs={"input": x})
        if not call.inputs:
            raise BatchError(
                f"batch {index}: {where} holds no tensor ({describe_batch(inputs)}); the model "
                "needs at least one tensor input."
            )
        call.originals = {
            k: self._originals[id(v)] for k, v in call.inputs.items() if id(v) in self._originals
        }
        self._originals.clear()
        call.targets = self._targets(targets, index)
        return call

    def _positional_names(self, n: int) -> list[str]:
        if n == 1:
            return ["input"]
        names = list(self.sig.positional[:n])
        names += [f"input{i}" for i in range(len(names), n)]
        return names

    def _input(self, value: Any, index: int, where: str) -> Any:
        t = self._tensor(value, index, where)
        if t.is_complex():
            raise BatchError(
                f"batch {index}: {where} is a complex tensor ({t.dtype}); scalecheck measures "
                "real-valued inputs. Split it into real and imaginary features with "
                "torch.view_as_real in prepare=."
            )
        if t.dim() > 0 and t.shape[0] == 0:
            raise BatchError(
                f"batch {index}: {where} has shape {tuple(t.shape)}, a batch of zero samples. "
                "Check the loader's batch_size and drop_last, or filter empty batches."
            )
        if t.is_floating_point() and self.float_dtype is not None and t.dtype != self.float_dtype:
            self._note(
                f"floating inputs were cast from {str(t.dtype).replace('torch.', '')} to the "
                f"model's {str(self.float_dtype).replace('torch.', '')}"
            )
            original = self._move(t)
            t = original.to(self.float_dtype)
            self._originals[id(t)] = original
            return t
        return self._move(t)

    def _targets(self, value: Any, index: int) -> Any:
        if value is None:
            return None
        if isinstance(value, (tuple, list)) and not _numeric_list(value):
            return tuple(self._targets(v, index) for v in value)
        if isinstance(value, Mapping):
            return {k: self._targets(v, index) for k, v in value.items()}
        return self._move(self._tensor(value, index, "the targets"))

    def _move(self, t: Tensor) -> Tensor:
        """*t* on the model's device. A pinned host tensor (``DataLoader(pin_memory=True)``)
        goes to a CUDA device without the host waiting for the device, as a training loop's
        ``x.to(device, non_blocking=True)`` does, under the same condition: the loader does
        not write into that pinned tensor again while the copy is queued (the DataLoader's
        pin-memory thread pins a new tensor per batch, and torch's caching host allocator
        keeps freed pinned memory until the copies using it have run). Other copies are
        the plain, blocking ones."""
        if t.device == self.device:
            return t
        pinned = self.device.type == "cuda" and t.device.type == "cpu" and t.is_pinned()
        return t.to(self.device, non_blocking=pinned)

    def _tensor(self, value: Any, index: int, where: str) -> Tensor:
        if isinstance(value, Tensor):
            if value.is_inference():
                # autograd cannot save an inference tensor for the backward: the forward
                # would stop inside the first layer. A copy made here is an ordinary tensor
                self._note(
                    "the batches hold tensors created under torch.inference_mode(), which "
                    "autograd cannot use: scalecheck measured copies, but training on them "
                    "fails (build them outside inference_mode, or under torch.no_grad())"
                )
                return value.clone()
            return value
        if (
            isinstance(value, np.ndarray)
            or _numeric_list(value)
            or (isinstance(value, numbers.Number) and not isinstance(value, bool))
        ):
            try:
                arr = np.asarray(value)
            except ValueError as exc:
                raise BatchError(
                    f"batch {index}: {where} is {describe(value)}, a nested list that is not "
                    f"rectangular ({exc}). Convert it to a tensor in prepare=."
                ) from exc
            if arr.dtype.kind not in "biufc":
                raise BatchError(
                    f"batch {index}: {where} is {describe(value)} with dtype {arr.dtype}; "
                    "only numeric arrays can be fed to a model."
                )
            if arr.dtype.kind == "c":
                raise BatchError(
                    f"batch {index}: {where} is complex ({arr.dtype}); scalecheck measures "
                    "real-valued inputs."
                )
            return torch.from_numpy(np.ascontiguousarray(arr))
        raise BatchError(
            f"batch {index}: {where} is {describe(value)}, not a tensor or numeric array. "
            "Pass prepare=lambda batch: (inputs, targets) to diagnose() to convert batches "
            "into tensors."
        )


def _leaf(value: Any) -> bool:
    return isinstance(value, (Tensor, np.ndarray))


def _numeric_list(value: Any, depth: int = 0) -> bool:
    """A (nested) list of plain numbers only, such as ``[[1.0, 2.0], [3.0, 4.0]]``."""
    if not isinstance(value, (list, tuple)) or not value or depth > 8:
        return False
    return all(
        _numeric_list(v, depth + 1)
        if isinstance(v, (list, tuple))
        else isinstance(v, numbers.Number) and not isinstance(v, bool)
        for v in value
    )
