"""Training configuration: the model, data, optimiser, run and warm-up specs, read from JSON or YAML.

    config = TrainConfig.from_file("configs/tiny.json", output_dir="runs/tiny")
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

from lalm_fast import settings
from lalm_fast.settings import SettingError, choice, integer, number, of_type, optional, text

__all__ = ["AlignSpec", "DataSpec", "ModelSpec", "OptimSpec", "RunSpec", "TrainConfig", "parse_spec", "saved_spec",
           "SYNTHETIC", "TINY_RANDOM", "TRAIN_SPEC_FILE"]

TINY_RANDOM = "tiny-random"     # model source: seeded tiny random Whisper encoder / Llama + tokenizer
SYNTHETIC = "synthetic:"        # data source "synthetic:N": N sine-tone clips written into the run folder
TRAIN_SPEC_FILE = "lalm_train.json"


@dataclass
class ModelSpec:
    native: Optional[str] = None            # a local transformers audio-LLM folder (Qwen2-Audio, Granite Speech,
                                            # ...): trains LoRA on its language model with its own audio tower and
                                            # projector (frozen); encoder, lm, projector and mel_bins are unused
    encoder: str = TINY_RANDOM              # "packaged:tiny.en", a local HF folder, or tiny-random
    lm: str = TINY_RANDOM                   # "packaged:smollm2-135m", a local HF folder, or tiny-random
    compressor: Any = "uniform:4"
    projector: dict = field(default_factory=lambda: {"layers": 2})   # MLPProjector options besides dims
    lora: Optional[dict] = None             # AudioLM.add_lora options, e.g. {"r": 8}; native: also "scope"
    prompts: Optional[dict] = None          # None: the tiny prompts for tiny-random, else the defaults;
                                            # native: also "system", a system message for the chat template
    freeze_encoder: bool = True
    window_seconds: float = 30.0            # encoder input window; clips must fit
    mel_bins: int = 80                      # 128 for Whisper large-v3
    lm_dtype: str = "float32"               # native: the dtype the whole model is loaded in
    seed: int = 0                           # builds the projector (and tiny-random weights)
    init_from: Optional[str] = None         # start from a model saved by AudioLM.save_pretrained (a run's
                                            # final/): its prompts, projector and LoRA, with this spec's
                                            # compressor (compression inserted into a trained model);
                                            # projector and lora must then be left as saved (null lora)
    train_lora: bool = True                 # false: the LoRA stays as loaded, only the projector trains

    @property
    def trains_lora(self) -> bool:
        """Whether training updates a LoRA: a fresh one (``lora``) or the one loaded by ``init_from``."""
        return self.lora is not None or (self.init_from is not None and self.train_lora)


@dataclass
class DataSpec:
    train: str = ""                         # JSONL manifest, or "synthetic:N"
    eval: Optional[str] = None
    task: Any = "transcribe"                # or {"task": "translate", "lang": "Spanish"} (targets = translations),
                                            # or "auto": per utterance from its lang pair (Dataset.task_of)
    batch_size: Optional[int] = 8
    max_frames: Optional[float] = None      # padded seconds per batch (len * longest), with or instead of batch_size
    skip_bad: bool = False                  # count and skip bad utterances instead of raising
    cache: Optional[bool] = None            # cache frozen-encoder outputs; None: when model.freeze_encoder
    cache_dir: Optional[str] = None         # shared cache folder; None: <output_dir>/feature_cache
    eval_generate: int = 16                 # utterances decoded for WER / BLEU at each evaluation
    max_new_tokens: int = 64
    normalize_targets: bool = False         # train on lowercase targets without punctuation (normalize_target)


@dataclass
class OptimSpec:
    lr: float = 1e-4
    projector_lr_scale: float = 1.0         # projector lr = lr * this (it starts from random)
    weight_decay: float = 0.01              # matrices only; biases and norms get none
    warmup_steps: int = 0
    total_steps: int = 100                  # optimizer steps
    grad_accum: int = 1
    max_grad_norm: Optional[float] = 1.0


@dataclass
class RunSpec:
    output_dir: str = "runs/default"
    seed: int = 0                           # data order and dropout
    eval_every: int = 0                     # steps; 0: only at the end
    save_every: int = 0                     # steps; 0: only at the end
    keep_last: int = 2
    mixed_precision: str = "auto"           # auto: bf16 on CUDA, none on CPU; or "no" / "bf16"
    progress: bool = True


@dataclass
class AlignSpec:
    """Projector warm-up before LM training, with no LM forward pass (off unless ``ctc_steps`` > 0).

    The projector's outputs are scored against the LM's frozen input-embedding matrix (transposed,
    times a learned scale, plus a learned blank vector): vocabulary logits per audio token, trained
    with CTC onto the LM's own tokenisation of the target. It pulls each audio token towards the
    embeddings of the tokens spoken there, so the LM starts from audio it can already read.
    """

    ctc_steps: int = 0                      # warm-up optimizer steps; 0 = off
    lr: float = 2e-3                        # projector (and head) learning rate during the warm-up
    batch_size: Optional[int] = None        # None: data.batch_size
    compressor: Any = None                  # compressor for the warm-up only (e.g. "uniform:2" when the
                                            # model's is too coarse for CTC); None: the model's own
    vocab: str = "train"                    # "train": only tokens of the training targets compete; "full": all
    match_norm: bool = True                 # cosine logits + a penalty that keeps audio tokens at the mean
                                            # norm of the LM's embeddings (dot-product CTC sharpens its logits by
                                            # growing them, out of the LM's input range; docs/training.md)
    init_scale: float = 1.0                 # initial logit scale (x cosine x mean norm); learned. 1 was better
                                            # than 10 after 600 warm-up steps on 400 utterances (docs/training.md)


@dataclass
class TrainConfig:
    model: ModelSpec = field(default_factory=ModelSpec)
    data: DataSpec = field(default_factory=DataSpec)
    optim: OptimSpec = field(default_factory=OptimSpec)
    run: RunSpec = field(default_factory=RunSpec)
    align: AlignSpec = field(default_factory=AlignSpec)

    @classmethod
    def from_dict(cls, data: dict, where: str = "config") -> "TrainConfig":
        """A checked config: every key's type and range (:data:`RULES`); errors name ``where``."""
        specs = {"model": ModelSpec, "data": DataSpec, "optim": OptimSpec, "run": RunSpec, "align": AlignSpec}
        if not isinstance(data, dict):
            raise SettingError(where, "the config", f"must be a JSON object of sections {sorted(specs)}, "
                                                    f"got {type(data).__name__}")
        _reject_unknown(data, specs, "config", where)
        return cls(**{name: parse_spec(spec, data.get(name, {}), name, where) for name, spec in specs.items()})

    @classmethod
    def from_file(cls, path: str | os.PathLike, **run_overrides: Any) -> "TrainConfig":
        """Read JSON (or YAML when the name ends in .yaml/.yml and PyYAML is installed) and check
        it, the paths it names included; ``run_overrides`` replace fields of ``run``."""
        config = cls.from_dict(_read_structured(Path(path)), str(path))
        overrides = {name: value for name, value in run_overrides.items() if value is not None}
        _reject_unknown(overrides, {f.name: None for f in fields(RunSpec)}, "run", str(path))
        settings.check(overrides, RULES["run"], str(path), "run.")
        for name, value in overrides.items():
            setattr(config.run, name, value)
        config.check(str(path))
        return config

    def check(self, where: str = "config") -> None:
        """Check every setting again (code may have changed them) and that named paths exist."""
        for section, rules in RULES.items():
            settings.check(asdict(getattr(self, section)), rules, where, f"{section}.")
        for key, value in (("data.train", self.data.train), ("data.eval", self.data.eval)):
            if value is not None and not value.startswith(SYNTHETIC):
                settings.check({key: value}, {key: settings.existing_file}, where)
        for key, value in (("model.encoder", self.model.encoder), ("model.lm", self.model.lm)):
            settings.check({key: value}, {key: _local_model}, where)
        if self.model.native is not None:
            self._check_native(where)
        if not self.model.train_lora and self.model.init_from is None:
            raise SettingError(where, "model.train_lora", "false needs model.init_from: a fresh LoRA that never "
                                                          "trains does nothing")
        if self.model.init_from is not None:
            settings.check({"model.init_from": self.model.init_from}, {"model.init_from": _saved_audio_lm}, where)
            if self.model.lora is not None:
                raise SettingError(where, "model.lora", "must be null with model.init_from: the LoRA comes from "
                                                        "the saved model")
            if self.align.ctc_steps:
                raise SettingError(where, "align.ctc_steps", "must be 0 with model.init_from: a warm-up would "
                                                             "re-align the trained projector")

    def _check_native(self, where: str) -> None:
        """What a native model needs: LoRA to train, its own frozen tower, no cache of Whisper encoder states."""
        problems = [
            ("model.lora", self.model.lora is None,
             "must be set with model.native: the LoRA on the native model's language model is what trains"),
            ("model.train_lora", not self.model.train_lora,
             "must be true with model.native: the LoRA is all that trains"),
            ("model.init_from", self.model.init_from is not None,
             "must be null with model.native: it starts an AudioLM from a saved one"),
            ("model.freeze_encoder", not self.model.freeze_encoder,
             "must be true with model.native: the native audio tower stays frozen"),
            ("data.cache", bool(self.data.cache),
             "must be false or null with model.native: the native audio tower runs every step (no feature cache)"),
            ("align.ctc_steps", self.align.ctc_steps > 0,
             "must be 0 with model.native: the CTC warm-up trains an AudioLM projector, which a native model has not"),
        ]
        for key, bad, problem in problems:
            if bad:
                raise SettingError(where, key, problem)

    def to_dict(self) -> dict:
        return asdict(self)


