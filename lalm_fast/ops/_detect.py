"""Boundary detection on ``[R, T]`` scores, vectorised (no loop over batch or time).

Three modes, each returning a start mask on the grid (frame 0 of a sample is added by the
caller). A NaN score (a NaN or Inf frame) is the lowest score in every mode: never a start in
peak or threshold mode, left out of the normalisation range, taken last in rate mode.

- *peak* (SCPC / UnsupSeg): per-sample min-max normalised scores; a start at every local
  maximum whose prominence is at least ``prominence``. Peaks and prominences follow
  ``scipy.signal.find_peaks`` on ``scores[1:L]`` exactly (plateaus give their middle frame).
- *threshold*: a start wherever the raw score exceeds ``threshold`` (the single-pass mode).
- *rate*: exactly ``ceil(L / rate)`` segments; starts at the highest scores.

``min_len`` keeps starts at least ``min_len`` frames apart (and from the sample's edges) by
windowed-maximum suppression: candidates too close to an edge are dropped, then a candidate
survives if it beats every candidate up to ``min_len - 1`` frames to its left and is not
beaten by any to its right (one vectorised pass, not a greedy loop). ``max_len``
splits a longer segment every ``max_len`` frames (as a streaming kernel would).
"""

from __future__ import annotations

import math

import torch

from lalm_fast.ops._inputs import Grid
from lalm_fast.ops._spans import force_sample_starts
from lalm_fast.ops.modes import Mode

INF = float("inf")


def scored_frames(grid: Grid) -> torch.Tensor:
    """Frames that have a score: valid and not the first frame of their sample."""
    return grid.valid() & (grid.frames()[None, :] > grid.sample_start())


def _per_sample(grid: Grid, values: torch.Tensor, fill: float, reduce: str) -> torch.Tensor:
    """Min or max of ``values`` over each sample's frames, broadcast back to ``[R, T]``."""
    sample = grid.sample_of_frame().reshape(-1)
    out = torch.full((grid.num_samples + 1,), fill, dtype=values.dtype, device=values.device)
    out = out.scatter_reduce(0, sample, values.reshape(-1), reduce)
    return out[sample].view_as(values)


def normalize_scores(grid: Grid, scores: torch.Tensor) -> torch.Tensor:
    """Per-sample min-max normalisation to [0, 1] over scored frames; 0 elsewhere or if flat.
    A NaN score is left out of the range and normalises to 0, the lowest score."""
    scored = scored_frames(grid) & ~scores.isnan()
    low = _per_sample(grid, torch.where(scored, scores, INF), INF, "amin")
    high = _per_sample(grid, torch.where(scored, scores, -INF), -INF, "amax")
    span = high - low
    normed = (scores - low) / torch.where(span > 0, span, 1.0)
    return torch.where(scored & (span > 0), normed, 0.0)


def _shift(v: torch.Tensor, by: int, fill: float) -> torch.Tensor:
    """``out[:, t] = v[:, t - by]`` (``by`` may be negative), ``fill`` where out of range."""
    out = torch.full_like(v, fill)
    if by >= 0 and by < v.shape[1]:
        out[:, by:] = v[:, : v.shape[1] - by]
    elif by < 0 and -by < v.shape[1]:
        out[:, :by] = v[:, -by:]
    return out


def _left_base(v: torch.Tensor) -> torch.Tensor:
    """Minimum of ``v`` between each frame and the nearest strictly higher frame on its left
    (or the row start): the left base of a peak, as in scipy's ``peak_prominences``.

    Range-max and range-min sparse tables plus binary lifting: O(T log T), log T steps.
    """
    rows, frames = v.shape
    levels = max(1, math.ceil(math.log2(max(frames, 2))))
    max_table, min_table = [v], [v]
    for k in range(1, levels + 1):
        half = 1 << (k - 1)
        max_table.append(torch.maximum(max_table[-1], _shift(max_table[-1], half, INF)))
        min_table.append(torch.minimum(min_table[-1], _shift(min_table[-1], half, INF)))
    position = torch.arange(frames, device=v.device).expand(rows, -1)
    # pos walks left over blocks of 2^k frames that hold nothing higher than v[t].
    pos = position - 1
    for k in range(levels, -1, -1):
        block_max = torch.gather(max_table[k], 1, pos.clamp(min=0))
        skip = (pos >= 0) & (block_max <= v)
        pos = torch.where(skip, pos - (1 << k), pos)
    first = pos + 1  # the base range is [first, t]
    size = position - first + 1
    k = torch.floor(torch.log2(size.to(torch.float64))).long()
    min_stack = torch.stack(min_table)  # [levels + 1, R, T]

    def pick(level, end):  # min_table[level[r, t]][r, end[r, t]]: frame t's level, read at end
        at_end = min_stack.gather(2, end[None].expand(min_stack.shape[0], -1, -1))
        return at_end.gather(0, level[None]).squeeze(0)

    return torch.minimum(pick(k, position), pick(k, first + (1 << k) - 1))


