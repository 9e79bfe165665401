"""Audio-token compression inside transformers' ``WhisperForConditionalGeneration`` (transformers 5.x).

Whisper's encoder always reads 30 s of log-mel (3000 frames) and returns 1500 frames, silence
included; the decoder's cross-attention reads all of them. :func:`apply_compression` puts a
``lalm_fast.nn`` compressor between the two::

    apply_compression(model, "uniform:3")          # or with compression(model, "uniform:3"): ...
    inputs = processor(audio, sampling_rate=16000, return_tensors="pt", return_attention_mask=True)
    tokens = model.generate(inputs.input_features, attention_mask=inputs.attention_mask)
    revert(model)

**Valid frames.** The feature extractor's ``attention_mask`` (mel frames) gives each sample's
valid encoder frames (two mel frames per encoder frame); without it all 1500 are valid. Only
valid frames are compressed, so silence padding is never pooled into a token.

**Where it hooks in.** Three instance-level patches, nothing on the classes, all undone by
:func:`revert`:

- the ``WhisperEncoder``'s ``forward`` compresses its output and returns a
  :class:`CompressedEncoderOutput` (a ``BaseModelOutput`` that also holds ``lengths``, the valid
  tokens per sample). ``generate`` calls the encoder once, before decoding, and keeps that
  output in its ``model_kwargs``, so compression runs once per ``generate``, not per step;
  beam search expands ``lengths`` with the hidden states, as it does every tensor field;
- the ``WhisperModel``'s ``forward`` passes the mel ``attention_mask`` to the encoder (stock
  Whisper drops it), compresses any ``encoder_outputs`` given uncompressed, and builds the
  cross-attention mask from ``lengths``;
- a forward pre-hook on every ``WhisperDecoderLayer`` puts that mask into the layer's
  ``encoder_attention_mask`` argument.

**Why a hook for the cross-attention mask.** ``WhisperDecoderLayer.forward`` already supports
an ``encoder_attention_mask`` and hands it to its cross-attention, but
``WhisperDecoder.forward`` calls every layer with ``encoder_attention_mask=None`` hard-coded and
has no argument to pass one (its ``**kwargs`` reach the attention modules too, so a mask passed
there would collide). Stock Whisper thus attends to all 1500 frames, padding included. The
pre-hook overrides that one argument and leaves the rest of transformers' decoder untouched.
The mask is made by transformers' own ``create_bidirectional_mask``, so it has the format the
model's attention implementation (eager, sdpa, flash, flex) expects, and it is ``None`` where
every token is valid, exactly as unpatched. It reaches the hooks through a
:class:`contextvars.ContextVar` keyed by the model, set only for the patched forward: other
models, threads and asyncio tasks see their own. transformers 5 checkpoints a layer's
``forward`` inside its hooks, so the mask is also the one used on the recompute.

Not covered: calling ``model.model.decoder`` directly (it gets no mask), and long-form
(over 30 s) generation, where the mask describes the whole audio rather than the window
(each window is then compressed as all valid).
"""

from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass
from typing import Any, Optional, Union

import torch
from torch import nn
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_outputs import BaseModelOutput
from transformers.models.whisper.modeling_whisper import WhisperDecoder, WhisperModel

from lalm_fast.integrations._patching import PATCH_ATTR as _PATCH_ATTR
from lalm_fast.integrations._patching import ForwardPatch, applied_patch, find_module, patch_of as _patch_of
from lalm_fast.nn import AudioCompressor, build_compressor

__all__ = ["apply_compression", "revert", "compression", "is_compressed", "inner_model", "encode",
           "compress_encoder_output", "encoder_frame_lengths", "CompressedEncoderOutput", "decoder_lora_config",
           "DECODER_ATTENTION"]

CompressorSpec = Union[str, dict, AudioCompressor]
DECODER_ATTENTION = ("q_proj", "k_proj", "v_proj", "out_proj")
# Cross-attention masks of the patched forwards running in this thread / task: {id(WhisperModel): mask}.
_CROSS_MASKS: contextvars.ContextVar[dict] = contextvars.ContextVar("lalm_fast_whisper_cross_masks", default={})


@dataclass
class CompressedEncoderOutput(BaseModelOutput):
    """The encoder output after compression: ``last_hidden_state [B, S, D]`` (``S`` the longest
    sample's token count; rows at or past a sample's length are zero) and ``lengths [B]``, the valid tokens per sample.
    ``hidden_states`` / ``attentions`` are the encoder's own, uncompressed."""

    lengths: Optional[torch.LongTensor] = None


