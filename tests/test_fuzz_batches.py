"""Issue 5: a hypothesis fuzz of the batch adapter. Whatever the loader yields, diagnose
either returns a report or raises a ScaleCheckError subclass, never anything else."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import event, given, settings
from hypothesis import strategies as st
from torch import nn

import scalecheck

DTYPES = [
    torch.float32,
    torch.float64,
    torch.float16,
    torch.bfloat16,
    torch.int64,
    torch.int32,
    torch.uint8,
    torch.bool,
    torch.complex64,
]
NP_DTYPES = [np.float64, np.float32, np.int64, np.uint8, np.bool_, object]


@st.composite
def tensors(draw):
    shape = tuple(draw(st.lists(st.integers(0, 4), min_size=0, max_size=4)))
    dtype = draw(st.sampled_from(DTYPES))
    scale = draw(st.sampled_from([1.0, 1e3, 1e30, float("nan"), float("inf")]))
    g = torch.Generator().manual_seed(draw(st.integers(0, 1000)))
    x = torch.randn(shape, generator=g) * scale
    if dtype.is_complex:
        return x.to(dtype)
    if dtype == torch.bool:
        return x > 0
    if not dtype.is_floating_point:
        return torch.nan_to_num(x).clamp(-100, 100).to(dtype)
    return x.to(dtype)


@st.composite
def arrays(draw):
    shape = tuple(draw(st.lists(st.integers(0, 4), min_size=0, max_size=3)))
    dtype = draw(st.sampled_from(NP_DTYPES))
    rng = np.random.default_rng(draw(st.integers(0, 1000)))
    x = rng.standard_normal(shape) * draw(st.sampled_from([1.0, 1e5]))
    if dtype is object:
        return np.array(x.astype(str), dtype=object)
    return x.astype(dtype)


leaves = st.one_of(
    tensors(),
    arrays(),
    st.integers(-5, 5),
    st.floats(allow_nan=True),
    st.text(max_size=3),
    st.none(),
    st.booleans(),
)
structures = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.lists(inner, max_size=3).map(tuple),
        st.dictionaries(
            st.sampled_from(["x", "y", "input", "labels", "mask", "a"]), inner, max_size=3
        ),
    ),
    max_leaves=6,
)


class Flexible(nn.Module):
    """Accepts anything: sums what it can of its tensor inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))

    def forward(self, *args, **kwargs):
        total = self.w * 0
        for a in (*args, *kwargs.values()):
            if isinstance(a, torch.Tensor) and a.is_floating_point() and a.numel():
                total = total + torch.tanh(a.float().mean() * self.w)
        return total.reshape(1, 1).expand(max(1, _rows(args, kwargs)), 1)


def _rows(args, kwargs) -> int:
    for a in (*args, *kwargs.values()):
        if isinstance(a, torch.Tensor) and a.dim() > 0:
            return a.shape[0]
    return 1


MODELS = [Flexible, lambda: nn.Sequential(nn.Linear(3, 2), nn.ReLU())]


@settings(max_examples=250)
@given(st.lists(structures, min_size=0, max_size=3), st.sampled_from(range(len(MODELS))))
def test_any_batch_gives_a_report_or_a_scalecheck_error(batches, which):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = MODELS[which]()
    try:
        report = scalecheck.diagnose(model, batches, trial=False, max_batches=3)
    except scalecheck.ScaleCheckError as exc:
        event(type(exc).__name__)
        return
    event("report")
    assert isinstance(report, scalecheck.Report)
    report.to_json()  # always serializable
    str(report)


@st.composite
def plausible_batches(draw):
    """Tensors of random rank, dtype and scale with a consistent batch dimension: these
    reach the monitors, so every path through them is exercised."""
    n = draw(st.integers(1, 5))
    rest = tuple(draw(st.lists(st.integers(1, 4), max_size=3)))
    dtype = draw(
        st.sampled_from([torch.float32, torch.float64, torch.float16, torch.uint8, torch.int64])
    )
    scale = draw(st.sampled_from([1e-6, 1.0, 1e4, 1e30, float("nan")]))
    g = torch.Generator().manual_seed(draw(st.integers(0, 100)))
    x = torch.randn((n, *rest), generator=g) * scale
    x = x.to(dtype) if dtype.is_floating_point else torch.nan_to_num(x).clamp(0, 200).to(dtype)
    target = draw(st.sampled_from(["none", "float", "int"]))
    if target == "none":
        return [x]
    y = torch.randn(n, 1, generator=g) if target == "float" else torch.randint(0, 2, (n,))
    return [(x, y)]


@settings(max_examples=150)
@given(plausible_batches())
def test_plausible_batches_of_any_shape_and_dtype(batches):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = Flexible()
    try:
        report = scalecheck.diagnose(model, batches, trial=False)
    except scalecheck.ScaleCheckError as exc:
        event(type(exc).__name__)
        return
    event("report")
    report.to_json()
    assert not any(f.code == "SC001" for f in report.findings), [f.message for f in report.findings]
