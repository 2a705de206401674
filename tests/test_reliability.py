"""Issue 5: the user's model, process and data are never harmed.

A model with BatchNorm in train mode, Dropout, a frozen eval-mode sub-block, a user hook
and parameters with existing ``.grad`` is diagnosed on the success path and with a failure
injected at every stage; afterwards everything is exactly as before.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import random
import warnings
import weakref

import numpy as np
import pytest
import torch
from torch import nn

import scalecheck
from scalecheck.rules import _registry
from scalecheck.trial import TrialOptions


class Net(nn.Module):
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
        self.fail_with: type[BaseException] = RuntimeError
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        if self.fail_at is not None and self.calls > self.fail_at:
            raise self.fail_with("boom")
        h = torch.tanh(self.drop(self.bn(self.inp(x))))
        return self.out(torch.relu(self.frozen(h)))


def make():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = Net()
    model.inp.weight.grad = torch.full_like(model.inp.weight, 0.5)
    fired: list[int] = []
    model.inp.register_forward_hook(lambda m, a, o: fired.append(1))
    g = torch.Generator().manual_seed(1)
    loader = [
        (torch.randn(8, 3, generator=g) * 100 + 1000, torch.randn(8, 1, generator=g))
        for _ in range(6)
    ]
    return model, loader, fired


def snapshot(model: nn.Module) -> dict:
    return {
        "params": {
            n: (p, p.detach().clone(), p.dtype, p.device, p.requires_grad)
            for n, p in model.named_parameters()
        },
        "buffers": {n: (b, b.detach().clone()) for n, b in model.named_buffers()},
        "grads": {
            n: (p.grad, None if p.grad is None else p.grad.clone())
            for n, p in model.named_parameters()
        },
        "training": {n: m.training for n, m in model.named_modules()},
        "hooks": {
            n: (
                dict(m._forward_hooks),
                dict(m._forward_pre_hooks),
                dict(m._backward_hooks),
                dict(m._forward_hooks_always_called),
            )
            for n, m in model.named_modules()
        },
        "rng": (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()),
        "lazy_seeds": _lazy_seeds(),
        "globals": _globals(),
    }


def _lazy_seeds():
    """The seeds torch queues for CUDA until it is initialized (``torch.manual_seed``
    queues one even on a machine without CUDA): a seed queued by diagnose would reach the
    user's CUDA generator after the call."""
    tracker = getattr(torch.cuda, "_lazy_seed_tracker", None)
    calls = tracker.get_calls() if tracker is not None else []
    return [call[0] if call else None for call in calls]


def _globals():
    return {
        "grad": torch.is_grad_enabled(),
        "autocast": torch.is_autocast_enabled("cpu"),
        "dtype": torch.get_default_dtype(),
        "threads": torch.get_num_threads(),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "filters": list(warnings.filters),
        "handlers": list(logging.getLogger().handlers),
        "sc_handlers": list(logging.getLogger("scalecheck").handlers),
    }


def assert_untouched(model: nn.Module, snap: dict) -> None:
    for n, p in model.named_parameters():
        obj, value, dtype, device, requires_grad = snap["params"][n]
        assert p is obj and torch.equal(p, value), n
        assert (p.dtype, p.device, p.requires_grad) == (dtype, device, requires_grad)
    for n, b in model.named_buffers():
        obj, value = snap["buffers"][n]
        assert b is obj and torch.equal(b, value), n  # running stats, num_batches_tracked
    for n, p in model.named_parameters():
        grad, value = snap["grads"][n]
        assert p.grad is grad, n
        if value is not None:
            assert torch.equal(p.grad, value)
    assert {n: m.training for n, m in model.named_modules()} == snap["training"]
    for n, m in model.named_modules():
        assert (
            dict(m._forward_hooks),
            dict(m._forward_pre_hooks),
            dict(m._backward_hooks),
            dict(m._forward_hooks_always_called),
        ) == snap["hooks"][n], n
    assert torch.equal(torch.get_rng_state(), snap["rng"][0])
    assert np.array_equal(np.random.get_state()[1], snap["rng"][1])
    assert random.getstate() == snap["rng"][2]
    assert _lazy_seeds() == snap["lazy_seeds"]
    assert _globals() == snap["globals"]


