"""The training loop: one code path for one CPU, one GPU or many GPUs (``accelerate launch``)."""

from __future__ import annotations

import contextlib
import copy
import json
import os
import signal
import sys
import threading
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import torch

from lalm_fast.data import SkipReport, whisper_encode_fn
from lalm_fast.data.files import atomic_write
from lalm_fast.training.checkpoint import (Position, checkpoint_record, latest_checkpoint, load_checkpoint,
                                           process_seed, rng_state, save_checkpoint)
from lalm_fast.training.config import TRAIN_SPEC_FILE, DataSpec, OptimSpec, TrainConfig
from lalm_fast.training.ctc_warmup import ctc_warmup
from lalm_fast.training.dataset import Dataset, audio_inputs, epoch_batches, feature_cache, open_dataset, uses_cache
from lalm_fast.training.models import build_model

__all__ = ["LATEST", "TRAIN_LOG", "TrainResult", "save_trained", "seed_checkpoint", "train"]

TRAIN_LOG = "train_log.jsonl"   # one line per optimizer step: step, loss, lr, seconds
LATEST = "latest"               # the model where a time budget stopped the run (final/ once the schedule ends)


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


@dataclass
class TrainResult:
    step: int
    losses: list[float]                     # training loss of each optimizer step run in this call
    evals: list[dict]
    skips: SkipReport                       # utterances skipped under data.skip_bad, by all processes
    final_dir: Optional[Path]
    output_dir: Path
    warmup: Optional[dict] = None           # ctc_warmup's summary when it ran (or was loaded) in this call


class _Stream:
    """Micro-batches in a fixed order: the epochs' batch plans one after another, one global sequence
    whatever the number of processes. ``Position`` (epoch, batch) is the next micro-batch of it that no
    process has read; each read hands process ``rank`` the ``rank``-th micro-batch from there and moves the
    position on by ``world``. So ``world`` processes accumulating ``grad_accum`` micro-batches each read in an
    optimizer step exactly the ``world * grad_accum`` micro-batches that one process accumulating that many
    reads, and a checkpoint's position means the same to any number of processes."""

    def __init__(self, dataset: Dataset, data_spec: DataSpec, seed: int, rank: int, world: int):
        self.dataset, self.data_spec, self.seed, self.rank, self.world = dataset, data_spec, seed, rank, world
        self._plans: dict[int, list[list[int]]] = {}

    def _plan(self, epoch: int) -> list[list[int]]:
        if epoch not in self._plans:
            self._plans = {e: plan for e, plan in self._plans.items() if e >= epoch - 1}  # a step spans few epochs
            self._plans[epoch] = epoch_batches(self.dataset.durations, self.data_spec, self.seed, epoch)
        return self._plans[epoch]

    def _locate(self, epoch: int, batch: int) -> tuple[int, int]:
        """``(epoch, batch)`` with ``batch`` counted on past the end of its epoch, as a batch of a later epoch."""
        while batch >= len(self._plan(epoch)):
            batch -= len(self._plan(epoch))
            epoch += 1
        return epoch, batch

    def next(self, position: Position) -> list[int]:
        """This process's micro-batch at ``position``; moves ``position`` past every process's (in place)."""
        epoch, batch = self._locate(position.epoch, position.batch + self.rank)
        indices = self._plan(epoch)[batch]
        position.epoch, position.batch = self._locate(position.epoch, position.batch + self.world)
        return indices


