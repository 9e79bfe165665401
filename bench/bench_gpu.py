"""GPU microbenchmark of the Triton / CUDA kernels against PyTorch baselines.

Measures forward, backward and forward+backward of span means (uniform_pool and
segment_pool layouts), boundary scores, the fused threshold segment_compress and boundary
detection in every mode (B x T scores; segment_compress through the public API too), with
``triton.testing.do_bench`` (median and 20/80 % quantiles), and reports GB/s and the
percentage of the copy bandwidth measured in the same run (``y.copy_(x)`` on a tensor of
the input's size). Baselines, measured in the same run: ``torch.segment_reduce``, the
eager reference composite (``lalm_fast.ops.reference``), ``torch.compile`` of the
reference, ``nn.AvgPool1d`` (uniform only; it also averages padding) and a reshape-mean.
B=1 latency under a CUDA graph is reported too.

Rows are appended to ``bench_gpu.csv`` in :func:`report.results_dir` with GPU name, versions and date; a
bar chart of GB/s goes next to it as SVG (no plotting dependency needed).

    lalm-fast bench kernels-gpu                     # H100 target: B=32 T=1500 D=1280 bf16, rates 2,3,4
    lalm-fast bench kernels-gpu --dry-run           # CPU smoke test: tiny shapes, torch backend or the
                                                    # Triton interpreter when TRITON_INTERPRET=1
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch

from lalm_fast.ops import reference as ref
from lalm_fast.ops.modes import Mode

from . import report

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
SEGMENT_REDUCE_NOTE = "empty segment -> NaN on CUDA"
SUITE = "kernels_gpu"
FIELDS = report.COMMON_FIELDS + ["op", "impl", "direction", "B", "T", "D", "dtype", "rate", "ms_median", "ms_p20",
                                 "ms_p80", "GBps", "pct_copy_bw", "copy_GBps", "note"]


# ----------------------------------------------------------------------------- timing


def bench(fn, device, quick: bool):
    """(median, p20, p80) in milliseconds."""
    if device.type == "cuda":
        import triton.testing

        res = triton.testing.do_bench(fn, warmup=10 if quick else 25, rep=30 if quick else 200,
                                      quantiles=[0.5, 0.2, 0.8])
        return tuple(float(v) for v in res)
    fn()  # warm-up (compiles / autotunes)
    times = []
    for _ in range(3 if quick else 10):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    q = lambda p: times[min(len(times) - 1, int(p * len(times)))]
    return statistics.median(times), q(0.2), q(0.8)


def bench_graph(fn, quick: bool):
    """Per-call latency (ms) of ``fn`` replayed from a CUDA graph."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return bench(graph.replay, torch.device("cuda"), quick)


# ----------------------------------------------------------------------------- inputs


