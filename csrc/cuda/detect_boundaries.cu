// Boundary detection from raw scores: the CUDA fallback of kernels/detect_boundaries.py.
//
// One thread per row runs the sequential per-row code of csrc/detection.h, the same code
// the C++ CPU kernels run (so the CPU tests check its decisions): a fallback that is exact
// rather than fast; the rows of a batch run in parallel, the frames of a row do not. Every
// byte of the mask is written (padding 0), so the output needs no zero fill.
#include "../detection.h"
#include "common.cuh"

namespace lalm_cuda {
namespace {

using detail::ceil_div;
namespace det = lalm_fast::detection;

constexpr int kRowsPerBlock = 128;

template <typename acc_t>
__global__ void detect_boundaries_kernel(const acc_t* __restrict__ scores, const int64_t* __restrict__ lengths,
                                         det::Scratch<acc_t> work, uint8_t* __restrict__ out, int64_t R, int64_t T,
                                         det::Rules rules) {
  const int64_t r = int64_t(blockIdx.x) * kRowsPerBlock + threadIdx.x;
  if (r >= R) return;
  det::detect_row(scores + r * T, det::clamp_length(lengths[r], T), T, rules, detail::scratch_row(work, r, T),
                  out + r * T);
}

}  // namespace

cudaError_t detect_boundaries(DType score_dtype, const void* scores, const int64_t* lengths, void* normed, void* keys,
                              uint8_t* out, int64_t R, int64_t T, lalm_fast::Mode mode, double param, int64_t min_len,
                              int64_t max_len, cudaStream_t stream) {
  if (!det::valid_rules(mode, param, min_len, max_len) || R < 0 || T < 0) return cudaErrorInvalidValue;
  if (!detail::has_scratch(mode, normed, keys)) return cudaErrorInvalidValue;
  if (R == 0 || T == 0) return cudaSuccess;
  const int64_t blocks = ceil_div(R, kRowsPerBlock);
  if (blocks > 0x7fffffff) return cudaErrorInvalidConfiguration;
  const det::Rules rules{mode, param, min_len, max_len};
  const unsigned grid = static_cast<unsigned>(blocks);
  switch (score_dtype) {
    case DType::kFloat32:
      detect_boundaries_kernel<float><<<grid, kRowsPerBlock, 0, stream>>>(
          static_cast<const float*>(scores), lengths, detail::scratch<float>(normed, keys), out, R, T, rules);
      break;
    case DType::kFloat64:
      detect_boundaries_kernel<double><<<grid, kRowsPerBlock, 0, stream>>>(
          static_cast<const double*>(scores), lengths, detail::scratch<double>(normed, keys), out, R, T, rules);
      break;
    default:
      return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

}  // namespace lalm_cuda
