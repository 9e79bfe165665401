"""Fused threshold segmentation + segment means (``segment_compress`` by threshold).

``threshold_segment_mean(x, lengths, threshold, num_out)`` returns
``(values [R, S, D], starts [R, S], ends [R, S], counts [R])`` with ``S = num_out``:

- segment starts are frame 0 (when ``lengths[r] > 0``) and every frame ``1 <= t < L``
  whose boundary score ``1 - cos(x[t-1], x[t])`` is ``> threshold``;
- ``values`` are the segment means (fp32 accumulation), ``ends[s]`` is the next start (or
  ``L`` for the last segment);
- if a sample has more than ``num_out`` segments, the last output row absorbs the rest
  (its end is ``L``); ``counts[r] = min(#segments, num_out)``;
- rows ``s >= counts[r]`` have ``starts = ends = L`` and zero values.

Reference: ``reference.boundary_scores`` + ``> threshold`` + ``reference.span_mean``.

Passes over ``x``: **two** (plus a tiny scan over the ``[R, T]`` fp32 scores).

1. ``_boundary_scores_kernel`` reads ``x`` once (its ``x[t-1]`` reads hit L1/L2) and
   writes ``[R, T]`` fp32 scores.
2. ``_threshold_spans_kernel`` (one program per row, no ``x`` traffic) scans the scores:
   boundary flags -> running count (``tl.cumsum`` with a carry across ``T`` tiles) ->
   ``starts``/``ends`` scattered to their output rows, trailing rows filled with ``L``.
3. ``_span_mean_fwd_kernel`` reads ``x`` again and writes the means.

Why not one pass: the output row of a frame is the number of boundaries before it, a
prefix count over time that depends on full-``D`` dot products of *all earlier* frames.
A single pass would need either one program per row (only ``R`` programs: 32 for the
Whisper batch on a 132-SM H100) or a cross-program decoupled look-back scan, which needs
atomics / spin-waits on flags (ruled out: no atomics, deterministic, graph-safe). A
chunked single pass that writes per-chunk partial sums and compacts them afterwards moves
about as many bytes as the second read (fp32 partials are 2x the bf16 output per chunk
boundary plus the re-read), so it is not a win either. The cost of step 3 is a second read
of ``x``; when ``x`` fits in L2 (H100: 50 MB, H200: 60 MB) that read is served from L2.

Row groups (``rows_per_group``, off by default): the three launches can run per group of
rows whose slice of ``x`` fits in half of L2, so that the second read of each group is
served from L2 instead of HBM. Measured on an H200 (B=32 T=1500 D=1280 bf16, 60 MB L2,
groups of 8 rows) it is *slower*: 148-152 us against 128-132 us without groups under a CUDA
graph, and much slower eagerly (12 launches instead of 3). Small groups under-fill the GPU
more than L2 reuse saves, so ungrouped is the default; ``rows_per_group=N`` keeps the
option for devices where that trade may differ (bench/bench_gpu.py sizes N from L2).
Measured fused / segment_pool: 1.52-1.70x (target 1.2x; bench/results/bench_gpu_summary_h200.md).
"""

from __future__ import annotations

import torch

from ._common import check_float, maybe_wrap, next_pow2, register_op, tl, triton
from .boundary import _launch_boundary_scores
from .span_pool import _launch_span_mean, _launch_span_mean_backward


@triton.jit(do_not_specialize=["T", "NUM_OUT"])
def _threshold_spans_kernel(
    scores_ptr, lengths_ptr, starts_ptr, ends_ptr, counts_ptr,
    T, NUM_OUT, threshold,
    BLOCK_T: tl.constexpr, BLOCK_S: tl.constexpr,
):
    r = tl.program_id(0).to(tl.int64)
    length = tl.load(lengths_ptr + r)
    srow = starts_ptr + r * NUM_OUT
    erow = ends_ptr + r * NUM_OUT
    carry = tl.zeros((), dtype=tl.int64)
    for t0 in range(0, T, BLOCK_T):
        t = t0 + tl.arange(0, BLOCK_T).to(tl.int64)
        sc = tl.load(scores_ptr + r * T + t, mask=t < T, other=0.0)
        # (t == 0) & (t < length), not (length > 0): the interpreter mis-types bool scalar & bool block
        flag = (t < length) & ((t == 0) | (sc > threshold))
        f = flag.to(tl.int64)
        ids = tl.cumsum(f, axis=0) + carry - 1  # output row of the segment starting at t
        tl.store(srow + ids, t, mask=flag & (ids < NUM_OUT))
        # the previous segment ends where this one starts, unless it is the last row,
        # which absorbs every later segment
        tl.store(erow + ids - 1, t, mask=flag & (ids >= 1) & (ids < NUM_OUT))
        carry += tl.sum(f, axis=0)
    nvalid = tl.minimum(carry, NUM_OUT)
    one = tl.arange(0, 1)  # 1-element vectors: scalar masked stores are not portable
    tl.store(erow + nvalid - 1 + one, length + one, mask=(nvalid + one) > 0)
    for s0 in range(0, NUM_OUT, BLOCK_S):
        s = s0 + tl.arange(0, BLOCK_S)
        m = (s >= nvalid) & (s < NUM_OUT)
        fill = tl.zeros((BLOCK_S,), dtype=tl.int64) + length
        tl.store(srow + s, fill, mask=m)
        tl.store(erow + s, fill, mask=m)
    tl.store(counts_ptr + r + one, nvalid + one)


