"""The e2e benchmark's presets (models at published sizes, random or packaged weights) and the
two pipelines it measures: ``lalm_fast.models.AudioLM`` and the Qwen2-Audio integration."""

from __future__ import annotations

import contextlib
import importlib.util
import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from .e2e_measure import MEL_PER_SECOND, WINDOW, log, sync

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
