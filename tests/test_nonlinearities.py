"""Saturation thresholds are computed from torch's own derivatives, per dtype."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from scalecheck.monitors import nonlinearities as nls

MONOTONE = [
    "tanh",
    "sigmoid",
    "hardtanh",
    "hardsigmoid",
    "relu",
    "relu6",
    "elu",
    "celu",
    "selu",
    "softplus",
    "silu",
    "logsigmoid",
    "hardswish",
]
DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]


def _grad(name: str, z: torch.Tensor) -> torch.Tensor:
    nl = nls.by_name(name)
    z = z.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(nl.reference(z).sum(), z)
    return g


def test_float32_tanh_and_sigmoid_pins():
    t = nls.zero_derivative_bounds("tanh", torch.float32)
    assert t.hi == pytest.approx(9.0108, abs=1e-3) and t.lo == -t.hi
    s = nls.zero_derivative_bounds("sigmoid", torch.float32)
    assert s.hi == pytest.approx(16.6355, abs=1e-3)
    assert s.lo == pytest.approx(-88.7228, abs=1e-3)


def test_low_precision_pins():
    assert nls.zero_derivative_bounds("tanh", torch.bfloat16).hi == pytest.approx(3.453125)
    assert nls.zero_derivative_bounds("tanh", torch.float16).hi == pytest.approx(4.50390625)
    assert nls.zero_derivative_bounds("sigmoid", torch.bfloat16).hi == pytest.approx(6.21875)
    assert nls.zero_derivative_bounds("sigmoid", torch.float16).hi == pytest.approx(8.3125)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", MONOTONE)
def test_bounds_separate_nonzero_from_zero_derivative(name, dtype):
    b = nls.zero_derivative_bounds(name, dtype)
    for bound, step in ((b.hi, 1), (b.lo, -1)):
        if math.isinf(bound):
            # never exactly zero on that side, up to the search limit
            far = torch.tensor([step * min(1e4, torch.finfo(dtype).max / 4)], dtype=dtype)
            assert _grad(name, far)[0] != 0
            continue
        at = torch.tensor([bound], dtype=dtype)
        if bound != 0:
            assert _grad(name, at)[0] != 0, "the bound is the last value with non-zero slope"
        grid = torch.linspace(0, 1, 2001, dtype=torch.float64)
        outside = (bound + step * (grid * 50 + 1e-3)).to(dtype)
        outside = outside[(outside - bound) * step > 0]
        assert bool((_grad(name, outside) == 0).all()), "everything beyond the bound is flat"


def test_near_band_is_one_percent_of_the_peak():
    near = nls.near_zero_bounds("tanh")
    assert near.hi == pytest.approx(math.atanh(math.sqrt(0.99)), abs=1e-6)
    # sigmoid'(z) = s(1 - s) = 0.25 * 0.01 at z = logit((1 + sqrt(0.99)) / 2)
    s = (1 + math.sqrt(0.99)) / 2
    assert nls.near_zero_bounds("sigmoid").hi == pytest.approx(math.log(s / (1 - s)), abs=1e-6)
    assert nls.near_zero_bounds("relu").lo == 0.0


def test_parametrized_calls_use_their_own_arguments():
    b = nls.zero_derivative_bounds("hardtanh", torch.float32, (("max_val", 2.0), ("min_val", -0.5)))
    assert b.hi == pytest.approx(2.0, abs=1e-6) and b.lo == pytest.approx(-0.5, abs=1e-6)


def test_every_spelling_is_registered():
    for fn in (
        torch.tanh,
        torch.Tensor.tanh,
        torch.Tensor.tanh_,
        F.tanh,
        torch.sigmoid,
        torch.Tensor.sigmoid,
        F.sigmoid,
        F.relu,
        torch.relu,
        torch.Tensor.relu_,
        F.gelu,
        F.silu,
        F.softmax,
        torch.softmax,
        torch.Tensor.softmax,
        F.hardtanh,
        F.relu6,
    ):
        assert nls.lookup(fn) is not None, fn
    assert nls.lookup(torch.add) is None


@pytest.mark.parametrize("name", [n for n in MONOTONE if n != "softsign"])
def test_counts_beyond_the_bounds_match_a_boolean_count(name):
    from scalecheck.monitors.activations import _beyond

    g = torch.Generator().manual_seed(0)
    z = torch.randn(2000, 5, generator=g) * 60
    bounds = nls.zero_derivative_bounds(name, torch.float32)
    expected = ((z < bounds.lo) | (z > bounds.hi)).sum(0).double()
    assert torch.equal(_beyond(z.clone(), bounds, (0,)).double(), expected)
    weight = (torch.arange(2000) % 3 != 0).float().reshape(-1, 1)
    masked = (((z < bounds.lo) | (z > bounds.hi)).float() * weight).sum(0).double()
    assert torch.equal(_beyond(z.clone(), bounds, (0,), weight).double(), masked)


@pytest.mark.parametrize("cell", ["tanh", "lstm"])
def test_band_counts_skipped_by_range_equal_a_direct_count(cell, monkeypatch):
    """Calls whose range lies inside a band skip the count (zeros, no pass over the
    values); mixed with calls that cross it, the fractions still equal a direct count."""
    from torch import nn

    import scalecheck

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(5)
    if cell == "tanh":
        layer = nn.Linear(3, 300)
        model = nn.Sequential(layer, nn.Tanh(), nn.Linear(300, 1))
        scales = [0.01, 0.01, 30.0, 0.01, 3.0]
        batches = [(torch.randn(256, 3, generator=g) * s, torch.randn(256, 1)) for s in scales]
        seen = []
        layer.register_forward_hook(lambda m, a, out: seen.append(out.detach().clone()))
        from scalecheck.monitors import activations

        passes = []
        real = activations._beyond
        monkeypatch.setattr(
            activations, "_beyond", lambda *a, **k: passes.append(1) or real(*a, **k)
        )
        report = scalecheck.diagnose(model, batches, trial=False, strict=True)
        assert 0 < len(passes) < 2 * len(batches)  # some calls skipped a band, not all
        z = torch.cat(seen[: len(batches)])
        site = next(a for a in report.layers if a.function == "tanh")
        exact = nls.zero_derivative_bounds("tanh", torch.float32)
        near = nls.near_zero_bounds("tanh")
        for fraction, b in ((site.exact_fraction, exact), (site.near_fraction, near)):
            expected = ((z < b.lo) | (z > b.hi)).double().mean().item()
            assert fraction == pytest.approx(expected, abs=1e-12)
        assert 0 < site.near_fraction < 1
        return
    rnn = nn.LSTM(4, 128, batch_first=True)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn, self.head = rnn, nn.Linear(128, 1)

        def forward(self, x):
            return self.head(self.rnn(x)[0][:, -1])

    scales = [0.01, 40.0, 0.01]
    batches = [(torch.randn(64, 8, 4, generator=g) * s, torch.randn(64, 1)) for s in scales]
    report = scalecheck.diagnose(Net(), batches, trial=False, strict=True)
    gates = {a.site.rsplit(".", 1)[1]: a for a in report.layers if ":lstm." in a.site}
    # sequences of 8 steps: every step is measured, so the gates can be recomputed here
    h = [rnn(x)[0].detach() for x, _ in batches]
    z = []
    for (x, _), out in zip(batches, h, strict=True):
        prev = torch.cat([torch.zeros(64, 1, 128), out[:, :-1]], 1)
        z.append(
            (x @ rnn.weight_ih_l0.T + rnn.bias_ih_l0 + prev @ rnn.weight_hh_l0.T + rnn.bias_hh_l0)
            .detach()
            .reshape(-1, 512)
        )
    z = torch.cat(z)
    for i, (gate, fn) in enumerate(
        [
            ("input_gate", "sigmoid"),
            ("forget_gate", "sigmoid"),
            ("cell_gate", "tanh"),
            ("output_gate", "sigmoid"),
        ]
    ):
        block = z[:, i * 128 : (i + 1) * 128]
        for fraction, b in (
            (gates[gate].exact_fraction, nls.zero_derivative_bounds(fn, torch.float32)),
            (gates[gate].near_fraction, nls.near_zero_bounds(fn)),
        ):
            expected = ((block < b.lo) | (block > b.hi)).double().mean().item()
            assert fraction == pytest.approx(expected, abs=1e-4), gate
    assert gates["cell_gate"].near_fraction > 0.05


def _histogram_of(z: torch.Tensor) -> tuple[int, ...]:
    """The histogram the activation monitor reports for the values *z*: asinh (checked
    against numpy below), clamped to [-R, R], each value in the bin whose edges enclose it,
    found by exact comparisons with the edges (the top edge closes the last bin); NaN in
    none."""
    from scalecheck.monitors.activations import HIST_BINS, HIST_RANGE, _asinh

    u = _asinh(z.float().reshape(-1)).double().clamp(-HIST_RANGE, HIST_RANGE).numpy()
    u = u[~np.isnan(u)]
    edges = np.linspace(-HIST_RANGE, HIST_RANGE, HIST_BINS + 1)  # multiples of 1/2: exact
    bins = np.minimum(np.searchsorted(edges, u, side="right") - 1, HIST_BINS - 1)
    return tuple(np.bincount(bins, minlength=HIST_BINS).tolist())


def test_histogram_counts_the_first_calls_values_and_ignores_nan():
    """A site's histogram counts asinh(z) of its first HIST_CALLS reductions (every value
    when one has at most HIST_SAMPLE of them): +inf lands in the top bin, NaN nowhere.
    Small calls are reduced together (``Pending``): here all the calls at once."""
    from torch import nn

    import scalecheck
    from scalecheck.monitors.activations import HIST_CALLS, HIST_SAMPLE

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = nn.Linear(3, 1)

        def forward(self, x):
            return self.head(torch.tanh(x * 2.0))

    g = torch.Generator().manual_seed(3)
    xs = [torch.randn(64, 3, generator=g) * 10 ** (i % 4) for i in range(HIST_CALLS + 3)]
    xs[1][0, 0], xs[1][5, 2], xs[2][7, 1] = math.inf, math.nan, -math.inf
    batches = [(x, torch.randn(64, 1, generator=g)) for x in xs]
    report = scalecheck.diagnose(Model(), batches, trial=False)
    site = next(a for a in report.layers if a.function == "tanh")
    z = torch.cat([x * 2.0 for x in xs]).reshape(-1)
    assert z.numel() <= HIST_SAMPLE
    assert site.histogram.counts == _histogram_of(z)
    assert sum(site.histogram.counts) == z.numel() - 1  # the NaN
    assert site.histogram.counts[-1] >= 1 and site.histogram.counts[0] >= 1  # +-inf


def test_histogram_of_large_calls_samples_the_first_calls():
    """Calls too large to buffer are reduced one by one: the histogram takes HIST_SAMPLE
    values from each of the first HIST_CALLS, and their distribution is the data's."""
    from torch import nn

    import scalecheck
    from scalecheck.monitors._kernels import FLUSH_ELEMENTS
    from scalecheck.monitors.activations import HIST_BINS, HIST_CALLS, HIST_RANGE, HIST_SAMPLE

    rows = FLUSH_ELEMENTS // 4 + 1  # 4 features: each call is too large for the buffer
    model = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 1))
    seen = []
    model[0].register_forward_hook(lambda m, a, out: seen.append(out.detach().clone()))
    g = torch.Generator().manual_seed(4)
    batches = [(torch.randn(rows, 4, generator=g) * 3, torch.randn(rows, 1)) for _ in range(10)]
    report = scalecheck.diagnose(model, batches, trial=False, strict=True)
    site = next(a for a in report.layers if a.function == "tanh")
    assert sum(site.histogram.counts) == HIST_CALLS * HIST_SAMPLE
    z = torch.cat(seen[:HIST_CALLS]).reshape(-1)
    full = torch.histc(
        torch.asinh(z).clamp(-HIST_RANGE, HIST_RANGE),
        bins=HIST_BINS,
        min=-HIST_RANGE,
        max=HIST_RANGE,
    )
    sampled = torch.tensor(site.histogram.counts, dtype=torch.float32)
    # total variation distance between the sampled and the full distribution: with 32k
    # samples its expected size over 64 bins is about 0.02
    assert 0.5 * (sampled / sampled.sum() - full / full.sum()).abs().sum() < 0.05


