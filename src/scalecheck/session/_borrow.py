"""Borrow the model and the process, and give both back exactly as they were.

:class:`Borrowed` records, before anything runs:

- every parameter and buffer: the tensor object, its ``_version`` counter, dtype, device,
  and a copy of its values (buffers always; parameters unless they are very large, in
  which case the version counter proves they were not written). Batch norm updates its
  running statistics inside a native kernel without bumping the version counter, so values
  are compared, not only versions;
- every parameter's ``.grad`` object and its version;
- every module's ``training`` flag;
- the torch CPU (and CUDA, when initialized), numpy and ``random`` RNG states;
- grad mode, the default dtype, the thread count and the deterministic-algorithms flag.

:meth:`Borrowed.restore` puts back whatever changed, in place, so tensor identities held by
the user (and by their optimizer) stay valid. It runs in a ``finally``, also when the model,
the loader or scalecheck itself raises, or on KeyboardInterrupt.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["Borrowed", "seed_rngs"]

#: Parameters are copied for restoration while they total at most this many bytes; above
#: it, their version counters still detect any write (and restore raises).
PARAM_COPY_LIMIT = 1 << 30


@dataclass
class _TensorRecord:
    tensor: Tensor
    version: int
    copy: Tensor | None


class Borrowed:
    """A snapshot of everything ``diagnose`` could disturb."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        params = list(model.named_parameters(remove_duplicate=False))
        buffers = list(model.named_buffers(remove_duplicate=False))
        param_bytes = sum(p.numel() * p.element_size() for _, p in params)
        copy_params = param_bytes <= PARAM_COPY_LIMIT
        with torch.no_grad():
            self.params = {
                n: _TensorRecord(p, p._version, p.detach().clone() if copy_params else None)
                for n, p in params
            }
            self.buffers = {n: _TensorRecord(b, b._version, b.detach().clone()) for n, b in buffers}
        self.param_attrs = _slots(model, "_parameters")
        self.buffer_attrs = _slots(model, "_buffers")
        self.grads = {
            n: (p.grad, p.grad._version if p.grad is not None else None) for n, p in params
        }
        self.requires_grad = {n: p.requires_grad for n, p in params}
        self.training = [(m, m.training) for m in model.modules()]
        self.rng_cpu = torch.get_rng_state()
        self.rng_cuda = (
            torch.cuda.get_rng_state_all()
            if torch.cuda.is_available() and torch.cuda.is_initialized()
            else None
        )
        self.rng_numpy = np.random.get_state()
        self.rng_python = random.getstate()
        self.grad_enabled = torch.is_grad_enabled()
        self.default_dtype = torch.get_default_dtype()
        self.threads = torch.get_num_threads()
        self.deterministic = torch.are_deterministic_algorithms_enabled()
        self.deterministic_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()

    def restore(self) -> list[str]:
        """Put everything back; returns what had to be repaired (for the report's notes)."""
        repaired: list[str] = []
        with torch.no_grad():
            for kind, records in (("parameter", self.params), ("buffer", self.buffers)):
                for name, rec in records.items():
                    # Native kernels (batch norm's running statistics) write buffers without
                    # bumping the version counter: compare values where a copy exists.
                    changed = rec.tensor._version != rec.version or (
                        rec.copy is not None and not _same(rec.tensor, rec.copy)
                    )
                    if changed:
                        if rec.copy is None:
                            repaired.append(
                                f"{kind} {name} was modified in place and is too large to restore"
                            )
                            continue
                        rec.tensor.copy_(rec.copy)
                        if kind == "parameter":
                            repaired.append(
                                f"parameter {name} was modified by the forward; restored"
                            )
        for (module, attr, key), value in self.param_attrs.items():
            if getattr(module, attr).get(key) is not value:
                getattr(module, attr)[key] = value
                repaired.append(f"parameter slot {key} of {type(module).__name__} restored")
        for (module, attr, key), value in self.buffer_attrs.items():
            if getattr(module, attr).get(key) is not value:
                getattr(module, attr)[key] = value
                repaired.append(f"buffer slot {key} of {type(module).__name__} restored")
        for name, rec in self.params.items():
            p = rec.tensor
            grad, _version = self.grads[name]
            if p.grad is not grad:
                p.grad = grad
            if p.requires_grad != self.requires_grad[name]:
                p.requires_grad_(self.requires_grad[name])
        for module, flag in self.training:
            if module.training != flag:
                module.training = flag
        torch.set_rng_state(self.rng_cpu)
        if self.rng_cuda is not None:
            torch.cuda.set_rng_state_all(self.rng_cuda)
        np.random.set_state(self.rng_numpy)
        random.setstate(self.rng_python)
        torch.set_grad_enabled(self.grad_enabled)
        if torch.get_default_dtype() != self.default_dtype:
            torch.set_default_dtype(self.default_dtype)
        if torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        if (
            torch.are_deterministic_algorithms_enabled() != self.deterministic
            or torch.is_deterministic_algorithms_warn_only_enabled() != self.deterministic_warn_only
        ):
            torch.use_deterministic_algorithms(
                self.deterministic, warn_only=self.deterministic_warn_only
            )
        return repaired


