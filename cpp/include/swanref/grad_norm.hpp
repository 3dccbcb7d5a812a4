// swanref/grad_norm.hpp: GradNorm, row standardisation over the last axis.
//
//   out = (x - mean(x)) / sqrt(var(x) + eps),   var with ddof 0,
//   a row whose entries are all exactly equal -> zeros (also for eps == 0).
//
// One pass over memory per row: the row is gathered (any stride) into a
// double buffer while its max |x| and the all-equal flag are computed; the
// remaining passes run on the buffer, which stays in L1/L2. The row is
// scaled by the exact power of two 2^-e (e from frexp(max|x|)) and shifted
// by its first element, then mean and variance are a shifted two-pass
// computation with the standard correction term; so the result cannot
// overflow or underflow for rows of 1e300 or subnormal values, and with
// eps == 0 it is exactly scale invariant. With eps > 0 the variance is that
// of the original values: sqrt(2^(2e) v + eps) = 2^e sqrt(v + eps 2^(-2e)).
#pragma once

#include <cmath>
#include <cstring>
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

}  // namespace detail

// out: dense C-order buffer of in.shape(). eps >= 0 and finite.
template <class T>
void grad_norm(const StridedView<const T>& in, T* out, double eps) {
  require(std::isfinite(eps) && eps >= 0, "eps must be finite and >= 0, got " + std::to_string(eps));
  const index_t m = in.rows(), n = in.cols(), nb = in.batch_count();
  if (m == 0 || n == 0 || nb == 0) return;
  std::vector<double> buf(static_cast<std::size_t>(n));
  for (index_t b = 0; b < nb; ++b) {
    const MatrixView<const T> g = in.matrix(b);
    for (index_t i = 0; i < m; ++i) {
      const T* src = g.row(i);
      const index_t cs = g.cs;
      T* o = out + (b * m + i) * n;
      const double x0 = static_cast<double>(src[0]);
      double amax = 0;
      bool equal = true;
      if (cs == 1) {
        for (index_t j = 0; j < n; ++j) {
          const double v = static_cast<double>(src[j]);
          buf[j] = v;
          const double a = std::abs(v);
          amax = a > amax ? a : amax;
          equal &= (v == x0);
        }
      } else {
        for (index_t j = 0; j < n; ++j) {
          const double v = static_cast<double>(src[j * cs]);
          buf[j] = v;
          const double a = std::abs(v);
          amax = a > amax ? a : amax;
          equal &= (v == x0);
        }
      }
      if (equal) {
        std::memset(o, 0, sizeof(T) * static_cast<std::size_t>(n));
        continue;
      }
      detail::grad_norm_row(buf.data(), n, amax, eps, o);
    }
  }
}

}  // namespace swanref
