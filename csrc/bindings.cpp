// Python bindings of the C++ kernels: module lalm_fast._C with one submodule per backend,
// `cpu` always and `cuda` when built against a CUDA torch. Both submodules use the same
// function names, which are the backend kernel names of lalm_fast/ops/backends.py.
#include <torch/extension.h>

#include "cpu/ops.h"
#ifdef WITH_CUDA
#include "cuda/ops.h"
#endif

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "lalm-fast C++ kernels (contracts: lalm_fast/ops/reference.py)";
  auto cpu = m.def_submodule("cpu", "C++ CPU kernels (csrc/cpu)");
  cpu.def("span_mean", &lalm_fast::cpu::span_mean, "mean of each [start, end) span of frames", py::arg("x"),
          py::arg("starts"), py::arg("ends"));
  cpu.def("span_mean_backward", &lalm_fast::cpu::span_mean_backward, "gradient of span_mean", py::arg("grad"),
          py::arg("starts"), py::arg("ends"), py::arg("num_frames"));
  cpu.def("boundary_scores", &lalm_fast::cpu::boundary_scores, "1 - cos(x[t-1], x[t])", py::arg("x"),
          py::arg("lengths"));
  cpu.def("detect_boundaries", &lalm_fast::cpu::detect_boundaries, "segment start mask from raw scores",
          py::arg("scores"), py::arg("lengths"), py::arg("mode"), py::arg("param"), py::arg("min_len"),
          py::arg("max_len"));
  cpu.def("compress", &lalm_fast::cpu::compress,
          "x to tokens in one call (segmentation, uniform, downsample, given, segment ids, offsets)",
          py::arg("x"), py::arg("lengths"), py::arg("mode"), py::arg("param"), py::arg("min_len"), py::arg("max_len"),
          py::arg("num_out"), py::arg("boundaries") = py::none());
#ifdef WITH_CUDA
  lalm_fast::cuda::bind(m.def_submodule("cuda", "CUDA C++ fallback kernels (csrc/cuda)"));
#endif
}
