"""Print the lalm_fast Python calls from each public op down to its first kernel launch.

    python scripts/op_call_chains.py [REPO]     # REPO: a checkout with a built lalm_fast._C

Runs the cpu backend and the triton backend (in the Triton interpreter), so it works on a
CPU machine; docs/architecture.md quotes its output. REPO's own ``lalm_fast`` and
``kernels/`` are imported, so two checkouts can be compared.
"""

from __future__ import annotations

import importlib.util
import os
import sys

REPO = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), ".."))
os.environ["TRITON_INTERPRET"] = "1"
sys.path.insert(0, REPO)

import torch  # noqa: E402
import triton  # noqa: E402

import lalm_fast  # noqa: E402

assert lalm_fast.__file__.startswith(REPO), lalm_fast.__file__


def mount_kernels():
    """REPO's kernels/ as lalm_fast.kernels (an editable install may point elsewhere)."""
    spec = importlib.util.spec_from_file_location(
        "lalm_fast.kernels", os.path.join(REPO, "kernels", "__init__.py"),
        submodule_search_locations=[os.path.join(REPO, "kernels")])
    module = importlib.util.module_from_spec(spec)
    sys.modules["lalm_fast.kernels"] = module
    spec.loader.exec_module(module)


def compiled_kernels() -> set:
    from lalm_fast import _C

    names = ("compress", "span_mean", "boundary_scores", "detect_boundaries")
    found = {getattr(_C, f"{name}_cpu", None) for name in names}  # older builds: flat names
    if hasattr(_C, "cpu"):
        found |= {getattr(_C.cpu, name) for name in names}
    return found - {None}


def chain(call, ours: tuple[str, ...], kernels: set) -> list[str]:
    """Names of the functions under ``ours`` on the stack at the first kernel launch."""
    triton_dir = os.path.dirname(triton.__file__)
    found = []

    def profile(frame, event, arg):
        if found:
            return
        launched = event == "call" and frame.f_code.co_filename.startswith(triton_dir)
        if launched or (event == "c_call" and arg in kernels):
            caller = frame if event == "c_call" else frame.f_back
            names = []
            while caller is not None:
                if caller.f_code.co_filename.startswith(ours):
                    names.append(caller.f_code.co_name)
                caller = caller.f_back
            found.append(names[::-1])

    sys.setprofile(profile)
    try:
        call()
    finally:
        sys.setprofile(None)
    return found[0]


def main() -> None:
    mount_kernels()
    import lalm_fast.ops as ops

    ours = (os.path.join(REPO, "lalm_fast"), os.path.join(REPO, "kernels"))
    kernels = compiled_kernels()
    x, lengths = torch.randn(2, 12, 4), torch.tensor([12, 7])
    boundaries = torch.rand(2, 12) < 0.3
    cu_seqlens = torch.tensor([0, 5, 12])
    for backend in ("cpu", "triton"):
        calls = {
            "segment_pool": lambda: ops.segment_pool(x, lengths, boundaries, backend=backend),
            "uniform_pool": lambda: ops.uniform_pool(x, lengths, 3, backend=backend),
            "uniform_pool packed": lambda: ops.uniform_pool(x[0], k=3, cu_seqlens=cu_seqlens, max_seqlen=7,
                                                            backend=backend),
            "segment_compress rate": lambda: ops.segment_compress(x, lengths, rate=3, backend=backend),
            "segment_compress threshold": lambda: ops.segment_compress(x, lengths, threshold=0.5, backend=backend),
        }
        for name, call in calls.items():
            names = chain(call, ours, kernels)
            print(f"{backend:7s} {name:27s} {len(names) - 1} calls below the op: {' -> '.join(names)}")


if __name__ == "__main__":
    main()
