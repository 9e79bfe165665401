"""Boundary scores ``1 - cos(x[t-1], x[t])`` in Triton.

Contract: :func:`lalm_fast.ops.reference.boundary_scores`.

One program owns ``BLOCK_T`` frames of one row and walks the feature axis in
``BLOCK_D`` chunks, accumulating ``dot``, ``|x[t-1]|^2`` and ``|x[t]|^2`` in fp32 (fp64 for
fp64). The ``x[t-1]`` tile overlaps the ``x[t]`` tile in all but one frame, so its second
read hits L1/L2: HBM sees x about once. Loads are masked by ``1 <= t < lengths[r]``, so
padding frames are never read; every frame ``t < T`` is written (0 outside the valid
range), so no zero-fill pass is needed.
"""

from __future__ import annotations

import torch

from lalm_fast.ops.reference import COSINE_EPS

from ._common import acc_is_fp64, check_float, exact_div, fixed_config, next_pow2, tl, triton


@triton.jit
def _finite(v):
    return (v == v) & (tl.abs(v) != float("inf"))


@triton.jit
def _scaled_scores(prev_ptrs, cur_ptrs, rows, D, EPS, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr):
    """Scores of the frame pairs ``rows`` from max-scaled frames in fp64:
    ``max(|a|, eps) = s max(|a / s|, eps / s)``, so the scales cancel; NaN for a pair with
    a NaN or Inf, 1 for a pair with a zero frame (its dot is 0, its norm clamped)."""
    scale_a = tl.zeros((BLOCK_T,), dtype=tl.float64)
    scale_b = tl.zeros((BLOCK_T,), dtype=tl.float64)
    bad = tl.zeros((BLOCK_T,), dtype=tl.int1)
    for d0 in range(0, D, BLOCK_D):
        d = d0 + tl.arange(0, BLOCK_D)
        m = rows[:, None] & (d < D)[None, :]
        a = tl.abs(tl.load(prev_ptrs + d[None, :], mask=m, other=0.0).to(tl.float64))
        b = tl.abs(tl.load(cur_ptrs + d[None, :], mask=m, other=0.0).to(tl.float64))
        bad = bad | (tl.max((~_finite(a) | ~_finite(b)).to(tl.int32), axis=1) > 0)
        scale_a = tl.maximum(scale_a, tl.max(tl.where(a == a, a, 0.0), axis=1))
        scale_b = tl.maximum(scale_b, tl.max(tl.where(b == b, b, 0.0), axis=1))
    div_a = tl.where(scale_a > 0, scale_a, 1.0)
    div_b = tl.where(scale_b > 0, scale_b, 1.0)
    dot = tl.zeros((BLOCK_T,), dtype=tl.float64)
    na = tl.zeros((BLOCK_T,), dtype=tl.float64)
    nb = tl.zeros((BLOCK_T,), dtype=tl.float64)
    for d0 in range(0, D, BLOCK_D):
        d = d0 + tl.arange(0, BLOCK_D)
        m = rows[:, None] & (d < D)[None, :]
        a = tl.load(prev_ptrs + d[None, :], mask=m, other=0.0).to(tl.float64) / div_a[:, None]
        b = tl.load(cur_ptrs + d[None, :], mask=m, other=0.0).to(tl.float64) / div_b[:, None]
        dot += tl.sum(a * b, axis=1)
        na += tl.sum(a * a, axis=1)
        nb += tl.sum(b * b, axis=1)
    norms = tl.maximum(tl.sqrt(na), EPS / div_a) * tl.maximum(tl.sqrt(nb), EPS / div_b)
    score = tl.where((scale_a == 0) | (scale_b == 0), 1.0, 1.0 - dot / norms)
    return tl.where(bad, float("nan"), score)


@triton.jit(do_not_specialize=["T"])
def _boundary_scores_kernel(
    x_ptr, lengths_ptr, out_ptr,
    T, D, stride_xr, stride_xt,
    EPS: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr, ACC_FP64: tl.constexpr,
):
    r = tl.program_id(0).to(tl.int64)
    t = (tl.program_id(1) * BLOCK_T + tl.arange(0, BLOCK_T)).to(tl.int64)
    length = tl.load(lengths_ptr + r)
    valid = (t >= 1) & (t < length)
    if ACC_FP64:
        acc_dtype = tl.float64
    else:
        acc_dtype = tl.float32
    dot = tl.zeros((BLOCK_T,), dtype=acc_dtype)
    na = tl.zeros((BLOCK_T,), dtype=acc_dtype)
    nb = tl.zeros((BLOCK_T,), dtype=acc_dtype)
    base = x_ptr + r * stride_xr
    cur_ptrs = base + t[:, None] * stride_xt
    prev_ptrs = base + (t - 1)[:, None] * stride_xt
    for d0 in range(0, D, BLOCK_D):
        d = d0 + tl.arange(0, BLOCK_D)
        m = valid[:, None] & (d < D)[None, :]
        b = tl.load(cur_ptrs + d[None, :], mask=m, other=0.0).to(acc_dtype)
        a = tl.load(prev_ptrs + d[None, :], mask=m, other=0.0).to(acc_dtype)
        dot += tl.sum(a * b, axis=1)
        na += tl.sum(a * a, axis=1)
        nb += tl.sum(b * b, axis=1)
    norms = tl.maximum(tl.sqrt(na), EPS) * tl.maximum(tl.sqrt(nb), EPS)
    score = 1.0 - dot / norms
    overflowed = valid & ~(_finite(dot) & _finite(na) & _finite(nb))
    if tl.max(overflowed.to(tl.int32), axis=0) > 0:
        scaled = _scaled_scores(prev_ptrs, cur_ptrs, overflowed, D, EPS, BLOCK_T, BLOCK_D)
        score = tl.where(overflowed, scaled.to(acc_dtype), score)
    score = tl.where(valid, score, 0.0)
    tl.store(out_ptr + r * T + t, score.to(out_ptr.dtype.element_ty), mask=t < T)


