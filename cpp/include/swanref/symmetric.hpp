// swanref/symmetric.hpp: products of commuting symmetric matrices.
//
// If A and B are symmetric and commute (here: both polynomials in G G^T),
// C = A B is symmetric, so only its lower triangle is computed: recursive
// 2x2 blocking, the off-diagonal block with one GEMM, the two diagonal blocks
// recursively, full GEMMs below `leaf` rows. With leaf = m/8 this performs
// 9/16 of the flops of a full GEMM (2 m^3); the upper triangle is then copied.
// (SciPy's capsules do not export ?gemmt, which would do the same in one call.)
#pragma once

#include <algorithm>

#include "swanref/blas.hpp"
#include "swanref/scale.hpp"

namespace swanref {

inline index_t symmetric_leaf(index_t m) {
  // Below ~192 rows the blocks lose too much GEMM efficiency to be worth it.
  return std::max<index_t>(192, m / 8);
}

namespace detail {
template <class T>
void sym_product_lower_rec(blas::fint m, T alpha, const T* a, const T* b, T* c, blas::fint ld, index_t i0,
                           index_t nb, index_t leaf) {
  using blas::fint;
  if (nb <= leaf) {
    blas::gemm<T>('N', 'N', static_cast<fint>(nb), static_cast<fint>(nb), m, alpha, a + i0, ld, b + i0 * ld, ld,
                  T(0), c + i0 + i0 * ld, ld);
    return;
  }
  index_t h = nb / 2;
  if (h > 64) h = (h / 32) * 32;  // keep blocks aligned to GEMM-friendly sizes
  sym_product_lower_rec(m, alpha, a, b, c, ld, i0, h, leaf);
  blas::gemm<T>('N', 'N', static_cast<fint>(nb - h), static_cast<fint>(h), m, alpha, a + (i0 + h), ld, b + i0 * ld,
                ld, T(0), c + (i0 + h) + i0 * ld, ld);
  sym_product_lower_rec(m, alpha, a, b, c, ld, i0 + h, nb - h, leaf);
}
}  // namespace detail

// C = alpha * A * B for symmetric, commuting m x m A and B (column-major, leading dimension m);
// C is returned full (both triangles).
template <class T>
void sym_product(index_t m, T alpha, const T* a, const T* b, T* c) {
  if (m == 0) return;
  const blas::fint fm = blas::to_fint(m, "m");
  detail::sym_product_lower_rec<T>(fm, alpha, a, b, c, fm, 0, m, symmetric_leaf(m));
  symmetrize_from_lower(c, m, m);
}

// Flops of sym_product for size m (multiply-adds counted as 2).
inline double sym_product_flops(index_t m) {
  struct R {
    static double f(double m, double nb, double leaf) {
      if (nb <= leaf) return 2.0 * nb * nb * m;
      double h = std::floor(nb / 2);
      if (h > 64) h = std::floor(h / 32) * 32;
      return f(m, h, leaf) + 2.0 * (nb - h) * h * m + f(m, nb - h, leaf);
    }
  };
  return R::f(static_cast<double>(m), static_cast<double>(m), static_cast<double>(symmetric_leaf(m)));
}

}  // namespace swanref
