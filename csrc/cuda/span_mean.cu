// Span means and their gradient: the CUDA fallback of kernels/span_mean.py.
//
// Forward: a block of (kThreadsD x kSpansPerBlock) threads owns kSpansPerBlock consecutive
// spans of one row; threadIdx.y picks the span, threadIdx.x walks the features (coalesced
// across the warp) and each thread sums its column over the span's frames in fp32.
// Several short spans share a block, so audio's 2-8 frame segments keep all warps busy.
// Long spans are not split across blocks here (the Triton backend does that); this is the
// fallback, kept simple and deterministic.
//
// Backward: one thread row per frame. The owner span of frame t is found by a binary
// search over the row's sorted starts; the frame gets grad[owner] / len(owner) when it lies
// inside the owner, else 0. Every output element is written once: no zero-fill pass.
//
// Both have a vectorised variant, used when every row start is 16-byte aligned (D and the
// strides multiples of 16 / sizeof(T), aligned base pointers): each thread moves 16 bytes
// per load and store (8 bf16 / fp16, 4 fp32, 2 fp64) instead of one element. The scalar
// kernels cover everything else (odd D, sliced inputs); 2-byte accesses alone leave the
// kernels far from the copy bandwidth (docs/gpu-notes.md has the numbers).
#include <cstdint>
#include <initializer_list>

#include "common.cuh"

