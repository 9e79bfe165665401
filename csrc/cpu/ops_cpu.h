// CPU kernels: contracts as in lalm_fast/ops/reference.py.
#pragma once

#include <torch/extension.h>

namespace lalm_fast {
namespace cpu {

// x [R, T, D] (stride(-1) == 1), starts/ends [R, S] int64 -> [R, S, D]
at::Tensor span_mean(const at::Tensor& x, const at::Tensor& starts, const at::Tensor& ends);
// grad [R, S, D] -> [R, num_frames, D]
at::Tensor span_mean_backward(const at::Tensor& grad, const at::Tensor& starts, const at::Tensor& ends,
                              int64_t num_frames);
// x [R, T, D], lengths [R] int64 -> [R, T] fp32 (fp64 for fp64)
at::Tensor boundary_scores(const at::Tensor& x, const at::Tensor& lengths);

}  // namespace cpu
}  // namespace lalm_fast
