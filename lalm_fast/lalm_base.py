"""The LALM track's base model: one audio LLM trained long at the encoder's pooled rate, for
compression to be inserted into afterwards (the paper's protocol).

The packaged Whisper tiny.en encoder (frozen, its outputs cached once) is pooled 2x to 25 Hz,
Qwen2-Audio's own rate, projected by a 2-layer MLP and read by SmolLM2-135M-Instruct through LoRA
on its attention projections. ASR and EN->ES speech translation are trained together. Training is
long and resumable in pieces: ``train_base(..., minutes=M)`` runs about ``M`` minutes of the same
cosine schedule, checkpoints, and the next call continues exactly where it stopped (same data
order, optimiser state and RNG). :func:`export_base` writes the committed form (projector and LoRA
in float16, the learning curve and its plot) to ``results/lalm-base``.

Why 25 Hz and not the encoder's 50 Hz: an LM step at 50 Hz costs 1.7x one at 25 Hz on our 2-core
CPU (4.7 s against 2.8 s for a batch of eight 6 s clips, LoRA on q/v, bf16 autocast), and in the
quick preset's equal-step runs the 25 Hz model was ahead (76.6% against 93.7% WER after 120
steps): per CPU hour 25 Hz is the better base (docs/lalm-track.md).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

__all__ = ["BasePreset", "BASE_PRESETS", "base_config", "prepare_base_data", "train_base", "read_curve"]


@dataclass
class BasePreset:
    encoder: str = "packaged:tiny.en"
    lm: str = "packaged:smollm2-135m"
    compressor: str = "uniform:2"                  # the base's own rate: 25 Hz
    n_train: int = 3000                            # per task (ASR, ST)
    n_test: int = 100                              # per task; the held-out loss reads the first eval_per_task
    eval_per_task: int = 40
    eval_generate: int = 32                        # decoded at each evaluation (ASR and ST alternate)
    total_steps: int = 3000
    batch_size: int = 8
    lr: float = 1e-3
    warmup_steps: int = 50
    ctc_steps: int = 1500
    ctc_lr: float = 2e-3
    ctc_compressor: Optional[str] = None
    lora: dict = field(default_factory=lambda: {"r": 16, "alpha": 32, "dropout": 0.05,
                                                "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]})
    projector: dict = field(default_factory=lambda: {"hidden": 576, "layers": 2})
    window_seconds: float = 10.0
    mixed_precision: str = "bf16"
    eval_every: int = 200
    save_every: int = 50
    max_new_tokens: int = 48


BASE_PRESETS = {
    "cpu": BasePreset(),
    # The whole pipeline on tiny random models and tone clips, in seconds (tests).
    "tiny": BasePreset(encoder="tiny-random", lm="tiny-random", n_train=0, n_test=0, eval_per_task=4,
                       eval_generate=4, total_steps=6, batch_size=4, lr=1e-2, warmup_steps=1, ctc_steps=2,
                       lora={"r": 4, "alpha": 8, "dropout": 0.0}, projector={"hidden": 32, "layers": 2},
                       window_seconds=1.0, mixed_precision="no", eval_every=3, save_every=2, max_new_tokens=6),
}


def prepare_base_data(preset: BasePreset, data_dir: Path, seed: int = 0) -> dict:
    """Corpora in ``data_dir`` (built once) and the manifests the base run reads: ``base_train.jsonl``
    (ASR + ST train) and ``base_eval.jsonl`` (the first ``eval_per_task`` test utterances of each
    task, alternating, so a partial decode scores both tasks)."""
    from lalm_fast.data import read_manifest, write_manifest
    from lalm_fast.reproduce import ensure_corpora

    sizes = {"n_train": preset.n_train, "n_test": preset.n_test} if preset.n_test else None
    ensure_corpora(data_dir, sizes, seed)
    train = read_manifest(data_dir / "asr_train.jsonl") + read_manifest(data_dir / "st_train.jsonl")
    asr, st = (read_manifest(data_dir / f"{task}_test.jsonl")[:preset.eval_per_task] for task in ("asr", "st"))
    held_out = [utt for pair in zip(asr, st) for utt in pair]
    paths = {"train": data_dir / "base_train.jsonl", "eval": data_dir / "base_eval.jsonl"}
    write_manifest(paths["train"], train)
    write_manifest(paths["eval"], held_out)
    return {key: str(path) for key, path in paths.items()}


def base_config(preset: BasePreset, paths: dict, run_dir: Path, seed: int = 0):
    from lalm_fast.training import TrainConfig

    return TrainConfig.from_dict({
        "model": {"encoder": preset.encoder, "lm": preset.lm, "compressor": preset.compressor,
                  "projector": dict(preset.projector), "lora": dict(preset.lora),
                  "window_seconds": preset.window_seconds, "mel_bins": 80, "seed": seed},
        "data": {"train": paths["train"], "eval": paths["eval"], "task": "auto", "batch_size": preset.batch_size,
                 "skip_bad": True, "cache": True, "cache_dir": str(run_dir / "feature_cache"),
                 "eval_generate": preset.eval_generate, "max_new_tokens": preset.max_new_tokens},
        "optim": {"lr": preset.lr, "weight_decay": 0.01, "warmup_steps": preset.warmup_steps,
                  "total_steps": preset.total_steps, "grad_accum": 1, "max_grad_norm": 1.0},
        "run": {"output_dir": str(run_dir), "seed": seed, "eval_every": preset.eval_every,
                "save_every": preset.save_every, "keep_last": 2, "mixed_precision": preset.mixed_precision,
                "progress": True},
        "align": {"ctc_steps": preset.ctc_steps, "lr": preset.ctc_lr, "compressor": preset.ctc_compressor},
    })


def train_base(run_dir: Path, data_dir: Path, preset: BasePreset, minutes: Optional[float] = None,
               seed: int = 0):
    """Train (or continue training) the base for about ``minutes`` (None: to the end of the schedule).
    Returns the :class:`~lalm_fast.training.TrainResult`; its ``final_dir`` is set once the
    schedule is finished."""
    from lalm_fast.training import train

    paths = prepare_base_data(preset, data_dir, seed)
    config = base_config(preset, paths, run_dir, seed)
    started = time.perf_counter()
    result = train(config, resume=True, stop_after_seconds=None if minutes is None else 60 * minutes)
    _append_session(run_dir, {"ended_at_step": result.step, "steps": len(result.losses),
                              "wall_seconds": round(time.perf_counter() - started, 1),
                              "finished": result.final_dir is not None, "preset": asdict(preset)})
    return result


def _append_session(run_dir: Path, record: dict) -> None:
    with open(run_dir / "sessions.jsonl", "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


def read_curve(run_dir: Path) -> dict:
    """The learning curve: ``train`` (step, loss, lr, seconds; the last line per step) and ``eval``
    (held-out loss, WER, BLEU per evaluation; the last record per step)."""
    from lalm_fast.training.loop import TRAIN_LOG

    def last_per_step(path: Path) -> list[dict]:
        if not path.exists():
            return []
        records = {}
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                record = json.loads(line)
                records[record["step"]] = record
        return [records[step] for step in sorted(records)]

    return {"train": last_per_step(run_dir / TRAIN_LOG), "eval": last_per_step(run_dir / "metrics.jsonl")}
