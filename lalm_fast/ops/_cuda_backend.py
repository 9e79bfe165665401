"""The ``cuda`` backend: the C++/CUDA fallback (csrc/cuda), linked into ``lalm_fast._C``
only when the package was built against a CUDA build of torch."""

try:
    from lalm_fast import _C
except ImportError as exc:
    _C = None
    UNAVAILABLE_REASON = f"the C++ extension lalm_fast._C is not built ({exc})"
else:
    UNAVAILABLE_REASON = None if hasattr(_C, "span_mean_cuda") else (
        "lalm_fast._C was built without CUDA kernels (needs a CUDA toolkit and a CUDA build of torch, "
        "or FORCE_CUDA=1)"
    )


def span_mean(x, starts, ends):
    return _C.span_mean_cuda(x, starts, ends)


def span_mean_backward(grad, starts, ends, num_frames):
    return _C.span_mean_backward_cuda(grad, starts, ends, num_frames)


def boundary_scores(x, lengths):
    return _C.boundary_scores_cuda(x, lengths)
