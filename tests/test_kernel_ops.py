"""The one path from a public op to a kernel: torch.library registration (opcheck,
torch.compile with changing shapes), the capability table, the shared Mode numbering and
the call depth."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import lalm_fast.ops as ops
from lalm_fast.ops import backends, kernel_ops
from lalm_fast.ops.modes import Mode

REPO = Path(__file__).resolve().parents[1]
lalm = torch.ops.lalm_fast


def span_samples(backend):
    x = torch.randn(2, 9, 5)
    starts = torch.tensor([[0, 3, 5], [0, 2, 2]])
    ends = torch.tensor([[3, 5, 9], [2, 2, 2]])
    return [
        (x, starts, ends, backend),
        (x.double().requires_grad_(), starts, ends, backend),
        (x[:, ::2].contiguous().half(), starts.clamp(max=5), ends.clamp(max=5), backend),
    ]


def test_opcheck_span_mean(cpu_backend):
    for args in span_samples(cpu_backend):
        torch.library.opcheck(lalm.span_mean.default, args)


def test_opcheck_span_mean_backward(cpu_backend):
    grad = torch.randn(2, 3, 5)
    starts = torch.tensor([[0, 3, 5], [0, 2, 2]])
    ends = torch.tensor([[3, 5, 9], [2, 2, 2]])
    torch.library.opcheck(lalm.span_mean_backward.default, (grad, starts, ends, 9, cpu_backend))


def test_opcheck_boundary_scores(cpu_backend):
    torch.library.opcheck(lalm.boundary_scores.default, (torch.randn(3, 7, 5), torch.tensor([7, 2, 0]), cpu_backend))


@pytest.mark.slow
def test_compile_fullgraph_with_changing_batch_and_time(cpu_backend):
    def pipeline(x, lengths):
        pooled = ops.uniform_pool(x, lengths, 3, backend=cpu_backend)
        segmented = ops.segment_compress(x, lengths, rate=3, backend=cpu_backend)
        peaks = ops.segment_compress(x, lengths, prominence=0.05, min_len=2, backend=cpu_backend)
        return pooled.values.sum() + segmented.values.sum() + peaks.values.sum()

    compiled = torch.compile(pipeline, fullgraph=True, dynamic=True)
    for batch, frames in [(2, 30), (3, 47), (1, 64)]:
        x = torch.randn(batch, frames, 8, requires_grad=True)
        lengths = torch.randint(1, frames + 1, (batch,))
        got = compiled(x, lengths)
        torch.testing.assert_close(got, pipeline(x, lengths), rtol=1e-5, atol=1e-4)
        (grad,) = torch.autograd.grad(got, x)
        (want,) = torch.autograd.grad(pipeline(x, lengths), x)
        torch.testing.assert_close(grad, want)


def test_opcheck_native_detection_and_fused_compress():
    x = torch.randn(3, 20, 6)
    lengths = torch.tensor([20, 7, 0])
    scores = kernel_ops.boundary_scores(x, lengths, "cpu")
    for mode, param in ((0, 0.05), (1, 0.5), (2, 3.0), (3, 3.0), (4, 2.0)):
        if mode <= 2:
            torch.library.opcheck(lalm.detect_boundaries.default, (scores, lengths, mode, param, 2, 0, "cpu"))
        torch.library.opcheck(lalm.compress.default, (x, lengths, mode, param, 1, 0, 7, "cpu"))
    torch.library.opcheck(lalm.compress.default,
                          (x.double().requires_grad_(), lengths, 2, 2.0, 1, 0, 10, "cpu"))
    boundaries = torch.rand(3, 20) < 0.3
    torch.library.opcheck(lalm.compress.default, (x.requires_grad_(), lengths, 5, 1.0, 1, 0, 20, "cpu", boundaries))


KERNEL_OPS = {"span_mean", "span_mean_backward", "boundary_scores", "detect_boundaries", "compress", "compress_packed"}
LIST_OPS = ("import sys, torch, lalm_fast.ops, lalm_fast.kernels; "
            "print(sorted(n for n in torch._C._dispatch_get_all_op_names() if n.startswith('lalm_fast::')))")


def registered_ops(interpret: bool) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    if interpret:
        env["TRITON_INTERPRET"] = "1"
    out = subprocess.run([sys.executable, "-c", LIST_OPS], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return eval(out.stdout.strip().splitlines()[-1])


def test_one_schema_per_kernel_op_with_or_without_the_triton_interpreter():
    """Every backend runs through the same six ops; importing the Triton kernels registers
    nothing, so the interpreter and a GPU see the same registration."""
    plain, interpreted = registered_ops(False), registered_ops(True)
    assert plain == interpreted == sorted(f"lalm_fast::{name}" for name in KERNEL_OPS)


def test_capability_table_matches_the_backends():
    for name, caps in backends.CAPABILITIES.items():
        if not backends.is_available(name, "cpu"):
            continue
        module = backends.kernels(name)
        for kernel in caps.kernels:
            assert callable(getattr(module, kernel, None)), f"{name} claims {kernel} but lacks it"
        for optional in ("detect_boundaries", "compress"):
            if optional not in caps.kernels:
                assert not hasattr(module, optional), f"{name} has {optional} but the table does not list it"
    assert backends.compresses("cpu", Mode.RATE, min_len=3, max_len=9)
    assert not backends.compresses("torch", Mode.UNIFORM) and not backends.detects("torch")


def test_capability_table_in_the_docs_matches_the_code():
    text = (REPO / "docs" / "architecture.md").read_text()
    text = text[text.index("### What each backend runs natively"):]
    for name, caps in backends.CAPABILITIES.items():
        row = re.search(rf"^\| `{name}` \|(.*)\|\s*$", text, re.M)
        assert row, f"docs/architecture.md has no capability row for {name}"
        cells = [c.strip() for c in row.group(1).split("|")]
        assert cells[3] == ("yes" if caps.detect else "-"), (name, cells)
        modes = ", ".join(m.name.lower() for m in sorted(caps.compress_modes)) or "-"
        assert cells[4] == modes, (name, cells)


def test_mode_numbering_is_shared_with_the_cpp_kernels():
    header = (REPO / "csrc" / "modes.h").read_text()
    cpp = {name: int(value) for name, value in re.findall(r"^\s*k(\w+)\s*=\s*(\d+),", header, re.M)}
    assert cpp == {m.name.title().replace("_", ""): int(m) for m in Mode}


def kernel_call_depth(call, kernel) -> int:
    """lalm_fast's Python frames below the public op when ``call`` first calls the C++ function
    ``kernel`` (torch's own frames, such as the op dispatcher's, are not counted)."""
    ours = (str(Path(ops.__file__).parents[1]), str(REPO / "kernels"))
    found = []

    def profile(frame, event, arg):
        if event == "c_call" and arg is kernel and not found:
            stack = []
            while frame is not None:
                stack.append(frame.f_code.co_filename)
                frame = frame.f_back
            found.append(sum(name.startswith(ours) for name in stack))

    sys.setprofile(profile)
    try:
        call()
    finally:
        sys.setprofile(None)
    assert found, f"{kernel} was not called"
    return found[0] - 1  # the public op itself


@pytest.mark.parametrize("requires_grad", [False, True])
def test_at_most_four_python_calls_from_an_op_to_its_kernel(requires_grad):
    cpu = backends.kernels("cpu")
    x = torch.randn(2, 12, 4, requires_grad=requires_grad)
    lengths = torch.tensor([12, 7])
    boundaries = torch.rand(2, 12) < 0.3
    for call in (lambda: ops.segment_pool(x, lengths, boundaries, backend="cpu"),
                 lambda: ops.uniform_pool(x, lengths, 3, backend="cpu"),
                 lambda: ops.segment_compress(x, lengths, rate=3, backend="cpu")):
        assert kernel_call_depth(call, cpu.compress) <= 4
    packed = lambda: ops.uniform_pool(x[0], k=3, cu_seqlens=torch.tensor([0, 5, 12]), max_seqlen=7, backend="cpu")
    assert kernel_call_depth(packed, cpu.span_mean) <= 4


def test_eager_shortcut_and_recorded_op_agree():
    x = torch.randn(3, 17, 5)
    lengths = torch.tensor([17, 9, 0])
    for backend in ("cpu", "torch"):
        plain = ops.segment_compress(x, lengths, prominence=0.02, min_len=2, backend=backend)
        recorded = ops.segment_compress(x.clone().requires_grad_(), lengths, prominence=0.02, min_len=2,
                                        backend=backend)
        assert torch.equal(plain.spans, recorded.spans) and torch.equal(plain.values, recorded.values.detach())


def test_deprecated_names_still_work():
    with pytest.warns(DeprecationWarning):
        assert backends.has_compress("cpu", int(Mode.GIVEN))
    sys.modules.pop("lalm_fast.ops.custom_ops", None)
    with pytest.warns(DeprecationWarning):
        from lalm_fast.ops import custom_ops
    assert custom_ops.MODES["threshold"] == Mode.THRESHOLD and custom_ops.span_mean is kernel_ops.span_mean