def _synthetic_or_file(value) -> Optional[str]:
    if not isinstance(value, str) or not value.strip():
        return f"must be a JSONL manifest or 'synthetic:N', got {value!r}"
    if value.startswith(SYNTHETIC):
        count = value[len(SYNTHETIC):]
        return None if count.isdigit() and int(count) >= 1 else f"must be 'synthetic:N' with N >= 1, got {value!r}"
    return None


def _local_model(value) -> Optional[str]:
    """tiny-random, packaged:NAME or an existing local folder (nothing is downloaded)."""
    problem = text(value)
    if problem or value == TINY_RANDOM or value.startswith("packaged:") or os.path.isdir(value):
        return problem
    return f"must be {TINY_RANDOM!r}, 'packaged:NAME' or a local model folder; {value!r} is not a folder here"


def _saved_audio_lm(value) -> Optional[str]:
    from lalm_fast.models.audio_lm import CONFIG_FILE

    if not os.path.isfile(os.path.join(value, CONFIG_FILE)):
        return f"must be a folder written by AudioLM.save_pretrained (with {CONFIG_FILE}), got {value!r}"
    return None


def _native_folder(value) -> Optional[str]:
    """A local transformers folder whose config.json names a model type the native training path supports."""
    problem = text(value)
    if problem:
        return problem
    path = Path(value) / "config.json"
    if not path.is_file():
        return f"must be a local transformers model folder (with config.json); {value!r} is not one here"
    try:
        model_type = json.loads(path.read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError) as exc:
        return f"names a folder whose config.json cannot be read ({exc})"
    from lalm_fast.integrations.native_lm import TRAINABLE_MODEL_TYPES  # transformers: only for a native model

    if not isinstance(model_type, str):
        return f"names a folder whose config.json has no model_type ({path})"
    if model_type not in TRAINABLE_MODEL_TYPES:
        return (f"is a {model_type!r} model; native training supports model types {', '.join(TRAINABLE_MODEL_TYPES)} "
                "(docs/training.md)")
    return None


