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

#include "ops.h"
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
  // Below glibc's largest mmap threshold (32 MiB) a buffer is usually recycled heap memory
  // whose pages are already mapped: advice would only cost a system call.
  if (t.nbytes() < (size_t{32} << 20)) return;
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
SpanJob<scalar_t> make_job(const scalar_t* in, scalar_t* out, const at::Tensor& starts, const at::Tensor& ends,
                           int64_t stride_r, int64_t stride_t, int64_t frames, int64_t dim) {
  return {in, out, starts.data_ptr<int64_t>(), ends.data_ptr<int64_t>(), stride_r, stride_t, starts.size(1), frames, dim};
}

template <typename scalar_t>
void span_mean_impl(const at::Tensor& x, const at::Tensor& starts, const at::Tensor& ends, at::Tensor& out) {
  const auto job = make_job(x.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), starts, ends, x.stride(0),
                            x.stride(1), x.size(1), x.size(2));
  const int64_t avg_len = std::max<int64_t>(1, x.size(1) / std::max<int64_t>(1, job.spans));
  at::parallel_for(0, out.size(0) * job.spans, grain_for(avg_len * job.dim),
                   [&](int64_t begin, int64_t end) { mean_spans(job, begin, end); });
}

template <typename scalar_t>
void span_mean_backward_impl(const at::Tensor& grad, const at::Tensor& starts, const at::Tensor& ends,
                             at::Tensor& out) {
  const int64_t frames = out.size(1), dim = grad.size(2);
  const auto job = make_job(grad.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), starts, ends, 0, 0, frames, dim);
  const int64_t avg_len = std::max<int64_t>(1, frames / std::max<int64_t>(1, job.spans));
  at::parallel_for(0, out.size(0) * job.spans, grain_for(avg_len * dim),
                   [&](int64_t begin, int64_t end) { spread_spans(job, begin, end); });
}

void check_features(const at::Tensor& x, const char* name) {
  TORCH_CHECK(x.device().is_cpu(), name, " must be a CPU tensor, got ", x.device());
  TORCH_CHECK(x.dim() == 3, name, " must be [R, T, D], got ", x.sizes());
  // An empty tensor's strides are arbitrary (an expanded zero-size gradient has stride 0).
  TORCH_CHECK(x.numel() == 0 || x.size(2) <= 1 || x.stride(2) == 1, name, " must have a contiguous last dimension");
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
