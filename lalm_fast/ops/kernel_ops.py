"""The kernel ops: one ``torch.library`` custom op per backend kernel, autograd registered once.

Schemas (namespace ``lalm_fast``), the same for every backend, which is the last argument::

    span_mean(Tensor x, Tensor starts, Tensor ends, str backend) -> Tensor
    span_mean_backward(Tensor grad, Tensor starts, Tensor ends, SymInt num_frames, str backend) -> Tensor
    boundary_scores(Tensor x, Tensor lengths, str backend, bool normalize=False, Tensor? cu_seqlens=None,
                    int max_seqlen=0) -> Tensor
    detect_boundaries(Tensor scores, Tensor lengths, int mode, float param, int min_len, int max_len,
                      str backend, Tensor? cu_seqlens=None, int max_seqlen=0) -> Tensor
    compress(Tensor x, Tensor lengths, int mode, float param, int min_len, int max_len, SymInt num_out,
             str backend, Tensor? boundaries) -> (Tensor, Tensor, Tensor, Tensor)
    compress_packed(Tensor x, Tensor cu_seqlens, int mode, float param, int min_len, int max_len,
                    SymInt num_out, int max_seqlen, str backend, Tensor? boundaries)
        -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)

Each op runs ``backends.kernels(backend).<name>``. Being custom ops with fake implementations,
they trace into ``torch.compile(fullgraph=True)`` graphs without breaks and keep the backend
a plain string in the graph; the gradient of ``span_mean`` and of ``compress``'s and
``compress_packed``'s values is ``span_mean_backward``, on the same backend.

The functions below are what the public ops call. When nothing records the call (eager
mode, no gradient wanted) they call the kernel directly: same kernel, same result, without
the 20-30 us the op dispatcher adds per call, which dominates small inputs.
"""

from __future__ import annotations

from typing import Optional

import torch

from lalm_fast.ops import backends


def _unrecorded(x: torch.Tensor) -> bool:
    return not torch.compiler.is_compiling() and not (torch.is_grad_enabled() and x.requires_grad)


def _score_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


# --------------------------------------------------------------------------- span_mean


@torch.library.custom_op("lalm_fast::span_mean", mutates_args=())
def _span_mean_op(x: torch.Tensor, starts: torch.Tensor, ends: torch.Tensor, backend: str) -> torch.Tensor:
    return backends.kernels(backend).span_mean(x, starts, ends)


@_span_mean_op.register_fake
def _(x, starts, ends, backend):
    return x.new_empty(x.shape[0], starts.shape[1], x.shape[2])


@torch.library.custom_op("lalm_fast::span_mean_backward", mutates_args=())
def _span_mean_backward_op(grad: torch.Tensor, starts: torch.Tensor, ends: torch.Tensor, num_frames: int,
                           backend: str) -> torch.Tensor:
    return backends.kernels(backend).span_mean_backward(grad.contiguous(), starts, ends, num_frames)


@_span_mean_backward_op.register_fake
def _(grad, starts, ends, num_frames, backend):
    return grad.new_empty(grad.shape[0], num_frames, grad.shape[2])


def _save_spans(ctx, starts, ends, num_frames, backend):
    ctx.save_for_backward(starts, ends)
    ctx.num_frames = num_frames
    ctx.backend = backend


def _grad_of_means(ctx, grad_values):
    starts, ends = ctx.saved_tensors
    return _span_mean_backward_op(grad_values, starts, ends, ctx.num_frames, ctx.backend)


_span_mean_op.register_autograd(
    lambda ctx, grad: (_grad_of_means(ctx, grad), None, None, None),
    setup_context=lambda ctx, inputs, output: _save_spans(ctx, inputs[1], inputs[2], inputs[0].shape[1], inputs[3]),
)


def span_mean(x: torch.Tensor, starts: torch.Tensor, ends: torch.Tensor, backend: str) -> torch.Tensor:
    """``[R, S, D]`` means of ``x[r, starts[r, s]:ends[r, s]]``; differentiable in ``x``."""
    if _unrecorded(x):
        return backends.kernels(backend).span_mean(x, starts, ends)
    return _span_mean_op(x, starts, ends, backend)