def train(config: TrainConfig, resume: bool = False, stop_after_seconds: Optional[float] = None) -> TrainResult:
    """Train per ``config``; with ``resume``, continue from the newest complete checkpoint in
    ``config.run.output_dir`` (same data order and RNG, so the same result as one run).

    ``stop_after_seconds``: stop at the first optimizer step that ends past this wall time, save a
    checkpoint there and the model as ``latest/`` (the layout of ``final/``, which is written only
    when the schedule ends), and return without a closing evaluation; a later ``resume`` goes on
    with the same schedule, as if the run had not stopped. SIGTERM stops the same way at the end of
    the step under way, then raises ``SystemExit(143)`` (the status of a SIGTERM'd process), so that no
    caller goes on as if training had ended. Every step's loss, learning rate and
    seconds are appended to ``<output_dir>/train_log.jsonl`` (a resumed run may repeat steps
    written after its checkpoint: readers keep the last line per step)."""
    from transformers import get_cosine_schedule_with_warmup

    config.check()  # code may have changed settings since the config was read
    run, optim = config.run, config.optim
    output_dir = Path(run.output_dir)
    accelerator = _accelerator(_mixed_precision(run.mixed_precision))
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
        train_set = open_dataset(config.data.train, config.model, config.data, output_dir, cache, encode)
        eval_set = (open_dataset(config.data.eval, config.model, config.data, output_dir, cache, encode)
                    if config.data.eval else None)
    found_before = copy.deepcopy(train_set.loader.skips)  # by every process, in the checks before training
    checkpoint = latest_checkpoint(output_dir) if resume else None
    warmup = None
    if config.align.ctc_steps > 0 and checkpoint is None:
        # The main process runs the warm-up and saves it; the others load what it saved (the same projector,
        # and no two processes writing one folder).
        with accelerator.main_process_first():
            warmup = ctc_warmup(core, train_set, config, output_dir,
                                progress=run.progress and accelerator.is_main_process)
    rank, world = accelerator.process_index, accelerator.num_processes
    if checkpoint is not None:
        _check_global_batch(checkpoint, world, optim.grad_accum)
        position = load_checkpoint(checkpoint, core, optimizer, scheduler, rank, run.seed)
    else:
        torch.manual_seed(process_seed(run.seed, rank))  # dropout draws: the run's seed, and per process
        position = Position()
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        with atomic_write(output_dir / "config.json") as handle:
            json.dump(config.to_dict(), handle, indent=2)
    stream = _Stream(train_set, config.data, run.seed, rank, world)
    loop = _Loop(config, accelerator, model, optimizer, scheduler, stream, eval_set, output_dir)
    finished = loop.run(position, stop_after_seconds)
    if not finished:
        loop.save(position)
        loop.save_model(output_dir / LATEST)
        if loop.terminated:  # saved; now end the way a SIGTERM'd process does, callers included
            if accelerator.is_main_process:
                print(f"SIGTERM: stopped at step {position.step}, checkpoint saved in {output_dir}; "
                      "train again with resume to continue", file=sys.stderr, flush=True)
            raise SystemExit(128 + signal.SIGTERM)
        skips = _all_skips(accelerator, found_before, train_set.loader.skips)
        return TrainResult(position.step, loop.losses, loop.evals, skips, None, output_dir, warmup)
    final_dir = loop.save_final(position)
    skips = _all_skips(accelerator, found_before, train_set.loader.skips)
    return TrainResult(position.step, loop.losses, loop.evals, skips, final_dir, output_dir, warmup)


class _StopOnTerminate:
    """SIGTERM (a job scheduler's or a user's ``kill``) ends the run at the end of the current step,
    saved like a time-budget stop, instead of losing the steps since the last checkpoint. Only the
    main thread can own a signal handler; elsewhere SIGTERM keeps its usual meaning."""

    def __init__(self):
        self.requested, self._installed, self._previous = False, False, None

    def __enter__(self) -> "_StopOnTerminate":
        if threading.current_thread() is threading.main_thread():
            self._previous, self._installed = signal.signal(signal.SIGTERM, self._request), True
        return self

    def _request(self, signum, frame) -> None:
        self.requested = True

    def __exit__(self, *exc) -> None:
        if self._installed:  # None: a handler set outside Python, which signal cannot restore
            signal.signal(signal.SIGTERM, self._previous if self._previous is not None else signal.SIG_DFL)


def seed_checkpoint(config: TrainConfig, weights: Path, position: Position) -> Path:
    """A checkpoint at ``position`` in ``config.run.output_dir`` from saved weights alone (a folder
    written by ``AudioLM.save_pretrained``, e.g. a float16 export), for a run whose own checkpoints
    are gone. ``train(config, resume=True)`` then continues with the same schedule and data order;
    the optimizer's moments start from zero (the export has none), so the continuation is close to,
    not equal to, the uninterrupted run."""
    import warnings

    from transformers import get_cosine_schedule_with_warmup

    from lalm_fast.models import AudioLM
    from lalm_fast.training.models import load_bases

    encoder, lm, tokenizer = load_bases(config.model)
    model = AudioLM.from_pretrained(weights, encoder, lm, tokenizer, is_trainable=True)
    if config.model.compressor is not None:
        model.set_compressor(config.model.compressor)
    for param in model.parameters():
        if param.requires_grad:
            param.data = param.data.float()  # a float16 export trains on in float32
    optimizer = _optimizer(model, config.optim)
    scheduler = get_cosine_schedule_with_warmup(optimizer, config.optim.warmup_steps, config.optim.total_steps)
    with warnings.catch_warnings():  # stepping the schedule without optimizer steps is the point here
        warnings.simplefilter("ignore")
        for _ in range(position.step):
            scheduler.step()
    torch.manual_seed(config.run.seed + position.step)
    return save_checkpoint(Path(config.run.output_dir) / "checkpoints", position, model, optimizer, scheduler,
                           config.run.keep_last)


