// Span mean (forward and backward) on CPU.
//
// Work is split over rows x spans with at::parallel_for; each task sums its span's frames
// into an fp32 (fp64) row buffer in time order, so results do not depend on the thread count.
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "ops_cpu.h"
#include "row_math.h"

namespace lalm_fast {
namespace cpu {

namespace {

// Spans are built by lalm_fast.ops, but this op is callable directly, so check that they are
// in range, sorted and disjoint: O(R*S), cheap next to the O(T*D) work, and it turns a bad
// call into an error rather than an out-of-bounds read or an unwritten gradient.
void check_spans(const at::Tensor& starts, const at::Tensor& ends, int64_t rows, int64_t num_frames) {
  TORCH_CHECK(starts.device().is_cpu() && ends.device().is_cpu(), "starts/ends must be CPU tensors");
  TORCH_CHECK(starts.scalar_type() == at::kLong && ends.scalar_type() == at::kLong,
              "starts/ends must be int64, got ", starts.scalar_type(), " and ", ends.scalar_type());
  TORCH_CHECK(starts.dim() == 2 && starts.sizes() == ends.sizes() && starts.size(0) == rows,
              "starts/ends must both be [R=", rows, ", S], got ", starts.sizes(), " and ", ends.sizes());
  TORCH_CHECK(starts.is_contiguous() && ends.is_contiguous(), "starts/ends must be contiguous");
  const int64_t spans = starts.size(1);
  const int64_t* st = starts.data_ptr<int64_t>();
  const int64_t* en = ends.data_ptr<int64_t>();
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t s = 0; s < spans; ++s) {
      const int64_t i = r * spans + s;
      TORCH_CHECK(0 <= st[i] && st[i] <= en[i] && en[i] <= num_frames, "span (", st[i], ", ", en[i],
                  ") of row ", r, " is outside [0, ", num_frames, "]");
      TORCH_CHECK(s + 1 == spans || en[i] <= st[i + 1], "spans of row ", r, " must be sorted and disjoint");
    }
  }
}

// Outputs are written once, right after allocation, so a large one spends much of its time in
// page faults (one per 4 KiB). Asking for transparent huge pages on the 2 MiB-aligned part of
// the buffer cuts the faults ~500x where the kernel allows it (THP "madvise" mode, the common
// default); elsewhere the call is a harmless no-op.
}  // namespace

void advise_huge_pages(const at::Tensor& t) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t{1} << 21;
  const uintptr_t begin = reinterpret_cast<uintptr_t>(t.data_ptr());
  const uintptr_t end = begin + t.nbytes();
  const uintptr_t first = (begin + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t last = end & ~(kHuge - 1);
  if (last > first) madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);
#endif
}

namespace {

int64_t grain_for(int64_t work_per_item) {
  // Aim for tasks of ~32K element-operations so scheduling overhead stays negligible.
  return std::max<int64_t>(1, (int64_t{1} << 15) / std::max<int64_t>(1, work_per_item));
}

template <typename scalar_t>
void span_mean_impl(const at::Tensor& x, const at::Tensor& starts, const at::Tensor& ends, at::Tensor& out) {
  using acc_t = typename AccType<scalar_t>::type;
  const int64_t spans = starts.size(1), dim = x.size(2);
  const int64_t stride_r = x.stride(0), stride_t = x.stride(1);
  const scalar_t* xp = x.data_ptr<scalar_t>();
  scalar_t* yp = out.data_ptr<scalar_t>();
  const int64_t* st = starts.data_ptr<int64_t>();
  const int64_t* en = ends.data_ptr<int64_t>();
  const int64_t avg_len = std::max<int64_t>(1, x.size(1) / std::max<int64_t>(1, spans));
  at::parallel_for(0, out.size(0) * spans, grain_for(avg_len * dim), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc(dim);
    for (int64_t i = begin; i < end; ++i) {
      const int64_t row = i / spans;
      std::fill(acc.begin(), acc.end(), acc_t(0));
      const scalar_t* base = xp + row * stride_r;
      for (int64_t t = st[i]; t < en[i]; ++t) add_row(acc.data(), base + t * stride_t, dim);
      const int64_t count = en[i] - st[i];
      store_scaled(yp + i * dim, acc.data(), count > 0 ? acc_t(1) / acc_t(count) : acc_t(0), dim);
    }
  });
}

