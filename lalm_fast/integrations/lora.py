"""peft LoRA presets for audio LLMs: the language model only, never the audio encoder.

Whisper-style encoders name their attention projections ``q_proj`` / ``k_proj`` / ``v_proj`` /
``out_proj`` like the LLM does, so a plain ``target_modules=["q_proj", "v_proj"]`` also puts
LoRA into the audio tower. :func:`language_model_lora_config` scopes the targets with a regex
on the module path instead. Adapters are saved with the compressor they were trained with::

    peft_model = get_peft_model(model, language_model_lora_config())
    save_adapter(peft_model, "run/adapter", compressor, replace_avg_pool=False)
    peft_model, compressor, options = load_adapter(base_model, "run/adapter")
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Sequence, Union

from peft import LoraConfig, PeftModel
from torch import nn

from lalm_fast.models.lora_targets import LLM_ALL_LINEAR, LLM_ATTENTION
from lalm_fast.nn import AudioCompressor, build_compressor

__all__ = ["LLM_ATTENTION", "LLM_ALL_LINEAR", "language_model_lora_config", "scoped_lora_config", "lora_module_names",
           "save_adapter", "load_adapter", "COMPRESSOR_FILE"]

COMPRESSOR_FILE = "lalm_fast_compressor.json"


def language_model_lora_config(r: int = 16, lora_alpha: int = 32, lora_dropout: float = 0.05,
                               target_modules: Sequence[str] = LLM_ATTENTION, scope: str = "language_model",
                               **kwargs: Any) -> LoraConfig:
    """A causal-LM ``LoraConfig`` whose targets lie under the ``scope`` submodule only.

    ``scope`` is the attribute name of the LLM inside the model (``language_model`` in
    transformers' Qwen2-Audio, Voxtral, Granite-speech, ...). Extra ``kwargs`` go to LoraConfig.
    """
    return scoped_lora_config(rf"{re.escape(scope)}\.(?:.*\.)?", target_modules, r=r, lora_alpha=lora_alpha,
                              lora_dropout=lora_dropout, task_type=kwargs.pop("task_type", "CAUSAL_LM"), **kwargs)


def scoped_lora_config(scope: str, target_modules: Sequence[str], **kwargs: Any) -> LoraConfig:
    """A ``LoraConfig`` on the modules named ``target_modules`` whose dotted path ends in
    ``<scope><name>`` (``scope`` a regex, matched after any prefix). Extra ``kwargs`` go to LoraConfig."""
    names = "|".join(re.escape(name) for name in target_modules)
    # peft full-matches a string target against each module's dotted path.
    return LoraConfig(target_modules=rf"(?:.*\.)?{scope}(?:{names})", **kwargs)


def lora_module_names(model: nn.Module) -> list[str]:
    """Dotted paths of the modules that carry LoRA weights (to check where adapters landed)."""
    return [name for name, module in model.named_modules() if hasattr(module, "lora_A") and len(module.lora_A)]


def save_adapter(model: PeftModel, directory: Union[str, os.PathLike], compressor: Union[str, dict, AudioCompressor],
                 **options: Any) -> None:
    """Save the peft adapter and ``compressor.config()`` (plus integration ``options`` such as
    ``replace_avg_pool``) as :data:`COMPRESSOR_FILE` in ``directory``.

    Everything is first written to a temporary folder beside ``directory``, then each file is
    moved in with ``os.replace``, so no reader ever sees a half-written file. The compressor
    file goes last: a crash in between leaves the previous compressor file, never a torn one.
    """
    from lalm_fast.data.files import atomic_files  # imported here: lalm_fast.data loads soundfile and scipy

    record = {"compressor": build_compressor(compressor).config(), "options": options}
    with atomic_files(directory, last=COMPRESSOR_FILE) as staging:
        model.save_pretrained(os.fspath(staging))
        with open(staging / COMPRESSOR_FILE, "w") as handle:
            json.dump(record, handle, indent=2, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())


def load_adapter(model: nn.Module, directory: Union[str, os.PathLike], is_trainable: bool = False,
                 ) -> tuple[PeftModel, AudioCompressor, dict[str, Any]]:
    """Load an adapter saved by :func:`save_adapter` onto ``model``.

    Returns the ``PeftModel``, the compressor rebuilt with ``build_compressor`` and the saved
    integration options, e.g. ``apply_compression(peft_model, compressor, **options)``.
    """
    path = os.path.join(os.fspath(directory), COMPRESSOR_FILE)
    if not os.path.exists(path):
        raise ValueError(f"{directory} has no {COMPRESSOR_FILE}: it was not saved with lalm_fast save_adapter")
    with open(path) as handle:
        record = json.load(handle)
    compressor = build_compressor(record["compressor"])
    peft_model = PeftModel.from_pretrained(model, os.fspath(directory), is_trainable=is_trainable)
    return peft_model, compressor, record.get("options", {})
