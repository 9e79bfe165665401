"""Boundary detection in Triton: a start mask (or spans) from raw boundary scores.

Contract: :func:`lalm_fast.ops._detect.starts_from_scores`, decision for decision (the
tests compare masks bit for bit). Every mode, ``min_len`` and ``max_len``; padded rows
(``scores [R, T]``, ``lengths [R]``) or packed samples (``scores [1, N]`` sliced by
``cu_seqlens``).

One program per sample holds the sample's scores in registers (``BLOCK_T =
next_pow2(longest sample)``, at most :data:`MAX_FRAMES`; longer samples fall back to the
torch reference, see :func:`fits`). Detection is a 1-D problem of a few thousand frames,
so a single program sees the whole sample and needs no cross-program communication:

- *threshold*: ``s > threshold`` on scored frames (``1 <= t < L``).
- *peak*: min-max normalise (IEEE division, as torch), walls of +inf outside the scored
  frames (scipy's array edges), peaks as scipy's ``_local_maxima_1d`` (a plateau gives its
  middle frame) from a forward ``cummax`` of plateau starts and a reversed ``cummin`` of
  plateau ends; prominences from range-max / range-min sparse tables in a global scratch
  (L2-resident, ``debug_barrier`` between levels) walked by binary lifting, the right
  base read from the same tables by index arithmetic: the reference's algorithm.
- *rate*: exactly ``ceil(L / rate) - 1`` starts besides frame 0. Scores map to unsigned
  keys that sort like torch's descending sort (NaN mapped to -inf, -0 == +0); the m-th largest key
  comes from a bitwise binary search (``tl.sum(key >= c)`` per bit) and ties at that key
  go to the lowest frames (``tl.cumsum``). Deterministic, no sort. Frames that survive
  ``min_len`` suppression are taken first, as in the reference.
- ``min_len``: windowed suppression against the ranking stored in the scratch row.
- ``max_len``: ``cummax`` of the last start, then the modulo test.

The epilogue writes the result directly: the bool mask, or for ``compress`` the spans
``starts / ends [R, S]`` and ``counts [R]`` (the layout of ``compress.py``).
"""

from __future__ import annotations

import math
import struct

import torch

from lalm_fast.ops.modes import Mode

from ._common import exact_div, next_pow2, tl, triton

MAX_FRAMES = 4096  # longest sample one program detects; beyond it the torch reference runs
_PEAK, _THRESHOLD, _RATE = int(Mode.PEAK), int(Mode.THRESHOLD), int(Mode.RATE)
PEAK: tl.constexpr = tl.constexpr(_PEAK) if tl is not None else _PEAK  # the Mode numbers inside kernels
THRESHOLD: tl.constexpr = tl.constexpr(_THRESHOLD) if tl is not None else _THRESHOLD
RATE: tl.constexpr = tl.constexpr(_RATE) if tl is not None else _RATE


@triton.jit
def _walled(row_ptr, idx, length, low, span, normalized):
    """Normalised score at frames ``idx``, +inf outside the scored frames ``[1, length)``
    (the walls that end scipy's searches at the sample's edges)."""
    scored = (idx >= 1) & (idx < length)
    raw = tl.load(row_ptr + idx, mask=scored, other=0.0)
    # A NaN score normalises to 0, the lowest score (the contract's NaN rule).
    value = tl.where(normalized, exact_div(raw - low, span), 0.0)
    value = tl.where(raw == raw, value, 0.0)
    return tl.where(scored, value, float("inf"))


@triton.jit
def _min_combine(a, b):
    return tl.minimum(a, b)


@triton.jit
def _max_combine(a, b):
    return tl.maximum(a, b)


