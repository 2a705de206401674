"""The reference case reproduces the original problem faithfully."""

from __future__ import annotations

import random

import pytest
import torch

from scalecheck.reference import interpolation as ref


def test_constants_are_the_originals():
    assert (ref.LOW_X, ref.MID_X, ref.HIGH_X) == (255, 40000, 200000)
    assert ref.LOW_Y.tolist() == [0.0, 0.0, 1.0]
    assert ref.MID_Y.tolist() == pytest.approx([0.2, 0.5, 0.3])
    assert ref.HIGH_Y.tolist() == [1.0, 0.0, 0.0]
    assert ref.BATCH_SIZE == 4 and ref.LENGTH == 10000
    assert ref.WEIGHT_DECAY == 2.181622809797563e-12
    assert ref.LEARNING_RATE == 5.137871216190041e-05


@pytest.mark.parametrize(
    ("x", "y"),
    [
        (255, [0.0, 0.0, 1.0]),
        (40000, [0.2, 0.5, 0.3]),
        (200000, [1.0, 0.0, 0.0]),
        (250000, [1.0, 0.0, 0.0]),
        ((255 + 40000) / 2, [0.1, 0.25, 0.65]),
        (120000, [0.6, 0.25, 0.15]),
    ],
)
def test_target_is_piecewise_linear(x, y):
    assert ref.x_to_tensor(x).tolist() == pytest.approx(y, abs=1e-6)


def test_dataset_returns_python_ints_and_is_seeded():
    ds = ref.make_dataset(n=50, seed=3)
    x, y = ds[7]
    assert isinstance(x, int) and ref.LOW_X <= x <= ref.HIGH_X
    assert y.shape == (3,)
    assert ds[7][0] == x == ref.make_dataset(n=50, seed=3)[7][0]
    assert len(ds) == 50
    with pytest.raises(IndexError):
        ds[50]


def test_unseeded_dataset_uses_random_randint_like_the_original():
    state = random.getstate()
    try:
        random.seed(11)
        expected = random.randint(ref.LOW_X, ref.HIGH_X)
        random.seed(11)
        assert ref.XYDataset(seed=None)[0][0] == expected
    finally:
        random.setstate(state)


def test_model_matches_the_original_architecture():
    model = ref.make_model()
    assert [type(m).__name__ for m in model.children()] == ["Linear", "Linear", "Tanh", "Softmax"]
    assert model.x_to_hidden.in_features == 1 and model.x_to_hidden.out_features == 10
    assert model.hidden_to_out.out_features == 3 and model.softmax.dim == 1
    assert isinstance(ref.make_model("sigmoid").activation, torch.nn.Sigmoid)
    assert isinstance(ref.make_model("relu").activation, torch.nn.ReLU)
    out = model(torch.tensor([[255.0], [1e5]]))
    assert out.shape == (2, 3) and torch.allclose(out.sum(1), torch.ones(2))


def _lazy_seeds():
    # the seeds torch queues for CUDA until it is initialized (torch.manual_seed queues one
    # even on a machine without CUDA)
    tracker = getattr(torch.cuda, "_lazy_seed_tracker", None)
    return [call[0] if call else None for call in (tracker.get_calls() if tracker else [])]


def test_seeded_model_does_not_touch_the_global_rng():
    before, queued = torch.get_rng_state(), _lazy_seeds()
    a = ref.make_model(seed=5)
    b = ref.make_model(seed=5)
    assert torch.equal(torch.get_rng_state(), before) and _lazy_seeds() == queued
    assert torch.equal(a.x_to_hidden.weight, b.x_to_hidden.weight)


def test_loaders():
    xb, yb = next(iter(ref.make_loader()))
    assert xb.shape == (4, 1) and xb.dtype == torch.float32 and yb.shape == (4, 3)
    assert ((xb >= ref.LOW_X) & (xb <= ref.HIGH_X)).all()
    xs = torch.cat([b[0] for b in ref.make_loader(n=4000, standardized=True)])
    assert float(xs.mean()) == pytest.approx(0.0, abs=0.05)
    assert float(xs.std()) == pytest.approx(1.0, abs=0.05)
    raw = next(iter(ref.make_original_loader()))
    assert raw[0].dtype == torch.int64 and raw[0].shape == (4,)
    inputs, labels = ref.prepare(raw)
    assert (
        inputs.shape == (4, 1) and inputs.dtype == torch.float32 and labels.dtype == torch.float32
    )


def test_loader_is_deterministic_and_leaves_global_rng_alone():
    before = torch.get_rng_state()
    a = [b[0] for b in ref.make_loader(n=40, seed=2)]
    b = [b[0] for b in ref.make_loader(n=40, seed=2)]
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert torch.equal(torch.get_rng_state(), before)


def test_raw_inputs_learn_only_the_mean_and_standardized_inputs_learn():
    baseline = 0.0527  # the targets' variance
    raw = ref.train(ref.make_model(seed=0), ref.make_loader(seed=0), 600, 1e-2)
    fixed = ref.train(ref.make_model(seed=0), ref.make_loader(seed=0, standardized=True), 600, 1e-2)
    raw_final = sum(raw[-100:]) / 100
    fixed_final = sum(fixed[-100:]) / 100
    assert raw_final > 0.9 * baseline
    assert fixed_final < 0.2 * baseline


def test_sweep_reproduces_the_original_failure():
    result = ref.sweep([1e-3, 1e-1], steps=300)
    for lr, row in result.items():
        assert row["final_loss"] > 0.045, lr  # stuck near the targets' variance
        assert len(row["output_at_255"]) == 3
