"""The LALM track's two stages (driven by :mod:`lalm_fast.reproduce`): one base audio LLM trained
long, then compression inserted into it and adapted briefly, as in the paper.

**The base** (``base-25hz``): the frozen encoder's 50 Hz frames pooled 2x to 25 Hz (Qwen2-Audio's
own rate), a 2-layer MLP projector and LoRA on the LM's attention projections, trained on ASR and
EN->ES speech translation together after a CTC projector warm-up. It trains in pieces: with a
time budget :func:`train_base` stops at a checkpoint and writes the model so far to ``latest/``;
the next call continues the same schedule exactly (data order, optimiser, RNG).

**Each compressed configuration** starts from the base's projector and LoRA with its compressor
in place of the base's 2x pooling. It is scored as is (zero-shot), then adapted for the same
number of steps as every other configuration, projector and LoRA (or the projector alone), and
scored again. The adaptation's CPU time is recorded: it is what a user pays to compress a model
they already have.

Why a 25 Hz base rather than the encoder's 50 Hz: an LM step at 50 Hz cost 1.7x one at 25 Hz on
our 2-core CPU (4.7 s against 2.8 s, batch of eight 6 s clips, bf16 autocast), and in the older
equal-step runs the 25 Hz model was ahead (docs/lalm-track.md).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Optional

__all__ = ["BASE_RUN", "CURVE", "SCORES", "WHISPER", "DataPositionError", "has_base", "seed_from_export",
           "manifest_identity", "base_config", "train_base", "adapt_config", "run_configuration",
           "rescore_configuration", "score_model", "read_curve", "plot_curve", "fill_cache", "decoded_path"]

BASE_RUN = "base-25hz"      # <out>/runs/base-25hz: the base's run folder (and its configuration name)
_BASE_FILE = "base.json"    # in a configuration's run folder: which base step it adapts, for how many steps
_TRAIN_SET_FILE = "train_set.json"  # in the base's run folder: the training set its data position counts in
_SESSIONS_FILE = "sessions.jsonl"   # in a run folder: each call's training (steps, wall and CPU seconds)
SCORES = "scores"           # <out>/scores/<configuration>.json: its report row
WHISPER = "whisper-tiny.en"  # <out>/scores/whisper-tiny.en-asr.jsonl: Whisper's own decoder on the ASR test clips
CURVE = "curve.json"        # <out>/curve.json: the base's learning curve (read_curve)


class DataPositionError(ValueError):
    """A base's data position (epoch, batch) would be read over another training set than its own."""


# ----- training configs ---------------------------------------------------------------------------


def _common(preset, paths: dict, out: Path, seed: int) -> dict:
    return {
        "data": {"train": paths["train"], "eval": None, "task": "auto", "batch_size": preset.batch_size,
                 "skip_bad": True, "cache": True, "cache_dir": str(out / "feature_cache"),
                 "eval_generate": preset.eval_generate, "max_new_tokens": preset.max_new_tokens},
        "run": {"seed": seed, "eval_every": 0, "save_every": preset.save_every, "keep_last": 2,
                "mixed_precision": preset.mixed_precision, "progress": True},
    }


def base_config(preset, paths: dict, out: Path, encoder: str, lm: str, seed: int):
    from lalm_fast.training import TrainConfig

    common = _common(preset, paths, out, seed)
    return TrainConfig.from_dict({
        "model": {"encoder": encoder, "lm": lm, "compressor": preset.base_compressor,
                  "projector": dict(preset.projector), "lora": dict(preset.lora),
                  "window_seconds": preset.window_seconds, "mel_bins": 80, "seed": seed},
        "data": {**common["data"], "eval": paths["base_eval"]},
        "optim": {"lr": preset.lr, "weight_decay": 0.01, "warmup_steps": preset.warmup_steps,
                  "total_steps": preset.base_steps, "grad_accum": 1, "max_grad_norm": 1.0},
        "run": {**common["run"], "output_dir": str(out / "runs" / BASE_RUN), "eval_every": preset.eval_every},
        "align": {"ctc_steps": preset.ctc_steps, "lr": preset.ctc_lr},
    })


