"""The model is borrowed: after diagnose it is bit-for-bit as it was, also on errors."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch import nn

import scalecheck


class Net(nn.Module):
    """BatchNorm in train mode, Dropout, a frozen eval-mode block, a user hook."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(3, 8)
        self.bn = nn.BatchNorm1d(8)
        self.drop = nn.Dropout(0.2)
        self.frozen = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8))
        self.frozen.eval()
        for p in self.frozen.parameters():
            p.requires_grad_(False)
        self.out = nn.Linear(8, 1)
        self.fail_at: int | None = None
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        if self.fail_at is not None and self.calls > self.fail_at:
            raise RuntimeError("boom")
        h = torch.tanh(self.drop(self.bn(self.inp(x))))
        return self.out(torch.relu(self.frozen(h)))


def _snapshot(model: nn.Module):
    return {
        "params": {n: (p, p.detach().clone(), p.dtype, p.device, p.requires_grad)
                   for n, p in model.named_parameters()},
        "buffers": {n: (b, b.detach().clone()) for n, b in model.named_buffers()},
        "grads": {n: (p.grad, None if p.grad is None else p.grad.clone())
                  for n, p in model.named_parameters()},
        "training": {n: m.training for n, m in model.named_modules()},
        "hooks": {n: (dict(m._forward_hooks), dict(m._forward_pre_hooks),
                      dict(m._backward_hooks)) for n, m in model.named_modules()},
        "rng": (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()),
        "grad_mode": torch.is_grad_enabled(),
        "dtype": torch.get_default_dtype(),
        "threads": torch.get_num_threads(),
    }


def _assert_same(model: nn.Module, snap) -> None:
    for n, p in model.named_parameters():
        obj, value, dtype, device, rg = snap["params"][n]
        assert p is obj and torch.equal(p, value) and p.dtype == dtype and p.device == device
        assert p.requires_grad == rg
    for n, b in model.named_buffers():
        obj, value = snap["buffers"][n]
        assert b is obj and torch.equal(b, value), n
    for n, p in model.named_parameters():
        grad, value = snap["grads"][n]
        assert p.grad is grad
        if value is not None:
            assert torch.equal(p.grad, value)
    assert {n: m.training for n, m in model.named_modules()} == snap["training"]
    for n, m in model.named_modules():
        assert (dict(m._forward_hooks), dict(m._forward_pre_hooks),
                dict(m._backward_hooks)) == snap["hooks"][n]
    rng = snap["rng"]
    assert torch.equal(torch.get_rng_state(), rng[0])
    assert np.array_equal(np.random.get_state()[1], rng[1])
    assert random.getstate() == rng[2]
    assert torch.is_grad_enabled() == snap["grad_mode"]
    assert torch.get_default_dtype() == snap["dtype"]
    assert torch.get_num_threads() == snap["threads"]


def _model_and_loader():
    torch.manual_seed(0)
    model = Net()
    model.inp.weight.grad = torch.full_like(model.inp.weight, 0.5)  # an existing grad stays
    fired = []
    model.inp.register_forward_hook(lambda m, a, o: fired.append(1))
    g = torch.Generator().manual_seed(1)
    loader = [(torch.randn(8, 3, generator=g) * 100 + 1000, torch.randn(8, 1, generator=g))
              for _ in range(6)]
    return model, loader, fired


@pytest.mark.parametrize("trial", [False, True])
def test_model_untouched_on_success(trial):
    model, loader, fired = _model_and_loader()
    snap = _snapshot(model)
    report = scalecheck.diagnose(model, loader, trial=trial, strict=True)
    _assert_same(model, snap)
    assert report.verdict in (scalecheck.Verdict.STALLING, scalecheck.Verdict.AT_RISK)
    n = len(fired)
    model(loader[0][0])  # the user's hook still fires, once per forward
    assert len(fired) == n + 1


@pytest.mark.parametrize("fail_at", [0, 3])
def test_model_untouched_when_the_model_raises_mid_run(fail_at):
    model, loader, _ = _model_and_loader()
    model.fail_at = fail_at
    snap = _snapshot(model)
    with pytest.raises(scalecheck.ModelError, match=f"batch {fail_at}") as info:
        scalecheck.diagnose(model, loader, trial=False, strict=True)
    assert isinstance(info.value.__cause__, RuntimeError)
    _assert_same(model, snap)


def test_model_untouched_when_the_model_raises_in_the_trial():
    model, loader, _ = _model_and_loader()
    model.fail_at = 7  # 6 measured batches, then the trial's forwards
    snap = _snapshot(model)
    with pytest.raises(scalecheck.ModelError, match="trial"):
        scalecheck.diagnose(model, loader, strict=True)
    _assert_same(model, snap)


def test_model_untouched_when_the_loader_raises():
    model, loader, _ = _model_and_loader()

    def gen():
        yield loader[0]
        yield loader[1]
        raise OSError("disk gone")

    snap = _snapshot(model)
    with pytest.raises(scalecheck.LoaderError, match="batch 2") as info:
        scalecheck.diagnose(model, gen(), trial=False, strict=True)
    assert isinstance(info.value.__cause__, OSError)
    _assert_same(model, snap)


def test_same_seed_same_report():
    from scalecheck.trial import TrialOptions

    model, loader, _ = _model_and_loader()
    # The trial's time budget is the only source of non-determinism (it cuts the number
    # of steps on a slow machine), so it is set out of reach here.
    options = TrialOptions(steps=60, budget_s=600)
    a = scalecheck.diagnose(model, loader, seed=3, strict=True, trial=options)
    b = scalecheck.diagnose(model, loader, seed=3, strict=True, trial=options)
    a_dict, b_dict = a.to_dict(), b.to_dict()
    for d in (a_dict, b_dict):
        d["meta"].pop("seconds")
        if d["trial"]:
            d["trial"].pop("seconds")
            for f in d["findings"]:
                f["evidence"].pop("seconds", None)
    assert a_dict == b_dict
