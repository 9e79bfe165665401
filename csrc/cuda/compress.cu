// The spans of compress on the CUDA fallback: detected segments, windows of k frames, or
// the segments of a caller's start mask, segment ids or offsets, written as starts / ends
// [R, S] and counts [R].
// ops.cpp runs them between boundary_scores (detection modes) and span_mean.
//
// Detected and given spans: one thread per row runs the sequential per-row code of
// csrc/detection.h, the code the C++ CPU compress runs (and the CPU tests check). Windows,
// segment ids and offsets: one thread per token, the same per-token code. Every element of
// starts / ends / counts is written.
#include "../detection.h"
#include "common.cuh"

namespace lalm_cuda {
namespace {

using detail::ceil_div;
namespace det = lalm_fast::detection;

constexpr int kThreads = 128;

template <typename acc_t>
__global__ void detect_spans_kernel(const acc_t* __restrict__ scores, const int64_t* __restrict__ lengths,
                                    det::Scratch<acc_t> work, uint8_t* __restrict__ mask, int64_t* __restrict__ starts,
                                    int64_t* __restrict__ ends, int64_t* __restrict__ counts, int64_t R, int64_t T,
                                    int64_t S, det::Rules rules) {
  const int64_t r = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  if (r >= R) return;
  counts[r] = det::detect_spans_row(scores + r * T, det::clamp_length(lengths[r], T), rules,
                                    detail::scratch_row(work, r, T), mask + r * T, S, starts + r * S, ends + r * S);
}

__global__ void given_spans_kernel(const bool* __restrict__ boundaries, const int64_t* __restrict__ lengths,
                                   int64_t* __restrict__ starts, int64_t* __restrict__ ends,
                                   int64_t* __restrict__ counts, int64_t R, int64_t T, int64_t S) {
  const int64_t r = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  if (r >= R) return;
  counts[r] = det::write_spans(det::GivenStarts{boundaries + r * T}, det::clamp_length(lengths[r], T), S,
                               starts + r * S, ends + r * S);
}

// Token (r, s) of segment ids or offsets; token 0 of a row also writes its count (ids: a
// pass over the row's frames, as id_count).
template <typename index_t>
__global__ void segment_spans_kernel(const index_t* __restrict__ segments, int64_t stride_r, int64_t stride_t,
                                     const int64_t* __restrict__ lengths, int64_t* __restrict__ starts,
                                     int64_t* __restrict__ ends, int64_t* __restrict__ counts, int64_t R, int64_t T,
                                     int64_t S, bool from_ids) {
  const int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  if (i >= R * S) return;
  const int64_t r = i / S, s = i % S;
  const det::SegmentRow<index_t> row{segments, r * stride_r, stride_t};
  const int64_t length = det::clamp_length(lengths[r], T);
  if (from_ids) {
    det::id_span(row, length, T, S, s, starts + i, ends + i);
    if (s == 0) counts[r] = det::id_count(row, length, S);
  } else {
    det::offset_span(row, length, s, starts + i, ends + i);
    if (s == 0) counts[r] = S;
  }
}

__global__ void window_spans_kernel(const int64_t* __restrict__ lengths, int64_t* __restrict__ starts,
                                    int64_t* __restrict__ ends, int64_t* __restrict__ counts, int64_t R, int64_t T,
                                    int64_t S, int64_t k, bool single_frame) {
  const int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  if (i >= R * S) return;
  const int64_t r = i / S, s = i % S;
  const int64_t length = det::clamp_length(lengths[r], T);
  det::window_span(length, k, single_frame, s, starts + i, ends + i);
  if (s == 0) counts[r] = det::window_count(length, k, S);
}

// Grid of one thread per item, or 0 when it does not fit a launch.
unsigned blocks_for(int64_t items) {
  const int64_t blocks = ceil_div(items, kThreads);
  return blocks > 0x7fffffff ? 0u : static_cast<unsigned>(blocks);
}

}  // namespace

cudaError_t detect_spans(DType score_dtype, const void* scores, const int64_t* lengths, void* normed, void* keys,
                         uint8_t* mask, int64_t* starts, int64_t* ends, int64_t* counts, int64_t R, int64_t T,
                         int64_t S, lalm_fast::Mode mode, double param, int64_t min_len, int64_t max_len,
                         cudaStream_t stream) {
  if (!det::valid_rules(mode, param, min_len, max_len) || R < 0 || T < 0 || S < 1) return cudaErrorInvalidValue;
  if (!detail::has_scratch(mode, normed, keys)) return cudaErrorInvalidValue;
  if (R == 0) return cudaSuccess;
  const unsigned grid = blocks_for(R);
  if (grid == 0) return cudaErrorInvalidConfiguration;
  const det::Rules rules{mode, param, min_len, max_len};
  switch (score_dtype) {
    case DType::kFloat32:
      detect_spans_kernel<float><<<grid, kThreads, 0, stream>>>(static_cast<const float*>(scores), lengths,
                                                                detail::scratch<float>(normed, keys), mask, starts, ends,
                                                                counts, R, T, S, rules);
      break;
    case DType::kFloat64:
      detect_spans_kernel<double><<<grid, kThreads, 0, stream>>>(static_cast<const double*>(scores), lengths,
                                                                 detail::scratch<double>(normed, keys), mask, starts, ends,
                                                                 counts, R, T, S, rules);
      break;
    default:
      return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

cudaError_t given_spans(const bool* boundaries, const int64_t* lengths, int64_t* starts, int64_t* ends,
                        int64_t* counts, int64_t R, int64_t T, int64_t S, cudaStream_t stream) {
  if (R < 0 || T < 0 || S < 1) return cudaErrorInvalidValue;
  if (R == 0) return cudaSuccess;
  const unsigned grid = blocks_for(R);
  if (grid == 0) return cudaErrorInvalidConfiguration;
  given_spans_kernel<<<grid, kThreads, 0, stream>>>(boundaries, lengths, starts, ends, counts, R, T, S);
  return cudaGetLastError();
}

// Calls launch with a value of the C++ type of `code` (its type selects the kernel instance).
template <typename Launch>
cudaError_t with_index_type(IndexDType code, Launch&& launch) {
  switch (code) {
    case IndexDType::kInt8: return launch(int8_t{});
    case IndexDType::kUInt8: return launch(uint8_t{});
    case IndexDType::kInt16: return launch(int16_t{});
    case IndexDType::kInt32: return launch(int32_t{});
    case IndexDType::kInt64: return launch(int64_t{});
  }
  return cudaErrorInvalidValue;
}

cudaError_t segment_spans(IndexDType index_dtype, const void* segments, int64_t stride_r, int64_t stride_t,
                          const int64_t* lengths, int64_t* starts, int64_t* ends, int64_t* counts, int64_t R,
                          int64_t T, int64_t S, bool from_ids, cudaStream_t stream) {
  if (R < 0 || T < 0 || S < 1) return cudaErrorInvalidValue;
  if (R == 0) return cudaSuccess;
  if (R > INT64_MAX / S) return cudaErrorInvalidConfiguration;
  const unsigned grid = blocks_for(R * S);
  if (grid == 0) return cudaErrorInvalidConfiguration;
  return with_index_type(index_dtype, [&](auto zero) {
    using index_t = decltype(zero);
    segment_spans_kernel<index_t><<<grid, kThreads, 0, stream>>>(static_cast<const index_t*>(segments), stride_r,
                                                                 stride_t, lengths, starts, ends, counts, R, T, S,
                                                                 from_ids);
    return cudaGetLastError();
  });
}

cudaError_t window_spans(const int64_t* lengths, int64_t* starts, int64_t* ends, int64_t* counts, int64_t R,
                         int64_t T, int64_t S, int64_t k, bool single_frame, cudaStream_t stream) {
  if (R < 0 || T < 0 || S < 1 || k < 1 || k > (T > 1 ? T : 1)) return cudaErrorInvalidValue;
  if (R == 0) return cudaSuccess;
  if (R > INT64_MAX / S) return cudaErrorInvalidConfiguration;
  const unsigned grid = blocks_for(R * S);
  if (grid == 0) return cudaErrorInvalidConfiguration;
  window_spans_kernel<<<grid, kThreads, 0, stream>>>(lengths, starts, ends, counts, R, T, S, k, single_frame);
  return cudaGetLastError();
}

}  // namespace lalm_cuda
