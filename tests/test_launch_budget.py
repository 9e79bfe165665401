"""Issue 15: each public op on the triton backend in few launches, few torch ops around them.

Counted in the Triton interpreter by ``scripts/torch_ops_around_launches.py`` (aten ops
dispatched by lalm_fast outside launches and input checks). The converted paths are also
checked against the composed path they replace (spans built with torch ops, then
``span_mean``): bit for bit, forward, and through autograd.
"""

from __future__ import annotations

import importlib.util
import math
import os
import sys
from pathlib import Path

import pytest
import torch

if "triton" not in sys.modules and not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

pytest.importorskip("triton", reason="triton is not importable")

import lalm_fast.ops as ops  # noqa: E402
from lalm_fast.ops import _detect, _spans, backends, kernel_ops  # noqa: E402
from lalm_fast.ops import reference as ref  # noqa: E402
from lalm_fast.ops._inputs import make_grid  # noqa: E402
from lalm_fast.ops.modes import Mode  # noqa: E402

pytestmark = pytest.mark.triton_interp

if os.environ.get("TRITON_INTERPRET", "0") in ("", "0") or not backends.is_available("triton", "cpu"):
    pytest.skip("needs the triton backend in the interpreter", allow_module_level=True)

K = backends.kernels("triton")
REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("torch_ops_around_launches",
                                               REPO / "scripts" / "torch_ops_around_launches.py")
counter = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = counter  # its dataclass looks its module up there
_spec.loader.exec_module(counter)

# (launches, torch ops) at most, per public op: the budget (two ops), every path.
BUDGET = {
    "uniform_pool": (1, 2),
    "uniform_pool packed": (1, 2),
    "downsample": (1, 2),
    "downsample packed": (1, 2),
    "segment_pool mask": (2, 2),
    "segment_pool mask packed": (2, 2),
    "segment_compress peak": (3, 2),
    "segment_compress threshold": (3, 2),
    "segment_compress rate": (3, 2),
    "segment_compress packed": (3, 2),
    "boundary_scores": (1, 2),
    "boundary_scores normalize": (2, 2),
    "detect_boundaries": (2, 2),
    "segment_pool ids": (2, 2),
    "segment_pool offsets": (2, 2),
}


@pytest.mark.parametrize("name", list(BUDGET))
def test_torch_ops_around_launches(name):
    call = counter.public_calls()[name]
    call()  # warm: first-call imports are not the op's work
    counts = counter.count(call)
    launches, most_ops = BUDGET[name]
    assert counts.launches <= launches and len(counts.ops) <= most_ops, counts.summary()


