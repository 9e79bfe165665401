"""``lalm-fast demo``: audio-token compression measured on held-out speech, two tables.

1. **Whisper track** (:mod:`lalm_fast.demo_whisper`): the pretrained Whisper tiny.en with its
   encoder output compressed before the decoder (uniform pooling, downsampling, segmentation at
   2-4x fewer tokens) and one decoder LoRA per configuration, committed by ``lalm-fast reproduce
   --track whisper`` (default ``results/whisper-compression/adapters``): WER as decoded and after
   the repetition guard, per voice group, decode time, next to Whisper as shipped and the run's
   zero-shot scores; plot ``demo-whisper.png``.
2. **Audio LLM**: the projectors and LoRA adapters that one ``lalm-fast reproduce`` run trained
   and committed (default ``results/lalm-track-cpu/adapters``: one base audio LLM and each
   compression inserted into it and adapted), per configuration:

   * audio tokens per second that reach the LLM,
   * WER on the English ASR test set (overall and per voice group) and BLEU on the EN->ES set,
   * LLM prefill time: one forward pass over prompt + audio tokens, batch 1, median over a few clips,
   * end-to-end time: the shared frozen encoder (measured once) plus compression, projection and
     greedy decoding of both test sets,

   and Whisper tiny.en's own decoder on the same ASR clips; plot ``demo.png``.

Both rebuild their run's held-out test sets here (synthesised speech: unseen sentences, seen and
unseen voices; the same clips when the runs' corpora agree, as the committed ones do) and check
the ids against the run's. It prints the tables and writes ``demo.md``, ``demo.json`` and the
plots. Packaged models and tools come from ``scripts/setup.sh --assets``; what is missing is
named with its install command.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional, Sequence

__all__ = ["DEFAULT_ADAPTERS", "DEFAULT_WHISPER_ADAPTERS", "DemoError", "main", "measure_lalm", "run_demo"]

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ADAPTERS = "results/lalm-track-cpu/adapters"
DEFAULT_WHISPER_ADAPTERS = "results/whisper-compression/adapters"
DEFAULT_OUT = "results/demo"
TRACKS = ("whisper", "lalm")
WHISPER_TITLE = "1. Compression inside a pretrained model: Whisper tiny.en + decoder LoRA"
LALM_TITLE = "2. An audio LLM at several audio-token rates (Whisper encoder + SmolLM2-135M)"
PREFILL_CLIPS = 8               # clips timed one at a time for the prefill column
LALM_UTTERANCES = 40            # per task, by default: sized for the demo's 10 minutes (docs/training.md, "lalm-fast demo")


class DemoError(ValueError):
    """A missing or inconsistent input: the CLI prints it as one line."""


@dataclass
class DemoRow:
    configuration: str
    compressor: str
    lora: Optional[bool]
    audio_tokens_per_second: Optional[float]
    wer: Optional[float]
    wer_guarded: Optional[float]    # after the repetition guard (lalm_fast.evaluate.repetition)
    bleu: Optional[float]
    prefill_ms: Optional[float]
    end_to_end_seconds: float
    wer_groups: dict = field(default_factory=dict)
    detail: dict = field(default_factory=dict)


# ----- inputs -------------------------------------------------------------------------------------


def find_adapters(path: str | os.PathLike) -> Path:
    """The adapters folder: as given, else relative to the source checkout (for runs outside it)."""
    folder = Path(path)
    if not folder.is_dir() and not folder.is_absolute() and (REPO_ROOT / folder).is_dir():
        folder = REPO_ROOT / folder
    if not (folder / "run.json").is_file():
        raise DemoError(f"{path} holds no run.json: pass --adapters <the adapters/ folder that "
                        "`lalm-fast reproduce` writes>")
    return folder


def read_run(folder: Path, configurations: Optional[Sequence[str]]) -> tuple[dict, list[str]]:
    run = json.loads((folder / "run.json").read_text())
    names = list(configurations) if configurations else list(run["configurations"])
    unknown = [n for n in names if n not in run["configurations"]]
    if unknown:
        raise DemoError(f"unknown configuration(s) {unknown}; this run has {run['configurations']}")
    for name in names:
        if not (folder / name / "lalm_train.json").is_file():
            raise DemoError(f"{folder / name} has no lalm_train.json: the adapters folder is incomplete")
    return run, names


def held_out_sets(run: dict, data_dir: Path, utterances: Optional[int], progress: bool) -> dict:
    """The run's held-out ASR and ST test utterances, rebuilt in ``data_dir`` (see :func:`held_out_utterances`)."""
    n_test = run.get("n_test") or max(len(ids) for ids in run["test_ids"].values())
    settings = run["settings"]  # older runs name their corpus size, newer ones their train utterances
    synthesised = settings.get("corpus", settings.get("n_train")) is not None
    return {task: held_out_utterances(data_dir, task, run["test_ids"][task], utterances, seed=run["seed"],
                                      n_test=n_test if synthesised else None, progress=progress)
            for task in ("asr", "st")}


def held_out_utterances(data_dir: Path, task: str, expected: list[str], utterances: Optional[int], *, seed: int,
                        n_test: Optional[int], progress: bool) -> list:
    """The first ``utterances`` (default: as many as the run evaluated) of ``task``'s test set in
    ``data_dir``, checked against ``expected``, the ids the run evaluated. A missing set is
    synthesised from the Bibles when ``n_test`` (the run's corpus size) is given: the corpus builder
    is deterministic and keeps files it already wrote, so the demo's two tracks and a second demo
    reuse them."""
    from lalm_fast.data import read_manifest
    from lalm_fast.data.corpora import build_corpora

    manifest = data_dir / f"{task}_test.jsonl"
    if not manifest.is_file():
        if n_test is None:
            raise DemoError(f"{data_dir} has no {manifest.name}, and this run's test clips were not synthesised "
                            "from the Bibles: pass --data <that run's data folder>")
        print(f"== synthesising the held-out test sets ({n_test} utterances per task) in {data_dir}", flush=True)
        build_corpora(data_dir, n_train=0, n_test=n_test, seed=seed, progress=progress)
    available = read_manifest(manifest)
    count = len(expected) if utterances is None else utterances
    if count < 1 or count > max(n_test or 0, len(expected)):
        raise DemoError(f"--utterances must be in 1..{max(n_test or 0, len(expected))}, got {count}")
    ids = [u.id for u in available[:count]]
    if ids[:len(expected)] != expected[:len(ids)]:
        raise DemoError(f"the {task} test set rebuilt in {data_dir} is not the one the run evaluated "
                        f"(first ids {ids[:3]} against {expected[:3]}): espeak-ng / Piper voices or the "
                        "Bible modules differ from that run's (see its report.json 'dataset.tools')")
    return available[:count]


# ----- measuring ------------------------------------------------------------------------------------


def encode_test_sets(configuration: Path, sets: dict, cache_root: Path) -> tuple[dict, float]:
    """Encode every test clip once with the frozen encoder (the same for all configurations, so it is
    timed once): ``{task: Dataset}`` reading from a fresh feature cache, and the encoder seconds."""
    from lalm_fast.data import whisper_encode_fn
    from lalm_fast.training import Dataset, ModelSpec, feature_cache, load_encoder, parse_spec

    spec = parse_spec(ModelSpec, json.loads((configuration / "lalm_train.json").read_text())["model"], "model")
    encode = whisper_encode_fn(load_encoder(spec).eval(), spec.window_seconds, spec.mel_bins, "cpu")
    data_spec = replace(_data_spec(configuration), cache=True)
    started = time.perf_counter()
    datasets = {task: Dataset(utts, spec, data_spec, feature_cache(spec, data_spec, cache_root), encode)
                for task, utts in sets.items()}
    return datasets, time.perf_counter() - started


def prefill_ms(model, dataset, count: int = PREFILL_CLIPS) -> float:
    """Median milliseconds of one LLM forward pass over prompt + audio tokens, one clip at a time
    (after one untimed warm-up pass)."""
    import torch

    from lalm_fast.training import audio_inputs

    times = []
    indices = list(range(min(count, len(dataset.utterances))))
    for n, i in enumerate([indices[0], *indices]):
        audio, lengths, _, _ = batch = dataset.load([i])
        with torch.inference_mode():
            inputs = model.build_inputs(**audio_inputs(dataset, audio, lengths), tasks=batch.tasks,
                                        padding_side="left")
            started = time.perf_counter()
            model.lm(inputs_embeds=inputs.inputs_embeds, attention_mask=inputs.attention_mask, use_cache=True)
            if n:
                times.append(1000 * (time.perf_counter() - started))
    return statistics.median(times)


