"""Plain per-sample loops: the simplest possible statement of each op, in float64.

Slow on purpose and written independently of lalm_fast.ops, so the vectorised reference and the
kernels are both checked against something obviously right.
"""

import math

import torch


def segment_means(x_b: torch.Tensor, bounds: list[tuple[int, int]]) -> torch.Tensor:
    rows = []
    for start, end in bounds:
        seg = x_b[start:end].double()
        rows.append(seg.mean(0) if end > start else torch.zeros(x_b.shape[-1], dtype=torch.float64))
    return torch.stack(rows) if rows else torch.zeros(0, x_b.shape[-1], dtype=torch.float64)


def uniform_bounds(length: int, k: int) -> list[tuple[int, int]]:
    return [(i * k, min((i + 1) * k, length)) for i in range(math.ceil(length / k))]


def downsample_bounds(length: int, k: int) -> list[tuple[int, int]]:
    return [(i * k, i * k + 1) for i in range(math.ceil(length / k))]


def bounds_from_starts(starts: list[int], length: int) -> list[tuple[int, int]]:
    starts = sorted(set([0] + [s for s in starts if 0 < s < length])) if length else []
    return [(s, starts[i + 1] if i + 1 < len(starts) else length) for i, s in enumerate(starts)]


def scores(x_b: torch.Tensor, length: int) -> torch.Tensor:
    out = torch.zeros(x_b.shape[0], dtype=torch.float64)
    for t in range(1, length):
        a, b = x_b[t - 1].double(), x_b[t].double()
        out[t] = 1 - (a @ b) / (max(a.norm().item(), 1e-8) * max(b.norm().item(), 1e-8))
    return out


def pooled(x: torch.Tensor, lengths, bounds_fn) -> list[torch.Tensor]:
    """Per-sample float64 outputs of a pooling op described by ``bounds_fn(b, length)``."""
    return [segment_means(x[b], bounds_fn(b, int(lengths[b]))) for b in range(x.shape[0])]