def adapt_config(configuration, preset, paths: dict, out: Path, encoder: str, lm: str, seed: int, base_dir: Path):
    from lalm_fast.training import TrainConfig

    common = _common(preset, paths, out, seed)
    return TrainConfig.from_dict({
        "model": {"encoder": encoder, "lm": lm, "compressor": configuration.compressor,
                  "projector": dict(preset.projector), "lora": None, "init_from": str(base_dir),
                  "train_lora": configuration.lora, "window_seconds": preset.window_seconds, "mel_bins": 80,
                  "seed": seed},
        "data": common["data"],
        "optim": {"lr": preset.adapt_lr, "weight_decay": 0.01, "warmup_steps": preset.adapt_warmup_steps,
                  "total_steps": preset.adapt_steps, "grad_accum": 1, "max_grad_norm": 1.0},
        "run": {**common["run"], "output_dir": str(out / "runs" / configuration.name)},
    })


# ----- the base -----------------------------------------------------------------------------------


def train_base(preset, paths: dict, out: Path, encoder: str, lm: str, seed: int,
               minutes: Optional[float] = None, continue_from: Optional[Path] = None, new_epoch: bool = False) -> dict:
    """Train or continue the base for about ``minutes`` of LM steps (None: to the end of its schedule).
    ``continue_from``: a committed run (``adapters/base-25hz`` and ``curve.json``) to go on from when
    this run has no checkpoint of its own (:func:`seed_from_export`; ``new_epoch`` there).
    Returns ``{"dir": final/ or latest/, "step", "total_steps", "finished", "position", "train_set"}``."""
    from lalm_fast.training import latest_checkpoint
    from lalm_fast.training.loop import LATEST

    config = base_config(preset, paths, out, encoder, lm, seed)
    run_dir = Path(config.run.output_dir)
    train_set = manifest_identity(paths["train"])
    seeding = continue_from is not None and latest_checkpoint(run_dir) is None
    if new_epoch and not seeding:
        raise DataPositionError(f"--new-epoch applies when a run starts from a committed base (--continue-from) and "
                                f"has no checkpoint of its own; {run_dir} has one")
    _check_train_set(run_dir, train_set, resuming=latest_checkpoint(run_dir) is not None)
    if seeding:
        seed_from_export(Path(continue_from), config, train_set, new_epoch)
    if minutes == 0:  # use the base as it stands
        if latest_checkpoint(run_dir) is None:
            raise ValueError(f"no base to use as it stands: {run_dir} has no checkpoint (train it first)")
    elif not (run_dir / "final" / "lalm_train.json").exists():
        _train_recording_session(config, run_dir, minutes)
    final = run_dir / "final"
    finished = (final / "lalm_train.json").exists()
    checkpoint = latest_checkpoint(run_dir)
    folder = final if finished else _export(config, checkpoint, run_dir / LATEST)
    position = _position(checkpoint) if checkpoint else {"step": 0, "epoch": 0, "batch": 0}
    return {"dir": str(folder), "step": position["step"], "total_steps": config.optim.total_steps,
            "finished": finished, "position": position, "train_set": train_set}


def manifest_identity(manifest) -> dict:
    """Which utterances a manifest holds: their count and a hash of each one's id, text, translation
    and duration in manifest order (a base's epochs are drawn over exactly these; audio paths differ
    between machines and copies of one corpus). Names a base's training set and a score's test set."""
    import hashlib

    from lalm_fast.data import read_manifest

    utterances = read_manifest(manifest)
    content = "\n".join(json.dumps([u.id, u.text, u.translation, u.duration]) for u in utterances)
    return {"utterances": len(utterances), "sha256": hashlib.sha256(content.encode()).hexdigest()}


