"""Regression tests: thirteen inputs that broke the op contract, one test each
(``test_case_NN_...``), plus the smaller findings that came with them."""

import math
import signal
from contextlib import contextmanager

import pytest
import torch

import lalm_fast.ops as ops
from lalm_fast import nn as lnn
from tests import oracle

NAN = float("nan")
BIG = 2**63 - 1


@contextmanager
def deadline(seconds: int):
    """Fail instead of hanging (the bug some cases had)."""
    def expire(*_):
        raise TimeoutError(f"took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def packed(*lengths, dim=2):
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()])
    return torch.randn(int(cu[-1]), dim), cu, max(lengths)


# --------------------------------------------------------------------------- 1, 2: the reference


@pytest.mark.parametrize("bad", [NAN, math.inf])
def test_case_01_a_nan_or_inf_frame_reaches_only_its_own_token(cpu_backend, bad):
    x = torch.ones(1, 8, 2)
    x[0, 1, 0] = bad
    got = ops.uniform_pool(x, torch.tensor([6]), 2, backend=cpu_backend).values[0]
    assert torch.equal(got[0, 1], torch.tensor(1.0)) and (got[0, 0].isnan() if bad != bad else got[0, 0].isinf())
    assert torch.equal(got[1:3], torch.ones(2, 2)) and torch.equal(got[3], torch.zeros(2))

    xp, cu, longest = packed(4, 6)
    xp[1, 0] = bad
    out = ops.uniform_pool(xp, k=2, cu_seqlens=cu, max_seqlen=longest, backend=cpu_backend)
    assert out.values[2:].isfinite().all()  # the second sample's tokens and the padding rows


def test_case_02_a_huge_frame_does_not_cancel_later_tokens(cpu_backend):
    x = torch.ones(1, 8, 1)
    x[0, 0, 0] = 1e20
    got = ops.uniform_pool(x, None, 2, backend=cpu_backend).values.flatten()
    assert torch.equal(got, torch.tensor([5e19, 1.0, 1.0, 1.0]))


def test_the_reference_backward_gives_zero_outside_every_span_even_for_a_nan_grad():
    from lalm_fast.ops import reference

    grad = torch.full((1, 2, 3), NAN)
    out = reference.span_mean_backward(grad, torch.tensor([[1, 4]]), torch.tensor([[2, 5]]), 6)
    assert torch.equal(out[0, [0, 2, 3, 5]], torch.zeros(4, 3)) and out[0, [1, 4]].isnan().all()


# --------------------------------------------------------------------------- 3, 4, 5: surplus segments


def _check_packed_consistent(out, total_rows):
    assert out.values.shape[0] == total_rows
    assert torch.equal(out.cu_seqlens, torch.cat([torch.zeros(1, dtype=torch.long), out.lengths.cumsum(0)]))
    assert int(out.cu_seqlens[-1]) <= total_rows


def test_case_03_packed_surplus_merges_and_counts_match_rows(cpu_backend):
    xp, cu, longest = packed(4, 6)
    every = torch.ones(10, dtype=torch.bool)
    out = ops.segment_pool(xp, None, every, max_segments=3, cu_seqlens=cu, max_seqlen=longest, backend=cpu_backend)
    _check_packed_consistent(out, 3)
    assert out.lengths.tolist() == [2, 1]  # one row kept for the second sample, the rest to the first
    want = torch.stack([xp[0], xp[1:4].mean(0), xp[4:10].mean(0)])
    torch.testing.assert_close(out.values, want)
    assert out.spans.tolist() == [[0, 1], [1, 4], [0, 6]]

    compressed = ops.segment_compress(xp, threshold=-1.0, max_segments=3, cu_seqlens=cu, max_seqlen=longest,
                                      backend=cpu_backend)
    assert torch.equal(compressed.values, out.values) and torch.equal(compressed.lengths, out.lengths)


def test_case_03_packed_max_segments_below_the_sample_count_is_rejected(cpu_backend):
    xp, cu, longest = packed(4, 6)
    with pytest.raises(ValueError, match=r"max_segments \(1\) must be >= the number of packed samples \(2\)"):
        ops.segment_pool(xp, None, torch.ones(10, dtype=torch.bool), max_segments=1, cu_seqlens=cu,
                         max_seqlen=longest, backend=cpu_backend)


