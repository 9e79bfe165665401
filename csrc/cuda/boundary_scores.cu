// Boundary scores 1 - cos(x[t-1], x[t]): the CUDA fallback of kernels/boundary_scores.py.
//
// One warp per frame: the lanes stride over the features (coalesced), accumulate dot and
// both squared norms in fp32 (fp64 for fp64) and reduce with warp shuffles in a fixed
// order (deterministic). Frames outside 1 <= t < lengths[r] are never read and get 0.
// A pair whose sums overflow (fp32 frames past ~1e19) is scored again from each frame scaled
// by its largest magnitude, in double: the fallback of the cpu kernel and the reference.
#include "common.cuh"

namespace lalm_cuda {
namespace {

using detail::Acc;
using detail::ceil_div;
using detail::to_acc;

constexpr int kWarpsPerBlock = 4;
constexpr double kCosineEps = 1e-8;  // same clamp of each norm as the reference

__device__ __forceinline__ double warp_sum(double v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

__device__ __forceinline__ double warp_max(double v) {
  for (int offset = 16; offset > 0; offset >>= 1) v = fmax(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

// The score of a pair whose plain sums overflow; every lane of the warp calls it and gets it.
// max(|a|, eps) = sa * max(|a / sa|, eps / sa), so the scales cancel out of the cosine.
template <typename T>
__device__ double scaled_score(const T* a, const T* b, int64_t D, int lane) {
  double sa = 0, sb = 0;
  int bad = 0;
  for (int64_t d = lane; d < D; d += 32) {
    const double va = fabs(static_cast<double>(to_acc(a[d]))), vb = fabs(static_cast<double>(to_acc(b[d])));
    bad |= !isfinite(va) || !isfinite(vb);  // a NaN or Inf frame: NaN, as the reference gives
    sa = fmax(sa, va);
    sb = fmax(sb, vb);
  }
  if (__any_sync(0xffffffffu, bad)) return nan("");
  sa = warp_max(sa);
  sb = warp_max(sb);
  if (sa == 0 || sb == 0) return 1.0;  // a zero vector: dot 0, norms clamped
  double dot = 0, na = 0, nb = 0;
  for (int64_t d = lane; d < D; d += 32) {
    const double va = static_cast<double>(to_acc(a[d])) / sa, vb = static_cast<double>(to_acc(b[d])) / sb;
    dot += va * vb;
    na += va * va;
    nb += vb * vb;
  }
  dot = warp_sum(dot);
  na = warp_sum(na);
  nb = warp_sum(nb);
  return 1.0 - dot / (fmax(sqrt(na), kCosineEps / sa) * fmax(sqrt(nb), kCosineEps / sb));
}

template <typename T>
__global__ void boundary_scores_kernel(const T* __restrict__ x, const int64_t* __restrict__ lengths,
                                       typename Acc<T>::type* __restrict__ out, int64_t R, int64_t T_, int64_t D,
                                       int64_t stride_r, int64_t stride_t) {
  using acc_t = typename Acc<T>::type;
  const int64_t frame = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.y;
  if (frame >= R * T_) return;
  const int64_t r = frame / T_;
  const int64_t t = frame % T_;
  const int lane = threadIdx.x;
  if (t < 1 || t >= lengths[r]) {
    if (lane == 0) out[frame] = acc_t(0);
    return;
  }
  const T* a = x + r * stride_r + (t - 1) * stride_t;
  const T* b = a + stride_t;
  acc_t dot = 0, na = 0, nb = 0;
  for (int64_t d = lane; d < D; d += 32) {
    const acc_t va = to_acc(a[d]);
    const acc_t vb = to_acc(b[d]);
    dot += va * vb;
    na += va * va;
    nb += vb * vb;
  }
  for (int offset = 16; offset > 0; offset >>= 1) {
    dot += __shfl_xor_sync(0xffffffffu, dot, offset);
    na += __shfl_xor_sync(0xffffffffu, na, offset);
    nb += __shfl_xor_sync(0xffffffffu, nb, offset);
  }
  // The sums are the same in every lane after the xor reduction, so the branch is warp-uniform.
  if (!isfinite(dot) || !isfinite(na) || !isfinite(nb)) {
    const double score = scaled_score(a, b, D, lane);
    if (lane == 0) out[frame] = static_cast<acc_t>(score);
    return;
  }
  if (lane == 0) {
    const acc_t eps = acc_t(1e-8);
    const acc_t norm_a = sqrt(na) > eps ? sqrt(na) : eps;
    const acc_t norm_b = sqrt(nb) > eps ? sqrt(nb) : eps;
    out[frame] = acc_t(1) - dot / (norm_a * norm_b);
  }
}

}  // namespace

cudaError_t boundary_scores(DType dtype, const void* x, const int64_t* lengths, void* out, int64_t R, int64_t T,
                            int64_t D, int64_t stride_r, int64_t stride_t, cudaStream_t stream) {
  if (R == 0 || T == 0) return cudaSuccess;
  const int64_t blocks = ceil_div(R * T, kWarpsPerBlock);
  if (blocks > 0x7fffffff) return cudaErrorInvalidConfiguration;
  const dim3 block(32, kWarpsPerBlock);
  LALM_CUDA_DISPATCH(dtype, scalar_t,
                     boundary_scores_kernel<scalar_t><<<static_cast<unsigned>(blocks), block, 0, stream>>>(
                         static_cast<const scalar_t*>(x), lengths,
                         static_cast<typename detail::Acc<scalar_t>::type*>(out), R, T, D, stride_r, stride_t));
  return cudaGetLastError();
}

}  // namespace lalm_cuda
