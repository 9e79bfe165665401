"""Length-bucketed batching: clips of similar length share a batch, so little compute is spent
on padding, and the order is a pure function of the lengths and the seed."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def bucket_batches(lengths: Sequence[int | float], *, batch_size: int | None = None,
                   max_frames: int | float | None = None, seed: int | None = None) -> list[list[int]]:
    """Group indices of ``lengths`` into batches of similar length.

    Give ``batch_size`` (at most that many items per batch), ``max_frames`` (the padded size of a
    batch, ``len(batch) * max(length in batch)``, stays within it; an item longer than
    ``max_frames`` on its own gets a batch of one), or both. Indices are sorted by length;
    with a ``seed``, equal lengths are tie-broken at random and the batch order is shuffled, the
    same way for the same seed (batches stay length-homogeneous). Every index appears exactly once.
    """
    if batch_size is None and max_frames is None:
        raise ValueError("give batch_size, max_frames or both")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if max_frames is not None and max_frames <= 0:
        raise ValueError(f"max_frames must be > 0, got {max_frames}")
    lengths = np.asarray(lengths, dtype=np.float64)
    rng = np.random.default_rng(seed) if seed is not None else None
    order = _sorted_by_length(lengths, rng)
    batches = _split(order, lengths, batch_size, max_frames)
    if rng is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def _sorted_by_length(lengths: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
    # Permute first, then a stable sort: ties land in a seeded random order.
    start = rng.permutation(len(lengths)) if rng is not None else np.arange(len(lengths))
    return start[np.argsort(lengths[start], kind="stable")]


def _split(order: np.ndarray, lengths: np.ndarray, batch_size: int | None,
           max_frames: float | None) -> list[list[int]]:
    batches, current = [], []
    for index in order.tolist():
        # Sorted ascending, so the newcomer is the batch's longest item.
        too_many = batch_size is not None and len(current) == batch_size
        too_big = max_frames is not None and (len(current) + 1) * lengths[index] > max_frames
        if current and (too_many or too_big):
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches
