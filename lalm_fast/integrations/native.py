"""One entry point for every supported native Hugging Face audio LLM.

::

    from lalm_fast.integrations import apply_compression, patch_processor, revert

    apply_compression(model, "uniform:3")        # any model in supported_models()
    patch_processor(processor, "uniform:3")      # placeholder runs of n become ceil(n / 3)
    model.generate(**processor(text=..., audio=..., return_tensors="pt"))
    revert(model)

The model is found by its ``config.model_type`` (a ``PeftModel`` or a wrapper is searched
inside), the processor by its class; each maps to one adapter in
:mod:`lalm_fast.integrations.adapters`. Content-adaptive compressors: the patched processor
writes one placeholder per audio and :func:`expand_inputs` expands it after the encoder ran.
"""

from __future__ import annotations

import contextlib
from typing import Optional, Union

from torch import nn

from lalm_fast.nn import AudioCompressor, build_compressor

__all__ = ["apply_compression", "revert", "compression", "is_compressed", "patch_processor", "revert_processor",
           "expand_inputs", "supported_models", "adapter_for"]

CompressorSpec = Union[str, dict, AudioCompressor]


def _registry():
    from lalm_fast.integrations.adapters import REGISTRY   # imported here: adapters import this package's helpers
    return REGISTRY


def supported_models() -> list[str]:
    """The ``config.model_type`` strings :func:`apply_compression` accepts."""
    return sorted(_registry())


def _unsupported(what: str) -> ValueError:
    return ValueError(f"lalm_fast.integrations does not support {what}; supported model types: "
                      f"{', '.join(supported_models())} (docs/hf-integration.md says why others are not)")


def model_type_of(model: nn.Module) -> str:
    """The outermost ``config.model_type`` inside ``model`` (itself, a wrapper or a ``PeftModel``)."""
    for module in model.modules():
        model_type = getattr(getattr(module, "config", None), "model_type", None)
        if isinstance(model_type, str):
            return model_type
    raise _unsupported(f"{type(model).__name__}, which has no transformers config")


def adapter_for(model: nn.Module = None, *, processor=None, model_type: Optional[str] = None):
    """The adapter of ``model`` (by ``config.model_type``), ``processor`` (by class) or ``model_type``."""
    registry = _registry()
    if model_type is None and processor is not None:
        by_class = {cls: a for a in registry.values() for cls in a.processor_classes}
        name = type(processor).__name__
        if name not in by_class:
            raise _unsupported(f"the processor {name}")
        return by_class[name]
    model_type = model_type or model_type_of(model)
    if model_type not in registry:
        raise _unsupported(f"model_type {model_type!r}")
    return registry[model_type]


def apply_compression(model: nn.Module, compressor: CompressorSpec, **options) -> nn.Module:
    """Compress ``model``'s audio tokens with ``compressor`` (a spec string, config dict or layer),
    after the model's own reduction, before the language model. Patches the instance in place;
    :func:`revert` undoes it. ``options`` go to adapters that take any (Qwen2-Audio's
    ``replace_avg_pool``)."""
    adapter = adapter_for(model)
    adapter.apply(model, build_compressor(compressor), **options)
    return model


def revert(model: nn.Module) -> nn.Module:
    """Undo :func:`apply_compression` exactly."""
    adapter_for(model).revert(model)
    return model


def is_compressed(model: nn.Module) -> bool:
    return adapter_for(model).is_compressed(model)


@contextlib.contextmanager
def compression(model: nn.Module, compressor: CompressorSpec, **options):
    """``with compression(model, "uniform:3"): ...`` applies compression and reverts it on exit."""
    apply_compression(model, compressor, **options)
    try:
        yield model
    finally:
        revert(model)


def patch_processor(processor, compressor: CompressorSpec, *, model_type: Optional[str] = None, **options):
    """Make ``processor`` write the compressed placeholder count of every audio: ``output_lengths(n)``
    for a native count ``n`` (fixed-rate compressors), one placeholder (content-adaptive ones,
    then :func:`expand_inputs`). Undo with :func:`revert_processor`."""
    adapter = adapter_for(processor=processor, model_type=model_type)
    return adapter.patch_processor(processor, build_compressor(compressor), **options)


def revert_processor(processor, *, model_type: Optional[str] = None):
    return adapter_for(processor=processor, model_type=model_type).revert_processor(processor)


def expand_inputs(model: nn.Module, batch: dict, labels=None, padding_side: Optional[str] = None) -> dict:
    """``batch`` (a processor output) with each audio's placeholder run expanded to its compressed
    count, for any compressor: runs the encoder once to count, then re-pads ``input_ids``,
    ``attention_mask`` and ``labels`` (kept aligned, audio positions -100) on ``padding_side``
    (default: the batch's own). The audio inputs are kept, so ``model(**out)`` and
    ``model.generate(**out)`` run the model's own path (positions from ``input_ids`` included)."""
    return adapter_for(model).expand_inputs(model, dict(batch), labels, padding_side)