def _peaks(v: torch.Tensor) -> torch.Tensor:
    """scipy's ``_local_maxima_1d``: rise, plateau, strict fall; the plateau's middle frame."""
    rows, frames = v.shape
    position = torch.arange(frames, device=v.device).expand(rows, -1)
    rises = _shift(v, 1, INF) < v
    changes = v != _shift(v, 1, INF)
    # First frame after t whose value differs from its predecessor: the end of t's plateau.
    change_at = torch.where(changes, position, frames)
    next_change = _shift(change_at.flip(1).cummin(1).values.flip(1), -1, frames)
    falls = torch.gather(v, 1, next_change.clamp(max=frames - 1)) < v
    is_peak = rises & (next_change < frames) & falls
    middle = torch.where(is_peak, (position + next_change - 1) // 2, frames)
    marks = torch.zeros(rows, frames + 1, dtype=torch.bool, device=v.device)
    return marks.scatter(1, middle, True)[:, :frames]


def peak_starts(grid: Grid, scores: torch.Tensor, prominence: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Start mask of prominent peaks and the normalised scores that rank them."""
    normed = normalize_scores(grid, scores)
    # +inf outside each sample's scored frames walls samples off from one another, exactly
    # like the array edges scipy sees.
    walled = torch.where(scored_frames(grid), normed, INF)
    peaks = _peaks(walled)
    right_base = _left_base(walled.flip(1)).flip(1)
    prominences = walled - torch.maximum(_left_base(walled), right_base)
    return peaks & (prominences >= prominence), normed


def suppress_close(grid: Grid, candidates: torch.Tensor, scores: torch.Tensor, min_len: int) -> torch.Tensor:
    """Keep candidates at least ``min_len`` frames from each other and from sample edges."""
    if min_len <= 1:
        return candidates
    # Edges first, so a candidate that cannot be used anyway suppresses nothing.
    offset = grid.frames()[None, :] - grid.sample_start()
    room_right = grid.sample_end() - grid.frames()[None, :]
    keep = candidates & (offset >= min_len) & (room_right >= min_len)
    ranked = torch.where(keep, scores, -INF)
    for gap in range(1, min_len):
        keep &= ranked > _shift(ranked, gap, -INF)  # beats every candidate to its left
        keep &= ranked >= _shift(ranked, -gap, -INF)  # no candidate to its right beats it
    return keep


def split_long(grid: Grid, is_start: torch.Tensor, max_len: int) -> torch.Tensor:
    """Add a start every ``max_len`` frames inside any longer segment."""
    position = grid.frames()[None, :].expand_as(is_start)
    last_start = torch.where(is_start, position, -1).cummax(1).values
    return is_start | (grid.valid() & ((position - last_start) % max_len == 0))


def rate_starts(grid: Grid, scores: torch.Tensor, rate: float, min_len: int) -> torch.Tensor:
    """Exactly ``ceil(L / rate) - 1`` starts besides frame 0, highest scores first.

    Candidates that pass ``min_len`` suppression are taken first; when they are too few the
    remaining frames fill in by score, so the token count is always exact.
    """
    scored = scored_frames(grid)
    scores = torch.where(scores.isnan(), -INF, scores)  # NaN ranks lowest
    preferred = suppress_close(grid, scored, scores, min_len)
    grade = preferred.long() + scored.long()  # 2 preferred, 1 other candidate, 0 never
    sample = torch.where(grid.valid(), grid.sample_of_frame(), grid.num_samples).reshape(-1)
    # Order: sample ascending, grade descending, score descending, frame ascending.
    order = torch.sort(scores.reshape(-1), descending=True, stable=True).indices
    order = order[torch.sort(grade.reshape(-1)[order], descending=True, stable=True).indices]
    order = order[torch.sort(sample[order], stable=True).indices]
    sorted_sample = sample[order]
    first_of_sample = torch.searchsorted(sorted_sample, sorted_sample, right=False)
    rank = torch.arange(order.numel(), device=order.device) - first_of_sample
    wanted = torch.ceil(grid.lengths.to(torch.float64) / rate).long() - 1
    wanted = torch.cat([wanted.clamp(min=0), wanted.new_zeros(1)])
    chosen_sorted = (rank < wanted[sorted_sample]) & (grade.reshape(-1)[order] > 0)
    chosen = torch.zeros_like(chosen_sorted).scatter(0, order, chosen_sorted)
    return chosen.view_as(scores)


def starts_from_scores(grid: Grid, scores: torch.Tensor, mode: Mode, param: float, min_len: int = 1,
                       max_len: int = 0) -> torch.Tensor:
    """Start mask on the grid from raw ``[R, T]`` scores, frame 0 of each sample included
    (``max_len`` 0: no limit); what the ``detect_boundaries`` kernels compute."""
    if mode == Mode.RATE:
        starts = rate_starts(grid, scores, param, min_len)
    else:
        if mode == Mode.THRESHOLD:
            candidates, ranking = scored_frames(grid) & (scores > param), scores
        else:
            candidates, ranking = peak_starts(grid, scores, param)
        starts = suppress_close(grid, candidates, ranking, min_len)
    starts = force_sample_starts(grid, starts)
    return split_long(grid, starts, max_len) if max_len else starts
