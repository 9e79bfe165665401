"""One result format and one plotting script for every benchmark suite (docs/benchmarks.md).

Every CSV under ``bench/results/`` starts with the same columns, :data:`COMMON_FIELDS`
(suite, run id, date, device, threads, versions); each suite adds its own after them. Rows
are appended, the header is written once, and every append replaces the file atomically
(a reader or a killed run never leaves a torn file).

Where results go (:func:`results_dir`): ``bench/results/`` in a source checkout; from an
installed package (``lalm_fast.bench``), ``./bench-results/`` under the current directory, never
site-packages. A suite's ``--csv`` / ``--out`` option overrides both.

API for a benchmark module (``kernels_cpu``, ``e2e``, ``bench_gpu`` in this package)::

    from . import report

    common = report.common_fields("kernels_gpu", device)   # suite, run_id, date, device, versions
    report.append_rows(path, [{**common, "op": ..., "ms_median": ...}])   # header once
    print(report.markdown_table(rows, ["op", "ms_median"]))

Command line::

    python -m lalm_fast.bench.report plot bench/results/e2e_cpu.csv --out bench/results/e2e_cpu.png
    python -m lalm_fast.bench.report plot bench/results/kernels_cpu.csv --out kernels.png --run all
    python -m lalm_fast.bench.report table bench/results/e2e_cpu.csv [--columns a,b,c]

``plot`` draws the newest run in the file (``--run all`` or ``--run RUN_ID`` to choose) and
knows each suite's layout: e2e (time to first token, prefill, KV cache and LLM-side memory
against audio length, one line per compressor) and kernels (median time per provider and
shape, log scale).
"""

from __future__ import annotations

import argparse
import csv
import datetime
import io
import math
import os
import platform
import sys
import tempfile
from typing import Iterable, Optional, Sequence

__all__ = ["COMMON_FIELDS", "results_dir", "common_fields", "cpu_name", "device_name", "append_rows", "read_rows", "latest_run",
           "markdown_table", "plot", "main", "to_float"]

# The columns every suite's CSV starts with, in this order.
COMMON_FIELDS = ["suite", "run_id", "date", "device", "threads", "torch", "triton", "cuda", "lalm_fast"]


BENCH_DIR = os.path.dirname(os.path.abspath(__file__))


def results_dir() -> str:
    """``bench/results`` of the source checkout this package runs from, else ``./bench-results``."""
    checkout_results = os.path.join(BENCH_DIR, "results")
    in_checkout = os.path.isfile(os.path.join(os.path.dirname(BENCH_DIR), "setup.py"))
    return checkout_results if in_checkout and os.path.isdir(checkout_results) else os.path.abspath("bench-results")


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device=None) -> str:
    """The GPU's name for a CUDA device, else the CPU model."""
    import torch

    device = torch.device(device) if device is not None else None
    if device is not None and device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_name()


