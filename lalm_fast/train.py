"""Training and evaluation of :class:`~lalm_fast.models.AudioLM` (design section 8).

One code path for one CPU, one GPU or many GPUs (``accelerate launch -m lalm_fast.cli train ...``):
AdamW over the trainable parameters (projector + LoRA), warmup + cosine, gradient accumulation,
bf16 autocast on GPU, periodic evaluation, atomic checkpoints and exact resume::

    config = TrainConfig.from_file("configs/tiny.json", output_dir="runs/tiny")
    result = train(config)                 # or train(config, resume=True) after an interruption

The data order is a pure function of (seed, epoch) and a checkpoint stores the position in it
together with the RNG states, so a resumed run takes the same steps as an uninterrupted one.
Checkpoints hold only the trainable weights (a full ``accelerator.save_state`` would copy the
frozen encoder and LM: gigabytes per checkpoint for a 1-8B LM). With a frozen encoder its outputs
are cached on disk (``data.cache``, a :class:`~lalm_fast.data.cache.FeatureCache`): each clip is
encoded once, and later steps, epochs and runs train from the cached states. See docs/training.md.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import re
import shutil
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from lalm_fast.data import (SkipReport, Utterance, UtteranceLoader, audio_duration, bucket_batches,
                            log_mel, read_manifest, whisper_encode_fn, write_manifest)
from lalm_fast.data.cache import FeatureCache
from lalm_fast.data.errors import AudioError
from lalm_fast.data.files import atomic_directory, atomic_write
from lalm_fast.evaluate import EvalReport, audio_tokens_per_second, bleu, wer

__all__ = ["AlignSpec", "DataSpec", "ModelSpec", "OptimSpec", "RunSpec", "TrainConfig", "TrainResult", "build_model",
           "ctc_warmup", "normalize_target",
           "audio_inputs", "encoder_identity", "epoch_batches", "evaluate_model", "feature_cache", "latest_checkpoint",
           "load_trained", "train", "uses_cache"]

TINY_RANDOM = "tiny-random"     # model source: seeded tiny random Whisper encoder / Llama + tokenizer
SYNTHETIC = "synthetic:"        # data source "synthetic:N": N sine-tone clips written into the run folder
TRAIN_SPEC_FILE = "lalm_train.json"
STEP_FILE = "step.json"         # written last into a checkpoint: its presence marks it complete
FEATURE_CACHE = "feature_cache" # default cache folder inside the run's output_dir
CHECKPOINT = re.compile(r"^step-(\d{8})$")


# ----- configuration ----------------------------------------------------------------------------


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
                                            # norm of the LM's embeddings (without it they grew 16x, measured)
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
        return cls(**{name: _spec(spec, data.get(name, {}), name) for name, spec in specs.items()})

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


def _spec(spec_type, values: dict, name: str):
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


# ----- model ------------------------------------------------------------------------------------


def build_model(spec: ModelSpec):
    """An AudioLM from the spec's sources, with a fresh projector (and LoRA when asked)."""
    from lalm_fast.models import AudioLM, AudioLMConfig, MLPProjector
    from lalm_fast.models.tiny import PROMPTS

    encoder, lm, tokenizer = _load_bases(spec)
    torch.manual_seed(spec.seed)
    width = lm.get_input_embeddings().embedding_dim
    projector = MLPProjector(encoder.config.d_model, width, **spec.projector)
    prompts = spec.prompts or (dict(PROMPTS) if spec.lm == TINY_RANDOM else None)
    config = AudioLMConfig(encoder=spec.encoder, lm=spec.lm, freeze_encoder=spec.freeze_encoder,
                           **({"prompts": prompts} if prompts else {}))
    model = AudioLM(encoder, spec.compressor, projector, lm, tokenizer, config)
    if spec.lora:
        model.add_lora(**spec.lora)
    return model


def load_trained(directory: str | os.PathLike, is_trainable: bool = False):
    """Reload a model written by :func:`train` (``<output_dir>/final``): bases from the recorded
    sources, projector and LoRA from the folder. Returns ``(model, ModelSpec)``."""
    from lalm_fast.models import AudioLM

    path = Path(directory) / TRAIN_SPEC_FILE
    if not path.exists():
        raise ValueError(f"{directory} has no {TRAIN_SPEC_FILE}: it was not written by lalm_fast.train")
    spec = _spec(ModelSpec, json.loads(path.read_text())["model"], "model")
    encoder, lm, tokenizer = _load_bases(spec)
    return AudioLM.from_pretrained(directory, encoder, lm, tokenizer, is_trainable=is_trainable), spec


def load_encoder(spec: ModelSpec):
    """The spec's (frozen) audio encoder alone; tiny-random weights are seeded by ``spec.seed``."""
    from lalm_fast.models import pretrained, tiny

    if spec.encoder == TINY_RANDOM:
        torch.manual_seed(spec.seed)
        return tiny.tiny_encoder(mel_bins=spec.mel_bins, mel_frames=round(spec.window_seconds * 100))
    return pretrained.load_whisper_encoder(spec.encoder, spec.window_seconds)


