"""``torch.library`` custom ops around the backend kernels.

Registering the kernels as custom ops (with fake implementations and an autograd formula)
lets ``torch.compile(fullgraph=True)`` trace the public ops without graph breaks, and keeps
the backend choice a plain string argument that the compiled graph records.
"""

from __future__ import annotations

from typing import Optional

import torch

from lalm_fast.ops import backends


def dispatch_free(x: torch.Tensor) -> bool:
    """True when a kernel may be called directly instead of through its custom op: eager mode
    and no gradient to record. Same kernel, same result; it saves the ~10 us the op
    dispatcher costs per call, which is most of the overhead at B=1."""
    return not torch.compiler.is_compiling() and not (torch.is_grad_enabled() and x.requires_grad)


def _check_kernel_output(out: torch.Tensor, shape: tuple, like: torch.Tensor) -> torch.Tensor:
    # A backend returning a wrong shape or dtype is a bug in that backend; catch it here
    # rather than as a confusing error three layers up.
    assert tuple(out.shape) == shape and out.dtype == like.dtype, (tuple(out.shape), shape, out.dtype, like.dtype)
    return out


@torch.library.custom_op("lalm_fast::span_mean", mutates_args=())
def span_mean(x: torch.Tensor, starts: torch.Tensor, ends: torch.Tensor, backend: str) -> torch.Tensor:
    out = backends.kernels(backend).span_mean(x, starts, ends)
    return _check_kernel_output(out, (x.shape[0], starts.shape[1], x.shape[2]), x)


@span_mean.register_fake
def _(x, starts, ends, backend):
    return x.new_empty(x.shape[0], starts.shape[1], x.shape[2])


@torch.library.custom_op("lalm_fast::span_mean_backward", mutates_args=())
def span_mean_backward(
    grad: torch.Tensor, starts: torch.Tensor, ends: torch.Tensor, num_frames: int, backend: str
) -> torch.Tensor:
    out = backends.kernels(backend).span_mean_backward(grad.contiguous(), starts, ends, num_frames)
    return _check_kernel_output(out, (grad.shape[0], num_frames, grad.shape[2]), grad)


@span_mean_backward.register_fake
def _(grad, starts, ends, num_frames, backend):
    return grad.new_empty(grad.shape[0], num_frames, grad.shape[2])


def _span_mean_setup_context(ctx, inputs, output):
    x, starts, ends, backend = inputs
    ctx.save_for_backward(starts, ends)
    ctx.num_frames = x.shape[1]
    ctx.backend = backend


def _span_mean_backward_formula(ctx, grad):
    starts, ends = ctx.saved_tensors
    return span_mean_backward(grad, starts, ends, ctx.num_frames, ctx.backend), None, None, None


span_mean.register_autograd(_span_mean_backward_formula, setup_context=_span_mean_setup_context)


@torch.library.custom_op("lalm_fast::boundary_scores", mutates_args=())
def boundary_scores(x: torch.Tensor, lengths: torch.Tensor, backend: str) -> torch.Tensor:
    out = backends.kernels(backend).boundary_scores(x, lengths)
    expected_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    assert tuple(out.shape) == tuple(x.shape[:2]) and out.dtype == expected_dtype
    return out


@boundary_scores.register_fake
def _(x, lengths, backend):
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    return x.new_empty(x.shape[:2], dtype=dtype)


# Compression modes as the kernels number them.
MODES = {"peak": 0, "threshold": 1, "rate": 2, "uniform": 3, "downsample": 4, "given": 5}


@torch.library.custom_op("lalm_fast::detect_starts", mutates_args=())
def detect_starts(scores: torch.Tensor, lengths: torch.Tensor, mode: int, param: float, min_len: int,
                  max_len: int, backend: str) -> torch.Tensor:
    """Start mask from raw scores, for backends that detect natively (padded input)."""
    return backends.kernels(backend).detect_boundaries(scores, lengths, mode, param, min_len, max_len)


@detect_starts.register_fake
def _(scores, lengths, mode, param, min_len, max_len, backend):
    return scores.new_empty(scores.shape, dtype=torch.bool)


@torch.library.custom_op("lalm_fast::compress", mutates_args=())
def compress(x: torch.Tensor, lengths: torch.Tensor, mode: int, param: float, min_len: int, max_len: int,
             num_out: int, backend: str, boundaries: Optional[torch.Tensor] = None
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """x to tokens in one kernel call, for backends that have it (padded input):
    ``(values, starts, ends, counts)``. Segmentation modes fuse scores, detection and pooling;
    uniform / downsample modes (param = k) build their spans inside the kernel; mode "given"
    pools the segments that a caller's ``boundaries`` start mask opens."""
    return backends.kernels(backend).compress(x, lengths, mode, param, min_len, max_len, num_out, boundaries)


@compress.register_fake
def _(x, lengths, mode, param, min_len, max_len, num_out, backend, boundaries=None):
    spans = lengths.new_empty(x.shape[0], num_out)
    return x.new_empty(x.shape[0], num_out, x.shape[2]), spans, spans.clone(), lengths.new_empty(x.shape[0])


def _compress_setup_context(ctx, inputs, output):
    _, starts, ends, _ = output
    ctx.save_for_backward(starts, ends)
    ctx.num_frames = inputs[0].shape[1]
    ctx.backend = inputs[7]
    ctx.mark_non_differentiable(*output[1:])


def _compress_backward(ctx, grad_values, *unused):
    starts, ends = ctx.saved_tensors
    grad = span_mean_backward(grad_values, starts, ends, ctx.num_frames, ctx.backend)
    return (grad,) + (None,) * 8


compress.register_autograd(_compress_backward, setup_context=_compress_setup_context)
