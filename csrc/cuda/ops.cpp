// Torch bindings of the torch-free CUDA kernels in csrc/cuda/*.cu.
//
// Contracts: lalm_fast/ops/reference.py. This file checks devices, dtypes and shapes with
// TORCH_CHECK, allocates outputs with torch, and launches on the current CUDA stream
// (at::cuda::getCurrentCUDAStream), so the ops are asynchronous, CUDA-graph capturable and
// never sync the host. It needs a CUDA build of torch; the kernels themselves are built
// (and compiled in CI with `nvcc -c`) without torch.
#include "ops.h"

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include <tuple>

#include "../checks.h"
#include "kernels.h"

namespace {

lalm_cuda::DType float_code(const at::Tensor& t, const char* name) {
  switch (t.scalar_type()) {
    case at::kFloat: return lalm_cuda::DType::kFloat32;
    case at::kHalf: return lalm_cuda::DType::kFloat16;
    case at::kBFloat16: return lalm_cuda::DType::kBFloat16;
    case at::kDouble: return lalm_cuda::DType::kFloat64;
    default:
      TORCH_CHECK_TYPE(false, name, " must be float32, float16, bfloat16 or float64, got ", t.scalar_type());
  }
  return lalm_cuda::DType::kFloat32;  // unreachable
}

void check_cuda(const at::Tensor& t, const char* name, const at::Tensor& like) {
  TORCH_CHECK(t.is_cuda(), name, " must be a CUDA tensor, got a tensor on ", t.device());
  TORCH_CHECK(t.device() == like.device(), name, " must be on ", like.device(), ", got ", t.device());
}

// starts / ends / lengths: int64, on x's device, contiguous (the public ops guarantee it;
// a non-contiguous index tensor is made contiguous rather than rejected).
at::Tensor index_tensor(const at::Tensor& t, const char* name, const at::Tensor& like, int64_t dim) {
  check_cuda(t, name, like);
  TORCH_CHECK_TYPE(t.scalar_type() == at::kLong, name, " must be int64, got ", t.scalar_type());
  TORCH_CHECK(t.dim() == dim, name, " must have ", dim, " dimensions, got ", t.dim());
  TORCH_CHECK(t.size(0) == like.size(0), name, " must have ", like.size(0), " rows, got ", t.size(0));
  return t.contiguous();
}

void check_launch(cudaError_t err, const char* op) {
  TORCH_CHECK(err == cudaSuccess, op, ": CUDA kernel launch failed: ", cudaGetErrorString(err));
}

at::Tensor span_mean_cuda(const at::Tensor& x_in, const at::Tensor& starts_in, const at::Tensor& ends_in) {
  TORCH_CHECK(x_in.is_cuda(), "x must be a CUDA tensor, got a tensor on ", x_in.device());
  TORCH_CHECK(x_in.dim() == 3, "x must be [R, T, D], got ", x_in.dim(), " dimensions");
  const auto code = float_code(x_in, "x");
  const at::Tensor x = (x_in.stride(2) == 1 || x_in.size(2) <= 1) ? x_in : x_in.contiguous();
  const at::Tensor starts = index_tensor(starts_in, "starts", x, 2);
  const at::Tensor ends = index_tensor(ends_in, "ends", x, 2);
  TORCH_CHECK(starts.sizes() == ends.sizes(), "starts and ends must have the same shape, got ", starts.sizes(),
              " and ", ends.sizes());
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t R = x.size(0), T = x.size(1), D = x.size(2), S = starts.size(1);
  at::Tensor out = at::empty({R, S, D}, x.options().memory_format(at::MemoryFormat::Contiguous));
  if (out.numel() == 0) return out;
  check_launch(lalm_cuda::span_mean(code, x.data_ptr(), starts.data_ptr<int64_t>(), ends.data_ptr<int64_t>(),
                                    out.data_ptr(), R, T, S, D, x.stride(0), x.stride(1),
                                    at::cuda::getCurrentCUDAStream().stream()),
               "span_mean_cuda");
  return out;
}

at::Tensor span_mean_backward_cuda(const at::Tensor& grad_in, const at::Tensor& starts_in, const at::Tensor& ends_in,
                                   int64_t num_frames) {
  TORCH_CHECK(grad_in.is_cuda(), "grad must be a CUDA tensor, got a tensor on ", grad_in.device());
  TORCH_CHECK(grad_in.dim() == 3, "grad must be [R, S, D], got ", grad_in.dim(), " dimensions");
  TORCH_CHECK(num_frames >= 0, "num_frames must be >= 0, got ", num_frames);
  const auto code = float_code(grad_in, "grad");
  const at::Tensor grad = grad_in.contiguous();
  const at::Tensor starts = index_tensor(starts_in, "starts", grad, 2);
  const at::Tensor ends = index_tensor(ends_in, "ends", grad, 2);
  TORCH_CHECK(starts.size(1) == grad.size(1) && ends.sizes() == starts.sizes(),
              "starts and ends must be [R, S] with S = grad.size(1) = ", grad.size(1), ", got ", starts.sizes(),
              " and ", ends.sizes());
  const c10::cuda::CUDAGuard guard(grad.device());
  const int64_t R = grad.size(0), S = grad.size(1), D = grad.size(2);
  at::Tensor out = at::empty({R, num_frames, D}, grad.options().memory_format(at::MemoryFormat::Contiguous));
  if (out.numel() == 0) return out;
  check_launch(lalm_cuda::span_mean_backward(code, grad.data_ptr(), starts.data_ptr<int64_t>(),
                                             ends.data_ptr<int64_t>(), out.data_ptr(), R, num_frames, S, D,
                                             at::cuda::getCurrentCUDAStream().stream()),
               "span_mean_backward_cuda");
  return out;
}

at::Tensor boundary_scores_cuda(const at::Tensor& x_in, const at::Tensor& lengths_in) {
  TORCH_CHECK(x_in.is_cuda(), "x must be a CUDA tensor, got a tensor on ", x_in.device());
  TORCH_CHECK(x_in.dim() == 3, "x must be [R, T, D], got ", x_in.dim(), " dimensions");
  const auto code = float_code(x_in, "x");
  const at::Tensor x = (x_in.stride(2) == 1 || x_in.size(2) <= 1) ? x_in : x_in.contiguous();
  const at::Tensor lengths = index_tensor(lengths_in, "lengths", x, 1);
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t R = x.size(0), T = x.size(1), D = x.size(2);
  const auto out_dtype = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor out = at::empty({R, T}, x.options().dtype(out_dtype).memory_format(at::MemoryFormat::Contiguous));
  if (out.numel() == 0) return out;
  check_launch(lalm_cuda::boundary_scores(code, x.data_ptr(), lengths.data_ptr<int64_t>(), out.data_ptr(), R, T, D,
                                          x.stride(0), x.stride(1), at::cuda::getCurrentCUDAStream().stream()),
               "boundary_scores_cuda");
  return out;
}

// Raw scores of a detection: float32, or float64 for fp64 input.
lalm_cuda::DType score_code(const at::Tensor& scores) {
  return scores.scalar_type() == at::kDouble ? lalm_cuda::DType::kFloat64 : lalm_cuda::DType::kFloat32;
}

// The detection scratch a mode needs (kernels.h): normalised scores for peak mode, score
// keys (an integer of the scores' width) for rate mode; undefined tensors elsewhere.
struct DetectScratch {
  at::Tensor normed, keys;
  void* normed_ptr() const { return normed.defined() ? normed.data_ptr() : nullptr; }
  void* keys_ptr() const { return keys.defined() ? keys.data_ptr() : nullptr; }
};

DetectScratch detect_scratch(lalm_fast::Mode mode, const at::Tensor& scores) {
  DetectScratch out;
  if (mode == lalm_fast::Mode::kPeak) out.normed = at::empty_like(scores, at::MemoryFormat::Contiguous);
  if (mode == lalm_fast::Mode::kRate) {
    out.keys = at::empty(scores.sizes(), scores.options().dtype(scores.scalar_type() == at::kDouble ? at::kLong : at::kInt));
  }
  return out;
}

at::Tensor detect_boundaries_cuda(const at::Tensor& scores_in, const at::Tensor& lengths_in, int64_t mode, double param,
                                  int64_t min_len, int64_t max_len) {
  const lalm_fast::Mode checked = lalm_fast::checked_mode(mode, param, min_len, max_len, false);
  TORCH_CHECK(scores_in.is_cuda(), "scores must be a CUDA tensor, got a tensor on ", scores_in.device());
  TORCH_CHECK(scores_in.dim() == 2, "scores must be [R, T], got ", scores_in.dim(), " dimensions");
  TORCH_CHECK_TYPE(scores_in.scalar_type() == at::kFloat || scores_in.scalar_type() == at::kDouble,
                   "scores must be float32 or float64, got ", scores_in.scalar_type());
  const at::Tensor scores = scores_in.contiguous();
  const at::Tensor lengths = index_tensor(lengths_in, "lengths", scores, 1);
  const c10::cuda::CUDAGuard guard(scores.device());
  const int64_t R = scores.size(0), T = scores.size(1);
  at::Tensor out = at::empty({R, T}, scores.options().dtype(at::kBool));  // every byte written by the kernel
  if (out.numel() == 0) return out;
  const DetectScratch work = detect_scratch(checked, scores);
  // A bool is one byte; the kernel writes 0 or 1 through unsigned char.
  check_launch(lalm_cuda::detect_boundaries(score_code(scores), scores.data_ptr(), lengths.data_ptr<int64_t>(),
                                            work.normed_ptr(), work.keys_ptr(),
                                            reinterpret_cast<uint8_t*>(out.data_ptr<bool>()), R, T, checked, param,
                                            min_len, max_len,
                                            at::cuda::getCurrentCUDAStream().stream()),
               "detect_boundaries_cuda");
  return out;
}

lalm_cuda::IndexDType index_code(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kChar: return lalm_cuda::IndexDType::kInt8;
    case at::kByte: return lalm_cuda::IndexDType::kUInt8;
    case at::kShort: return lalm_cuda::IndexDType::kInt16;
    case at::kInt: return lalm_cuda::IndexDType::kInt32;
    default: return lalm_cuda::IndexDType::kInt64;  // native_segments made every other type int64
  }
}

