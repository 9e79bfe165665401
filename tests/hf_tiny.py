"""Tiny random-weight native audio LLMs of the real transformers classes, with their processors.

One :class:`Case` per ``config.model_type``: a builder for the model (hidden sizes 16-64, one
or two layers), one for the processor (word-level tokenizer, the model's own feature
extractor shrunk to a short window), a prompt with one audio placeholder per sample and
audio durations that differ within the batch. Shared by tests/test_hf_integrations.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

WORDS = ["what", "is", "this", "say", "it", "again", "yes", "no"]
MEL = 8


def tokenizer(specials: list[str], padding_side: str = "left", named: dict | None = None, words: list[str] = WORDS,
              **special_tokens) -> PreTrainedTokenizerFast:
    """A whitespace word-level tokenizer: ``<pad>``, ``<unk>``, ``specials`` (kept whole), then ``words``.

    ``named`` ({"audio_token": "<|audio_pad|>", ...}) become tokenizer attributes, as processors
    that read ``tokenizer.audio_token`` expect.
    """
    vocab = {t: i for i, t in enumerate(["<pad>", "<unk>", *specials, *words])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    extra = {"extra_special_tokens": named} if named else {"additional_special_tokens": specials}
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>",
                                  **extra, **special_tokens)
    tok.padding_side = padding_side
    return tok


def text_config(model_type: str = "qwen2", vocab_size: int = 32, **overrides) -> dict:
    config = dict(model_type=model_type, vocab_size=vocab_size, hidden_size=32, intermediate_size=64,
                  num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                  max_position_embeddings=512, pad_token_id=0, bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1,
                  tie_word_embeddings=False)
    config.update(overrides)
    return config


def waveforms(seconds: list[float], sampling_rate: int = 16000) -> list[np.ndarray]:
    """Noise that depends only on its duration, so a sample is the same alone or batched."""
    return [np.random.default_rng(int(s * 1000)).standard_normal(int(s * sampling_rate)).astype(np.float32) * 0.1
            for s in seconds]


@dataclass
class Case:
    model_type: str
    model: Callable[[], torch.nn.Module]
    processor: Callable[[], object]
    prompt: str                      # one sample's text, one audio placeholder in it
    seconds: tuple[float, ...]       # a batch of different durations, all within one encoder window
    sampling_rate: int = 16000
    #: model inputs every batch carries besides the processor's (vibevoice_asr: sample=False)
    extra: dict = field(default_factory=dict)
    #: the processor's own defaults set a padding side: pass it in the call
    side_kwarg: bool = False

    def batch(self, processor, padding_side: str = "left", seconds=None) -> dict:
        seconds = list(seconds or self.seconds)
        processor.tokenizer.padding_side = padding_side
        side = {"padding_side": padding_side} if self.side_kwarg else {}
        out = processor(text=[self.prompt] * len(seconds), audio=waveforms(seconds, self.sampling_rate),
                        sampling_rate=self.sampling_rate, return_tensors="pt", padding=True, **side)
        return {**dict(out), **self.extra}


def _seeded(build):
    def wrapped():
        torch.manual_seed(0)
        return build().eval()
    return wrapped


# -- glmasr ---------------------------------------------------------------------------------------

def _glmasr_model():
    from transformers import GlmAsrConfig, GlmAsrForConditionalGeneration
    config = GlmAsrConfig(audio_config=dict(hidden_size=16, intermediate_size=64, num_hidden_layers=1,
                                            num_attention_heads=2, num_mel_bins=MEL, max_position_embeddings=200),
                          text_config=text_config("llama", head_dim=8), audio_token_id=2)
    return GlmAsrForConditionalGeneration(config)


def _glmasr_processor():
    from transformers import GlmAsrProcessor, WhisperFeatureExtractor
    # A 2 s window: 200 mel frames -> 100 encoder frames, a multiple of the 4 frames GLM-ASR merges.
    extractor = WhisperFeatureExtractor(feature_size=MEL, chunk_length=2)
    return GlmAsrProcessor(extractor, tokenizer(["<|pad|>"]), audio_token="<|pad|>")


# -- audioflamingo3 ----------------------------------------------------------------------------------

def _whisper_encoder(**extra) -> dict:
    """A Whisper-style encoder config on a 1 s window: 100 mel frames -> 50 encoder frames."""
    return dict(d_model=16, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=32, num_mel_bins=MEL,
                max_source_positions=50, **extra)


def _audioflamingo3_model():
    from transformers import AudioFlamingo3Config, AudioFlamingo3ForConditionalGeneration
    config = AudioFlamingo3Config(audio_config=_whisper_encoder(), text_config=text_config(), audio_token_id=2)
    return AudioFlamingo3ForConditionalGeneration(config)


def _audioflamingo3_processor():
    from transformers import AudioFlamingo3Processor, WhisperFeatureExtractor
    extractor = WhisperFeatureExtractor(feature_size=MEL, chunk_length=1)
    return AudioFlamingo3Processor(extractor, tokenizer(["<sound>"]), audio_token="<sound>")


# -- musicflamingo (AudioFlamingo3 + a rotary time embedding built from the placeholder runs) ---------

def _musicflamingo_model():
    from transformers import MusicFlamingoConfig, MusicFlamingoForConditionalGeneration
    config = MusicFlamingoConfig(audio_config=_whisper_encoder(model_type="audioflamingo3_encoder"),
                                 text_config=text_config(), audio_token_id=2,
                                 audio_bos_token_id=3, audio_eos_token_id=4)
    return MusicFlamingoForConditionalGeneration(config)


def _musicflamingo_processor():
    from transformers import MusicFlamingoProcessor, WhisperFeatureExtractor
    extractor = WhisperFeatureExtractor(feature_size=MEL, chunk_length=1)
    return MusicFlamingoProcessor(extractor, tokenizer(["<sound>", "<|sound_bos|>", "<|sound_eos|>"]))


# -- qwen3_asr ---------------------------------------------------------------------------------------

QWEN3_AUDIO = {"audio_token": "<|audio_pad|>", "audio_bos_token": "<|audio_start|>", "audio_eos_token": "<|audio_end|>"}


def _qwen3_asr_model():
    from transformers import Qwen3ASRConfig, Qwen3ASRForConditionalGeneration
    audio = dict(d_model=16, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=32, num_mel_bins=MEL,
                 downsample_hidden_size=8, output_dim=32, n_window=50, n_window_infer=100)
    config = Qwen3ASRConfig(audio_config=audio, text_config=text_config("qwen3"), audio_token_id=2,
                            pad_token_id=0, eos_token_id=31)
    return Qwen3ASRForConditionalGeneration(config)


def _qwen3_asr_processor():
    from transformers import Qwen3ASRFeatureExtractor, Qwen3ASRProcessor
    extractor = Qwen3ASRFeatureExtractor(feature_size=MEL, chunk_length=2)
    return Qwen3ASRProcessor(extractor, tokenizer(list(QWEN3_AUDIO.values()), named=QWEN3_AUDIO))


# -- fun_asr_nano ------------------------------------------------------------------------------------

def _fun_asr_nano_model():
    from transformers import FunAsrNanoConfig, FunAsrNanoForConditionalGeneration
    audio = dict(num_mel_bins=MEL, hidden_size=16, num_attention_heads=2, intermediate_size=32, num_hidden_layers=2,
                 num_timestamp_prediction_layers=1, max_position_embeddings=256, hidden_dropout=0.0,
                 attention_dropout=0.0)
    adaptor = dict(hidden_size=32, num_attention_heads=2, intermediate_size=8, num_hidden_layers=1,
                   projector_hidden_size=32)
    config = FunAsrNanoConfig(audio_config=audio, adaptor_config=adaptor, text_config=text_config("qwen3"),
                              audio_token_id=2)
    return FunAsrNanoForConditionalGeneration(config)


def _fun_asr_nano_processor():
    """The real processor and the real feature extractor class (its LFR stacking, padding and mask), with one
    stand-in: Kaldi fbank frames (25 ms every 10 ms, Hamming, log mel) computed here, not by torchaudio (not
    installed, and the extractor's only torchaudio call)."""
    from transformers import FunAsrNanoProcessor
    from transformers.audio_utils import mel_filter_bank
    from transformers.models.fun_asr_nano.feature_extraction_fun_asr_nano import FunAsrNanoFeatureExtractor

    class TorchFbankExtractor(FunAsrNanoFeatureExtractor):
        def _extract_fbank_features(self, waveform):
            length = self.sampling_rate * self.frame_length // 1000
            shift = self.sampling_rate * self.frame_shift // 1000
            frames = waveform.unfold(0, length, shift)                       # snip_edges, as Kaldi
            frames = (frames - frames.mean(-1, keepdim=True)) * torch.hamming_window(length, periodic=False)
            power = torch.fft.rfft(frames, n=512).abs() ** 2
            mel = torch.from_numpy(mel_filter_bank(num_frequency_bins=257, num_mel_filters=self.feature_size,
                                                   min_frequency=20.0, max_frequency=self.sampling_rate / 2,
                                                   sampling_rate=self.sampling_rate, mel_scale="kaldi")).float()
            return (power @ mel).clamp_min(1.1920929e-07).log()

    return FunAsrNanoProcessor(TorchFbankExtractor(feature_size=MEL), tokenizer(["<|object_ref_start|>"]))


# -- muse_spark (waveform patch convs; the processor also wants image and video processors) --------

def _without_vision(processor_class, **parts):
    """The real ``processor_class`` built without its image and video processors (they need torchvision,
    not installed here, and audio never reaches them): ProcessorMixin's class check skips those two."""
    from unittest import mock
    check = processor_class.check_argument_for_proper_class

    def audio_only(self, name, argument):
        if name in ("image_processor", "video_processor") and argument is None:
            return None
        return check(self, name, argument)

    with mock.patch.object(processor_class, "check_argument_for_proper_class", audio_only):
        return processor_class(image_processor=None, video_processor=None, **parts)


MUSE_AUDIO = ["<|audio|>", "<|soft_audio_start|>", "<|soft_audio_end|>", "<|patch|>", "<|video|>"]


def _muse_spark_model():
    from transformers import MuseSparkConfig, MuseSparkForConditionalGeneration
    text = text_config("muse_spark_text", mlp_layer_types=["dense"], moe_intermediate_size=16, num_local_experts=2,
                       num_experts_per_tok=1, moe_hidden_size=16, sliding_window=64)
    # 4 * 5 = 20 samples per token (the released 1920 at 24 kHz), 2 kHz audio: 100 tokens per second
    audio = dict(patch_sizes=(4, 5), hidden_sizes=(16, 32), depths=(1, 1), num_hidden_layers=2, out_hidden_size=32)
    vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    config = MuseSparkConfig(text_config=text, audio_config=audio, vision_config=vision, audio_token_id=2,
                             image_token_id=5, video_token_id=6, out_hidden_size=16, projector_hidden_size=16)
    return MuseSparkForConditionalGeneration(config)


def _muse_spark_processor():
    from transformers import MuseSparkFeatureExtractor, MuseSparkProcessor
    extractor = MuseSparkFeatureExtractor(samples_per_token=20, sampling_rate=2000)
    return _without_vision(MuseSparkProcessor, tokenizer=tokenizer(MUSE_AUDIO), feature_extractor=extractor)


# -- vibevoice_asr (sigma-VAE tokenizers at 7.5 Hz; forward samples noise unless sample=False) -----

def _vibevoice_asr_model():
    from transformers import VibeVoiceAsrConfig, VibeVoiceAsrForConditionalGeneration
    # 40 * 80 = 3200 samples per token, the released hop at 24 kHz (the processor pads to it), in 2 stages
    encoder = dict(model_type="vibevoice_acoustic_tokenizer_encoder", hidden_size=8, num_filters=4, kernel_size=3,
                   downsampling_ratios=(40, 80), depths=(0, 1, 1))
    config = VibeVoiceAsrConfig(acoustic_tokenizer_encoder_config=encoder, semantic_tokenizer_encoder_config=encoder,
                                text_config=text_config(), audio_token_id=2, audio_bos_token_id=3, audio_eos_token_id=4)
    return VibeVoiceAsrForConditionalGeneration(config)


def _vibevoice_asr_processor():
    from transformers import VibeVoiceAcousticTokenizerFeatureExtractor, VibeVoiceAsrProcessor
    return VibeVoiceAsrProcessor(VibeVoiceAcousticTokenizerFeatureExtractor(),
                                 tokenizer(["<|box_start|>", "<|object_ref_start|>", "<|object_ref_end|>"]))


# -- gemma4 (padded tokens + mask from get_audio_features; mm_token_type_ids from the processor) --------

GEMMA4_TOKENS = {"audio_token": "<audio_soft_token>", "boa_token": "<start_of_audio>", "eoa_token": "<end_of_audio>",
                 "image_token": "<image_soft_token>", "boi_token": "<start_of_image>", "eoi_token": "<end_of_image>"}


def _gemma4_model():
    from transformers import Gemma4Config, Gemma4ForConditionalGeneration
    ids = dict(zip(GEMMA4_TOKENS, range(2, 2 + len(GEMMA4_TOKENS))))      # as tokenizer(GEMMA4_TOKENS) numbers them
    text = text_config("gemma4_text", vocab_size_per_layer_input=32, hidden_size_per_layer_input=8,
                       sliding_window=64, layer_types=["full_attention"])
    audio = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, subsampling_conv_channels=(8, 4),
                 output_proj_dims=16)
    vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                  num_key_value_heads=2, head_dim=8, position_embedding_size=64)
    config = Gemma4Config(text_config=text, audio_config=audio, vision_config=vision, audio_token_id=ids["audio_token"],
                          boa_token_id=ids["boa_token"], eoa_token_index=ids["eoa_token"],
                          image_token_id=ids["image_token"], boi_token_id=ids["boi_token"],
                          eoi_token_id=ids["eoi_token"], video_token_id=2 + len(GEMMA4_TOKENS) + len(WORDS))
    return Gemma4ForConditionalGeneration(config)


