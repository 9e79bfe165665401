"""Audio-token compression inside transformers' native Qwen2-Audio (transformers 5.x).

Qwen2-Audio (``Qwen2AudioModel.forward``) runs the Whisper-style tower on exactly 3000 mel
frames, halves its 1500 frames with a length-unaware ``AvgPool1d(2, 2)``, projects them with one
Linear and scatters them onto the ``<|AUDIO|>`` placeholders the processor expanded by the
formula ``((L - 1) // 2 + 1 - 2) // 2 + 1``. There is no ``get_audio_features`` hook, so
:func:`apply_compression` rebinds ``forward`` on the live ``Qwen2AudioModel`` instance: it
builds ``inputs_embeds`` itself (tower -> compressor -> projector -> placeholders) and hands
them to the original ``forward``, which then only runs the language model. Nothing is forked;
:func:`revert` restores the instance exactly.

Fixed-rate compressors (``static_length``)::

    apply_compression(model, "uniform:3")
    patch_processor(processor, "uniform:3")      # placeholder counts by formula
    model(**processor(text=..., audio=..., return_tensors="pt", padding=True))

Content-adaptive compressors (``segment:prominence=...``) only know their counts after the
encoder ran: :func:`build_inputs_embeds` runs it once, expands every placeholder run to its
audio's token count (either padding side, labels kept aligned) and returns ``inputs_embeds``
for ``model(...)`` or ``model.generate(...)``. It works for fixed-rate compressors too.

Audio longer than one 30 s window (``patch_processor(..., long_audio=True)``) is encoded
window by window and joined (:mod:`lalm_fast.long_audio`).
"""

from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass
from typing import Optional, Union

import torch
from torch import nn
from transformers import Qwen2AudioModel
from transformers.masking_utils import create_bidirectional_mask

from lalm_fast import ops
from lalm_fast.integrations._patching import PATCH_ATTR as _PATCH_ATTR
from lalm_fast.integrations._patching import ForwardPatch, applied_patch, find_module, patch_of as _patch_of
from lalm_fast.integrations._placeholders import (IGNORE_INDEX, check_placeholder_runs,  # noqa: F401 (re-exported)
                                                  expand_audio_placeholders)
from lalm_fast.long_audio import encode_windowed, padded_samples, windowed_token_counts
from lalm_fast.nn import AudioCompressor, build_compressor
from lalm_fast.ops import CompressedAudio

__all__ = ["apply_compression", "revert", "compression", "is_compressed", "patch_processor", "revert_processor",
           "audio_token_counts", "get_audio_features", "build_inputs_embeds", "expand_audio_placeholders",
           "LengthAwareAvgPool", "inner_model"]

CompressorSpec = Union[str, dict, AudioCompressor]
NATIVE_POOL = 2          # the tower's AvgPool1d(2, stride=2)
_PROCESSOR_ATTR = "_lalm_fast_compression"
# LengthAwareAvgPool frame lengths in the current thread / task: {id(pooler): lengths}, never mutated in place.
_POOL_LENGTHS: contextvars.ContextVar[dict] = contextvars.ContextVar("lalm_fast_pool_lengths", default={})


# ---------------------------------------------------------------------------------------------
# Token counts (shared by the model and the processor, so the two cannot drift apart)

def _pooled_lengths(frame_lengths: torch.Tensor, replace_avg_pool: bool) -> torch.Tensor:
    """Tower output tokens for ``frame_lengths`` encoder frames (1500 per 30 s window)."""
    if replace_avg_pool:
        return (frame_lengths + NATIVE_POOL - 1) // NATIVE_POOL   # length-aware: the odd last frame is kept
    return (frame_lengths - 2) // 2 + 1                           # AvgPool1d(2, 2): the odd last frame is dropped


def _frame_lengths(mel_lengths: torch.Tensor) -> torch.Tensor:
    return (mel_lengths - 1) // 2 + 1                              # conv2 has stride 2


def audio_token_counts(mel_lengths, compressor: CompressorSpec, *, replace_avg_pool: bool = False,
                       window: int = 3000) -> torch.Tensor:
    """``<|AUDIO|>`` tokens per audio of ``mel_lengths`` mel frames (fixed-rate compressors only).

    ``window`` is the encoder's mel window (3000 for Qwen2-Audio); longer audio is counted
    window by window, as :func:`get_audio_features` encodes it.
    """
    compressor = build_compressor(compressor)
    _require_static(compressor, "count placeholder tokens before the encoder runs")

    def tokens_per_window(window_mel_lengths):
        return compressor.output_lengths(_pooled_lengths(_frame_lengths(window_mel_lengths), replace_avg_pool))

    return windowed_token_counts(torch.as_tensor(mel_lengths).long(), window, tokens_per_window)