def uniform_spans(lengths, frames, k):
    S = -(-frames // k)
    i = torch.arange(S, device=lengths.device)
    return (torch.minimum(i[None] * k, lengths[:, None]).contiguous(),
            torch.minimum((i[None] + 1) * k, lengths[:, None]).contiguous())


def random_spans(lengths, frames, k, gen):
    """Segments of random length in [max(1, k//2), 2k - max(1, k//2)] (mean k), tiling [0, L)."""
    B = lengths.shape[0]
    lo = max(1, k // 2)
    S = -(-frames // lo)
    seg = torch.randint(lo, 2 * k - lo + 1, (B, S), generator=gen)
    ends = torch.cumsum(seg, 1)
    starts = ends - seg
    L = lengths.cpu()[:, None]
    starts, ends = torch.minimum(starts, L), torch.minimum(ends, L)
    return starts.to(lengths.device).contiguous(), ends.to(lengths.device).contiguous()


def segmented_input(starts, ends, frames, dim, dtype, gen):
    """[B, T, D] with one random vector per span (+5% noise): adjacent frames of a span are
    near-parallel (score ~0), frames of different spans near-orthogonal (score ~1)."""
    B, S = starts.shape
    device = starts.device
    t = torch.arange(frames, device=device).expand(B, frames).contiguous()
    seg = (torch.searchsorted(starts.contiguous(), t, right=True) - 1).clamp_(0, S - 1)
    table = torch.randn(B, S, dim, generator=gen).to(device)
    x = table.gather(1, seg[..., None].expand(B, frames, dim))
    x += 0.05 * torch.randn(B, frames, dim, generator=gen).to(device)
    return x.to(dtype)


def profile_both(kt, x, starts, ends, grad):
    """Where forward+backward through autograd spends its time (CPU vs GPU), printed."""
    if x.device.type != "cuda":
        return
    from torch.profiler import ProfilerActivity, profile

    xr = x.detach().requires_grad_(True)
    for _ in range(3):
        torch.autograd.grad(torch.ops.lalm_fast.span_mean(xr, starts, ends, "triton"), xr, grad)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(5):
            torch.autograd.grad(torch.ops.lalm_fast.span_mean(xr, starts, ends, "triton"), xr, grad)
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=14, max_name_column_width=60))


def backends_to_run(device, args):
    """name -> backend module with span_mean / span_mean_backward / boundary_scores."""
    from lalm_fast.ops import backends

    out = {}
    for name in ("triton", "cuda"):
        if backends.is_available(name, device.type):
            out[name] = backends.kernels(name)
        elif device.type == "cuda" or name == "triton":
            print(f"[skip] {name}: {backends.available()[name]}")
    if not out:
        out["torch"] = ref  # dry run without the interpreter: the reference stands in
    return out


# ----------------------------------------------------------------------------- detection

DETECTION_SETTINGS = [  # (label, public keyword, mode, param, min_len, max_len)
    ("peak", "prominence", Mode.PEAK, 0.05, 1, 0), ("peak min_len=2", "prominence", Mode.PEAK, 0.05, 2, 0),
    ("threshold", "threshold", Mode.THRESHOLD, 0.5, 1, 0),
    ("threshold min_len=3 max_len=20", "threshold", Mode.THRESHOLD, 0.5, 3, 20),
    ("rate=3", "rate", Mode.RATE, 3.0, 1, 0), ("rate=3 min_len=2", "rate", Mode.RATE, 3.0, 2, 0),
]


def bench_detection(record, impls, x, lengths, dry_run: bool = False):
    """detect_boundaries from the [B, T] scores in every mode (target: <= 50 us at B=32,
    T=1500), against the vectorised torch detection; and the public segment_compress
    (scores + detection + means, three launches on triton) in every mode."""
    from lalm_fast import ops
    from lalm_fast.ops._detect import starts_from_scores
    from lalm_fast.ops._inputs import Grid

    scores = ref.boundary_scores(x, lengths).contiguous()
    grid = Grid(x, lengths, False, None)
    score_bytes = scores.numel() * scores.element_size()
    settings = DETECTION_SETTINGS[::2] if dry_run else DETECTION_SETTINGS  # one per mode: the interpreter is slow
    for label, keyword, mode, param, min_len, max_len in settings:
        if "triton" in impls:
            kt = impls["triton"]
            detect = lambda: kt.detect_boundaries(scores, lengths, int(mode), param, min_len, max_len)
            record("detect_boundaries", "triton", "fwd", "-", detect, score_bytes, note=label)
            record("detect_boundaries", "triton", "fwd", "-", detect, score_bytes, note=f"{label}; CUDA graph",
                   graph=True)
            compress = lambda: ops.segment_compress(x, lengths, **{keyword: param}, min_len=min_len,
                                                    max_len=max_len or None, backend="triton")
            record("segment_compress", "ops.segment_compress", "fwd", "-", compress, 0,
                   note=f"{label}; public API, eager")
        record("detect_boundaries", "eager_reference", "fwd", "-",
               lambda: starts_from_scores(grid, scores, mode, param, min_len, max_len), score_bytes, note=label)


# ----------------------------------------------------------------------------- main


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--B", type=int, default=32)
    p.add_argument("--T", type=int, default=1500)
    p.add_argument("--D", type=int, default=1280)
    p.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    p.add_argument("--rates", default="2,3,4")
    p.add_argument("--threshold", type=float, default=0.5, help="segment_compress threshold on 1 - cos")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile baseline")
    p.add_argument("--quick", action="store_true", help="fewer repetitions")
    p.add_argument("--dry-run", action="store_true", help="CPU smoke test with tiny shapes")
    p.add_argument("--out", default=None, help="CSV to append to (default bench_gpu.csv in bench/results of a checkout, "
                   "else in ./bench-results; "
                   "no file in --dry-run unless given)")
    args = p.parse_args(argv)

    if args.dry_run:
        device = torch.device("cpu")
        args.B, args.T, args.D, args.quick, args.no_compile = 2, 24, 16, True, True
        if args.dtype == "bf16" and os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
            args.dtype = "fp32"  # the interpreter has no bf16 arithmetic
    else:
        if not torch.cuda.is_available():
            p.error("no CUDA device: run on a GPU, or pass --dry-run for a CPU smoke test")
        device = torch.device("cuda")
    out_path = Path(args.out) if args.out else (None if args.dry_run else Path(report.results_dir(), "bench_gpu.csv"))

    dtype = DTYPES[args.dtype]
    B, T, D = args.B, args.T, args.D
    elt = torch.tensor([], dtype=dtype).element_size()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(B, T, D, generator=gen).to(dtype).to(device)
    lengths = torch.full((B,), T, dtype=torch.int64, device=device)  # full length: bytes are exact

    meta = dict(report.common_fields(SUITE, device), B=B, T=T, D=D, dtype=args.dtype)
    rows = []

    # copy bandwidth, measured in the same run on a tensor of x's size
    y = torch.empty_like(x)
    copy_ms = bench(lambda: y.copy_(x), device, args.quick)[0]
    copy_gbps = 2 * x.numel() * elt / copy_ms / 1e6
    print(f"{meta['device']}  torch {meta['torch']}  triton {meta['triton']}  copy {copy_gbps:.0f} GB/s")

    def record(op, impl, direction, rate, fn, nbytes, note="", graph=False):
        if graph and device.type != "cuda":
            return
        try:
            med, p20, p80 = bench_graph(fn, args.quick) if graph else bench(fn, device, args.quick)
        except Exception as exc:  # a baseline that cannot run here is reported, not fatal
            print(f"[fail] {op} {impl} {direction} rate={rate}: {type(exc).__name__}: {str(exc)[:200]}")
            return
        gbps = nbytes / med / 1e6 if nbytes else float("nan")
        row = dict(meta, op=op, impl=impl, direction=direction, rate=rate, ms_median=f"{med:.5f}",
                   ms_p20=f"{p20:.5f}", ms_p80=f"{p80:.5f}", GBps=f"{gbps:.1f}",
                   pct_copy_bw=f"{100 * gbps / copy_gbps:.1f}", copy_GBps=f"{copy_gbps:.1f}", note=note)
        rows.append(row)
        if out_path is not None:  # appended as measured: a cut-short run keeps what it measured
            report.append_rows(str(out_path), [row], FIELDS)
        print(f"{op:17s} {impl:22s} {direction:4s} k={rate}  {med * 1e3:9.1f} us  [{p20 * 1e3:.1f}, {p80 * 1e3:.1f}]"
              f"  {gbps:8.1f} GB/s  {row['pct_copy_bw']:>6s}% copy  {note}")

    impls = backends_to_run(device, args)
    compiled_ref = None if args.no_compile else torch.compile(ref.span_mean, dynamic=True)
    x_bytes = x.numel() * elt

    profile_args = None
    for k in [int(r) for r in args.rates.split(",")]:
        for op in ("uniform_pool", "segment_pool"):
            starts, ends = uniform_spans(lengths, T, k) if op == "uniform_pool" else random_spans(lengths, T, k, gen)
            S = starts.shape[1]
            out_bytes = B * S * D * elt
            idx_bytes = 2 * starts.numel() * 8
            fwd_bytes = x_bytes + out_bytes + idx_bytes
            bwd_bytes = out_bytes + x_bytes + idx_bytes
            grad = torch.randn(B, S, D, generator=gen).to(dtype).to(device)
            for name, mod in impls.items():
                record(op, name, "fwd", k, lambda: mod.span_mean(x, starts, ends), fwd_bytes)
                record(op, name, "bwd", k, lambda: mod.span_mean_backward(grad, starts, ends, T), bwd_bytes)
                if name == "triton":
                    xr = x.detach().requires_grad_(True)
                    both = lambda: torch.autograd.grad(torch.ops.lalm_fast.span_mean(xr, starts, ends, "triton"), xr, grad)
                    record(op, name, "both", k, both, fwd_bytes + bwd_bytes)
                    if device.type == "cuda":
                        record(op, name, "both", k, both, fwd_bytes + bwd_bytes, note="CUDA graph", graph=True)
                if device.type == "cuda" and name != "torch":
                    x1, s1, e1 = x[:1].clone(), starts[:1].clone(), ends[:1].clone()
                    record(op, name, "fwd", k, lambda: mod.span_mean(x1, s1, e1),
                           (x1.numel() + S * D) * elt, note="B=1 CUDA graph", graph=True)
            # baselines
            record(op, "eager_reference", "fwd", k, lambda: ref.span_mean(x, starts, ends), fwd_bytes)
            record(op, "eager_reference", "bwd", k, lambda: ref.span_mean_backward(grad, starts, ends, T), bwd_bytes)
            if compiled_ref is not None:
                record(op, "compile_reference", "fwd", k, lambda: compiled_ref(x, starts, ends), fwd_bytes)
            seg_len = (ends - starts).reshape(-1)
            flat = x.reshape(B * T, D)
            # segment_reduce needs segments to tile the data: append one padding segment per
            # sample is unnecessary here (full lengths), so lengths tile [0, B*T) exactly.
            record(op, "torch.segment_reduce", "fwd", k,
                   lambda: torch.segment_reduce(flat, "mean", lengths=seg_len, axis=0, unsafe=True), fwd_bytes,
                   note=SEGMENT_REDUCE_NOTE)
            if op == "uniform_pool":
                pool = torch.nn.AvgPool1d(k, k, ceil_mode=True)
                record(op, "nn.AvgPool1d", "fwd", k, lambda: pool(x.transpose(1, 2)), fwd_bytes,
                       note="averages padding; transposed input")
                if T % k == 0:
                    record(op, "reshape_mean", "fwd", k, lambda: x.view(B, T // k, k, D).float().mean(2).to(dtype),
                           fwd_bytes)

        # fused segment_compress (threshold mode) vs segment_pool of the same segments. The
        # input has segment structure (a random vector per segment + 5% noise), so the
        # threshold finds exactly the segments of random_spans(k) and both produce S rows.
        if "triton" in impls:
            kt = impls["triton"]
            xs = segmented_input(starts, ends, T, D, dtype, gen)
            S = starts.shape[1]
            fused = lambda: kt.compress(xs, lengths, Mode.THRESHOLD, args.threshold, 1, 0, S)
            got = fused()
            same = bool(torch.equal(got[1], starts) and torch.equal(got[2], ends))
            print(f"[check] k={k}: fused threshold spans equal the true segments: {same}")
            fwd_bytes = x_bytes + B * S * D * elt + 2 * starts.numel() * 8
            record("segment_pool", "triton", "fwd", k, lambda: kt.span_mean(xs, starts, ends), fwd_bytes,
                   note="segmented input")
            record("segment_pool", "triton", "fwd", k, lambda: kt.span_mean(xs, starts, ends), fwd_bytes,
                   note="segmented input; CUDA graph", graph=True)
            record("segment_compress", "triton_fused", "fwd", k, fused, fwd_bytes,
                   note="2 passes over x; bytes of one pass")
            record("segment_compress", "triton_fused", "fwd", k, fused, fwd_bytes,
                   note="2 passes over x; CUDA graph", graph=True)
            from lalm_fast import ops

            record("segment_compress", "ops.segment_compress", "fwd", k,
                   lambda: ops.segment_compress(xs, lengths, threshold=args.threshold, max_segments=S,
                                                backend="triton"), fwd_bytes, note="public API, eager")
            record("uniform_pool", "ops.uniform_pool", "fwd", k,
                   lambda: ops.uniform_pool(x, lengths, k, backend="triton"), fwd_bytes, note="public API, eager")
            del xs
            if k == 3:
                profile_args = (kt, x, starts, ends, grad)

    for name, mod in impls.items():
        record("boundary_scores", name, "fwd", "-", lambda: mod.boundary_scores(x, lengths), x_bytes + B * T * 4)
    record("boundary_scores", "eager_reference", "fwd", "-", lambda: ref.boundary_scores(x, lengths),
           x_bytes + B * T * 4)

    bench_detection(record, impls, x, lengths, args.dry_run)

    if profile_args is not None and not args.quick:
        # last: the profiler leaves CUPTI hooks behind that slow later eager launches (seen
        # on an H200: every eager row measured after it was inflated)
        profile_both(*profile_args)
    summary = summarize(rows)
    print(summary)
    if out_path is not None:
        out_path.with_name(out_path.stem + "_summary.md").write_text(
            f"# {meta['device']}, torch {meta['torch']}, triton {meta['triton']}, {meta['date']}\n\n"
            f"B={B} T={T} D={D} {args.dtype}; copy bandwidth {copy_gbps:.0f} GB/s (read + write)\n\n{summary}\n")
        png = str(out_path.with_suffix(".png"))
        try:
            report.plot(str(out_path), png)
            print(f"appended {len(rows)} rows to {out_path}; plot {png}")
        except ImportError as exc:  # matplotlib missing: the CSV is the result, the plot a view of it
            print(f"appended {len(rows)} rows to {out_path}; no plot ({exc})")
    return rows


def summarize(rows) -> str:
    """The GPU kernels' performance targets as a markdown table, from this run's rows only."""
    def find(op, impl, direction, rate, note=""):
        for r in rows:
            if (r["op"], r["impl"], r["direction"], str(r["rate"]), r["note"]) == (op, impl, direction, str(rate), note):
                return r
        return None

    def ms(r):
        return float(r["ms_median"]) if r else float("nan")

    rates = sorted({str(r["rate"]) for r in rows if r["rate"] != "-"})
    lines = ["| k | check | value | target |", "|---|---|---|---|"]
    for k in rates:
        for op in ("uniform_pool", "segment_pool"):
            fwd = find(op, "triton", "fwd", k)
            if fwd:
                lines.append(f"| {k} | {op} triton fwd, % of copy bandwidth | {fwd['pct_copy_bw']}% | >= 85% |")
                lines.append(f"| {k} | {op}: torch.segment_reduce / triton fwd | "
                             f"{ms(find(op, 'torch.segment_reduce', 'fwd', k, SEGMENT_REDUCE_NOTE)) / ms(fwd):.2f}x | >= 5x |")
                lines.append(f"| {k} | {op}: triton bwd / fwd | {ms(find(op, 'triton', 'bwd', k)) / ms(fwd):.2f}x "
                             f"| <= 1.3x |")
                both, both_graph = find(op, "triton", "both", k), find(op, "triton", "both", k, "CUDA graph")
                if both and both_graph:
                    lines.append(f"| {k} | {op}: autograd fwd+bwd eager / CUDA graph | {ms(both) * 1e3:.0f} us / "
                                 f"{ms(both_graph) * 1e3:.0f} us | - |")
            for impl in ("triton", "cuda"):
                b1 = find(op, impl, "fwd", k, "B=1 CUDA graph")
                if b1:
                    lines.append(f"| {k} | {op} {impl} B=1 under a CUDA graph | {ms(b1) * 1e3:.1f} us | <= 15 us |")
        seg = find("segment_pool", "triton", "fwd", k, "segmented input")
        seg_graph = find("segment_pool", "triton", "fwd", k, "segmented input; CUDA graph")
        fused = [r for r in rows if r["op"] == "segment_compress" and str(r["rate"]) == k
                 and r["impl"] == "triton_fused"]
        for r in fused:
            base = seg_graph if "graph" in r["note"] else seg
            lines.append(f"| {k} | fused segment_compress / segment_pool ({r['note']}) | "
                         f"{ms(r) / ms(base):.2f}x | <= 1.2x |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