def _loader_failing_at(loader, k, error):
    def gen():
        for i, batch in enumerate(loader):
            if i == k:
                raise error("disk gone")
            yield batch

    return gen()


def _raise_in_rule(monkeypatch, error=ZeroDivisionError):
    rule = _registry.get_rule("SC102")

    def broken(ctx):
        raise error("bug in a rule")

    monkeypatch.setitem(
        _registry.REGISTRY,
        "SC102",
        _registry.Rule(
            rule.code,
            rule.name,
            rule.severity,
            rule.category,
            rule.summary,
            rule.thresholds,
            broken,
            rule.sections,
        ),
    )


# -- success path -------------------------------------------------------------------------
@pytest.mark.parametrize("trial", [False, True])
def test_untouched_on_success_and_user_hook_fires_once_per_forward(trial):
    model, loader, fired = make()
    snap = snapshot(model)
    np.random.seed(5)
    random.seed(5)
    snap["rng"] = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    report = scalecheck.diagnose(model, loader, trial=trial, strict=True)
    assert_untouched(model, snap)
    assert report.verdict != scalecheck.Verdict.OK
    n = len(fired)
    model(loader[0][0])
    assert len(fired) == n + 1


# -- failures injected at every stage ------------------------------------------------------
STAGES = [
    "loader-0",
    "loader-3",
    "forward-0",
    "forward-3",
    "loss-2",
    "trial",
    "interrupt-loader",
    "interrupt-forward",
    "interrupt-trial",
]


@pytest.mark.parametrize("stage", STAGES)
def test_untouched_when_a_stage_fails(stage):
    model, loader, _ = make()
    snap = snapshot(model)
    options: dict = {"trial": False, "strict": True}
    expected: type[BaseException] = scalecheck.ScaleCheckError
    match: str | None = None
    if stage.startswith("loader-"):
        k = int(stage.split("-")[1])
        loader = _loader_failing_at(loader, k, OSError)
        expected, match = scalecheck.LoaderError, f"batch {k}"
    elif stage.startswith("forward-"):
        model.fail_at = int(stage.split("-")[1])
        expected, match = scalecheck.ModelError, f"batch {model.fail_at}"
    elif stage == "loss-2":
        calls = []

        def loss_fn(out, y):
            calls.append(1)
            if len(calls) == 3:
                raise ValueError("nan guard")
            return torch.nn.functional.mse_loss(out, y)

        options["loss_fn"] = loss_fn
        expected, match = scalecheck.LossError, "batch 2"
    elif stage == "trial":
        model.fail_at = 7
        options["trial"] = TrialOptions(steps=20)
        expected, match = scalecheck.ModelError, "trial"
    elif stage == "interrupt-loader":
        loader = _loader_failing_at(loader, 2, KeyboardInterrupt)
        expected = KeyboardInterrupt
    elif stage == "interrupt-forward":
        model.fail_at, model.fail_with = 2, KeyboardInterrupt
        expected = KeyboardInterrupt
    elif stage == "interrupt-trial":
        model.fail_at, model.fail_with = 9, KeyboardInterrupt
        options["trial"] = TrialOptions(steps=20)
        expected = KeyboardInterrupt
    assert gc.isenabled()
    with pytest.raises(expected, match=match) as info:
        scalecheck.diagnose(model, loader, **options)
    if expected is not KeyboardInterrupt:
        assert info.value.__cause__ is not None  # chained to the user's exception
    assert_untouched(model, snap)
    assert gc.isenabled()  # the garbage collector, paused during the call, is back on


