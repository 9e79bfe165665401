"""Bad input raises a clear error naming the argument: never a crash, hang or wrong answer."""

import pytest
import torch

import lalm_fast.ops as ops
from lalm_fast import _C

X = torch.randn(2, 6, 4)
LENGTHS = torch.tensor([6, 3])

CASES = [
    # (description, call, error type, words the message must contain)
    ("x not a tensor", lambda: ops.uniform_pool([[1.0]], None, 2), TypeError, "x must be a torch.Tensor"),
    ("integer x", lambda: ops.uniform_pool(X.long(), LENGTHS, 2), TypeError, "x must be float"),
    ("x rank 2 without cu_seqlens", lambda: ops.uniform_pool(X[0], None, 2), ValueError, "[B, T, D]"),
    ("x rank 4", lambda: ops.boundary_scores(X[None]), ValueError, "[B, T, D]"),
    ("k = 0", lambda: ops.uniform_pool(X, LENGTHS, 0), ValueError, "k must be >= 1"),
    ("k float", lambda: ops.downsample(X, LENGTHS, 2.0), TypeError, "k must be an int"),
    ("k bool", lambda: ops.downsample(X, LENGTHS, True), TypeError, "k must be an int"),
    ("lengths < 0", lambda: ops.uniform_pool(X, torch.tensor([6, -1]), 2), ValueError, "lengths must lie in [0, T=6]"),
    ("lengths > T", lambda: ops.segment_compress(X, torch.tensor([7, 1]), rate=2), ValueError, "lengths must lie"),
    ("lengths float", lambda: ops.uniform_pool(X, LENGTHS.float(), 2), TypeError, "lengths must be an integer"),
    ("lengths wrong shape", lambda: ops.uniform_pool(X, torch.tensor([6]), 2), ValueError, "lengths must have shape [2]"),
    ("lengths on another device", lambda: ops.uniform_pool(X, LENGTHS.to("meta"), 2), ValueError, "lengths is on meta"),
    ("lengths and mask", lambda: ops.uniform_pool(X, LENGTHS, 2, attention_mask=torch.ones(2, 6)), ValueError,
     "either lengths or attention_mask"),
    ("mask wrong shape", lambda: ops.uniform_pool(X, attention_mask=torch.ones(2, 5), k=2), ValueError,
     "attention_mask must have shape"),
    ("mask left-padded", lambda: ops.uniform_pool(X, attention_mask=torch.tensor([[0, 1, 1, 1, 1, 1]] * 2), k=2),
     ValueError, "left-aligned"),
    ("boundaries not bool", lambda: ops.segment_pool(X, LENGTHS, torch.ones(2, 6)), TypeError, "boundaries must be a bool"),
    ("boundaries wrong shape", lambda: ops.segment_pool(X, LENGTHS, torch.ones(2, 5, dtype=torch.bool)), ValueError,
     "boundaries must have shape [2, 6]"),
    ("no segments given", lambda: ops.segment_pool(X, LENGTHS), ValueError, "exactly one of boundaries"),
    ("two segment forms", lambda: ops.segment_pool(X, LENGTHS, torch.ones(2, 6, dtype=torch.bool),
                                                   segment_ids=torch.zeros(2, 6, dtype=torch.long)), ValueError, "exactly one"),
    ("unsorted segment ids", lambda: ops.segment_pool(X, LENGTHS, segment_ids=torch.tensor([[0, 1, 0, 1, 2, 2]] * 2)),
     ValueError, "non-decreasing"),
    ("decreasing offsets", lambda: ops.segment_pool(X, LENGTHS, offsets=torch.tensor([[0, 3, 2]] * 2)), ValueError,
     "offsets must be >= 0 and non-decreasing"),
    ("rate < 1", lambda: ops.segment_compress(X, LENGTHS, rate=0.5), ValueError, "rate must be >= 1"),
    ("two modes", lambda: ops.detect_boundaries(X, LENGTHS, rate=2, threshold=0.3), ValueError, "rate and threshold"),
    ("negative prominence", lambda: ops.detect_boundaries(X, LENGTHS, prominence=-0.1), ValueError, "prominence must be >= 0"),
    ("max_len < min_len", lambda: ops.detect_boundaries(X, LENGTHS, min_len=3, max_len=2), ValueError, "max_len (2)"),
    ("max_len with rate", lambda: ops.segment_compress(X, LENGTHS, rate=2, max_len=4), ValueError, "max_len cannot"),
    ("min_len 0", lambda: ops.detect_boundaries(X, LENGTHS, min_len=0), ValueError, "min_len must be >= 1"),
    ("unknown backend", lambda: ops.uniform_pool(X, LENGTHS, 2, backend="fast"), ValueError, "backend must be one of"),
    ("GPU backend on CPU tensors", lambda: ops.uniform_pool(X, LENGTHS, 2, backend="cuda"), ValueError,
     "runs on cuda tensors"),
    ("packed without max_seqlen", lambda: ops.uniform_pool(X[0], k=2, cu_seqlens=torch.tensor([0, 6])), ValueError,
     "needs max_seqlen"),
    ("packed max_seqlen tensor", lambda: ops.uniform_pool(X[0], k=2, cu_seqlens=torch.tensor([0, 6]),
                                                          max_seqlen=torch.tensor(6)), TypeError, "Python int"),
    ("packed cu_seqlens past N", lambda: ops.uniform_pool(X[0], k=2, cu_seqlens=torch.tensor([0, 9]), max_seqlen=9),
     ValueError, "end at <= N=6"),
    ("packed max_seqlen too small", lambda: ops.uniform_pool(X[0], k=2, cu_seqlens=torch.tensor([0, 6]), max_seqlen=3),
     ValueError, "max_seqlen=3 is smaller"),
    ("packed with lengths", lambda: ops.uniform_pool(X[0], LENGTHS, 2, cu_seqlens=torch.tensor([0, 6]), max_seqlen=6),
     ValueError, "not lengths"),
    ("packed segment ids", lambda: ops.segment_pool(X[0], segment_ids=torch.zeros(6, dtype=torch.long),
                                                    cu_seqlens=torch.tensor([0, 6]), max_seqlen=6), ValueError,
     "needs padded input"),
]