def _composed(x, lengths, k, single_frame):
    """The older path: spans from torch ops, then the span-mean kernel."""
    starts, ends = _spans.every_kth_spans(lengths, x.shape[1], k, single_frame)
    return K.span_mean(x, starts, ends), starts, ends, ((lengths + k - 1) // k).clamp(max=starts.shape[1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64], ids=str)
@pytest.mark.parametrize("mode", [Mode.UNIFORM, Mode.DOWNSAMPLE], ids=lambda m: m.name)
@pytest.mark.parametrize("frames,k", [(13, 1), (40, 3), (37, 4), (300, 150), (9, 9)])
def test_window_compress_equals_composed_spans(dtype, mode, frames, k):
    """One launch writes the same values (bitwise), spans and counts; k=150 takes the split path."""
    gen = torch.Generator().manual_seed(frames * k)
    x = torch.randn(4, frames, 19, generator=gen).to(dtype)
    lengths = torch.tensor([frames, frames // 2, 0, 1])
    num_out = math.ceil(frames / k)
    got = K.compress(x, lengths, int(mode), float(k), 1, 0, num_out)
    want = _composed(x, lengths, k, mode == Mode.DOWNSAMPLE)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and torch.equal(g, w)


def test_window_compress_zero_features_still_writes_spans():
    x, lengths = torch.randn(2, 7, 0), torch.tensor([7, 3])
    values, starts, ends, counts = K.compress(x, lengths, int(Mode.UNIFORM), 2.0, 1, 0, 4)
    want = _composed(torch.randn(2, 7, 1), lengths, 2, False)
    assert values.shape == (2, 4, 0)
    assert torch.equal(starts, want[1]) and torch.equal(ends, want[2]) and torch.equal(counts, want[3])


@pytest.mark.parametrize("num_out", [1, 3, 12])
def test_given_compress_equals_composed_spans(num_out):
    """The start-mask scan gives the spans of ``_spans.spans_from_starts``, the surplus merged
    into the last row, and so the same values bit for bit."""
    gen = torch.Generator().manual_seed(num_out)
    x, lengths = torch.randn(3, 12, 9, generator=gen), torch.tensor([12, 5, 0])
    mask = torch.rand(3, 12, generator=gen) < 0.4
    got = K.compress(x, lengths, int(Mode.GIVEN), 1.0, 1, 0, num_out, mask)
    grid = make_grid(x, lengths)
    is_start = _spans.force_sample_starts(grid, mask)
    starts, ends = _spans.spans_from_starts(grid, is_start, num_out)
    want = (K.span_mean(x, starts, ends), starts, ends, _spans.segment_counts(grid, is_start, num_out))
    for g, w in zip(got, want):
        assert torch.equal(g, w)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32], ids=str)
@pytest.mark.parametrize("num_out", [1, 4, 9])
def test_segment_ids_compress_equals_composed_spans(dtype, num_out):
    """The binary-search spans equal ``_segment_id_spans`` (searchsorted), gaps, ids past the
    last row, padding ids and an id at the int64 limit included; strided ids too."""
    gen = torch.Generator().manual_seed(num_out)
    x, lengths = torch.randn(4, 13, 5, generator=gen), torch.tensor([13, 6, 0, 1])
    ids = torch.sort(torch.randint(0, 11, (4, 13), generator=gen), dim=1).values
    ids[0, -1] = torch.iinfo(torch.int64).max if dtype == torch.int64 else torch.iinfo(torch.int32).max
    ids[1, 6:] = 0  # padding is never read
    strided = torch.zeros(4, 26, dtype=dtype)
    strided[:, ::2] = ids.to(dtype)
    grid = make_grid(x, lengths)
    starts, ends, counts = ops._segment_id_spans(grid, ids, num_out)
    want = (K.span_mean(x, starts, ends), starts, ends, counts)
    for segs in (ids.to(dtype), strided[:, ::2]):
        got = K.compress(x, lengths, int(Mode.SEGMENT_IDS), 1.0, 1, 0, num_out, segs)
        for g, w in zip(got, want):
            assert torch.equal(g, w)


def test_offsets_compress_equals_composed_spans():
    gen = torch.Generator().manual_seed(8)
    x, lengths = torch.randn(3, 10, 4, generator=gen), torch.tensor([10, 4, 0])
    offsets = torch.tensor([[0, 3, 3, 9, 14], [0, 1, 2, 5, 7], [0, 0, 2, 2, 3]])
    starts, ends, counts = ops._offset_spans(make_grid(x, lengths), offsets)
    got = K.compress(x, lengths, int(Mode.OFFSETS), 1.0, 1, 0, 4, offsets)
    for g, w in zip(got, (K.span_mean(x, starts, ends), starts, ends, counts)):
        assert torch.equal(g, w)


@pytest.mark.parametrize("segments", ["ids", "offsets"])
def test_public_segment_ids_and_offsets_forward_and_backward(segments):
    gen = torch.Generator().manual_seed(9)
    x = torch.randn(2, 12, 3, generator=gen, dtype=torch.float64)
    lengths = torch.tensor([12, 7])
    kwargs = (dict(segment_ids=torch.tensor([[0, 0, 1, 3, 3, 3, 4, 4, 6, 6, 6, 9], [0, 1, 1, 1, 2, 2, 2, 0, 0, 0, 0, 0]]),
                   max_segments=5) if segments == "ids" else dict(offsets=torch.tensor([[0, 4, 4, 11], [0, 2, 5, 9]])))
    outs = {}
    for backend in ("triton", "torch"):
        leaf = x.clone().requires_grad_(True)
        out = ops.segment_pool(leaf, lengths, **kwargs, backend=backend)
        (out.values.cos()).sum().backward()
        outs[backend] = (out, leaf.grad)
    (got, got_grad), (want, want_grad) = outs["triton"], outs["torch"]
    torch.testing.assert_close(got.values, want.values)
    assert torch.equal(got.spans, want.spans) and torch.equal(got.lengths, want.lengths)
    torch.testing.assert_close(got_grad, want_grad)


@pytest.mark.parametrize("op", ["uniform_pool", "downsample"])
def test_public_window_ops_forward_and_backward(op):
    """Against the torch reference, forward and gradient (span_mean_backward reads the spans
    the kernel wrote)."""
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(3, 17, 6, generator=gen, dtype=torch.float64)
    lengths = torch.tensor([17, 8, 0])
    outs = {}
    for backend in ("triton", "torch"):
        leaf = x.clone().requires_grad_(True)
        out = getattr(ops, op)(leaf, lengths, 4, backend=backend)
        (out.values * torch.arange(out.values.numel(), dtype=x.dtype).view_as(out.values)).sum().backward()
        outs[backend] = (out, leaf.grad)
    (got, got_grad), (want, want_grad) = outs["triton"], outs["torch"]
    torch.testing.assert_close(got.values, want.values)
    assert torch.equal(got.spans, want.spans) and torch.equal(got.lengths, want.lengths)
    torch.testing.assert_close(got_grad, want_grad)


def test_public_segment_pool_mask_forward_and_backward():
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(3, 14, 5, generator=gen, dtype=torch.float64)
    lengths, mask = torch.tensor([14, 6, 0]), torch.rand(3, 14, generator=gen) < 0.3
    outs = {}
    for backend in ("triton", "torch"):
        leaf = x.clone().requires_grad_(True)
        out = ops.segment_pool(leaf, lengths, mask, max_segments=3, backend=backend)
        (out.values ** 2).sum().backward()
        outs[backend] = (out, leaf.grad)
    (got, got_grad), (want, want_grad) = outs["triton"], outs["torch"]
    torch.testing.assert_close(got.values, want.values)
    assert torch.equal(got.spans, want.spans) and torch.equal(got.lengths, want.lengths)
    torch.testing.assert_close(got_grad, want_grad)
    assert ref.span_mean is not None  # the reference backend above is reference.py


@pytest.mark.parametrize("segments", ["uniform", "downsample", "mask", "ids", "offsets"])
def test_converted_paths_compile_fullgraph(segments):
    """torch.compile(fullgraph=True) traces the compress op of each converted path (static
    output shapes), with the same values and gradient as eager."""
    x, lengths = torch.randn(2, 12, 4, requires_grad=True), torch.tensor([12, 7])
    kwargs = {
        "uniform": lambda: dict(k=3), "downsample": lambda: dict(k=3),
        "mask": lambda: dict(boundaries=torch.rand(2, 12, generator=torch.Generator().manual_seed(1)) < 0.3,
                             max_segments=6),
        "ids": lambda: dict(segment_ids=torch.arange(12).div(3, rounding_mode="floor").expand(2, -1), max_segments=6),
        "offsets": lambda: dict(offsets=torch.tensor([[0, 3, 8, 12], [0, 2, 4, 7]])),
    }[segments]()
    op = {"uniform": ops.uniform_pool, "downsample": ops.downsample}.get(segments, ops.segment_pool)

    def f(x):
        return op(x, lengths, backend="triton", **kwargs).values

    torch._dynamo.reset()
    got, want = torch.compile(f, fullgraph=True, backend="aot_eager")(x), f(x)
    (got_grad,), (want_grad,) = torch.autograd.grad(got.sum(), x), torch.autograd.grad(want.sum(), x)
    assert torch.equal(got, want) and torch.equal(got_grad, want_grad)


# --------------------------------------------------------------------------- packed input

PACKED_LENGTHS = [[5, 7], [0, 3, 1, 0, 9], [1], [0], [4, 0, 0], [13, 2, 20], []]  # B = 0 last


def _packed_case(lengths, seed, dim=3, dtype=torch.float32, spare=2):
    """``x [N, D]`` with ``spare`` frames past the last sample, and its grid."""
    gen = torch.Generator().manual_seed(seed)
    cu = torch.tensor([0] + torch.tensor(lengths, dtype=torch.long).cumsum(0).tolist())
    x = torch.randn(int(cu[-1]) + spare, dim, generator=gen).to(dtype)
    longest = max(lengths, default=0)
    return x, cu, longest, make_grid(x, cu_seqlens=cu, max_seqlen=longest), gen


def _composed_packed(grid, is_start, num_out, single_frame=False):
    """The older packed path: fitted start mask, spans and counts from torch ops, span_mean."""
    is_start = _spans.fit_packed_starts(grid, is_start, num_out)
    starts, ends = _spans.spans_from_starts(grid, is_start, num_out, single_frame)
    values = K.span_mean(grid.x, starts, ends)
    out = _spans.assemble(grid, values, starts, ends, _spans.segment_counts(grid, is_start, num_out))
    return (out.values, out.spans, out.lengths, out.cu_seqlens, starts, ends)


def _assert_same(got, want):
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype and g.shape == w.shape and torch.equal(g, w), (g, w)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64], ids=str)
@pytest.mark.parametrize("mode", [Mode.UNIFORM, Mode.DOWNSAMPLE], ids=lambda m: m.name)
@pytest.mark.parametrize("lengths", PACKED_LENGTHS, ids=str)
@pytest.mark.parametrize("k", [1, 3, 40])
def test_packed_window_compress_equals_composed_spans(dtype, mode, lengths, k):
    x, cu, longest, grid, _ = _packed_case(lengths, k, dtype=dtype)
    k = _spans.cap_at_frames(grid, k)
    num_out = _spans.num_outputs(grid, k)
    got = K.compress_packed(grid.x, grid.cu_seqlens, int(mode), float(k), 1, 0, num_out, longest)
    want = _composed_packed(grid, _spans.start_mask_every(grid, k), num_out, mode == Mode.DOWNSAMPLE)
    _assert_same(got, want)


