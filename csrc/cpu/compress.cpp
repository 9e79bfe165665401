// One call from x to tokens on CPU: spans (detected, every k-th frame, given by a start mask,
// segment ids or offsets), then means.
//
// Detection works on blocks of samples small enough to stay in the last-level cache:
// scores (one read of x), detection, then pooling (a second read, served from cache), so
// segment_compress costs little more than one pass over x from memory.
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "../checks.h"
#include "../detection.h"
#include "ops.h"
#include "row_math.h"

namespace lalm_fast {
namespace cpu {

namespace {

template <typename scalar_t>
void compress_impl(const at::Tensor& x, const at::Tensor& lengths, const detection::Rules& rules,
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
      std::vector<uint8_t> mask(frames);
      std::vector<acc_t> normed(frames);
      std::vector<detection::key_of<acc_t>> keys(frames);
      const detection::Scratch<acc_t> work{normed.data(), keys.data()};
      for (int64_t b = begin; b < end; ++b) {
        const int64_t length = detection::clamp_length(lp[b], frames);
        cp[b] = detection::detect_spans_row(rp + (b - b0) * frames, length, rules, work, mask.data(), num_out,
                                            sp + b * num_out, ep + b * num_out);
      }
    });
    at::Tensor v_block = values.slice(0, b0, b1);
    span_mean_into(x_block, st_block, en_block, v_block);
  }
}

