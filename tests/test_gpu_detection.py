"""GPU tests of the CUDA fallback's detection and compress (``backend="cuda"``).

The per-row decisions are ``csrc/detection.h``, which the CPU tests check through the C++ CPU
kernels; these tests check what only a GPU run can: the kernels' launch and scratch plumbing.
Masks and spans equal the torch detection's bit for bit on the same scores, and the C++ CPU
kernel's (the same code); values equal the reference to rounding; the public ops on cuda never
run the torch detection or span building; CUDA graph capture; bad input raises. Skip cleanly
without a CUDA device (marker ``gpu``).
"""

from __future__ import annotations

import math

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

import lalm_fast.ops as ops  # noqa: E402
from lalm_fast.ops import _detect, _spans, backends  # noqa: E402
from lalm_fast.ops import reference as ref  # noqa: E402
from lalm_fast.ops._inputs import Grid  # noqa: E402
from lalm_fast.ops.modes import Mode  # noqa: E402

DEVICE = "cuda"
BACKEND = "cuda"
TOL = {
    torch.float32: dict(atol=1e-5, rtol=1e-5),
    torch.float16: dict(atol=2e-3, rtol=2e-3),
    torch.bfloat16: dict(atol=1.6e-2, rtol=1.6e-2),
    torch.float64: dict(atol=1e-12, rtol=1e-12),
}
DETECTION_CASES = [  # (mode, param, min_len, max_len)
    (Mode.PEAK, 0.05, 1, 0), (Mode.PEAK, 0.0, 3, 0), (Mode.PEAK, 0.1, 2, 9),
    (Mode.THRESHOLD, 0.5, 1, 0), (Mode.THRESHOLD, 0.3, 3, 20), (Mode.THRESHOLD, 0.0, 1, 7),
    (Mode.RATE, 3.0, 1, 0), (Mode.RATE, 2.5, 2, 0), (Mode.RATE, 1.0, 1, 0), (Mode.RATE, 7.0, 4, 0),
]


def case_id(case):
    mode, param, min_len, max_len = case
    return f"{mode.name.lower()}{param}-min{min_len}-max{max_len}"


@pytest.fixture(scope="module")
def cuda_kernels():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    if not backends.is_available(BACKEND, DEVICE):
        pytest.skip(f"{BACKEND} backend unavailable: {backends.available()[BACKEND]}")
    return backends.kernels(BACKEND)


@pytest.fixture(scope="module")
def cpu_kernels():
    if not backends.is_available("cpu", "cpu"):
        pytest.skip(f"cpu backend unavailable: {backends.available()['cpu']}")
    return backends.kernels("cpu")


def reference_mask(scores, lengths, mode, param, min_len, max_len):
    grid = Grid(scores[:, :, None], lengths, False, None)
    return _detect.starts_from_scores(grid, scores, Mode(mode), param, min_len, max_len)


