"""A generic audio LM: any HF audio encoder + a ``lalm_fast.nn`` compressor + an MLP projector
+ any HF causal LM, with peft LoRA on the LM only::

    model = AudioLM(encoder, compressor, projector, lm, tokenizer)
    model.add_lora(r=8)
    out = model(input_features, frame_lengths, tasks="transcribe", targets=["hello world"])
    out.loss.backward()
    model.generate(input_features, frame_lengths, tasks={"task": "translate", "lang": "German"})
    # or from precomputed (e.g. cached) encoder outputs, skipping the encoder:
    out = model(encoder_states=hidden, encoder_lengths=valid_frames, targets=["hello world"])
    model.save_pretrained("run/final")
    model = AudioLM.from_pretrained("run/final", encoder=encoder, lm=lm, tokenizer=tokenizer)

Each sample becomes ``[bos][prompt prefix][its own audio tokens][prompt suffix][target][eos]``;
samples have different audio token counts, so sequences are padded to the longest on the
tokenizer's padding side (``generate`` always pads left). Labels are the target ids (with eos)
and -100 everywhere else.

A tokenizer without a pad token gets its eos token as pad, with a warning: padding positions
are masked out of attention and labels, so the choice of id does not matter.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import warnings
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Callable, Optional, Sequence, Union

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn.utils.rnn import pad_sequence

from lalm_fast.long_audio import encode_windowed
from lalm_fast.models.lora_targets import LLM_ATTENTION
from lalm_fast.models.projector import MLPProjector
from lalm_fast.models.prompts import (AUDIO_PLACEHOLDER, DEFAULT_PROMPTS, Task, as_list, check_templates,
                                      render_prompt, split_prompt)
from lalm_fast.nn import AudioCompressor, CompressedAudio, build_compressor

__all__ = ["AudioLM", "AudioLMConfig", "AudioLMInputs", "AudioLMOutput", "CONFIG_FILE", "PROJECTOR_FILE"]

CONFIG_FILE = "audio_lm_config.json"
PROJECTOR_FILE = "projector.safetensors"
IGNORE_INDEX = -100  # what HF causal LMs skip in the loss

Tasks = Union[Task, Sequence[Task], None]   # one task for the batch, or one per sample
Prompts = Union[str, Sequence[str], None]   # full prompt texts (with the placeholder), overriding tasks


@dataclass
class AudioLMConfig:
    """Everything but the weights; ``to_dict`` / ``from_dict`` round-trip through JSON.

    ``encoder`` / ``lm`` name where the base weights come from (hub id or local folder); they
    are never copied into a saved model. ``encoder_stride`` is input frames per encoder frame
    (2 for Whisper: 100 mel frames/s -> 50 frames/s). ``window`` (input frames, 3000 for
    Whisper's 30 s) makes longer audio be encoded window by window and joined. ``lora_dir`` lets a
    model whose LoRA is byte for byte another's (adapted with the projector alone) ship without a
    copy: the folder, relative to the saved model, holding the adapter it shares.
    """

    encoder: Optional[str] = None
    lm: Optional[str] = None
    compressor: dict[str, Any] = field(default_factory=lambda: {"kind": "none"})
    projector: dict[str, Any] = field(default_factory=lambda: {"layers": 2, "activation": "gelu"})
    lora: Optional[dict[str, Any]] = None
    prompts: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_PROMPTS))
    audio_placeholder: str = AUDIO_PLACEHOLDER
    add_bos: bool = True
    freeze_encoder: bool = True
    freeze_lm: bool = True
    encoder_stride: int = 2
    encoder_frames_per_second: float = 50.0
    window: Optional[int] = None
    lora_dir: Optional[str] = None  # the LoRA is that of another saved model (a folder relative to this one)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "AudioLMConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown AudioLMConfig fields {unknown}")
        return cls(**data)


@dataclass
class AudioLMInputs:
    """What the LM receives: padded embeddings, mask, positions and labels."""

    inputs_embeds: torch.Tensor   # [B, L, H]
    attention_mask: torch.Tensor  # [B, L] int64, 1 = real position
    position_ids: torch.Tensor    # [B, L], counted over real positions only (padding-side independent)
    labels: torch.Tensor          # [B, L], target ids, IGNORE_INDEX elsewhere
    audio_lengths: torch.Tensor   # [B] audio tokens of each sample


@dataclass
class AudioLMOutput:
    loss: Optional[torch.Tensor]
    logits: torch.Tensor
    inputs: AudioLMInputs


class AudioLM(nn.Module):
    """Encoder -> compressor -> projector -> causal LM; the modules are built by the caller.

    ``encoder(features)`` may return a tensor ``[B, T, D]``, a tuple whose first item is one, or
    an HF output with ``last_hidden_state``.
    """

    def __init__(self, encoder: Callable[[torch.Tensor], Any], compressor: Union[AudioCompressor, str, dict, None],
                 projector: MLPProjector, lm: nn.Module, tokenizer: Any, config: Optional[AudioLMConfig] = None):
        super().__init__()
        self.encoder, self.projector, self.lm, self.tokenizer = encoder, projector, lm, tokenizer
        self.compressor = build_compressor(compressor)
        # A copy: filling in the compressor and projector must not change the caller's config.
        self.config = replace(config) if config else AudioLMConfig(encoder=_source_of(encoder), lm=_source_of(lm))
        self.config.compressor = self.compressor.config()
        self.config.projector = projector.config()
        check_templates(self.config.prompts, self.config.audio_placeholder)
        self._check_widths()
        _ensure_pad_token(tokenizer)
        self._apply_freezing()

    # ----- construction helpers -------------------------------------------------------------

    def _check_widths(self) -> None:
        encoder_dim = _encoder_width(self.encoder)
        if encoder_dim is not None and encoder_dim != self.projector.in_dim:
            raise ValueError(f"projector in_dim {self.projector.in_dim} does not match the encoder's hidden size "
                             f"{encoder_dim}")
        lm_dim = self.lm.get_input_embeddings().embedding_dim
        if self.projector.out_dim != lm_dim:
            raise ValueError(f"projector out_dim {self.projector.out_dim} does not match the LM's hidden size {lm_dim}")

    def _apply_freezing(self) -> None:
        if self.config.freeze_encoder and isinstance(self.encoder, nn.Module):  # a plain callable has no state
            self.encoder.requires_grad_(False)
            self.encoder.eval()
        if self.config.freeze_lm and not self.has_lora:
            self.lm.requires_grad_(False)
        self.projector.requires_grad_(True)  # the projector is always trained

    def train(self, mode: bool = True) -> "AudioLM":
        super().train(mode)
        if self.config.freeze_encoder and isinstance(self.encoder, nn.Module):  # no dropout in a frozen encoder
            self.encoder.eval()
        return self

    def set_compressor(self, spec: Union[AudioCompressor, str, dict, None]) -> None:
        """Replace the compressor (compression inserted into a trained model); saved with the model."""
        self.compressor = build_compressor(spec)
        self.config.compressor = self.compressor.config()

    @property
    def has_lora(self) -> bool:
        return isinstance(self.lm, PeftModel)

    def add_lora(self, r: int = 16, alpha: int = 32, dropout: float = 0.05,
                 target_modules: Sequence[str] = LLM_ATTENTION, **options: Any) -> None:
        """Wrap the LM (only the LM: the encoder and projector are never touched) with peft LoRA.

        ``options`` go to ``LoraConfig``. Only LoRA weights and the projector stay trainable.
        """
        if self.has_lora:
            raise ValueError("this AudioLM already has a LoRA adapter")
        self.config.lora = {"r": r, "alpha": alpha, "dropout": dropout, "target_modules": list(target_modules),
                            **options}
        self.lm = get_peft_model(self.lm, _lora_config(self.config.lora))
        self._apply_freezing()

    # ----- audio ----------------------------------------------------------------------------

    def encoder_lengths(self, frame_lengths: torch.Tensor, frames: Optional[int] = None) -> torch.Tensor:
        """Encoder frames for ``frame_lengths`` input frames (``ceil(L / encoder_stride)``)."""
        stride = self.config.encoder_stride
        lengths = (frame_lengths + stride - 1) // stride
        return lengths if frames is None else lengths.clamp(max=frames)

    def encode_audio(self, input_features: torch.Tensor, frame_lengths: torch.Tensor) -> CompressedAudio:
        """Encoder + compressor; ``frame_lengths`` counts valid input frames per sample. With
        ``config.window`` set, audio is encoded in windows of that many frames, then joined."""
        frame_lengths = torch.as_tensor(frame_lengths, device=input_features.device)
        window = self.config.window
        if window is None:
            return self._encode_window(input_features, frame_lengths)
        return encode_windowed(self._encode_window, input_features, frame_lengths, window, self._frames_per_window())

    def compress_states(self, encoder_states: torch.Tensor, encoder_lengths: torch.Tensor) -> CompressedAudio:
        """The compressor on precomputed encoder outputs ``[B, T_enc, D]`` (``encoder_lengths``:
        valid encoder frames per sample), as :meth:`encode_audio` applies it after the encoder.

        The states are cast to the encoder's dtype and moved to the projector's device (a cache
        may hold float16 on the CPU). With ``config.window`` set, each sample's frames are cut
        into windows of ``ceil(window / encoder_stride)`` encoder frames and each window is
        compressed alone, as the encoder path does (identical when ``window`` is a multiple of
        ``encoder_stride``).
        """
        reference = self.projector[0].weight
        states = encoder_states.to(device=reference.device, dtype=_encoder_dtype(self.encoder, reference.dtype))
        lengths = torch.as_tensor(encoder_lengths, device=states.device).clamp(max=states.shape[1])
        if self.config.window is None:
            return self._compress(states, lengths)
        frames_per_window = self._frames_per_window()
        # split_windows cuts along the last dimension: time goes last and comes back per window.
        return encode_windowed(lambda windows, window_lengths: self._compress(windows.transpose(1, 2), window_lengths),
                               states.transpose(1, 2), lengths, frames_per_window, frames_per_window)

    def _frames_per_window(self) -> int:
        return math.ceil(self.config.window / self.config.encoder_stride)

    def _encode_window(self, features: torch.Tensor, frame_lengths: torch.Tensor) -> CompressedAudio:
        frozen = self.config.freeze_encoder
        with torch.no_grad() if frozen else contextlib.nullcontext():
            hidden = _hidden_states(self.encoder(features))
        return self._compress(hidden, self.encoder_lengths(frame_lengths, hidden.shape[1]))

    def _compress(self, hidden: torch.Tensor, encoder_lengths: torch.Tensor) -> CompressedAudio:
        """What follows the encoder: check the width, then compress ``encoder_lengths`` valid frames."""
        if hidden.shape[-1] != self.projector.in_dim:
            raise ValueError(f"the encoder returned hidden size {hidden.shape[-1]}, but the projector expects "
                             f"in_dim {self.projector.in_dim}")
        compressed = self.compressor(hidden, encoder_lengths)
        if compressed.values.shape[-1] != hidden.shape[-1]:
            raise ValueError(f"compressor {self.compressor!r} changed the feature size from {hidden.shape[-1]} to "
                             f"{compressed.values.shape[-1]}; compressors must keep D")
        return compressed

    # ----- text and splicing ----------------------------------------------------------------

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    def _prompt_ids(self, task: Optional[Task], prompt: Optional[str]) -> tuple[list[int], list[int]]:
        """Token ids before and after the audio."""
        text = prompt if prompt is not None else render_prompt(self.config.prompts, task)
        prefix, suffix = split_prompt(text, self.config.audio_placeholder)
        bos = self.tokenizer.bos_token_id
        head = [bos] if self.config.add_bos and bos is not None else []
        return head + self._ids(prefix), self._ids(suffix)

    def target_ids(self, target: str) -> list[int]:
        """Token ids of a target text as the LM is trained on it: the text's tokens, then eos."""
        eos = self.tokenizer.eos_token_id
        if eos is None:
            raise ValueError("the tokenizer has no eos token: targets need one so generation learns to stop")
        return self._ids(target) + [eos]

    def build_inputs(self, input_features: Optional[torch.Tensor] = None, frame_lengths: Optional[torch.Tensor] = None,
                     tasks: Tasks = "transcribe", prompts: Prompts = None,
                     targets: Optional[Sequence[str]] = None, padding_side: Optional[str] = None, *,
                     encoder_states: Optional[torch.Tensor] = None,
                     encoder_lengths: Optional[torch.Tensor] = None) -> AudioLMInputs:
        """Splice each sample's audio tokens into its prompt and pad the batch.

        The audio is ``input_features`` [B, C, M] with ``frame_lengths`` (valid input frames), or
        instead precomputed encoder outputs ``encoder_states`` [B, T_enc, D] with
        ``encoder_lengths`` (valid encoder frames): the encoder is skipped, the rest is the same.
        ``prompts`` (full texts with the placeholder) override ``tasks``; either may be one
        value for the whole batch or one per sample. ``padding_side`` defaults to the tokenizer's.
        """
        audio = self._audio(input_features, frame_lengths, encoder_states, encoder_lengths)
        audio_embeds = self.projector(audio.values.to(self.projector[0].weight.dtype))
        batch = audio_embeds.shape[0]
        tasks, prompts = as_list(tasks, batch, "tasks"), as_list(prompts, batch, "prompts")
        targets = as_list(targets, batch, "targets") if targets is not None else [None] * batch
        counts = audio.lengths.tolist()  # one host sync per batch, to slice each sample's tokens
        sequences = [self._sample(audio_embeds[i, :counts[i]], tasks[i], prompts[i], targets[i]) for i in range(batch)]
        return self._pad(sequences, padding_side or self.tokenizer.padding_side, audio.lengths)

    def _audio(self, input_features, frame_lengths, encoder_states, encoder_lengths) -> CompressedAudio:
        """Compressed audio from input features or from encoder states (exactly one of the two)."""
        if encoder_states is not None:
            if input_features is not None or frame_lengths is not None:
                raise ValueError("pass either input_features/frame_lengths or encoder_states/encoder_lengths, not both")
            if encoder_lengths is None:
                raise ValueError("encoder_states need encoder_lengths (valid encoder frames per sample)")
            return self.compress_states(encoder_states, encoder_lengths)
        if encoder_lengths is not None:
            raise ValueError("encoder_lengths was given without encoder_states")
        if input_features is None or frame_lengths is None:
            raise ValueError("pass input_features and frame_lengths, or encoder_states and encoder_lengths")
        return self.encode_audio(input_features, frame_lengths)

    def _sample(self, audio_embeds: torch.Tensor, task, prompt, target) -> tuple[torch.Tensor, torch.Tensor]:
        """(embeds [L, H], labels [L]) of one sample."""
        prefix, suffix = self._prompt_ids(task, prompt)
        target_ids = self.target_ids(target) if target is not None else []
        embed = self.lm.get_input_embeddings()
        device = audio_embeds.device
        text_ids = [torch.tensor(ids, dtype=torch.long, device=device) for ids in (prefix, suffix, target_ids)]
        prefix_embeds, suffix_embeds, target_embeds = embed(torch.cat(text_ids)).split([len(ids) for ids in text_ids])
        embeds = torch.cat([prefix_embeds, audio_embeds.to(embed.weight.dtype), suffix_embeds, target_embeds])
        ignored = len(embeds) - len(target_ids)
        labels = torch.tensor([IGNORE_INDEX] * ignored + target_ids, dtype=torch.long, device=device)
        return embeds, labels

    def _pad(self, sequences, side: str, audio_lengths: torch.Tensor) -> AudioLMInputs:
        if side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {side!r}")
        embeds = pad_sequence([e for e, _ in sequences], batch_first=True, padding_side=side)
        labels = pad_sequence([l for _, l in sequences], batch_first=True, padding_value=IGNORE_INDEX,
                              padding_side=side)
        ones = [torch.ones(len(l), dtype=torch.long, device=l.device) for _, l in sequences]
        mask = pad_sequence(ones, batch_first=True, padding_side=side)
        # Positions count real tokens only, so a sample sees the same positions in any batch.
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        return AudioLMInputs(embeds, mask, positions, labels, audio_lengths)

    # ----- running --------------------------------------------------------------------------

    def forward(self, input_features: Optional[torch.Tensor] = None, frame_lengths: Optional[torch.Tensor] = None,
                tasks: Tasks = "transcribe", prompts: Prompts = None,
                targets: Optional[Sequence[str]] = None, padding_side: Optional[str] = None, *,
                encoder_states: Optional[torch.Tensor] = None,
                encoder_lengths: Optional[torch.Tensor] = None) -> AudioLMOutput:
        """Logits for every position, and the loss over target tokens when ``targets`` are given.
        The audio comes as in :meth:`build_inputs` (features, or precomputed encoder states)."""
        inputs = self.build_inputs(input_features, frame_lengths, tasks, prompts, targets, padding_side,
                                   encoder_states=encoder_states, encoder_lengths=encoder_lengths)
        out = self.lm(inputs_embeds=inputs.inputs_embeds, attention_mask=inputs.attention_mask,
                      position_ids=inputs.position_ids, labels=inputs.labels if targets is not None else None)
        return AudioLMOutput(out.loss, out.logits, inputs)

    @torch.no_grad()
    def generate(self, input_features: Optional[torch.Tensor] = None, frame_lengths: Optional[torch.Tensor] = None,
                 tasks: Tasks = "transcribe", prompts: Prompts = None,
                 max_new_tokens: int = 64, *, encoder_states: Optional[torch.Tensor] = None,
                 encoder_lengths: Optional[torch.Tensor] = None, **generate_kwargs: Any) -> list[str]:
        """Decoded text per sample (greedy unless ``generate_kwargs`` say otherwise). The audio
        comes as in :meth:`build_inputs` (features, or precomputed encoder states)."""
        inputs = self.build_inputs(input_features, frame_lengths, tasks, prompts, padding_side="left",
                                   encoder_states=encoder_states, encoder_lengths=encoder_lengths)
        options = {"do_sample": False, "pad_token_id": self.tokenizer.pad_token_id,
                   "eos_token_id": self.tokenizer.eos_token_id, **generate_kwargs}
        # Decoder-only generate() with inputs_embeds returns only the new tokens.
        ids = self.lm.generate(inputs_embeds=inputs.inputs_embeds, attention_mask=inputs.attention_mask,
                               max_new_tokens=max_new_tokens, **options)
        return self.tokenizer.batch_decode(ids, skip_special_tokens=True)

    # ----- saving ---------------------------------------------------------------------------

    def save_pretrained(self, directory: Union[str, os.PathLike]) -> None:
        """Write the config JSON, the projector (safetensors) and the LoRA adapter (if any).

        Base encoder / LM weights are not copied: the config names their sources. Files are
        written to a temporary folder beside ``directory`` and moved in with ``os.replace``,
        the config last, so a reader never sees a torn file and a crash keeps the old config.
        """
        from lalm_fast.data.files import atomic_files  # imported here: lalm_fast.data loads soundfile and scipy

        with atomic_files(directory, last=CONFIG_FILE) as staging:
            if self.has_lora:
                self.lm.save_pretrained(os.fspath(staging))
            state = self.projector.state_dict()
            save_file({name: t.detach().contiguous().cpu() for name, t in state.items()},
                      os.path.join(staging, PROJECTOR_FILE))
            with open(os.path.join(staging, CONFIG_FILE), "w") as handle:
                json.dump(self.config.to_dict(), handle, indent=2, sort_keys=True)

    @classmethod
    def from_pretrained(cls, directory: Union[str, os.PathLike], encoder: Optional[nn.Module] = None,
                        lm: Optional[nn.Module] = None, tokenizer: Any = None,
                        is_trainable: bool = False) -> "AudioLM":
        """Rebuild a saved model. Modules not passed are loaded from the sources in the config
        (``AutoModel`` / ``AutoModelForCausalLM`` / ``AutoTokenizer``)."""
        directory = os.fspath(directory)
        path = os.path.join(directory, CONFIG_FILE)
        if not os.path.exists(path):
            raise ValueError(f"{directory} has no {CONFIG_FILE}: it was not saved by AudioLM.save_pretrained")
        with open(path) as handle:
            config = AudioLMConfig.from_dict(json.load(handle))
        encoder, lm, tokenizer = _load_missing(config, encoder, lm, tokenizer)
        projector = MLPProjector(**config.projector)
        projector.load_state_dict(load_file(os.path.join(directory, PROJECTOR_FILE)))
        if config.lora is not None:
            lm = PeftModel.from_pretrained(lm, _lora_folder(directory, config), is_trainable=is_trainable)
        # the LoRA is this model's own from here on: saved again, it is written beside the projector
        return cls(encoder, config.compressor, projector, lm, tokenizer, replace(config, lora_dir=None))


# ----- module-level helpers ---------------------------------------------------------------------


def _lora_folder(directory: str, config: AudioLMConfig) -> str:
    if config.lora_dir is None:
        return directory
    folder = os.path.normpath(os.path.join(directory, config.lora_dir))
    if not os.path.exists(os.path.join(folder, "adapter_config.json")):
        raise ValueError(f"{directory} takes its LoRA from lora_dir {config.lora_dir!r}, but {folder} holds no "
                         "LoRA adapter (adapter_config.json)")
    return folder


def _lora_config(options: dict[str, Any]) -> LoraConfig:
    options = dict(options)
    return LoraConfig(r=options.pop("r"), lora_alpha=options.pop("alpha"), lora_dropout=options.pop("dropout"),
                      target_modules=options.pop("target_modules"), task_type="CAUSAL_LM", **options)


def _hidden_states(output: Any) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    if getattr(output, "last_hidden_state", None) is not None:
        return output.last_hidden_state
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(f"the encoder returned {type(output).__name__}; expected a tensor [B, T, D], a tuple "
                    "starting with one, or an output with last_hidden_state")


def _encoder_dtype(encoder: Any, default: torch.dtype) -> torch.dtype:
    """The dtype the encoder outputs (that of its first floating parameter), else ``default``."""
    if isinstance(encoder, nn.Module):
        for param in encoder.parameters():
            if param.is_floating_point():
                return param.dtype
    return default


def _encoder_width(encoder: nn.Module) -> Optional[int]:
    config = getattr(encoder, "config", None)
    for name in ("d_model", "hidden_size"):
        if isinstance(getattr(config, name, None), int):
            return getattr(config, name)
    return None


def _source_of(module: nn.Module) -> Optional[str]:
    """Where ``module``'s weights came from (hub id or folder), if it was loaded from one."""
    return getattr(getattr(module, "config", None), "_name_or_path", None) or None


def _ensure_pad_token(tokenizer: Any) -> None:
    if tokenizer.pad_token_id is not None:
        return
    if tokenizer.eos_token is None:
        raise ValueError("the tokenizer has neither a pad nor an eos token; set tokenizer.pad_token first")
    warnings.warn(f"the tokenizer has no pad token; using its eos token {tokenizer.eos_token!r} "
                  "(padding is masked out, so this is safe)", stacklevel=3)
    tokenizer.pad_token = tokenizer.eos_token


def _load_missing(config: AudioLMConfig, encoder, lm, tokenizer):
    """Load from the config's sources whatever the caller did not pass."""
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    def source(name: str) -> str:
        value = getattr(config, name)
        if not value:
            raise ValueError(f"the saved config has no {name} source; pass {name}=... to from_pretrained")
        return value

    if encoder is None:
        model = AutoModel.from_pretrained(source("encoder"))
        encoder = model.get_encoder() if hasattr(model, "get_encoder") else model
    if lm is None:
        lm = AutoModelForCausalLM.from_pretrained(source("lm"))
    if tokenizer is None:
        tokenizer = AutoTokenizer.from_pretrained(source("lm"))
    return encoder, lm, tokenizer
