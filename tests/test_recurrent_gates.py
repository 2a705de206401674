"""Recurrent gates: measured jointly or one by one, the statistics are the same, and the
previous hidden state is taken at the right step in every direction."""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn

import scalecheck
from scalecheck.monitors import activations, recurrent


class _Tagger(nn.Module):
    def __init__(self, cell: type[nn.RNNBase], bidirectional: bool) -> None:
        super().__init__()
        self.rnn = cell(8, 128, num_layers=2, batch_first=True, bidirectional=bidirectional)
        self.head = nn.Linear(128 * (2 if bidirectional else 1), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


def _batches(n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(3)
    # 64 sequences x 8 sampled steps = 512 rows: each gate block is large enough to be
    # measured jointly once its histogram calls are done
    assert recurrent.MAX_STEPS == 8
    return [
        (torch.randn(64, 40, 8, generator=g) * 3 + 1, torch.randn(64, 1, generator=g))
        for _ in range(n)
    ]


def _gate_stats(report: scalecheck.Report) -> dict[str, tuple]:
    return {
        a.site: (
            a.count,
            a.calls,
            a.mean,
            a.std,
            a.min,
            a.max,
            a.exact_fraction,
            a.near_fraction,
            a.unit_exact_fraction,
            a.unit_mean,
        )
        for a in report.layers
        if a.module == "rnn"
    }


@pytest.mark.parametrize(("cell", "bidirectional"), [(nn.LSTM, True), (nn.GRU, False)])
def test_joint_gate_measurement_equals_one_site_at_a_time(monkeypatch, cell, bidirectional):
    torch.manual_seed(0)
    model = _Tagger(cell, bidirectional)
    batches = _batches(activations.HIST_CALLS + 3)
    calls = []
    real = activations.ActivationMonitor._process_blocks

    def counting(self, sites, z):
        calls.append(len(sites))
        return real(self, sites, z)

    monkeypatch.setattr(activations.ActivationMonitor, "_process_blocks", counting)
    joint = scalecheck.diagnose(model, batches, trial=False, strict=True)
    assert calls and set(calls) == ({4} if cell is nn.LSTM else {2, 1})  # GRU: r+z, new
    monkeypatch.setattr(activations.ActivationMonitor, "_joint_ready", lambda *a: False)
    single = scalecheck.diagnose(model, batches, trial=False, strict=True)
    a, b = _gate_stats(joint), _gate_stats(single)
    assert a.keys() == b.keys() and len(a) >= 6
    for site in a:
        count, calls_, *values = a[site]
        assert (count, calls_) == b[site][:2]
        for x, y in zip(values, b[site][2:], strict=True):
            assert x == pytest.approx(y, rel=1e-5, abs=1e-6), site


def _previous_reference(seq, init, reverse, mask):
    """Every step's previous hidden state, built the direct way."""
    prev = torch.empty_like(seq)
    if not reverse:
        prev[:, 0] = init
        prev[:, 1:] = seq[:, :-1]
        return prev
    prev[:, -1] = init
    prev[:, :-1] = seq[:, 1:]
    if mask is not None:
        last = (mask.sum(1) - 1).clamp_min(0)
        prev[torch.arange(seq.shape[0]), last] = init
    return prev


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("sampled", [None, "drawn", "drawn-on-host", "first-and-last"])
def test_previous_hidden_state_at_sampled_steps(reverse, masked, sampled):
    # every way the previous states are gathered: all steps, steps drawn at random (as a
    # tensor only, or also as a host list, which a forward direction without padding
    # gathers from directly), and steps that include the first and the last
    g = torch.Generator().manual_seed(1)
    seq = torch.randn(4, 30, 5, generator=g)
    init = torch.randn(4, 5, generator=g)
    lengths = torch.tensor([30, 7, 1, 18])
    mask = (torch.arange(30)[None, :] < lengths[:, None]) if masked else None
    drawn = None
    if sampled == "first-and-last":
        drawn = [0, 3, 4, 29]
    elif sampled is not None:
        drawn = recurrent._draw_steps(30, random.Random(0))
    steps = torch.tensor(drawn) if drawn is not None else None
    before = seq.clone()
    got = recurrent._previous(
        seq, init, reverse, mask, steps, drawn if sampled != "drawn" else None
    )
    want = _previous_reference(seq, init, reverse, mask)
    if steps is not None:
        want = want[:, steps]
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert torch.equal(seq, before)  # the first state is written into the gathered copy


@pytest.mark.parametrize("drawn", [[0, 3, 9], [2, 5, 11]], ids=["with-first", "without"])
def test_previous_states_take_the_wider_dtype_on_every_path(drawn):
    # under autocast an RNN's output is half precision while the initial state stays
    # float32: the gathered states must be float32 on both paths, as torch.where makes them
    seq = torch.randn(2, 12, 3).to(torch.bfloat16)
    init = torch.randn(2, 3)
    steps = torch.tensor(drawn)
    general = recurrent._previous(seq, init, False, None, steps)
    direct = recurrent._previous(seq, init, False, None, steps, drawn)
    assert general.dtype == direct.dtype == torch.float32
    torch.testing.assert_close(direct, general, rtol=0, atol=0)


def test_gates_under_autocast_with_a_float32_initial_state():
    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = nn.RNN(3, 4, batch_first=True)
            self.head = nn.Linear(4, 1)

        def forward(self, x):
            h0 = torch.zeros(1, x.shape[0], 4)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out, _ = self.rnn(x, h0)
            return self.head(out[:, -1].float())

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(8, 20, 3, generator=g), torch.randn(8, 1, generator=g))]
    report = scalecheck.diagnose(Model(), batches, trial=False, strict=True)
    assert any(a.site.endswith("rnn.l0.hidden") for a in report.layers)
