// swanref/grad_norm.hpp: GradNorm, row standardisation over the last axis.
//
//   out = (x - mean(x)) / sqrt(var(x) + eps),   var with ddof 0,
//   a row whose entries are all exactly equal -> zeros (also for eps == 0).
//
// The row algorithm is swanref/device/grad_norm_row.hpp, the same source that the GPU backend
// compiles (exact power-of-two scalings, shift by the first entry, two-pass variance, in the
// input precision, as the NumPy reference). This file only drives it over a strided stack of
// rows on one host thread:
//  * the row is read from memory once and kept in a scratch buffer that stays in L1/L2 for
//    the remaining passes; strided rows are gathered into it first;
//  * W = 64 bytes of lanes per partial result (16 floats, 8 doubles), so the passes vectorise;
//    on x86-64 the driver is compiled for the baseline and again for AVX2, chosen at run time
//    (the lanes are fixed in the source, so both give bitwise identical results);
//  * outputs larger than the caches are written with non-temporal stores (no read for
//    ownership of lines that are not read back soon).
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#endif

#include "swanref/device/grad_norm_row.hpp"
#include "swanref/status.hpp"
#include "swanref/view.hpp"

namespace swanref {
namespace detail {

template <class T>
constexpr int grad_norm_lanes = static_cast<int>(64 / sizeof(T));

// SerialExec whose output chunks (64 bytes, collected in registers) go out with non-temporal
// stores; `out` rows must be 16-byte aligned (checked once per row by the caller). With each
// chunk written, the same line of the next input row is prefetched (`ahead` bytes from the
// output chunk; 0: none), so that the memory traffic of the next row overlaps the arithmetic of
// this row's last pass (into L2: the next row is read after this one is finished).
#if defined(__SSE2__)
template <int W, class T>
struct StreamingChunk {
  T x[W];
  T* p;
  std::intptr_t ahead;
  StreamingChunk(T* p_, std::intptr_t ahead_) : p(p_), ahead(ahead_) {}
  T& operator[](int k) { return x[k]; }
  void flush() {
    if constexpr (sizeof(T) == 8) {
      for (int k = 0; k < W; k += 2) _mm_stream_pd(p + k, _mm_loadu_pd(x + k));
    } else {
      for (int k = 0; k < W; k += 4) _mm_stream_ps(p + k, _mm_loadu_ps(x + k));
    }
    if (ahead != 0) _mm_prefetch(reinterpret_cast<const char*>(reinterpret_cast<std::intptr_t>(p) + ahead), _MM_HINT_T1);
  }
};
struct StreamingSerialExec : device::SerialExec {
  std::intptr_t ahead = 0;
  template <int W, class T>
  StreamingChunk<W, T> out_chunk(T* p) const { return StreamingChunk<W, T>(p, ahead); }
};
#else
struct StreamingSerialExec : device::SerialExec {
  std::intptr_t ahead = 0;
};
#endif

#define SWANREF_GRAD_NORM_ROWS_BODY                                                             \
  constexpr int W = grad_norm_lanes<T>;                                                        \
  if (stream && reinterpret_cast<std::uintptr_t>(out) % 16 == 0) {                             \
    StreamingSerialExec ex;                                                                    \
    if (next) ex.ahead = reinterpret_cast<std::intptr_t>(next) - reinterpret_cast<std::intptr_t>(out); \
    device::grad_norm_row<W>(ex, row, 1, out, work, n, eps);                                   \
  } else {                                                                                     \
    device::SerialExec ex;                                                                     \
    device::grad_norm_row<W>(ex, row, 1, out, work, n, eps);                                   \
  }

// One contiguous row; work: n entries of scratch; next: the next input row to prefetch (or null).
template <class T>
inline void grad_norm_row_generic(const T* row, index_t n, T eps, T* out, T* work, bool stream,
                                  const T* next = nullptr) {
  SWANREF_GRAD_NORM_ROWS_BODY
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(__AVX2__)
#define SWANREF_GRAD_NORM_AVX2 1
// The same source compiled for AVX2 (the row algorithm is inlined into this function).
template <class T>
__attribute__((target("avx2"), flatten)) void grad_norm_row_avx2(const T* row, index_t n, T eps, T* out, T* work,
                                                                  bool stream, const T* next = nullptr) {
  SWANREF_GRAD_NORM_ROWS_BODY
}
#endif
#undef SWANREF_GRAD_NORM_ROWS_BODY

template <class T>
inline void grad_norm_row_host(const T* row, index_t n, T eps, T* out, T* work, bool stream,
                               const T* next = nullptr) {
#if defined(SWANREF_GRAD_NORM_AVX2)
  static const bool avx2 = __builtin_cpu_supports("avx2");
  if (avx2) return grad_norm_row_avx2(row, n, eps, out, work, stream, next);
#endif
  grad_norm_row_generic(row, n, eps, out, work, stream, next);
}

}  // namespace detail

// out: dense C-order buffer of in.shape(). eps >= 0 and finite.
template <class T>
void grad_norm(const StridedView<const T>& in, T* out, double eps) {
  require(std::isfinite(eps) && eps >= 0, "eps must be finite and >= 0, got " + std::to_string(eps));
  const index_t m = in.rows(), n = in.cols(), nb = in.batch_count();
  if (m == 0 || n == 0 || nb == 0) return;
  // eps in the input precision, as the reference adds it (a float eps may round to 0 or inf:
  // both are handled by the row algorithm).
  const T teps = static_cast<T>(eps);
  std::vector<T> work(static_cast<std::size_t>(n)), gather;
  // Outputs larger than the caches are written with streaming stores.
  const bool stream = static_cast<double>(sizeof(T)) * static_cast<double>(in.size()) > 8.0 * (1 << 20);
  for (index_t b = 0; b < nb; ++b) {
    const MatrixView<const T> g = in.matrix(b);
    for (index_t i = 0; i < m; ++i) {
      const T* row = g.row(i);
      if (g.cs != 1) {  // strided row: gather it (the only copy), then the contiguous kernel
        gather.resize(static_cast<std::size_t>(n));
        for (index_t j = 0; j < n; ++j) gather[j] = row[j * g.cs];
        row = gather.data();
      }
      // the next contiguous input row is prefetched while this one is written (strided rows are
      // gathered, and the last row of a slice has no successor here)
      const T* next = (g.cs == 1 && i + 1 < m) ? g.row(i + 1) : nullptr;
      detail::grad_norm_row_host(row, n, teps, out + (b * m + i) * n, work.data(), stream, next);
    }
  }
#if defined(__SSE2__)
  if (stream) _mm_sfence();
#endif
}

}  // namespace swanref
