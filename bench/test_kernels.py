"""Kernel microbenchmarks as pytest-benchmark tests: each public op's forward (and the pooling ops'
backward) on CPU, and on CUDA when a device is present, with its baselines timed in the same run.

    python -m pytest bench/ --benchmark-json=bench/results/kernels_pytest.json    # measure
    python -m pytest bench/ --benchmark-disable                                 # correctness only, seconds

Each test checks the op against the pure-PyTorch reference (never a timing) and records in
``benchmark.extra_info``: the bytes the op must move at least (input read once, output written
once), its GB/s, the copy bandwidth of a tensor of the input's size and the op's % of it, and an
eager PyTorch baseline's median time with the ratio baseline / op. The default ``python -m pytest``
runs them too (seconds; timings there are a smoke test, never asserted); the CSV benchmark is
``lalm-fast bench kernels``.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

import lalm_fast.ops as ops
from lalm_fast.bench.kernels_cpu import measure, random_boundaries

pytest.importorskip("pytest_benchmark")

pytestmark = pytest.mark.bench

RATE = 3
# Whisper-tiny encoder output on CPU; Whisper-large (Qwen2-Audio's encoder) in bf16 on GPU.
SHAPES = {"cpu": (8, 1500, 384, torch.float32), "cuda": (32, 1500, 1280, torch.bfloat16)}
BASELINE_SECONDS = 0.2  # torch.utils.benchmark time per baseline measurement
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                reason="no CUDA device"))]


@dataclass
class Case:
    x: torch.Tensor
    lengths: torch.Tensor
    boundaries: torch.Tensor   # segment starts, mean length RATE
    num_out: int               # segments in the longest sample

    @property
    def device(self) -> torch.device:
        return self.x.device

    def tolerance(self) -> dict:
        return dict(rtol=2e-2, atol=2e-2) if self.x.dtype in (torch.bfloat16, torch.float16) else {}


@pytest.fixture(scope="module", params=DEVICES)
def case(request) -> Case:
    batch, frames, dim, dtype = SHAPES[request.param]
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, frames, dim, generator=gen).to(device=request.param, dtype=dtype)
    lengths = torch.full((batch,), frames, device=request.param)  # full length: the bytes are exact
    boundaries = random_boundaries(batch, frames, RATE, gen).to(request.param)
    num_out = int(boundaries.sum(1).max())
    return Case(x, lengths, boundaries, num_out)


def _synced(fn, device: torch.device):
    def run():
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return out
    return run


def _run(benchmark, case: Case, fn, bytes_moved: int, baseline: str, baseline_fn):
    """Benchmark ``fn``, then (unless --benchmark-disable) time the copy and the baseline in the
    same run and record every number in ``benchmark.extra_info``. Returns ``fn``'s result."""
    run = _synced(fn, case.device)
    if not benchmark.disabled:
        measure(run, BASELINE_SECONDS)  # warm-up: first-touch page faults, autotuning, lazy init
    result = benchmark(run)
    info = benchmark.extra_info
    info.update(device=case.device.type, shape=list(case.x.shape), dtype=str(case.x.dtype).replace("torch.", ""),
                rate=RATE, bytes_moved=bytes_moved, baseline=baseline)
    if benchmark.disabled:
        return result
    op_ms = benchmark.stats.stats.median * 1e3
    copy_out = torch.empty_like(case.x)
    copy_ms = measure(lambda: copy_out.copy_(case.x), BASELINE_SECONDS).median_ms
    baseline_ms = measure(baseline_fn, BASELINE_SECONDS).median_ms
    gbps, copy_gbps = bytes_moved / op_ms / 1e6, 2 * case.x.nbytes / copy_ms / 1e6
    info.update(ms_median=op_ms, gbps=gbps, copy_gbps=copy_gbps, pct_copy_bw=100 * gbps / copy_gbps,
                baseline_ms=baseline_ms, baseline_over_op=baseline_ms / op_ms)
    return result