def measure_configuration(folder: Path, name: str, datasets: dict, encode_seconds: float,
                          progress: bool = True) -> DemoRow:
    """Load one configuration's adapters onto the packaged bases and score it on both test sets."""
    from lalm_fast.evaluate import audio_tokens_per_second, decode_metrics, wer_by_group
    from lalm_fast.evaluate.repetition import guarded_wer
    from lalm_fast.training import load_trained

    started = time.perf_counter()
    model, spec = load_trained(folder / name)
    model.eval()
    load_seconds = time.perf_counter() - started
    data_spec = _data_spec(folder / name)
    scores, decode_seconds = {}, 0.0
    for task, dataset in datasets.items():
        started = time.perf_counter()
        scores[task] = decode_metrics(model, dataset, data_spec, len(dataset.utterances),
                                      progress=f"{name} {task}" if progress else None)
        decode_seconds += time.perf_counter() - started
    asr = datasets["asr"]
    states, lengths, _, _ = asr.load(list(range(len(asr.utterances))))
    tokens = int(model.compress_states(states, lengths).lengths.sum())
    groups = {u.id: u.extra.get("voice_group") for u in asr.utterances}
    decoded = scores["asr"]["decoded"]
    references, hypotheses = [d["reference"] for d in decoded], [d["hypothesis"] for d in decoded]
    by_group = wer_by_group(references, hypotheses, [groups.get(d["id"]) for d in decoded])
    trained = folder / name / "metrics.json"  # the run's own scores, kept beside the demo's
    metrics = json.loads(trained.read_text()) if trained.is_file() else {}
    return DemoRow(
        configuration=name, compressor=str(metrics.get("compressor", spec.compressor)), lora=spec.trains_lora,
        audio_tokens_per_second=audio_tokens_per_second(tokens, sum(asr.durations)),
        wer=scores["asr"]["wer"].wer, wer_guarded=guarded_wer(references, hypotheses)[0].wer,
        bleu=scores["st"]["bleu"].score, prefill_ms=prefill_ms(model, asr),
        end_to_end_seconds=encode_seconds + decode_seconds,
        wer_groups={group: result.wer for group, result in by_group.items()},
        detail={"decode_seconds": round(decode_seconds, 3), "load_seconds": round(load_seconds, 2),
                "wer": vars(scores["asr"]["wer"]), "bleu_signature": scores["st"]["bleu"].signature,
                "samples": {task: scores[task]["samples"][:2] for task in scores},
                "wer_at_training": metrics.get("wer"), "bleu_at_training": metrics.get("bleu")})


def _data_spec(folder: Path):
    from lalm_fast.training import DataSpec

    data = json.loads((folder / "lalm_train.json").read_text())["data"]
    return DataSpec(task="auto", batch_size=data.get("batch_size") or 8, max_new_tokens=data["max_new_tokens"])



def measure_whisper(run: dict, sets: dict, progress: bool) -> DemoRow:
    """Whisper's own encoder + decoder on the ASR clips (its time covers both; no ST: tiny.en is English only)."""
    from lalm_fast.baselines import WHISPER_TOKENS_PER_SECOND, whisper_baseline

    result = whisper_baseline(sets["asr"], run["encoder"], progress=progress)
    name = run["encoder"].removeprefix("packaged:")
    return DemoRow(
        configuration=f"whisper {name} (own decoder)", compressor="-", lora=None,
        audio_tokens_per_second=WHISPER_TOKENS_PER_SECOND, wer=result.wer.wer, wer_guarded=result.wer_guarded.wer,
        bleu=None, prefill_ms=None,
        end_to_end_seconds=result.compute_seconds,
        wer_groups={group: r.wer for group, r in result.groups.items()},
        detail={"wer": vars(result.wer), "note": "ASR set only (English-only model); time = encoder + decoder"})


# ----- the whole demo ---------------------------------------------------------------------------------


def measure_lalm(adapters: str | os.PathLike = DEFAULT_ADAPTERS, *, utterances: Optional[int] = None,
                 configurations: Optional[Sequence[str]] = None, data: Optional[str | os.PathLike] = None,
                 baseline: bool = True, progress: bool = True) -> dict:
    """Measure every configuration of ``adapters`` on its run's test sets (the demo's LALM table)."""
    from tqdm.auto import tqdm

    started = time.perf_counter()
    folder = find_adapters(adapters)
    run, names = read_run(folder, configurations)
    if utterances is None:  # the first of the run's test utterances (its report scores them all)
        utterances = min(LALM_UTTERANCES, *(len(ids) for ids in run["test_ids"].values()))
    data_dir = Path(data) if data else default_data_dir(run["seed"])
    sets = held_out_sets(run, data_dir, utterances, progress)
    with tempfile.TemporaryDirectory(prefix="lalm-demo-cache-") as cache_root:
        datasets, encode_seconds = encode_test_sets(folder / names[0], sets, Path(cache_root))
        rows = []
        for name in tqdm(names, desc="configurations", unit="config", disable=not progress, dynamic_ncols=True):
            rows.append(measure_configuration(folder, name, datasets, encode_seconds, progress))
    if baseline and run["encoder"].startswith("packaged:"):
        rows.append(measure_whisper(run, sets, progress))
    return {"adapters": str(folder), "made_by": run.get("made_by"), "data": str(data_dir),
            "utterances": {task: len(utts) for task, utts in sets.items()},
            "audio_seconds": {task: round(sum(ds.durations), 2) for task, ds in datasets.items()},
            "encode_seconds": round(encode_seconds, 3), "threads": _threads(),
            "rows": [vars(row) for row in rows], "seconds": round(time.perf_counter() - started, 1)}


