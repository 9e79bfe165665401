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

namespace lalm_cuda {

enum class DType : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2, kFloat64 = 3 };

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

}  // namespace lalm_cuda