def _load_bases(spec: ModelSpec):
    """(encoder, lm, tokenizer). tiny-random parts are seeded so a reload rebuilds the same weights."""
    from lalm_fast.models import pretrained, tiny

    torch.manual_seed(spec.seed)
    encoder = load_encoder(spec)
    if spec.lm == TINY_RANDOM:
        lm, tokenizer = tiny.tiny_lm(), tiny.tiny_tokenizer()
    else:
        lm, tokenizer = pretrained.load_causal_lm(spec.lm, getattr(torch, spec.lm_dtype))
    return encoder, lm, tokenizer


# ----- data -------------------------------------------------------------------------------------


class Dataset:
    """A manifest's usable utterances, their durations, and batch loading under the bad-data rules.

    Text and duration (manifest field, else the file header) are checked up front, so a missing
    file or an over-long clip is found before training; a file that only fails to decode is
    found when its batch is loaded. Either raises naming the file, or with ``skip_bad`` is counted
    in ``self.loader.skips``.
    """

    def __init__(self, utterances: list[Utterance], model_spec: ModelSpec, data_spec: DataSpec,
                 cache: Optional[FeatureCache] = None, encode=None):
        self.window, self.mel_bins, self.task = model_spec.window_seconds, model_spec.mel_bins, data_spec.task
        self.normalize = data_spec.normalize_targets
        self.loader = UtteranceLoader(max_seconds=self.window, skip_bad=data_spec.skip_bad,
                                      require_translation=_is_translation(self.task))
        checked = [(utt, self.loader.guarded(self._duration, utt)) for utt in utterances]
        self.utterances = [utt for utt, seconds in checked if seconds is not None]
        self.durations = [seconds for _, seconds in checked if seconds is not None]
        self.cache, self.encode, self._batch_size = cache, encode, data_spec.batch_size or 8
        if cache is not None:
            if encode is None:
                raise ValueError("a Dataset with a feature cache needs encode (waveforms -> encoder states)")
            # Encode what is not cached yet, once; clips that fail to decode are found (and
            # counted under skip_bad) here, before training, instead of when their batch loads.
            kept = {id(utt) for utt in cache.ensure(self.utterances, encode, self.loader, self._batch_size)}
            pairs = [(utt, seconds) for utt, seconds in zip(self.utterances, self.durations) if id(utt) in kept]
            self.utterances, self.durations = [u for u, _ in pairs], [d for _, d in pairs]
        if not self.utterances:
            raise ValueError(f"no usable utterances ({self.loader.skips})")

    @property
    def cached(self) -> bool:
        return self.cache is not None

    def _duration(self, utt: Utterance) -> float:
        self.loader.check_text(utt)
        seconds = utt.duration if utt.duration is not None else audio_duration(utt.audio)
        if seconds > self.window:
            raise AudioError(utt.audio, "too_long", f"clip is {seconds:.2f} s, longer than the {self.window:g} s window")
        return seconds

    def load(self, indices: list[int]):
        """``(features, mel_frames, targets, seconds)`` of the loadable ones among ``indices``; None if none is.
        With a cache: ``(encoder_states [B, T, D] float16, encoder_frames, targets, seconds)``;
        :func:`audio_inputs` names them for the model."""
        if self.cache is not None:
            return self._load_cached(indices)
        loaded = [(i, self.loader.guarded(self.loader.load, self.utterances[i])) for i in indices]
        loaded = [(i, audio) for i, audio in loaded if audio is not None]
        if not loaded:
            return None
        features, encoder_frames = log_mel([audio for _, audio in loaded], self.window, self.mel_bins)
        # AudioLM counts input (mel) frames; 2 per encoder frame.
        return self._batch([i for i, _ in loaded], features, encoder_frames * 2)

    def _load_cached(self, indices: list[int]):
        loaded = [(i, self._cached_states(self.utterances[i])) for i in indices]
        loaded = [(i, frames) for i, frames in loaded if frames is not None]
        if not loaded:
            return None
        states = torch.nn.utils.rnn.pad_sequence([frames for _, frames in loaded], batch_first=True)
        lengths = torch.tensor([len(frames) for _, frames in loaded], dtype=torch.long)
        return self._batch([i for i, _ in loaded], states, lengths)

    def _cached_states(self, utt: Utterance) -> Optional[torch.Tensor]:
        frames = self.cache.load(utt)
        if frames is None:  # removed or unreadable since the start: encode it again
            if self.cache.ensure([utt], self.encode, self.loader):
                frames = self.cache.load(utt)
        return frames

    def task_of(self, utt: Utterance) -> Any:
        """The task of one utterance: ``data.task``, or with ``"auto"`` translation into the target
        language of a pair ``lang`` (``"en-es"`` -> Spanish) when it has a translation, else transcription."""
        if self.task != AUTO_TASK:
            return self.task
        lang = (utt.lang or "").split("-")
        if len(lang) == 2 and utt.translation:
            return {"task": "translate", "lang": LANGUAGE_NAMES.get(lang[1], lang[1])}
        return "transcribe"

    def target(self, utt: Utterance) -> str:
        text = utt.translation if _is_translation(self.task_of(utt)) else utt.text
        return normalize_target(text) if self.normalize else text

    def _batch(self, indices: list[int], audio, lengths) -> "Batch":
        utts = [self.utterances[i] for i in indices]
        batch = Batch((audio, lengths, [self.target(u) for u in utts], sum(self.durations[i] for i in indices)))
        batch.tasks, batch.texts = [self.task_of(u) for u in utts], [u.text for u in utts]
        batch.ids = [u.id for u in utts]
        return batch


