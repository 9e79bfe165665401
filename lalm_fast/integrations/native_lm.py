"""A native Hugging Face audio LLM with compressed audio tokens and LoRA on its language model, behind the
interface :mod:`lalm_fast.training` and :mod:`lalm_fast.evaluate` use for :class:`~lalm_fast.models.AudioLM`::

    model = NativeAudioLM.from_folder("Qwen2-Audio-7B-Instruct", "uniform:3", lora={"r": 16})
    out = model(waveforms, sample_lengths, tasks="transcribe", targets=["hello world"])
    out.loss.backward()                                   # only the LoRA weights train
    model.generate(waveforms, sample_lengths)             # -> ["hello world"]
    model.save_pretrained("run/final")                    # LoRA adapter + compressor + prompts
    model = NativeAudioLM.from_pretrained("run/final")    # the base comes from the folder recorded there

Each sample is the model's own prompt (its chat template, when the processor or tokenizer has one, around a
user turn holding the model's audio marker and the task's instruction), written by the model's own processor
patched with :func:`lalm_fast.integrations.patch_processor`, so the placeholder count of every audio is the
compressor's; the target's tokens and the end of the turn follow. Labels are the target ids, -100 elsewhere.
The model runs its own audio tower each step (frozen; no feature cache) and
:func:`lalm_fast.integrations.apply_compression` compresses its tokens.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from jinja2 import TemplateError
from peft import PeftModel, get_peft_model
from torch import nn

import lalm_fast.integrations as li
from lalm_fast.integrations._hook import _PROCESSOR_ATTR
from lalm_fast.integrations.native import model_type_of
from lalm_fast.integrations._placeholders import IGNORE_INDEX
from lalm_fast.integrations.lora import language_model_lora_config, load_adapter, lora_module_names, save_adapter
from lalm_fast.models.lora_targets import LLM_ATTENTION
from lalm_fast.models.prompts import (AUDIO_PLACEHOLDER, DEFAULT_PROMPTS, as_list, check_templates, render_prompt,
                                      split_prompt)
from lalm_fast.nn import AudioCompressor, build_compressor

__all__ = ["CONFIG_FILE", "NativeAudioLM", "NativeInputs", "NativeOutput", "SYSTEM_PROMPT", "TRAINABLE_MODEL_TYPES",
           "audio_marker", "load_native", "merge_builtin_adapter", "sampling_rate_of"]

CONFIG_FILE = "native_lm_config.json"
SYSTEM_PROMPT = "system"      # key of ``prompts`` that holds a system message (not a task)

# Model types whose prompt writes begin / end tokens around the placeholder (the processor expands only the
# placeholder itself); the others write the placeholder alone.
_WRAPPED = ("qwen2_audio", "qwen3_asr")
# Every type here builds its inputs, trains, decodes and reloads in tests/test_native_train.py (tiny random
# configs). The other types in lalm_fast.integrations.supported_models() compress, but training them needs
# more than this class does (docs/training.md says what).
TRAINABLE_MODEL_TYPES = ("audioflamingo3", "fun_asr_nano", "glmasr", "granite_speech", "granite_speech_plus",
                         "muse_spark", "musicflamingo", "nemo_speechlm", "nemotron_h_omni", "qwen2_audio", "qwen3_asr")


def audio_marker(model_type: str, processor) -> str:
    """The prompt text for one audio in a ``model_type`` prompt (e.g. ``<|audio_bos|><|AUDIO|><|audio_eos|>``)."""
    token = getattr(processor, "audio_token", None)
    if not isinstance(token, str):
        raise TypeError(f"{type(processor).__name__} has no audio_token: not an audio LLM processor")
    if model_type in _WRAPPED:
        return f"{processor.audio_bos_token}{token}{processor.audio_eos_token}"
    return token


def _check_trainable(model_type: str) -> None:
    if model_type in TRAINABLE_MODEL_TYPES:
        return
    compresses = model_type in li.supported_models()
    raise ValueError(f"training a native {model_type!r} model is not supported; supported model types: "
                     f"{', '.join(TRAINABLE_MODEL_TYPES)}"
                     + (" (this type compresses with lalm_fast.integrations.apply_compression, but its training "
                        "inputs are not built or tested here; docs/training.md)" if compresses else ""))


def sampling_rate_of(processor) -> int:
    extractor = getattr(processor, "feature_extractor", None) or getattr(processor, "audio_processor", None)
    rate = getattr(extractor, "sampling_rate", None)
    if not isinstance(rate, int):
        raise TypeError(f"{type(processor).__name__} has no feature extractor with a sampling_rate")
    return rate


def load_native(folder: Union[str, os.PathLike], dtype: Union[str, torch.dtype, None] = None):
    """``(model, processor)`` from a local transformers folder: the class its ``config.json`` names in
    ``architectures``, and ``AutoProcessor``. Nothing is downloaded."""
    import transformers
    from transformers import AutoConfig, AutoProcessor

    folder = os.fspath(folder)
    if not os.path.isfile(os.path.join(folder, "config.json")):
        raise ValueError(f"{folder!r} is not a transformers model folder (no config.json)")
    config = AutoConfig.from_pretrained(folder, local_files_only=True)
    _check_trainable(config.model_type)
    names = [name for name in (config.architectures or []) if hasattr(transformers, name)]
    if not names:
        raise ValueError(f"{folder}/config.json names no transformers class in architectures "
                         f"({config.architectures}); save the model with save_pretrained")
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    model = getattr(transformers, names[0]).from_pretrained(folder, local_files_only=True,
                                                            **({"dtype": dtype} if dtype else {}))
    processor = AutoProcessor.from_pretrained(folder, local_files_only=True)
    return model, processor


@dataclass
class NativeInputs:
    """What the native model received (after compression counts were written into ``input_ids``)."""

    input_ids: torch.Tensor       # [B, L]
    attention_mask: torch.Tensor  # [B, L]
    labels: torch.Tensor          # [B, L], target ids, IGNORE_INDEX elsewhere
    audio_lengths: torch.Tensor   # [B] audio tokens of each sample (its placeholder count)


@dataclass
class NativeOutput:
    loss: Optional[torch.Tensor]
    logits: torch.Tensor
    inputs: NativeInputs


class NativeAudioLM(nn.Module):
    """A transformers audio LLM of a type in :data:`TRAINABLE_MODEL_TYPES`, compressed, with LoRA scoped to
    its language model (the audio tower, projector and LM weights stay frozen).

    ``model`` is the ``...ForConditionalGeneration`` (or a ``PeftModel`` of one, which keeps its adapter);
    ``processor`` its processor, patched in place so it writes compressed placeholder counts. ``lora``:
    ``{"r", "alpha", "dropout", "target_modules", "scope"}`` plus any ``LoraConfig`` option. ``prompts``: task
    templates with ``<audio>`` (the defaults: :data:`~lalm_fast.models.prompts.DEFAULT_PROMPTS`) and
    optionally ``"system"``, a system message for the chat template (Granite's template writes today's date
    into its default system message, which would change the prompts from day to day).
    """

    def __init__(self, model: nn.Module, processor, compressor: Union[str, dict, AudioCompressor],
                 lora: Optional[Mapping[str, Any]] = None, prompts: Optional[Mapping[str, str]] = None,
                 source: Optional[str] = None):
        super().__init__()
        self.model_type = model_type_of(model)
        _check_trainable(self.model_type)
        self.compressor = build_compressor(compressor)
        self.source = source
        self.processor = processor
        self.tokenizer = processor.tokenizer
        if self.tokenizer.eos_token_id is None:
            raise ValueError("the processor's tokenizer has no eos token: targets need one so generation learns "
                             "to stop")
        self.marker = audio_marker(self.model_type, processor)
        self.sampling_rate = sampling_rate_of(processor)
        prompts = dict(prompts or {})
        self.system = prompts.pop(SYSTEM_PROMPT, None)
        self.prompts = {**DEFAULT_PROMPTS, **prompts}
        check_templates(self.prompts, AUDIO_PLACEHOLDER)
        self.chat_template = getattr(processor, "chat_template", None) or self.tokenizer.chat_template
        if self.system and not self.chat_template:
            raise ValueError("prompts.system needs a chat template to put it in, and this processor has none")
        self.end_token_id = self._turn_end()
        self.lora = None
        if isinstance(model, PeftModel):
            if lora is not None:
                raise ValueError("model already has a LoRA adapter; pass lora=None")
        else:
            merge_builtin_adapter(model)
            model.requires_grad_(False)
            if lora is not None:
                self.lora = dict(lora)
                try:
                    model = get_peft_model(model, _lora_config(self.lora))
                except ValueError as exc:   # peft: no module matched the targets
                    raise ValueError(f"LoRA {self.lora} cannot be put on the language model: {exc}") from None
                if not lora_module_names(model):
                    raise ValueError(f"LoRA {self.lora} found no target modules in the language model")
        self.model = model
        if li.is_compressed(model):  # the wrapper owns the compression of its model and processor
            li.revert(model)
        li.apply_compression(model, self.compressor)
        if _PROCESSOR_ATTR in processor.__dict__:
            li.revert_processor(processor)
        li.patch_processor(processor, self.compressor)

    @classmethod
    def from_folder(cls, folder: Union[str, os.PathLike], compressor, lora: Optional[Mapping[str, Any]] = None,
                    prompts: Optional[Mapping[str, str]] = None, dtype=None, seed: int = 0) -> "NativeAudioLM":
        """The base model and processor from ``folder`` (:func:`load_native`); LoRA weights drawn from ``seed``."""
        model, processor = load_native(folder, dtype)
        torch.manual_seed(seed)
        return cls(model, processor, compressor, lora, prompts, source=os.fspath(folder))

    # ----- the language model and its LoRA ------------------------------------------------------------------

    @property
    def has_lora(self) -> bool:
        return isinstance(self.model, PeftModel)

    def _language_model(self) -> nn.Module:
        scope = (self.lora or {}).get("scope", "language_model")
        for name, module in self.model.named_modules():
            if name.split(".")[-1] == scope:
                return module
        raise TypeError(f"{type(self.model).__name__} has no {scope} submodule")

    def train(self, mode: bool = True) -> "NativeAudioLM":
        # The frozen audio tower and projector stay in eval mode (no dropout): only the language model,
        # which carries the LoRA weights, follows ``mode``.
        super().train(mode)
        self.model.eval()
        if mode:
            self._language_model().train()
        return self

    # ----- inputs -------------------------------------------------------------------------------------------

    def prompt_text(self, task="transcribe", prompt: Optional[str] = None) -> str:
        """One sample's prompt text: ``prompt`` (with ``<audio>``) or the task's template, the audio marker in
        place of ``<audio>``, inside the chat template's user turn (when there is one), generation prompt last."""
        text = prompt if prompt is not None else render_prompt(self.prompts, task)
        prefix, suffix = split_prompt(text, AUDIO_PLACEHOLDER)
        content = prefix + self.marker + suffix
        if self.chat_template:
            messages = ([{"role": "system", "content": self.system}] if self.system else []) + \
                       [{"role": "user", "content": content}]
            content = self.tokenizer.apply_chat_template(messages, chat_template=self.chat_template, tokenize=False,
                                                         add_generation_prompt=True)
        found = content.count(self.processor.audio_token)
        if found != 1:
            raise ValueError(f"the rendered prompt holds the audio placeholder {self.processor.audio_token!r} "
                             f"{found} times, not once: {content[:300]!r}")
        return content

    def _turn_end(self) -> int:
        """The token that ends an assistant turn in the chat template (``<|im_end|>`` for Qwen2-Audio-Instruct),
        else the tokenizer's eos: what a target ends with, so the model learns to stop as its template does."""
        eos = self.tokenizer.eos_token_id
        if not self.chat_template:
            return eos
        probe = "lalm fast probe"
        messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": probe}]
        try:
            text = self.tokenizer.apply_chat_template(messages, chat_template=self.chat_template, tokenize=False)
        except (TemplateError, ValueError, TypeError, KeyError):  # a template refusing this conversation: eos
            return eos
        if probe not in text:
            return eos
        tail = self.tokenizer(text[text.rindex(probe) + len(probe):], add_special_tokens=False)["input_ids"]
        special = set(self.tokenizer.all_special_ids) - {self.tokenizer.unk_token_id}
        return tail[0] if tail and tail[0] in special else eos

    def target_ids(self, target: str) -> list[int]:
        """A target's token ids as the model is trained on them: the text's tokens, then :attr:`end_token_id`."""
        return self.tokenizer(target, add_special_tokens=False)["input_ids"] + [self.end_token_id]

    def _device_dtype(self) -> tuple[torch.device, torch.dtype]:
        param = next(self.model.parameters())
        floating = next((p for p in self.model.parameters() if p.is_floating_point() and not p.requires_grad), param)
        return param.device, floating.dtype

    def build_inputs(self, waveforms, sample_lengths=None, tasks="transcribe", prompts=None,
                     targets: Optional[Sequence[str]] = None, padding_side: str = "right") -> dict:
        """The model's keyword arguments for a batch: the processor's audio inputs, ``input_ids`` (prompt, then
        target and its end token) padded on ``padding_side``, ``attention_mask`` and, with ``targets``, ``labels``."""
        audios = _waveform_list(waveforms, sample_lengths)
        batch = len(audios)
        tasks, prompts = as_list(tasks, batch, "tasks"), as_list(prompts, batch, "prompts")
        texts = [self.prompt_text(task, prompt) for task, prompt in zip(tasks, prompts)]
        # Padding for the text only: a top-level padding=True would also pad the audio features to the longest
        # clip instead of the encoder window that Whisper-style towers (AudioFlamingo3, GLM-ASR) require.
        features = dict(self.processor(text=texts, audio=audios, sampling_rate=self.sampling_rate,
                                       return_tensors="pt", text_kwargs={"padding": True}))
        ids, mask = features.pop("input_ids"), features.pop("attention_mask")
        text_inputs = set(self.tokenizer.model_input_names) - {"input_ids", "attention_mask"}
        per_token = [name for name in features if name in text_inputs or "token_type" in name]
        if per_token:
            raise ValueError(f"the {self.model_type} processor returned per-token inputs {per_token}, which "
                             "NativeAudioLM does not extend with the target")
        rows = [row[keep.bool()].tolist() for row, keep in zip(ids, mask)]
        label_rows = [[IGNORE_INDEX] * len(row) for row in rows]
        if targets is not None:
            for row, labels, target in zip(rows, label_rows, as_list(targets, batch, "targets")):
                extra = self.target_ids(target)
                row += extra
                labels += extra
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        out = {**features, "input_ids": _pad(rows, pad, padding_side),
               "attention_mask": _pad([[1] * len(row) for row in rows], 0, padding_side)}
        if targets is not None:
            out["labels"] = _pad(label_rows, IGNORE_INDEX, padding_side)
        device, dtype = self._device_dtype()
        out = {name: _to(value, device, dtype) for name, value in out.items()}
        if not self.compressor.static_length:  # one placeholder per audio until the encoder has run
            out = li.expand_inputs(self.model, out, padding_side=padding_side)
        return out

    def _audio_lengths(self, input_ids: torch.Tensor) -> torch.Tensor:
        token = self.processor.tokenizer.convert_tokens_to_ids(self.processor.audio_token)
        return (input_ids == token).sum(-1)

    # ----- running ------------------------------------------------------------------------------------------

    def forward(self, waveforms, sample_lengths=None, tasks="transcribe", prompts=None,
                targets: Optional[Sequence[str]] = None) -> NativeOutput:
        """Logits, and with ``targets`` the loss over their tokens (the model's own shifted mean).
        ``waveforms``: a padded ``[B, samples]`` tensor with ``sample_lengths``, or a list of 1-D arrays, at
        :attr:`sampling_rate`."""
        batch = self.build_inputs(waveforms, sample_lengths, tasks, prompts, targets)
        out = self.model(**batch)
        labels = batch.get("labels", torch.full_like(batch["input_ids"], IGNORE_INDEX))
        inputs = NativeInputs(batch["input_ids"], batch["attention_mask"], labels,
                              self._audio_lengths(batch["input_ids"]))
        return NativeOutput(out.loss if targets is not None else None, out.logits, inputs)

    @torch.no_grad()
    def generate(self, waveforms, sample_lengths=None, tasks="transcribe", prompts=None, max_new_tokens: int = 64,
                 **generate_kwargs: Any) -> list[str]:
        """Decoded text per sample, greedy unless ``generate_kwargs`` say otherwise."""
        batch = self.build_inputs(waveforms, sample_lengths, tasks, prompts, padding_side="left")
        stop = list(dict.fromkeys([self.end_token_id, self.tokenizer.eos_token_id]))
        options = {"do_sample": False, "pad_token_id": self.tokenizer.pad_token_id, "eos_token_id": stop,
                   **generate_kwargs}
        ids = self.model.generate(**batch, max_new_tokens=max_new_tokens, **options)
        return self.tokenizer.batch_decode(ids[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)

    @torch.no_grad()
    def audio_token_counts(self, waveforms, sample_lengths=None) -> torch.Tensor:
        """Compressed audio tokens per audio (runs the audio tower once)."""
        batch = self.build_inputs(waveforms, sample_lengths)
        if not self.compressor.static_length:
            return self._audio_lengths(batch["input_ids"])
        return li.adapter_for(self.model).audio_lengths(self.model, batch)

    # ----- saving -------------------------------------------------------------------------------------------

    def config(self) -> dict:
        return {"source": self.source, "model_type": self.model_type, "compressor": self.compressor.config(),
                "lora": self.lora, "prompts": {**self.prompts, **({SYSTEM_PROMPT: self.system} if self.system else {})}}

    def save_pretrained(self, directory: Union[str, os.PathLike]) -> None:
        """The LoRA adapter and compressor (:func:`~lalm_fast.integrations.lora.save_adapter`), then
        :data:`CONFIG_FILE` (base folder, prompts). Base weights are not copied."""
        from lalm_fast.data.files import atomic_write  # imported here: lalm_fast.data loads soundfile and scipy

        if not self.has_lora:
            raise ValueError("this NativeAudioLM has no LoRA adapter, so there is nothing trained to save")
        save_adapter(self.model, directory, self.compressor)
        with atomic_write(os.path.join(os.fspath(directory), CONFIG_FILE)) as handle:
            json.dump(self.config(), handle, indent=2, sort_keys=True)

    @classmethod
    def from_pretrained(cls, directory: Union[str, os.PathLike], model: Optional[nn.Module] = None, processor=None,
                        is_trainable: bool = False, dtype=None) -> "NativeAudioLM":
        """Rebuild a saved model: the base from the recorded folder (or ``model`` / ``processor``), the LoRA
        adapter and compressor from ``directory``."""
        path = os.path.join(os.fspath(directory), CONFIG_FILE)
        if not os.path.exists(path):
            raise ValueError(f"{directory} has no {CONFIG_FILE}: it was not saved by NativeAudioLM.save_pretrained")
        with open(path) as handle:
            config = json.load(handle)
        if model is None or processor is None:
            if not config.get("source"):
                raise ValueError(f"{path} names no base model folder; pass model= and processor=")
            loaded_model, loaded_processor = load_native(config["source"], dtype)
            model, processor = model or loaded_model, processor or loaded_processor
        merge_builtin_adapter(model)
        model.requires_grad_(False)
        peft_model, compressor, _ = load_adapter(model, directory, is_trainable=is_trainable)
        native = cls(peft_model, processor, compressor, prompts=config.get("prompts"), source=config.get("source"))
        native.lora = config.get("lora")
        return native


def merge_builtin_adapter(model: nn.Module) -> bool:
    """Merge a LoRA adapter that ``from_pretrained`` loaded into the model itself (Granite Speech ships one and
    enables it whenever audio is present) into the base weights, and drop it, so a new LoRA can be trained on
    top. The model's outputs with audio are unchanged (up to rounding). Returns whether there was one."""
    if not getattr(model, "_hf_peft_config_loaded", False):
        return False
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, module in list(model.named_modules()):
        if isinstance(module, BaseTunerLayer):
            module.merge()
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, child, module.get_base_layer())
    model._hf_peft_config_loaded = False
    model.__dict__.pop("peft_config", None)
    return True