// The segment tensor of segment-ids or offsets mode: device and shape checked; its values
// cannot be without a host sync (see lalm_cuda::segment_spans for what any values give).
at::Tensor checked_segments(const at::Tensor& segments, lalm_fast::Mode mode, const at::Tensor& x, int64_t num_out) {
  check_cuda(segments, "boundaries (the segment tensor)", x);
  lalm_fast::check_segment_shape(segments, mode, x.size(0), x.size(1), num_out);
  return lalm_fast::native_segments(segments);
}

void launch_segment_spans(const at::Tensor& segments, lalm_fast::Mode mode, const at::Tensor& x,
                          const int64_t* lengths, int64_t* starts, int64_t* ends, int64_t* counts, int64_t num_out,
                          cudaStream_t stream) {
  check_launch(lalm_cuda::segment_spans(index_code(segments), segments.data_ptr(), segments.stride(0),
                                        segments.stride(1), lengths, starts, ends, counts, x.size(0), x.size(1),
                                        num_out, mode == lalm_fast::Mode::kSegmentIds, stream),
               "compress_cuda (segment spans)");
}

// One call from x to tokens: spans (detected, every k-th frame, given by a start mask,
// segment ids or offsets) then span means, as the CPU compress: (values [B, S, D],
// starts [B, S], ends [B, S], counts [B]). Detection modes launch boundary_scores,
// detect_spans and span_mean; the others two launches.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> compress_cuda(
    const at::Tensor& x_in, const at::Tensor& lengths_in, int64_t mode, double param, int64_t min_len,
    int64_t max_len, int64_t num_out, const c10::optional<at::Tensor>& boundaries_in) {
  const lalm_fast::Mode checked = lalm_fast::checked_mode(mode, param, min_len, max_len, true);
  TORCH_CHECK(x_in.is_cuda(), "x must be a CUDA tensor, got a tensor on ", x_in.device());
  TORCH_CHECK(x_in.dim() == 3, "x must be [B, T, D], got ", x_in.dim(), " dimensions");
  const auto code = float_code(x_in, "x");
  const at::Tensor x = (x_in.stride(2) == 1 || x_in.size(2) <= 1) ? x_in : x_in.contiguous();
  const at::Tensor lengths = index_tensor(lengths_in, "lengths", x, 1);
  TORCH_CHECK(num_out >= 0, "num_out must be >= 0, got ", num_out);
  lalm_fast::check_segments_given(checked, boundaries_in.has_value());
  const bool by_segments = checked == lalm_fast::Mode::kSegmentIds || checked == lalm_fast::Mode::kOffsets;
  const c10::cuda::CUDAGuard guard(x.device());
  const at::Tensor segments = by_segments ? checked_segments(*boundaries_in, checked, x, num_out) : at::Tensor();
  const int64_t B = x.size(0), T = x.size(1), D = x.size(2);
  at::Tensor values = at::empty({B, num_out, D}, x.options().memory_format(at::MemoryFormat::Contiguous));
  at::Tensor starts = at::empty({B, num_out}, lengths.options());
  at::Tensor ends = at::empty({B, num_out}, lengths.options());
  at::Tensor counts = at::zeros({B}, lengths.options());
  if (num_out == 0 || B == 0) return {values, starts, ends, counts};
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream().stream();
  int64_t* sp = starts.data_ptr<int64_t>();
  int64_t* ep = ends.data_ptr<int64_t>();
  int64_t* cp = counts.data_ptr<int64_t>();
  const int64_t* lp = lengths.data_ptr<int64_t>();
  if (checked == lalm_fast::Mode::kUniform || checked == lalm_fast::Mode::kDownsample) {
    const int64_t k = lalm_fast::checked_window(param, T);
    check_launch(lalm_cuda::window_spans(lp, sp, ep, cp, B, T, num_out, k, checked == lalm_fast::Mode::kDownsample,
                                         stream),
                 "compress_cuda (window spans)");
  } else if (by_segments) {
    launch_segment_spans(segments, checked, x, lp, sp, ep, cp, num_out, stream);
  } else if (checked == lalm_fast::Mode::kGiven) {
    const at::Tensor& given = *boundaries_in;
    check_cuda(given, "boundaries", x);
    TORCH_CHECK(given.scalar_type() == at::kBool && given.dim() == 2 && given.size(0) == B && given.size(1) == T,
                "boundaries must be a bool [B, T] CUDA tensor");
    const at::Tensor mask = given.contiguous();
    check_launch(lalm_cuda::given_spans(mask.data_ptr<bool>(), lp, sp, ep, cp, B, T, num_out, stream),
                 "compress_cuda (given spans)");
  } else {
    const auto score_dtype = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
    at::Tensor scores = at::empty({B, T}, x.options().dtype(score_dtype).memory_format(at::MemoryFormat::Contiguous));
    check_launch(lalm_cuda::boundary_scores(code, x.data_ptr(), lp, scores.data_ptr(), B, T, D, x.stride(0),
                                            x.stride(1), stream),
                 "compress_cuda (boundary scores)");
    const DetectScratch work = detect_scratch(checked, scores);
    at::Tensor mask = at::empty({B, T}, x.options().dtype(at::kByte));
    check_launch(lalm_cuda::detect_spans(score_code(scores), scores.data_ptr(), lp, work.normed_ptr(), work.keys_ptr(),
                                         mask.data_ptr<uint8_t>(), sp, ep, cp, B, T, num_out, checked, param, min_len,
                                         max_len, stream),
                 "compress_cuda (detected spans)");
  }
  if (values.numel() != 0) {
    check_launch(lalm_cuda::span_mean(code, x.data_ptr(), sp, ep, values.data_ptr(), B, T, num_out, D, x.stride(0),
                                      x.stride(1), stream),
                 "compress_cuda (span means)");
  }
  return {values, starts, ends, counts};
}

}  // namespace

