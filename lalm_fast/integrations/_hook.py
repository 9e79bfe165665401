"""The generic ``get_audio_features`` hook shared by most native audio LLMs (torch only).

Almost every placeholder-style audio LLM in transformers 5 has a ``get_audio_features`` on its
inner model whose ``forward`` calls it through ``self``; binding a replacement on the instance is
therefore picked up without touching the class. The replacement runs the original (encoder, the
model's own reduction, projector, windows joined), splits its output per audio, compresses
each audio's token sequence and returns it in the original layout. So the compressed count of
an audio is always ``compressor.output_lengths(native)``, and the processor only has to map
each native placeholder run of ``n`` tokens to ``output_lengths(n)``.

:class:`Adapter` holds what differs between models (where the hook lives, the audio inputs'
names, the model's native per-audio count, the output layout); ``adapters.py`` has one small
subclass per model type.
"""

from __future__ import annotations

import contextvars
import inspect
import types
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn
from torch.nn.utils.rnn import pad_sequence

from lalm_fast.integrations._patching import PATCH_ATTR, ForwardPatch, applied_patch, patch_of
from lalm_fast.integrations._placeholders import (check_placeholder_runs, expand_audio_placeholders,
                                                  expand_token_types)
from lalm_fast.nn import AudioCompressor, CompressedAudio

_PROCESSOR_ATTR = "_lalm_fast_compression"
# input_ids of the patched forward running in this thread / task: {id(inner): input_ids}.
_FORWARD_IDS: contextvars.ContextVar[dict] = contextvars.ContextVar("lalm_fast_forward_ids", default={})


@dataclass
class HookPatch:
    """What :meth:`Adapter.apply` changed on the inner model, so :meth:`Adapter.revert` undoes it exactly."""
    adapter: "Adapter"
    compressor: AudioCompressor
    original_features: Callable
    forward: ForwardPatch
    had_instance_features: bool
    extra: dict = field(default_factory=dict)


