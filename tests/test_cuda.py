"""diagnose on a CUDA device: the same measurements and verdicts as on the CPU, no host
synchronization inside the batch loop, and the model (and the device's RNG) left as found.

Skipped where no CUDA device is present (CI has none). On a machine with one:

    python -m pytest tests/test_cuda.py

``SCALECHECK_TEST_DEVICE=cpu`` runs the same tests with the CPU as "the device" (the
comparisons then compare the CPU with itself), to check the tests themselves; the
synchronization test needs CUDA's sync debug mode and stays skipped.

The synchronization check here is the ground truth behind ``test_device_reads.py`` (which
runs everywhere, on the ``meta`` device, and recognizes reads and copies by name): CUDA's
own sync debug mode warns at every operation that waits for the device.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

import scalecheck
from scalecheck.reference import interpolation as ref
from scalecheck.trial import TrialOptions
from test_device_reads import run_loop
from test_reliability import assert_untouched, make, snapshot

DEVICE = torch.device(os.environ.get("SCALECHECK_TEST_DEVICE", "cuda"))


def _usable(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_available()
    return device.type == "cpu"


pytestmark = pytest.mark.skipif(not _usable(DEVICE), reason=f"no {DEVICE.type} device here")

needs_cuda = pytest.mark.skipif(DEVICE.type != "cuda", reason="CUDA's sync debug mode is the check")


def _on(device: torch.device, batches: list[Any]) -> list[Any]:
    return [tuple(t.to(device) for t in batch) for batch in batches]


class _Recurrent(nn.Module):
    def __init__(self, kind: type[nn.RNNBase]) -> None:
        super().__init__()
        self.rnn = kind(6, 64, batch_first=True)
        self.head = nn.Linear(64, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.rnn(x)[0][:, -1])


def _seeded(build: Callable[[], nn.Module]) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build()


def _data(*shapes: tuple[int, ...], count: int, scale: float = 1.0, labels: int = 0) -> list:
    """*count* CPU batches: inputs of *shapes[0]* (times *scale*, plus an offset of 10 x
    *scale*), targets of *shapes[1]*, or class ids below *labels*."""
    g = torch.Generator().manual_seed(1)
    out = []
    for _ in range(count):
        x = torch.randn(shapes[0], generator=g) * scale + 10 * scale
        if labels:
            y = torch.randint(0, labels, (shapes[0][0],), generator=g)
        else:
            y = torch.randn(shapes[1], generator=g)
        out.append((x, y))
    return out


def _sparse(batches: list[Any]) -> list[Any]:
    """*batches* with half the values of every feature exactly 0, and feature 0 blank."""
    g = torch.Generator().manual_seed(2)
    out = []
    for x, y in batches:
        x = x * (torch.rand(x.shape, generator=g) < 0.5)
        x[:, 0] = 0.0
        out.append((x, y))
    return out


# Each workload: a model builder and CPU batches. Badly scaled inputs, so that the rules
# have something to say and the comparison covers findings, not only a clean report.
WORKLOADS: dict[str, Callable[[], tuple[nn.Module, list[Any]]]] = {
    "reference": lambda: (ref.make_model(seed=0), list(ref.make_loader(n=64, seed=0))),
    "mlp": lambda: (
        _seeded(
            lambda: nn.Sequential(
                nn.Linear(8, 256), nn.ReLU(), nn.Linear(256, 128), nn.Tanh(), nn.Linear(128, 1)
            )
        ),
        _data((128, 8), (128, 1), count=12, scale=300.0),
    ),
    # exact zeros in half the values of every feature, a blank feature, and 80 features
    # (the Gram matrix over the first 64 that vary): the device path's zero and finite
    # counts and the Gram index against the CPU's
    "sparse": lambda: (
        _seeded(lambda: nn.Sequential(nn.Linear(80, 32), nn.ReLU(), nn.Linear(32, 1))),
        _sparse(_data((64, 80), (64, 1), count=8, scale=30.0)),
    ),
    "cnn": lambda: (
        _seeded(
            lambda: nn.Sequential(
                nn.Conv2d(3, 8, 3, padding=1),
                nn.BatchNorm2d(8),
                nn.ReLU(),
                nn.Conv2d(8, 8, 3),
                nn.GELU(),
                nn.AdaptiveAvgPool2d(1),
                nn.Flatten(),
                nn.Linear(8, 4),
            )
        ),
        _data((32, 3, 16, 16), count=10, scale=255.0, labels=4),
    ),
    "lstm": lambda: (
        _seeded(lambda: _Recurrent(nn.LSTM)),
        _data((16, 40, 6), (16, 2), count=6, scale=50.0),
    ),
    "gru": lambda: (
        _seeded(lambda: _Recurrent(nn.GRU)),
        _data((16, 40, 6), (16, 2), count=6, scale=50.0),
    ),
    "transformer": lambda: (
        _seeded(
            lambda: nn.TransformerEncoder(
                nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True),
                2,
                enable_nested_tensor=False,
            )
        ),
        _data((8, 12, 16), (8, 12, 16), count=8, scale=20.0),
    ),
}


def _close(a: float | None, b: float | None, rel: float, abs_: float = 0.0) -> bool:
    if a is None or b is None:
        return a is b
    return a == pytest.approx(b, rel=rel, abs=abs_)


# -- the same measurements and verdict as on the CPU -----------------------------------------
@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_the_device_measures_what_the_cpu_measures(name: str) -> None:
    model, batches = WORKLOADS[name]()
    on_cpu = scalecheck.diagnose(model, batches, trial=False, strict=True)
    model = model.to(DEVICE)
    on_device = scalecheck.diagnose(model, _on(DEVICE, batches), trial=False, strict=True)

    assert on_device.measurements.device.startswith(DEVICE.type)
    assert on_device.verdict == on_cpu.verdict
    assert sorted(on_device.codes()) == sorted(on_cpu.codes())
    # inputs: exact extremes (the same values), moments to float32 reduction order
    for a, b in zip(on_device.inputs, on_cpu.inputs, strict=True):
        assert _close(a.kappa, b.kappa, 1e-3) and a.blank_positions == b.blank_positions
        assert (a.name, a.shape, a.feature_axis, a.samples) == (
            b.name,
            b.shape,
            b.feature_axis,
            b.samples,
        )
        for fa, fb in zip(a.features, b.features, strict=True):
            assert (fa.min, fa.max, fa.count, fa.nonfinite) == (
                fb.min,
                fb.max,
                fb.count,
                fb.nonfinite,
            )
            assert fa.zero_fraction == fb.zero_fraction
            assert _close(fa.mean, fb.mean, 1e-5, 1e-6 * abs(fb.max or 1.0))
            assert _close(fa.std, fb.std, 1e-3, 1e-6 * abs(fb.max or 1.0))
    # activations: every site found on both, saturation within a few values of the
    # sample (cuDNN and the CPU round a pre-activation near a band's edge differently)
    assert [s.site for s in on_device.layers] == [s.site for s in on_cpu.layers]
    for a, b in zip(on_device.layers, on_cpu.layers, strict=True):
        assert (a.calls, a.count, a.units) == (b.calls, b.count, b.units), a.site
        assert _close(a.exact_fraction, b.exact_fraction, 0.0, 0.01), a.site
        assert _close(a.near_fraction, b.near_fraction, 0.0, 0.01), a.site
        assert abs(a.dead_units - b.dead_units) <= max(1, a.units // 50), a.site
        assert _close(a.mean, b.mean, 1e-2, 1e-3 * (abs(b.std or 0.0) + 1e-6)), a.site
        assert _close(a.std, b.std, 1e-2, 1e-6), a.site
    for a, b in zip(on_device.gradients, on_cpu.gradients, strict=True):
        assert a.name == b.name and a.used == b.used
        assert _close(a.grad_norm, b.grad_norm, 1e-2, 1e-7), a.name
    if on_cpu.loss is not None:
        assert on_device.loss is not None
        assert _close(on_device.loss.value, on_cpu.loss.value, 1e-3), name


def test_the_reference_case_stalls_on_the_device_and_the_fix_works_there() -> None:
    model = ref.make_model(seed=0).to(DEVICE)
    loader = list(ref.make_loader(n=64, seed=0))
    report = scalecheck.diagnose(model, loader, strict=True)  # CPU batches, moved by scalecheck
    assert report.verdict == scalecheck.Verdict.STALLING
    assert report.trial is not None and report.trial.conclusive
    fixed = nn.Sequential(report.standardizer(), model).to(DEVICE)
    assert scalecheck.diagnose(fixed, loader, trial=False, strict=True).verdict == (
        scalecheck.Verdict.OK
    )


# -- the model and the device's RNG left as found ----------------------------------------------
def _device_rng() -> torch.Tensor | None:
    return torch.cuda.get_rng_state(DEVICE) if DEVICE.type == "cuda" else None


@pytest.mark.parametrize("trial", [False, True])
def test_the_model_on_the_device_is_left_as_found(trial: bool) -> None:
    model, loader, _ = make()
    model = model.to(DEVICE)
    model.inp.weight.grad = torch.full_like(model.inp.weight, 0.5)
    torch.manual_seed(7)
    if DEVICE.type == "cuda":
        torch.cuda.manual_seed_all(7)
    snap = snapshot(model)
    rng = _device_rng()
    report = scalecheck.diagnose(model, loader, trial=trial, strict=True)
    assert_untouched(model, snap)
    if rng is not None:
        assert torch.equal(_device_rng(), rng)
    assert report.verdict != scalecheck.Verdict.OK


@pytest.mark.parametrize("stage", ["forward-3", "loss-2", "trial"])
def test_the_model_on_the_device_is_left_as_found_when_a_stage_fails(stage: str) -> None:
    model, loader, _ = make()
    model = model.to(DEVICE)
    snap = snapshot(model)
    rng = _device_rng()
    options: dict[str, Any] = {"trial": False, "strict": True}
    expected: type[Exception] = scalecheck.ModelError
    if stage == "forward-3":
        model.fail_at = 3
    elif stage == "loss-2":
        calls: list[int] = []

        def loss_fn(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            calls.append(1)
            if len(calls) == 3:
                raise ValueError("nan guard")
            return nn.functional.mse_loss(out, y)

        options["loss_fn"] = loss_fn
        expected = scalecheck.LossError
    else:
        model.fail_at = 7
        options["trial"] = TrialOptions(steps=20)
    with pytest.raises(expected):
        scalecheck.diagnose(model, loader, **options)
    assert_untouched(model, snap)
    if rng is not None:
        assert torch.equal(_device_rng(), rng)


def test_half_and_bfloat16_models_on_the_device() -> None:
    """A low-precision model on the device: measured without an internal error, and the
    reference case's raw input still diagnosed (its inputs are cast to the model's dtype,
    and the report says so)."""
    dtypes = [torch.bfloat16] + ([torch.float16] if DEVICE.type == "cuda" else [])
    for dtype in dtypes:
        model = ref.make_model(seed=0).to(DEVICE, dtype)
        report = scalecheck.diagnose(model, ref.make_loader(n=64, seed=0), trial=False, strict=True)
        assert report.verdict != scalecheck.Verdict.OK, dtype
        assert any(c in report.codes() for c in ("SC101", "SC201")), dtype
        assert "SC001" not in report.codes()


# -- no host synchronization inside the batch loop ----------------------------------------------
def _syncs_per_batch(
    monkeypatch: pytest.MonkeyPatch, model: nn.Module, batches: list[Any]
) -> dict[str, set[int]]:
    """Where (the file and line the warning names) CUDA's sync debug mode saw the host
    wait for the device, and in which batches; the results phase (which reads everything
    back, once) is cut off."""
    ends: list[int] = []  # how many warnings had been caught when each batch ended
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            run_loop(monkeypatch, model, batches, tick=lambda: ends.append(len(caught)))
        finally:
            torch.cuda.set_sync_debug_mode("default")
    assert len(ends) == len(batches)
    places: dict[str, set[int]] = {}
    for i, w in enumerate(caught):
        if "synchroniz" in str(w.message).lower():
            batch = sum(1 for end in ends if end <= i)
            places.setdefault(f"{w.filename}:{w.lineno}", set()).add(batch)
    return places


def _recurring(places: dict[str, set[int]]) -> dict[str, set[int]]:
    """The places that made the host wait in more than one batch."""
    return {place: found for place, found in places.items() if len(found) > 1}


def _more(batches: list[Any], count: int) -> list[Any]:
    """*count* batches, cycling through *batches* (the folds of the stashed results every
    16 batches are inside the loop too)."""
    return [batches[i % len(batches)] for i in range(count)]


@needs_cuda
@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_no_host_sync_in_the_batch_loop(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    model, batches = WORKLOADS[name]()
    model = model.to(DEVICE)
    places = _syncs_per_batch(monkeypatch, model, _on(DEVICE, _more(batches, 34)))
    assert _recurring(places) == {}, places


@needs_cuda
def test_pinned_host_batches_are_copied_without_a_sync(monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches from ``DataLoader(pin_memory=True)`` (pinned host memory) reach the device
    without the host waiting for it, as in a training loop that copies with
    ``non_blocking=True``."""
    model, batches = WORKLOADS["mlp"]()
    model = model.to(DEVICE)
    pinned = [tuple(t.pin_memory() for t in batch) for batch in _more(batches, 34)]
    places = _syncs_per_batch(monkeypatch, model, pinned)
    assert _recurring(places) == {}, places


@needs_cuda
def test_the_check_sees_a_sync(monkeypatch: pytest.MonkeyPatch) -> None:
    """The harness itself: a read added to the forward is seen in every batch."""
    model, batches = WORKLOADS["mlp"]()
    model = model.to(DEVICE)

    def read(module: nn.Module, args: Any, out: torch.Tensor) -> None:
        float(out.sum())  # the host waits for the device

    model[0].register_forward_hook(read)
    places = _syncs_per_batch(monkeypatch, model, _on(DEVICE, _more(batches, 6)))
    assert any(found >= set(range(6)) for found in places.values()), places