@pytest.mark.parametrize("call, error, words", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_raises_clear_error(call, error, words):
    with pytest.raises(error) as info:
        call()
    assert words in str(info.value)


def test_forced_backend_env_var(monkeypatch):
    monkeypatch.setenv("LALM_FAST_BACKEND", "nope")
    with pytest.raises(ValueError, match="LALM_FAST_BACKEND must be one of"):
        ops.uniform_pool(X, LENGTHS, 2)
    monkeypatch.setenv("LALM_FAST_BACKEND", "torch")
    assert torch.equal(ops.uniform_pool(X, LENGTHS, 2).values, ops.uniform_pool(X, LENGTHS, 2, backend="torch").values)


@pytest.mark.parametrize(
    "starts, ends, words",
    [
        ([[0, 3]], [[3, 9]], "outside [0, 6]"),
        ([[-1, 3]], [[3, 6]], "outside"),
        ([[0, 2]], [[3, 6]], "sorted and disjoint"),
        ([[4, 0]], [[6, 3]], "sorted and disjoint"),
    ],
)
def test_cpu_kernel_rejects_bad_spans_instead_of_reading_out_of_bounds(starts, ends, words):
    x = torch.randn(1, 6, 4)
    with pytest.raises(RuntimeError, match=words.replace("[", r"\[").replace("]", r"\]")):
        _C.cpu.span_mean(x, torch.tensor(starts), torch.tensor(ends))
    with pytest.raises(RuntimeError):
        _C.cpu.span_mean_backward(torch.randn(1, 2, 4), torch.tensor(starts), torch.tensor(ends), 6)


def test_cpu_kernel_rejects_wrong_dtypes():
    x = torch.randn(1, 6, 4)
    with pytest.raises(RuntimeError, match="int64"):
        _C.cpu.span_mean(x, torch.tensor([[0]], dtype=torch.int32), torch.tensor([[3]], dtype=torch.int32))
    with pytest.raises(RuntimeError, match="floating"):
        _C.cpu.span_mean(x.long(), torch.tensor([[0]]), torch.tensor([[3]]))
    with pytest.raises(RuntimeError, match="lengths must be int64"):
        _C.cpu.boundary_scores(x, torch.tensor([6], dtype=torch.int32))


@pytest.mark.parametrize("mode", [-1, 8, 99])
def test_cpu_compress_rejects_an_unknown_mode(mode):
    x, lengths = torch.randn(1, 6, 4), torch.tensor([6])
    with pytest.raises(RuntimeError, match="mode must be"):
        _C.cpu.compress(x, lengths, mode, 2.0, 1, 0, 3)


def test_cpu_detection_rejects_the_fixed_modes():
    scores, lengths = torch.rand(1, 6), torch.tensor([6])
    for mode in (3, 4, 5, 6, 7):  # uniform, downsample, given, segment ids, offsets: compress only
        with pytest.raises(RuntimeError, match="mode must be 0 \\(peak\\), 1 \\(threshold\\), 2 \\(rate\\), got"):
            _C.cpu.detect_boundaries(scores, lengths, mode, 2.0, 1, 0)