def score_rows(rows, frames, dtype, ties, special, seed):
    """Raw scores as boundary_scores gives them (0 at frame 0 and in padding); lengths with
    T, 1 and 0 among them; with `special`, NaN, +-0, Inf and exact ties in valid frames."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, frames, 16, generator=gen, dtype=torch.float64)
    if ties:
        x = x.round()
    lengths = torch.randint(0, frames + 1, (rows,), generator=gen)
    lengths[:3] = torch.tensor([frames, 1, 0])
    scores = ref.boundary_scores(x, lengths).to(dtype)
    if special:
        picks = torch.randint(1, frames, (rows, 12), generator=gen)
        values = torch.tensor([math.nan, -0.0, 0.0, math.inf, 1.0, 1.0], dtype=dtype)
        scores.scatter_(1, picks, values[torch.randint(0, 6, (rows, 12), generator=gen)])
        valid = torch.arange(frames)[None, :] < lengths[:, None]
        scores = torch.where(valid & (torch.arange(frames)[None, :] > 0), scores, 0.0)
    return scores.to(DEVICE), lengths.to(DEVICE)


@pytest.mark.parametrize("frames", [1500, 5000])
@pytest.mark.parametrize("score_dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("ties, special", [(False, False), (True, False), (False, True)],
                         ids=["random", "ties", "nan-inf-zeros"])
def test_cuda_detection_equals_the_torch_detection_and_the_cpu_kernel(cuda_kernels, cpu_kernels, frames, score_dtype,
                                                                       ties, special):
    """32 padded rows (one GPU thread each), no frame limit (5000 > triton's 4096)."""
    scores, lengths = score_rows(32, frames, score_dtype, ties, special, seed=frames + 2 * ties + special)
    for mode, param, min_len, max_len in DETECTION_CASES:
        got = cuda_kernels.detect_boundaries(scores, lengths, int(mode), param, min_len, max_len)
        assert got.dtype == torch.bool and got.device == scores.device and got.shape == scores.shape
        want = reference_mask(scores, lengths, mode, param, min_len, max_len)
        assert torch.equal(got, want), (mode, param, min_len, max_len)
        on_cpu = cpu_kernels.detect_boundaries(scores.cpu(), lengths.cpu(), int(mode), param, min_len, max_len)
        assert torch.equal(got.cpu(), on_cpu), (mode, param, min_len, max_len)
        if mode == Mode.RATE:  # exactly ceil(L / rate) segments
            assert torch.equal(got.sum(1), torch.ceil(lengths.double() / param).long())


def test_cuda_detection_of_empty_and_odd_shapes(cuda_kernels):
    for rows, frames in [(0, 5), (3, 0), (1, 1), (2, 2), (5, 3)]:
        scores = torch.rand(rows, frames, device=DEVICE)
        lengths = torch.randint(0, frames + 1, (rows,), device=DEVICE)
        for mode, param, min_len, max_len in DETECTION_CASES:
            got = cuda_kernels.detect_boundaries(scores, lengths, int(mode), param, min_len, max_len)
            assert got.shape == (rows, frames)
            assert torch.equal(got, reference_mask(scores, lengths, mode, param, min_len, max_len))
    # a non-contiguous score tensor is read as its values
    scores, lengths = score_rows(4, 200, torch.float32, False, False, seed=1)
    wide = torch.zeros(4, 400, device=DEVICE)
    wide[:, ::2] = scores
    got = cuda_kernels.detect_boundaries(wide[:, ::2], lengths, int(Mode.RATE), 3.0, 2, 0)
    assert torch.equal(got, reference_mask(scores, lengths, Mode.RATE, 3.0, 2, 0))


def features(dtype, layout, seed=0):
    """x [6, 700, 96] with lengths 700, 0, 1, 333, 699, 64: contiguous, sliced along time
    (stride_t = 2 D) or with strided features (stride(2) = 2, copied by the binding)."""
    gen = torch.Generator().manual_seed(seed)
    big = torch.randn(6, 1400, 192, generator=gen).to(dtype).to(DEVICE)
    x = {"contiguous": big[:, :700, :96].contiguous(), "sliced-time": big[:, ::2, :96],
         "strided-features": big[:, :700, ::2]}[layout]
    return x, torch.tensor([700, 0, 1, 333, 699, 64], device=DEVICE)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64], ids=str)
@pytest.mark.parametrize("layout", ["contiguous", "sliced-time", "strided-features"])
@pytest.mark.parametrize("case", DETECTION_CASES, ids=case_id)
def test_cuda_compress_detection_modes_equal_the_torch_spans(cuda_kernels, dtype, layout, case):
    """Scores, detection, spans and means: the spans equal the torch detection and span
    building on the same scores (this kernel's own boundary_scores), with the surplus merged
    when num_out is short; the values equal the reference means of those spans."""
    mode, param, min_len, max_len = case
    x, lengths = features(dtype, layout)
    grid = Grid(x, lengths, False, None)
    scores = cuda_kernels.boundary_scores(x, lengths)
    mask = reference_mask(scores, lengths, mode, param, min_len, max_len)
    for num_out in (700, 40, 1):
        values, starts, ends, counts = cuda_kernels.compress(x, lengths, int(mode), param, min_len, max_len, num_out)
        want_starts, want_ends = _spans.spans_from_starts(grid, mask, num_out)
        assert torch.equal(starts, want_starts) and torch.equal(ends, want_ends), num_out
        assert torch.equal(counts, _spans.segment_counts(grid, mask, num_out)), num_out
        assert values.shape == (6, num_out, 96) and values.dtype == dtype
        torch.testing.assert_close(values, ref.span_mean(x, starts, ends), **TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64], ids=str)
