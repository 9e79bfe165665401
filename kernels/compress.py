"""Spans + span means in one call: the triton backend's ``compress``, every mode.

``compress(x, lengths, mode, param, min_len, max_len, num_out, boundaries)`` returns
``(values [R, S, D], starts [R, S], ends [R, S], counts [R])`` with ``S = num_out``.

Detection modes (peak, threshold, rate; any ``min_len`` / ``max_len``):

- segment starts are those of ``detect_boundaries`` on the boundary scores (frame 0 when
  ``lengths[r] > 0``); ``ends[s]`` is the next start (or ``L`` for the last segment);
- ``values`` are the segment means (fp32 accumulation);
- if a sample has more than ``num_out`` segments, the last output row absorbs the rest
  (its end is ``L``); ``counts[r] = min(#segments, num_out)``;
- rows ``s >= counts[r]`` have ``starts = ends = L`` and zero values.

Given mode (``segment_pool`` with a start mask): the same spans from ``boundaries``, by
``_start_scan_kernel``; two launches. Uniform and downsample modes (``param = k``):
windows ``[s k, min(s k + k, L))`` or ``[s k, s k + 1)``, computed inside the span-mean
kernel (``span_mean.window_mean``), which writes the spans and ``counts = min(ceil(L / k),
num_out)`` too; one launch (two when long windows split). Segment-ids and offsets modes
(``boundaries`` holds the ids ``[B, T]`` or offsets ``[B, S+1]``): ``segment_spans.py``
writes the spans, then the means; two launches. No torch op builds spans on the way.

Reference: ``reference.boundary_scores`` + ``_detect.starts_from_scores`` +
``reference.span_mean``.

Three launches, two passes over ``x`` (plus a pass over the ``[R, T]`` scores):

1. ``boundary_scores`` reads ``x`` once (its ``x[t-1]`` reads hit L1/L2) and writes scores.
2. ``detect_boundaries.detect_spans`` (one program per row, no ``x`` traffic) detects and
   writes ``starts``/``ends``/``counts`` directly. Rows longer than its limit
   (``detect_boundaries.MAX_FRAMES``) use ``_start_scan_kernel`` (threshold mode without
   min_len / max_len: a scan over ``T`` tiles with a carried count, any ``T``) or the torch
   reference.
3. ``span_mean`` reads ``x`` again and writes the means.

Why not one pass: the output row of a frame is the number of boundaries before it, a
prefix count over time that depends on full-``D`` dot products of *all earlier* frames.
A single pass would need either one program per row (only ``R`` programs, far fewer than
the GPU's SMs for a typical batch) or a cross-program decoupled look-back scan, which needs
atomics / spin-waits on flags (ruled out: no atomics, deterministic, graph-safe). The cost
of step 3 is a second read of ``x``, served from L2 when ``x`` fits there. Measurements of
this trade, including L2-sized row groups, are in ``docs/gpu-notes.md``.
"""

from __future__ import annotations

import torch

from lalm_fast.ops.modes import Mode

from ._common import check_float, next_pow2, tl, triton
from .boundary_scores import boundary_scores
from .detect_boundaries import detect_positions, detect_spans, fits
from .packed_spans import compact_starts
from .segment_spans import segment_spans
from .span_mean import packed_mean, span_mean, window_mean


@triton.jit(do_not_specialize=["T", "NUM_OUT"])
def _start_scan_kernel(
    flags_ptr, lengths_ptr, starts_ptr, ends_ptr, counts_ptr,
    T, NUM_OUT, threshold,
    BLOCK_T: tl.constexpr, BLOCK_S: tl.constexpr, GIVEN: tl.constexpr,
):
    """Spans of the segments that start where ``scores > threshold`` (or, ``GIVEN``, where
    the caller's bool mask is set), frame 0 always, one program per row scanning T tiles."""
    r = tl.program_id(0).to(tl.int64)
    length = tl.load(lengths_ptr + r)
    srow = starts_ptr + r * NUM_OUT
    erow = ends_ptr + r * NUM_OUT
    carry = tl.zeros((), dtype=tl.int64)
    for t0 in range(0, T, BLOCK_T):
        t = t0 + tl.arange(0, BLOCK_T).to(tl.int64)
        if GIVEN:
            opens = tl.load(flags_ptr + r * T + t, mask=t < T, other=0) != 0
        else:
            opens = tl.load(flags_ptr + r * T + t, mask=t < T, other=0.0) > threshold
        # (t == 0) & (t < length), not (length > 0): the interpreter mis-types bool scalar & bool block
        flag = (t < length) & ((t == 0) | opens)
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


def _scan_spans(flags, lengths, threshold: float, num_out: int, given: bool):
    """``(starts, ends, counts)`` from scores above ``threshold`` or from a given start mask."""
    rows, frames = flags.shape
    index = dict(dtype=torch.int64, device=flags.device)
    starts, ends = torch.empty((rows, num_out), **index), torch.empty((rows, num_out), **index)
    counts = torch.empty((rows,), **index)
    if rows == 0:
        return starts, ends, counts
    block_t = max(16, min(1024, next_pow2(frames)))
    block_s = max(16, min(1024, next_pow2(num_out)))
    _start_scan_kernel[(rows,)](
        flags, lengths, starts, ends, counts, frames, num_out, float(threshold),
        BLOCK_T=block_t, BLOCK_S=block_s, GIVEN=given, num_warps=4,
    )
    return starts, ends, counts