def test_packed_window_compress_split_spans():
    """Long windows (k = 150) take the split forward and its combine kernel."""
    x, cu, longest, grid, _ = _packed_case([300, 151, 0, 1], 3, dim=5)
    num_out = _spans.num_outputs(grid, 150)
    got = K.compress_packed(grid.x, grid.cu_seqlens, int(Mode.UNIFORM), 150.0, 1, 0, num_out, longest)
    _assert_same(got, _composed_packed(grid, _spans.start_mask_every(grid, 150), num_out))


def _row_counts(lengths, frames):
    """Output rows to try: the fewest allowed (B), a few more, and the frame count."""
    return sorted({n for n in (len(lengths), len(lengths) + 1, 3, frames) if n >= len(lengths)})


@pytest.mark.parametrize("lengths", PACKED_LENGTHS, ids=str)
def test_packed_given_compress_equals_composed_spans(lengths):
    """Given start masks, fewest rows included: samples cut to fit merge their surplus."""
    x, cu, longest, grid, gen = _packed_case(lengths, 11)
    for density in (0.3, 1.0):
        mask = torch.rand(x.shape[0], generator=gen) < density
        for num_out in _row_counts(lengths, x.shape[0]):
            got = K.compress_packed(grid.x, grid.cu_seqlens, int(Mode.GIVEN), 1.0, 1, 0, num_out, longest, mask)
            is_start = _spans.force_sample_starts(grid, mask.view(1, -1))
            _assert_same(got, _composed_packed(grid, is_start, num_out))


