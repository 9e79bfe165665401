"""Spans of packed input (``x [N, D]`` sliced by ``cu_seqlens [B+1]``), computed inside the
span-mean kernel: no torch op builds them.

The output contract is :func:`lalm_fast.ops._spans.fit_packed_starts` +
``spans_from_starts`` + ``assemble``: ``num_out`` rows go to the samples in order, each later
non-empty sample keeping one row in reserve, so sample ``b`` keeps its first ``tokens[b]``
segments (``used[b] = min(used[b-1] + count[b], room[b])``, ``room[b] = num_out - later
non-empty samples``) and its last kept segment runs to the sample's end; rows past the total
are the empty span ``(N_valid, N_valid)``. ``cu_out = [0, used]``, and the spans handed to the
caller are local to each sample (``(0, 0)`` for unused rows).

Every span-mean program derives the rows it owns on its own: it walks ``cu_seqlens`` in
blocks of ``BLOCK_B`` samples (twice: once for the non-empty total, once for ``used``) and
picks, for each of its rows, the sample with ``used[b-1] <= row < used[b]``. That costs
``O(B)`` loads per program, far less than the row's frames for real batches, and needs no
communication between programs (no atomics, no second launch). ``count[b]`` is
``ceil(L_b / k)`` for windows (uniform_pool, downsample) or the number of starts of a
sample, written with their positions by :func:`compact_starts` (a given start mask) or the
packed detection kernel (``detect_boundaries.py``).
"""

from __future__ import annotations

import torch

from ._common import next_pow2, tl, triton

_BIG: tl.constexpr = tl.constexpr(2 ** 62)  # "no value yet" for the running minimum; far above any frame or row count


@triton.jit
def _min_combine(a, b):
    return tl.minimum(a, b)


@triton.jit
def _sample_bounds(cu_ptr, b, bmask, N):
    """First frame and end of samples ``b``, clamped to ``[0, N]`` (unchecked cu_seqlens on a
    GPU never read out of bounds); a decreasing pair is an empty sample."""
    first = tl.minimum(tl.maximum(tl.load(cu_ptr + b, mask=bmask, other=0), 0), N)
    end = tl.minimum(tl.maximum(tl.load(cu_ptr + b + 1, mask=bmask, other=0), first), N)
    return first, end