def test_the_garbage_collector_is_paused_during_the_call_and_left_as_found():
    model, loader, _ = make()
    seen = []

    def loss_fn(out, y):
        seen.append(gc.isenabled())
        return torch.nn.functional.mse_loss(out, y)

    scalecheck.diagnose(model, loader, loss_fn=loss_fn, trial=False, max_batches=2)
    assert seen and not any(seen) and gc.isenabled()
    gc.disable()
    try:
        scalecheck.diagnose(model, loader, trial=False, max_batches=2)
        assert not gc.isenabled()  # a caller's disabled collector stays disabled
    finally:
        gc.enable()


def test_errors_name_the_batch_and_the_last_module():
    model, loader, _ = make()

    def broken_bn(module, args):
        raise RuntimeError("bad running stats")

    model.bn.register_forward_pre_hook(broken_bn)
    with pytest.raises(scalecheck.ModelError, match=r"batch 0 in module 'bn' \(BatchNorm1d\)"):
        scalecheck.diagnose(model, loader, trial=False)


def test_a_broken_rule_becomes_sc001_and_the_others_still_run(monkeypatch):
    model, loader, _ = make()
    snap = snapshot(model)
    _raise_in_rule(monkeypatch)
    report = scalecheck.diagnose(model, loader, trial=False)
    sc001 = [f for f in report.findings if f.code == "SC001"]
    assert (
        len(sc001) == 1 and "SC102" in sc001[0].message and "ZeroDivisionError" in sc001[0].message
    )
    assert "SC101" in report.codes()
    assert_untouched(model, snap)
    with pytest.raises(ZeroDivisionError):
        scalecheck.diagnose(model, loader, trial=False, strict=True)
    assert_untouched(model, snap)


def test_a_broken_monitor_becomes_sc001(monkeypatch):
    from scalecheck.monitors import inputs

    def broken(self, *args, **kwargs):
        raise IndexError("monitor bug")

    monkeypatch.setattr(inputs.InputMonitor, "update", broken)
    model, loader, _ = make()
    snap = snapshot(model)
    report = scalecheck.diagnose(model, loader, trial=False)
    assert any(f.code == "SC001" and "input monitor" in f.message for f in report.findings)
    assert_untouched(model, snap)
    with pytest.raises(IndexError):
        scalecheck.diagnose(model, loader, trial=False, strict=True)


# -- determinism, warnings, memory, workers ------------------------------------------------
def test_same_seed_same_report():
    model, loader, _ = make()
    # The trial's time budget is the only source of non-determinism (it cuts the number
    # of steps on a slow machine), so it is set out of reach here.
    options = TrialOptions(steps=20, budget_s=600)
    a = scalecheck.diagnose(model, loader, seed=3, strict=True, trial=options).to_dict()
    b = scalecheck.diagnose(model, loader, seed=3, strict=True, trial=options).to_dict()
    for d in (a, b):
        d["meta"].pop("seconds")
        d["trial"].pop("seconds")
        for f in d["findings"]:
            f["evidence"].pop("seconds", None)
    assert a == b


def test_no_warnings_on_the_happy_path():
    model, loader, _ = make()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scalecheck.diagnose(model, loader, strict=True, trial=TrialOptions(steps=30))


def test_model_is_collectable_and_the_report_holds_no_tensors():
    model, loader, _ = make()
    report = scalecheck.diagnose(model, loader, strict=True)
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None

    def walk(obj, depth=0):
        assert not isinstance(obj, (torch.Tensor, np.ndarray))
        if depth > 10:
            return
        if isinstance(obj, dict):
            for v in obj.values():
                walk(v, depth + 1)
        elif isinstance(obj, (list, tuple)):
            for v in obj:
                walk(v, depth + 1)
        elif hasattr(obj, "__dataclass_fields__"):
            for name in obj.__dataclass_fields__:
                walk(getattr(obj, name), depth + 1)

    walk(report)


