"""The C++ CPU kernels called directly (``lalm_fast._C.cpu``), fed random spans, lengths,
strides and argument values: results equal the torch reference (float64 where it matters)
and the torch detection bit for bit; bad input raises a clear error, never a crash.

The detection and span building here are ``csrc/detection.h``, the code the CUDA fallback
runs too. These tests (with the other C++ op tests, marker ``sanitize``) are what
``scripts/sanitize_tier.sh`` runs against the extension built with AddressSanitizer and
UBSan, where an out-of-bounds access or undefined behaviour in a kernel stops the run.
"""

from __future__ import annotations

import math
import os

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import lalm_fast.ops as ops
from lalm_fast.ops import _detect, _spans, backends, kernel_ops
from lalm_fast.ops import reference as ref
from lalm_fast.ops._inputs import padded_grid
from lalm_fast.ops.modes import Mode

pytestmark = pytest.mark.skipif(not backends.is_available("cpu", "cpu"), reason="needs the C++ extension")

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
TOL = {torch.float16: 2e-3, torch.bfloat16: 1.6e-2, torch.float32: 2e-5, torch.float64: 1e-12}
SCORE_TOL = {torch.float64: 1e-12}  # fp32 accumulation otherwise: 2e-5
LAYOUTS = ["contiguous", "time-strided", "row-strided", "transposed", "expanded"]
SPECIAL = [math.nan, math.inf, -math.inf]


def cpu():
    return backends.kernels("cpu")


@st.composite
def features(draw, max_rows=4, max_frames=24, max_dim=9):
    """x [R, T, D] in any dtype and layout (strides the kernels take: the last dimension
    contiguous), with ties and NaN / Inf frames sometimes."""
    rows, frames, dim = draw(st.integers(0, max_rows)), draw(st.integers(0, max_frames)), draw(st.integers(0, max_dim))
    dtype, layout = draw(st.sampled_from(DTYPES)), draw(st.sampled_from(LAYOUTS))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))

    def randn(*shape):
        values = torch.randn(*shape, generator=gen)
        return values.round() if ties else values

    ties = draw(st.booleans())
    if layout == "contiguous":
        x = randn(rows, frames, dim).to(dtype)
    elif layout == "time-strided":
        x = randn(rows, 2 * frames + 1, dim).to(dtype)[:, 1::2]
    elif layout == "row-strided":
        x = randn(2 * rows, frames, dim).to(dtype)[::2]
    elif layout == "transposed":
        x = randn(frames, rows, dim).to(dtype).transpose(0, 1)
    else:  # every row the same memory (stride 0)
        x = randn(1, frames, dim).to(dtype).expand(rows, frames, dim)
    if x.numel() and draw(st.booleans()) and layout != "expanded":
        flat = torch.randint(0, x.numel(), (3,), generator=gen)
        for i, value in zip(flat.tolist(), draw(st.lists(st.sampled_from(SPECIAL), min_size=3, max_size=3))):
            x[i // (frames * dim), (i // dim) % frames, i % dim] = value
    assert x.shape == (rows, frames, dim) and (dim <= 1 or x.numel() == 0 or x.stride(2) == 1)
    return x


@st.composite
def sorted_spans(draw, rows, frames, max_spans=8):
    """Sorted, disjoint spans [R, S] inside [0, T]: empty ones, ones at 0 and at T."""
    count = draw(st.integers(0, max_spans))
    cuts = [sorted(draw(st.lists(st.integers(0, frames), min_size=2 * count, max_size=2 * count)))
            for _ in range(rows)]
    starts = torch.tensor([c[0::2] for c in cuts], dtype=torch.long).reshape(rows, count)
    ends = torch.tensor([c[1::2] for c in cuts], dtype=torch.long).reshape(rows, count)
    return starts, ends


def identical(got, want):
    """Bit for bit, NaN in the same places included."""
    torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True)


def close(got, want, dtype, tol=None):
    tol = TOL[dtype] if tol is None else tol
    torch.testing.assert_close(got, want, rtol=tol, atol=tol, equal_nan=True)


# --------------------------------------------------------------------------- pooling kernels


@given(data=st.data())
def test_span_mean_and_its_gradient_equal_the_reference_on_any_layout(data):
    x = data.draw(features())
    starts, ends = data.draw(sorted_spans(x.shape[0], x.shape[1]))
    close(cpu().span_mean(x, starts, ends), ref.span_mean(x, starts, ends), x.dtype)
    grad = torch.randn(starts.shape[1], x.shape[0], x.shape[2]).to(x.dtype).transpose(0, 1)  # non-contiguous
    frames = x.shape[1] + data.draw(st.integers(0, 2))  # a gradient may cover frames past every span
    close(cpu().span_mean_backward(grad, starts, ends, frames), ref.span_mean_backward(grad, starts, ends, frames),
          x.dtype)


