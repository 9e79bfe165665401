"""Shared helpers for the Triton kernels: availability, fixed-config mode, length buckets.

Nothing here touches tensor *values*: every decision is made from shapes, dtypes and
environment variables, so the launchers never sync the host and are capturable by CUDA graphs.
"""

from __future__ import annotations

import os

import torch

FIXED_CONFIG_ENV = "LALM_FAST_TRITON_FIXED_CONFIG"

try:  # the whole backend must import cleanly without triton
    import triton
    import triton.language as tl
except Exception as exc:  # ImportError, or a broken triton install
    triton = None
    tl = None
    IMPORT_ERROR: str | None = f"triton is not importable ({type(exc).__name__}: {exc})"
else:
    IMPORT_ERROR = None


if triton is not None:
    @triton.jit
    def exact_div(a, b):
        """``a / b`` correctly rounded, as torch divides: Triton's fp32 ``/`` is approximate, and
        ``fdiv(ieee_rounding=True)`` exists for fp32 only (fp64 ``/`` is already exact)."""
        if a.dtype == tl.float64:
            return a / b
        else:
            return tl.math.fdiv(a, b, ieee_rounding=True)


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "0").strip().lower() not in ("", "0", "false", "no", "off")


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return _env_flag("TRITON_INTERPRET")


def fixed_config() -> bool:
    """Fixed (non-autotuned) launch configurations: always in the interpreter, and when
    ``LALM_FAST_TRITON_FIXED_CONFIG=1`` (CI, reproducible timings, CUDA-graph warm-up
    without benchmarking)."""
    return interpreting() or _env_flag(FIXED_CONFIG_ENV)


def unavailable_reason() -> str | None:
    if IMPORT_ERROR is not None:
        return IMPORT_ERROR
    if interpreting():
        return None
    if not torch.cuda.is_available():
        return "no CUDA device is available (and TRITON_INTERPRET is not set)"
    return None


def next_pow2(n: int) -> int:
    n = int(n)
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


def length_bucket(num_frames: int, num_spans: int) -> int:
    """Bucketed mean span length, from static shapes only: ``next_pow2(ceil(T / S))``,
    clamped to [1, 1024]. It is the autotune key that stands for "segment length"
    (uniform_pool with k gives S = ceil(T / k), so the bucket is next_pow2(k))."""
    if num_spans <= 0:
        return 1
    return min(1024, next_pow2(-(-int(num_frames) // int(num_spans))))


def num_splits(bucket: int) -> int:
    """How many programs share one block of spans along time. Long spans (bucket >= 128
    frames) are split so that few long segments (B=1, whole-utterance means) still fill
    the GPU; partial sums are combined by a second kernel in a fixed order
    (deterministic, no atomics). Depends on the bucket only, never on the batch size."""
    return max(1, min(8, bucket // 64))


def acc_is_fp64(dtype: torch.dtype) -> bool:
    return dtype == torch.float64


SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def check_float(name: str, t: torch.Tensor) -> None:
    if t.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"{name} must be float32, float16, bfloat16 or float64 for the triton backend, got {t.dtype}")
