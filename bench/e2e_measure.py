"""Measuring one end-to-end configuration: stage clocks (forward hooks), memory meters (CUDA
allocator or the process RSS high-water mark), KV-cache bytes, and one timed run of a path."""

from __future__ import annotations

import contextlib
import gc
import ctypes
import ctypes.util
import importlib.util
import math
import statistics
import threading
import time
from typing import Any, Optional

import torch

from lalm_fast.nn import build_compressor

WINDOW = 3000            # mel frames per encoder window (30 s at 100 frames/s), as Whisper and Qwen2-Audio
MEL_PER_SECOND = 100

_T0 = time.perf_counter()


def restart_clock() -> None:
    """Log times (and the e2e benchmark's --budget-s) count from here."""
    global _T0
    _T0 = time.perf_counter()


def elapsed() -> float:
    return time.perf_counter() - _T0


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} +{elapsed():6.1f}s] {message}", flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------------------------------
# Memory


def _libc():
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


_LIBC = _libc()


def _proc_status_kb(key: str) -> Optional[int]:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _can_reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _proc_status_kb("VmHWM") is not None
    except OSError:
        return False


class MemoryMeter:
    """Peak memory above a baseline, per stage (``start`` -> ``mark`` -> ``stop``).

    Methods (the ``mem_method`` column): ``cuda_allocator`` (``max_memory_allocated``, reset per
    stage); ``rss_hwm`` (VmHWM reset through /proc/self/clear_refs, after ``malloc_trim`` so
    freed heap memory does not hide growth); ``rss_sampled`` (a thread samples the current RSS
    every millisecond: where the high-water mark cannot be reset); ``maxrss_delta``
    (``getrusage``: growth of the process's lifetime peak only, a lower bound).
    """

    def __init__(self, device: torch.device):
        self.device = device
        if device.type == "cuda":
            self.method = "cuda_allocator"
        elif _can_reset_hwm():
            self.method = "rss_hwm"
        elif _proc_status_kb("VmRSS") is not None or importlib.util.find_spec("psutil") is not None:
            self.method = "rss_sampled"
        else:
            self.method = "maxrss_delta"
        self._sampler: Optional[threading.Thread] = None
        self._sampling = False
        self._sampled_peak = 0
        self.marked = False

    # current and peak, in bytes
    def _current(self) -> int:
        if self.method == "cuda_allocator":
            return torch.cuda.memory_allocated(self.device)
        if self.method in ("rss_hwm", "rss_sampled"):
            kb = _proc_status_kb("VmRSS")
            if kb is not None:
                return kb * 1024
            import psutil

            return psutil.Process().memory_info().rss
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def _reset_peak(self) -> None:
        if self.method == "cuda_allocator":
            torch.cuda.reset_peak_memory_stats(self.device)
        elif self.method == "rss_hwm":
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        elif self.method == "rss_sampled":
            self._sampled_peak = self._current()

    def _peak(self) -> int:
        if self.method == "cuda_allocator":
            return torch.cuda.max_memory_allocated(self.device)
        if self.method == "rss_hwm":
            return _proc_status_kb("VmHWM") * 1024
        if self.method == "rss_sampled":
            return max(self._sampled_peak, self._current())
        return self._current()

    def _sample(self) -> None:
        while self._sampling:
            self._sampled_peak = max(self._sampled_peak, self._current())
            time.sleep(0.001)

    def start(self) -> None:
        gc.collect()
        if self.device.type == "cpu" and _LIBC is not None and hasattr(_LIBC, "malloc_trim"):
            _LIBC.malloc_trim(0)
        self.baseline = self._current()
        self._reset_peak()
        self.marked = False
        self.encoder_peak = None
        if self.method == "rss_sampled":
            self._sampling = True
            self._sampler = threading.Thread(target=self._sample, daemon=True)
            self._sampler.start()

    def mark(self) -> None:
        """End of the encoder stage, start of the LLM stage (called from the LM's pre-hook)."""
        if self.marked:
            return
        self.encoder_peak = self._peak()
        self._reset_peak()
        self.marked = True

    def stop(self) -> dict[str, float]:
        llm_peak = self._peak()
        if self._sampler is not None:
            self._sampling = False
            self._sampler.join()
            self._sampler = None
        encoder_peak = self.encoder_peak if self.encoder_peak is not None else llm_peak
        mb = 1 / 2 ** 20
        return {"mem_baseline_mb": self.baseline * mb, "enc_peak_extra_mb": (encoder_peak - self.baseline) * mb,
                "llm_peak_extra_mb": (llm_peak - self.baseline) * mb,
                "peak_mb": max(encoder_peak, llm_peak) * mb}


