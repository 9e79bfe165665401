"""The registry: one small adapter per native audio LLM type (transformers 5.23).

Each adapter says where the compressor hooks in and how the model counts its own audio
tokens; the shared machinery is :class:`lalm_fast.integrations._hook.Adapter`. Counts below
mirror the model's own code (the line that builds its valid-token mask), so a change in
transformers shows up as a clear RuntimeError in ``Adapter.split``, not as wrong tokens.
"""

from __future__ import annotations

import types

import torch
from torch import nn

from lalm_fast.integrations._hook import _PROCESSOR_ATTR, Adapter, _check, _no_options
from lalm_fast.integrations._patching import applied_patch
from lalm_fast.integrations._placeholders import expand_audio_placeholders
from lalm_fast.nn import AudioCompressor


def _mask_lengths(args: dict, name: str) -> torch.Tensor:
    return args[name].sum(-1).long()


class GlmAsr(Adapter):
    """Whisper-style encoder, 4 frames merged into one (12.5 Hz), MLP projector."""
    model_types = ("glmasr",)
    inner_class = "GlmAsrModel"
    processor_classes = ("GlmAsrProcessor",)
    windowed = True

    def native_lengths(self, inner, args):
        lengths = _mask_lengths(args, "input_features_mask")
        for padding, kernel, stride in [(1, 3, 1), (1, 3, 2)]:   # GlmAsrModel.get_audio_features
            lengths = (lengths + 2 * padding - (kernel - 1) - 1) // stride + 1
        return (lengths - 4) // 4 + 1


class TowerLengths(Adapter):
    """Models whose get_audio_features keeps ``audio_tower._get_feat_extract_output_lengths(mel)[1]`` tokens."""

    def native_lengths(self, inner, args):
        _, lengths = inner.audio_tower._get_feat_extract_output_lengths(_mask_lengths(args, "input_features_mask"))
        return lengths


class AudioFlamingo3(TowerLengths):
    """Whisper encoder + AvgPool 2 (25 Hz), MLP projector; 30 s windows."""
    model_types = ("audioflamingo3",)
    inner_class = "AudioFlamingo3Model"
    processor_classes = ("AudioFlamingo3Processor",)
    windowed = True


class MusicFlamingo(TowerLengths):
    """AudioFlamingo3 plus a rotary time embedding, applied before the projector, whose timestamps
    ``get_audio_features`` rebuilds from the placeholder runs in ``input_ids``: the original is
    given ``input_ids`` with each run at its native length, so every frame keeps its own time,
    and the tokens are compressed after the time embedding."""
    model_types = ("musicflamingo",)
    inner_class = "MusicFlamingoModel"
    processor_classes = ("MusicFlamingoProcessor",)
    audio_inputs = ("input_features", "input_features_mask", "input_ids")
    windowed = True
    rewrites = "placeholder count; input_ids given to get_audio_features re-expanded to native runs"

    def native_args(self, inner, args):
        native = self.native_lengths(inner, args)
        ids = args["input_ids"]
        expanded = expand_audio_placeholders(ids, native, self.token_id(inner), -1,
                                             padding_side="right", token_name="audio")["input_ids"]
        return {**args, "input_ids": expanded}


class Nemotron35Transcribe(TowerLengths):
    """Nemotron 3.5 Transcribe (``nemo_speechlm``): FastConformer, 8 mel frames per token (12.5 Hz), speaker
    activities from the diarization model added, linear projector; ``ceil(mel / 8)`` tokens per audio."""
    model_types = ("nemo_speechlm",)
    inner_class = "Nemotron3_5TranscribeModel"
    processor_classes = ("Nemotron3_5TranscribeProcessor",)