def run_demo(out: str | os.PathLike = DEFAULT_OUT, *, tracks: Sequence[str] = TRACKS,
             adapters: str | os.PathLike = DEFAULT_ADAPTERS,
             whisper_adapters: str | os.PathLike = DEFAULT_WHISPER_ADAPTERS,
             configurations: Optional[Sequence[str]] = None, whisper_configurations: Optional[Sequence[str]] = None,
             utterances: Optional[int] = None, data: Optional[str | os.PathLike] = None, baseline: bool = True,
             progress: bool = True) -> dict:
    """The whole demo: the Whisper track's adapters, then the audio LLM's, each on its run's held-out
    clips; writes demo.md / demo.json / the plots into ``out`` and returns what demo.json holds."""
    from lalm_fast import demo_whisper

    unknown = sorted(set(tracks) - set(TRACKS))
    if unknown or not tracks:
        raise DemoError(f"--tracks must name some of {', '.join(TRACKS)}, got {', '.join(tracks) or 'none'}")
    started = time.perf_counter()
    result: dict = {"whisper_track": None, "lalm": None}
    if "whisper" in tracks:
        folder = find_adapters(whisper_adapters)
        run = json.loads((folder / "run.json").read_text())
        result["whisper_track"] = demo_whisper.measure_whisper_track(
            folder, Path(data) if data else default_data_dir(run.get("seed", 0)), utterances=utterances,
            configurations=whisper_configurations, baseline=baseline, progress=progress)
    if "lalm" in tracks:
        result["lalm"] = measure_lalm(adapters, utterances=utterances, configurations=configurations, data=data,
                                      baseline=baseline, progress=progress)
    result["seconds"] = round(time.perf_counter() - started, 1)
    write_outputs(Path(out), result)
    return result


def default_data_dir(seed: int) -> Path:
    """Where the demo synthesises held-out clips: shared by both tracks when their corpora agree."""
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lalm-fast"
    return base / f"demo-test-sets-seed{seed}"


def _threads() -> int:
    import torch

    return torch.get_num_threads()


# ----- output -------------------------------------------------------------------------------------------


def markdown(result: dict) -> str:
    from lalm_fast.lalm_report import format_number as cell

    rows = result["rows"]
    groups = sorted({g for row in rows for g in row["wer_groups"]})
    lines = ["| configuration | audio tokens/s | WER % | WER % guarded | BLEU | LLM prefill ms | end-to-end s |"
             + "".join(f" WER % {g} |" for g in groups),
             "|---|---|---|---|---|---|---|" + "---|" * len(groups)]
    for row in rows:
        cells = [row["configuration"], cell(row["audio_tokens_per_second"], 1), cell(row["wer"], 1, 100),
                 cell(row["wer_guarded"], 1, 100), cell(row["bleu"], 2), cell(row["prefill_ms"], 1), cell(row["end_to_end_seconds"], 1)]
        cells += [cell(row["wer_groups"].get(g), 1, 100) for g in groups]
        lines.append("| " + " | ".join(cells) + " |")
    counts = result["utterances"]
    lines += ["", f"{counts['asr']} ASR + {counts['st']} EN->ES test utterances "
              f"({result['audio_seconds']['asr']:.0f} s + {result['audio_seconds']['st']:.0f} s of audio), "
              f"{result['threads']} CPU threads; adapters: {result['adapters']} ({result['made_by']}).",
              "LLM prefill: one forward pass over prompt + audio tokens, batch 1, median of "
              f"{PREFILL_CLIPS} ASR clips. End-to-end: the shared frozen encoder ({result['encode_seconds']:.1f} s, "
              "measured once) + compression + projector + greedy decoding of both sets in batches; "
              "the Whisper row is its own encoder + decoder on the ASR set.",
              "WER: corpus-level on normalised text; guarded: the same hypotheses cut where they replay a whole "
              "period of their own words (`lalm_fast.evaluate.repetition`); per voice group: espeak_seen (training voices), "
              "espeak_unseen (held-out accents, variants, speeds, pitches), piper (held-out speeds).", ""]
    return "\n".join(lines)