# ---------------------------------------------------------------------------------------------
# Stage timing by forward hooks


class StageClock:
    """Wall time of the encoder, compressor and LM inside one pipeline call.

    Pre- and post-forward hooks synchronise the device and read ``perf_counter``; a stage may run
    several times per call (times add up). Only active between :meth:`start` and :meth:`stop`.
    The LM's first pre-hook also tells the memory meter that the LLM stage begins.
    """

    def __init__(self, device: torch.device, meter: Optional[MemoryMeter] = None):
        self.device, self.meter = device, meter
        self.active = False
        self.totals: dict[str, float] = {}
        self.frames = 0
        self._open: dict[str, float] = {}

    @contextlib.contextmanager
    def attached(self, stages: dict[str, torch.nn.Module]):
        handles = []
        for name, module in stages.items():
            handles.append(module.register_forward_pre_hook(self._pre(name), with_kwargs=True))
            handles.append(module.register_forward_hook(self._post(name)))
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()

    def _pre(self, name):
        def hook(module, args, kwargs):
            if not self.active:
                return None
            if name == "llm" and self.meter is not None:
                self.meter.mark()
            if name == "compressor":
                lengths = kwargs.get("lengths", args[1] if len(args) > 1 else None)
                if lengths is not None:
                    self.frames += int(lengths.sum())
                self.compressor_input = (tuple(args[0].shape), args[0].dtype,
                                         None if lengths is None else lengths.detach().clone())
            sync(self.device)
            self._open[name] = time.perf_counter()
            return None
        return hook

    def _post(self, name):
        def hook(module, args, output):
            if not self.active or name not in self._open:
                return None
            sync(self.device)
            self.totals[name] = self.totals.get(name, 0.0) + time.perf_counter() - self._open.pop(name)
            return None
        return hook

    def start(self) -> None:
        self.totals, self._open, self.frames, self.active = {}, {}, 0, True

    def stop(self) -> dict[str, float]:
        self.active = False
        return dict(self.totals)


def kv_cache_bytes(cache: Any) -> tuple[int, int]:
    """(bytes, tokens) of a transformers KV cache (``Cache`` with ``layers``, the older
    ``key_cache``/``value_cache`` lists, or legacy tuples), from its tensors."""
    tensors: list[torch.Tensor] = []
    if hasattr(cache, "layers"):
        for layer in cache.layers:
            tensors += [t for t in (getattr(layer, "keys", None), getattr(layer, "values", None))
                        if isinstance(t, torch.Tensor)]
    elif hasattr(cache, "key_cache"):
        tensors = list(cache.key_cache) + list(cache.value_cache)
    else:
        tensors = [t for pair in cache for t in pair if isinstance(t, torch.Tensor)]
    tokens = cache.get_seq_length() if hasattr(cache, "get_seq_length") else tensors[0].shape[-2]
    return sum(t.numel() * t.element_size() for t in tensors), int(tokens)


# Measuring one configuration


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else float("nan")