def test_case_03_packed_empty_samples_need_no_row(cpu_backend):
    xp, cu, longest = packed(0, 5, 0, 3)
    out = ops.segment_pool(xp, None, torch.ones(8, dtype=torch.bool), max_segments=4, cu_seqlens=cu,
                           max_seqlen=longest, backend=cpu_backend)
    _check_packed_consistent(out, 4)
    assert out.lengths.tolist() == [0, 3, 0, 1]


def test_case_04_surplus_segment_ids_merge_into_the_last_token(cpu_backend):
    x = torch.arange(10.0).reshape(1, 10, 1)
    out = ops.segment_pool(x, None, segment_ids=torch.arange(10)[None], max_segments=3, backend=cpu_backend)
    by_mask = ops.segment_pool(x, None, torch.ones(1, 10, dtype=torch.bool), max_segments=3, backend=cpu_backend)
    assert out.values.flatten().tolist() == [0.0, 1.0, 5.5] == by_mask.values.flatten().tolist()
    assert out.lengths.tolist() == [3] and out.spans[0, -1].tolist() == [2, 10]


def test_case_05_segment_ids_near_the_int64_limit(cpu_backend):
    x = torch.arange(10.0).reshape(1, 10, 1)
    ids = torch.tensor([[0] * 5 + [BIG] * 5])
    out = ops.segment_pool(x, None, segment_ids=ids, max_segments=3, backend=cpu_backend)
    assert out.values.flatten().tolist() == [2.0, 0.0, 7.0] and out.lengths.tolist() == [3]
    whole = ops.segment_pool(x, None, segment_ids=torch.full((1, 10), BIG), backend=cpu_backend)
    assert whole.lengths.tolist() == [10] and whole.values[0, 9].item() == 4.5


# --------------------------------------------------------------------------- 6, 7, 9: extreme arguments


@pytest.mark.parametrize("k", [10, 11, 2**40, BIG, 2**64])
def test_case_06_k_at_or_past_T_gives_one_token(cpu_backend, k):
    x, lengths = torch.randn(2, 10, 3), torch.tensor([10, 4])
    down = ops.downsample(x, lengths, k, backend=cpu_backend)
    assert down.lengths.tolist() == [1, 1] and torch.equal(down.values[:, 0], x[:, 0])
    pooled = ops.uniform_pool(x, lengths, k, backend=cpu_backend)
    assert pooled.lengths.tolist() == [1, 1]
    torch.testing.assert_close(pooled.values[:, 0], torch.stack([x[0].mean(0), x[1, :4].mean(0)]))
    xp, cu, longest = packed(3, 5)
    out = ops.uniform_pool(xp, k=k, cu_seqlens=cu, max_seqlen=longest, backend=cpu_backend)
    assert out.lengths.tolist() == [1, 1]
    for layer in (lnn.UniformPool(k), lnn.Downsample(k)):
        assert layer.output_lengths(torch.tensor([10, 0])).tolist() == [1, 0]


@pytest.mark.parametrize("rate", [math.inf, 1e400, NAN])
def test_case_07_non_finite_rate_is_rejected(cpu_backend, rate):
    x = torch.randn(2, 8, 3)
    for call in (lambda: ops.segment_compress(x, rate=rate, backend=cpu_backend),
                 lambda: ops.detect_boundaries(x, rate=rate, backend=cpu_backend),
                 lambda: lnn.SegmentPool(rate=rate)):
        with pytest.raises(ValueError, match="rate must be >= 1 and finite"):
            call()
    with pytest.raises(ValueError, match="rate"):
        lnn.build_compressor("segment:rate=inf")