# --------------------------------------------------------------------------- boundary_scores


@torch.library.custom_op("lalm_fast::boundary_scores", mutates_args=())
def _boundary_scores_op(x: torch.Tensor, lengths: torch.Tensor, backend: str, normalize: bool = False,
                        cu_seqlens: Optional[torch.Tensor] = None, max_seqlen: int = 0) -> torch.Tensor:
    return _run_scores(x, lengths, backend, normalize, cu_seqlens, max_seqlen)


@_boundary_scores_op.register_fake
def _(x, lengths, backend, normalize=False, cu_seqlens=None, max_seqlen=0):
    return x.new_empty(x.shape[:2], dtype=_score_dtype(x))


def _run_scores(x, lengths, backend, normalize, cu_seqlens, max_seqlen):
    kernel = backends.kernels(backend).boundary_scores
    if not normalize:  # raw scores: the signature every backend has
        return kernel(x, lengths)
    return kernel(x, lengths, normalize=True, cu_seqlens=cu_seqlens, max_seqlen=max_seqlen)


def boundary_scores(x: torch.Tensor, lengths: torch.Tensor, backend: str, normalize: bool = False,
                    cu_seqlens: Optional[torch.Tensor] = None, max_seqlen: int = 0) -> torch.Tensor:
    """``[R, T]`` raw scores ``1 - cos(x[t-1], x[t])`` (not differentiable, so cut from the
    graph: a result that required grad would fail in backward). ``normalize`` (backends where
    ``backends.normalizes``): each sample's scores min-max normalised, samples sliced by
    ``cu_seqlens`` for packed input (``x [1, N, D]``, ``max_seqlen`` its longest sample)."""
    x = x.detach()
    if _unrecorded(x):
        return _run_scores(x, lengths, backend, normalize, cu_seqlens, max_seqlen)
    return _boundary_scores_op(x, lengths, backend, normalize, cu_seqlens, max_seqlen)


# --------------------------------------------------------------------------- detect_boundaries


@torch.library.custom_op("lalm_fast::detect_boundaries", mutates_args=())
def _detect_boundaries_op(scores: torch.Tensor, lengths: torch.Tensor, mode: int, param: float, min_len: int,
                          max_len: int, backend: str, cu_seqlens: Optional[torch.Tensor] = None,
                          max_seqlen: int = 0) -> torch.Tensor:
    return _run_detection(scores, lengths, mode, param, min_len, max_len, backend, cu_seqlens, max_seqlen)


@_detect_boundaries_op.register_fake
def _(scores, lengths, mode, param, min_len, max_len, backend, cu_seqlens=None, max_seqlen=0):
    return scores.new_empty(scores.shape, dtype=torch.bool)


def _run_detection(scores, lengths, mode, param, min_len, max_len, backend, cu_seqlens, max_seqlen):
    kernel = backends.kernels(backend).detect_boundaries
    if cu_seqlens is None:  # padded: the signature every detecting backend has
        return kernel(scores, lengths, mode, param, min_len, max_len)
    return kernel(scores, lengths, mode, param, min_len, max_len, cu_seqlens, max_seqlen)


def detect_boundaries(scores: torch.Tensor, lengths: torch.Tensor, mode: int, param: float, min_len: int,
                      max_len: int, backend: str, cu_seqlens: Optional[torch.Tensor] = None,
                      max_seqlen: int = 0) -> torch.Tensor:
    """``[R, T]`` bool start mask from raw scores (backends where ``backends.detects``);
    packed (``scores [1, N]`` with ``cu_seqlens`` and ``max_seqlen``) where
    ``backends.detects(backend, packed=True)``."""
    if _unrecorded(scores):
        return _run_detection(scores, lengths, mode, param, min_len, max_len, backend, cu_seqlens, max_seqlen)
    return _detect_boundaries_op(scores, lengths, mode, param, min_len, max_len, backend, cu_seqlens, max_seqlen)


# --------------------------------------------------------------------------- compress