def _require_static(compressor: AudioCompressor, purpose: str) -> None:
    if not compressor.static_length:
        raise ValueError(f"compressor {compressor.config()} is content-adaptive, so it cannot {purpose}; "
                         "use build_inputs_embeds(model, ...), which runs the encoder first")


# ---------------------------------------------------------------------------------------------
# Model patch

class LengthAwareAvgPool(nn.Module):
    """Stands in for the tower's ``AvgPool1d(2, 2)``: averages only valid frames, keeps an odd last frame.

    The tower calls its pooler with ``[B, D, T]`` and no lengths, so the patched forward gives them
    for the tower call with :meth:`using`; without them every frame counts as valid, which equals
    ``AvgPool1d`` on an even ``T``. The lengths live in a :class:`contextvars.ContextVar`, not on
    the module: threads (and asyncio tasks) running the same model each see their own, and a
    nested :meth:`using` restores the outer lengths when it ends.
    """

    def __init__(self, k: int = NATIVE_POOL):
        super().__init__()
        self.k = k

    @property
    def frame_lengths(self) -> Optional[torch.Tensor]:
        """The valid frames per sample given by the innermost :meth:`using` here, or None."""
        return _POOL_LENGTHS.get().get(id(self))

    @contextlib.contextmanager
    def using(self, frame_lengths: torch.Tensor):
        token = _POOL_LENGTHS.set({**_POOL_LENGTHS.get(), id(self): frame_lengths})
        try:
            yield
        finally:
            _POOL_LENGTHS.reset(token)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames = x.transpose(1, 2)
        lengths = self.frame_lengths
        if lengths is None:
            lengths = torch.full((x.shape[0],), x.shape[-1], dtype=torch.long, device=x.device)
        return ops.uniform_pool(frames, lengths.to(x.device), self.k).values.transpose(1, 2)

    def extra_repr(self) -> str:
        return f"k={self.k}"


@dataclass
class _Patch:
    compressor: AudioCompressor
    replace_avg_pool: bool
    original_avg_pooler: nn.Module
    forward: ForwardPatch


def inner_model(model: nn.Module) -> Qwen2AudioModel:
    """The ``Qwen2AudioModel`` inside ``model`` (itself, a ForConditionalGeneration, or a PeftModel)."""
    return find_module(model, Qwen2AudioModel)


def is_compressed(model: nn.Module) -> bool:
    return _patch_of(inner_model(model)) is not None


def apply_compression(model: nn.Module, compressor: CompressorSpec, *, replace_avg_pool: bool = False) -> nn.Module:
    """Compress Qwen2-Audio's audio tokens with ``compressor`` (a layer, spec string or config dict).

    ``replace_avg_pool=True`` swaps the tower's length-unaware ``AvgPool1d(2, 2)`` for
    :class:`LengthAwareAvgPool` (an odd last frame becomes its own token instead of being
    dropped, padding is never read). The compressor then runs on the tower's 25 Hz output.
    Returns ``model``, patched in place; :func:`revert` undoes it.
    """
    inner = inner_model(model)
    if _patch_of(inner) is not None:
        raise ValueError("model already has compression applied; call revert(model) first")
    compressor = build_compressor(compressor)
    tower = inner.audio_tower
    original_avg_pooler = tower.avg_pooler
    if replace_avg_pool:
        tower.avg_pooler = LengthAwareAvgPool(NATIVE_POOL)
    # A plain attribute: not a submodule, so state_dict is unchanged.
    inner.__dict__[_PATCH_ATTR] = _Patch(compressor, replace_avg_pool, original_avg_pooler,
                                         ForwardPatch(inner, _compressed_forward))
    return model


def revert(model: nn.Module) -> nn.Module:
    """Undo :func:`apply_compression`: the original forward and pooler objects come back."""
    inner = inner_model(model)
    patch = applied_patch(inner)
    inner.audio_tower.avg_pooler = patch.original_avg_pooler
    patch.forward.restore()
    del inner.__dict__[_PATCH_ATTR]
    return model


@contextlib.contextmanager
def compression(model: nn.Module, compressor: CompressorSpec, *, replace_avg_pool: bool = False):
    """``with compression(model, "uniform:3"): ...`` applies compression and reverts it on exit."""
    apply_compression(model, compressor, replace_avg_pool=replace_avg_pool)
    try:
        yield model
    finally:
        revert(model)


