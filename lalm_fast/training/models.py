"""The models a training run works on: built from a :class:`ModelSpec`, or reloaded after training."""

from __future__ import annotations

import os

import torch

from lalm_fast.training.config import TINY_RANDOM, ModelSpec, saved_spec

__all__ = ["build_model", "load_bases", "load_encoder", "load_trained"]


def build_model(spec: ModelSpec):
    """An AudioLM from the spec's sources, with a fresh projector (and LoRA when asked), or with
    the projector and LoRA of ``spec.init_from`` and the spec's compressor; with ``spec.native`` a
    :class:`~lalm_fast.integrations.native_lm.NativeAudioLM` (the native model compressed, LoRA on its
    language model, drawn from ``spec.seed``)."""
    if spec.native:
        from lalm_fast.integrations.native_lm import NativeAudioLM

        return NativeAudioLM.from_folder(spec.native, spec.compressor, lora=spec.lora, prompts=spec.prompts,
                                         dtype=spec.lm_dtype, seed=spec.seed)
    from lalm_fast.models import AudioLM, AudioLMConfig, MLPProjector
    from lalm_fast.models.tiny import PROMPTS

    encoder, lm, tokenizer = load_bases(spec)
    if spec.init_from is not None:
        model = AudioLM.from_pretrained(spec.init_from, encoder, lm, tokenizer, is_trainable=spec.train_lora)
        model.set_compressor(spec.compressor)
        return model
    torch.manual_seed(spec.seed)
    width = lm.get_input_embeddings().embedding_dim
    projector = MLPProjector(encoder.config.d_model, width, **spec.projector)
    prompts = spec.prompts or (dict(PROMPTS) if spec.lm == TINY_RANDOM else None)
    config = AudioLMConfig(encoder=spec.encoder, lm=spec.lm, freeze_encoder=spec.freeze_encoder,
                           **({"prompts": prompts} if prompts else {}))
    model = AudioLM(encoder, spec.compressor, projector, lm, tokenizer, config)
    if spec.lora:
        model.add_lora(**spec.lora)
    return model


def load_trained(directory: str | os.PathLike, is_trainable: bool = False):
    """Reload a model written by :func:`train` (``<output_dir>/final``): bases from the recorded
    sources, projector and LoRA from the folder. Returns ``(model, ModelSpec)``."""
    from lalm_fast.models import AudioLM

    spec = saved_spec(directory, "model")
    if spec.native:
        from lalm_fast.integrations.native_lm import NativeAudioLM

        return NativeAudioLM.from_pretrained(directory, is_trainable=is_trainable, dtype=spec.lm_dtype), spec
    encoder, lm, tokenizer = load_bases(spec)
    return AudioLM.from_pretrained(directory, encoder, lm, tokenizer, is_trainable=is_trainable), spec


def load_encoder(spec: ModelSpec):
    """The spec's (frozen) audio encoder alone; tiny-random weights are seeded by ``spec.seed``."""
    from lalm_fast.models import pretrained, tiny

    if spec.native:
        raise ValueError("a native model (model.native) has no separate Whisper encoder to load")
    if spec.encoder == TINY_RANDOM:
        torch.manual_seed(spec.seed)
        return tiny.tiny_encoder(mel_bins=spec.mel_bins, mel_frames=round(spec.window_seconds * 100))
    return pretrained.load_whisper_encoder(spec.encoder, spec.window_seconds)


def load_bases(spec: ModelSpec):
    """(encoder, lm, tokenizer). tiny-random parts are seeded so a reload rebuilds the same weights."""
    from lalm_fast.models import pretrained, tiny

    torch.manual_seed(spec.seed)
    encoder = load_encoder(spec)
    if spec.lm == TINY_RANDOM:
        lm, tokenizer = tiny.tiny_lm(), tiny.tiny_tokenizer()
    else:
        lm, tokenizer = pretrained.load_causal_lm(spec.lm, getattr(torch, spec.lm_dtype))
    return encoder, lm, tokenizer
