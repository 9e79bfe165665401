"""Compressed audio embeddings for a serving engine that takes precomputed audio embeddings (vLLM's
``audio_embeds`` input, e.g. for Qwen2-Audio)::

    from lalm_fast.integrations.serving import audio_embeds

    embeds = audio_embeds(model, processor, [waveform_1, waveform_2], "uniform:3")
    embeds[0].shape      # [ceil(native_1 / 3), hidden of the language model]

Each tensor is what the compressed model puts onto that audio's placeholders: its audio tower, its own
reduction, the compressor and its projector (for Qwen2-Audio the compressor runs before the projector, for the
others after it), in the language model's hidden space. The engine then expands the audio's placeholder to
``len(embeds[i])`` tokens itself; nothing else about the prompt changes. docs/hf-integration.md has a vLLM sketch.
"""

from __future__ import annotations

import contextlib
from typing import Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

import lalm_fast.integrations as li
from lalm_fast.nn import AudioCompressor, build_compressor

__all__ = ["audio_embeds"]


@torch.no_grad()
def audio_embeds(model: nn.Module, processor, audios: Sequence,
                 compressor: Union[str, dict, AudioCompressor, None] = None, *,
                 sampling_rate: Optional[int] = None, model_inputs: Optional[dict] = None) -> list[torch.Tensor]:
    """One ``[n_tokens_i, hidden]`` tensor per audio in ``audios`` (1-D waveforms at the processor's rate), in
    the language model's hidden space, on the model's device and in its dtype.

    ``model``: a native audio LLM of a type in :func:`~lalm_fast.integrations.supported_models` (or a
    ``PeftModel`` of one, or a :class:`~lalm_fast.integrations.native_lm.NativeAudioLM`, whose processor is then
    used). ``compressor``: applied for this call and reverted; None uses the compression already applied to
    ``model``. ``n_tokens_i`` is the compressor's count for audio ``i`` (``output_lengths`` of the model's own
    count for a fixed-rate compressor). ``sampling_rate``, when given, must be the processor's.
    ``model_inputs``: inputs the audio tower takes besides the processor's (``{"sample": False}`` for
    vibevoice_asr, which otherwise samples noise onto its latents).
    """
    from lalm_fast.integrations.native_lm import NativeAudioLM, sampling_rate_of  # imports transformers / peft

    if isinstance(model, NativeAudioLM):   # its processor writes compressed counts, which do not matter here
        processor, model = processor or model.processor, model.model
    if processor is None:
        raise TypeError("audio_embeds needs the model's processor (or a NativeAudioLM, which holds one)")
    waves = _waveforms(audios)
    adapter = li.adapter_for(model)
    rate = sampling_rate_of(processor)
    if sampling_rate is not None and sampling_rate != rate:
        raise ValueError(f"audio at {sampling_rate} Hz, but the processor expects {rate} Hz: resample it first")
    if compressor is None and not li.is_compressed(model):
        raise ValueError("model has no compression applied: pass compressor=... (e.g. 'uniform:3'), or 'none' for "
                         "the model's own tokens")
    if compressor is not None and li.is_compressed(model):
        raise ValueError("model already has compression applied; pass compressor=None to use it, or revert(model)")
    scope = li.compression(model, build_compressor(compressor)) if compressor is not None else contextlib.nullcontext()
    # One placeholder per audio: the processor needs it to accept the audio; its count does not matter here.
    batch = processor(text=[processor.audio_token] * len(waves), audio=waves, sampling_rate=rate,
                      return_tensors="pt", text_kwargs={"padding": True})
    device, dtype = _device_dtype(model)
    batch = {k: (v.to(device, dtype) if v.is_floating_point() else v.to(device)) if torch.is_tensor(v) else v
             for k, v in {**batch, **(model_inputs or {})}.items()}
    with scope:
        tokens = adapter.compressed_tokens(model, batch)
    if tokens.is_packed or tokens.values.shape[0] != len(waves):
        raise ValueError(f"the audio tower returned {tokens.lengths.numel()} rows for {len(waves)} audios: this "
                         "processor cuts audio longer than one encoder window into one row per window; keep each "
                         "audio within one window")
    return [values[:int(n)] for values, n in zip(tokens.values, tokens.lengths.tolist())]


def _waveforms(audios) -> list[np.ndarray]:
    if isinstance(audios, (np.ndarray, torch.Tensor)) and audios.ndim == 1:
        audios = [audios]
    waves = [np.asarray(a.detach().cpu() if torch.is_tensor(a) else a, dtype=np.float32) for a in audios]
    if not waves:
        raise ValueError("audio_embeds needs at least one audio")
    for index, wave in enumerate(waves):
        if wave.ndim != 1 or wave.size == 0:
            raise ValueError(f"audios[{index}] must be a non-empty 1-D waveform, got shape {wave.shape}")
    return waves


def _device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    params = list(model.parameters())
    floating = next((p for p in params if p.is_floating_point() and not p.requires_grad), params[0])
    return params[0].device, floating.dtype