DETECTIONS = [(Mode.PEAK, 0.05, 1, 0), (Mode.THRESHOLD, 0.5, 2, 0), (Mode.RATE, 3.0, 1, 0), (Mode.RATE, 2.5, 2, 3),
              (Mode.PEAK, 0.01, 1, 2)]


@pytest.mark.parametrize("lengths", PACKED_LENGTHS, ids=str)
def test_packed_detection_compress_equals_composed_spans(lengths):
    x, cu, longest, grid, _ = _packed_case(lengths, 12)
    for mode, param, min_len, max_len in DETECTIONS:
        min_len, max_len = _spans.cap_rules(grid, min_len, max_len)
        is_start = ops._detect_starts(grid, "triton", mode, param, min_len, max_len)
        for num_out in _row_counts(lengths, x.shape[0]):
            got = K.compress_packed(grid.x, grid.cu_seqlens, int(mode), param, min_len, max_len, num_out, longest)
            _assert_same(got, _composed_packed(grid, is_start, num_out))


@pytest.mark.parametrize("op", ["uniform_pool", "downsample", "segment_pool", "segment_compress"])
def test_public_packed_ops_forward_and_backward(op):
    """Against the torch reference (which composes), forward and gradient: the backward reads
    the global spans the kernel wrote."""
    x, cu, longest, _, gen = _packed_case([9, 0, 1, 14, 5], 13, dim=4, dtype=torch.float64, spare=3)
    mask = torch.rand(x.shape[0], generator=gen) < 0.3
    call = {
        "uniform_pool": lambda leaf, be: ops.uniform_pool(leaf, k=4, cu_seqlens=cu, max_seqlen=longest, backend=be),
        "downsample": lambda leaf, be: ops.downsample(leaf, k=3, cu_seqlens=cu, max_seqlen=longest, backend=be),
        "segment_pool": lambda leaf, be: ops.segment_pool(leaf, None, mask, max_segments=6, cu_seqlens=cu,
                                                          max_seqlen=longest, backend=be),
        "segment_compress": lambda leaf, be: ops.segment_compress(leaf, rate=2.5, min_len=2, cu_seqlens=cu,
                                                                  max_seqlen=longest, backend=be),
    }[op]
    outs = {}
    for backend in ("triton", "torch"):
        leaf = x.clone().requires_grad_(True)
        out = call(leaf, backend)
        weights = torch.arange(out.values.numel(), dtype=x.dtype).view_as(out.values)
        (out.values * weights).sum().backward()
        outs[backend] = (out, leaf.grad)
    (got, got_grad), (want, want_grad) = outs["triton"], outs["torch"]
    torch.testing.assert_close(got.values, want.values)
    for name in ("spans", "lengths", "cu_seqlens"):
        assert torch.equal(getattr(got, name), getattr(want, name)), name
    torch.testing.assert_close(got_grad, want_grad)


