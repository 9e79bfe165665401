// Python bindings of the C++ kernels (module lalm_fast._C).
#include <torch/extension.h>

#include "cpu/ops_cpu.h"
#ifdef WITH_CUDA
#include "cuda/cuda_ops.h"
#endif

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "lalm-fast C++ kernels (contracts: lalm_fast/ops/reference.py)";
  m.def("span_mean_cpu", &lalm_fast::cpu::span_mean, "mean of each [start, end) span of frames",
        py::arg("x"), py::arg("starts"), py::arg("ends"));
  m.def("span_mean_backward_cpu", &lalm_fast::cpu::span_mean_backward, "gradient of span_mean",
        py::arg("grad"), py::arg("starts"), py::arg("ends"), py::arg("num_frames"));
  m.def("boundary_scores_cpu", &lalm_fast::cpu::boundary_scores, "1 - cos(x[t-1], x[t])",
        py::arg("x"), py::arg("lengths"));
  m.def("detect_boundaries_cpu", &lalm_fast::cpu::detect_boundaries, "segment start mask from raw scores",
        py::arg("scores"), py::arg("lengths"), py::arg("mode"), py::arg("param"), py::arg("min_len"),
        py::arg("max_len"));
  m.def("compress_cpu", &lalm_fast::cpu::compress, "x to tokens in one call (segmentation, uniform, downsample)",
        py::arg("x"), py::arg("lengths"), py::arg("mode"), py::arg("param"), py::arg("min_len"), py::arg("max_len"),
        py::arg("num_out"), py::arg("boundaries") = py::none());
#ifdef WITH_CUDA
  register_cuda_ops(m);
#endif
}
