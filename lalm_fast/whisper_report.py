"""The Whisper track's report (:mod:`lalm_fast.whisper_track`): ``report.json`` / ``report.md`` /
``report.png``, the issue's targets checked against the measurements, and ``adapters/``."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path
from statistics import mean
from typing import Optional

from lalm_fast.lalm_report import format_number, format_percent

__all__ = ["summarise", "check_targets", "write_report", "plot_wer", "export_adapters", "FAMILIES"]

FAMILIES = {"uniform": "uniform pooling", "downsample": "downsampling", "segment": "segmentation",
            "segment-min2": "segmentation, min_len 2"}
# Relative WER budgets of the adapted models against the uncompressed one adapted the same way.
RELATIVE_TARGETS = {"uniform-x2": 0.03, "segment-rate2": 0.03, "uniform-x3": 0.05, "segment-rate3": 0.05,
                    "segment-rate3-min2": 0.05, "uniform-x4": 0.10, "segment-rate4": 0.10, "segment-rate4-min2": 0.10}
RECOVERY = ("uniform-x3", "uniform-x4", "downsample-x3", "segment-rate3", "segment-rate4", "segment-rate3-min2",
            "segment-rate4-min2")
PROTECTED_GROUPS = ("piper", "espeak_unseen")
COMPARISONS = [("uniform-x2", "downsample-x2"), ("uniform-x3", "downsample-x3"), ("segment-rate2", "uniform-x2"),
               ("segment-rate3", "uniform-x3"), ("segment-rate4", "uniform-x4"), ("segment-rate3-min2", "uniform-x3"),
               ("segment-rate4-min2", "uniform-x4"), ("segment-rate3-min2", "segment-rate3")]


def family_of(configuration: str) -> str:
    """The compression method of a configuration name (a key of ``FAMILIES``): one plot line each."""
    kind = configuration.split("-")[0]
    return f"{kind}-min2" if configuration.endswith("-min2") else kind


# ----- numbers ----------------------------------------------------------------------------------


def guarded(run: dict) -> float:
    """A scored run's WER after the repetition guard, from its stored predictions."""
    from lalm_fast.evaluate.repetition import guarded_wer

    predictions = run["predictions"]
    return guarded_wer([p["reference"] for p in predictions], [p["hypothesis"] for p in predictions])[0].wer


def summarise(configuration: str, results: dict) -> dict:
    """One report row from a configuration's zero-shot metrics and its adapted runs."""
    zero = results["zero_shot"]
    lora = {}
    for method in sorted({r["method"] for r in results["adapted"]}):
        runs = sorted((r for r in results["adapted"] if r["method"] == method), key=lambda r: r["seed"])
        wers = [r["wer"] for r in runs]
        groups = sorted({g for r in runs for g in r["wer_groups"]})
        lora[method] = {
            "wer": mean(wers), "wer_seeds": wers, "seeds": [r["seed"] for r in runs],
            "wer_guarded": mean(guarded(r) for r in runs),
            "seed_spread": max(wers) - min(wers) if len(wers) > 1 else None,
            "wer_groups": {g: mean(r["wer_groups"][g] for r in runs if g in r["wer_groups"]) for g in groups},
            "decode_ms_per_utterance": mean(r["decode_ms_per_utterance"] for r in runs),
            "train_cpu_minutes": mean(r["train_cpu_minutes_this_call"] for r in runs),
            "train_seconds": mean(r["train_seconds_this_call"] for r in runs),
            "eval_seconds": mean(r["decode_seconds"] for r in runs), "steps": runs[0]["steps"]}
    return {"configuration": configuration, "compressor": zero["compressor"],
            "family": family_of(configuration), "audio_tokens_per_second": zero["audio_tokens_per_second"],
            "zero_shot": {"wer": zero["wer"], "wer_guarded": guarded(zero), "wer_groups": zero["wer_groups"],
                          "decode_ms_per_utterance": zero["decode_ms_per_utterance"],
                          "eval_seconds": zero["decode_seconds"]},
            "lora": lora}


