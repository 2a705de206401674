"""The reference case: "can a neural network learn simple interpolation?"

A public Q&A post: a user trained ``Linear(1, 10) -> Tanh -> Linear(10, 3) -> Softmax`` with
MSE and Adam to learn a piecewise-linear map from an integer ``x`` in [255, 200000] to a
3-vector, tried every learning rate from 1e-11 to 1e2 and three activations, and learned
nothing after six hours of debugging. The accepted answer: the input is not scaled; scale
it to [-1, 1]. This module reproduces the problem faithfully (constants, dataset, model,
loss, optimizer settings, the training loop's batch transform and the learning-rate
sweep), with seeds added so that it is reproducible.

Example:
    >>> from scalecheck.reference import interpolation as ref
    >>> ref.x_to_tensor(ref.MID_X).tolist()
    [0.20000000298023224, 0.5, 0.30000001192092896]
    >>> xb, yb = next(iter(ref.make_loader()))
    >>> tuple(xb.shape), tuple(yb.shape), xb.dtype
    ((4, 1), (4, 3), torch.float32)
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from .._validation import check_choice, check_int, check_number

__all__ = [
    "BATCH_SIZE",
    "HIGH_X",
    "HIGH_Y",
    "LEARNING_RATE",
    "LENGTH",
    "LOW_X",
    "LOW_Y",
    "MEAN_X",
    "MID_X",
    "MID_Y",
    "STD_X",
    "WEIGHT_DECAY",
    "Interpolate",
    "XYDataset",
    "criterion",
    "make_dataset",
    "make_loader",
    "make_model",
    "make_original_loader",
    "prepare",
    "sweep",
    "train",
    "x_to_tensor",
]

LOW_X = 255
MID_X = 40000
HIGH_X = 200000
LOW_Y = torch.tensor([0.0, 0.0, 1.0])
MID_Y = torch.tensor([0.2, 0.5, 0.3])
HIGH_Y = torch.tensor([1.0, 0.0, 0.0])

#: The original's settings: batch size, dataset length, Adam's weight decay and default lr.
BATCH_SIZE = 4
LENGTH = 10000
WEIGHT_DECAY = 2.181622809797563e-12
LEARNING_RATE = 5.137871216190041e-05

#: Mean and std of x uniform on the integers LOW_X..HIGH_X (used by the standardized loader):
#: mean (a + b) / 2, variance ((b - a + 1)^2 - 1) / 12.
MEAN_X = (LOW_X + HIGH_X) / 2
STD_X = math.sqrt(((HIGH_X - LOW_X + 1) ** 2 - 1) / 12)

ACTIVATIONS = ("tanh", "sigmoid", "relu")


def x_to_tensor(x: float) -> Tensor:
    """The piecewise-linear target for one ``x`` (LOW_Y -> MID_Y -> HIGH_Y, then flat)."""
    if x <= MID_X:
        return LOW_Y + (x - LOW_X) * (MID_Y - LOW_Y) / (MID_X - LOW_X)
    if x <= HIGH_X:
        return MID_Y + (x - MID_X) * (HIGH_Y - MID_Y) / (HIGH_X - MID_X)
    return HIGH_Y.clone()


class XYDataset(Dataset):
    """The original Dataset: item ``i`` is ``(x, y)`` with ``x`` a Python int.

    As in the original, every access draws a fresh ``x`` uniformly from LOW_X..HIGH_X with
    ``random.randint``. With ``seed=None`` it uses the global ``random`` module exactly like
    the original (not reproducible); with a seed, item ``i``'s draws come from a private
    generator seeded by ``(seed, i)``, so they are the same in every process and worker.

    Args:
        length: number of items (10000 in the original).
        seed: None for the original's behaviour, or an int.
    """

    def __init__(self, length: int = LENGTH, seed: int | None = 0) -> None:
        self.length = check_int("length", length, minimum=1)
        self.seed = seed if seed is None else check_int("seed", seed, minimum=0)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[int, Tensor]:
        if not 0 <= index < self.length:
            raise IndexError(index)
        if self.seed is None:
            x = random.randint(LOW_X, HIGH_X)
        else:
            x = random.Random(self.seed * 1_000_003 + index).randint(LOW_X, HIGH_X)
        return x, x_to_tensor(x)


class Interpolate(nn.Module):
    """The original model: Linear(1, h) -> activation -> Linear(h, outputs) -> Softmax."""

    def __init__(
        self, num_outputs: int = 3, hidden_size: int = 10, activation: str = "tanh"
    ) -> None:
        super().__init__()
        check_choice("activation", activation, ACTIVATIONS)
        self.hidden_size = hidden_size
        self.x_to_hidden = nn.Linear(1, hidden_size)
        self.hidden_to_out = nn.Linear(hidden_size, num_outputs)
        self.activation = {"tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "relu": nn.ReLU}[activation]()
        self.softmax = nn.Softmax(dim=1)

    def forward(self, x: Tensor) -> Tensor:
        out = self.x_to_hidden(x)
        out = self.activation(out)
        out = self.hidden_to_out(out)
        return self.softmax(out)


def make_model(
    activation: str = "tanh", hidden_size: int = 10, *, seed: int | None = None
) -> Interpolate:
    """The original network, with PyTorch's default initialization.

    Args:
        activation: ``"tanh"`` (the original), ``"sigmoid"`` or ``"relu"`` (also tried).
        hidden_size: width of the hidden layer (10 in the original).
        seed: initialize from this seed without touching the global RNG (None: use the
            global RNG, like the original).
    """
    check_choice("activation", activation, ACTIVATIONS)
    check_int("hidden_size", hidden_size, minimum=1)
    if seed is None:
        return Interpolate(3, hidden_size, activation)
    with torch.random.fork_rng(devices=[]):
        # the CPU generator only: torch.manual_seed would also queue a seed for CUDA, which
        # fork_rng(devices=[]) does not take back and CUDA applies when it is first used
        torch.default_generator.manual_seed(check_int("seed", seed, minimum=0))
        return Interpolate(3, hidden_size, activation)


def criterion() -> nn.MSELoss:
    """The original loss: ``nn.MSELoss()``."""
    return nn.MSELoss()


def prepare(batch: Sequence[Any]) -> tuple[Tensor, Tensor]:
    """The original loop's batch transform: ``inputs.float().view(-1, 1), labels.float()``."""
    inputs, labels = batch
    return inputs.float().view(-1, 1), labels.float()