def _all_skips(accelerator, before: SkipReport, skips: SkipReport) -> SkipReport:
    """The utterances skipped: ``before`` training (found by every process alike), then while loading
    micro-batches (each process counts those of the micro-batches it read; ``skips`` holds both)."""
    if accelerator.num_processes == 1:
        return skips
    from accelerate.utils import gather_object

    total = copy.deepcopy(before)
    for report in gather_object([skips]):
        total.counts.update(report.counts - before.counts)
        new = report.examples[len(before.examples):]
        total.examples += new[:max(0, total.max_examples - len(total.examples))]
    return total


# Where launchers put the number of processes they started (torchrun / accelerate launch, MPI).
_WORLD_SIZE_VARIABLES = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


def _launched_processes() -> int:
    return max(int(os.environ.get(name) or 1) for name in _WORLD_SIZE_VARIABLES)


def _accelerator(mixed_precision: str):
    """The run's Accelerator. Several processes on a machine without an accelerator device get a gloo
    process group: accelerate forms one on the CPU only when told to use the CPU, and otherwise each process
    launched by ``torchrun`` / ``accelerate launch --multi_gpu`` would train alone into the same output_dir."""
    from accelerate import Accelerator

    launched = _launched_processes()
    has_device = torch.accelerator.is_available() if hasattr(torch, "accelerator") else torch.cuda.is_available()
    accelerator = Accelerator(mixed_precision=mixed_precision, cpu=launched > 1 and not has_device)
    if accelerator.num_processes != launched:
        raise RuntimeError(f"{launched} processes were launched, but accelerate formed a group of "
                           f"{accelerator.num_processes}: each would train alone into the same output_dir")
    return accelerator