def _check_train_set(run_dir: Path, train_set: dict, resuming: bool) -> None:
    """A base's checkpoints hold a position in its training set's epochs: resuming them over another
    set would silently skip and repeat other utterances. The set is recorded in ``train_set.json``."""
    from lalm_fast.data.files import atomic_write

    record = run_dir / _TRAIN_SET_FILE
    if record.exists() and resuming:
        trained_on = json.loads(record.read_text())
        if trained_on != train_set:
            raise DataPositionError(f"{run_dir} trains on another training set ({trained_on['utterances']} utterances; "
                                    f"this one has {train_set['utterances']}): its data position means nothing here. "
                                    "Go on in a new --out from this run's export with --continue-from and --new-epoch")
    run_dir.mkdir(parents=True, exist_ok=True)
    with atomic_write(record) as handle:
        json.dump(train_set, handle)


def _train_recording_session(config, run_dir: Path, minutes: Optional[float] = None) -> None:
    """One call's training (the base's or an adaptation's), recorded in ``sessions.jsonl`` (steps,
    wall and CPU time, how it stopped) also when it stops on SIGTERM, which the loop signals with
    ``SystemExit``, or on Ctrl-C, which stops it mid-step (the run goes on from its last checkpoint)."""
    from lalm_fast.training import latest_checkpoint, train

    def step_now() -> int:
        checkpoint = latest_checkpoint(run_dir)
        return _position(checkpoint)["step"] if checkpoint else 0

    first, started, cpu = step_now(), time.perf_counter(), time.process_time()
    stopped_by = "error"
    try:
        result = train(config, resume=True, stop_after_seconds=None if minutes is None else 60 * minutes)
        stopped_by = "end of schedule" if result.final_dir is not None else "time budget"
    except SystemExit:
        stopped_by = "SIGTERM"
        raise
    except KeyboardInterrupt:
        stopped_by = "Ctrl-C"
        raise
    finally:
        ended = step_now()
        _append_jsonl(run_dir / _SESSIONS_FILE, {
            "ended_at_step": ended, "steps": ended - first, "stopped_by": stopped_by,
            "finished": stopped_by == "end of schedule",
            "wall_seconds": round(time.perf_counter() - started, 1),
            "cpu_seconds": round(time.process_time() - cpu, 1)})


def has_base(out: Path) -> bool:
    """Whether ``out`` holds a base checkpoint to go on from."""
    from lalm_fast.training import latest_checkpoint

    return latest_checkpoint(out / "runs" / BASE_RUN) is not None


def _export(config, checkpoint: Path, folder: Path) -> Path:
    """The model of ``checkpoint`` as a loadable folder (a stopped run writes one itself, a killed one not)."""
    from safetensors.torch import load_file

    from lalm_fast.training import build_model
    from lalm_fast.training.loop import save_trained

    model = build_model(config.model)
    model.load_state_dict(load_file(checkpoint / "trainable.safetensors"), strict=False)
    return save_trained(model, config, folder)


def _position(checkpoint: Path) -> dict:
    from dataclasses import fields

    from lalm_fast.training.checkpoint import STEP_FILE, Position

    record = json.loads((checkpoint / STEP_FILE).read_text())
    return {f.name: record[f.name] for f in fields(Position)}


