"""Streaming statistics: any split into batches equals numpy on the concatenation, and
merging is associative and commutative with the empty state as identity."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from scalecheck.monitors._host import host_moments
from scalecheck.monitors._kernels import (
    Accumulator,
    batch_gram,
    empty_gram,
    empty_moments,
    fast_moments,
    masked_moments,
    merge_gram,
    merge_moments,
    variance,
)
from scalecheck.monitors.inputs import kappa_from_gram

finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)


@st.composite
def data_and_splits(draw):
    n = draw(st.integers(1, 40))
    f = draw(st.integers(1, 4))
    offset = draw(st.sampled_from([0.0, 1.0, 1e4, -3e5]))
    x = draw(arrays(np.float64, (n, f), elements=st.floats(-100, 100))) + offset
    cuts = sorted(draw(st.lists(st.integers(1, max(1, n - 1)), max_size=5, unique=True)))
    cuts = [c for c in cuts if c < n]
    return x, cuts


def _stream(x: np.ndarray, cuts: list[int]):
    state = empty_moments(x.shape[1])
    for part in np.split(x, cuts):
        if len(part):
            state = merge_moments(state, masked_moments(torch.from_numpy(part), (0,)))
    return state


@given(data_and_splits())
def test_streaming_moments_equal_numpy_on_concatenation(case):
    x, cuts = case
    state = _stream(x, cuts)
    np.testing.assert_allclose(state.n.numpy(), np.full(x.shape[1], len(x)))
    np.testing.assert_allclose(state.mean.numpy(), x.mean(0), rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(variance(state).numpy(), x.var(0), rtol=1e-9, atol=1e-7)
    np.testing.assert_array_equal(state.min.numpy(), x.min(0))
    np.testing.assert_array_equal(state.max.numpy(), x.max(0))


@given(data_and_splits(), data_and_splits(), data_and_splits())
def test_merge_is_associative_and_commutative(a, b, c):
    f = min(a[0].shape[1], b[0].shape[1], c[0].shape[1])
    sa, sb, sc = (masked_moments(torch.from_numpy(x[0][:, :f]), (0,)) for x in (a, b, c))
    left = merge_moments(merge_moments(sa, sb), sc)
    right = merge_moments(sa, merge_moments(sb, sc))
    swapped = merge_moments(sc, merge_moments(sb, sa))
    for one, other in ((left, right), (left, swapped)):
        for field in ("n", "mean", "m2", "min", "max", "nonfinite", "zeros"):
            np.testing.assert_allclose(
                getattr(one, field).numpy(), getattr(other, field).numpy(), rtol=1e-9, atol=1e-6
            )


@given(data_and_splits())
def test_empty_state_is_the_identity(case):
    x, _ = case
    s = masked_moments(torch.from_numpy(x), (0,))
    for merged in (
        merge_moments(empty_moments(x.shape[1]), s),
        merge_moments(s, empty_moments(x.shape[1])),
    ):
        for field in s._fields:
            np.testing.assert_array_equal(getattr(merged, field).numpy(), getattr(s, field).numpy())


def test_masked_moments_count_and_exclude_non_finite():
    x = torch.tensor([[1.0, float("nan")], [3.0, 2.0], [float("inf"), 4.0], [0.0, 0.0]])
    m = masked_moments(x, (0,))
    assert m.n.tolist() == [3.0, 3.0]
    assert m.nonfinite.tolist() == [1.0, 1.0]
    assert m.zeros.tolist() == [1.0, 1.0]
    assert m.mean.tolist() == pytest.approx([4 / 3, 2.0])
    assert m.max.tolist() == [3.0, 4.0]


def test_offset_data_keeps_its_variance_in_float32_reductions():
    # E[x^2] - E[x]^2 in float32 returns 0 here; two-pass reductions do not.
    x = (torch.randn(4096, 1, generator=torch.Generator().manual_seed(0)) + 1e4).float()
    m = fast_moments(x, (0,))
    assert float(variance(m)[0]) == pytest.approx(float(x.double().var(unbiased=False)), rel=1e-3)


@given(data_and_splits())
def test_streaming_gram_equals_numpy_second_moment(case):
    x, cuts = case
    state = empty_gram(x.shape[1])
    for part in np.split(x, cuts):
        if len(part):
            t = torch.from_numpy(part)
            shift = t.mean(0) if state.n == 0 else state.shift
            state = merge_gram(state, batch_gram(t, shift))
    second = (
        state.g.numpy()
        + np.outer(state.s, state.shift)
        + np.outer(state.shift, state.s)
        + float(state.n) * np.outer(state.shift, state.shift)
    ) / float(state.n)
    np.testing.assert_allclose(
        second, x.T @ x / len(x), rtol=1e-7, atol=1e-9 * (1 + np.abs(x).max()) ** 2
    )


def test_kappa_of_the_reference_input_matches_the_closed_form():
    x = torch.arange(255, 200001, dtype=torch.float64).reshape(-1, 1)
    raw, standardized = kappa_from_gram(batch_gram(x, x.mean(0)))
    xn = x.numpy().ravel()
    expected = np.linalg.cond(np.array([[np.mean(xn * xn), xn.mean()], [xn.mean(), 1.0]]))
    assert raw == pytest.approx(expected, rel=1e-4)
    assert raw == pytest.approx(5.36e10, rel=0.01)
    assert standardized == pytest.approx(1.0)


def test_kappa_with_several_features_matches_numpy():
    rng = np.random.default_rng(0)
    x = np.column_stack([rng.normal(50, 10, 500), rng.normal(0, 1e-2, 500), rng.normal(0, 1, 500)])
    xt = torch.from_numpy(x)
    raw, standardized = kappa_from_gram(batch_gram(xt, xt.mean(0)))
    aug = np.column_stack([x, np.ones(len(x))])
    assert raw == pytest.approx(np.linalg.cond(aug.T @ aug / len(x)), rel=1e-6)
    z = (x - x.mean(0)) / x.std(0)
    augz = np.column_stack([z, np.ones(len(x))])
    assert standardized == pytest.approx(np.linalg.cond(augz.T @ augz / len(x)), rel=1e-6)


@given(
    st.integers(0, 2**16),
    st.sampled_from([0.0, 1.0, 1e4, -3e5]),
    st.sampled_from([1e-3, 1.0, 50.0]),
)
def test_float32_inputs_are_reduced_accurately(seed, offset, scale):
    rng = np.random.default_rng(seed)
    x = (offset + scale * rng.standard_normal((500, 2))).astype(np.float32)
    ref = x.astype(np.float64)
    shift = torch.from_numpy(ref[:50].mean(0))  # as the input monitor does: an early mean
    m = masked_moments(torch.from_numpy(x), (0,), shift=shift)
    np.testing.assert_allclose(m.mean.numpy(), ref.mean(0), rtol=1e-6, atol=1e-6 * scale)
    np.testing.assert_allclose(np.sqrt(variance(m).numpy()), ref.std(0), rtol=1e-4)
    np.testing.assert_array_equal(m.min.numpy(), ref.min(0))
    np.testing.assert_array_equal(m.max.numpy(), ref.max(0))


def test_zeros_are_counted_around_a_shift():
    x = torch.tensor([[0.0], [0.0], [5.0], [float("nan")]])
    assert masked_moments(x, (0,), shift=torch.tensor([4.0])).zeros.tolist() == [2.0]
    assert masked_moments(x, (0,)).zeros.tolist() == [2.0]


def test_padding_mask_leaves_positions_out():
    x = torch.tensor([[[1.0], [2.0], [float("nan")]], [[3.0], [100.0], [100.0]]])
    valid = torch.tensor([[True, True, False], [True, False, False]]).unsqueeze(-1)
    m = masked_moments(x, (0, 1), valid)
    assert m.n.tolist() == [3.0] and m.nonfinite.tolist() == [0.0]
    assert m.mean.tolist() == [2.0] and m.max.tolist() == [3.0]


@given(data_and_splits(), st.booleans())
def test_accumulator_streams_exactly_like_numpy(case, as_float32):
    """The monitors' running state (shifted sums, buffered or not) equals numpy on the
    concatenation, whatever the split into batches."""
    from scalecheck.monitors._kernels import Accumulator

    x, cuts = case
    x = x.copy()
    x[::3, 0] = 0.0  # some exact zeros
    data = x.astype(np.float32) if as_float32 else x
    acc = Accumulator(x.shape[1])
    for part in np.split(data, cuts):
        if len(part):
            acc.add(torch.from_numpy(part), (0,))
    m = acc.moments()
    ref = data.astype(np.float64)
    scale = 1 + np.abs(ref).max()
    np.testing.assert_allclose(m.mean.numpy(), ref.mean(0), rtol=1e-6, atol=1e-7 * scale)
    np.testing.assert_allclose(
        np.sqrt(variance(m).numpy()), ref.std(0), rtol=1e-4, atol=1e-6 * scale
    )
    np.testing.assert_array_equal(m.min.numpy(), ref.min(0))
    np.testing.assert_array_equal(m.max.numpy(), ref.max(0))
    np.testing.assert_array_equal(m.zeros.numpy(), (ref == 0).sum(0))
    assert m.n.tolist() == [float(len(x))] * x.shape[1]


def test_accumulator_masks_non_finite_batches():
    from scalecheck.monitors._kernels import Accumulator

    acc = Accumulator(1)
    acc.add(torch.tensor([[1.0], [2.0]]), (0,))
    acc.add(torch.tensor([[float("nan")], [3.0], [float("inf")]]), (0,))
    m = acc.moments()
    assert m.n.tolist() == [3.0] and m.nonfinite.tolist() == [2.0]
    assert m.mean.tolist() == [2.0] and m.max.tolist() == [3.0]


@given(data_and_splits(), st.booleans(), st.booleans())
def test_unmasked_accumulator_streams_like_numpy(case, unit_range, padded):
    """The activation path (no NaN masking, optional 0/1 padding weight, site-level or
    per-unit range) equals numpy on the concatenation of the rows it keeps."""
    from scalecheck.monitors._kernels import Accumulator, Workspace

    x, cuts = case
    data = x.astype(np.float32)
    keep = np.ones(len(x), dtype=bool)
    if padded:
        keep[1::2] = False
        if not keep.any():
            return
    acc = Accumulator(x.shape[1], masked=False, unit_range=unit_range, workspace=Workspace())
    start = 0
    for part in np.split(data, cuts):
        if len(part):
            w = torch.from_numpy(keep[start : start + len(part)].astype(np.float32))[:, None]
            acc.add(torch.from_numpy(part), (0,), weight=w if padded else None)
            start += len(part)
    m = acc.moments()
    ref = data[keep].astype(np.float64)
    scale = 1 + np.abs(ref).max()
    np.testing.assert_allclose(m.n.numpy(), [float(len(ref))] * x.shape[1])
    np.testing.assert_allclose(m.mean.numpy(), ref.mean(0), rtol=1e-6, atol=1e-7 * scale)
    np.testing.assert_allclose(
        np.sqrt(variance(m).numpy()), ref.std(0), rtol=1e-4, atol=1e-6 * scale
    )
    lo = ref.min(0) if unit_range else np.full(x.shape[1], ref.min())
    hi = ref.max(0) if unit_range else np.full(x.shape[1], ref.max())
    np.testing.assert_array_equal(m.min.numpy(), lo)
    np.testing.assert_array_equal(m.max.numpy(), hi)


@given(data_and_splits())
def test_gram_accumulator_equals_the_batch_merge(case):
    from scalecheck.monitors._kernels import GramAccumulator

    x, cuts = case
    x32 = torch.from_numpy(x.astype(np.float32))
    shift = x32[: max(1, cuts[0] if cuts else len(x))].double().mean(0)
    merged = empty_gram(x.shape[1])._replace(shift=shift.clone())
    acc = GramAccumulator(x.shape[1], shift.clone(), rows=4)  # buffered and direct batches
    for part in np.split(x.astype(np.float32), cuts):
        if len(part):
            part = torch.from_numpy(part)
            merged = merge_gram(merged, batch_gram(part, shift))
            acc.add(part)
    for a, b in zip(acc.gram(), merged, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-9 * (1 + float(x32.abs().max())) ** 2)


@pytest.mark.parametrize("capacity", [2, 16])  # added at once, and through the buffer
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gram_leaves_out_rows_with_a_non_finite_feature(capacity, dtype):
    from scalecheck.monitors._kernels import GramAccumulator

    rows = torch.tensor(
        [[1.0, 2.0], [float("nan"), 1.0], [3.0, float("inf")], [5.0, 6.0]], dtype=dtype
    )
    before = rows.clone()
    acc = GramAccumulator(2, torch.zeros(2, dtype=torch.float64), rows=capacity)
    rows = rows.T.contiguous().T  # rows that are the transpose of a contiguous tensor
    acc.add(rows)
    assert torch.equal(rows.nan_to_num(), before.nan_to_num())  # the caller's rows untouched
    state = acc.gram()
    clean = rows[[0, 3]].double()
    assert float(state.n) == 2.0
    torch.testing.assert_close(state.s, clean.sum(0))
    torch.testing.assert_close(state.g, clean.T @ clean)


def test_workspace_reuses_its_memory_and_keeps_slots_apart():
    from scalecheck.monitors._kernels import Workspace

    ws = Workspace()
    big = ws.like("a", torch.zeros(4, 5))
    small = ws.like("a", torch.zeros(3))
    other = ws.like("b", torch.zeros(3))
    as_double = ws.like("a", torch.zeros(3), torch.float64)
    assert small.data_ptr() == big.data_ptr() and small.shape == (3,)
    assert other.data_ptr() != big.data_ptr()
    assert as_double.dtype == torch.float64 and as_double.data_ptr() != big.data_ptr()
    grown = ws.like("a", torch.zeros(50))
    assert grown.shape == (50,) and grown.is_contiguous()


def test_workspace_keeps_large_cpu_temporaries_but_not_on_other_devices(monkeypatch):
    """On the CPU a large scratch buffer is kept (freed blocks that large go back to the
    kernel, and would be faulted in again for every batch); on other devices, whose
    caching allocator reuses blocks, temporaries above the cap are allocated per use."""
    from scalecheck.monitors import _kernels

    monkeypatch.setattr(_kernels, "WORKSPACE_MAX_BYTES", 64)
    ws = _kernels.Workspace()
    big = ws.like("a", torch.zeros(17))  # 68 bytes on the CPU: kept all the same
    assert ws.like("a", torch.zeros(17)).data_ptr() == big.data_ptr()
    assert ws.like("a", torch.zeros(4)).data_ptr() == big.data_ptr()
    small = ws.like("b", torch.zeros(16, device="meta"))  # 64 bytes: kept
    assert ("b", torch.device("meta"), torch.float32) in ws._buffers
    over = ws.like("c", torch.zeros(17, device="meta"))  # over the cap: not kept
    assert over.shape == (17,) and small.shape == (16,)
    assert ("c", torch.device("meta"), torch.float32) not in ws._buffers


def test_fused_mean_var_applies_to_columns_and_declines_what_it_cannot_do_exactly():
    """One fused kernel for the columns of [N, F] (and [N, T, F]); None for channel
    layouts, non-contiguous tensors and float32 features too far from zero for it."""
    from scalecheck.monitors._kernels import FUSED_MAX_OFFSET, fused_mean_var

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 5, generator=gen, dtype=torch.float64) * 3 + 10
    for t, dims in ((x.float(), (0,)), (x.float().reshape(8, 8, 5), (0, 1)), (x, (0,))):
        fused = fused_mean_var(t, dims)
        assert fused is not None
        mean, var = fused
        ref = x.numpy()
        np.testing.assert_allclose(mean.double().numpy(), ref.mean(0), rtol=1e-6)
        np.testing.assert_allclose(var.double().numpy(), ref.var(0), rtol=1e-5)
    image = torch.randn(4, 3, 5, 5, generator=gen)
    assert fused_mean_var(image, (1, 2, 3)) is None  # per sample: no kernel's layout
    assert fused_mean_var(image[:, :, :1, :1], (0, 2, 3)) is None  # one position: columns
    assert fused_mean_var(x.float().T, (1,)) is None  # not the leading dimension
    assert fused_mean_var(x.float().T.contiguous().T, (0,)) is None  # not contiguous
    far = torch.randn(64, 2, generator=gen) + torch.tensor([0.0, 3 * FUSED_MAX_OFFSET])
    assert fused_mean_var(far, (0,)) is None  # float32 feature at 3000 std from zero
    assert fused_mean_var(far.double(), (0,)) is not None  # float64 keeps its precision
    const = torch.cat([x.float(), torch.full((64, 1), 0.1)], 1)  # 0.1: inexact sums
    assert fused_mean_var(const, (0,)) is None  # constant: |mean| / std is infinite
    lo, hi = const.amin(0), const.amax(0)
    mean, var = fused_mean_var(const, (0,), lo, hi)  # unless the range shows it constant
    assert mean[-1].item() == const[0, -1].item() and var[-1].item() == 0.0


def test_sum_over_channels_equals_one_reduction():
    """The two-step sum of channel layouts equals reducing all dims at once (exactly for
    0/1 flags, the counts it serves), and other layouts reduce as given."""
    from scalecheck.monitors._kernels import sum_over

    gen = torch.Generator().manual_seed(4)
    x = torch.randn(5, 3, 6, 7, generator=gen)
    flags = (x > 0.3).float()
    assert torch.equal(sum_over(flags, (0, 2, 3)), flags.sum((0, 2, 3)))
    torch.testing.assert_close(sum_over(x, (0, 2, 3)), x.sum((0, 2, 3)))
    torch.testing.assert_close(sum_over(x, (0, 1, 2)), x.sum((0, 1, 2)))
    assert sum_over(flags, (0, 2, 3), torch.float64).dtype == torch.float64


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(6, 3, 7, 5), (5, 4, 9), (2, 3, 2, 3, 4)])
def test_channel_moments_equal_float64_numpy(shape, dtype):
    """The channels of [N, C, *spatial] get their mean and variance from group-norm row
    moments combined per channel: equal to numpy over (0, 2, ...), at an offset the
    float32 check accepts, and declined beyond it."""
    from scalecheck.monitors._kernels import FUSED_MAX_OFFSET, _fused, fused_mean_var

    gen = torch.Generator().manual_seed(3)
    dims = (0, *range(2, len(shape)))
    scale = torch.tensor([1.0, 3.0, 0.5, 2.0][: shape[1]]).reshape(1, -1, *[1] * (len(shape) - 2))
    for offset in (0.0, 40.0):
        x = (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale + offset).to(dtype)
        ref = x.double().numpy()
        fused = _fused(x, dims)
        assert fused is not None
        mean, var, finite = fused
        assert finite and mean.dtype == dtype and var.shape == (shape[1],)
        np.testing.assert_allclose(mean.double().numpy(), ref.mean(dims), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(var.double().numpy(), ref.var(dims), rtol=1e-5)
    far = torch.randn(*shape, generator=gen) * scale + 3 * FUSED_MAX_OFFSET * 3.0
    assert fused_mean_var(far, dims) is None  # float32 channels 3000 std from zero
    assert fused_mean_var(far.double(), dims) is not None  # float64 keeps its precision
    const = torch.randn(*shape, generator=gen)
    const[:, 1] = 0.1
    assert fused_mean_var(const, dims) is None  # a constant channel: infinitely far
    lo, hi = const.amin(dims), const.amax(dims)
    mean, var = fused_mean_var(const, dims, lo, hi)  # unless its range shows it constant
    assert mean[1].item() == const[0, 1].flatten()[0].item() and var[1].item() == 0.0
    bad = torch.randn(*shape, generator=gen)
    bad[0, 0].view(-1)[0] = float("nan")
    mean, var = fused_mean_var(bad, dims)  # NaN propagates into its channel only
    assert math.isnan(mean[0]) and math.isnan(var[0]) and torch.isfinite(mean[1:]).all()


@pytest.mark.parametrize("offset", [0.0, 50.0, 1e5])
def test_fused_and_shifted_paths_agree_on_offset_data(offset):
    """The accumulator takes the fused kernel near zero and the shifted sums far from it;
    both equal float64 numpy on float32 data, constant features included."""
    from scalecheck.monitors._kernels import Accumulator, Workspace

    gen = torch.Generator().manual_seed(1)
    x = torch.randn(6, 256, 4, generator=gen, dtype=torch.float64) * 2 + offset
    x[:, :, 3] = offset + 1.0  # a constant feature: variance 0
    data = x.float()
    ref = data.double().reshape(-1, 4).numpy()
    for masked in (True, False):
        acc = Accumulator(4, masked=masked, workspace=Workspace())
        for part in data:
            acc.add(part, (0,))
        m = acc.moments()
        np.testing.assert_allclose(m.mean.numpy(), ref.mean(0), rtol=1e-6, atol=1e-6)
        # the tolerance of the other accumulator tests: at 1e5 the first batch's float32
        # mean, around which its M2 is taken, is off by a few ulps
        np.testing.assert_allclose(np.sqrt(variance(m).numpy()), ref.std(0), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_accumulator_folds_many_batches_exactly(seed):
    """More batches than one stash holds, mixing the fused path, the shifted path (a
    feature far from zero in some batches), batches with and without zeros and single-row
    batches: the folded state equals numpy on the concatenation."""
    from scalecheck.monitors._kernels import DEFER_BATCHES, Accumulator

    rng = np.random.default_rng(seed)
    parts = []
    for b in range(2 * DEFER_BATCHES + 5):
        rows = int(rng.integers(1, 20))
        x = rng.normal(0.0, 1.0, (rows, 3))
        if b % 3 == 0:
            x[::2, 0] = 0.0  # zeros in some batches only
        x[:, 2] = x[:, 2] * (1e-3 if b % 4 == 0 else 1.0) + 1e4  # |mean| / std up to 1e7
        parts.append(x.astype(np.float32))
    acc = Accumulator(3)
    for part in parts:
        acc.add(torch.from_numpy(part), (0,))
    m = acc.moments()
    ref = np.concatenate(parts).astype(np.float64)
    assert m.n.tolist() == [float(len(ref))] * 3
    np.testing.assert_allclose(m.mean.numpy(), ref.mean(0), rtol=1e-7, atol=1e-6)
    np.testing.assert_allclose(np.sqrt(variance(m).numpy()), ref.std(0), rtol=1e-4)
    np.testing.assert_array_equal(m.min.numpy(), ref.min(0))
    np.testing.assert_array_equal(m.max.numpy(), ref.max(0))
    np.testing.assert_array_equal(m.zeros.numpy(), (ref == 0).sum(0))


@pytest.mark.parametrize("masked", [True, False])
@pytest.mark.parametrize("first", ["plain", "declined", "constant", "nan", "float64", "masked"])
def test_the_first_batch_sets_the_shift_whatever_path_it_takes(masked, first):
    """The shift comes from the fused kernel's means (a plain first batch), or from the
    batch's own moments (a feature the kernel declines, non-finite values, a mask); either
    way the state after more batches equals numpy on the concatenation, and the shift lies
    at the first batch's finite means."""
    from scalecheck.monitors._kernels import FUSED_MAX_OFFSET, Accumulator

    rng = np.random.default_rng(5)
    dtype = np.float64 if first == "float64" else np.float32
    parts = [rng.normal(2.0, 3.0, (64, 3)).astype(dtype) for _ in range(5)]
    if first == "declined":  # |mean| / std beyond the float32 kernel's precision limit
        for p in parts:
            p[:, 1] = rng.normal(0.0, 1.0, 64) + 30 * FUSED_MAX_OFFSET
    if first == "constant":
        parts[0][:, 2] = 7.0
    if first == "nan":
        parts[0][3, 1] = np.nan
    valid = None
    if first == "masked":
        valid = torch.ones(64, 3, dtype=torch.bool)
        valid[::4, 0] = False
    acc = Accumulator(3, masked=masked)
    for i, p in enumerate(parts):
        acc.add(torch.from_numpy(p), (0,), valid if (i == 0 and masked) else None)
    assert acc.shift is not None and acc.shift.dtype == torch.float64
    m = acc.moments()
    ref = np.concatenate(parts).astype(np.float64)
    keep = np.ones_like(ref, dtype=bool)
    if valid is not None and masked:
        keep[:64] = valid.numpy()
    if first == "nan":
        if masked:  # the NaN is counted, not averaged
            keep[3, 1] = False
            assert m.nonfinite.tolist() == [0.0, 1.0, 0.0]
        else:  # it propagates into that feature's statistics
            assert math.isnan(float(m.mean[1])) and math.isfinite(float(m.mean[0]))
            ref[:, 1] = 0.0
            keep[:, 1] = False
    for j in range(3):
        if keep[:64, j].any():
            first_mean = ref[:64, j][keep[:64, j]].mean()
            np.testing.assert_allclose(float(acc.shift[j]), first_mean, rtol=1e-6)
    for j in range(3):
        if first == "nan" and not masked and j == 1:
            continue
        col = ref[keep[:, j], j]
        assert float(m.n[j]) == len(col)
        np.testing.assert_allclose(float(m.mean[j]), col.mean(), rtol=1e-7, atol=1e-7)
        np.testing.assert_allclose(float(variance(m)[j]), col.var(), rtol=1e-5, atol=1e-9)
        assert float(m.min[j]) == col.min() and float(m.max[j]) == col.max()


