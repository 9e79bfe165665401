"""The LALM track's report: ``report.md`` / ``.json`` / ``.png``, the base's learning curve, and the
committed form of the trained weights (``adapters/``, what ``lalm-fast demo`` loads)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Optional

__all__ = ["ADAPTERS", "ADAPTER_RUN_FILE", "write_report", "guarded_bleu", "paired_differences", "export_adapters",
           "format_number", "format_percent", "plot_quality"]


def write_report(out: Path, rows: list[dict], preset_name: str, preset, extra: dict) -> dict:
    """``report.json`` (settings, rows, base, baseline), ``report.md`` (the tables) and ``report.png``."""
    from lalm_fast.data.files import atomic_write

    for row in rows:
        row["bleu_guarded"] = guarded_bleu(out, row["configuration"])
        if row.get("zero_shot"):
            row["zero_shot"]["bleu_guarded"] = guarded_bleu(out, f"{row['configuration']}-zero-shot")
    report = {"preset": preset_name, "settings": asdict(preset), "cuts": preset.cuts, "configurations": rows,
              **extra, "paired_differences": paired_differences(out, rows)}
    with atomic_write(out / "report.json") as handle:
        json.dump(report, handle, indent=2, default=str)
    with atomic_write(out / "report.md") as handle:
        handle.write("\n".join(_markdown(report, rows, preset_name, preset)))
    baseline = extra.get("whisper_baseline")
    plot_quality(out / "report.png", rows, baseline_wer=baseline["wer"] if baseline else None,
                 baseline_label="Whisper tiny.en (own decoder)")
    return report


def guarded_bleu(out: Path, name: str) -> Optional[float]:
    """BLEU of configuration ``name``'s decoded translations in ``<out>/scores`` after the repetition
    guard (:func:`lalm_fast.evaluate.repetition.trim_repetition`); None where they were not kept."""
    from lalm_fast.evaluate import bleu
    from lalm_fast.evaluate.model import read_predictions
    from lalm_fast.evaluate.repetition import trim_repetition
    from lalm_fast.lalm_track import decoded_path

    path = decoded_path(out, name, "st")
    if not path.is_file():
        return None
    decoded = list(read_predictions(path).values())
    return bleu([d["reference"] for d in decoded], [trim_repetition(d["hypothesis"]) for d in decoded]).score


def _markdown(report: dict, rows: list[dict], preset_name: str, preset) -> list[str]:
    base, baseline = report.get("base") or {}, report.get("whisper_baseline")
    lines = [f"# lalm-fast reproduce ({preset_name})", ""]
    if preset.cuts:
        lines += [f"What `{preset_name}` cuts: {preset.cuts}.", ""]
    if base:
        lines += [f"Base: `{base.get('compressor')}` ({base.get('rate')}), step {base['step']} of "
                  f"{base['total_steps']}{'' if base['finished'] else ' (schedule not finished yet)'}; every other "
                  f"configuration starts from it and adapts for {preset.adapt_steps} steps.", ""]
    rescored = report.get("rescored")
    if rescored:
        steps = sorted({row["base_step"] for row in rows})
        kept = rescored["runs_test_utterances_kept"]
        lines += [f"Rescored: the committed adapters of {', '.join(f'`{s}`' for s in rescored['sources'])} (base "
                  f"step {', '.join(map(str, steps))}), nothing trained, each scored on the first "
                  f"{rescored['test_utterances']} utterances of each test set (of which {kept['asr']} ASR and "
                  f"{kept['st']} ST are the runs' own test utterances); zero-shot is not rescored.", ""]
    groups = sorted({g for row in rows for g in row.get("wer_groups") or {}})
    lines += ["| configuration | compressor | adapts | audio tokens/s | WER % | guarded | BLEU (guarded) | "
              "zero-shot WER % (guarded) | zero-shot BLEU (guarded) | adapt CPU-min |"
              + "".join(f" WER % {g} |" for g in groups),
              "|---|---|---|---|---|---|---|---|---|---|" + "---|" * len(groups)]
    for row in rows:
        zero = row.get("zero_shot") or {}
        adapts = "-" if not row.get("adapt_steps") else "projector + LoRA" if row["lora"] else "projector"
        if row.get("adapt_steps") and row["adapt_steps"] != preset.adapt_steps:
            adapts += f", {row['adapt_steps']} steps"
        lines.append(
            f"| {row['configuration']} | {row['compressor']} | {adapts} | "
            f"{format_number(row['audio_tokens_per_second'], 2)} | {format_percent(row['wer'])} | "
            f"{format_percent(row.get('wer_guarded'))} | {_with_guarded(row, 'bleu', 2, 1)} | "
            f"{_with_guarded(zero, 'wer', 1, 100)} | {_with_guarded(zero, 'bleu', 2, 1)} | "
            f"{format_number(row.get('adapt_cpu_minutes'), 1)} |"
            + "".join(f" {format_percent((row.get('wer_groups') or {}).get(g))} |" for g in groups))
    if baseline:
        lines += ["", f"Whisper tiny.en's own decoder on the same ASR test utterances: "
                      f"**{100 * baseline['wer']:.1f}% WER** ({100 * baseline['wer_guarded']:.1f}% guarded)"
                      + "".join(f"; {g} {format_percent(w)}%" for g, w in sorted((baseline.get("groups") or {}).items()))
                      + "."]
    lines += ["", "WER: corpus-level on normalised text (lalm_fast.evaluate.normalize_english); guarded: after the "
              "repetition guard (lalm_fast.evaluate.repetition), which BLEU (guarded) applies to the translations. "
              f"BLEU: sacrebleu, {rows[0]['bleu_signature'] if rows else ''}. Adapt CPU-min: CPU time of the "
              "adaptation (all threads of its process), what compressing the base costs.", ""]
    lines += _difference_lines(report)
    if (report.get("curve_plot")):
        lines += [f"Learning curve of the base: `{report['curve_plot']}`.", ""]
    return lines


def _with_guarded(scores: dict, key: str, digits: int, scale: float) -> str:
    """A report cell: ``scores[key]`` and, in brackets, ``scores[key + "_guarded"]``; "-" without scores."""
    if scores.get(key) is None:
        return "-"
    return (f"{format_number(scores.get(key), digits, scale)} "
            f"({format_number(scores.get(key + '_guarded'), digits, scale)})")


def paired_differences(out: Path, rows: list[dict], resamples: int = 1000) -> list[dict]:
    """Paired differences on the test utterances, each with a 95% bootstrap interval: WER as decoded
    and guarded (:func:`lalm_fast.evaluate.wer_difference`) and BLEU (:func:`~lalm_fast.evaluate.bleu_difference`),
    every configuration against the base, each projector-only configuration against the LoRA one
    with the same compressor, and the base against Whisper's own decoder. Read from the decoded
    utterances in ``<out>/scores``; pairs without decoded transcripts are left out, and ``bleu`` is
    None for pairs without decoded translations."""
    from lalm_fast.evaluate import bleu_difference, wer_difference
    from lalm_fast.evaluate.repetition import trim_repetition
    from lalm_fast.lalm_track import BASE_RUN, WHISPER

    names = [row["configuration"] for row in rows]
    pairs = [(name, BASE_RUN) for name in names if name != BASE_RUN and BASE_RUN in names]
    pairs += [(BASE_RUN, WHISPER)] if BASE_RUN in names else []
    pairs += [(row["configuration"], lora["configuration"]) for row in rows if not row["lora"]
              for lora in rows if lora["lora"] and lora["compressor"] == row["compressor"]
              and lora["configuration"] != BASE_RUN]
    differences = []
    for name, other in pairs:
        asr = _decoded_pair(out, name, other, "asr")
        if asr is None:
            continue
        references, a, b = asr
        record = {"configuration": name, "against": other}
        for key, trim in (("as_decoded", str), ("guarded", trim_repetition)):
            record[key] = asdict(wer_difference(references, [trim(h) for h in a], [trim(h) for h in b],
                                                resamples=resamples))
        st = _decoded_pair(out, name, other, "st")
        record["bleu"] = st and asdict(bleu_difference(*st, resamples=resamples))
        differences.append(record)
    return differences


def _decoded_pair(out: Path, name: str, other: str, task: str) -> Optional[tuple[list, list, list]]:
    """References and both configurations' hypotheses for ``task``, on the utterances both decoded
    (None when either is missing or they decoded different utterances)."""
    from lalm_fast.evaluate.model import read_predictions
    from lalm_fast.lalm_track import decoded_path

    paths = [decoded_path(out, n, task) for n in (name, other)]
    if not all(path.is_file() for path in paths):
        return None
    decoded = [read_predictions(path) for path in paths]
    if decoded[0].keys() != decoded[1].keys():
        return None
    ids = sorted(decoded[0])
    return ([decoded[0][i]["reference"] for i in ids], *([d[i]["hypothesis"] for i in ids] for d in decoded))


def _difference_lines(report: dict) -> list[str]:
    differences = report.get("paired_differences") or []
    if not differences:
        return []
    first = differences[0]["as_decoded"]
    lines = [f"Paired differences on the {first['utterances']} ASR test utterances (WER, percentage points) and "
             f"the ST ones (BLEU), with 95% bootstrap intervals ({first['resamples']} resamples of the "
             "utterances, both systems scored on each): an interval that excludes 0 means this test set tells "
             "the two apart.", "",
             "| configuration | against | WER difference [95%] | relative [95%] | guarded difference [95%] | "
             "BLEU difference [95%] |",
             "|---|---|---|---|---|---|"]
    for record in differences:
        cells = []
        for key in ("as_decoded", "guarded"):
            d = record[key]
            cells.append(f"{100 * d['difference']:+.1f} [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]")
        d = record.get("bleu")
        cells.append(f"{d['difference']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}]" if d else "-")
        d = record["as_decoded"]
        relative = (f"{100 * d['relative']:+.0f}% [{100 * d['relative_low']:+.0f}, {100 * d['relative_high']:+.0f}]"
                    if d.get("relative") is not None else "-")
        lines.append(f"| {record['configuration']} | {record['against']} | {cells[0]} | {relative} | {cells[1]} | "
                     f"{cells[2]} |")
    return lines + [""]


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
    labelled = []
    for axis, key, scale, label in ((left, "wer", 100, "WER % (lower is better)"),
                                    (right, "bleu", 1, "BLEU (higher is better)")):
        points = [(row["audio_tokens_per_second"], row[key] * scale, row) for row in rows if row[key] is not None]
        for x, y, row in points:
            axis.scatter(x, y, marker="o" if row["lora"] else "s")
        axis.set_xscale("log")
        labelled.append((axis, points))
        if key == "wer" and baseline_wer is not None:
            axis.axhline(baseline_wer * scale, linestyle="--", color="gray", label=baseline_label)
            axis.legend(fontsize=7)
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
    for axis, points in labelled:  # once the layout is final: labels are spaced on screen
        _label_points(axis, points)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)


def _label_points(axis, points: list, spacing: float = 9.0) -> None:
    """Name each point beside it; labels of points at the same rate are pushed apart to at least
    ``spacing`` points vertically (in screen space), so close scores do not print on top of each other.
    Call it once the layout is final."""
    to_points = 72.0 / axis.figure.dpi
    by_rate: dict[float, list] = {}
    for x, y, row in points:
        by_rate.setdefault(round(x, 1), []).append((x, y, row))
    rightmost = max(by_rate, default=None)
    for rate, group in by_rate.items():
        side = -4 if rate == rightmost and len(by_rate) > 1 else 4  # the last rate's labels go left, inside the axes
        placed = None
        for x, y, row in sorted(group, key=lambda point: -point[1]):  # top down
            screen = axis.transData.transform((x, y))[1] * to_points
            label = screen + 4 if placed is None else min(screen + 4, placed - spacing)
            placed = label
            axis.annotate(row["configuration"], (x, y), fontsize=7, textcoords="offset points",
                          xytext=(side, label - screen), ha="left" if side > 0 else "right")


ADAPTERS = "adapters"           # <out>/adapters/: what `lalm-fast demo` loads (small enough to commit)
ADAPTER_RUN_FILE = "run.json"   # <out>/adapters/run.json: how they were made and how they scored
_LORA_FILES = ("adapter_model.safetensors", "adapter_config.json")  # peft's weights and config
_WEIGHT_FILES = ("projector.safetensors", _LORA_FILES[0])
_CONFIG_FILES = ("audio_lm_config.json", _LORA_FILES[1], "lalm_train.json")


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
            final, target = Path(row["model_dir"]), staging / row["configuration"]
            target.mkdir()
            for name in _WEIGHT_FILES:
                if (final / name).exists():
                    half = {k: v.half().contiguous() if v.is_floating_point() else v
                            for k, v in load_file(final / name).items()}
                    save_file(half, target / name)
            for name in _CONFIG_FILES:
                if (final / name).exists():
                    (target / name).write_bytes((final / name).read_bytes())
            _relative_init_from(target / "lalm_train.json")
            (target / "metrics.json").write_text(json.dumps(row, indent=2, default=str))
        _share_the_base_lora(staging)
        run = {"made_by": f"lalm-fast reproduce (preset {report['preset']})", "preset": report["preset"],
               "settings": report["settings"], "seed": report["seed"], "encoder": report["encoder"],
               "lm": report["lm"], "weights_dtype": "float16",
               "test_ids": {task: [u.id for u in read_manifest(report["data"][task])] for task in ("asr", "st")},
               "n_test": (report.get("dataset") or {}).get("n_test"),
               "whisper_baseline": report.get("whisper_baseline"),
               "configurations": [row["configuration"] for row in report["configurations"]]}
        (staging / ADAPTER_RUN_FILE).write_text(json.dumps(run, indent=2, default=str))
    return out / ADAPTERS


def _share_the_base_lora(adapters: Path) -> None:
    """A configuration adapted with the projector alone keeps the base's LoRA byte for byte: it names
    the base's folder (``lora_dir``) instead of carrying a copy (3.7 MB a configuration)."""
    from lalm_fast.lalm_track import BASE_RUN
    from lalm_fast.models.audio_lm import CONFIG_FILE

    base = adapters / BASE_RUN
    if not (base / _LORA_FILES[0]).exists():
        return
    base_weights = (base / _LORA_FILES[0]).read_bytes()
    for folder in adapters.iterdir():
        weights = folder / _LORA_FILES[0]
        if folder != base and weights.exists() and weights.read_bytes() == base_weights:
            config_file = folder / CONFIG_FILE
            config = json.loads(config_file.read_text())
            config["lora_dir"] = f"../{BASE_RUN}"
            config_file.write_text(json.dumps(config, indent=2, sort_keys=True))
            for name in _LORA_FILES:
                (folder / name).unlink()


def _relative_init_from(spec_file: Path) -> None:
    """An adapted model names its base by a path on the training machine; in the export the base is a
    sibling folder."""
    from lalm_fast.lalm_track import BASE_RUN

    spec = json.loads(spec_file.read_text())
    if spec["model"].get("init_from"):
        spec["model"]["init_from"] = f"../{BASE_RUN}"
        spec_file.write_text(json.dumps(spec, indent=2))
