"""Public functional API: audio-token compression ops (design section 4).

Every op takes padded input (``x [B, T, D]`` with ``lengths [B]`` or ``attention_mask [B, T]``,
or neither for all-valid) or packed input (``x [N, D]`` with ``cu_seqlens [B+1]`` and
``max_seqlen`` as a Python int), and a ``backend=`` override. Pooling ops return a
:class:`CompressedAudio`; gradients flow to ``x``; nothing syncs the host.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from lalm_fast.ops import _detect, _spans, backends, custom_ops
from lalm_fast.ops._inputs import Grid, check_positive_int, make_grid, should_check_values
from lalm_fast.ops.result import CompressedAudio

__all__ = [
    "CompressedAudio",
    "uniform_pool",
    "downsample",
    "boundary_scores",
    "detect_boundaries",
    "segment_pool",
    "segment_compress",
    "backends",
]

DEFAULT_PROMINENCE = 0.05  # SCPC / UnsupSeg's tuned range is 0..0.14


def _span_mean(grid: Grid, starts, ends, backend: str) -> torch.Tensor:
    module = backends.kernels(backend)
    if custom_ops.dispatch_free(grid.x):
        return module.span_mean(grid.x, starts, ends)
    if hasattr(module, "span_mean_op"):  # Triton: a triton_op that torch.compile sees into
        return module.span_mean_op(grid.x, starts, ends)
    return custom_ops.span_mean(grid.x, starts, ends, backend)


def _raw_scores(grid: Grid, backend: str) -> torch.Tensor:
    module = backends.kernels(backend)
    op = module.boundary_scores_op if hasattr(module, "boundary_scores_op") else (
        lambda x, lengths: custom_ops.boundary_scores(x, lengths, backend))
    scores = op(grid.x, grid.row_lengths())
    return torch.where(_detect.scored_frames(grid), scores, 0.0) if grid.packed else scores


def _pool(grid: Grid, is_start, num_out: int, backend: str, single_frame: bool = False) -> CompressedAudio:
    starts, ends = _spans.spans_from_starts(grid, is_start, num_out, single_frame)
    values = _span_mean(grid, starts, ends, backend)
    return _spans.assemble(grid, values, starts, ends, _spans.segment_counts(grid, is_start, num_out))


def _unpack_scores(grid: Grid, grid_tensor: torch.Tensor) -> torch.Tensor:
    return grid_tensor[0] if grid.packed else grid_tensor


def _compress_native(grid: Grid, mode: int, param: float, min_len: int, max_len: int, num_out: int,
                     backend: str, boundaries: Optional[torch.Tensor] = None) -> CompressedAudio:
    if custom_ops.dispatch_free(grid.x):
        values, starts, ends, counts = backends.kernels(backend).compress(
            grid.x, grid.lengths, mode, param, min_len, max_len, num_out, boundaries)
    else:
        values, starts, ends, counts = custom_ops.compress(
            grid.x, grid.lengths, mode, param, min_len, max_len, num_out, backend, boundaries)
    return _spans.assemble(grid, values, starts, ends, counts)


def _pool_every(grid: Grid, k: int, backend: str, single_frame: bool) -> CompressedAudio:
    mode = custom_ops.MODES["downsample" if single_frame else "uniform"]
    if not grid.packed and backends.has_compress(backend, mode):
        return _compress_native(grid, mode, float(k), 1, 0, math.ceil(grid.num_frames / k), backend)
    if grid.packed:
        return _pool(grid, _spans.start_mask_every(grid, k), _spans.num_outputs(grid, k), backend, single_frame)
    # Padded: the spans are plain arithmetic, a handful of small ops instead of the mask path
    # (this overhead is what matters for B=1 latency).
    starts, ends = _spans.every_kth_spans(grid.lengths, grid.num_frames, k, single_frame)
    counts = (grid.lengths + (k - 1)) // k
    return _spans.assemble(grid, _span_mean(grid, starts, ends, backend), starts, ends, counts)


def uniform_pool(x, lengths=None, k: int = 2, *, attention_mask=None, cu_seqlens=None, max_seqlen=None,
                 backend: Optional[str] = None) -> CompressedAudio:
    """Length-aware average pooling: token i averages frames ``[i k, min((i+1) k, L))``.

    Output length ``ceil(L / k)``; padding frames are never read (unlike ``nn.AvgPool1d``).
    """
    k = check_positive_int(k, "k")
    grid = make_grid(x, lengths, attention_mask, cu_seqlens, max_seqlen)
    return _pool_every(grid, k, backends.resolve(backend, grid.x.device), single_frame=False)


def downsample(x, lengths=None, k: int = 2, *, attention_mask=None, cu_seqlens=None, max_seqlen=None,
               backend: Optional[str] = None) -> CompressedAudio:
    """Keep frames ``0, k, 2k, ...`` below L; output length ``ceil(L / k)``."""
    k = check_positive_int(k, "k")
    grid = make_grid(x, lengths, attention_mask, cu_seqlens, max_seqlen)
    return _pool_every(grid, k, backends.resolve(backend, grid.x.device), single_frame=True)


def boundary_scores(x, lengths=None, *, normalize: bool = False, attention_mask=None, cu_seqlens=None,
                    max_seqlen=None, backend: Optional[str] = None) -> torch.Tensor:
    """``d[t] = 1 - cos(x[t-1], x[t])`` for ``1 <= t < L``, 0 elsewhere (fp32; fp64 for fp64).

    ``normalize=True`` min-max normalises each sample's scores to [0, 1]. Returns ``[B, T]``
    (padded) or ``[N]`` (packed). Not differentiable.
    """
    grid = make_grid(x, lengths, attention_mask, cu_seqlens, max_seqlen)
    scores = _raw_scores(grid, backends.resolve(backend, grid.x.device))
    if normalize:
        scores = _detect.normalize_scores(grid, scores)
    return _unpack_scores(grid, scores)


def _check_detection_args(prominence, rate, threshold, min_len, max_len):
    modes = [name for name, value in (("prominence", prominence), ("rate", rate), ("threshold", threshold))
             if value is not None]
    if len(modes) > 1:
        raise ValueError(f"choose one detection mode, got {' and '.join(modes)}")
    for name, value in (("prominence", prominence), ("rate", rate), ("threshold", threshold)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if rate is not None and not rate >= 1:
        raise ValueError(f"rate must be >= 1 (frames per output token), got {rate}")
    if prominence is not None and not prominence >= 0:
        raise ValueError(f"prominence must be >= 0, got {prominence}")
    if threshold is not None and math.isnan(threshold):
        raise ValueError("threshold must not be NaN")
    check_positive_int(min_len, "min_len")
    if max_len is not None:
        check_positive_int(max_len, "max_len")
        if max_len < min_len:
            raise ValueError(f"max_len ({max_len}) must be >= min_len ({min_len})")
        if rate is not None:
            raise ValueError("max_len cannot be combined with rate: rate fixes the token count exactly")


def _native_mode(prominence, rate, threshold) -> tuple[int, float]:
    if rate is not None:
        return custom_ops.MODES["rate"], float(rate)
    if threshold is not None:
        return custom_ops.MODES["threshold"], float(threshold)
    return custom_ops.MODES["peak"], float(DEFAULT_PROMINENCE if prominence is None else prominence)


def _detect_starts(grid: Grid, backend: str, prominence, rate, threshold, min_len, max_len) -> torch.Tensor:
    """Start mask on the grid, frame 0 of each sample included."""
    scores = _raw_scores(grid, backend)
    if not grid.packed and hasattr(backends.kernels(backend), "detect_boundaries"):
        mode, param = _native_mode(prominence, rate, threshold)
        return custom_ops.detect_starts(scores, grid.lengths, mode, param, min_len, max_len or 0, backend)
    return starts_from_scores(grid, scores, prominence, rate, threshold, min_len, max_len)


def starts_from_scores(grid: Grid, scores, prominence=None, rate=None, threshold=None, min_len=1, max_len=None):
    """Detection on given raw ``[R, T]`` scores (the part of detection after the kernel)."""
    if rate is not None:
        starts = _detect.rate_starts(grid, scores, rate, min_len)
    else:
        if threshold is not None:
            candidates, ranking = _detect.scored_frames(grid) & (scores > threshold), scores
        else:
            candidates, ranking = _detect.peak_starts(grid, scores, DEFAULT_PROMINENCE if prominence is None else prominence)
        starts = _detect.suppress_close(grid, candidates, ranking, min_len)
    starts = _spans.force_sample_starts(grid, starts)
    return _detect.split_long(grid, starts, max_len) if max_len is not None else starts


def detect_boundaries(x, lengths=None, *, prominence: Optional[float] = None, rate: Optional[float] = None,
                      threshold: Optional[float] = None, min_len: int = 1, max_len: Optional[int] = None,
                      attention_mask=None, cu_seqlens=None, max_seqlen=None,
                      backend: Optional[str] = None) -> torch.Tensor:
    """Boolean start mask (``[B, T]`` padded, ``[N]`` packed); frame 0 of every non-empty
    sample is a start. Peak mode (``prominence``, the default, 0.05), fixed ``threshold`` on
    the raw score, or exact ``rate`` (``ceil(L / rate)`` segments). See :mod:`._detect`."""
    _check_detection_args(prominence, rate, threshold, min_len, max_len)
    grid = make_grid(x, lengths, attention_mask, cu_seqlens, max_seqlen)
    name = backends.resolve(backend, grid.x.device)
    return _unpack_scores(grid, _detect_starts(grid, name, prominence, rate, threshold, min_len, max_len))


def _starts_from_segment_ids(grid: Grid, ids) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Spans of sorted per-frame segment ids (pytorch_scatter's ``segment_coo`` convention)."""
    if not isinstance(ids, torch.Tensor) or ids.dtype.is_floating_point or ids.dtype == torch.bool:
        raise TypeError("segment_ids must be an integer tensor [B, T]")
    if tuple(ids.shape) != tuple(grid.x.shape[:2]) or ids.device != grid.x.device:
        raise ValueError(f"segment_ids must have shape {list(grid.x.shape[:2])} on {grid.x.device}, "
                         f"got {list(ids.shape)} on {ids.device}")
    valid = grid.valid()
    big = torch.iinfo(torch.long).max
    ids = torch.where(valid, ids.long(), big)
    if should_check_values(ids):
        if bool((ids < 0).any()) or bool((ids[:, 1:] < ids[:, :-1]).any()):
            raise ValueError("segment_ids must be >= 0 and non-decreasing along time within each sample")
    return ids, valid, big


