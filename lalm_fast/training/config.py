"""Training configuration: the model, data, optimiser, run and warm-up specs, read from JSON or YAML.

    config = TrainConfig.from_file("configs/tiny.json", output_dir="runs/tiny")
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

__all__ = ["AlignSpec", "DataSpec", "ModelSpec", "OptimSpec", "RunSpec", "TrainConfig", "parse_spec", "saved_spec",
           "SYNTHETIC", "TINY_RANDOM", "TRAIN_SPEC_FILE"]

TINY_RANDOM = "tiny-random"     # model source: seeded tiny random Whisper encoder / Llama + tokenizer
SYNTHETIC = "synthetic:"        # data source "synthetic:N": N sine-tone clips written into the run folder
TRAIN_SPEC_FILE = "lalm_train.json"


@dataclass
class ModelSpec:
    encoder: str = TINY_RANDOM              # "packaged:tiny.en", a local HF folder, or tiny-random
    lm: str = TINY_RANDOM                   # "packaged:smollm2-135m", a local HF folder, or tiny-random
    compressor: Any = "uniform:4"
    projector: dict = field(default_factory=lambda: {"layers": 2})   # MLPProjector options besides dims
    lora: Optional[dict] = None             # AudioLM.add_lora options, e.g. {"r": 8}
    prompts: Optional[dict] = None          # None: the tiny prompts for tiny-random, else the defaults
    freeze_encoder: bool = True
    window_seconds: float = 30.0            # encoder input window; clips must fit
    mel_bins: int = 80                      # 128 for Whisper large-v3
    lm_dtype: str = "float32"
    seed: int = 0                           # builds the projector (and tiny-random weights)


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
    def from_dict(cls, data: dict) -> "TrainConfig":
        specs = {"model": ModelSpec, "data": DataSpec, "optim": OptimSpec, "run": RunSpec, "align": AlignSpec}
        _reject_unknown(data, specs, "config")
        return cls(**{name: parse_spec(spec, data.get(name, {}), name) for name, spec in specs.items()})

    @classmethod
    def from_file(cls, path: str | os.PathLike, **run_overrides: Any) -> "TrainConfig":
        """Read JSON (or YAML when the name ends in .yaml/.yml and PyYAML is installed);
        ``run_overrides`` replace fields of ``run`` (e.g. ``output_dir=...``)."""
        config = cls.from_dict(_read_structured(Path(path)))
        for name, value in run_overrides.items():
            if value is not None:
                _reject_unknown({name: value}, {f.name: None for f in fields(RunSpec)}, "run")
                setattr(config.run, name, value)
        return config

    def to_dict(self) -> dict:
        return asdict(self)


def parse_spec(spec_type, values: dict, name: str):
    """``spec_type(**values)``, rejecting fields it does not have (``name`` labels the error)."""
    _reject_unknown(values, {f.name: None for f in fields(spec_type)}, name)
    return spec_type(**values)


def _reject_unknown(values: dict, known: dict, where: str) -> None:
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"unknown {where} field(s) {unknown}; expected some of {sorted(known)}")


def _read_structured(path: Path) -> dict:
    with open(path, encoding="utf-8") as handle:
        if path.suffix in (".yaml", ".yml"):
            import yaml  # optional: only YAML configs need it

            return yaml.safe_load(handle)
        return json.load(handle)


def saved_spec(directory: str | os.PathLike, section: str):
    """The ``"model"`` or ``"data"`` spec that :func:`~lalm_fast.training.train` recorded in a
    trained model's folder (``<output_dir>/final``)."""
    path = Path(directory) / TRAIN_SPEC_FILE
    if not path.exists():
        raise ValueError(f"{directory} has no {TRAIN_SPEC_FILE}: it was not written by lalm_fast.training")
    spec_type = {"model": ModelSpec, "data": DataSpec}[section]
    return parse_spec(spec_type, json.loads(path.read_text())[section], section)
