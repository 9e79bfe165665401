"""Span means (forward) and their gradient (backward) in Triton.

Contracts: :func:`lalm_fast.ops.reference.span_mean` / ``span_mean_backward``.

Forward, ``_span_mean_fwd_kernel``: one program owns ``BLOCK_S`` consecutive spans of one
row and ``BLOCK_D`` features. It walks the span offsets ``j = 0, 1, ...`` up to the longest
span of its block and loads the ``[BLOCK_S, BLOCK_D]`` tile ``x[starts[s] + j, d]`` with a
mask ``j < len(s)``; masked lanes issue no memory traffic, so padding frames and frames of
other spans are never read. Audio's short segments (2-8 frames) are therefore handled
``BLOCK_S`` at a time, and ``UNROLL`` offsets are issued back to back for memory-level
parallelism. Accumulation is fp32 (fp64 for fp64).

Long spans (a static bucket of T/S >= 128) are split along time across ``NSPLIT``
programs (grid axis 2): program ``k`` takes the offset chunks ``k, k + NSPLIT, ...`` and
writes a partial sum to an fp32 workspace; ``_span_mean_combine_kernel`` adds the
partials in a fixed order and divides (deterministic, no atomics).

Backward, ``_span_mean_bwd_kernel``: spans are sorted and disjoint, so the block of spans
``[s0, s0 + BLOCK_S)`` owns the frame region ``[starts[s0], starts[s0 + BLOCK_S])`` (the
first block's region starts at 0, the last block's ends at T). The regions tile
``[0, T)``, and each program writes every frame of its region exactly once (the gradient
share of the owning span, or 0), so the output needs no zero-fill pass. Frames are
processed in ``[BLOCK_T, BLOCK_D]`` tiles (fully coalesced stores); each frame's owner is
found by comparing it with the block's starts. Long regions are split across ``NSPLIT``
programs the same way as the forward (disjoint stores, nothing to combine).

No launcher reads tensor values on the host: grids and buckets come from shapes only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from ._common import acc_is_fp64, check_float, fixed_config, length_bucket, next_pow2, num_splits, tl, triton
from .packed_spans import block_samples, packed_spans

# Where the forward kernel gets its spans (the SPANS argument).
LOADED, WINDOWS, PACKED_WINDOWS, PACKED_STARTS = 0, 1, 2, 3

# --------------------------------------------------------------------------- kernels


@triton.jit
def _window_spans(lengths_ptr, starts_ptr, ends_ptr, counts_ptr, r, s, smask, sb, T, S, K, WIDTH):
    """Spans of windows ``[s K, min(s K + WIDTH, L))`` (``(L, L)`` past L), computed rather
    than loaded; one program per row block writes them (and ``counts``) for the backward
    and the caller, so no torch op has to build them."""
    length = tl.minimum(tl.maximum(tl.load(lengths_ptr + r), 0), T)  # unchecked lengths stay in the row
    st = tl.minimum(s.to(tl.int64) * K, length)
    en = tl.minimum(st + WIDTH, length)
    if tl.program_id(1) == 0:
        if tl.program_id(2) == 0:  # the first feature block of the first split: one writer per span
            tl.store(starts_ptr + r * S + s, st, mask=smask)
            tl.store(ends_ptr + r * S + s, en, mask=smask)
            if sb == 0:
                one = tl.zeros((1,), dtype=tl.int64)  # 1-element vectors: scalar stores are not portable
                tl.store(counts_ptr + r + one, one + tl.minimum((length + K - 1) // K, S))
    return st, en


@triton.jit(do_not_specialize=["R", "S", "NSPLIT", "LEN_BUCKET", "T", "K", "WIDTH", "B"])
def _span_mean_fwd_kernel(
    x_ptr, starts_ptr, ends_ptr, out_ptr, ws_ptr,
    R, S, D, stride_xr, stride_xt,
    NSPLIT, LEN_BUCKET,
    lengths_ptr, counts_ptr, T, K, WIDTH,
    seg_counts_ptr, positions_ptr, spans_ptr, cu_out_ptr, B,
    BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr, UNROLL: tl.constexpr,
    SPLIT: tl.constexpr, ACC_FP64: tl.constexpr, SPANS: tl.constexpr, BLOCK_B: tl.constexpr,
):
    pid0 = tl.program_id(0)
    num_sb = tl.cdiv(S, BLOCK_S)
    r = (pid0 // num_sb).to(tl.int64)
    sb = pid0 % num_sb
    k = tl.program_id(2)

    s = sb * BLOCK_S + tl.arange(0, BLOCK_S)
    smask = s < S
    if SPANS == 1:  # uniform_pool / downsample (WINDOWS): spans written here, not read
        st, en = _window_spans(lengths_ptr, starts_ptr, ends_ptr, counts_ptr, r, s, smask, sb, T, S, K, WIDTH)
    elif SPANS >= 2:  # packed input (lengths_ptr holds cu_seqlens): windows or compacted starts
        st, en = packed_spans(lengths_ptr, seg_counts_ptr, positions_ptr, starts_ptr, ends_ptr, spans_ptr,
                              counts_ptr, cu_out_ptr, s, smask, sb, B, T, S, K, WIDTH, SPANS == 3, BLOCK_B)
    else:
        st = tl.load(starts_ptr + r * S + s, mask=smask, other=0)
        en = tl.load(ends_ptr + r * S + s, mask=smask, other=0)
    ln = en - st
    max_len = tl.max(ln, axis=0)

    d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    dmask = d < D

    if ACC_FP64:
        acc = tl.zeros((BLOCK_S, BLOCK_D), dtype=tl.float64)
    else:
        acc = tl.zeros((BLOCK_S, BLOCK_D), dtype=tl.float32)

    ptrs = x_ptr + r * stride_xr + st[:, None] * stride_xt + d[None, :]
    for c in range(k * UNROLL, max_len, NSPLIT * UNROLL):
        for i in tl.static_range(UNROLL):
            j = c + i
            m = (j < ln)[:, None] & dmask[None, :]
            # x is streamed once: evict_first keeps L2 for the indices and the output
            v = tl.load(ptrs + j * stride_xt, mask=m, other=0.0, eviction_policy="evict_first")
            acc += v.to(acc.dtype)

    if SPLIT:
        # partial sums: ws[k, r, s, d], combined in a fixed order by the combine kernel
        ws_off = ((k * R + r) * S + s)[:, None] * D + d[None, :]
        tl.store(ws_ptr + ws_off, acc, mask=smask[:, None] & dmask[None, :])
    else:
        cnt = tl.maximum(ln, 1).to(acc.dtype)
        mean = acc / cnt[:, None]
        out_off = (r * S + s)[:, None] * D + d[None, :]
        tl.store(out_ptr + out_off, mean.to(out_ptr.dtype.element_ty), mask=smask[:, None] & dmask[None, :])


@triton.jit(do_not_specialize=["RS", "NSPLIT"])
def _span_mean_combine_kernel(
    ws_ptr, starts_ptr, ends_ptr, out_ptr,
    RS, D, NSPLIT,
    BLOCK_RS: tl.constexpr, BLOCK_D: tl.constexpr, ACC_FP64: tl.constexpr,
):
    rs = (tl.program_id(0) * BLOCK_RS + tl.arange(0, BLOCK_RS)).to(tl.int64)
    rsmask = rs < RS
    d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    m = rsmask[:, None] & (d < D)[None, :]
    if ACC_FP64:
        acc = tl.zeros((BLOCK_RS, BLOCK_D), dtype=tl.float64)
    else:
        acc = tl.zeros((BLOCK_RS, BLOCK_D), dtype=tl.float32)
    off = rs[:, None] * D + d[None, :]
    for k in range(0, NSPLIT):  # fixed order: deterministic
        acc += tl.load(ws_ptr + k * RS * D + off, mask=m, other=0.0)
    st = tl.load(starts_ptr + rs, mask=rsmask, other=0)
    en = tl.load(ends_ptr + rs, mask=rsmask, other=0)
    cnt = tl.maximum(en - st, 1).to(acc.dtype)
    tl.store(out_ptr + off, (acc / cnt[:, None]).to(out_ptr.dtype.element_ty), mask=m)


@triton.jit(do_not_specialize=["S", "T", "NSPLIT", "LEN_BUCKET"])
def _span_mean_bwd_kernel(
    grad_ptr, starts_ptr, ends_ptr, out_ptr,
    S, T, D,
    NSPLIT, LEN_BUCKET,
    BLOCK_S: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr, ACC_FP64: tl.constexpr,
):
    pid0 = tl.program_id(0)
    num_sb = tl.cdiv(S, BLOCK_S)
    r = (pid0 // num_sb).to(tl.int64)
    sb = pid0 % num_sb
    k = tl.program_id(2)
    row = starts_ptr + r * S

    s0 = sb * BLOCK_S
    s = s0 + tl.arange(0, BLOCK_S)
    # spans past S get start T: no frame t < T is ever assigned to them
    st_blk = tl.load(row + s, mask=s < S, other=T)
    first = tl.load(row + s0)
    region_start = tl.where(sb == 0, 0, first)
    nxt = s0 + BLOCK_S
    region_end = tl.load(row + nxt, mask=nxt < S, other=T)

    d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    dmask = d < D
    for t0 in range(region_start + k * BLOCK_T, region_end, NSPLIT * BLOCK_T):
        t = t0 + tl.arange(0, BLOCK_T)
        tmask = t < region_end
        owner = tl.sum((st_blk[None, :] <= t[:, None]).to(tl.int32), axis=1) - 1
        has = tmask & (owner >= 0)
        sidx = s0 + tl.maximum(owner, 0)
        o_st = tl.load(row + sidx, mask=has, other=0)
        o_en = tl.load(ends_ptr + r * S + sidx, mask=has, other=0)
        inside = has & (t < o_en)
        if ACC_FP64:
            scale = 1.0 / tl.maximum(o_en - o_st, 1).to(tl.float64)
        else:
            scale = 1.0 / tl.maximum(o_en - o_st, 1).to(tl.float32)
        g_off = (r * S + sidx)[:, None] * D + d[None, :]
        g = tl.load(grad_ptr + g_off, mask=inside[:, None] & dmask[None, :], other=0.0)
        val = g.to(scale.dtype) * scale[:, None]
        out_off = (r * T + t)[:, None] * D + d[None, :]
        tl.store(out_ptr + out_off, val.to(out_ptr.dtype.element_ty), mask=tmask[:, None] & dmask[None, :])


# --------------------------------------------------------------------------- autotuning

# (BLOCK_S, BLOCK_D, UNROLL, num_warps): tiles of 512-2048 elements, wide enough for
# 16-byte loads of 16-bit inputs. Keyed on D, the length bucket and (automatically) the
# dtypes of the tensor arguments; never on R or S.
_FWD_CONFIGS = [
    (1, 256, 4, 4), (2, 256, 4, 4), (2, 512, 2, 8), (4, 128, 4, 4), (4, 256, 2, 4),
    (4, 512, 1, 8), (8, 128, 2, 4), (8, 256, 1, 8), (16, 64, 1, 4), (16, 128, 1, 4),
    (32, 64, 1, 4), (8, 64, 2, 2),
    # larger tiles: fewer, longer-lived programs and more bytes in flight per program, for
    # large batches where the smaller tiles stay short of the copy bandwidth (docs/gpu-notes.md)
    (8, 256, 2, 8), (16, 256, 1, 8), (16, 256, 2, 8), (32, 128, 2, 8), (8, 512, 2, 8),
]
_BWD_CONFIGS = [  # (BLOCK_S, BLOCK_T, BLOCK_D, num_warps)
    (8, 16, 256, 4), (16, 16, 256, 4), (16, 32, 128, 4), (32, 32, 128, 4), (64, 32, 128, 4),
    (16, 64, 64, 4), (32, 16, 256, 8), (64, 16, 256, 8), (4, 32, 128, 4), (2, 32, 256, 8),
]

_span_mean_fwd_tuned = triton.autotune(
    configs=[
        triton.Config({"BLOCK_S": bs, "BLOCK_D": bd, "UNROLL": u}, num_warps=w) for bs, bd, u, w in _FWD_CONFIGS
    ],
    key=["D", "LEN_BUCKET"],
)(_span_mean_fwd_kernel)

_span_mean_bwd_tuned = triton.autotune(
    configs=[
        triton.Config({"BLOCK_S": bs, "BLOCK_T": bt, "BLOCK_D": bd}, num_warps=w) for bs, bt, bd, w in _BWD_CONFIGS
    ],
    key=["D", "LEN_BUCKET"],
)(_span_mean_bwd_kernel)


def _fixed_fwd_config(dim: int, bucket: int) -> dict:
    block_d = max(16, min(256, next_pow2(dim)))
    block_s = max(1, min(16, 4096 // (block_d * min(bucket, 4))))
    return dict(BLOCK_S=block_s, BLOCK_D=block_d, UNROLL=min(4, bucket), num_warps=4)


def _fixed_bwd_config(dim: int, bucket: int) -> dict:
    block_d = max(16, min(128, next_pow2(dim)))
    block_s = max(2, min(32, 64 // bucket))
    return dict(BLOCK_S=block_s, BLOCK_T=32, BLOCK_D=block_d, num_warps=4)


# --------------------------------------------------------------------------- launchers


@dataclass
class _SpanSource:
    """What the forward kernel needs to compute its spans instead of loading them: the
    sample lengths (padded) or cu_seqlens (packed) and the outputs it writes besides the
    means. Fields a mode does not use point at ``starts`` and are never read."""

    kind: int
    lengths: torch.Tensor
    counts: torch.Tensor
    k: int = 1
    width: int = 1
    samples: int = 0
    seg_counts: Optional[torch.Tensor] = None
    positions: Optional[torch.Tensor] = None
    spans: Optional[torch.Tensor] = None
    cu_out: Optional[torch.Tensor] = None

    def args(self, placeholder):
        def given(t):
            return placeholder if t is None else t

        return (self.lengths, self.counts, self.k, self.width, given(self.seg_counts), given(self.positions),
                given(self.spans), given(self.cu_out), self.samples)


def _launch_fwd(x, starts, ends, out, nsplit, source: Optional[_SpanSource] = None):
    """The forward launch (plus the combine for split spans). ``source`` makes the kernel
    compute the spans and write them to ``starts`` / ``ends`` (and counts, and for packed
    input the local spans and ``cu_out``), instead of reading them."""
    rows, frames, dim = x.shape
    spans = starts.shape[1]
    bucket = length_bucket(frames, spans)
    nsplit = num_splits(bucket) if nsplit is None else int(nsplit)
    split = nsplit > 1
    fp64 = acc_is_fp64(x.dtype)
    acc_dtype = torch.float64 if fp64 else torch.float32
    ws = torch.empty((nsplit, rows, spans, dim), dtype=acc_dtype, device=x.device) if split else out
    source = source if source is not None else _SpanSource(LOADED, starts, starts)
    lengths, counts, k, width, *packed = source.args(starts)
    args = (x, starts, ends, out, ws, rows, spans, dim, x.stride(0), x.stride(1), nsplit, bucket,
            lengths, counts, frames, k, width, *packed)
    flags = dict(SPLIT=split, ACC_FP64=fp64, SPANS=source.kind, BLOCK_B=block_samples(source.samples))

    def feature_blocks(meta):  # at least one, so that D = 0 still writes the computed spans
        return max(1, triton.cdiv(dim, meta["BLOCK_D"]))

    if fixed_config():
        cfg = _fixed_fwd_config(dim, bucket)
        grid = (rows * triton.cdiv(spans, cfg["BLOCK_S"]), feature_blocks(cfg), nsplit)
        _span_mean_fwd_kernel[grid](*args, **flags, **cfg)
    else:
        def grid(meta):
            return (rows * triton.cdiv(spans, meta["BLOCK_S"]), feature_blocks(meta), nsplit)

        _span_mean_fwd_tuned[grid](*args, **flags)
    if split and dim:  # reads the spans the forward launch wrote (same stream: ordered)
        block_d = max(16, min(256, next_pow2(dim)))
        grid = (triton.cdiv(rows * spans, 4), triton.cdiv(dim, block_d))
        _span_mean_combine_kernel[grid](
            ws, starts, ends, out, rows * spans, dim, nsplit,
            BLOCK_RS=4, BLOCK_D=block_d, ACC_FP64=fp64, num_warps=4,
        )


def span_mean(x: torch.Tensor, starts: torch.Tensor, ends: torch.Tensor, *, nsplit: int | None = None) -> torch.Tensor:
    """``[R, S, D]`` means of ``x[r, starts[r, s]:ends[r, s]]`` (0 for an empty span).
    ``nsplit`` overrides how many programs share a long span (tests of the split path)."""
    check_float("x", x)
    rows, _, dim = x.shape
    out = torch.empty((rows, starts.shape[1], dim), dtype=x.dtype, device=x.device)
    if rows and starts.shape[1] and dim:
        _launch_fwd(x, starts, ends, out, nsplit)
    return out


def window_mean(x: torch.Tensor, lengths: torch.Tensor, k: int, width: int, num_out: int, *,
                nsplit: int | None = None):
    """``(values, starts, ends, counts)`` of the windows ``[s k, min(s k + width, L))``,
    ``s < num_out`` (uniform_pool: ``width = k``; downsample: 1): the spans are computed in
    the kernel, one launch (two for split spans), the same sums as :func:`span_mean` on them.
    ``counts = min(ceil(L / k), num_out)``."""
    check_float("x", x)
    rows, _, dim = x.shape
    index = dict(dtype=torch.int64, device=x.device)
    out = torch.empty((rows, num_out, dim), dtype=x.dtype, device=x.device)
    starts, ends = torch.empty((rows, num_out), **index), torch.empty((rows, num_out), **index)
    counts = torch.empty((rows,), **index)
    if rows and num_out:
        _launch_fwd(x, starts, ends, out, nsplit, _SpanSource(WINDOWS, lengths, counts, int(k), int(width)))
    return out, starts, ends, counts


def span_mean_backward(grad: torch.Tensor, starts: torch.Tensor, ends: torch.Tensor, num_frames: int, *,
                       nsplit: int | None = None) -> torch.Tensor:
    """``[R, T, D]``: frame t inside span s gets ``grad[r, s] / len(s)``, other frames 0."""
    check_float("grad", grad)
    grad = grad.contiguous()
    rows, spans, dim = grad.shape
    num_frames = int(num_frames)
    if rows == 0 or num_frames == 0 or dim == 0:
        return torch.empty((rows, num_frames, dim), dtype=grad.dtype, device=grad.device)
    if spans == 0:  # static shape: no span owns any frame
        return torch.zeros((rows, num_frames, dim), dtype=grad.dtype, device=grad.device)
    out = torch.empty((rows, num_frames, dim), dtype=grad.dtype, device=grad.device)
    bucket = length_bucket(num_frames, spans)
    nsplit = num_splits(bucket) if nsplit is None else int(nsplit)
    fp64 = acc_is_fp64(grad.dtype)
    args = (grad, starts, ends, out, spans, num_frames, dim, nsplit, bucket)
    if fixed_config():
        cfg = _fixed_bwd_config(dim, bucket)
        grid = (rows * triton.cdiv(spans, cfg["BLOCK_S"]), triton.cdiv(dim, cfg["BLOCK_D"]), nsplit)
        _span_mean_bwd_kernel[grid](*args, ACC_FP64=fp64, **cfg)
    else:
        def grid(meta):
            return (rows * triton.cdiv(spans, meta["BLOCK_S"]), triton.cdiv(dim, meta["BLOCK_D"]), nsplit)

        _span_mean_bwd_tuned[grid](*args, ACC_FP64=fp64)
    return out


def packed_mean(x: torch.Tensor, cu_seqlens: torch.Tensor, num_out: int, *, k: int = 1, width: int = 1,
                starts_at=None, nsplit: int | None = None):
    """Packed input ``x [1, N, D]``: ``(values [num_out, D], spans [num_out, 2], counts [B],
    cu_out [B+1], starts [1, num_out], ends [1, num_out])`` in one launch (two for split
    spans), the spans computed in the kernel (:mod:`.packed_spans`): windows
    ``[i k, min(i k + width, L))`` of each sample, or, with ``starts_at = (positions,
    seg_counts)``, the segments those compacted starts open. ``spans`` are local to each
    sample, ``starts`` / ``ends`` global (for the backward)."""
    check_float("x", x)
    _, frames, dim = x.shape
    samples = cu_seqlens.shape[0] - 1
    index = dict(dtype=torch.int64, device=x.device)
    out = torch.empty((num_out, dim), dtype=x.dtype, device=x.device)
    starts, ends = torch.empty((1, num_out), **index), torch.empty((1, num_out), **index)
    spans = torch.empty((num_out, 2), **index)
    if num_out == 0:  # no rows, so no program to write the counts: every sample is empty
        return out, spans, torch.zeros((samples,), **index), torch.zeros((samples + 1,), **index), starts, ends
    counts, cu_out = torch.empty((samples,), **index), torch.empty((samples + 1,), **index)
    positions, seg_counts = starts_at if starts_at is not None else (None, None)
    source = _SpanSource(PACKED_STARTS if starts_at is not None else PACKED_WINDOWS, cu_seqlens, counts, int(k),
                         int(width), samples, seg_counts, positions, spans, cu_out)
    _launch_fwd(x, starts, ends, out, nsplit, source)
    return out, spans, counts, cu_out, starts, ends