namespace lalm_fast {
namespace cuda {

void bind(pybind11::module_ m) {
  m.def("span_mean", &span_mean_cuda,
        "Span means [R, S, D] of x [R, T, D] over [starts, ends) (CUDA fallback; 0 for empty spans)",
        pybind11::arg("x"), pybind11::arg("starts"), pybind11::arg("ends"));
  m.def("span_mean_backward", &span_mean_backward_cuda,
        "Gradient [R, T, D] of span_mean w.r.t. x (CUDA fallback)", pybind11::arg("grad"), pybind11::arg("starts"),
        pybind11::arg("ends"), pybind11::arg("num_frames"));
  m.def("boundary_scores", &boundary_scores_cuda,
        "1 - cos(x[t-1], x[t]) for 1 <= t < lengths, else 0; [R, T] float32 (CUDA fallback)", pybind11::arg("x"),
        pybind11::arg("lengths"));
  m.def("detect_boundaries", &detect_boundaries_cuda,
        "Segment start mask [R, T] bool from raw scores [R, T] (CUDA fallback; csrc/detection.h, one thread per row)",
        pybind11::arg("scores"), pybind11::arg("lengths"), pybind11::arg("mode"), pybind11::arg("param"),
        pybind11::arg("min_len"), pybind11::arg("max_len"));
  m.def("compress", &compress_cuda,
        "x to tokens in one call (segmentation, uniform, downsample, given, segment ids, offsets; CUDA fallback)",
        pybind11::arg("x"),
        pybind11::arg("lengths"), pybind11::arg("mode"), pybind11::arg("param"), pybind11::arg("min_len"),
        pybind11::arg("max_len"), pybind11::arg("num_out"), pybind11::arg("boundaries") = pybind11::none());
}

}  // namespace cuda
}  // namespace lalm_fast
