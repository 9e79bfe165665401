"""Command line: ``lalm-fast demo``, ``bench [kernels|e2e]``, ``info``, ``train --config``, ``eval`` and ``reproduce``."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from lalm_fast import extras

# Suites and their modules in lalm_fast.bench. "kernels" is the kernel benchmark of the default device:
# bench_gpu with CUDA, kernels_cpu otherwise; the other two names force one.
BENCH_SUITES = {"kernels": None, "kernels-cpu": "kernels_cpu", "kernels-gpu": "bench_gpu", "e2e": "e2e"}
# Options that `lalm-fast bench` (no suite: every suite, one after the other) passes to each suite.
SHARED_BENCH_OPTIONS = {"--quick"}


def _run_suite(module: str, argv: list[str]) -> int:
    status = importlib.import_module(f"lalm_fast.bench.{module}").main(argv)
    return status if isinstance(status, int) else 0  # bench_gpu's main returns its rows


def _bench_module(suite: str) -> str:
    module = BENCH_SUITES[suite]
    if module is None:
        import torch

        module = "bench_gpu" if torch.cuda.is_available() else "kernels_cpu"
    return module


def _run_bench_suite(suite: str, argv: list[str]) -> int:
    module = _bench_module(suite)
    command = f"bench {'kernels-gpu' if module == 'bench_gpu' else suite}"
    return _guarded(command, argv, lambda: _run_suite(module, argv))


def _bench(parser: argparse.ArgumentParser, rest: list[str]) -> int:
    if rest and not rest[0].startswith("-"):
        suite = rest.pop(0)
        if suite not in BENCH_SUITES:
            parser.error(f"unknown benchmark suite {suite!r}; choose from {sorted(BENCH_SUITES)}")
        return _run_bench_suite(suite, rest)
    if "-h" in rest or "--help" in rest:
        print(f"usage: lalm-fast bench [{'|'.join(BENCH_SUITES)}] [options...]\n\n"
              "Without a suite: every suite on the default device (kernels, then e2e), passing on only "
              f"{', '.join(sorted(SHARED_BENCH_OPTIONS))}. A suite's own options: lalm-fast bench SUITE --help.")
        return 0
    unknown = [option for option in rest if option not in SHARED_BENCH_OPTIONS]
    if unknown:
        parser.error(f"`lalm-fast bench` without a suite runs every suite and passes on only "
                     f"{sorted(SHARED_BENCH_OPTIONS)}; name a suite for {unknown} (e.g. lalm-fast bench kernels "
                     f"{' '.join(unknown)})")
    status = 0
    for suite in ("kernels", "e2e"):
        print(f"== lalm-fast bench {suite} {' '.join(rest)}".rstrip(), flush=True)
        code = _run_bench_suite(suite, list(rest))
        status = status or code  # every suite runs; the first failure's code is returned
    return status


def _info() -> int:
    import torch

    import lalm_fast
    from lalm_fast.ops import backends

    print(f"lalm-fast {lalm_fast.__version__}, torch {torch.__version__}, cuda {torch.cuda.is_available()}")
    for name, state in backends.available().items():
        print(f"  {name:<7} {state}")
    return 0


def _train(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="lalm-fast train", description="train an AudioLM, or LoRA on a native "
                                     "transformers audio LLM (model.native; docs/training.md)")
    parser.add_argument("--config", required=True, help="JSON (or YAML) config, e.g. configs/tiny.json")
    parser.add_argument("--output-dir", help="overrides run.output_dir")
    parser.add_argument("--resume", action="store_true", help="continue from the newest complete checkpoint")
    args = parser.parse_args(argv)
    from lalm_fast.training import TrainConfig, train

    result = train(TrainConfig.from_file(args.config, output_dir=args.output_dir), resume=args.resume)
    print(f"trained to step {result.step}; model in {result.final_dir}; {result.skips}")
    if result.evals:
        print(f"last evaluation: {result.evals[-1]}")
    return 0


def _eval(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="lalm-fast eval", description="score a trained model on a manifest")
    parser.add_argument("--model", required=True, help="a model folder written by train (<output_dir>/final), or a "
                        "Whisper-track adapter folder (results/whisper-compression/adapters/<configuration>)")
    parser.add_argument("--manifest", required=True, help="JSONL manifest to score (audio at any sample rate)")
    parser.add_argument("--out", default=".", help="folder for eval.json, eval.md and predictions.jsonl")
    parser.add_argument("--limit", type=int, help="decode only this many utterances for WER/BLEU")
    parser.add_argument("--skip-bad", action="store_true", help="count and skip bad utterances instead of failing")
    parser.add_argument("--base", help="Whisper adapters: the Whisper they adapt (default packaged:tiny.en)")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="Whisper adapters: tokens decoded at most")
    args = parser.parse_args(argv)
    _check_eval_args(args)
    from lalm_fast.evaluate.whisper import evaluate_whisper_to_files, is_whisper_adapter

    if is_whisper_adapter(args.model):
        result = evaluate_whisper_to_files(args.model, args.manifest, args.out, args.base, args.limit,
                                           args.max_new_tokens)
        print(f"WER {100 * result['wer']:.2f}%; written to {os.path.join(args.out, 'eval.md')}")
        return 0
    from lalm_fast.evaluate.model import evaluate_to_files

    result = evaluate_to_files(args.model, args.manifest, args.out, args.limit, args.skip_bad)
    metric = result.get("wer") or result.get("bleu")
    print(f"loss {result['loss']:.4f}; {metric}; written to {os.path.join(args.out, 'eval.md')}")
    return 0


def _check_eval_args(args) -> None:
    """Before any model loads: a long evaluation must not fail at its end on a bad --out.
    Raises ValueError, which :func:`main` prints as one line."""
    from lalm_fast.settings import existing_file

    if args.max_new_tokens < 1 or (args.limit is not None and args.limit < 1):
        raise ValueError("--max-new-tokens and --limit must be >= 1")
    if not os.path.isdir(args.model):
        raise ValueError(f"--model {args.model!r} is not a folder")
    problem = existing_file(args.manifest)
    if problem:
        raise ValueError(f"--manifest {problem}")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise ValueError(f"--out {args.out!r} exists and is not a folder")


def _reproduce(argv: list[str]) -> int:
    from lalm_fast.reproduce import main as reproduce_main

    return reproduce_main(argv)


def _demo(argv: list[str]) -> int:
    from lalm_fast.demo import main as demo_main

    return demo_main(argv)


COMMANDS = {"demo": _demo, "info": lambda rest: _info(), "train": _train, "eval": _eval, "reproduce": _reproduce}


def _missing_extra(command: str, modules: list[str]) -> int:
    print(extras.message(command, modules), file=sys.stderr)
    return 2


def _guarded(command: str, argv: list[str], run) -> int:
    """Run one command; a missing optional dependency ends it with one line naming its extra.

    The command's extra is checked before it starts (so a long run does not fail half-way), except
    for --help; an import that still fails inside is mapped to its extra the same way."""
    if not {"-h", "--help"}.intersection(argv):
        missing = extras.missing_modules(command)
        if missing:
            return _missing_extra(command, missing)
    try:
        return run()
    except ModuleNotFoundError as exc:
        module = (exc.name or "").split(".")[0]
        if not module or extras.message(command, [module]) is None:
            raise  # not an optional dependency: a real bug, keep its traceback
        return _missing_extra(command, [module])


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="lalm-fast", description="audio-token compression for audio LLMs",
        epilog="lalm-fast demo: the committed adapters at every audio-token rate on the held-out test sets, one "
               "table of WER, BLEU, prefill and end-to-end time (options: demo --help); "
               "lalm-fast bench [--quick]: every benchmark suite on the default device, kernels then e2e; "
               "lalm-fast bench kernels [options...]: the kernel benchmark (CPU: lalm_fast.bench.kernels_cpu, CUDA: "
               "lalm_fast.bench.bench_gpu; kernels-cpu / kernels-gpu force one; options: bench kernels --help); "
               "lalm-fast bench e2e [options...]: end-to-end speed of whole audio LLMs at several audio-token "
               "rates (options: bench e2e --help; docs/benchmarks.md); "
               "results go to bench/results in a source checkout, else ./bench-results (or --csv / --out); "
               "lalm-fast info: versions and which backends can run here; "
               "lalm-fast train --config PATH [--output-dir DIR] [--resume]; "
               "lalm-fast eval --model DIR --manifest PATH [--out DIR]; "
               "lalm-fast reproduce [--quick | --dry-run] [--out DIR] [--encoder DIR] [--lm DIR]: the miniature "
               "experiment from nothing (corpora, cache, one model per compressor, evaluation, report)")
    parser.add_argument("command", choices=["bench", *COMMANDS])
    if not argv or argv[0] not in ("bench", *COMMANDS):
        parser.parse_args(argv)  # prints usage and exits
    if argv[0] in COMMANDS:
        try:
            return _guarded(argv[0], argv[1:], lambda: COMMANDS[argv[0]](argv[1:]))
        except (OSError, ValueError, TypeError) as exc:  # bad paths, configs, data: one clear line
            print(f"lalm-fast {argv[0]}: error: {exc}", file=sys.stderr)
            return 2
    # Everything after `bench [suite]` belongs to the benchmark script's own parser.
    return _bench(parser, argv[1:])


if __name__ == "__main__":
    sys.exit(main())
