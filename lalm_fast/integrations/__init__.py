"""Compression inside native Hugging Face audio LLMs.

- :mod:`lalm_fast.integrations.qwen2_audio`: transformers' ``Qwen2AudioForConditionalGeneration``
  (patch/revert, placeholder counts, the ``inputs_embeds`` path, long audio);
- :mod:`lalm_fast.integrations.whisper`: transformers' ``WhisperForConditionalGeneration``
  (patch/revert, the encoder output compressed once per ``generate``, per-sample
  cross-attention masks, a decoder-only LoRA preset);
- :mod:`lalm_fast.integrations.lora`: peft LoRA scoped to the language model, adapters saved
  together with the compressor config;
- :mod:`lalm_fast.integrations.long_audio`: model-agnostic 30 s windowing (torch only), a re-export
  of :mod:`lalm_fast.long_audio`.

Submodules are not imported here: ``qwen2_audio``, ``whisper`` and ``lora`` need transformers / peft, which
the rest of lalm_fast does not.
"""
