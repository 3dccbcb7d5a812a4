// swanref/grad_norm.hpp: GradNorm, row standardisation over the last axis.
//
//   out = (x - mean(x)) / sqrt(var(x) + eps),   var with ddof 0,
//   a row whose entries are all exactly equal -> zeros (also for eps == 0).
//
// One pass over memory per row, sums in double for float and double input:
//  * fast path (contiguous row, or a strided row gathered once into a buffer):
//    pass 1 reads the row from memory and computes min, max (all-equal test:
//    min == max) and the sum of x - x0 (shift x0 = first entry); pass 2, on the
//    row now in L1/L2, the shifted two-pass sum of squares with the standard
//    correction term; pass 3 writes the output (non-temporal stores for outputs
//    larger than the caches). Reductions use 16 fixed lanes (bitwise identical
//    on SSE2 and on the AVX2 version chosen at run time on x86-64).
//  * float64 rows with max|x| outside 2^+-400 (where squares of shifted values
//    could overflow or underflow) take the slow path: the row is scaled by the
//    exact power of two 2^-e (e from frexp(max|x|)) first, so rows of 1e300 or
//    of subnormals standardise exactly like their scaled copies; with eps > 0 the
//    variance stays that of the original values: sqrt(2^(2e) v + eps) =
//    2^e sqrt(v + eps 2^(-2e)). Float rows never need it (any float squared fits
//    a double).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#endif
#include <limits>
#include <vector>

#include "swanref/scale.hpp"
#include "swanref/status.hpp"
#include "swanref/view.hpp"