def better_method(rows: list[dict]) -> Optional[str]:
    """The adaptation method with the lower mean WER over the configurations both trained."""
    methods = sorted({m for row in rows for m in row["lora"]})
    shared = [row for row in rows if all(m in row["lora"] for m in methods)]
    if not methods or not shared:
        return None
    return min(methods, key=lambda m: mean(row["lora"][m]["wer"] for row in shared))


def check_targets(rows: list[dict], baseline: Optional[dict]) -> list[dict]:
    """Every target of the track that the measured rows can decide, with its numbers."""
    by = {row["configuration"]: row for row in rows}
    checks = []
    methods = sorted({m for row in rows for m in row["lora"]})
    for method in methods:
        ref = by.get("none", {}).get("lora", {}).get(method)
        for name, limit in RELATIVE_TARGETS.items():
            if ref and method in by.get(name, {}).get("lora", {}):
                rel = (by[name]["lora"][method]["wer"] - ref["wer"]) / max(ref["wer"], 1e-9)
                checks.append({"target": f"adapted within {limit:.0%} relative of none", "configuration": name,
                               "method": method, "value": rel, "limit": limit, "met": rel <= limit})
        for name in RECOVERY:
            if name in by and "none" in by and method in by[name]["lora"]:
                for key, label in (("wer", ""), ("wer_guarded", ", repetition guard on all")):
                    checks.append(_recovery(by[name], by["none"], method, key, label))
        for row in rows if baseline else []:
            for group in PROTECTED_GROUPS:
                shipped = (baseline.get("groups") or {}).get(group)
                ours = row["lora"].get(method, {}).get("wer_groups", {}).get(group)
                if shipped is not None and ours is not None:
                    checks.append({"target": f"no harm on {group} vs shipped Whisper",
                                   "configuration": row["configuration"], "method": method, "value": ours,
                                   "limit": shipped, "met": ours <= shipped})
    return checks


def _recovery(row: dict, none: dict, method: str, key: str, label: str) -> dict:
    """How much of what compression costs zero-shot (against uncompressed zero-shot) LoRA wins back."""
    lost = row["zero_shot"][key] - none["zero_shot"][key]
    won = row["zero_shot"][key] - row["lora"][method][key]
    return {"target": f"LoRA recovers >= half of the zero-shot loss{label}", "configuration": row["configuration"],
            "method": method, "value": won / lost if lost > 0 else None, "lost": lost, "recovered": won,
            "limit": 0.5, "met": lost <= 0 or won >= 0.5 * lost}


def comparisons(rows: list[dict]) -> list[dict]:
    """Pooling vs downsampling and segmentation vs uniform pooling at each rate, zero-shot and per
    method; a LoRA difference within the largest seed spread that method showed is called a tie."""
    by = {row["configuration"]: row for row in rows}
    out = []
    for a, b in COMPARISONS:
        if a not in by or b not in by:
            continue
        entry = {"a": a, "b": b, "zero_shot_difference": by[a]["zero_shot"]["wer"] - by[b]["zero_shot"]["wer"]}
        for method in set(by[a]["lora"]) & set(by[b]["lora"]):
            spreads = [r["lora"][method]["seed_spread"] for r in rows
                       if r["lora"].get(method, {}).get("seed_spread") is not None]
            noise = max(spreads) if spreads else None
            diff = by[a]["lora"][method]["wer"] - by[b]["lora"][method]["wer"]
            verdict = ("no seed spread measured" if noise is None else "inside the seed spread"
                       if abs(diff) <= noise else f"{a if diff < 0 else b} better")
            entry[method] = {"difference": diff, "seed_spread": noise, "verdict": verdict}
        out.append(entry)
    return out


# ----- files ------------------------------------------------------------------------------------


def write_report(out: Path, results: dict, preset_name: str, preset, extra: dict) -> dict:
    from lalm_fast.data.files import atomic_write

    rows = [summarise(name, r) for name, r in results.items()]
    baseline = extra.get("whisper_baseline")
    report = {"track": "whisper", "preset": preset_name, "settings": asdict(preset), "cuts": preset.cuts,
              "better_method": better_method(rows), "configurations": rows,
              "targets": check_targets(rows, baseline), "comparisons": comparisons(rows), **extra}
    with atomic_write(out / "report.json") as handle:
        json.dump(report, handle, indent=2, default=str)
    with atomic_write(out / "report.md") as handle:
        handle.write(markdown(report))
    plot_wer(out / "report.png", rows, baseline)
    return report


