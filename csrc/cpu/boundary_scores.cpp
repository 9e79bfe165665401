// Adjacent-frame cosine dissimilarity on CPU: d[t] = 1 - cos(x[t-1], x[t]) for 1 <= t < L.
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>

#include "ops.h"
#include "row_math.h"

namespace lalm_fast {
namespace cpu {

namespace {

constexpr double kCosineEps = 1e-8;  // same clamp of each norm as the reference

// The score of two vectors whose squared norms or dot product overflow the accumulator (for
// fp32, values past ~1e19): each vector is scaled by its largest magnitude, in double. Taken
// only when a sum is not finite, so the fast path stays as it is.
template <typename scalar_t>
double scaled_score(const scalar_t* a, const scalar_t* b, int64_t dim) {
  double sa = 0, sb = 0;
  for (int64_t d = 0; d < dim; ++d) {
    const double va = std::abs(static_cast<double>(widen(a[d]))), vb = std::abs(static_cast<double>(widen(b[d])));
    if (std::isnan(va) || std::isnan(vb)) return std::nan("");
    sa = std::max(sa, va);
    sb = std::max(sb, vb);
  }
  if (std::isinf(sa) || std::isinf(sb)) return std::nan("");  // an Inf frame: NaN, as the reference gives
  if (sa == 0 || sb == 0) return 1.0;                         // a zero vector: dot 0, norms clamped
  double dot = 0, na = 0, nb = 0;
  for (int64_t d = 0; d < dim; ++d) {
    const double va = widen(a[d]) / sa, vb = widen(b[d]) / sb;
    dot += va * vb;
    na += va * va;
    nb += vb * vb;
  }
  // max(|a|, eps) = sa * max(|a / sa|, eps / sa): the scales cancel out of the cosine.
  return 1.0 - dot / (std::max(std::sqrt(na), kCosineEps / sa) * std::max(std::sqrt(nb), kCosineEps / sb));
}

template <typename scalar_t>
void boundary_scores_impl(const at::Tensor& x, const at::Tensor& lengths, at::Tensor& out) {
  using acc_t = typename AccType<scalar_t>::type;
  const int64_t frames = x.size(1), dim = x.size(2);
  const int64_t stride_r = x.stride(0), stride_t = x.stride(1);
  const scalar_t* xp = x.data_ptr<scalar_t>();
  const int64_t* lp = lengths.data_ptr<int64_t>();
  acc_t* op = out.data_ptr<acc_t>();
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 14) / std::max<int64_t>(1, dim));
  at::parallel_for(0, out.numel(), grain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t row = i / frames, t = i % frames;
      const int64_t length = std::min(std::max<int64_t>(lp[row], 0), frames);  // never read padding
      if (t < 1 || t >= length) {
        op[i] = acc_t(0);
        continue;
      }
      const scalar_t* cur = xp + row * stride_r + t * stride_t;
      acc_t sums[3];
      dot_and_norms(cur - stride_t, cur, dim, sums);
      if (!std::isfinite(sums[0]) || !std::isfinite(sums[1]) || !std::isfinite(sums[2])) {
        op[i] = static_cast<acc_t>(scaled_score(cur - stride_t, cur, dim));
        continue;
      }
      const acc_t eps = acc_t(kCosineEps);
      const acc_t norms = std::max(std::sqrt(sums[1]), eps) * std::max(std::sqrt(sums[2]), eps);
      op[i] = acc_t(1) - sums[0] / norms;
    }
  });
}

}  // namespace

at::Tensor boundary_scores(const at::Tensor& x, const at::Tensor& lengths) {
  TORCH_CHECK(x.device().is_cpu() && lengths.device().is_cpu(), "x and lengths must be CPU tensors");
  TORCH_CHECK(x.dim() == 3, "x must be [R, T, D], got ", x.sizes());
  TORCH_CHECK(x.numel() == 0 || x.size(2) <= 1 || x.stride(2) == 1, "x must have a contiguous last dimension");
  TORCH_CHECK(lengths.dim() == 1 && lengths.size(0) == x.size(0) && lengths.scalar_type() == at::kLong,
              "lengths must be int64 [R=", x.size(0), "], got ", lengths.scalar_type(), " ", lengths.sizes());
  const at::Tensor lens = lengths.contiguous();
  const auto acc_type = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor out = at::empty({x.size(0), x.size(1)}, x.options().dtype(acc_type));
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "boundary_scores_cpu",
                                  [&] { boundary_scores_impl<scalar_t>(x, lens, out); });
  return out;
}

}  // namespace cpu
}  // namespace lalm_fast