def _compressor(value) -> Optional[str]:
    from lalm_fast.nn import build_compressor  # torch: only once a config names a compressor

    try:
        build_compressor(value)
    except (ValueError, TypeError) as exc:
        return f"is not a valid compressor ({exc})"
    return None


_BOOL = of_type(bool, "true or false")
_DICT = of_type(dict, "an object")
_OPTIONAL_DICT = optional(_DICT)

#: The type and range of every setting, checked when a config is read (a test keeps it complete).
RULES: dict[str, dict[str, settings.Rule]] = {
    "model": {"native": optional(_native_folder), "encoder": text, "lm": text, "compressor": _compressor,
              "projector": _DICT, "lora": _OPTIONAL_DICT,
              "prompts": _OPTIONAL_DICT, "freeze_encoder": _BOOL, "window_seconds": number(0), "mel_bins": integer(1),
              "lm_dtype": choice("float32", "float16", "bfloat16"), "seed": integer(0),
              "init_from": optional(text), "train_lora": _BOOL},
    "data": {"train": _synthetic_or_file, "eval": optional(_synthetic_or_file),
             "task": lambda v: None if isinstance(v, (str, dict)) else f"must be a string or an object, got {v!r}",
             "batch_size": optional(integer(1)), "max_frames": optional(number(0)), "skip_bad": _BOOL,
             "cache": optional(_BOOL), "cache_dir": optional(text), "eval_generate": integer(0),
             "max_new_tokens": integer(1), "normalize_targets": _BOOL},
    "optim": {"lr": number(0), "projector_lr_scale": number(0), "weight_decay": number(0, inclusive=True),
              "warmup_steps": integer(0), "total_steps": integer(1), "grad_accum": integer(1),
              "max_grad_norm": optional(number(0))},
    "run": {"output_dir": text, "seed": integer(0), "eval_every": integer(0), "save_every": integer(0),
            "keep_last": integer(0), "mixed_precision": choice("auto", "no", "bf16", "fp16"), "progress": _BOOL},
    "align": {"ctc_steps": integer(0), "lr": number(0), "batch_size": optional(integer(1)),
              "compressor": optional(_compressor), "vocab": choice("train", "full"), "match_norm": _BOOL,
              "init_scale": number(0)},
}


