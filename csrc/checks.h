// Argument checks shared by the torch bindings of both trees (csrc/cpu, csrc/cuda/ops.cpp).
#pragma once

#include <torch/extension.h>

#include "modes.h"

namespace lalm_fast {

// The mode number from Python as a Mode, after checking it and its parameters. Detection
// modes only, unless allow_fixed (compress also takes uniform, downsample, given, segment
// ids and offsets).
inline Mode checked_mode(int64_t mode, double param, int64_t min_len, int64_t max_len, bool allow_fixed) {
  const bool known = mode >= static_cast<int64_t>(Mode::kPeak) && mode <= static_cast<int64_t>(Mode::kOffsets);
  TORCH_CHECK(known && (allow_fixed || detects(static_cast<Mode>(mode))),
              "mode must be 0 (peak), 1 (threshold), 2 (rate)",
              allow_fixed ? ", 3 (uniform), 4 (downsample), 5 (given boundaries), 6 (segment ids) or 7 (offsets)" : "",
              ", got ", mode);
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

// compress's segment tensor (its `boundaries` argument): present exactly in the modes
// that read one.
inline void check_segments_given(Mode mode, bool given) {
  TORCH_CHECK(takes_segments(mode) == given,
              "boundaries are needed by modes 5 (given), 6 (segment ids) and 7 (offsets) and only by them");
}

// The segment tensor of segment-ids mode (ids [B, T]) or offsets mode (offsets [B, num_out + 1]):
// an integer tensor of that shape. Its values are the caller's (see detection.h).
inline void check_segment_shape(const at::Tensor& segments, Mode mode, int64_t batch, int64_t frames,
                                int64_t num_out) {
  const bool ids = mode == Mode::kSegmentIds;
  TORCH_CHECK_TYPE(at::isIntegralType(segments.scalar_type(), /*includeBool=*/false),
                   ids ? "segment_ids" : "offsets", " must be an integer tensor, got ", segments.scalar_type());
  // size(1) - 1 == num_out, not size(1) == num_out + 1: num_out may be as large as int64 allows
  const bool fits = segments.dim() == 2 && segments.size(0) == batch &&
                    (ids ? segments.size(1) == frames : segments.size(1) - 1 == num_out);
  TORCH_CHECK_VALUE(fits,
                    ids ? "segment_ids must have shape [B, T] = [" : "offsets must have shape [B, num_out + 1], B = ",
                    batch, ids ? ", " : ", num_out = ", ids ? frames : num_out, ids ? "]" : "", ", got ",
                    segments.sizes());
}

// The segment tensor in a type the kernels read natively (every signed integer type and
// uint8); the wider unsigned types, rare in practice, as int64, the cast the torch path makes.
inline at::Tensor native_segments(const at::Tensor& segments) {
  switch (segments.scalar_type()) {
    case at::kByte: case at::kChar: case at::kShort: case at::kInt: case at::kLong: return segments;
    default: return segments.to(at::kLong);
  }
}

}  // namespace lalm_fast
