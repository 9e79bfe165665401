"""CPU kernel benchmark: lalm-fast's ops against baselines measured in the same run.

    lalm-fast bench kernels-cpu            # full grid (a few minutes on 2 cores)
    lalm-fast bench kernels-cpu --quick    # one small shape, seconds (CI smoke test)

For each shape (Whisper-tiny D=384 and Whisper-large D=1280 encoder outputs, T=1500 frames,
B in {1, 8, 32}, rates 2-4, segment lengths drawn around the rate) it times:
- segment_pool (cpu backend) vs torch.segment_reduce (lengths, initial=0), the best eager
  composite (index_add_ or a cumsum difference), torch.compile of the pure-torch reference, and
  a plain copy of x (the memory-bandwidth limit);
- uniform_pool vs nn.AvgPool1d(k, k) on the same tensor (length-unaware, as in Qwen2-Audio);
- segment_compress (scores + detection + pooling) vs segment_pool alone;
- backward of each pooling op vs its forward.
Prints one table of medians, GB/s, % of the copy bandwidth and every ratio, and appends the
rows to kernels_cpu.csv in :func:`report.results_dir` (shape by shape, so a cut-short run keeps
what it measured) in the shared result format of report.py: the common columns (suite, run_id,
date, device, threads, versions), then dtype, shape, provider and times.
Plot: python -m lalm_fast.bench.report plot CSV --out PNG.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils import benchmark

import lalm_fast.ops as ops

from . import report

SUITE = "kernels_cpu"
# After report.COMMON_FIELDS (suite, run_id, date, device, threads, torch, triton, cuda, lalm_fast).
FIELDS = ["dtype", "batch", "frames", "dim", "rate", "provider", "ms_median", "ms_p20", "ms_p80", "copy_gbps"]


@dataclass
class Timing:
    median_ms: float
    p20_ms: float
    p80_ms: float


def measure(fn, min_run_time: float) -> Timing:
    # Warm-up: compiles torch.compile baselines, and lets the OS settle the first huge-page
    # faults of large outputs (the first calls of a process can be several times slower).
    fn()
    warm_until = time.perf_counter() + min_run_time / 2
    while time.perf_counter() < warm_until:
        fn()
    # Timer defaults to one thread; measure with all the threads torch would use.
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    m = timer.blocked_autorange(min_run_time=min_run_time)
    times = np.array(m.times) * 1e3
    return Timing(float(np.median(times)), float(np.percentile(times, 20)), float(np.percentile(times, 80)))


def random_boundaries(batch: int, frames: int, rate: int, gen: torch.Generator) -> torch.Tensor:
    """Segment starts with lengths uniform in [1, 2 rate - 1] (mean = rate), like real
    acoustic segments around a target rate."""
    lengths = torch.randint(1, 2 * rate, (batch, frames), generator=gen)
    starts = lengths.cumsum(1) - lengths
    mask = torch.zeros(batch, frames + 2 * rate * frames, dtype=torch.bool)
    mask.scatter_(1, starts, True)
    return mask[:, :frames]


def eager_index_add(x, seg_ids, counts, num_out):
    out = torch.zeros(x.shape[0] * num_out, x.shape[2], dtype=x.dtype)
    out.index_add_(0, seg_ids, x.reshape(-1, x.shape[2]))
    return out.view(x.shape[0], num_out, -1) / counts


def eager_cumsum(x, starts, ends):
    prefix = F.pad(x.cumsum(1), (0, 0, 1, 0))
    gather = lambda idx: torch.gather(prefix, 1, idx[..., None].expand(-1, -1, x.shape[2]))
    return (gather(ends) - gather(starts)) / (ends - starts).clamp_min(1)[..., None]


def bench_shape(batch, frames, dim, rate, dtype, min_run_time, compile_reference, gen):
    x = torch.randn(batch, frames, dim, generator=gen).to(dtype)
    lengths = torch.full((batch,), frames)
    boundaries = random_boundaries(batch, frames, rate, gen)
    num_out = frames  # static bound: a sample can have up to T segments
    seg = ops.segment_pool(x, lengths, boundaries, max_segments=num_out)
    num_out = int(seg.lengths.max())  # benchmark with a tight bound, as a caller that knows it would
    seg = ops.segment_pool(x, lengths, boundaries, max_segments=num_out)
    spans = seg.spans
    seg_lengths = (spans[..., 1] - spans[..., 0])[seg.mask().bool()]
    seg_ids = (boundaries.long().cumsum(1) - 1 + torch.arange(batch)[:, None] * num_out).reshape(-1)
    counts = (spans[..., 1] - spans[..., 0]).clamp_min(1)[..., None].to(dtype)
    starts, ends = spans[..., 0].contiguous(), spans[..., 1].contiguous()
    copy_out = torch.empty_like(x)

    t = {}
    t["copy"] = measure(lambda: copy_out.copy_(x), min_run_time)
    t["segment_pool"] = measure(lambda: ops.segment_pool(x, lengths, boundaries, max_segments=num_out), min_run_time)
    t["segment_reduce"] = measure(
        lambda: torch.segment_reduce(x.reshape(-1, dim), "mean", lengths=seg_lengths, axis=0, unsafe=True, initial=0),
        min_run_time)
    t["eager_index_add"] = measure(lambda: eager_index_add(x, seg_ids, counts, num_out), min_run_time)
    t["eager_cumsum"] = measure(lambda: eager_cumsum(x, starts, ends), min_run_time)
    if compile_reference:
        ref = torch.compile(lambda x: ops.segment_pool(x, lengths, boundaries, max_segments=num_out, backend="torch").values)
        t["compiled_reference"] = measure(lambda: ref(x), min_run_time)
    t["uniform_pool"] = measure(lambda: ops.uniform_pool(x, lengths, rate), min_run_time)
    t["avgpool1d"] = measure(lambda: F.avg_pool1d(x.transpose(1, 2), rate, rate).transpose(1, 2), min_run_time)
    t["segment_compress"] = measure(lambda: ops.segment_compress(x, lengths, rate=rate), min_run_time)
    for name, fn in (("segment_pool", lambda v: ops.segment_pool(v, lengths, boundaries, max_segments=num_out)),
                     ("uniform_pool", lambda v: ops.uniform_pool(v, lengths, rate))):
        leaf = x.clone().requires_grad_()
        out = fn(leaf).values
        grad = torch.randn_like(out)
        t[name + "_bwd"] = measure(lambda: torch.autograd.grad(out, leaf, grad, retain_graph=True), min_run_time)

    elt = x.element_size()
    bytes_seg = x.numel() * elt + batch * num_out * dim * elt
    bytes_uni = x.numel() * elt + batch * -(-frames // rate) * dim * elt
    copy_gbps = 2 * x.numel() * elt / t["copy"].median_ms / 1e6
    return t, {"bytes_segment_pool": bytes_seg, "bytes_uniform_pool": bytes_uni, "copy_gbps": copy_gbps}


def ratios(t) -> dict[str, float]:
    eager = min(t["eager_index_add"].median_ms, t["eager_cumsum"].median_ms)
    out = {
        "seg_vs_segment_reduce": t["segment_reduce"].median_ms / t["segment_pool"].median_ms,
        "seg_vs_eager": eager / t["segment_pool"].median_ms,
        "seg_over_copy": t["segment_pool"].median_ms / t["copy"].median_ms,
        "uniform_over_avgpool": t["uniform_pool"].median_ms / t["avgpool1d"].median_ms,
        "compress_over_seg": t["segment_compress"].median_ms / t["segment_pool"].median_ms,
        "seg_bwd_over_fwd": t["segment_pool_bwd"].median_ms / t["segment_pool"].median_ms,
        "uniform_bwd_over_fwd": t["uniform_pool_bwd"].median_ms / t["uniform_pool"].median_ms,
    }
    if "compiled_reference" in t:
        out["seg_vs_compiled_ref"] = t["compiled_reference"].median_ms / t["segment_pool"].median_ms
    return out


TARGETS = {  # the kernels' performance targets: (ratio name, comparison, bound)
    "seg_vs_segment_reduce": (">=", 3.0),
    "seg_vs_eager": (">=", 1.5),
    "seg_over_copy": ("<=", 1.5),
    "uniform_over_avgpool": ("<=", 1.2),
    "compress_over_seg": ("<=", 2.0),
    "seg_bwd_over_fwd": ("<=", 1.5),
    "uniform_bwd_over_fwd": ("<=", 1.5),
}


def meets(name: str, value: float) -> str:
    if name not in TARGETS:
        return ""
    op, bound = TARGETS[name]
    ok = value >= bound if op == ">=" else value <= bound
    return "ok" if ok else "MISS"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one small shape (CI smoke test)")
    parser.add_argument("--dims", type=int, nargs="+", default=[384, 1280])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--rates", type=int, nargs="+", default=[2, 3, 4])
    parser.add_argument("--frames", type=int, default=1500)
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    parser.add_argument("--min-run-time", type=float, default=0.5, help="seconds per measurement")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile baseline")
    parser.add_argument("--csv", help="CSV to append rows to ('' to skip; default kernels_cpu.csv in "
                        "bench/results of a checkout, else in ./bench-results)")
    args = parser.parse_args(argv)
    if args.csv is None:
        args.csv = os.path.join(report.results_dir(), "kernels_cpu.csv")
    if args.quick:
        args.dims, args.batches, args.rates, args.frames, args.min_run_time = [41], [2], [3], 200, 0.05
    dtype = getattr(torch, args.dtype)
    gen = torch.Generator().manual_seed(0)
    meta = {**report.common_fields(SUITE), "dtype": args.dtype}
    print(f"# {meta['device']}, {meta['threads']} threads, torch {meta['torch']}, {args.dtype}, "
          f"backend {ops.backends.resolve(None, torch.device('cpu'))}")
    header = (f"{'B':>3} {'D':>5} {'r':>2} | {'seg ms':>7} {'GB/s':>6} {'%copy':>6} | {'seg_reduce':>10} {'eager':>6} "
              f"{'compiled':>8} {'/copy':>6} | {'uni ms':>7} {'/avgpool':>8} | {'compress':>8} | {'bwd seg':>7} {'bwd uni':>7}")
    print(header)
    rows, worst, seen = [], {}, {}
    for dim in args.dims:
        for batch in args.batches:
            for rate in args.rates:
                t, info = bench_shape(batch, args.frames, dim, rate, dtype, args.min_run_time,
                                      not args.no_compile, gen)
                r = ratios(t)
                for name, value in r.items():
                    seen.setdefault(name, []).append(value)
                    op = TARGETS.get(name, (">=",))[0]
                    prev = worst.get(name)
                    worst[name] = value if prev is None else (min(prev, value) if op == ">=" else max(prev, value))
                gbps = info["bytes_segment_pool"] / t["segment_pool"].median_ms / 1e6
                compiled = f"{r['seg_vs_compiled_ref']:7.1f}x" if "seg_vs_compiled_ref" in r else "       -"
                print(f"{batch:>3} {dim:>5} {rate:>2} | {t['segment_pool'].median_ms:7.2f} {gbps:6.1f} "
                      f"{100 * gbps / info['copy_gbps']:5.0f}% | {r['seg_vs_segment_reduce']:9.1f}x {r['seg_vs_eager']:5.1f}x "
                      f"{compiled} {r['seg_over_copy']:5.2f}x | {t['uniform_pool'].median_ms:7.2f} "
                      f"{r['uniform_over_avgpool']:7.2f}x | {r['compress_over_seg']:7.2f}x | "
                      f"{r['seg_bwd_over_fwd']:6.2f}x {r['uniform_bwd_over_fwd']:6.2f}x")
                shape_rows = []
                for provider, timing in t.items():
                    shape_rows.append({**meta, "batch": batch, "frames": args.frames, "dim": dim, "rate": rate,
                                       "provider": provider, "ms_median": f"{timing.median_ms:.4f}",
                                       "ms_p20": f"{timing.p20_ms:.4f}", "ms_p80": f"{timing.p80_ms:.4f}",
                                       "copy_gbps": f"{info['copy_gbps']:.2f}"})
                rows += shape_rows
                if args.csv:
                    report.append_rows(args.csv, shape_rows, report.COMMON_FIELDS + FIELDS)
    print(f"\n{'ratio':<24} {'median':>7} {'worst':>7}  target")
    for name, value in worst.items():
        target = TARGETS.get(name)
        bound = f"{target[0]} {target[1]}" if target else ""
        typical = float(np.median(seen[name]))
        print(f"  {name:<22} {typical:6.2f}x {value:6.2f}x  {bound:<8} median {meets(name, typical) or '-'}, "
              f"worst {meets(name, value) or '-'}")
    if args.csv:
        print(f"\nappended {len(rows)} rows to {args.csv} (run_id {meta['run_id']}); plot: "
              f"python -m lalm_fast.bench.report plot {args.csv} --out PNG")
    return 0


if __name__ == "__main__":
    sys.exit(main())