@pytest.mark.parametrize("workload", ["net", "lstm", "reference"])
def test_a_call_leaves_no_reference_cycles(workload):
    """Everything a call allocates is freed by reference counting when it returns: a
    cycle (a monitor holding a bound method of itself, for instance) would keep its
    tensors, scratch buffers included, alive until the cyclic collector runs."""
    if workload == "net":
        model, loader, _ = make()
        options = {"trial": TrialOptions(steps=5)}
    elif workload == "lstm":
        model = nn.LSTM(3, 8, batch_first=True)

        class Last(nn.Module):
            def __init__(self):
                super().__init__()
                self.rnn, self.head = model, nn.Linear(8, 1)

            def forward(self, x):
                return self.head(self.rnn(x)[0][:, -1])

        g = torch.Generator().manual_seed(0)
        loader = [(torch.randn(4, 6, 3, generator=g), torch.randn(4, 1)) for _ in range(3)]
        model, options = Last(), {"trial": False}
    else:
        from scalecheck.reference import interpolation

        model, loader = interpolation.make_model(seed=0), interpolation.make_loader(n=64)
        options = {"trial": False, "max_batches": 4}
    scalecheck.diagnose(model, loader, strict=True, **options)  # imports, caches
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        scalecheck.diagnose(model, loader, strict=True, **options)
        gc.collect()
        ours = [
            o
            for o in gc.garbage
            if isinstance(o, torch.Tensor) or type(o).__module__.startswith("scalecheck")
        ]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert ours == []


def test_dataloader_workers_are_shut_down():
    from torch.utils.data import DataLoader, TensorDataset

    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(64, 3, generator=g) * 1e3, torch.randn(64, 1, generator=g))
    loader = DataLoader(data, batch_size=8, num_workers=2)
    model, _, _ = make()
    before = set(multiprocessing.active_children())
    scalecheck.diagnose(model, loader, trial=False, max_batches=3, strict=True)
    assert set(multiprocessing.active_children()) <= before


def test_one_shot_iterator_is_consumed_once_and_the_user_is_told():
    model, loader, _ = make()
    it = iter(loader)
    report = scalecheck.diagnose(model, it, trial=False, max_batches=4, strict=True)
    assert report.measurements.batches == 4
    assert any("one-shot iterator" in n for n in report.measurements.notes)
    assert len(list(it)) == 2  # the rest is still there


# -- non-finite values ----------------------------------------------------------------------
def test_non_finite_inputs_activations_and_loss_become_findings():
    model, loader, _ = make()
    x, y = loader[0]
    x = x.clone()
    x[0, 0] = float("nan")
    x[1, 1] = float("inf")
    report = scalecheck.diagnose(model, [(x, y), *loader[1:]], strict=True)
    codes = report.codes()
    assert "SC105" in codes and "SC402" in codes
    sc105 = next(f for f in report.findings if f.code == "SC105")
    assert sc105.evidence["counts"] == {"input[0]": 1, "input[1]": 1}
    report.to_json()  # allow_nan=False inside: raises if a NaN slipped through


def test_bitwise_comparison_of_the_borrowed_state():
    """restore() finds changes by comparing raw bytes (numpy, on CPU): exact bits, not values."""
    from scalecheck.session._borrow import _same

    x = torch.tensor([1.0, float("nan"), -0.0, 3.0])
    assert _same(x, x.clone())  # NaN equals NaN at the same place
    assert not _same(x, torch.tensor([1.0, float("nan"), 0.0, 3.0]))  # -0.0 is not 0.0
    assert not _same(x, torch.tensor([1.0, float("nan"), -0.0, 3.0000002]))
    assert not _same(x, x.double())
    assert not _same(x, x[:3])
    w = torch.randn(6, 5)
    assert _same(w.T, w.T.contiguous())  # non-contiguous
    changed = w.clone()
    changed[5, 4] = torch.nextafter(changed[5, 4], torch.tensor(10.0))
    assert not _same(w, changed)
    for dtype in (torch.bfloat16, torch.float16, torch.int8, torch.bool, torch.complex64):
        t = torch.ones(3, 3, dtype=dtype)
        assert _same(t, t.clone())
    z = torch.randn(3, dtype=torch.complex64)
    assert _same(z.conj(), z.conj().resolve_conj())
    assert not _same(z, z.conj().resolve_conj())
    assert _same(torch.zeros(0, 3), torch.zeros(0, 3))
