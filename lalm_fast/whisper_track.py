"""``lalm-fast reproduce --track whisper``: compression inside a pretrained Whisper, then decoder LoRA.

1. the synthetic English ASR corpora (:mod:`lalm_fast.data.corpora`: held-out sentences and
   voices, a ``voice_group`` per test utterance);
2. Whisper's encoder outputs cached once per utterance (:class:`~lalm_fast.data.FeatureCache`,
   float32, valid frames of the 30 s window): the encoder is frozen, so every configuration
   trains and scores from the cache;
3. per configuration (``CONFIGURATIONS``: none, uniform x2/x3/x4, downsample x2/x3, segment
   rate 2/3/4; :func:`lalm_fast.integrations.whisper.apply_compression`): greedy WER zero-shot,
   then with a decoder LoRA (:func:`~lalm_fast.integrations.whisper.decoder_lora_config`) trained
   by each of ``METHODS``:

   - ``transcripts``: cross-entropy on the reference transcripts;
   - ``distill``: self-distillation. The teacher is the same Whisper as shipped (no compression,
     no LoRA, its full 30 s window); its greedy transcript of each training clip is the target, with the same
     cross-entropy (sequence-level distillation). Greedy tokens rather than the teacher's
     logits (KL): they are computed once, stored as a few ids per clip and shared by every
     configuration and seed, and a training step then costs what a transcript step costs;
     matching the full 51k-way distribution would need a teacher forward per step (or
     gigabytes of stored logits) on a 2-core CPU. No labels are read;

4. the report (:mod:`lalm_fast.whisper_report`): ``report.md`` / ``.json`` / ``.png`` and
   ``adapters/<configuration>/`` for the better method.

Resumable: every unit (zero-shot scoring, or one configuration x method x seed) writes its
``metrics.json`` atomically (its adapter first); a rerun skips finished units and an interrupted
training continues from its last checkpoint. The corpora, the feature cache, the teacher's
targets and the shipped-Whisper baseline are reused too.
"""

from __future__ import annotations

import copy
import json
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

__all__ = ["CONFIGURATIONS", "METHODS", "TWO_SEED_CONFIGURATIONS", "PRESETS", "WhisperPreset", "Split",
           "load_model", "prepare_splits", "cached_split", "teacher_targets", "greedy_tokens", "evaluate", "train_lora", "run"]

CONFIGURATIONS = {
    "none": "none", "uniform-x2": "uniform:2", "uniform-x3": "uniform:3", "uniform-x4": "uniform:4",
    "downsample-x2": "downsample:2", "downsample-x3": "downsample:3",
    "segment-rate2": "segment:rate=2", "segment-rate3": "segment:rate=3", "segment-rate4": "segment:rate=4",
}
METHODS = ("transcripts", "distill")
TWO_SEED_CONFIGURATIONS = ("none", "uniform-x3", "segment-rate3")
WINDOW_SECONDS = 30.0   # Whisper's own window: the cached frames are what the shipped model reads
TINY_RANDOM = "tiny-random"


@dataclass
class WhisperPreset:
    model: str                          # packaged:NAME, a local folder, or tiny-random
    corpus: Optional[dict]              # build_corpora sizes; None: synthetic tones (tiny)
    train_utterances: Optional[int]     # the first N training utterances; None: all
    test_utterances: Optional[int]
    steps: int                          # LoRA steps per (configuration, method, seed)
    batch_size: int
    lr: float = 1e-3
    warmup_steps: int = 10
    lora: dict = field(default_factory=lambda: {"r": 16, "lora_alpha": 32})
    max_new_tokens: int = 64            # a 20-word verse is ~30 tokens; bounds a repetition loop
    eval_batch_size: int = 16
    save_every: int = 25
    seeds: int = 2                      # for TWO_SEED_CONFIGURATIONS; the others get one
    baseline: bool = True               # score the shipped model (own decoder, all 1500 frames)
    cuts: str = ""