def test_packed_compress_gradient_equals_composed_path():
    """Through autograd (the recorded compress_packed op), bit for bit with span_mean's."""
    x, cu, longest, grid, gen = _packed_case([6, 0, 11, 1], 14, dim=5)
    mask = torch.rand(x.shape[0], generator=gen) < 0.4
    leaf = grid.x.clone().requires_grad_(True)
    values = kernel_ops.compress_packed(leaf, grid.cu_seqlens, int(Mode.GIVEN), 1.0, 1, 0, 7, longest, "triton",
                                        mask)[0]
    (got,) = torch.autograd.grad(values.cos().sum(), leaf)
    is_start = _spans.fit_packed_starts(grid, _spans.force_sample_starts(grid, mask.view(1, -1)), 7)
    starts, ends = _spans.spans_from_starts(grid, is_start, 7)
    leaf = grid.x.clone().requires_grad_(True)
    want_values = kernel_ops.span_mean(leaf, starts, ends, "triton")[0]
    (want,) = torch.autograd.grad(want_values.cos().sum(), leaf)
    assert torch.equal(values.detach(), want_values.detach()) and torch.equal(got, want)


def test_packed_compress_opcheck():
    x, cu, longest, grid, gen = _packed_case([6, 0, 11, 1], 15, dim=5)
    mask = torch.rand(x.shape[0], generator=gen) < 0.4
    for mode, param, boundaries in ((Mode.UNIFORM, 3.0, None), (Mode.GIVEN, 1.0, mask), (Mode.RATE, 2.0, None)):
        torch.library.opcheck(torch.ops.lalm_fast.compress_packed.default,
                              (grid.x.clone().requires_grad_(), grid.cu_seqlens, int(mode), param, 1, 0, 8, longest,
                               "triton", boundaries))


