"""Pooling ops on every CPU backend against the loop oracle: random shapes, odd shapes, dtypes,
layouts, gradients and determinism."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import lalm_fast.ops as ops
from lalm_fast.ops import backends
from tests import oracle

TOL = {torch.float64: 1e-12, torch.float32: 2e-6, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


def assert_close_to_oracle(result, expected, dtype):
    tol = TOL[dtype]
    for b, exp in enumerate(expected):
        n = exp.shape[0]
        assert int(result.lengths[b]) == n
        got = result.values[b, :n].double()
        torch.testing.assert_close(got, exp, atol=tol * (1 + exp.abs().max().item() if exp.numel() else 1), rtol=tol)
        assert not result.values[b, n:].any(), "rows past a sample's length must be zero"


def test_cpu_backend_is_built():
    # CI must exercise the C++ kernels, not quietly fall back to the reference.
    assert backends.is_available("cpu", "cpu"), backends.available()["cpu"]


batch_shapes = st.tuples(st.integers(1, 4), st.integers(1, 40), st.sampled_from([1, 3, 41, 64]))


@st.composite
def padded_batch(draw, dtypes=(torch.float32, torch.float64, torch.float16, torch.bfloat16)):
    batch, frames, dim = draw(batch_shapes)
    lengths = draw(st.lists(st.integers(0, frames), min_size=batch, max_size=batch))
    dtype = draw(st.sampled_from(dtypes))
    seed = draw(st.integers(0, 2**16))
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, frames, dim, generator=gen).to(dtype)
    return x, torch.tensor(lengths, dtype=torch.long)


@given(data=padded_batch(), k=st.integers(1, 5))
def test_uniform_pool_matches_oracle(cpu_backend, data, k):
    x, lengths = data
    result = ops.uniform_pool(x, lengths, k, backend=cpu_backend)
    assert result.values.shape == (x.shape[0], math.ceil(x.shape[1] / k), x.shape[2])
    expected = oracle.pooled(x, lengths, lambda b, n: oracle.uniform_bounds(n, k))
    assert_close_to_oracle(result, expected, x.dtype)


@given(data=padded_batch(), k=st.integers(1, 5))
def test_downsample_matches_oracle(cpu_backend, data, k):
    x, lengths = data
    result = ops.downsample(x, lengths, k, backend=cpu_backend)
    expected = oracle.pooled(x, lengths, lambda b, n: oracle.downsample_bounds(n, k))
    assert_close_to_oracle(result, expected, x.dtype)
    for b, exp in enumerate(expected):  # a kept frame is copied exactly, in any dtype
        assert torch.equal(result.values[b, : exp.shape[0]], x[b, : lengths[b] : k])


@given(data=padded_batch(), density=st.floats(0, 1), seed=st.integers(0, 999))
def test_segment_pool_matches_oracle(cpu_backend, data, density, seed):
    x, lengths = data
    gen = torch.Generator().manual_seed(seed)
    boundaries = torch.rand(x.shape[:2], generator=gen) < density
    result = ops.segment_pool(x, lengths, boundaries, backend=cpu_backend)
    starts = lambda b: boundaries[b].nonzero().flatten().tolist()
    expected = oracle.pooled(x, lengths, lambda b, n: oracle.bounds_from_starts(starts(b), n))
    assert_close_to_oracle(result, expected, x.dtype)
    for b, exp in enumerate(expected):
        n = exp.shape[0]
        bounds = oracle.bounds_from_starts(starts(b), int(lengths[b]))
        assert result.spans[b, :n].tolist() == [list(s) for s in bounds]


@given(data=padded_batch(dtypes=(torch.float32, torch.float64)))
def test_boundary_scores_match_oracle(cpu_backend, data):
    x, lengths = data
    got = ops.boundary_scores(x, lengths, backend=cpu_backend)
    assert got.dtype == (torch.float64 if x.dtype == torch.float64 else torch.float32)
    for b in range(x.shape[0]):
        torch.testing.assert_close(got[b].double(), oracle.scores(x[b], int(lengths[b])), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_boundary_scores_half_precision_accumulate_in_fp32(cpu_backend, dtype):
    x = torch.randn(2, 30, 384).to(dtype)
    lengths = torch.tensor([30, 17])
    got = ops.boundary_scores(x, lengths, backend=cpu_backend)
    assert got.dtype == torch.float32
    expected = ops.boundary_scores(x.double(), lengths, backend="torch").float()
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dim", [1, 41, 384, 1280])
def test_real_encoder_widths(cpu_backend, dim):
    x = torch.randn(3, 25, dim)
    lengths = torch.tensor([25, 1, 0])
    for k in (2, 3, 4):
        result = ops.uniform_pool(x, lengths, k, backend=cpu_backend)
        expected = oracle.pooled(x, lengths, lambda b, n: oracle.uniform_bounds(n, k))
        assert_close_to_oracle(result, expected, x.dtype)


def test_single_frame_and_empty_samples(cpu_backend):
    x = torch.randn(3, 1, 41)
    lengths = torch.tensor([1, 0, 1])
    result = ops.uniform_pool(x, lengths, 4, backend=cpu_backend)
    assert result.lengths.tolist() == [1, 0, 1]
    assert torch.equal(result.values[0, 0], x[0, 0]) and not result.values[1].any()
    assert ops.segment_compress(x, lengths, rate=3, backend=cpu_backend).lengths.tolist() == [1, 0, 1]


def test_one_segment_spanning_a_long_sample(cpu_backend):
    x = torch.randn(2, 3000, 41, dtype=torch.float64)
    boundaries = torch.zeros(2, 3000, dtype=torch.bool)
    result = ops.segment_pool(x, torch.tensor([3000, 2999]), boundaries, backend=cpu_backend)
    assert result.lengths.tolist() == [1, 1]
    torch.testing.assert_close(result.values[0, 0], x[0].mean(0))
    torch.testing.assert_close(result.values[1, 0], x[1, :2999].mean(0))


def test_all_one_frame_segments_equal_the_input(cpu_backend):
    x = torch.randn(2, 17, 41)
    lengths = torch.tensor([17, 9])
    result = ops.segment_pool(x, lengths, torch.ones(2, 17, dtype=torch.bool), backend=cpu_backend)
    assert torch.equal(result.values[0], x[0]) and torch.equal(result.values[1, :9], x[1, :9])


def test_non_contiguous_and_sliced_inputs(cpu_backend):
    base = torch.randn(5, 40, 90)
    views = {
        "batch stride": base[::2],
        "time stride": base[:, ::3],
        "feature slice": base[:, :, 7:48],
        "transposed": base.transpose(1, 2)[:, :40, :],  # stride(-1) != 1: copied once
    }
    for name, x in views.items():
        lengths = torch.randint(0, x.shape[1] + 1, (x.shape[0],))
        for k in (2, 3):
            got = ops.uniform_pool(x, lengths, k, backend=cpu_backend)
            want = ops.uniform_pool(x.contiguous(), lengths, k, backend=cpu_backend)
            assert torch.equal(got.values, want.values), name
        got = ops.boundary_scores(x, lengths, backend=cpu_backend)
        assert torch.equal(got, ops.boundary_scores(x.contiguous(), lengths, backend=cpu_backend)), name


def test_padded_and_packed_layouts_agree(cpu_backend):
    lengths = [7, 0, 13, 1, 5]
    x_packed = torch.randn(sum(lengths) + 3, 41)  # 3 trailing rows past cu_seqlens[-1]: never read
    cu = torch.tensor([0] + list(torch.tensor(lengths).cumsum(0)), dtype=torch.int32)
    x_padded = torch.zeros(len(lengths), max(lengths), 41)
    for b, n in enumerate(lengths):
        x_padded[b, :n] = x_packed[cu[b] : cu[b] + n]
    lens = torch.tensor(lengths)
    cases = [
        (ops.uniform_pool, dict(k=3)),
        (ops.downsample, dict(k=2)),
        (ops.segment_compress, dict(rate=2)),
        (ops.segment_compress, dict(threshold=0.9)),
        (ops.segment_compress, dict(prominence=0.1, min_len=2)),
    ]
    for fn, kw in cases:
        padded = fn(x_padded, lens, backend=cpu_backend, **kw)
        packed = fn(x_packed, cu_seqlens=cu, max_seqlen=max(lengths), backend=cpu_backend, **kw)
        assert torch.equal(packed.lengths, padded.lengths), fn.__name__
        assert torch.equal(packed.cu_seqlens, torch.cat([torch.zeros(1, dtype=torch.long), padded.lengths.cumsum(0)]))
        for b, n in enumerate(padded.lengths.tolist()):
            rows = slice(int(packed.cu_seqlens[b]), int(packed.cu_seqlens[b + 1]))
            torch.testing.assert_close(packed.values[rows], padded.values[b, :n])
            assert torch.equal(packed.spans[rows], padded.spans[b, :n])
        assert not packed.values[int(packed.cu_seqlens[-1]) :].any()
    packed_scores = ops.boundary_scores(x_packed, cu_seqlens=cu, max_seqlen=13, backend=cpu_backend)
    padded_scores = ops.boundary_scores(x_padded, lens, backend=cpu_backend)
    for b, n in enumerate(lengths):
        torch.testing.assert_close(packed_scores[cu[b] : cu[b] + n], padded_scores[b, :n])


def test_attention_mask_equals_lengths(cpu_backend):
    x = torch.randn(3, 12, 8)
    lengths = torch.tensor([12, 5, 0])
    mask = (torch.arange(12)[None] < lengths[:, None]).long()
    a = ops.uniform_pool(x, attention_mask=mask, k=3, backend=cpu_backend)
    b = ops.uniform_pool(x, lengths, 3, backend=cpu_backend)
    assert torch.equal(a.values, b.values) and torch.equal(a.lengths, b.lengths)


def test_padding_is_never_read(cpu_backend):
    x = torch.randn(2, 10, 6)
    lengths = torch.tensor([7, 4])
    poisoned = x.clone()
    for b, n in enumerate(lengths):
        poisoned[b, n:] = float("nan")
    for fn, kw in [(ops.uniform_pool, dict(k=3)), (ops.segment_compress, dict(rate=2)), (ops.segment_compress, {})]:
        assert torch.equal(fn(poisoned, lengths, backend=cpu_backend, **kw).values,
                           fn(x, lengths, backend=cpu_backend, **kw).values)


def test_nan_passes_through_as_nan(cpu_backend):
    x = torch.randn(1, 6, 4)
    x[0, 4, 2] = float("nan")
    out = ops.uniform_pool(x, torch.tensor([6]), 3, backend=cpu_backend).values
    assert torch.isnan(out[0, 1, 2]) and not torch.isnan(out[0, 0]).any() and not torch.isnan(out[0, 1, :2]).any()


def test_uniform_pool_equals_avgpool_where_no_window_touches_padding(cpu_backend):
    k = 3
    x = torch.randn(4, 30, 41, dtype=torch.float64)
    result = ops.uniform_pool(x, torch.full((4,), 30), k, backend=cpu_backend)
    expected = torch.nn.AvgPool1d(k, k)(x.transpose(1, 2)).transpose(1, 2)
    torch.testing.assert_close(result.values, expected)


def test_uniform_pool_differs_from_avgpool_on_padding():
    # The bug class the length-aware op exists for: AvgPool1d averages padding into the last token.
    x = torch.ones(1, 6, 2)
    x[0, 5:] = 0.0  # padding
    ours = ops.uniform_pool(x, torch.tensor([5]), 3).values[0, 1]
    theirs = torch.nn.AvgPool1d(3, 3)(x.transpose(1, 2))[0, :, 1]
    assert torch.equal(ours, torch.ones(2)) and torch.allclose(theirs, torch.full((2,), 2 / 3))


@pytest.mark.parametrize("op", ["uniform_pool", "downsample", "segment_compress_rate", "segment_pool"])
def test_gradcheck_float64(cpu_backend, op):
    x = torch.randn(3, 11, 5, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([11, 4, 0])
    boundaries = torch.rand(3, 11) < 0.4
    fns = {
        "uniform_pool": lambda x: ops.uniform_pool(x, lengths, 3, backend=cpu_backend).values,
        "downsample": lambda x: ops.downsample(x, lengths, 2, backend=cpu_backend).values,
        "segment_compress_rate": lambda x: ops.segment_compress(x, lengths, rate=2, backend=cpu_backend).values,
        "segment_pool": lambda x: ops.segment_pool(x, lengths, boundaries, backend=cpu_backend).values,
    }
    assert torch.autograd.gradcheck(fns[op], (x,))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_backward_matches_reference(dtype):
    x = torch.randn(4, 33, 41).to(dtype)
    lengths = torch.tensor([33, 10, 0, 1])
    boundaries = torch.rand(4, 33) < 0.3
    grads = {}
    for backend in ("torch", "cpu"):
        leaf = x.clone().requires_grad_()
        out = ops.segment_pool(leaf, lengths, boundaries, backend=backend).values
        out.backward(torch.linspace(-1, 1, out.numel()).view_as(out).to(dtype))
        grads[backend] = leaf.grad
    torch.testing.assert_close(grads["cpu"].float(), grads["torch"].float(), atol=TOL[dtype], rtol=TOL[dtype])
    assert not grads["cpu"][1, 10:].any() and not grads["cpu"][2].any()


def test_results_are_bitwise_deterministic(cpu_backend):
    x = torch.randn(8, 300, 384)
    lengths = torch.randint(0, 301, (8,))
    first = ops.segment_compress(x, lengths, rate=3, backend=cpu_backend)
    for threads in (1, 2):
        torch.set_num_threads(threads)
        again = ops.segment_compress(x, lengths, rate=3, backend=cpu_backend)
        assert torch.equal(first.values, again.values) and torch.equal(first.spans, again.spans)
    leaf = x.clone().requires_grad_()
    ops.uniform_pool(leaf, lengths, 3, backend=cpu_backend).values.sum().backward()
    grad = leaf.grad.clone()
    leaf.grad = None
    ops.uniform_pool(leaf, lengths, 3, backend=cpu_backend).values.sum().backward()
    assert torch.equal(grad, leaf.grad)


def test_segment_ids_and_offsets_agree_with_boundaries(cpu_backend):
    x = torch.randn(2, 9, 5)
    lengths = torch.tensor([9, 6])
    boundaries = torch.tensor([[1, 0, 0, 1, 1, 0, 0, 0, 1], [1, 0, 1, 0, 0, 1, 1, 1, 1]], dtype=torch.bool)
    by_mask = ops.segment_pool(x, lengths, boundaries, backend=cpu_backend)
    ids = boundaries.long().cumsum(1) - 1
    by_ids = ops.segment_pool(x, lengths, segment_ids=ids, backend=cpu_backend)
    assert torch.equal(by_ids.lengths, by_mask.lengths)
    torch.testing.assert_close(by_ids.values, by_mask.values)
    offsets = torch.tensor([[0, 3, 4, 8, 9], [0, 2, 5, 6, 6]])
    by_csr = ops.segment_pool(x, lengths, offsets=offsets, backend=cpu_backend)
    torch.testing.assert_close(by_csr.values[0], by_mask.values[0, :4])
    torch.testing.assert_close(by_csr.values[1, :3], by_mask.values[1, :3])
    assert not by_csr.values[1, 3].any()  # an empty segment gives 0


def test_segment_ids_with_gaps_give_empty_segments(cpu_backend):
    x = torch.randn(1, 4, 3)
    ids = torch.tensor([[0, 0, 2, 2]])
    result = ops.segment_pool(x, None, segment_ids=ids, max_segments=4, backend=cpu_backend)
    assert result.lengths.tolist() == [3]
    torch.testing.assert_close(result.values[0, 0], x[0, :2].mean(0))
    assert not result.values[0, 1].any()
    torch.testing.assert_close(result.values[0, 2], x[0, 2:].mean(0))


def test_max_segments_merges_surplus_into_last_token(cpu_backend):
    x = torch.randn(1, 10, 3, dtype=torch.float64)
    boundaries = torch.ones(1, 10, dtype=torch.bool)
    result = ops.segment_pool(x, None, boundaries, max_segments=4, backend=cpu_backend)
    assert result.lengths.tolist() == [4] and result.spans[0, -1].tolist() == [3, 10]
    torch.testing.assert_close(result.values[0, 3], x[0, 3:].mean(0))


def test_result_mask_and_trim():
    x = torch.randn(2, 9, 4)
    result = ops.uniform_pool(x, torch.tensor([9, 2]), 2)
    assert result.mask().tolist() == [[1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]
    short = ops.uniform_pool(x, torch.tensor([4, 2]), 2).trim()
    assert short.values.shape == (2, 2, 4)


def test_segment_pool_output_fits_the_segments_on_cpu(cpu_backend):
    """On CPU tensors the default output has the rows the segments need (counting costs no
    device sync); max_segments fixes it, and torch.compile keeps the static bound T."""
    x = torch.randn(3, 20, 4)
    lengths = torch.tensor([20, 7, 0])
    boundaries = torch.zeros(3, 20, dtype=torch.bool)
    boundaries[0, [5, 10]] = True  # 3 segments
    boundaries[1, [3, 10, 15]] = True  # 2 segments: 10 and 15 are padding
    boundaries[2, 4] = True  # an empty sample: none
    fitted = ops.segment_pool(x, lengths, boundaries, backend=cpu_backend)
    assert fitted.values.shape == (3, 3, 4) and fitted.lengths.tolist() == [3, 2, 0]
    full = ops.segment_pool(x, lengths, boundaries, max_segments=20, backend=cpu_backend)
    torch.testing.assert_close(full.values[:, :3], fitted.values)
    assert not full.values[:, 3:].any()
    ids = torch.tensor([[0] * 10 + [1] * 10, [0] * 20, [0] * 20])
    assert ops.segment_pool(x, lengths, segment_ids=ids, backend=cpu_backend).values.shape == (3, 2, 4)
    empty = ops.segment_pool(x, torch.zeros(3, dtype=torch.long), boundaries, backend=cpu_backend)
    assert empty.values.shape == (3, 1, 4) and not empty.values.any()
    compiled = torch.compile(lambda v: ops.segment_pool(v, lengths, boundaries, backend=cpu_backend).values,
                             fullgraph=True, backend="eager")
    assert compiled(x).shape == (3, 20, 4)