def test_vectorized_asinh_matches_numpy_over_the_float32_range():
    from scalecheck.monitors.activations import _asinh

    g = torch.Generator().manual_seed(6)
    exponents = torch.randint(-37, 38, (50_000,), generator=g).double()
    z = (torch.randn(50_000, generator=g, dtype=torch.float64) * 10**exponents).float()
    z = torch.cat([z, torch.tensor([0.0, -0.0, 1e7, -3e38, math.inf, -math.inf, math.nan])])
    got = _asinh(z).double().numpy()
    ref = np.arcsinh(z.double().numpy())
    finite = np.isfinite(ref) & (np.abs(ref) < 16.8)  # beyond 1e7 the value is capped
    normal = finite & (np.abs(z.numpy()) >= np.finfo(np.float32).tiny)
    assert np.allclose(got[normal], ref[normal], rtol=2e-7, atol=0)
    assert np.all(np.abs(got[finite & ~normal]) < 1.2e-38)  # subnormals: +-0 or themselves
    assert np.array_equal(np.signbit(got[finite]), np.signbit(ref[finite]))
    assert got[-4] == pytest.approx(-16.81, abs=0.01) and got[-3] > 16.8 and got[-2] < -16.8
    assert math.isnan(got[-1])


def test_histograms_of_many_sites_binned_together_equal_each_sites_own():
    """More sites than one joint fold takes, on scales from 1e-3 to 1e9 (edge bins, NaN):
    each site's histogram is exactly the one of its own values."""
    from torch import nn

    import scalecheck
    from scalecheck.monitors.activations import _FOLD_SITES, HIST_BINS

    scales = [10.0 ** (k % 13 - 3) for k in range(_FOLD_SITES + 4)] + [1e-9, 1e-20]

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = nn.Linear(3, 1)

        def forward(self, x):
            return self.head(sum(torch.tanh(x * s) for s in scales))

    g = torch.Generator().manual_seed(8)
    xs = [torch.randn(32, 3, generator=g) for _ in range(6)]
    xs[2][1, 1] = math.nan
    report = scalecheck.diagnose(
        Model(), [(x, torch.randn(32, 1, generator=g)) for x in xs], trial=False
    )
    sites = [a for a in report.layers if a.function == "tanh"]
    assert len(sites) == len(scales)
    for site, s in zip(sites, scales, strict=True):
        z = torch.cat([x * s for x in xs]).reshape(-1)
        assert site.histogram.counts == _histogram_of(z), site.site
    # values this close to 0 land on their own side of it (a float32 histc rounded
    # u + 16 to 16 and put the negative ones above 0; a float64 one did so below 2^-50)
    for site, s in zip(sites[-2:], scales[-2:], strict=True):
        tiny = site.histogram.counts
        z = torch.cat([x * s for x in xs])
        negative = int((z < 0).sum())
        assert tiny[HIST_BINS // 2 - 1] == negative
        assert tiny[HIST_BINS // 2] == z.numel() - 1 - negative


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_histogram_samples_under_a_float64_default_dtype(dtype):
    """Calls large enough to be sampled, with float64 as torch's default dtype: the sample
    buffer is float32 whatever the default, and every sampled call counts."""
    from torch import nn

    import scalecheck
    from scalecheck.monitors._kernels import FLUSH_ELEMENTS
    from scalecheck.monitors.activations import HIST_CALLS, HIST_SAMPLE

    rows = FLUSH_ELEMENTS // 4 + 1
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 1)).to(dtype)
    g = torch.Generator().manual_seed(9)
    batches = [
        (torch.randn(rows, 4, generator=g, dtype=dtype), torch.randn(rows, 1, dtype=dtype))
        for _ in range(3)
    ]
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        report = scalecheck.diagnose(model, batches, trial=False, strict=True)
    finally:
        torch.set_default_dtype(previous)
    site = next(a for a in report.layers if a.function == "tanh")
    assert site.dtype == str(dtype).replace("torch.", "")
    assert sum(site.histogram.counts) == min(3, HIST_CALLS) * HIST_SAMPLE