def spans_are_valid(starts, ends, frames):
    if starts.numel() == 0:
        return True
    inside = bool(((starts >= 0) & (starts <= ends) & (ends <= frames)).all())
    return inside and bool((ends[:, :-1] <= starts[:, 1:]).all())


@given(data=st.data())
def test_span_kernels_reject_any_bad_span_instead_of_reading_out_of_bounds(data):
    rows, frames, count = data.draw(st.integers(1, 3)), data.draw(st.integers(0, 8)), data.draw(st.integers(1, 4))
    index = st.integers(-3, frames + 3)
    starts = torch.tensor(data.draw(st.lists(index, min_size=rows * count, max_size=rows * count))).view(rows, count)
    ends = torch.tensor(data.draw(st.lists(index, min_size=rows * count, max_size=rows * count))).view(rows, count)
    x, grad = torch.randn(rows, frames, 5), torch.randn(rows, count, 5)
    if spans_are_valid(starts, ends, frames):
        close(cpu().span_mean(x, starts, ends), ref.span_mean(x, starts, ends), x.dtype)
        close(cpu().span_mean_backward(grad, starts, ends, frames), ref.span_mean_backward(grad, starts, ends, frames),
              x.dtype)
        return
    with pytest.raises(RuntimeError, match="is outside|sorted and disjoint"):
        cpu().span_mean(x, starts, ends)
    with pytest.raises(RuntimeError, match="is outside|sorted and disjoint"):
        cpu().span_mean_backward(grad, starts, ends, frames)


@given(data=st.data())
def test_boundary_scores_equal_the_reference_for_any_lengths(data):
    x = data.draw(features())
    # Lengths outside [0, T] are clamped by the kernel (the public ops reject them first).
    lengths = torch.tensor(data.draw(st.lists(st.integers(-2, x.shape[1] + 2), min_size=x.shape[0],
                                              max_size=x.shape[0])), dtype=torch.long)
    got = cpu().boundary_scores(x, lengths)
    want = ref.boundary_scores(x, lengths.clamp(0, x.shape[1]))
    assert got.dtype == want.dtype
    close(got, want, x.dtype, SCORE_TOL.get(x.dtype, 2e-5))


# --------------------------------------------------------------------------- detection


@st.composite
def rules(draw, frames, modes=(Mode.PEAK, Mode.THRESHOLD, Mode.RATE)):
    """(mode, param, min_len, max_len) of any value a direct kernel call may get."""
    mode = draw(st.sampled_from(modes))
    param = draw({
        Mode.PEAK: st.sampled_from([0.0, 0.05, 0.3, 1.0, 2.5, -1.0, math.nan]),
        Mode.THRESHOLD: st.sampled_from([0.0, 0.5, 1.0, 1.999, 2.0, -math.inf, math.inf, math.nan]),
        Mode.RATE: st.sampled_from([1.0, 1.5, 2.0, 3.0, 7.5, float(frames + 1), 1e300, math.inf]),
    }[mode])
    min_len = draw(st.sampled_from([1, 2, 3, 5, max(frames, 1), frames + 1, 2**62]))
    return mode, param, min_len, draw(st.sampled_from([0, 0, 1, 2, 3, 7, frames, frames + 1, 2**62]))


def reference_mask(scores, lengths, mode, param, min_len, max_len):
    """The torch detection; min_len / max_len of T or more act as T (the ops cap them there,
    and the torch detection loops over min_len)."""
    frames = scores.shape[1]
    cap = max(frames, 1)
    grid = padded_grid(torch.zeros(scores.shape[0], frames, 1, dtype=scores.dtype), lengths)
    valid = (torch.arange(frames)[None, :] < lengths[:, None]) & (torch.arange(frames)[None, :] > 0)
    scores = torch.where(valid, scores, 0.0)  # what boundary_scores gives: the kernel never reads the rest
    return _detect.starts_from_scores(grid, scores, mode, param, min(min_len, cap), min(max_len, cap))


@st.composite
def score_rows(draw):
    """Raw scores [R, T], fp32 or fp64, any values (NaN, +-Inf, +-0, ties, neighbours one ulp
    apart), contiguous or not, garbage at frame 0 and in the padding; lengths of any value."""
    rows, frames = draw(st.integers(0, 4)), draw(st.integers(0, 40))
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    near_one = [math.nextafter(1.0, 0.0), 1.0, math.nextafter(1.0, 2.0)]
    values = st.one_of(st.sampled_from([0.0, -0.0, 0.5, 1.0, 2.0, math.nan, math.inf, -math.inf, 1e-300] + near_one),
                       st.floats(0, 2, width=32 if dtype == torch.float32 else 64))
    flat = draw(st.lists(values, min_size=rows * frames, max_size=rows * frames))
    scores = torch.tensor(flat, dtype=dtype).view(rows, frames)
    if draw(st.booleans()):  # a non-contiguous view of the same values
        scores = torch.stack([scores, torch.full_like(scores, math.nan)], dim=2)[..., 0]
    lengths = torch.tensor(draw(st.lists(st.integers(-2, frames + 2), min_size=rows, max_size=rows)),
                           dtype=torch.long)
    return scores, lengths