def _gemma4_processor():
    from transformers import Gemma4AudioFeatureExtractor, Gemma4Processor
    return _without_vision(Gemma4Processor, feature_extractor=Gemma4AudioFeatureExtractor(feature_size=MEL),
                           tokenizer=tokenizer(list(GEMMA4_TOKENS.values()), named=GEMMA4_TOKENS))


# -- dots3_note (tokens flat over 60 s chunks; the processor also wants image and video processors) -----

def _dots3_note_model():
    from transformers import Dots3NoteConfig, Dots3NoteForConditionalGeneration
    text = text_config("dots3_note_text", num_key_value_heads=4, moe_intermediate_size=16, n_routed_experts=2,
                       num_experts_per_tok=1, n_shared_experts=1, shared_experts_intermediate_size=16,
                       kv_lora_rank=8, q_lora_rank=16, qk_rope_head_dim=4, v_head_dim=8, qk_nope_head_dim=8,
                       head_dim=12, index_topk=16, index_head_dim=8, index_n_heads=2, use_sliding_window=False)
    audio = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, feature_size=MEL,
                 downsample_hidden_size=4, adapter_input_size=16, adapter_out_dim=32, max_position_embeddings=200,
                 initializer_range=0.3)      # features that vary over time, so prominence finds segments
    vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, adapter_in_dim=16,
                  adapter_out_dim=32, moe_intermediate_size=16, num_local_experts=2, mlp_layer_types=["dense"])
    config = Dots3NoteConfig(text_config=text, audio_config=audio, vision_config=vision, audio_token_id=2,
                             image_token_id=3, video_token_id=4)
    return Dots3NoteForConditionalGeneration(config)


