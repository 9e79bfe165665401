"""``lalm-fast reproduce``: the miniature of the paper's experiment, from nothing.

1. build the synthetic speech corpora (:mod:`lalm_fast.data.corpora`: espeak-ng + Piper, English
   ASR and English-speech -> Spanish-text sets from the verse-aligned Bibles, held-out sentences
   and voices);
2. cache the frozen encoder's outputs once (one ``FeatureCache`` folder shared by every run);
3. train one model per configuration on ASR + ST together (``data.task = "auto"``): frame level
   (50 Hz), uniform pooling x2 / x3 / x4, downsampling x3, segmentation pooling at rate 3, each with
   projector + LoRA, and x3 pooling with the projector alone; each run starts with the CTC
   projector warm-up (:class:`lalm_fast.training.AlignSpec`);
4. evaluate all (WER on the ASR test set, BLEU on the EN->ES test set);
5. write ``report.md``, ``report.json`` and ``report.png`` (WER / BLEU against audio tokens per second).

Resumable: a configuration whose ``final/`` model and ``metrics.json`` exist is skipped, an
interrupted one continues from its newest checkpoint, the corpora and the feature cache are reused.

Presets (``PRESETS``): ``full``, ``quick`` (sized for about an hour on a 2-core CPU; what it cuts is
written into the report) and ``tiny`` (``--dry-run``: tiny random models on a handful of synthetic
tone clips, the whole pipeline in seconds, for the tests).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Optional, Sequence

__all__ = ["CONFIGURATIONS", "PRESETS", "Configuration", "Preset", "main", "reproduce", "ensure_corpora",
           "cached_whisper_baseline"]


@dataclass(frozen=True)
class Configuration:
    name: str
    compressor: str
    lora: bool = True

    @property
    def label(self) -> str:
        return self.name + ("" if self.lora else " (projector only)")


CONFIGURATIONS = [
    Configuration("frame-50hz", "none"),
    Configuration("uniform-x2", "uniform:2"),
    Configuration("uniform-x3", "uniform:3"),
    Configuration("uniform-x4", "uniform:4"),
    Configuration("downsample-x3", "downsample:3"),
    Configuration("segment-rate3", "segment:rate=3"),
    Configuration("uniform-x3-projector-only", "uniform:3", lora=False),
]


@dataclass
class Preset:
    corpus: Optional[str]                   # corpora SIZES key; None: synthetic tones (tiny)
    encoder: str
    lm: str
    steps: int                              # LM training steps per configuration
    ctc_steps: int                          # CTC projector warm-up steps per configuration
    batch_size: int
    test_utterances: Optional[int]          # per test set; None: all
    window_seconds: float = 10.0
    lr: float = 2e-4
    projector_lr_scale: float = 1.0
    warmup_steps: int = 20
    ctc_lr: float = 2e-3
    lora: dict = field(default_factory=lambda: {"r": 8, "alpha": 16, "dropout": 0.05})
    projector: dict = field(default_factory=lambda: {"hidden": 576, "layers": 2})
    mixed_precision: str = "bf16"
    max_new_tokens: int = 48
    save_every: int = 25
    jobs: int = 1                           # configurations trained at once, each in its own 1-thread process
    whisper_baseline: bool = True
    cuts: str = ""


PRESETS = {
    # Sized to fit a few hours on a 2-core CPU, with the quick preset's step costs scaled up
    # (docs/training.md, "Preset costs").
    "full": Preset("full", "packaged:tiny.en", "packaged:smollm2-135m", steps=400, ctc_steps=3000, batch_size=8,
                   test_utterances=100, lr=1e-3, jobs=2, mixed_precision="auto",
                   cuts="400 LM steps (0.3 epochs of the 10,000 ASR + ST training utterances) after 3000 CTC "
                        "warm-up steps per configuration; the first 100 utterances of each test set"),
    # Sized to finish in about an hour on a 2-core CPU; lr 1e-3 and a long CTC warm-up were the
    # levers that lowered WER most (docs/training.md, "Tuning the quick preset" and "Preset costs").
    "quick": Preset("quick", "packaged:tiny.en", "packaged:smollm2-135m", steps=120, ctc_steps=1500, batch_size=8,
                    test_utterances=40, lr=1e-3, jobs=2,
                    cuts="400 train + 100 test utterances per task instead of 5000 + 400; 120 LM steps (batch 8, "
                         "1.2 epochs of the 800 ASR + ST utterances) after 1500 CTC warm-up steps per "
                         "configuration instead of 400 + 3000; the first 40 utterances of each test set"),
    "tiny": Preset(None, "tiny-random", "tiny-random", steps=4, ctc_steps=4, batch_size=4, test_utterances=4,
                   window_seconds=1.0, lr=1e-2, warmup_steps=1, ctc_lr=1e-2,
                   lora={"r": 4, "alpha": 8, "dropout": 0.0}, projector={"hidden": 32, "layers": 2},
                   mixed_precision="no", max_new_tokens=6, save_every=2, whisper_baseline=False,
                   cuts="tiny random models, 8 synthetic tone clips per task: a pipeline check, not a result"),
}


class ReproduceError(ValueError):
    """A bad argument or input: the CLI prints it as one line."""


# ----- data -------------------------------------------------------------------------------------


def prepare_data(preset: Preset, data_dir: Path, seed: int) -> dict:
    """Corpora (built unless ``data_dir/dataset.json`` exists) and the manifests the runs read:
    ``train_mixed.jsonl`` (ASR + ST train) and the test subsets. Returns their paths and facts."""
    from lalm_fast.data import read_manifest, write_manifest

    from lalm_fast.data.corpora import SIZES

    info = ensure_corpora(data_dir, SIZES[preset.corpus] if preset.corpus else None, seed)
    paths = {}
    train = read_manifest(data_dir / "asr_train.jsonl") + read_manifest(data_dir / "st_train.jsonl")
    paths["train"] = data_dir / "train_mixed.jsonl"
    write_manifest(paths["train"], train)
    for task in ("asr", "st"):
        test = read_manifest(data_dir / f"{task}_test.jsonl")
        test = test[:preset.test_utterances] if preset.test_utterances else test
        paths[task] = data_dir / f"{task}_test_eval.jsonl"
        write_manifest(paths[task], test)
    return {"paths": {k: str(v) for k, v in paths.items()}, "dataset": info}


def ensure_corpora(data_dir: Path, sizes: Optional[dict], seed: int) -> dict:
    """The corpora in ``data_dir`` (``build_corpora(**sizes)`` unless its dataset.json exists;
    ``sizes`` None: synthetic tone clips); returns their description."""
    data_dir.mkdir(parents=True, exist_ok=True)
    if sizes is None:
        _tiny_corpora(data_dir, seed)
        return {"built_by": "lalm_fast.reproduce (synthetic tones)"}
    if not (data_dir / "dataset.json").exists():
        from lalm_fast.data.corpora import build_corpora

        print(f"== building the corpora ({sizes}) in {data_dir}", flush=True)
        build_corpora(data_dir, **sizes, seed=seed)
    return json.loads((data_dir / "dataset.json").read_text())


def _tiny_corpora(folder: Path, seed: int) -> None:
    """Tone clips over the tiny vocabulary; the "translation" is the words reversed (lang en-es)."""
    from lalm_fast.data import write_manifest
    from lalm_fast.training import make_synthetic

    for split, offset in (("train", 0), ("test", 1)):
        utts = make_synthetic(folder / f"tones_{split}", 8, seed * 10 + offset)
        write_manifest(folder / f"asr_{split}.jsonl", [replace(u, lang="en") for u in utts])
        write_manifest(folder / f"st_{split}.jsonl",
                       [replace(u, lang="en-es", translation=" ".join(reversed(u.text.split()))) for u in utts])


# ----- one configuration ------------------------------------------------------------------------


def train_config(configuration: Configuration, preset: Preset, paths: dict, out: Path, encoder: str, lm: str,
                 seed: int):
    from lalm_fast.training import TrainConfig

    return TrainConfig.from_dict({
        "model": {"encoder": encoder, "lm": lm, "compressor": configuration.compressor,
                  "projector": dict(preset.projector), "lora": dict(preset.lora) if configuration.lora else None,
                  "window_seconds": preset.window_seconds, "mel_bins": 80, "seed": seed},
        "data": {"train": paths["train"], "eval": None, "task": "auto", "batch_size": preset.batch_size,
                 "skip_bad": True, "cache": True, "cache_dir": str(out / "feature_cache"),
                 "max_new_tokens": preset.max_new_tokens, "normalize_targets": False},
        "optim": {"lr": preset.lr, "projector_lr_scale": preset.projector_lr_scale, "weight_decay": 0.01,
                  "warmup_steps": preset.warmup_steps, "total_steps": preset.steps, "grad_accum": 1,
                  "max_grad_norm": 1.0},
        "run": {"output_dir": str(out / "runs" / configuration.name), "seed": seed, "eval_every": 0,
                "save_every": preset.save_every, "keep_last": 1, "mixed_precision": preset.mixed_precision,
                "progress": True},
        "align": {"ctc_steps": preset.ctc_steps, "lr": preset.ctc_lr},
    })


def run_configuration(configuration: Configuration, preset: Preset, paths: dict, out: Path, encoder: str, lm: str,
                      seed: int) -> dict:
    """Train (resuming) and evaluate one configuration; skipped when its metrics exist."""
    from lalm_fast.data import read_manifest
    from lalm_fast.data.files import atomic_write
    from lalm_fast.evaluate import evaluate_model, wer_by_group
    from lalm_fast.training import Dataset, load_trained, train

    run_dir = out / "runs" / configuration.name
    metrics_path = run_dir / "metrics.json"
    if metrics_path.exists() and (run_dir / "final" / "lalm_train.json").exists():
        print(f"== {configuration.name}: done already ({metrics_path}), skipped", flush=True)
        return json.loads(metrics_path.read_text())
    print(f"== {configuration.name}: compressor {configuration.compressor}, "
          f"{'projector + LoRA' if configuration.lora else 'projector only'}", flush=True)
    config = train_config(configuration, preset, paths, out, encoder, lm, seed)
    _reuse_warmup(configuration, run_dir)
    started = time.perf_counter()
    result = train(config, resume=True)
    train_seconds = time.perf_counter() - started
    model, spec = load_trained(result.final_dir)
    scores: dict[str, Any] = {}
    started = time.perf_counter()
    for key, task in (("asr", "transcribe"), ("st", {"task": "translate", "lang": "Spanish"})):
        data_spec = replace(config.data, task=task)
        dataset = Dataset(read_manifest(paths[key]), spec, data_spec, _cache(config, out), _encode(model, spec))
        scores[key] = evaluate_model(model, dataset, data_spec, generate=len(dataset.utterances))
    eval_seconds = time.perf_counter() - started
    voice_groups = {u.id: u.extra.get("voice_group") for u in read_manifest(paths["asr"])}
    decoded = scores["asr"].get("decoded", [])
    by_group = wer_by_group([d["reference"] for d in decoded], [d["hypothesis"] for d in decoded],
                            [voice_groups.get(d["id"]) for d in decoded])
    metrics = {
        "configuration": configuration.name, "compressor": configuration.compressor, "lora": configuration.lora,
        "audio_tokens_per_second": scores["asr"]["audio_tokens_per_second"],
        "wer": scores["asr"]["wer"].wer, "wer_detail": asdict(scores["asr"]["wer"]),
        "wer_groups": {group: score.wer for group, score in by_group.items()},
        "bleu": scores["st"]["bleu"].score, "bleu_signature": scores["st"]["bleu"].signature,
        "asr_loss": scores["asr"]["loss"], "st_loss": scores["st"]["loss"],
        "samples": {"asr": scores["asr"].get("samples", [])[:2], "st": scores["st"].get("samples", [])[:2]},
        "steps": result.step, "train_seconds_this_call": round(train_seconds, 1),
        "eval_seconds": round(eval_seconds, 1),
        "loss_first": result.losses[0] if result.losses else None,
        "loss_last": sum(result.losses[-10:]) / len(result.losses[-10:]) if result.losses else None,
        "ctc_warmup": ({k: v for k, v in result.warmup.items() if k != "losses"} if result.warmup else None),
    }
    with atomic_write(metrics_path) as handle:
        json.dump(metrics, handle, indent=2)
    return metrics


def _reuse_warmup(configuration: Configuration, run_dir: Path) -> None:
    """Configurations that differ only in LoRA (uniform-x3 with and without) get the same CTC
    warm-up: same compressor, seed, data and settings. Copy a finished one instead of running it
    again; ``ctc_warmup`` still checks the settings and reruns on a mismatch."""
    import shutil

    from lalm_fast.data.files import atomic_directory
    from lalm_fast.training import CTC_WARMUP

    if (run_dir / CTC_WARMUP / "warmup.json").exists():
        return
    for other in CONFIGURATIONS:
        source = run_dir.parent / other.name / CTC_WARMUP
        if other.name != configuration.name and other.compressor == configuration.compressor \
                and (source / "warmup.json").exists():
            with atomic_directory(run_dir / CTC_WARMUP, replace_existing=True) as staging:
                shutil.copytree(source, staging, dirs_exist_ok=True)
            print(f"== {configuration.name}: CTC warm-up copied from {other.name}", flush=True)
            return


def _run_all(configurations: list[Configuration], preset: Preset, paths: dict, out: Path, encoder: str, lm: str,
             seed: int, jobs: int) -> list[dict]:
    """Every configuration; with ``jobs`` > 1 in that many worker processes of one thread each (on a
    small CPU two 1-thread trainings run about as fast each as one 2-thread training). The encoder
    outputs are cached first, once, so the workers only read the cache."""
    args = (preset, paths, out, encoder, lm, seed)
    if jobs == 1 or len(configurations) == 1:
        return [run_configuration(c, *args) for c in configurations]
    fill_cache(configurations[0], *args)
    import multiprocessing

    context = multiprocessing.get_context("spawn")  # no forked torch / OpenMP state
    with context.Pool(min(jobs, len(configurations)), initializer=_one_thread) as pool:
        return pool.starmap(run_configuration, [(c, *args) for c in configurations])


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


def fill_cache(configuration: Configuration, preset: Preset, paths: dict, out: Path, encoder: str, lm: str,
               seed: int) -> None:
    """Encode every train and test clip into the shared feature cache (hits cost nothing)."""
    from lalm_fast.data import read_manifest
    from lalm_fast.training import Dataset, load_encoder

    config = train_config(configuration, preset, paths, out, encoder, lm, seed)
    encode = _encode_with(load_encoder(config.model), config.model)
    for key in ("train", "asr", "st"):
        Dataset(read_manifest(paths[key]), config.model, replace(config.data, task="auto"), _cache(config, out), encode)


def _cache(config, out: Path):
    from lalm_fast.training import feature_cache

    return feature_cache(config.model, config.data, out)


def _encode(model, spec):
    return _encode_with(model.encoder, spec)


def _encode_with(encoder, spec):
    from lalm_fast.data import whisper_encode_fn

    return whisper_encode_fn(encoder, spec.window_seconds, spec.mel_bins, "cpu")


# ----- report -----------------------------------------------------------------------------------


def write_report(out: Path, rows: list[dict], preset_name: str, preset: Preset, extra: dict) -> dict:
    from lalm_fast.data.files import atomic_write

    report = {"preset": preset_name, "settings": asdict(preset), "cuts": preset.cuts, "configurations": rows,
              **extra}
    with atomic_write(out / "report.json") as handle:
        json.dump(report, handle, indent=2, default=str)
    lines = [f"# lalm-fast reproduce ({preset_name})", ""]
    if preset.cuts:
        lines += [f"What `{preset_name}` cuts: {preset.cuts}.", ""]
    baseline = extra.get("whisper_baseline")
    groups = sorted({g for row in rows for g in row.get("wer_groups") or {}})
    lines += ["| configuration | compressor | LoRA | audio tokens/s | WER % | BLEU | LM steps | train s |"
              + "".join(f" WER % {g} |" for g in groups),
              "|---|---|---|---|---|---|---|---|" + "---|" * len(groups)]
    for row in rows:
        lines.append(f"| {row['configuration']} | {row['compressor']} | {'yes' if row['lora'] else 'no'} | "
                     f"{format_number(row['audio_tokens_per_second'], 2)} | {format_number(100 * row['wer'], 1)} | "
                     f"{format_number(row['bleu'], 2)} | {row['steps']} | {format_number(row.get('train_seconds_this_call'), 0)} |"
                     + "".join(f" {format_percent((row.get('wer_groups') or {}).get(g))} |" for g in groups))
    if baseline:
        lines += ["", f"Whisper tiny.en's own decoder on the same ASR test utterances: "
                      f"**{100 * baseline['wer']:.1f}% WER**"
                      + "".join(f"; {g} {format_percent(w)}%" for g, w in sorted((baseline.get("groups") or {}).items()))
                      + "."]
    lines += ["", "WER: corpus-level on normalised text (lalm_fast.evaluate.normalize_english). "
              f"BLEU: sacrebleu, {rows[0]['bleu_signature'] if rows else ''}.",
              "Train s: seconds of training in the call that finished the run (0 when resumed at the end).", ""]
    with atomic_write(out / "report.md") as handle:
        handle.write("\n".join(lines))
    plot_quality(out / "report.png", rows, baseline_wer=baseline["wer"] if baseline else None,
                 baseline_label="Whisper tiny.en (own decoder)")
    return report


def format_number(value: Optional[float], digits: int, scale: float = 1.0) -> str:
    """A report cell: ``value * scale`` with ``digits`` decimals, or "-" when there is none."""
    return "-" if value is None else f"{value * scale:.{digits}f}"


def format_percent(fraction: Optional[float]) -> str:
    return format_number(fraction, 1, 100)


def plot_quality(path: Path, rows: list[dict], baseline_wer: Optional[float] = None, baseline_label: str = "") -> None:
    """WER and BLEU against audio tokens per second, one point per configuration (``rows``: dicts with
    configuration, audio_tokens_per_second, wer, bleu, lora); ``baseline_wer`` as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for axis, key, scale, label in ((left, "wer", 100, "WER % (lower is better)"),
                                    (right, "bleu", 1, "BLEU (higher is better)")):
        seen: dict[float, int] = {}  # configurations at the same rate: labels stacked, not on top of each other
        for row in rows:
            marker = "o" if row["lora"] else "s"
            x = row["audio_tokens_per_second"]
            axis.scatter(x, row[key] * scale, marker=marker)
            stacked = seen[round(x, 1)] = seen.get(round(x, 1), -1) + 1
            axis.annotate(row["configuration"], (x, row[key] * scale), fontsize=7, textcoords="offset points",
                          xytext=(4, 4 - 9 * stacked))
        if key == "wer" and baseline_wer is not None:
            axis.axhline(baseline_wer * scale, linestyle="--", color="gray", label=baseline_label)
            axis.legend(fontsize=7)
        axis.set_xscale("log")
        # The rates lie inside one decade, where a log axis has no labelled ticks: label the rates.
        axis.set_xticks(sorted({round(row["audio_tokens_per_second"], 1) for row in rows}))
        axis.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        axis.tick_params(axis="x", labelsize=7)
        axis.set_xlabel("audio tokens per second")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
    fig.suptitle("circles: projector + LoRA, squares: projector only")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)


