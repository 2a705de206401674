"""Issue 5: every bad input gets a clear ScaleCheckError that names the argument or the
batch, shows what was received and says what to do. One row per case."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import scalecheck
from scalecheck import (
    BatchError,
    InvalidArgumentError,
    LoaderError,
    LossError,
    ModelError,
)


def mlp() -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))


X = torch.randn(8, 3, generator=torch.Generator().manual_seed(0))
Y = torch.randn(8, 1, generator=torch.Generator().manual_seed(1))


class Flexible(nn.Module):
    """Accepts any number of features (so that ragged batches reach scalecheck)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))

    def forward(self, x):
        return torch.tanh(x.mean(-1, keepdim=True) * self.w)


def flexible() -> nn.Module:
    return Flexible()


def frozen() -> nn.Module:
    m = mlp()
    for p in m.parameters():
        p.requires_grad_(False)
    return m


def bad_prepare(batch):
    return batch[0]


def raising_prepare(batch):
    raise KeyError("image")


def vector_loss(output, target):
    return (output - target) ** 2


def raising_loss(output, target):
    raise ValueError("shapes differ")


ROWS = [
    # (id, model, loader, options, error class, message pattern)
    (
        "empty loader",
        mlp,
        [],
        {},
        LoaderError,
        r"yielded no batches \(\[\] \(list\)\).*at least one batch",
    ),
    (
        "loader not iterable",
        mlp,
        42,
        {},
        InvalidArgumentError,
        r"loader must be an iterable of batches.*42 \(int\)",
    ),
    (
        "loader is a string",
        mlp,
        "data.csv",
        {},
        InvalidArgumentError,
        r"loader must be an iterable of batches, got 'data.csv' \(str\)",
    ),
    (
        "loader is one tensor",
        mlp,
        X,
        {},
        InvalidArgumentError,
        r"single Tensor of shape \(8, 3\).*pass \[x\] or \[\(x, y\)\]",
    ),
    (
        "loader is one dict batch",
        mlp,
        {"x": X},
        {},
        InvalidArgumentError,
        r"got a dict .*pass \[batch\]",
    ),
    (
        "batch of strings",
        mlp,
        [("a", "b")],
        {},
        BatchError,
        r"batch 0: batch\[0\] is 'a' \(str\), not a tensor.*prepare=",
    ),
    ("batch is None", mlp, [None], {}, BatchError, r"batch 0 is None \(NoneType\).*prepare="),
    ("nested, no tensor", mlp, [[[], []]], {}, BatchError, r"batch 0: batch\[0\] is empty"),
    (
        "ragged shapes across batches",
        flexible,
        [(X, Y), (torch.randn(8, 5), Y)],
        {},
        BatchError,
        r"batch 1: input 'input' has shape \(8, 5\), but the first batch had 3 features along dimension 1.*pad or crop",
    ),
    (
        "model is not a module",
        lambda: "resnet",
        [(X, Y)],
        {},
        InvalidArgumentError,
        r"model must be a torch.nn.Module, got 'resnet' \(str\)",
    ),
    (
        "model is a state_dict",
        lambda: mlp().state_dict(),
        [(X, Y)],
        {},
        InvalidArgumentError,
        r"looks like a state_dict",
    ),
    (
        "model without parameters",
        lambda: nn.ReLU(),
        [(X, Y)],
        {},
        InvalidArgumentError,
        r"\(ReLU\) has no parameters",
    ),
    (
        "frozen model",
        frozen,
        [(X, Y)],
        {},
        InvalidArgumentError,
        r"no trainable parameters.*requires_grad=False",
    ),
    (
        "model on the meta device",
        lambda: mlp().to("meta"),
        [(X, Y)],
        {},
        InvalidArgumentError,
        r"has 4 tensors on the 'meta' device \(0.weight, 0.bias, 2.weight and 1 more\).*to_empty",
    ),
    (
        "a last batch of one sample into a batch norm",
        lambda: nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 1)),
        [(X, Y), (X[:1], Y[:1])],
        {},
        ModelError,
        r"(?s)batch 1 in module '1' \(BatchNorm1d\).*at least 2 samples per batch.*"
        r"drop_last=True.*model.eval\(\)",
    ),
    (
        "zero-size batch",
        mlp,
        [(torch.zeros(0, 3), torch.zeros(0, 1))],
        {},
        BatchError,
        r"batch 0: .*shape \(0, 3\), a batch of zero samples",
    ),
    (
        "integer inputs to a linear layer",
        mlp,
        [(torch.ones(8, 3, dtype=torch.long), Y)],
        {},
        ModelError,
        r"(?s)batch 0 in module '0' \(Linear\).*Tensor\[8, 3\] int64.*prepare=",
    ),
    (
        "complex inputs",
        mlp,
        [(torch.randn(8, 3, dtype=torch.complex64), Y)],
        {},
        BatchError,
        r"complex tensor .*view_as_real",
    ),
    (
        "max_batches is a string",
        mlp,
        [(X, Y)],
        {"max_batches": "3"},
        InvalidArgumentError,
        r"max_batches must be an int, got '3' \(str\)",
    ),
    (
        "max_batches is zero",
        mlp,
        [(X, Y)],
        {"max_batches": 0},
        InvalidArgumentError,
        r"max_batches must be >= 1, got 0",
    ),
    (
        "max_batches is a bool",
        mlp,
        [(X, Y)],
        {"max_batches": True},
        InvalidArgumentError,
        r"max_batches must be an int, got True \(bool\)",
    ),
    (
        "seed is negative",
        mlp,
        [(X, Y)],
        {"seed": -1},
        InvalidArgumentError,
        r"seed must be >= 0, got -1",
    ),
    (
        "seed is a float",
        mlp,
        [(X, Y)],
        {"seed": 1.5},
        InvalidArgumentError,
        r"seed must be an int, got 1.5 \(float\)",
    ),
    (
        "loss_fn is a string",
        mlp,
        [(X, Y)],
        {"loss_fn": "mse"},
        InvalidArgumentError,
        r"loss_fn must be a callable or None, got 'mse' \(str\); pass e.g. torch.nn.MSELoss\(\)",
    ),
    (
        "prepare is not callable",
        mlp,
        [(X, Y)],
        {"prepare": 3},
        InvalidArgumentError,
        r"prepare must be a callable or None, got 3 \(int\)",
    ),
    (
        "prepare returns one tensor",
        mlp,
        [(X, Y)],
        {"prepare": bad_prepare},
        BatchError,
        r"prepare=bad_prepare returned Tensor\[8, 3\] float32; it must return a pair \(inputs, targets\)",
    ),
    (
        "prepare raises",
        mlp,
        [(X, Y)],
        {"prepare": raising_prepare},
        BatchError,
        r"prepare=raising_prepare raised KeyError: 'image'",
    ),
    (
        "loss_fn returns a non-scalar",
        mlp,
        [(X, Y)],
        {"loss_fn": vector_loss},
        LossError,
        r"batch 0: the loss has shape \(8, 1\); it must be a scalar",
    ),
    (
        "loss_fn raises",
        mlp,
        [(X, Y)],
        {"loss_fn": raising_loss},
        LossError,
        r"loss_fn=raising_loss raised ValueError: shapes differ",
    ),
    (
        "targets missing for loss_fn",
        mlp,
        [X],
        {"loss_fn": nn.MSELoss()},
        LossError,
        r"needs targets, but the batch has none",
    ),
    (
        "unknown rule in ignore",
        mlp,
        [(X, Y)],
        {"ignore": ["SC999"]},
        InvalidArgumentError,
        r"ignore= contains 'SC999'",
    ),
    (
        "misspelt rule name",
        mlp,
        [(X, Y)],
        {"ignore": "unscaled-input-featur"},
        InvalidArgumentError,
        r"Did you mean 'unscaled-input-feature'\?",
    ),
    (
        "ignore is not strings",
        mlp,
        [(X, Y)],
        {"ignore": [101]},
        InvalidArgumentError,
        r"ignore must contain only strings, got 101 \(int\)",
    ),
    (
        "strict is not a bool",
        mlp,
        [(X, Y)],
        {"strict": "yes"},
        InvalidArgumentError,
        r"strict must be True or False, got 'yes' \(str\)",
    ),
    (
        "trial is not a bool",
        mlp,
        [(X, Y)],
        {"trial": "fast"},
        InvalidArgumentError,
        r"trial must be True or False, got 'fast' \(str\)",
    ),
    (
        "dict batch with unknown keys",
        mlp,
        [{"a": X, "b": X}],
        {},
        BatchError,
        r"keys \['a', 'b'\]; scalecheck cannot tell which one is the model's input",
    ),
    (
        "numpy object array",
        mlp,
        [(np.array(["x", "y"], dtype=object), Y)],
        {},
        BatchError,
        r"dtype object; only numeric arrays",
    ),
    (
        "targets that fit no loss",
        mlp,
        [(X, torch.randn(8, 7))],
        {},
        LossError,
        r"cannot infer a loss for output shape \(8, 1\).*targets shape \(8, 7\).*loss_fn=",
    ),
]


