"""Input checking and the internal *grid* layout every op works on.

Padded input ``x [B, T, D]`` is its own grid: one row per sample. Packed input ``x [N, D]``
becomes a grid of one row ``[1, N, D]`` holding every sample back to back. Either way the ops
build per-frame facts (valid? offset inside its sample? where does its sample end?) on the
grid and hand ``(starts, ends)`` spans to the kernels, so each kernel exists once.

Value checks (lengths in range, masks left-aligned, cu_seqlens sorted) need the data, which
would cost a device sync on GPU; they run on CPU tensors, or anywhere when
``LALM_FAST_CHECK=1``, and never while ``torch.compile`` traces. Kernels clamp lengths to
``[0, T]`` anyway, so an unchecked bad value can never read out of bounds.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


@dataclass
class Grid:
    x: torch.Tensor  # [R, T, D], stride(-1) == 1
    lengths: torch.Tensor  # [B] int64, per sample
    packed: bool
    cu_seqlens: Optional[torch.Tensor]  # [B+1] int64 when packed
    max_seqlen: int = 0  # packed: the caller's bound on the longest sample (unused when padded)

    @property
    def num_samples(self) -> int:
        return self.lengths.shape[0]

    @property
    def num_frames(self) -> int:
        return self.x.shape[1]

    def frames(self) -> torch.Tensor:
        return torch.arange(self.num_frames, device=self.x.device)

    def row_lengths(self) -> torch.Tensor:
        """Valid frames of each grid row: the samples' lengths, or the packed total."""
        return self.cu_seqlens[-1:] if self.packed else self.lengths

    def sample_of_frame(self) -> torch.Tensor:
        """[R, T] index of the sample each frame belongs to (B for packed padding)."""
        if self.packed:
            return torch.searchsorted(self.cu_seqlens[1:], self.frames(), right=True)[None, :]
        return torch.arange(self.num_samples, device=self.x.device)[:, None].expand(-1, self.num_frames)

    def sample_start(self) -> torch.Tensor:
        """[R, T] grid position of the first frame of each frame's sample."""
        if self.packed:
            starts = torch.cat([self.cu_seqlens[:-1], self.cu_seqlens[-1:]])
            return starts[self.sample_of_frame()]
        return torch.zeros(self.num_samples, self.num_frames, dtype=torch.long, device=self.x.device)

    def sample_end(self) -> torch.Tensor:
        """[R, T] grid position one past the last frame of each frame's sample."""
        if self.packed:
            ends = torch.cat([self.cu_seqlens[1:], self.cu_seqlens[-1:]])
            return ends[self.sample_of_frame()]
        return self.lengths[:, None].expand(-1, self.num_frames)

    def valid(self) -> torch.Tensor:
        return self.frames()[None, :] < self.row_lengths()[:, None]


def should_check_values(*tensors: torch.Tensor) -> bool:
    if torch.compiler.is_compiling():
        return False
    if os.environ.get("LALM_FAST_CHECK") == "1":
        return True
    return all(t.device.type == "cpu" for t in tensors)


def check_features(x, rank: int, name: str = "x") -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float16, bfloat16, float32 or float64, got {x.dtype}")
    if x.dim() != rank:
        layout = "[B, T, D] (padded)" if rank == 3 else "[N, D] (packed, with cu_seqlens)"
        raise ValueError(f"{name} must have shape {layout}, got {tuple(x.shape)}")


def _check_index_tensor(t, name: str, shape: tuple, x: torch.Tensor) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor, got {t.dtype}")
    if tuple(t.shape) != shape:
        raise ValueError(f"{name} must have shape {list(shape)}, got {list(t.shape)}")
    if t.device != x.device:
        raise ValueError(f"{name} is on {t.device} but x is on {x.device}; put both on one device")