@torch.library.custom_op("lalm_fast::compress", mutates_args=())
def _compress_op(x: torch.Tensor, lengths: torch.Tensor, mode: int, param: float, min_len: int, max_len: int,
                 num_out: int, backend: str, boundaries: Optional[torch.Tensor] = None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return tuple(backends.kernels(backend).compress(x, lengths, mode, param, min_len, max_len, num_out, boundaries))


@_compress_op.register_fake
def _(x, lengths, mode, param, min_len, max_len, num_out, backend, boundaries=None):
    spans = lengths.new_empty(x.shape[0], num_out)
    return x.new_empty(x.shape[0], num_out, x.shape[2]), spans, spans.clone(), lengths.new_empty(x.shape[0])


def _compress_setup_context(ctx, inputs, output):
    _, starts, ends, _ = output
    ctx.mark_non_differentiable(*output[1:])
    _save_spans(ctx, starts, ends, inputs[0].shape[1], inputs[7])


_compress_op.register_autograd(
    lambda ctx, grad_values, *unused: (_grad_of_means(ctx, grad_values),) + (None,) * 8,
    setup_context=_compress_setup_context,
)


def compress(x: torch.Tensor, lengths: torch.Tensor, mode: int, param: float, min_len: int, max_len: int,
             num_out: int, backend: str, boundaries: Optional[torch.Tensor] = None):
    """``(values [B, S, D], starts [B, S], ends [B, S], counts [B])`` in one kernel, for the
    backends and modes where ``backends.compresses``; ``values`` is differentiable in ``x``."""
    if _unrecorded(x):
        return backends.kernels(backend).compress(x, lengths, mode, param, min_len, max_len, num_out, boundaries)
    return _compress_op(x, lengths, mode, param, min_len, max_len, num_out, backend, boundaries)


# --------------------------------------------------------------------------- compress_packed


@torch.library.custom_op("lalm_fast::compress_packed", mutates_args=())
def _compress_packed_op(x: torch.Tensor, cu_seqlens: torch.Tensor, mode: int, param: float, min_len: int,
                        max_len: int, num_out: int, max_seqlen: int, backend: str,
                        boundaries: Optional[torch.Tensor] = None
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return tuple(backends.kernels(backend).compress_packed(x, cu_seqlens, mode, param, min_len, max_len, num_out,
                                                           max_seqlen, boundaries))


@_compress_packed_op.register_fake
def _(x, cu_seqlens, mode, param, min_len, max_len, num_out, max_seqlen, backend, boundaries=None):
    samples = cu_seqlens.shape[0] - 1
    spans = cu_seqlens.new_empty(1, num_out)
    return (x.new_empty(num_out, x.shape[2]), cu_seqlens.new_empty(num_out, 2), cu_seqlens.new_empty(samples),
            cu_seqlens.new_empty(samples + 1), spans, spans.clone())


def _compress_packed_setup_context(ctx, inputs, output):
    ctx.mark_non_differentiable(*output[1:])
    _save_spans(ctx, output[4], output[5], inputs[0].shape[1], inputs[8])


def _grad_of_packed_means(ctx, grad_values):
    return _grad_of_means(ctx, grad_values[None])  # the means of the one grid row [1, N, D]


_compress_packed_op.register_autograd(
    lambda ctx, grad_values, *unused: (_grad_of_packed_means(ctx, grad_values),) + (None,) * 9,
    setup_context=_compress_packed_setup_context,
)


def compress_packed(x: torch.Tensor, cu_seqlens: torch.Tensor, mode: int, param: float, min_len: int,
                    max_len: int, num_out: int, max_seqlen: int, backend: str,
                    boundaries: Optional[torch.Tensor] = None):
    """Packed input ``x [1, N, D]`` (the grid): ``(values [num_out, D], spans [num_out, 2],
    counts [B], cu_out [B+1], starts [1, num_out], ends [1, num_out])``, the output of
    ``_spans.assemble`` plus the global spans, where ``backends.compresses_packed``;
    ``values`` is differentiable in ``x``."""
    if _unrecorded(x):
        return backends.kernels(backend).compress_packed(x, cu_seqlens, mode, param, min_len, max_len, num_out,
                                                         max_seqlen, boundaries)
    return _compress_packed_op(x, cu_seqlens, mode, param, min_len, max_len, num_out, max_seqlen, backend,
                               boundaries)
