// Torch-free launchers of the CUDA fallback kernels (csrc/cuda/*.cu).
//
// Contracts: lalm_fast/ops/reference.py. Every launcher takes raw device pointers, sizes,
// element strides and a cudaStream_t, launches asynchronously (no host sync) and returns
// the launch status (cudaGetLastError). Accumulation is fp32 for fp32/fp16/bf16 inputs and
// fp64 for fp64. No atomics: every output element is written by exactly one thread, so the
// results are deterministic. Nothing here includes torch, so the .cu files compile with a
// bare `nvcc -c` (the CPU build of torch ships incomplete c10/cuda headers).
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

#include "../modes.h"

namespace lalm_cuda {

enum class DType : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2, kFloat64 = 3 };
// The integer types of a caller's segment tensor (segment ids, offsets).
enum class IndexDType : int { kInt8 = 0, kUInt8 = 1, kInt16 = 2, kInt32 = 3, kInt64 = 4 };

// out[r, s, :] = mean of x[r, starts[r, s]:ends[r, s], :] (0 for an empty span).
// x: [R, T, D] with element strides (stride_r, stride_t, 1); starts/ends: contiguous
// int64 [R, S]; out: contiguous [R, S, D] of the same dtype as x.
cudaError_t span_mean(DType dtype, const void* x, const int64_t* starts, const int64_t* ends, void* out,
                      int64_t R, int64_t T, int64_t S, int64_t D, int64_t stride_r, int64_t stride_t,
                      cudaStream_t stream);

// out[r, t, :] = grad[r, s, :] / len(s) for the span s containing t, else 0.
// grad: contiguous [R, S, D]; out: contiguous [R, T, D], same dtype; every element written.
cudaError_t span_mean_backward(DType dtype, const void* grad, const int64_t* starts, const int64_t* ends, void* out,
                               int64_t R, int64_t T, int64_t S, int64_t D, cudaStream_t stream);

// out[r, t] = 1 - dot / (max(|a|, 1e-8) * max(|b|, 1e-8)) with a = x[r, t-1], b = x[r, t],
// for 1 <= t < lengths[r]; 0 elsewhere. out: contiguous [R, T], float32 (float64 for fp64).
cudaError_t boundary_scores(DType dtype, const void* x, const int64_t* lengths, void* out,
                            int64_t R, int64_t T, int64_t D, int64_t stride_r, int64_t stride_t,
                            cudaStream_t stream);

// Start mask of each row from raw scores: out[r, t] = 1 where a segment starts, as
// lalm_fast/ops/_detect.py decides (csrc/detection.h, the code the CPU kernels run); frame 0
// of a non-empty row always starts, frames from lengths[r] (clamped to [0, T]) on are 0.
// mode: peak, threshold or rate with param its prominence, threshold or rate (>= 1);
// min_len >= 1; max_len >= 0 (0: none); anything else returns cudaErrorInvalidValue.
// scores: contiguous [R, T] float32 or float64 (score_dtype kFloat32 / kFloat64); out:
// contiguous [R, T] bytes, every one written. Scratch, contiguous [R, T]: normed, of the
// scores' type, for peak mode; keys, of their width (uint32 / uint64), for rate mode; either
// may be null when the mode does not use it. One thread per row.
cudaError_t detect_boundaries(DType score_dtype, const void* scores, const int64_t* lengths, void* normed, void* keys,
                              uint8_t* out, int64_t R, int64_t T, lalm_fast::Mode mode, double param, int64_t min_len,
                              int64_t max_len, cudaStream_t stream);

// The spans of compress, into contiguous starts / ends [R, S] (S >= 1) and counts [R]: row
// r's segments, its first counts[r] tokens; a row with more segments than S has its surplus
// merged into its last token; tokens past the count get (L, L). Every element is written.

// Detection modes: the segments detect_boundaries would start (same arguments); mask is
// contiguous [R, T] byte scratch. One thread per row.
cudaError_t detect_spans(DType score_dtype, const void* scores, const int64_t* lengths, void* normed, void* keys,
                         uint8_t* mask, int64_t* starts, int64_t* ends, int64_t* counts, int64_t R, int64_t T,
                         int64_t S, lalm_fast::Mode mode, double param, int64_t min_len, int64_t max_len,
                         cudaStream_t stream);

// Given mode: the segments a caller's start mask boundaries (contiguous bool [R, T]) opens;
// frame 0 always starts one, frames from lengths[r] on are not read. One thread per row.
cudaError_t given_spans(const bool* boundaries, const int64_t* lengths, int64_t* starts, int64_t* ends,
                        int64_t* counts, int64_t R, int64_t T, int64_t S, cudaStream_t stream);

// Segment-ids and offsets modes, the spans of csrc/detection.h (id_span / offset_span), one
// thread per token. segments: ids [R, T] (from_ids) or CSR offsets [R, S+1], of index_dtype,
// element strides (stride_r, stride_t). Values are not checked (that needs a host sync):
// any ids give the torch path's spans (inside [0, L]); offsets are clamped to [0, L].
cudaError_t segment_spans(IndexDType index_dtype, const void* segments, int64_t stride_r, int64_t stride_t,
                          const int64_t* lengths, int64_t* starts, int64_t* ends, int64_t* counts, int64_t R,
                          int64_t T, int64_t S, bool from_ids, cudaStream_t stream);

// Uniform / downsample modes: token s spans [s k, min(s k + k, L)) or, single_frame,
// [s k, min(s k + 1, L)); 1 <= k <= max(T, 1). One thread per token.
cudaError_t window_spans(const int64_t* lengths, int64_t* starts, int64_t* ends, int64_t* counts, int64_t R,
                         int64_t T, int64_t S, int64_t k, bool single_frame, cudaStream_t stream);

}  // namespace lalm_cuda
