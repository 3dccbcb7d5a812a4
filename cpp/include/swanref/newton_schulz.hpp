// swanref/newton_schulz.hpp: the coupled Newton-Schulz whitening of SWAN and
// its diagonal-substitution variant (NSDS).
//
// Newton-Schulz (per m x n slice, m <= n):
//   Gs = 2^-e G (exact prescale, e from frexp(max|G|); skipped for "none"),
//   A = Gs Gs^T (SYRK), c = ||A||_F ("gram_fro") | trace A = ||Gs||_F^2
//   ("grad_fro") | 1 ("none"); c == 0 -> zeros.
//   Y = A / c, Z = I; `steps` times: T = 3I - Z Y; Y <- beta Y T; Z <- beta T Z
//   (T computed once from the old Y, Z). Output X = Z Gs / sqrt(c).
// Every iterate is a polynomial in A, hence symmetric in exact arithmetic: A
// is formed with SYRK (half the flops of GEMM), and NewtonSchulzOptions::
// symmetric computes only lower triangles of the products -- off by default,
// because exact symmetrisation destabilises the iteration on rank-deficient G.
// Savings that change no rounding: step 1 has Z = I and costs one product
// (Z Y = Y, T Z = T exactly), and the last step skips the unused Y update, so
// `steps` steps cost 3 steps - 3 products (steps >= 2) instead of 3 steps.
// No divergence check here: the caller inspects the output. Every step polls the
// interruption hook (swanref/interrupt.hpp): `steps` is the caller's and unbounded.
//
// NSDS: same prescale and c; d = diag(A) / c (row squared norms / c),
//   z = 1, y = d; `steps` times: t = 3 - z y; y <- beta y t; z <- beta t z;
//   X = diag(z) Gs / sqrt(c). O(mn) except for "gram_fro", which needs ||A||_F.
#pragma once

#include <cmath>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "swanref/blas.hpp"
#include "swanref/interrupt.hpp"
#include "swanref/scale.hpp"
#include "swanref/status.hpp"
#include "swanref/symmetric.hpp"
#include "swanref/view.hpp"