class NemotronHOmni(Adapter):
    """Nemotron 3 Nano Omni: Parakeet encoder (8x conv subsampling, 12.5 Hz) and an MLP projector, on the
    top-level model itself (no inner model). Its processor has its own ``_process_audio(audio, audio_kwargs)``,
    returning ``(features, mask, counts)``: the patch rewrites those counts, which ``replace_audio_token`` writes
    between ``<so_start>`` and ``<so_end>``."""
    model_types = ("nemotron_h_omni",)
    inner_class = "NemotronH_Omni_Reasoning_V3"
    processor_classes = ("NemotronH_Omni_Reasoning_V3Processor",)

    def native_lengths(self, inner, args):
        # as NemotronH_Omni_Reasoning_V3.get_audio_features
        return inner.audio_tower._get_subsampling_output_length(_mask_lengths(args, "input_features_mask") + 1)

    def patch_processor(self, processor, compressor, **options):
        _no_options(self, options)
        if _PROCESSOR_ATTR in processor.__dict__:
            raise ValueError("processor is already patched; call revert_processor(processor) first")
        original = processor._process_audio

        def process_audio(audio, audio_kwargs):
            features, mask, counts = original(audio, audio_kwargs)
            if not compressor.static_length:
                return features, mask, [1] * len(counts)
            return features, mask, compressor.output_lengths(torch.tensor(counts)).tolist()

        processor.__dict__[_PROCESSOR_ATTR] = compressor
        processor._process_audio = process_audio
        return processor


class Qwen3Asr(Adapter):
    """Three stride-2 convs per 100-frame chunk (13 tokens), chunks packed into one flat sequence."""
    model_types = ("qwen3_asr",)
    inner_class = "Qwen3ASRModel"
    processor_classes = ("Qwen3ASRProcessor",)

    def native_lengths(self, inner, args):
        mask = args["input_features_mask"]
        tower = inner.audio_tower
        chunk = tower.n_window * 2
        per_chunk = mask.view(mask.shape[0], -1, chunk).sum(-1).long()       # as Qwen3ASREncoder.forward
        return tower._post_cnn_length(per_chunk).sum(-1)


class FunAsrNano(Adapter):
    """Low-frame-rate stacking in the feature extractor, no reduction in the model: one token per LFR frame."""
    model_types = ("fun_asr_nano",)
    inner_class = "FunAsrNanoModel"
    processor_classes = ("FunAsrNanoProcessor",)

    def native_lengths(self, inner, args):
        return _mask_lengths(args, "input_features_mask")