def _pool_segment_ids(grid: Grid, ids, num_out: int, backend: str) -> CompressedAudio:
    ids, valid, _ = _starts_from_segment_ids(grid, ids)
    wanted = torch.arange(num_out, device=ids.device).expand(ids.shape[0], -1).contiguous()
    starts = torch.searchsorted(ids, wanted, right=False)
    ends = torch.searchsorted(ids, wanted, right=True)
    last_id = torch.where(valid, ids, -1).amax(1) if ids.shape[1] else ids.new_full((ids.shape[0],), -1)
    counts = (last_id + 1).clamp(0, num_out)
    values = _span_mean(grid, starts, ends, backend)
    return _spans.assemble(grid, values, starts, ends, counts)


def _pool_offsets(grid: Grid, offsets, backend: str) -> CompressedAudio:
    """CSR offsets ``[B, S+1]`` per sample (pytorch_scatter's ``segment_csr`` convention)."""
    if not isinstance(offsets, torch.Tensor) or offsets.dtype.is_floating_point or offsets.dtype == torch.bool:
        raise TypeError("offsets must be an integer tensor [B, S+1]")
    if offsets.dim() != 2 or offsets.shape[0] != grid.num_samples or offsets.shape[1] < 1:
        raise ValueError(f"offsets must have shape [B={grid.num_samples}, S+1], got {list(offsets.shape)}")
    if offsets.device != grid.x.device:
        raise ValueError(f"offsets is on {offsets.device} but x is on {grid.x.device}")
    offsets = offsets.long()
    if should_check_values(offsets) and offsets.numel():
        if bool((offsets[:, 1:] < offsets[:, :-1]).any()) or bool((offsets < 0).any()):
            raise ValueError("offsets must be >= 0 and non-decreasing along each row")
    # Clamped to the sample: padding is never read.
    bounded = torch.minimum(offsets, grid.lengths[:, None])
    starts, ends = bounded[:, :-1].contiguous(), bounded[:, 1:].contiguous()
    counts = torch.full_like(grid.lengths, starts.shape[1])
    return _spans.assemble(grid, _span_mean(grid, starts, ends, backend), starts, ends, counts)