def seed_rngs(seed: int, device: torch.device) -> None:
    """Seed the generators a run on *device* draws from: the CPU's, and the device's own.

    Not ``torch.manual_seed``, which also seeds every accelerator backend: on a machine
    where CUDA is not initialized yet it *queues* a seed that CUDA applies when the user
    first initializes it, after ``diagnose`` has returned (the RNG states :class:`Borrowed`
    restores are those of initialized devices only), and it replaces a seed the user
    queued themselves. It also cost 260 us per call, a traceback taken for each lazy
    backend.

    Example:
        >>> seed_rngs(3, torch.device("cpu"))
        >>> a = torch.rand(2)
        >>> seed_rngs(3, torch.device("cpu"))
        >>> torch.equal(a, torch.rand(2))
        True
    """
    torch.default_generator.manual_seed(seed)
    if torch.cuda.is_initialized():
        # immediate once initialized (nothing is queued), whatever device the model is on:
        # the loader or the forward may draw there (Borrowed restores these states)
        torch.cuda.manual_seed_all(seed)
    if device.type not in ("cpu", "cuda", "meta"):
        # another accelerator the model lives on (initialized, then): its own call
        backend = getattr(torch, device.type, None)
        seed_all = getattr(backend, "manual_seed_all", None) or getattr(
            backend, "manual_seed", None
        )
        if callable(seed_all):
            seed_all(seed)


def _same(a: Tensor, b: Tensor) -> bool:
    """Bit-for-bit equality (NaN equals NaN at the same place).

    Dense CPU tensors are compared as raw bytes with numpy (read as the widest integers
    that divide their size): ``torch.equal`` took 300 us on a 512x784 float32 parameter
    and numpy 80 us, and this runs on every parameter and buffer at the end of each
    ``diagnose`` call. Other tensors are compared by value with torch.
    """
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if (
        a.device.type == b.device.type == "cpu"
        and a.layout == b.layout == torch.strided
        and not (a.is_quantized or b.is_quantized)
    ):
        return bool(np.array_equal(_bits(a), _bits(b)))
    if a.is_floating_point() or a.is_complex():
        return bool(
            torch.equal(a, b)
            or (
                (torch.isnan(a) == torch.isnan(b)).all()
                and torch.equal(torch.nan_to_num(a), torch.nan_to_num(b))
            )
        )
    return bool(torch.equal(a, b))


def _bits(t: Tensor) -> np.ndarray:
    """The bytes of a dense CPU tensor as a flat integer array (no copy when contiguous)."""
    raw = t.detach().resolve_conj().resolve_neg().reshape(-1).view(torch.uint8).numpy()
    for width in (8, 4, 2):
        if raw.size % width == 0:
            return raw.view(f"<i{width}")
    return raw


def _slots(model: nn.Module, attr: str) -> dict[tuple[nn.Module, str, str], Any]:
    """``(module, "_parameters", key) -> object`` for every registered slot."""
    out: dict[tuple[nn.Module, str, str], Any] = {}
    for module in model.modules():
        for key, value in getattr(module, attr).items():
            out[(module, attr, key)] = value
    return out
