"""segment_pool on CPU from a start mask against the same spans given as offsets, B=8,
T=1500, D=1280 fp32, in one run:

- ``mask, T rows``: the mask with ``max_segments=T``, the old default output size (before);
- ``mask``: the default now, sized to the segments (counted on the CPU tensors);
- ``offsets``: the same spans as CSR offsets ``[B, S+1]``.

The three run in interleaved rounds, so a neighbour's load on a shared machine hits all of
them alike; medians over the rounds. Run from a checkout:

    PYTHONPATH=. python bench/results/segment_pool_mask/measure.py [--rounds 15]
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import statistics
import time
from pathlib import Path

import torch

import lalm_fast.ops as ops

HERE = Path(__file__).resolve().parent


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def measure(density: float, rounds: int, batch=8, frames=1500, dim=1280):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, frames, dim, generator=gen)
    lengths = torch.randint(frames // 2, frames + 1, (batch,), generator=gen)
    lengths[0] = frames
    boundaries = torch.rand(batch, frames, generator=gen) < density
    fitted = ops.segment_pool(x, lengths, boundaries)
    offsets = torch.cat([fitted.spans[..., 0], lengths[:, None]], 1)  # the same spans, CSR
    by_offsets = ops.segment_pool(x, lengths, offsets=offsets)
    assert torch.equal(by_offsets.spans, fitted.spans) and torch.allclose(by_offsets.values, fitted.values)
    variants = {
        "mask, T rows": lambda: ops.segment_pool(x, lengths, boundaries, max_segments=frames),
        "mask": lambda: ops.segment_pool(x, lengths, boundaries),
        "offsets": lambda: ops.segment_pool(x, lengths, offsets=offsets),
    }
    times = {name: [] for name in variants}
    for fn in variants.values():
        fn()  # warm-up
    for _ in range(rounds):
        for name, fn in variants.items():
            times[name].append(timed(fn))
    rows = fitted.values.shape[1]
    return [dict(variant=name, density=density, output_rows=frames if name == "mask, T rows" else rows,
                 ms_median=round(statistics.median(ts), 3), ms_min=round(min(ts), 3)) for name, ts in times.items()]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--out", default=str(HERE / "results.csv"))
    args = parser.parse_args()
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"
    results = []
    for density in (1 / 3, 1 / 8):
        results += measure(density, args.rounds)
    with open(args.out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["machine"] + list(results[0]))
        writer.writeheader()
        writer.writerows(dict(machine=machine, **r) for r in results)
    print(machine)
    for r in results:
        offsets = next(o for o in results if o["density"] == r["density"] and o["variant"] == "offsets")
        print(f"density {r['density']:.3f}  {r['variant']:13s} rows {r['output_rows']:5d}  "
              f"median {r['ms_median']:7.2f} ms  min {r['ms_min']:7.2f} ms  "
              f"x{r['ms_median'] / offsets['ms_median']:.2f} of offsets")


if __name__ == "__main__":
    main()
