"""Tiny random-init parts (Whisper encoder, Llama LM, word-level tokenizer) for tests and the CI
training config. Nothing is downloaded; the same seed builds the same weights.

The vocabulary is a handful of words, so synthetic transcripts should use ``WORDS``.
"""

from __future__ import annotations

import torch

__all__ = ["MEL_BINS", "MEL_FRAMES", "PROMPTS", "SPECIALS", "WORDS", "tiny_audio_lm", "tiny_encoder", "tiny_lm",
           "tiny_tokenizer"]

MEL_BINS, MEL_FRAMES = 8, 100  # max_source_positions=50 -> the encoder takes exactly 100 mel frames (1 s)
WORDS = ["<audio>", "transcribe", "translate", "to", "german", "the", "cat", "sat", "dog", "ran", "a", "bird",
         "sang", "fish", "swam", "red", "blue"]
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]
PROMPTS = {"transcribe": "transcribe <audio>", "translate": "<audio> translate to {lang}"}


def tiny_tokenizer(padding_side: str = "right", pad: bool = True):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(SPECIALS + WORDS)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                      pad_token="<pad>" if pad else None)
    wrapped.padding_side = padding_side
    return wrapped


def tiny_encoder(d_model: int = 16, mel_bins: int = MEL_BINS, mel_frames: int = MEL_FRAMES):
    """A 1-layer Whisper encoder taking ``mel_frames`` frames of ``mel_bins`` bins."""
    from transformers import WhisperConfig, WhisperModel

    config = WhisperConfig(d_model=d_model, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=32,
                           decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=32, num_mel_bins=mel_bins,
                           max_source_positions=mel_frames // 2)
    return WhisperModel(config).get_encoder()


def tiny_lm(hidden: int = 32):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(hidden_size=hidden, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=len(SPECIALS) + len(WORDS), pad_token_id=0,
                         bos_token_id=1, eos_token_id=2)
    return LlamaForCausalLM(config)


def tiny_audio_lm(compressor="uniform:3", padding_side: str = "right", seed: int = 0, mel_bins: int = MEL_BINS,
                  mel_frames: int = MEL_FRAMES, **config):
    """Encoder (d=16) + compressor + 2-layer projector + Llama (h=32), seeded."""
    from lalm_fast.models import AudioLM, AudioLMConfig, MLPProjector

    torch.manual_seed(seed)
    projector = MLPProjector(16, 32, hidden=32, layers=2)
    encoder = tiny_encoder(mel_bins=mel_bins, mel_frames=mel_frames)
    config.setdefault("prompts", dict(PROMPTS))
    return AudioLM(encoder, compressor, projector, tiny_lm(), tiny_tokenizer(padding_side), AudioLMConfig(**config))
