"""The gradient monitor's statistics equal a direct computation over the same batches."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import scalecheck
from scalecheck.monitors import gradients as gm


def _grads(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(6, 5, generator=g)
    w[w.abs() < 0.5] = 0.0  # exact zeros
    w[:, 3] = 0.0  # a feature that gets no gradient
    b = torch.randn(6, generator=g)
    b[::2] = 0.0
    return w, b


@pytest.fixture(params=["small", "large"])
def path(request, monkeypatch):
    """Both ways a batch's gradients are reduced: buffered whole and reduced a buffer at a
    time (small models, see SMALL_GRADIENTS), or reduced per batch."""
    if request.param == "large":
        monkeypatch.setattr(gm, "SMALL_GRADIENTS", 0)
    return request.param


@pytest.mark.parametrize(
    ("small", "contiguous", "direct"),
    [(False, True, True), (False, False, True), (False, True, False), (True, False, True)],
    ids=["fused-column-squares", "squares-in-scratch", "scaled-by-max", "small-buffered"],
)
def test_norms_zero_fractions_and_shares_match_numpy(monkeypatch, small, contiguous, direct):
    # the four ways the input layer's squares are taken: one fused read of a contiguous
    # linear weight, squares written to scratch, squares of g / max|g|, and float64 squares
    # of the buffered batches of a small model
    if not small:
        monkeypatch.setattr(gm, "SMALL_GRADIENTS", 0)
    if not direct:
        monkeypatch.setattr(gm, "_DIRECT_MIN", math.inf)  # never kept as computed directly
    layer = nn.Linear(5, 6)
    params = [("weight", layer.weight), ("bias", layer.bias)]
    monitor = gm.GradientMonitor(params, torch.device("cpu"))
    monitor.watch_input_layer({"weight", "bias"}, 5)
    batches = [_grads(s) for s in range(4)]
    for w, b in batches:
        monitor.update([w if contiguous else w.t().contiguous().t(), b])
    weight, bias = monitor.results()
    ws = np.stack([w.numpy() for w, _ in batches]).astype(np.float64)
    bs = np.stack([b.numpy() for _, b in batches]).astype(np.float64)
    assert weight.zero_fraction == pytest.approx((ws == 0).mean())
    assert bias.zero_fraction == pytest.approx((bs == 0).mean())
    assert weight.grad_norm == pytest.approx(math.sqrt((ws**2).sum((1, 2)).mean()), rel=1e-6)
    share = (ws**2).sum((0, 1))
    assert weight.feature_share == pytest.approx(tuple(share / share.sum()), rel=1e-6)
    assert weight.feature_share[3] == 0.0
    assert weight.input_layer and bias.feature_share == ()


def test_a_nan_gradient_is_reported_not_counted(path):
    layer = nn.Linear(3, 2)
    monitor = gm.GradientMonitor([("weight", layer.weight)], torch.device("cpu"))
    g = torch.zeros(2, 3)
    g[0, 0] = float("nan")
    monitor.update([g])
    (stats,) = monitor.results()
    assert stats.nonfinite and stats.grad_norm is None and stats.zero_fraction is None


def test_unused_parameters_have_no_gradient_statistics(path):
    layer = nn.Linear(3, 2)
    monitor = gm.GradientMonitor(
        [("weight", layer.weight), ("bias", layer.bias)], torch.device("cpu")
    )
    monitor.update([torch.ones(2, 3), None])
    weight, bias = monitor.results()
    assert weight.used and weight.zero_fraction == 0.0
    assert not bias.used and bias.grad_norm is None and bias.zero_fraction is None


def test_shares_survive_gradients_whose_squares_underflow(path):
    # float32 squares of 1e-30 are 0; the shares must still come out right
    layer = nn.Linear(3, 2)
    monitor = gm.GradientMonitor([("weight", layer.weight)], torch.device("cpu"))
    monitor.watch_input_layer({"weight"}, 3)
    g = torch.tensor([[3e-30, 0.0, 4e-30], [0.0, 0.0, 0.0]])
    assert float(g.square().sum()) == 0.0
    monitor.update([g])
    (stats,) = monitor.results()
    assert stats.feature_share == pytest.approx((9 / 25, 0.0, 16 / 25), rel=1e-5)


def test_the_report_tables_show_each_features_gradient_share():
    import scalecheck

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 2, generator=g) * torch.tensor([1.0, 30.0])
    batches = [(x[i : i + 16], torch.randn(16, 1, generator=g)) for i in range(0, 64, 16)]
    report = scalecheck.diagnose(model, batches, trial=False)
    weight = next(s for s in report.gradients if s.name == "0.weight")
    assert len(weight.feature_share) == 2 and weight.feature_share[1] > weight.feature_share[0]
    rows = [r for r in report._repr_markdown_().splitlines() if r.startswith("| `input[")]
    assert len(rows) == 2 and all(r.rstrip(" |").endswith("%") for r in rows)
    assert "grad share" in report._repr_html_()


def test_statistics_fold_across_many_batches_with_unused_parameters(path):
    from scalecheck.monitors._kernels import DEFER_BATCHES

    layer = nn.Linear(5, 6)
    params = [("weight", layer.weight), ("bias", layer.bias)]
    monitor = gm.GradientMonitor(params, torch.device("cpu"))
    monitor.watch_input_layer({"weight", "bias"}, 5)
    batches = [_grads(s) for s in range(2 * DEFER_BATCHES + 3)]
    for k, (w, b) in enumerate(batches):
        monitor.update([w, None if k % 5 == 0 else b])  # the bias unused in some batches
    weight, bias = monitor.results()
    ws = np.stack([w.numpy() for w, _ in batches]).astype(np.float64)
    bs = np.stack([b.numpy() for k, (_, b) in enumerate(batches) if k % 5]).astype(np.float64)
    n = len(batches)
    assert weight.grad_norm == pytest.approx(math.sqrt((ws**2).sum() / n), rel=1e-6)
    assert bias.grad_norm == pytest.approx(math.sqrt((bs**2).sum() / n), rel=1e-6)
    assert weight.zero_fraction == pytest.approx((ws == 0).mean())
    # a batch that does not reach a parameter gives it a zero gradient
    unused = n - len(bs)
    assert bias.zero_fraction == pytest.approx(((bs == 0).sum() + unused * 6) / (n * 6))
    share = (ws**2).sum((0, 1))
    assert weight.feature_share == pytest.approx(tuple(share / share.sum()), rel=1e-6)


def test_a_model_whose_batches_switch_between_the_two_paths(monkeypatch):
    # the bias is missing from some batches: those batches' gradients are small enough to
    # be buffered, the others are reduced at once; both fold into the same state
    layer = nn.Linear(5, 6)
    monkeypatch.setattr(gm, "SMALL_GRADIENTS", layer.weight.numel())
    params = [("weight", layer.weight), ("bias", layer.bias)]
    monitor = gm.GradientMonitor(params, torch.device("cpu"))
    monitor.watch_input_layer({"weight", "bias"}, 5)
    batches = [_grads(s) for s in range(11)]
    for k, (w, b) in enumerate(batches):
        monitor.update([w, None if k % 3 else b])
    weight, bias = monitor.results()
    ws = np.stack([w.numpy() for w, _ in batches]).astype(np.float64)
    bs = np.stack([b.numpy() for k, (_, b) in enumerate(batches) if k % 3 == 0])
    n = len(batches)
    assert weight.grad_norm == pytest.approx(math.sqrt((ws**2).sum() / n), rel=1e-6)
    assert bias.grad_norm == pytest.approx(math.sqrt((bs.astype(np.float64) ** 2).sum() / n))
    assert weight.zero_fraction == pytest.approx((ws == 0).mean())
    share = (ws**2).sum((0, 1))
    assert weight.feature_share == pytest.approx(tuple(share / share.sum()), rel=1e-6)


def test_small_gradients_of_a_convolution_and_half_precision(path):
    # the input channels of a convolution weight ([out, in, kh, kw]) are its features; a
    # float16 gradient is widened exactly; a float64 one always takes the per-batch path
    conv = nn.Conv2d(3, 4, 2)
    monitor = gm.GradientMonitor([("weight", conv.weight)], torch.device("cpu"))
    monitor.watch_input_layer({"weight"}, 3)
    g = torch.Generator().manual_seed(0)
    grads = [torch.randn(4, 3, 2, 2, generator=g).half() for _ in range(5)]
    for x in grads:
        monitor.update([x])
    (stats,) = monitor.results()
    xs = np.stack([x.float().numpy() for x in grads]).astype(np.float64)
    assert stats.grad_norm == pytest.approx(math.sqrt((xs**2).sum() / len(grads)), rel=1e-6)
    share = (xs**2).sum((0, 1, 3, 4))
    assert stats.feature_share == pytest.approx(tuple(share / share.sum()), rel=1e-6)
    assert not gm._small([(0, torch.zeros(3, dtype=torch.float64))])


def test_the_small_buffer_is_sized_for_the_parameters_it_holds():
    # a first batch that reaches only the bias must not size the buffer (in rows) for the
    # batches that reach the weight too
    layer = nn.Linear(1000, 100)
    params = [("weight", layer.weight), ("bias", layer.bias)]
    monitor = gm.GradientMonitor(params, torch.device("cpu"))
    monitor.update([None, torch.ones(100)])
    monitor.update([torch.ones(100, 1000), torch.ones(100)])
    assert monitor._small is not None
    rows = monitor._small.size
    assert rows * (100 * 1000 + 100) <= gm._SMALL_BUFFER
    weight, bias = monitor.results()
    assert weight.grad_norm == pytest.approx(math.sqrt(100 * 1000 / 2))
    assert bias.grad_norm == pytest.approx(math.sqrt(100))


@pytest.mark.parametrize(
    ("scale", "dtype"),
    [
        (1e20, torch.float32),
        (1e-25, torch.float32),
        (0.0, torch.float32),
        (1.0, torch.bfloat16),
        (1.0, torch.float16),
    ],
    ids=["squares-overflow", "squares-underflow", "zero", "bfloat16", "float16"],
)
def test_gradient_norms_survive_float32_squares_and_half_precision(path, scale, dtype):
    # float32 squares of entries near 1e20 overflow (inf) and near 1e-25 underflow (0); a
    # half-precision norm accumulated in its own dtype was 2e-3 off. float32 accumulation
    # of a 40 000-entry norm is good to about 1e-5 (torch's CPU reduction), hence rel=1e-4
    layer = nn.Linear(200, 200)
    monitor = gm.GradientMonitor([("weight", layer.weight)], torch.device("cpu"))
    g = torch.Generator().manual_seed(1)
    grads = [(torch.randn(200, 200, generator=g) * scale).to(dtype) for _ in range(3)]
    for x in grads:
        monitor.update([x])
    (stats,) = monitor.results()
    xs = np.stack([x.double().numpy() for x in grads])
    exact = math.sqrt((xs**2).sum() / len(grads))
    assert stats.grad_norm == pytest.approx(exact, rel=1e-4, abs=0.0)
    assert stats.nonfinite is False


def test_weight_norms_survive_float32_squares():
    # the weights' norms are taken like the gradients': entries whose float32 squares
    # overflow or underflow still give the exact norm
    big, tiny = nn.Parameter(torch.full((300, 300), 1e20)), nn.Parameter(torch.full((5,), 1e-25))
    monitor = gm.GradientMonitor([("big", big), ("tiny", tiny)], torch.device("cpu"))
    monitor.update([torch.ones(300, 300), torch.ones(5)])
    big_stats, tiny_stats = monitor.results()
    assert big_stats.weight_norm == pytest.approx(float(np.float32(1e20)) * 300, rel=1e-6)
    assert tiny_stats.weight_norm == pytest.approx(float(np.float32(1e-25)) * math.sqrt(5))
    assert big_stats.ratio == pytest.approx(1 / float(np.float32(1e20)), rel=1e-6)


def test_an_all_zero_gradient_is_not_normed_again(monkeypatch):
    # a dead layer's gradient is all zeros every batch: its zero norm is exact, and the
    # float64 norm (for float32 squares that underflowed) must not be taken for it
    monkeypatch.setattr(gm, "SMALL_GRADIENTS", 0)
    calls = []
    original = torch.linalg.vector_norm

    def counting(*args, **kwargs):
        calls.append(kwargs.get("dtype"))
        return original(*args, **kwargs)

    monkeypatch.setattr(torch.linalg, "vector_norm", counting)
    w, b = nn.Parameter(torch.zeros(30, 20)), nn.Parameter(torch.zeros(30))
    monitor = gm.GradientMonitor([("w", w), ("b", b)], torch.device("cpu"))
    for _ in range(3):
        monitor.update([torch.zeros(30, 20), torch.full((30,), 1e-25)])
    assert calls.count(torch.float64) == 3  # the bias's, once per batch; never the weight's
    weight, bias = monitor.results()
    assert weight.grad_norm == 0.0 and weight.zero_fraction == 1.0
    assert bias.grad_norm == pytest.approx(float(np.float32(1e-25)) * math.sqrt(30))


@pytest.mark.parametrize("host_reads", [True, False], ids=["cpu", "other-device"])
def test_norms_of_mixed_precisions(monkeypatch, host_reads):
    # half, single and double precision gradients in one model (a float64 head on a
    # bfloat16 body): one foreach dtype never narrower than any of them. "other-device" is
    # the path taken off the CPU (float64 accumulation, nothing read back), run on the CPU
    monkeypatch.setattr(gm, "SMALL_GRADIENTS", 0)
    if not host_reads:
        monkeypatch.setattr(gm, "reads_free", lambda t: False)
    g = torch.Generator().manual_seed(2)
    grads = [
        (torch.randn(300, 300, generator=g) * 1e-25).bfloat16(),
        torch.randn(300, 300, generator=g) * 1e20,
        torch.randn(300, generator=g).double() * 1e-150,
        torch.zeros(300, 300),
    ]
    params = [(f"p{i}", nn.Parameter(torch.zeros_like(x))) for i, x in enumerate(grads)]
    monitor = gm.GradientMonitor(params, torch.device("cpu"))
    monitor.update(grads)
    for stats, x in zip(monitor.results(), grads, strict=True):
        exact = float(np.sqrt((x.double().numpy() ** 2).sum()))
        assert stats.grad_norm == pytest.approx(exact, rel=1e-4, abs=0.0)


def test_sparse_gradients_count_their_unstored_entries_as_zeros():
    # a sparse COO gradient with a repeated index (uncoalesced: its values add up) and a
    # stored zero, for a plain parameter and for the input layer's weight (whose shares
    # need its dense shape)
    indices = torch.tensor([[0, 0, 2, 3], [1, 1, 0, 4]])
    values = torch.tensor([1.0, 2.0, -4.0, 0.0])
    # checked explicitly (torch 2.11 warns at construction unless the checks are opted
    # into globally, also with check_invariants=True)
    with torch.sparse.check_sparse_tensor_invariants():
        grad = torch.sparse_coo_tensor(indices, values, (5, 6))
    dense = grad.to_dense().double().numpy()
    for share in (False, True):
        w = nn.Parameter(torch.zeros(5, 6))
        monitor = gm.GradientMonitor([("w", w)], torch.device("cpu"))
        if share:
            monitor.watch_input_layer({"w"}, 6)
        monitor.update([grad])
        monitor.update([grad])
        (stats,) = monitor.results()
        assert stats.grad_norm == pytest.approx(math.sqrt((dense**2).sum()))
        assert stats.zero_fraction == pytest.approx((dense == 0).mean())
        if share:
            columns = (dense**2).sum(0)
            assert stats.feature_share == pytest.approx(tuple(columns / columns.sum()))


def _with_blank_features(scale: float, blank: int, seed: int = 0) -> list:
    """Batches of 4 features drawn at *scale* (offset 3 x *scale*) and *blank* features
    that are 0 in every sample (an image's background, a one-hot column never seen)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(6):
        x = torch.zeros(64, 4 + blank)
        x[:, :4] = (torch.randn(64, 4, generator=g) + 3) * scale
        out.append((x, torch.randint(0, 3, (64,), generator=g)))
    return out


def _classifier(features: int, act: type[nn.Module]) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(features, 16), act(), nn.Linear(16, 3))


