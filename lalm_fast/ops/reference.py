"""Pure-PyTorch kernels: the test oracle and the backend of last resort.

Every backend implements the same three kernels on the *grid* layout the public ops build:

- ``span_mean(x [R, T, D], starts [R, S], ends [R, S]) -> [R, S, D]``: mean of
  ``x[r, starts[r, s]:ends[r, s]]``, 0 for an empty span, accumulated in fp32 (fp64 for fp64).
- ``span_mean_backward(grad [R, S, D], starts, ends, T) -> [R, T, D]``: frame ``t`` inside
  span ``s`` gets ``grad[r, s] / len(s)``, every other frame 0.
- ``boundary_scores(x [R, T, D], lengths [R]) -> [R, T]``: ``1 - cos(x[t-1], x[t])`` for
  ``1 <= t < lengths[r]``, 0 elsewhere, in fp32 (fp64 for fp64).

Spans are sorted and disjoint (``ends[s] <= starts[s+1]``) and satisfy
``0 <= starts <= ends <= T``; the public ops guarantee it, so kernels do not re-check.
Vectorised throughout: no Python loop over the batch or time.
"""

from __future__ import annotations

import torch

COSINE_EPS = 1e-8


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def span_mean(x: torch.Tensor, starts: torch.Tensor, ends: torch.Tensor) -> torch.Tensor:
    # A float64 prefix sum keeps the difference of two prefixes exact enough to serve as
    # the oracle for fp32 kernels (fp32 prefixes would cancel catastrophically on long T).
    rows, _, dim = x.shape
    prefix = torch.zeros(rows, x.shape[1] + 1, dim, dtype=torch.float64, device=x.device)
    torch.cumsum(x.to(torch.float64), dim=1, out=prefix[:, 1:])
    gather = lambda idx: torch.gather(prefix, 1, idx[..., None].expand(-1, -1, dim))
    total = gather(ends) - gather(starts)
    count = (ends - starts).clamp_min(1).to(torch.float64)[..., None]
    return (total / count).to(x.dtype)


def span_mean_backward(grad: torch.Tensor, starts: torch.Tensor, ends: torch.Tensor, num_frames: int) -> torch.Tensor:
    frames = torch.arange(num_frames, device=grad.device).expand(starts.shape[0], -1).contiguous()
    # Index of the last span starting at or before each frame; the frame is inside it
    # only if it also lies before that span's end.
    owner = torch.searchsorted(starts.contiguous(), frames, right=True) - 1
    owner_c = owner.clamp_min(0)
    inside = (owner >= 0) & (frames < torch.gather(ends, 1, owner_c))
    count = (ends - starts).clamp_min(1).to(accumulation_dtype(grad.dtype))
    scale = torch.where(inside, 1.0 / torch.gather(count, 1, owner_c), 0.0)
    picked = torch.gather(grad, 1, owner_c[..., None].expand(-1, -1, grad.shape[-1]))
    return (picked.to(scale.dtype) * scale[..., None]).to(grad.dtype)


def boundary_scores(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    acc = x.to(accumulation_dtype(x.dtype))
    prev, cur = acc[:, :-1], acc[:, 1:]
    dot = (prev * cur).sum(-1)
    norms = prev.norm(dim=-1).clamp_min(COSINE_EPS) * cur.norm(dim=-1).clamp_min(COSINE_EPS)
    scores = torch.zeros(acc.shape[:2], dtype=acc.dtype, device=x.device)
    scores[:, 1:] = 1.0 - dot / norms
    frames = torch.arange(x.shape[1], device=x.device)
    valid = (frames[None, :] >= 1) & (frames[None, :] < lengths[:, None])
    return torch.where(valid, scores, 0.0)