def markdown(report: dict) -> str:
    rows, baseline = report["configurations"], report.get("whisper_baseline")
    methods = sorted({m for row in rows for m in row["lora"]})
    best = report["better_method"]
    groups = sorted({g for row in rows for g in row["zero_shot"]["wer_groups"]})
    header = (["configuration", "tokens/s", "zero-shot WER"] + [f"LoRA {m} WER" for m in methods]
              + [f"{g} ({best})" for g in groups] + ["decode ms/utt", "train CPU-min/run"])
    lines = [f"# Whisper track: compression + decoder LoRA ({report['model']}, preset {report['preset']})", "",
             f"What `{report['preset']}` cuts: {report['cuts']}.", "",
             f"{report['n_train']} training and {report['n_test']} held-out test utterances "
             f"({report['test_audio_seconds']} s of test audio); greedy decoding; WER % after "
             "`normalize_english`. LoRA columns: mean over seeds (± max - min where two or more); "
             "voice-group columns: the better method.", "",
             "| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for row in rows:
        lora = row["lora"]
        cells = [row["configuration"], format_number(row["audio_tokens_per_second"], 1), format_percent(row["zero_shot"]["wer"])]
        cells += [_with_spread(lora.get(m)) for m in methods]
        cells += [format_percent((lora.get(best) or {}).get("wer_groups", {}).get(g)) for g in groups]
        cells += [format_number(row["zero_shot"]["decode_ms_per_utterance"], 0),
                  format_number((lora.get(best) or {}).get("train_cpu_minutes"), 2)]
        lines.append("| " + " | ".join(cells) + " |")
    if baseline:
        lines += ["", f"Whisper as shipped (its own decoder, all 1500 frames of the window): "
                      f"**{format_percent(baseline['wer'])}% WER**"
                      + "".join(f"; {g} {format_percent(w)}%" for g, w in sorted((baseline.get("groups") or {}).items()))
                      + "."]
    lines += _guard_table(rows, methods, baseline)
    lines += ["", f"Better method (lower mean LoRA WER over the configurations): **{best}**; "
                  "`adapters/<configuration>/` hold its first seed.", "", "## Targets", "",
              "| target | configuration | method | measured | limit | met |", "|---|---|---|---|---|---|"]
    lines += [f"| {c['target']} | {c['configuration']} | {c['method']} | {format_number(c['value'], 3)} | "
              f"{format_number(c['limit'], 3)} | {'yes' if c['met'] else '**no**'} |" for c in report["targets"]]
    missed = sum(not c["met"] for c in report["targets"])
    lines += ["", f"{missed} of {len(report['targets'])} target checks missed. Relative targets: "
              "(WER - WER none) / WER none, same method. Recovery: (zero-shot - LoRA) / (zero-shot - zero-shot none).",
              "", "## Comparisons at equal rate (WER difference a - b, percentage points)", "",
              "| a | b | zero-shot | " + " | ".join(methods) + " |", "|---|---|---|" + "---|" * len(methods)]
    for c in report["comparisons"]:
        lines.append(f"| {c['a']} | {c['b']} | {100 * c['zero_shot_difference']:+.1f} | " + " | ".join(
            f"{100 * c[m]['difference']:+.1f} ({c[m]['verdict']})" if m in c else "-" for m in methods) + " |")
    lines += ["", "Zero-shot differences have no seed; the test set's own sampling noise still applies.",
              f"Wall time of the call that wrote this report: {report['seconds_this_call']} s. Decode ms/utt: "
              "greedy decoding from the cached encoder output (the encoder's cost is excluded), zero-shot.", ""]
    return "\n".join(lines)


def _guard_table(rows: list[dict], methods: list[str], baseline: Optional[dict]) -> list[str]:
    """WER without -> with the repetition guard, per configuration and kind of model."""
    kinds = ["zero-shot"] + [f"LoRA {m}" for m in methods]
    lines = ["", "## Repetition guard", "",
             "The same decoded hypotheses cut where they replay a whole period of their own words "
             "(`lalm_fast.evaluate.repetition`); WER % without -> with the guard.", "",
             "| configuration | " + " | ".join(kinds) + " |", "|---" * (len(kinds) + 1) + "|"]
    for row in rows:
        entries = [row["zero_shot"]] + [row["lora"].get(m) for m in methods]
        lines.append(f"| {row['configuration']} | " + " | ".join(
            f"{format_percent(e['wer'])} -> {format_percent(e.get('wer_guarded'))}" if e else "-"
            for e in entries) + " |")
    if baseline and baseline.get("wer_guarded") is not None:
        lines += ["", f"Whisper as shipped: {format_percent(baseline['wer'])} -> "
                      f"{format_percent(baseline['wer_guarded'])}."]
    return lines


def _with_spread(entry: Optional[dict]) -> str:
    if not entry:
        return "-"
    spread = entry.get("seed_spread")
    return format_percent(entry["wer"]) + ("" if spread is None else f" ± {100 * spread:.1f}")


def plot_wer(path: Path, rows: list[dict], baseline: Optional[dict] = None) -> None:
    """WER against audio tokens per second: a line per compression method (uniform pooling,
    downsampling, segmentation; each starts at the uncompressed model), dashed zero-shot and
    solid / dotted for the two LoRA methods."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=(7, 4.5))
    none = [row for row in rows if row["configuration"] == "none"]
    styles = {"zero-shot": ("--", "o"), "transcripts": ("-", "s"), "distill": (":", "^")}
    for color, (family, label) in zip(("C0", "C1", "C2", "C3"), FAMILIES.items()):
        points = sorted(none + [r for r in rows if r["family"] == family], key=lambda r: r["audio_tokens_per_second"])
        for kind, (style, marker) in styles.items():
            pairs = [(r["audio_tokens_per_second"], _wer_of(r, kind)) for r in points]
            pairs = [(x, 100 * y) for x, y in pairs if y is not None]
            if pairs:
                axis.plot(*zip(*pairs), linestyle=style, marker=marker, color=color, label=f"{label}, {kind}")
    if baseline:
        axis.axhline(100 * baseline["wer"], color="gray", linestyle="-.", label="Whisper as shipped")
    axis.set_xlabel("audio tokens per second")
    axis.set_ylabel("WER % (lower is better)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)


def _wer_of(row: dict, kind: str) -> Optional[float]:
    if kind == "zero-shot":
        return row["zero_shot"]["wer"]
    return (row["lora"].get(kind) or {}).get("wer")


def export_adapters(out: Path, report: dict) -> Path:
    """``out/adapters/<configuration>/``: the better method's first-seed adapter (saved with
    ``save_adapter``, so the compressor config sits beside it) and its report row; ``run.json``
    says how they were made. Moved in whole, so a reader never sees half an export."""
    from lalm_fast.data.files import atomic_directory
    from lalm_fast.whisper_track import unit_dir

    method = report["better_method"]
    with atomic_directory(out / "adapters", replace_existing=True) as staging:
        for row in report["configurations"]:
            seed = row["lora"][method]["seeds"][0]
            shutil.copytree(unit_dir(out, row["configuration"], method, seed) / "adapter",
                            staging / row["configuration"])
            (staging / row["configuration"] / "metrics.json").write_text(json.dumps(row, indent=2, default=str))
        run = {"made_by": f"lalm-fast reproduce --track whisper (preset {report['preset']})",
               "model": report["model"], "method": method, "settings": report["settings"],
               "configurations": [row["configuration"] for row in report["configurations"]],
               "whisper_baseline": report.get("whisper_baseline"),
               "corpus": report["settings"]["corpus"], "seed": report["seed"], "test_ids": report.get("test_ids"),
               "zero_shot": {row["configuration"]: row["zero_shot"] for row in report["configurations"]}}
        (staging / "run.json").write_text(json.dumps(run, indent=2, default=str))
    return out / "adapters"
