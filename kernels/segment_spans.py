"""Spans of ``segment_pool``'s segment ids or CSR offsets, written by one launch.

``segment_spans(segs, lengths, num_out, from_ids)`` returns ``(starts [B, S], ends [B, S],
counts [B])`` with ``S = num_out``:

- ids (``segs [B, T]``, sorted along time, padding ignored): row ``s`` spans the frames with
  id ``s``, ``[lower_bound(s), upper_bound(s))`` inside ``[0, L)``; the last row runs to
  ``L`` (ids past it merge there); ``counts = clamp(last id + 1, 0, S)``. As
  ``_segment_id_spans`` in ``lalm_fast/ops/__init__.py``, which does it with ~25 torch ops.
- offsets (``segs [B, S+1]``): ``[min(o[s], L), min(o[s+1], L))``; ``counts = S``.

Program = (row, block of ``BLOCK_S`` output rows). Ids take a vectorised binary search
over the row (``STEPS = bit_length(T)`` halvings), so every program is independent: no
scan, no atomics. The means follow in ``span_mean`` (two launches in all).
"""

from __future__ import annotations

import torch

from ._common import next_pow2, tl, triton


@triton.jit
def _bound(segs_row, stride_t, target, length, STEPS, UPPER: tl.constexpr):
    """First frame in ``[0, length)`` whose id is >= target (> target when UPPER), else
    length: a binary search per lane; STEPS = bit_length(T) halvings empty any range."""
    lo = tl.zeros_like(target)
    hi = tl.zeros_like(target) + length
    for _ in range(0, STEPS):
        active = lo < hi
        mid = (lo + hi) // 2
        v = tl.load(segs_row + mid * stride_t, mask=active, other=0).to(tl.int64)
        if UPPER:
            right = active & (v <= target)
        else:
            right = active & (v < target)
        lo = tl.where(right, mid + 1, lo)
        hi = tl.where(active & (right == 0), mid, hi)
    return lo


@triton.jit(do_not_specialize=["S", "T", "STEPS"])
def _segment_spans_kernel(
    segs_ptr, lengths_ptr, starts_ptr, ends_ptr, counts_ptr,
    S, T, stride_r, stride_t, STEPS,
    BLOCK_S: tl.constexpr, FROM_IDS: tl.constexpr,
):
    r = tl.program_id(0).to(tl.int64)
    sb = tl.program_id(1)
    length = tl.minimum(tl.maximum(tl.load(lengths_ptr + r), 0), T)  # unchecked lengths stay in the row
    s = (sb * BLOCK_S + tl.arange(0, BLOCK_S)).to(tl.int64)
    smask = s < S
    row = segs_ptr + r * stride_r
    one = tl.zeros((1,), dtype=tl.int64)  # 1-element vectors: scalar stores are not portable
    if FROM_IDS:
        st = _bound(row, stride_t, s, length, STEPS, False)
        en = tl.where(s == S - 1, length, _bound(row, stride_t, s, length, STEPS, True))  # last row: the surplus
        if sb == 0:
            last = tl.load(row + (length - 1 + one) * stride_t, mask=(length + one) > 0, other=-1).to(tl.int64)
            # capped before the + 1: an id near the int64 limit must not wrap around
            tl.store(counts_ptr + r + one, tl.maximum(tl.minimum(last, S - 1) + 1, 0))
    else:
        st = tl.minimum(tl.load(row + s * stride_t, mask=smask, other=0).to(tl.int64), length)
        en = tl.minimum(tl.load(row + (s + 1) * stride_t, mask=smask, other=0).to(tl.int64), length)
        if sb == 0:
            tl.store(counts_ptr + r + one, one + S)
    tl.store(starts_ptr + r * S + s, st, mask=smask)
    tl.store(ends_ptr + r * S + s, en, mask=smask)


def segment_spans(segs: torch.Tensor, lengths: torch.Tensor, frames: int, num_out: int, from_ids: bool):
    """``(starts, ends, counts)`` of sorted segment ids ``[B, T]`` (``from_ids``) or CSR
    offsets ``[B, num_out + 1]``, for ``x`` of ``frames`` frames; see the module docstring.
    No host sync."""
    rows = segs.shape[0]
    index = dict(dtype=torch.int64, device=segs.device)
    starts, ends = torch.empty((rows, num_out), **index), torch.empty((rows, num_out), **index)
    counts = torch.empty((rows,), **index)
    if rows == 0 or num_out == 0:
        return starts, ends, counts
    block_s = max(16, min(256, next_pow2(num_out)))
    _segment_spans_kernel[(rows, triton.cdiv(num_out, block_s))](
        segs, lengths, starts, ends, counts, num_out, frames,
        segs.stride(0), segs.stride(1), max(1, frames).bit_length(),
        BLOCK_S=block_s, FROM_IDS=from_ids, num_warps=4,
    )
    return starts, ends, counts
