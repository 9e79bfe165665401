"""The demo's first table: the Whisper track's committed adapters, re-scored here.

``lalm-fast reproduce --track whisper`` trains a decoder LoRA per compression configuration inside
the pretrained Whisper tiny.en and commits the adapters (default
``results/whisper-compression/adapters``). This loads each onto the packaged Whisper, encodes the
run's held-out ASR clips once, decodes them greedily and scores WER (as decoded and after the
repetition guard, overall and per voice group), next to Whisper as shipped on the same clips and to
the zero-shot WER the run measured (not re-scored: an unadapted compressed model often loops to the
token limit, which takes minutes on a CPU).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional, Sequence

__all__ = ["measure_whisper_track", "markdown", "plot"]


def read_whisper_run(folder: Path, configurations: Optional[Sequence[str]]) -> tuple[dict, list[str]]:
    """The adapters' ``run.json`` and the configurations to score (all, or the known ones asked for)."""
    from lalm_fast.demo import DemoError
    from lalm_fast.evaluate.whisper import is_whisper_adapter

    run = json.loads((folder / "run.json").read_text())
    if not run.get("test_ids"):
        raise DemoError(f"{folder / 'run.json'} names no test clips: export the adapters again with "
                        "`lalm-fast reproduce --track whisper`")
    names = list(configurations) if configurations else list(run["configurations"])
    unknown = [n for n in names if n not in run["configurations"]]
    if unknown:
        raise DemoError(f"unknown Whisper configuration(s) {unknown}; this run has {run['configurations']}")
    for name in names:
        if not is_whisper_adapter(folder / name):
            raise DemoError(f"{folder / name} holds no Whisper adapter: the adapters folder is incomplete")
    return run, names


def measure_whisper_track(folder: Path, data_dir: Path, *, utterances: Optional[int] = None,
                          configurations: Optional[Sequence[str]] = None, baseline: bool = True,
                          progress: bool = True) -> dict:
    """Every adapter of ``folder`` (a Whisper-track ``adapters/``) scored on its run's test clips,
    rebuilt in ``data_dir``; returns what ``demo.json`` holds under ``whisper_track``."""
    from lalm_fast.demo import held_out_utterances
    from lalm_fast.evaluate.whisper import score_adapters

    started = time.perf_counter()
    run, names = read_whisper_run(folder, configurations)
    corpus = run.get("corpus")
    clips = held_out_utterances(data_dir, "asr", run["test_ids"], utterances, seed=run["seed"],
                                n_test=(corpus or {}).get("n_test"), progress=progress)
    scores, info = score_adapters([folder / name for name in names], clips, run["model"],
                                  run["settings"]["max_new_tokens"], run["settings"]["eval_batch_size"], progress)
    rows = [_row(folder / name, run.get("method"), score) for name, score in zip(names, scores)]
    if baseline and str(run["model"]).startswith("packaged:"):
        rows.append(_shipped_whisper(clips, run["model"], progress))
    return {"adapters": str(folder), "made_by": run.get("made_by"), "method": run.get("method"),
            "model": run["model"], "utterances": len(clips), "audio_seconds": round(info["audio_seconds"], 2),
            "encode_seconds": round(info["encode_seconds"], 2), "rows": rows,
            "seconds": round(time.perf_counter() - started, 1)}


def _row(adapter: Path, method: Optional[str], score: dict) -> dict:
    trained = json.loads((adapter / "metrics.json").read_text())  # the report's row for this configuration
    at_training = (trained.get("lora", {}).get(method) or {}).get("wer_seeds", [None])[0]
    return {"configuration": adapter.name, "compressor": score["compressor"], "lora": True,
            "audio_tokens_per_second": score["audio_tokens_per_second"], "wer": score["wer"],
            "wer_guarded": score["wer_guarded"], "wer_groups": score["wer_groups"],
            "wer_at_training": at_training, "zero_shot_wer": trained["zero_shot"]["wer"],
            "zero_shot_wer_guarded": trained["zero_shot"].get("wer_guarded"),
            "decode_ms_per_utterance": score["decode_ms_per_utterance"],
            "samples": score["predictions"][:2]}


