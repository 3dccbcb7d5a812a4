// swanref/sinkgd.hpp: SR-Sinkhorn (SinkGD) normalisation.
//
// `iters` times: every row to l2 norm sqrt(n), then every column to l2 norm
// sqrt(m); rows/columns of zero norm stay zero. Sums in double for both
// float and double.
// Every norm is computed with its own power-of-two scaling (row by row, then
// column by column), so rows of 1e-300 next to rows of 1e300 are normalised
// exactly as if they were alone; no overflow or underflow of the squares.
// Every iteration polls the interruption hook (swanref/interrupt.hpp).
#pragma once

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "swanref/interrupt.hpp"
#include "swanref/scale.hpp"
#include "swanref/status.hpp"
#include "swanref/view.hpp"

namespace swanref {

template <class T>
void sinkgd(const StridedView<const T>& in, T* out, long long iters) {
  require(iters >= 0, "iters must be >= 0, got " + std::to_string(iters));
  const index_t m = in.rows(), n = in.cols(), nb = in.batch_count();
  if (m == 0 || n == 0 || nb == 0) return;
  const std::size_t mn = static_cast<std::size_t>(m) * n;
  std::vector<double> colmax(n), colsum(n), colf(n), colf2(n);
  const double sqrt_n = std::sqrt(static_cast<double>(n)), sqrt_m = std::sqrt(static_cast<double>(m));
  for (index_t b = 0; b < nb; ++b) {
    T* x = out + b * static_cast<index_t>(mn);
    const MatrixView<const T> g = in.matrix(b);
    // No global prescale (it would flush rows far below the largest one): the row pass scales
    // each row by its own power of two, and afterwards every entry is <= sqrt(n).
    copy_scaled(g, x, n, 0);
    for (long long it = 0; it < iters; ++it) {
      poll_interrupt();
      // Rows.
      for (index_t i = 0; i < m; ++i) {
        T* r = x + i * n;
        double rmax = 0;
        for (index_t j = 0; j < n; ++j) {
          const double a = std::abs(static_cast<double>(r[j]));
          rmax = a > rmax ? a : rmax;
        }
        if (rmax == 0) continue;
        const Pow2 p(-pow2_exponent(rmax));
        double s0 = 0, s1 = 0;
        index_t j = 0;
        for (; j + 2 <= n; j += 2) {
          const double u = p(static_cast<double>(r[j])), v = p(static_cast<double>(r[j + 1]));
          s0 += u * u;
          s1 += v * v;
        }
        for (; j < n; ++j) {
          const double u = p(static_cast<double>(r[j]));
          s0 += u * u;
        }
        // x / ||x|| * sqrt(n) with ||x|| = 2^e sqrt(s): factor = sqrt(n) / sqrt(s) * 2^-e
        // (two factors: 2^-e alone may overflow for a row of subnormal values)
        const double f1 = sqrt_n / std::sqrt(s0 + s1) * p.f1, f2 = p.f2;
        for (j = 0; j < n; ++j) r[j] = static_cast<T>((static_cast<double>(r[j]) * f1) * f2);
      }
      // Columns: max, then scaled sums of squares, then scale.
      std::fill(colmax.begin(), colmax.end(), 0.0);
      std::fill(colsum.begin(), colsum.end(), 0.0);
      for (index_t i = 0; i < m; ++i) {
        const T* r = x + i * n;
        for (index_t j = 0; j < n; ++j) {
          const double a = std::abs(static_cast<double>(r[j]));
          colmax[j] = a > colmax[j] ? a : colmax[j];
        }
      }
      // 2^-e_j as two factors colf * colf2 (2^-e_j alone overflows for a subnormal column max).
      for (index_t j = 0; j < n; ++j) {
        const Pow2 p(colmax[j] > 0 ? -pow2_exponent(colmax[j]) : 0);
        colf[j] = colmax[j] > 0 ? p.f1 : 0.0;
        colf2[j] = p.f2;
      }
      for (index_t i = 0; i < m; ++i) {
        const T* r = x + i * n;
        for (index_t j = 0; j < n; ++j) {
          const double u = (static_cast<double>(r[j]) * colf[j]) * colf2[j];
          colsum[j] += u * u;
        }
      }
      for (index_t j = 0; j < n; ++j)
        colf[j] = colmax[j] > 0 ? sqrt_m / std::sqrt(colsum[j]) * colf[j] : 0.0;
      for (index_t i = 0; i < m; ++i) {
        T* r = x + i * n;
        for (index_t j = 0; j < n; ++j)
          r[j] = static_cast<T>((static_cast<double>(r[j]) * colf[j]) * colf2[j]);
      }
    }
  }
}

}  // namespace swanref
