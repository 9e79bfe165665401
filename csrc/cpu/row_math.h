// Row primitives over the feature dimension D, one per storage type.
//
// Each is a plain loop the compiler vectorises. On x86-64 with GCC, `target_clones` builds an
// AVX-512, an AVX2 (+F16C, FMA) and a baseline copy and picks one at load time, so one binary
// runs everywhere and still uses the wide units where they exist. fp16/bf16 are widened to
// fp32 on load and rounded (to nearest even) on store; fp32 accumulates in fp32, fp64 in fp64.
#pragma once

#include <cstdint>
#include <cstring>

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define LALM_MULTIVERSION __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define LALM_MULTIVERSION
#endif

namespace lalm_fast {
namespace cpu {

template <typename scalar_t> struct AccType { using type = float; };
template <> struct AccType<double> { using type = double; };

// Widen / narrow one element with branch-free bit arithmetic the compiler can vectorise:
// bf16 is the top half of an fp32; fp16 uses c10's IEEE conversions.
inline float widen(c10::BFloat16 v) {
  uint32_t bits = static_cast<uint32_t>(v.x) << 16;
  float out;
  std::memcpy(&out, &bits, sizeof(out));
  return out;
}
inline float widen(c10::Half v) { return c10::detail::fp16_ieee_to_fp32_value(v.x); }
inline float widen(float v) { return v; }
inline double widen(double v) { return v; }

inline void narrow(float v, c10::BFloat16* out) {
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof(bits));
  if ((bits & 0x7fffffffu) > 0x7f800000u) {
    out->x = 0x7fc0;  // NaN stays NaN
    return;
  }
  bits += 0x7fffu + ((bits >> 16) & 1u);
  out->x = static_cast<uint16_t>(bits >> 16);
}
inline void narrow(float v, c10::Half* out) { out->x = c10::detail::fp16_ieee_from_fp32_value(v); }
inline void narrow(float v, float* out) { *out = v; }
inline void narrow(double v, double* out) { *out = v; }

// The spans [begin, end) of a span_mean call: x rows at x + r * stride_r + t * stride_t,
// spans flattened over rows (index i = r * spans + s), outputs / gradients contiguous.
template <typename scalar_t>
struct SpanJob {
  const scalar_t* x;   // forward input, or the token gradient [R, S, D] for spread_spans
  scalar_t* out;       // forward output [R, S, D], or the frame gradient [R, T, D]
  const int64_t* starts;
  const int64_t* ends;
  int64_t stride_r, stride_t, spans, frames, dim;
};

// out[i] = mean of x[r, starts[i]:ends[i]] (0 if empty), for i in [begin, end).
void mean_spans(const SpanJob<float>& job, int64_t begin, int64_t end);
void mean_spans(const SpanJob<c10::Half>& job, int64_t begin, int64_t end);
void mean_spans(const SpanJob<c10::BFloat16>& job, int64_t begin, int64_t end);
void mean_spans(const SpanJob<double>& job, int64_t begin, int64_t end);

// Backward: span i owns frames [starts[i], starts[i+1]) (span 0 from frame 0, the last span
// to the last frame); frames inside it get grad[i] / len, the others 0. Every frame is written
// once, so the output needs no zero-fill pass.
void spread_spans(const SpanJob<float>& job, int64_t begin, int64_t end);
void spread_spans(const SpanJob<c10::Half>& job, int64_t begin, int64_t end);
void spread_spans(const SpanJob<c10::BFloat16>& job, int64_t begin, int64_t end);
void spread_spans(const SpanJob<double>& job, int64_t begin, int64_t end);

// dot(a, b), |a|^2 and |b|^2 with a fixed lane order, so results are deterministic.
void dot_and_norms(const float* a, const float* b, int64_t dim, float* out3);
void dot_and_norms(const c10::Half* a, const c10::Half* b, int64_t dim, float* out3);
void dot_and_norms(const c10::BFloat16* a, const c10::BFloat16* b, int64_t dim, float* out3);
void dot_and_norms(const double* a, const double* b, int64_t dim, double* out3);

}  // namespace cpu
}  // namespace lalm_fast