// Windows of k frames (or their first frame): plain arithmetic, no scores needed.
void every_kth_spans(const at::Tensor& lengths, int64_t frames, int64_t k, bool single_frame, at::Tensor& starts,
                     at::Tensor& ends, at::Tensor& counts) {
  const int64_t num_out = starts.size(1);
  const int64_t* lp = lengths.data_ptr<int64_t>();
  int64_t *sp = starts.data_ptr<int64_t>(), *ep = ends.data_ptr<int64_t>(), *cp = counts.data_ptr<int64_t>();
  for (int64_t b = 0; b < lengths.size(0); ++b) {
    const int64_t length = detection::clamp_length(lp[b], frames);
    cp[b] = detection::window_count(length, k, num_out);
    for (int64_t s = 0; s < num_out; ++s) {
      detection::window_span(length, k, single_frame, s, sp + b * num_out + s, ep + b * num_out + s);
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
  for (int64_t b = 0; b < lengths.size(0); ++b) {
    const int64_t length = detection::clamp_length(lp[b], frames);
    cp[b] = detection::write_spans(detection::GivenStarts{mp + b * frames}, length, num_out, sp + b * num_out,
                                   ep + b * num_out);
  }
}

// Rows of a segment tensor with the integer type index_t.
template <typename index_t>
detection::SegmentRow<index_t> segment_row(const at::Tensor& segments, int64_t b) {
  return {segments.data_ptr<index_t>(), b * segments.stride(0), segments.stride(1)};
}

// The value checks the public op makes on CPU tensors (ops._check_segment_ids and
// _check_offsets), with the same errors, so a direct call or a compiled graph, where the
// op skips them, gets them too: ids >= 0 and non-decreasing within each sample, offsets
// >= 0 and non-decreasing.
template <typename index_t>
void check_segment_values(const at::Tensor& segments, bool from_ids, const int64_t* lengths, int64_t frames) {
  for (int64_t b = 0; b < segments.size(0); ++b) {
    const int64_t checked = from_ids ? detection::clamp_length(lengths[b], frames) : segments.size(1);
    TORCH_CHECK_VALUE(detection::sorted_from_zero(segment_row<index_t>(segments, b), checked),
                      from_ids ? "segment_ids must be >= 0 and non-decreasing along time within each sample"
                               : "offsets must be >= 0 and non-decreasing along each row");
  }
}

// Spans of segment ids [B, T] or CSR offsets [B, num_out + 1], token by token, as the
// CUDA fallback computes them (one thread per token there).
template <typename index_t>
void segment_spans_impl(const at::Tensor& segments, bool from_ids, const int64_t* lengths, int64_t frames,
                        int64_t num_out, int64_t* starts, int64_t* ends, int64_t* counts) {
  for (int64_t b = 0; b < segments.size(0); ++b) {
    const detection::SegmentRow<index_t> row = segment_row<index_t>(segments, b);
    const int64_t length = detection::clamp_length(lengths[b], frames);
    int64_t* row_starts = starts + b * num_out;
    int64_t* row_ends = ends + b * num_out;
    for (int64_t s = 0; s < num_out; ++s) {
      if (from_ids) {
        detection::id_span(row, length, frames, num_out, s, row_starts + s, row_ends + s);
      } else {
        detection::offset_span(row, length, s, row_starts + s, row_ends + s);
      }
    }
    counts[b] = from_ids ? detection::id_count(row, length, num_out) : num_out;
  }
}

// The segment tensor of segment-ids or offsets mode, checked: shape, then values.
at::Tensor checked_segments(const at::Tensor& segments_in, Mode mode, const at::Tensor& lengths, int64_t frames,
                            int64_t num_out) {
  TORCH_CHECK(segments_in.device().is_cpu(), "boundaries (the segment tensor) must be a CPU tensor, got one on ",
              segments_in.device());
  check_segment_shape(segments_in, mode, lengths.size(0), frames, num_out);
  const at::Tensor segments = native_segments(segments_in);
  AT_DISPATCH_INTEGRAL_TYPES(segments.scalar_type(), "check_segments_cpu", [&] {
    check_segment_values<scalar_t>(segments, mode == Mode::kSegmentIds, lengths.data_ptr<int64_t>(), frames);
  });
  return segments;
}

// Segments from sorted per-frame ids or CSR offsets (segment_pool(segment_ids=...) /
// (offsets=...)), a tensor from checked_segments.
void segment_spans(const at::Tensor& segments, Mode mode, const at::Tensor& lengths, int64_t frames,
                   at::Tensor& starts, at::Tensor& ends, at::Tensor& counts) {
  AT_DISPATCH_INTEGRAL_TYPES(segments.scalar_type(), "segment_spans_cpu", [&] {
    segment_spans_impl<scalar_t>(segments, mode == Mode::kSegmentIds, lengths.data_ptr<int64_t>(), frames,
                                 starts.size(1), starts.data_ptr<int64_t>(), ends.data_ptr<int64_t>(),
                                 counts.data_ptr<int64_t>());
  });
}

}  // namespace

CompressResult compress(const at::Tensor& x, const at::Tensor& lengths, int64_t mode, double param,
                        int64_t min_len, int64_t max_len, int64_t num_out, const c10::optional<at::Tensor>& boundaries) {
  const Mode checked = checked_mode(mode, param, min_len, max_len, true);
  TORCH_CHECK(x.device().is_cpu() && x.dim() == 3, "x must be a [B, T, D] CPU tensor");
  TORCH_CHECK(x.numel() == 0 || x.size(2) <= 1 || x.stride(2) == 1, "x must have a contiguous last dimension");
  TORCH_CHECK(lengths.device().is_cpu() && lengths.dim() == 1 && lengths.size(0) == x.size(0) &&
                  lengths.scalar_type() == at::kLong,
              "lengths must be an int64 [B] CPU tensor, got ", lengths.scalar_type(), " ", lengths.sizes(), " on ",
              lengths.device());
  TORCH_CHECK(num_out >= 0, "num_out must be >= 0");
  check_segments_given(checked, boundaries.has_value());
  const at::Tensor lens = lengths.contiguous();
  const bool by_segments = checked == Mode::kSegmentIds || checked == Mode::kOffsets;
  const at::Tensor segments =
      by_segments ? checked_segments(*boundaries, checked, lens, x.size(1), num_out) : at::Tensor();
  at::Tensor values = at::empty({x.size(0), num_out, x.size(2)}, x.options());
  if (values.numel() != 0) advise_huge_pages(values);
  at::Tensor starts = at::empty({x.size(0), num_out}, lens.options());
  at::Tensor ends = at::empty({x.size(0), num_out}, lens.options());
  at::Tensor counts = at::zeros({x.size(0)}, lens.options());
  if (num_out == 0 || x.size(0) == 0) return {values, starts, ends, counts};
  if (checked == Mode::kUniform || checked == Mode::kDownsample) {
    const int64_t k = checked_window(param, x.size(1));
    every_kth_spans(lens, x.size(1), k, checked == Mode::kDownsample, starts, ends, counts);
    span_mean_into(x, starts, ends, values);
    return {values, starts, ends, counts};
  }
  if (by_segments) {
    segment_spans(segments, checked, lens, x.size(1), starts, ends, counts);
    span_mean_into(x, starts, ends, values);
    return {values, starts, ends, counts};
  }
  if (checked == Mode::kGiven) {
    given_spans(*boundaries, lens, x.size(1), starts, ends, counts);
    span_mean_into(x, starts, ends, values);
    return {values, starts, ends, counts};
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "segment_compress_cpu", [&] {
    compress_impl<scalar_t>(x, lens, detection::Rules{checked, param, min_len, max_len}, values, starts, ends, counts);
  });
  return {values, starts, ends, counts};
}

}  // namespace cpu
}  // namespace lalm_fast
