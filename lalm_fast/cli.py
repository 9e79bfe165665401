"""Command line: ``lalm-fast bench [kernels]``, ``info``, ``train --config`` and ``eval``."""

from __future__ import annotations

import argparse
import os
import runpy
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run_bench_script(name: str, argv: list[str]) -> int:
    path = os.path.join(REPO_ROOT, "bench", name)
    if not os.path.exists(path):
        print(f"error: {path} not found; the benchmarks live in the source checkout "
              "(install with `pip install --no-build-isolation -e .` from a clone)", file=sys.stderr)
        return 2
    module = runpy.run_path(path, run_name="lalm_fast_bench")
    return module["main"](argv)


BENCH_SUITES = {"kernels": "kernels_cpu.py"}


def _info() -> int:
    import torch

    import lalm_fast
    from lalm_fast.ops import backends

    print(f"lalm-fast {lalm_fast.__version__}, torch {torch.__version__}, cuda {torch.cuda.is_available()}")
    for name, state in backends.available().items():
        print(f"  {name:<7} {state}")
    return 0


def _train(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="lalm-fast train", description="train an AudioLM (docs/training.md)")
    parser.add_argument("--config", required=True, help="JSON (or YAML) config, e.g. configs/tiny.json")
    parser.add_argument("--output-dir", help="overrides run.output_dir")
    parser.add_argument("--resume", action="store_true", help="continue from the newest complete checkpoint")
    args = parser.parse_args(argv)
    from lalm_fast.train import TrainConfig, train

    result = train(TrainConfig.from_file(args.config, output_dir=args.output_dir), resume=args.resume)
    print(f"trained to step {result.step}; model in {result.final_dir}; {result.skips}")
    if result.evals:
        print(f"last evaluation: {result.evals[-1]}")
    return 0


def _eval(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="lalm-fast eval", description="score a trained model on a manifest")
    parser.add_argument("--model", required=True, help="a model folder written by train (<output_dir>/final)")
    parser.add_argument("--manifest", required=True, help="JSONL manifest to score")
    parser.add_argument("--out", default=".", help="folder for eval.json and eval.md")
    parser.add_argument("--limit", type=int, help="decode only this many utterances for WER/BLEU")
    parser.add_argument("--skip-bad", action="store_true", help="count and skip bad utterances instead of failing")
    args = parser.parse_args(argv)
    from lalm_fast.train import evaluate_to_files

    result = evaluate_to_files(args.model, args.manifest, args.out, args.limit, args.skip_bad)
    metric = result.get("wer") or result.get("bleu")
    print(f"loss {result['loss']:.4f}; {metric}; written to {os.path.join(args.out, 'eval.md')}")
    return 0


COMMANDS = {"info": lambda rest: _info(), "train": _train, "eval": _eval}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="lalm-fast", description="audio-token compression for audio LLMs",
        epilog="lalm-fast bench [kernels] [options...]: the CPU kernel benchmark (options: bench kernels --help); "
               "lalm-fast info: versions and which backends can run here; "
               "lalm-fast train --config PATH [--output-dir DIR] [--resume]; "
               "lalm-fast eval --model DIR --manifest PATH [--out DIR]")
    parser.add_argument("command", choices=["bench", *COMMANDS])
    if not argv or argv[0] not in ("bench", *COMMANDS):
        parser.parse_args(argv)  # prints usage and exits
    if argv[0] in COMMANDS:
        try:
            return COMMANDS[argv[0]](argv[1:])
        except (OSError, ValueError, TypeError) as exc:  # bad paths, configs, data: one clear line
            print(f"lalm-fast {argv[0]}: error: {exc}", file=sys.stderr)
            return 2
    # Everything after `bench [suite]` belongs to the benchmark script's own parser.
    rest = argv[1:]
    suite = rest.pop(0) if rest and not rest[0].startswith("-") else "kernels"
    if suite not in BENCH_SUITES:
        parser.error(f"unknown benchmark suite {suite!r}; choose from {sorted(BENCH_SUITES)}")
    return _run_bench_script(BENCH_SUITES[suite], rest)


if __name__ == "__main__":
    sys.exit(main())
