"""End-to-end speed of whole audio LLMs at several audio-token rates (issue 7; docs/benchmarks.md).

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

Rows are appended to ``bench/results/e2e_<cpu|gpu>.csv`` as each configuration finishes (the
shared format of bench/report.py), with a markdown table (.md) and a plot (.png) of the run.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import gc
import importlib.util
import math
import os
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from lalm_fast.nn import build_compressor

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
RESULTS_DIR = os.path.join(BENCH_DIR, "results")
SUITE = "e2e"


if BENCH_DIR not in sys.path:  # bench/ is not a package: its shared modules load from here
    sys.path.insert(0, BENCH_DIR)
import report  # noqa: E402  (bench/report.py, the shared result format)

DURATIONS = [10, 30, 120, 600]
COMPRESSORS = ["none", "uniform:2", "uniform:3", "uniform:4", "segment:rate=3"]
WINDOW = 3000            # mel frames per encoder window (30 s at 100 frames/s), as Whisper and Qwen2-Audio
MEL_PER_SECOND = 100
RANDOM_WEIGHTS_NOTE = "random weights: speed does not depend on weight values"

# Qwen2-Audio-7B's published sizes: config.json of Qwen/Qwen2-Audio-7B on the Hugging Face Hub
# (audio_config = the Whisper-large-v3 encoder; text_config = a Qwen2-7B-class LM, whose hidden
# size, depth and head counts are transformers' Qwen2Config defaults there). Only
# max_position_embeddings is changed: 8192 -> 32768, so 10 min of audio (15000 tokens at 25 Hz)
# fits; rotary positions are computed on the fly, so this allocates nothing.
QWEN2_AUDIO_7B = {
    "audio": dict(d_model=1280, encoder_layers=32, encoder_attention_heads=20, encoder_ffn_dim=5120,
                  num_mel_bins=128, max_source_positions=1500),
    "text": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                 num_key_value_heads=32, vocab_size=156032, rope_theta=10000.0, rms_norm_eps=1e-5,
                 max_position_embeddings=32768),
    "audio_token_index": 151646, "audio_bos_id": 151647, "audio_eos_id": 151648,
}
# The same architecture scaled down (widths and depths only; the 30 s window, mel bins, vocab
# and token ids are the real ones), to run the qwen2-audio-7b code path on a CPU in seconds.
QWEN2_AUDIO_MINI = {
    "audio": dict(QWEN2_AUDIO_7B["audio"], d_model=64, encoder_layers=2, encoder_attention_heads=2,
                  encoder_ffn_dim=128),
    "text": dict(QWEN2_AUDIO_7B["text"], hidden_size=64, intermediate_size=172, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=4),
    **{k: v for k, v in QWEN2_AUDIO_7B.items() if k not in ("audio", "text")},
}
QWEN2_SCALES = {"full": QWEN2_AUDIO_7B, "mini": QWEN2_AUDIO_MINI}

# Sizes of the packaged models (Whisper tiny.en encoder, SmolLM2-135M), for the random-init
# fallback of the cpu preset when the packages are not installed.
WHISPER_TINY_EN = dict(d_model=384, encoder_layers=4, encoder_attention_heads=6, encoder_ffn_dim=1536,
                       num_mel_bins=80, max_source_positions=1500)
SMOLLM2_135M = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                    num_key_value_heads=3, vocab_size=49152, rope_theta=100000.0, rms_norm_eps=1e-5,
                    max_position_embeddings=8192, tie_word_embeddings=True)

E2E_FIELDS = [
    "preset", "path", "model", "weights", "dtype", "backend", "transformers", "batch", "duration_s", "compressor",
    "windows", "encoder_frames", "audio_tokens", "llm_tokens", "new_tokens", "runs",
    "encoder_ms", "compressor_ms", "compressor_isolated_ms", "prefill_ms", "glue_ms", "ttft_ms", "ttft_min_ms",
    "ttft_max_ms", "decode_ms", "decode_tok_s", "kv_bytes", "mem_method", "mem_baseline_mb", "enc_peak_extra_mb",
    "llm_peak_extra_mb", "peak_mb", "loadavg", "status", "note",
]

_T0 = time.perf_counter()


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} +{time.perf_counter() - _T0:6.1f}s] {message}", flush=True)


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


# ---------------------------------------------------------------------------------------------
# Pipelines: how one path turns features into a first token and decodes


@dataclass
class Prefill:
    token: torch.Tensor      # [1, 1] first generated token
    cache: Any               # past_key_values
    audio_tokens: int


class AudioLMPath:
    """``lalm_fast.models.AudioLM``: encoder -> compressor -> projector -> splice -> LM."""

    name = "audio_lm"

    def __init__(self, model, device: torch.device):
        self.model, self.device = model, device
        self.mel_bins = _mel_bins(model.encoder)
        self.window = model.config.window

    @contextlib.contextmanager
    def compressor(self, compressor):
        previous, previous_config = self.model.compressor, self.model.config.compressor
        self.model.compressor = compressor
        self.model.config.compressor = compressor.config()
        try:
            yield
        finally:
            self.model.compressor, self.model.config.compressor = previous, previous_config

    def stages(self) -> dict[str, torch.nn.Module]:
        return {"encoder": self.model.encoder, "compressor": self.model.compressor, "llm": self.model.lm}

    def inputs(self, seconds: float, dtype: torch.dtype) -> dict:
        features, mel_lengths = _features(seconds, self.mel_bins, self.window, self.device, dtype)
        return {"input_features": features, "frame_lengths": mel_lengths}

    def prefill(self, inputs: dict) -> Prefill:
        built = self.model.build_inputs(inputs["input_features"], inputs["frame_lengths"], padding_side="left")
        out = self.model.lm(inputs_embeds=built.inputs_embeds, attention_mask=built.attention_mask,
                            position_ids=built.position_ids, use_cache=True, logits_to_keep=1)
        return Prefill(out.logits[:, -1:].argmax(-1), out.past_key_values, int(built.audio_lengths[0]))

    def step(self, token: torch.Tensor, cache: Any):
        out = self.model.lm(input_ids=token, past_key_values=cache, use_cache=True)
        return out.logits[:, -1:].argmax(-1), out.past_key_values


class Qwen2AudioPath:
    """transformers' Qwen2-Audio with ``lalm_fast.integrations.qwen2_audio`` compression: the
    processor-style prompt (``<|audio_bos|>`` + one ``<|AUDIO|>`` per token + ``<|audio_eos|>``)
    goes through the patched model, which runs tower -> compressor -> projector -> merge -> LM.
    Content-adaptive compressors go through ``build_inputs_embeds``. Only the last position's
    logits are computed at prefill (as ``logits_to_keep=1`` would)."""

    name = "qwen2_audio"
    PREFIX = [9707, 11, 1246]            # arbitrary text ids before and after the audio
    SUFFIX = [3838, 374, 279, 7743, 30, 5209, 6286, 432, 13, 220]

    def __init__(self, model, sizes: dict, device: torch.device):
        from lalm_fast.integrations import qwen2_audio as qa

        self.qa, self.model, self.device, self.sizes = qa, model, device, sizes
        self.inner = qa.inner_model(model)
        self.mel_bins = self.inner.audio_tower.config.num_mel_bins
        self._compressor = None

    @contextlib.contextmanager
    def compressor(self, compressor):
        with self.qa.compression(self.model, compressor):
            self._compressor = compressor
            try:
                yield
            finally:
                self._compressor = None

    def stages(self) -> dict[str, torch.nn.Module]:
        return {"encoder": self.inner.audio_tower, "compressor": self._compressor, "llm": self.inner.language_model}

    def inputs(self, seconds: float, dtype: torch.dtype) -> dict:
        features, mel_lengths = _features(seconds, self.mel_bins, WINDOW, self.device, dtype)
        mask = (torch.arange(features.shape[-1], device=self.device)[None, :] < mel_lengths[:, None]).long()
        if self._compressor.static_length:
            count = int(self.qa.audio_token_counts(mel_lengths.cpu(), self._compressor, window=WINDOW)[0])
        else:
            count = 1  # build_inputs_embeds expands it once the encoder has run
        ids = (self.PREFIX + [self.sizes["audio_bos_id"]] + [self.sizes["audio_token_index"]] * count +
               [self.sizes["audio_eos_id"]] + self.SUFFIX)
        return {"input_ids": torch.tensor([ids], device=self.device), "input_features": features,
                "feature_attention_mask": mask}

    def prefill(self, inputs: dict) -> Prefill:
        text = len(self.PREFIX) + len(self.SUFFIX) + 2
        if self._compressor.static_length:
            out = self.inner(**inputs, use_cache=True)
        else:
            built = self.qa.build_inputs_embeds(self.model, inputs["input_ids"], inputs["input_features"],
                                                inputs["feature_attention_mask"])
            out = self.inner(inputs_embeds=built["inputs_embeds"], attention_mask=built["attention_mask"],
                             use_cache=True)
        logits = self.model.lm_head(out.last_hidden_state[:, -1:])
        cache = out.past_key_values
        return Prefill(logits.argmax(-1), cache, cache.get_seq_length() - text)

    def step(self, token: torch.Tensor, cache: Any):
        out = self.model(input_ids=token, past_key_values=cache, use_cache=True)
        return out.logits[:, -1:].argmax(-1), out.past_key_values


def _mel_bins(encoder) -> int:
    config = getattr(encoder, "config", None)
    return int(getattr(config, "num_mel_bins", 80))


def _features(seconds: float, mel_bins: int, window: int, device, dtype):
    """Log-mel-like features [1, mel, whole windows] and the valid frame count (seeded noise:
    the values do not change the speed; a fixed seed keeps segmentation deterministic)."""
    frames = int(round(seconds * MEL_PER_SECOND))
    padded = max(1, math.ceil(frames / window)) * window
    gen = torch.Generator().manual_seed(frames)
    features = torch.zeros(1, mel_bins, padded)
    features[..., :frames] = torch.randn(1, mel_bins, frames, generator=gen) * 0.5
    return features.to(device=device, dtype=dtype), torch.tensor([frames], device=device)


# ---------------------------------------------------------------------------------------------
# Presets


@dataclass
class Setup:
    preset: str
    model: str          # description
    weights: str        # "packaged" / "random"
    paths: list = field(default_factory=list)
    note: str = ""


def build_cpu(device, dtype) -> Setup:
    from lalm_fast.models import AudioLM, AudioLMConfig, MLPProjector
    from lalm_fast.models import pretrained

    packaged = all(importlib.util.find_spec(module) is not None for asset in
                   (pretrained.WHISPER["tiny.en"], pretrained.CAUSAL_LM["smollm2-135m"]) for module, _ in asset.parts)
    packaged = packaged and importlib.util.find_spec("gguf") is not None
    torch.manual_seed(0)
    if packaged:
        encoder = pretrained.load_whisper_encoder("packaged:tiny.en")
        lm, tokenizer = pretrained.load_causal_lm("packaged:smollm2-135m", dtype=dtype)
        weights, note = "packaged", "packaged Whisper tiny.en encoder + SmolLM2-135M; projector random-init"
    else:
        from transformers import LlamaConfig, LlamaForCausalLM, WhisperConfig
        from transformers.models.whisper.modeling_whisper import WhisperEncoder

        from lalm_fast.models.tiny import tiny_tokenizer

        encoder = WhisperEncoder(WhisperConfig(**WHISPER_TINY_EN)).eval()
        lm = LlamaForCausalLM(LlamaConfig(**SMOLLM2_135M, pad_token_id=0, bos_token_id=1, eos_token_id=2)).eval()
        tokenizer = tiny_tokenizer()
        weights = "random"
        note = ("packaged models not installed (bash scripts/setup.sh --assets): random-init models of the same "
                f"classes and sizes; {RANDOM_WEIGHTS_NOTE}")
    encoder = encoder.to(device=device, dtype=dtype)
    lm = lm.to(device=device, dtype=dtype).eval()
    projector = MLPProjector(encoder.config.d_model, lm.config.hidden_size, layers=2).to(device=device, dtype=dtype)
    config = AudioLMConfig(window=WINDOW, encoder_stride=2)
    if not packaged:
        from lalm_fast.models.tiny import PROMPTS

        config.prompts = dict(PROMPTS)
    model = AudioLM(encoder, "none", projector, lm, tokenizer, config)
    return Setup("cpu", "Whisper tiny.en encoder (4x384) + SmolLM2-135M (30x576)", weights,
                 [AudioLMPath(model, device)], note)


def build_tiny(device, dtype) -> Setup:
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    from lalm_fast.models import AudioLM, AudioLMConfig, MLPProjector
    from lalm_fast.models.tiny import PROMPTS, tiny_lm, tiny_tokenizer

    torch.manual_seed(0)
    encoder = WhisperEncoder(WhisperConfig(d_model=16, encoder_layers=1, encoder_attention_heads=2,
                                           encoder_ffn_dim=32, num_mel_bins=8, max_source_positions=WINDOW // 2))
    encoder = encoder.to(device=device, dtype=dtype).eval()
    lm = tiny_lm().to(device=device, dtype=dtype).eval()
    projector = MLPProjector(16, 32, hidden=32, layers=2).to(device=device, dtype=dtype)
    model = AudioLM(encoder, "none", projector, lm, tiny_tokenizer(),
                    AudioLMConfig(window=WINDOW, encoder_stride=2, prompts=dict(PROMPTS)))
    return Setup("tiny", "tiny Whisper encoder (1x16) + tiny Llama (2x32)", "random", [AudioLMPath(model, device)],
                 RANDOM_WEIGHTS_NOTE)


def qwen2_audio_config(sizes: dict):
    """A ``Qwen2AudioConfig`` with ``sizes`` (:data:`QWEN2_AUDIO_7B` or :data:`QWEN2_AUDIO_MINI`), sdpa attention."""
    from transformers import Qwen2AudioConfig

    return Qwen2AudioConfig(audio_config=dict(model_type="qwen2_audio_encoder", **sizes["audio"]),
                            text_config=dict(model_type="qwen2", **sizes["text"]),
                            audio_token_index=sizes["audio_token_index"])


def build_qwen2_audio(device, dtype, scale: str = "full") -> Setup:
    """Qwen2-Audio at ``scale`` with random weights, created directly on ``device`` in ``dtype``,
    and an ``AudioLM`` over the same tower, projector weights and LM (no second copy)."""
    from transformers import Qwen2AudioForConditionalGeneration

    sizes = QWEN2_SCALES[scale]
    config = qwen2_audio_config(sizes)
    torch.manual_seed(0)
    start = time.perf_counter()
    with torch.device(device):
        model = Qwen2AudioForConditionalGeneration._from_config(config, dtype=dtype, attn_implementation="sdpa")
    model.eval()
    sync(device)
    params = sum(p.numel() for p in model.parameters())
    log(f"built Qwen2AudioForConditionalGeneration ({scale}): {params / 1e9:.2f} B parameters, {dtype}, on {device} "
        f"in {time.perf_counter() - start:.1f} s (random init)")
    paths = [Qwen2AudioPath(model, sizes, device)]
    try:
        paths.append(AudioLMPath(_audio_lm_sharing(model, sizes), device))
    except ImportError as exc:  # AudioLM needs peft; the integration path does not
        log(f"AudioLM path skipped: {type(exc).__name__}: {exc}")
    name = ("Qwen2-Audio-7B architecture (Whisper-large-v3 encoder 32x1280 + Qwen2-7B LM 32x4096)" if scale == "full"
            else "Qwen2-Audio architecture scaled down (mini: encoder 2x64, LM 2x64)")
    return Setup("qwen2-audio-7b" if scale == "full" else "qwen2-audio-7b-mini", name, "random", paths,
                 f"{RANDOM_WEIGHTS_NOTE}; {params / 1e9:.2f} B parameters")


def _audio_lm_sharing(model, sizes: dict):
    """An ``AudioLM`` over ``model``'s own modules. The LM is a ``Qwen2ForCausalLM`` shell (built
    on the meta device, so it allocates nothing) whose body and head are the model's; the
    projector's Linear shares the model's projector parameters; the encoder is the tower."""
    from transformers import Qwen2ForCausalLM

    from lalm_fast.models import AudioLM, AudioLMConfig, MLPProjector
    from lalm_fast.models.tiny import PROMPTS, tiny_tokenizer

    inner = model.model
    with torch.device("meta"):
        lm = Qwen2ForCausalLM(model.config.text_config)
        projector = MLPProjector(sizes["audio"]["d_model"], sizes["text"]["hidden_size"], layers=1)
    lm.model, lm.lm_head = inner.language_model, model.lm_head
    lm.eval()
    linear = inner.multi_modal_projector.linear
    projector[0].weight, projector[0].bias = linear.weight, linear.bias
    audio_lm = AudioLM(inner.audio_tower, "none", projector, lm, tiny_tokenizer(),
                       AudioLMConfig(window=WINDOW, encoder_stride=4, encoder_frames_per_second=25,
                                     prompts=dict(PROMPTS)))
    shared = {p.data_ptr() for p in model.parameters()}
    if not all(p.data_ptr() in shared for p in audio_lm.parameters()):
        raise RuntimeError("the AudioLM must reuse the model's parameters, not copy them")
    return audio_lm


# ---------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------
# Ratios, targets, markdown


TARGETS = [  # issue 7, compression x3 against none in the same run
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
            lines += ["\n## Issue 7 targets (x3 compressors)\n",
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
        print("\nissue 7 targets (x3 against none):")
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
        args.csv = os.path.join(RESULTS_DIR, f"e2e_{'gpu' if device.type == 'cuda' else 'cpu'}.csv") if real else ""
    if args.new_tokens < 0 or args.repeats < 1 or args.warmup < 0:
        parser.error("--new-tokens and --warmup must be >= 0, --repeats >= 1")
    return args, device


def main(argv=None) -> int:
    global _T0
    _T0 = time.perf_counter()  # log times and --budget-s count from here
    args, device = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    import transformers

    meta = report.common_fields(SUITE, device)
    log(f"e2e benchmark: preset {args.preset}, {meta['device']}, {meta['threads']} threads, torch {meta['torch']}, "
        f"transformers {transformers.__version__}, {args.dtype}, run {meta['run_id']}")
    if args.preset == "cpu":
        setup = build_cpu(device, dtype)
    elif args.preset == "tiny":
        setup = build_tiny(device, dtype)
    else:
        setup = build_qwen2_audio(device, dtype, args.scale)
        if args.paths:
            setup.paths = [p for p in setup.paths if p.name in args.paths]
    meter = MemoryMeter(device)
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
    from lalm_fast.ops import backends

    backend = backends.resolve(None, device)  # the compressors' kernels (LALM_FAST_BACKEND forces one)
    log(f"compressor backend: {backend} (available: {backends.available()})")
    base = {**meta, "preset": setup.preset, "model": setup.model, "weights": setup.weights, "dtype": args.dtype,
            "backend": backend,
            "transformers": transformers.__version__, "batch": 1, "new_tokens": args.new_tokens,
            "mem_method": meter.method, "note": setup.note}
    md_path = png_path = None
    if args.csv:
        stem = os.path.splitext(args.csv)[0]
        md_path, png_path = stem + ".md", (None if args.no_plot else stem + ".png")
    rows: list[dict] = []
    measure_start = None
    with torch.inference_mode():
        log("warm-up: every compressor once on the shortest audio, every path")
        shortest = min(args.durations)
        for path in setup.paths:
            for spec in args.compressors:
                _warm(path, spec, shortest, args, device, dtype, meter)
        measure_start = time.perf_counter()
        for seconds in args.durations:
            for spec in args.compressors:
                for path in setup.paths:
                    row = {**base, "path": path.name, "duration_s": _seconds(seconds), "compressor": spec}
                    if time.perf_counter() - _T0 > args.budget_s:
                        row["status"] = f"skipped: --budget-s {args.budget_s:g} reached"
                        log(f"{path.name} {seconds:g}s {spec}: {row['status']}")
                    else:
                        row.update(_measure_logged(path, seconds, spec, args, device, dtype, meter))
                    row["loadavg"] = f"{os.getloadavg()[0]:.2f}"
                    rows.append(row)
                    if args.csv:
                        report.append_rows(args.csv, [row], report.COMMON_FIELDS + E2E_FIELDS)
                        with open(md_path, "w") as f:
                            f.write(markdown(rows, meta, notes, device.type))
    log(f"measured {sum(r['status'] == 'ok' for r in rows)} of {len(rows)} configurations in "
        f"{time.perf_counter() - measure_start:.1f} s")
    print_summary(rows, device.type)
    if args.csv:
        log(f"appended {len(rows)} rows to {args.csv}; table {md_path}")
        if png_path:
            try:
                report.plot(args.csv, png_path, meta["run_id"])
                log(f"plot {png_path}")
            except Exception as exc:  # a missing matplotlib must not lose the measured rows
                log(f"plot failed ({type(exc).__name__}: {exc}); rows are in {args.csv}")
    return 0 if all(r["status"] == "ok" or r["status"].startswith("skipped") for r in rows) else 1


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