def make_dataset(n: int = LENGTH, seed: int | None = 0) -> XYDataset:
    """The original Dataset (see :class:`XYDataset`)."""
    return XYDataset(n, seed)


def make_original_loader(
    batch_size: int = BATCH_SIZE, n: int = LENGTH, seed: int = 0, num_workers: int = 0
) -> DataLoader:
    """The original DataLoader: shuffled batches of ``(x, y)`` with integer ``x`` of shape
    ``[B]``, which the training loop converts with :func:`prepare`. (The original used 4
    worker processes; 0 keeps examples light.)"""
    gen = torch.Generator().manual_seed(check_int("seed", seed, minimum=0))
    return DataLoader(
        make_dataset(n, seed),
        batch_size=batch_size,
        shuffle=True,
        num_workers=num_workers,
        generator=gen,
    )


def make_loader(
    batch_size: int = BATCH_SIZE, n: int = LENGTH, seed: int = 0, standardized: bool = False
) -> DataLoader:
    """A DataLoader of ``(inputs [B, 1] float32, targets [B, 3] float32)`` batches.

    The same data as the original (``x`` uniform on LOW_X..HIGH_X, targets from
    :func:`x_to_tensor`), already converted by the training loop's transform, so that
    ``diagnose(make_model(), make_loader())`` needs no ``prepare``. With
    ``standardized=True`` the inputs are ``(x - MEAN_X) / STD_X``: the one-line fix.
    Deterministic for a given seed; it never touches the global RNG.
    """
    batch_size = check_int("batch_size", batch_size, minimum=1)
    n = check_int("n", n, minimum=1)
    gen = torch.Generator().manual_seed(check_int("seed", seed, minimum=0))
    x = torch.randint(LOW_X, HIGH_X + 1, (n,), generator=gen)
    y = torch.stack([x_to_tensor(int(v)) for v in x.tolist()]) if n <= 50_000 else _targets(x)
    inputs = x.float().view(-1, 1)
    if standardized:
        inputs = (x.double().view(-1, 1) - MEAN_X).div(STD_X).float()
    return DataLoader(
        TensorDataset(inputs, y.float()),
        batch_size=batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
    )


def _targets(x: Tensor) -> Tensor:
    xf = x.double().view(-1, 1)
    low = LOW_Y.double() + (xf - LOW_X) * (MID_Y - LOW_Y).double() / (MID_X - LOW_X)
    high = MID_Y.double() + (xf - MID_X) * (HIGH_Y - MID_Y).double() / (HIGH_X - MID_X)
    return torch.where(xf <= MID_X, low, high).float()


def train(
    model: nn.Module,
    loader: Iterable[Any],
    steps: int,
    lr: float = LEARNING_RATE,
    *,
    prepare_batch: Any = None,
    weight_decay: float = WEIGHT_DECAY,
) -> list[float]:
    """The original training loop (Adam, MSELoss), for *steps* optimizer steps.

    Cycles through *loader* as many times as needed. Returns the loss of every step.
    *prepare_batch* converts each batch first (use :func:`prepare` with the original
    loader).
    """
    steps = check_int("steps", steps, minimum=1)
    lr = check_number("lr", lr, minimum=0.0)  # type: ignore[assignment]
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    loss_fn = criterion()
    losses: list[float] = []
    while len(losses) < steps:
        seen = False
        for batch in loader:
            seen = True
            inputs, labels = prepare_batch(batch) if prepare_batch is not None else batch
            optimizer.zero_grad()
            outputs = model(inputs)
            loss = loss_fn(outputs, labels)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            if len(losses) >= steps:
                break
        if not seen:
            raise ValueError("the loader yielded no batches")
    return losses


def sweep(
    lrs: Iterable[float] | None = None,
    *,
    steps: int = 2500,
    activation: str = "tanh",
    standardized: bool = False,
    seed: int = 0,
) -> dict[float, dict[str, Any]]:
    """The original learning-rate sweep: a fresh model per learning rate (1e-11 .. 1e2).

    Returns, per learning rate, the mean loss over the last 10% of steps and the model's
    output at ``x = 255`` (standardized the same way as the inputs when asked).
    """
    rates = [10.0**i for i in range(-11, 3)] if lrs is None else list(lrs)
    out: dict[float, dict[str, Any]] = {}
    probe = torch.tensor([[float(LOW_X)]])
    if standardized:
        probe = (probe - MEAN_X) / STD_X
    for lr in rates:
        model = make_model(activation, seed=seed)
        losses = train(model, make_loader(seed=seed, standardized=standardized), steps, lr)
        tail = losses[-max(1, steps // 10) :]
        with torch.no_grad():
            output = model(probe)[0].tolist()
        out[lr] = {"final_loss": sum(tail) / len(tail), "output_at_255": output}
    return out
