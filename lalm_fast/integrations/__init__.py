"""Compression inside native Hugging Face audio LLMs.

One generic entry point for every supported model type (:func:`supported_models`), backed by a
registry of small per-model adapters (:mod:`lalm_fast.integrations.adapters`)::

    from lalm_fast.integrations import apply_compression, patch_processor, revert, expand_inputs

Model-specific modules:

- :mod:`lalm_fast.integrations.qwen2_audio`: transformers' ``Qwen2AudioForConditionalGeneration``
  (patch/revert, placeholder counts, the ``inputs_embeds`` path, long audio);
- :mod:`lalm_fast.integrations.whisper`: transformers' ``WhisperForConditionalGeneration``
  (patch/revert, the encoder output compressed once per ``generate``, per-sample
  cross-attention masks, a decoder-only LoRA preset);
- :mod:`lalm_fast.integrations.lora`: peft LoRA scoped to the language model, adapters saved
  together with the compressor config;
- :mod:`lalm_fast.integrations.native_lm`: :class:`NativeAudioLM`, a native model compressed and with LoRA
  on its language model, behind the interface ``lalm_fast.training`` (``model.native``) and
  ``lalm_fast.evaluate`` use;
- :mod:`lalm_fast.integrations.serving`: ``audio_embeds``, each audio's compressed embeddings in the
  language model's hidden space, for serving engines that take precomputed audio embeddings;
- :mod:`lalm_fast.integrations.long_audio`: model-agnostic 30 s windowing (torch only), a re-export
  of :mod:`lalm_fast.long_audio`.

Submodules are not imported here: ``qwen2_audio``, ``whisper``, ``lora``, ``native_lm`` and ``serving`` need
transformers / peft, which the rest of lalm_fast does not. The generic functions below import nothing from
transformers: adapters find their modules by class name.
"""

from lalm_fast.integrations.native import (adapter_for, apply_compression, compression, expand_inputs,  # noqa: F401
                                           is_compressed, patch_processor, revert, revert_processor,
                                           supported_models)
