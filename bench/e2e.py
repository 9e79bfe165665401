"""End-to-end speed of whole audio LLMs at several audio-token rates (docs/benchmarks.md).

    lalm-fast bench e2e                         # CPU: packaged Whisper tiny.en + SmolLM2-135M
    lalm-fast bench e2e --preset qwen2-audio-7b # GPU: Qwen2-Audio-7B architecture, random bf16 weights
    lalm-fast bench e2e --quick                 # tiny random models, seconds (smoke test)

For every audio length (10 s, 30 s, 2 min, 10 min by default) and compressor (none, uniform
x2 / x3 / x4, segmentation at rate 3), batch 1, it measures in one run:

- encoder time, compressor time and LLM prefill time, each timed inside the real pipeline by
  forward hooks on the encoder, the compressor and the LM (synchronised on CUDA), and the time to
  first token (TTFT: features in, first token out: encoder + compressor + projector + prompt
  splice + prefill + argmax; the log-mel front end is not included);
- decode tokens/s: a greedy loop of ``--new-tokens`` steps on the KV cache (HF DynamicCache);
- the KV-cache size, summed over the real ``past_key_values`` tensors after prefill;
- peak memory above the pre-run baseline (weights and input features excluded), separately for
  the encoder stage and the LLM stage (prefill + decode): the CUDA caching allocator's
  ``max_memory_allocated`` on GPU; on CPU the process RSS high-water mark (VmHWM), reset through
  ``/proc/self/clear_refs`` at each stage start after ``malloc_trim`` of the heap, in this
  process (the method used is in the ``mem_method`` column).

Audio longer than 30 s goes through the 30 s windowed path (``lalm_fast.integrations.long_audio``):
the encoder sees whole 3000-frame windows, every window is compressed, the tokens are joined.

Presets (``--preset``):
- ``cpu`` (default without CUDA): the packaged real Whisper tiny.en encoder and SmolLM2-135M
  through ``lalm_fast.models.AudioLM`` (random-init projector) when installed, else random-init
  models of the same classes and sizes;
- ``tiny``: tiny random-init models of the real classes (CI smoke test);
- ``qwen2-audio-7b`` (default with CUDA): transformers' ``Qwen2AudioForConditionalGeneration``
  at Qwen2-Audio-7B's published sizes (Whisper-large-v3 encoder + 7B Qwen2 LM), random weights,
  bf16, created on the device; measured through the Qwen2-Audio integration
  (``lalm_fast.integrations.qwen2_audio``) and through ``AudioLM`` sharing the same modules.
  ``--scale mini`` builds the same architecture scaled down, to test this path on a CPU.
Speed does not depend on weight values, so random weights give honest times.

Rows are appended to ``e2e_<cpu|gpu>.csv`` in :func:`report.results_dir` as each configuration
finishes (the shared format of report.py), with a markdown table (.md) and a plot (.png) of the run.
This module is the command line; the models and pipelines are in e2e_models.py, the timing and
memory measurement in e2e_measure.py.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import sys
import time

import torch

from lalm_fast.nn import build_compressor

from . import report
from .e2e_measure import MemoryMeter, StageClock, elapsed, log, measure_config, restart_clock, run_once
from .e2e_models import QWEN2_SCALES, build_cpu, build_qwen2_audio, build_tiny

SUITE = "e2e"
DURATIONS = [10, 30, 120, 600]
COMPRESSORS = ["none", "uniform:2", "uniform:3", "uniform:4", "segment:rate=3"]

E2E_FIELDS = [
    "preset", "path", "model", "weights", "dtype", "backend", "transformers", "batch", "duration_s", "compressor",
    "windows", "encoder_frames", "audio_tokens", "llm_tokens", "new_tokens", "runs",
    "encoder_ms", "compressor_ms", "compressor_isolated_ms", "prefill_ms", "glue_ms", "ttft_ms", "ttft_min_ms",
    "ttft_max_ms", "decode_ms", "decode_tok_s", "kv_bytes", "mem_method", "mem_baseline_mb", "enc_peak_extra_mb",
    "llm_peak_extra_mb", "peak_mb", "loadavg", "status", "note",
]


# Ratios, targets, markdown


TARGETS = [  # the end-to-end targets: compression x3 against none in the same run
    ("prefill speedup", "prefill_speedup", ">=", 2.7, "audio >= 2 min"),
    ("KV cache ratio", "kv_ratio", ">=", 2.9, "audio >= 2 min"),
    ("TTFT speedup", "ttft_speedup", ">=", 2.0, "10 min, GPU"),
    ("compressor % of encoder", "compressor_pct", "<=", None, "GPU <= 1%, CPU <= 3%"),
    ("LLM-side peak memory ratio", "llm_mem_ratio", ">=", 2.0, "10 min"),
]


def ratios(rows: list[dict]) -> list[dict]:
    """Against the ``none`` row of the same path and duration, in this run."""
    out = []
    ok = [r for r in rows if r.get("status") == "ok"]
    for row in ok:
        base = next((b for b in ok if b["path"] == row["path"] and b["duration_s"] == row["duration_s"]
                     and b["compressor"] == "none"), None)
        if base is None:
            continue

        def div(a, b):
            a, b = report.to_float(a), report.to_float(b)
            return a / b if b and not math.isnan(a) and not math.isnan(b) and b > 0 else float("nan")

        out.append({"path": row["path"], "duration_s": row["duration_s"], "compressor": row["compressor"],
                    "token_ratio": div(base["audio_tokens"], row["audio_tokens"]),
                    "prefill_speedup": div(base["prefill_ms"], row["prefill_ms"]),
                    "ttft_speedup": div(base["ttft_ms"], row["ttft_ms"]),
                    "kv_ratio": div(base["kv_bytes"], row["kv_bytes"]),
                    "llm_mem_ratio": div(base["llm_peak_extra_mb"], row["llm_peak_extra_mb"]),
                    "decode_speedup": div(row["decode_tok_s"], base["decode_tok_s"]),
                    "compressor_pct": 100 * div(row["compressor_ms"], row["encoder_ms"])})
    return out


def _is_x3(spec: str) -> bool:

    config = build_compressor(spec).config()
    return config.get("k") == 3 or config.get("rate") == 3


def target_checks(ratio_rows: list[dict], device_type: str) -> list[dict]:
    checks = []
    for r in ratio_rows:
        if not _is_x3(r["compressor"]):
            continue
        duration = float(r["duration_s"])
        for label, key, op, bound, scope in TARGETS:
            if key == "compressor_pct":
                bound = 1.0 if device_type == "cuda" else 3.0
            elif scope.startswith("audio >= 2 min") and duration < 120:
                continue
            elif scope.startswith("10 min") and duration < 600:
                continue
            elif scope == "10 min, GPU" and device_type != "cuda":
                continue
            value = r[key]
            met = (value >= bound) if op == ">=" else (value <= bound)
            checks.append({"path": r["path"], "duration_s": r["duration_s"], "compressor": r["compressor"],
                           "target": f"{label} {op} {bound:g}", "measured": value,
                           "result": "-" if math.isnan(value) else ("ok" if met else "MISS")})
    return checks


RESULT_COLUMNS = ["path", "duration_s", "compressor", "audio_tokens", "llm_tokens", "runs", "encoder_ms",
                  "compressor_ms", "prefill_ms", "ttft_ms", "decode_tok_s", "kv_bytes", "enc_peak_extra_mb",
                  "llm_peak_extra_mb", "status"]
RESULT_HEADERS = ["path", "audio s", "compressor", "audio tok", "LLM tok", "runs", "encoder ms", "compr. ms",
                  "prefill ms", "TTFT ms", "decode tok/s", "KV MB", "enc. peak +MB", "LLM peak +MB", "status"]
RATIO_COLUMNS = ["path", "duration_s", "compressor", "token_ratio", "prefill_speedup", "ttft_speedup", "kv_ratio",
                 "llm_mem_ratio", "decode_speedup", "compressor_pct"]
RATIO_HEADERS = ["path", "audio s", "compressor", "tokens /", "prefill x", "TTFT x", "KV /", "LLM mem /",
                 "decode x", "compr. % enc."]


def markdown(rows: list[dict], meta: dict, notes: list[str], device_type: str) -> str:
    first = rows[0]
    lines = [f"# End-to-end benchmark: preset {first['preset']}\n",
             f"- device: {meta['device']} ({meta['threads']} threads), torch {meta['torch']}, transformers "
             f"{first['transformers']}, triton {meta['triton'] or '-'}, lalm_fast {meta['lalm_fast']}",
             f"- run {meta['run_id']}; model: {first['model']}; weights: {first['weights']}; dtype {first['dtype']}; "
             f"compressor backend {first['backend']}; batch 1; decode {first['new_tokens']} new tokens",
             *[f"- {n}" for n in notes], "",
             "Times are medians over `runs` timed runs. Peak memory is above the pre-run baseline (weights and "
             "input features excluded): encoder stage, and LLM stage (prefill + decode).\n",
             report.markdown_table(rows, RESULT_COLUMNS, RESULT_HEADERS, formats={
                 "encoder_ms": ".1f", "compressor_ms": ".3f", "prefill_ms": ".1f", "ttft_ms": ".1f",
                 "decode_tok_s": ".1f", "kv_bytes": lambda v: f"{report.to_float(v) / 1e6:.1f}" if v not in ("", None) else "",
                 "enc_peak_extra_mb": ".0f", "llm_peak_extra_mb": ".0f"})]
    ratio_rows = [r for r in ratios(rows) if r["compressor"] != "none"]
    if ratio_rows:
        lines += ["\n## Against `none` (same path, same audio length, same run)\n",
                  "tokens / = audio tokens of none over these; prefill x, TTFT x, decode x = speedups; KV / and "
                  "LLM mem / = how many times smaller; compr. % enc. = compressor time as % of encoder time.\n",
                  report.markdown_table(ratio_rows, RATIO_COLUMNS, RATIO_HEADERS,
                                        formats={c: ".2f" for c in RATIO_COLUMNS[3:]})]
        checks = target_checks(ratio_rows, device_type)
        if checks:
            lines += ["\n## Targets (x3 compressors)\n",
                      report.markdown_table(
                          checks, ["path", "duration_s", "compressor", "target", "measured", "result"],
                          ["path", "audio s", "compressor", "target", "measured", "result"],
                          formats={"measured": ".2f"})]
    return "\n".join(lines)


def print_summary(rows: list[dict], device_type: str) -> None:
    ratio_rows = [r for r in ratios(rows) if r["compressor"] != "none"]
    if not ratio_rows:
        return
    print("\nagainst none (same path, audio length and run):", flush=True)
    print(f"  {'path':<12} {'audio':>6} {'compressor':<15} {'tok/':>6} {'prefill x':>9} {'TTFT x':>7} {'KV /':>6} "
          f"{'LLMmem /':>8} {'decode x':>8} {'compr %enc':>10}")
    for r in ratio_rows:
        print(f"  {r['path']:<12} {r['duration_s']:>5}s {r['compressor']:<15} {r['token_ratio']:6.2f} "
              f"{r['prefill_speedup']:9.2f} {r['ttft_speedup']:7.2f} {r['kv_ratio']:6.2f} {r['llm_mem_ratio']:8.2f} "
              f"{r['decode_speedup']:8.2f} {r['compressor_pct']:9.3f}%")
    checks = target_checks(ratio_rows, device_type)
    if checks:
        print("\ntargets (x3 against none):")
        for c in checks:
            print(f"  {c['path']:<12} {c['duration_s']:>5}s {c['compressor']:<15} {c['target']:<36} "
                  f"{c['measured']:8.3f}  {c['result']}")
    sys.stdout.flush()


# ---------------------------------------------------------------------------------------------


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="lalm-fast bench e2e", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Columns and memory method: docs/benchmarks.md")
    parser.add_argument("--preset", choices=["cpu", "tiny", "qwen2-audio-7b"],
                        help="models (default: qwen2-audio-7b with CUDA, else cpu)")
    parser.add_argument("--scale", choices=sorted(QWEN2_SCALES), default="full",
                        help="qwen2-audio-7b only: full size, or mini (same code, tiny widths; CPU test)")
    parser.add_argument("--device", help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"],
                        help="default: bfloat16 for qwen2-audio-7b, float32 otherwise")
    parser.add_argument("--durations", type=float, nargs="+", help=f"audio seconds (default {DURATIONS})")
    parser.add_argument("--compressors", nargs="+", help=f"compressor specs (default {COMPRESSORS})")
    parser.add_argument("--paths", nargs="+", choices=["qwen2_audio", "audio_lm"],
                        help="qwen2-audio-7b only: which pipelines (default both)")
    parser.add_argument("--new-tokens", type=int, default=16, help="greedy decode steps after the first token")
    parser.add_argument("--repeats", type=int, help="timed runs per configuration (default 3)")
    parser.add_argument("--warmup", type=int, help="untimed runs per configuration before the timed ones "
                        "(default 1 on CUDA, 0 on CPU); every compressor also gets one run on the shortest audio "
                        "before any measurement")
    parser.add_argument("--config-budget-s", type=float, default=20.0,
                        help="stop repeating a configuration once its runs would pass this many seconds "
                             "(at least one run)")
    parser.add_argument("--budget-s", type=float, default=float("inf"),
                        help="start no configuration later than this many seconds after the benchmark started "
                             "(model creation and warm-up count); the rest are recorded as skipped. For a device "
                             "time limit: the limit minus the longest configuration")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny preset, 10 s and 60 s, 4 new tokens, 1 run (seconds; smoke test)")
    parser.add_argument("--csv", help="CSV to append rows to; .md and .png go beside it ('' for none; default "
                                      "bench/results/e2e_<cpu|gpu>.csv for the cpu and full qwen2-audio-7b "
                                      "presets, none for tiny and mini)")
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG")
    args = parser.parse_args(argv)
    try:
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    except RuntimeError as exc:
        parser.error(f"--device: {exc}")
    if device.type not in ("cpu", "cuda") or (device.type == "cuda" and not torch.cuda.is_available()):
        parser.error(f"--device {args.device!r} cannot run here (cpu, or cuda with a CUDA device)")
    if args.quick:
        args.preset = args.preset or "tiny"
        args.durations = args.durations or [10, 60]
        args.new_tokens = min(args.new_tokens, 4)
        args.repeats = 1 if args.repeats is None else args.repeats
    args.preset = args.preset or ("qwen2-audio-7b" if device.type == "cuda" else "cpu")
    args.durations = args.durations or list(DURATIONS)
    args.compressors = args.compressors or list(COMPRESSORS)
    args.repeats = 3 if args.repeats is None else args.repeats
    if not all(math.isfinite(d) and d > 0 for d in args.durations):
        parser.error(f"--durations must be positive seconds, got {args.durations}")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be >= 1")
    for spec in args.compressors:
        try:
            build_compressor(spec)
        except (ValueError, TypeError) as exc:
            parser.error(f"--compressors {spec!r}: {exc}")
    args.warmup = args.warmup if args.warmup is not None else (1 if device.type == "cuda" else 0)
    if args.dtype is None:
        args.dtype = "bfloat16" if args.preset == "qwen2-audio-7b" else "float32"
    if args.csv is None:
        real = args.preset == "cpu" or (args.preset == "qwen2-audio-7b" and args.scale == "full")
        args.csv = os.path.join(report.results_dir(), f"e2e_{'gpu' if device.type == 'cuda' else 'cpu'}.csv") if real else ""
    if args.new_tokens < 0 or args.repeats < 1 or args.warmup < 0:
        parser.error("--new-tokens and --warmup must be >= 0, --repeats >= 1")
    return args, device


def main(argv=None) -> int:
    restart_clock()  # log times and --budget-s count from here
    args, device = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    import transformers

    meta = report.common_fields(SUITE, device)
    log(f"e2e benchmark: preset {args.preset}, {meta['device']}, {meta['threads']} threads, torch {meta['torch']}, "
        f"transformers {transformers.__version__}, {args.dtype}, run {meta['run_id']}")
    setup = _build_setup(args, device, dtype)
    meter = MemoryMeter(device)
    notes = _notes(setup, meter, args, device)
    from lalm_fast.ops import backends

    backend = backends.resolve(None, device)  # the compressors' kernels (LALM_FAST_BACKEND forces one)
    log(f"compressor backend: {backend} (available: {backends.available()})")
    base = {**meta, "preset": setup.preset, "model": setup.model, "weights": setup.weights, "dtype": args.dtype,
            "backend": backend,
            "transformers": transformers.__version__, "batch": 1, "new_tokens": args.new_tokens,
            "mem_method": meter.method, "note": setup.note}
    md_path = os.path.splitext(args.csv)[0] + ".md" if args.csv else None

    def record(rows: list[dict]) -> None:
        if args.csv:
            report.append_rows(args.csv, rows[-1:], report.COMMON_FIELDS + E2E_FIELDS)
            with open(md_path, "w") as f:
                f.write(markdown(rows, meta, notes, device.type))

    with torch.inference_mode():
        rows = _run_grid(setup, base, args, device, dtype, meter, record)
    print_summary(rows, device.type)
    if args.csv:
        log(f"appended {len(rows)} rows to {args.csv}; table {md_path}")
        if not args.no_plot:
            _plot(args.csv, meta["run_id"])
    return 0 if all(r["status"] == "ok" or r["status"].startswith("skipped") for r in rows) else 1


def _build_setup(args, device, dtype):
    if args.preset == "cpu":
        return build_cpu(device, dtype)
    if args.preset == "tiny":
        return build_tiny(device, dtype)
    setup = build_qwen2_audio(device, dtype, args.scale)
    if args.paths:
        setup.paths = [p for p in setup.paths if p.name in args.paths]
    return setup


def _notes(setup, meter: MemoryMeter, args, device) -> list[str]:
    boundary = ("torch.cuda.synchronize() at every boundary" if device.type == "cuda"
                else f"{torch.get_num_threads()} torch threads")
    notes = [setup.note, f"memory: {meter.method} ({_memory_note(meter.method)})",
             f"timing: perf_counter around each region, {boundary}"
             f"; stage times from forward hooks inside the real pipeline; median of up to {args.repeats} timed "
             f"run(s), {args.warmup} warm-up run(s) per configuration"]
    if device.type == "cpu":
        notes.append(f"load average at start {os.getloadavg()[0]:.2f} (the CPU is shared: see the loadavg column)")
    for note in notes:
        log(note)
    return notes


def _run_grid(setup, base: dict, args, device, dtype, meter: MemoryMeter, record) -> list[dict]:
    """Warm every compressor up, then measure every (duration, compressor, path), calling
    ``record(rows)`` after each so a cut-short run keeps what it measured."""
    log("warm-up: every compressor once on the shortest audio, every path")
    shortest = min(args.durations)
    for path in setup.paths:
        for spec in args.compressors:
            _warm(path, spec, shortest, args, device, dtype, meter)
    measure_start = time.perf_counter()
    rows: list[dict] = []
    for seconds in args.durations:
        for spec in args.compressors:
            for path in setup.paths:
                row = {**base, "path": path.name, "duration_s": _seconds(seconds), "compressor": spec}
                if elapsed() > args.budget_s:
                    row["status"] = f"skipped: --budget-s {args.budget_s:g} reached"
                    log(f"{path.name} {seconds:g}s {spec}: {row['status']}")
                else:
                    row.update(_measure_logged(path, seconds, spec, args, device, dtype, meter))
                row["loadavg"] = f"{os.getloadavg()[0]:.2f}"
                rows.append(row)
                record(rows)
    log(f"measured {sum(r['status'] == 'ok' for r in rows)} of {len(rows)} configurations in "
        f"{time.perf_counter() - measure_start:.1f} s")
    return rows


def _plot(csv_path: str, run_id: str) -> None:
    png_path = os.path.splitext(csv_path)[0] + ".png"
    try:
        report.plot(csv_path, png_path, run_id)
        log(f"plot {png_path}")
    except Exception as exc:  # a missing matplotlib must not lose the measured rows
        log(f"plot failed ({type(exc).__name__}: {exc}); rows are in {csv_path}")


def _seconds(seconds: float):
    return int(seconds) if float(seconds).is_integer() else seconds


def _memory_note(method: str) -> str:
    return {"cuda_allocator": "torch.cuda.max_memory_allocated, reset at each stage start",
            "rss_hwm": "process RSS high-water mark (VmHWM), reset via /proc/self/clear_refs at each stage start "
                       "after malloc_trim, measured in this process",
            "rss_sampled": "current RSS sampled every 1 ms in this process",
            "maxrss_delta": "growth of getrusage ru_maxrss: a lower bound"}[method]


def _warm(path, spec, seconds, args, device, dtype, meter) -> None:

    compressor = build_compressor(spec)
    try:
        with path.compressor(compressor):
            clock = StageClock(device, None)
            with clock.attached(path.stages()):
                run_once(path, path.inputs(seconds, dtype), clock, None, min(2, args.new_tokens), device)
    except Exception as exc:  # reported again, with its row, when measured
        log(f"warm-up {path.name} {spec} failed: {type(exc).__name__}: {exc}")


def _measure_logged(path, seconds, spec, args, device, dtype, meter) -> dict:
    log(f"{path.name} {seconds:g}s {spec} ...")
    try:
        result = measure_config(path, seconds, spec, args, device, dtype, meter)
    except Exception as exc:  # one failing configuration must not lose the others
        import traceback

        traceback.print_exc()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return {"status": f"error: {type(exc).__name__}: {str(exc)[:160]}"}
    finally:
        gc.collect()
    log(f"  {result['audio_tokens']} audio tokens, {result['llm_tokens']} LLM tokens, {result['runs']} run(s): "
        f"encoder {result['encoder_ms']:.1f} ms, compressor {result['compressor_ms']:.3f} ms "
        f"(alone {result['compressor_isolated_ms']:.3f}), prefill {result['prefill_ms']:.1f} ms, "
        f"TTFT {result['ttft_ms']:.1f} ms, decode {result['decode_tok_s']:.1f} tok/s, "
        f"KV {result['kv_bytes'] / 1e6:.1f} MB, LLM peak +{result['llm_peak_extra_mb']:.0f} MB")
    return {**result, "status": "ok"}


if __name__ == "__main__":
    sys.exit(main())
