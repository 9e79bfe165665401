// Boundary detection of one sample, shared by detect_boundaries.cpp and compress.cpp.
//
// Detection is a 1-D problem per sample, so it is a plain sequential loop (the callers run
// samples in parallel) that reproduces lalm_fast/ops/_detect.py decision for decision: the
// same float operations in the same order, so the masks are identical, which the tests check.
#pragma once

#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "../modes.h"

namespace lalm_fast {
namespace cpu {

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

template <typename acc_t>
struct Detector {
  Mode mode;
  double param;  // prominence, threshold or rate
  int64_t min_len;
  int64_t max_len;  // 0: none

  static constexpr acc_t kInf = std::numeric_limits<acc_t>::infinity();

  // Windowed-maximum suppression (see _detect.suppress_close): edges first, then a candidate
  // must beat every candidate within min_len - 1 frames on its left and tie-or-beat those on
  // its right, compared against the ranking as it was before any suppression.
  void suppress(const acc_t* rank_by, std::vector<char>& cand, int64_t length) const {
    if (min_len <= 1) return;
    std::vector<acc_t> ranked(length, -kInf);
    for (int64_t t = 0; t < length; ++t) {
      cand[t] = cand[t] && t >= min_len && length - t >= min_len;
      if (cand[t]) ranked[t] = rank_by[t];
    }
    for (int64_t t = 0; t < length; ++t) {
      if (!cand[t]) continue;
      for (int64_t gap = 1; gap < min_len && cand[t]; ++gap) {
        const acc_t left = t - gap >= 0 ? ranked[t - gap] : -kInf;
        const acc_t right = t + gap < length ? ranked[t + gap] : -kInf;
        cand[t] = ranked[t] > left && ranked[t] >= right;
      }
    }
  }

  // Per-sample min-max normalisation over frames 1..L-1, as _detect.normalize_scores: a NaN
  // score is left out of the range and normalises to 0 (the lowest score).
  void normalize(const acc_t* raw, std::vector<acc_t>& out, int64_t length) const {
    acc_t low = kInf, high = -kInf;
    for (int64_t t = 1; t < length; ++t) {
      if (std::isnan(raw[t])) continue;
      low = std::min(low, raw[t]);
      high = std::max(high, raw[t]);
    }
    const acc_t span = high - low;
    for (int64_t t = 0; t < length; ++t) {
      out[t] = (t >= 1 && span > 0 && !std::isnan(raw[t])) ? (raw[t] - low) / span : acc_t(0);
    }
  }

  // scipy.signal.find_peaks(prominence=...) on normed[1:L], shifted back to frame indices.
  void prominent_peaks(const std::vector<acc_t>& normed, std::vector<char>& cand, int64_t length) const {
    const int64_t first = 1, last = length - 1;  // scored frames: [first, last]
    for (int64_t i = first + 1; i < last;) {
      if (!(normed[i - 1] < normed[i])) {
        ++i;
        continue;
      }
      int64_t ahead = i + 1;
      while (ahead < last && normed[ahead] == normed[i]) ++ahead;
      if (normed[ahead] < normed[i]) {
        const int64_t peak = (i + ahead - 1) / 2;
        const acc_t height = normed[peak];
        acc_t left_min = height, right_min = height;
        for (int64_t j = peak; j >= first && normed[j] <= height; --j) left_min = std::min(left_min, normed[j]);
        for (int64_t j = peak; j <= last && normed[j] <= height; ++j) right_min = std::min(right_min, normed[j]);
        cand[peak] = (height - std::max(left_min, right_min)) >= static_cast<acc_t>(param);
        i = ahead;
      } else {
        ++i;
      }
    }
  }

  // Exactly ceil(L / rate) - 1 starts besides frame 0: preferred (suppression survivors)
  // first, then by score, then by frame. A NaN score ranks as -inf, below every other score.
  void rate_starts(const acc_t* raw, std::vector<char>& start, int64_t length) const {
    const int64_t wanted = static_cast<int64_t>(std::ceil(static_cast<double>(length) / param)) - 1;
    if (wanted <= 0 || length < 2) return;
    std::vector<acc_t> score(raw, raw + length);
    for (acc_t& v : score) v = std::isnan(v) ? -kInf : v;
    std::vector<char> preferred(length, 0);
    for (int64_t t = 1; t < length; ++t) preferred[t] = 1;
    suppress(score.data(), preferred, length);
    std::vector<int64_t> order(length - 1);
    std::iota(order.begin(), order.end(), int64_t{1});
    auto before = [&](int64_t a, int64_t b) {
      if (preferred[a] != preferred[b]) return preferred[a] > preferred[b];
      if (score[a] != score[b]) return score[a] > score[b];
      return a < b;
    };
    // Only the set of the first `wanted` matters, not their order: a selection is O(L).
    const int64_t take = std::min<int64_t>(wanted, length - 1);
    std::nth_element(order.begin(), order.begin() + (take - 1), order.end(), before);
    for (int64_t i = 0; i < take; ++i) start[order[i]] = 1;
  }

  // Start mask of one sample (frame 0 included) from its raw scores.
  void run(const acc_t* raw, int64_t length, std::vector<char>& start) const {
    std::fill(start.begin(), start.begin() + length, 0);
    if (length == 0) return;
    if (mode == Mode::kRate) {
      rate_starts(raw, start, length);
    } else {
      std::vector<acc_t> ranking(length);
      if (mode == Mode::kThreshold) {
        for (int64_t t = 0; t < length; ++t) {
          ranking[t] = raw[t];
          start[t] = t >= 1 && raw[t] > static_cast<acc_t>(param);
        }
      } else {
        normalize(raw, ranking, length);
        prominent_peaks(ranking, start, length);
      }
      suppress(ranking.data(), start, length);
    }
    start[0] = 1;
    if (max_len > 0) {
      int64_t last = 0;
      for (int64_t t = 0; t < length; ++t) {
        if (start[t]) {
          last = t;
        } else if ((t - last) % max_len == 0) {
          start[t] = 1;  // the natural start stays the reference: splits repeat every max_len
        }
      }
    }
  }
};

}  // namespace cpu
}  // namespace lalm_fast
