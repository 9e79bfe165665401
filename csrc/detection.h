// Boundary detection and span building of one row: torch-free, shared by the C++ CPU kernels
// (csrc/cpu) and the CUDA fallback (csrc/cuda).
//
// Every function here is `__host__ __device__` under nvcc and a plain inline function under
// the host compiler, so the CPU extension runs exactly the code the CUDA kernels run, and the
// CPU tests check it. Detection reproduces lalm_fast/ops/_detect.py decision for decision:
// the same float operations in the same order, so the masks are identical.
//
// A row is sequential work (one CPU task or one GPU thread per row). Nothing allocates: the
// caller passes rows of scratch (`Scratch`: normalised scores or score keys, T entries) and
// the row of the mask (`mask`, one byte per frame; 0 or 1 when a function returns, bit flags
// inside). No local arrays either, so the GPU kernels need no stack frame.
#pragma once

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "modes.h"

#if defined(__CUDACC__)
#define LALM_HD __host__ __device__ __forceinline__
#else
#define LALM_HD inline
#endif

namespace lalm_fast {
namespace detection {

// Mask byte bits while a row is being decided; a finished row holds 0 or 1.
enum : uint8_t { kCandidate = 1, kKept = 2, kChosen = 4 };

// How a row is cut: a detection mode (peak, threshold or rate) and its parameter
// (prominence, threshold or rate), min_len >= 1, max_len >= 0 (0: none).
struct Rules {
  Mode mode;
  double param;
  int64_t min_len;
  int64_t max_len;
};

// Whether the launchers may run these rules (the torch bindings check them first, with
// messages; a launcher given bad ones returns an error instead of running).
LALM_HD bool valid_rules(Mode mode, double param, int64_t min_len, int64_t max_len) {
  const bool known = mode == Mode::kPeak || mode == Mode::kThreshold || mode == Mode::kRate;
  return known && (mode != Mode::kRate || param >= 1.0) && min_len >= 1 && max_len >= 0;
}

template <typename acc_t>
LALM_HD acc_t infinity() {
  return static_cast<acc_t>(INFINITY);
}

template <typename acc_t>
LALM_HD bool is_nan(acc_t v) {
  return v != v;
}

// std::min / std::max (which device code cannot call), argument order and NaN behaviour included.
template <typename acc_t>
LALM_HD acc_t min_of(acc_t a, acc_t b) {
  return (b < a) ? b : a;
}
template <typename acc_t>
LALM_HD acc_t max_of(acc_t a, acc_t b) {
  return (a < b) ? b : a;
}

// A row's length as the kernels use it: lengths outside [0, T] are clamped (the public ops
// reject them; this keeps a direct kernel call inside the row).
LALM_HD int64_t clamp_length(int64_t length, int64_t frames) {
  return length < 0 ? 0 : (length > frames ? frames : length);
}

// Windowed-maximum suppression (see _detect.suppress_close). On entry `mask` marks the
// candidates (kCandidate); on return the survivors (1). Edges first (a candidate needs
// min_len frames on both sides), then a candidate must beat every candidate within
// min_len - 1 frames on its left and tie-or-beat those on its right, compared against the
// candidates as they were before any suppression. `rank_by` ranks them (scores, or their
// ordered keys), `lowest` ranks a frame that is no candidate.
template <typename rank_t>
LALM_HD void suppress(const rank_t* rank_by, rank_t lowest, uint8_t* mask, int64_t length, int64_t min_len) {
  if (min_len <= 1) return;
  for (int64_t t = 0; t < length; ++t) {
    if (mask[t] && !(t >= min_len && length - t >= min_len)) mask[t] = 0;
  }
  for (int64_t t = 0; t < length; ++t) {
    if (!(mask[t] & kCandidate)) continue;
    const rank_t mine = rank_by[t];
    bool keep = true;
    for (int64_t gap = 1; gap < min_len && keep; ++gap) {
      const rank_t left = (t - gap >= 0 && (mask[t - gap] & kCandidate)) ? rank_by[t - gap] : lowest;
      const rank_t right = (t + gap < length && (mask[t + gap] & kCandidate)) ? rank_by[t + gap] : lowest;
      keep = mine > left && mine >= right;
    }
    if (keep) mask[t] |= kKept;
  }
  for (int64_t t = 0; t < length; ++t) mask[t] = (mask[t] & kKept) ? 1 : 0;
}

// Per-row min-max normalisation over frames 1..L-1 into `out`, as _detect.normalize_scores:
// a NaN score is left out of the range and normalises to 0 (the lowest score).
template <typename acc_t>
LALM_HD void normalize(const acc_t* raw, acc_t* out, int64_t length) {
  acc_t low = infinity<acc_t>(), high = -infinity<acc_t>();
  for (int64_t t = 1; t < length; ++t) {
    if (is_nan(raw[t])) continue;
    low = min_of(low, raw[t]);
    high = max_of(high, raw[t]);
  }
  const acc_t span = high - low;
  for (int64_t t = 0; t < length; ++t) {
    out[t] = (t >= 1 && span > 0 && !is_nan(raw[t])) ? (raw[t] - low) / span : acc_t(0);
  }
}

// scipy.signal.find_peaks(prominence=...) on normed[1:L], shifted back to frame indices:
// marks the prominent peaks in `mask` (1), leaves the other frames as they are.
template <typename acc_t>
LALM_HD void prominent_peaks(const acc_t* normed, uint8_t* mask, int64_t length, double prominence) {
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
      for (int64_t j = peak; j >= first && normed[j] <= height; --j) left_min = min_of(left_min, normed[j]);
      for (int64_t j = peak; j <= last && normed[j] <= height; ++j) right_min = min_of(right_min, normed[j]);
      mask[peak] = (height - max_of(left_min, right_min)) >= static_cast<acc_t>(prominence) ? 1 : 0;
      i = ahead;
    } else {
      ++i;
    }
  }
}