def test_unmasked_accumulator_folds_weighted_and_plain_batches_together():
    from scalecheck.monitors._kernels import DEFER_BATCHES, Accumulator

    rng = np.random.default_rng(7)
    acc = Accumulator(4, masked=False, unit_range=False)
    kept = []
    for b in range(DEFER_BATCHES + 9):
        x = rng.normal(2.0, 3.0, (12, 4)).astype(np.float32)
        if b % 2:
            w = (rng.random((12, 1)) > 0.4).astype(np.float32)
            acc.add(torch.from_numpy(x), (0,), weight=torch.from_numpy(w))
            kept.append(x[w[:, 0] > 0])
        else:
            acc.add(torch.from_numpy(x), (0,))
            kept.append(x)
    m = acc.moments()
    ref = np.concatenate(kept).astype(np.float64)
    np.testing.assert_allclose(m.n.numpy(), [float(len(ref))] * 4)
    np.testing.assert_allclose(m.mean.numpy(), ref.mean(0), rtol=1e-6)
    np.testing.assert_allclose(np.sqrt(variance(m).numpy()), ref.std(0), rtol=1e-5)
    assert m.min.tolist() == [float(ref.min())] * 4 and m.max.tolist() == [float(ref.max())] * 4


def test_gram_accumulator_buffers_rows_and_equals_the_batch_merge():
    from scalecheck.monitors._kernels import GramAccumulator

    rng = np.random.default_rng(3)
    shift = torch.tensor([50.0, -1.0, 0.0], dtype=torch.float64)
    acc = GramAccumulator(3, shift, rows=5)  # batches below, at and above the capacity
    merged = empty_gram(3)._replace(shift=shift.clone())
    for rows in (1, 4, 2, 5, 7, 3, 3, 1, 6):
        x = rng.normal(50.0, 5.0, (rows, 3)).astype(np.float32)
        if rows == 3:
            x[0, 1] = np.nan  # left out
        acc.add(torch.from_numpy(x))
        finite = torch.from_numpy(x[np.isfinite(x).all(1)])
        merged = merge_gram(merged, batch_gram(finite, shift))
    got = acc.gram()
    assert float(got.n) == float(merged.n) == 30.0
    torch.testing.assert_close(got.s, merged.s, rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(got.g, merged.g, rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gram_of_channels_equals_the_rows_moved_channels_last(dtype):
    """[N, C, *spatial] batches are added per sample without a channels-last copy: the
    same state as adding their rows, NaN positions left out, the first features only,
    and the caller's tensor untouched (also when it is already float64)."""
    from scalecheck.monitors._kernels import GramAccumulator

    gen = torch.Generator().manual_seed(5)
    shift = torch.tensor([3.0, -1.0], dtype=torch.float64)
    by_channels, by_rows = GramAccumulator(2, shift), GramAccumulator(2, shift)
    for shape in ((4, 3, 5, 6), (2, 3, 7), (3, 3, 2, 2, 2)):
        x = (torch.randn(*shape, generator=gen, dtype=torch.float64) * 2 + 3).to(dtype)
        if len(shape) == 3:
            x[1, 0, 4] = float("nan")  # this position's row is left out
        before = x.clone()
        by_channels.add_channels(x)
        by_rows.add(x.movedim(1, -1).reshape(-1, 3)[:, :2])
        assert torch.equal(x.nan_to_num(), before.nan_to_num())
    got, want = by_channels.gram(), by_rows.gram()
    assert float(got.n) == float(want.n) == 4 * 30 + 2 * 7 - 1 + 3 * 8
    torch.testing.assert_close(got.s, want.s, rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(got.g, want.g, rtol=1e-12, atol=1e-9)


def test_kappa_of_collinear_or_constant_features():
    x = torch.linspace(0, 1, 50, dtype=torch.float64)
    collinear = torch.stack([x, 2 * x + 1], 1)
    # singular: inf where LAPACK finds it so, else beyond what float64 can resolve (1/eps;
    # torch 2.11's eigvalsh gave 1.2e18 here, torch 2.13's a singular matrix)
    raw = kappa_from_gram(batch_gram(collinear, collinear.mean(0)))[0]
    assert raw is not None and raw >= 1 / torch.finfo(torch.float64).eps
    constant = torch.stack([x, torch.full_like(x, 3.0)], 1)  # the constant one is left out
    raw, standardized = kappa_from_gram(batch_gram(constant, constant.mean(0)))
    assert raw is not None and 1 < raw < float("inf") and standardized == pytest.approx(1.0)
    assert kappa_from_gram(batch_gram(constant[:, 1:], constant[:, 1:].mean(0))) == (
        float("inf"),
        None,
    )


@pytest.mark.parametrize("offset", [1e150, 1e155, 1e200])
def test_kappa_of_features_whose_squares_overflow(offset):
    # two correlated float64 features at |mean| ~ offset, spread offset / 1000, around the
    # shift the monitor takes (its first batch's mean): beyond
    # ~1e154, mu mu^T overflows and LAPACK failed to converge (an SC001, and the input's
    # results were lost). The raw condition number is then beyond every threshold; the
    # standardized one is the correlation matrix's, as at any offset. No numpy warning
    g = torch.Generator().manual_seed(0)
    base, noise = torch.randn(2, 200, 1, generator=g, dtype=torch.float64)
    x = torch.cat([base, 0.6 * base + 0.8 * noise], 1)
    far = x * (offset / 1e3) + offset
    raw, standardized = kappa_from_gram(batch_gram(far, far[:16].mean(0)))  # as monitored
    assert raw is not None and raw > 1e20
    if offset < 1e160:
        ref = kappa_from_gram(batch_gram(x, x.mean(0)))[1]
        assert standardized == pytest.approx(ref, rel=1e-6)
    else:  # the spread's squares overflow too: no correlation to report
        assert standardized is None


def test_a_feature_whose_squared_deviations_overflow_is_not_left_out():
    # one feature spread over ~1e197 next to two normal ones: its centred squares overflow
    # (its variance came out NaN, and it was left out as if constant: kappa ~1.4 for the
    # two others); per feature, its kappa was cleared by the trace bound (inf <= inf)
    from scalecheck.measurements import kappa_above

    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 3, generator=g, dtype=torch.float64)
    x[:, 0] = x[:, 0] * 1e197 + 1e200
    assert kappa_from_gram(batch_gram(x, x[:16].mean(0))) == (math.inf, None)
    assert kappa_above(1e200, 1e197, 1e3) == math.inf
    assert kappa_above(0.0, 1e160, 1e3) == math.inf
    assert kappa_above(0.0, 1.0, 1e3) is None


def test_stash_copies_rows_into_its_buffer_and_lays_it_out_again_when_shapes_change():
    from scalecheck.monitors._kernels import Stash

    stash = Stash(size=3)
    source = torch.tensor([1.0, 2.0])
    assert not stash.push(source, 7)
    source.add_(10.0)  # the stash holds a copy, not the caller's tensor
    assert not stash.push(torch.tensor([3.0, 4.0]), 8)
    rows, numbers = stash.take()
    assert rows.tolist() == [[1.0, 2.0], [3.0, 4.0]] and numbers == [7, 8] and not stash
    # empty again: a new layout gets a new buffer (integers are kept in float64)
    assert not stash.push(torch.tensor([1, 2, 3]), torch.tensor(2.5), 1)
    with pytest.raises(ValueError, match="one layout"):
        stash.push(torch.tensor([1.0]), torch.tensor(2.5), 1)
    rows, halves, numbers = stash.take()
    assert rows.dtype == torch.float64 and rows.tolist() == [[1, 2, 3]]
    assert halves.tolist() == [2.5] and numbers == [1]


def test_stash_folds_through_its_callback_and_holds_an_owners_method_weakly():
    import weakref

    from scalecheck.monitors._kernels import Stash

    taken = []
    stash = Stash(size=4)
    stash.fold = lambda: taken.append(stash.take())  # a plain function: held strongly
    stash.push(torch.tensor([1.0, 2.0]))
    stash.push(torch.tensor([1.0, 2.0, 3.0]))  # another layout: folds the waiting one
    assert len(taken) == 1 and taken[0][0].tolist() == [[1.0, 2.0]]

    class Owner:
        def __init__(self) -> None:
            self.stash = Stash(fold=self.fold)
            self.folded = 0

        def fold(self) -> None:
            self.stash.take()
            self.folded += 1

    owner = Owner()
    owner.stash.push(torch.tensor([1.0]))
    owner.stash.push(torch.tensor([1.0, 2.0]))
    assert owner.folded == 1
    ref, stash = weakref.ref(owner), owner.stash
    del owner
    assert ref() is None  # freed by reference counting: no owner -> stash -> owner cycle
    assert stash.fold is None


def test_accumulator_takes_batches_whose_dtype_changes():
    from scalecheck.monitors._kernels import Accumulator

    rng = np.random.default_rng(2)
    parts = [rng.normal(3.0, 2.0, (9, 2)) for _ in range(5)]
    acc = Accumulator(2)
    for i, part in enumerate(parts):  # float32, float64, float32, ...: the stash folds between
        acc.add(torch.from_numpy(part.astype(np.float32) if i % 2 == 0 else part), (0,))
    ref = np.concatenate(
        [p.astype(np.float32).astype(np.float64) if i % 2 == 0 else p for i, p in enumerate(parts)]
    )
    m = acc.moments()
    np.testing.assert_allclose(m.mean.numpy(), ref.mean(0), rtol=1e-6)
    np.testing.assert_allclose(np.sqrt(variance(m).numpy()), ref.std(0), rtol=1e-5)
    np.testing.assert_array_equal(m.min.numpy(), ref.min(0))


@pytest.mark.parametrize(
    "state", ["empty", "offset", "nan", "inf", "site-range", "float64", "waiting"]
)
def test_host_moments_equal_the_torch_moments(state):
    # the results read the state through host_moments (numpy); it must give what moments()
    # gives, on every kind of state: nothing seen, far from zero, NaN and inf propagated,
    # one range for the whole site, float64 data, batches still waiting to be folded
    g = torch.Generator().manual_seed(0)
    acc = Accumulator(3, masked=state != "site-range", unit_range=state != "site-range")
    batches = [torch.randn(8, 3, generator=g) * 3 + 1 for _ in range(5)]
    if state == "offset":
        batches = [b + torch.tensor([1e5, -3e3, 0.0]) for b in batches]
    elif state == "nan":
        batches[2][1, 0] = math.nan
    elif state == "inf":
        batches[3][0, 2] = math.inf
    elif state == "float64":
        batches = [b.double() * 1e-3 for b in batches]
    for b in batches if state != "empty" else []:
        acc.add(b, (0,))
    if state == "waiting":
        assert acc._mean_var or acc._sums  # not folded yet
    want = acc.moments()
    got = host_moments(acc)
    for field in ("n", "mean", "m2", "min", "max", "nonfinite", "zeros"):
        np.testing.assert_allclose(
            getattr(got, field), getattr(want, field).numpy(), rtol=1e-12, err_msg=field
        )
    np.testing.assert_allclose(got.var, variance(want).numpy(), rtol=1e-12)
    # copies, not views of the state: a later batch does not change them
    n = got.n.copy()
    acc.add(torch.ones(2, 3, dtype=batches[0].dtype), (0,))
    acc.fold()
    np.testing.assert_array_equal(got.n, n)


@given(data_and_splits(), st.booleans())
def test_the_device_path_streams_like_numpy_over_the_finite_values(case, as_float32):
    """Off the CPU a masked accumulator adds each batch after the first through
    ``_add_finite`` (no value read back, a few kernels); run here on CPU data, it gives
    numpy's statistics of the finite values, their counts, the non-finite count and the
    exact zeros, as ``masked_moments`` does."""
    x, cuts = case
    x = x.copy()
    x[::3, 0] = 0.0
    x[1::5, -1] = math.nan  # row 0 stays finite: every feature has a finite value
    x[2::7, 0] = math.inf
    x[4::9, 0] = -math.inf
    data = x.astype(np.float32) if as_float32 else x
    parts = [p for p in np.split(data, cuts) if len(p)]
    acc = Accumulator(x.shape[1])
    acc.add(torch.from_numpy(parts[0]), (0,))  # the first batch sets the shift
    for part in parts[1:]:
        acc._add_finite(torch.from_numpy(part), (0,))
    m = acc.moments()
    ref = np.ma.masked_invalid(data.astype(np.float64))
    scale = 1 + np.abs(ref).max()
    np.testing.assert_array_equal(m.n.numpy(), ref.count(0))
    np.testing.assert_array_equal(m.nonfinite.numpy(), len(x) - ref.count(0))
    np.testing.assert_array_equal(m.zeros.numpy(), (data == 0).sum(0))
    np.testing.assert_allclose(m.mean.numpy(), ref.mean(0).data, rtol=1e-6, atol=1e-6 * scale)
    np.testing.assert_allclose(
        np.sqrt(variance(m).numpy()), ref.std(0).data, rtol=1e-4, atol=1e-5 * scale
    )
    np.testing.assert_array_equal(m.min.numpy(), ref.min(0).data)
    np.testing.assert_array_equal(m.max.numpy(), ref.max(0).data)


def test_the_condition_number_of_a_wide_input_is_over_features_that_vary():
    """The Gram matrix is kept for 64 features of a wider input: the first that vary, not
    the first 64. A flattened image's first 64 pixels are its blank top rows; before, the
    input's condition number read inf (no varying feature among them)."""
    import scalecheck

    g = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(4):
        x = torch.zeros(32, 100)
        x[:, 70:] = torch.rand(32, 30, generator=g) * 255  # 70 blank features, then 30
        batches.append((x, torch.randn(32, 1, generator=g)))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(100, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    (inp,) = scalecheck.diagnose(model, batches, trial=False, strict=True).inputs
    data = torch.cat([x for x, _ in batches]).double()[:, 70:]
    raw, standardized = kappa_from_gram(batch_gram(data, data.mean(0)))
    assert inp.gram_features == 64
    assert inp.kappa == pytest.approx(raw, rel=1e-6)
    assert inp.kappa_standardized == pytest.approx(standardized, rel=1e-6)


def test_the_device_path_counts_exactly_beyond_float32_integers():
    """2^24 + 3 values of one feature in one batch (a [256, 3, 299, 299] batch holds 2.3e7
    per channel): float32 counts stop being exact at 2^24, and the fold subtracted them
    from exact totals (non-finite -1, zeros -1 on clean data)."""
    acc = Accumulator(1)
    acc.add(torch.ones(4, 1), (0,))  # the first batch sets the shift
    acc._add_finite(torch.ones(2**24 + 3, 1), (0,))
    m = acc.moments()
    assert m.n.tolist() == [2**24 + 7] and m.nonfinite.tolist() == [0.0]
    assert m.zeros.tolist() == [0.0]