@triton.jit
def _peak_middles(row_ptr, t, length, low, span, normalized, BLOCK_T: tl.constexpr):
    """scipy's ``_local_maxima_1d``: a rise into a plateau and a strict fall out of it,
    marked at the plateau's middle frame (left of centre for an even plateau)."""
    v = _walled(row_ptr, t, length, low, span, normalized)
    changed = (v != _walled(row_ptr, t - 1, length, low, span, normalized)) | (t == 0)
    plateau_start = tl.associative_scan(tl.where(changed, t, 0), 0, _max_combine)
    ends_here = v != _walled(row_ptr, t + 1, length, low, span, normalized)
    # first frame after t that differs from its predecessor (BLOCK_T: none)
    plateau_end = tl.associative_scan(tl.where(ends_here, t + 1, BLOCK_T), 0, _min_combine, reverse=True)
    rises = _walled(row_ptr, plateau_start - 1, length, low, span, normalized) < v
    falls = (plateau_end < BLOCK_T) & (_walled(row_ptr, plateau_end, length, low, span, normalized) < v)
    middle = t == (plateau_start + plateau_end - 1) // 2
    return (t >= 1) & (t < length) & rises & falls & middle, v


@triton.jit
def _build_tables(max_ptr, min_ptr, v, t, LEVELS: tl.constexpr, BLOCK_T: tl.constexpr):
    """Level k holds the max / min of the 2^k frames ending at each frame (windows that
    reach before frame 0 read +inf, as the reference's shifted tables do)."""
    tl.store(max_ptr + t, v)
    tl.store(min_ptr + t, v)
    for k in tl.static_range(1, LEVELS + 1):
        tl.debug_barrier()  # level k - 1 is written by other threads of this program
        half = 1 << (k - 1)
        below = max_ptr + (k - 1) * BLOCK_T
        below_min = min_ptr + (k - 1) * BLOCK_T
        has_left = t >= half
        high = tl.maximum(tl.load(below + t, cache_modifier=".cg"),
                          tl.load(below + t - half, mask=has_left, other=float("inf"), cache_modifier=".cg"))
        low = tl.minimum(tl.load(below_min + t, cache_modifier=".cg"),
                         tl.load(below_min + t - half, mask=has_left, other=float("inf"), cache_modifier=".cg"))
        tl.store(max_ptr + k * BLOCK_T + t, high)
        tl.store(min_ptr + k * BLOCK_T + t, low)
    tl.debug_barrier()


@triton.jit
def _range_min(min_ptr, first, last, active, LEVELS: tl.constexpr, BLOCK_T: tl.constexpr):
    """min over frames ``[first, last]`` from two overlapping power-of-two windows."""
    size = last - first + 1
    level = tl.zeros_like(size)
    for k in tl.static_range(1, LEVELS + 1):
        level += (size >= (1 << k)).to(level.dtype)
    level_ptr = min_ptr + level * BLOCK_T
    left = tl.load(level_ptr + first + (1 << level) - 1, mask=active, other=0.0, cache_modifier=".cg")
    right = tl.load(level_ptr + last, mask=active, other=0.0, cache_modifier=".cg")
    return tl.minimum(left, right)


@triton.jit
def _prominences(max_ptr, min_ptr, v, t, is_peak, LEVELS: tl.constexpr, BLOCK_T: tl.constexpr):
    """scipy's ``peak_prominences`` at the peaks: height minus the higher of the two bases,
    each base the minimum up to the nearest strictly higher frame (or wall) on its side."""
    _build_tables(max_ptr, min_ptr, v, t, LEVELS, BLOCK_T)
    left = t - 1  # walks left over 2^k-frame blocks holding nothing higher than v
    right = t + 1
    for i in tl.static_range(LEVELS + 1):
        level_ptr = max_ptr + (LEVELS - i) * BLOCK_T
        width = 1 << (LEVELS - i)
        in_left = left >= 0
        block_left = tl.load(level_ptr + left, mask=is_peak & in_left, other=float("inf"), cache_modifier=".cg")
        left = tl.where(in_left & (block_left <= v), left - width, left)
        block_end = right + width - 1  # the `width` frames starting at `right` end here
        in_right = block_end < BLOCK_T
        block_right = tl.load(level_ptr + block_end, mask=is_peak & in_right, other=float("inf"),
                              cache_modifier=".cg")
        right = tl.where(in_right & (block_right <= v), right + width, right)
    left_base = _range_min(min_ptr, left + 1, t, is_peak, LEVELS, BLOCK_T)
    right_base = _range_min(min_ptr, t, right - 1, is_peak, LEVELS, BLOCK_T)
    return v - tl.maximum(left_base, right_base)