class MuseSpark(Adapter):
    """Waveform patch convs, ``samples_per_token`` samples (1920 at 24 kHz: 12.5 Hz) per token, no projector:
    the tower's output goes straight onto the text embeddings (after the embedding norm)."""
    model_types = ("muse_spark",)
    inner_class = "MuseSparkModel"
    processor_classes = ("MuseSparkProcessor",)
    audio_inputs = ("input_values", "input_values_mask")

    def native_lengths(self, inner, args):
        per_token = inner.config.audio_config.samples_per_token
        values, mask = args["input_values"], args.get("input_values_mask")
        if mask is None:        # MuseSparkModel.get_audio_features keeps every token of every row
            return torch.full((values.shape[0],), values.shape[-1] // per_token, dtype=torch.long)
        return (mask.sum(-1).long() + per_token - 1) // per_token


class VibeVoiceAsr(Adapter):
    """Acoustic + semantic sigma-VAE tokenizers, ``hop_length`` samples (3200 at 24 kHz: 7.5 Hz) per token, joined
    by the projector. ``forward`` and ``get_audio_features`` default to ``sample=True`` (noise on the acoustic
    latents, so logits differ per call): pass ``sample=False`` for deterministic outputs; content-adaptive
    compressors need it, their counts depend on the tokens and are taken in a separate pass."""
    model_types = ("vibevoice_asr",)
    inner_class = "VibeVoiceAsrModel"
    processor_classes = ("VibeVoiceAsrProcessor",)
    audio_inputs = ("input_values", "padding_mask", "sample")
    rewrites = "placeholder count; `sample=False` needed for content-adaptive compressors"

    def native_lengths(self, inner, args):
        hop = inner.config.acoustic_tokenizer_encoder_config.hop_length
        values, mask = args["input_values"], args.get("padding_mask")
        if mask is None:        # VibeVoiceAsrModel.get_audio_features keeps every token of every row
            return torch.full((values.shape[0],), -(-values.shape[-1] // hop), dtype=torch.long)
        return (mask.sum(-1).long() + hop - 1) // hop

    def expand_inputs(self, model, batch, labels=None, padding_side=None):
        if not self.compressor_of(model).static_length and batch.get("sample", True) is not False:
            raise ValueError("vibevoice_asr samples noise on its acoustic latents unless sample=False, so a "
                             "content-adaptive compressor would count different tokens in expand_inputs and in the "
                             "forward: put sample=False in the batch (and pass it to the model)")
        return super().expand_inputs(model, batch, labels, padding_side)


class Gemma4(Adapter):
    """Conformer after two stride-2 convs (25 Hz, at most 750 tokens), embedder; ``get_audio_features`` returns
    padded tokens ``[N, T, D]`` with their ``attention_mask`` and ``forward`` keeps the masked ones, so both are
    rewritten: no count formula needed. The processor's ``mm_token_type_ids`` (3 on audio) move with
    ``input_ids`` in :meth:`expand_inputs`."""
    model_types = ("gemma4",)
    inner_class = "Gemma4Model"
    processor_classes = ("Gemma4Processor",)
    token_type_inputs = ("mm_token_type_ids",)
    rewrites = "placeholder count; the encoder's token `attention_mask`; `mm_token_type_ids` (expand_inputs)"

    def split(self, inner, output, args):
        mask = output.attention_mask.bool()
        lengths = mask.sum(-1)
        prefix = torch.arange(mask.shape[1], device=mask.device)[None, :] < lengths[:, None]
        if not torch.equal(mask, prefix):
            raise RuntimeError("Gemma4Model.get_audio_features returned an attention_mask that is not valid tokens "
                               "then padding; lalm_fast does not know this model version")
        return output.pooler_output, lengths.long()

    def join(self, output, values, lengths, mask):
        output.pooler_output = values
        output.attention_mask = mask
        return output


class Dots3Note(Adapter):
    """Three stride-2 convs (12.5 Hz) and an adapter MLP inside the tower, tokens flat over the processor's
    60 s chunks: one encoder row per chunk, ``ceil(samples / samples_per_token)`` tokens each."""
    model_types = ("dots3_note",)
    inner_class = "Dots3NoteModel"
    processor_classes = ("Dots3NoteProcessor",)
    audio_inputs = ("input_features", "chunk_sample_lengths")
    windowed = True

    def native_lengths(self, inner, args):
        per_token = inner.config.audio_config.samples_per_token      # as Dots3NoteAudioConvStem.forward
        return (args["chunk_sample_lengths"].long() + per_token - 1) // per_token


class GraniteSpeech(Adapter):
    """Conformer (~50 Hz) and a windowed Q-Former (15 frames -> 3 queries, ~10 Hz). ``get_audio_features``
    returns padded windows for every audio; ``forward`` keeps the valid ones with the processor's token-level
    ``input_features_mask`` inside ``get_merged_audio_embeddings``, so that method is the hook: it gets each audio's
    tokens compressed and the mask rewritten to match."""
    model_types = ("granite_speech",)
    inner_class = "GraniteSpeechModel"
    processor_classes = ("GraniteSpeechProcessor",)
    hook = "get_merged_audio_embeddings"
    rewrites = "placeholder count; the token-level `input_features_mask` (hook: `get_merged_audio_embeddings`)"

    def apply(self, model, compressor, **options):
        super().apply(model, compressor, **options)
        inner = self.inner(model)
        setattr(inner, self.hook, types.MethodType(_granite_merged, inner))

    def split_features(self, features, mask):
        """Padded projector tokens ``[N, T, D]`` and the valid count of each audio (the processor's mask)."""
        if mask is None:
            return features, torch.full((features.shape[0],), features.shape[1], dtype=torch.long,
                                        device=features.device)
        mask = mask.to(features.device).bool()
        lengths = mask.sum(-1).long()
        if not torch.equal(mask, torch.arange(mask.shape[1], device=mask.device)[None, :] < lengths[:, None]):
            raise ValueError("input_features_mask must mark valid tokens then padding, as "
                             "GraniteSpeechFeatureExtractor writes it")
        return features[:, :mask.shape[1]], lengths

    @torch.no_grad()
    def compressed_tokens(self, model, batch):
        inner = self.inner(model)
        patch = applied_patch(inner, "apply_compression(model, compressor) first")
        features = inner.get_audio_features(batch["input_features"].to(inner.dtype), return_dict=True).pooler_output
        padded, native = self.split_features(features, batch.get("input_features_mask"))
        return patch.compressor(padded, native)


class GraniteSpeechPlus(GraniteSpeech):
    """Granite Speech Plus: the same interface (its encoder may concatenate hidden layers); the processor is
    ``GraniteSpeechProcessor``, patched by the ``granite_speech`` adapter."""
    model_types = ("granite_speech_plus",)
    inner_class = "GraniteSpeechPlusModel"
    processor_classes = ()


def _granite_merged(self, input_ids, audio_features, input_features_mask=None):
    """``GraniteSpeechModel.get_merged_audio_embeddings`` with each audio's tokens compressed (bound on the model)."""
    patch = applied_patch(self)
    padded, native = patch.adapter.split_features(audio_features, input_features_mask)
    out = patch.compressor(padded, native)
    _check(self, input_ids, out.lengths, native)
    return patch.original_features(input_ids, out.values, out.mask().bool())


class Qwen2Audio(Adapter):
    """No hook in the model: :mod:`lalm_fast.integrations.qwen2_audio` rebinds ``forward`` instead."""
    model_types = ("qwen2_audio",)
    inner_class = "Qwen2AudioModel"
    processor_classes = ("Qwen2AudioProcessor",)
    hook = "forward (no get_audio_features)"
    rewrites = "placeholder count; optional length-aware AvgPool, 30 s windows"

    def _module(self):
        from lalm_fast.integrations import qwen2_audio   # imports transformers
        return qwen2_audio

    def apply(self, model: nn.Module, compressor: AudioCompressor, **options) -> None:
        self._module().apply_compression(model, compressor, **options)

    def revert(self, model: nn.Module) -> None:
        self._module().revert(model)

    def is_compressed(self, model: nn.Module) -> bool:
        return self._module().is_compressed(model)

    def compressor_of(self, model):
        return self._module().inner_model(model).__dict__["_lalm_fast_compression"].compressor

    @torch.no_grad()
    def compressed_tokens(self, model, batch):
        """Projected tokens (Qwen2-Audio compresses before its projector)."""
        return self._module().get_audio_features(model, batch["input_features"], batch["feature_attention_mask"])

    def expand_inputs(self, model, batch, labels=None, padding_side=None):
        qa = self._module()
        inner = qa.inner_model(model)
        counts = self.audio_lengths(model, batch)
        pad = inner.pad_token_id if inner.pad_token_id >= 0 else 0
        expanded = qa.expand_audio_placeholders(batch["input_ids"], counts, inner.config.audio_token_id, pad,
                                                batch.get("attention_mask"),
                                                batch.get("labels") if labels is None else labels, padding_side)
        rest = {k: v for k, v in batch.items() if k not in ("input_ids", "attention_mask", "labels")}
        return {**rest, **expanded}

    def patch_processor(self, processor, compressor, **options):
        return self._module().patch_processor(processor, compressor, **options)

    def revert_processor(self, processor):
        return self._module().revert_processor(processor)


ADAPTERS: tuple[Adapter, ...] = (Qwen2Audio(), GlmAsr(), AudioFlamingo3(), Qwen3Asr(), FunAsrNano(), MusicFlamingo(),
                                MuseSpark(), VibeVoiceAsr(), Gemma4(), Dots3Note(),
                                Nemotron35Transcribe(), NemotronHOmni(), GraniteSpeech(),
                                GraniteSpeechPlus())
REGISTRY: dict[str, Adapter] = {model_type: adapter for adapter in ADAPTERS for model_type in adapter.model_types}