PRESETS = {
    # Sized from measured costs on a 2-core CPU (docs/whisper-track.md, "Costs"): one LoRA step
    # of 16 utterances ~0.9 s, an adapted evaluation ~75 ms per utterance, a zero-shot one up to
    # ~2 s per utterance (the masked models often repeat until max_new_tokens).
    "quick": WhisperPreset("packaged:tiny.en", {"n_train": 400, "n_test": 100}, train_utterances=400,
                           test_utterances=60, steps=50, batch_size=16, max_new_tokens=48,
                           cuts="400 training utterances (the LALM quick corpora), 50 LoRA steps of 16 "
                                "utterances per run (2 epochs), the first 60 of the 100 held-out test "
                                "utterances, at most 48 decoded tokens"),
    "tiny": WhisperPreset(TINY_RANDOM, None, train_utterances=None, test_utterances=4, steps=4, batch_size=4,
                          lr=1e-2, warmup_steps=1, lora={"r": 4, "lora_alpha": 8}, max_new_tokens=6,
                          eval_batch_size=4, save_every=2, baseline=False,
                          cuts="a tiny random-weight Whisper on 8 synthetic tone clips: a pipeline check, "
                               "not a result"),
}


# ----- model ------------------------------------------------------------------------------------


def load_model(source: str) -> tuple[Any, Any, str]:
    """``(model, tokenizer, identity)`` in eval mode. ``tiny-random``: the packaged tiny.en's
    config, tokenizer and generation settings with 1-layer, 32-wide random weights."""
    from lalm_fast.models import pretrained

    if source != TINY_RANDOM:
        model, processor = pretrained.load_whisper_model(source)
        return model, processor.tokenizer, _identity(source)
    from transformers import GenerationConfig, WhisperConfig, WhisperForConditionalGeneration, WhisperTokenizer

    folder = pretrained.whisper_folder("packaged:tiny.en")
    config = WhisperConfig.from_pretrained(folder)
    for name, value in {"d_model": 32, "encoder_layers": 1, "decoder_layers": 1, "encoder_attention_heads": 2,
                        "decoder_attention_heads": 2, "encoder_ffn_dim": 32, "decoder_ffn_dim": 32}.items():
        setattr(config, name, value)
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig.from_pretrained(folder)
    return model, WhisperTokenizer(tokenizer_file=str(folder / "tokenizer.json")), "tiny-random-v1"


def _identity(source: str) -> str:
    from lalm_fast.models.pretrained import WHISPER

    name = source.removeprefix("packaged:")
    if source.startswith("packaged:") and name in WHISPER:
        return f"whisper-{name}:{WHISPER[name].sha256[:16]}"
    weights = Path(source) / "model.safetensors"
    stat = weights.stat() if weights.exists() else Path(source).stat()
    return f"{Path(source).resolve()}:{stat.st_size}:{stat.st_mtime_ns}"


# ----- data -------------------------------------------------------------------------------------


@dataclass
class Split:
    """Utterances with their cached encoder frames (``[T, D]`` float32, valid frames only)."""

    utterances: list
    frames: list

    @property
    def audio_seconds(self) -> float:
        return sum(len(f) for f in self.frames) / 50.0

    def groups(self) -> list:
        return [u.extra.get("voice_group") for u in self.utterances]


def prepare_splits(preset: WhisperPreset, data_dir: Path, cache_dir: Path, model, identity: str,
                   seed: int) -> tuple[Split, Split, dict]:
    """Build (or reuse) the corpora, encode every clip into the cache once, return train and test."""
    from lalm_fast.data import read_manifest
    from lalm_fast.reproduce import ensure_corpora

    info = ensure_corpora(data_dir, preset.corpus, seed)
    train = read_manifest(data_dir / "asr_train.jsonl")[:preset.train_utterances]
    test = read_manifest(data_dir / "asr_test.jsonl")[:preset.test_utterances]
    splits = [cached_split(utts, model, identity, cache_dir, name) for name, utts in (("train", train), ("test", test))]
    return splits[0], splits[1], info


def cached_split(utterances: list, model, identity: str, cache_dir: Path, name: str) -> Split:
    """``utterances`` with their encoder outputs, encoded into ``cache_dir`` once (unusable clips are skipped)."""
    from lalm_fast.data import FeatureCache, UtteranceLoader, whisper_encode_fn

    cache = FeatureCache(cache_dir, identity, WINDOW_SECONDS, dtype=torch.float32)
    loader = UtteranceLoader(sample_rate=16000, max_seconds=WINDOW_SECONDS, skip_bad=True)
    encode = whisper_encode_fn(model.model.encoder, WINDOW_SECONDS, model.config.num_mel_bins)
    kept = cache.ensure(utterances, encode, loader)
    if cache.stats.encoded:
        print(f"== {name}: encoded {cache.stats.encoded} clips into {cache_dir}", flush=True)
    if not kept:
        raise ValueError(f"no usable {name} utterances: {loader.skips}")
    return Split(kept, [cache.load(u).float() for u in kept])