@pytest.mark.parametrize("layout", ["contiguous", "sliced-time"])
def test_cuda_compress_windows_and_given_mask(cuda_kernels, dtype, layout):
    x, lengths = features(dtype, layout, seed=1)
    grid = Grid(x, lengths, False, None)
    T = x.shape[1]
    for mode, k in [(Mode.UNIFORM, 4), (Mode.DOWNSAMPLE, 3), (Mode.UNIFORM, 1), (Mode.UNIFORM, T),
                    (Mode.DOWNSAMPLE, 10**9)]:
        capped = min(k, T)
        num_out = math.ceil(T / capped)
        values, starts, ends, counts = cuda_kernels.compress(x, lengths, int(mode), float(k), 1, 0, num_out)
        want_starts, want_ends = _spans.every_kth_spans(lengths, T, capped, mode == Mode.DOWNSAMPLE)
        assert torch.equal(starts, want_starts) and torch.equal(ends, want_ends), (mode, k)
        assert torch.equal(counts, ((lengths + capped - 1) // capped).clamp(max=num_out)), (mode, k)
        torch.testing.assert_close(values, ref.span_mean(x, starts, ends), **TOL[dtype])
    gen = torch.Generator().manual_seed(2)
    wide = (torch.rand(6, 2 * T, generator=gen) < 0.3).to(DEVICE)
    for boundaries in (wide[:, :T].contiguous(), wide[:, ::2]):  # contiguous and strided masks
        is_start = _spans.force_sample_starts(grid, boundaries)
        for num_out in (T, 20, 1):
            values, starts, ends, counts = cuda_kernels.compress(x, lengths, int(Mode.GIVEN), 1.0, 1, 0, num_out,
                                                                 boundaries)
            want_starts, want_ends = _spans.spans_from_starts(grid, is_start, num_out)
            assert torch.equal(starts, want_starts) and torch.equal(ends, want_ends), num_out
            assert torch.equal(counts, _spans.segment_counts(grid, is_start, num_out)), num_out
            torch.testing.assert_close(values, ref.span_mean(x, starts, ends), **TOL[dtype])


def test_cuda_compress_empty_and_tiny_shapes_equal_the_cpu_kernel(cuda_kernels, cpu_kernels):
    """Empty batches, T = 0, D = 0 (every score exactly 1), one-frame rows, num_out 0: the same
    spans and counts as the C++ CPU kernel, which runs the same row code."""
    for B, T, D in [(0, 5, 4), (3, 0, 4), (2, 5, 0), (4, 1, 3), (3, 2, 1)]:
        x = torch.randn(B, T, D, device=DEVICE).round()
        lengths = torch.arange(B, device=DEVICE) % (T + 1)
        for mode, param in [(Mode.RATE, 2.0), (Mode.PEAK, 0.0), (Mode.THRESHOLD, 0.5), (Mode.UNIFORM, 2.0),
                            (Mode.DOWNSAMPLE, 1.0)]:
            for num_out in (0, 1, 3):
                got = cuda_kernels.compress(x, lengths, int(mode), param, 1, 0, num_out)
                want = cpu_kernels.compress(x.cpu(), lengths.cpu(), int(mode), param, 1, 0, num_out)
                assert got[0].shape == (B, num_out, D) and got[1].shape == got[2].shape == (B, num_out)
                for a, b in zip(got[1:], want[1:]):
                    assert torch.equal(a.cpu(), b), (B, T, D, mode, num_out)
                torch.testing.assert_close(got[0].cpu(), want[0])


def exact_features(seed=3):
    """D = 1 integer frames: every score is exactly 0, 1 or 2 on every backend, so the cuda
    and torch decisions must agree exactly (ties everywhere)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(-2, 3, (5, 300, 1), generator=gen).float().to(DEVICE)
    return x, torch.tensor([300, 0, 1, 177, 299], device=DEVICE)


PUBLIC_KWARGS = [{"prominence": 0.05, "min_len": 2}, {"rate": 3}, {"rate": 4, "min_len": 3},
                 {"threshold": 0.5, "max_len": 12}, {"prominence": 0.0}, {"threshold": 1.5, "min_len": 3}]


@pytest.mark.parametrize("kwargs", PUBLIC_KWARGS, ids=str)
def test_public_ops_on_cuda_never_run_the_torch_detection(cuda_kernels, monkeypatch, kwargs):
    """backend="cuda": detection, spans and means in the C++ kernels; the torch detection and
    span building are never called, and the results equal the torch backend's."""
    x, lengths = exact_features()
    boundaries = torch.rand(x.shape[:2], generator=torch.Generator().manual_seed(4)).to(DEVICE) < 0.3
    want = {
        "mask": ops.detect_boundaries(x, lengths, backend="torch", **kwargs),
        "tokens": ops.segment_compress(x, lengths, backend="torch", **kwargs),
        "uniform": ops.uniform_pool(x, lengths, 4, backend="torch"),
        "downsample": ops.downsample(x, lengths, 3, backend="torch"),
        "given": ops.segment_pool(x, lengths, boundaries, backend="torch"),
    }

    def torch_path(*args, **kw):
        raise AssertionError("backend='cuda' ran the torch detection or span building")

    for name in ("starts_from_scores", "rate_starts", "peak_starts", "suppress_close"):
        monkeypatch.setattr(_detect, name, torch_path)
    for name in ("spans_from_starts", "every_kth_spans", "segment_counts"):
        monkeypatch.setattr(_spans, name, torch_path)
    got = {
        "mask": ops.detect_boundaries(x, lengths, backend=BACKEND, **kwargs),
        "tokens": ops.segment_compress(x, lengths, backend=BACKEND, **kwargs),
        "uniform": ops.uniform_pool(x, lengths, 4, backend=BACKEND),
        "downsample": ops.downsample(x, lengths, 3, backend=BACKEND),
        "given": ops.segment_pool(x, lengths, boundaries, backend=BACKEND),
    }
    assert torch.equal(got["mask"], want["mask"])
    for name in ("tokens", "uniform", "downsample", "given"):
        assert torch.equal(got[name].spans, want[name].spans), name
        assert torch.equal(got[name].lengths, want[name].lengths), name
        torch.testing.assert_close(got[name].values, want[name].values, **TOL[torch.float32])


def sorted_ids(rows, frames, seed):
    """Ids [rows, frames] non-decreasing from 0 with repeats and gaps; garbage in no frame."""
    gen = torch.Generator().manual_seed(seed)
    steps = torch.multinomial(torch.tensor([4.0, 4.0, 1.0, 1.0]), rows * frames, replacement=True, generator=gen)
    steps = torch.tensor([0, 1, 2, 7])[steps].view(rows, frames)
    return steps.cumsum(1) - steps[:, :1]


def id_and_offset_cases(frames, seed):
    """(name, mode, segments on the device, num_out): sorted ids of several integer types and
    layouts, unsorted and negative ids (unchecked on cuda: the torch path's spans all the
    same), sorted / decreasing / past-T offsets, and negative offsets (read as 0)."""
    gen = torch.Generator().manual_seed(seed)
    ids = sorted_ids(6, frames, seed)
    wide = torch.zeros(6, 2 * frames, dtype=torch.long)
    wide[:, ::2] = ids
    random_ids = torch.randint(-3, 60, (6, frames), generator=gen)
    offsets = torch.randint(0, frames + 20, (6, 41), generator=gen).sort(1).values
    shuffled = torch.randint(0, frames + 20, (6, 41), generator=gen)
    cases = []
    for num_out in (frames, 40, 1):
        cases += [("ids int64", Mode.SEGMENT_IDS, ids, num_out),
                  ("ids int32", Mode.SEGMENT_IDS, ids.int(), num_out),
                  ("ids int16 strided", Mode.SEGMENT_IDS, wide[:, ::2].short(), num_out),
                  ("ids uint8", Mode.SEGMENT_IDS, ids.clamp(max=255).to(torch.uint8), num_out),
                  ("ids transposed", Mode.SEGMENT_IDS, ids.t().contiguous().t(), num_out),
                  ("ids unsorted", Mode.SEGMENT_IDS, random_ids, num_out)]
    cases += [("offsets", Mode.OFFSETS, offsets, 40),
              ("offsets int32 strided", Mode.OFFSETS, offsets.int()[:, :21], 20),
              ("offsets decreasing", Mode.OFFSETS, shuffled, 40),
              ("offsets negative", Mode.OFFSETS, shuffled - 5, 40)]
    return [(name, mode, segments.to(DEVICE), num_out) for name, mode, segments, num_out in cases]


def torch_path_spans(x, lengths, mode, segments, num_out):
    """The spans the ops built with torch ops for ids / offsets (the torch backend's path);
    negative offsets, which would read before the row there, as the kernels read them: 0."""
    grid = Grid(x, lengths, False, None)
    if mode == Mode.SEGMENT_IDS:
        return ops._segment_id_spans(grid, segments, num_out)
    return ops._offset_spans(grid, segments.clamp(min=0))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64], ids=str)