def _compressed_forward(self: Qwen2AudioModel, input_ids=None, input_features=None, attention_mask=None,
                        feature_attention_mask=None, inputs_embeds=None, **kwargs):
    # Same condition as the original: audio is merged on prefill only (generate drops
    # input_features after the first step).
    if input_features is not None and inputs_embeds is None and input_ids.shape[1] != 1:
        audio = get_audio_features(self, input_features, feature_attention_mask)
        inputs_embeds = _merge_audio(self, input_ids, self.get_input_embeddings()(input_ids), audio)
        input_ids = input_features = feature_attention_mask = None
    original = _patch_of(self).forward.original
    return original(input_ids=input_ids, input_features=input_features, attention_mask=attention_mask,
                    feature_attention_mask=feature_attention_mask, inputs_embeds=inputs_embeds, **kwargs)


# ---------------------------------------------------------------------------------------------
# Audio path: tower -> compressor -> projector

def _window_frames(tower: nn.Module) -> int:
    # The tower's own check: max_source_positions * conv strides mel frames (3000).
    return tower.config.max_source_positions * tower.conv1.stride[0] * tower.conv2.stride[0]


def get_audio_features(model: nn.Module, input_features: torch.Tensor,
                       feature_attention_mask: torch.Tensor) -> CompressedAudio:
    """Compressed, projected audio tokens of every audio: ``values [N, S, hidden]``, ``lengths [N]``.

    ``input_features [N, mel, M]`` may be longer than one window (``M`` a multiple of 3000 as
    :func:`patch_processor` with ``long_audio=True`` pads it); each window is encoded and
    compressed on its own and the tokens are joined per audio.
    """
    inner = inner_model(model)
    patch = applied_patch(inner, "apply_compression(model, compressor) first")
    if feature_attention_mask is None:
        raise ValueError("feature_attention_mask is required: it gives each audio's length")
    tower = inner.audio_tower
    input_features = input_features.to(tower.device)
    mel_lengths = feature_attention_mask.to(tower.device).sum(-1)

    def encode(windows, window_mel_lengths):
        return _encode_window(inner, patch, windows, window_mel_lengths)

    window = _window_frames(tower)
    # Spans count the compressor's input frames (the tower's 25 Hz output) from the audio's start.
    frames_per_window = int(_pooled_lengths(_frame_lengths(torch.tensor(window)), patch.replace_avg_pool))
    joined = encode_windowed(encode, input_features, mel_lengths, window, frames_per_window)
    projected = inner.multi_modal_projector(joined.values) * joined.mask()[..., None].to(joined.values.dtype)
    return CompressedAudio(projected, joined.lengths, joined.spans)


def _encode_window(inner: Qwen2AudioModel, patch: _Patch, windows: torch.Tensor,
                   mel_lengths: torch.Tensor) -> CompressedAudio:
    tower = inner.audio_tower
    frame_lengths = _frame_lengths(mel_lengths)
    frames = windows.shape[-1] // tower.conv2.stride[0]
    valid = torch.arange(frames, device=frame_lengths.device)[None, :] < frame_lengths[:, None]
    # The attention mask exactly as Qwen2AudioModel.forward builds it.
    mask = create_bidirectional_mask(config=tower.config, attention_mask=valid.long(),
                                     inputs_embeds=windows.new_zeros(windows.shape[0], frames, 1))
    pooler = tower.avg_pooler
    scope = pooler.using(frame_lengths) if isinstance(pooler, LengthAwareAvgPool) else contextlib.nullcontext()
    with scope:
        hidden = tower(windows, attention_mask=mask).last_hidden_state
    out = patch.compressor(hidden, _pooled_lengths(frame_lengths, patch.replace_avg_pool))
    if out.values.shape[-1] != hidden.shape[-1]:
        raise ValueError(f"compressor {patch.compressor.config()} changed the feature size from {hidden.shape[-1]} "
                         f"to {out.values.shape[-1]}; the projector expects {hidden.shape[-1]}")
    return out


# ---------------------------------------------------------------------------------------------
# Placeholders

def _check_placeholders(inner: Qwen2AudioModel, input_ids: torch.Tensor, audio: CompressedAudio) -> None:
    """Raise a ValueError that names the disagreeing audio, instead of transformers' opaque one."""
    check_placeholder_runs(input_ids, inner.config.audio_token_id, audio.lengths.tolist(), "<|AUDIO|>",
                           lambda *args: _mismatch_message(inner, *args))