@given(data=st.data())
def test_detection_kernel_equals_the_torch_detection_on_any_scores(data):
    scores, lengths = data.draw(score_rows())
    mode, param, min_len, max_len = data.draw(rules(scores.shape[1]))
    got = cpu().detect_boundaries(scores, lengths, int(mode), param, min_len, max_len)
    clamped = lengths.clamp(0, scores.shape[1])
    assert torch.equal(got, reference_mask(scores, clamped, mode, param, min_len, max_len))
    if mode == Mode.RATE:  # exactly ceil(L / rate) segments (one for an infinite rate), however the scores tie
        wanted = torch.ceil(clamped.double() / param).long().clamp(min=1)
        assert torch.equal(got.sum(1), torch.where(clamped > 0, wanted, 0))


def test_rate_mode_ties_go_to_the_lower_frame_and_nan_scores_come_last():
    nan = math.nan
    for dtype in (torch.float32, torch.float64):
        scores = torch.tensor([[0.0, 1.0, nan, 1.0, -0.0, 0.0, 1.0, nan, 0.5, 2.0]], dtype=dtype)
        lengths = torch.tensor([10])
        # wanted starts besides frame 0: ceil(10 / rate) - 1
        picks = {10.0: [], 5.0: [9], 3.0: [1, 3, 9], 2.0: [1, 3, 6, 9], 1.5: [1, 3, 4, 6, 8, 9],
                 1.25: [1, 3, 4, 5, 6, 8, 9], 1.0: list(range(1, 10))}
        for rate, starts in picks.items():
            mask = cpu().detect_boundaries(scores, lengths, int(Mode.RATE), rate, 1, 0)[0]
            assert mask.nonzero().flatten().tolist() == [0] + starts, rate
            assert torch.equal(mask, reference_mask(scores, lengths, Mode.RATE, rate, 1, 0)[0]), rate


def test_rate_mode_separates_scores_one_ulp_apart():
    one = 1.0
    for dtype, up in ((torch.float32, float(torch.tensor(one).nextafter(torch.tensor(2.0)))),
                      (torch.float64, math.nextafter(one, 2.0))):
        scores = torch.tensor([[0.0, one, one, up, one, one]], dtype=dtype)
        mask = cpu().detect_boundaries(scores, torch.tensor([6]), int(Mode.RATE), 3.0, 1, 0)[0]
        assert mask.nonzero().flatten().tolist() == [0, 3], dtype  # one more start: the highest score


# --------------------------------------------------------------------------- compress