namespace swanref {
namespace detail {

// Standardise buf[0..n) (already gathered; amax = max |x|, not all equal) into out.
template <class T>
inline void grad_norm_row(double* buf, index_t n, double amax, double eps, T* out) {
  const int e = pow2_exponent(amax);
  const Pow2 p(-e);
  const double y0 = p(buf[0]);
  double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  index_t j = 0;
  for (; j + 4 <= n; j += 4) {
    const double d0 = p(buf[j]) - y0, d1 = p(buf[j + 1]) - y0, d2 = p(buf[j + 2]) - y0,
                 d3 = p(buf[j + 3]) - y0;
    buf[j] = d0;
    buf[j + 1] = d1;
    buf[j + 2] = d2;
    buf[j + 3] = d3;
    s0 += d0;
    s1 += d1;
    s2 += d2;
    s3 += d3;
  }
  for (; j < n; ++j) {
    const double d = p(buf[j]) - y0;
    buf[j] = d;
    s0 += d;
  }
  const double dn = static_cast<double>(n);
  const double mean = ((s0 + s1) + (s2 + s3)) / dn;
  double q0 = 0, q1 = 0, q2 = 0, q3 = 0, c0 = 0, c1 = 0;
  j = 0;
  for (; j + 4 <= n; j += 4) {
    const double r0 = buf[j] - mean, r1 = buf[j + 1] - mean, r2 = buf[j + 2] - mean, r3 = buf[j + 3] - mean;
    q0 += r0 * r0;
    q1 += r1 * r1;
    q2 += r2 * r2;
    q3 += r3 * r3;
    c0 += r0 + r1;
    c1 += r2 + r3;
  }
  for (; j < n; ++j) {
    const double r = buf[j] - mean;
    q0 += r * r;
    c0 += r;
  }
  const double corr = c0 + c1;
  double var = (((q0 + q1) + (q2 + q3)) - corr * corr / dn) / dn;
  if (!(var > 0)) var = 0;
  const double eps_s = std::ldexp(eps, -2 * e);  // eps in the scaled units (may overflow to inf)
  if (std::isinf(eps_s)) {
    // sqrt(2^(2e) var + eps) == sqrt(eps) to working precision; out = 2^e r / sqrt(eps).
    const double se = std::sqrt(eps);
    for (j = 0; j < n; ++j) out[j] = static_cast<T>(std::ldexp(buf[j] - mean, e) / se);
    return;
  }
  const double denom = std::sqrt(var + eps_s);
  if (!(denom > 0)) {
    for (j = 0; j < n; ++j) out[j] = T(0);
    return;
  }
  const double inv = 1.0 / denom;
  for (j = 0; j < n; ++j) out[j] = static_cast<T>((buf[j] - mean) * inv);
}


// Fast path for a contiguous row whose magnitudes are in a safe range: accumulate in double
// without the power-of-two scaling (float rows always qualify: any float squared fits a
// double). Passes: min/max (memory), shifted sum, shifted sum of squares, output (the row is
// in L1/L2 after the first pass). Returns false (nothing written) if the row needs scaling.
#if defined(__SSE2__)
// out[j] = ((x[j] - x0) - mean) * inv with non-temporal stores (large outputs are not read
// back soon; streaming avoids the read-for-ownership of every output line). Needs out 16-byte
// aligned; returns the number of entries written (a multiple of 4 from j = 0).
inline index_t stream_row(const double* x, index_t n, double x0, double mean, double inv, double* out) {
  if (reinterpret_cast<std::uintptr_t>(out) % 16 != 0) return 0;
  const __m128d vx0 = _mm_set1_pd(x0), vm = _mm_set1_pd(mean), vi = _mm_set1_pd(inv);
  index_t j = 0;
  for (; j + 4 <= n; j += 4) {
    const __m128d a = _mm_mul_pd(_mm_sub_pd(_mm_sub_pd(_mm_loadu_pd(x + j), vx0), vm), vi);
    const __m128d b = _mm_mul_pd(_mm_sub_pd(_mm_sub_pd(_mm_loadu_pd(x + j + 2), vx0), vm), vi);
    _mm_stream_pd(out + j, a);
    _mm_stream_pd(out + j + 2, b);
  }
  return j;
}
inline index_t stream_row(const float* x, index_t n, double x0, double mean, double inv, float* out) {
  if (reinterpret_cast<std::uintptr_t>(out) % 16 != 0) return 0;
  const __m128d vx0 = _mm_set1_pd(x0), vm = _mm_set1_pd(mean), vi = _mm_set1_pd(inv);
  index_t j = 0;
  for (; j + 4 <= n; j += 4) {
    const __m128 v = _mm_loadu_ps(x + j);
    const __m128d lo = _mm_mul_pd(_mm_sub_pd(_mm_sub_pd(_mm_cvtps_pd(v), vx0), vm), vi);
    const __m128d hi = _mm_mul_pd(_mm_sub_pd(_mm_sub_pd(_mm_cvtps_pd(_mm_movehl_ps(v, v)), vx0), vm), vi);
    _mm_stream_ps(out + j, _mm_movelh_ps(_mm_cvtpd_ps(lo), _mm_cvtpd_ps(hi)));
  }
  return j;
}
#endif

#if defined(__SSE2__)
#define SWANREF_STREAM_ROW \
  if (stream) j0 = SWANREF_STREAM_FN(x, n, x0, mean, inv, out);
#else
#define SWANREF_STREAM_ROW
#endif
#define SWANREF_GRAD_NORM_ROW_BODY \
  /* Reductions use kLanes independent accumulators (several vector registers), so they are */ \
  /* limited by throughput, not by the latency of one dependent add chain. */ \
  constexpr index_t kLanes = 16; \
  const index_t nv = n - n % kLanes; \
  /* Pass 1 (from memory): min, max and the sum of x - x0 (x0 = x[0], the shift). */ \
  const double x0 = static_cast<double>(x[0]); \
  double lo[kLanes], hi[kLanes], acc[kLanes]; \
  for (index_t k = 0; k < kLanes; ++k) { \
    lo[k] = hi[k] = x0; \
    acc[k] = 0; \
  } \
  for (index_t j = 0; j < nv; j += kLanes) { \
_Pragma("omp simd") \
    for (index_t k = 0; k < kLanes; ++k) { \
      const double v = static_cast<double>(x[j + k]); \
      lo[k] = v < lo[k] ? v : lo[k]; \
      hi[k] = v > hi[k] ? v : hi[k]; \
      acc[k] += v - x0; \
    } \
  } \
  double vmin = lo[0], vmax = hi[0], s = 0; \
  for (index_t j = nv; j < n; ++j) { \
    const double v = static_cast<double>(x[j]); \
    vmin = std::min(vmin, v); \
    vmax = std::max(vmax, v); \
    s += v - x0; \
  } \
  for (index_t k = 0; k < kLanes; ++k) { \
    vmin = std::min(vmin, lo[k]); \
    vmax = std::max(vmax, hi[k]); \
    s += acc[k]; \
  } \
  if (vmin == vmax) {  /* all entries exactly equal */ \
    std::memset(out, 0, sizeof(T) * static_cast<std::size_t>(n)); \
    return true; \
  } \
  /* Outside 2^+-400 the shifted sums could overflow/underflow: the scaled slow path. */ \
  /* (The sum above may then be inf/0; it is discarded.) */ \
  const int e = pow2_exponent(std::max(-vmin, vmax)); \
  if (sizeof(T) == 8 && (e > 400 || e < -400)) return false; \
  const double dn = static_cast<double>(n); \
  const double mean = s / dn; \
  double qa[kLanes] = {}, ca[kLanes] = {}; \
  for (index_t j = 0; j < nv; j += kLanes) { \
_Pragma("omp simd") \
    for (index_t k = 0; k < kLanes; ++k) { \
      const double r = (static_cast<double>(x[j + k]) - x0) - mean; \
      qa[k] += r * r; \
      ca[k] += r; \
    } \
  } \
  double q = 0, c = 0; \
  for (index_t j = nv; j < n; ++j) { \
    const double r = (static_cast<double>(x[j]) - x0) - mean; \
    q += r * r; \
    c += r; \
  } \
  for (index_t k = 0; k < kLanes; ++k) { \
    q += qa[k]; \
    c += ca[k]; \
  } \
  double var = (q - c * c / dn) / dn; \
  if (!(var > 0)) var = 0; \
  const double denom = std::sqrt(var + eps); \
  const double inv = denom > 0 ? 1.0 / denom : 0.0; \
  index_t j0 = 0; \
SWANREF_STREAM_ROW \
_Pragma("omp simd") \
  for (index_t j = j0; j < n; ++j) out[j] = static_cast<T>(((static_cast<double>(x[j]) - x0) - mean) * inv); \
  return true;

#define SWANREF_STREAM_FN stream_row
template <class T>
inline bool grad_norm_row_fast_generic(const T* x, index_t n, double eps, T* out, bool stream) {
  SWANREF_GRAD_NORM_ROW_BODY
}
#undef SWANREF_STREAM_FN

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(__AVX2__)
#define SWANREF_GRAD_NORM_AVX2 1
// The same kernel compiled for AVX2 (4 doubles per instruction) and chosen at run time, so a
// portable build (x86-64 baseline, SSE2) still uses AVX2 where the CPU has it. The lanes of
// every reduction are fixed in the source, so both versions give bitwise identical results.
// 256-bit streaming stores for the AVX2 version: scalar head up to 32-byte alignment, then
// whole vectors (same formula, same rounding as the other versions).
__attribute__((target("avx2"))) inline index_t stream_row_avx2(const double* x, index_t n, double x0, double mean,
                                                               double inv, double* out) {
  index_t j = 0;
  for (; j < n && reinterpret_cast<std::uintptr_t>(out + j) % 32 != 0; ++j) out[j] = ((x[j] - x0) - mean) * inv;
  if (reinterpret_cast<std::uintptr_t>(out + j) % 32 != 0) return j;
  const __m256d vx0 = _mm256_set1_pd(x0), vm = _mm256_set1_pd(mean), vi = _mm256_set1_pd(inv);
  for (; j + 4 <= n; j += 4)
    _mm256_stream_pd(out + j, _mm256_mul_pd(_mm256_sub_pd(_mm256_sub_pd(_mm256_loadu_pd(x + j), vx0), vm), vi));
  return j;
}
__attribute__((target("avx2"))) inline index_t stream_row_avx2(const float* x, index_t n, double x0, double mean,
                                                               double inv, float* out) {
  index_t j = 0;
  for (; j < n && reinterpret_cast<std::uintptr_t>(out + j) % 32 != 0; ++j)
    out[j] = static_cast<float>(((static_cast<double>(x[j]) - x0) - mean) * inv);
  if (reinterpret_cast<std::uintptr_t>(out + j) % 32 != 0) return j;
  const __m256d vx0 = _mm256_set1_pd(x0), vm = _mm256_set1_pd(mean), vi = _mm256_set1_pd(inv);
  for (; j + 8 <= n; j += 8) {
    const __m256d lo = _mm256_mul_pd(_mm256_sub_pd(_mm256_sub_pd(_mm256_cvtps_pd(_mm_loadu_ps(x + j)), vx0), vm), vi);
    const __m256d hi =
        _mm256_mul_pd(_mm256_sub_pd(_mm256_sub_pd(_mm256_cvtps_pd(_mm_loadu_ps(x + j + 4)), vx0), vm), vi);
    _mm256_stream_ps(out + j, _mm256_insertf128_ps(_mm256_castps128_ps256(_mm256_cvtpd_ps(lo)), _mm256_cvtpd_ps(hi), 1));
  }
  return j;
}

#define SWANREF_STREAM_FN stream_row_avx2
template <class T>
__attribute__((target("avx2"))) bool grad_norm_row_fast_avx2(const T* x, index_t n, double eps, T* out,
                                                              bool stream) {
  SWANREF_GRAD_NORM_ROW_BODY
}
#undef SWANREF_STREAM_FN
#endif

#undef SWANREF_GRAD_NORM_ROW_BODY
#undef SWANREF_STREAM_ROW

template <class T>
inline bool grad_norm_row_fast(const T* x, index_t n, double eps, T* out, bool stream = false) {
#if defined(SWANREF_GRAD_NORM_AVX2)
  static const bool avx2 = __builtin_cpu_supports("avx2");
  if (avx2) return grad_norm_row_fast_avx2(x, n, eps, out, stream);
#endif
  return grad_norm_row_fast_generic(x, n, eps, out, stream);
}

}  // namespace detail

// out: dense C-order buffer of in.shape(). eps >= 0 and finite.
template <class T>
void grad_norm(const StridedView<const T>& in, T* out, double eps) {
  require(std::isfinite(eps) && eps >= 0, "eps must be finite and >= 0, got " + std::to_string(eps));
  const index_t m = in.rows(), n = in.cols(), nb = in.batch_count();
  if (m == 0 || n == 0 || nb == 0) return;
  std::vector<double> buf(static_cast<std::size_t>(n));
  std::vector<T> tbuf(static_cast<std::size_t>(n));
  // Outputs larger than the caches are written with streaming stores.
  const bool stream = static_cast<double>(sizeof(T)) * static_cast<double>(in.size()) > 8.0 * (1 << 20);
  for (index_t b = 0; b < nb; ++b) {
    const MatrixView<const T> g = in.matrix(b);
    for (index_t i = 0; i < m; ++i) {
      const T* src = g.row(i);
      const index_t cs = g.cs;
      T* o = out + (b * m + i) * n;
      const T* row = src;
      if (cs != 1) {  // strided row: gather it (the only copy), then the contiguous kernel
        for (index_t j = 0; j < n; ++j) tbuf[j] = src[j * cs];
        row = tbuf.data();
      }
      if (detail::grad_norm_row_fast(row, n, eps, o, stream)) continue;
      // Rare slow path (float64 rows beyond 2^+-400): exact power-of-two scaling first.
      double amax = 0;
      for (index_t j = 0; j < n; ++j) {
        buf[j] = static_cast<double>(row[j]);
        amax = std::max(amax, std::abs(buf[j]));
      }
      detail::grad_norm_row(buf.data(), n, amax, eps, o);
    }
  }
#if defined(__SSE2__)
  if (stream) _mm_sfence();
#endif
}

}  // namespace swanref
