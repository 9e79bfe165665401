// Definitions of the row primitives; see row_math.h for why they are multiversioned.
#include "row_math.h"

namespace lalm_fast {
namespace cpu {

namespace {
constexpr int kLanes = 16;  // independent partial sums: lets the reduction vectorise
                            // without -ffast-math and fixes its order (determinism)
}  // namespace

// Register-blocked bodies, inlined into each multiversioned wrapper below so they compile
// for that wrapper's instruction set. A block of kBlock features is summed over the span's
// frames in registers, in time order (deterministic), then scaled and stored once.
template <typename scalar_t, typename acc_t>
__attribute__((always_inline)) inline void mean_spans_body(const SpanJob<scalar_t>& job, int64_t begin,
                                                           int64_t end) {
  constexpr int64_t kBlock = 256 / sizeof(acc_t);  // 64 fp32 lanes: four AVX-512 registers
  const int64_t dim = job.dim;
  for (int64_t i = begin; i < end; ++i) {
    const scalar_t* rows = job.x + (i / job.spans) * job.stride_r;
    const int64_t first = job.starts[i], last = job.ends[i];
    const acc_t scale = last > first ? acc_t(1) / acc_t(last - first) : acc_t(0);
    scalar_t* out = job.out + i * dim;
    int64_t d0 = 0;
    for (; d0 + kBlock <= dim; d0 += kBlock) {
      acc_t acc[kBlock] = {};
      for (int64_t t = first; t < last; ++t) {
        const scalar_t* row = rows + t * job.stride_t + d0;
        for (int64_t d = 0; d < kBlock; ++d) acc[d] += widen(row[d]);
      }
      for (int64_t d = 0; d < kBlock; ++d) narrow(acc[d] * scale, out + d0 + d);
    }
    if (d0 < dim) {
      const int64_t tail = dim - d0;
      acc_t acc[kBlock] = {};
      for (int64_t t = first; t < last; ++t) {
        const scalar_t* row = rows + t * job.stride_t + d0;
        for (int64_t d = 0; d < tail; ++d) acc[d] += widen(row[d]);
      }
      for (int64_t d = 0; d < tail; ++d) narrow(acc[d] * scale, out + d0 + d);
    }
  }
}

template <typename scalar_t, typename acc_t>
__attribute__((always_inline)) inline void spread_spans_body(const SpanJob<scalar_t>& job, int64_t begin,
                                                             int64_t end) {
  const int64_t dim = job.dim, spans = job.spans;
  for (int64_t i = begin; i < end; ++i) {
    const int64_t s = i % spans;
    const int64_t lo = s == 0 ? 0 : job.starts[i];
    const int64_t hi = s + 1 == spans ? job.frames : job.starts[i + 1];
    const int64_t first = job.starts[i], last = job.ends[i];
    const acc_t scale = last > first ? acc_t(1) / acc_t(last - first) : acc_t(0);
    const scalar_t* grad = job.x + i * dim;
    scalar_t* frames = job.out + (i / spans) * job.frames * dim;
    for (int64_t t = lo; t < hi; ++t) {
      scalar_t* out = frames + t * dim;
      if (t >= first && t < last) {
        for (int64_t d = 0; d < dim; ++d) narrow(widen(grad[d]) * scale, out + d);
      } else {
        std::memset(static_cast<void*>(out), 0, sizeof(scalar_t) * dim);
      }
    }
  }
}


#define LALM_DEFINE_ROW_OPS(scalar_t, acc_t)                                              \
  LALM_MULTIVERSION void mean_spans(const SpanJob<scalar_t>& job, int64_t begin,          \
                                    int64_t end) {                                        \
    mean_spans_body<scalar_t, acc_t>(job, begin, end);                                    \
  }                                                                                       \
  LALM_MULTIVERSION void spread_spans(const SpanJob<scalar_t>& job, int64_t begin,        \
                                      int64_t end) {                                      \
    spread_spans_body<scalar_t, acc_t>(job, begin, end);                                  \
  }                                                                                       \
  LALM_MULTIVERSION void dot_and_norms(const scalar_t* a, const scalar_t* b, int64_t dim, \
                                       acc_t* out3) {                                     \
    using vec_t = acc_t __attribute__((vector_size(kLanes * sizeof(acc_t))));             \
    acc_t wa[kLanes], wb[kLanes];                                                         \
    vec_t dot = {}, na = {}, nb = {};                                                     \
    int64_t d = 0;                                                                        \
    for (; d + kLanes <= dim; d += kLanes) {                                              \
      for (int j = 0; j < kLanes; ++j) wa[j] = widen(a[d + j]);                           \
      for (int j = 0; j < kLanes; ++j) wb[j] = widen(b[d + j]);                           \
      vec_t va, vb;                                                                       \
      std::memcpy(&va, wa, sizeof(va));                                                   \
      std::memcpy(&vb, wb, sizeof(vb));                                                   \
      dot += va * vb;                                                                     \
      na += va * va;                                                                      \
      nb += vb * vb;                                                                      \
    }                                                                                     \
    acc_t s_dot = 0, s_na = 0, s_nb = 0;                                                  \
    for (int j = 0; j < kLanes; ++j) {                                                    \
      s_dot += dot[j];                                                                    \
      s_na += na[j];                                                                      \
      s_nb += nb[j];                                                                      \
    }                                                                                     \
    for (; d < dim; ++d) {                                                                \
      const acc_t va = widen(a[d]), vb = widen(b[d]);                                     \
      s_dot += va * vb;                                                                   \
      s_na += va * va;                                                                    \
      s_nb += vb * vb;                                                                    \
    }                                                                                     \
    out3[0] = s_dot;                                                                      \
    out3[1] = s_na;                                                                       \
    out3[2] = s_nb;                                                                       \
  }

LALM_DEFINE_ROW_OPS(float, float)
LALM_DEFINE_ROW_OPS(c10::Half, float)
LALM_DEFINE_ROW_OPS(c10::BFloat16, float)
LALM_DEFINE_ROW_OPS(double, double)

#undef LALM_DEFINE_ROW_OPS

}  // namespace cpu
}  // namespace lalm_fast