def _lora_config(options: Mapping[str, Any]):
    options = dict(options)
    unknown_alias = {"lora_alpha", "lora_dropout"}.intersection(options)
    if unknown_alias:
        raise ValueError(f"model.lora takes 'alpha' and 'dropout' (as AudioLM.add_lora), not {sorted(unknown_alias)}")
    try:
        return language_model_lora_config(r=options.pop("r", 16), lora_alpha=options.pop("alpha", 32),
                                          lora_dropout=options.pop("dropout", 0.05),
                                          target_modules=options.pop("target_modules", LLM_ATTENTION),
                                          scope=options.pop("scope", "language_model"), **options)
    except TypeError as exc:
        raise ValueError(f"model.lora has an option LoraConfig does not take ({exc})") from None


def _waveform_list(waveforms, sample_lengths) -> list[np.ndarray]:
    """1-D float32 arrays from a padded ``[B, S]`` tensor / array with ``sample_lengths``, or a list."""
    if torch.is_tensor(waveforms) or isinstance(waveforms, np.ndarray):
        if waveforms.ndim != 2:
            raise ValueError(f"waveforms must be [batch, samples] (or a list of 1-D arrays), got shape "
                             f"{tuple(waveforms.shape)}")
        rows = [np.asarray(row.detach().cpu() if torch.is_tensor(row) else row, dtype=np.float32) for row in waveforms]
    else:
        rows = [np.asarray(w.detach().cpu() if torch.is_tensor(w) else w, dtype=np.float32) for w in waveforms]
        if any(row.ndim != 1 for row in rows):
            raise ValueError("each waveform must be 1-D (mono samples)")
    if sample_lengths is not None:
        lengths = [int(n) for n in (sample_lengths.tolist() if torch.is_tensor(sample_lengths) else sample_lengths)]
        if len(lengths) != len(rows):
            raise ValueError(f"{len(lengths)} sample_lengths for {len(rows)} waveforms")
        rows = [row[:n] for row, n in zip(rows, lengths)]
    if not rows or any(len(row) == 0 for row in rows):
        raise ValueError("every sample needs a non-empty waveform")
    return rows


def _pad(rows: list[list[int]], value: int, side: str) -> torch.Tensor:
    if side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {side!r}")
    width = max(len(row) for row in rows)
    return torch.tensor([([value] * (width - len(r)) + r) if side == "left" else (r + [value] * (width - len(r)))
                         for r in rows], dtype=torch.long)


def _to(value, device, dtype):
    if not torch.is_tensor(value):
        return value
    return value.to(device, dtype) if value.is_floating_point() else value.to(device)
