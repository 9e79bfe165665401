"""From per-frame segment starts to the spans the kernels pool, and back to results.

Every pooling op is "mark where segments start, then average each segment": uniform pooling
marks every k-th frame of a sample, segmentation marks detected boundaries, downsampling marks
every k-th frame and keeps only that frame. One vectorised path turns the start mask into
sorted, disjoint ``(starts, ends)`` per output row, without a host sync.
"""

from __future__ import annotations

import math

import torch

from lalm_fast.ops._inputs import Grid
from lalm_fast.ops.result import CompressedAudio


def num_outputs(grid: Grid, rate: float) -> int:
    """Static number of output rows when a sample of L frames gives at most ceil(L / rate)
    tokens: per sample for padded, in total for packed (never more than the frames)."""
    if not grid.packed:
        return math.ceil(grid.num_frames / rate)
    frames, samples = grid.num_frames, grid.num_samples
    if float(rate).is_integer():  # sum of ceil(L_b / k) <= (N + B (k - 1)) // k
        bound = (frames + samples * (int(rate) - 1)) // int(rate)
    else:
        bound = math.floor(frames / rate) + samples
    return min(frames, bound)


def cap_at_frames(grid: Grid, value: int) -> int:
    """``value`` capped at the frame count: a window, gap or segment length of T or more acts
    the same as any longer one, and capping keeps huge values from looping or overflowing."""
    return min(value, max(grid.num_frames, 1))


def cap_rules(grid: Grid, min_len: int, max_len) -> tuple[int, int]:
    """Checked ``min_len`` and ``max_len`` (None: no limit, 0) capped at the frame count."""
    return cap_at_frames(grid, min_len), cap_at_frames(grid, max_len) if max_len else 0


def every_kth_spans(lengths: torch.Tensor, frames: int, k: int, single_frame: bool):
    """Spans ``[B, ceil(T / k)]`` of windows ``[i k, min((i+1) k, L))`` (or the window's first
    frame only); windows at or past L become the empty span ``(L, L)``."""
    bound = lengths[:, None]
    starts = (torch.arange(math.ceil(frames / k), device=lengths.device) * k)[None, :].minimum(bound)
    ends = (starts + (1 if single_frame else k)).minimum(bound)
    return starts, ends


def start_mask_every(grid: Grid, k: int) -> torch.Tensor:
    offset = grid.frames()[None, :] - grid.sample_start()
    return grid.valid() & (offset % k == 0)


def force_sample_starts(grid: Grid, is_start: torch.Tensor) -> torch.Tensor:
    """Frame 0 of every non-empty sample always starts a segment."""
    return (is_start | (grid.frames()[None, :] == grid.sample_start())) & grid.valid()


def most_segments(grid: Grid, boundaries: torch.Tensor) -> int:
    """Output rows the segments of a start mask fill: the most of any sample (padded) or all
    of them (packed), frame 0 of each sample counted. Reads the mask: a host sync on GPU."""
    if grid.packed:
        return int(force_sample_starts(grid, boundaries.view(1, -1)).sum())
    if grid.num_samples == 0 or grid.num_frames == 0:
        return 0
    later_starts = boundaries[:, 1:] & (grid.frames()[None, 1:] < grid.lengths[:, None])
    return int((later_starts.sum(1) + (grid.lengths > 0)).max())


def spans_from_starts(grid: Grid, is_start: torch.Tensor, num_out: int, single_frame: bool = False):
    """Sorted, disjoint spans ``[R, num_out]`` of the segments that ``is_start`` opens.

    A segment runs to the next start or to its sample's end. Rows past the last segment get
    an empty span at the row's end. If a padded sample has more segments than ``num_out``,
    the last output row absorbs the surplus (its span runs to the sample's end).
    """
    rows, frames = is_start.shape
    if num_out == 0:
        empty = torch.zeros(rows, 0, dtype=torch.long, device=is_start.device)
        return empty, empty.clone()
    positions = grid.frames()[None, :].expand(rows, -1)
    segment = (is_start.cumsum(1) - 1).clamp(0, num_out - 1)
    row_end = grid.row_lengths()[:, None]
    starts = torch.full((rows, num_out), frames, dtype=torch.long, device=is_start.device)
    starts = starts.scatter_reduce(1, segment, torch.where(is_start, positions, frames), "amin")
    unused = starts == frames
    starts = torch.where(unused, row_end, starts)
    # The end of the sample that holds each start bounds its segment.
    sample_end = torch.gather(grid.sample_end(), 1, starts.clamp(max=frames - 1)) if frames else starts
    if single_frame:
        ends = starts + 1
    else:
        ends = torch.cat([starts[:, 1:], row_end], dim=1)
    ends = torch.where(unused, starts, torch.minimum(ends, sample_end))
    return starts, ends


def fit_packed_starts(grid: Grid, is_start: torch.Tensor, num_out: int) -> torch.Tensor:
    """Packed: the starts that fit in ``num_out`` rows, so ``cu_seqlens`` matches the rows.

    Rows go to the samples in order, each later non-empty sample keeping one in reserve; a
    sample that gets fewer rows than it has segments loses its last starts, so its surplus
    merges into its last token (as padded input does). Needs ``num_out >= B``.
    """
    counts = segment_counts(grid, is_start, num_out)
    non_empty = (grid.lengths > 0).long()
    later = non_empty.flip(0).cumsum(0).flip(0) - non_empty
    room = num_out - later  # rows samples 0..b may use between them
    # used_b = min(used_{b-1} + counts_b, room_b), used_{-1} = 0, in closed form:
    total = counts.cumsum(0)
    used = total + (room - total).cummin(0).values.clamp(max=0)
    tokens = used.diff(prepend=used.new_zeros(1))
    running = torch.cat([is_start.new_zeros(1, dtype=torch.long), is_start[0].long().cumsum(0)])
    sample = grid.sample_of_frame()[0]
    before = torch.cat([running[grid.cu_seqlens[:-1]], running.new_zeros(1)])[sample]
    rank = running[1:] - 1 - before  # index of each start inside its sample
    return is_start & (rank < torch.cat([tokens, tokens.new_zeros(1)])[sample])[None, :]


def segment_counts(grid: Grid, is_start: torch.Tensor, num_out: int) -> torch.Tensor:
    """Output tokens per sample: ``[B]`` int64."""
    if not grid.packed:
        return is_start.sum(1).clamp(max=num_out)
    running = torch.cat([is_start.new_zeros(1, dtype=torch.long), is_start[0].long().cumsum(0)])
    return running[grid.cu_seqlens[1:]] - running[grid.cu_seqlens[:-1]]


def assemble(grid: Grid, values: torch.Tensor, starts: torch.Tensor, ends: torch.Tensor,
             counts: torch.Tensor) -> CompressedAudio:
    """Wrap kernel output in the caller's layout, with spans local to each sample."""
    spans = torch.stack([starts, ends], dim=-1)
    if not grid.packed:
        return CompressedAudio(values, counts, spans)
    cu_out = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
    rows = torch.arange(starts.shape[1], device=starts.device)
    owner = torch.searchsorted(cu_out[1:], rows, right=True)  # B for rows past the total
    first_frame = torch.cat([grid.cu_seqlens[:-1], grid.cu_seqlens[-1:]])[owner]
    local = torch.where((rows < cu_out[-1])[:, None], spans[0] - first_frame[:, None], 0)
    return CompressedAudio(values[0], counts, local, cu_out)
