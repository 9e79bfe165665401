"""Public functional API: audio-token compression ops.

Every op takes padded input (``x [B, T, D]`` with ``lengths [B]`` or ``attention_mask [B, T]``,
or neither for all-valid) or packed input (``x [N, D]`` with ``cu_seqlens [B+1]`` and
``max_seqlen`` as a Python int), and a ``backend=`` override. Pooling ops return a
:class:`CompressedAudio`; gradients flow to ``x``; nothing syncs the host.

Each op checks its input into a :class:`~lalm_fast.ops._inputs.Grid`, then either hands the
whole job to one backend kernel (``kernel_ops.compress``, where ``backends.compresses``) or
builds ``(starts, ends)`` spans and calls ``kernel_ops.span_mean``; packed input goes to
``kernel_ops.compress_packed`` where ``backends.compresses_packed``. ``docs/architecture.md``
traces each path; on triton every pooling op takes a one-kernel-op route.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from lalm_fast.ops import _detect, _spans, backends, kernel_ops
from lalm_fast.ops._inputs import Grid, make_grid, should_check_values
from lalm_fast.ops.arguments import (DEFAULT_PROMINENCE, check_detection_args, check_max_segments,
                                     check_positive_int, detection_mode)
from lalm_fast.ops.modes import Mode
from lalm_fast.ops.result import CompressedAudio

__all__ = [
    "CompressedAudio",
    "Mode",
    "uniform_pool",
    "downsample",
    "boundary_scores",
    "detect_boundaries",
    "segment_pool",
    "segment_compress",
    "check_detection_args",
    "DEFAULT_PROMINENCE",
    "backends",
]


def _compress(grid: Grid, mode: Mode, param: float, num_out: int, backend: str, min_len: int = 1,
              max_len: int = 0, boundaries: Optional[torch.Tensor] = None) -> CompressedAudio:
    values, starts, ends, counts = kernel_ops.compress(
        grid.x, grid.lengths, int(mode), param, min_len, max_len, num_out, backend, boundaries)
    return _spans.assemble(grid, values, starts, ends, counts)


def _compress_packed(grid: Grid, mode: Mode, param: float, num_out: int, backend: str, min_len: int = 1,
                     max_len: int = 0, boundaries: Optional[torch.Tensor] = None) -> CompressedAudio:
    values, spans, counts, cu_out, _, _ = kernel_ops.compress_packed(
        grid.x, grid.cu_seqlens, int(mode), param, min_len, max_len, num_out, grid.max_seqlen, backend, boundaries)
    return CompressedAudio(values, counts, spans, cu_out)


def _fused(grid: Grid, backend: str, mode: Mode, num_out: int, min_len: int = 1, max_len: int = 0) -> bool:
    """Whether one compress kernel does the whole job: padded input, a mode the backend fuses,
    and a non-empty output (an empty one needs no kernel; triton's launcher rejects it)."""
    return not grid.packed and num_out > 0 and backends.compresses(backend, mode, min_len, max_len)


def _pool_starts(grid: Grid, is_start: torch.Tensor, num_out: int, backend: str,
                 single_frame: bool = False) -> CompressedAudio:
    if grid.packed:
        is_start = _spans.fit_packed_starts(grid, is_start, num_out)
    starts, ends = _spans.spans_from_starts(grid, is_start, num_out, single_frame)
    values = kernel_ops.span_mean(grid.x, starts, ends, backend)
    return _spans.assemble(grid, values, starts, ends, _spans.segment_counts(grid, is_start, num_out))


def _pool_every(grid: Grid, k: int, backend: str, mode: Mode) -> CompressedAudio:
    single_frame = mode == Mode.DOWNSAMPLE
    k = _spans.cap_at_frames(grid, k)  # any k >= T gives the same windows, and no overflow
    if grid.packed and backends.compresses_packed(backend, mode):
        return _compress_packed(grid, mode, float(k), _spans.num_outputs(grid, k), backend)
    if grid.packed:
        return _pool_starts(grid, _spans.start_mask_every(grid, k), _spans.num_outputs(grid, k), backend,
                            single_frame)
    if _fused(grid, backend, mode, math.ceil(grid.num_frames / k)):
        return _compress(grid, mode, float(k), math.ceil(grid.num_frames / k), backend)
    # The spans are plain arithmetic: a handful of small ops instead of the start-mask path
    # (this overhead is what matters for B=1 latency).
    starts, ends = _spans.every_kth_spans(grid.lengths, grid.num_frames, k, single_frame)
    values = kernel_ops.span_mean(grid.x, starts, ends, backend)
    return _spans.assemble(grid, values, starts, ends, (grid.lengths + (k - 1)) // k)


def uniform_pool(x, lengths=None, k: int = 2, *, attention_mask=None, cu_seqlens=None, max_seqlen=None,
                 backend: Optional[str] = None) -> CompressedAudio:
    """Length-aware average pooling: token i averages frames ``[i k, min((i+1) k, L))``.

    Output length ``ceil(L / k)``; padding frames are never read (unlike ``nn.AvgPool1d``).
    """
    k = check_positive_int(k, "k")
    grid = make_grid(x, lengths, attention_mask, cu_seqlens, max_seqlen)
    return _pool_every(grid, k, backends.resolve(backend, grid.x.device), Mode.UNIFORM)


def downsample(x, lengths=None, k: int = 2, *, attention_mask=None, cu_seqlens=None, max_seqlen=None,
               backend: Optional[str] = None) -> CompressedAudio:
    """Keep frames ``0, k, 2k, ...`` below L; output length ``ceil(L / k)``."""
    k = check_positive_int(k, "k")
    grid = make_grid(x, lengths, attention_mask, cu_seqlens, max_seqlen)
    return _pool_every(grid, k, backends.resolve(backend, grid.x.device), Mode.DOWNSAMPLE)


def _raw_scores(grid: Grid, backend: str, sample_starts_zeroed: bool = True) -> torch.Tensor:
    scores = kernel_ops.boundary_scores(grid.x, grid.row_lengths(), backend)
    # Packed: the kernel sees one row, so the first frame of each later sample gets a score
    # against the previous sample's last frame; it is not a boundary score, so zero it
    # (a packed detection kernel never reads it, so it can skip this).
    if grid.packed and sample_starts_zeroed:
        return torch.where(_detect.scored_frames(grid), scores, 0.0)
    return scores


def _unpack(grid: Grid, grid_tensor: torch.Tensor) -> torch.Tensor:
    return grid_tensor[0] if grid.packed else grid_tensor


def boundary_scores(x, lengths=None, *, normalize: bool = False, attention_mask=None, cu_seqlens=None,
                    max_seqlen=None, backend: Optional[str] = None) -> torch.Tensor:
    """``d[t] = 1 - cos(x[t-1], x[t])`` for ``1 <= t < L``, 0 elsewhere (fp32; fp64 for fp64).

    ``normalize=True`` min-max normalises each sample's scores to [0, 1]. Returns ``[B, T]``
    (padded) or ``[N]`` (packed). Not differentiable.
    """
    grid = make_grid(x, lengths, attention_mask, cu_seqlens, max_seqlen)
    name = backends.resolve(backend, grid.x.device)
    if normalize and backends.normalizes(name):  # in the kernel: per sample, packed or padded
        return _unpack(grid, kernel_ops.boundary_scores(grid.x, grid.lengths, name, True, grid.cu_seqlens,
                                                        grid.max_seqlen))
    scores = _raw_scores(grid, name)
    if normalize:
        scores = _detect.normalize_scores(grid, scores)
    return _unpack(grid, scores)


def _detect_starts(grid: Grid, backend: str, mode: Mode, param: float, min_len: int, max_len: int) -> torch.Tensor:
    """Start mask on the grid, frame 0 of each sample included (min_len, max_len capped)."""
    if backends.detects(backend, grid.packed):
        scores = _raw_scores(grid, backend, sample_starts_zeroed=False)
        return kernel_ops.detect_boundaries(scores, grid.lengths, int(mode), param, min_len, max_len, backend,
                                            grid.cu_seqlens, grid.max_seqlen)
    return _detect.starts_from_scores(grid, _raw_scores(grid, backend), mode, param, min_len, max_len)


def detect_boundaries(x, lengths=None, *, prominence: Optional[float] = None, rate: Optional[float] = None,
                      threshold: Optional[float] = None, min_len: int = 1, max_len: Optional[int] = None,
                      attention_mask=None, cu_seqlens=None, max_seqlen=None,
                      backend: Optional[str] = None) -> torch.Tensor:
    """Boolean start mask (``[B, T]`` padded, ``[N]`` packed); frame 0 of every non-empty
    sample is a start. Peak mode (``prominence``, the default, 0.05), fixed ``threshold`` on
    the raw score, or exact ``rate`` (``ceil(L / rate)`` segments). See :mod:`._detect`."""
    check_detection_args(prominence, rate, threshold, min_len, max_len)
    grid = make_grid(x, lengths, attention_mask, cu_seqlens, max_seqlen)
    mode, param = detection_mode(prominence, rate, threshold)
    name = backends.resolve(backend, grid.x.device)
    min_len, max_len = _spans.cap_rules(grid, min_len, max_len)
    return _unpack(grid, _detect_starts(grid, name, mode, param, min_len, max_len))


def _output_rows(grid: Grid, max_segments: Optional[int], count_segments) -> int:
    """``max_segments``, else the static bound T (N packed), else, on CPU tensors in eager
    mode, where counting costs no device sync and no graph is traced, the rows the segments
    need (``count_segments()``; at least 1 when there are frames): no output of T mostly
    empty rows."""
    if max_segments is not None:
        return check_max_segments(max_segments, grid)
    if torch.compiler.is_compiling() or grid.x.device.type != "cpu":
        return grid.num_frames
    return min(max(count_segments(), 1), grid.num_frames)


def _check_segment_ids(grid: Grid, ids) -> None:
    if not isinstance(ids, torch.Tensor) or ids.dtype.is_floating_point or ids.dtype == torch.bool:
        raise TypeError("segment_ids must be an integer tensor [B, T]")
    if tuple(ids.shape) != tuple(grid.x.shape[:2]) or ids.device != grid.x.device:
        raise ValueError(f"segment_ids must have shape {list(grid.x.shape[:2])} on {grid.x.device}, "
                         f"got {list(ids.shape)} on {ids.device}")
    if should_check_values(ids):  # reads the data: CPU tensors only (LALM_FAST_CHECK=1 anywhere)
        ids = torch.where(grid.valid(), ids.long(), torch.iinfo(torch.long).max)
        if bool((ids < 0).any()) or bool((ids[:, 1:] < ids[:, :-1]).any()):
            raise ValueError("segment_ids must be >= 0 and non-decreasing along time within each sample")


def _segment_id_rows(grid: Grid, ids, max_segments: Optional[int]) -> int:
    def count():  # the largest valid id + 1 (CPU eager only: no device sync)
        return int(torch.where(grid.valid(), ids.long(), -1).max()) + 1 if ids.numel() else 0

    return _output_rows(grid, max_segments, count)


def _segment_id_spans(grid: Grid, ids, num_out: int):
    """Spans and counts of sorted per-frame segment ids (pytorch_scatter's ``segment_coo``),
    for the backends without a segment-ids ``compress``."""
    valid = grid.valid()
    ids = torch.where(valid, ids.long(), torch.iinfo(torch.long).max)
    # Ids at or past the last row merge into it; capping them there (padding one above) keeps
    # the order and leaves no id near the int64 limit, where `last_id + 1` would overflow.
    ids = ids.clamp(max=num_out)
    wanted = torch.arange(num_out, device=ids.device).expand(ids.shape[0], -1).contiguous()
    starts = torch.searchsorted(ids, wanted, right=False)
    ends = torch.searchsorted(ids, wanted, right=True)
    if num_out:
        ends = torch.cat([ends[:, :-1], grid.lengths[:, None]], dim=1)  # the last row takes the surplus
    last_id = torch.where(valid, ids, -1).amax(1) if ids.shape[1] else ids.new_full((ids.shape[0],), -1)
    return starts, ends, (last_id + 1).clamp(0, num_out)


def _check_offsets(grid: Grid, offsets) -> None:
    if not isinstance(offsets, torch.Tensor) or offsets.dtype.is_floating_point or offsets.dtype == torch.bool:
        raise TypeError("offsets must be an integer tensor [B, S+1]")
    if offsets.dim() != 2 or offsets.shape[0] != grid.num_samples or offsets.shape[1] < 1:
        raise ValueError(f"offsets must have shape [B={grid.num_samples}, S+1], got {list(offsets.shape)}")
    if offsets.device != grid.x.device:
        raise ValueError(f"offsets is on {offsets.device} but x is on {grid.x.device}")
    if should_check_values(offsets) and offsets.numel():  # reads the data: CPU tensors only
        if bool((offsets[:, 1:] < offsets[:, :-1]).any()) or bool((offsets < 0).any()):
            raise ValueError("offsets must be >= 0 and non-decreasing along each row")


def _offset_spans(grid: Grid, offsets):
    """Spans and counts of CSR offsets ``[B, S+1]`` (pytorch_scatter's ``segment_csr``), for
    the backends without an offsets ``compress``."""
    bounded = torch.minimum(offsets.long(), grid.lengths[:, None])  # clamped to the sample: padding is never read
    starts, ends = bounded[:, :-1].contiguous(), bounded[:, 1:].contiguous()
    return starts, ends, torch.full_like(grid.lengths, starts.shape[1])


def _check_boundaries(grid: Grid, boundaries) -> None:
    mask_shape = tuple(grid.x.shape[:2]) if not grid.packed else (grid.num_frames,)
    if not isinstance(boundaries, torch.Tensor) or boundaries.dtype != torch.bool:
        raise TypeError("boundaries must be a bool tensor (True where a segment starts)")
    if tuple(boundaries.shape) != mask_shape or boundaries.device != grid.x.device:
        raise ValueError(f"boundaries must have shape {list(mask_shape)} on {grid.x.device}, "
                         f"got {list(boundaries.shape)} on {boundaries.device}")


def _pool_ids_or_offsets(grid: Grid, name: str, ids, offsets, max_segments: Optional[int]) -> CompressedAudio:
    if offsets is not None:
        _check_offsets(grid, offsets)
        mode, segments, num_out = Mode.OFFSETS, offsets, offsets.shape[1] - 1
    else:
        _check_segment_ids(grid, ids)
        mode, segments, num_out = Mode.SEGMENT_IDS, ids, _segment_id_rows(grid, ids, max_segments)
    if _fused(grid, name, mode, num_out):  # the spans from one kernel, then the means
        return _compress(grid, mode, 1.0, num_out, name, boundaries=segments)
    starts, ends, counts = (_offset_spans(grid, offsets) if offsets is not None
                            else _segment_id_spans(grid, ids, num_out))
    return _spans.assemble(grid, kernel_ops.span_mean(grid.x, starts, ends, name), starts, ends, counts)


def segment_pool(x, lengths=None, boundaries=None, *, segment_ids=None, offsets=None,
                 max_segments: Optional[int] = None, attention_mask=None, cu_seqlens=None, max_seqlen=None,
                 backend: Optional[str] = None) -> CompressedAudio:
    """Mean of each variable-length segment; an empty segment gives 0.

    Segments come from exactly one of: ``boundaries`` (bool start mask, ``[B, T]`` or ``[N]``;
    frame 0 is always a start), ``segment_ids`` (sorted ids ``[B, T]``, padded input only) or
    ``offsets`` (CSR ``[B, S+1]``, padded input only). The output holds ``max_segments`` rows;
    a sample with more segments has its surplus merged into the last token. By default it
    holds as many rows as the segments need on CPU tensors in eager mode (counting them costs
    no device sync there), else T (N packed), a static bound (CUDA, torch.compile).
    """
    given = [n for n, v in (("boundaries", boundaries), ("segment_ids", segment_ids), ("offsets", offsets))
             if v is not None]
    if len(given) != 1:
        raise ValueError(f"pass exactly one of boundaries, segment_ids or offsets, got {given or 'none'}")
    grid = make_grid(x, lengths, attention_mask, cu_seqlens, max_seqlen)
    name = backends.resolve(backend, grid.x.device)
    if grid.packed and boundaries is None:
        raise ValueError(f"{given[0]} needs padded input; for packed input pass a boundaries mask [N]")
    if boundaries is None:
        return _pool_ids_or_offsets(grid, name, segment_ids, offsets, max_segments)
    _check_boundaries(grid, boundaries)
    num_out = _output_rows(grid, max_segments, lambda: _spans.most_segments(grid, boundaries))
    if _fused(grid, name, Mode.GIVEN, num_out):
        return _compress(grid, Mode.GIVEN, 1.0, num_out, name, boundaries=boundaries)
    if grid.packed and backends.compresses_packed(name, Mode.GIVEN):
        return _compress_packed(grid, Mode.GIVEN, 1.0, num_out, name, boundaries=boundaries)
    starts = _spans.force_sample_starts(grid, boundaries.reshape(grid.x.shape[:2]))
    return _pool_starts(grid, starts, num_out, name)


def segment_compress(x, lengths=None, *, prominence: Optional[float] = None, rate: Optional[float] = None,
                     threshold: Optional[float] = None, min_len: int = 1, max_len: Optional[int] = None,
                     max_segments: Optional[int] = None, attention_mask=None, cu_seqlens=None,
                     max_seqlen=None, backend: Optional[str] = None) -> CompressedAudio:
    """Detect segments (:func:`detect_boundaries`) and mean-pool them (:func:`segment_pool`).

    Output rows: ``ceil(T / rate)`` in rate mode (exact), else ``max_segments`` (default T).
    """
    check_detection_args(prominence, rate, threshold, min_len, max_len)
    grid = make_grid(x, lengths, attention_mask, cu_seqlens, max_seqlen)
    name = backends.resolve(backend, grid.x.device)
    if max_segments is not None:
        num_out = check_max_segments(max_segments, grid)
    else:
        num_out = _spans.num_outputs(grid, rate if rate is not None else 1)
    mode, param = detection_mode(prominence, rate, threshold)
    min_len, max_len = _spans.cap_rules(grid, min_len, max_len)
    if _fused(grid, name, mode, num_out, min_len, max_len):
        return _compress(grid, mode, param, num_out, name, min_len, max_len)
    if grid.packed and backends.compresses_packed(name, mode):
        return _compress_packed(grid, mode, param, num_out, name, min_len, max_len)
    with torch.no_grad():
        starts = _detect_starts(grid, name, mode, param, min_len, max_len)
    return _pool_starts(grid, starts, num_out, name)