@triton.jit
def _suppress_close(candidates, ranking, t, length, min_len, ranked_ptr, BLOCK_T: tl.constexpr):
    """``_detect.suppress_close``: candidates at least ``min_len`` from the sample's edges
    that beat every candidate within ``min_len - 1`` frames on the left and tie or beat those
    on the right, all compared with the ranking as it was before any suppression."""
    keep = candidates & (t >= min_len) & (length - t >= min_len)
    ranked = tl.where(keep, ranking, float("-inf"))
    tl.store(ranked_ptr + t, ranked)
    tl.debug_barrier()  # neighbours' rankings come from other threads' stores
    for gap in range(1, min_len):
        left = tl.load(ranked_ptr + t - gap, mask=t >= gap, other=float("-inf"), cache_modifier=".cg")
        right = tl.load(ranked_ptr + t + gap, mask=t + gap < BLOCK_T, other=float("-inf"), cache_modifier=".cg")
        keep = keep & (ranked > left) & (ranked >= right)
    return keep


@triton.jit
def _descending_keys(s, KEY: tl.constexpr, KEY_BITS: tl.constexpr):
    """Unsigned keys whose order is torch's descending sort of ``s`` (no NaN: the caller maps
    it to -inf), -0 equal to +0."""
    s = tl.where(s == 0, 0.0, s)  # folds -0 into +0
    bits = s.to(KEY, bitcast=True)
    sign = bits >> (KEY_BITS - 1)
    top = tl.full((), 1, KEY) << (KEY_BITS - 1)
    return tl.where(sign == 1, ~bits, bits | top)


@triton.jit
def _take_largest(key, eligible, wanted, KEY: tl.constexpr, KEY_BITS: tl.constexpr):
    """The ``wanted`` eligible frames with the largest keys, ties to the lowest frames."""
    cut = tl.zeros((), dtype=KEY)  # grows to the wanted-th largest key, one bit at a time
    for i in range(KEY_BITS):
        trial = cut | (tl.full((), 1, KEY) << (KEY_BITS - 1 - i))
        enough = tl.sum((eligible & (key >= trial)).to(tl.int32), axis=0) >= wanted
        cut = tl.where(enough, trial, cut)
    above = eligible & (key > cut)
    at_cut = eligible & (key == cut)
    room = wanted - tl.sum(above.to(tl.int32), axis=0)
    return above | (at_cut & (tl.cumsum(at_cut.to(tl.int32), axis=0) <= room))


@triton.jit
def _rate_starts(s, t, length, rate, min_len, ranked_ptr, KEY: tl.constexpr, KEY_BITS: tl.constexpr,
                 BLOCK_T: tl.constexpr):
    """``ceil(L / rate) - 1`` starts: suppression survivors first, then any scored frame."""
    s = tl.where(s != s, float("-inf"), s)  # a NaN score ranks lowest, tied with -inf, as the reference
    scored = (t >= 1) & (t < length)
    preferred = scored
    if min_len > 1:
        preferred = _suppress_close(scored, s, t, length, min_len, ranked_ptr, BLOCK_T)
    wanted = tl.math.ceil(length.to(tl.float64) / rate).to(tl.int32) - 1  # fp64, as the reference
    wanted = tl.maximum(wanted, 0)
    key = _descending_keys(s, KEY, KEY_BITS)
    first_choice = tl.minimum(wanted, tl.sum(preferred.to(tl.int32), axis=0))
    chosen = _take_largest(key, preferred, first_choice, KEY, KEY_BITS)
    if first_choice < wanted:
        chosen = chosen | _take_largest(key, scored & ~preferred, wanted - first_choice, KEY, KEY_BITS)
    return chosen


@triton.jit
def _split_long(start, t, length, max_len):
    """A start every ``max_len`` frames after the last one, as the reference's ``split_long``."""
    last_start = tl.associative_scan(tl.where(start, t, -1), 0, _max_combine)
    return start | ((t < length) & ((t - last_start) % max_len == 0))


