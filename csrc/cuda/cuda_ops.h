// Python bindings of the CUDA fallback kernels (csrc/cuda/cuda_ops.cpp).
//
// Built only against a CUDA build of torch (setup.py defines WITH_CUDA then);
// csrc/bindings.cpp calls register_cuda_ops(m) under #ifdef WITH_CUDA.
#pragma once

#include <torch/extension.h>

// Binds span_mean_cuda(x, starts, ends), span_mean_backward_cuda(grad, starts, ends,
// num_frames) and boundary_scores_cuda(x, lengths) on the module.
void register_cuda_ops(pybind11::module_& m);