def seed_from_export(committed: Path, config, train_set: dict, new_epoch: bool = False) -> None:
    """Start ``config``'s run from a committed base (float16 weights, the data position and the
    learning curve of ``committed``): a checkpoint at that step (:func:`~lalm_fast.training.loop.seed_checkpoint`:
    the same schedule and data order, optimiser moments from zero) and the curve so far.
    ``train_set`` (:func:`manifest_identity`) must be the one the base trained on, as far as its
    export records it; ``new_epoch`` instead goes on from the first batch of the next epoch (the
    same step and learning-rate schedule): the deliberate way to continue on a new or larger set."""
    from lalm_fast.training.checkpoint import Position
    from lalm_fast.training.loop import TRAIN_LOG, seed_checkpoint

    weights = committed / "adapters" / BASE_RUN
    if not (weights / "metrics.json").is_file() or not (committed / CURVE).is_file():
        raise ValueError(f"{committed} is not a committed LALM-track run (needs adapters/{BASE_RUN}/ and {CURVE})")
    exported = json.loads((weights / "metrics.json").read_text())
    position, trained_on = exported["base_position"], exported.get("base_train_set")
    if new_epoch:
        position = {**position, "epoch": position["epoch"] + 1, "batch": 0}
    elif trained_on is None:
        print(f"== {BASE_RUN}: {committed} does not record its training set; its data position is taken to count in "
              "this one (--new-epoch if it does not)", flush=True)
    elif trained_on != train_set:
        raise DataPositionError(f"{committed}'s base trained on another training set ({trained_on['utterances']} "
                                f"utterances; this one has {train_set['utterances']}): its data position means nothing "
                                "here; go on from the start of its next epoch over this set with --new-epoch")
    run_dir = Path(config.run.output_dir)
    seed_checkpoint(config, weights, Position(**position))
    curve = json.loads((committed / CURVE).read_text())
    for name, records in ((TRAIN_LOG, curve["train"]), ("metrics.jsonl", curve["eval"])):
        with open(run_dir / name, "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(r) + "\n" for r in records if r["step"] <= position["step"])
    print(f"== {BASE_RUN}: continuing from {committed} at step {position['step']} (optimiser moments restart"
          f"{'; a new epoch over ' + str(train_set['utterances']) + ' training utterances' if new_epoch else ''})",
          flush=True)


def _append_jsonl(path: Path, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


def read_curve(run_dir: Path) -> dict:
    """The base's learning curve: ``train`` (step, loss, lr, seconds; the last line per step: a
    resumed run rewrites steps done after its checkpoint) and ``eval`` (held-out loss, WER, BLEU)."""
    from lalm_fast.training.loop import TRAIN_LOG

    def last_per_step(path: Path) -> list[dict]:
        records = {}
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    record = json.loads(line)
                    records[record["step"]] = record
        return [records[step] for step in sorted(records)]

    return {"train": last_per_step(run_dir / TRAIN_LOG), "eval": last_per_step(run_dir / "metrics.jsonl")}


def plot_curve(path: Path, curve: dict, baseline_wer: Optional[float] = None) -> None:
    """Training loss (and its 50-step mean), held-out loss, WER and BLEU against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, (loss_axis, wer_axis) = plt.subplots(1, 2, figsize=(11, 4))
    steps = [r["step"] for r in curve["train"]]
    losses = np.array([r["loss"] for r in curve["train"]])
    if len(losses):
        loss_axis.plot(steps, losses, color="lightgray", linewidth=0.6, label="train loss (step)")
        window = min(50, len(losses))
        smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
        loss_axis.plot(steps[window - 1:], smooth, label=f"train loss ({window}-step mean)")
    evals, bleu_axis = curve["eval"], None
    if evals:
        loss_axis.plot([r["step"] for r in evals], [r["loss"] for r in evals], "o-", label="held-out loss")
        for key, label in (("wer", "WER %"), ("wer_guarded", "WER % (repetition guard)")):
            points = [(r["step"], 100 * r[key]) for r in evals if r.get(key) is not None]
            if points:
                wer_axis.plot(*zip(*points), "o-", label=label)
        bleu = [(r["step"], r["bleu"]) for r in evals if r.get("bleu") is not None]
        if bleu:
            bleu_axis = wer_axis.twinx()
            bleu_axis.plot(*zip(*bleu), "s--", color="tab:green", label="BLEU (right axis)")
            bleu_axis.set_ylabel("BLEU")
    if baseline_wer is not None:
        wer_axis.axhline(100 * baseline_wer, linestyle="--", color="gray", label="Whisper tiny.en (own decoder)")
    loss_axis.set_xlabel("optimizer step")
    loss_axis.set_ylabel("cross-entropy")
    wer_axis.set_xlabel("optimizer step")
    wer_axis.set_ylabel("WER % on the held-out decode")
    for axis, twin in ((loss_axis, None), (wer_axis, bleu_axis)):
        axis.grid(alpha=0.3)
        handles, labels = axis.get_legend_handles_labels()
        if twin is not None:  # one legend for both y axes: two would overlap
            more = twin.get_legend_handles_labels()
            handles, labels = handles + more[0], labels + more[1]
        if handles:  # under the axes: the curves fill every corner
            (twin or axis).legend(handles, labels, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16),
                                  ncol=2, frameon=False)
    fig.suptitle("base LALM learning curve (held-out: evaluations during training)")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)


# ----- one configuration --------------------------------------------------------------------------


def run_configuration(configuration, preset, paths: dict, out: Path, encoder: str, lm: str, seed: int,
                      base: dict) -> dict:
    """Score the base (``base-25hz``) or one compressed configuration zero-shot and after its
    adaptation; skipped when its metrics exist for this base step, adaptation budget and test set;
    adapted again from the base when the step or budget changed, scored again (not adapted) when
    only the test set did."""
    from lalm_fast.data.files import atomic_write
    from lalm_fast.training import load_trained

    run_dir = out / "runs" / configuration.name
    metrics_path = out / SCORES / f"{configuration.name}.json"
    test_set = {task: manifest_identity(paths[task]) for task in ("asr", "st")}
    if metrics_path.exists():
        stored = json.loads(metrics_path.read_text())
        is_base = configuration.name == BASE_RUN
        weights_kept = is_base or (run_dir / "final").is_dir()  # exported with the scores
        same_budget = is_base or stored.get("adapt_steps") == preset.adapt_steps
        if (stored.get("base_step") == base["step"] and weights_kept and same_budget
                and stored.get("test_set") == test_set):
            print(f"== {configuration.name}: done already for base step {base['step']}, skipped", flush=True)
            return stored
    model, spec = load_trained(base["dir"])
    metrics: dict[str, Any] = {"configuration": configuration.name, "compressor": configuration.compressor,
                               "lora": configuration.lora, "base_step": base["step"],
                               "base_position": base["position"], "base_train_set": base.get("train_set"),
                               "test_set": test_set}
    if configuration.name == BASE_RUN:
        print(f"== {BASE_RUN}: scoring the base (step {base['step']})", flush=True)
        metrics.update(_scored(score_model(model, spec, paths, out, preset.max_new_tokens), out, configuration.name))
        metrics.update(adapt_steps=0, adapt_cpu_minutes=0.0)
    else:
        zero_shot = None  # with the base's own compressor, zero-shot is the base's row
        if configuration.compressor != preset.base_compressor:
            zero_shot = _zero_shot(configuration, model, spec, paths, out, preset.max_new_tokens,
                                   {key: metrics[key] for key in ("compressor", "base_step", "test_set")})
        _forget_stale_run(run_dir, base["step"], preset.adapt_steps)
        config = adapt_config(configuration, preset, paths, out, encoder, lm, seed, Path(base["dir"]))
        print(f"== {configuration.name}: adapting {'projector + LoRA' if configuration.lora else 'the projector'} "
              f"for {config.optim.total_steps} steps", flush=True)
        _train_recording_session(config, run_dir)
        model, spec = load_trained(run_dir / "final")
        metrics.update(_scored(score_model(model, spec, paths, out, preset.max_new_tokens), out, configuration.name))
        metrics.update(zero_shot=zero_shot, **_adaptation_record(run_dir, config.optim.total_steps))
    metrics_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(metrics_path) as handle:
        json.dump(metrics, handle, indent=2)
    return metrics


def _zero_shot(configuration, model, spec, paths: dict, out: Path, max_new_tokens: int, scored_on: dict) -> dict:
    """The base with ``configuration``'s compressor inserted, scored before any adaptation; kept in
    ``scores/<configuration>-zero-shot.json`` with what it was scored on (``scored_on``: compressor,
    base step, test set), so a run stopped during the adaptation does not score it again."""
    from lalm_fast.data.files import atomic_write

    path = out / SCORES / f"{configuration.name}-zero-shot.json"
    if path.exists():
        stored = json.loads(path.read_text())
        if stored.get("scored_on") == scored_on:
            return stored["scores"]
    print(f"== {configuration.name}: {configuration.compressor} inserted into the base (step "
          f"{scored_on['base_step']}), zero-shot", flush=True)
    model.set_compressor(configuration.compressor)
    scores = _scored(score_model(model, spec, paths, out, max_new_tokens), out, f"{configuration.name}-zero-shot")
    scores = {key: scores[key] for key in ("audio_tokens_per_second", "wer", "wer_guarded", "wer_groups", "bleu",
                                           "asr_loss", "st_loss")}
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as handle:
        json.dump({"scored_on": scored_on, "scores": scores}, handle, indent=2)
    return scores


def rescore_configuration(name: str, folder: Path, paths: dict, out: Path, max_new_tokens: int) -> dict:
    """Score a committed configuration (its exported ``folder``, e.g. ``adapters/uniform-x3``) on the
    test sets of ``paths``: its committed row (base step, adaptation steps and cost) with every score
    replaced and ``rescored`` saying on what; zero-shot is dropped (it would need the base re-scored
    with this compressor). Skipped when ``out`` holds this score already."""
    from lalm_fast.data import read_manifest
    from lalm_fast.data.files import atomic_write
    from lalm_fast.training import load_trained

    metrics_path = out / SCORES / f"{name}.json"
    wanted = {"from": str(folder), "test_utterances": {task: len(read_manifest(paths[task])) for task in ("asr", "st")}}
    if metrics_path.exists():
        stored = json.loads(metrics_path.read_text())
        if stored.get("rescored") == wanted:
            print(f"== {name}: rescored already, skipped", flush=True)
            return stored
    print(f"== {name}: scoring {folder} on {wanted['test_utterances']} test utterances", flush=True)
    metrics = json.loads((folder / "metrics.json").read_text())
    model, spec = load_trained(folder)
    metrics.update(_scored(score_model(model, spec, paths, out, max_new_tokens), out, name))
    metrics.update(zero_shot=None, rescored=wanted, model_dir=str(folder))
    metrics_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(metrics_path) as handle:
        json.dump(metrics, handle, indent=2)
    return metrics


def decoded_path(out: Path, name: str, task: str) -> Path:
    """Where a configuration's decoded utterances for ``task`` ("asr", "st") are kept."""
    return out / SCORES / f"{name}-{task}.jsonl"


def _scored(scores: dict, out: Path, name: str) -> dict:
    """``scores`` without the decoded utterances, which go to :func:`decoded_path`
    (id, reference, hypothesis: any subset or rule can be re-scored later)."""
    from lalm_fast.evaluate.model import write_predictions

    for task, rows in scores.pop("decoded").items():
        write_predictions(decoded_path(out, name, task), rows)
    return scores


def _adaptation_record(run_dir: Path, total_steps: int) -> dict:
    """An adaptation's steps, cost and first and last losses, over every call that trained it
    (``sessions.jsonl``; a call that found it finished costs nothing). Steps of a call that left no
    record (killed) are costed at the recorded calls' rate: ``adapt_cost_measured_steps`` says
    how many were measured."""
    from lalm_fast.training.loop import TRAIN_LOG

    sessions = [json.loads(line) for line in (run_dir / _SESSIONS_FILE).read_text().splitlines() if line.strip()]
    trained = [s for s in sessions if s["steps"] > 0]
    measured = sum(s["steps"] for s in trained)

    def all_steps(key: str) -> Optional[float]:
        return sum(s[key] for s in trained) * total_steps / measured if measured else None

    cpu, wall = all_steps("cpu_seconds"), all_steps("wall_seconds")
    losses = [record["loss"] for record in read_curve(run_dir)["train"]] if (run_dir / TRAIN_LOG).exists() else []
    return {"adapt_steps": total_steps, "adapt_steps_this_call": sessions[-1]["steps"],
            "adapt_cpu_minutes": None if cpu is None else round(cpu / 60, 2),
            "adapt_wall_seconds": None if wall is None else round(wall, 1), "adapt_cost_measured_steps": measured,
            "loss_first": losses[0] if losses else None,
            "loss_last": sum(losses[-10:]) / len(losses[-10:]) if losses else None}


def _forget_stale_run(run_dir: Path, base_step: int, adapt_steps: int) -> None:
    """An adaptation run of another base step or budget is stale: its checkpoints would resume the
    old weights, or stretch a finished schedule instead of running the new one from the start."""
    marker, wanted = run_dir / _BASE_FILE, {"base_step": base_step, "adapt_steps": adapt_steps}
    if run_dir.exists() and (not marker.exists() or json.loads(marker.read_text()) != wanted):
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps(wanted))


def score_model(model, spec, paths: dict, out: Path, max_new_tokens: int) -> dict:
    """WER (as decoded, after the repetition guard, per voice group) on the ASR test set and BLEU on the
    EN->ES set, greedy, every utterance decoded; held-out losses; audio tokens per second."""
    from lalm_fast.data import read_manifest
    from lalm_fast.evaluate import evaluate_model, wer_by_group
    from lalm_fast.evaluate.repetition import guarded_wer
    from lalm_fast.training import DataSpec, Dataset, feature_cache

    started = time.perf_counter()
    data_spec = DataSpec(task="auto", batch_size=8, cache=True, cache_dir=str(out / "feature_cache"),
                         max_new_tokens=max_new_tokens)
    encode = _encode_with(model.encoder, spec)
    scores = {}
    for key, task in (("asr", "transcribe"), ("st", {"task": "translate", "lang": "Spanish"})):
        task_spec = replace(data_spec, task=task)
        dataset = Dataset(read_manifest(paths[key]), spec, task_spec, feature_cache(spec, task_spec, out), encode)
        scores[key] = evaluate_model(model, dataset, task_spec, generate=len(dataset.utterances))
    groups = {u.id: u.extra.get("voice_group") for u in read_manifest(paths["asr"])}
    decoded = scores["asr"].get("decoded", [])
    references, hypotheses = [d["reference"] for d in decoded], [d["hypothesis"] for d in decoded]
    voice_groups = [groups.get(d["id"]) for d in decoded]
    guarded, guarded_groups = guarded_wer(references, hypotheses, voice_groups)
    return {
        "audio_tokens_per_second": scores["asr"]["audio_tokens_per_second"],
        "wer": scores["asr"]["wer"].wer, "wer_guarded": guarded.wer, "wer_detail": asdict(scores["asr"]["wer"]),
        "wer_groups": {g: r.wer for g, r in wer_by_group(references, hypotheses, voice_groups).items()},
        "wer_groups_guarded": {g: r.wer for g, r in guarded_groups.items()},
        "bleu": scores["st"]["bleu"].score, "bleu_signature": scores["st"]["bleu"].signature,
        "asr_loss": scores["asr"]["loss"], "st_loss": scores["st"]["loss"],
        "samples": {"asr": scores["asr"].get("samples", [])[:2], "st": scores["st"].get("samples", [])[:2]},
        "eval_seconds": round(time.perf_counter() - started, 1),
        "decoded": {task: scores[task].get("decoded", []) for task in scores},
    }


# ----- the frozen encoder's outputs -----------------------------------------------------------------


def fill_cache(preset, paths: dict, out: Path, encoder: str, seed: int) -> None:
    """Encode every clip of the manifests in ``paths`` (train, held-out, test) into the shared feature
    cache (hits cost nothing)."""
    from lalm_fast.data import read_manifest
    from lalm_fast.training import DataSpec, Dataset, ModelSpec, feature_cache, load_encoder

    spec = ModelSpec(encoder=encoder, window_seconds=preset.window_seconds, mel_bins=80, seed=seed)
    data_spec = DataSpec(task="auto", batch_size=preset.batch_size, skip_bad=True, cache=True,
                         cache_dir=str(out / "feature_cache"))
    encode = _encode_with(load_encoder(spec), spec)
    for manifest in paths.values():
        Dataset(read_manifest(manifest), spec, data_spec, feature_cache(spec, data_spec, out), encode)


def _encode_with(encoder, spec):
    from lalm_fast.data import whisper_encode_fn

    return whisper_encode_fn(encoder, spec.window_seconds, spec.mel_bins, "cpu")