def write_outputs(out: Path, result: dict) -> None:
    """demo.json, demo.md (the Whisper-track table first), demo-whisper.png and demo.png; prints the tables."""
    from lalm_fast import demo_whisper
    from lalm_fast.data.files import atomic_write

    out.mkdir(parents=True, exist_ok=True)
    with atomic_write(out / "demo.json") as handle:
        json.dump(result, handle, indent=2, default=str)
    sections, written = [], [out / "demo.md", out / "demo.json"]
    if result["whisper_track"]:
        demo_whisper.plot(out / "demo-whisper.png", result["whisper_track"])
        sections.append(f"## {WHISPER_TITLE}\n\n{demo_whisper.markdown(result['whisper_track'])}\n"
                        "![WER against audio tokens per second](demo-whisper.png)\n")
        written.append(out / "demo-whisper.png")
    if result["lalm"]:
        _plot_lalm(out / "demo.png", result["lalm"])
        sections.append(f"## {LALM_TITLE}\n\n{markdown(result['lalm'])}\n![WER and BLEU against audio tokens "
                        "per second](demo.png)\n")
        written.append(out / "demo.png")
    text = "\n".join(sections)
    with atomic_write(out / "demo.md") as handle:
        handle.write("# lalm-fast demo\n\n" + text)
    print(text)
    print(f"== written: {', '.join(map(str, written))} ({result['seconds']:.0f} s in all)", flush=True)


def _plot_lalm(path: Path, lalm: dict) -> None:
    from lalm_fast.lalm_report import plot_quality

    model_rows = [row for row in lalm["rows"] if row["lora"] is not None]
    baseline = next((row for row in lalm["rows"] if row["lora"] is None), None)
    plot_quality(path, model_rows, baseline_wer=baseline["wer"] if baseline else None,
                 baseline_label=baseline["configuration"] if baseline else "")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not usage + message
        raise DemoError(message)


def _names(value: Optional[str]) -> Optional[list[str]]:
    return value.split(",") if value else None


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = _Parser(prog="lalm-fast demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracks", default=",".join(TRACKS),
                        help=f"comma-separated, in order of the tables (default {','.join(TRACKS)})")
    parser.add_argument("--whisper-adapters", default=DEFAULT_WHISPER_ADAPTERS,
                        help="the adapters/ folder of a `lalm-fast reproduce --track whisper` run "
                             f"(default {DEFAULT_WHISPER_ADAPTERS})")
    parser.add_argument("--whisper-configs", help="comma-separated subset of the Whisper run's configurations")
    parser.add_argument("--adapters", default=DEFAULT_ADAPTERS,
                        help=f"the adapters/ folder of a `lalm-fast reproduce` run (default {DEFAULT_ADAPTERS})")
    parser.add_argument("--configs", help="comma-separated subset of the LALM run's configurations")
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"where demo.md/json and the plots go (default {DEFAULT_OUT})")
    parser.add_argument("--utterances", type=int, help="test utterances per task (default: the Whisper run's own "
                        f"count; the first {LALM_UTTERANCES} of the LALM run's)")
    parser.add_argument("--data", help="folder for the synthesised test sets (default ~/.cache/lalm-fast/...)")
    parser.add_argument("--no-baseline", action="store_true", help="skip Whisper as shipped")
    parser.add_argument("--no-progress", action="store_true")
    try:
        args = parser.parse_args(argv)
        for option, folder in (("--out", args.out), ("--data", args.data)):
            if folder is not None and os.path.exists(folder) and not os.path.isdir(folder):
                parser.error(f"{option} {folder!r} exists and is not a folder")  # before minutes of decoding
        run_demo(args.out, tracks=_names(args.tracks) or [], adapters=args.adapters,
                 whisper_adapters=args.whisper_adapters, configurations=_names(args.configs),
                 whisper_configurations=_names(args.whisper_configs), utterances=args.utterances, data=args.data,
                 baseline=not args.no_baseline, progress=not args.no_progress)
    except DemoError as error:
        print(f"lalm-fast demo: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