def parse_spec(spec_type, values: dict, name: str, where: str = "config"):
    """``spec_type(**values)`` after checking each value (``name`` is the section)."""
    if not isinstance(values, dict):
        raise SettingError(where, name, f"must be an object of settings, got {type(values).__name__}")
    _reject_unknown(values, {f.name: None for f in fields(spec_type)}, name, where)
    settings.check(values, RULES.get(name, {}), where, f"{name}.")
    return spec_type(**values)


def _reject_unknown(values: dict, known: dict, section: str, where: str = "config") -> None:
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise SettingError(where, f"{section}", f"has unknown field(s) {unknown}; expected some of {sorted(known)}")


def _read_structured(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as handle:
            if path.suffix in (".yaml", ".yml"):
                import yaml  # optional: only YAML configs need it

                return yaml.safe_load(handle)
            return json.load(handle)
    except UnicodeDecodeError:
        raise SettingError(str(path), "the file", "is not UTF-8 text (a binary file?)") from None
    except json.JSONDecodeError as exc:
        raise SettingError(str(path), "the file", f"is not valid JSON ({exc})") from None
    except RecursionError:
        raise SettingError(str(path), "the file", "is nested too deeply to be a config") from None


def saved_spec(directory: str | os.PathLike, section: str):
    """The ``"model"`` or ``"data"`` spec that :func:`~lalm_fast.training.train` recorded in a
    trained model's folder (``<output_dir>/final``)."""
    path = Path(directory) / TRAIN_SPEC_FILE
    if not path.exists():
        raise ValueError(f"{directory} has no {TRAIN_SPEC_FILE}: it was not written by lalm_fast.training")
    spec_type = {"model": ModelSpec, "data": DataSpec}[section]
    return parse_spec(spec_type, json.loads(path.read_text())[section], section)