def window_oracle(lengths, k, single_frame, num_out):
    starts, ends, counts = [], [], []
    for length in lengths.tolist():
        row_s, row_e = [], []
        for s in range(num_out):
            first = min(s * k, length)
            row_s.append(first)
            row_e.append(min(first + (1 if single_frame else k), length))
        starts.append(row_s)
        ends.append(row_e)
        counts.append(min(-(-length // k), num_out))
    shape = (len(counts), num_out)
    return (torch.tensor(starts, dtype=torch.long).reshape(shape), torch.tensor(ends, dtype=torch.long).reshape(shape),
            torch.tensor(counts, dtype=torch.long))


@given(data=st.data())
def test_compress_equals_the_torch_spans_and_means_in_every_mode(data):
    x = data.draw(features(max_frames=30))
    rows, frames = x.shape[:2]
    lengths = torch.tensor(data.draw(st.lists(st.integers(0, frames), min_size=rows, max_size=rows)), dtype=torch.long)
    mode = data.draw(st.sampled_from([Mode.PEAK, Mode.THRESHOLD, Mode.RATE, Mode.UNIFORM, Mode.DOWNSAMPLE,
                                      Mode.GIVEN]))
    num_out = data.draw(st.integers(0, frames + 3))
    grid = padded_grid(x, lengths)
    boundaries = None
    if mode in (Mode.UNIFORM, Mode.DOWNSAMPLE):
        param, min_len, max_len = float(data.draw(st.sampled_from([1, 2, 3, 5, frames, frames + 1, 10**9]))), 1, 0
        k = min(int(param), max(frames, 1))
        want_starts, want_ends, want_counts = window_oracle(lengths, k, mode == Mode.DOWNSAMPLE, num_out)
    elif mode == Mode.GIVEN:
        param, min_len, max_len = 1.0, 1, 0
        gen = torch.Generator().manual_seed(data.draw(st.integers(0, 2**31 - 1)))
        boundaries = torch.rand(rows, 2 * frames, generator=gen) < data.draw(st.sampled_from([0.0, 0.3, 1.0]))
        boundaries = boundaries[:, ::2] if data.draw(st.booleans()) else boundaries[:, :frames].contiguous()
        is_start = _spans.force_sample_starts(grid, boundaries)
        want_starts, want_ends = _spans.spans_from_starts(grid, is_start, num_out)
        want_counts = _spans.segment_counts(grid, is_start, num_out)
    else:
        mode, param, min_len, max_len = data.draw(rules(frames, modes=(mode,)))
        mask = reference_mask(cpu().boundary_scores(x, lengths), lengths, mode, param, min_len, max_len)
        want_starts, want_ends = _spans.spans_from_starts(grid, mask, num_out)
        want_counts = _spans.segment_counts(grid, mask, num_out)
    values, starts, ends, counts = cpu().compress(x, lengths, int(mode), param, min_len, max_len, num_out, boundaries)
    assert torch.equal(starts, want_starts) and torch.equal(ends, want_ends)
    assert torch.equal(counts, want_counts)
    assert values.shape == (rows, num_out, x.shape[2]) and values.dtype == x.dtype
    close(values, ref.span_mean(x, starts, ends), x.dtype)


@given(data=st.data())
def test_compress_clamps_lengths_outside_the_frames(data):
    """A direct call with lengths outside [0, T] reads only inside the row: the result of the
    clamped lengths."""
    frames = data.draw(st.integers(0, 12))
    lengths = torch.tensor(data.draw(st.lists(st.sampled_from([-(2**62), -1, 0, frames, frames + 1, 2**62]),
                                              min_size=1, max_size=3)), dtype=torch.long)
    x = torch.randn(len(lengths), frames, 3)
    mode, param = data.draw(st.sampled_from([(Mode.RATE, 2.0), (Mode.PEAK, 0.0), (Mode.THRESHOLD, 0.5),
                                             (Mode.UNIFORM, 2.0), (Mode.DOWNSAMPLE, 3.0), (Mode.GIVEN, 1.0),
                                             (Mode.SEGMENT_IDS, 1.0), (Mode.OFFSETS, 1.0)]))
    boundaries = {Mode.GIVEN: torch.ones(x.shape[:2], dtype=torch.bool),
                  Mode.SEGMENT_IDS: torch.arange(frames).div(2, rounding_mode="floor").expand(len(lengths), -1),
                  Mode.OFFSETS: (torch.arange(frames + 2) * 2).expand(len(lengths), -1)}.get(mode)
    got = cpu().compress(x, lengths, int(mode), param, 2, 0, frames + 1, boundaries)
    want = cpu().compress(x, lengths.clamp(0, frames), int(mode), param, 2, 0, frames + 1, boundaries)
    for a, b in zip(got, want):
        assert torch.equal(a, b)


INDEX_DTYPES = [torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8, torch.uint16]
SEGMENT_LAYOUTS = ["contiguous", "time-strided", "transposed", "expanded"]


def segment_tensor(values, width, dtype, layout):
    """A [B, width] integer tensor of these values in a layout the ops accept as it is."""
    rows = torch.tensor(values, dtype=torch.long).reshape(len(values), width).to(dtype)
    if layout == "time-strided":
        wide = torch.zeros(rows.shape[0], 2 * rows.shape[1], dtype=dtype)
        wide[:, ::2] = rows
        return wide[:, ::2]
    if layout == "transposed":
        return rows.t().contiguous().t()
    if layout == "expanded" and rows.shape[0]:
        return rows[:1].expand_as(rows)  # every row the first one's memory (stride 0)
    return rows


@st.composite
def segment_ids(draw, rows, frames, lengths, dtype):
    """Ids [B, T], non-decreasing from >= 0 over each sample's frames, with gaps, repeats and
    ids past any output count (near the int64 limit for int64); padding holds anything."""
    top = {torch.int8: 127, torch.uint8: 255, torch.int16: 2**15 - 1, torch.int32: 2**31 - 1,
           torch.uint16: 2**16 - 1}.get(dtype, 2**63 - 1)
    values = []
    for length in lengths:
        steps = draw(st.lists(st.sampled_from([0, 0, 1, 1, 2, 5]), min_size=length, max_size=length))
        row, current = [], draw(st.sampled_from([0, 0, 1, 3]))
        for step in steps:
            current = min(current + step, top)
            row.append(current)
        if row and draw(st.booleans()):  # a tail of huge ids: they merge into the last token
            cut = draw(st.integers(0, len(row) - 1))
            row[cut:] = [top] * (len(row) - cut)
        padding_low = 0 if dtype in (torch.uint8, torch.uint16) else -3
        row += draw(st.lists(st.integers(padding_low, min(top, 40)), min_size=frames - length,
                             max_size=frames - length))
        values.append(row)
    return values


@st.composite
def csr_offsets(draw, rows, num_out, frames):
    """Offsets [B, S+1], non-decreasing from >= 0, some past T (clamped to the sample)."""
    return [sorted(draw(st.lists(st.integers(0, frames + 3), min_size=num_out + 1, max_size=num_out + 1)))
            for _ in range(rows)]


def torch_path_spans(x, lengths, mode, segments, num_out):
    """The spans, counts and means segment_pool built with torch ops before the C++ compress
    took these modes (still the torch backend's path): the oracle, bit for bit."""
    grid = padded_grid(x, lengths)
    if mode == Mode.SEGMENT_IDS:
        starts, ends, counts = ops._segment_id_spans(grid, segments, num_out)
    else:
        starts, ends, counts = ops._offset_spans(grid, segments)
    return starts, ends, counts


@given(data=st.data())
def test_compress_ids_and_offsets_equal_the_torch_path_spans_and_means(data):
    """Segment ids and offsets of any integer type and layout, lengths anywhere in -2..T+2
    (clamped by the kernel, as the torch path sees them after the op's checks): the spans
    and counts of the torch path exactly, and its means (the same span-mean kernel) bit
    for bit, forward and backward."""
    x = data.draw(features(max_frames=30))
    rows, frames = x.shape[:2]
    lengths = torch.tensor(data.draw(st.lists(st.integers(-2, frames + 2), min_size=rows, max_size=rows)),
                           dtype=torch.long)
    clamped = lengths.clamp(0, frames)
    mode = data.draw(st.sampled_from([Mode.SEGMENT_IDS, Mode.OFFSETS]))
    dtype, layout = data.draw(st.sampled_from(INDEX_DTYPES)), data.draw(st.sampled_from(SEGMENT_LAYOUTS))
    if mode == Mode.SEGMENT_IDS:
        num_out = data.draw(st.integers(1, frames + 3))
        if layout == "expanded":  # one row of ids for every sample: it must suit the longest
            clamped_rows = [int(clamped.max())] * rows if rows else []
            values = data.draw(segment_ids(1, frames, clamped_rows[:1], dtype)) * rows
        else:
            values = data.draw(segment_ids(rows, frames, clamped.tolist(), dtype))
        segments = segment_tensor(values, frames, dtype, layout)
    else:
        num_out = data.draw(st.integers(1, frames + 3))
        values = data.draw(csr_offsets(1 if layout == "expanded" else rows, num_out, frames))
        values = values * rows if layout == "expanded" else values
        segments = segment_tensor(values, num_out + 1, dtype, layout)
    want_starts, want_ends, want_counts = torch_path_spans(x, clamped, mode, segments, num_out)
    values, starts, ends, counts = cpu().compress(x, lengths, int(mode), 1.0, 1, 0, num_out, segments)
    assert torch.equal(starts, want_starts) and torch.equal(ends, want_ends)
    assert torch.equal(counts, want_counts)
    assert values.shape == (rows, num_out, x.shape[2]) and values.dtype == x.dtype
    identical(values, cpu().span_mean(x, want_starts, want_ends))
    grad = torch.randn(num_out, rows, x.shape[2]).to(x.dtype).transpose(0, 1)  # non-contiguous
    identical(cpu().span_mean_backward(grad, starts, ends, frames),
              cpu().span_mean_backward(grad, want_starts, want_ends, frames))


@pytest.mark.parametrize("segments", ["ids", "offsets"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_public_segment_pool_on_cpu_equals_the_torch_path_forward_and_backward(segments, dtype):
    """segment_pool(segment_ids= / offsets=) on the cpu backend (now one compress call) and
    the torch-built spans through the same span-mean kernel: equal values, spans, counts and
    gradients."""
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(3, 12, 5, generator=gen).to(dtype)
    lengths = torch.tensor([12, 7, 0])
    if segments == "ids":
        kwargs = dict(segment_ids=torch.tensor([[0, 0, 1, 3, 3, 3, 4, 4, 6, 6, 6, 9],
                                                [0, 1, 1, 1, 2, 2, 2, 0, 0, 0, 0, 0],
                                                [5, 4, 3, 2, 1, 0, 0, 0, 0, 0, 0, 0]]), max_segments=5)
        num_out = 5
    else:
        kwargs = dict(offsets=torch.tensor([[0, 4, 4, 11, 12], [0, 2, 5, 9, 20], [0, 0, 1, 2, 3]]))
        num_out = 4
    results, grads = [], []
    for fused in (True, False):
        leaf = x.clone().requires_grad_(True)
        if fused:
            out = ops.segment_pool(leaf, lengths, backend="cpu", **kwargs)
        else:
            grid = padded_grid(leaf, lengths)
            mode = Mode.SEGMENT_IDS if segments == "ids" else Mode.OFFSETS
            starts, ends, counts = torch_path_spans(leaf, lengths, mode, next(iter(kwargs.values())), num_out)
            out = _spans.assemble(grid, kernel_ops.span_mean(leaf, starts, ends, "cpu"), starts, ends, counts)
        weights = torch.arange(out.values.numel(), dtype=torch.float64).view_as(out.values).to(dtype)
        (out.values * weights).sum().backward()
        results.append(out)
        grads.append(leaf.grad)
    fused, composed = results
    assert torch.equal(fused.values, composed.values)
    assert torch.equal(fused.spans, composed.spans) and torch.equal(fused.lengths, composed.lengths)
    assert torch.equal(grads[0], grads[1])


def test_segment_pool_on_cpu_builds_no_torch_spans(monkeypatch):
    """backend="cpu": the spans of ids and offsets come from the C++ compress."""
    def torch_path(*args, **kwargs):
        raise AssertionError("backend='cpu' built ids / offsets spans with torch ops")

    monkeypatch.setattr(ops, "_segment_id_spans", torch_path)
    monkeypatch.setattr(ops, "_offset_spans", torch_path)
    x = torch.randn(2, 6, 3)
    out = ops.segment_pool(x, torch.tensor([6, 4]), segment_ids=torch.tensor([[0, 0, 1, 1, 2, 2]] * 2), backend="cpu")
    assert out.lengths.tolist() == [3, 2]
    out = ops.segment_pool(x, torch.tensor([6, 4]), offsets=torch.tensor([[0, 2, 6]] * 2), backend="cpu")
    assert out.spans.tolist() == [[[0, 2], [2, 6]], [[0, 2], [2, 4]]]


# --------------------------------------------------------------------------- bad input

X, LENGTHS, SCORES = torch.randn(2, 6, 4), torch.tensor([6, 3]), torch.rand(2, 6)
MASK = torch.ones(2, 6, dtype=torch.bool)
IDS, OFFSETS = torch.tensor([[0, 0, 1, 1, 2, 2]] * 2), torch.tensor([[0, 2, 6]] * 2)
BAD_CALLS = [
    # (description, call, words the error must contain)
    ("compress lengths on meta", lambda k: k.compress(X, LENGTHS.to("meta"), 3, 2.0, 1, 0, 3),
     "lengths must be an int64 [B] CPU tensor"),
    ("compress lengths int32", lambda k: k.compress(X, LENGTHS.int(), 3, 2.0, 1, 0, 3), "lengths must be an int64"),
    ("compress lengths 2-D", lambda k: k.compress(X, LENGTHS[None], 3, 2.0, 1, 0, 3), "lengths must be an int64 [B]"),
    ("compress x on meta", lambda k: k.compress(X.to("meta"), LENGTHS, 3, 2.0, 1, 0, 3), "x must be"),
    ("compress x 2-D", lambda k: k.compress(X[0], LENGTHS, 3, 2.0, 1, 0, 3), "x must be a [B, T, D]"),
    ("compress x strided features", lambda k: k.compress(X[..., ::2], LENGTHS, 1, 0.5, 1, 0, 3), "contiguous last"),
    ("compress segment ids, no ids", lambda k: k.compress(X, LENGTHS, 6, 1.0, 1, 0, 3), "boundaries are needed"),
    ("compress offsets, no offsets", lambda k: k.compress(X, LENGTHS, 7, 1.0, 1, 0, 3), "boundaries are needed"),
    ("compress mode 8", lambda k: k.compress(X, LENGTHS, 8, 1.0, 1, 0, 3, IDS), "mode must be"),
    ("compress ids float", lambda k: k.compress(X, LENGTHS, 6, 1.0, 1, 0, 3, IDS.float()),
     "segment_ids must be an integer tensor"),
    ("compress ids bool", lambda k: k.compress(X, LENGTHS, 6, 1.0, 1, 0, 3, IDS > 0),
     "segment_ids must be an integer tensor"),
    ("compress ids short", lambda k: k.compress(X, LENGTHS, 6, 1.0, 1, 0, 3, IDS[:, :5]),
     "segment_ids must have shape [B, T] = [2, 6]"),
    ("compress ids 1-D", lambda k: k.compress(X, LENGTHS, 6, 1.0, 1, 0, 3, IDS[0]), "segment_ids must have shape"),
    ("compress ids 3 rows", lambda k: k.compress(X, LENGTHS, 6, 1.0, 1, 0, 3, IDS[[0, 1, 1]]),
     "segment_ids must have shape"),
    ("compress ids on meta", lambda k: k.compress(X, LENGTHS, 6, 1.0, 1, 0, 3, IDS.to("meta")), "must be a CPU"),
    ("compress ids unsorted", lambda k: k.compress(X, LENGTHS, 6, 1.0, 1, 0, 3, torch.tensor([[0, 1, 0, 1, 2, 2]] * 2)),
     "segment_ids must be >= 0 and non-decreasing along time within each sample"),
    ("compress ids negative", lambda k: k.compress(X, LENGTHS, 6, 1.0, 1, 0, 3, IDS - 1),
     "segment_ids must be >= 0 and non-decreasing"),
    ("compress ids unsorted, lengths past T",
     lambda k: k.compress(X, torch.tensor([9, 3]), 6, 1.0, 1, 0, 3, torch.tensor([[0, 0, 0, 0, 0, -1]] * 2)),
     "segment_ids must be >= 0"),
    ("compress offsets decreasing", lambda k: k.compress(X, LENGTHS, 7, 1.0, 1, 0, 2, torch.tensor([[0, 3, 2]] * 2)),
     "offsets must be >= 0 and non-decreasing along each row"),
    ("compress offsets negative", lambda k: k.compress(X, LENGTHS, 7, 1.0, 1, 0, 2, torch.tensor([[-1, 3, 4]] * 2)),
     "offsets must be >= 0 and non-decreasing"),
    ("compress offsets decreasing past L",  # the public op rejects these too, whatever the lengths
     lambda k: k.compress(X, LENGTHS, 7, 1.0, 1, 0, 2, torch.tensor([[0, 9, 7]] * 2)), "offsets must be >= 0"),
    ("compress offsets wide", lambda k: k.compress(X, LENGTHS, 7, 1.0, 1, 0, 2, torch.tensor([[0, 1, 2, 3]] * 2)),
     "offsets must have shape [B, num_out + 1], B = 2, num_out = 2, got [2, 4]"),
    ("compress offsets huge num_out", lambda k: k.compress(X, LENGTHS, 7, 1.0, 1, 0, 2**63 - 1, OFFSETS),
     "offsets must have shape"),
    ("compress offsets float", lambda k: k.compress(X, LENGTHS, 7, 1.0, 1, 0, 2, OFFSETS.double()),
     "offsets must be an integer tensor"),
    ("compress mode -1", lambda k: k.compress(X, LENGTHS, -1, 1.0, 1, 0, 3), "mode must be"),
    ("compress rate nan", lambda k: k.compress(X, LENGTHS, 2, math.nan, 1, 0, 3), "rate / k must be >= 1"),
    ("compress k 0", lambda k: k.compress(X, LENGTHS, 3, 0.0, 1, 0, 3), "rate / k must be >= 1"),
    ("compress k 2.5", lambda k: k.compress(X, LENGTHS, 4, 2.5, 1, 0, 3), "k must be an integer"),
    ("compress min_len 0", lambda k: k.compress(X, LENGTHS, 1, 0.5, 0, 0, 3), "min_len must be >= 1"),
    ("compress max_len -1", lambda k: k.compress(X, LENGTHS, 1, 0.5, 1, -1, 3), "max_len must be >= 0"),
    ("compress num_out -1", lambda k: k.compress(X, LENGTHS, 1, 0.5, 1, 0, -1), "num_out must be >= 0"),
    ("compress given, no mask", lambda k: k.compress(X, LENGTHS, 5, 1.0, 1, 0, 3), "boundaries are needed"),
    ("compress mask, not given", lambda k: k.compress(X, LENGTHS, 1, 0.5, 1, 0, 3, MASK), "boundaries are needed"),
    ("compress mask float", lambda k: k.compress(X, LENGTHS, 5, 1.0, 1, 0, 3, MASK.float()), "boundaries must be"),
    ("compress ids as a mask", lambda k: k.compress(X, LENGTHS, 5, 1.0, 1, 0, 3, IDS), "boundaries must be"),
    ("compress mask short", lambda k: k.compress(X, LENGTHS, 5, 1.0, 1, 0, 3, MASK[:, :5]), "boundaries must be"),
    ("compress mask on meta", lambda k: k.compress(X, LENGTHS, 5, 1.0, 1, 0, 3, MASK.to("meta")), "boundaries must"),
    ("detect scores int", lambda k: k.detect_boundaries(SCORES.long(), LENGTHS, 1, 0.5, 1, 0), "scores must be fp32"),
    ("detect scores half", lambda k: k.detect_boundaries(SCORES.half(), LENGTHS, 1, 0.5, 1, 0), "scores must be fp32"),
    ("detect scores 3-D", lambda k: k.detect_boundaries(SCORES[None], LENGTHS, 1, 0.5, 1, 0), "scores must be a [R, T]"),
    ("detect scores on meta", lambda k: k.detect_boundaries(SCORES.to("meta"), LENGTHS, 1, 0.5, 1, 0), "scores must"),
    ("detect lengths on meta", lambda k: k.detect_boundaries(SCORES, LENGTHS.to("meta"), 1, 0.5, 1, 0),
     "lengths must be an int64 [R] CPU tensor"),
    ("detect lengths short", lambda k: k.detect_boundaries(SCORES, LENGTHS[:1], 1, 0.5, 1, 0), "lengths must be"),
    ("detect uniform mode", lambda k: k.detect_boundaries(SCORES, LENGTHS, 3, 2.0, 1, 0), "mode must be 0 (peak)"),
    ("detect rate 0.5", lambda k: k.detect_boundaries(SCORES, LENGTHS, 2, 0.5, 1, 0), "rate / k must be >= 1"),
    ("scores lengths on meta", lambda k: k.boundary_scores(X, LENGTHS.to("meta")), "must be CPU tensors"),
    ("scores x strided features", lambda k: k.boundary_scores(X[..., ::2], LENGTHS), "contiguous last dimension"),
    ("scores lengths float", lambda k: k.boundary_scores(X, LENGTHS.float()), "lengths must be int64"),
    ("span_mean starts int32", lambda k: k.span_mean(X, LENGTHS[:, None].int(), LENGTHS[:, None].int()), "int64"),
    ("span_mean starts not contiguous", lambda k: k.span_mean(X, torch.zeros(2, 4, dtype=torch.long)[:, ::2],
                                                              torch.ones(2, 4, dtype=torch.long)[:, ::2]), "contiguous"),
    ("span_mean rows differ", lambda k: k.span_mean(X, torch.zeros(3, 1, dtype=torch.long),
                                                    torch.ones(3, 1, dtype=torch.long)), "must both be [R=2, S]"),
    ("backward frames -1", lambda k: k.span_mean_backward(torch.randn(2, 1, 4), torch.zeros(2, 1, dtype=torch.long),
                                                          torch.zeros(2, 1, dtype=torch.long), -1), "num_frames"),
    ("backward spans differ", lambda k: k.span_mean_backward(torch.randn(2, 2, 4), torch.zeros(2, 1, dtype=torch.long),
                                                             torch.zeros(2, 1, dtype=torch.long), 6), "tokens but"),
]


@pytest.mark.parametrize("call, words", [c[1:] for c in BAD_CALLS], ids=[c[0] for c in BAD_CALLS])
def test_cpu_kernels_reject_bad_input_with_a_clear_error(call, words):
    with pytest.raises((RuntimeError, TypeError, ValueError)) as info:
        call(cpu())
    assert words in str(info.value)


ARGUMENT = st.one_of(st.integers(-3, 12), st.sampled_from([2**31, 2**62, 2**63 - 1, -(2**63)]))
PARAM = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([1.0, 2.0, 3.0, 1e300]))


@given(data=st.data(), mode=st.integers(-2, 9), param=PARAM, min_len=ARGUMENT, max_len=ARGUMENT,
       num_out=st.integers(-1, 14))
def test_any_argument_values_give_a_valid_result_or_a_clear_error(data, mode, param, min_len, max_len, num_out):
    x = data.draw(features(max_rows=3, max_frames=10, max_dim=4))
    rows, frames = x.shape[:2]
    lengths = torch.tensor(data.draw(st.lists(st.integers(0, frames), min_size=rows, max_size=rows)), dtype=torch.long)
    boundaries = {int(Mode.GIVEN): torch.ones(rows, frames, dtype=torch.bool),
                  int(Mode.SEGMENT_IDS): torch.zeros(rows, frames, dtype=torch.long),
                  int(Mode.OFFSETS): torch.zeros(rows, max(num_out, 0) + 1, dtype=torch.long)}.get(mode)
    try:
        values, starts, ends, counts = cpu().compress(x, lengths, mode, param, min_len, max_len, num_out, boundaries)
    except RuntimeError as exc:
        assert any(word in str(exc) for word in ("mode must", "must be >= 1", "must be >= 0", "k must be")), exc
        return
    assert 0 <= mode <= int(Mode.OFFSETS) and num_out >= 0 and min_len >= 1 and max_len >= 0
    assert values.shape == (rows, num_out, x.shape[2]) and starts.shape == ends.shape == (rows, num_out)
    assert bool((counts >= 0).all()) and bool((counts <= num_out).all())
    if num_out and rows:
        assert bool((starts <= ends).all()) and bool((ends <= lengths[:, None]).all())
        assert bool((ends[:, :-1] <= starts[:, 1:]).all())
        if mode != int(Mode.OFFSETS):  # offsets give num_out tokens, empty ones included
            assert bool((counts == 0).eq(lengths == 0).all())  # a non-empty row has at least one token
    if Mode(mode) in (Mode.PEAK, Mode.THRESHOLD, Mode.RATE):
        mask = cpu().detect_boundaries(cpu().boundary_scores(x, lengths), lengths, mode, param, min_len, max_len)
        assert torch.equal(mask.sum(1).clamp(max=num_out), counts)


def test_the_extension_under_test_is_the_one_asked_for():
    """The sanitizer tier loads the sanitized build through LALM_FAST_EXTENSION (tests/conftest.py);
    this fails if it silently tested another build, or ran without the sanitizer runtimes."""
    path = os.environ.get("LALM_FAST_EXTENSION")
    if not path:
        pytest.skip("LALM_FAST_EXTENSION is not set: the in-place build is under test")
    from lalm_fast import _C

    assert os.path.samefile(_C.__file__, path)
    with open("/proc/self/maps") as maps:
        loaded = maps.read()
    assert "libasan" in loaded and "libubsan" in loaded, "the extension is not a sanitized build"