@pytest.mark.parametrize(
    ("model", "loader", "options", "error", "pattern"),
    [r[1:] for r in ROWS],
    ids=[r[0] for r in ROWS],
)
def test_bad_input_is_explained(model, loader, options, error, pattern):
    with pytest.raises(error, match=pattern) as info:
        scalecheck.diagnose(model(), loader, trial=options.pop("trial", False), **options)
    assert isinstance(info.value, scalecheck.ScaleCheckError)


def test_the_table_has_at_least_twenty_rows():
    assert len(ROWS) >= 20


def test_batches_made_under_inference_mode_are_measured_and_the_user_is_told():
    """A dataset built under ``torch.inference_mode()``: autograd cannot save its tensors
    for the backward, so the forward stopped in the first layer with torch's error (a
    ModelError). scalecheck measures copies and says why training on them would fail."""
    import scalecheck
    from scalecheck.reference import interpolation as ref

    with torch.inference_mode():
        loader = list(ref.make_loader(n=64, seed=0))
    model = ref.make_model(seed=0)
    report = scalecheck.diagnose(model, loader, trial=False, strict=True)
    assert report.verdict == scalecheck.Verdict.STALLING
    (note,) = [n for n in report.measurements.notes if "inference_mode" in n]
    assert "training on them fails" in note and "torch.no_grad()" in note
    assert all(x.is_inference() and y.is_inference() for x, y in loader)  # left as they were
