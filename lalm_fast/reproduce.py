"""``lalm-fast reproduce``: the paper's protocol in miniature, from nothing.

1. the synthetic speech corpora (:mod:`lalm_fast.data.corpora`: espeak-ng + Piper, English ASR
   and English-speech -> Spanish-text sets from the verse-aligned Bibles, held-out sentences and
   voices);
2. the frozen encoder's outputs cached once (one ``FeatureCache`` shared by every run);
3. **the base** (``base-25hz``, :mod:`lalm_fast.lalm_track`): one audio LLM at 25 Hz (the encoder's
   50 Hz frames pooled 2x) trained long on ASR + ST together, after a CTC projector warm-up. It
   trains in pieces: ``--base-minutes M`` stops after about M minutes of LM steps at a checkpoint,
   the next call continues the same schedule exactly, and the configurations below start from
   the base as it stands (the report says at which step);
4. **compression inserted into the base**: uniform pooling x2 / x3 / x4, downsampling x3 and
   segmentation at rate 3 (factors relative to the base's 25 Hz), each scored zero-shot, then
   adapted for the same number of steps (projector + LoRA; and x3 pooling with the projector
   alone) and scored again, with the adaptation's CPU time;
5. ``report.md``, ``report.json``, ``report.png`` (WER / BLEU against audio tokens per second),
   ``curve.png`` (the base's learning curve) and ``adapters/`` (float16, what ``lalm-fast demo`` loads).

Resumable: the corpora, the cache, the base's checkpoints and every finished configuration are
reused; a configuration scored against an earlier base step is redone, one scored on other test
clips is scored again (not adapted again).

``rescore`` (``--rescore RUN ...``) scores committed adapters again on more test clips, training
nothing: what decides a difference that the run's own test set cannot.

Presets (``PRESETS``): ``cpu`` (sized for our 2-core CPU, in pieces) and ``tiny`` (``--dry-run``:
tiny random models on a handful of synthetic tone clips, the whole pipeline in seconds, for the tests).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional, Sequence

from lalm_fast.lalm_report import export_adapters, write_report
from lalm_fast.lalm_track import BASE_RUN

__all__ = ["BASE", "CONFIGURATIONS", "PRESETS", "Configuration", "Preset", "main", "reproduce", "rescore",
           "rewrite_report", "ensure_corpora", "cached_whisper_baseline"]


@dataclass(frozen=True)
class Configuration:
    name: str
    compressor: str      # over the encoder's 50 Hz frames
    lora: bool = True    # adapts the LoRA as well as the projector

    @property
    def label(self) -> str:
        return self.name + ("" if self.lora else " (projector only)")


BASE = Configuration(BASE_RUN, "uniform:2")
# Factors relative to the base's 25 Hz: x3 is 8.3 audio tokens per second, "uniform:6" over the frames.
CONFIGURATIONS = [
    BASE,
    # The control: the base adapted for the same budget with nothing inserted, so that what the
    # compressed rows gain from their extra steps is not mistaken for recovery from compression.
    Configuration("base-25hz-adapted", BASE.compressor),
    Configuration("uniform-x2", "uniform:4"),
    Configuration("uniform-x3", "uniform:6"),
    Configuration("uniform-x4", "uniform:8"),
    Configuration("downsample-x3", "downsample:6"),
    Configuration("segment-rate3", "segment:rate=6"),
    Configuration("uniform-x3-projector-only", "uniform:6", lora=False),
]


@dataclass
class Preset:
    n_train: Optional[int]                  # corpus utterances per task; None: synthetic tones (tiny)
    n_test: int
    encoder: str
    lm: str
    base_steps: int                         # the base's schedule (optimizer steps, cosine)
    adapt_steps: int                        # per compressed configuration
    ctc_steps: int                          # CTC projector warm-up of the base
    batch_size: int
    test_utterances: Optional[int]          # scored per test set; None: all
    base_compressor: str = BASE.compressor
    window_seconds: float = 10.0
    lr: float = 1e-3
    adapt_lr: float = 5e-4
    warmup_steps: int = 50
    adapt_warmup_steps: int = 10
    ctc_lr: float = 2e-3
    lora: dict = field(default_factory=lambda: {"r": 16, "alpha": 32, "dropout": 0.05,
                                                "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]})
    projector: dict = field(default_factory=lambda: {"hidden": 576, "layers": 2})
    mixed_precision: str = "bf16"
    max_new_tokens: int = 48
    save_every: int = 50
    eval_every: int = 200                   # the base's held-out evaluations (its learning curve)
    eval_per_task: int = 40                 # held-out utterances per task in those evaluations
    eval_generate: int = 32                 # of which decoded (ASR and ST alternate)
    jobs: int = 1                           # configurations adapted at once, each in its own 1-thread process
    whisper_baseline: bool = True
    cuts: str = ""


PRESETS = {
    # Sized for our 2-core CPU: the base trains in pieces of --base-minutes (3.5-6.5 s per step at
    # 25 Hz on two threads), a 600-step adaptation costs about 40 CPU-minutes and scoring 300 + 300
    # clips about 20 minutes on one thread (docs/lalm-track.md).
    "cpu": Preset(n_train=5500, n_test=300, encoder="packaged:tiny.en", lm="packaged:smollm2-135m",
                  base_steps=3000, adapt_steps=600, ctc_steps=1500, batch_size=8, test_utterances=300,
                  cuts="train and test utterances per task as in the settings (n_train; test_utterances of "
                       "n_test scored); the base's 3000-step schedule may be unfinished (see its step)"),
    "tiny": Preset(n_train=None, n_test=8, encoder="tiny-random", lm="tiny-random", base_steps=4, adapt_steps=2,
                   ctc_steps=2, batch_size=4, test_utterances=4, window_seconds=1.0, lr=1e-2, adapt_lr=1e-2,
                   warmup_steps=1, adapt_warmup_steps=0, ctc_lr=1e-2, lora={"r": 4, "alpha": 8, "dropout": 0.0},
                   projector={"hidden": 32, "layers": 2}, mixed_precision="no", max_new_tokens=6, save_every=2,
                   eval_every=2, eval_per_task=4, eval_generate=4, whisper_baseline=False,
                   cuts="tiny random models, 8 synthetic tone clips per task: a pipeline check, not a result"),
}


class ReproduceError(ValueError):
    """A bad argument or input: the CLI prints it as one line."""


# ----- data -------------------------------------------------------------------------------------


def prepare_data(preset: Preset, data_dir: Path, seed: int, out: Path) -> dict:
    """Corpora (built unless ``data_dir/dataset.json`` exists) and the manifests the runs read:
    ``train_mixed.jsonl`` (ASR + ST train) and ``base_eval.jsonl`` (the base's held-out evaluations:
    the first ``eval_per_task`` test utterances of each task, alternating, so a partial decode
    scores both) in ``data_dir``; the scored test subsets in ``out`` (runs on one corpus may score
    different numbers of clips)."""
    from lalm_fast.data import read_manifest, write_manifest

    sizes = {"n_train": preset.n_train, "n_test": preset.n_test} if preset.n_train is not None else None
    info = ensure_corpora(data_dir, sizes, seed)
    paths = {"train": data_dir / "train_mixed.jsonl", "base_eval": data_dir / "base_eval.jsonl"}
    write_manifest(paths["train"], read_manifest(data_dir / "asr_train.jsonl") + read_manifest(data_dir / "st_train.jsonl"))
    tests = {task: read_manifest(data_dir / f"{task}_test.jsonl") for task in ("asr", "st")}
    write_manifest(paths["base_eval"], [utt for pair in zip(tests["asr"][:preset.eval_per_task],
                                                           tests["st"][:preset.eval_per_task]) for utt in pair])
    paths.update(_first_test_utterances(data_dir, preset.test_utterances, out))
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


# ----- the whole recipe -------------------------------------------------------------------------


def reproduce(out: str | os.PathLike, preset: str = "cpu", *, data: Optional[str] = None,
              encoder: Optional[str] = None, lm: Optional[str] = None, configurations: Optional[Sequence[str]] = None,
              adapt_steps: Optional[int] = None, ctc_steps: Optional[int] = None, seed: int = 0,
              jobs: Optional[int] = None, base_minutes: Optional[float] = None, base_only: bool = False,
              continue_from: Optional[str] = None, new_epoch: bool = False,
              test_utterances: Optional[int] = None) -> dict:
    """Run the recipe into ``out``; returns the report dict (also in ``out/report.json``), or with
    ``base_only`` the base's state (``{"dir", "step", "total_steps", "finished"}``) once it has trained.
    ``test_utterances``: clips scored per test set (default: the preset's)."""
    from lalm_fast import lalm_track

    if preset not in PRESETS:
        raise ReproduceError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    chosen = PRESETS[preset]
    chosen = replace(chosen, adapt_steps=chosen.adapt_steps if adapt_steps is None else adapt_steps,
                     ctc_steps=chosen.ctc_steps if ctc_steps is None else ctc_steps,
                     test_utterances=chosen.test_utterances if test_utterances is None else test_utterances)
    if chosen.adapt_steps < 1 or chosen.ctc_steps < 0:
        raise ReproduceError(f"--steps must be >= 1 and --ctc-steps >= 0, got {chosen.adapt_steps} and {chosen.ctc_steps}")
    if test_utterances is not None and test_utterances < 1:
        raise ReproduceError(f"--test-utterances must be >= 1, got {test_utterances}")
    if base_minutes is not None and not base_minutes >= 0:
        raise ReproduceError(f"--base-minutes must be >= 0 (0: the base as it stands), got {base_minutes}")
    if new_epoch and not continue_from:
        raise ReproduceError("--new-epoch goes on from a committed base: it needs --continue-from")
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
    prepared = prepare_data(chosen, Path(data) if data else out / "data", seed, out)
    paths = prepared["paths"]
    if "n_train" in prepared["dataset"]:  # --data may hold corpora of other sizes than the preset's
        chosen = replace(chosen, n_train=prepared["dataset"]["n_train"], n_test=prepared["dataset"]["n_test"])
    lalm_track.fill_cache(chosen, paths, out, encoder, seed)
    print(f"== {BASE_RUN}: training{'' if base_minutes is None else f' for about {base_minutes:g} minutes'}",
          flush=True)
    if base_minutes == 0 and not continue_from and not lalm_track.has_base(out):
        raise ReproduceError(f"--base-minutes 0 uses the base as it stands, but {out} has no base checkpoint yet")
    try:
        base = lalm_track.train_base(chosen, paths, out, encoder, lm, seed, base_minutes,
                                     Path(continue_from) if continue_from else None, new_epoch)
    except lalm_track.DataPositionError as error:
        raise ReproduceError(str(error)) from None
    print(f"== {BASE_RUN}: step {base['step']} of {base['total_steps']}", flush=True)
    if base_only:
        return base
    rows = _run_all([known[n] for n in names], chosen, paths, out, encoder, lm, seed, base, jobs)
    for row, name in zip(rows, names):
        row["model_dir"] = base["dir"] if name == BASE_RUN else str(out / "runs" / name / "final")
    curve = lalm_track.read_curve(out / "runs" / BASE_RUN)
    extra: dict[str, Any] = {"encoder": encoder, "lm": lm, "seed": seed, "data": paths, "dataset": prepared["dataset"],
                             "base": {**base, "compressor": chosen.base_compressor, "rate": "25 Hz",
                                      "evaluations": curve["eval"]}}
    if chosen.whisper_baseline and encoder == "packaged:tiny.en":
        extra["whisper_baseline"] = cached_whisper_baseline(out, paths["asr"], lalm_track.decoded_path(
            out, lalm_track.WHISPER, "asr"))
    (out / lalm_track.CURVE).write_text(json.dumps(curve))
    lalm_track.plot_curve(out / "curve.png", curve, (extra.get("whisper_baseline") or {}).get("wer"))
    extra["curve_plot"] = "curve.png"
    extra["seconds_this_call"] = round(time.perf_counter() - started, 1)
    report = write_report(out, rows, preset, chosen, extra)
    export_adapters(out, report)
    print(f"== report: {out / 'report.md'}, {out / 'report.json'}, {out / 'report.png'}, {out / 'curve.png'}; "
          f"adapters: {out / 'adapters'}", flush=True)
    return report


def rewrite_report(out: str | os.PathLike) -> dict:
    """Write ``out``'s report (``report.json`` / ``.md`` / ``.png``) again from its ``report.json`` and
    its decoded utterances in ``<out>/scores``, with what the report code computes today (e.g. the
    paired WER differences for a report made before them); nothing is trained or decoded."""
    out = Path(out)
    saved = json.loads((out / "report.json").read_text(encoding="utf-8"))
    derived = ("preset", "settings", "cuts", "configurations", "paired_differences",
               "wer_differences")  # the name of the paired differences before they held BLEU
    extra = {key: value for key, value in saved.items() if key not in derived}
    settings = {**saved["settings"], "cuts": PRESETS[saved["preset"]].cuts}
    return write_report(out, saved["configurations"], saved["preset"], Preset(**settings), extra)


def rescore(out: str | os.PathLike, sources: Sequence[str | os.PathLike], *, data: str | os.PathLike,
            test_utterances: Optional[int] = None, configurations: Optional[Sequence[str]] = None,
            jobs: int = 1) -> dict:
    """Score committed runs' adapters again on the first ``test_utterances`` clips of each test set in
    ``data`` (None: as many as the runs scored; more separate two configurations better); nothing is
    trained. ``sources``: committed runs (folders with ``adapters/``); a configuration found in several
    comes from the last. Writes ``out/report.*`` in the runs' format, each row its committed one with
    every score replaced (:func:`~lalm_fast.lalm_track.rescore_configuration`); returns the report dict."""
    from lalm_fast import lalm_track
    from lalm_fast.data import read_manifest

    found, last = _committed_adapters(sources)
    names = list(configurations) if configurations else [c.name for c in CONFIGURATIONS if c.name in found]
    missing = [name for name in names if name not in found]
    if missing:
        raise ReproduceError(f"configuration(s) {missing} not among the adapters of {[str(s) for s in sources]}")
    if test_utterances is None:
        test_utterances = last["settings"]["test_utterances"] or last["settings"]["n_test"]
    if test_utterances < 1 or jobs < 1:
        raise ReproduceError(f"--test-utterances and --jobs must be >= 1, got {test_utterances} and {jobs}")
    started, out, data = time.perf_counter(), Path(out), Path(data)
    paths = _first_test_utterances(data, test_utterances, out)
    preset = replace(Preset(**{**last["settings"], "cuts": PRESETS[last["preset"]].cuts}),
                     test_utterances=test_utterances)
    lalm_track.fill_cache(preset, paths, out, last["encoder"], last["seed"])
    rows = _map_jobs(lalm_track.rescore_configuration,
                     [(name, found[name], paths, out, preset.max_new_tokens) for name in names], jobs)
    scored = {task: {u.id for u in read_manifest(path)} for task, path in paths.items()}
    extra: dict[str, Any] = {
        "encoder": last["encoder"], "lm": last["lm"], "seed": last["seed"],
        "data": {task: str(path) for task, path in paths.items()},
        "dataset": json.loads((data / "dataset.json").read_text()) if (data / "dataset.json").is_file() else None,
        "rescored": {"sources": [str(s) for s in sources], "test_utterances": test_utterances,
                     "runs_test_utterances_kept": {task: sum(i in scored[task] for i in last["test_ids"][task])
                                                   for task in scored}}}
    if preset.whisper_baseline and last["encoder"] == "packaged:tiny.en":
        extra["whisper_baseline"] = cached_whisper_baseline(out, paths["asr"], lalm_track.decoded_path(
            out, lalm_track.WHISPER, "asr"))
    extra["seconds_this_call"] = round(time.perf_counter() - started, 1)
    report = write_report(out, rows, last["preset"], preset, extra)
    print(f"== report: {out / 'report.md'}, {out / 'report.json'}, {out / 'report.png'}", flush=True)
    return report


def _committed_adapters(sources: Sequence[str | os.PathLike]) -> tuple[dict[str, Path], dict]:
    """Each configuration's exported folder among the committed runs ``sources`` (the last run that
    has it), and the last run's ``run.json``; the runs must share encoder, LM and seed."""
    from lalm_fast.lalm_report import ADAPTER_RUN_FILE, ADAPTERS

    found, runs = {}, []
    for source in map(Path, sources):
        run_file = source / ADAPTERS / ADAPTER_RUN_FILE
        if not run_file.is_file():
            raise ReproduceError(f"{source} has no {ADAPTERS}/{ADAPTER_RUN_FILE}: not a committed LALM-track run")
        runs.append(json.loads(run_file.read_text()))
        found.update({row.parent.name: row.parent for row in sorted((source / ADAPTERS).glob("*/metrics.json"))})
    models = {(run["encoder"], run["lm"], run["seed"]) for run in runs}
    if len(models) > 1:
        raise ReproduceError(f"the runs use different encoders, LMs or seeds: {sorted(models)}")
    return found, runs[-1]


def _first_test_utterances(data: Path, count: Optional[int], out: Path) -> dict[str, Path]:
    """``out/<task>_test_eval.jsonl``: the first ``count`` (None: all) utterances of each test set of
    the corpora in ``data``."""
    from lalm_fast.data import read_manifest, write_manifest

    paths = {}
    for task in ("asr", "st"):
        test = read_manifest(data / f"{task}_test.jsonl") if (data / f"{task}_test.jsonl").is_file() else []
        if len(test) < (count or 1):
            raise ReproduceError(f"{data} has {len(test)} {task} test utterances, fewer than --test-utterances "
                                 f"{count} (build_corpora with a larger n_test)")
        out.mkdir(parents=True, exist_ok=True)
        paths[task] = out / f"{task}_test_eval.jsonl"
        write_manifest(paths[task], test[:count])
    return paths


def _run_all(configurations: list[Configuration], preset: Preset, paths: dict, out: Path, encoder: str, lm: str,
             seed: int, base: dict, jobs: int) -> list[dict]:
    """Every configuration; with ``jobs`` > 1 in that many worker processes of one thread each (on a
    small CPU two 1-thread trainings run about as fast each as one 2-thread training)."""
    from lalm_fast.lalm_track import run_configuration

    args = (preset, paths, out, encoder, lm, seed, base)
    return _map_jobs(run_configuration, [(c, *args) for c in configurations], jobs)


def _map_jobs(function, calls: list[tuple], jobs: int) -> list:
    """``function(*call)`` for every call, in this process or in ``jobs`` one-thread worker processes."""
    if jobs == 1 or len(calls) == 1:
        return [function(*call) for call in calls]
    import multiprocessing

    context = multiprocessing.get_context("spawn")  # no forked torch / OpenMP state
    with context.Pool(min(jobs, len(calls)), initializer=_one_thread) as pool:
        return pool.starmap(function, calls)


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


def cached_whisper_baseline(out: Path, manifest, decoded: Optional[Path] = None, **options) -> dict:
    """Whisper's own decoder on ``manifest`` (a path or utterances; ``options`` go to
    ``whisper_baseline``), scored once per ``out`` folder and set of utterances; ``decoded``: where
    its decoded utterances are kept (``write_predictions``), for paired differences."""
    from lalm_fast.data import read_manifest

    utterances = read_manifest(manifest) if isinstance(manifest, (str, os.PathLike)) else list(manifest)
    ids = [u.id for u in utterances]
    path = out / "whisper_baseline.json"
    if path.exists() and (decoded is None or decoded.exists()):
        stored = json.loads(path.read_text())
        if "wer_guarded" in stored and stored.pop("ids", ids) == ids:  # older files lack the guarded scores
            return stored
    from lalm_fast.baselines import whisper_baseline
    from lalm_fast.data.files import atomic_write
    from lalm_fast.evaluate.model import write_predictions

    result = whisper_baseline(utterances, **options)
    if decoded is not None:
        write_predictions(decoded, [{"id": i, "reference": r, "hypothesis": h}
                                    for i, r, h in zip(result.ids, result.references, result.hypotheses)])
    summary = {"wer": result.wer.wer, "groups": {group: r.wer for group, r in result.groups.items()},
               "wer_guarded": result.wer_guarded.wer,
               "groups_guarded": {group: r.wer for group, r in result.groups_guarded.items()}}
    with atomic_write(path) as handle:
        json.dump({**summary, "ids": ids}, handle)
    return summary


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not usage + message
        raise ReproduceError(message)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = _Parser(prog="lalm-fast reproduce", description=__doc__.split("\n\n")[0],
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    size = parser.add_mutually_exclusive_group()
    parser.add_argument("--track", choices=("lalm", "whisper"), default="lalm",
                        help="lalm (default): a base audio LLM on the frozen encoder, then compression + "
                             "adaptation from it (docs/lalm-track.md); whisper: compression "
                             "inside the pretrained Whisper tiny.en plus decoder LoRA (docs/whisper-track.md)")
    size.add_argument("--quick", action="store_true", help="the whisper track's preset (its default, about 15 "
                      "minutes); the lalm track has one real preset, cpu")
    size.add_argument("--dry-run", action="store_true", help="tiny random models, synthetic tones: seconds")
    parser.add_argument("--out", default="results/reproduce", help="output folder (default results/reproduce)")
    parser.add_argument("--data", help="corpora folder (built there unless it has dataset.json); default OUT/data")
    parser.add_argument("--encoder", help="local Whisper checkpoint folder (default packaged:tiny.en)")
    parser.add_argument("--lm", help="local causal LM folder (default packaged:smollm2-135m)")
    parser.add_argument("--configs", help="comma-separated subset of: " + ",".join(c.name for c in CONFIGURATIONS))
    parser.add_argument("--steps", type=int, help="adaptation steps per compressed configuration (whisper track: "
                        "LoRA steps); overrides the preset")
    parser.add_argument("--ctc-steps", type=int, help="CTC warm-up steps of the base (0 = none)")
    parser.add_argument("--base-minutes", type=float, help="train the base for about this many minutes of LM steps, "
                        "then go on from where it stands (a later call continues its schedule); 0: no more "
                        "base training")
    parser.add_argument("--base-only", action="store_true", help="train the base and stop (no configurations)")
    parser.add_argument("--continue-from", help="a committed run (e.g. results/lalm-track-cpu) whose base this run "
                        "goes on from when OUT has no base checkpoint yet (float16 weights: close to, not equal to, "
                        "the uninterrupted run)")
    parser.add_argument("--new-epoch", action="store_true", help="with --continue-from: go on from the start of "
                        "the base's next epoch (same step and schedule) instead of its data position, e.g. on a "
                        "larger training set in --data")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, help="configurations trained (or rescored) at once, 1 thread each "
                        "(quick: 2)")
    parser.add_argument("--rescore", nargs="+", metavar="RUN", help="score the adapters of committed runs (e.g. "
                        "results/lalm-track-cpu) again on the test sets of --data, training nothing; a "
                        "configuration in several runs comes from the last")
    parser.add_argument("--test-utterances", type=int, help="utterances scored per test set (default: the "
                        "preset's; with --rescore: the runs' own number)")
    parser.add_argument("--seeds", type=int, help="whisper track: seeds for none, uniform-x3, segment-rate3 and segment-rate3-min2 "
                        "(default 2)")
    try:
        args = parser.parse_args(argv)
        if args.track == "whisper":
            return _whisper_main(args)
        if args.seeds is not None:
            raise ReproduceError("--seeds applies to the whisper track only")
        if args.rescore:
            return _rescore_main(args)
        preset = "tiny" if args.dry_run else "cpu"
        out = "results/reproduce-dry-run" if args.out == "results/reproduce" and args.dry_run else args.out
        reproduce(out, preset, data=args.data, encoder=args.encoder, lm=args.lm,
                  configurations=args.configs.split(",") if args.configs else None, adapt_steps=args.steps,
                  ctc_steps=args.ctc_steps, seed=args.seed, jobs=args.jobs, base_minutes=args.base_minutes,
                  base_only=args.base_only, continue_from=args.continue_from, new_epoch=args.new_epoch,
                  test_utterances=args.test_utterances)
    except ReproduceError as error:
        print(f"lalm-fast reproduce: error: {error}", file=sys.stderr)
        return 2
    return 0


def _rescore_main(args) -> int:
    training = [flag for flag, value in (
        ("--dry-run", args.dry_run or None), ("--quick", args.quick or None), ("--encoder", args.encoder),
        ("--lm", args.lm), ("--steps", args.steps), ("--ctc-steps", args.ctc_steps),
        ("--base-minutes", args.base_minutes), ("--base-only", args.base_only or None),
        ("--continue-from", args.continue_from), ("--new-epoch", args.new_epoch or None)) if value is not None]
    if training:
        raise ReproduceError(f"--rescore trains nothing: {', '.join(training)} do not apply")
    if not args.data or args.out == "results/reproduce":
        raise ReproduceError("--rescore needs --data (the corpora to score on) and --out (where its report goes)")
    rescore(args.out, args.rescore, data=args.data, test_utterances=args.test_utterances,
            configurations=args.configs.split(",") if args.configs else None, jobs=args.jobs or 1)
    return 0


def _whisper_main(args) -> int:
    from lalm_fast.whisper_track import run

    unsupported = [flag for flag, value in (("--encoder", args.encoder), ("--lm", args.lm), ("--ctc-steps",
                   args.ctc_steps), ("--jobs", args.jobs), ("--test-utterances", args.test_utterances),
                   ("--base-minutes", args.base_minutes), ("--base-only", args.base_only or None),
                   ("--continue-from", args.continue_from), ("--new-epoch", args.new_epoch or None))
                   if value is not None]
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