namespace swanref {

enum class Scaling { gram_fro, grad_fro, none };

inline Scaling parse_scaling(const std::string& s) {
  if (s == "gram_fro") return Scaling::gram_fro;
  if (s == "grad_fro") return Scaling::grad_fro;
  if (s == "none") return Scaling::none;
  fail(Status::invalid_argument, "scaling must be one of 'gram_fro', 'grad_fro', 'none', got '" + s + "'");
}

inline void check_whiten_shape(index_t m, index_t n) {
  require(m <= n, "whitening expects m <= n in the last two axes (pass the transpose of tall matrices), got m=" +
                      std::to_string(m) + ", n=" + std::to_string(n));
}

inline void check_iteration_args(long long steps, double beta) {
  require(steps >= 0, "steps must be >= 0, got " + std::to_string(steps));
  require(std::isfinite(beta), "beta must be finite");
}

// Flops of one full Newton-Schulz step: 3 products of m x m matrices (2 m^3 each as GEMMs,
// sym_product_flops(m) each with the symmetric kernel).
inline double newton_schulz_step_flops(index_t m, bool symmetric = false) {
  return 3.0 * (symmetric ? sym_product_flops(m) : 2.0 * double(m) * m * m);
}

// Total flops of whiten_newton_schulz on one m x n slice (SYRK m^2 n, the products, Z Gs 2 m^2 n).
inline double newton_schulz_flops(index_t m, index_t n, long long steps, bool symmetric = false);

namespace detail {

// Gs (dense row-major m x n == column-major n x m, ld n), prescaled unless Scaling::none.
// Returns false if the slice is all zeros (only checked when prescaling).
template <class T>
inline bool prescaled_copy(const MatrixView<const T>& g, T* gs, Scaling scaling) {
  int k = 0;
  if (scaling != Scaling::none) {
    const double amax = max_abs(g);
    if (amax == 0) return false;
    k = -pow2_exponent(amax);
  }
  copy_scaled(g, gs, g.cols, k);
  return true;
}

// c for the given scaling from the full Gram matrix A (column-major m x m).
template <class T>
inline double gram_constant(const T* a, index_t m, Scaling scaling) {
  if (scaling == Scaling::none) return 1.0;
  double c = 0;
  if (scaling == Scaling::grad_fro) {
    for (index_t i = 0; i < m; ++i) c += static_cast<double>(a[i + i * m]);
    return c;
  }
  // ||A||_F from the lower triangle (entries of A are <= n after the prescale: no overflow).
  double diag = 0, off = 0;
  for (index_t j = 0; j < m; ++j) {
    const T* col = a + j * m;
    diag += static_cast<double>(col[j]) * col[j];
    double s = 0;
    for (index_t i = j + 1; i < m; ++i) s += static_cast<double>(col[i]) * col[i];
    off += s;
  }
  return std::sqrt(diag + 2 * off);
}

}  // namespace detail

struct NewtonSchulzOptions {
  // Compute only the lower triangle of each product (symmetric.hpp) and mirror it. About
  // 0.6x the flops, but OFF by default: forcing exact symmetry on the iterates makes the
  // coupled iteration unstable on (nearly) rank-deficient G (the output blows up after
  // ~15-20 steps, where the plain iteration stays within rounding of the exact result).
  // See docs/performance.md.
  bool symmetric = false;
};

// Number of m x m products whiten_newton_schulz performs for `steps` steps.
inline double newton_schulz_products(long long steps) {
  if (steps <= 1) return 0;
  return 1.0 /*step 1*/ + 3.0 * double(steps - 2) + 2.0 /*last step: Y unused*/;
}

template <class T>
void whiten_newton_schulz(const StridedView<const T>& in, T* out, long long steps, double beta, Scaling scaling,
                          NewtonSchulzOptions opt = {}) {
  check_iteration_args(steps, beta);
  const index_t m = in.rows(), n = in.cols(), nb = in.batch_count();
  check_whiten_shape(m, n);
  if (m == 0 || n == 0 || nb == 0) return;
  const blas::fint fm = blas::to_fint(m, "m"), fn = blas::to_fint(n, "n");
  const std::size_t mm = static_cast<std::size_t>(m) * m, mn = static_cast<std::size_t>(m) * n;
  std::vector<T> gs(mn), a(mm), y(steps > 0 ? mm : 0), z(steps > 0 ? mm : 0), t(steps > 0 ? mm : 0);
  const T tb = static_cast<T>(beta);
  // Row-major product C = alpha * A B of m x m buffers (the buffers are column-major for BLAS,
  // i.e. hold the transposes: C^T = B^T A^T), so the rounding follows the NumPy transcription.
  auto product = [&](T alpha, const T* A, const T* B, T* C) {
    if (opt.symmetric)
      sym_product<T>(m, alpha, B, A, C);
    else
      blas::gemm<T>('N', 'N', fm, fm, fm, alpha, B, fm, A, fm, T(0), C, fm);
  };
  for (index_t b = 0; b < nb; ++b) {
    poll_interrupt();
    T* o = out + b * static_cast<index_t>(mn);
    if (!detail::prescaled_copy(in.matrix(b), gs.data(), scaling)) {
      std::memset(o, 0, sizeof(T) * mn);
      continue;
    }
    // A = Gs Gs^T: Gs row-major is Gs^T column-major (n x m, ld n).
    blas::syrk<T>('L', 'T', fm, fn, T(1), gs.data(), fn, T(0), a.data(), fm);
    const double c = detail::gram_constant(a.data(), m, scaling);
    if (c == 0) {
      std::memset(o, 0, sizeof(T) * mn);
      continue;
    }
    const T alpha_out = static_cast<T>(1.0 / std::sqrt(c));
    if (steps == 0) {  // X = I Gs / sqrt(c)
      for (std::size_t k = 0; k < mn; ++k) o[k] = gs[k] * alpha_out;
      continue;
    }
    symmetrize_from_lower(a.data(), m, m);
    const T tc = static_cast<T>(c);
    // Step 1 (Z = I, so Z Y = Y and T Z = T exactly): T = 3I - Y, Y <- beta Y T, Z <- beta T.
    for (std::size_t k = 0; k < mm; ++k) {
      y[k] = a[k] / tc;
      t[k] = -y[k];
    }
    for (index_t i = 0; i < m; ++i) t[i + i * m] += T(3);
    if (steps > 1) {
      product(tb, y.data(), t.data(), a.data());  // a <- new Y
      std::swap(a, y);
    }
    for (std::size_t k = 0; k < mm; ++k) z[k] = tb * t[k];
    for (long long s = 2; s <= steps; ++s) {
      poll_interrupt();
      product(T(-1), z.data(), y.data(), t.data());  // T = 3I - Z Y
      for (index_t i = 0; i < m; ++i) t[i + i * m] += T(3);
      if (s < steps) {  // the last step's Y is never used
        product(tb, y.data(), t.data(), a.data());  // Y <- beta Y T
        std::swap(a, y);
      }
      product(tb, t.data(), z.data(), a.data());  // Z <- beta T Z
      std::swap(a, z);
    }
    // X^T (column-major n x m == X row-major) = Gs^T Z^T / sqrt(c)
    blas::gemm<T>('N', 'N', fn, fm, fm, alpha_out, gs.data(), fn, z.data(), fm, T(0), o, fn);
  }
}

inline double newton_schulz_flops(index_t m, index_t n, long long steps, bool symmetric) {
  const double prod = symmetric ? sym_product_flops(m) : 2.0 * double(m) * m * m;
  if (steps <= 0) return double(m) * m * n;
  return double(m) * m * n + newton_schulz_products(steps) * prod + 2.0 * double(m) * m * n;
}

template <class T>
void whiten_nsds(const StridedView<const T>& in, T* out, long long steps, double beta, Scaling scaling) {
  check_iteration_args(steps, beta);
  const index_t m = in.rows(), n = in.cols(), nb = in.batch_count();
  check_whiten_shape(m, n);
  if (m == 0 || n == 0 || nb == 0) return;
  const std::size_t mn = static_cast<std::size_t>(m) * n;
  std::vector<T> gs(mn), a(scaling == Scaling::gram_fro ? static_cast<std::size_t>(m) * m : 0);
  std::vector<double> d(m), zy(2 * static_cast<std::size_t>(m));
  for (index_t b = 0; b < nb; ++b) {
    poll_interrupt();
    T* o = out + b * static_cast<index_t>(mn);
    if (!detail::prescaled_copy(in.matrix(b), gs.data(), scaling)) {
      std::memset(o, 0, sizeof(T) * mn);
      continue;
    }
    // diag(A) = row squared norms of Gs, accumulated in double.
    for (index_t i = 0; i < m; ++i) {
      const T* r = gs.data() + i * n;
      double s0 = 0, s1 = 0;
      index_t j = 0;
      for (; j + 2 <= n; j += 2) {
        s0 += static_cast<double>(r[j]) * r[j];
        s1 += static_cast<double>(r[j + 1]) * r[j + 1];
      }
      for (; j < n; ++j) s0 += static_cast<double>(r[j]) * r[j];
      d[i] = s0 + s1;
    }
    double c = 1.0;
    if (scaling == Scaling::grad_fro) {
      c = 0;
      for (index_t i = 0; i < m; ++i) c += d[i];
    } else if (scaling == Scaling::gram_fro) {
      const blas::fint fm = blas::to_fint(m, "m"), fn = blas::to_fint(n, "n");
      blas::syrk<T>('L', 'T', fm, fn, T(1), gs.data(), fn, T(0), a.data(), fm);
      c = detail::gram_constant(a.data(), m, scaling);
    }
    if (c == 0) {
      std::memset(o, 0, sizeof(T) * mn);
      continue;
    }
    // The recurrence in the working precision T (as the definition reads), per row.
    const T tb = static_cast<T>(beta), tc = static_cast<T>(c);
    const T alpha_out = static_cast<T>(1.0 / std::sqrt(c));
    for (index_t i = 0; i < m; ++i) {
      T yv = static_cast<T>(d[i]) / tc, zv = T(1);
      for (long long s = 0; s < steps; ++s) {
        if ((s & 0xFFFF) == 0) poll_interrupt();  // a scalar step is a few ns: poll every 2^16
        const T tt = T(3) - zv * yv;
        yv = tb * yv * tt;
        zv = tb * tt * zv;
      }
      const T f = zv * alpha_out;
      const T* r = gs.data() + i * n;
      T* oi = o + i * n;
      for (index_t j = 0; j < n; ++j) oi[j] = r[j] * f;
    }
  }
}

}  // namespace swanref
