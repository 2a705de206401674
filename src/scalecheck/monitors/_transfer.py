"""Small host tensors a monitor makes (sample positions, masks, per-column constants)
copied to the model's device without making the host wait for it.

A blocking copy from the host waits for every kernel queued before it: one per site and
batch is a synchronization per batch, which on a GPU stalls the whole run (checked under
CUDA's sync debug mode by ``tests/test_cuda.py``).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["to_device"]


def to_device(t: Tensor, device: torch.device) -> Tensor:
    """*t*, a host tensor, on *device*, copied without waiting for the device where that is
    known to be safe.

    On CUDA the tensor is staged in pinned memory (from torch's caching host allocator,
    which keeps it until the copy has run) and copied non-blocking. Other backends take the
    plain copy; on ``meta`` there is nothing to wait for.

    Example:
        >>> to_device(torch.arange(3), torch.device("cpu")).tolist()
        [0, 1, 2]
    """
    if t.device == device:
        return t
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device, non_blocking=device.type == "meta")