@pytest.mark.parametrize("huge", [10**6, 2**62, 2**64])
def test_case_09_huge_min_len_acts_as_T_without_looping(cpu_backend, huge):
    x = torch.randn(2, 10, 3)
    xp, cu, longest = packed(4, 6)
    with deadline(20):
        for mode in ({}, {"threshold": 0.0}, {"rate": 2}):
            got = ops.detect_boundaries(x, min_len=huge, backend=cpu_backend, **mode)
            assert torch.equal(got, ops.detect_boundaries(x, min_len=10, backend=cpu_backend, **mode))
            got = ops.detect_boundaries(xp, min_len=huge, cu_seqlens=cu, max_seqlen=longest, backend=cpu_backend, **mode)
            assert torch.equal(got, ops.detect_boundaries(xp, min_len=10, cu_seqlens=cu, max_seqlen=longest,
                                                          backend=cpu_backend, **mode))
        got = ops.segment_compress(x, threshold=0.0, min_len=huge, max_len=huge, backend=cpu_backend)
        assert got.lengths.tolist() == [1, 1]


# --------------------------------------------------------------------------- 10, 11: empty shapes


def test_case_10_segment_pool_of_empty_input(cpu_backend):
    out = ops.segment_pool(torch.randn(2, 0, 3), None, torch.zeros(2, 0, dtype=torch.bool), backend=cpu_backend)
    assert out.values.shape == (2, 0, 3) and out.lengths.tolist() == [0, 0]
    out = ops.segment_pool(torch.randn(0, 3), None, torch.zeros(0, dtype=torch.bool), cu_seqlens=torch.tensor([0]),
                           max_seqlen=0, backend=cpu_backend)
    assert out.values.shape == (0, 3) and out.cu_seqlens.tolist() == [0]
    out = ops.segment_compress(torch.randn(0, 3), cu_seqlens=torch.tensor([0, 0, 0]), max_seqlen=0, backend=cpu_backend)
    assert out.values.shape == (0, 3) and out.lengths.tolist() == [0, 0]


@pytest.mark.parametrize("shape", [(0, 4, 3), (2, 0, 3), (2, 4, 0)])
def test_case_11_backward_of_an_empty_output(cpu_backend, shape):
    for op in (lambda x: ops.uniform_pool(x, None, 2, backend=cpu_backend),
               lambda x: ops.segment_compress(x, rate=2, backend=cpu_backend),
               lambda x: ops.segment_pool(x, None, torch.ones(x.shape[:2], dtype=torch.bool), backend=cpu_backend)):
        x = torch.randn(*shape, requires_grad=True)
        op(x).values.sum().backward()
        assert x.grad.shape == x.shape


# --------------------------------------------------------------------------- 12: torch.compile


@pytest.mark.slow
def test_case_12_compile_a_threshold_layer_fullgraph_dynamic():
    layer = lnn.build_compressor("segment:threshold=0.3")
    compiled = torch.compile(layer, fullgraph=True, dynamic=True)
    x, lengths = torch.randn(2, 12, 4), torch.tensor([12, 7])
    assert torch.equal(compiled(x, lengths).values, layer(x, lengths).values)


def test_case_12_detection_checks_take_no_math_call_a_symfloat_rejects():
    # math.isnan(SymFloat) is what broke the compiled graph; a NaN still gets a clear error.
    from lalm_fast.ops.arguments import check_detection_args

    with pytest.raises(ValueError, match="threshold must not be NaN"):
        check_detection_args(threshold=NAN)


# --------------------------------------------------------------------------- 13: NaN in detection


def _nan_frames():
    torch.manual_seed(0)
    x = torch.randn(3, 16, 4)
    x[0, 5, 0] = NAN
    x[1, 9, 2] = math.inf
    x[2, 1:3] = NAN
    return x, torch.tensor([16, 12, 16])


@pytest.mark.parametrize("mode", [{}, {"prominence": 0.0}, {"threshold": 0.2}, {"rate": 3}, {"rate": 2, "min_len": 2},
                                  {"min_len": 3}, {"threshold": -1.0, "max_len": 4}])
