"""Count the torch (aten) ops each public op runs around its Triton launches.

    TRITON_INTERPRET=1 python scripts/torch_ops_around_launches.py

Issue 15 asks for every public op on the triton backend to run in one to three launches
with at most two torch ops of bookkeeping around them. This counts, per call:

- ``launches``: Triton kernel launches (``InterpretedFunction.run``);
- ``ops``: aten ops dispatched by lalm_fast outside any launch and outside the input checks
  (``make_grid`` and the ``check_*`` / ``_check_*`` functions; ``Grid`` helpers such as
  ``grid.valid()`` do count): the span bookkeeping the budget is about;
- ``launcher``: aten ops inside the Triton launchers (``kernels/*.py``), outputs allocated
  with ``torch.empty``, kept apart so the budget cannot be met by moving work there;
- ``checks``: aten ops of the input checks.

The ops inside a launch (the interpreter copying tensors to numpy) are not counted.
``tests/test_launch_budget.py`` asserts the budget with :func:`count`.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from dataclasses import dataclass, field

os.environ.setdefault("TRITON_INTERPRET", "1")
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

CHECKS = ("make_grid", "check_", "_check", "should_check")  # input checks, by function name


@dataclass
class Counts:
    launches: int = 0
    ops: list = field(default_factory=list)
    launcher: list = field(default_factory=list)
    checks: list = field(default_factory=list)

    def summary(self) -> str:
        return (f"launches={self.launches} ops={len(self.ops)} launcher={len(self.launcher)} "
                f"checks={len(self.checks)}  ops: {dict(Counter(self.ops))}")


def _kind(frame) -> str | None:
    """Where an aten op comes from, from the Python stack: None for the op's own internals."""
    kind = None
    while frame is not None:
        # By module name, not file path: kernels/ is installed as lalm_fast.kernels from a
        # top-level folder, so its files' paths need not contain "lalm_fast".
        module, name = frame.f_globals.get("__name__", ""), frame.f_code.co_name
        if name.startswith(CHECKS):
            return "checks"
        if kind is None and (module == "lalm_fast" or module.startswith("lalm_fast.")):
            kind = "launcher" if module.startswith("lalm_fast.kernels") else "ops"
        frame = frame.f_back
    return kind


class _Recorder(TorchDispatchMode):
    def __init__(self, counts: Counts):
        super().__init__()
        self.counts, self.launching = counts, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not self.launching:
            kind = _kind(sys._getframe(1))
            if kind is not None:
                getattr(self.counts, kind).append(func.__name__)
        return func(*args, **(kwargs or {}))


def count(call) -> Counts:
    """Run ``call()`` once and count its launches and torch ops (the interpreter only)."""
    from triton.runtime.interpreter import InterpretedFunction

    counts = Counts()
    recorder = _Recorder(counts)
    original = InterpretedFunction.run

    def run(self, *args, **kwargs):  # a launch: its own tensor traffic is not bookkeeping
        counts.launches += 1
        recorder.launching += 1
        try:
            return original(self, *args, **kwargs)
        finally:
            recorder.launching -= 1

    InterpretedFunction.run = run
    try:
        with recorder:
            call()
    finally:
        InterpretedFunction.run = original
    return counts


def public_calls(backend: str = "triton") -> dict:
    """One call of every public op in each input form (small shapes; the interpreter is slow)."""
    import lalm_fast.ops as ops

    gen = torch.Generator().manual_seed(0)
    x, lengths = torch.randn(2, 12, 4, generator=gen), torch.tensor([12, 7])
    mask = torch.rand(2, 12, generator=gen) < 0.3
    packed, cu, most = x.reshape(-1, 4)[:12], torch.tensor([0, 5, 12]), 7
    ids = torch.tensor([[0, 0, 1, 1, 1, 2, 3, 3, 4, 4, 5, 5], [0, 1, 1, 2, 2, 2, 3, 0, 0, 0, 0, 0]])
    offsets = torch.tensor([[0, 3, 8, 12], [0, 2, 4, 7]])
    b = dict(backend=backend)
    return {
        "uniform_pool": lambda: ops.uniform_pool(x, lengths, 3, **b),
        "uniform_pool packed": lambda: ops.uniform_pool(packed, k=3, cu_seqlens=cu, max_seqlen=most, **b),
        "downsample": lambda: ops.downsample(x, lengths, 3, **b),
        "downsample packed": lambda: ops.downsample(packed, k=3, cu_seqlens=cu, max_seqlen=most, **b),
        "boundary_scores": lambda: ops.boundary_scores(x, lengths, **b),
        "boundary_scores normalize": lambda: ops.boundary_scores(x, lengths, normalize=True, **b),
        "detect_boundaries": lambda: ops.detect_boundaries(x, lengths, **b),
        "segment_pool mask": lambda: ops.segment_pool(x, lengths, mask, max_segments=6, **b),
        "segment_pool mask packed": lambda: ops.segment_pool(packed, None, mask.reshape(-1)[:12], max_segments=6,
                                                             cu_seqlens=cu, max_seqlen=most, **b),
        "segment_pool ids": lambda: ops.segment_pool(x, lengths, segment_ids=ids, max_segments=6, **b),
        "segment_pool offsets": lambda: ops.segment_pool(x, lengths, offsets=offsets, **b),
        "segment_compress peak": lambda: ops.segment_compress(x, lengths, **b),
        "segment_compress threshold": lambda: ops.segment_compress(x, lengths, threshold=0.5, **b),
        "segment_compress rate": lambda: ops.segment_compress(x, lengths, rate=3, **b),
        "segment_compress packed": lambda: ops.segment_compress(packed, rate=3, cu_seqlens=cu, max_seqlen=most, **b),
    }


def main() -> None:
    for name, call in public_calls().items():
        call()  # first call: imports, compilation caches
        print(f"{name:28s} {count(call).summary()}")


if __name__ == "__main__":
    main()
