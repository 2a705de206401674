"""No host synchronization inside the batch loop on a device other than the CPU (DESIGN.md:
"No host sync in the hot loop").

On a GPU, reading a value back (``float(t)``, ``t.item()``, ``t.tolist()``, ``bool(t)``)
waits for every queued kernel, and so does a blocking copy from the host to the device
(``torch.tensor(..., device=d)``, ``t.to(d)``, indexing a device tensor with a host list):
one per site and batch stalls the whole run. On the CPU the monitors read small values
freely (it costs nothing there), so the check runs the real session loop on the ``meta``
device, which takes every non-CPU path and computes nothing, under a TorchFunctionMode
that records each such read or copy, where it came from and the batch it happened in. The
results phase (which reads everything back, once) is cut off.

What may happen is what happens once: a cache filled on first use (sample positions, index
tensors) and the read documented in ``InputMonitor._add_log`` (whether an input feature is
positive, at its first reduction). So the check is that no read or copy comes from the
same place in two batches of a 34-batch run (two folds of the stashed results included).
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from scalecheck.monitors import _kernels, activations
from scalecheck.session import _run

BATCHES = 34

_READS = ("__bool__", "__float__", "__int__", "__index__", "item", "tolist", "numpy", "cpu")


def _device_of(value: Any) -> torch.device | None:
    if isinstance(value, torch.Tensor):
        return value.device
    if isinstance(value, (str, torch.device)):
        try:
            return torch.device(value)
        except RuntimeError:
            return None
    return None


def _host_index(index: Any) -> bool:
    """Whether an index holds a host list or a CPU tensor (copied to the device first)."""
    parts = index if isinstance(index, tuple) else (index,)
    return any(
        isinstance(p, list)
        or (isinstance(p, torch.Tensor) and p.device.type == "cpu" and p.dim() > 0)
        for p in parts
    )


def _sync_of(name: str, args: Any, kwargs: dict[str, Any]) -> str | None:
    """What kind of host synchronization a call is on a non-CPU device, if any."""
    first = args[0] if args else None
    on_device = isinstance(first, torch.Tensor) and first.device.type != "cpu"
    if name in _READS and on_device:
        return f"read ({name})"
    if name in ("tensor", "as_tensor"):
        device = _device_of(kwargs.get("device"))
        if device is not None and device.type != "cpu":
            return f"copy ({name})"
    if name in ("to", "cuda") and isinstance(first, torch.Tensor) and first.device.type == "cpu":
        targets = [_device_of(a) for a in args[1:]] + [_device_of(kwargs.get("device"))]
        if any(t is not None and t.type != "cpu" for t in targets):
            non_blocking = kwargs.get("non_blocking", False)
            # (a non-blocking copy from the host is staged at once on CUDA: no sync)
            return None if non_blocking else f"copy ({name})"
    if name == "copy_" and on_device and len(args) > 1:
        source = args[1]
        if isinstance(source, torch.Tensor) and source.device.type == "cpu":
            return None if kwargs.get("non_blocking", False) else "copy (copy_)"
    if name in ("__getitem__", "__setitem__") and on_device and _host_index(args[1]):
        return f"copy (host index, {name})"
    return None


class _Syncs(TorchFunctionMode):
    """Records (batch, kind, place) for each host read or blocking host-to-device copy
    involving a non-CPU tensor; a read is answered with a dummy value (a meta tensor has
    none)."""

    def __init__(self) -> None:
        super().__init__()
        self.batch = 0
        self.seen: list[tuple[int, str, str]] = []

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        kind = _sync_of(name, args, kwargs)
        if kind is not None:
            frames = [
                f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno} {f.name}"
                for f in traceback.extract_stack()
                if "scalecheck" in f.filename and "test_device_reads" not in f.filename
            ]
            self.seen.append((self.batch, kind, frames[-1] if frames else "?"))
            if kind.startswith("read"):
                if name == "tolist":
                    return [0.0] * args[0].numel() if args[0].dim() else 0.0
                return {"__bool__": True, "__float__": 0.0, "item": 0.0}.get(name, 0)
        return func(*args, **kwargs)


class _LoopDone(Exception):
    pass


def run_loop(
    monkeypatch: pytest.MonkeyPatch,
    model: nn.Module,
    batches: list[Any],
    tick: Callable[[], None],
) -> None:
    """The session's batch loop over every batch of *batches* (*tick* after each), cut off
    before the results phase, which reads everything back once. Also used by
    ``test_cuda.py``."""

    def stop(*args: Any, **kwargs: Any) -> Any:
        raise _LoopDone

    monkeypatch.setattr(_run, "_results", stop)
    with pytest.raises(_LoopDone):
        _run.run_session(
            model,
            batches,
            loss_fn=None,
            prepare=None,
            max_batches=len(batches),
            seed=0,
            strict=True,
            keep_batches=False,
            tick=tick,
        )


def _loop_syncs(monkeypatch: pytest.MonkeyPatch, model: nn.Module, batches: list[Any]) -> Any:
    reads = _Syncs()

    def tick() -> None:
        reads.batch += 1

    with reads:
        run_loop(monkeypatch, model, batches, tick)
    assert reads.batch == len(batches)  # every batch went through the loop
    return reads.seen


class _Recurrent(nn.Module):
    def __init__(self, kind: type[nn.RNNBase]) -> None:
        super().__init__()
        self.rnn = kind(6, 128, batch_first=True)
        self.head = nn.Linear(128, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.rnn(x)[0][:, -1])


def _meta(shape: tuple[int, ...]) -> torch.Tensor:
    return torch.empty(shape, device="meta")


def _labels(n: int) -> torch.Tensor:
    return torch.empty(n, dtype=torch.long, device="meta")


def _batches(*shapes: tuple[int, ...], labels: bool = False, count: int = BATCHES) -> list[Any]:
    """*count* meta batches: inputs of *shapes[0]*, targets of *shapes[1]* (or class ids
    when *labels*)."""
    target = (lambda: _labels(shapes[0][0])) if labels else (lambda: _meta(shapes[1]))
    return [(_meta(shapes[0]), target()) for _ in range(count)]


CASES = {
    # large calls (reduced at once): relu, tanh, the per-batch gradient path (the input
    # layer's shares included)
    "mlp": lambda: (
        nn.Sequential(nn.Linear(8, 600), nn.ReLU(), nn.Linear(600, 300), nn.Tanh()),
        _batches((256, 8), (256, 300)),
    ),
    # the reference case's shape: tiny calls pooled (Pending), softmax rows, small gradients
    "reference": lambda: (
        nn.Sequential(nn.Linear(1, 10), nn.Tanh(), nn.Linear(10, 3), nn.Softmax(-1)),
        _batches((4, 1), (4, 3)),
    ),
    # the recurrent gates (64 sequences x 8 drawn steps of 10: each gate's 2^16 values are
    # reduced at once, and the gates jointly from the second call on). A recurrent layer
    # runs step by step on meta (0.6 s per batch at 20 steps): 5 batches; the folds
    # every 16 batches are the other cases' (the same code)
    "lstm": lambda: (_Recurrent(nn.LSTM), _batches((64, 10, 6), (64, 2), count=5)),
    "gru": lambda: (_Recurrent(nn.GRU), _batches((64, 10, 6), (64, 2), count=5)),
    # channel layouts, class labels
    "cnn": lambda: (
        nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 14 * 14, 4)),
        _batches((32, 3, 16, 16), labels=True),
    ),
    "transformer": lambda: (
        nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 2, 32, batch_first=True), 2),
        _batches((4, 12, 16), (4, 12, 16), count=12),
    ),
}


@pytest.fixture(params=["default", "small-flush"])
def flush(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """As configured, and with small calls pooled only up to 256 values, so that the
    pooled buffers (of the reference case, the transformer's sites, the inputs) are reduced
    inside the loop too."""
    if request.param == "small-flush":
        monkeypatch.setattr(_kernels, "FLUSH_ELEMENTS", 256)
        monkeypatch.setattr(activations, "FLUSH_ELEMENTS", 256)
    return request.param


def _recurring(seen: list[tuple[int, str, str]]) -> dict[tuple[str, str], set[int]]:
    """The reads and copies that came from one place in more than one batch."""
    batches: dict[tuple[str, str], set[int]] = {}
    for batch, kind, place in seen:
        batches.setdefault((kind, place), set()).add(batch)
    return {key: found for key, found in batches.items() if len(found) > 1}


@pytest.mark.parametrize("case", sorted(CASES))
def test_no_host_sync_in_the_batch_loop_off_the_cpu(
    case: str, flush: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, batches = CASES[case]()
    seen = _loop_syncs(monkeypatch, model.to("meta"), batches)
    assert _recurring(seen) == {}


def test_the_check_sees_reads_and_copies(monkeypatch: pytest.MonkeyPatch) -> None:
    """The harness itself: reads and a blocking copy added to the activation monitor's
    per-call path (as the band counts' range check read before it was kept to the CPU)
    are recorded in every batch."""
    original = activations.ActivationMonitor._process

    def syncing(self: Any, site: Any, zd: torch.Tensor, weight: Any, calls: int) -> None:
        float(zd.amin())
        zd.amax(0).tolist()
        bool(zd.isnan().any())
        torch.tensor([1.0], device=zd.device)
        torch.ones(2).to(zd.device)
        _ = zd[:, [0, 1]]
        original(self, site, zd, weight, calls)

    monkeypatch.setattr(activations.ActivationMonitor, "_process", syncing)
    model, batches = CASES["mlp"]()
    recurring = _recurring(_loop_syncs(monkeypatch, model.to("meta"), batches))
    kinds = {kind for kind, _ in recurring}
    assert kinds == {
        "read (__float__)",
        "read (tolist)",
        "read (__bool__)",
        "copy (tensor)",
        "copy (to)",
        "copy (host index, __getitem__)",
    }
    assert all(found == set(range(BATCHES)) for found in recurring.values())