namespace lalm_cuda {
namespace {

using detail::Acc;
using detail::ceil_div;
using detail::from_acc;
using detail::to_acc;

constexpr int kThreadsD = 64;
constexpr int kSpansPerBlock = 4;

template <typename T>
__global__ void span_mean_kernel(const T* __restrict__ x, const int64_t* __restrict__ starts,
                                 const int64_t* __restrict__ ends, T* __restrict__ out, int64_t S, int64_t D,
                                 int64_t stride_r, int64_t stride_t, int64_t span_blocks) {
  using acc_t = typename Acc<T>::type;
  const int64_t r = blockIdx.x / span_blocks;
  const int64_t s = (blockIdx.x % span_blocks) * kSpansPerBlock + threadIdx.y;
  if (s >= S) return;
  const int64_t st = starts[r * S + s];
  const int64_t en = ends[r * S + s];
  const acc_t inv = acc_t(1) / acc_t(en - st > 0 ? en - st : 1);
  const T* base = x + r * stride_r;
  T* dst = out + (r * S + s) * D;
  for (int64_t d = int64_t(blockIdx.y) * kThreadsD + threadIdx.x; d < D; d += int64_t(gridDim.y) * kThreadsD) {
    acc_t acc = acc_t(0);
    const T* p = base + st * stride_t + d;
    int64_t t = st;
    // 4 independent loads in flight per thread
    for (; t + 4 <= en; t += 4, p += 4 * stride_t) {
      acc_t a0 = to_acc(p[0]), a1 = to_acc(p[stride_t]), a2 = to_acc(p[2 * stride_t]), a3 = to_acc(p[3 * stride_t]);
      acc += (a0 + a1) + (a2 + a3);
    }
    for (; t < en; ++t, p += stride_t) acc += to_acc(*p);
    dst[d] = from_acc<T>(acc * inv);
  }
}

// The span that owns frame t of a row (sorted, disjoint spans): upper_bound(starts, t) - 1.
// `inside` is false when t lies in a gap or before the first span; the gradient share
// is then 0. `span` is 0 (a valid row to read) when no span starts at or before t.
template <typename acc_t>
struct FrameOwner {
  int64_t span;
  bool inside;
  acc_t scale;  // 1 / len(span)
};

template <typename acc_t>
__device__ __forceinline__ FrameOwner<acc_t> frame_owner(const int64_t* row_starts, const int64_t* row_ends,
                                                         int64_t S, int64_t t) {
  int64_t lo = 0, hi = S;
  while (lo < hi) {
    const int64_t mid = (lo + hi) >> 1;
    if (row_starts[mid] <= t) lo = mid + 1; else hi = mid;
  }
  const int64_t owner = lo - 1;
  FrameOwner<acc_t> result{0, false, acc_t(0)};
  if (owner >= 0) {
    const int64_t st = row_starts[owner];
    const int64_t en = row_ends[owner];
    result.span = owner;
    result.inside = t < en;
    result.scale = acc_t(1) / acc_t(en - st > 0 ? en - st : 1);
  }
  return result;
}

constexpr int kThreadsDBwd = 64;
constexpr int kFramesPerBlock = 4;

template <typename T>
__global__ void span_mean_backward_kernel(const T* __restrict__ grad, const int64_t* __restrict__ starts,
                                          const int64_t* __restrict__ ends, T* __restrict__ out, int64_t T_,
                                          int64_t S, int64_t D, int64_t frame_blocks) {
  using acc_t = typename Acc<T>::type;
  const int64_t r = blockIdx.x / frame_blocks;
  const int64_t t = (blockIdx.x % frame_blocks) * kFramesPerBlock + threadIdx.y;
  if (t >= T_) return;
  const FrameOwner<acc_t> own = frame_owner<acc_t>(starts + r * S, ends + r * S, S, t);
  const bool inside = own.inside;
  const acc_t scale = own.scale;
  T* dst = out + (r * T_ + t) * D;
  const T* src = grad + (r * S + own.span) * D;
  for (int64_t d = int64_t(blockIdx.y) * kThreadsDBwd + threadIdx.x; d < D; d += int64_t(gridDim.y) * kThreadsDBwd) {
    dst[d] = inside ? from_acc<T>(to_acc(src[d]) * scale) : from_acc<T>(acc_t(0));
  }
}

// 16 bytes of T: the unit of the vectorised kernels.
template <typename T>
struct alignas(16) Pack16 {
  static constexpr int kSize = 16 / sizeof(T);
  T v[kSize];
};

constexpr int kVecThreadsX = 32;  // one warp across the feature vectors
constexpr int kVecRows = 8;       // spans (forward) or frames (backward) per block

template <typename T>
__global__ void span_mean_vec_kernel(const T* __restrict__ x, const int64_t* __restrict__ starts,
                                     const int64_t* __restrict__ ends, T* __restrict__ out, int64_t S, int64_t D,
                                     int64_t stride_r, int64_t stride_t, int64_t span_blocks) {
  using acc_t = typename Acc<T>::type;
  using P = Pack16<T>;
  constexpr int V = P::kSize;
  const int64_t r = blockIdx.x / span_blocks;
  const int64_t s = (blockIdx.x % span_blocks) * kVecRows + threadIdx.y;
  if (s >= S) return;
  const int64_t st = starts[r * S + s];
  const int64_t en = ends[r * S + s];
  const acc_t inv = acc_t(1) / acc_t(en - st > 0 ? en - st : 1);
  const int64_t nvec = D / V;
  for (int64_t v = int64_t(blockIdx.y) * kVecThreadsX + threadIdx.x; v < nvec;
       v += int64_t(gridDim.y) * kVecThreadsX) {
    acc_t acc[V];
#pragma unroll
    for (int i = 0; i < V; ++i) acc[i] = acc_t(0);
    const T* p = x + r * stride_r + st * stride_t + v * V;
    int64_t t = st;
    for (; t + 2 <= en; t += 2, p += 2 * stride_t) {  // two 16-byte loads in flight
      const P a = *reinterpret_cast<const P*>(p);
      const P b = *reinterpret_cast<const P*>(p + stride_t);
#pragma unroll
      for (int i = 0; i < V; ++i) acc[i] += to_acc(a.v[i]) + to_acc(b.v[i]);
    }
    if (t < en) {
      const P a = *reinterpret_cast<const P*>(p);
#pragma unroll
      for (int i = 0; i < V; ++i) acc[i] += to_acc(a.v[i]);
    }
    P o;
#pragma unroll
    for (int i = 0; i < V; ++i) o.v[i] = from_acc<T>(acc[i] * inv);
    *reinterpret_cast<P*>(out + (r * S + s) * D + v * V) = o;
  }
}

template <typename T>
__global__ void span_mean_backward_vec_kernel(const T* __restrict__ grad, const int64_t* __restrict__ starts,
                                              const int64_t* __restrict__ ends, T* __restrict__ out, int64_t T_,
                                              int64_t S, int64_t D, int64_t frame_blocks) {
  using acc_t = typename Acc<T>::type;
  using P = Pack16<T>;
  constexpr int V = P::kSize;
  const int64_t r = blockIdx.x / frame_blocks;
  const int64_t t = (blockIdx.x % frame_blocks) * kVecRows + threadIdx.y;
  if (t >= T_) return;
  const FrameOwner<acc_t> own = frame_owner<acc_t>(starts + r * S, ends + r * S, S, t);
  const bool inside = own.inside;
  const acc_t scale = own.scale;
  T* dst = out + (r * T_ + t) * D;
  const T* src = grad + (r * S + own.span) * D;
  const int64_t nvec = D / V;
  for (int64_t v = int64_t(blockIdx.y) * kVecThreadsX + threadIdx.x; v < nvec;
       v += int64_t(gridDim.y) * kVecThreadsX) {
    P o;
    if (inside) {
      const P g = *reinterpret_cast<const P*>(src + v * V);
#pragma unroll
      for (int i = 0; i < V; ++i) o.v[i] = from_acc<T>(to_acc(g.v[i]) * scale);
    } else {
#pragma unroll
      for (int i = 0; i < V; ++i) o.v[i] = from_acc<T>(acc_t(0));
    }
    *reinterpret_cast<P*>(dst + v * V) = o;
  }
}

inline size_t element_size(DType dtype) {
  return dtype == DType::kFloat64 ? 8 : dtype == DType::kFloat32 ? 4 : 2;
}

// True when every row the kernels touch starts on a 16-byte boundary.
inline bool vectorizable(DType dtype, int64_t D, std::initializer_list<int64_t> strides,
                         std::initializer_list<const void*> pointers) {
  const int64_t v = static_cast<int64_t>(16 / element_size(dtype));
  if (D % v != 0) return false;
  for (const int64_t s : strides) {
    if (s % v != 0) return false;
  }
  for (const void* p : pointers) {
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0) return false;
  }
  return true;
}

inline unsigned grid_d(int64_t D, int threads) {
  const int64_t blocks = ceil_div(D, threads);
  return static_cast<unsigned>(blocks < 65535 ? blocks : 65535);
}

}  // namespace

