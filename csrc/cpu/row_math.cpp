// Definitions of the row primitives; see row_math.h for why they are multiversioned.
#include "row_math.h"

namespace lalm_fast {
namespace cpu {

namespace {
constexpr int kLanes = 16;  // independent partial sums: lets the reduction vectorise
                            // without -ffast-math and fixes its order (determinism)
}  // namespace

#define LALM_DEFINE_ROW_OPS(scalar_t, acc_t)                                              \
  LALM_MULTIVERSION void add_row(acc_t* acc, const scalar_t* row, int64_t dim) {          \
    for (int64_t d = 0; d < dim; ++d) acc[d] += widen(row[d]);                            \
  }                                                                                       \
  LALM_MULTIVERSION void store_scaled(scalar_t* out, const acc_t* acc, acc_t scale,       \
                                      int64_t dim) {                                      \
    for (int64_t d = 0; d < dim; ++d) narrow(acc[d] * scale, out + d);                    \
  }                                                                                       \
  LALM_MULTIVERSION void scale_row(scalar_t* out, const scalar_t* row, acc_t scale,       \
                                   int64_t dim) {                                         \
    for (int64_t d = 0; d < dim; ++d) narrow(widen(row[d]) * scale, out + d);             \
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