def supports(mode: int, min_len: int, max_len: int) -> bool:
    """Every mode; ``min_len`` / ``max_len`` (any values) act in the detection modes only."""
    return min_len >= 1 and max_len >= 0


def _spans(scores, lengths, mode: int, param: float, min_len: int, max_len: int, num_out: int):
    if not fits(scores.shape[1]) and mode == Mode.THRESHOLD and min_len <= 1 and max_len == 0:
        return _scan_spans(scores, lengths, param, num_out, given=False)  # tiled over T: any length
    return detect_spans(scores, lengths, mode, param, min_len, max_len, num_out)


def compress(x: torch.Tensor, lengths: torch.Tensor, mode: int, param: float, min_len: int, max_len: int,
             num_out: int, boundaries=None):
    """``(values, starts, ends, counts)``; see the module docstring. No host sync; output
    sizes from ``num_out``."""
    mode = Mode(mode)
    if not supports(mode, min_len, max_len) or mode.takes_segments != (boundaries is not None):
        raise ValueError(f"the triton compress needs min_len >= 1, max_len >= 0 and boundaries in modes GIVEN, "
                         f"SEGMENT_IDS and OFFSETS only (got mode={mode.name}, min_len={min_len}, max_len={max_len})")
    check_float("x", x)
    num_out = int(num_out)
    if num_out < 1:
        raise ValueError(f"num_out must be >= 1, got {num_out}")
    if mode in (Mode.UNIFORM, Mode.DOWNSAMPLE):  # one launch: spans from arithmetic inside the kernel
        k = int(param)
        return window_mean(x, lengths, k, 1 if mode == Mode.DOWNSAMPLE else k, num_out)
    if mode == Mode.GIVEN:
        mask = boundaries if boundaries.is_contiguous() else boundaries.contiguous()  # the scan reads rows of T
        starts, ends, counts = _scan_spans(mask, lengths, 0.0, num_out, given=True)
    elif mode.takes_segments:  # ids or offsets: a binary search / clamp per output row
        starts, ends, counts = segment_spans(boundaries, lengths, x.shape[1], num_out, mode == Mode.SEGMENT_IDS)
    else:
        starts, ends, counts = _spans(boundary_scores(x, lengths), lengths, mode, param, min_len, max_len, num_out)
    return span_mean(x, starts, ends), starts, ends, counts


PACKED_MODES = frozenset(Mode) - {Mode.SEGMENT_IDS, Mode.OFFSETS}  # ids and offsets need padded input


def compress_packed(x: torch.Tensor, cu_seqlens: torch.Tensor, mode: int, param: float, min_len: int,
                    max_len: int, num_out: int, max_seqlen: int, boundaries=None):
    """Packed input ``x [1, N, D]`` sliced by ``cu_seqlens [B+1]``: ``(values [num_out, D],
    spans [num_out, 2] local to each sample, counts [B], cu_out [B+1], starts [1, num_out],
    ends [1, num_out])``, the layout of ``lalm_fast.ops._spans.assemble``; ``starts`` /
    ``ends`` are global frames, for the backward. Windows: one launch; a given start mask
    ``boundaries [N]``: two (its starts compacted per sample, then spans and means);
    detection: three (scores, detection writing the starts, then spans and means). The
    spans of every mode are computed in the span-mean kernel, see :mod:`.packed_spans`."""
    mode = Mode(mode)
    if mode not in PACKED_MODES or not supports(mode, min_len, max_len) or mode.takes_segments != (
            boundaries is not None):
        raise ValueError(f"the triton packed compress runs modes {sorted(m.name for m in PACKED_MODES)} with "
                         f"min_len >= 1, max_len >= 0 and boundaries in mode GIVEN only (got mode={mode.name})")
    check_float("x", x)
    num_out = int(num_out)
    if mode in (Mode.UNIFORM, Mode.DOWNSAMPLE):
        k = int(param)
        return packed_mean(x, cu_seqlens, num_out, k=k, width=1 if mode == Mode.DOWNSAMPLE else k)
    frames = x.shape[1]
    if frames == 0:  # every sample is empty: windows of any k give the same (no) segments
        return packed_mean(x, cu_seqlens, num_out)
    if mode == Mode.GIVEN:
        starts_at = compact_starts(boundaries, cu_seqlens, max_seqlen)
    else:
        scores = boundary_scores(x, cu_seqlens[-1:])  # one row; a sample's first score is never read
        starts_at = detect_positions(scores, cu_seqlens, mode, param, min_len, max_len, max_seqlen)
    return packed_mean(x, cu_seqlens, num_out, starts_at=starts_at)