def encoder_batch(frames: Sequence[torch.Tensor]):
    """Padded encoder outputs and the mel-frame mask that gives each clip's valid frames."""
    from transformers.modeling_outputs import BaseModelOutput

    lengths = torch.tensor([len(f) for f in frames])
    hidden = torch.nn.utils.rnn.pad_sequence(list(frames), batch_first=True)
    mel_mask = (torch.arange(2 * hidden.shape[1])[None, :] < 2 * lengths[:, None]).long()
    return BaseModelOutput(last_hidden_state=hidden), mel_mask


# ----- decoding and scoring ---------------------------------------------------------------------


def greedy_tokens(model, frames: Sequence[torch.Tensor], max_new_tokens: int) -> list[list[int]]:
    """Greedy transcript ids (no prompt, cut before end-of-text) of each clip; ``model`` compressed."""
    from lalm_fast.integrations.whisper import compress_encoder_output

    encoder_outputs, mel_mask = encoder_batch(frames)
    eot = model.generation_config.eos_token_id
    with torch.inference_mode():
        compressed = compress_encoder_output(model, encoder_outputs, mel_mask)
        out = model.generate(encoder_outputs=compressed, do_sample=False, num_beams=1,
                             max_new_tokens=max_new_tokens, return_timestamps=False)
    rows = []
    for row in out.tolist():
        rows.append(row[:row.index(eot)] if eot in row else row)
    return rows


def _batches(n: int, size: int, lengths: Optional[list] = None) -> list[list[int]]:
    order = sorted(range(n), key=lambda i: lengths[i]) if lengths else list(range(n))
    return [order[i:i + size] for i in range(0, n, size)]


def decode_split(model, split: Split, batch_size: int, max_new_tokens: int, desc: str = "") -> tuple[list, float]:
    """Greedy token ids per utterance (in order) and the decoding seconds."""
    from tqdm.auto import tqdm

    tokens: list = [None] * len(split.frames)
    started = time.perf_counter()
    for batch in tqdm(_batches(len(split.frames), batch_size, [len(f) for f in split.frames]), desc=desc,
                      unit="batch", leave=False, dynamic_ncols=True):
        for i, row in zip(batch, greedy_tokens(model, [split.frames[i] for i in batch], max_new_tokens)):
            tokens[i] = row
    return tokens, time.perf_counter() - started


def evaluate(model, tokenizer, split: Split, spec: str, batch_size: int, max_new_tokens: int,
             desc: str = "") -> dict:
    """WER overall and per voice group (as decoded, and after the repetition guard), audio tokens per
    second and decode speed of a compressed model."""
    from lalm_fast.evaluate import wer, wer_by_group
    from lalm_fast.evaluate.repetition import guarded_wer
    from lalm_fast.nn import build_compressor

    tokens, seconds = decode_split(model, split, batch_size, max_new_tokens, desc)
    hypotheses = [t.strip() for t in tokenizer.batch_decode(tokens, skip_special_tokens=True)]
    references = [u.text for u in split.utterances]
    compressor = build_compressor(spec)
    with torch.no_grad():
        counts = [int(compressor(f[None], torch.tensor([len(f)])).lengths[0]) for f in split.frames]
    result = wer(references, hypotheses)
    guarded, guarded_groups = guarded_wer(references, hypotheses, split.groups())
    return {"compressor": spec, "wer": result.wer, "wer_detail": asdict(result),
            "wer_groups": {g: r.wer for g, r in wer_by_group(references, hypotheses, split.groups()).items()},
            "wer_guarded": guarded.wer, "wer_groups_guarded": {g: r.wer for g, r in guarded_groups.items()},
            "audio_tokens_per_second": sum(counts) / split.audio_seconds,
            "decode_ms_per_utterance": 1000 * seconds / len(tokens), "decode_seconds": round(seconds, 2),
            "predictions": [{"id": u.id, "reference": r, "hypothesis": h, "audio_tokens": c}
                            for u, r, h, c in zip(split.utterances, references, hypotheses, counts)]}


# ----- targets ----------------------------------------------------------------------------------


def prompt_ids(tokenizer) -> list[int]:
    """The decoder prompt (start of transcript, language / task, no timestamps) of ``tokenizer``."""
    return tokenizer("").input_ids[:-1]


