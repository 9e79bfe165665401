// How a compression kernel finds its segments. Same numbering as lalm_fast/ops/modes.py
// (a test compares the two).
#pragma once

#include <cstdint>

namespace lalm_fast {

enum class Mode : int64_t {
  kPeak = 0,        // boundary-score peaks with a prominence threshold (param = prominence)
  kThreshold = 1,   // boundary score above a fixed threshold (param = threshold)
  kRate = 2,        // exactly ceil(L / rate) segments at the highest scores (param = rate)
  kUniform = 3,     // windows of k frames (param = k)
  kDownsample = 4,  // the first frame of each window of k frames (param = k)
  kGiven = 5,       // the segments a caller's start mask opens
  kSegmentIds = 6,  // the segments of sorted per-frame ids (the segment tensor: ids [B, T])
  kOffsets = 7,     // CSR offsets (the segment tensor: offsets [B, S+1])
};

// Whether compress reads the caller's segment tensor (its `boundaries` argument).
inline bool takes_segments(Mode mode) {
  return mode == Mode::kGiven || mode == Mode::kSegmentIds || mode == Mode::kOffsets;
}

inline bool detects(Mode mode) { return mode == Mode::kPeak || mode == Mode::kThreshold || mode == Mode::kRate; }

}  // namespace lalm_fast