def _lengths_from_mask(attention_mask, x: torch.Tensor) -> torch.Tensor:
    if not isinstance(attention_mask, torch.Tensor):
        raise TypeError(f"attention_mask must be a torch.Tensor, got {type(attention_mask).__name__}")
    if tuple(attention_mask.shape) != tuple(x.shape[:2]):
        raise ValueError(f"attention_mask must have shape [B, T] = {list(x.shape[:2])}, got {list(attention_mask.shape)}")
    if attention_mask.device != x.device:
        raise ValueError(f"attention_mask is on {attention_mask.device} but x is on {x.device}")
    mask = attention_mask.bool()
    lengths = mask.sum(1)
    if should_check_values(mask):
        frames = torch.arange(x.shape[1], device=x.device)
        if not torch.equal(mask, frames[None, :] < lengths[:, None]):
            raise ValueError("attention_mask must be left-aligned (1s then 0s in every row); "
                             "flip left-padded inputs first")
    return lengths


def padded_grid(x, lengths=None, attention_mask=None) -> Grid:
    check_features(x, 3)
    if lengths is not None and attention_mask is not None:
        raise ValueError("pass either lengths or attention_mask, not both")
    if attention_mask is not None:
        lengths = _lengths_from_mask(attention_mask, x)
    elif lengths is None:
        lengths = torch.full((x.shape[0],), x.shape[1], dtype=torch.long, device=x.device)
    else:
        _check_index_tensor(lengths, "lengths", (x.shape[0],), x)
        if should_check_values(lengths) and lengths.numel():
            low, high = (int(v) for v in torch.aminmax(lengths))
            if low < 0 or high > x.shape[1]:
                raise ValueError(f"lengths must lie in [0, T={x.shape[1]}], got values in [{low}, {high}]")
    lengths = lengths.long().clamp(0, x.shape[1])
    return Grid(_last_dim_contiguous(x), lengths, False, None)


def packed_grid(x, cu_seqlens, max_seqlen) -> Grid:
    check_features(x, 2)
    if not isinstance(cu_seqlens, torch.Tensor) or cu_seqlens.dim() != 1 or cu_seqlens.numel() < 1:
        raise ValueError("cu_seqlens must be a 1-D integer tensor [B+1] starting at 0")
    _check_index_tensor(cu_seqlens, "cu_seqlens", tuple(cu_seqlens.shape), x)
    if isinstance(max_seqlen, torch.Tensor) or isinstance(max_seqlen, bool) or not isinstance(max_seqlen, int):
        raise TypeError("max_seqlen must be a Python int (a static bound; a tensor would force a device sync)")
    if max_seqlen < 0:
        raise ValueError(f"max_seqlen must be >= 0, got {max_seqlen}")
    cu = cu_seqlens.long()
    if should_check_values(cu):
        steps = cu.diff()
        if int(cu[0]) != 0 or bool((steps < 0).any()) or int(cu[-1]) > x.shape[0]:
            raise ValueError(f"cu_seqlens must start at 0, never decrease and end at <= N={x.shape[0]}, got {cu.tolist()}")
        if steps.numel() and int(steps.max()) > max_seqlen:
            raise ValueError(f"max_seqlen={max_seqlen} is smaller than the longest sample ({int(steps.max())})")
    cu = cu.clamp(0, x.shape[0])
    return Grid(_last_dim_contiguous(x)[None], cu.diff(), True, cu, max_seqlen)


def make_grid(x, lengths=None, attention_mask=None, cu_seqlens=None, max_seqlen=None) -> Grid:
    if cu_seqlens is None:
        if max_seqlen is not None:
            raise ValueError("max_seqlen is only meaningful with cu_seqlens (packed input)")
        return padded_grid(x, lengths, attention_mask)
    if lengths is not None or attention_mask is not None:
        raise ValueError("packed input takes cu_seqlens and max_seqlen, not lengths or attention_mask")
    if max_seqlen is None:
        raise ValueError("packed input needs max_seqlen (a Python int) along with cu_seqlens")
    return packed_grid(x, cu_seqlens, max_seqlen)


def _last_dim_contiguous(x: torch.Tensor) -> torch.Tensor:
    # Kernels vectorise over D and take any stride for the other dims; only a strided D
    # (e.g. a transposed view) needs a copy.
    return x if x.stride(-1) == 1 or x.shape[-1] == 1 else x.contiguous()