@pytest.mark.parametrize("layout", ["contiguous", "sliced-time", "strided-features"])
def test_cuda_compress_ids_and_offsets_equal_the_torch_path(cuda_kernels, cpu_kernels, dtype, layout):
    """Spans and counts of segment ids and offsets: the torch path's exactly (unsorted ids
    included, values unchecked on cuda), and the C++ CPU kernel's for the input it accepts;
    values equal the reference means of those spans."""
    x, lengths = features(dtype, layout, seed=10)
    for name, mode, segments, num_out in id_and_offset_cases(x.shape[1], seed=11):
        values, starts, ends, counts = cuda_kernels.compress(x, lengths, int(mode), 1.0, 1, 0, num_out, segments)
        want_starts, want_ends, want_counts = torch_path_spans(x, lengths, mode, segments, num_out)
        assert torch.equal(starts, want_starts) and torch.equal(ends, want_ends), (name, num_out)
        assert torch.equal(counts, want_counts), (name, num_out)
        assert bool((starts >= 0).all()) and bool((ends <= lengths[:, None]).all()), (name, num_out)
        torch.testing.assert_close(values, ref.span_mean(x, starts, ends), **TOL[dtype])
        if "unsorted" in name or "decreasing" in name or "negative" in name:
            continue  # the CPU kernel rejects these values
        on_cpu = cpu_kernels.compress(x.cpu().contiguous(), lengths.cpu(), int(mode), 1.0, 1, 0, num_out,
                                      segments.cpu())
        for a, b in zip((starts, ends, counts), on_cpu[1:]):
            assert torch.equal(a.cpu(), b), (name, num_out)