def transcript_targets(tokenizer, split: Split) -> list[list[int]]:
    """Prompt + reference tokens (leading space, as Whisper writes) + end of text."""
    return [tokenizer(" " + u.text.strip()).input_ids for u in split.utterances]


def teacher_targets(model, tokenizer, split: Split, preset: WhisperPreset, path: Optional[Path] = None,
                    identity: str = "") -> list[list[int]]:
    """Prompt + the shipped model's greedy transcript + end of text, per training clip.

    The teacher is ``model`` as shipped: no LoRA, no compression, and its full 30 s window,
    silence padding included. It is not the masked ``none`` configuration: with the padding
    hidden, tiny.en often repeats the sentence instead of stopping, and a student taught that
    would learn the repetition. ``model`` must be unpatched. Stored in ``path`` and reused while
    the model, the clips and the decoding length are the same."""
    from lalm_fast.data.files import atomic_write

    key = {"teacher": "shipped", "model": identity, "max_new_tokens": preset.max_new_tokens, "ids": [u.id for u in split.utterances]}
    if path is not None and path.exists():
        stored = json.loads(path.read_text())
        if stored["key"] == key:
            return stored["targets"]
    tokens = shipped_greedy_tokens(model, split.utterances, preset.eval_batch_size, preset.max_new_tokens)
    prompt, eot = prompt_ids(tokenizer), model.generation_config.eos_token_id
    targets = [prompt + row + [eot] for row in tokens]
    if path is not None:
        with atomic_write(path) as handle:
            json.dump({"key": key, "targets": targets}, handle)
    return targets


def shipped_greedy_tokens(model, utterances: list, batch_size: int, max_new_tokens: int) -> list[list[int]]:
    """Greedy ids (no prompt, cut before end of text) of the unpatched model on each clip's audio."""
    from tqdm.auto import tqdm

    from lalm_fast.data import UtteranceLoader, log_mel

    loader = UtteranceLoader(sample_rate=16000, max_seconds=WINDOW_SECONDS, skip_bad=False)
    audio = [a for _, a in loader.iter_loaded(utterances)]
    eot = model.generation_config.eos_token_id
    rows = []
    for start in tqdm(range(0, len(audio), batch_size), desc="teacher", unit="batch", leave=False):
        features, _ = log_mel(audio[start:start + batch_size], WINDOW_SECONDS, model.config.num_mel_bins)
        with torch.inference_mode():
            out = model.generate(features, do_sample=False, num_beams=1, max_new_tokens=max_new_tokens,
                                 return_timestamps=False)
        rows += [row[:row.index(eot)] if eot in row else row for row in out.tolist()]
    return rows


# ----- LoRA training ----------------------------------------------------------------------------


CHECKPOINT = "checkpoint.pt"


def train_lora(base, spec: str, split: Split, targets: list[list[int]], prompt: int, preset: WhisperPreset,
               seed: int, run_dir: Optional[Path] = None, progress: bool = True):
    """A decoder-LoRA copy of ``base`` trained with compression ``spec`` on ``targets`` (full
    decoder sequences, the first ``prompt`` tokens the prompt, which the loss skips). Batches depend on
    (seed, step) only, and a checkpoint is written every ``save_every`` steps into ``run_dir``,
    so an interrupted run continues where it stopped. Returns the PeftModel, compressed."""
    from peft import get_peft_model
    from tqdm.auto import tqdm

    from lalm_fast.integrations.whisper import apply_compression, decoder_lora_config

    torch.manual_seed(seed)
    model = get_peft_model(apply_compression(copy.deepcopy(base), spec), decoder_lora_config(**preset.lora))
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=preset.lr,
                                  weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(preset))
    step = _resume(model, optimizer, schedule, run_dir)
    for step in tqdm(range(step, preset.steps), initial=step, total=preset.steps, desc=f"LoRA {spec}",
                     leave=False, disable=not progress, dynamic_ncols=True):
        batch = _batch_indices(len(split.frames), preset.batch_size, seed, step)
        _train_step(model, optimizer, schedule, [split.frames[i] for i in batch], [targets[i] for i in batch], prompt)
        if run_dir is not None and (step + 1) % preset.save_every == 0 and step + 1 < preset.steps:
            _save_checkpoint(model, optimizer, schedule, step + 1, run_dir)
    return model.eval()


