// CPU kernels: contracts as in lalm_fast/ops/reference.py.
#pragma once

#include <torch/extension.h>

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

// Start mask [R, T] bool from raw scores [R, T]; mode 0 peak (param = prominence),
// 1 threshold, 2 rate; max_len 0 = none. Decisions identical to lalm_fast/ops/_detect.py.
at::Tensor detect_boundaries(const at::Tensor& scores, const at::Tensor& lengths, int64_t mode, double param,
                             int64_t min_len, int64_t max_len);
// One call from x to tokens: {values [B, S, D], starts [B, S], ends [B, S], counts [B]}.
// Modes 0-2 fuse scores + detection + pooling; 3 uniform pooling and 4 downsampling by
// k = param (arithmetic spans, no scores); 5 pools the segments of a given start mask.
std::vector<at::Tensor> compress(const at::Tensor& x, const at::Tensor& lengths, int64_t mode, double param,
                                 int64_t min_len, int64_t max_len, int64_t num_out,
                                 const c10::optional<at::Tensor>& boundaries);

}  // namespace cpu
}  // namespace lalm_fast