@dataclass
class _Patch:
    compressor: AudioCompressor
    model_forward: ForwardPatch
    encoder_forward: ForwardPatch
    hooks: list


# ---------------------------------------------------------------------------------------------
# Patch / revert

def inner_model(model: nn.Module) -> WhisperModel:
    """The ``WhisperModel`` inside ``model`` (itself, a ForConditionalGeneration, or a PeftModel)."""
    return find_module(model, WhisperModel)


def is_compressed(model: nn.Module) -> bool:
    return _patch_of(inner_model(model)) is not None


def apply_compression(model: nn.Module, compressor: CompressorSpec) -> nn.Module:
    """Compress Whisper's encoder output with ``compressor`` (a layer, spec string or config dict)
    before the decoder's cross-attention reads it. Applying again replaces the compressor.
    Returns ``model``, patched in place; :func:`revert` undoes it."""
    inner = inner_model(model)
    compressor = build_compressor(compressor)
    patch = _patch_of(inner)
    if patch is not None:
        patch.compressor = compressor
        return model
    key = id(inner)
    hooks = [layer.register_forward_pre_hook(_cross_mask_hook(key), with_kwargs=True)
             for layer in inner.decoder.layers]
    patch = _Patch(compressor, ForwardPatch(inner, _compressed_model_forward),
                   ForwardPatch(inner.encoder, _compressed_encoder_forward), hooks)
    # Plain attributes, not submodules: state_dict and the adapters saved by peft are unchanged.
    inner.__dict__[_PATCH_ATTR] = patch
    inner.encoder.__dict__[_PATCH_ATTR] = patch
    return model


def revert(model: nn.Module) -> nn.Module:
    """Undo :func:`apply_compression`: the original forwards come back and the hooks are removed."""
    inner = inner_model(model)
    patch = applied_patch(inner)
    for handle in patch.hooks:
        handle.remove()
    patch.model_forward.restore()
    patch.encoder_forward.restore()
    del inner.__dict__[_PATCH_ATTR]
    del inner.encoder.__dict__[_PATCH_ATTR]
    return model


@contextlib.contextmanager
def compression(model: nn.Module, compressor: CompressorSpec):
    """``with compression(model, "uniform:3"): ...`` applies compression and reverts it on exit."""
    apply_compression(model, compressor)
    try:
        yield model
    finally:
        revert(model)


# ---------------------------------------------------------------------------------------------
# Encoder side: valid frames and compression