// The bits of a score as an unsigned integer of the same order: a < b exactly when
// key(a) < key(b), for scores without NaN (-0 and +0, which tie, get the same key). Every
// key is above 0, which marks a frame out of a selection.
LALM_HD uint32_t ordered_key(float v) {
  if (v == 0) v = 0;
  uint32_t u;
  memcpy(&u, &v, sizeof(u));
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
LALM_HD uint64_t ordered_key(double v) {
  if (v == 0) v = 0;
  uint64_t u;
  memcpy(&u, &v, sizeof(u));
  return (u & 0x8000000000000000ull) ? ~u : (u | 0x8000000000000000ull);
}
template <typename acc_t>
using key_of = decltype(ordered_key(acc_t(0)));

// Marks kChosen on the `wanted` frames of 1..L-1 with the highest keys (0: not eligible),
// ties by lower frame: a bitwise search for the wanted-th highest key (one counting pass per
// key bit, no sort), then one pass that takes every frame above it and the first frames
// equal to it. Needs at least `wanted` eligible frames.
template <typename key_t>
LALM_HD void choose_highest(const key_t* keys, uint8_t* mask, int64_t length, int64_t wanted) {
  key_t kth = 0;  // the largest key with at least `wanted` keys at or above it
  for (int bit = 8 * static_cast<int>(sizeof(key_t)) - 1; bit >= 0; --bit) {
    const key_t trial = kth | (key_t(1) << bit);
    int64_t at_or_above = 0;
    for (int64_t t = 1; t < length; ++t) at_or_above += keys[t] >= trial ? 1 : 0;
    if (at_or_above >= wanted) kth = trial;
  }
  int64_t above = 0;
  for (int64_t t = 1; t < length; ++t) above += keys[t] > kth ? 1 : 0;
  int64_t ties = wanted - above;  // frames with the key kth to take, lowest frames first
  for (int64_t t = 1; t < length; ++t) {
    if (keys[t] > kth) {
      mask[t] |= kChosen;
    } else if (keys[t] == kth && ties > 0) {
      mask[t] |= kChosen;
      --ties;
    }
  }
}

// Rate mode: exactly ceil(L / rate) - 1 starts besides frame 0 (mask 1; frame 0 is left to
// the caller). Preferred frames (min_len suppression survivors) first, then by score, then
// by frame; a NaN score ranks as -inf, below every other score. Frames are ranked by the
// ordered keys of their scores (`keys`, scratch), which order and tie as the scores do.
template <typename acc_t>
LALM_HD void rate_starts(const acc_t* raw, key_of<acc_t>* keys, uint8_t* mask, int64_t length, const Rules& rules) {
  const int64_t wanted = static_cast<int64_t>(ceil(static_cast<double>(length) / rules.param)) - 1;
  if (wanted <= 0 || length < 2) return;
  const key_of<acc_t> lowest = ordered_key(-infinity<acc_t>());
  for (int64_t t = 0; t < length; ++t) {
    keys[t] = is_nan(raw[t]) ? lowest : ordered_key(raw[t]);
    mask[t] = t >= 1 ? kCandidate : 0;
  }
  suppress(keys, lowest, mask, length, rules.min_len);  // mask: 1 = preferred
  const int64_t take = wanted < length - 1 ? wanted : length - 1;
  int64_t preferred = 0;
  for (int64_t t = 1; t < length; ++t) preferred += mask[t];
  // Every preferred frame and the best of the others, or the best of the preferred ones.
  const uint8_t group = take >= preferred ? 0 : 1;
  if (group == 0) {
    for (int64_t t = 1; t < length; ++t) mask[t] |= mask[t] ? kChosen : 0;
  }
  const int64_t rest = group == 0 ? take - preferred : take;
  if (rest > 0) {
    for (int64_t t = 1; t < length; ++t) keys[t] = (mask[t] & kCandidate) == group ? keys[t] : 0;
    choose_highest(keys, mask, length, rest);
  }
  for (int64_t t = 0; t < length; ++t) mask[t] = (mask[t] & kChosen) ? 1 : 0;
}

// Scratch of one row (length entries each): normalised scores (peak mode) and score keys
// (rate mode); a mode's caller may leave the other one null.
template <typename acc_t>
struct Scratch {
  acc_t* normed;
  key_of<acc_t>* keys;
};

// Start mask (0 / 1) of one row of `frames` frames from its raw scores: frame 0 of a
// non-empty row always starts, frames from `length` on are 0.
template <typename acc_t>
LALM_HD void detect_row(const acc_t* raw, int64_t length, int64_t frames, const Rules& rules, Scratch<acc_t> work,
                        uint8_t* mask) {
  for (int64_t t = 0; t < frames; ++t) mask[t] = 0;
  if (length <= 0) return;
  if (rules.mode == Mode::kRate) {
    rate_starts(raw, work.keys, mask, length, rules);
  } else {
    const acc_t* ranking = raw;
    if (rules.mode == Mode::kThreshold) {
      const acc_t threshold = static_cast<acc_t>(rules.param);
      for (int64_t t = 1; t < length; ++t) mask[t] = raw[t] > threshold ? 1 : 0;
    } else {
      normalize(raw, work.normed, length);
      prominent_peaks(work.normed, mask, length, rules.param);
      ranking = work.normed;
    }
    suppress(ranking, -infinity<acc_t>(), mask, length, rules.min_len);
  }
  mask[0] = 1;
  if (rules.max_len > 0) {
    int64_t last = 0;
    for (int64_t t = 0; t < length; ++t) {
      if (mask[t]) {
        last = t;
      } else if ((t - last) % rules.max_len == 0) {
        mask[t] = 1;  // the natural start stays the reference: splits repeat every max_len
      }
    }
  }
}

// Starts of a start mask, and of a caller's mask (frame 0 always a start).
struct MaskStarts {
  const uint8_t* mask;
  LALM_HD bool operator()(int64_t t) const { return mask[t] != 0; }
};
struct GivenStarts {
  const bool* mask;
  LALM_HD bool operator()(int64_t t) const { return t == 0 || mask[t]; }
};

// Spans of a row's segments into its `num_out` starts / ends; returns the token count.
// Tokens past the count get the empty span (L, L); a row with more segments than num_out
// has the surplus merged into its last token, which runs to L.
template <typename IsStart>
LALM_HD int64_t write_spans(IsStart is_start, int64_t length, int64_t num_out, int64_t* starts, int64_t* ends) {
  int64_t count = 0;
  for (int64_t t = 0; t < length; ++t) {
    if (!is_start(t)) continue;
    if (count < num_out) starts[count] = t;
    if (count >= 1 && count <= num_out) ends[count - 1] = t;
    ++count;
  }
  const int64_t used = count < num_out ? count : num_out;
  if (used > 0) ends[used - 1] = length;  // the last token runs to the end (and absorbs any surplus)
  for (int64_t s = used; s < num_out; ++s) starts[s] = ends[s] = length;
  return used;
}

// Detection then spans of one row (compress's detection modes): returns the token count.
template <typename acc_t>
LALM_HD int64_t detect_spans_row(const acc_t* raw, int64_t length, const Rules& rules, Scratch<acc_t> work,
                                 uint8_t* mask, int64_t num_out, int64_t* starts, int64_t* ends) {
  detect_row(raw, length, length, rules, work, mask);
  return write_spans(MaskStarts{mask}, length, num_out, starts, ends);
}

// Window k of every k frames (uniform pooling), or its first frame only (downsampling):
// token s spans [s k, min(s k + k, L)) or [s k, min(s k + 1, L)), empty (L, L) past L.
// k is at least 1 and at most max(T, 1) (the callers cap it), so s * k stays in range.
LALM_HD void window_span(int64_t length, int64_t k, bool single_frame, int64_t s, int64_t* start, int64_t* end) {
  const int64_t first = s * k < length ? s * k : length;
  const int64_t stop = first + (single_frame ? 1 : k);
  *start = first;
  *end = stop < length ? stop : length;
}
LALM_HD int64_t window_count(int64_t length, int64_t k, int64_t num_out) {
  const int64_t count = (length + k - 1) / k;
  return count < num_out ? count : num_out;
}

// Row r of a caller's segment tensor (segment ids [R, T] or offsets [R, S+1]) of any
// integer type and element strides, read as int64: the ops take the caller's tensor as it
// is, so no copy or cast precedes the span building. The row is an element offset, not a
// pointer, so an empty tensor (data null) forms no pointer at all.
template <typename index_t>
struct SegmentRow {
  const index_t* data;
  int64_t row_offset;  // r * stride_r
  int64_t stride;      // along the row
  LALM_HD int64_t operator[](int64_t i) const { return static_cast<int64_t>(data[row_offset + i * stride]); }
};

// The id of frame t as the torch path (ops._segment_id_spans) searches it: ids capped at
// num_out (ids at or past the last token merge into it), frames from L on num_out. Frames
// past L are never read.
template <typename index_t>
LALM_HD int64_t searched_id(SegmentRow<index_t> ids, int64_t length, int64_t num_out, int64_t t) {
  if (t >= length) return num_out;
  const int64_t id = ids[t];
  return id < num_out ? id : num_out;
}

// torch.searchsorted's binary search over all `frames` frames of a row, midpoints included,
// for the first frame whose searched id is >= target (> target when `upper`). Searching
// the same frames the same way gives the torch path's spans even for unsorted ids (which
// only unchecked CUDA input can hold), and the result is always in [0, L]: only a frame
// below L can move the search past it.
template <typename index_t>
LALM_HD int64_t id_bound(SegmentRow<index_t> ids, int64_t length, int64_t frames, int64_t num_out, int64_t target,
                         bool upper) {
  int64_t lo = 0, hi = frames;
  while (lo < hi) {
    const int64_t mid = lo + ((hi - lo) >> 1);
    const int64_t id = searched_id(ids, length, num_out, mid);
    if (upper ? id <= target : id < target) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo;
}

// Token s of segment ids: the frames with id s, [lower bound, upper bound); the last token
// runs to L (ids at or past it merge there). length is in [0, frames].
template <typename index_t>
LALM_HD void id_span(SegmentRow<index_t> ids, int64_t length, int64_t frames, int64_t num_out, int64_t s,
                     int64_t* start, int64_t* end) {
  *start = id_bound(ids, length, frames, num_out, s, false);
  *end = s == num_out - 1 ? length : id_bound(ids, length, frames, num_out, s, true);
}

// Tokens of segment ids: the largest searched id below L, plus 1, within [0, num_out]
// (the largest rather than the last, as the torch path's amax). Capped ids keep the + 1
// far from the int64 limit.
template <typename index_t>
LALM_HD int64_t id_count(SegmentRow<index_t> ids, int64_t length, int64_t num_out) {
  int64_t largest = -1;
  for (int64_t t = 0; t < length; ++t) largest = max_of(largest, searched_id(ids, length, num_out, t));
  return min_of(largest + 1, num_out);
}

// Token s of CSR offsets: [o[s], o[s+1]) clamped to [0, L], the torch path's span for
// offsets that are >= 0 (which the CPU kernel checks); a negative offset unchecked on CUDA
// reads as 0 and a decreasing pair gives an inverted span, which the span means read as
// empty. Reads o[s] and o[s+1] only (the row holds num_out + 1 offsets).
template <typename index_t>
LALM_HD void offset_span(SegmentRow<index_t> offsets, int64_t length, int64_t s, int64_t* start, int64_t* end) {
  *start = clamp_length(offsets[s], length);
  *end = clamp_length(offsets[s + 1], length);
}

// Whether a row's values are what segment_pool accepts (the checks of the CPU kernel):
// ids >= 0 and non-decreasing over the first L frames; offsets >= 0 and non-decreasing.
template <typename index_t>
LALM_HD bool sorted_from_zero(SegmentRow<index_t> row, int64_t count) {
  for (int64_t i = 0; i < count; ++i) {
    if (row[i] < 0 || (i > 0 && row[i] < row[i - 1])) return false;
  }
  return true;
}

}  // namespace detection
}  // namespace lalm_fast