@triton.jit
def _write_spans(start, t, length, starts_ptr, ends_ptr, counts_ptr, row, num_out, BLOCK_S: tl.constexpr):
    """Spans of the segments ``start`` opens into output row ``row`` (``compress.py``'s
    layout: the last used row absorbs any surplus, unused rows are ``(L, L)``)."""
    srow = starts_ptr + row * num_out
    erow = ends_ptr + row * num_out
    ids = tl.cumsum(start.to(tl.int32), axis=0) - 1  # output row of the segment starting at t
    tl.store(srow + ids, t.to(tl.int64), mask=start & (ids < num_out))
    tl.store(erow + ids - 1, t.to(tl.int64), mask=start & (ids >= 1) & (ids < num_out))
    used = tl.minimum(tl.sum(start.to(tl.int32), axis=0), num_out)
    one = tl.arange(0, 1)  # 1-element vectors: scalar masked stores are not portable
    tl.store(erow + used - 1 + one, length.to(tl.int64) + one, mask=(used + one) > 0)
    for s0 in range(0, num_out, BLOCK_S):
        s = s0 + tl.arange(0, BLOCK_S)
        fill = tl.zeros((BLOCK_S,), dtype=tl.int64) + length
        tl.store(srow + s, fill, mask=(s >= used) & (s < num_out))
        tl.store(erow + s, fill, mask=(s >= used) & (s < num_out))
    tl.store(counts_ptr + row + one, used.to(tl.int64) + one)


@triton.jit
def _write_positions(start, t, base, positions_ptr, seg_counts_ptr, row):
    """Packed: the sample's starts in order from ``positions[base]`` (global frames) and their
    number, what ``packed_spans.py`` turns into spans (the layout of ``compact_starts``)."""
    rank = tl.cumsum(start.to(tl.int32), axis=0) - 1
    tl.store(positions_ptr + base + rank, base + t.to(tl.int64), mask=start)
    one = tl.arange(0, 1)  # 1-element vectors: scalar masked stores are not portable
    tl.store(seg_counts_ptr + row + one, tl.sum(start.to(tl.int64), axis=0) + one)