def segment_pool(x, lengths=None, boundaries=None, *, segment_ids=None, offsets=None,
                 max_segments: Optional[int] = None, attention_mask=None, cu_seqlens=None, max_seqlen=None,
                 backend: Optional[str] = None) -> CompressedAudio:
    """Mean of each variable-length segment; an empty segment gives 0.

    Segments come from exactly one of: ``boundaries`` (bool start mask, ``[B, T]`` or ``[N]``;
    frame 0 is always a start), ``segment_ids`` (sorted ids ``[B, T]``, padded input only) or
    ``offsets`` (CSR ``[B, S+1]``, padded input only). The output holds ``max_segments`` rows
    (default: T, or N packed); a sample with more segments has its surplus merged into the
    last token.
    """
    given = [n for n, v in (("boundaries", boundaries), ("segment_ids", segment_ids), ("offsets", offsets))
             if v is not None]
    if len(given) != 1:
        raise ValueError(f"pass exactly one of boundaries, segment_ids or offsets, got {given or 'none'}")
    grid = make_grid(x, lengths, attention_mask, cu_seqlens, max_seqlen)
    name = backends.resolve(backend, grid.x.device)
    if grid.packed and boundaries is None:
        raise ValueError(f"{given[0]} needs padded input; for packed input pass a boundaries mask [N]")
    num_out = grid.num_frames if max_segments is None else check_positive_int(max_segments, "max_segments")
    if offsets is not None:
        return _pool_offsets(grid, offsets, name)
    if segment_ids is not None:
        return _pool_segment_ids(grid, segment_ids, num_out, name)
    mask_shape = tuple(grid.x.shape[:2]) if not grid.packed else (grid.num_frames,)
    if not isinstance(boundaries, torch.Tensor) or boundaries.dtype != torch.bool:
        raise TypeError("boundaries must be a bool tensor (True where a segment starts)")
    if tuple(boundaries.shape) != mask_shape or boundaries.device != grid.x.device:
        raise ValueError(f"boundaries must have shape {list(mask_shape)} on {grid.x.device}, "
                         f"got {list(boundaries.shape)} on {boundaries.device}")
    if not grid.packed and backends.has_compress(name, custom_ops.MODES["given"]):
        return _compress_native(grid, custom_ops.MODES["given"], 1.0, 1, 0, num_out, name, boundaries)
    starts = _spans.force_sample_starts(grid, boundaries.view(-1, grid.num_frames))
    return _pool(grid, starts, num_out, name)