# --------------------------------------------------------------------------- normalised scores


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64], ids=str)
def test_normalized_scores_equal_composed_normalization(dtype):
    """The normalise kernel equals ``_detect.normalize_scores`` on the raw scores bit for bit:
    a NaN frame, a flat sample, length 0 and 1 included; packed samples too."""
    gen = torch.Generator().manual_seed(16)
    x = torch.randn(5, 23, 5, generator=gen).to(dtype)
    lengths = torch.tensor([23, 1, 0, 9, 17])
    x[0, 4] = math.nan
    x[3] = 1.0  # every score 0: a flat range normalises to 0
    got = ops.boundary_scores(x, lengths, normalize=True, backend="triton")
    want = _detect.normalize_scores(make_grid(x, lengths), ops.boundary_scores(x, lengths, backend="triton"))
    assert torch.equal(got, want)
    reference = ops.boundary_scores(x, lengths, normalize=True, backend="torch")
    torch.testing.assert_close(got, reference, equal_nan=True)
    flat = x.reshape(-1, 5)[:60]
    for lengths in PACKED_LENGTHS:
        cu = torch.tensor([0] + torch.tensor(lengths, dtype=torch.long).cumsum(0).tolist())
        longest = max(lengths, default=0)
        got = ops.boundary_scores(flat, normalize=True, cu_seqlens=cu, max_seqlen=longest, backend="triton")
        grid = make_grid(flat, cu_seqlens=cu, max_seqlen=longest)
        raw = ops.boundary_scores(flat, cu_seqlens=cu, max_seqlen=longest, backend="triton")
        assert torch.equal(got, _detect.normalize_scores(grid, raw[None])[0]), lengths


def test_normalized_scores_opcheck():
    x, lengths = torch.randn(3, 9, 4), torch.tensor([9, 2, 0])
    torch.library.opcheck(torch.ops.lalm_fast.boundary_scores.default, (x, lengths, "triton", True, None, 0))


# --------------------------------------------------------------------------- huge frames


@pytest.mark.parametrize("dtype,scale", [(torch.float32, 1e25), (torch.bfloat16, 1e30), (torch.float64, 1e160)],
                         ids=str)
def test_boundary_scores_of_huge_frames_match_the_reference(dtype, scale):
    """Frames past ~1e19 (fp32) overflow the plain sums; the kernel rescores those pairs from
    max-scaled frames, as the reference (fp64) does: close to it, NaN where it is NaN."""
    gen = torch.Generator().manual_seed(17)
    x = torch.randn(3, 30, 37, generator=gen, dtype=torch.float64)
    x = x * torch.logspace(-2, math.log10(scale), 30, dtype=torch.float64)[None, :, None]
    x[1, 5] = 0.0
    x[2, 7, 3] = math.nan
    x[2, 12, 0] = math.inf
    x = x.to(dtype)
    lengths = torch.tensor([30, 20, 25])
    got = ops.boundary_scores(x, lengths, backend="triton")
    want = ops.boundary_scores(x, lengths, backend="torch")
    assert torch.equal(got.isnan(), want.isnan()) and got.isnan().any()
    torch.testing.assert_close(got, want, equal_nan=True, rtol=0, atol=1e-6 if dtype != torch.float64 else 1e-12)
