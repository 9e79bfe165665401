// Argument checks shared by the torch bindings of both trees (csrc/cpu, csrc/cuda/ops.cpp).
#pragma once

#include <torch/extension.h>

#include "modes.h"

namespace lalm_fast {

// The mode number from Python as a Mode, after checking it and its parameters. Detection
// modes only, unless allow_fixed (compress also takes uniform, downsample and given).
inline Mode checked_mode(int64_t mode, double param, int64_t min_len, int64_t max_len, bool allow_fixed) {
  const bool known = mode >= static_cast<int64_t>(Mode::kPeak) && mode <= static_cast<int64_t>(Mode::kGiven);
  TORCH_CHECK(known && (allow_fixed || detects(static_cast<Mode>(mode))),
              "mode must be 0 (peak), 1 (threshold), 2 (rate)",
              allow_fixed ? ", 3 (uniform), 4 (downsample) or 5 (given boundaries)" : "", ", got ", mode);
  const Mode checked = static_cast<Mode>(mode);
  TORCH_CHECK(!(checked == Mode::kRate || checked == Mode::kUniform || checked == Mode::kDownsample) || param >= 1.0,
              "rate / k must be >= 1, got ", param);
  TORCH_CHECK(min_len >= 1, "min_len must be >= 1");
  TORCH_CHECK(max_len >= 0, "max_len must be >= 0 (0: none)");
  return checked;
}

// The window of uniform / downsample compress: param must be a whole k >= 1 (checked by
// checked_mode); any k >= T gives one window per sample, and capping it there keeps
// (L + k - 1) and s * k in range.
inline int64_t checked_window(double param, int64_t frames) {
  TORCH_CHECK(param == std::floor(param), "k must be an integer, got ", param);
  const int64_t cap = std::max<int64_t>(frames, 1);
  return param >= static_cast<double>(cap) ? cap : static_cast<int64_t>(param);
}

}  // namespace lalm_fast