def _version(package: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return ""


def common_fields(suite: str, device=None, threads: Optional[int] = None,
                  run_id: Optional[str] = None) -> dict[str, str]:
    """The common columns of one run: suite, run_id (UTC start time), date, device, threads,
    torch / triton / CUDA / lalm_fast versions. ``device`` is a torch device (CPU when omitted)."""
    import torch

    import lalm_fast

    now = datetime.datetime.now(datetime.timezone.utc)
    return {
        "suite": suite,
        "run_id": run_id or now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "date": now.date().isoformat(),
        "device": device_name(device),
        "threads": str(threads if threads is not None else torch.get_num_threads()),
        "torch": torch.__version__,
        "triton": _version("triton"),
        "cuda": torch.version.cuda or "",
        "lalm_fast": lalm_fast.__version__,
    }


def _header(path: str) -> Optional[list[str]]:
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        return None
    with open(path, newline="") as f:
        return next(csv.reader(f), None)


def append_rows(path: str, rows: Sequence[dict], fields: Optional[Sequence[str]] = None) -> None:
    """Append ``rows`` (dicts) to the CSV at ``path``, writing the header only for a new file.

    ``fields`` (default: the keys of the first row, common fields first) fixes the column order.
    Appending to a file whose header differs raises a ValueError instead of mixing layouts.
    The file is rewritten to a temporary file beside it and moved in with ``os.replace``.
    """
    rows = list(rows)
    if not rows:
        return
    if fields is None:
        keys = list(rows[0])
        fields = [f for f in COMMON_FIELDS if f in keys] + [k for k in keys if k not in COMMON_FIELDS]
    fields = list(fields)
    extra = sorted({k for row in rows for k in row} - set(fields))
    if extra:
        raise ValueError(f"rows have columns {extra} that are not in the CSV fields {fields}")
    existing = _header(path)
    if existing is not None and existing != fields:
        raise ValueError(f"{path} has columns {existing}, but these rows have {fields}: write them to another "
                         "file (or convert the old rows)")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    if existing is None:
        writer.writeheader()
    writer.writerows({k: _cell(row.get(k, "")) for k in fields} for row in rows)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    old = b""
    if existing is not None:
        with open(path, "rb") as f:
            old = f.read()
        if old and not old.endswith(b"\n"):
            old += b"\n"
    fd, tmp = tempfile.mkstemp(prefix=".rows-", suffix=".csv", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(old + buffer.getvalue().encode())
            f.flush()
            os.fsync(f.fileno())
        if os.path.exists(path):
            os.chmod(tmp, os.stat(path).st_mode & 0o777)
        else:
            os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        return f"{value:.6g}" if abs(value) < 1e15 else str(value)
    return str(value)


def read_rows(path: str) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def latest_run(rows: Sequence[dict], run: str = "latest") -> list[dict]:
    """The rows of one run: ``"latest"`` (the newest run_id), ``"all"``, or a run_id."""
    if run == "all" or not rows:
        return list(rows)
    if run == "latest":
        run = max(r.get("run_id", "") for r in rows)
    chosen = [r for r in rows if r.get("run_id", "") == run]
    if not chosen:
        raise ValueError(f"no rows with run_id {run!r}")
    return chosen


def markdown_table(rows: Sequence[dict], columns: Sequence[str], headers: Optional[Sequence[str]] = None,
                   formats: Optional[dict] = None) -> str:
    """A GitHub markdown table of ``columns`` (``headers`` renames them; ``formats`` maps a
    column to a format spec such as ``".1f"`` or a function)."""
    headers = list(headers or columns)
    formats = formats or {}
    lines = ["| " + " | ".join(headers) + " |",
             "|" + "|".join("---:" if _numeric_column(rows, c) else "---" for c in columns) + "|"]
    for row in rows:
        cells = []
        for c in columns:
            value = row.get(c, "")
            fmt = formats.get(c)
            if callable(fmt):
                cells.append(fmt(value))
            elif fmt and value not in ("", None):
                try:
                    cells.append(format(float(value), fmt))
                except (TypeError, ValueError):
                    cells.append(str(value))
            else:
                cells.append(_cell(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _numeric_column(rows, column) -> bool:
    values = [r.get(column, "") for r in rows if r.get(column, "") not in ("", None)]
    return bool(values) and all(_is_number(v) for v in values)


def _is_number(value) -> bool:
    try:
        float(value)
        return True
    except (TypeError, ValueError):
        return False


def to_float(value) -> float:
    """``float(value)``, NaN for empty or non-numeric cells."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


# ---------------------------------------------------------------------------------------------
# Plotting (matplotlib, imported only here)


def plot(csv_path: str, out: str, run: str = "latest") -> str:
    """Draw ``csv_path``'s rows of ``run`` to ``out`` (PNG, or SVG/PDF by extension); returns ``out``."""
    rows = latest_run(read_rows(csv_path), run)
    if not rows:
        raise ValueError(f"{csv_path} has no rows")
    suite = rows[0].get("suite") or ("kernels_cpu" if "provider" in rows[0] else "")
    if suite == "e2e":
        figure = _plot_e2e(rows)
    elif "provider" in rows[0] or "impl" in rows[0]:
        figure = _plot_kernels(rows, suite)
    else:
        raise ValueError(f"{csv_path}: unknown suite {suite!r}; expected e2e or a kernels suite")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    figure.savefig(out, dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(figure)
    return out


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _title(rows: Sequence[dict], what: str) -> str:
    first = rows[0]
    runs = sorted({r.get("run_id", "") for r in rows})
    when = runs[-1] if len(runs) == 1 else f"{len(runs)} runs, {runs[0]} .. {runs[-1]}"
    return (f"{what}: {first.get('device', '?')}, {first.get('threads', '?')} threads, "
            f"torch {first.get('torch', '?')}, "
            f"lalm_fast {first.get('lalm_fast', '?')} ({when})")


E2E_PANELS = [("ttft_ms", "time to first token (ms)"), ("prefill_ms", "LLM prefill (ms)"),
              ("kv_bytes", "KV cache (MB)"), ("llm_peak_extra_mb", "LLM-side peak memory above weights (MB)")]


def _duration_label(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"


def _plot_e2e(rows: Sequence[dict]):
    plt = _pyplot()
    from matplotlib import ticker

    rows = [r for r in rows if r.get("status", "ok") == "ok"]
    if not rows:
        raise ValueError("no successful e2e rows to plot")
    figure, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    paths = sorted({r.get("path", "") for r in rows})
    compressors = list(dict.fromkeys(r["compressor"] for r in rows))
    styles = ["-", "--", ":", "-."]
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (column, label) in zip(axes.flat, E2E_PANELS):
        for p_index, path in enumerate(paths):
            for c_index, compressor in enumerate(compressors):
                points = sorted((to_float(r["duration_s"]), to_float(r.get(column))) for r in rows
                                if r.get("path", "") == path and r["compressor"] == compressor)
                points = [(x, y / 1e6 if column == "kv_bytes" else y) for x, y in points if not math.isnan(y)]
                if not points:
                    continue
                name = compressor if len(paths) == 1 else f"{compressor} ({path})"
                ax.plot(*zip(*points), marker="o", linestyle=styles[p_index % len(styles)],
                        color=cycle[c_index % len(cycle)], label=name)
        ax.set_xscale("log")
        ax.set_yscale("log")
        durations = sorted({to_float(r["duration_s"]) for r in rows})
        ax.set_xticks(durations)
        ax.set_xticklabels([_duration_label(d) for d in durations])
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_xlabel("audio length")
        ax.set_title(label, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    first = rows[0]
    figure.suptitle(_title(rows, f"end to end, preset {first.get('preset', '?')}, {first.get('dtype', '?')}") +
                    ("\nrandom weights (speed does not depend on weight values)"
                     if first.get("weights") == "random" else ""), fontsize=10)
    figure.tight_layout()
    return figure


def _plot_kernels(rows: Sequence[dict], suite: str):
    plt = _pyplot()
    provider_key = "provider" if "provider" in rows[0] else "impl"

    def provider(row):  # the GPU suite tells variants of one impl apart by their note (CUDA graph, ...)
        note = row.get("note") if provider_key == "impl" else ""
        return f"{row[provider_key]} ({note})" if note else row[provider_key]

    shape_keys = [k for k in ("op", "direction", "batch", "B", "dim", "D", "frames", "T", "rate") if k in rows[0]]
    shapes = list(dict.fromkeys(tuple(r.get(k, "") for k in shape_keys) for r in rows))
    providers = list(dict.fromkeys(provider(r) for r in rows))
    times = {(tuple(r.get(k, "") for k in shape_keys), provider(r)): to_float(r.get("ms_median")) for r in rows}
    figure, ax = plt.subplots(figsize=(min(18, max(8, 0.8 * len(shapes))), 6))
    width = 0.8 / max(1, len(providers))
    colors = plt.get_cmap("tab20").colors
    for index, provider in enumerate(providers):
        xs = [i + index * width for i in range(len(shapes))]
        ys = [times.get((shape, provider), float("nan")) for shape in shapes]
        ax.bar(xs, ys, width=width, label=provider, color=colors[index % len(colors)])
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(shapes))])
    ax.set_xticklabels([" ".join(f"{k}={v}" for k, v in zip(shape_keys, shape)) for shape in shapes],
                       rotation=60, ha="right", fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("median time (ms, log)")
    ax.grid(True, axis="y", which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title(_title(rows, suite or "kernels"), fontsize=10)
    figure.tight_layout()
    return figure


# ---------------------------------------------------------------------------------------------


def main(argv: Optional[Iterable[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="plot or tabulate a bench/results CSV (any suite)")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("plot", help="draw a CSV's newest run to an image")
    p.add_argument("csv")
    p.add_argument("--out", required=True, help="image path (.png, .svg or .pdf)")
    p.add_argument("--run", default="latest", help="'latest' (default), 'all', or a run_id")
    t = sub.add_parser("table", help="print a CSV's newest run as a markdown table")
    t.add_argument("csv")
    t.add_argument("--columns", help="comma-separated columns (default: all but the common ones)")
    t.add_argument("--run", default="latest")
    args = parser.parse_args(list(argv) if argv is not None else None)
    if args.command == "plot":
        print(f"wrote {plot(args.csv, args.out, args.run)}")
        return 0
    rows = latest_run(read_rows(args.csv), args.run)
    if not rows:
        print("(no rows)")
        return 0
    columns = args.columns.split(",") if args.columns else [c for c in rows[0] if c not in COMMON_FIELDS]
    print(markdown_table(rows, columns), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