def test_cuda_compress_ids_and_offsets_of_empty_and_tiny_shapes(cuda_kernels, cpu_kernels):
    """Empty batches, T = 0 (ids [B, 0]), D = 0, one-frame rows: the C++ CPU kernel's spans."""
    for B, T, D in [(0, 5, 4), (3, 0, 4), (2, 5, 0), (4, 1, 3)]:
        x = torch.randn(B, T, D, device=DEVICE)
        lengths = torch.arange(B, device=DEVICE) % (T + 1)
        for num_out in (0, 1, 3):
            ids = torch.arange(T, device=DEVICE).expand(B, T)
            offsets = torch.arange(num_out + 1, device=DEVICE).expand(B, num_out + 1)
            for mode, segments in ((Mode.SEGMENT_IDS, ids), (Mode.OFFSETS, offsets)):
                got = cuda_kernels.compress(x, lengths, int(mode), 1.0, 1, 0, num_out, segments)
                want = cpu_kernels.compress(x.cpu(), lengths.cpu(), int(mode), 1.0, 1, 0, num_out, segments.cpu())
                for a, b in zip(got, want):
                    assert torch.equal(a.cpu(), b), (B, T, D, mode, num_out)


@pytest.mark.parametrize("segments", ["ids", "offsets"])
def test_public_segment_pool_on_cuda_builds_no_torch_spans(cuda_kernels, monkeypatch, segments):
    """segment_pool(segment_ids= / offsets=) with backend="cuda": spans in the C++ compress,
    never the torch span builders; results and gradients equal the torch backend's."""
    x, lengths = exact_features(seed=12)
    ids = sorted_ids(x.shape[0], x.shape[1], seed=13).to(DEVICE)
    offsets = torch.randint(0, 320, (x.shape[0], 31), generator=torch.Generator().manual_seed(14)).sort(1).values
    kwargs = dict(segment_ids=ids, max_segments=64) if segments == "ids" else dict(offsets=offsets.to(DEVICE))
    outputs, grads = {}, {}
    for backend in ("torch", BACKEND):
        if backend == BACKEND:
            def torch_path(*args, **kw):
                raise AssertionError("backend='cuda' built ids / offsets spans with torch ops")

            monkeypatch.setattr(ops, "_segment_id_spans", torch_path)
            monkeypatch.setattr(ops, "_offset_spans", torch_path)
            for name in ("spans_from_starts", "segment_counts"):
                monkeypatch.setattr(_spans, name, torch_path)
        leaf = x.clone().requires_grad_(True)
        out = ops.segment_pool(leaf, lengths, backend=backend, **kwargs)
        (out.values * torch.arange(out.values.numel(), device=DEVICE).view_as(out.values)).sum().backward()
        outputs[backend], grads[backend] = out, leaf.grad
    got, want = outputs[BACKEND], outputs["torch"]
    assert torch.equal(got.spans, want.spans) and torch.equal(got.lengths, want.lengths)
    torch.testing.assert_close(got.values, want.values, **TOL[torch.float32])
    torch.testing.assert_close(grads[BACKEND], grads["torch"])