class Batch(tuple):
    """``(audio, lengths, targets, seconds)`` of :meth:`Dataset.load`, with ``tasks`` (one per sample),
    ``texts`` (the transcripts, whatever the task) and ``ids`` (the utterance ids) as attributes."""

    tasks: list
    texts: list[str]
    ids: list[str]


AUTO_TASK = "auto"              # data.task: per utterance, from its lang pair (see Dataset.task_of)
LANGUAGE_NAMES = {"es": "Spanish", "en": "English", "de": "German", "fr": "French", "it": "Italian",
                  "pt": "Portuguese", "ca": "Catalan", "zh": "Chinese", "ja": "Japanese", "nl": "Dutch"}


_PUNCTUATION = re.compile(r"[^\w\s']|_")


def normalize_target(text: str) -> str:
    """Lower case, punctuation (but apostrophes inside words) as spaces, spaces collapsed; accents kept
    (Spanish targets stay Spanish). What ``data.normalize_targets`` trains on."""
    text = _PUNCTUATION.sub(" ", text.lower())
    text = re.sub(r"(?<!\w)'|'(?!\w)", " ", text)
    return " ".join(text.split())


def _is_translation(task: Any) -> bool:
    return isinstance(task, dict) and task.get("task") == "translate"


def audio_inputs(dataset: Dataset, audio: torch.Tensor, lengths: torch.Tensor) -> dict:
    """The AudioLM keyword arguments for the first two items of ``dataset.load(...)``."""
    if dataset.cached:
        return {"encoder_states": audio, "encoder_lengths": lengths}
    return {"input_features": audio, "frame_lengths": lengths}


def _open_dataset(source: str, model_spec: ModelSpec, data_spec: DataSpec, run_dir: Path,
                  cache: Optional[FeatureCache] = None, encode=None) -> Dataset:
    if source.startswith(SYNTHETIC):
        utterances = make_synthetic(run_dir / "synthetic", int(source[len(SYNTHETIC):]), model_spec.seed)
    else:
        utterances = read_manifest(source)
    return Dataset(utterances, model_spec, data_spec, cache, encode)


def uses_cache(model_spec: ModelSpec, data_spec: DataSpec) -> bool:
    """Whether a run caches encoder outputs: ``data.cache``, by default on for a frozen encoder."""
    if data_spec.cache is None:
        return model_spec.freeze_encoder
    if data_spec.cache and not model_spec.freeze_encoder:
        raise ValueError("data.cache needs model.freeze_encoder: a trained encoder's outputs change every step")
    return bool(data_spec.cache)