@triton.jit(do_not_specialize=["T"])
def _normalize_kernel(scores_ptr, lengths_ptr, cu_ptr, T, BLOCK_T: tl.constexpr, PACKED: tl.constexpr):
    """One program per sample: its scored frames (after its first, NaN left out) min-max
    normalised to [0, 1] in place, every other frame of the sample 0, and all of them 0 when
    the range is empty or flat (``_detect.normalize_scores``)."""
    r = tl.program_id(0).to(tl.int64)
    if PACKED:  # one row of N frames; clamped so unchecked cu_seqlens never reach out of bounds
        first = tl.minimum(tl.maximum(tl.load(cu_ptr + r), 0), T)
        end = tl.minimum(tl.maximum(tl.load(cu_ptr + r + 1), first), T)
        row = scores_ptr
    else:
        first = tl.zeros((), dtype=tl.int64)
        end = tl.minimum(tl.maximum(tl.load(lengths_ptr + r), 0), T)
        row = scores_ptr + r * T
    low = tl.zeros((), dtype=scores_ptr.dtype.element_ty) + float("inf")
    high = tl.zeros((), dtype=scores_ptr.dtype.element_ty) - float("inf")
    for t0 in range(first, end, BLOCK_T):
        t = t0 + tl.arange(0, BLOCK_T).to(tl.int64)
        scored = (t > first) & (t < end)
        s = tl.load(row + t, mask=scored, other=0.0)
        ranged = scored & (s == s)
        low = tl.minimum(low, tl.min(tl.where(ranged, s, float("inf")), axis=0))
        high = tl.maximum(high, tl.max(tl.where(ranged, s, float("-inf")), axis=0))
    normalized = high - low > 0
    spread = tl.where(normalized, high - low, 1.0)
    for t0 in range(first, end, BLOCK_T):
        t = t0 + tl.arange(0, BLOCK_T).to(tl.int64)
        inside = t < end
        s = tl.load(row + t, mask=inside, other=0.0)
        value = exact_div(s - low, spread)
        value = tl.where((t > first) & (s == s), value, 0.0)
        tl.store(row + t, tl.where(normalized, value, 0.0), mask=inside)


_CONFIGS = [  # (BLOCK_T, BLOCK_D, num_warps)
    (4, 256, 4), (8, 128, 4), (8, 256, 4), (16, 128, 4), (16, 256, 8), (32, 64, 4), (32, 128, 8), (4, 512, 8),
]

_boundary_scores_tuned = triton.autotune(
    configs=[triton.Config({"BLOCK_T": bt, "BLOCK_D": bd}, num_warps=w) for bt, bd, w in _CONFIGS],
    key=["D"],  # plus the tensor dtypes, added by triton; never the batch size or T
)(_boundary_scores_kernel)


def _fixed_config(dim: int) -> dict:
    block_d = max(16, min(128, next_pow2(dim)))
    return dict(BLOCK_T=16, BLOCK_D=block_d, num_warps=4)


def boundary_scores(x: torch.Tensor, lengths: torch.Tensor, *, normalize: bool = False,
                    cu_seqlens=None, max_seqlen: int = 0) -> torch.Tensor:
    """``[R, T]`` fp32 (fp64 for fp64): ``1 - cos(x[t-1], x[t])`` for ``1 <= t < lengths[r]``, else 0.

    ``normalize``: each sample's scores min-max normalised (a second launch); packed input
    (``x [1, N, D]``, ``cu_seqlens [B+1]``, ``max_seqlen``) scores each sample on its own."""
    if not normalize:
        return _raw_scores(x, lengths)
    scores = _raw_scores(x, lengths if cu_seqlens is None else cu_seqlens[-1:])
    rows = scores.shape[0] if cu_seqlens is None else cu_seqlens.shape[0] - 1
    if rows > 0 and scores.shape[1]:
        longest = scores.shape[1] if cu_seqlens is None else max_seqlen
        _normalize_kernel[(rows,)](scores, lengths, cu_seqlens if cu_seqlens is not None else lengths,
                                   scores.shape[1], BLOCK_T=max(16, min(1024, next_pow2(longest))),
                                   PACKED=cu_seqlens is not None, num_warps=4)
    return scores


def _raw_scores(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    check_float("x", x)
    rows, frames, dim = x.shape
    out_dtype = torch.float64 if acc_is_fp64(x.dtype) else torch.float32
    out = torch.empty((rows, frames), dtype=out_dtype, device=x.device)
    if rows == 0 or frames == 0:
        return out
    if dim == 0:  # every norm is clamped to eps and every dot is 0: score 1 inside, 0 outside
        t = torch.arange(frames, device=x.device)
        return ((t[None, :] >= 1) & (t[None, :] < lengths[:, None])).to(out_dtype)
    args = (x, lengths, out, frames, dim, x.stride(0), x.stride(1))
    fp64 = acc_is_fp64(x.dtype)
    if fixed_config():
        cfg = _fixed_config(dim)
        _boundary_scores_kernel[(rows, triton.cdiv(frames, cfg["BLOCK_T"]))](*args, EPS=COSINE_EPS, ACC_FP64=fp64, **cfg)
    else:
        grid = lambda meta: (rows, triton.cdiv(frames, meta["BLOCK_T"]))
        _boundary_scores_tuned[grid](*args, EPS=COSINE_EPS, ACC_FP64=fp64)
    return out