def _lr_lambda(preset: WhisperPreset):
    def factor(step: int) -> float:   # linear warm-up, then linear decay to zero
        if step < preset.warmup_steps:
            return (step + 1) / preset.warmup_steps
        return max(0.0, (preset.steps - step) / max(1, preset.steps - preset.warmup_steps))
    return factor


def _batch_indices(n: int, size: int, seed: int, step: int) -> list[int]:
    generator = torch.Generator().manual_seed(seed * 1_000_003 + step)
    return torch.randperm(n, generator=generator)[:size].tolist()


def _train_step(model, optimizer, schedule, frames: list, targets: list[list[int]], prompt: int) -> float:
    encoder_outputs, mel_mask = encoder_batch(frames)
    longest = max(len(t) for t in targets)
    ids = torch.tensor([t + [t[-1]] * (longest - len(t)) for t in targets])
    labels = ids[:, 1:].clone()
    positions = torch.arange(longest - 1)[None, :]
    lengths = torch.tensor([len(t) for t in targets])[:, None]
    labels[(positions < prompt - 1) | (positions >= lengths - 1)] = -100   # score the transcript + end of text
    logits = model(encoder_outputs=encoder_outputs, attention_mask=mel_mask, decoder_input_ids=ids[:, :-1]).logits
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
    optimizer.step()
    schedule.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


def _lora_state(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items() if "lora_" in k}


def _save_checkpoint(model, optimizer, schedule, step: int, run_dir: Path) -> None:
    from lalm_fast.data.files import atomic_path

    state = {"step": step, "lora": _lora_state(model), "optimizer": optimizer.state_dict(),
             "schedule": schedule.state_dict()}
    with atomic_path(run_dir / CHECKPOINT) as tmp:
        torch.save(state, tmp)


def _resume(model, optimizer, schedule, run_dir: Optional[Path]) -> int:
    path = run_dir / CHECKPOINT if run_dir is not None else None
    if path is None or not path.exists():
        return 0
    state = torch.load(path, weights_only=True)
    missing = set(state["lora"]) - set(model.state_dict())
    if missing:
        raise ValueError(f"{path} does not fit this model (unknown keys {sorted(missing)[:3]}); delete it")
    model.load_state_dict(state["lora"], strict=False)
    optimizer.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["schedule"])
    print(f"== resumed {run_dir} at step {state['step']}", flush=True)
    return state["step"]


# ----- units of work ----------------------------------------------------------------------------


@dataclass
class Context:
    """What every unit of the run reads."""

    out: Path
    preset: WhisperPreset
    base: Any
    tokenizer: Any
    train: Split
    test: Split
    targets: dict          # method -> per training clip targets (distill computed on first use)
    identity: str


def unit_dir(out: Path, configuration: str, method: str, seed: Optional[int]) -> Path:
    return out / "runs" / configuration / (method if seed is None else f"{method}-seed{seed}")


def zero_shot(ctx: Context, configuration: str) -> dict:
    """Score ``configuration`` without training (skipped when its metrics exist)."""
    from lalm_fast.integrations.whisper import compression

    run_dir = unit_dir(ctx.out, configuration, "zero-shot", None)
    done = _finished(run_dir)
    if done is not None:
        return done
    spec = CONFIGURATIONS[configuration]
    with compression(ctx.base, spec):
        metrics = evaluate(ctx.base, ctx.tokenizer, ctx.test, spec, ctx.preset.eval_batch_size,
                           ctx.preset.max_new_tokens, f"zero-shot {configuration}")
    return _write_metrics(run_dir, {"configuration": configuration, "method": "zero-shot",
                                    **metrics})


def adapted(ctx: Context, configuration: str, method: str, seed: int) -> dict:
    """Train, save and score one LoRA (skipped when its metrics exist, resumed when interrupted)."""
    from lalm_fast.integrations.lora import save_adapter

    run_dir = unit_dir(ctx.out, configuration, method, seed)
    done = _finished(run_dir)
    if done is not None:
        return done
    spec = CONFIGURATIONS[configuration]
    wall, cpu = time.perf_counter(), time.process_time()
    model = train_lora(ctx.base, spec, ctx.train, _targets(ctx, method),
                       len(prompt_ids(ctx.tokenizer)), ctx.preset, seed, run_dir)
    train_seconds, train_cpu = time.perf_counter() - wall, time.process_time() - cpu
    save_adapter(model, run_dir / "adapter", spec)
    metrics = evaluate(model, ctx.tokenizer, ctx.test, spec, ctx.preset.eval_batch_size, ctx.preset.max_new_tokens,
                       f"{method} {configuration} seed {seed}")
    result = _write_metrics(run_dir, {
        "configuration": configuration, "method": method, "seed": seed,
        "steps": ctx.preset.steps, "train_seconds_this_call": round(train_seconds, 1),
        "train_cpu_minutes_this_call": round(train_cpu / 60, 2), **metrics})
    (run_dir / CHECKPOINT).unlink(missing_ok=True)
    return result