@triton.jit
def _segment_counts(seg_counts_ptr, b, bmask, first, end, K, FROM_STARTS: tl.constexpr):
    if FROM_STARTS:
        return tl.load(seg_counts_ptr + b, mask=bmask, other=0).to(tl.int64)
    return tl.where(bmask, (end - first + K - 1) // K, 0)


@triton.jit
def packed_spans(cu_ptr, seg_counts_ptr, positions_ptr, starts_ptr, ends_ptr, spans_ptr, counts_ptr, cu_out_ptr,
                 s, smask, sb, B, N, S, K, WIDTH, FROM_STARTS: tl.constexpr, BLOCK_B: tl.constexpr):
    """``(starts, ends)`` of output rows ``s`` (global frames); the first feature block of the
    first split writes them, the local spans, and (row block 0) ``counts`` and ``cu_out``."""
    s = s.to(tl.int64)
    writer = (tl.program_id(1) == 0) & (tl.program_id(2) == 0)
    non_empty_total = tl.zeros((), dtype=tl.int64)
    for b0 in range(0, B, BLOCK_B):
        b = b0 + tl.arange(0, BLOCK_B).to(tl.int64)
        bmask = b < B
        first, end = _sample_bounds(cu_ptr, b, bmask, N)
        non_empty_total += tl.sum(((end > first) & bmask).to(tl.int64), axis=0)
    total_carry = tl.zeros((), dtype=tl.int64)
    non_empty_carry = tl.zeros((), dtype=tl.int64)
    min_carry = tl.zeros((), dtype=tl.int64) + _BIG
    found = tl.zeros_like(s)
    own_first = tl.zeros_like(s)
    own_end = tl.zeros_like(s)
    own_prev = tl.zeros_like(s)
    own_used = tl.zeros_like(s)
    for b0 in range(0, B, BLOCK_B):
        b = b0 + tl.arange(0, BLOCK_B).to(tl.int64)
        bmask = b < B
        first, end = _sample_bounds(cu_ptr, b, bmask, N)
        count = _segment_counts(seg_counts_ptr, b, bmask, first, end, K, FROM_STARTS)
        non_empty = ((end > first) & bmask).to(tl.int64)
        total = total_carry + tl.cumsum(count, axis=0)
        slack = num_rows_left(S, non_empty_total, non_empty_carry + tl.cumsum(non_empty, axis=0), total)
        # slack of sample b - 1 from b's own terms, so the exclusive minimum is a plain scan too
        slack_prev = tl.where(b == 0, _BIG, slack + count - non_empty)
        low = tl.minimum(min_carry, tl.associative_scan(tl.where(bmask, slack, _BIG), 0, _min_combine))
        low_prev = tl.minimum(min_carry, tl.associative_scan(tl.where(bmask, slack_prev, _BIG), 0, _min_combine))
        used = total + tl.minimum(low, 0)
        used_prev = total - count + tl.minimum(low_prev, 0)
        if writer:
            if sb == 0:
                tl.store(counts_ptr + b, used - used_prev, mask=bmask)
                tl.store(cu_out_ptr + b + 1, used, mask=bmask)
        owns = (used_prev[None, :] <= s[:, None]) & (s[:, None] < used[None, :]) & bmask[None, :]
        found += tl.sum(owns.to(tl.int64), axis=1)
        own_first += tl.sum(tl.where(owns, first[None, :], 0), axis=1)
        own_end += tl.sum(tl.where(owns, end[None, :], 0), axis=1)
        own_prev += tl.sum(tl.where(owns, used_prev[None, :], 0), axis=1)
        own_used += tl.sum(tl.where(owns, used[None, :], 0), axis=1)
        total_carry += tl.sum(count, axis=0)
        non_empty_carry += tl.sum(non_empty, axis=0)
        min_carry = tl.minimum(min_carry, tl.min(tl.where(bmask, slack, _BIG), axis=0))
    one = tl.zeros((1,), dtype=tl.int64)  # 1-element vectors: scalar stores are not portable
    if writer:
        if sb == 0:
            tl.store(cu_out_ptr + one, one)
    j = s - own_prev  # the segment's rank inside its sample
    has = (found > 0) & smask
    if FROM_STARTS:
        st = tl.load(positions_ptr + own_first + j, mask=has, other=0)
        more = has & (j + 1 < own_used - own_prev)  # the last kept segment runs to the sample's end
        en = tl.where(more, tl.load(positions_ptr + own_first + j + 1, mask=more, other=0), own_end)
    else:
        st = own_first + j * K
        en = tl.minimum(st + WIDTH, own_end)
    row_end = tl.minimum(tl.maximum(tl.load(cu_ptr + B + one), 0), N)  # [1]: where unused rows sit
    st = tl.where(has, st, row_end)
    en = tl.where(has, en, row_end)
    if writer:
        tl.store(starts_ptr + s, st, mask=smask)
        tl.store(ends_ptr + s, en, mask=smask)
        tl.store(spans_ptr + 2 * s, tl.where(has, st - own_first, 0), mask=smask)
        tl.store(spans_ptr + 2 * s + 1, tl.where(has, en - own_first, 0), mask=smask)
    return st, en


@triton.jit
def num_rows_left(S, non_empty_total, non_empty_through, total):
    """``room - total``: rows left once samples ``0..b`` take all their segments and every
    later non-empty sample keeps one."""
    return S - (non_empty_total - non_empty_through) - total


@triton.jit(do_not_specialize=["N"])
def _compact_starts_kernel(mask_ptr, cu_ptr, positions_ptr, seg_counts_ptr, N, stride_m, BLOCK_T: tl.constexpr):
    """One program per sample: the frames where the caller's mask or the sample's first frame
    opens a segment, written in order at ``positions[first:]``, and their number."""
    b = tl.program_id(0).to(tl.int64)
    first = tl.minimum(tl.maximum(tl.load(cu_ptr + b), 0), N)
    end = tl.minimum(tl.maximum(tl.load(cu_ptr + b + 1), first), N)
    carry = tl.zeros((), dtype=tl.int64)
    for t0 in range(first, end, BLOCK_T):
        t = t0 + tl.arange(0, BLOCK_T).to(tl.int64)
        inside = t < end
        opens = inside & ((t == first) | (tl.load(mask_ptr + t * stride_m, mask=inside, other=0) != 0))
        rank = carry + tl.cumsum(opens.to(tl.int64), axis=0) - 1
        tl.store(positions_ptr + first + rank, t, mask=opens)
        carry += tl.sum(opens.to(tl.int64), axis=0)
    one = tl.zeros((1,), dtype=tl.int64)
    tl.store(seg_counts_ptr + b + one, carry + one)


def compact_starts(mask: torch.Tensor, cu_seqlens: torch.Tensor, max_seqlen: int):
    """``(positions [N], seg_counts [B])``: each sample's segment starts (its first frame and
    the frames ``mask [N]`` marks), in order from ``positions[cu_seqlens[b]]``. One launch."""
    frames, samples = mask.shape[0], cu_seqlens.shape[0] - 1
    positions = torch.empty((frames,), dtype=torch.int64, device=mask.device)
    seg_counts = torch.empty((max(samples, 0),), dtype=torch.int64, device=mask.device)
    if samples > 0:
        block_t = max(16, min(1024, next_pow2(max_seqlen)))
        _compact_starts_kernel[(samples,)](mask, cu_seqlens, positions, seg_counts, frames, mask.stride(0),
                                           BLOCK_T=block_t, num_warps=4)
    return positions, seg_counts


def block_samples(samples: int) -> int:
    """Samples per step of the row search in :func:`packed_spans`."""
    return max(16, min(64, next_pow2(samples)))