def segment_compress(x, lengths=None, *, prominence: Optional[float] = None, rate: Optional[float] = None,
                     threshold: Optional[float] = None, min_len: int = 1, max_len: Optional[int] = None,
                     max_segments: Optional[int] = None, attention_mask=None, cu_seqlens=None,
                     max_seqlen=None, backend: Optional[str] = None) -> CompressedAudio:
    """Detect segments (:func:`detect_boundaries`) and mean-pool them (:func:`segment_pool`).

    Output rows: ``ceil(T / rate)`` in rate mode (exact), else ``max_segments`` (default T).
    """
    _check_detection_args(prominence, rate, threshold, min_len, max_len)
    grid = make_grid(x, lengths, attention_mask, cu_seqlens, max_seqlen)
    name = backends.resolve(backend, grid.x.device)
    if max_segments is not None:
        num_out = check_positive_int(max_segments, "max_segments")
    else:
        num_out = _spans.num_outputs(grid, rate if rate is not None else 1)
    mode, param = _native_mode(prominence, rate, threshold)
    if not grid.packed and backends.has_compress(name, mode, min_len, max_len or 0):
        return _compress_native(grid, mode, param, min_len, max_len or 0, num_out, name)
    with torch.no_grad():
        starts = _detect_starts(grid, name, prominence, rate, threshold, min_len, max_len)
    return _pool(grid, starts, num_out, name)