def test_features_that_are_zero_in_every_sample_do_not_count_as_a_blocked_input_layer():
    """Their weight columns get a zero gradient in every batch whatever the scale (dW[:, j]
    = sum_n delta_n x_nj): SC104 reports the features, and SC301 judges the other columns.
    Before, 12 blank features of 16 read as '75% of the gradient entries are exactly zero'
    (an error, 'blocked') on well-scaled data."""
    report = scalecheck.diagnose(
        _classifier(16, nn.ReLU), _with_blank_features(1.0, 12), trial=False, strict=True
    )
    assert "SC301" not in report.codes() and "SC104" in report.codes()
    assert report.verdict == scalecheck.Verdict.OK
    (weight,) = [g for g in report.gradients if g.input_layer and len(g.shape) == 2]
    assert weight.zero_fraction is not None and weight.zero_fraction >= 12 / 16


def test_a_saturated_input_layer_is_still_blocked_next_to_blank_features():
    """Tanh units saturated by inputs of order 1e5: the columns of the measured features
    are zero too, and SC301 says how many blank features it left out."""
    report = scalecheck.diagnose(
        _classifier(10, nn.Tanh), _with_blank_features(1e5, 6), trial=False, strict=True
    )
    (sc301,) = [f for f in report.findings if f.code == "SC301"]
    assert "not counting the weights of the 6 inputs that are 0 in every sample" in (sc301.message)
    assert sc301.evidence["idle_features"] == 6
    # judged over the 4 measured columns (and the bias): 16 x 4 + 16 entries
    assert sc301.evidence["entries"] == 16 * 4 + 16
    assert sc301.evidence["zero_fraction"] > 0.5
    assert report.verdict == scalecheck.Verdict.STALLING