def _dots3_note_processor():
    from transformers import Dots3NoteFeatureExtractor, Dots3NoteProcessor
    extractor = Dots3NoteFeatureExtractor(feature_size=MEL, chunk_length=2)      # 2 s chunks
    return _without_vision(Dots3NoteProcessor, feature_extractor=extractor,
                           tokenizer=tokenizer(["<|audio_comp_pad|>", "<|imgpad|>", "<|video_pad|>"]))


# -- nemo_speechlm (Nemotron 3.5 Transcribe: ASR encoder + diarization model, Nemotron-H text) ------------

def _nemotron_h_text(pattern: str = "M*") -> dict:
    """A two-layer Nemotron-H (one Mamba-2 layer, one attention layer; the released models also have MoE layers)."""
    return text_config("nemotron_h", num_hidden_layers=len(pattern), hybrid_override_pattern=pattern,
                       mamba_num_heads=4, mamba_head_dim=8, ssm_state_size=8, n_groups=1, chunk_size=16,
                       n_routed_experts=2, num_experts_per_tok=1, moe_intermediate_size=16,
                       moe_shared_expert_intermediate_size=16)


def _nemo_speechlm_model():
    from transformers import Nemotron3_5TranscribeConfig, Nemotron3_5TranscribeForConditionalGeneration
    encoder = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, num_mel_bins=MEL,
                   max_position_embeddings=200)
    # one 500-frame (40 s) chunk holds every test audio; a 16-frame speaker cache, two speakers
    diarization = dict(model_type="nemotron3_diarization", audio_config=encoder,
                       head_config=dict(hidden_size=8, num_speakers=2, audio_hidden_size=16),
                       streaming_config=dict(speaker_cache_length=16, fifo_length=8, speaker_cache_update_period=8,
                                             num_speakers=2),
                       chunk_length=500, chunk_left_context=0, chunk_right_context=0, fifo_length=8,
                       speaker_cache_update_period=8)
    word_timestamps = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           vocab_size=8, blank_token_id=7)
    config = Nemotron3_5TranscribeConfig(text_config=_nemotron_h_text(),
                                         audio_config=dict(asr_config=encoder, diarization_config=diarization),
                                         word_timestamp_config=word_timestamps, audio_token_id=2)
    return Nemotron3_5TranscribeForConditionalGeneration(config)


