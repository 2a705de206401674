"""No host reads inside the batch loop on a device other than the CPU (DESIGN.md: "No host
sync in the hot loop").

On a GPU, reading a value back (``float(t)``, ``t.item()``, ``t.tolist()``, ``bool(t)``)
waits for every queued kernel: one per site and batch stalls the whole run. On the CPU the
monitors read small values freely (it costs nothing there), so the check runs the real
session loop on the ``meta`` device, which takes every non-CPU path and computes nothing,
under a TorchFunctionMode that records each read of a non-CPU tensor and the batch it
happened in. The results phase (which reads everything back, once) is cut off.

The one read allowed is documented in ``InputMonitor._add_log``: whether any input feature
is strictly positive, read once, at an input's first reduction.
"""

from __future__ import annotations

import traceback
from typing import Any

import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from scalecheck.session import _run

_READS = ("__bool__", "__float__", "__int__", "__index__", "item", "tolist", "numpy", "cpu")


class _Reads(TorchFunctionMode):
    """Records (batch, read, scalecheck frames) for each host read of a non-CPU tensor and
    answers it with a dummy value (a meta tensor has none)."""

    def __init__(self) -> None:
        super().__init__()
        self.batch = 0
        self.seen: list[tuple[int, str, list[str]]] = []

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = getattr(func, "__name__", "")
        if (
            name in _READS
            and args
            and isinstance(args[0], torch.Tensor)
            and args[0].device.type != "cpu"
        ):
            frames = [
                f"{f.filename.rsplit('/', 1)[-1]}:{f.name}"
                for f in traceback.extract_stack()
                if "scalecheck" in f.filename
            ]
            self.seen.append((self.batch, name, frames))
            if name == "tolist":
                return [0.0] * args[0].numel() if args[0].dim() else 0.0
            return {"__bool__": True, "__float__": 0.0, "item": 0.0}.get(name, 0)
        return func(*args, **(kwargs or {}))


class _LoopDone(Exception):
    pass


def _loop_reads(monkeypatch: pytest.MonkeyPatch, model: nn.Module, batches: list[Any]) -> Any:
    def stop(*args: Any, **kwargs: Any) -> Any:
        raise _LoopDone

    monkeypatch.setattr(_run, "_results", stop)
    reads = _Reads()

    def tick() -> None:
        reads.batch += 1

    with reads, pytest.raises(_LoopDone):
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


def _labels(n: int, classes: int) -> torch.Tensor:
    return torch.empty(n, dtype=torch.long, device="meta")


CASES = {
    # large calls (reduced at once): relu, tanh, the per-batch gradient path
    "mlp": lambda: (
        nn.Sequential(nn.Linear(8, 600), nn.ReLU(), nn.Linear(600, 300), nn.Tanh()),
        [(_meta((256, 8)), _meta((256, 300))) for _ in range(5)],
    ),
    # the reference case's shape: tiny calls pooled (Pending), softmax rows, small gradients
    "reference": lambda: (
        nn.Sequential(nn.Linear(1, 10), nn.Tanh(), nn.Linear(10, 3), nn.Softmax(-1)),
        [(_meta((4, 1)), _meta((4, 3))) for _ in range(6)],
    ),
    # the recurrent gates, measured jointly
    # (64 sequences x 8 drawn steps: each gate's 2^16 values are reduced at once, and the
    # gates jointly from the second call on)
    "lstm": lambda: (
        _Recurrent(nn.LSTM),
        [(_meta((64, 20, 6)), _meta((64, 2))) for _ in range(4)],
    ),
    "gru": lambda: (_Recurrent(nn.GRU), [(_meta((64, 20, 6)), _meta((64, 2))) for _ in range(4)]),
    # channel layouts
    "cnn": lambda: (
        nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 14 * 14, 4)),
        [(_meta((32, 3, 16, 16)), _labels(32, 4)) for _ in range(4)],
    ),
    "transformer": lambda: (
        nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 2, 32, batch_first=True), 2),
        [(_meta((4, 12, 16)), _meta((4, 12, 16))) for _ in range(4)],
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_no_host_reads_in_the_batch_loop_off_the_cpu(
    case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, batches = CASES[case]()
    seen = _loop_reads(monkeypatch, model.to("meta"), batches)
    # the documented exception: one read per input, whether a feature is positive
    allowed = [r for r in seen if any("_add_log" in f for f in r[2])]
    assert len(allowed) <= 1
    assert [r for r in seen if r not in allowed] == []


def test_the_check_sees_a_host_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """The harness itself: a read added to the activation monitor's per-call path (as the
    band counts' range check did before it was kept to the CPU) is recorded, per batch."""
    from scalecheck.monitors import activations

    original = activations.ActivationMonitor._process

    def reading(self: Any, site: Any, zd: torch.Tensor, weight: Any, calls: int) -> None:
        float(zd.amin())
        original(self, site, zd, weight, calls)

    monkeypatch.setattr(activations.ActivationMonitor, "_process", reading)
    model, batches = CASES["mlp"]()
    seen = _loop_reads(monkeypatch, model.to("meta"), batches)
    assert {batch for batch, name, _ in seen if name == "__float__"} == set(range(len(batches)))