template <typename scalar_t>
void span_mean_backward_impl(const at::Tensor& grad, const at::Tensor& starts, const at::Tensor& ends,
                             at::Tensor& out) {
  using acc_t = typename AccType<scalar_t>::type;
  const int64_t spans = starts.size(1), dim = grad.size(2), frames = out.size(1);
  const scalar_t* gp = grad.data_ptr<scalar_t>();
  scalar_t* op = out.data_ptr<scalar_t>();
  const int64_t* st = starts.data_ptr<int64_t>();
  const int64_t* en = ends.data_ptr<int64_t>();
  const int64_t avg_len = std::max<int64_t>(1, frames / std::max<int64_t>(1, spans));
  at::parallel_for(0, out.size(0) * spans, grain_for(avg_len * dim), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t row = i / spans, s = i % spans;
      // Span s owns the frames from its start to the next span's start (the first span from
      // frame 0, the last to the end): every frame is written once, with no zero-fill pass.
      const int64_t lo = s == 0 ? 0 : st[i];
      const int64_t hi = s + 1 == spans ? frames : st[i + 1];
      const int64_t count = en[i] - st[i];
      const acc_t scale = count > 0 ? acc_t(1) / acc_t(count) : acc_t(0);
      scalar_t* base = op + row * frames * dim;
      for (int64_t t = lo; t < hi; ++t) {
        if (t >= st[i] && t < en[i]) {
          scale_row(base + t * dim, gp + i * dim, scale, dim);
        } else {
          std::memset(static_cast<void*>(base + t * dim), 0, sizeof(scalar_t) * dim);
        }
      }
    }
  });
}

void check_features(const at::Tensor& x, const char* name) {
  TORCH_CHECK(x.device().is_cpu(), name, " must be a CPU tensor, got ", x.device());
  TORCH_CHECK(x.dim() == 3, name, " must be [R, T, D], got ", x.sizes());
  TORCH_CHECK(x.size(2) <= 1 || x.stride(2) == 1, name, " must have a contiguous last dimension");
  TORCH_CHECK(at::isFloatingType(x.scalar_type()), name, " must be a floating tensor, got ", x.scalar_type());
}

}  // namespace

void span_mean_into(const at::Tensor& x, const at::Tensor& starts, const at::Tensor& ends, at::Tensor& out) {
  check_features(x, "x");
  check_spans(starts, ends, x.size(0), x.size(1));
  TORCH_CHECK(out.is_contiguous() && out.scalar_type() == x.scalar_type() && out.size(0) == x.size(0) &&
                  out.size(1) == starts.size(1) && out.size(2) == x.size(2),
              "out must be a contiguous [R, S, D] tensor of x's dtype");
  if (out.numel() == 0) return;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "span_mean_cpu",
                                  [&] { span_mean_impl<scalar_t>(x, starts, ends, out); });
}

at::Tensor span_mean(const at::Tensor& x, const at::Tensor& starts, const at::Tensor& ends) {
  at::Tensor out = at::empty({x.size(0), starts.size(1), x.size(2)}, x.options());
  if (out.numel() != 0) advise_huge_pages(out);
  span_mean_into(x, starts, ends, out);
  return out;
}

at::Tensor span_mean_backward(const at::Tensor& grad_in, const at::Tensor& starts, const at::Tensor& ends,
                              int64_t num_frames) {
  check_features(grad_in, "grad");
  TORCH_CHECK(num_frames >= 0, "num_frames must be >= 0");
  TORCH_CHECK(grad_in.size(1) == starts.size(1), "grad has ", grad_in.size(1), " tokens but there are ",
              starts.size(1), " spans");
  check_spans(starts, ends, grad_in.size(0), num_frames);
  at::Tensor grad = grad_in.contiguous();
  at::Tensor out = at::empty({grad.size(0), num_frames, grad.size(2)}, grad.options());
  if (out.numel() == 0) return out;
  advise_huge_pages(out);
  if (starts.size(1) == 0) return out.zero_();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "span_mean_backward_cpu",
                                  [&] { span_mean_backward_impl<scalar_t>(grad, starts, ends, out); });
  return out;
}

}  // namespace cpu
}  // namespace lalm_fast