def run_once(path, inputs, clock: StageClock, meter: Optional[MemoryMeter], new_tokens: int, device) -> dict:
    clock.meter = meter
    if meter is not None:
        meter.start()
    clock.start()
    sync(device)
    start = time.perf_counter()
    first = path.prefill(inputs)
    sync(device)
    ttft = time.perf_counter() - start
    stages = clock.stop()
    kv_bytes, kv_tokens = kv_cache_bytes(first.cache)
    token, cache, audio_tokens = first.token, first.cache, first.audio_tokens
    sync(device)
    start = time.perf_counter()
    for _ in range(new_tokens):
        token, cache = path.step(token, cache)
    sync(device)
    decode = time.perf_counter() - start
    memory = meter.stop() if meter is not None else {}
    del token, cache, first
    ms = {name: 1e3 * seconds for name, seconds in stages.items()}
    return {"ttft_ms": 1e3 * ttft, "encoder_ms": ms.get("encoder"), "compressor_ms": ms.get("compressor", 0.0),
            "prefill_ms": ms.get("llm"), "decode_ms": 1e3 * decode, "kv_bytes": kv_bytes, "llm_tokens": kv_tokens,
            "audio_tokens": audio_tokens, "encoder_frames": clock.frames, **memory}


def isolated_compressor_ms(compressor, shape, dtype, lengths, device, min_run_time: float) -> float:
    """The compressor alone on a random tensor of the encoder output's shape (torch.utils.benchmark)."""
    from torch.utils import benchmark

    x = torch.randn(shape, device=device, dtype=torch.float32).to(dtype)
    timer = benchmark.Timer(stmt="compressor(x, lengths)", num_threads=torch.get_num_threads(),
                            globals={"compressor": compressor, "x": x, "lengths": lengths})
    return 1e3 * timer.blocked_autorange(min_run_time=min_run_time).median


def measure_config(path, seconds: float, spec: str, args, device, dtype, meter: MemoryMeter) -> dict:

    compressor = build_compressor(spec)
    with path.compressor(compressor):
        clock = StageClock(device, meter)
        with clock.attached(path.stages()):
            inputs = path.inputs(seconds, dtype)
            for _ in range(args.warmup):
                run_once(path, inputs, clock, None, min(2, args.new_tokens), device)
            runs, started = [], time.perf_counter()
            for repeat in range(args.repeats):
                result = run_once(path, inputs, clock, meter, args.new_tokens, device)
                runs.append(result)
                elapsed = time.perf_counter() - started
                if repeat + 1 < args.repeats and elapsed + elapsed / len(runs) > args.config_budget_s:
                    break
            shape, in_dtype, lengths = clock.compressor_input
            isolated = isolated_compressor_ms(compressor, shape, in_dtype, lengths, device,
                                              0.1 if device.type == "cuda" else 0.2)
    row = {"runs": len(runs), "windows": max(1, math.ceil(seconds * MEL_PER_SECOND / WINDOW)),
           "encoder_frames": runs[-1]["encoder_frames"], "audio_tokens": runs[-1]["audio_tokens"],
           "llm_tokens": runs[-1]["llm_tokens"], "kv_bytes": runs[-1]["kv_bytes"], "compressor_isolated_ms": isolated}
    for key in ("encoder_ms", "compressor_ms", "prefill_ms", "ttft_ms", "decode_ms"):
        row[key] = _median(r[key] for r in runs)
    row["ttft_min_ms"] = min(r["ttft_ms"] for r in runs)
    row["ttft_max_ms"] = max(r["ttft_ms"] for r in runs)
    row["glue_ms"] = row["ttft_ms"] - row["encoder_ms"] - row["compressor_ms"] - row["prefill_ms"]
    row["decode_tok_s"] = args.new_tokens / (row["decode_ms"] / 1e3) if args.new_tokens else float("nan")
    for key in ("mem_baseline_mb", "enc_peak_extra_mb", "llm_peak_extra_mb", "peak_mb"):
        row[key] = max(r[key] for r in runs)
    row["mem_baseline_mb"] = min(r["mem_baseline_mb"] for r in runs)
    return row
