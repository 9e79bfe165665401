"""Benchmark harness, installed as ``lalm_fast.bench``: the CPU and GPU kernel benchmarks
(``kernels_cpu``, ``bench_gpu``), the end-to-end benchmark of whole audio LLMs (``e2e``) and their
shared result format (``report``). Run them through ``lalm-fast bench`` (docs/benchmarks.md)."""