def _shipped_whisper(clips: list, source: str, progress: bool) -> dict:
    """Whisper as shipped on the same clips: its own decoder over the whole 30 s window, with the
    baseline's default decoding length, as the track scored it."""
    from lalm_fast.baselines import WHISPER_TOKENS_PER_SECOND, whisper_baseline

    result = whisper_baseline(clips, source, progress=progress)
    return {"configuration": f"whisper {source.removeprefix('packaged:')} as shipped", "compressor": "-",
            "lora": None, "audio_tokens_per_second": WHISPER_TOKENS_PER_SECOND, "wer": result.wer.wer,
            "wer_guarded": result.wer_guarded.wer, "wer_groups": {g: r.wer for g, r in result.groups.items()},
            "wer_at_training": None, "zero_shot_wer": None, "zero_shot_wer_guarded": None,
            "decode_ms_per_utterance": 1000 * result.compute_seconds / len(result.ids),
            "samples": [{"id": i, "reference": r, "hypothesis": h}
                        for i, r, h in list(zip(result.ids, result.references, result.hypotheses))[:2]]}


def markdown(result: dict) -> str:
    from lalm_fast.lalm_report import format_number, format_percent

    rows = result["rows"]
    groups = sorted({g for row in rows for g in row["wer_groups"]})
    header = (["configuration", "audio tokens/s", "WER %", "WER % guarded", "WER % in report",
               "zero-shot WER % (report)"] + [f"WER % {g}" for g in groups] + ["decode ms/utt"])
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for row in rows:
        zero_shot = "-" if row["zero_shot_wer"] is None else \
            f"{format_percent(row['zero_shot_wer'])} ({format_percent(row['zero_shot_wer_guarded'])} guarded)"
        cells = [row["configuration"], format_number(row["audio_tokens_per_second"], 1), format_percent(row["wer"]),
                 format_percent(row["wer_guarded"]), format_percent(row["wer_at_training"]), zero_shot]
        cells += [format_percent(row["wer_groups"].get(g)) for g in groups]
        cells.append(format_number(row["decode_ms_per_utterance"], 0))
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Whisper {result['model'].removeprefix('packaged:')} with the encoder output compressed before "
              f"the decoder and a decoder LoRA per configuration (trained on the transcripts: `{result['method']}`), "
              f"{result['utterances']} held-out synthetic ASR clips ({result['audio_seconds']:.0f} s of audio; the "
              f"run's test set), greedy decoding; adapters: {result['adapters']} ({result['made_by']}).",
              "WER % guarded: the same hypotheses cut where they replay a whole period of their own words "
              "(`lalm_fast.evaluate.repetition`). In report: the WER the run recorded for this adapter. "
              "Zero-shot: the same compression without the LoRA, as the run measured it.",
              "Decode ms/utt: greedy decoding from the encoder output (the encoder, "
              f"{result['encode_seconds']:.1f} s for all clips, runs once); the shipped row is its own encoder + "
              "decoder.", ""]
    return "\n".join(lines)


def plot(path: Path, result: dict) -> None:
    """WER against audio tokens per second (the track's plot) from the re-scored rows."""
    from lalm_fast.whisper_report import family_of, plot_wer

    adapted = [row for row in result["rows"] if row["lora"]]
    shipped = next((row for row in result["rows"] if row["lora"] is None), None)
    rows = [{"configuration": row["configuration"], "family": family_of(row["configuration"]),
             "audio_tokens_per_second": row["audio_tokens_per_second"], "zero_shot": {"wer": row["zero_shot_wer"]},
             "lora": {result["method"]: {"wer": row["wer"]}}} for row in adapted]
    plot_wer(path, rows, shipped)
