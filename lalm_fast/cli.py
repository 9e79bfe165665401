"""Command line: ``lalm-fast bench [kernels]`` and ``lalm-fast info``."""

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


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="lalm-fast", description="audio-token compression for audio LLMs",
        epilog="lalm-fast bench [kernels] [options...]: the CPU kernel benchmark (options: bench kernels --help); "
               "lalm-fast info: versions and which backends can run here")
    parser.add_argument("command", choices=["bench", "info"])
    if not argv or argv[0] not in ("bench", "info"):
        parser.parse_args(argv)  # prints usage and exits
    if argv[0] == "info":
        return _info()
    # Everything after `bench [suite]` belongs to the benchmark script's own parser.
    rest = argv[1:]
    suite = rest.pop(0) if rest and not rest[0].startswith("-") else "kernels"
    if suite not in BENCH_SUITES:
        parser.error(f"unknown benchmark suite {suite!r}; choose from {sorted(BENCH_SUITES)}")
    return _run_bench_script(BENCH_SUITES[suite], rest)


if __name__ == "__main__":
    sys.exit(main())
