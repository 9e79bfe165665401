// Shared device helpers for the torch-free CUDA kernels.
#pragma once

#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "../detection.h"
#include "kernels.h"

namespace lalm_cuda {
namespace detail {

// Accumulation type: fp32 for fp32/fp16/bf16, fp64 for fp64.
template <typename T> struct Acc { using type = float; };
template <> struct Acc<double> { using type = double; };

__device__ __forceinline__ float to_acc(float v) { return v; }
__device__ __forceinline__ double to_acc(double v) { return v; }
__device__ __forceinline__ float to_acc(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> __device__ __forceinline__ T from_acc(float v);
template <> __device__ __forceinline__ float from_acc<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_acc<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_acc<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }
template <typename T> __device__ __forceinline__ T from_acc(double v);
template <> __device__ __forceinline__ double from_acc<double>(double v) { return v; }

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Detection scratch from a launcher's untyped buffers ([R, T] each; null where the mode
// needs none), and the rows of one sample.
template <typename acc_t>
lalm_fast::detection::Scratch<acc_t> scratch(void* normed, void* keys) {
  return {static_cast<acc_t*>(normed), static_cast<lalm_fast::detection::key_of<acc_t>*>(keys)};
}
template <typename acc_t>
__device__ __forceinline__ lalm_fast::detection::Scratch<acc_t> scratch_row(lalm_fast::detection::Scratch<acc_t> all,
                                                                           int64_t r, int64_t T) {
  return {all.normed ? all.normed + r * T : nullptr, all.keys ? all.keys + r * T : nullptr};
}
// Whether a launcher got the scratch its mode needs: normalised scores for peak mode, keys
// for rate mode.
inline bool has_scratch(lalm_fast::Mode mode, const void* normed, const void* keys) {
  return (mode != lalm_fast::Mode::kPeak || normed != nullptr) && (mode != lalm_fast::Mode::kRate || keys != nullptr);
}

// Dispatch a templated launch on the runtime dtype.
#define LALM_CUDA_DISPATCH(DTYPE, SCALAR, ...)                                  \
  switch (DTYPE) {                                                              \
    case ::lalm_cuda::DType::kFloat32: { using SCALAR = float; __VA_ARGS__; break; }          \
    case ::lalm_cuda::DType::kFloat16: { using SCALAR = __half; __VA_ARGS__; break; }         \
    case ::lalm_cuda::DType::kBFloat16: { using SCALAR = __nv_bfloat16; __VA_ARGS__; break; } \
    case ::lalm_cuda::DType::kFloat64: { using SCALAR = double; __VA_ARGS__; break; }         \
    default: return cudaErrorInvalidValue;                                      \
  }

}  // namespace detail
}  // namespace lalm_cuda
