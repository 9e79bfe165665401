// CPU kernels: contracts as in lalm_fast/ops/reference.py.
#pragma once

#include <torch/extension.h>

#include <tuple>

namespace lalm_fast {
namespace cpu {

// x [R, T, D] (stride(-1) == 1), starts/ends [R, S] int64 -> [R, S, D]
at::Tensor span_mean(const at::Tensor& x, const at::Tensor& starts, const at::Tensor& ends);
// The same into a preallocated contiguous out [R, S, D].
void span_mean_into(const at::Tensor& x, const at::Tensor& starts, const at::Tensor& ends, at::Tensor& out);
// Ask for transparent huge pages on a freshly allocated output (fewer page faults).
void advise_huge_pages(const at::Tensor& t);
// grad [R, S, D] -> [R, num_frames, D]
at::Tensor span_mean_backward(const at::Tensor& grad, const at::Tensor& starts, const at::Tensor& ends,
                              int64_t num_frames);
// x [R, T, D], lengths [R] int64 -> [R, T] fp32 (fp64 for fp64)
at::Tensor boundary_scores(const at::Tensor& x, const at::Tensor& lengths);

// Start mask [R, T] bool from raw scores [R, T]; mode (csrc/modes.h) peak, threshold or rate,
// param its prominence, threshold or rate; max_len 0 = none. Decisions identical to
// lalm_fast/ops/_detect.py.
at::Tensor detect_boundaries(const at::Tensor& scores, const at::Tensor& lengths, int64_t mode, double param,
                             int64_t min_len, int64_t max_len);
// One call from x to tokens: (values [B, S, D], starts [B, S], ends [B, S], counts [B]).
// Detection modes fuse scores + detection + pooling; uniform pooling and downsampling by
// k = param build their spans arithmetically; given pools the segments of a start mask, and
// segment ids / offsets those of sorted per-frame ids [B, T] / CSR offsets [B, S+1] (all
// three passed as `boundaries`; ids and offsets checked as segment_pool checks them).
using CompressResult = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
CompressResult compress(const at::Tensor& x, const at::Tensor& lengths, int64_t mode, double param,
                        int64_t min_len, int64_t max_len, int64_t num_out, const c10::optional<at::Tensor>& boundaries);

}  // namespace cpu
}  // namespace lalm_fast