def _launch_threshold_spans(scores, lengths, threshold: float, num_out: int, *, wrap: bool = False, out=None):
    rows, frames = scores.shape
    if out is None:
        index = dict(dtype=torch.int64, device=scores.device)
        out = (torch.empty((rows, num_out), **index), torch.empty((rows, num_out), **index),
               torch.empty((rows,), **index))
    starts, ends, counts = out
    if rows == 0:
        return starts, ends, counts
    kernel = maybe_wrap(_threshold_spans_kernel, wrap)
    block_t = max(16, min(1024, next_pow2(frames)))
    block_s = max(16, min(1024, next_pow2(num_out)))
    kernel[(rows,)](
        scores, lengths, starts, ends, counts, frames, num_out, float(threshold),
        BLOCK_T=block_t, BLOCK_S=block_s, num_warps=4,
    )
    return starts, ends, counts


def _threshold_segment_mean(x, lengths, threshold: float, num_out: int, *, wrap: bool = False,
                            rows_per_group: int = 0):
    check_float("x", x)
    num_out = int(num_out)
    if num_out < 1:
        raise ValueError(f"num_out must be >= 1, got {num_out}")
    group = int(rows_per_group)
    if group < 0:
        raise ValueError(f"rows_per_group must be >= 0 (0: all rows at once), got {rows_per_group}")
    rows = x.shape[0]
    if group == 0 or group >= rows:
        scores = _launch_boundary_scores(x, lengths, wrap=wrap)
        starts, ends, counts = _launch_threshold_spans(scores, lengths, threshold, num_out, wrap=wrap)
        values = _launch_span_mean(x, starts, ends, wrap=wrap)
        return values, starts, ends, counts
    index = dict(dtype=torch.int64, device=x.device)
    values = torch.empty((rows, num_out, x.shape[2]), dtype=x.dtype, device=x.device)
    starts, ends = torch.empty((rows, num_out), **index), torch.empty((rows, num_out), **index)
    counts = torch.empty((rows,), **index)
    for r0 in range(0, rows, group):  # static loop: the group count comes from shapes
        rs = slice(r0, min(rows, r0 + group))
        xg, lg = x[rs], lengths[rs]
        scores = _launch_boundary_scores(xg, lg, wrap=wrap)
        _launch_threshold_spans(scores, lg, threshold, num_out, wrap=wrap, out=(starts[rs], ends[rs], counts[rs]))
        _launch_span_mean(xg, starts[rs], ends[rs], wrap=wrap, out=values[rs])
    return values, starts, ends, counts


def threshold_segment_mean(x: torch.Tensor, lengths: torch.Tensor, threshold: float, num_out: int,
                           rows_per_group: int = 0):
    """Segment by ``boundary score > threshold`` and average each segment; see the module
    docstring for the exact contract. Two passes over ``x`` (scores, then means) plus a
    scan over the ``[R, T]`` scores (``rows_per_group``: 0, the default, runs all rows at
    once; N runs groups of N rows); no host sync, output sizes from ``num_out``."""
    return _threshold_segment_mean(x, lengths, threshold, num_out, rows_per_group=rows_per_group)


def _register_ops():
    from .span_pool import span_mean_backward_op

    def threshold_segment_mean_op(
        x: torch.Tensor, lengths: torch.Tensor, threshold: float, num_out: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        return _threshold_segment_mean(x, lengths, threshold, num_out, wrap=True)

    def threshold_segment_mean_fake(x, lengths, threshold, num_out):
        rows = x.shape[0]
        index = dict(dtype=torch.int64, device=x.device)
        return (
            x.new_empty(rows, num_out, x.shape[2]),
            torch.empty(rows, num_out, **index),
            torch.empty(rows, num_out, **index),
            torch.empty(rows, **index),
        )

    op = register_op("triton_threshold_segment_mean", threshold_segment_mean_op, threshold_segment_mean_fake)

    def setup_context(ctx, inputs, output):
        x = inputs[0]
        _, starts, ends, counts = output
        ctx.save_for_backward(starts, ends)
        ctx.num_frames = x.shape[1]
        ctx.mark_non_differentiable(starts, ends, counts)

    def backward(ctx, grad_values, *unused):
        starts, ends = ctx.saved_tensors
        return span_mean_backward_op(grad_values.contiguous(), starts, ends, ctx.num_frames), None, None, None

    op.register_autograd(backward, setup_context=setup_context)
    return op


threshold_segment_mean_op = _register_ops()