def encoder_identity(spec: ModelSpec) -> str:
    """What makes cached encoder outputs reusable: the encoder source (with the seed for tiny-random
    weights, and the size and time of each weight file for a local folder), window and mel bins."""
    identity: dict[str, Any] = {"encoder": spec.encoder, "window_seconds": float(spec.window_seconds),
                                "mel_bins": spec.mel_bins}
    if spec.encoder == TINY_RANDOM:
        identity["seed"] = spec.seed
    elif Path(spec.encoder).is_dir():
        folder = Path(spec.encoder).resolve()
        identity["encoder"] = str(folder)
        identity["files"] = sorted([p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in folder.iterdir()
                                   if p.suffix in (".safetensors", ".bin", ".json") and p.is_file())
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    return f"{spec.encoder}|window={float(spec.window_seconds):g}s|mel={spec.mel_bins}|{digest}"


def feature_cache(model_spec: ModelSpec, data_spec: DataSpec, output_dir: Path) -> FeatureCache:
    root = Path(data_spec.cache_dir) if data_spec.cache_dir else output_dir / FEATURE_CACHE
    return FeatureCache(root, encoder_identity(model_spec), model_spec.window_seconds)


def make_synthetic(folder: Path, count: int, seed: int = 0) -> list[Utterance]:
    """``count`` clips of one tone per word (0.15 s each) over the tiny vocabulary, as FLAC + manifest.
    The same arguments write the same files, so repeated and resumed runs see the same data."""
    import soundfile as sf

    from lalm_fast.models.tiny import WORDS

    words, rate = WORDS[5:], 16000
    rng = np.random.default_rng(seed)
    t = np.arange(int(0.15 * rate)) / rate
    utterances = []
    for n in range(count):
        picked = [words[i] for i in rng.integers(0, len(words), size=int(rng.integers(2, 5)))]
        audio = np.concatenate([0.3 * np.sin(2 * np.pi * (200 + 90 * words.index(w)) * t) for w in picked])
        path = folder / f"utt{n:04d}.flac"
        if not path.exists():
            folder.mkdir(parents=True, exist_ok=True)
            sf.write(path, audio.astype(np.float32), rate)
        utterances.append(Utterance(audio=path, text=" ".join(picked), duration=len(audio) / rate))
    write_manifest(folder / "manifest.jsonl", utterances)
    return utterances


def epoch_batches(durations: list[float], data_spec: DataSpec, seed: int, epoch: int) -> list[list[int]]:
    """The batches of one epoch: length-bucketed, shuffled by (seed, epoch) only."""
    max_frames = data_spec.max_frames * 100 if data_spec.max_frames else None  # seconds -> mel frames
    lengths = [round(d * 100) for d in durations]
    return bucket_batches(lengths, batch_size=data_spec.batch_size, max_frames=max_frames,
                          seed=seed * 1_000_003 + epoch)


# ----- optimisation -----------------------------------------------------------------------------


def _optimizer(model, spec: OptimSpec) -> torch.optim.Optimizer:
    groups = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        is_projector = name.startswith("projector.")
        decays = param.ndim >= 2
        key = (is_projector, decays)
        groups.setdefault(key, {"params": [], "lr": spec.lr * (spec.projector_lr_scale if is_projector else 1.0),
                                "weight_decay": spec.weight_decay if decays else 0.0})["params"].append(param)
    return torch.optim.AdamW([groups[key] for key in sorted(groups)], lr=spec.lr)


# ----- checkpoints ------------------------------------------------------------------------------


@dataclass
class Position:
    step: int = 0       # optimizer steps done
    epoch: int = 0      # position in the data stream at that step
    batch: int = 0


def _trainable_state(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().cpu().contiguous() for name, p in model.named_parameters() if p.requires_grad}


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(folder: Path, position: Position, model, optimizer, scheduler, keep_last: int) -> Path:
    """Write ``folder/step-NNNNNNNN`` atomically: files go to a temporary folder, ``step.json``
    last, then one ``os.replace``; a crash leaves the previous checkpoints as they were."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"step-{position.step:08d}"
    if (target / STEP_FILE).exists():
        return target  # this step is saved already (e.g. the final save after a periodic one)
    shutil.rmtree(target, ignore_errors=True)  # an incomplete leftover of the same step
    with atomic_directory(target) as staging:
        save_file(_trainable_state(model), staging / "trainable.safetensors")
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": _rng_state()},
                   staging / "state.pt")
        (staging / STEP_FILE).write_text(json.dumps(asdict(position)))
    for old in _complete_checkpoints(folder)[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return target


def _complete_checkpoints(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if CHECKPOINT.match(p.name) and (p / STEP_FILE).exists()]
    return sorted(found, key=lambda p: p.name)


def latest_checkpoint(output_dir: str | os.PathLike) -> Optional[Path]:
    """The newest complete checkpoint of a run, or None."""
    found = _complete_checkpoints(Path(output_dir) / "checkpoints")
    return found[-1] if found else None


def load_checkpoint(path: Path, model, optimizer, scheduler) -> Position:
    from safetensors.torch import load_file

    weights = load_file(path / "trainable.safetensors")
    expected = set(_trainable_state(model))
    if set(weights) != expected:
        raise ValueError(f"{path}: checkpoint weights do not match the model's trainable parameters "
                         f"(missing {sorted(expected - set(weights))[:3]}, extra {sorted(set(weights) - expected)[:3]})")
    model.load_state_dict(weights, strict=False)
    state = torch.load(path / "state.pt", weights_only=False)  # our own file: holds numpy RNG state
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    _set_rng_state(state["rng"])
    return Position(**json.loads((path / STEP_FILE).read_text()))


# ----- evaluation -------------------------------------------------------------------------------


@torch.no_grad()
def evaluate_model(model, dataset: Dataset, data_spec: DataSpec, generate: Optional[int] = None) -> dict:
    """Token-weighted mean loss over ``dataset``, and WER (or BLEU for translation) of greedy
    decoding on its first ``generate`` utterances (default ``data_spec.eval_generate``)."""
    was_training = model.training
    model.eval()
    loss_sum, tokens, audio_tokens, seconds = 0.0, 0, 0, 0.0
    for indices in epoch_batches(dataset.durations, data_spec, seed=0, epoch=0):
        batch = dataset.load(indices)
        if batch is None:
            continue
        audio, lengths, targets, batch_seconds = batch
        out = model(**audio_inputs(dataset, audio, lengths), tasks=batch.tasks, targets=targets)
        n = int((out.inputs.labels[:, 1:] != -100).sum())  # the LM's loss is a mean over shifted targets
        loss_sum, tokens = loss_sum + out.loss.item() * n, tokens + n
        audio_tokens, seconds = audio_tokens + int(out.inputs.audio_lengths.sum()), seconds + batch_seconds
    result = {"loss": loss_sum / max(tokens, 1),
              "audio_tokens_per_second": audio_tokens_per_second(audio_tokens, seconds) if seconds else None}
    result.update(decode_metrics(model, dataset, data_spec, generate))
    model.train(was_training)
    return result


def decode_metrics(model, dataset: Dataset, data_spec: DataSpec, generate: Optional[int],
                   progress: Optional[str] = None) -> dict:
    """Greedy decoding of the first ``generate`` utterances in batches: WER and/or BLEU (by task),
    4 samples, and every ``decoded`` id / reference / hypothesis. ``progress``: a tqdm label."""
    from tqdm.auto import tqdm

    count = min(len(dataset.utterances), data_spec.eval_generate if generate is None else generate)
    references, hypotheses, kinds, ids = [], [], [], []
    step = data_spec.batch_size or 8
    for start in tqdm(range(0, count, step), desc=progress, unit="batch", disable=progress is None,
                      leave=False, dynamic_ncols=True):
        indices = list(range(start, min(start + step, count)))
        batch = dataset.load(indices)
        if batch is None:
            continue
        audio, lengths, targets, _ = batch
        hypotheses += model.generate(**audio_inputs(dataset, audio, lengths), tasks=batch.tasks,
                                     max_new_tokens=data_spec.max_new_tokens)
        references += targets
        kinds += ["bleu" if _is_translation(task) else "wer" for task in batch.tasks]
        ids += batch.ids
    if not references:
        return {}
    result: dict[str, Any] = {}
    for kind, score in (("wer", wer), ("bleu", bleu)):
        pairs = [(r, h) for r, h, k in zip(references, hypotheses, kinds) if k == kind]
        if pairs:
            result[kind] = score([r for r, _ in pairs], [h for _, h in pairs])
    result["samples"] = [{"reference": r, "hypothesis": h} for r, h in list(zip(references, hypotheses))[:4]]
    result["decoded"] = [{"id": i, "reference": r, "hypothesis": h} for i, r, h in zip(ids, references, hypotheses)]
    return result


def evaluate_to_files(model_dir: str | os.PathLike, manifest: str | os.PathLike, out_dir: str | os.PathLike,
                      generate: Optional[int] = None, skip_bad: bool = False) -> dict:
    """``lalm-fast eval``: score a trained model on a manifest; writes eval.json + eval.md."""
    model, spec = load_trained(model_dir)
    data_spec = _spec(DataSpec, json.loads((Path(model_dir) / TRAIN_SPEC_FILE).read_text())["data"], "data")
    data_spec.skip_bad = skip_bad
    dataset = Dataset(read_manifest(manifest), spec, data_spec)
    result = evaluate_model(model, dataset, data_spec, len(dataset.utterances) if generate is None else generate)
    report = EvalReport(f"{Path(manifest).name}: {model_dir}")
    report.add(f"{spec.encoder} + {spec.lm}, {model.compressor!r}",
               audio_tokens_per_second=result["audio_tokens_per_second"], wer=result.get("wer"),
               bleu=result.get("bleu"), loss=round(result["loss"], 4), skipped=dataset.loader.skips.total)
    out_dir = Path(out_dir)
    report.save(out_dir / "eval.json", out_dir / "eval.md")
    return result


# ----- projector warm-up: CTC onto the LM's own vocabulary ----------------------------------------

CTC_WARMUP = "ctc_warmup"       # <output_dir>/ctc_warmup/: the warmed-up projector + warmup.json


class CTCHead(torch.nn.Module):
    """Vocabulary logits of projected audio tokens: ``scale * h @ E[vocab]^T``, blank (index 0) from a
    learned vector. ``E`` is the LM's frozen input-embedding matrix (a buffer, never trained)."""

    def __init__(self, embeddings: torch.Tensor, vocab: torch.Tensor, cosine: bool = True, init_scale: float = 1.0):
        super().__init__()
        rows = embeddings.detach().float()[vocab]
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("vocab", vocab, persistent=False)
        self.cosine, self.norm = cosine, float(rows.norm(dim=-1).mean())  # mean embedding norm
        # Initial logits of about init_scale * norm * cos (cosine), or unit spread (dot product); learned.
        start = init_scale / self.norm if cosine else 1.0 / self.norm
        self.log_scale = torch.nn.Parameter(torch.tensor(float(torch.tensor(start).log())))
        self.blank = torch.nn.Parameter(torch.zeros(rows.shape[1]))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        table = torch.cat([self.blank[None], self.rows])
        hidden = hidden.float()
        if self.cosine:  # the direction picks the token; the norm is held by norm_penalty instead
            hidden = hidden / hidden.norm(dim=-1, keepdim=True).clamp(min=1e-6) * self.norm
        return self.log_scale.exp() * hidden @ table.T   # [B, T, 1 + V]

    def norm_penalty(self, hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Mean squared relative deviation of the valid audio tokens' norms from the embeddings' mean norm."""
        valid = torch.arange(hidden.shape[1], device=hidden.device)[None] < lengths.to(hidden.device)[:, None]
        return ((hidden.float().norm(dim=-1)[valid] / self.norm - 1) ** 2).mean()


def _ctc_vocab(core, texts: list[str], full: bool) -> tuple[torch.Tensor, dict[int, int]]:
    size = core.lm.get_input_embeddings().weight.shape[0]
    if full:
        ids = list(range(size))
    else:
        ids = sorted({i for text in texts for i in core._target_ids(text)[:-1]})
    return torch.tensor(ids, dtype=torch.long), {token: n + 1 for n, token in enumerate(ids)}  # 0 = blank


def ctc_warmup(core, dataset: Dataset, config: "TrainConfig", output_dir: Path, progress: bool = True) -> dict:
    """Align the projector before LM training (:class:`AlignSpec`); resumable: a finished warm-up in
    ``<output_dir>/ctc_warmup`` is loaded instead of rerun. Returns a summary (losses, seconds, ...)."""
    import time

    from safetensors.torch import load_file, save_file
    from tqdm.auto import tqdm

    from lalm_fast.nn import build_compressor

    spec = config.align
    if spec.vocab not in ("train", "full"):
        raise ValueError(f"align.vocab must be 'train' or 'full', got {spec.vocab!r}")
    folder = output_dir / CTC_WARMUP
    settings = asdict(spec)
    if (folder / "warmup.json").exists():
        saved = json.loads((folder / "warmup.json").read_text())
        if saved.get("settings") == settings:
            core.projector.load_state_dict(load_file(folder / "projector.safetensors"))
            return saved
        # the align settings changed since that warm-up: run it again (the folder is replaced below)
    started = time.perf_counter()
    texts = [normalize_target(u.text) if dataset.normalize else u.text for u in dataset.utterances]
    vocab, index = _ctc_vocab(core, texts, spec.vocab == "full")
    device = core.projector[0].weight.device
    head = CTCHead(core.lm.get_input_embeddings().weight.to(device), vocab.to(device), spec.match_norm,
                   spec.init_scale).to(device)
    params = list(core.projector.parameters()) + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=spec.lr, weight_decay=0.0)
    warm = max(1, spec.ctc_steps // 20)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / warm) * max(0.05, 1 - step / spec.ctc_steps))
    saved_compressor = core.compressor
    if spec.compressor is not None:
        core.compressor = build_compressor(spec.compressor)
    data_spec = replace(config.data, batch_size=spec.batch_size or config.data.batch_size)
    losses, infeasible, seen = [], 0, 0
    bar = tqdm(total=spec.ctc_steps, desc="ctc warm-up", disable=not progress)
    rng_state = torch.get_rng_state()
    try:
        epoch, batches = 0, []
        core.projector.train()
        while len(losses) < spec.ctc_steps:
            if not batches:
                batches = epoch_batches(dataset.durations, data_spec, config.run.seed + 7919, epoch)
                epoch += 1
            batch = dataset.load(batches.pop(0))
            if batch is None:
                continue
            audio, lengths, _, _ = batch
            targets = [normalize_target(t) if dataset.normalize else t for t in batch.texts]  # the speech, any task
            compressed = core._audio(*_audio_args(dataset, audio, lengths))
            hidden = core.projector(compressed.values.to(core.projector[0].weight.dtype))
            logits = head(hidden)
            log_probs = logits.log_softmax(-1).transpose(0, 1)          # [T, B, C]
            target_ids = [[index[i] for i in core._target_ids(t)[:-1] if i in index] for t in targets]
            target_lengths = torch.tensor([len(t) for t in target_ids], dtype=torch.long)
            flat = torch.tensor([i for t in target_ids for i in t], dtype=torch.long, device=device)
            input_lengths = compressed.lengths.to("cpu", torch.long)
            infeasible += int((input_lengths < target_lengths).sum())
            seen += len(targets)
            loss = torch.nn.functional.ctc_loss(log_probs, flat, input_lengths, target_lengths, blank=0,
                                                reduction="mean", zero_infinity=True)
            if spec.match_norm:
                loss = loss + head.norm_penalty(hidden, compressed.lengths)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
    finally:
        bar.close()
        core.compressor = saved_compressor
        torch.set_rng_state(rng_state)  # the LM phase starts from the same RNG with or without a warm-up
    summary = {"steps": len(losses), "seconds": round(time.perf_counter() - started, 2), "vocab": len(vocab),
               "settings": settings, "infeasible_fraction": infeasible / max(seen, 1),
               "loss_first": losses[0], "loss_last": float(np.mean(losses[-10:])),
               "losses": [round(x, 4) for x in losses]}
    with atomic_directory(folder, replace_existing=True) as staging:  # settings changed: a new warm-up
        save_file({k: v.detach().contiguous().cpu() for k, v in core.projector.state_dict().items()},
                  staging / "projector.safetensors")
        (staging / "warmup.json").write_text(json.dumps(summary))
    return summary


def _audio_args(dataset: Dataset, audio: torch.Tensor, lengths: torch.Tensor) -> tuple:
    """Positional arguments of ``AudioLM._audio`` for a loaded batch."""
    return (None, None, audio, lengths) if dataset.cached else (audio, lengths, None, None)


# ----- the training loop ------------------------------------------------------------------------


@dataclass
class TrainResult:
    step: int
    losses: list[float]                     # training loss of each optimizer step run in this call
    evals: list[dict]
    skips: SkipReport
    final_dir: Optional[Path]
    output_dir: Path
    warmup: Optional[dict] = None           # ctc_warmup's summary when it ran (or was loaded) in this call


class _Stream:
    """Micro-batches in a fixed order: this process's share of each epoch's batches, epoch after epoch."""

    def __init__(self, dataset: Dataset, data_spec: DataSpec, seed: int, rank: int, world: int):
        self.dataset, self.data_spec, self.seed, self.rank, self.world = dataset, data_spec, seed, rank, world
        self._plans: dict[int, list[list[int]]] = {}

    def _plan(self, epoch: int) -> list[list[int]]:
        if epoch not in self._plans:
            batches = epoch_batches(self.dataset.durations, self.data_spec, self.seed, epoch)
            usable = len(batches) // self.world * self.world  # every process takes the same number of steps
            if usable == 0:
                raise ValueError(f"{len(batches)} batch(es) per epoch cannot be shared by {self.world} processes")
            self._plans = {epoch: batches[self.rank:usable:self.world]}
        return self._plans[epoch]

    def next(self, position: Position) -> list[int]:
        """The micro-batch at ``position`` (advanced in place)."""
        if position.batch >= len(self._plan(position.epoch)):
            position.epoch, position.batch = position.epoch + 1, 0
        indices = self._plan(position.epoch)[position.batch]
        position.batch += 1
        return indices


def train(config: TrainConfig, resume: bool = False) -> TrainResult:
    """Train per ``config``; with ``resume``, continue from the newest complete checkpoint in
    ``config.run.output_dir`` (same data order and RNG, so the same result as one run)."""
    from accelerate import Accelerator
    from transformers import get_cosine_schedule_with_warmup

    run, optim = config.run, config.optim
    output_dir = Path(run.output_dir)
    accelerator = Accelerator(mixed_precision=_mixed_precision(run.mixed_precision))
    model = build_model(config.model)
    optimizer = _optimizer(model, optim)
    scheduler = get_cosine_schedule_with_warmup(optimizer, optim.warmup_steps, optim.total_steps)
    # The scheduler stays outside prepare(): accelerate would step it once per process.
    model, optimizer = accelerator.prepare(model, optimizer)
    core = accelerator.unwrap_model(model)
    cache, encode = None, None
    if uses_cache(config.model, config.data):  # encode on the training device, after prepare()
        cache = feature_cache(config.model, config.data, output_dir)
        encode = whisper_encode_fn(core.encoder, config.model.window_seconds, config.model.mel_bins,
                                   accelerator.device)
    # The main process writes synthetic clips and encodes missing cache entries first; the others
    # then find them (FeatureCache writes are atomic either way).
    with accelerator.main_process_first():
        train_set = _open_dataset(config.data.train, config.model, config.data, output_dir, cache, encode)
        eval_set = (_open_dataset(config.data.eval, config.model, config.data, output_dir, cache, encode)
                    if config.data.eval else None)
    checkpoint = latest_checkpoint(output_dir) if resume else None
    warmup = None
    if config.align.ctc_steps > 0 and checkpoint is None:
        warmup = ctc_warmup(core, train_set, config, output_dir,
                            progress=run.progress and accelerator.is_main_process)
    position = load_checkpoint(checkpoint, core, optimizer, scheduler) if checkpoint else _fresh_start(run.seed)
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        with atomic_write(output_dir / "config.json") as handle:
            json.dump(config.to_dict(), handle, indent=2)
    stream = _Stream(train_set, config.data, run.seed, accelerator.process_index, accelerator.num_processes)
    loop = _Loop(config, accelerator, model, optimizer, scheduler, stream, eval_set, output_dir)
    loop.run(position)
    final_dir = loop.save_final(position)
    return TrainResult(position.step, loop.losses, loop.evals, train_set.loader.skips, final_dir, output_dir, warmup)


def _fresh_start(seed: int) -> Position:
    torch.manual_seed(seed)  # dropout draws start from the run's seed, as a resume restores them
    return Position()


def _mixed_precision(setting: str) -> str:
    if setting == "auto":
        return "bf16" if torch.cuda.is_available() else "no"
    if setting not in ("no", "bf16", "fp16"):
        raise ValueError(f"run.mixed_precision must be auto, no, bf16 or fp16, got {setting!r}")
    return setting


class _Loop:
    """The optimizer-step loop; on any error it saves the last completed step before re-raising,
    so nothing already trained is lost (a bad file mid-epoch, Ctrl-C, ...)."""

    def __init__(self, config, accelerator, model, optimizer, scheduler, stream, eval_set, output_dir):
        self.config, self.accelerator, self.model = config, accelerator, model
        self.optimizer, self.scheduler, self.stream, self.eval_set = optimizer, scheduler, stream, eval_set
        self.output_dir, self.checkpoints = output_dir, output_dir / "checkpoints"
        self.losses: list[float] = []
        self.evals: list[dict] = []

    def run(self, position: Position) -> None:
        from tqdm.auto import tqdm

        total = self.config.optim.total_steps
        bar = tqdm(total=total, initial=position.step, desc="train",
                   disable=not (self.config.run.progress and self.accelerator.is_main_process))
        saved = Position(**asdict(position))
        try:
            while position.step < total:
                trial = Position(**asdict(position))
                loss = self._step(trial)
                position.__dict__.update(asdict(trial))  # only a completed step moves the position
                self.losses.append(loss)
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}", lr=f"{self.scheduler.get_last_lr()[0]:.2e}")
                self._periodic(position)
        except BaseException:
            if position.step > saved.step:
                self._save(position)
            raise
        finally:
            bar.close()

    def _step(self, position: Position) -> float:
        """One optimizer step over ``grad_accum`` micro-batches; advances ``position``."""
        model, accum = self.model, self.config.optim.grad_accum
        model.train()
        total = 0.0
        for micro in range(accum):
            batch = self.stream.dataset.load(self.stream.next(position))
            if batch is None:
                continue  # every utterance of this micro-batch was skipped (counted) under skip_bad
            audio, lengths, targets, _ = batch
            inputs = audio_inputs(self.stream.dataset, audio, lengths)
            # Gradients are all-reduced only on the last micro-batch.
            sync = contextlib.nullcontext() if micro == accum - 1 else self.accelerator.no_sync(model)
            with sync:
                loss = model(**inputs, tasks=batch.tasks, targets=targets).loss / accum
                self.accelerator.backward(loss)
            total += loss.item()
        if self.config.optim.max_grad_norm:
            self.accelerator.clip_grad_norm_(self.model.parameters(), self.config.optim.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        position.step += 1
        return total

    def _periodic(self, position: Position) -> None:
        run, step = self.config.run, position.step
        if run.eval_every and step % run.eval_every == 0 and self.eval_set is not None:
            self._evaluate(step)
        if run.save_every and step % run.save_every == 0:
            self._save(position)

    def _evaluate(self, step: int) -> dict:
        result = evaluate_model(self.accelerator.unwrap_model(self.model), self.eval_set, self.config.data)
        record = {"step": step, "loss": result["loss"], **_metric_summary(result)}
        self.evals.append(record)
        if self.accelerator.is_main_process:
            with open(self.output_dir / "metrics.jsonl", "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
        return record

    def _save(self, position: Position) -> None:
        if self.accelerator.is_main_process:
            save_checkpoint(self.checkpoints, position, self.accelerator.unwrap_model(self.model), self.optimizer,
                            self.scheduler, self.config.run.keep_last)
        self.accelerator.wait_for_everyone()

    def save_final(self, position: Position) -> Optional[Path]:
        """Last checkpoint, last evaluation, and ``final/`` (projector + LoRA + how to rebuild the bases)."""
        self._save(position)
        if self.eval_set is not None and not (self.evals and self.evals[-1]["step"] == position.step):
            self._evaluate(position.step)
        if not self.accelerator.is_main_process:
            return None
        final = self.output_dir / "final"
        self.accelerator.unwrap_model(self.model).save_pretrained(final)
        with atomic_write(final / TRAIN_SPEC_FILE) as handle:
            json.dump({"model": asdict(self.config.model), "data": asdict(self.config.data)}, handle, indent=2)
        return final


def _metric_summary(result: dict) -> dict:
    summary = {}
    if "wer" in result:
        summary["wer"] = result["wer"].wer
    if "bleu" in result:
        summary["bleu"] = result["bleu"].score
    if result.get("samples"):
        summary["sample"] = result["samples"][0]
    return summary
