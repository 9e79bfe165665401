"""torch.library registration: opcheck, and torch.compile(fullgraph=True) with changing shapes."""

import pytest
import torch

import lalm_fast.ops as ops
from lalm_fast.ops import custom_ops


def span_samples(backend):
    x = torch.randn(2, 9, 5)
    starts = torch.tensor([[0, 3, 5], [0, 2, 2]])
    ends = torch.tensor([[3, 5, 9], [2, 2, 2]])
    return [
        (x, starts, ends, backend),
        (x.double().requires_grad_(), starts, ends, backend),
        (x[:, ::2].contiguous().half(), starts.clamp(max=5), ends.clamp(max=5), backend),
    ]


def test_opcheck_span_mean(cpu_backend):
    for args in span_samples(cpu_backend):
        torch.library.opcheck(custom_ops.span_mean, args)


def test_opcheck_span_mean_backward(cpu_backend):
    grad = torch.randn(2, 3, 5)
    starts = torch.tensor([[0, 3, 5], [0, 2, 2]])
    ends = torch.tensor([[3, 5, 9], [2, 2, 2]])
    torch.library.opcheck(custom_ops.span_mean_backward, (grad, starts, ends, 9, cpu_backend))


def test_opcheck_boundary_scores(cpu_backend):
    torch.library.opcheck(custom_ops.boundary_scores, (torch.randn(3, 7, 5), torch.tensor([7, 2, 0]), cpu_backend))


@pytest.mark.slow
def test_compile_fullgraph_with_changing_batch_and_time(cpu_backend):
    def pipeline(x, lengths):
        pooled = ops.uniform_pool(x, lengths, 3, backend=cpu_backend)
        segmented = ops.segment_compress(x, lengths, rate=3, backend=cpu_backend)
        peaks = ops.segment_compress(x, lengths, prominence=0.05, min_len=2, backend=cpu_backend)
        return pooled.values.sum() + segmented.values.sum() + peaks.values.sum()

    compiled = torch.compile(pipeline, fullgraph=True, dynamic=True)
    for batch, frames in [(2, 30), (3, 47), (1, 64)]:
        x = torch.randn(batch, frames, 8, requires_grad=True)
        lengths = torch.randint(1, frames + 1, (batch,))
        got = compiled(x, lengths)
        torch.testing.assert_close(got, pipeline(x, lengths), rtol=1e-5, atol=1e-4)
        (grad,) = torch.autograd.grad(got, x)
        (want,) = torch.autograd.grad(pipeline(x, lengths), x)
        torch.testing.assert_close(grad, want)


def test_opcheck_native_detection_and_fused_compress():
    x = torch.randn(3, 20, 6)
    lengths = torch.tensor([20, 7, 0])
    scores = custom_ops.boundary_scores(x, lengths, "cpu")
    for mode, param in ((0, 0.05), (1, 0.5), (2, 3.0), (3, 3.0), (4, 2.0)):
        if mode <= 2:
            torch.library.opcheck(custom_ops.detect_starts, (scores, lengths, mode, param, 2, 0, "cpu"))
        torch.library.opcheck(custom_ops.compress, (x, lengths, mode, param, 1, 0, 7, "cpu"))
    torch.library.opcheck(custom_ops.compress,
                          (x.double().requires_grad_(), lengths, 2, 2.0, 1, 0, 10, "cpu"))
    boundaries = torch.rand(3, 20) < 0.3
    torch.library.opcheck(custom_ops.compress, (x.requires_grad_(), lengths, 5, 1.0, 1, 0, 20, "cpu", boundaries))