# ----- the whole recipe -------------------------------------------------------------------------


def reproduce(out: str | os.PathLike, preset: str = "full", *, data: Optional[str] = None,
              encoder: Optional[str] = None, lm: Optional[str] = None, configurations: Optional[Sequence[str]] = None,
              steps: Optional[int] = None, ctc_steps: Optional[int] = None, seed: int = 0,
              jobs: Optional[int] = None) -> dict:
    """Run the recipe into ``out``; returns the report dict (also in ``out/report.json``)."""
    if preset not in PRESETS:
        raise ReproduceError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    chosen = PRESETS[preset]
    chosen = replace(chosen, steps=chosen.steps if steps is None else steps,
                     ctc_steps=chosen.ctc_steps if ctc_steps is None else ctc_steps)
    if chosen.steps < 1 or chosen.ctc_steps < 0:
        raise ReproduceError(f"--steps must be >= 1 and --ctc-steps >= 0, got {chosen.steps} and {chosen.ctc_steps}")
    jobs = chosen.jobs if jobs is None else jobs
    if jobs < 1:
        raise ReproduceError(f"--jobs must be >= 1, got {jobs}")
    encoder, lm = encoder or chosen.encoder, lm or chosen.lm
    for name, source in (("--encoder", encoder), ("--lm", lm)):
        if not (source.startswith("packaged:") or source == "tiny-random" or Path(source).is_dir()):
            raise ReproduceError(f"{name} {source!r} is not a local checkpoint folder (or packaged:NAME)")
    known = {c.name: c for c in CONFIGURATIONS}
    names = list(configurations) if configurations else list(known)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ReproduceError(f"unknown configuration(s) {unknown}; choose from {list(known)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    prepared = prepare_data(chosen, Path(data) if data else out / "data", seed)
    rows = _run_all([known[n] for n in names], chosen, prepared["paths"], out, encoder, lm, seed, jobs)
    extra: dict[str, Any] = {"encoder": encoder, "lm": lm, "seed": seed, "data": prepared["paths"],
                             "dataset": prepared["dataset"]}
    if chosen.whisper_baseline and encoder == "packaged:tiny.en":
        extra["whisper_baseline"] = cached_whisper_baseline(out, prepared["paths"]["asr"])
    extra["seconds_this_call"] = round(time.perf_counter() - started, 1)
    report = write_report(out, rows, preset, chosen, extra)
    export_adapters(out, report)
    print(f"== report: {out / 'report.md'}, {out / 'report.json'}, {out / 'report.png'}; "
          f"adapters: {out / ADAPTERS}", flush=True)
    return report


# ----- the trained weights, for `lalm-fast demo` ---------------------------------------------------

ADAPTERS = "adapters"           # <out>/adapters/: what `lalm-fast demo` loads (small enough to commit)
ADAPTER_RUN_FILE = "run.json"   # <out>/adapters/run.json: how they were made and how they scored
_WEIGHT_FILES = ("projector.safetensors", "adapter_model.safetensors")
_CONFIG_FILES = ("audio_lm_config.json", "adapter_config.json", "lalm_train.json")


def export_adapters(out: Path, report: dict) -> Path:
    """Copy every configuration's trained projector and LoRA adapter into ``out/adapters/<name>/`` as
    float16 safetensors (a few MB each), with its config files and its report row (``metrics.json``),
    plus ``run.json``: the preset, seed, model sources, the test utterance ids the run scored and the
    Whisper baseline. Written to a staging folder and moved in whole (replacing an earlier export
    only once complete), so a reader never sees half an export."""
    from safetensors.torch import load_file, save_file

    from lalm_fast.data import read_manifest
    from lalm_fast.data.files import atomic_directory

    with atomic_directory(out / ADAPTERS, replace_existing=True) as staging:
        for row in report["configurations"]:
            final, target = out / "runs" / row["configuration"] / "final", staging / row["configuration"]
            target.mkdir()
            for name in _WEIGHT_FILES:
                if (final / name).exists():
                    half = {k: v.half().contiguous() if v.is_floating_point() else v
                            for k, v in load_file(final / name).items()}
                    save_file(half, target / name)
            for name in _CONFIG_FILES:
                if (final / name).exists():
                    (target / name).write_bytes((final / name).read_bytes())
            (target / "metrics.json").write_text(json.dumps(row, indent=2, default=str))
        run = {"made_by": f"lalm-fast reproduce (preset {report['preset']})", "preset": report["preset"],
               "settings": report["settings"], "seed": report["seed"], "encoder": report["encoder"],
               "lm": report["lm"], "weights_dtype": "float16",
               "test_ids": {task: [u.id for u in read_manifest(report["data"][task])] for task in ("asr", "st")},
               "n_test": (report.get("dataset") or {}).get("n_test"),
               "whisper_baseline": report.get("whisper_baseline"),
               "configurations": [row["configuration"] for row in report["configurations"]]}
        (staging / ADAPTER_RUN_FILE).write_text(json.dumps(run, indent=2, default=str))
    return out / ADAPTERS


def cached_whisper_baseline(out: Path, manifest, **options) -> dict:
    """Whisper's own decoder on ``manifest`` (a path or utterances; ``options`` go to
    ``whisper_baseline``), scored once per ``out`` folder."""
    path = out / "whisper_baseline.json"
    if path.exists():
        stored = json.loads(path.read_text())
        if "wer_guarded" in stored:  # older files lack the repetition-guarded scores: score again
            return stored
    from lalm_fast.baselines import whisper_baseline
    from lalm_fast.data.files import atomic_write

    result = whisper_baseline(manifest, **options)
    summary = {"wer": result.wer.wer, "groups": {group: r.wer for group, r in result.groups.items()},
               "wer_guarded": result.wer_guarded.wer,
               "groups_guarded": {group: r.wer for group, r in result.groups_guarded.items()}}
    with atomic_write(path) as handle:
        json.dump(summary, handle)
    return summary


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not usage + message
        raise ReproduceError(message)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = _Parser(prog="lalm-fast reproduce", description=__doc__.split("\n\n")[0],
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    size = parser.add_mutually_exclusive_group()
    parser.add_argument("--track", choices=("lalm", "whisper"), default="lalm",
                        help="lalm (default): the LALM trained from the frozen encoder; whisper: compression "
                             "inside the pretrained Whisper tiny.en plus decoder LoRA (docs/whisper-track.md)")
    size.add_argument("--quick", action="store_true", help="about an hour on a 2-core CPU (see the report's cuts); "
                      "the whisper track's default, about 15 minutes")
    size.add_argument("--dry-run", action="store_true", help="tiny random models, synthetic tones: seconds")
    parser.add_argument("--out", default="results/reproduce", help="output folder (default results/reproduce; "
                        "results/reproduce-quick with --quick)")
    parser.add_argument("--data", help="corpora folder (built there unless it has dataset.json); default OUT/data")
    parser.add_argument("--encoder", help="local Whisper checkpoint folder (default packaged:tiny.en)")
    parser.add_argument("--lm", help="local causal LM folder (default packaged:smollm2-135m)")
    parser.add_argument("--configs", help="comma-separated subset of: " + ",".join(c.name for c in CONFIGURATIONS))
    parser.add_argument("--steps", type=int, help="LM training steps per configuration (overrides the preset)")
    parser.add_argument("--ctc-steps", type=int, help="CTC warm-up steps per configuration (0 = none)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, help="configurations trained at once, 1 thread each (quick: 2)")
    parser.add_argument("--seeds", type=int, help="whisper track: seeds for none, uniform-x3 and segment-rate3 "
                        "(default 2)")
    try:
        args = parser.parse_args(argv)
        if args.track == "whisper":
            return _whisper_main(args)
        if args.seeds is not None:
            raise ReproduceError("--seeds applies to the whisper track only")
        preset = "tiny" if args.dry_run else "quick" if args.quick else "full"
        out = args.out
        if out == "results/reproduce" and preset != "full":
            out = f"results/reproduce-{'quick' if preset == 'quick' else 'dry-run'}"
        reproduce(out, preset, data=args.data, encoder=args.encoder, lm=args.lm,
                  configurations=args.configs.split(",") if args.configs else None, steps=args.steps,
                  ctc_steps=args.ctc_steps, seed=args.seed, jobs=args.jobs)
    except ReproduceError as error:
        print(f"lalm-fast reproduce: error: {error}", file=sys.stderr)
        return 2
    return 0


def _whisper_main(args) -> int:
    from lalm_fast.whisper_track import run

    unsupported = [flag for flag, value in (("--encoder", args.encoder), ("--lm", args.lm), ("--ctc-steps",
                   args.ctc_steps), ("--jobs", args.jobs)) if value is not None]
    if unsupported:
        raise ReproduceError(f"{', '.join(unsupported)} apply to the lalm track only")
    preset = "tiny" if args.dry_run else "quick"
    out = args.out
    if out == "results/reproduce":
        out = "results/whisper-compression" + ("-dry-run" if args.dry_run else "")
    run(out, preset, data=args.data, configurations=args.configs.split(",") if args.configs else None,
        seeds=args.seeds, steps=args.steps, seed=args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
