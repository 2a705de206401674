"""The fix, as a module: standardize inputs with the measured statistics.

:class:`Standardizer` holds the fitted mean and std of each feature in buffers, so it moves
with ``.to(device)``, saves with ``state_dict()`` and prepends to a model:
``nn.Sequential(report.standardizer(), model)``. Features flagged as spanning decades can be
log-transformed first (``report.standardizer(log=True)``). For models with several inputs,
:class:`StandardizedModel` applies one standardizer per named input and calls the model.
Both deploy with the model: ``torch.export`` (with dynamic batch sizes) and
``torch.jit.trace``; a :class:`Standardizer` also compiles with ``torch.jit.script``.

Example:
    >>> import torch
    >>> s = Standardizer(mean=[100.0], std=[50.0], axis=1, ndim=2)
    >>> s(torch.tensor([[150.0], [50.0]])).flatten().tolist()
    [1.0, -1.0]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from .errors import InvalidArgumentError
from .measurements import InputStats

__all__ = ["StandardizedModel", "Standardizer", "from_input_stats"]


class Standardizer(nn.Module):
    """``(x - mean) / std`` per feature, optionally after ``log`` on some features.

    Args:
        mean: per-feature mean (of ``log x`` for log features).
        std: per-feature std; zeros (constant features) are replaced by 1.
        axis: the dimension that indexes features (None: one feature, the whole tensor).
        ndim: the number of dimensions of the inputs it was fitted on.
        log: per-feature flags: take ``log`` first.
    """

    # torch.jit.script compiles a module's properties unless told otherwise
    __jit_unused_properties__: ClassVar[list[str]] = ["features"]

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        *,
        axis: int | None = 1,
        ndim: int = 2,
        log: Sequence[bool] | None = None,
    ) -> None:
        super().__init__()
        mean_t = torch.as_tensor(list(mean), dtype=torch.float64)
        std_t = torch.as_tensor(list(std), dtype=torch.float64)
        if mean_t.shape != std_t.shape or mean_t.dim() != 1:
            raise InvalidArgumentError(
                f"mean and std must be 1-D and the same length, got {tuple(mean_t.shape)} and "
                f"{tuple(std_t.shape)}."
            )
        std_t = torch.where(std_t > 0, std_t, torch.ones_like(std_t))
        log_t = (
            torch.zeros(mean_t.shape, dtype=torch.bool)
            if log is None
            else torch.as_tensor(list(log), dtype=torch.bool)
        )
        self.register_buffer("mean", mean_t.float())
        self.register_buffer("std", std_t.float())
        self.register_buffer("log_mask", log_t)
        self.axis = axis
        self.ndim = ndim
        # Python values, not reads of the buffers, in forward: torch.export and
        # torch.jit.trace then see no data-dependent branch (a buffer read in forward
        # stops torch.export with GuardOnDataDependentSymNode). Loading a state_dict
        # updates them (the buffers' sizes cannot change there).
        self._features = int(mean_t.shape[0])
        self._logs = bool(log_t.any())
        self.register_load_state_dict_post_hook(_sync_flags)

    def __setstate__(self, state: dict[str, Any]) -> None:
        # a Standardizer pickled (torch.save(model)) before the flags existed
        super().__setstate__(state)
        if "_features" not in self.__dict__:
            self._features = int(self.mean.shape[0])
            self._logs = bool(self.log_mask.any())
            self.register_load_state_dict_post_hook(_sync_flags)

    @property
    def features(self) -> int:
        """Number of features."""
        return self._features

    def _shape(self, x: Tensor) -> list[int]:
        """The shape the buffers take to broadcast over *x* (TorchScript-compatible: no
        properties, plain exceptions with their message, no tuples of sizes)."""
        shape = [1] * x.dim()
        axis = self.axis
        if axis is None or (self._features == 1 and x.dim() <= 1):
            return shape if x.dim() > 0 else [1]
        if x.dim() != self.ndim:
            if axis == self.ndim - 1:
                axis = x.dim() - 1  # features in the last dimension stay there
            else:
                raise InvalidArgumentError(
                    f"this Standardizer was fitted on {self.ndim}-D inputs with features in "
                    f"dimension {axis}; got an input of shape {x.shape}."
                )
        if not torch.jit.is_tracing() and x.shape[axis] != self._features:
            noun = "feature" if self._features == 1 else "features"
            raise InvalidArgumentError(
                f"this Standardizer has {self._features} {noun} (dimension {axis}); got "
                f"an input of shape {x.shape}."
            )
        shape[axis] = self._features
        return shape

    def forward(self, x: Tensor) -> Tensor:
        """Standardize *x* (integers are converted to the buffers' float dtype; a sparse
        batch comes out dense, as centring makes it)."""
        if x.layout != torch.strided:
            x = x.to_dense()
        if not x.is_floating_point():
            x = x.to(self.mean.dtype)
        shape = self._shape(x)
        mean = self.mean.to(x.dtype).reshape(shape)
        std = self.std.to(x.dtype).reshape(shape)
        if self._logs:
            mask = self.log_mask.reshape(shape)
            x = torch.where(mask, torch.log(x.clamp_min(_tiny(x.dtype))), x)
        return (x - mean) / std

    def extra_repr(self) -> str:
        shown = ", ".join(
            f"{m:.4g}±{s:.4g}"
            for m, s in zip(self.mean.tolist()[:4], self.std.tolist()[:4], strict=True)
        )
        more = ", ..." if self.features > 4 else ""
        logs = f", log={int(self.log_mask.sum())} features" if bool(self.log_mask.any()) else ""
        return f"features={self.features}, axis={self.axis}, [{shown}{more}]{logs}"


def _tiny(dtype: torch.dtype) -> float:
    """The smallest positive normal number of a float *dtype* (``torch.finfo(dtype).tiny``,
    which TorchScript cannot compile): log features clamp values <= 0 to it.

    Example:
        >>> all(_tiny(d) == torch.finfo(d).tiny for d in (torch.float16, torch.bfloat16,
        ...                                               torch.float32, torch.float64))
        True
    """
    if dtype == torch.float64:
        return 2.2250738585072014e-308
    if dtype == torch.float16:
        return 6.103515625e-05
    return 1.1754943508222875e-38  # float32 and bfloat16 share their exponent range


def _sync_flags(module: nn.Module, incompatible_keys: Any) -> None:
    """After ``load_state_dict``: the log flag follows the loaded ``log_mask``."""
    if isinstance(module, Standardizer):
        module._logs = bool(module.log_mask.any())


class StandardizedModel(nn.Module):
    """A model whose named inputs are standardized before it runs.

    Args:
        model: the original model.
        standardizers: input name -> :class:`Standardizer`. A name is ``"input"`` for a
            single positional input, the forward's parameter name, or a keyword.
        positional: the names of the forward's positional inputs, in order.
    """

    def __init__(
        self,
        model: nn.Module,
        standardizers: Mapping[str, Standardizer],
        positional: Sequence[str] = ("input",),
    ) -> None:
        super().__init__()
        self.model = model
        self.standardizers = nn.ModuleDict(dict(standardizers))
        self.positional = tuple(positional)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Standardize the known inputs, then call the model."""
        names = ["input"] if len(args) == 1 else list(self.positional[: len(args)])
        new_args = [
            self.standardizers[n](a) if n in self.standardizers and isinstance(a, Tensor) else a
            for n, a in zip(names, args, strict=False)
        ]
        new_args += list(args[len(new_args) :])
        new_kwargs = {
            k: self.standardizers[k](v) if k in self.standardizers and isinstance(v, Tensor) else v
            for k, v in kwargs.items()
        }
        return self.model(*new_args, **new_kwargs)


def from_input_stats(inp: InputStats, log_features: Sequence[str] = ()) -> Standardizer:
    """A :class:`Standardizer` fitted from measured :class:`~scalecheck.InputStats`.

    Features named in *log_features* (and measured positive) are log-transformed first and
    standardized with the moments of their logarithm.
    """
    means, stds, logs = [], [], []
    for f in inp.features:
        use_log = f.name in log_features and f.log_mean is not None
        logs.append(use_log)
        if use_log:
            means.append(f.log_mean or 0.0)
            stds.append(f.log_std or 1.0)
        else:
            means.append(f.mean if f.mean is not None else 0.0)
            stds.append(f.std if f.std else 1.0)
    return Standardizer(means, stds, axis=inp.feature_axis, ndim=len(inp.shape), log=logs)
