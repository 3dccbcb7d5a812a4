// swanref/scale.hpp: exact power-of-two scaling and dense copies of strided
// matrices. Scaling by 2^k is exact (barring underflow of entries far below
// the maximum), so every scale-invariant operator gives the same result on
// the prescaled matrix, without overflow/underflow in Gram matrices or norms.
#pragma once

#include <algorithm>
#include <cmath>

#include "swanref/view.hpp"

namespace swanref {

// Exponent e with amax = f * 2^e, f in [0.5, 1) (0 for amax == 0 or non-finite).
inline int pow2_exponent(double amax) {
  if (!(amax > 0) || !std::isfinite(amax)) return 0;
  int e = 0;
  std::frexp(amax, &e);
  return e;
}

// Multiplication by 2^k as two factors (2^k itself may not be representable).
struct Pow2 {
  double f1 = 1.0, f2 = 1.0;
  explicit Pow2(int k = 0) {
    const int k1 = k / 2;
    f1 = std::ldexp(1.0, k1);
    f2 = std::ldexp(1.0, k - k1);
  }
  double operator()(double x) const { return (x * f1) * f2; }
  bool identity() const { return f1 == 1.0 && f2 == 1.0; }
};

template <class T>
inline double max_abs(const MatrixView<const T>& g) {
  double amax = 0.0;
  if (g.rows_contiguous()) {
    for (index_t i = 0; i < g.rows; ++i) {
      const T* r = g.row(i);
      T a = T(0);
      for (index_t j = 0; j < g.cols; ++j) {
        const T v = std::abs(r[j]);
        a = v > a ? v : a;
      }
      amax = std::max(amax, static_cast<double>(a));
    }
  } else {
    for (index_t j = 0; j < g.cols; ++j)
      for (index_t i = 0; i < g.rows; ++i) amax = std::max(amax, std::abs(static_cast<double>(g(i, j))));
  }
  return amax;
}

// dst (dense row-major rows x cols, leading dimension ld) = g * 2^k.
template <class T, class U>
inline void copy_scaled(const MatrixView<const T>& g, U* dst, index_t ld, int k) {
  const Pow2 p(k);
  if (g.rows_contiguous()) {
    for (index_t i = 0; i < g.rows; ++i) {
      const T* r = g.row(i);
      U* d = dst + i * ld;
      if (p.identity()) {
        for (index_t j = 0; j < g.cols; ++j) d[j] = static_cast<U>(r[j]);
      } else {
        for (index_t j = 0; j < g.cols; ++j) d[j] = static_cast<U>(p(static_cast<double>(r[j])));
      }
    }
    return;
  }
  // Strided / column-major input: tiled copy so both sides stay cache friendly.
  constexpr index_t tile = 32;
  for (index_t i0 = 0; i0 < g.rows; i0 += tile)
    for (index_t j0 = 0; j0 < g.cols; j0 += tile) {
      const index_t i1 = std::min(g.rows, i0 + tile), j1 = std::min(g.cols, j0 + tile);
      for (index_t j = j0; j < j1; ++j)
        for (index_t i = i0; i < i1; ++i) dst[i * ld + j] = static_cast<U>(p(static_cast<double>(g(i, j))));
    }
}

// Column-major n x n lower triangle -> full symmetric matrix (copy to the upper triangle).
template <class T>
inline void symmetrize_from_lower(T* a, index_t n, index_t ld) {
  constexpr index_t tile = 64;
  for (index_t j0 = 0; j0 < n; j0 += tile)
    for (index_t i0 = j0; i0 < n; i0 += tile) {
      const index_t j1 = std::min(n, j0 + tile), i1 = std::min(n, i0 + tile);
      for (index_t j = j0; j < j1; ++j)
        for (index_t i = std::max(i0, j + 1); i < i1; ++i) a[j + i * ld] = a[i + j * ld];
    }
}

}  // namespace swanref
