"""The result every compression op returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch


@dataclass
class CompressedAudio:
    """Compressed token stream, in the layout of the input.

    Padded input gives ``values [B, S, D]`` with ``lengths [B]``; rows at or past a sample's
    length are zero. Packed input gives ``values [N_out, D]`` with ``cu_seqlens [B+1]``;
    ``lengths`` is then ``cu_seqlens.diff()`` and rows past ``cu_seqlens[-1]`` are zero.
    ``spans [..., 2]`` holds the first frame and the end frame (exclusive) of every output
    token, counted from the start of its own sample; unused rows hold ``(L, L)``.

    ``S`` / ``N_out`` is a static bound (for example ``ceil(T / k)``), so no op syncs the
    host; call :meth:`trim` when a tight tensor is worth one sync.
    """

    values: torch.Tensor
    lengths: torch.Tensor
    spans: torch.Tensor
    cu_seqlens: Optional[torch.Tensor] = None

    @property
    def is_packed(self) -> bool:
        return self.cu_seqlens is not None

    def mask(self) -> torch.Tensor:
        """HF-style attention mask (``int64``, 1 = valid): ``[B, S]`` padded, ``[N_out]`` packed."""
        if self.is_packed:
            rows = torch.arange(self.values.shape[0], device=self.values.device)
            return (rows < self.cu_seqlens[-1]).long()
        rows = torch.arange(self.values.shape[1], device=self.values.device)
        return (rows[None, :] < self.lengths[:, None]).long()

    def trim(self) -> "CompressedAudio":
        """Cut the output to its longest sample (padded) or its total (packed). Syncs once."""
        if self.is_packed:
            keep = int(self.cu_seqlens[-1])
            return CompressedAudio(self.values[:keep], self.lengths, self.spans[:keep], self.cu_seqlens)
        keep = int(self.lengths.max()) if self.lengths.numel() else 0
        return CompressedAudio(self.values[:, :keep], self.lengths, self.spans[:, :keep])
