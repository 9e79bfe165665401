"""The ``cpu`` backend: C++ kernels in ``lalm_fast._C`` (csrc/cpu), parallel over rows x spans."""

try:
    from lalm_fast import _C
except ImportError as exc:  # not built: `pip install --no-build-isolation -e .` builds it
    _C = None
    UNAVAILABLE_REASON = f"the C++ extension lalm_fast._C is not built ({exc})"
else:
    UNAVAILABLE_REASON = None


def span_mean(x, starts, ends):
    return _C.span_mean_cpu(x, starts, ends)


def span_mean_backward(grad, starts, ends, num_frames):
    return _C.span_mean_backward_cpu(grad, starts, ends, num_frames)


def boundary_scores(x, lengths):
    return _C.boundary_scores_cpu(x, lengths)


# Optional capabilities (padded input only): the ops use them when a backend has them.
def detect_boundaries(scores, lengths, mode, param, min_len, max_len):
    return _C.detect_boundaries_cpu(scores, lengths, mode, param, min_len, max_len)


def compress(x, lengths, mode, param, min_len, max_len, num_out, boundaries=None):
    return tuple(_C.compress_cpu(x, lengths, mode, param, min_len, max_len, num_out, boundaries))