class Adapter:
    """One model family: where compression hooks in and which inputs it rewrites.

    The defaults fit models whose ``get_audio_features`` returns ``pooler_output`` as the valid
    tokens of every audio concatenated (``[sum(n_i), hidden]``); subclasses give the per-audio
    native counts (:meth:`native_lengths`) and override what differs.
    """

    model_types: tuple[str, ...] = ()
    inner_class: str = ""                      # the class owning get_audio_features (and the forward calling it)
    processor_classes: tuple[str, ...] = ()
    audio_inputs: tuple[str, ...] = ("input_features", "input_features_mask")  # batch keys the encoder reads
    token_attr: str = "audio_token_id"         # config attribute of the placeholder id
    hook: str = "get_audio_features"
    #: what the model needs besides the count; listed in the docs table
    rewrites: str = "placeholder count"
    #: the processor cuts audio longer than one encoder window into one encoder row per window
    windowed: bool = False
    #: per-token type inputs (``mm_token_type_ids``) that :meth:`expand_inputs` expands with ``input_ids``
    token_type_inputs: tuple[str, ...] = ()

    # -- model side -----------------------------------------------------------------------------

    def inner(self, model: nn.Module) -> nn.Module:
        """The module owning the hook: the first of class :attr:`inner_class` in ``model``."""
        for module in model.modules():
            if type(module).__name__ == self.inner_class:
                return module
        raise TypeError(f"{type(model).__name__} holds no {self.inner_class}")

    def token_id(self, inner: nn.Module) -> int:
        return int(getattr(inner.config, self.token_attr))

    def native_lengths(self, inner: nn.Module, args: dict[str, Any]) -> torch.Tensor:
        """Tokens per audio the unpatched ``get_audio_features(**args)`` returns (the model's own formula)."""
        raise NotImplementedError

    def native_args(self, inner: nn.Module, args: dict[str, Any]) -> dict[str, Any]:
        """The arguments the original hook is called with (the default: as given)."""
        return args

    def split(self, inner: nn.Module, output, args: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """``output`` of the original hook as padded tokens ``[N, T, D]`` and native ``lengths [N]``."""
        flat = output.pooler_output
        lengths = self.native_lengths(inner, args).to(flat.device).long()
        if int(lengths.sum()) != flat.shape[0]:
            raise RuntimeError(f"{self.inner_class}.get_audio_features returned {flat.shape[0]} tokens but the "
                               f"adapter counted {lengths.tolist()}; lalm_fast does not know this model version")
        rows = torch.split(flat, lengths.tolist())
        return pad_sequence(rows, batch_first=True), lengths

    def join(self, output, values: torch.Tensor, lengths: torch.Tensor, mask: torch.Tensor):
        """Put the compressed tokens back into ``output`` in the layout the model's forward reads."""
        output.pooler_output = values[mask]
        return output

    def apply(self, model: nn.Module, compressor: AudioCompressor, **options) -> None:
        _no_options(self, options)
        inner = self.inner(model)
        if patch_of(inner) is not None:
            raise ValueError("model already has compression applied; call revert(model) first")
        had_instance = self.hook in inner.__dict__
        original = getattr(inner, self.hook)
        inner.__dict__[PATCH_ATTR] = HookPatch(self, compressor, original, ForwardPatch(inner, _recording_forward),
                                               had_instance)
        setattr(inner, self.hook, types.MethodType(_compressed_features, inner))

    def revert(self, model: nn.Module) -> None:
        inner = self.inner(model)
        patch = applied_patch(inner)
        if patch.had_instance_features:
            setattr(inner, self.hook, patch.original_features)
        else:
            delattr(inner, self.hook)
        patch.forward.restore()
        del inner.__dict__[PATCH_ATTR]

    def is_compressed(self, model: nn.Module) -> bool:
        return patch_of(self.inner(model)) is not None

    def compressor_of(self, model: nn.Module) -> AudioCompressor:
        return applied_patch(self.inner(model)).compressor

    def audio_lengths(self, model: nn.Module, batch: dict) -> torch.Tensor:
        """Compressed tokens per audio for ``batch`` (runs the encoder once)."""
        return self.compressed_tokens(model, batch).lengths

    @torch.no_grad()
    def compressed_tokens(self, model: nn.Module, batch: dict) -> CompressedAudio:
        """The compressed audio tokens of ``batch``, one row per audio (per encoder row for a windowed
        processor): ``values [N, S, D]``, valid ``lengths [N]``; what the model puts onto its placeholders."""
        inner = self.inner(model)
        patch = applied_patch(inner, "apply_compression(model, compressor) first")
        args = _bound_args(inner, (), {name: batch[name] for name in self.audio_inputs if batch.get(name) is not None})
        return _compressed(inner, patch.original_features(**self.native_args(inner, args)), args)[0]

    def expand_inputs(self, model: nn.Module, batch: dict, labels=None, padding_side=None) -> dict:
        """``batch`` with every audio's placeholder run expanded to its compressed count."""
        inner = self.inner(model)
        counts = self.audio_lengths(model, batch)
        pad = getattr(inner.config, "pad_token_id", None)
        pad = pad if isinstance(pad, int) and pad >= 0 else 0
        if labels is None:
            labels = batch.get("labels")
        expanded = expand_audio_placeholders(batch["input_ids"], counts, self.token_id(inner), pad,
                                             batch.get("attention_mask"), labels, padding_side,
                                             token_name="audio")
        rest = {k: v for k, v in batch.items() if k not in ("input_ids", "attention_mask", "labels")}
        for name in self.token_type_inputs:
            if rest.get(name) is not None:
                rest[name] = expand_token_types(batch["input_ids"], rest[name], counts, self.token_id(inner),
                                                batch.get("attention_mask"), expanded["input_ids"], padding_side,
                                                name)
        per_token = [k for k, v in rest.items() if k not in self.audio_inputs and torch.is_tensor(v)
                     and v.shape == batch["input_ids"].shape]
        if per_token:
            raise ValueError(f"expand_inputs cannot yet rewrite the per-token inputs {per_token} of a "
                             f"{self.model_types[0]} batch")
        return {**rest, **expanded}

    # -- processor side -------------------------------------------------------------------------

    def audio_token(self, processor) -> str:
        return processor.audio_token

    def patch_processor(self, processor, compressor: AudioCompressor, **options):
        """Wrap the processor's ``_process_audio``: each native run of ``n`` placeholders becomes
        ``output_lengths(n)`` (fixed-rate) or one placeholder (content-adaptive)."""
        _no_options(self, options)
        if _PROCESSOR_ATTR in processor.__dict__:
            raise ValueError("processor is already patched; call revert_processor(processor) first")
        token = self.audio_token(processor)
        original = processor._process_audio

        def process_audio(audio, **kwargs):
            audio_inputs, replacements = original(audio, **kwargs)
            return audio_inputs, [rewrite_run(text, token, compressor) for text in replacements]

        processor.__dict__[_PROCESSOR_ATTR] = compressor
        processor._process_audio = process_audio
        return processor

    def revert_processor(self, processor):
        if _PROCESSOR_ATTR not in processor.__dict__:
            raise ValueError("processor is not patched")
        del processor.__dict__["_process_audio"]
        del processor.__dict__[_PROCESSOR_ATTR]
        return processor


def _no_options(adapter: Adapter, options: dict) -> None:
    if options:
        raise TypeError(f"{adapter.model_types[0]} takes no integration options, got {sorted(options)}")


def rewrite_run(text: str, token: str, compressor: AudioCompressor) -> str:
    """``text`` (one audio's replacement) with its one run of ``n`` ``token`` s made ``output_lengths(n)`` long."""
    n = text.count(token)
    start = text.find(token)
    if n == 0 or text[start:start + n * len(token)] != token * n:
        raise ValueError(f"the processor's replacement for one audio is not one run of {token}: {text[:200]!r}")
    count = int(compressor.output_lengths(torch.tensor([n]))[0]) if compressor.static_length else 1
    return text[:start] + token * count + text[start + n * len(token):]


# -- the bound replacements -----------------------------------------------------------------------

def _recording_forward(self, *args, **kwargs):
    """The inner model's forward, recording ``input_ids`` so the hook can check the placeholder runs."""
    patch = patch_of(self)
    input_ids = kwargs.get("input_ids", args[0] if args else None)
    token = _FORWARD_IDS.set({**_FORWARD_IDS.get(), id(self): input_ids})
    try:
        return patch.forward.original(*args, **kwargs)
    finally:
        _FORWARD_IDS.reset(token)


def _bound_args(inner: nn.Module, args, kwargs) -> dict:
    signature = inspect.signature(applied_patch(inner).original_features)
    bound = signature.bind(*args, **kwargs)
    bound.apply_defaults()
    arguments = dict(bound.arguments)
    arguments.update(arguments.pop("kwargs", {}))
    return arguments


def _compressed_features(self, *args, **kwargs):
    """``get_audio_features`` with each audio's tokens compressed (bound on the inner model)."""
    patch = applied_patch(self)
    arguments = _bound_args(self, args, kwargs)
    output = patch.original_features(**patch.adapter.native_args(self, arguments))
    output, lengths, native = _compress(self, output, arguments)
    input_ids = _FORWARD_IDS.get().get(id(self))
    if input_ids is not None:
        _check(self, input_ids, lengths, native)
    return output


def _compressed(inner: nn.Module, output, args: dict) -> tuple[CompressedAudio, torch.Tensor]:
    """The original hook's ``output`` split per audio and compressed, and each audio's native count."""
    patch = applied_patch(inner)
    padded, native = patch.adapter.split(inner, output, args)
    out = patch.compressor(padded, native)
    if out.values.shape[-1] != padded.shape[-1]:
        raise ValueError(f"compressor {patch.compressor.config()} changed the feature size from {padded.shape[-1]} "
                         f"to {out.values.shape[-1]}; the language model expects {padded.shape[-1]}")
    return out, native


def _compress(inner: nn.Module, output, args: dict):
    out, native = _compressed(inner, output, args)
    mask = out.mask().bool()
    return applied_patch(inner).adapter.join(output, out.values, out.lengths, mask), out.lengths, native


def _check(inner: nn.Module, input_ids: torch.Tensor, lengths: torch.Tensor, native: torch.Tensor) -> None:
    patch = applied_patch(inner)
    native = native.tolist()

    def message(index, sample, placeholders, count):
        text = (f"audio {index} (in sample {sample}) has {placeholders} audio placeholders but compressor "
                f"{patch.compressor.config()} produced {count} tokens (the model's own count is {native[index]}). ")
        if not patch.compressor.static_length:
            return text + ("A content-adaptive compressor's counts are only known after the encoder runs: "
                           "patch the processor with it (one placeholder per audio), then "
                           "lalm_fast.integrations.expand_inputs(model, batch).")
        return text + ("Write the placeholders with the same compressor: "
                       "lalm_fast.integrations.patch_processor(processor, compressor) (an unpatched processor "
                       "writes the model's own count).")

    hint = ("; this processor gives an audio longer than one encoder window one row per window, which "
            "lalm_fast compresses per row and cannot join for this model yet: keep each audio within one window"
            if patch.adapter.windowed else "")
    check_placeholder_runs(input_ids, patch.adapter.token_id(inner), lengths.tolist(), "audio", message, hint)