def test_the_blank_border_of_a_flattened_image_does_not_count_as_a_blocked_input_layer():
    """An MNIST-like digit: ink in the centre, a border 0 in every image, flattened into a
    linear layer (measured per channel). The border's weight columns are left out of SC301
    (before: '76% of the gradient entries are exactly zero', an error, on well-scaled
    images), the count of blank positions reaches the report and survives JSON."""
    g = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(4):
        x = torch.zeros(32, 1, 12, 12)
        x[:, :, 3:9, 4:8] = torch.rand(32, 1, 6, 4, generator=g)
        batches.append((x, torch.randint(0, 10, (32,), generator=g)))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(144, 32), nn.ReLU(), nn.Linear(32, 10))
    report = scalecheck.diagnose(model, batches, trial=False, strict=True)
    (inp,) = report.inputs
    assert inp.blank_positions == 144 - 24
    assert "SC301" not in report.codes() and report.verdict == scalecheck.Verdict.OK
    (weight,) = [g for g in report.gradients if g.input_layer and len(g.shape) == 2]
    assert weight.zero_fraction is not None and weight.zero_fraction >= 120 / 144
    again = scalecheck.Report.from_json(report.to_json())
    assert again.inputs[0].blank_positions == 120
    plain = report.to_dict()
    del plain["measurements"]["inputs"][0]["blank_positions"]  # a report from an older version
    assert scalecheck.Report.from_dict(plain).inputs[0].blank_positions is None


def test_sc302_judges_the_rms_of_the_columns_it_does_not_leave_out():
    """The input layer's RMS gradient entry is taken over the columns SC301 judges: with 12
    blank features of 16, over all of them it reads sqrt(4/16) = 0.5 of the judged
    columns' (and a column of zeros would pull a gradient under Adam's epsilon)."""
    from scalecheck.rules import gradients as rules

    report = scalecheck.diagnose(
        _classifier(16, nn.ReLU), _with_blank_features(1.0, 12), trial=False, strict=True
    )
    (weight,) = [g for g in report.gradients if g.input_layer and len(g.shape) == 2]
    ctx = rules.Context(report.measurements)
    layer = rules._input_layer(ctx)
    assert layer.idle == 12
    assert layer.rms == pytest.approx(weight.grad_rms * 2.0)