def test_histogram_buffer_grows_when_a_site_later_sees_larger_calls():
    """A small first call sizes the site's sample buffer small; larger calls after it grow
    it, and every sampled value still counts."""
    from torch import nn

    import scalecheck
    from scalecheck.monitors._kernels import FLUSH_ELEMENTS
    from scalecheck.monitors.activations import HIST_CALLS, HIST_SAMPLE

    rows = FLUSH_ELEMENTS // 4 + 1
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 1))
    g = torch.Generator().manual_seed(10)
    sizes = [2] + [rows] * (HIST_CALLS + 1)
    batches = [(torch.randn(n, 4, generator=g), torch.randn(n, 1, generator=g)) for n in sizes]
    batches[0][0].mul_(1e7)  # the first call's values land in bins no later value reaches
    seen = []
    model[0].register_forward_hook(lambda m, a, out: seen.append(out.detach().clone()))
    report = scalecheck.diagnose(model, batches, trial=False, strict=True)
    site = next(a for a in report.layers if a.function == "tanh")
    assert sum(site.histogram.counts) == 2 * 4 + (HIST_CALLS - 1) * HIST_SAMPLE
    first = _histogram_of(seen[0])  # kept through the buffer's growth
    far = [i for i, c in enumerate(first) if c]
    assert far and all(abs(i - len(first) / 2) > 10 for i in far)
    assert [site.histogram.counts[i] for i in far] == [first[i] for i in far]