cudaError_t span_mean(DType dtype, const void* x, const int64_t* starts, const int64_t* ends, void* out, int64_t R,
                      int64_t T, int64_t S, int64_t D, int64_t stride_r, int64_t stride_t, cudaStream_t stream) {
  (void)T;
  if (R == 0 || S == 0 || D == 0) return cudaSuccess;
  if (vectorizable(dtype, D, {stride_r, stride_t}, {x, out})) {
    const int64_t span_blocks = ceil_div(S, kVecRows);
    if (R * span_blocks > 0x7fffffff) return cudaErrorInvalidConfiguration;
    const int64_t nvec = D / static_cast<int64_t>(16 / element_size(dtype));
    const dim3 grid(static_cast<unsigned>(R * span_blocks), grid_d(nvec, kVecThreadsX));
    const dim3 block(kVecThreadsX, kVecRows);
    LALM_CUDA_DISPATCH(dtype, scalar_t,
                       span_mean_vec_kernel<scalar_t><<<grid, block, 0, stream>>>(
                           static_cast<const scalar_t*>(x), starts, ends, static_cast<scalar_t*>(out), S, D,
                           stride_r, stride_t, span_blocks));
    return cudaGetLastError();
  }
  const int64_t span_blocks = ceil_div(S, kSpansPerBlock);
  if (R * span_blocks > 0x7fffffff) return cudaErrorInvalidConfiguration;
  const dim3 grid(static_cast<unsigned>(R * span_blocks), grid_d(D, kThreadsD));
  const dim3 block(kThreadsD, kSpansPerBlock);
  LALM_CUDA_DISPATCH(dtype, scalar_t,
                     span_mean_kernel<scalar_t><<<grid, block, 0, stream>>>(
                         static_cast<const scalar_t*>(x), starts, ends, static_cast<scalar_t*>(out), S, D, stride_r,
                         stride_t, span_blocks));
  return cudaGetLastError();
}

cudaError_t span_mean_backward(DType dtype, const void* grad, const int64_t* starts, const int64_t* ends, void* out,
                               int64_t R, int64_t T, int64_t S, int64_t D, cudaStream_t stream) {
  if (R == 0 || T == 0 || D == 0) return cudaSuccess;
  if (S == 0) {  // no span owns any frame
    return cudaMemsetAsync(out, 0, static_cast<size_t>(R * T * D) * element_size(dtype), stream);
  }
  if (vectorizable(dtype, D, {}, {grad, out})) {
    const int64_t frame_blocks = ceil_div(T, kVecRows);
    if (R * frame_blocks > 0x7fffffff) return cudaErrorInvalidConfiguration;
    const int64_t nvec = D / static_cast<int64_t>(16 / element_size(dtype));
    const dim3 grid(static_cast<unsigned>(R * frame_blocks), grid_d(nvec, kVecThreadsX));
    const dim3 block(kVecThreadsX, kVecRows);
    LALM_CUDA_DISPATCH(dtype, scalar_t,
                       span_mean_backward_vec_kernel<scalar_t><<<grid, block, 0, stream>>>(
                           static_cast<const scalar_t*>(grad), starts, ends, static_cast<scalar_t*>(out), T, S, D,
                           frame_blocks));
    return cudaGetLastError();
  }
  const int64_t frame_blocks = ceil_div(T, kFramesPerBlock);
  if (R * frame_blocks > 0x7fffffff) return cudaErrorInvalidConfiguration;
  const dim3 grid(static_cast<unsigned>(R * frame_blocks), grid_d(D, kThreadsDBwd));
  const dim3 block(kThreadsDBwd, kFramesPerBlock);
  LALM_CUDA_DISPATCH(dtype, scalar_t,
                     span_mean_backward_kernel<scalar_t><<<grid, block, 0, stream>>>(
                         static_cast<const scalar_t*>(grad), starts, ends, static_cast<scalar_t*>(out), T, S, D,
                         frame_blocks));
  return cudaGetLastError();
}

}  // namespace lalm_cuda