def _mismatch_message(inner, index, sample, placeholders, count) -> str:
    patch = _patch_of(inner)
    message = (f"audio {index} (in sample {sample}) has {placeholders} <|AUDIO|> placeholders but compressor "
               f"{patch.compressor.config()} (replace_avg_pool={patch.replace_avg_pool}) produced {count} tokens. ")
    if not patch.compressor.static_length:
        return message + ("A content-adaptive compressor's counts are only known after the encoder runs: "
                          "use lalm_fast.integrations.expand_inputs(model, batch) or build_inputs_embeds(model, ...).")
    return message + ("Expand placeholders with the same compressor: patch_processor(processor, compressor, "
                      "replace_avg_pool=...) (an unpatched processor counts at the native 25 Hz rate), "
                      "or use build_inputs_embeds(model, ...).")


def _merge_audio(inner: Qwen2AudioModel, input_ids: torch.Tensor, inputs_embeds: torch.Tensor,
                 audio: CompressedAudio) -> torch.Tensor:
    _check_placeholders(inner, input_ids, audio)
    placeholders = (input_ids == inner.config.audio_token_id).to(inputs_embeds.device)[..., None]
    tokens = audio.values[audio.mask().bool()].to(inputs_embeds.device, inputs_embeds.dtype)
    return inputs_embeds.masked_scatter(placeholders, tokens)


def build_inputs_embeds(model: nn.Module, input_ids: torch.Tensor, input_features: torch.Tensor,
                        feature_attention_mask: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                        labels: Optional[torch.Tensor] = None, padding_side: Optional[str] = None) -> dict:
    """The ``inputs_embeds`` path, for any compressor (content-adaptive ones included).

    Runs the encoder and compressor once, expands each audio's placeholder run (one token or
    the processor's native count) to its compressed length, and returns ``inputs_embeds``,
    ``attention_mask`` and (when given) aligned ``labels``, ready for ``model(**out)`` or
    ``model.generate(**out)``.
    """
    inner = inner_model(model)
    audio = get_audio_features(inner, input_features, feature_attention_mask)
    pad_token_id = inner.pad_token_id if inner.pad_token_id >= 0 else 0
    expanded = expand_audio_placeholders(input_ids, audio.lengths, inner.config.audio_token_id, pad_token_id,
                                         attention_mask, labels, padding_side)
    embeds = _merge_audio(inner, expanded["input_ids"], inner.get_input_embeddings()(expanded.pop("input_ids")), audio)
    return {"inputs_embeds": embeds, **expanded}


# ---------------------------------------------------------------------------------------------
# Processor patch

def patch_processor(processor, compressor: CompressorSpec, *, replace_avg_pool: bool = False,
                    long_audio: bool = False):
    """Make a ``Qwen2AudioProcessor`` expand ``<|AUDIO|>`` to the compressed token count.

    Fixed-rate compressors get their count by formula (:func:`audio_token_counts`). A
    content-adaptive compressor gets one placeholder per audio, which
    :func:`build_inputs_embeds` expands after the encoder ran. ``long_audio=True`` pads
    waveforms to whole 30 s windows instead of truncating them at 30 s. Undo with
    :func:`revert_processor`.
    """
    if _PROCESSOR_ATTR in processor.__dict__:
        raise ValueError("processor is already patched; call revert_processor(processor) first")
    compressor = build_compressor(compressor)
    original = processor._process_audio

    def process_audio(audio, **kwargs):
        if long_audio:
            audio = processor.feature_extractor.fetch_audio(audio)
            longest = max(len(a) for a in (audio if isinstance(audio, (list, tuple)) else [audio]))
            kwargs.update(max_length=padded_samples(longest, processor.feature_extractor.n_samples), truncation=False)
        audio_inputs, _ = original(audio, **kwargs)
        audio_inputs["num_audio_tokens"] = _processor_counts(processor, audio_inputs, compressor, replace_avg_pool)
        replacements = [processor.replace_audio_token(audio_inputs, audio_idx=i)
                        for i in range(len(audio_inputs["num_audio_tokens"]))]
        return audio_inputs, replacements

    processor.__dict__[_PROCESSOR_ATTR] = compressor
    processor._process_audio = process_audio
    return processor


def _processor_counts(processor, audio_inputs, compressor, replace_avg_pool) -> list[int]:
    mel_lengths = torch.as_tensor(audio_inputs["feature_attention_mask"]).sum(-1)
    if not compressor.static_length:
        return [1] * len(mel_lengths)
    window = processor.feature_extractor.nb_max_frames
    return audio_token_counts(mel_lengths, compressor, replace_avg_pool=replace_avg_pool, window=window).tolist()


def revert_processor(processor):
    """Undo :func:`patch_processor`."""
    if _PROCESSOR_ATTR not in processor.__dict__:
        raise ValueError("processor is not patched")
    del processor.__dict__["_process_audio"]
    del processor.__dict__[_PROCESSOR_ATTR]
    return processor