@triton.jit(do_not_specialize=["frames", "row_stride", "param_bits", "min_len", "max_len", "num_out"])
def _detect_kernel(
    scores_ptr, lengths_ptr, cu_seqlens_ptr, mask_ptr, starts_ptr, ends_ptr, counts_ptr, scratch_ptr,
    frames, row_stride, param_bits, min_len, max_len, num_out,
    MODE: tl.constexpr, PACKED: tl.constexpr, SPANS: tl.constexpr, BLOCK_T: tl.constexpr,
    LEVELS: tl.constexpr, BLOCK_S: tl.constexpr, KEY: tl.constexpr, KEY_BITS: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    # clamped, so unchecked lengths / cu_seqlens / max_seqlen on a GPU never reach out of bounds
    if PACKED:  # one flat [1, N] row: the sample's frames are [base, base + length)
        base = tl.minimum(tl.maximum(tl.load(cu_seqlens_ptr + row), 0), frames)
        length = tl.minimum(tl.load(cu_seqlens_ptr + row + 1) - base, frames - base)
        mask_base = base
    else:
        base = row * row_stride
        length = tl.minimum(tl.load(lengths_ptr + row), frames)
        mask_base = row * frames  # the mask is contiguous, the scores may be strided
    length = tl.minimum(tl.maximum(length, 0), BLOCK_T).to(tl.int32)
    t = tl.arange(0, BLOCK_T)
    row_ptr = scores_ptr + base
    s = tl.load(row_ptr + t, mask=t < length, other=0.0)
    scored = (t >= 1) & (t < length)
    # param is a float64's bits (a Python float as a kernel argument would be rounded to fp32)
    param64 = param_bits.to(tl.int64).to(tl.float64, bitcast=True)
    param = param64.to(s.dtype)  # compared in the score dtype, as torch compares with a Python float
    scratch = scratch_ptr + row * (2 * LEVELS + 3) * BLOCK_T  # ranking row, then max and min tables
    if MODE == RATE:
        start = _rate_starts(s, t, length, param64, min_len, scratch, KEY, KEY_BITS, BLOCK_T)
    else:
        if MODE == THRESHOLD:  # on the raw score
            candidates = scored & (s > param)
            ranking = s
        else:  # peak: prominence on the per-sample min-max normalised score
            ranged = scored & (s == s)  # a NaN score is left out of the normalisation range
            low = tl.min(tl.where(ranged, s, float("inf")), axis=0)
            high = tl.max(tl.where(ranged, s, float("-inf")), axis=0)
            normalized = high - low > 0
            span = tl.where(normalized, high - low, 1.0)  # as the reference: never a 0 / 0
            is_peak, ranking = _peak_middles(row_ptr, t, length, low, span, normalized, BLOCK_T)
            prominence = _prominences(scratch + BLOCK_T, scratch + (LEVELS + 2) * BLOCK_T, ranking, t, is_peak,
                                      LEVELS, BLOCK_T)
            candidates = is_peak & (prominence >= param)
        start = candidates
        if min_len > 1:
            start = _suppress_close(candidates, ranking, t, length, min_len, scratch, BLOCK_T)
    start = (start | (t == 0)) & (t < length)
    if max_len > 0:
        start = _split_long(start, t, length, max_len)
    if SPANS and PACKED:
        _write_positions(start, t, base, starts_ptr, counts_ptr, row)
    elif SPANS:
        _write_spans(start, t, length, starts_ptr, ends_ptr, counts_ptr, row, num_out, BLOCK_S)
    else:
        out_end = length if PACKED else frames  # padded rows are written whole (False past L)
        tl.store(mask_ptr + mask_base + t, start, mask=t < out_end)


def fits(max_frames: int) -> bool:
    """Whether one program can hold the longest sample (else the torch reference runs)."""
    return int(max_frames) <= MAX_FRAMES


def num_warps_for(block_t: int) -> int:
    """Warps per program: 4-16 frames a thread (4096 frames x 16 warps: 128 registers, no
    spills on sm_90, tests/test_triton_aot.py)."""
    return 4 if block_t <= 512 else (8 if block_t <= 2048 else 16)


def _param_bits(param: float) -> int:
    return struct.unpack("<q", struct.pack("<d", float(param)))[0]


def _launch(scores, lengths, cu_seqlens, mode, param, min_len, max_len, max_frames, mask=None, spans=None):
    block_t = max(16, next_pow2(max_frames))
    levels = int(math.log2(block_t))
    fp64 = scores.dtype == torch.float64
    rows = cu_seqlens.shape[0] - 1 if cu_seqlens is not None else scores.shape[0]
    needs_scratch = min_len > 1 or mode == _PEAK
    scratch = scores.new_empty((rows * (2 * levels + 3) * block_t) if needs_scratch else 1)
    starts, ends, counts = spans if spans is not None else (mask, mask, mask)
    num_out = starts.shape[1] if spans is not None and starts.dim() == 2 else 0
    _detect_kernel[(rows,)](
        scores, lengths, cu_seqlens if cu_seqlens is not None else lengths, mask if mask is not None else scores,
        starts, ends, counts, scratch,
        scores.shape[1], scores.stride(0), _param_bits(param), int(min_len), int(max_len), num_out,
        MODE=int(mode), PACKED=cu_seqlens is not None, SPANS=spans is not None, BLOCK_T=block_t, LEVELS=levels,
        BLOCK_S=max(16, min(1024, next_pow2(num_out))), KEY=tl.uint64 if fp64 else tl.uint32,
        KEY_BITS=64 if fp64 else 32, num_warps=num_warps_for(block_t),
    )


def _checked_scores(scores: torch.Tensor) -> torch.Tensor:
    if scores.dtype not in (torch.float32, torch.float64) or scores.dim() != 2:
        raise TypeError(f"scores must be a float32 or float64 [R, T] tensor, got {scores.dtype} {list(scores.shape)}")
    return scores if scores.stride(-1) == 1 else scores.contiguous()


def _reference_mask(scores, lengths, mode, param, min_len, max_len, cu_seqlens):
    from lalm_fast.ops._detect import starts_from_scores
    from lalm_fast.ops._inputs import Grid

    if cu_seqlens is None:
        grid = Grid(scores[:, :, None], lengths, False, None)
    else:
        grid = Grid(scores[:, :, None], cu_seqlens.diff(), True, cu_seqlens)
    return starts_from_scores(grid, scores, Mode(mode), param, min_len, max_len)


def _reference_spans(scores, lengths, mode, param, min_len, max_len, num_out):
    from lalm_fast.ops import _spans
    from lalm_fast.ops._inputs import Grid

    grid = Grid(scores[:, :, None], lengths, False, None)
    mask = _reference_mask(scores, lengths, mode, param, min_len, max_len, None)
    starts, ends = _spans.spans_from_starts(grid, mask, num_out)
    return starts, ends, _spans.segment_counts(grid, mask, num_out)


def detect_boundaries(scores: torch.Tensor, lengths: torch.Tensor, mode: int, param: float, min_len: int,
                      max_len: int, cu_seqlens=None, max_seqlen: int = 0) -> torch.Tensor:
    """Bool start mask shaped like ``scores``: padded ``[R, T]`` with ``lengths [R]``, or
    packed ``[1, N]`` with ``cu_seqlens [B+1]`` and ``max_seqlen`` (the longest sample).
    Samples longer than :data:`MAX_FRAMES` run the torch reference instead."""
    scores = _checked_scores(scores)
    if mode not in (_PEAK, _THRESHOLD, _RATE):
        raise ValueError(f"mode must be 0 (peak), 1 (threshold) or 2 (rate), got {mode}")
    max_frames = scores.shape[1] if cu_seqlens is None else int(max_seqlen)
    if not fits(max_frames):
        return _reference_mask(scores, lengths, mode, param, min_len, max_len, cu_seqlens)
    # packed frames past cu_seqlens[-1] belong to no sample and stay False
    mask = (torch.empty if cu_seqlens is None else torch.zeros)(scores.shape, dtype=torch.bool, device=scores.device)
    if mask.numel() and (cu_seqlens is None or cu_seqlens.shape[0] > 1):
        _launch(scores, lengths, cu_seqlens, mode, param, min_len, max_len, max_frames, mask=mask)
    return mask


def detect_spans(scores: torch.Tensor, lengths: torch.Tensor, mode: int, param: float, min_len: int, max_len: int,
                 num_out: int):
    """``(starts [R, S], ends [R, S], counts [R])`` of the detected segments of padded rows,
    ``S = num_out`` (the layout of :func:`lalm_fast.kernels.compress`)."""
    scores = _checked_scores(scores)
    rows, frames = scores.shape
    index = dict(dtype=torch.int64, device=scores.device)
    spans = (torch.empty((rows, num_out), **index), torch.empty((rows, num_out), **index),
             torch.empty((rows,), **index))
    if rows and frames and fits(frames):
        _launch(scores, lengths, None, mode, param, min_len, max_len, frames, spans=spans)
    elif rows:
        spans = _reference_spans(scores, lengths, mode, param, min_len, max_len, num_out)
    return spans


def detect_positions(scores: torch.Tensor, cu_seqlens: torch.Tensor, mode: int, param: float, min_len: int,
                     max_len: int, max_seqlen: int):
    """Packed ``scores [1, N]``: ``(positions [N], seg_counts [B])``, each sample's detected
    starts (frame 0 of the sample included) in order from ``positions[cu_seqlens[b]]``, and
    their number (the layout of :func:`.packed_spans.compact_starts`)."""
    from .packed_spans import compact_starts

    scores = _checked_scores(scores)
    if not fits(max_seqlen):
        lengths = cu_seqlens.diff()
        mask = _reference_mask(scores, lengths, mode, param, min_len, max_len, cu_seqlens)
        return compact_starts(mask[0], cu_seqlens, max_seqlen)
    samples = cu_seqlens.shape[0] - 1
    positions = torch.empty((scores.shape[1],), dtype=torch.int64, device=scores.device)
    seg_counts = torch.empty((max(samples, 0),), dtype=torch.int64, device=scores.device)
    if samples > 0 and scores.shape[1]:
        _launch(scores, cu_seqlens, cu_seqlens, mode, param, min_len, max_len, max_seqlen,
                spans=(positions, positions, seg_counts))
    elif samples > 0:
        seg_counts.zero_()
    return positions, seg_counts
