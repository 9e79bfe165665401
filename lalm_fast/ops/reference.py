"""Pure-PyTorch kernels: the test oracle and the backend of last resort.

Every backend implements the same three kernels on the *grid* layout the public ops build:

- ``span_mean(x [R, T, D], starts [R, S], ends [R, S]) -> [R, S, D]``: mean of
  ``x[r, starts[r, s]:ends[r, s]]``, 0 for an empty span, accumulated in fp32 (fp64 for fp64);
  a NaN or Inf reaches only the token of the span that holds it.
- ``span_mean_backward(grad [R, S, D], starts, ends, T) -> [R, T, D]``: frame ``t`` inside
  span ``s`` gets ``grad[r, s] / len(s)``, every other frame 0.
- ``boundary_scores(x [R, T, D], lengths [R]) -> [R, T]``: ``1 - cos(x[t-1], x[t])`` for
  ``1 <= t < lengths[r]``, 0 elsewhere, in fp32 (fp64 for fp64).

Spans are sorted and disjoint (``ends[s] <= starts[s+1]``) and satisfy
``0 <= starts <= ends <= T``; the public ops guarantee it, so kernels do not re-check.
Vectorised throughout: no Python loop over the batch or time (span sums take log2(T) steps).
"""

from __future__ import annotations

import torch

COSINE_EPS = 1e-8


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _span_owner(starts: torch.Tensor, ends: torch.Tensor, num_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``[R, T]`` index of the span holding each frame (clamped to 0) and whether one does."""
    frames = torch.arange(num_frames, device=starts.device).expand(starts.shape[0], -1).contiguous()
    # The last span starting at or before a frame holds it if the frame lies before its end.
    owner = torch.searchsorted(starts.contiguous(), frames, right=True) - 1
    owner_c = owner.clamp_min(0)
    inside = (owner >= 0) & (frames < torch.gather(ends, 1, owner_c))
    return owner_c, inside


def _segmented_cumsum(values: torch.Tensor, segment: torch.Tensor) -> torch.Tensor:
    """Running sum along dim 1 that restarts wherever ``segment`` changes (Hillis-Steele).

    Each span is summed on its own, so a NaN, Inf or huge value reaches only its own span's
    sum (a global prefix sum carries it into every later span, or cancels it out of them).
    """
    total, shift, frames = values, 1, values.shape[1]
    while shift < frames:
        same = (segment[:, shift:] == segment[:, :-shift])[..., None]
        carried = torch.where(same, total[:, :-shift], 0.0)
        total = torch.cat([total[:, :shift], total[:, shift:] + carried], dim=1)
        shift *= 2
    return total


def span_mean(x: torch.Tensor, starts: torch.Tensor, ends: torch.Tensor) -> torch.Tensor:
    # Summed in float64, span by span: exact enough to serve as the oracle for fp32 kernels.
    rows, frames, dim = x.shape
    if starts.shape[1] == 0 or frames == 0:
        return x.new_zeros(rows, starts.shape[1], dim)
    owner, inside = _span_owner(starts, ends, frames)
    frames_in_spans = torch.where(inside[..., None], x.to(torch.float64), 0.0)
    running = _segmented_cumsum(frames_in_spans, torch.where(inside, owner, -1))
    last = (ends - 1).clamp(0, frames - 1)
    total = torch.gather(running, 1, last[..., None].expand(-1, -1, dim))
    count = (ends - starts)[..., None]
    return torch.where(count > 0, total / count.clamp_min(1), 0.0).to(x.dtype)


def span_mean_backward(grad: torch.Tensor, starts: torch.Tensor, ends: torch.Tensor, num_frames: int) -> torch.Tensor:
    if starts.shape[1] == 0:
        return grad.new_zeros(grad.shape[0], num_frames, grad.shape[2])
    owner, inside = _span_owner(starts, ends, num_frames)
    count = (ends - starts).clamp_min(1).to(accumulation_dtype(grad.dtype))
    scale = 1.0 / torch.gather(count, 1, owner)
    picked = torch.gather(grad, 1, owner[..., None].expand(-1, -1, grad.shape[-1]))
    # where, not a multiply by 0: a frame outside every span gets 0 even if a grad is NaN.
    spread = torch.where(inside[..., None], picked.to(scale.dtype) * scale[..., None], 0.0)
    return spread.to(grad.dtype)


def _cosines(prev: torch.Tensor, cur: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine of each frame pair with norms clamped to COSINE_EPS, and whether every sum was finite."""
    dot, sq_prev, sq_cur = (prev * cur).sum(-1), (prev * prev).sum(-1), (cur * cur).sum(-1)
    norms = sq_prev.sqrt().clamp_min(COSINE_EPS) * sq_cur.sqrt().clamp_min(COSINE_EPS)
    return dot / norms, dot.isfinite() & sq_prev.isfinite() & sq_cur.isfinite()


def _scaled_cosines(prev: torch.Tensor, cur: torch.Tensor) -> torch.Tensor:
    """The cosines of frames too large for the plain sums (they overflow): each frame scaled by
    its largest magnitude first; max(|a|, eps) = s * max(|a / s|, eps / s), so s cancels (s at
    least eps, so that a zero frame divides by something, and the same s on both sides)."""
    s_prev = prev.abs().amax(-1, keepdim=True).clamp_min(COSINE_EPS)
    s_cur = cur.abs().amax(-1, keepdim=True).clamp_min(COSINE_EPS)
    a, b = prev / s_prev, cur / s_cur
    norms = (a.norm(dim=-1).maximum(COSINE_EPS / s_prev[..., 0])
             * b.norm(dim=-1).maximum(COSINE_EPS / s_cur[..., 0]))
    return (a * b).sum(-1) / norms


def boundary_scores(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    acc = x.to(accumulation_dtype(x.dtype))
    prev, cur = acc[:, :-1], acc[:, 1:]
    cosines, finite = _cosines(prev, cur)
    if prev.numel():  # frames past ~1e19 (fp32) overflow the sums: the cpu kernel's fallback, without a sync
        scaled = _scaled_cosines(prev.to(torch.float64), cur.to(torch.float64)).to(acc.dtype)
        cosines = torch.where(finite, cosines, scaled)
    scores = torch.zeros(acc.shape[:2], dtype=acc.dtype, device=x.device)
    scores[:, 1:] = 1.0 - cosines
    frames = torch.arange(x.shape[1], device=x.device)
    valid = (frames[None, :] >= 1) & (frames[None, :] < lengths[:, None])
    return torch.where(valid, scores, 0.0)