def _nbytes(*tensors: torch.Tensor) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _segment_lengths(spans: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (spans[..., 1] - spans[..., 0])[mask.bool()]


def _segment_reduce(seg_lengths: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return torch.segment_reduce(x.reshape(-1, x.shape[-1]), "mean", lengths=seg_lengths, axis=0, unsafe=True,
                                initial=0)


def _avg_pool(x: torch.Tensor) -> torch.Tensor:  # length-unaware, as Qwen2-Audio's AvgPool1d
    return F.avg_pool1d(x.transpose(1, 2), RATE, RATE).transpose(1, 2)


# ---------------------------------------------------------------------------------------------
# Forward


BASELINES = {  # op -> (baseline name, eager PyTorch doing the same job on the same tensor)
    "uniform_pool": ("F.avg_pool1d", _avg_pool),
    "downsample": ("x[:, ::k].contiguous()", lambda x: x[:, ::RATE].contiguous()),
}


@pytest.mark.parametrize("op", sorted(BASELINES))
def test_every_kth_forward(benchmark, case, op):
    fn = getattr(ops, op)
    expected = fn(case.x, case.lengths, RATE, backend="torch")
    read = case.x if op == "uniform_pool" else case.x[:, ::RATE]  # downsample reads only the kept frames
    name, eager = BASELINES[op]
    out = _run(benchmark, case, lambda: fn(case.x, case.lengths, RATE), _nbytes(read, expected.values), name,
               lambda: eager(case.x))
    torch.testing.assert_close(out.values, expected.values, **case.tolerance())


def test_segment_pool_forward(benchmark, case):
    def run():
        return ops.segment_pool(case.x, case.lengths, case.boundaries, max_segments=case.num_out)

    expected = ops.segment_pool(case.x, case.lengths, case.boundaries, max_segments=case.num_out, backend="torch")
    seg_lengths = _segment_lengths(expected.spans, expected.mask())
    out = _run(benchmark, case, run, _nbytes(case.x, expected.values), "torch.segment_reduce",
               lambda: _segment_reduce(seg_lengths, case.x))
    torch.testing.assert_close(out.values, expected.values, **case.tolerance())


def test_boundary_scores_forward(benchmark, case):
    def eager():
        return 1 - F.cosine_similarity(case.x[:, 1:].float(), case.x[:, :-1].float(), dim=-1)

    scores = _run(benchmark, case, lambda: ops.boundary_scores(case.x, case.lengths),
                  _nbytes(case.x) + case.x.shape[0] * case.x.shape[1] * 4, "1 - F.cosine_similarity", eager)
    torch.testing.assert_close(scores[:, 1:], eager(), rtol=1e-3, atol=1e-3)


def test_segment_compress_forward(benchmark, case):
    def run(backend=None):
        return ops.segment_compress(case.x, case.lengths, rate=RATE, backend=backend)

    expected = run("torch")
    out = _run(benchmark, case, run, _nbytes(case.x, expected.values), "segment_compress, torch backend",
               lambda: run("torch"))
    torch.testing.assert_close(out.lengths, expected.lengths)
    torch.testing.assert_close(out.values, expected.values, **case.tolerance())


# ---------------------------------------------------------------------------------------------
# Backward of the pooling ops: d out / d x for a fixed upstream gradient


def _backward(benchmark, case: Case, pool, eager_pool, baseline: str):
    leaf = case.x.clone().requires_grad_()
    out = pool(leaf)
    grad = torch.randn_like(out)
    eager_leaf = case.x.clone().requires_grad_()
    eager_out = eager_pool(eager_leaf)
    eager_grad = torch.randn_like(eager_out)
    (grad_x,) = _run(benchmark, case, lambda: torch.autograd.grad(out, leaf, grad, retain_graph=True),
                     _nbytes(grad, case.x), baseline,
                     lambda: torch.autograd.grad(eager_out, eager_leaf, eager_grad, retain_graph=True))
    return leaf, grad, grad_x


def test_uniform_pool_backward(benchmark, case):
    def pool(x, backend=None):
        return ops.uniform_pool(x, case.lengths, RATE, backend=backend).values

    leaf, grad, grad_x = _backward(benchmark, case, pool, _avg_pool, "F.avg_pool1d backward")
    (expected,) = torch.autograd.grad(pool(leaf, "torch"), leaf, grad)
    torch.testing.assert_close(grad_x, expected, **case.tolerance())


def test_segment_pool_backward(benchmark, case):
    def pool(x, backend=None):
        return ops.segment_pool(x, case.lengths, case.boundaries, max_segments=case.num_out, backend=backend)

    reference = pool(case.x, "torch")
    seg_lengths = _segment_lengths(reference.spans, reference.mask())
    leaf, grad, grad_x = _backward(benchmark, case, lambda x: pool(x).values,
                                   lambda x: _segment_reduce(seg_lengths, x), "torch.segment_reduce backward")
    (expected,) = torch.autograd.grad(pool(leaf, "torch").values, leaf, grad)
    torch.testing.assert_close(grad_x, expected, **case.tolerance())