def test_case_13_backends_agree_on_nan_scores_and_a_nan_score_is_never_a_start(mode):
    x, lengths = _nan_frames()
    scores = ops.boundary_scores(x, lengths)
    masks = {name: ops.detect_boundaries(x, lengths, backend=name, **mode) for name in ("cpu", "torch")}
    assert torch.equal(masks["cpu"], masks["torch"])
    if "rate" not in mode and "max_len" not in mode:
        assert not (masks["cpu"][:, 1:] & scores[:, 1:].isnan()).any()
    tokens = {name: ops.segment_compress(x, lengths, backend=name, **mode) for name in ("cpu", "torch")}
    assert torch.equal(tokens["cpu"].lengths, tokens["torch"].lengths)
    assert torch.equal(tokens["cpu"].spans, tokens["torch"].spans)


def test_case_13_rate_mode_takes_nan_scores_last():
    x, lengths = _nan_frames()
    scores = ops.boundary_scores(x, lengths)
    for name in ("cpu", "torch"):
        starts = ops.detect_boundaries(x, lengths, rate=4, backend=name)
        assert not (starts[:, 1:] & scores[:, 1:].isnan()).any()  # 3 of 15 wanted: finite ones suffice


def test_case_13_normalised_scores_ignore_nan():
    x, lengths = _nan_frames()
    normed = ops.boundary_scores(x, lengths, normalize=True)
    assert normed.isfinite().all() and normed.min() >= 0
    assert (normed.amax(1) == 1).all() and (normed[0, 5:7] == 0).all()


# --------------------------------------------------------------------------- smaller findings


def test_boundary_scores_of_x_that_requires_grad_is_a_plain_tensor(cpu_backend):
    x = torch.randn(2, 6, 3, requires_grad=True)
    assert not ops.boundary_scores(x, backend=cpu_backend).requires_grad


@pytest.mark.parametrize("call, error, words", [
    (lambda: ops.segment_pool(torch.randn(1, 4, 2), None, torch.ones(1, 4, dtype=torch.bool), max_segments=2**62),
     ValueError, "max_segments must be <="),
    (lambda: ops.detect_boundaries(torch.randn(1, 4, 2), min_len=2**64, max_len=2**65), None, None),
    (lambda: lnn.build_compressor({"kind": ["uniform"]}), ValueError, "unknown compressor kind"),
    (lambda: lnn.build_compressor("none:3"), ValueError, "'none' takes no options"),
    (lambda: lnn.UniformPool(2).output_lengths(torch.tensor([-5])), ValueError, "lengths must be >= 0"),
    (lambda: lnn.UniformPool(2).output_lengths(torch.tensor([1.5])), TypeError, "lengths must be an integer"),
])
def test_errors_name_the_argument(call, error, words):
    if error is None:
        call()  # capped, not an overflow
        return
    with pytest.raises(error, match=words):
        call()


@pytest.mark.parametrize("dtype, huge", [(torch.float32, 1e30), (torch.float64, 1e300)])
def test_boundary_scores_of_huge_frames_do_not_overflow(cpu_backend, dtype, huge):
    # Found by the fuzz suite: |x|^2 overflowed, giving a score of 1 to two parallel frames.
    x = torch.tensor([[[-huge], [-0.29], [0.0], [3 * huge], [math.inf], [1.0]]], dtype=dtype)
    got = ops.boundary_scores(x, backend=cpu_backend)[0]
    assert got[:4].tolist() == [0.0, 0.0, 1.0, 1.0] and got[4:].isnan().all()


@pytest.mark.parametrize("tiny", [1e-9, 3e-12, 0.0])
def test_boundary_scores_of_a_tiny_frame_beside_a_huge_one(cpu_backend, tiny):
    # The pair overflows fp32 sums, so it is rescored from max-scaled frames; a frame below the
    # cosine's eps must keep the eps floor of the definition, 1 - dot / (max(|a|, eps) max(|b|, eps)).
    x = torch.tensor([[[tiny, -2 * tiny, 0.5 * tiny], [3e20, -1e20, 2e20]]], dtype=torch.float32)
    a, b = x[0, 0].double(), x[0, 1].double()
    eps = 1e-8
    expected = 1 - (a @ b) / (a.norm().clamp_min(eps) * b.norm().clamp_min(eps))
    got = ops.boundary_scores(x, backend=cpu_backend)[0, 1].double()
    assert torch.allclose(got, expected, rtol=1e-6, atol=1e-7), (got.item(), expected.item())