def test_cuda_compress_gradient_equals_the_torch_backend(cuda_kernels):
    x, lengths = exact_features(seed=5)
    grads = []
    for backend in (BACKEND, "torch"):
        leaf = x.clone().requires_grad_(True)
        out = ops.segment_compress(leaf, lengths, rate=3, min_len=2, backend=backend)
        (out.values * torch.arange(out.values.numel(), device=DEVICE).view_as(out.values)).sum().backward()
        grads.append(leaf.grad)
    torch.testing.assert_close(grads[0], grads[1])


def test_cuda_detection_and_compress_are_deterministic(cuda_kernels):
    x, lengths = features(torch.bfloat16, "contiguous", seed=6)
    runs = [cuda_kernels.compress(x, lengths, int(Mode.RATE), 3.0, 2, 0, 240) for _ in range(3)]
    for run in runs[1:]:
        assert all(torch.equal(a, b) for a, b in zip(runs[0], run))


def test_cuda_detection_and_compress_under_a_cuda_graph(cuda_kernels):
    scores, lengths = score_rows(32, 1500, torch.float32, False, False, seed=7)
    x, x_lengths = features(torch.float32, "contiguous", seed=8)

    def step():
        masks = [cuda_kernels.detect_boundaries(scores, lengths, int(m), p, a, b) for m, p, a, b in DETECTION_CASES]
        tokens = [cuda_kernels.compress(x, x_lengths, int(m), p, a, b, 240) for m, p, a, b in DETECTION_CASES]
        return masks, tokens

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        step()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        masks, tokens = step()
    scores.copy_(torch.rand_like(scores))
    x.copy_(torch.randn_like(x))
    graph.replay()
    torch.cuda.synchronize()
    grid = Grid(x, x_lengths, False, None)
    x_scores = cuda_kernels.boundary_scores(x, x_lengths)
    for mask, (values, starts, ends, counts), case in zip(masks, tokens, DETECTION_CASES):
        assert torch.equal(mask, reference_mask(scores, lengths, *case)), case
        want_mask = reference_mask(x_scores, x_lengths, *case)
        want_starts, want_ends = _spans.spans_from_starts(grid, want_mask, 240)
        assert torch.equal(starts, want_starts) and torch.equal(ends, want_ends), case
        assert torch.equal(counts, _spans.segment_counts(grid, want_mask, 240)), case
        torch.testing.assert_close(values, ref.span_mean(x, starts, ends), **TOL[torch.float32])


def test_cuda_segment_compress_under_torch_compile(cuda_kernels):
    x, lengths = features(torch.float16, "contiguous", seed=9)

    def f(x, lengths):
        return (ops.segment_compress(x, lengths, rate=3, min_len=2, backend=BACKEND).values,
                ops.detect_boundaries(x, lengths, prominence=0.05, backend=BACKEND))

    torch._dynamo.reset()
    got = torch.compile(f, fullgraph=True)(x, lengths)
    want = f(x, lengths)
    torch.testing.assert_close(got[0], want[0], **TOL[torch.float16])
    assert torch.equal(got[1], want[1])