def _targets(ctx: Context, method: str) -> list[list[int]]:
    if method not in ctx.targets:
        ctx.targets[method] = teacher_targets(ctx.base, ctx.tokenizer, ctx.train, ctx.preset,
                                              ctx.out / "teacher_targets.json", ctx.identity)
    return ctx.targets[method]


def _finished(run_dir: Path) -> Optional[dict]:
    path = run_dir / "metrics.json"
    if path.exists():
        return json.loads(path.read_text())
    return None


def _write_metrics(run_dir: Path, metrics: dict) -> dict:
    from lalm_fast.data.files import atomic_write

    with atomic_write(run_dir / "metrics.json") as handle:
        json.dump(metrics, handle, indent=2)
    return metrics


def plan(configurations: Sequence[str], seeds: int) -> list[tuple[str, str, int]]:
    """Every (configuration, method, seed) to train, in run order (seed 0 of all first)."""
    units = [(c, m, 0) for c in configurations for m in METHODS]
    units += [(c, m, s) for s in range(1, seeds) for c in configurations if c in TWO_SEED_CONFIGURATIONS
              for m in METHODS]
    return units


# ----- the whole track --------------------------------------------------------------------------


def run(out: str | os.PathLike, preset: str = "quick", *, data: Optional[str] = None, model: Optional[str] = None,
        configurations: Optional[Sequence[str]] = None, seeds: Optional[int] = None,
        steps: Optional[int] = None, seed: int = 0) -> dict:
    """Run the Whisper track into ``out``; returns the report dict (also ``out/report.json``)."""
    from lalm_fast.models.pretrained import load_whisper_processor
    from lalm_fast.reproduce import ReproduceError, cached_whisper_baseline
    from lalm_fast.whisper_report import export_adapters, write_report

    if preset not in PRESETS:
        raise ReproduceError(f"unknown preset {preset!r} for the whisper track; choose from {sorted(PRESETS)}")
    chosen = replace(PRESETS[preset], **{k: v for k, v in (("seeds", seeds), ("steps", steps)) if v is not None})
    if chosen.seeds < 1 or chosen.steps < 1:
        raise ReproduceError(f"--seeds and --steps must be >= 1, got {chosen.seeds} and {chosen.steps}")
    names = list(configurations or CONFIGURATIONS)
    unknown = [n for n in names if n not in CONFIGURATIONS]
    if unknown:
        raise ReproduceError(f"unknown configuration(s) {unknown}; choose from {list(CONFIGURATIONS)}")
    source = model or chosen.model
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    base, tokenizer, identity = load_model(source)
    data_dir = Path(data) if data else out / "data"
    train, test, info = prepare_splits(chosen, data_dir, out / "feature_cache", base, identity, seed)
    ctx = Context(out, chosen, base, tokenizer, train, test, {"transcripts": transcript_targets(tokenizer, train)},
                  identity)
    rows = {name: {"zero_shot": zero_shot(ctx, name), "adapted": []} for name in names}
    for configuration, method, unit_seed in plan(names, chosen.seeds):
        rows[configuration]["adapted"].append(adapted(ctx, configuration, method, seed + unit_seed))
    extra: dict[str, Any] = {"model": source, "seed": seed, "dataset": info, "n_train": len(train.frames),
                             "n_test": len(test.frames), "test_audio_seconds": round(test.audio_seconds, 1),
                             "test_ids": [u.id for u in test.utterances]}
    if chosen.baseline:
        processor = load_whisper_processor(source, base.config.num_mel_bins)
        extra["whisper_baseline"] = cached_whisper_baseline(out, test.utterances, model_and_processor=(base, processor))
    extra["seconds_this_call"] = round(time.perf_counter() - started, 1)
    report = write_report(out, rows, preset, chosen, extra)
    export_adapters(out, report)
    print(f"== report: {out / 'report.md'}, {out / 'report.json'}, {out / 'report.png'}; "
          f"adapters: {out / 'adapters'}", flush=True)
    return report

