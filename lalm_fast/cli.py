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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lalm-fast", description="audio-token compression for audio LLMs")
    sub = parser.add_subparsers(dest="command", required=True)
    bench = sub.add_parser("bench", help="benchmarks (default: CPU kernels against baselines)")
    bench.add_argument("suite", nargs="?", default="kernels", choices=["kernels"])
    bench.add_argument("args", nargs=argparse.REMAINDER, help="passed to the benchmark (try --help)")
    sub.add_parser("info", help="versions and which backends can run here")
    args = parser.parse_args(argv)
    if args.command == "info":
        import torch

        import lalm_fast
        from lalm_fast.ops import backends

        print(f"lalm-fast {lalm_fast.__version__}, torch {torch.__version__}, cuda {torch.cuda.is_available()}")
        for name, state in backends.available().items():
            print(f"  {name:<7} {state}")
        return 0
    return _run_bench_script("kernels_cpu.py", args.args)


if __name__ == "__main__":
    sys.exit(main())
