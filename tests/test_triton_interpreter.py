"""Triton kernels vs the pure-PyTorch reference, in Triton's CPU interpreter.

The conftest sets ``TRITON_INTERPRET=1`` before triton is imported when no CUDA device is
present; this module also sets it (if triton has not been imported yet) so it can run on
its own. Shapes are tiny (T <= 40, D <= 41): the interpreter runs numpy per program.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import os
import sys
from pathlib import Path

import pytest
import torch

if "triton" not in sys.modules and not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

triton = pytest.importorskip("triton", reason="triton is not importable")

from lalm_fast.ops import reference as ref  # noqa: E402
from lalm_fast.ops.modes import Mode  # noqa: E402

pytestmark = pytest.mark.triton_interp

REPO = Path(__file__).resolve().parents[1]


def load_kernels():
    """``lalm_fast.kernels`` when installed; else the repo's ``kernels/`` mounted under that name."""
    try:
        return importlib.import_module("lalm_fast.kernels")
    except ModuleNotFoundError:
        spec = importlib.util.spec_from_file_location(
            "lalm_fast.kernels", REPO / "kernels" / "__init__.py", submodule_search_locations=[str(REPO / "kernels")]
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules["lalm_fast.kernels"] = module
        spec.loader.exec_module(module)
        return module


K = load_kernels()
if os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
    pytest.skip("TRITON_INTERPRET is not set (triton was imported before it could be set)", allow_module_level=True)
if K.UNAVAILABLE_REASON:
    pytest.skip(f"triton backend unavailable: {K.UNAVAILABLE_REASON}", allow_module_level=True)

DTYPES = [torch.float32, torch.float16]
TOL = {torch.float32: dict(atol=1e-5, rtol=1e-5), torch.float16: dict(atol=2e-3, rtol=2e-3)}


def random_spans(gen, rows, frames, spans, lengths=None):
    """Sorted, disjoint spans inside [0, L) with empty spans and gaps mixed in."""
    starts = torch.zeros(rows, spans, dtype=torch.int64)
    ends = torch.zeros(rows, spans, dtype=torch.int64)
    for r in range(rows):
        limit = frames if lengths is None else int(lengths[r])
        cuts = torch.sort(torch.randint(0, limit + 1, (2 * spans,), generator=gen)).values
        starts[r], ends[r] = cuts[0::2], cuts[1::2]
    return starts, ends


def make_x(gen, shape, dtype, strided=False):
    x = torch.randn(*shape, generator=gen).to(dtype)
    if strided:  # non-contiguous row and time strides, stride(-1) == 1
        big = torch.randn(shape[0], shape[1] * 2, shape[2] + 3, generator=gen).to(dtype)
        big[:, ::2, : shape[2]] = x
        x = big[:, ::2, : shape[2]]
        assert not x.is_contiguous() and x.stride(-1) == 1
    return x


def check_span_mean(x, starts, ends, **kw):
    got = K.span_mean(x, starts, ends)
    want = ref.span_mean(x, starts, ends)
    assert got.shape == want.shape and got.dtype == x.dtype
    torch.testing.assert_close(got, want, **TOL[x.dtype])
    g = torch.randn(want.shape, generator=torch.Generator().manual_seed(7)).to(x.dtype)
    got_b = K.span_mean_backward(g, starts, ends, x.shape[1])
    want_b = ref.span_mean_backward(g, starts, ends, x.shape[1])
    assert got_b.shape == want_b.shape and got_b.dtype == g.dtype
    torch.testing.assert_close(got_b, want_b, **TOL[x.dtype])


# ----------------------------------------------------------------------------- span_mean


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("strided", [False, True])
def test_span_mean_random(dtype, strided):
    gen = torch.Generator().manual_seed(0)
    x = make_x(gen, (3, 37, 41), dtype, strided)
    starts, ends = random_spans(gen, 3, 37, 9)
    check_span_mean(x, starts, ends)


@pytest.mark.parametrize("dtype", DTYPES)
def test_span_mean_edge_cases(dtype):
    gen = torch.Generator().manual_seed(1)
    T, D = 12, 41
    x = make_x(gen, (5, T, D), dtype)
    starts = torch.tensor([
        [0, 12, 12, 12],   # one span covering the whole sample, then empty spans at T
        [0, 1, 2, 3],      # one-frame spans
        [0, 0, 0, 0],      # length 0: every span empty
        [2, 5, 5, 9],      # gaps, an empty span in the middle
        [3, 3, 7, 7],      # empty span followed by a span starting at the same frame
    ])
    ends = torch.tensor([
        [12, 12, 12, 12],
        [1, 2, 3, 4],
        [0, 0, 0, 0],
        [4, 5, 9, 10],
        [3, 7, 7, 12],
    ])
    check_span_mean(x, starts, ends)
    got = K.span_mean(x, starts, ends)
    assert torch.all(got[2] == 0) and torch.isfinite(got).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_span_mean_t1(dtype):
    gen = torch.Generator().manual_seed(2)
    x = make_x(gen, (2, 1, 5), dtype)
    starts = torch.tensor([[0], [1]])
    ends = torch.tensor([[1], [1]])
    check_span_mean(x, starts, ends)


@pytest.mark.parametrize("dtype", DTYPES)
def test_span_mean_uniform_windows(dtype):
    # the uniform_pool layout: windows [i*k, min((i+1)*k, L)), rows past ceil(L/k) at (L, L)
    gen = torch.Generator().manual_seed(3)
    T, D, k = 40, 24, 3
    lengths = torch.tensor([40, 17, 0, 1])
    S = -(-T // k)
    i = torch.arange(S)
    starts = torch.minimum(i[None] * k, lengths[:, None])
    ends = torch.minimum((i[None] + 1) * k, lengths[:, None])
    x = make_x(gen, (4, T, D), dtype)
    check_span_mean(x, starts, ends)


@pytest.mark.parametrize("nsplit", [2, 3])
def test_span_mean_split_path(nsplit):
    # long spans split across programs and combined by the second kernel
    gen = torch.Generator().manual_seed(4)
    x = make_x(gen, (2, 40, 41), torch.float32)
    starts = torch.tensor([[0, 33], [5, 40]])
    ends = torch.tensor([[33, 40], [39, 40]])
    torch.testing.assert_close(K.span_mean(x, starts, ends, nsplit=nsplit), ref.span_mean(x, starts, ends))
    g = torch.randn(2, 2, 41, generator=gen)
    torch.testing.assert_close(
        K.span_mean_backward(g, starts, ends, 40, nsplit=nsplit), ref.span_mean_backward(g, starts, ends, 40)
    )


def test_span_mean_deterministic():
    gen = torch.Generator().manual_seed(5)
    x = make_x(gen, (2, 30, 17), torch.float32)
    starts, ends = random_spans(gen, 2, 30, 6)
    a, b = K.span_mean(x, starts, ends), K.span_mean(x, starts, ends)
    assert torch.equal(a, b)


def test_span_mean_fp64():
    gen = torch.Generator().manual_seed(6)
    x = make_x(gen, (2, 20, 9), torch.float64)
    starts, ends = random_spans(gen, 2, 20, 5)
    torch.testing.assert_close(K.span_mean(x, starts, ends), ref.span_mean(x, starts, ends))


def test_span_mean_no_spans():
    x = torch.randn(2, 6, 4)
    empty = torch.zeros(2, 0, dtype=torch.int64)
    assert K.span_mean(x, empty, empty).shape == (2, 0, 4)
    grad = torch.zeros(2, 0, 4)
    assert torch.equal(K.span_mean_backward(grad, empty, empty, 6), torch.zeros(2, 6, 4))


def test_rejects_integer_input():
    with pytest.raises(TypeError, match="x"):
        K.span_mean(torch.zeros(1, 2, 3, dtype=torch.int32), torch.zeros(1, 1, dtype=torch.int64),
                    torch.zeros(1, 1, dtype=torch.int64))


# ----------------------------------------------------------------------------- boundary_scores


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("strided", [False, True])
def test_boundary_scores(dtype, strided):
    gen = torch.Generator().manual_seed(10)
    x = make_x(gen, (5, 33, 41), dtype, strided)
    x[0, 5] = 0  # zero vector: norm clamped to eps
    x[0, 7] = x[0, 6]  # identical neighbours: score 0
    lengths = torch.tensor([33, 0, 1, 2, 20])
    got = K.boundary_scores(x, lengths)
    want = ref.boundary_scores(x, lengths)
    assert got.dtype == torch.float32 and got.shape == (5, 33)
    torch.testing.assert_close(got, want, atol=2e-5 if dtype == torch.float32 else 2e-3, rtol=1e-4)
    assert torch.all(got[1] == 0) and torch.all(got[2] == 0) and torch.all(got[4, 20:] == 0) and torch.all(got[:, 0] == 0)


def test_boundary_scores_t1_and_fp64():
    x = torch.randn(2, 1, 3)
    assert torch.equal(K.boundary_scores(x, torch.tensor([1, 0])), torch.zeros(2, 1))
    x64 = torch.randn(2, 9, 5, dtype=torch.float64)
    lengths = torch.tensor([9, 4])
    got = K.boundary_scores(x64, lengths)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, ref.boundary_scores(x64, lengths))


# ----------------------------------------------------------------------------- fused threshold segmentation


def reference_threshold_segment_mean(x, lengths, threshold, num_out):
    scores = ref.boundary_scores(x, lengths)
    R, T, _ = x.shape
    starts = torch.zeros(R, num_out, dtype=torch.int64)
    ends = torch.zeros(R, num_out, dtype=torch.int64)
    counts = torch.zeros(R, dtype=torch.int64)
    for r in range(R):
        L = int(lengths[r])
        first = [0] + [t for t in range(1, L) if scores[r, t] > threshold] if L > 0 else []
        n = min(len(first), num_out)
        counts[r] = n
        starts[r].fill_(L)
        ends[r].fill_(L)
        for i in range(n):
            starts[r, i] = first[i]
            ends[r, i] = first[i + 1] if i + 1 < n else L
    return ref.span_mean(x, starts, ends), starts, ends, counts


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("threshold,num_out", [(1.0, 40), (0.9, 6), (-1.0, 40), (3.0, 3)])
def test_threshold_compress(dtype, threshold, num_out):
    gen = torch.Generator().manual_seed(20)
    x = make_x(gen, (4, 40, 13), dtype)
    lengths = torch.tensor([40, 0, 1, 23])
    values, starts, ends, counts = K.compress(x, lengths, Mode.THRESHOLD, threshold, 1, 0, num_out)
    w_values, w_starts, w_ends, w_counts = reference_threshold_segment_mean(x, lengths, threshold, num_out)
    assert torch.equal(starts, w_starts) and torch.equal(ends, w_ends) and torch.equal(counts, w_counts)
    torch.testing.assert_close(values, w_values, **TOL[dtype])


@pytest.mark.parametrize("mode", list(Mode), ids=lambda m: m.name)
def test_compress_wants_segments_in_segment_modes_only(mode):
    # every mode runs on triton; a segment tensor belongs to the segment modes alone
    x = torch.zeros(2, 4, 3)
    wrong = None if mode.takes_segments else torch.zeros(2, 4, dtype=torch.bool)
    with pytest.raises(ValueError, match="boundaries in modes GIVEN, SEGMENT_IDS and OFFSETS only"):
        K.compress(x, torch.tensor([4, 2]), mode, 3.0, 1, 0, 2, wrong)


# ----------------------------------------------------------------------------- the kernel ops on triton


def test_kernel_ops_eager_and_autograd():
    gen = torch.Generator().manual_seed(30)
    x = make_x(gen, (2, 16, 8), torch.float32).requires_grad_(True)
    starts, ends = random_spans(gen, 2, 16, 4)
    y = torch.ops.lalm_fast.span_mean(x, starts, ends, "triton")
    torch.testing.assert_close(y, ref.span_mean(x.detach(), starts, ends))
    g = torch.randn(y.shape, generator=gen)
    (gx,) = torch.autograd.grad(y, x, g)
    torch.testing.assert_close(gx, ref.span_mean_backward(g, starts, ends, 16))
    lengths = torch.tensor([16, 5])
    scores = torch.ops.lalm_fast.boundary_scores(x.detach(), lengths, "triton")
    torch.testing.assert_close(scores, ref.boundary_scores(x.detach(), lengths))


def test_kernel_ops_fake_tensor_shapes():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        x = torch.empty(3, 10, 7)
        starts = torch.empty(3, 4, dtype=torch.int64)
        lengths = torch.empty(3, dtype=torch.int64)
        assert torch.ops.lalm_fast.span_mean(x, starts, starts, "triton").shape == (3, 4, 7)
        assert torch.ops.lalm_fast.span_mean_backward(x[:, :4], starts, starts, 10, "triton").shape == (3, 10, 7)
        s = torch.ops.lalm_fast.boundary_scores(x, lengths, "triton")
        assert s.shape == (3, 10) and s.dtype == torch.float32
        values, st, en, counts = torch.ops.lalm_fast.compress(x, lengths, int(Mode.THRESHOLD), 0.5, 1, 0, 5, "triton")
        assert values.shape == (3, 5, 7) and st.shape == en.shape == (3, 5) and counts.shape == (3,)


def test_threshold_compress_op_autograd():
    gen = torch.Generator().manual_seed(31)
    x = make_x(gen, (2, 20, 6), torch.float32).requires_grad_(True)
    lengths = torch.tensor([20, 11])
    values, starts, ends, counts = torch.ops.lalm_fast.compress(x, lengths, int(Mode.THRESHOLD), 0.8, 1, 0, 8, "triton")
    w_values, w_starts, w_ends, w_counts = reference_threshold_segment_mean(x.detach(), lengths, 0.8, 8)
    assert torch.equal(starts, w_starts) and torch.equal(ends, w_ends) and torch.equal(counts, w_counts)
    torch.testing.assert_close(values, w_values)
    g = torch.randn(values.shape, generator=gen)
    (gx,) = torch.autograd.grad(values, x, g)
    torch.testing.assert_close(gx, ref.span_mean_backward(g, starts, ends, 20))


def test_torch_compile_fullgraph_of_kernel_ops():
    gen = torch.Generator().manual_seed(32)
    x = make_x(gen, (2, 16, 8), torch.float32).requires_grad_(True)
    starts, ends = random_spans(gen, 2, 16, 4)
    lengths = torch.tensor([16, 9])

    def f(x, starts, ends, lengths):
        means = torch.ops.lalm_fast.span_mean(x, starts, ends, "triton")
        return means, torch.ops.lalm_fast.boundary_scores(x.detach(), lengths, "triton")

    y, s = torch.compile(f, fullgraph=True, backend="aot_eager")(x, starts, ends, lengths)
    torch.testing.assert_close(y, ref.span_mean(x.detach(), starts, ends))
    torch.testing.assert_close(s, ref.boundary_scores(x.detach(), lengths))
    g = torch.randn(y.shape, generator=gen)
    (gx,) = torch.autograd.grad(y, x, g)
    torch.testing.assert_close(gx, ref.span_mean_backward(g, starts, ends, 16))


def test_bench_gpu_dry_run(tmp_path):
    """CI smoke test of lalm_fast.bench.bench_gpu: tiny shapes through the interpreted kernels."""
    from lalm_fast.bench import bench_gpu as bench

    out = tmp_path / "bench.csv"
    rows = bench.main(["--dry-run", "--rates", "2", "--out", str(out)])
    impls = {(r["op"], r["impl"], r["direction"]) for r in rows}
    assert ("uniform_pool", "triton", "fwd") in impls and ("segment_pool", "triton", "both") in impls
    assert ("segment_compress", "triton_fused", "fwd") in impls
    assert out.exists() and out.with_suffix(".png").exists()
    assert out.with_name("bench_summary.md").read_text().count("| 2 |") >= 4
    header = out.read_text().splitlines()[0].split(",")
    assert header == bench.FIELDS and header[:2] == ["suite", "run_id"]  # the shared result format


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_public_ops_through_the_triton_backend(dtype):
    """The whole public path (spans, detection, assembly) on the triton backend."""
    import lalm_fast.ops as ops

    gen = torch.Generator().manual_seed(3)
    x = torch.randn(3, 23, 41, generator=gen).to(dtype)
    lengths = torch.tensor([23, 6, 0])
    boundaries = torch.rand(3, 23, generator=gen) < 0.3
    calls = [
        (ops.uniform_pool, (lengths, 3), {}),
        (ops.downsample, (lengths, 2), {}),
        (ops.segment_pool, (lengths, boundaries), {}),
        (ops.segment_compress, (lengths,), {"rate": 3}),
        (ops.segment_compress, (lengths,), {"prominence": 0.05, "min_len": 2}),
        (ops.segment_compress, (lengths,), {"threshold": 0.9}),  # the fused triton compress
        (ops.segment_compress, (lengths,), {"threshold": 0.9, "max_segments": 4}),
        (ops.segment_compress, (lengths,), {"threshold": 0.9, "min_len": 2}),  # composed path
    ]
    for fn, args, kwargs in calls:
        got = fn(x, *args, backend="triton", **kwargs)
        want = fn(x, *args, backend="torch", **kwargs)
        assert torch.equal(got.lengths, want.lengths) and torch.equal(got.spans, want.spans), fn.__name__
        torch.testing.assert_close(got.values.float(), want.values.float(), atol=2e-3, rtol=2e-3)
    leaf = x.float().requires_grad_()
    ops.uniform_pool(leaf, lengths, 3, backend="triton").values.sum().backward()
    ref_leaf = x.float().requires_grad_()
    ops.uniform_pool(ref_leaf, lengths, 3, backend="torch").values.sum().backward()
    torch.testing.assert_close(leaf.grad, ref_leaf.grad)


def test_segment_compress_threshold_uses_the_fused_kernel(monkeypatch):
    """Threshold mode on the triton backend is one compress call (scores, spans, means), with
    the same tokens and gradient as the reference; so are the other detection modes with
    min_len and max_len."""
    import lalm_fast.kernels as kernels
    import lalm_fast.ops as ops
    from lalm_fast.ops import backends

    assert backends.compresses("triton", Mode.THRESHOLD)
    assert backends.compresses("triton", Mode.THRESHOLD, min_len=2, max_len=5)
    assert backends.compresses("triton", Mode.RATE) and backends.compresses("triton", Mode.PEAK)
    assert all(backends.compresses("triton", mode) for mode in Mode)  # every mode
    calls = []
    real = kernels.compress
    monkeypatch.setattr(kernels, "compress", lambda *a, **k: calls.append(1) or real(*a, **k))
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(2, 30, 7, generator=gen, requires_grad=True)
    lengths = torch.tensor([30, 17])
    got = ops.segment_compress(x, lengths, threshold=0.95, backend="triton")
    assert calls, "the fused kernel was not used"
    want = ops.segment_compress(x, lengths, threshold=0.95, backend="torch")
    assert torch.equal(got.spans, want.spans) and torch.equal(got.lengths, want.lengths)
    torch.testing.assert_close(got.values, want.values)
    g = torch.randn(got.values.shape, generator=gen)
    (gx,) = torch.autograd.grad(got.values, x, g)
    (wx,) = torch.autograd.grad(want.values, x, g)
    torch.testing.assert_close(gx, wx)


# ----------------------------------------------------------------------------- detect_boundaries


def detect_module():
    return importlib.import_module("lalm_fast.kernels.detect_boundaries")  # the package's name is the function


def reference_mask(scores, lengths, mode, param, min_len=1, max_len=0, cu_seqlens=None):
    from lalm_fast.ops._detect import starts_from_scores
    from lalm_fast.ops._inputs import Grid

    lengths = cu_seqlens.diff() if cu_seqlens is not None else lengths
    grid = Grid(scores[:, :, None], lengths, cu_seqlens is not None, cu_seqlens)
    return starts_from_scores(grid, scores, Mode(mode), param, min_len, max_len)


def random_scores(gen, rows, frames, dtype, ties=False):
    scores = torch.rand(rows, frames, generator=gen, dtype=torch.float64) * 2
    if ties:  # a few distinct values: plateaus in peak mode, ties in rate and threshold mode
        scores = (scores * 2).round() / 2
    return scores.to(dtype)


DETECTION_CASES = [  # (mode, param, min_len, max_len)
    (Mode.PEAK, 0.0, 1, 0), (Mode.PEAK, 0.2, 3, 0), (Mode.PEAK, 0.05, 2, 5),
    (Mode.THRESHOLD, 1.0, 1, 0), (Mode.THRESHOLD, 0.5, 3, 7),
    (Mode.RATE, 3.0, 1, 0), (Mode.RATE, 2.5, 2, 0), (Mode.RATE, 1.0, 1, 0), (Mode.RATE, 4.0, 3, 6),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("ties", [False, True])
def test_detect_boundaries_equals_the_reference(dtype, ties):
    """Random and tied scores, odd T, empty and one-frame rows, strided rows, every mode with
    the rules."""
    gen = torch.Generator().manual_seed(40 + ties)
    scores = random_scores(gen, 5, 45, dtype, ties)[:, :37]  # row stride 45
    lengths = torch.tensor([37, 0, 1, 2, 23])
    for mode, param, min_len, max_len in DETECTION_CASES:
        got = K.detect_boundaries(scores, lengths, mode, param, min_len, max_len)
        want = reference_mask(scores, lengths, mode, param, min_len, max_len)
        assert got.dtype == torch.bool and torch.equal(got, want), (mode, param, min_len, max_len)


def test_detect_boundaries_peaks_are_scipys():
    """Peak mode on plateaus and edges equals scipy.signal.find_peaks on the normalised scores."""
    signal = pytest.importorskip("scipy.signal")
    scores = torch.tensor([[0.0, 0.1, 0.9, 0.2, 0.5, 0.5, 0.5, 0.1, 0.3, 0.3, 0.2, 0.7, 0.7, 0.95],
                           [0.0, 0.9, 0.1, 0.3, 0.2, 0.95, 0.95, 0.2, 0.8, 0.8, 0.8, 0.8, 0.1, 0.4]])
    lengths = torch.tensor([14, 14])
    for prominence in (0.0, 0.3, 0.6):
        got = K.detect_boundaries(scores, lengths, Mode.PEAK, prominence, 1, 0)
        for row in range(2):
            normed = scores[row, 1:] - scores[row, 1:].min()
            normed = normed / normed.max()
            peaks, _ = signal.find_peaks(normed.numpy(), prominence=prominence)
            assert got[row].nonzero().flatten().tolist() == [0] + (peaks + 1).tolist(), (row, prominence)


def test_rate_mode_ties_nan_and_signed_zero():
    """Exactly ceil(L / rate) starts; ties go to the lowest frame; NaN ranks last (the
    contract's NaN rule) and -0 equals +0, as torch's sort has them."""
    nan = float("nan")
    scores = torch.tensor([[0.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5],
                           [0.0, 0.2, nan, 0.9, -0.0, 0.0, 0.0, -0.0, nan, 0.1],
                           [0.0, -0.0, 0.0, -0.0, 0.0, 0.0, -0.0, 0.0, 0.0, 0.0]])
    lengths = torch.tensor([10, 10, 10])
    for rate in (2.0, 3.0, 10 / 7):
        got = K.detect_boundaries(scores, lengths, Mode.RATE, rate, 1, 0)
        assert torch.equal(got, reference_mask(scores, lengths, Mode.RATE, rate)), rate
        assert got.sum(1).tolist() == [math.ceil(10 / rate)] * 3
    assert K.detect_boundaries(scores, lengths, Mode.RATE, 3.0, 1, 0)[0].nonzero().flatten().tolist() == [0, 1, 2, 3]


def test_peak_mode_with_nan_scores_follows_the_reference():
    """A NaN score is left out of the normalisation range and becomes the lowest score: never a
    peak, and a valley its neighbours can peak from (frames 2 and 4 here)."""
    scores = torch.tensor([[0.0, 0.1, 0.9, float("nan"), 0.5, 0.1], [0.0, 0.1, 0.9, 0.2, 0.5, 0.1]])
    got = K.detect_boundaries(scores, torch.tensor([6, 6]), Mode.PEAK, 0.0, 1, 0)
    assert torch.equal(got, reference_mask(scores, torch.tensor([6, 6]), Mode.PEAK, 0.0))
    assert got[0].nonzero().flatten().tolist() == [0, 2, 4]


def test_detect_boundaries_packed():
    """Packed samples (cu_seqlens), empty ones and frames past the last sample included."""
    gen = torch.Generator().manual_seed(41)
    cu = torch.tensor([0, 13, 13, 14, 31, 40])
    scores = random_scores(gen, 1, 44, torch.float32, ties=True)
    for mode, param, min_len, max_len in DETECTION_CASES:
        got = K.detect_boundaries(scores, cu.diff(), mode, param, min_len, max_len, cu, 17)
        want = reference_mask(scores, None, mode, param, min_len, max_len, cu_seqlens=cu)
        assert torch.equal(got, want), (mode, param, min_len, max_len)


@pytest.mark.parametrize("num_out", [1, 4, 40])
def test_detect_spans_equal_the_reference_spans(num_out):
    from lalm_fast.ops import _spans
    from lalm_fast.ops._inputs import Grid

    gen = torch.Generator().manual_seed(42)
    scores = random_scores(gen, 4, 29, torch.float32)
    lengths = torch.tensor([29, 0, 1, 17])
    grid = Grid(scores[:, :, None], lengths, False, None)
    for mode, param, min_len, max_len in DETECTION_CASES[::2]:
        starts, ends, counts = detect_module().detect_spans(scores, lengths, mode, param, min_len, max_len, num_out)
        mask = reference_mask(scores, lengths, mode, param, min_len, max_len)
        want_starts, want_ends = _spans.spans_from_starts(grid, mask, num_out)
        assert torch.equal(starts, want_starts) and torch.equal(ends, want_ends), mode
        assert torch.equal(counts, _spans.segment_counts(grid, mask, num_out)), mode


def test_detect_boundaries_past_the_frame_limit_runs_the_reference(monkeypatch):
    module = detect_module()
    monkeypatch.setattr(module, "MAX_FRAMES", 16)
    gen = torch.Generator().manual_seed(43)
    scores = random_scores(gen, 2, 20, torch.float32)
    lengths = torch.tensor([20, 9])
    launched = []
    monkeypatch.setattr(module, "_launch", lambda *a, **k: launched.append(1))
    for mode, param, min_len, max_len in DETECTION_CASES[::3]:
        got = K.detect_boundaries(scores, lengths, mode, param, min_len, max_len)
        assert torch.equal(got, reference_mask(scores, lengths, mode, param, min_len, max_len))
    assert not launched


def test_detect_boundaries_op_on_triton_and_its_fake():
    from torch._subclasses.fake_tensor import FakeTensorMode

    scores = torch.rand(2, 9)
    lengths = torch.tensor([9, 4])
    got = torch.ops.lalm_fast.detect_boundaries(scores, lengths, int(Mode.RATE), 2.0, 1, 0, "triton")
    assert torch.equal(got, reference_mask(scores, lengths, Mode.RATE, 2.0))
    cu = torch.tensor([0, 5, 9])
    packed = torch.ops.lalm_fast.detect_boundaries(scores[:1], cu.diff(), int(Mode.PEAK), 0.0, 1, 0, "triton", cu, 5)
    assert torch.equal(packed, reference_mask(scores[:1], None, Mode.PEAK, 0.0, cu_seqlens=cu))
    with FakeTensorMode():
        fake = torch.ops.lalm_fast.detect_boundaries(torch.empty(1, 9), torch.empty(2, dtype=torch.int64), 0, 0.1,
                                                     1, 0, "triton", torch.empty(3, dtype=torch.int64), 5)
        assert fake.shape == (1, 9) and fake.dtype == torch.bool


def test_public_detection_and_compress_on_packed_input():
    import lalm_fast.ops as ops

    gen = torch.Generator().manual_seed(44)
    x = torch.randn(30, 6, generator=gen).round()
    cu = torch.tensor([0, 11, 11, 26])
    for kwargs in ({"prominence": 0.1, "min_len": 2}, {"rate": 3, "min_len": 2}, {"threshold": 0.6, "max_len": 4}):
        got = ops.segment_compress(x, cu_seqlens=cu, max_seqlen=15, backend="triton", **kwargs)
        want = ops.segment_compress(x, cu_seqlens=cu, max_seqlen=15, backend="torch", **kwargs)
        assert torch.equal(got.spans, want.spans) and torch.equal(got.cu_seqlens, want.cu_seqlens), kwargs
        torch.testing.assert_close(got.values, want.values)