def _nemo_speechlm_processor():
    from transformers import NemotronAsrStreamingFeatureExtractor, Nemotron3_5TranscribeProcessor
    return Nemotron3_5TranscribeProcessor(NemotronAsrStreamingFeatureExtractor(feature_size=MEL),
                                          tokenizer(["<|audio|>"]), tokenizer([]))


# -- nemotron_h_omni (Parakeet encoder; the processor also wants image and video processors) -------------

def _nemotron_h_omni_model():
    from transformers import NemotronH_Omni_Reasoning_V3, NemotronH_Omni_Reasoning_V3_Config
    audio = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, conv_kernel_size=3,
                 subsampling_conv_channels=4, num_mel_bins=MEL, max_position_embeddings=200, dropout=0.0,
                 layerdrop=0.0, activation_dropout=0.0, attention_dropout=0.0,
                 projection_hidden_size=16, projection_bias=False)     # the released config's projector fields
    vision = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, patch_size=4, image_size=16,
                  max_img_size=32, num_cls_tokens=1, num_registers=1, video_temporal_patch_size=2)
    config = NemotronH_Omni_Reasoning_V3_Config(text_config=_nemotron_h_text(), audio_config=audio,
                                                vision_config=vision, projector_hidden_size=16, vision_hidden_size=16,
                                                audio_token_id=2, image_token_id=5, video_token_id=6)
    return NemotronH_Omni_Reasoning_V3(config)


