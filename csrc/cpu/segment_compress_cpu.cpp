// Boundary detection and fused segment compression on CPU.
//
// Detection is a 1-D problem per sample, so here it is a plain sequential loop per sample
// (parallel over samples) that reproduces lalm_fast/ops/_detect.py decision for decision: the
// same float operations in the same order, so the masks are identical, which the tests check.
//
// The fused op works on blocks of samples small enough to stay in the last-level cache:
// scores (one read of x), detection, then pooling (a second read, served from cache), so
// segment_compress costs little more than one pass over x from memory.
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "ops_cpu.h"
#include "row_math.h"

namespace lalm_fast {
namespace cpu {

namespace {

enum Mode : int64_t { kPeak = 0, kThreshold = 1, kRate = 2, kUniform = 3, kDownsample = 4, kGiven = 5 };

template <typename acc_t>
struct Detector {
  int64_t mode;
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

  // Per-sample min-max normalisation over frames 1..L-1, as _detect.normalize_scores.
  void normalize(const acc_t* raw, std::vector<acc_t>& out, int64_t length) const {
    acc_t low = kInf, high = -kInf;
    for (int64_t t = 1; t < length; ++t) {
      low = std::min(low, raw[t]);
      high = std::max(high, raw[t]);
    }
    const acc_t span = high - low;
    for (int64_t t = 0; t < length; ++t) out[t] = (t >= 1 && span > 0) ? (raw[t] - low) / span : acc_t(0);
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
  // first, then by score (NaN first, as torch.sort does), then by frame.
  void rate_starts(const acc_t* raw, std::vector<char>& start, int64_t length) const {
    const int64_t wanted = static_cast<int64_t>(std::ceil(static_cast<double>(length) / param)) - 1;
    if (wanted <= 0 || length < 2) return;
    std::vector<char> preferred(length, 0);
    for (int64_t t = 1; t < length; ++t) preferred[t] = 1;
    suppress(raw, preferred, length);
    std::vector<int64_t> order(length - 1);
    std::iota(order.begin(), order.end(), int64_t{1});
    auto before = [&](int64_t a, int64_t b) {
      if (preferred[a] != preferred[b]) return preferred[a] > preferred[b];
      const bool nan_a = std::isnan(raw[a]), nan_b = std::isnan(raw[b]);
      if (nan_a != nan_b) return nan_a;
      if (!nan_a && raw[a] != raw[b]) return raw[a] > raw[b];
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
    if (mode == kRate) {
      rate_starts(raw, start, length);
    } else {
      std::vector<acc_t> ranking(length);
      if (mode == kThreshold) {
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

void check_mode_args(int64_t mode, double param, int64_t min_len, int64_t max_len, bool allow_fixed) {
  const bool detected = mode == kPeak || mode == kThreshold || mode == kRate;
  const bool fixed = mode == kUniform || mode == kDownsample || mode == kGiven;
  TORCH_CHECK(detected || (allow_fixed && fixed), "mode must be 0 (peak), 1 (threshold), 2 (rate)",
              allow_fixed ? ", 3 (uniform), 4 (downsample) or 5 (given boundaries)" : "", ", got ", mode);
  TORCH_CHECK(!(mode == kRate || mode == kUniform || mode == kDownsample) || param >= 1.0,
              "rate / k must be >= 1, got ", param);
  TORCH_CHECK(min_len >= 1, "min_len must be >= 1");
  TORCH_CHECK(max_len >= 0, "max_len must be >= 0 (0: none)");
}

// Spans of one sample's segments into row r of starts/ends; returns the token count.
int64_t write_spans(const std::vector<char>& start, int64_t length, int64_t num_out, int64_t* st, int64_t* en) {
  int64_t count = 0;
  for (int64_t t = 0; t < length; ++t) {
    if (!start[t]) continue;
    if (count < num_out) st[count] = t;
    if (count >= 1 && count <= num_out) en[count - 1] = t;
    ++count;
  }
  const int64_t used = std::min(count, num_out);
  if (used > 0) en[used - 1] = length;  // the last token runs to the end (and absorbs any surplus)
  for (int64_t s = used; s < num_out; ++s) st[s] = en[s] = length;
  return used;
}

template <typename scalar_t>
void compress_impl(const at::Tensor& x, const at::Tensor& lengths, const Detector<typename AccType<scalar_t>::type>& det,
                   at::Tensor& values, at::Tensor& starts, at::Tensor& ends, at::Tensor& counts) {
  using acc_t = typename AccType<scalar_t>::type;
  const int64_t batch = x.size(0), frames = x.size(1), dim = x.size(2), num_out = starts.size(1);
  // Samples per block: keep a block's frames (up to 16 MiB, half a typical server L3) in the
  // last-level cache between the scoring pass and the pooling pass.
  const int64_t sample_bytes = std::max<int64_t>(1, frames * dim * static_cast<int64_t>(sizeof(scalar_t)));
  const int64_t block = std::max<int64_t>(1, (int64_t{16} << 20) / sample_bytes);
  const int64_t* lp = lengths.data_ptr<int64_t>();
  int64_t* sp = starts.data_ptr<int64_t>();
  int64_t* ep = ends.data_ptr<int64_t>();
  int64_t* cp = counts.data_ptr<int64_t>();
  for (int64_t b0 = 0; b0 < batch; b0 += block) {
    const int64_t b1 = std::min(batch, b0 + block);
    at::Tensor x_block = x.slice(0, b0, b1);
    at::Tensor l_block = lengths.slice(0, b0, b1), st_block = starts.slice(0, b0, b1), en_block = ends.slice(0, b0, b1);
    at::Tensor raw = boundary_scores(x_block, l_block);
    const acc_t* rp = raw.data_ptr<acc_t>();
    at::parallel_for(b0, b1, 1, [&](int64_t begin, int64_t end) {
      std::vector<char> start(frames);
      for (int64_t b = begin; b < end; ++b) {
        const int64_t length = std::min(std::max<int64_t>(lp[b], 0), frames);
        det.run(rp + (b - b0) * frames, length, start);
        cp[b] = write_spans(start, length, num_out, sp + b * num_out, ep + b * num_out);
      }
    });
    at::Tensor v_block = values.slice(0, b0, b1);
    span_mean_into(x_block, st_block, en_block, v_block);
  }
}

}  // namespace

at::Tensor detect_boundaries(const at::Tensor& scores, const at::Tensor& lengths, int64_t mode, double param,
                             int64_t min_len, int64_t max_len) {
  check_mode_args(mode, param, min_len, max_len, false);
  TORCH_CHECK(scores.device().is_cpu() && scores.dim() == 2, "scores must be a [R, T] CPU tensor");
  TORCH_CHECK(scores.scalar_type() == at::kFloat || scores.scalar_type() == at::kDouble, "scores must be fp32 or fp64");
  TORCH_CHECK(lengths.dim() == 1 && lengths.size(0) == scores.size(0) && lengths.scalar_type() == at::kLong,
              "lengths must be int64 [R]");
  const at::Tensor sc = scores.contiguous(), lens = lengths.contiguous();
  const int64_t rows = sc.size(0), frames = sc.size(1);
  at::Tensor out = at::zeros({rows, frames}, sc.options().dtype(at::kBool));
  AT_DISPATCH_FLOATING_TYPES(sc.scalar_type(), "detect_boundaries_cpu", [&] {
    const Detector<scalar_t> det{mode, param, min_len, max_len};
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

// Windows of k frames (or their first frame): plain arithmetic, no scores needed.
void every_kth_spans(const at::Tensor& lengths, int64_t frames, int64_t k, bool single_frame, at::Tensor& starts,
                     at::Tensor& ends, at::Tensor& counts) {
  const int64_t num_out = starts.size(1);
  const int64_t* lp = lengths.data_ptr<int64_t>();
  int64_t *sp = starts.data_ptr<int64_t>(), *ep = ends.data_ptr<int64_t>(), *cp = counts.data_ptr<int64_t>();
  for (int64_t b = 0; b < lengths.size(0); ++b) {
    const int64_t length = std::min(std::max<int64_t>(lp[b], 0), frames);
    cp[b] = std::min(num_out, (length + k - 1) / k);
    for (int64_t s = 0; s < num_out; ++s) {
      const int64_t first = std::min(s * k, length);
      sp[b * num_out + s] = first;
      ep[b * num_out + s] = std::min(first + (single_frame ? 1 : k), length);
    }
  }
}

// Segments from a caller's start mask [B, T] (frame 0 always starts one; padding ignored).
void given_spans(const at::Tensor& boundaries, const at::Tensor& lengths, int64_t frames, at::Tensor& starts,
                 at::Tensor& ends, at::Tensor& counts) {
  TORCH_CHECK(boundaries.device().is_cpu() && boundaries.scalar_type() == at::kBool && boundaries.dim() == 2 &&
                  boundaries.size(0) == lengths.size(0) && boundaries.size(1) == frames,
              "boundaries must be a bool [B, T] CPU tensor");
  const at::Tensor mask = boundaries.contiguous();
  const bool* mp = mask.data_ptr<bool>();
  const int64_t* lp = lengths.data_ptr<int64_t>();
  const int64_t num_out = starts.size(1);
  int64_t *sp = starts.data_ptr<int64_t>(), *ep = ends.data_ptr<int64_t>(), *cp = counts.data_ptr<int64_t>();
  std::vector<char> start(frames);
  for (int64_t b = 0; b < lengths.size(0); ++b) {
    const int64_t length = std::min(std::max<int64_t>(lp[b], 0), frames);
    for (int64_t t = 0; t < length; ++t) start[t] = t == 0 || mp[b * frames + t];
    cp[b] = write_spans(start, length, num_out, sp + b * num_out, ep + b * num_out);
  }
}

std::vector<at::Tensor> compress(const at::Tensor& x, const at::Tensor& lengths, int64_t mode, double param,
                                 int64_t min_len, int64_t max_len, int64_t num_out,
                                 const c10::optional<at::Tensor>& boundaries) {
  check_mode_args(mode, param, min_len, max_len, true);
  TORCH_CHECK(x.device().is_cpu() && x.dim() == 3, "x must be a [B, T, D] CPU tensor");
  TORCH_CHECK(x.size(2) <= 1 || x.stride(2) == 1, "x must have a contiguous last dimension");
  TORCH_CHECK(lengths.dim() == 1 && lengths.size(0) == x.size(0) && lengths.scalar_type() == at::kLong,
              "lengths must be int64 [B]");
  TORCH_CHECK(num_out >= 0, "num_out must be >= 0");
  TORCH_CHECK((mode == kGiven) == boundaries.has_value(), "boundaries are needed by mode 5 and only by it");
  const at::Tensor lens = lengths.contiguous();
  at::Tensor values = at::empty({x.size(0), num_out, x.size(2)}, x.options());
  if (values.numel() != 0) advise_huge_pages(values);
  at::Tensor starts = at::empty({x.size(0), num_out}, lens.options());
  at::Tensor ends = at::empty({x.size(0), num_out}, lens.options());
  at::Tensor counts = at::zeros({x.size(0)}, lens.options());
  if (num_out == 0 || x.size(0) == 0) return {values, starts, ends, counts};
  if (mode == kUniform || mode == kDownsample) {
    TORCH_CHECK(param == std::floor(param), "k must be an integer, got ", param);
    every_kth_spans(lens, x.size(1), static_cast<int64_t>(param), mode == kDownsample, starts, ends, counts);
    span_mean_into(x, starts, ends, values);
    return {values, starts, ends, counts};
  }
  if (mode == kGiven) {
    given_spans(*boundaries, lens, x.size(1), starts, ends, counts);
    span_mean_into(x, starts, ends, values);
    return {values, starts, ends, counts};
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "segment_compress_cpu", [&] {
    using acc_t = typename AccType<scalar_t>::type;
    const Detector<acc_t> det{mode, param, min_len, max_len};
    compress_impl<scalar_t>(x, lens, det, values, starts, ends, counts);
  });
  return {values, starts, ends, counts};
}

}  // namespace cpu
}  // namespace lalm_fast
