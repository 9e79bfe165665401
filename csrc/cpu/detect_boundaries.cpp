// Boundary detection on CPU: a start mask from raw boundary scores, one sample per task.
// The per-row decisions are csrc/detection.h, the code the CUDA kernel runs too.
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "../checks.h"
#include "../detection.h"
#include "ops.h"

namespace lalm_fast {
namespace cpu {

at::Tensor detect_boundaries(const at::Tensor& scores, const at::Tensor& lengths, int64_t mode, double param,
                             int64_t min_len, int64_t max_len) {
  const Mode checked = checked_mode(mode, param, min_len, max_len, false);
  TORCH_CHECK(scores.device().is_cpu() && scores.dim() == 2, "scores must be a [R, T] CPU tensor");
  TORCH_CHECK(scores.scalar_type() == at::kFloat || scores.scalar_type() == at::kDouble, "scores must be fp32 or fp64");
  TORCH_CHECK(lengths.device().is_cpu() && lengths.dim() == 1 && lengths.size(0) == scores.size(0) &&
                  lengths.scalar_type() == at::kLong,
              "lengths must be an int64 [R] CPU tensor, got ", lengths.scalar_type(), " ", lengths.sizes(), " on ",
              lengths.device());
  const at::Tensor sc = scores.contiguous(), lens = lengths.contiguous();
  const int64_t rows = sc.size(0), frames = sc.size(1);
  at::Tensor out = at::empty({rows, frames}, sc.options().dtype(at::kBool));  // every byte written below
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(sc.scalar_type(), "detect_boundaries_cpu", [&] {
    const detection::Rules rules{checked, param, min_len, max_len};
    const scalar_t* rp = sc.data_ptr<scalar_t>();
    const int64_t* lp = lens.data_ptr<int64_t>();
    // A bool is one byte; the row functions write 0 or 1 through unsigned char (which may
    // alias any object).
    uint8_t* op = reinterpret_cast<uint8_t*>(out.data_ptr<bool>());
    at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> normed(frames);
      std::vector<detection::key_of<scalar_t>> keys(frames);
      const detection::Scratch<scalar_t> work{normed.data(), keys.data()};
      for (int64_t r = begin; r < end; ++r) {
        const int64_t length = detection::clamp_length(lp[r], frames);
        detection::detect_row(rp + r * frames, length, frames, rules, work, op + r * frames);
      }
    });
  });
  return out;
}

}  // namespace cpu
}  // namespace lalm_fast