def encoder_frame_lengths(attention_mask: Optional[torch.Tensor], frames: int, batch: int,
                          device: torch.device) -> torch.Tensor:
    """Valid encoder frames per sample: ``ceil(mel / 2)`` (conv2 has stride 2), at most ``frames``;
    all ``frames`` without a mask."""
    if attention_mask is None:
        return torch.full((batch,), frames, dtype=torch.long, device=device)
    mel = attention_mask.to(device).long().sum(-1)
    return ((mel - 1) // 2 + 1).clamp(0, frames)


def compress_encoder_output(model: nn.Module, encoder_outputs, attention_mask: Optional[torch.Tensor] = None,
                            ) -> CompressedEncoderOutput:
    """Compress an (uncompressed) encoder output of ``model``'s encoder, valid frames only."""
    patch = _require_patch(inner_model(model))
    if not isinstance(encoder_outputs, BaseModelOutput):
        encoder_outputs = BaseModelOutput(*encoder_outputs[:3])
    hidden = encoder_outputs.last_hidden_state
    lengths = encoder_frame_lengths(attention_mask, hidden.shape[1], hidden.shape[0], hidden.device)
    # Cut the static bound (ceil(T / k) rows) to the longest sample: the cross-attention then
    # reads no all-padding rows. One host sync, once per encoder run.
    out = patch.compressor(hidden, lengths).trim()
    if out.values.shape[-1] != hidden.shape[-1]:
        raise ValueError(f"compressor {patch.compressor.config()} changed the feature size from {hidden.shape[-1]} "
                         f"to {out.values.shape[-1]}; the decoder's cross-attention expects {hidden.shape[-1]}")
    return CompressedEncoderOutput(last_hidden_state=out.values, hidden_states=encoder_outputs.hidden_states,
                                   attentions=encoder_outputs.attentions, lengths=out.lengths)


def encode(model: nn.Module, input_features: torch.Tensor,
           attention_mask: Optional[torch.Tensor] = None) -> CompressedEncoderOutput:
    """Run the encoder and the compressor once; pass the result as ``encoder_outputs=`` to
    ``model(...)`` or ``model.generate(...)``."""
    inner = inner_model(model)
    _require_patch(inner)
    return inner.encoder(input_features, attention_mask=attention_mask)


def _require_patch(inner: WhisperModel) -> _Patch:
    return applied_patch(inner, "apply_compression(model, compressor) first")


def _compressed_encoder_forward(self, input_features, attention_mask=None, **kwargs):
    patch = _patch_of(self)
    # Stock WhisperEncoder ignores attention_mask; it is taken here for the valid lengths.
    output = patch.encoder_forward.original(input_features, **kwargs)
    owner = _owner_of(self)
    return compress_encoder_output(owner, output, attention_mask)


def _owner_of(encoder: nn.Module) -> WhisperModel:
    # The WhisperModel that holds this encoder's patch (the same _Patch object).
    return _patch_of(encoder).model_forward.module


# ---------------------------------------------------------------------------------------------
# Decoder side: the cross-attention mask

def _cross_attention_mask(decoder: WhisperDecoder, encoder_outputs: CompressedEncoderOutput, query_length: int):
    """The mask, in the format of the decoder's attention implementation (None: attend everywhere)."""
    hidden = encoder_outputs.last_hidden_state
    valid = torch.arange(hidden.shape[1], device=hidden.device)[None, :] < encoder_outputs.lengths[:, None]
    queries = hidden.new_zeros(hidden.shape[0], query_length, 1)   # only its shape and device are read
    return create_bidirectional_mask(config=decoder.config, inputs_embeds=queries, attention_mask=valid,
                                     encoder_hidden_states=hidden)


def _cross_mask_hook(key: int):
    def hook(layer, args, kwargs):
        masks = _CROSS_MASKS.get()
        if key not in masks:          # the layer was called outside the patched model forward
            return None
        if len(args) > 3:             # encoder_attention_mask given positionally
            return (*args[:3], masks[key], *args[4:]), kwargs
        return args, {**kwargs, "encoder_attention_mask": masks[key]}
    return hook


def _compressed_model_forward(self: WhisperModel, input_features=None, attention_mask=None, decoder_input_ids=None,
                              encoder_outputs=None, decoder_inputs_embeds=None, **kwargs):
    if encoder_outputs is None:
        # SpecAugment (training only), as the original forward applies it before its encoder call.
        input_features = self._mask_input_features(input_features, attention_mask=attention_mask)
        encoder_outputs = self.encoder(input_features, attention_mask=attention_mask, **kwargs)
    elif not isinstance(encoder_outputs, CompressedEncoderOutput):
        encoder_outputs = compress_encoder_output(self, encoder_outputs, attention_mask)
    queries = decoder_input_ids if decoder_input_ids is not None else decoder_inputs_embeds
    mask = _cross_attention_mask(self.decoder, encoder_outputs, queries.shape[1])
    token = _CROSS_MASKS.set({**_CROSS_MASKS.get(), id(self): mask})
    try:
        return _patch_of(self).model_forward.original(
            input_features=input_features, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids,
            encoder_outputs=encoder_outputs, decoder_inputs_embeds=decoder_inputs_embeds, **kwargs)
    finally:
        _CROSS_MASKS.reset(token)


# ---------------------------------------------------------------------------------------------
# LoRA on the decoder

def decoder_lora_config(r: int = 16, lora_alpha: int = 32, lora_dropout: float = 0.0, cross_attention: bool = True,
                        self_attention: bool = True, target_modules=DECODER_ATTENTION, **kwargs: Any):
    """A peft ``LoraConfig`` on the decoder's self- and / or cross-attention projections only.

    The encoder's attention has the same ``q_proj`` / ``k_proj`` / ``v_proj`` / ``out_proj``
    names, so the targets are scoped by a regex on ``decoder.layers.N.self_attn`` /
    ``encoder_attn``. Save and load adapters with :func:`lalm_fast.integrations.lora.save_adapter`
    / ``load_adapter``. Extra ``kwargs`` go to ``LoraConfig`` (no ``task_type`` by default:
    peft's seq2seq wrapper passes ``input_ids``, which Whisper does not take).
    """
    from lalm_fast.integrations.lora import scoped_lora_config   # peft is only needed here

    blocks = [name for name, wanted in (("self_attn", self_attention), ("encoder_attn", cross_attention)) if wanted]
    if not blocks:
        raise ValueError("decoder_lora_config needs self_attention or cross_attention (or both)")
    scope = rf"decoder\.layers\.\d+\.(?:{'|'.join(blocks)})\."
    return scoped_lora_config(scope, target_modules, r=r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, **kwargs)