def test_cuda_kernels_reject_bad_input(cuda_kernels):
    scores = torch.rand(2, 6, device=DEVICE)
    lengths = torch.tensor([6, 3], device=DEVICE)
    x = torch.randn(2, 6, 4, device=DEVICE)
    ids = torch.tensor([[0, 0, 1, 1, 2, 2]] * 2, device=DEVICE)
    bad = [
        (lambda: cuda_kernels.detect_boundaries(scores.half(), lengths, 1, 0.5, 1, 0), "scores must be float32"),
        (lambda: cuda_kernels.detect_boundaries(scores.cpu(), lengths, 1, 0.5, 1, 0), "scores must be a CUDA"),
        (lambda: cuda_kernels.detect_boundaries(scores[0], lengths, 1, 0.5, 1, 0), "scores must be [R, T]"),
        (lambda: cuda_kernels.detect_boundaries(scores, lengths.cpu(), 1, 0.5, 1, 0), "lengths must be a CUDA"),
        (lambda: cuda_kernels.detect_boundaries(scores, lengths.int(), 1, 0.5, 1, 0), "lengths must be int64"),
        (lambda: cuda_kernels.detect_boundaries(scores, lengths[:1], 1, 0.5, 1, 0), "lengths must have 2 rows"),
        (lambda: cuda_kernels.detect_boundaries(scores, lengths, 3, 2.0, 1, 0), "mode must be 0 (peak)"),
        (lambda: cuda_kernels.detect_boundaries(scores, lengths, 2, 0.5, 1, 0), "rate / k must be >= 1"),
        (lambda: cuda_kernels.detect_boundaries(scores, lengths, 2, math.nan, 1, 0), "rate / k must be >= 1"),
        (lambda: cuda_kernels.detect_boundaries(scores, lengths, 1, 0.5, 0, 0), "min_len must be >= 1"),
        (lambda: cuda_kernels.detect_boundaries(scores, lengths, 1, 0.5, 1, -1), "max_len must be >= 0"),
        (lambda: cuda_kernels.compress(x, lengths, 9, 1.0, 1, 0, 3), "mode must be"),
        (lambda: cuda_kernels.compress(x, lengths, 3, 2.5, 1, 0, 3), "k must be an integer"),
        (lambda: cuda_kernels.compress(x, lengths, 3, 2.0, 1, 0, -1), "num_out must be >= 0"),
        (lambda: cuda_kernels.compress(x.long(), lengths, 3, 2.0, 1, 0, 3), "x must be float32"),
        (lambda: cuda_kernels.compress(x, lengths, 5, 1.0, 1, 0, 3), "boundaries are needed by modes 5"),
        (lambda: cuda_kernels.compress(x, lengths, 6, 1.0, 1, 0, 3), "boundaries are needed by modes 5"),
        (lambda: cuda_kernels.compress(x, lengths, 7, 1.0, 1, 0, 3, ids.float()), "offsets must be an integer"),
        (lambda: cuda_kernels.compress(x, lengths, 6, 1.0, 1, 0, 3, ids > 0), "segment_ids must be an integer"),
        (lambda: cuda_kernels.compress(x, lengths, 6, 1.0, 1, 0, 3, ids[:, :5]), "segment_ids must have shape"),
        (lambda: cuda_kernels.compress(x, lengths, 6, 1.0, 1, 0, 3, ids.cpu()), "must be a CUDA tensor"),
        (lambda: cuda_kernels.compress(x, lengths, 7, 1.0, 1, 0, 3, ids[:, :3]),
         "offsets must have shape [B, num_out + 1], B = 2, num_out = 3, got [2, 3]"),
        (lambda: cuda_kernels.compress(x, lengths, 1, 0.5, 1, 0, 3, scores > 0.5), "boundaries are needed"),
        (lambda: cuda_kernels.compress(x, lengths, 5, 1.0, 1, 0, 3, torch.ones(2, 5, dtype=torch.bool,
                                                                               device=DEVICE)),
         "boundaries must be a bool [B, T]"),
        (lambda: cuda_kernels.compress(x, lengths, 5, 1.0, 1, 0, 3, torch.ones(2, 6, dtype=torch.bool)),
         "boundaries must be a CUDA"),
    ]
    for call, words in bad:
        with pytest.raises((RuntimeError, TypeError, ValueError)) as info:
            call()
        assert words in str(info.value), (words, str(info.value))
    torch.cuda.synchronize()  # nothing bad was launched: the context is still healthy
