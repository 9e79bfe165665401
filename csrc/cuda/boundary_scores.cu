// Boundary scores 1 - cos(x[t-1], x[t]): the CUDA fallback of kernels/boundary_scores.py.
//
// One warp per frame: the lanes stride over the features (coalesced), accumulate dot and
// both squared norms in fp32 (fp64 for fp64) and reduce with warp shuffles in a fixed
// order (deterministic). Frames outside 1 <= t < lengths[r] are never read and get 0.
#include "common.cuh"

namespace lalm_cuda {
namespace {

using detail::Acc;
using detail::ceil_div;
using detail::to_acc;

constexpr int kWarpsPerBlock = 4;

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