def _nemotron_h_omni_processor():
    from transformers import NemotronH_Omni_Reasoning_V3Processor, ParakeetFeatureExtractor
    return _without_vision(NemotronH_Omni_Reasoning_V3Processor,
                           tokenizer=tokenizer(["<so_embedding>", "<so_start>", "<so_end>", "<image>", "<video>"]),
                           feature_extractor=ParakeetFeatureExtractor(feature_size=MEL))


# -- granite_speech (windowed Q-Former; the token-level input_features_mask is rewritten) ------------------

def _granite_speech_model(plus: bool = False):
    from transformers import (GraniteSpeechConfig, GraniteSpeechForConditionalGeneration, GraniteSpeechPlusConfig,
                              GraniteSpeechPlusForConditionalGeneration)
    encoder = dict(input_dim=2 * MEL, num_layers=1, hidden_dim=16, feedforward_mult=2, num_heads=2, output_dim=8,
                   context_size=20, max_pos_emb=64, dropout=0.0, conv_kernel_size=3)
    projector = dict(model_type="blip_2_qformer", hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, encoder_hidden_size=16, cross_attention_frequency=1,
                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    config_class, model_class = ((GraniteSpeechPlusConfig, GraniteSpeechPlusForConditionalGeneration) if plus else
                                 (GraniteSpeechConfig, GraniteSpeechForConditionalGeneration))
    if plus:        # the encoder output concatenated with its input layer: the projector reads twice the width
        encoder = {**encoder, "cat_hidden_layers": [0]}
        projector = {**projector, "encoder_hidden_size": 16 + 2 * MEL}
    config = config_class(text_config=text_config("granite"), encoder_config=encoder, projector_config=projector,
                          audio_token_index=2, has_lora_adapter=False, tie_word_embeddings=False)
    return model_class(config)


def _granite_speech_processor():
    """The real processor and feature extractor class (log-mel normalisation, frame stacking, window counts, the
    token-level mask), with torchaudio's MelSpectrogram (not installed here) replaced by the same STFT and HTK
    mel bank in torch."""
    from unittest import mock

    from transformers import GraniteSpeechProcessor
    from transformers.audio_utils import mel_filter_bank
    from transformers.models.granite_speech import feature_extraction_granite_speech as module

    class MelSpectrogram(torch.nn.Module):          # torchaudio.transforms.MelSpectrogram's defaults
        def __init__(self, sample_rate, n_fft, win_length, hop_length, n_mels):
            super().__init__()
            self.n_fft, self.win_length, self.hop_length = n_fft, win_length, hop_length
            self.register_buffer("window", torch.hann_window(win_length))
            self.register_buffer("mel", torch.from_numpy(mel_filter_bank(
                num_frequency_bins=n_fft // 2 + 1, num_mel_filters=n_mels, min_frequency=0.0,
                max_frequency=sample_rate / 2, sampling_rate=sample_rate, norm=None, mel_scale="htk")).float())

        def forward(self, audio):
            spec = torch.stft(audio, self.n_fft, self.hop_length, self.win_length, self.window, center=True,
                              pad_mode="reflect", return_complex=True).abs() ** 2
            return (spec.transpose(-1, -2) @ self.mel).transpose(-1, -2)

    without_torchaudio = [mock.patch.object(module, "requires_backends", lambda *a, **k: None),
                          mock.patch.object(module, "torchaudio", mock.Mock(transforms=mock.Mock(
                              MelSpectrogram=MelSpectrogram)), create=True)]

    class TorchMelExtractor(module.GraniteSpeechFeatureExtractor):
        def __init__(self, **kwargs):
            with without_torchaudio[0], without_torchaudio[1]:
                super().__init__(**kwargs)

        def __call__(self, *args, **kwargs):
            with without_torchaudio[0]:
                return super().__call__(*args, **kwargs)

    return GraniteSpeechProcessor(TorchMelExtractor(n_mels=MEL), tokenizer(["<|audio|>"]))


# -- qwen2_audio (its own integration module, reached through the same registry) -------------------

def _qwen2_audio_model():
    from tests.test_qwen2_audio import tiny_model
    return tiny_model()


def _qwen2_audio_processor():
    from tests.test_qwen2_audio import tiny_processor
    return tiny_processor()


CASES: dict[str, Case] = {case.model_type: case for case in [
    Case("glmasr", _seeded(_glmasr_model), _glmasr_processor, "<|pad|> what is this", (2.0, 0.7, 1.3)),
    Case("audioflamingo3", _seeded(_audioflamingo3_model), _audioflamingo3_processor, "<sound> what is this",
         (1.0, 0.37, 0.64)),
    Case("qwen3_asr", _seeded(_qwen3_asr_model), _qwen3_asr_processor,
         "<|audio_start|><|audio_pad|><|audio_end|> what is this", (2.0, 0.6, 1.37)),
    Case("musicflamingo", _seeded(_musicflamingo_model), _musicflamingo_processor, "<sound> what is this",
         (1.0, 0.37, 0.64)),
    Case("fun_asr_nano", _seeded(_fun_asr_nano_model), _fun_asr_nano_processor, "<|object_ref_start|> what is this",
         (1.0, 0.37, 0.64)),
    Case("muse_spark", _seeded(_muse_spark_model), _muse_spark_processor, "<|audio|> what is this",
         (1.0, 0.37, 0.64), sampling_rate=2000),
    Case("vibevoice_asr", _seeded(_vibevoice_asr_model), _vibevoice_asr_processor,
         "<|object_ref_start|><|box_start|><|object_ref_end|> what is this", (2.4, 0.9, 1.6), sampling_rate=24000,
         extra={"sample": False}, side_kwarg=True),
    Case("gemma4", _seeded(_gemma4_model), _gemma4_processor, "<audio_soft_token> what is this", (1.0, 0.37, 0.64)),
    Case("dots3_note", _seeded(_dots3_note_model), _dots3_note_processor, "<|audio_comp_pad|> what is this",
         (1.9, 0.7, 1.3)),
    Case("nemo_speechlm", _seeded(_nemo_speechlm_model), _nemo_speechlm_processor, "<|audio|> what is this",
         (2.0, 0.7, 1.3)),
    Case("nemotron_h_omni", _seeded(_nemotron_h_omni_model), _nemotron_h_omni_processor,
         "<so_embedding> what is this", (2.0, 0.7, 1.3)),
    Case("granite_speech", _seeded(_granite_speech_model), _granite_speech_processor, "<|audio|> what is this",
         (2.0, 0.7, 1.3)),
    Case("granite_speech_plus", _seeded(lambda: _granite_speech_model(plus=True)), _granite_speech_processor,
         "<|audio|> what is this", (2.0, 0.7, 1.3)),
    Case("qwen2_audio", _seeded(_qwen2_audio_model), _qwen2_audio_processor,
         "<|audio_bos|><|AUDIO|><|audio_eos|> what is this", (1.0, 0.37, 0.64)),
]}
