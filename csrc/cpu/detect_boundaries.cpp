// Boundary detection on CPU: a start mask from raw boundary scores, one sample per task.
#include <ATen/Parallel.h>

#include "detector.h"
#include "ops.h"

namespace lalm_fast {
namespace cpu {

at::Tensor detect_boundaries(const at::Tensor& scores, const at::Tensor& lengths, int64_t mode, double param,
                             int64_t min_len, int64_t max_len) {
  const Mode checked = checked_mode(mode, param, min_len, max_len, false);
  TORCH_CHECK(scores.device().is_cpu() && scores.dim() == 2, "scores must be a [R, T] CPU tensor");
  TORCH_CHECK(scores.scalar_type() == at::kFloat || scores.scalar_type() == at::kDouble, "scores must be fp32 or fp64");
  TORCH_CHECK(lengths.dim() == 1 && lengths.size(0) == scores.size(0) && lengths.scalar_type() == at::kLong,
              "lengths must be int64 [R]");
  const at::Tensor sc = scores.contiguous(), lens = lengths.contiguous();
  const int64_t rows = sc.size(0), frames = sc.size(1);
  at::Tensor out = at::zeros({rows, frames}, sc.options().dtype(at::kBool));
  AT_DISPATCH_FLOATING_TYPES(sc.scalar_type(), "detect_boundaries_cpu", [&] {
    const Detector<scalar_t> det{checked, param, min_len, max_len};
    const scalar_t* rp = sc.data_ptr<scalar_t>();
    const int64_t* lp = lens.data_ptr<int64_t>();
    bool* op = out.data_ptr<bool>();
    at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
      std::vector<char> start(frames);
      for (int64_t r = begin; r < end; ++r) {
        const int64_t length = std::min(std::max<int64_t>(lp[r], 0), frames);
        det.run(rp + r * frames, length, start);
        for (int64_t t = 0; t < length; ++t) op[r * frames + t] = start[t];
      }
    });
  });
  return out;
}

}  // namespace cpu
}  // namespace lalm_fast
