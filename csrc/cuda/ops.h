// Python bindings of the CUDA fallback kernels (csrc/cuda/ops.cpp).
//
// Built only against a CUDA build of torch (setup.py defines WITH_CUDA then);
// csrc/bindings.cpp binds them into the submodule lalm_fast._C.cuda under #ifdef WITH_CUDA.
#pragma once

#include <torch/extension.h>

namespace lalm_fast {
namespace cuda {

// Binds span_mean(x, starts, ends), span_mean_backward(grad, starts, ends, num_frames),
// boundary_scores(x, lengths), detect_boundaries(scores, lengths, mode, param, min_len,
// max_len) and compress(x, lengths, mode, param, min_len, max_len, num_out, boundaries=None)
// on the submodule m, with the signatures of the CPU kernels (csrc/cpu/ops.h).
void bind(pybind11::module_ m);

}  // namespace cuda
}  // namespace lalm_fast