def _check_global_batch(checkpoint: Path, processes: int, grad_accum: int) -> None:
    """Warn when a resume changes the micro-batches per optimizer step (processes x grad_accum)."""
    record = checkpoint_record(checkpoint)
    if "processes" not in record:
        return  # written before checkpoints recorded it
    before, now = record["processes"] * record["grad_accum"], processes * grad_accum
    if before != now:
        warnings.warn(f"{checkpoint} was written by {record['processes']} process(es) x grad_accum "
                      f"{record['grad_accum']} = {before} micro-batches per step; resuming with {processes} x "
                      f"{grad_accum} = {now} changes the global batch (keep processes x grad_accum to continue the "
                      "same run)", stacklevel=3)


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
        self.saved_step: Optional[int] = None
        self.spare = None  # the last micro-batch this process loaded (see _step)
        self.terminated = False  # stopped by SIGTERM (in any process), not by the time budget

    def run(self, position: Position, stop_after_seconds: Optional[float] = None) -> bool:
        """Steps until ``total_steps`` (returns True) or until ``stop_after_seconds`` have passed (False)."""
        from tqdm.auto import tqdm

        total, started = self.config.optim.total_steps, time.perf_counter()
        bar = tqdm(total=total, initial=position.step, desc="train",
                   disable=not (self.config.run.progress and self.accelerator.is_main_process))
        saved = Position(**asdict(position))
        try:
            with _StopOnTerminate() as terminate:
                while position.step < total:
                    trial = Position(**asdict(position))
                    step_started, lr = time.perf_counter(), self.scheduler.get_last_lr()[0]
                    loss = self._step(trial)
                    position.__dict__.update(asdict(trial))  # only a completed step moves the position
                    self.losses.append(loss)
                    self._log({"step": position.step, "loss": round(loss, 5), "lr": lr,
                               "seconds": round(time.perf_counter() - step_started, 3)})
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}")
                    self._periodic(position)
                    over_budget = stop_after_seconds is not None and time.perf_counter() - started > stop_after_seconds
                    if position.step < total and self._anyone(over_budget or terminate.requested):
                        self.terminated = self._anyone(terminate.requested)
                        return False
                return True
        except BaseException:
            if position.step > saved.step:
                # Alone: the other processes may be anywhere (an error here need not be theirs), so no
                # collective call; the main process writes what it has, its own RNG state included.
                self.save(position, together=False)
            raise
        finally:
            bar.close()

    def _anyone(self, flag: bool) -> bool:
        """Whether ``flag`` holds in any process (all processes must call this together)."""
        if self.accelerator.num_processes == 1:
            return flag
        return bool(self.accelerator.reduce(torch.tensor(float(flag), device=self.accelerator.device), "sum") > 0)

    def _step(self, position: Position) -> float:
        """One optimizer step over ``grad_accum`` micro-batches; advances ``position``. The loss (and the
        gradient) is the mean over the step's micro-batches, of all processes, of each one's mean over its target
        tokens: the same for any split of those micro-batches between processes."""
        model, accum, several = self.model, self.config.optim.grad_accum, self.accelerator.num_processes > 1
        model.train()
        total = 0.0
        for micro in range(accum):
            last = micro == accum - 1
            indices = self.stream.next(position)
            batch, weight = self.stream.dataset.load(indices), 1.0
            if batch is None:  # every utterance of this micro-batch was skipped (counted) under skip_bad
                if not (several and last):
                    continue
                # Every process must take part in the gradient all-reduce of the last backward pass: this one
                # does so with a zero-weighted loss on another micro-batch.
                batch, weight = self.spare or self._any_batch(avoid=indices), 0.0
            self.spare = batch
            audio, lengths, targets, _ = batch
            inputs = audio_inputs(self.stream.dataset, audio, lengths)
            # Gradients are all-reduced only on the last micro-batch.
            sync = contextlib.nullcontext() if last else self.accelerator.no_sync(model)
            with sync:
                loss = model(**inputs, tasks=batch.tasks, targets=targets).loss * (weight / accum)
                self.accelerator.backward(loss)
            total += loss.item()
        if several:  # the step's loss over every process's micro-batches, as one process accumulating them all
            total = self.accelerator.reduce(torch.tensor(total, device=self.accelerator.device), "mean").item()
        if self.config.optim.max_grad_norm:
            self.accelerator.clip_grad_norm_(self.model.parameters(), self.config.optim.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        position.step += 1
        return total

    def _log(self, record: dict) -> None:
        if self.accelerator.is_main_process:
            with open(self.output_dir / TRAIN_LOG, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")

    def _periodic(self, position: Position) -> None:
        run, step = self.config.run, position.step
        if run.eval_every and step % run.eval_every == 0 and self.eval_set is not None:
            self._evaluate(step)
        if run.save_every and step % run.save_every == 0:
            self.save(position)

    def _evaluate(self, step: int) -> dict:
        from lalm_fast.evaluate.model import evaluate_model  # lalm_fast.evaluate.model imports this package

        result = evaluate_model(self.accelerator.unwrap_model(self.model), self.eval_set, self.config.data)
        record = {"step": step, "loss": result["loss"], **_metric_summary(result)}
        self.evals.append(record)
        if self.accelerator.is_main_process:
            with open(self.output_dir / "metrics.jsonl", "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
        return record

    def _any_batch(self, avoid: list[int]):
        """The first loadable micro-batch of the first epoch's plan without the utterances of ``avoid`` (which
        were just skipped and counted; another bad file on the way is counted again)."""
        for indices in self.stream._plan(0):
            batch = None if set(indices) & set(avoid) else self.stream.dataset.load(indices)
            if batch is not None:
                return batch
        raise ValueError("no micro-batch of the training data can be loaded")

    def save(self, position: Position, together: bool = True) -> None:
        """A checkpoint at ``position``, written by the main process. ``together``: every process calls this
        at the same step (each one's RNG state is saved, then all wait for the writing)."""
        from accelerate.utils import gather_object

        if position.step == self.saved_step:
            return
        self.saved_step = position.step
        states = gather_object([rng_state()]) if together and self.accelerator.num_processes > 1 else [rng_state()]
        if self.accelerator.is_main_process:
            layout = {"processes": self.accelerator.num_processes, "grad_accum": self.config.optim.grad_accum}
            save_checkpoint(self.checkpoints, position, self.accelerator.unwrap_model(self.model), self.optimizer,
                            self.scheduler, self.config.run.keep_last, rng_states=states, layout=layout)
        if together:
            self.accelerator.wait_for_everyone()

    def save_final(self, position: Position) -> Optional[Path]:
        """Last checkpoint, last evaluation, and ``final/`` (projector + LoRA + how to rebuild the bases)."""
        self.save(position)
        if self.eval_set is not None and not (self.evals and self.evals[-1]["step"] == position.step):
            self._evaluate(position.step)
        return self.save_model(self.output_dir / "final")

    def save_model(self, folder: Path) -> Optional[Path]:
        """The model as :func:`~lalm_fast.training.load_trained` reads it (projector + LoRA + how to rebuild the bases)."""
        if self.accelerator.is_main_process:
            save_trained(self.accelerator.unwrap_model(self.model), self.config, folder)
        self.accelerator.wait_for_everyone()  # no process returns before the model is there
        return folder if self.accelerator.is_main_process else None


def save_trained(model, config: TrainConfig, folder: Path) -> Path:
    """``model`` as :func:`~lalm_fast.training.load_trained` reads it: projector + LoRA, and the specs
    that rebuild its bases."""
    model.save_pretrained(folder)
    with atomic_write(folder / TRAIN_SPEC_FILE) as handle:
        json.dump({"model": asdict(config.model), "data": asdict(config.data)}, handle, indent=2)
    return folder


def _metric_summary(result: dict) -> dict:
    summary = {}
    if "wer" in result:
        summary["wer"] = result["wer"].wer
    if "wer_guarded" in result:
        summary["wer_guarded"] = result["wer_guarded"].wer
    if "bleu" in result:
        summary["bleu"] = result["bleu"].score
    if result.get("samples"):
        summary["sample"] = result["samples"][0]
    return summary
